//! Manifests: every file of a version, and the canonical JSON its digest is computed over.
//!
//! Canonical form: UTF-8 JSON, object keys sorted bytewise, no insignificant whitespace,
//! integers only, optional fields omitted when absent or false. The struct fields below
//! are declared in bytewise order and `entries` is a [`BTreeMap`] of [`RelPath`] (bytewise
//! `Ord`), so `serde_json`'s compact writer produces exactly that form. Changing a field
//! name or order changes every manifest digest: the `canonical_bytes_are_pinned` test
//! guards it.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

use crate::{Digest, Error, RelPath};

/// The only manifest format version this code reads and writes.
pub const FORMAT_VERSION: u32 = 1;
/// Largest file size accepted from a manifest: 1 PiB. Bounds what an upstream can make
/// the daemon plan for.
pub const MAX_FILE_SIZE: u64 = 1 << 50;
/// Most entries accepted in one manifest.
pub const MAX_ENTRIES: usize = 10_000_000;
/// Reference URI schemes hoard knows how to fetch, or will.
const REF_SCHEMES: [&str; 5] = ["https://", "http://", "file://", "s3://", "gs://"];

/// One file of a version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// blake3 of the file's bytes.
    pub digest: Digest,
    /// The executable bit: part of the blob's identity, because hardlinks share the mode.
    #[serde(default, skip_serializing_if = "is_false")]
    pub exec: bool,
    /// Where the bytes live, for a reference entry (`https://`, `file://`, `s3://`).
    #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    pub size: u64,
}

#[expect(
    clippy::trivially_copy_pass_by_ref,
    reason = "serde's skip_serializing_if passes a reference"
)]
fn is_false(b: &bool) -> bool {
    !*b
}

/// Logical path → [`Entry`] for every file of a version.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Manifest {
    pub entries: BTreeMap<RelPath, Entry>,
    pub version: u32,
}

impl Manifest {
    /// An empty manifest of the current format.
    pub fn new() -> Self {
        Self {
            entries: BTreeMap::new(),
            version: FORMAT_VERSION,
        }
    }

    /// Parses and validates a manifest from untrusted JSON.
    pub fn from_json(json: &[u8]) -> Result<Self, Error> {
        let manifest: Self = serde_json::from_slice(json).map_err(|e| Error::Manifest {
            reason: e.to_string(),
        })?;
        manifest.validate()?;
        Ok(manifest)
    }

    /// Checks what parsing alone cannot: the format version, sizes, reference URIs, and
    /// that no path is both a file and a directory (`a` and `a/b`).
    pub fn validate(&self) -> Result<(), Error> {
        let invalid = |reason: String| Err(Error::Manifest { reason });
        if self.version != FORMAT_VERSION {
            return invalid(format!(
                "format version {} is not supported (expected {FORMAT_VERSION}); upgrade hoard",
                self.version
            ));
        }
        if self.entries.len() > MAX_ENTRIES {
            return invalid(format!(
                "{} entries, more than the {MAX_ENTRIES} accepted",
                self.entries.len()
            ));
        }
        for (path, entry) in &self.entries {
            if entry.size > MAX_FILE_SIZE {
                return invalid(format!(
                    "`{path}` has size {}, more than the 1 PiB accepted",
                    entry.size
                ));
            }
            if let Some(uri) = &entry.reference
                && (!REF_SCHEMES.iter().any(|s| uri.starts_with(s))
                    || uri.len() > 8192
                    || uri.chars().any(char::is_control))
            {
                return invalid(format!(
                    "`{path}` has reference `{}`, expected an http(s)://, file://, s3:// or gs:// URI",
                    crate::digest::truncate(uri)
                ));
            }
            if let Some(dir) = path.ancestors().find(|dir| self.entries.contains_key(*dir)) {
                return invalid(format!(
                    "`{dir}` is a file and also the directory of `{path}`"
                ));
            }
        }
        Ok(())
    }

    /// The canonical JSON (see the module docs).
    pub fn canonical_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a manifest always serializes: string keys, no floats")
    }

    /// blake3 of [`Self::canonical_json`]: the version's identity.
    pub fn digest(&self) -> Digest {
        Digest::of(&self.canonical_json())
    }

    /// Sum of all entry sizes (bounded by validation, so it cannot overflow).
    pub fn total_size(&self) -> u64 {
        self.entries.values().map(|e| e.size).sum()
    }

    /// Entries under a path prefix, in path order.
    pub fn select<'a>(
        &'a self,
        prefix: &PathPrefix,
    ) -> impl Iterator<Item = (&'a RelPath, &'a Entry)> + 'a {
        under_prefix(&self.entries, prefix)
    }
}

/// The entries of a path-ordered map under a path prefix, in path order (a range of the
/// map, not a scan).
pub fn under_prefix<'a, E>(
    entries: &'a BTreeMap<RelPath, E>,
    prefix: &PathPrefix,
) -> impl Iterator<Item = (&'a RelPath, &'a E)> + 'a {
    let prefix = prefix.clone();
    entries
        .range::<str, _>((
            std::ops::Bound::Included(prefix.as_str()),
            std::ops::Bound::Unbounded,
        ))
        .take_while(move |(path, _)| prefix.matches(path))
}

impl<'de> Deserialize<'de> for Manifest {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Raw {
            entries: Entries,
            version: u32,
        }
        let raw = Raw::deserialize(deserializer)?;
        Ok(Self {
            entries: raw.entries.0,
            version: raw.version,
        })
    }
}

/// The `entries` object, rejecting a path that appears twice (JSON parsers usually keep
/// the last one silently, which would let two parties read different manifests).
struct Entries(BTreeMap<RelPath, Entry>);

impl<'de> Deserialize<'de> for Entries {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct EntriesVisitor;
        impl<'de> Visitor<'de> for EntriesVisitor {
            type Value = Entries;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object of path → entry")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Entries, A::Error> {
                let mut entries = BTreeMap::new();
                while let Some((path, entry)) = map.next_entry::<RelPath, Entry>()? {
                    if entries.contains_key(&path) {
                        return Err(serde::de::Error::custom(format!(
                            "path `{path}` appears twice"
                        )));
                    }
                    entries.insert(path, entry);
                }
                Ok(Entries(entries))
            }
        }
        deserializer.deserialize_map(EntriesVisitor)
    }
}

/// A path prefix as W&B's `download(path_prefix=…)` takes it: a plain string prefix of
/// the logical path (`images/` selects `images/a.png`; `images` also selects
/// `images2/b.png`, as in W&B). Empty selects everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PathPrefix(String);

impl PathPrefix {
    /// Everything.
    pub fn all() -> Self {
        Self(String::new())
    }

    pub fn new(prefix: &str) -> Result<Self, Error> {
        let err = |reason| Error::Path {
            input: crate::digest::truncate(prefix),
            reason,
        };
        if prefix.starts_with('/') {
            return Err(err("a path prefix must be relative"));
        }
        if prefix.contains('\0') {
            return Err(err("expected no NUL byte"));
        }
        if prefix.split('/').any(|c| c == "..") {
            return Err(err("expected no `..` component"));
        }
        Ok(Self(prefix.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn matches(&self, path: &RelPath) -> bool {
        path.as_str().starts_with(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn entry(data: &[u8]) -> Entry {
        Entry {
            digest: Digest::of(data),
            exec: false,
            reference: None,
            size: data.len() as u64,
        }
    }

    fn manifest(paths: &[&str]) -> Manifest {
        let mut m = Manifest::new();
        for p in paths {
            m.entries
                .insert(RelPath::new(*p).unwrap(), entry(p.as_bytes()));
        }
        m
    }

    /// Pins the canonical form: if this changes, every stored manifest digest changes.
    #[test]
    fn canonical_bytes_are_pinned() {
        let mut m = Manifest::new();
        m.entries.insert(
            RelPath::new("b/x.sh").unwrap(),
            Entry {
                exec: true,
                ..entry(b"x")
            },
        );
        m.entries.insert(
            RelPath::new("a.bin").unwrap(),
            Entry {
                reference: Some("https://e.com/a".into()),
                ..entry(b"")
            },
        );
        let json = String::from_utf8(m.canonical_json()).unwrap();
        let (e, x) = (Digest::of(b""), Digest::of(b"x"));
        assert_eq!(
            json,
            format!(
                r#"{{"entries":{{"a.bin":{{"digest":"{e}","ref":"https://e.com/a","size":0}},"b/x.sh":{{"digest":"{x}","exec":true,"size":1}}}},"version":1}}"#
            )
        );
        assert_eq!(m.digest(), Digest::of(json.as_bytes()));
    }

    #[test]
    fn parsing_ignores_key_order_and_whitespace_but_not_content() {
        let d = Digest::of(b"x");
        let a = format!(
            r#"{{"version":1,"entries":{{"p":{{"size":1,"digest":"{d}","exec":false}}}}}}"#
        );
        let b = format!(
            "{{ \"entries\" : {{ \"p\" : {{ \"digest\" : \"{d}\", \"size\" : 1 }} }}, \"version\" : 1 }}"
        );
        let (ma, mb) = (
            Manifest::from_json(a.as_bytes()).unwrap(),
            Manifest::from_json(b.as_bytes()).unwrap(),
        );
        assert_eq!(ma.digest(), mb.digest());
        let c = b.replace("\"size\" : 1", "\"size\" : 2");
        assert_ne!(
            Manifest::from_json(c.as_bytes()).unwrap().digest(),
            ma.digest()
        );
    }

    #[test]
    fn hostile_manifests_are_rejected_with_the_reason() {
        let d = Digest::of(b"x");
        let one = |path: &str, extra: &str| {
            format!(r#"{{"version":1,"entries":{{"{path}":{{"digest":"{d}","size":1{extra}}}}}}}"#)
        };
        for (json, why) in [
            (one("../etc/passwd", ""), "`..`"),
            (one("/abs", ""), "relative"),
            (one("a//b", ""), "empty component"),
            (one("a", ",\"size\":2"), "duplicate field"),
            (one("a", ",\"mode\":493"), "unknown field"),
            (one("a", ",\"ref\":\"ftp://x\""), "expected an http(s)://"),
            (
                one("a", ",\"size\":1.5").replace(",\"size\":1,", ","),
                "floating point",
            ),
            (
                one("a", "").replace("\"size\":1", "\"size\":-1"),
                "invalid value",
            ),
            (
                one("a", "").replace("\"size\":1", "\"size\":18446744073709551615"),
                "1 PiB",
            ),
            (
                one("a", "").replace("\"version\":1", "\"version\":2"),
                "format version 2",
            ),
            (
                format!(
                    r#"{{"version":1,"entries":{{"a":{{"digest":"{d}","size":1}},"a":{{"digest":"{d}","size":1}}}}}}"#
                ),
                "appears twice",
            ),
            (
                format!(
                    r#"{{"version":1,"entries":{{"a":{{"digest":"{d}","size":1}},"a/b":{{"digest":"{d}","size":1}}}}}}"#
                ),
                "is a file and also the directory",
            ),
            ("[]".to_owned(), "expected struct"),
        ] {
            let err = Manifest::from_json(json.as_bytes())
                .unwrap_err()
                .to_string();
            assert!(err.contains(why), "{json}: {err}");
        }
    }

    #[test]
    fn select_by_prefix_is_a_string_prefix() {
        let m = manifest(&[
            "images/a.png",
            "images/b/c.png",
            "images2/d.png",
            "labels.csv",
        ]);
        let pick = |p: &str| {
            m.select(&PathPrefix::new(p).unwrap())
                .map(|(p, _)| p.as_str())
                .collect::<Vec<_>>()
        };
        assert_eq!(pick("images/"), ["images/a.png", "images/b/c.png"]);
        assert_eq!(
            pick("images"),
            ["images/a.png", "images/b/c.png", "images2/d.png"]
        );
        assert_eq!(pick("").len(), 4);
        assert_eq!(pick("labels.csv"), ["labels.csv"]);
        assert!(pick("zzz").is_empty());
        assert!(PathPrefix::new("../x").is_err());
        assert!(PathPrefix::new("/x").is_err());
    }

    proptest! {
        /// The digest depends on the set of entries, not on the order they were added or
        /// the order their keys appear in the JSON.
        #[test]
        fn digest_is_order_independent(paths in prop::collection::btree_set("[a-z]{1,3}(/[a-z]{1,3}){0,2}", 1..20), seed in any::<u64>()) {
            let paths: Vec<String> = paths.into_iter().collect();
            let m = Manifest { entries: paths.iter().map(|p| (RelPath::new(p.clone()).unwrap(), entry(p.as_bytes()))).collect(), version: 1 };
            // Build the same manifest in another insertion order, and as reordered JSON.
            let mut shuffled = paths.clone();
            let n = shuffled.len();
            for i in 0..n { shuffled.swap(i, (seed as usize).wrapping_add(i * 7) % n); }
            let mut other = Manifest::new();
            for p in &shuffled { other.entries.insert(RelPath::new(p.clone()).unwrap(), entry(p.as_bytes())); }
            prop_assert_eq!(m.digest(), other.digest());
            let body: Vec<String> = shuffled.iter().map(|p| format!(r#""{p}":{{"size":{},"digest":"{}"}}"#, p.len(), Digest::of(p.as_bytes()))).collect();
            let json = format!(r#"{{"entries":{{{}}},"version":1}}"#, body.join(","));
            match Manifest::from_json(json.as_bytes()) {
                Ok(parsed) => prop_assert_eq!(parsed.digest(), m.digest()),
                Err(e) => prop_assert!(e.to_string().contains("is a file and also the directory"), "{}", e),
            }
        }
    }
}
