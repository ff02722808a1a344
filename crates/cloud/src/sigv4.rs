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
use crate::uri::{encode_path, encode_segment};

/// The SHA-256 of an empty body, which is what a `GET` sends.
pub const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// What `x-amz-content-sha256` says of a body that is not hashed into the signature (a
/// blob streamed from disk; S3 and its kin accept it).
pub const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";

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

/// Where an S3 request goes: a server, its region, and how it addresses buckets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// An S3-compatible server's base URL (`http://host:port`); `None`: AWS.
    pub endpoint: Option<String>,
    pub region: String,
    /// `ENDPOINT/BUCKET/KEY` rather than `BUCKET.HOST/KEY`.
    pub path_style: bool,
}

/// One S3 request to sign.
#[derive(Clone, Copy, Debug)]
pub struct Request<'a> {
    pub method: &'a str,
    pub bucket: &'a str,
    /// The object's key; empty for a request on the bucket (a listing).
    pub key: &'a str,
    /// Query parameters, not encoded (`("uploads", "")` for `?uploads`).
    pub query: &'a [(&'a str, &'a str)],
    /// Headers sent and signed besides the signature's own, with lower-case names
    /// (`if-none-match`, `content-type`).
    pub headers: &'a [(&'static str, &'a str)],
    /// The hex SHA-256 of the body: [`EMPTY_SHA256`], [`sha256_hex`], or
    /// [`UNSIGNED_PAYLOAD`].
    pub payload: &'a str,
}

/// A request ready to send: its URL and the headers that sign it (`host` is left to the
/// HTTP client, which sets it from the URL).
#[derive(Debug)]
pub struct Signed {
    pub url: String,
    pub headers: Vec<(&'static str, String)>,
}

/// The hex SHA-256 of a body, for [`Request::payload`].
pub fn sha256_hex(body: &[u8]) -> String {
    hex(digest::digest(&digest::SHA256, body).as_ref())
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

    /// Where the environment sends requests: `AWS_ENDPOINT_URL` path-style, else AWS in
    /// the environment's region, virtual-hosted.
    pub fn target(&self) -> Target {
        Target {
            endpoint: self.endpoint.clone(),
            region: self.region.clone(),
            path_style: self.endpoint.is_some(),
        }
    }

    /// A signed `GET` of `s3://bucket/key`, at `now`, where [`Self::target`] says.
    pub fn get(&self, bucket: &str, key: &str, now: SystemTime) -> Result<Signed, Error> {
        let request = Request {
            method: "GET",
            bucket,
            key,
            query: &[],
            headers: &[],
            payload: EMPTY_SHA256,
        };
        self.sign(&self.target(), &request, now)
    }

    /// `request` to `target`, signed at `now`.
    pub fn sign(
        &self,
        target: &Target,
        request: &Request<'_>,
        now: SystemTime,
    ) -> Result<Signed, Error> {
        let (base, host, canonical_uri) = locate(target, request.bucket, request.key)?;
        let mut query: Vec<(String, String)> = request
            .query
            .iter()
            .map(|(k, v)| (encode_segment(k), encode_segment(v)))
            .collect();
        query.sort();
        let query = query
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("&");
        let url = if query.is_empty() {
            base
        } else {
            format!("{base}?{query}")
        };
        let stamp = timestamp(now);
        let date = &stamp[..8];
        let mut headers = vec![
            ("host", host),
            ("x-amz-content-sha256", request.payload.to_owned()),
            ("x-amz-date", stamp.clone()),
        ];
        if let Some(token) = &self.token {
            headers.push(("x-amz-security-token", token.clone()));
        }
        headers.extend(request.headers.iter().map(|(n, v)| (*n, (*v).to_owned())));
        headers.sort_by_key(|(name, _)| *name);
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
            "{}\n{canonical_uri}\n{query}\n{canonical_headers}\n{signed_headers}\n{}",
            request.method, request.payload
        );
        let scope = format!("{date}/{}/s3/aws4_request", target.region);
        let to_sign = format!(
            "AWS4-HMAC-SHA256\n{stamp}\n{scope}\n{}",
            sha256_hex(canonical.as_bytes())
        );
        let mut key = sign(format!("AWS4{}", self.secret).as_bytes(), date.as_bytes());
        for part in [target.region.as_str(), "s3", "aws4_request"] {
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

/// The URL (without query), `host` header and canonical URI of `bucket`/`key` at `target`.
fn locate(target: &Target, bucket: &str, key: &str) -> Result<(String, String, String), Error> {
    let path = format!("/{}", encode_path(key));
    let Some(endpoint) = &target.endpoint else {
        let host = format!("{bucket}.s3.{}.amazonaws.com", target.region);
        if target.path_style {
            let host = format!("s3.{}.amazonaws.com", target.region);
            let uri = bucket_path(bucket, key);
            return Ok((format!("https://{host}{uri}"), host, uri));
        }
        return Ok((format!("https://{host}{path}"), host, path));
    };
    let unusable =
        |reason: String| Error::unusable(format!("The S3 endpoint `{endpoint}`"), reason);
    let parsed =
        reqwest::Url::parse(endpoint).map_err(|e| unusable(format!("is not a URL: {e}")))?;
    let host = match (parsed.host_str(), parsed.port()) {
        (Some(h), Some(p)) => format!("{h}:{p}"),
        (Some(h), None) => h.to_owned(),
        (None, _) => return Err(unusable("has no host".to_owned())),
    };
    let endpoint = endpoint.trim_end_matches('/');
    if target.path_style {
        let uri = bucket_path(bucket, key);
        return Ok((format!("{endpoint}{uri}"), host, uri));
    }
    let host = format!("{bucket}.{host}");
    Ok((format!("{}://{host}{path}", parsed.scheme()), host, path))
}

/// `/BUCKET/KEY`, or `/BUCKET` for a request on the bucket.
fn bucket_path(bucket: &str, key: &str) -> String {
    if key.is_empty() {
        format!("/{}", encode_path(bucket))
    } else {
        format!("/{}/{}", encode_path(bucket), encode_path(key))
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

    impl SigV4 {
        fn get_at(&self, target: &Target, bucket: &str, key: &str) -> Result<Signed, Error> {
            let request = Request {
                method: "GET",
                bucket,
                key,
                query: &[],
                headers: &[],
                payload: EMPTY_SHA256,
            };
            self.sign(target, &request, example_time())
        }
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

    fn garage() -> Target {
        Target {
            endpoint: Some("http://127.0.0.1:3900".into()),
            region: "garage".into(),
            path_style: true,
        }
    }

    // As botocore 1.44.8's `S3SigV4Auth` signs them (region `garage`), run once by hand.

    #[test]
    fn a_conditional_part_upload_signs_its_query_and_headers() {
        let request = Request {
            method: "PUT",
            bucket: "tier",
            key: "p/blobs-v1/ab/cd",
            query: &[("uploadId", "x+y"), ("partNumber", "2")],
            headers: &[("if-none-match", "*")],
            // What botocore signs for an empty body (it hashes the body itself).
            payload: EMPTY_SHA256,
        };
        let signed = keys(None, "us-east-1", None)
            .sign(&garage(), &request, example_time())
            .unwrap();
        assert_eq!(
            signed.url,
            "http://127.0.0.1:3900/tier/p/blobs-v1/ab/cd?partNumber=2&uploadId=x%2By"
        );
        assert_eq!(header(&signed, "if-none-match"), "*");
        assert_eq!(
            header(&signed, "authorization"),
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/garage/s3/aws4_request, \
             SignedHeaders=host;if-none-match;x-amz-content-sha256;x-amz-date, \
             Signature=a71dde94f4a9efd5dd7fa8f393f203409eaa7982d2b23785571f37b78b32e2f6"
        );
    }

    #[test]
    fn a_listing_and_a_bare_query_parameter_are_signed_as_botocore_signs_them() {
        let list = Request {
            method: "GET",
            bucket: "tier",
            key: "",
            query: &[("prefix", "p/leases-v1/ab"), ("list-type", "2")],
            headers: &[],
            payload: EMPTY_SHA256,
        };
        let signed = keys(None, "us-east-1", None)
            .sign(&garage(), &list, example_time())
            .unwrap();
        assert_eq!(
            signed.url,
            "http://127.0.0.1:3900/tier?list-type=2&prefix=p%2Fleases-v1%2Fab"
        );
        assert!(header(&signed, "authorization").ends_with(
            "Signature=74419f6fc37b47296d670c747a03969a7c18fec1fe932fd6a8416a3df5af17f0"
        ));
        let create = Request {
            method: "POST",
            bucket: "tier",
            key: "p/k",
            query: &[("uploads", "")],
            headers: &[],
            payload: EMPTY_SHA256,
        };
        let signed = keys(None, "us-east-1", None)
            .sign(&garage(), &create, example_time())
            .unwrap();
        assert_eq!(signed.url, "http://127.0.0.1:3900/tier/p/k?uploads=");
        assert!(header(&signed, "authorization").ends_with(
            "Signature=7f86448c9cc0725d3cd535d56a664d2db96d4fca2682f56f386202695f9fa4dc"
        ));
    }

    #[test]
    fn a_virtual_hosted_endpoint_puts_the_bucket_in_its_host() {
        let target = Target {
            path_style: false,
            ..garage()
        };
        let signed = keys(None, "us-east-1", None)
            .get_at(&target, "tier", "k")
            .unwrap();
        assert_eq!(signed.url, "http://tier.127.0.0.1:3900/k");
    }

    #[test]
    fn a_bad_endpoint_is_named() {
        let err = keys(None, "us-east-1", Some("not a url"))
            .get("b", "k", example_time())
            .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("The S3 endpoint `not a url` is not a URL"),
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
