//! Reference entries: which the daemon fetches, for whom, and from where.
//!
//! A reference entry's bytes live at a URI. For its own user the daemon fetches any
//! scheme it supports (`https`, `http`, `file`, `s3`, `gs`); for anyone else it would be a
//! proxy into the machine's network and a reader of its cloud credentials, so it fetches
//! only from the origins its configuration allows (`reference_hosts`; by default the
//! upstream's own origin) and never `file://`. Errors name the reference, not what its
//! bytes turned out to be: a caller must not learn the size or digest of a URL they could
//! not fetch themselves.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use hoard_store::BlobKey;
use hoard_types::{Manifest, RelPath};
use hoard_upstream::BlobSource;

use crate::caller::Caller;
use crate::error::ApiError;

/// The origins references are fetched from for callers other than the daemon's user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReferencePolicy {
    /// `scheme://authority`, normalized by [`origin`]; `*` allows every origin.
    allowed: HashSet<String>,
}

impl ReferencePolicy {
    /// From the configured `reference_hosts` (`https://host[:port]`, `s3://bucket`,
    /// `gs://bucket`, or `*`), or without any, the upstream's own origin (`upstream` is
    /// its URL).
    pub fn new(configured: Option<&[String]>, upstream: &str) -> Result<Self, String> {
        let allowed = match configured {
            Some(hosts) => hosts
                .iter()
                .map(|host| {
                    if host == "*" {
                        return Ok("*".to_owned());
                    }
                    let bare = host.trim_end_matches('/');
                    let has_path = bare
                        .split_once("://")
                        .is_some_and(|(_, rest)| rest.contains(['/', '?', '#']));
                    match origin(bare) {
                        Some(o) if !has_path => Ok(o),
                        _ => Err(format!(
                            "`{host}` in `reference_hosts` is not an origin: expected `https://host[:port]`, `http://host[:port]`, `s3://bucket`, `gs://bucket` or `*`"
                        )),
                    }
                })
                .collect::<Result<_, _>>()?,
            None => origin(upstream).into_iter().collect(),
        };
        Ok(Self { allowed })
    }

    fn allows(&self, uri: &str) -> bool {
        self.allowed.contains("*") || origin(uri).is_some_and(|o| self.allowed.contains(&o))
    }

    /// The allowed origins, for messages.
    fn shown(&self) -> String {
        if self.allowed.is_empty() {
            return "none".to_owned();
        }
        let mut all: Vec<&str> = self.allowed.iter().map(String::as_str).collect();
        all.sort_unstable();
        all.join(", ")
    }
}

/// `scheme://authority` of a URI, lowercased, without user info or a default port:
/// `https://Example.com:443/x` → `https://example.com`, `s3://bucket/key` → `s3://bucket`.
fn origin(uri: &str) -> Option<String> {
    let (scheme, rest) = uri.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    if !matches!(scheme.as_str(), "http" | "https" | "s3" | "gs") {
        return None;
    }
    let authority = rest.split(['/', '?', '#']).next()?;
    let authority = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    let authority = authority.to_ascii_lowercase();
    let authority = match scheme.as_str() {
        "https" => authority.strip_suffix(":443").unwrap_or(&authority),
        "http" => authority.strip_suffix(":80").unwrap_or(&authority),
        _ => &authority,
    };
    if authority.is_empty() {
        return None;
    }
    Some(format!("{scheme}://{authority}"))
}

/// The source of a reference entry for `caller`, refused (before anything is fetched)
/// when its scheme cannot be fetched or the caller may not have the daemon fetch it.
pub(crate) fn source(
    policy: &ReferencePolicy,
    caller: Caller,
    path: &RelPath,
    uri: &str,
) -> Result<Arc<dyn BlobSource>, ApiError> {
    let refuse = |kind: &'static str, reason: String| {
        ApiError::new(
            if kind == "reference-refused" {
                http::StatusCode::FORBIDDEN
            } else {
                http::StatusCode::NOT_IMPLEMENTED
            },
            kind,
            format!("`{path}` is a reference to `{uri}`: {reason}"),
        )
    };
    let own = caller.is_daemon_user();
    if !own && !policy.allows(uri) {
        return Err(refuse(
            "reference-refused",
            format!(
                "this daemon fetches references for other users only from the origins its configuration allows (`reference_hosts`: {}); ask its administrator, or fetch it with a daemon of your own",
                policy.shown()
            ),
        ));
    }
    hoard_upstream::reference::reference(uri, own)
        .map_err(|e| refuse("reference-entry", crate::error::chain(&e)))
}

/// Checks every reference entry of `manifest` with [`source`].
pub(crate) fn check_all(
    policy: &ReferencePolicy,
    caller: Caller,
    manifest: &Manifest,
) -> Result<(), ApiError> {
    for (path, entry) in &manifest.entries {
        if let Some(uri) = &entry.reference {
            source(policy, caller, path, uri)?;
        }
    }
    Ok(())
}

/// Blobs that only reference entries name, with the path and URI of one of them (a blob
/// that some entry has in the upstream is fetched from there).
pub(crate) fn only_referenced(manifest: &Manifest) -> HashMap<BlobKey, (RelPath, String)> {
    let in_upstream: HashSet<BlobKey> = manifest
        .entries
        .values()
        .filter(|e| e.reference.is_none())
        .map(|e| BlobKey::new(e.digest, e.exec))
        .collect();
    manifest
        .entries
        .iter()
        .filter_map(|(path, e)| {
            let key = BlobKey::new(e.digest, e.exec);
            let uri = e.reference.clone()?;
            (!in_upstream.contains(&key)).then(|| (key, (path.clone(), uri)))
        })
        .collect()
}

/// A failed fetch of a reference, told without what the bytes were: their count and
/// digest would tell a caller about a URL they may not fetch themselves (the daemon's log
/// has the whole error).
pub(crate) fn fetch_error(uri: &str, error: ApiError) -> ApiError {
    if error.kind != "upstream-invalid" {
        return error;
    }
    tracing::warn!(uri, error = %error.detail, "a reference's bytes are not the entry's");
    ApiError::new(
        error.status,
        error.kind,
        format!(
            "the bytes at `{uri}` are not the ones the version's entry names (another size or digest): the reference changed, or the entry is wrong"
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_normalized() {
        assert_eq!(
            origin("https://User@Example.COM:443/a?b").as_deref(),
            Some("https://example.com")
        );
        assert_eq!(origin("http://h:8080/x").as_deref(), Some("http://h:8080"));
        assert_eq!(origin("s3://bucket/key/x").as_deref(), Some("s3://bucket"));
        assert_eq!(origin("file:///etc/passwd"), None);
        assert_eq!(origin("https:///x"), None);
        assert_eq!(origin("nothing"), None);
    }

    #[test]
    fn the_default_allows_only_the_upstreams_origin() {
        let policy = ReferencePolicy::new(None, "http://127.0.0.1:7700").unwrap();
        assert!(policy.allows("http://127.0.0.1:7700/v1/blobs/x"));
        assert!(!policy.allows("http://127.0.0.1:7701/secret"));
        assert!(!policy.allows("http://localhost:7700/x"));
        assert!(!policy.allows("s3://bucket/key"));
        let none = ReferencePolicy::new(None, "dir:///srv/hoard").unwrap();
        assert!(!none.allows("https://example.com/x"));
        assert_eq!(none.shown(), "none");
    }

    #[test]
    fn configured_origins_are_checked() {
        let hosts = [
            "https://data.example.com".to_owned(),
            "s3://team-bucket".to_owned(),
        ];
        let policy = ReferencePolicy::new(Some(&hosts), "http://up").unwrap();
        assert!(policy.allows("https://data.example.com/a.bin"));
        assert!(policy.allows("s3://team-bucket/a/b"));
        assert!(!policy.allows("s3://other/a"));
        assert!(
            !policy.allows("http://up/x"),
            "configured hosts replace the default"
        );
        let all = ReferencePolicy::new(Some(&["*".to_owned()]), "http://up").unwrap();
        assert!(all.allows("https://anything.example/x"));
        for bad in ["example.com", "https://h/path", "file:///x", "ftp://h"] {
            assert!(
                ReferencePolicy::new(Some(&[bad.to_owned()]), "http://up").is_err(),
                "{bad}"
            );
        }
    }
}
