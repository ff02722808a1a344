//! Content digests: blake3 names blobs and manifests; foreign digests are what upstreams
//! such as W&B (MD5) or S3 (ETag) call the same bytes.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::Error;

/// A blake3 digest. Its text form is 64 lowercase hex characters; nothing else parses, so a
/// digest has exactly one spelling and can be used as a file name and a key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest([u8; 32]);

impl Digest {
    pub const LEN: usize = 32;

    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The digest of `data`, for small inputs; stream large ones through a [`blake3::Hasher`].
    pub fn of(data: &[u8]) -> Self {
        Self(*blake3::hash(data).as_bytes())
    }

    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Lowercase hex, the form used in file names, URLs and JSON.
    pub fn to_hex(&self) -> String {
        hex_encode(&self.0)
    }
}

impl From<blake3::Hash> for Digest {
    fn from(hash: blake3::Hash) -> Self {
        Self(*hash.as_bytes())
    }
}

impl FromStr for Digest {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let err = || Error::Digest { input: truncate(s) };
        let bytes: [u8; 32] = hex_decode(s)
            .ok_or_else(err)?
            .try_into()
            .map_err(|_| err())?;
        Ok(Self(bytes))
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({})", self.to_hex())
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// A digest that an upstream computed with its own algorithm. hoard maps each to the
/// blake3 digest of the same bytes, so a file an upstream names by MD5 is found in the
/// cache without downloading it again.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ForeignDigest {
    Md5([u8; 16]),
    Sha256([u8; 32]),
    /// Git's blob id: SHA-1 of `blob <size>\0` and the bytes (the Hub names files kept in
    /// git, not in LFS, by it).
    GitSha1([u8; 20]),
    /// An HTTP/S3 ETag, opaque: only equality means anything.
    Etag(String),
}

impl FromStr for ForeignDigest {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let err = || Error::ForeignDigest { input: truncate(s) };
        let (algo, value) = s.split_once(':').ok_or_else(err)?;
        match algo {
            "md5" => Ok(Self::Md5(
                hex_decode(value)
                    .ok_or_else(err)?
                    .try_into()
                    .map_err(|_| err())?,
            )),
            "sha256" => Ok(Self::Sha256(
                hex_decode(value)
                    .ok_or_else(err)?
                    .try_into()
                    .map_err(|_| err())?,
            )),
            "gitsha1" => Ok(Self::GitSha1(
                hex_decode(value)
                    .ok_or_else(err)?
                    .try_into()
                    .map_err(|_| err())?,
            )),
            "etag" if !value.is_empty() && value.len() <= 1024 && !value.contains('\0') => {
                Ok(Self::Etag(value.to_owned()))
            }
            _ => Err(err()),
        }
    }
}

impl fmt::Display for ForeignDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Md5(b) => write!(f, "md5:{}", hex_encode(b)),
            Self::Sha256(b) => write!(f, "sha256:{}", hex_encode(b)),
            Self::GitSha1(b) => write!(f, "gitsha1:{}", hex_encode(b)),
            Self::Etag(tag) => write!(f, "etag:{tag}"),
        }
    }
}

impl Serialize for ForeignDigest {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ForeignDigest {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl fmt::Debug for ForeignDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ForeignDigest({self})")
    }
}

/// Lowercase hex of any bytes.
pub fn hex_encode(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0xf)]));
    }
    out
}

/// Strict lowercase hex: uppercase is rejected so that every digest has one spelling.
fn hex_decode(s: &str) -> Option<Vec<u8>> {
    fn nibble(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        }
    }
    if !s.len().is_multiple_of(2) {
        return None;
    }
    s.as_bytes()
        .chunks_exact(2)
        .map(|pair| Some(nibble(pair[0])? << 4 | nibble(pair[1])?))
        .collect()
}

/// Error messages quote the input, but not a megabyte of it.
pub fn truncate(s: &str) -> String {
    const MAX: usize = 100;
    if s.len() <= MAX {
        return s.to_owned();
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn digest_of_empty_input_is_blake3_of_empty() {
        assert_eq!(
            Digest::of(b"").to_string(),
            "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"
        );
    }

    #[test]
    fn digest_parsing_is_strict() {
        let good = "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262";
        assert!(good.parse::<Digest>().is_ok());
        for bad in [
            "",
            &good[..62],
            &format!("{good}00"),
            &good.to_uppercase(),
            &format!("{}g", &good[..63]),
            &format!(" {}", &good[..63]),
        ] {
            let err = bad.parse::<Digest>().unwrap_err();
            assert!(
                err.to_string().contains("expected 64 lowercase hex"),
                "{err}"
            );
        }
    }

    #[test]
    fn foreign_digests_parse_and_print() {
        for text in [
            "md5:d41d8cd98f00b204e9800998ecf8427e",
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "gitsha1:e69de29bb2d1d6434b8b29ae775ad8c2e48c5391",
        ] {
            assert_eq!(text.parse::<ForeignDigest>().unwrap().to_string(), text);
        }
        assert_eq!(
            "etag:\"abc-2\""
                .parse::<ForeignDigest>()
                .unwrap()
                .to_string(),
            "etag:\"abc-2\""
        );
        for bad in [
            "md5:",
            "md5:d41d",
            "sha1:00",
            "gitsha1:e69de29b",
            "d41d8cd98f00b204e9800998ecf8427e",
            "etag:",
        ] {
            assert!(bad.parse::<ForeignDigest>().is_err(), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn digest_text_round_trips(bytes in any::<[u8; 32]>()) {
            let digest = Digest::from_bytes(bytes);
            prop_assert_eq!(digest.to_string().parse::<Digest>().unwrap(), digest);
            let json = serde_json::to_string(&digest).unwrap();
            prop_assert_eq!(serde_json::from_str::<Digest>(&json).unwrap(), digest);
        }
    }
}
