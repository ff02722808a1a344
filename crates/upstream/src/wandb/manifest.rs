//! W&B's artifact manifest (`artifact_manifest_v1.py`): `{"version": 1, "storagePolicy":
//! "wandb-storage-policy-v1", "storagePolicyConfig": {"storageLayout": "V2"}, "contents":
//! {path: {"digest": <base64 MD5>, "size": N, "ref"?, "birthArtifactID"?, "extra"?}}}`.
//!
//! Parsed strictly: every path must be a safe relative path, every stored file's digest a
//! base64 MD5; a reference entry's digest is an MD5 where it decodes as one (`file://`
//! references with checksums) and otherwise the ETag it was logged with.

use std::collections::BTreeMap;

use base64::Engine as _;
use hoard_types::{ForeignDigest, ForeignEntry, RelPath};
use serde::Deserialize;

#[derive(Deserialize)]
struct Raw {
    version: u32,
    #[serde(rename = "storagePolicy")]
    storage_policy: String,
    #[serde(rename = "storagePolicyConfig", default)]
    config: Option<RawConfig>,
    contents: BTreeMap<String, RawEntry>,
}

#[derive(Deserialize, Default)]
struct RawConfig {
    #[serde(rename = "storageLayout", default)]
    layout: Option<String>,
    #[serde(rename = "storageRegion", default)]
    region: Option<String>,
}

#[derive(Deserialize)]
struct RawEntry {
    digest: String,
    #[serde(default)]
    size: Option<u64>,
    #[serde(rename = "ref", default)]
    reference: Option<String>,
    #[serde(rename = "birthArtifactID", default)]
    birth_artifact_id: Option<String>,
}

/// A parsed manifest: the entries, and where files live without a signed URL.
#[derive(Debug)]
pub(crate) struct Parsed {
    pub entries: BTreeMap<RelPath, ForeignEntry>,
    /// `V1` or `V2/<region>`.
    pub storage: String,
}

/// Decodes W&B's base64 MD5.
pub(crate) fn md5_of(b64: &str) -> Option<[u8; 16]> {
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .ok()?
        .try_into()
        .ok()
}

pub(crate) fn parse(json: &[u8]) -> Result<Parsed, String> {
    let raw: Raw = serde_json::from_slice(json).map_err(|e| format!("the manifest: {e}"))?;
    if raw.version != 1 {
        return Err(format!(
            "manifest format version {} (hoard reads version 1)",
            raw.version
        ));
    }
    if raw.storage_policy != "wandb-storage-policy-v1" {
        return Err(format!(
            "storage policy `{}` (hoard reads `wandb-storage-policy-v1`)",
            hoard_types::truncate(&raw.storage_policy)
        ));
    }
    let config = raw.config.unwrap_or_default();
    let storage = match config.layout.as_deref() {
        None | Some("V1") => "V1".to_owned(),
        Some("V2") => format!("V2/{}", config.region.as_deref().unwrap_or("default")),
        Some(other) => {
            return Err(format!("storage layout `{}`", hoard_types::truncate(other)));
        }
    };
    let mut entries = BTreeMap::new();
    for (path, entry) in raw.contents {
        let bad = |why: String| format!("entry `{}`: {why}", hoard_types::truncate(&path));
        let rel = RelPath::new(&path).map_err(|e| bad(e.to_string()))?;
        let digest = match (md5_of(&entry.digest), &entry.reference) {
            (Some(md5), _) => ForeignDigest::Md5(md5),
            (None, Some(_)) if !entry.digest.is_empty() && entry.digest.len() <= 512 => {
                ForeignDigest::Etag(entry.digest.trim_matches('"').to_owned())
            }
            (None, _) => {
                return Err(bad(format!(
                    "digest `{}` is not a base64 MD5",
                    hoard_types::truncate(&entry.digest)
                )));
            }
        };
        let size = match (entry.size, &entry.reference) {
            (Some(size), _) => size,
            (None, Some(_)) => 0,
            (None, None) => return Err(bad("no size".to_owned())),
        };
        if let Some(uri) = &entry.reference
            && (uri.len() > 8192 || uri.chars().any(char::is_control))
        {
            return Err(bad("a reference that is not a URI".to_owned()));
        }
        entries.insert(
            rel,
            ForeignEntry {
                digest,
                size,
                reference: entry.reference,
                origin: entry.birth_artifact_id,
                blob_id: None,
            },
        );
    }
    Ok(Parsed { entries, storage })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_v2_manifest_parses() {
        let json = br#"{"version":1,"storagePolicy":"wandb-storage-policy-v1",
            "storagePolicyConfig":{"storageLayout":"V2"},
            "contents":{"a/b.txt":{"digest":"XUFAKrxLKna5cZ2REBfFkg==","size":5,
              "birthArtifactID":"QXJ0aWZhY3Q6MQ==","extra":{}}}}"#;
        let parsed = parse(json).unwrap();
        assert_eq!(parsed.storage, "V2/default");
        let entry = &parsed.entries[&RelPath::new("a/b.txt").unwrap()];
        assert_eq!(
            entry.digest.to_string(),
            "md5:5d41402abc4b2a76b9719d911017c592"
        );
        assert_eq!(entry.origin.as_deref(), Some("QXJ0aWZhY3Q6MQ=="));
    }

    #[test]
    fn hostile_or_malformed_entries_are_refused() {
        let manifest = |path: &str, digest: &str| {
            format!(
                r#"{{"version":1,"storagePolicy":"wandb-storage-policy-v1","contents":{{"{path}":{{"digest":"{digest}","size":1}}}}}}"#
            )
        };
        let good = "XUFAKrxLKna5cZ2REBfFkg==";
        for (path, digest, why) in [
            ("../etc/passwd", good, "entry `../etc/passwd`"),
            ("/abs", good, "entry `/abs`"),
            ("a", "not-md5", "not a base64 MD5"),
            ("a", "AAAA", "not a base64 MD5"),
        ] {
            let e = parse(manifest(path, digest).as_bytes()).unwrap_err();
            assert!(e.contains(why), "{path} {digest}: {e}");
        }
        let e = parse(br#"{"version":2,"storagePolicy":"x","contents":{}}"#).unwrap_err();
        assert!(e.contains("version 2"), "{e}");
    }
}
