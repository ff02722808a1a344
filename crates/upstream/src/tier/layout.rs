//! The tier's layout in its bucket, version 1: every key hoard reads or writes there is
//! made here, and nowhere else.
//!
//! ```text
//! PREFIX/blobs-v1/ab/<blake3>                      a blob's bytes (`ab`: its first byte)
//! PREFIX/meta-v1/<upstream>/versions/<entity>/<project>/<name>/v<N>.json
//! PREFIX/meta-v1/<upstream>/versions/<entity>/<project>/<name>/@<digest>.json
//!                                                  a native version (its manifest), aliases left out
//! PREFIX/meta-v1/<upstream>/foreign/<entity>/<project>/<algo>/<hex>.json
//!                                                  a foreign digest's blob, as downloaded
//!                                                  within that project: {"digest", "size"}
//! PREFIX/meta-v1/<upstream>/foreign-versions/<entity>/<project>/<name>/<label>.json
//!                                                  a foreign version (W&B `vN`, a Hub commit)
//! PREFIX/leases-v1/<blake3>/<unix ms>-<box>        a box's claim to download a blob
//! PREFIX/probe-v1/<box>                            written at start, to learn what the store honours
//! ```
//!
//! `<upstream>` is the first 16 hex digits of blake3 of the upstream's URL as hoard
//! describes it (`http://registry:7700`), so boxes on one upstream share metadata and
//! boxes on two never mix theirs. Everything is immutable except leases and probes:
//! aliases, branches and tags are never stored. Changing any of this is a new version
//! (`blobs-v2/`, …); the tests that pin it are `tier::layout::tests` and the e2e tests in
//! `tests/e2e/tier.rs`.

use hoard_types::{ArtifactName, Digest, ForeignDigest, Selector};

/// The keys of one tier: its prefix in the bucket, and the upstream it caches.
#[derive(Clone, Debug)]
pub(crate) struct Layout {
    /// Empty, or ends with `/`.
    prefix: String,
    upstream: String,
}

impl Layout {
    pub(crate) fn new(prefix: &str, upstream: &str) -> Self {
        let prefix = prefix.trim_matches('/');
        let hash = blake3::hash(upstream.as_bytes()).to_hex();
        Self {
            prefix: if prefix.is_empty() {
                String::new()
            } else {
                format!("{prefix}/")
            },
            upstream: hash[..16].to_owned(),
        }
    }

    pub(crate) fn blob(&self, digest: &Digest) -> String {
        let hex = digest.to_hex();
        format!("{}blobs-v1/{}/{hex}", self.prefix, &hex[..2])
    }

    /// A native version by number or digest; `None` for an alias (mutable: never stored).
    pub(crate) fn version(&self, name: &ArtifactName, selector: &Selector) -> Option<String> {
        let leaf = match selector {
            Selector::Version(n) => format!("v{n}"),
            Selector::Digest(digest) => format!("@{digest}"),
            Selector::Alias(_) => return None,
        };
        Some(format!(
            "{}meta-v1/{}/versions/{}/{}/{}/{leaf}.json",
            self.prefix, self.upstream, name.entity, name.project, name.name
        ))
    }

    /// Which blob a foreign digest's file downloaded within `project` (`entity/project`)
    /// is; `None` for an ETag (not computed from the bytes, so never checked: not shared)
    /// or a project that is not two plain names.
    pub(crate) fn binding(&self, project: &str, digest: &ForeignDigest) -> Option<String> {
        let text = digest.to_string();
        let (algo, hex) = text.split_once(':')?;
        if matches!(digest, ForeignDigest::Etag(_)) || !plain_project(project) {
            return None;
        }
        Some(format!(
            "{}meta-v1/{}/foreign/{project}/{algo}/{hex}.json",
            self.prefix, self.upstream
        ))
    }

    /// A foreign version by its label (`vN`, a Hub commit), which names it for good.
    pub(crate) fn foreign_version(&self, name: &ArtifactName, label: &str) -> Option<String> {
        let plain = !label.is_empty()
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_');
        plain.then(|| {
            format!(
                "{}meta-v1/{}/foreign-versions/{}/{}/{}/{label}.json",
                self.prefix, self.upstream, name.entity, name.project, name.name
            )
        })
    }

    /// Where the leases of a blob are listed.
    pub(crate) fn leases(&self, digest: &Digest) -> String {
        format!("{}leases-v1/{}/", self.prefix, digest.to_hex())
    }

    /// One box's lease on a blob, taken at `at_ms`.
    pub(crate) fn lease(&self, digest: &Digest, at_ms: u64, by: &str) -> String {
        format!("{}{at_ms:013}-{by}", self.leases(digest))
    }

    pub(crate) fn probe(&self, by: &str) -> String {
        format!("{}probe-v1/{by}", self.prefix)
    }

    /// The time and box of a lease key found under [`Self::leases`]; `None` for a key
    /// that is not one (garbage in the bucket is ignored, never trusted).
    pub(crate) fn parse_lease<'k>(&self, digest: &Digest, key: &'k str) -> Option<(u64, &'k str)> {
        let rest = key.strip_prefix(&self.leases(digest))?;
        let (at, by) = rest.split_once('-')?;
        if at.len() != 13 || !at.bytes().all(|b| b.is_ascii_digit()) || !is_box_id(by) {
            return None;
        }
        Some((at.parse().ok()?, by))
    }
}

/// `entity/project`, both checked as an artifact name's parts are.
fn plain_project(project: &str) -> bool {
    project
        .split_once('/')
        .is_some_and(|(entity, project)| ArtifactName::new(entity, project, "x").is_ok())
}

/// A box id: 1–64 of `[a-z0-9]`.
pub(crate) fn is_box_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_versioned_and_content_addressed() {
        let layout = Layout::new("/fleet/", "http://registry:7700");
        let digest = Digest::of(b"hello");
        let hex = digest.to_hex();
        assert_eq!(
            layout.blob(&digest),
            format!("fleet/blobs-v1/{}/{hex}", &hex[..2])
        );
        let name = ArtifactName::new("acme", "vision", "bike").unwrap();
        let upstream = &blake3::hash(b"http://registry:7700").to_hex()[..16];
        assert_eq!(
            layout.version(&name, &Selector::Version(3)).unwrap(),
            format!("fleet/meta-v1/{upstream}/versions/acme/vision/bike/v3.json")
        );
        assert_eq!(
            layout.version(&name, &Selector::Alias("latest".into())),
            None
        );
        let md5: ForeignDigest = "md5:5d41402abc4b2a76b9719d911017c592".parse().unwrap();
        assert_eq!(
            layout.binding("acme/vision", &md5).unwrap(),
            format!(
                "fleet/meta-v1/{upstream}/foreign/acme/vision/md5/5d41402abc4b2a76b9719d911017c592.json"
            )
        );
        assert_eq!(
            layout.binding("acme/vision", &ForeignDigest::Etag("x".into())),
            None
        );
        for bad in ["acme", "acme/../x", "a/b/c", "/vision"] {
            assert_eq!(layout.binding(bad, &md5), None, "{bad}");
        }
        assert_eq!(
            layout.foreign_version(&name, "0123abcd").unwrap(),
            format!("fleet/meta-v1/{upstream}/foreign-versions/acme/vision/bike/0123abcd.json")
        );
        assert_eq!(layout.foreign_version(&name, "../x"), None);
        assert_eq!(
            Layout::new("", "u").blob(&digest).split('/').next(),
            Some("blobs-v1")
        );
    }

    #[test]
    fn leases_read_back_and_garbage_is_refused() {
        let layout = Layout::new("p", "u");
        let digest = Digest::of(b"x");
        let key = layout.lease(&digest, 1_700_000_000_123, "box7");
        assert_eq!(
            layout.parse_lease(&digest, &key),
            Some((1_700_000_000_123, "box7"))
        );
        let base = layout.leases(&digest);
        for bad in [
            format!("{base}1700000000123-"),
            format!("{base}170000000012-box"),
            format!("{base}17000000001x3-box"),
            format!("{base}1700000000123-../../x"),
            format!("{base}1700000000123-BOX"),
            format!("{}1700000000123-box", layout.leases(&Digest::of(b"y"))),
        ] {
            assert_eq!(layout.parse_lease(&digest, &bad), None, "{bad}");
        }
        assert!(!is_box_id(&"a".repeat(65)));
    }
}
