//! Relative paths inside an artifact, validated so that joining one to a destination can
//! never name anything outside it.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::Error;

/// Longest path accepted, in bytes (Linux `PATH_MAX`).
const MAX_PATH: usize = 4096;
/// Longest component accepted, in bytes (Linux `NAME_MAX`).
const MAX_COMPONENT: usize = 255;

/// A `/`-separated relative path of one file in an artifact.
///
/// It cannot be absolute, empty, or contain an empty component (`a//b`, a trailing `/`),
/// `.`, `..` or NUL, so `dest.join(path)` stays inside `dest` as long as no component of
/// `dest`'s tree is a symlink (the materializer enforces that part). Ordering is bytewise,
/// the order of canonical manifests.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RelPath(String);

impl RelPath {
    pub fn new(path: impl Into<String>) -> Result<Self, Error> {
        let path = path.into();
        validate(&path).map_err(|reason| Error::Path {
            input: crate::digest::truncate(&path),
            reason,
        })?;
        Ok(Self(path))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The components, each non-empty and neither `.` nor `..`.
    pub fn components(&self) -> impl DoubleEndedIterator<Item = &str> {
        self.0.split('/')
    }

    /// The directory part (`a/b` of `a/b/c`), `None` for a top-level file.
    pub fn parent(&self) -> Option<&str> {
        self.0.rsplit_once('/').map(|(dir, _)| dir)
    }

    /// The last component.
    pub fn file_name(&self) -> &str {
        self.0.rsplit_once('/').map_or(&self.0, |(_, name)| name)
    }

    /// Every proper ancestor directory, outermost first: `a`, `a/b` for `a/b/c`.
    pub fn ancestors(&self) -> impl Iterator<Item = &str> {
        self.0.match_indices('/').map(|(i, _)| &self.0[..i])
    }
}

fn validate(path: &str) -> Result<(), &'static str> {
    if path.is_empty() {
        return Err("expected a non-empty relative path");
    }
    if path.len() > MAX_PATH {
        return Err("expected at most 4096 bytes");
    }
    if path.starts_with('/') {
        return Err("expected a relative path, not an absolute one");
    }
    if path.contains('\0') {
        return Err("expected no NUL byte");
    }
    for component in path.split('/') {
        match component {
            "" => return Err("expected no empty component (`//` or a trailing `/`)"),
            "." => return Err("expected no `.` component"),
            ".." => return Err("expected no `..` component"),
            c if c.len() > MAX_COMPONENT => return Err("expected components of at most 255 bytes"),
            _ => {}
        }
    }
    Ok(())
}

impl FromStr for RelPath {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        Self::new(s)
    }
}

impl fmt::Display for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

/// Lets maps keyed by [`RelPath`] be queried with a `&str`; sound because `Eq`, `Ord` and
/// `Hash` are derived from the inner `String`.
impl std::borrow::Borrow<str> for RelPath {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for RelPath {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Serialize for RelPath {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for RelPath {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Self::new(String::deserialize(deserializer)?).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Component, Path};

    use proptest::prelude::*;

    use super::*;

    #[test]
    fn rejects_what_could_escape_or_is_ambiguous() {
        for (bad, why) in [
            ("", "non-empty"),
            ("/etc/passwd", "relative path"),
            ("../x", "`..`"),
            ("a/../../x", "`..`"),
            ("a/..", "`..`"),
            ("./a", "`.`"),
            ("a/./b", "`.`"),
            ("a//b", "empty component"),
            ("a/", "empty component"),
            ("a\0b", "NUL"),
        ] {
            let err = RelPath::new(bad).unwrap_err().to_string();
            assert!(err.contains(why), "{bad:?}: {err}");
        }
        assert!(RelPath::new("x".repeat(256)).is_err());
        assert!(RelPath::new(format!("{}/y", "x".repeat(255))).is_ok());
    }

    #[test]
    fn accepts_ordinary_names() {
        for good in [
            "a",
            "images/bike.png",
            "..a",
            "a..",
            ".hidden/x",
            "a b/ü.txt",
            "a\\b",
        ] {
            assert_eq!(RelPath::new(good).unwrap().as_str(), good);
        }
    }

    #[test]
    fn parts() {
        let p = RelPath::new("a/b/c.txt").unwrap();
        assert_eq!(p.parent(), Some("a/b"));
        assert_eq!(p.file_name(), "c.txt");
        assert_eq!(p.ancestors().collect::<Vec<_>>(), ["a", "a/b"]);
        let top = RelPath::new("c.txt").unwrap();
        assert_eq!(top.parent(), None);
        assert_eq!(top.ancestors().count(), 0);
    }

    fn component() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-zA-Z0-9_.-]{1,20}",
            "\\PC{1,8}",
            Just("..".to_owned()),
            Just(".".to_owned()),
            Just(String::new()),
        ]
    }

    proptest! {
        /// Whatever is accepted, joined to a base, stays under that base (checked
        /// lexically with std's own component parser), and round-trips through JSON.
        #[test]
        fn accepted_paths_stay_beneath(parts in prop::collection::vec(component(), 1..6), lead in prop::bool::ANY) {
            let text = format!("{}{}", if lead { "/" } else { "" }, parts.join("/"));
            match RelPath::new(text.clone()) {
                Ok(path) => {
                    prop_assert!(!lead);
                    let joined = Path::new("/base").join(path.as_str());
                    prop_assert!(joined.starts_with("/base"));
                    let normal = Path::new(path.as_str()).components().all(|c| matches!(c, Component::Normal(_)));
                    prop_assert!(normal, "{:?}", path);
                    prop_assert_eq!(Path::new(path.as_str()).components().count(), text.split('/').count());
                    let json = serde_json::to_string(&path).unwrap();
                    prop_assert_eq!(serde_json::from_str::<RelPath>(&json).unwrap(), path);
                }
                Err(_) => prop_assert!(
                    lead || parts.iter().any(|p| p.is_empty() || p == "." || p == ".." || p.contains('/') || p.contains('\0') || p.len() > 255)
                ),
            }
        }
    }
}
