//! The records the index stores, and their byte encodings.
//!
//! Encodings are fixed-width little-endian with a leading format byte, so a record from a
//! future format is detected rather than misread. Changing one means a new `index-vN`
//! directory (see `layout.rs`) and updating the round-trip tests below.

use std::fmt;

use hoard_types::Digest;

/// A blob's relative path, NUL-terminated (see [`BlobKey::name`]).
pub(crate) struct BlobName {
    bytes: [u8; Self::CAPACITY],
}

impl BlobName {
    /// `ab/` + 64 hex digits + `.x` + NUL.
    const CAPACITY: usize = 3 + 64 + 2 + 1;

    pub(crate) fn as_c_str(&self) -> &std::ffi::CStr {
        // The last byte is always NUL, and a hex name has none before it.
        std::ffi::CStr::from_bytes_until_nul(&self.bytes).unwrap_or_default()
    }
}

/// What names a blob: its content digest and its exec bit. Hardlinks share one inode and so
/// one mode, so an executable and a plain file with equal bytes are two blobs.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlobKey {
    pub digest: Digest,
    pub exec: bool,
}

impl BlobKey {
    pub const ENCODED_LEN: usize = 33;

    pub fn new(digest: Digest, exec: bool) -> Self {
        Self { digest, exec }
    }

    /// The blob's file name under `blobs-v1/`: `ab/abcdef…`, with `.x` for an executable.
    pub fn relative_path(&self) -> String {
        let hex = self.digest.to_hex();
        format!("{}/{hex}{}", &hex[..2], if self.exec { ".x" } else { "" })
    }

    /// [`Self::relative_path`] in a buffer on the stack, ending in NUL: the name the hot
    /// path's syscalls take (a stat and a link for each file of a get), with no allocation.
    pub(crate) fn name(&self) -> BlobName {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut bytes = [0; BlobName::CAPACITY];
        let digest = self.digest.as_bytes();
        bytes[0] = HEX[usize::from(digest[0] >> 4)];
        bytes[1] = HEX[usize::from(digest[0] & 0xf)];
        bytes[2] = b'/';
        for (i, b) in digest.iter().enumerate() {
            bytes[3 + 2 * i] = HEX[usize::from(b >> 4)];
            bytes[4 + 2 * i] = HEX[usize::from(b & 0xf)];
        }
        if self.exec {
            bytes[67] = b'.';
            bytes[68] = b'x';
        }
        BlobName { bytes }
    }

    /// Parses a file name under `blobs-v1/xx/` back into a key.
    pub fn from_file_name(name: &str) -> Option<Self> {
        let (hex, exec) = match name.strip_suffix(".x") {
            Some(hex) => (hex, true),
            None => (name, false),
        };
        Some(Self {
            digest: hex.parse().ok()?,
            exec,
        })
    }

    /// The mode the blob file has: read-only for everyone, plus exec.
    pub fn file_mode(&self) -> u32 {
        if self.exec { 0o555 } else { 0o444 }
    }

    pub(crate) fn encode(&self) -> [u8; Self::ENCODED_LEN] {
        let mut out = [0; Self::ENCODED_LEN];
        out[..32].copy_from_slice(self.digest.as_bytes());
        out[32] = u8::from(self.exec);
        out
    }

    pub(crate) fn decode(bytes: &[u8]) -> Option<Self> {
        let (digest, exec) = bytes.split_first_chunk::<32>()?;
        match exec {
            [0] => Some(Self::new(Digest::from_bytes(*digest), false)),
            [1] => Some(Self::new(Digest::from_bytes(*digest), true)),
            _ => None,
        }
    }
}

impl fmt::Display for BlobKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}{}",
            self.digest,
            if self.exec { " (exec)" } else { "" }
        )
    }
}

impl fmt::Debug for BlobKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BlobKey({self})")
    }
}

/// What the index knows of one blob file.
///
/// `ino` is what tampering is detected by, with the size, the mode and the mtime (which
/// the store pins to [`crate::BLOB_MTIME`]). ctime is deliberately not compared: every
/// `link` and `unlink` of a hardlink changes it, so it would flag every blob a job ever
/// materialized or deleted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlobRecord {
    pub size: u64,
    pub ino: u64,
    /// Pinned versions holding this blob; a pinned blob is never evicted.
    pub pins: u32,
    /// Unix milliseconds of ingest.
    pub ingested_ms: u64,
}

impl BlobRecord {
    const FORMAT: u8 = 1;
    const ENCODED_LEN: usize = 1 + 8 + 8 + 4 + 8;

    pub(crate) fn encode(&self) -> [u8; Self::ENCODED_LEN] {
        let mut out = [0; Self::ENCODED_LEN];
        out[0] = Self::FORMAT;
        out[1..9].copy_from_slice(&self.size.to_le_bytes());
        out[9..17].copy_from_slice(&self.ino.to_le_bytes());
        out[17..21].copy_from_slice(&self.pins.to_le_bytes());
        out[21..29].copy_from_slice(&self.ingested_ms.to_le_bytes());
        out
    }

    pub(crate) fn decode(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != Self::ENCODED_LEN || bytes[0] != Self::FORMAT {
            return None;
        }
        Some(Self {
            size: u64::from_le_bytes(bytes[1..9].try_into().ok()?),
            ino: u64::from_le_bytes(bytes[9..17].try_into().ok()?),
            pins: u32::from_le_bytes(bytes[17..21].try_into().ok()?),
            ingested_ms: u64::from_le_bytes(bytes[21..29].try_into().ok()?),
        })
    }
}

/// The remembered answer to "which version does this alias name?".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AliasRecord {
    pub version: u32,
    pub digest: Digest,
    /// Unix milliseconds when the upstream gave this answer.
    pub resolved_ms: u64,
}

impl AliasRecord {
    const FORMAT: u8 = 1;
    const ENCODED_LEN: usize = 1 + 4 + 32 + 8;

    pub(crate) fn encode(&self) -> [u8; Self::ENCODED_LEN] {
        let mut out = [0; Self::ENCODED_LEN];
        out[0] = Self::FORMAT;
        out[1..5].copy_from_slice(&self.version.to_le_bytes());
        out[5..37].copy_from_slice(self.digest.as_bytes());
        out[37..45].copy_from_slice(&self.resolved_ms.to_le_bytes());
        out
    }

    pub(crate) fn decode(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != Self::ENCODED_LEN || bytes[0] != Self::FORMAT {
            return None;
        }
        Some(Self {
            version: u32::from_le_bytes(bytes[1..5].try_into().ok()?),
            digest: Digest::from_bytes(bytes[5..37].try_into().ok()?),
            resolved_ms: u64::from_le_bytes(bytes[37..45].try_into().ok()?),
        })
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn blob_file_names() {
        let d = Digest::of(b"x");
        let hex = d.to_hex();
        assert_eq!(
            BlobKey::new(d, false).relative_path(),
            format!("{}/{hex}", &hex[..2])
        );
        assert_eq!(
            BlobKey::new(d, true).relative_path(),
            format!("{}/{hex}.x", &hex[..2])
        );
        for exec in [false, true] {
            let key = BlobKey::new(d, exec);
            assert_eq!(
                key.name().as_c_str().to_str().unwrap(),
                key.relative_path(),
                "the stack name is the same path"
            );
        }
        assert_eq!(
            BlobKey::from_file_name(&format!("{hex}.x")),
            Some(BlobKey::new(d, true))
        );
        assert_eq!(BlobKey::from_file_name(&hex), Some(BlobKey::new(d, false)));
        for bad in [
            "",
            "x",
            &format!("{hex}.y"),
            &format!("{hex}.x.x"),
            &hex[1..],
        ] {
            assert_eq!(BlobKey::from_file_name(bad), None, "{bad}");
        }
    }

    proptest! {
        #[test]
        fn blob_key_round_trips(bytes in any::<[u8; 32]>(), exec in any::<bool>()) {
            let key = BlobKey::new(Digest::from_bytes(bytes), exec);
            prop_assert_eq!(BlobKey::decode(&key.encode()), Some(key));
            let name = key.relative_path();
            prop_assert_eq!(BlobKey::from_file_name(&name[3..]), Some(key));
        }

        #[test]
        fn blob_record_round_trips(size in any::<u64>(), ino in any::<u64>(), pins in any::<u32>(), ingested_ms in any::<u64>()) {
            let r = BlobRecord { size, ino, pins, ingested_ms };
            prop_assert_eq!(BlobRecord::decode(&r.encode()), Some(r));
            prop_assert_eq!(BlobRecord::decode(&r.encode()[1..]), None);
        }

        #[test]
        fn alias_record_round_trips(version in any::<u32>(), bytes in any::<[u8; 32]>(), resolved_ms in any::<u64>()) {
            let r = AliasRecord { version, digest: Digest::from_bytes(bytes), resolved_ms };
            prop_assert_eq!(AliasRecord::decode(&r.encode()), Some(r));
            let mut future = r.encode();
            future[0] = 2;
            prop_assert_eq!(AliasRecord::decode(&future), None);
        }
    }
}
