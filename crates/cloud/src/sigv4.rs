//! AWS Signature V4 (header form) for S3 requests. A few dozen lines instead of an
//! object-store client: `object_store` would bring `itertools` with `std`, which changes
//! the features of a build dependency of RocksDB's bindings and costs a RocksDB rebuild
//! (measured), for the calls hoard needs.
//!
//! With an endpoint (`AWS_ENDPOINT_URL`: an S3-compatible server) requests are
//! path-style, `ENDPOINT/BUCKET/KEY`; without one, virtual-hosted,
//! `https://BUCKET.s3.REGION.amazonaws.com/KEY`.

use std::time::SystemTime;

use ring::{digest, hmac};

use crate::Error;
use crate::uri::encode_path;

/// The SHA-256 of an empty body, which is what a `GET` sends.
const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// Keys, and where to send requests.
#[derive(Clone)]
pub struct SigV4 {
    key_id: String,
    secret: String,
    token: Option<String>,
    region: String,
    endpoint: Option<String>,
}

impl std::fmt::Debug for SigV4 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigV4")
            .field("region", &self.region)
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

/// A request ready to send: its URL and the headers that sign it (`host` is left to the
/// HTTP client, which sets it from the URL).
#[derive(Debug)]
pub struct Signed {
    pub url: String,
    pub headers: Vec<(&'static str, String)>,
}

impl SigV4 {
    /// Keys `key_id`/`secret` (with the session `token` of temporary keys) for `region`;
    /// `endpoint` an S3-compatible server's base URL, or `None` for AWS.
    pub fn new(
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
    pub fn get(&self, bucket: &str, key: &str, now: SystemTime) -> Result<Signed, Error> {
        let path = format!("/{}", encode_path(key));
        let (url, host, canonical_uri) = if let Some(endpoint) = &self.endpoint {
            let unusable = |reason: String| Error::unusable("`AWS_ENDPOINT_URL`", reason);
            let parsed = reqwest::Url::parse(endpoint)
                .map_err(|e| unusable(format!("is not a URL: {e}")))?;
            let host = match (parsed.host_str(), parsed.port()) {
                (Some(h), Some(p)) => format!("{h}:{p}"),
                (Some(h), None) => h.to_owned(),
                (None, _) => return Err(unusable("has no host".to_owned())),
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
            hex(digest::digest(&digest::SHA256, canonical.as_bytes()).as_ref())
        );
        let mut key = sign(format!("AWS4{}", self.secret).as_bytes(), date.as_bytes());
        for part in [self.region.as_str(), "s3", "aws4_request"] {
            key = sign(key.as_ref(), part.as_bytes());
        }
        let signature = hex(sign(key.as_ref(), to_sign.as_bytes()).as_ref());
        headers.push((
            "authorization",
            format!(
                "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed_headers}, Signature={signature}",
                self.key_id
            ),
        ));
        headers.retain(|(name, _)| *name != "host");
        Ok(Signed { url, headers })
    }
}

/// HMAC-SHA256 of `message` under `key`.
fn sign(key: &[u8], message: &[u8]) -> hmac::Tag {
    hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), message)
}

fn hex(bytes: &[u8]) -> String {
    hoard_types::hex_encode(bytes)
}

/// `YYYYMMDDTHHMMSSZ` in UTC, as `x-amz-date` wants it.
fn timestamp(now: SystemTime) -> String {
    humantime::format_rfc3339_seconds(now)
        .to_string()
        .replace(['-', ':'], "")
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    /// The time of AWS's documentation examples, 2015-08-30 12:36:00 UTC.
    fn example_time() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_440_938_160)
    }

    fn keys(token: Option<&str>, region: &str, endpoint: Option<&str>) -> SigV4 {
        SigV4::new(
            "AKIDEXAMPLE".into(),
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
            token.map(str::to_owned),
            region.into(),
            endpoint.map(str::to_owned),
        )
    }

    fn header<'a>(signed: &'a Signed, name: &str) -> &'a str {
        &signed
            .headers
            .iter()
            .find(|(n, _)| *n == name)
            .unwrap_or_else(|| panic!("no `{name}` header"))
            .1
    }

    // The expected values below are what botocore 1.44.8's `S3SigV4Auth` computes for the
    // same request, with its clock set to `example_time()` (run once by hand; the keys are
    // AWS's documentation examples).

    #[test]
    fn a_path_style_request_is_signed_as_botocore_signs_it() {
        let signed = keys(None, "us-east-1", Some("http://127.0.0.1:9000"))
            .get("my-bucket", "data/a b.bin", example_time())
            .unwrap();
        assert_eq!(signed.url, "http://127.0.0.1:9000/my-bucket/data/a%20b.bin");
        assert_eq!(header(&signed, "x-amz-date"), "20150830T123600Z");
        assert_eq!(
            header(&signed, "authorization"),
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/s3/aws4_request, \
             SignedHeaders=host;x-amz-content-sha256;x-amz-date, \
             Signature=f7e41458cc56ec5a1b7d27a6c22fd41534f5ba0e9aa6ca1585e47d89c0a138c7"
        );
        assert!(signed.headers.iter().all(|(n, _)| *n != "host"));
    }

    #[test]
    fn a_session_token_is_sent_and_signed() {
        let token = "IQoJb3JpZ2luX2VjEXAMPLE/session+token=";
        let signed = keys(Some(token), "us-east-1", Some("http://127.0.0.1:9000"))
            .get("my-bucket", "data/a b.bin", example_time())
            .unwrap();
        assert_eq!(header(&signed, "x-amz-security-token"), token);
        assert_eq!(
            header(&signed, "authorization"),
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/s3/aws4_request, \
             SignedHeaders=host;x-amz-content-sha256;x-amz-date;x-amz-security-token, \
             Signature=061cddfb5deb947b388be347c269b1e80c920135cac951d8afd0b730039cb017"
        );
    }

    #[test]
    fn a_virtual_hosted_request_names_the_bucket_in_the_host() {
        let signed = keys(None, "eu-west-1", None)
            .get("my-bucket", "data/été+1.bin", example_time())
            .unwrap();
        assert_eq!(
            signed.url,
            "https://my-bucket.s3.eu-west-1.amazonaws.com/data/%C3%A9t%C3%A9%2B1.bin"
        );
        assert_eq!(
            header(&signed, "authorization"),
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/eu-west-1/s3/aws4_request, \
             SignedHeaders=host;x-amz-content-sha256;x-amz-date, \
             Signature=298937226be0d795bd420dfd8003e5c61021cdcb9151c4188c588e8251c99059"
        );
    }

    #[test]
    fn a_bad_endpoint_is_named() {
        let err = keys(None, "us-east-1", Some("not a url"))
            .get("b", "k", example_time())
            .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("`AWS_ENDPOINT_URL` is not a URL"),
            "{err}"
        );
    }

    #[test]
    fn timestamps_are_utc() {
        assert_eq!(timestamp(example_time()), "20150830T123600Z");
        assert_eq!(timestamp(UNIX_EPOCH), "19700101T000000Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(timestamp(leap), "20000229T000000Z");
    }
}
