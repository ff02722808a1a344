//! `s3://bucket/key` references: an authenticated `GET` signed with AWS Signature V4
//! (header form), with the keys `aws.rs` found. A few dozen lines instead of an
//! object-store client: `object_store` would bring `itertools` with `std`, which changes
//! the features of a build dependency of RocksDB's bindings and costs a RocksDB rebuild
//! (measured), for the one call hoard needs.
//!
//! `AWS_ENDPOINT_URL` names an S3-compatible server (path-style URLs); without it,
//! `https://BUCKET.s3.REGION.amazonaws.com`.

use std::time::SystemTime;

use sha2::{Digest as _, Sha256};

/// The SHA-256 of an empty body, which is what a `GET` sends.
const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// Credentials and where to send requests.
#[derive(Clone)]
pub(crate) struct S3 {
    key_id: String,
    secret: String,
    token: Option<String>,
    region: String,
    endpoint: Option<String>,
}

impl std::fmt::Debug for S3 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3")
            .field("region", &self.region)
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

/// A request ready to send: its URL and the headers that sign it.
pub(crate) struct Signed {
    pub url: String,
    pub headers: Vec<(&'static str, String)>,
}

impl S3 {
    pub(crate) fn new(
        key_id: String,
        secret: String,
        token: Option<String>,
        region: String,
        endpoint: Option<String>,
    ) -> Self {
        Self {
            key_id,
            secret,
            token,
            region,
            endpoint,
        }
    }

    /// A signed `GET` of `s3://bucket/key`, at `now`.
    pub(crate) fn get(&self, bucket: &str, key: &str, now: SystemTime) -> Result<Signed, String> {
        let path = format!("/{}", encode_path(key));
        let (url, host, canonical_uri) = if let Some(endpoint) = &self.endpoint {
            let parsed = reqwest::Url::parse(endpoint)
                .map_err(|e| format!("`AWS_ENDPOINT_URL` is not a URL: {e}"))?;
            let host = match (parsed.host_str(), parsed.port()) {
                (Some(h), Some(p)) => format!("{h}:{p}"),
                (Some(h), None) => h.to_owned(),
                (None, _) => return Err("`AWS_ENDPOINT_URL` has no host".to_owned()),
            };
            let uri = format!("/{}{path}", encode_path(bucket));
            (format!("{endpoint}{uri}"), host, uri)
        } else {
            let host = format!("{bucket}.s3.{}.amazonaws.com", self.region);
            (format!("https://{host}{path}"), host, path)
        };
        let stamp = timestamp(now);
        let date = &stamp[..8];
        let mut headers = vec![
            ("host", host),
            ("x-amz-content-sha256", EMPTY_SHA256.to_owned()),
            ("x-amz-date", stamp.clone()),
        ];
        if let Some(token) = &self.token {
            headers.push(("x-amz-security-token", token.clone()));
        }
        let signed_headers: Vec<&str> = headers.iter().map(|(name, _)| *name).collect();
        let signed_headers = signed_headers.join(";");
        let canonical_headers = headers
            .iter()
            .fold(String::new(), |mut out, (name, value)| {
                use std::fmt::Write as _;
                let _ = writeln!(out, "{name}:{}", value.trim());
                out
            });
        let canonical = format!(
            "GET\n{canonical_uri}\n\n{canonical_headers}\n{signed_headers}\n{EMPTY_SHA256}"
        );
        let scope = format!("{date}/{}/s3/aws4_request", self.region);
        let to_sign = format!(
            "AWS4-HMAC-SHA256\n{stamp}\n{scope}\n{}",
            hex(&Sha256::digest(canonical.as_bytes()))
        );
        let mut key = hmac(format!("AWS4{}", self.secret).as_bytes(), date.as_bytes());
        for part in [self.region.as_str(), "s3", "aws4_request"] {
            key = hmac(&key, part.as_bytes());
        }
        let signature = hex(&hmac(&key, to_sign.as_bytes()));
        headers.push((
            "authorization",
            format!(
                "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed_headers}, Signature={signature}",
                self.key_id
            ),
        ));
        // `host` is set by the HTTP client from the URL.
        headers.retain(|(name, _)| *name != "host");
        Ok(Signed { url, headers })
    }
}

/// HMAC-SHA256 (RFC 2104).
fn hmac(key: &[u8], message: &[u8]) -> [u8; 32] {
    const BLOCK: usize = 64;
    let mut block = [0u8; BLOCK];
    if key.len() > BLOCK {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let pad = |byte: u8| block.map(|b| b ^ byte);
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(message)
        .finalize();
    Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize()
        .into()
}

fn hex(bytes: &[u8]) -> String {
    hoard_types::hex_encode(bytes)
}

/// URI-encodes a key for the path (every byte but unreserved ones and `/`), as S3's
/// canonical request wants it.
fn encode_path(key: &str) -> String {
    encode(key, true)
}

/// Percent-encodes every byte but RFC 3986's unreserved ones (and `/` with `keep_slash`).
pub(crate) fn encode(text: &str, keep_slash: bool) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) || (keep_slash && b == b'/') {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        }
    }
    out
}

/// `YYYYMMDDTHHMMSSZ` in UTC.
pub(crate) fn timestamp(now: SystemTime) -> String {
    let secs = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days.cast_signed() + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}{month:02}{day:02}T{:02}{:02}{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    #[test]
    fn hmac_matches_rfc_4231() {
        // Test case 2.
        assert_eq!(
            hex(&hmac(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    /// The signature botocore's `S3SigV4Auth` computes for the same request (botocore
    /// 1.x, run once by hand; the credentials are AWS's documentation examples).
    #[test]
    fn signatures_match_botocore() {
        let s3 = S3 {
            key_id: "AKIDEXAMPLE".into(),
            secret: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
            token: None,
            region: "us-east-1".into(),
            endpoint: Some("http://127.0.0.1:9000".into()),
        };
        let at = UNIX_EPOCH + Duration::from_secs(1_440_938_160);
        let signed = s3.get("my-bucket", "data/a b.bin", at).unwrap();
        assert_eq!(signed.url, "http://127.0.0.1:9000/my-bucket/data/a%20b.bin");
        let auth = &signed
            .headers
            .iter()
            .find(|(n, _)| *n == "authorization")
            .unwrap()
            .1;
        assert_eq!(
            auth,
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/s3/aws4_request, \
             SignedHeaders=host;x-amz-content-sha256;x-amz-date, \
             Signature=f7e41458cc56ec5a1b7d27a6c22fd41534f5ba0e9aa6ca1585e47d89c0a138c7"
        );
    }

    #[test]
    fn timestamps_are_utc() {
        let at = UNIX_EPOCH + Duration::from_secs(1_440_938_160);
        assert_eq!(timestamp(at), "20150830T123600Z");
        assert_eq!(timestamp(UNIX_EPOCH), "19700101T000000Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(timestamp(leap), "20000229T000000Z");
    }
}
