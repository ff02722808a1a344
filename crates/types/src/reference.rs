//! Artifact references as users type them, the same shape as W&B's:
//! `[[entity/]project/]name[:alias|:vN]` or `[[entity/]project/]name@<manifest digest>`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::digest::truncate;
use crate::{Digest, Error};

/// Longest entity, project, name or alias accepted.
const MAX_SEGMENT: usize = 128;

/// Which version of an artifact a reference means.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Selector {
    /// A mutable pointer (`latest`, `best`), resolved by the upstream.
    Alias(String),
    /// `vN`: immutable once it exists.
    Version(u32),
    /// `@<digest>`: the version whose canonical manifest has this digest; immutable.
    Digest(Digest),
}

impl Selector {
    pub const LATEST: &'static str = "latest";

    /// Whether the answer can change over time (and so must be asked of the upstream again).
    pub fn is_mutable(&self) -> bool {
        matches!(self, Self::Alias(_))
    }

    /// Parses the part after `:`: `vN` is a version, anything else of the allowed
    /// characters an alias.
    pub fn parse_tag(tag: &str) -> Result<Self, String> {
        // The Hugging Face Hub's pull-request revisions: the one alias with `/` in it.
        if is_pull_request(tag) {
            return Ok(Self::Alias(tag.to_owned()));
        }
        if let Some(number) = tag
            .strip_prefix('v')
            .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        {
            if number.len() > 1 && number.starts_with('0') {
                return Err(format!(
                    "version `{tag}` has a leading zero (write `v{}`)",
                    number.trim_start_matches('0').max("0")
                ));
            }
            return number
                .parse()
                .map(Self::Version)
                .map_err(|_| format!("version `{tag}` is too large"));
        }
        check_segment("alias", tag)?;
        Ok(Self::Alias(tag.to_owned()))
    }

    /// The selector as one URL path segment of the registry protocol: `vN`, the alias, or
    /// `@<digest>`. Every form is a safe segment (see `check_segment`), and
    /// [`Self::from_segment`] reads it back.
    pub fn to_segment(&self) -> String {
        match self {
            // Never one of the registry's (see [`is_pull_request`]); one segment anyway.
            Self::Alias(alias) => alias.replace('/', "%2F"),
            Self::Version(n) => format!("v{n}"),
            Self::Digest(digest) => format!("@{digest}"),
        }
    }

    /// Parses [`Self::to_segment`]'s output.
    pub fn from_segment(segment: &str) -> Result<Self, String> {
        match segment.strip_prefix('@') {
            Some(hex) => hex
                .parse()
                .map(Self::Digest)
                .map_err(|_| format!("`{}` is not a manifest digest", truncate(hex))),
            None => Self::parse_tag(segment),
        }
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Alias(alias) => write!(f, ":{alias}"),
            Self::Version(n) => write!(f, ":v{n}"),
            Self::Digest(digest) => write!(f, "@{digest}"),
        }
    }
}

/// A fully qualified project: `entity/project`, the place artifacts are listed.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ProjectName {
    pub entity: String,
    pub project: String,
}

impl ProjectName {
    /// Parses `entity/project` or `project` (or nothing), filling the rest from defaults
    /// and saying which one is missing, as [`ArtifactRef::qualify`] does.
    pub fn parse(
        input: Option<&str>,
        entity: Option<&str>,
        project: Option<&str>,
    ) -> Result<Self, Error> {
        let typed = input.unwrap_or("(none)");
        let err = |reason: String| Error::Project {
            input: truncate(typed),
            reason,
        };
        let (entity, project) = match input.map(|i| i.split('/').collect::<Vec<_>>()) {
            None => (entity, project),
            Some(parts) => match parts[..] {
                [project] => (entity, Some(project)),
                [entity, project] => (Some(entity), Some(project)),
                _ => {
                    return Err(err(format!(
                        "it has {} `/`-separated parts, at most 2 are allowed",
                        parts.len()
                    )));
                }
            },
        };
        let missing = |what: &str| {
            err(format!(
                "no {what} given: write `entity/project`, or set `HOARD_{}` (the CLI's `--{what}`)",
                what.to_uppercase()
            ))
        };
        let project = project.ok_or_else(|| missing("project"))?;
        let entity = entity.ok_or_else(|| missing("entity"))?;
        check_segment("entity", entity).map_err(err)?;
        check_segment("project", project).map_err(err)?;
        Ok(Self {
            entity: entity.to_owned(),
            project: project.to_owned(),
        })
    }
}

impl fmt::Display for ProjectName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.entity, self.project)
    }
}

/// A fully qualified artifact: `entity/project/name`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ArtifactName {
    pub entity: String,
    pub project: String,
    pub name: String,
}

impl ArtifactName {
    /// Builds a name from parts, each checked like a typed reference's.
    pub fn new(entity: &str, project: &str, name: &str) -> Result<Self, Error> {
        let full = format!("{entity}/{project}/{name}");
        let err = |reason| Error::Reference {
            input: truncate(&full),
            reason,
        };
        check_segment("entity", entity).map_err(err)?;
        check_segment("project", project).map_err(err)?;
        check_segment("name", name).map_err(err)?;
        Ok(Self {
            entity: entity.to_owned(),
            project: project.to_owned(),
            name: name.to_owned(),
        })
    }
}

impl fmt::Display for ArtifactName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.entity, self.project, self.name)
    }
}

/// A reference as typed: entity and project may be left to defaults (config,
/// `HOARD_ENTITY`, `HOARD_PROJECT`); a missing selector means `:latest`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ArtifactRef {
    pub entity: Option<String>,
    pub project: Option<String>,
    pub name: String,
    pub selector: Selector,
}

impl ArtifactRef {
    /// Fills in the entity and project from defaults, and says which one is missing if a
    /// default is needed but absent.
    pub fn qualify(
        &self,
        entity: Option<&str>,
        project: Option<&str>,
    ) -> Result<ArtifactName, Error> {
        // As typed: without the `:latest` that a reference without a selector stands for.
        let mut typed = [
            self.entity.as_deref(),
            self.project.as_deref(),
            Some(&self.name),
        ]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join("/");
        if self.selector != Selector::Alias(Selector::LATEST.to_owned()) {
            typed.push_str(&self.selector.to_string());
        }
        let missing = |what: &str| Error::Reference {
            input: truncate(&typed),
            reason: format!(
                "no {what} given: write `entity/project/name`, or set `HOARD_{}` (the CLI's `--{what}`)",
                what.to_uppercase()
            ),
        };
        let project = self
            .project
            .as_deref()
            .or(project)
            .ok_or_else(|| missing("project"))?;
        let entity = self
            .entity
            .as_deref()
            .or(entity)
            .ok_or_else(|| missing("entity"))?;
        ArtifactName::new(entity, project, &self.name)
    }
}

impl FromStr for ArtifactRef {
    type Err = Error;

    fn from_str(input: &str) -> Result<Self, Error> {
        let err = |reason: String| Error::Reference {
            input: truncate(input),
            reason,
        };
        if input.is_empty() {
            return Err(err("it is empty".to_owned()));
        }
        let (path, selector) = if let Some((path, digest)) = input.split_once('@') {
            let digest = digest.parse::<Digest>().map_err(|_| {
                err(format!(
                    "`{}` after `@` is not a 64-hex-digit manifest digest",
                    truncate(digest)
                ))
            })?;
            (path, Selector::Digest(digest))
        } else if let Some((path, tag)) = input.split_once(':') {
            (path, Selector::parse_tag(tag).map_err(err)?)
        } else {
            (input, Selector::Alias(Selector::LATEST.to_owned()))
        };
        let parts: Vec<&str> = path.split('/').collect();
        let (entity, project, name) = match parts[..] {
            [name] => (None, None, name),
            [project, name] => (None, Some(project), name),
            [entity, project, name] => (Some(entity), Some(project), name),
            _ => {
                return Err(err(format!(
                    "it has {} `/`-separated parts, at most 3 are allowed",
                    parts.len()
                )));
            }
        };
        for (what, value) in [
            ("entity", entity),
            ("project", project),
            ("name", Some(name)),
        ] {
            if let Some(value) = value {
                check_segment(what, value).map_err(err)?;
            }
        }
        Ok(Self {
            entity: entity.map(str::to_owned),
            project: project.map(str::to_owned),
            name: name.to_owned(),
            selector,
        })
    }
}

impl fmt::Display for ArtifactRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(entity) = &self.entity {
            write!(f, "{entity}/")?;
        }
        if let Some(project) = &self.project {
            write!(f, "{project}/")?;
        }
        write!(f, "{}{}", self.name, self.selector)
    }
}

impl Serialize for ArtifactRef {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ArtifactRef {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// Checks an alias as a registry would before storing it: a valid segment that does not
/// look like a version number (`v3` would be unreachable as an alias).
pub fn check_alias(alias: &str) -> Result<(), Error> {
    let err = |reason| Error::Reference {
        input: truncate(alias),
        reason,
    };
    if is_pull_request(alias) {
        return Err(err(format!(
            "`{alias}` is a Hugging Face Hub revision (a pull request), not an alias one can give"
        )));
    }
    match Selector::parse_tag(alias).map_err(err)? {
        Selector::Alias(_) => Ok(()),
        _ => Err(err(format!(
            "alias `{alias}` has the form of a version number"
        ))),
    }
}

/// `refs/pr/N`: a pull request's revision on the Hugging Face Hub, which a reference may
/// name (`ORG/NAME:refs/pr/3`) but nothing may publish as an alias.
pub fn is_pull_request(tag: &str) -> bool {
    tag.strip_prefix("refs/pr/").is_some_and(|n| {
        !n.is_empty()
            && n.len() <= 10
            && n.bytes().all(|b| b.is_ascii_digit())
            && !n.starts_with('0')
    })
}

/// Entities, projects, names and aliases: 1 to 128 of `A-Z a-z 0-9 _ - .`, not starting
/// with `.`, so that each is also a safe single path component and URL segment.
fn check_segment(what: &str, value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err(format!("the {what} is empty"));
    }
    if value.len() > MAX_SEGMENT {
        return Err(format!(
            "the {what} is longer than {MAX_SEGMENT} characters"
        ));
    }
    if value.starts_with('.') {
        return Err(format!("the {what} `{value}` starts with `.`"));
    }
    if let Some(c) = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')))
    {
        return Err(format!(
            "the {what} `{}` contains `{c}`; allowed are letters, digits, `_`, `-` and `.`",
            truncate(value)
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn parse(s: &str) -> ArtifactRef {
        s.parse().unwrap()
    }

    #[test]
    fn a_pull_request_revision_is_a_reference_and_never_an_alias_to_give() {
        let r = parse("models/acme/toy:refs/pr/3");
        assert_eq!(r.selector, Selector::Alias("refs/pr/3".into()));
        assert_eq!(r.to_string(), "models/acme/toy:refs/pr/3");
        assert_eq!(r.selector.to_segment(), "refs%2Fpr%2F3");
        for bad in [
            "refs/pr/",
            "refs/pr/03",
            "refs/pr/x",
            "refs/heads/main",
            "refs/pr/3/x",
        ] {
            assert!(
                format!("acme/toy:{bad}").parse::<ArtifactRef>().is_err(),
                "{bad}"
            );
        }
        let e = check_alias("refs/pr/3").unwrap_err().to_string();
        assert!(e.contains("Hugging Face Hub revision"), "{e}");
    }

    #[test]
    fn a_project_takes_defaults_and_names_what_is_missing() {
        let p = ProjectName::parse(Some("acme/vision"), None, None).unwrap();
        assert_eq!(p.to_string(), "acme/vision");
        let p = ProjectName::parse(Some("vision"), Some("acme"), Some("other")).unwrap();
        assert_eq!(p.to_string(), "acme/vision");
        let p = ProjectName::parse(None, Some("acme"), Some("vision")).unwrap();
        assert_eq!(p.to_string(), "acme/vision");
        let e = ProjectName::parse(Some("vision"), None, None).unwrap_err();
        assert!(e.to_string().contains("HOARD_ENTITY"), "{e}");
        let e = ProjectName::parse(None, Some("acme"), None).unwrap_err();
        assert!(e.to_string().contains("HOARD_PROJECT"), "{e}");
        let e = ProjectName::parse(Some("a/b/c"), None, None).unwrap_err();
        assert!(e.to_string().contains("3 `/`-separated parts"), "{e}");
        assert!(e.to_string().contains("expected `entity/project`"), "{e}");
        let e = ProjectName::parse(Some("acme/../x"), None, None).unwrap_err();
        assert!(e.to_string().contains("3 `/`-separated"), "{e}");
        let e = ProjectName::parse(Some("acme/.."), None, None).unwrap_err();
        assert!(e.to_string().contains("starts with `.`"), "{e}");
    }

    #[test]
    fn selector_segments_round_trip() {
        let digest = Digest::of(b"m");
        for selector in [
            Selector::Alias("best".into()),
            Selector::Version(12),
            Selector::Digest(digest),
        ] {
            assert_eq!(Selector::from_segment(&selector.to_segment()), Ok(selector));
        }
        assert!(Selector::from_segment("@abc").is_err());
        assert!(Selector::from_segment("a/b").is_err());
        assert!(check_alias("v3").is_err());
        assert!(check_alias("prod").is_ok());
    }

    #[test]
    fn the_documented_shapes() {
        let r = parse("bike-dataset");
        assert_eq!(
            (r.entity, r.project, r.name.as_str()),
            (None, None, "bike-dataset")
        );
        assert_eq!(r.selector, Selector::Alias("latest".into()));

        let r = parse("vision/bike-dataset:best");
        assert_eq!((r.entity, r.project.as_deref()), (None, Some("vision")));
        assert_eq!(r.selector, Selector::Alias("best".into()));

        let r = parse("acme/vision/bike-dataset:v12");
        assert_eq!(r.entity.as_deref(), Some("acme"));
        assert_eq!(r.selector, Selector::Version(12));
        assert!(!r.selector.is_mutable());

        let d = Digest::of(b"m");
        let r = parse(&format!("acme/vision/bike.v2@{d}"));
        assert_eq!(r.name, "bike.v2");
        assert_eq!(r.selector, Selector::Digest(d));
    }

    #[test]
    fn errors_show_the_grammar_and_the_reason() {
        for (bad, why) in [
            ("", "empty"),
            ("a/b/c/d", "4 `/`-separated parts"),
            ("a//c", "project is empty"),
            ("name:", "alias is empty"),
            ("name:v01", "leading zero"),
            ("name:v99999999999", "too large"),
            ("na me", "contains ` `"),
            ("../etc", "starts with `.`"),
            ("name@abc", "manifest digest"),
            ("name:a:b", "contains `:`"),
            ("x/name:latest@00", "manifest digest"),
        ] {
            let err = bad.parse::<ArtifactRef>().unwrap_err().to_string();
            assert!(err.contains(why), "{bad:?}: {err}");
            assert!(err.contains("[[entity/]project/]name[:alias|:vN]"), "{err}");
        }
    }

    #[test]
    fn qualify_uses_defaults_only_where_missing() {
        let r = parse("vision/bike");
        let full = r.qualify(Some("acme"), Some("other")).unwrap();
        assert_eq!(full.to_string(), "acme/vision/bike");
        let err = parse("bike")
            .qualify(None, Some("p"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("no entity given"), "{err}");
        // What was typed, not the `:latest` it stands for (`m2`, not `m2:latest`).
        assert!(
            err.starts_with("Invalid artifact reference `bike`:"),
            "{err}"
        );
    }

    fn segment() -> impl Strategy<Value = String> {
        "[A-Za-z0-9_-][A-Za-z0-9._-]{0,15}"
    }

    fn selector() -> impl Strategy<Value = Selector> {
        prop_oneof![
            segment()
                .prop_filter("not a version", |s| Selector::parse_tag(s)
                    .is_ok_and(|t| matches!(t, Selector::Alias(_))))
                .prop_map(Selector::Alias),
            any::<u32>().prop_map(Selector::Version),
            any::<[u8; 32]>().prop_map(|b| Selector::Digest(Digest::from_bytes(b))),
        ]
    }

    proptest! {
        #[test]
        fn display_parses_back(entity in prop::option::of(segment()), project in prop::option::of(segment()), name in segment(), selector in selector()) {
            let project = project.or_else(|| entity.as_ref().map(|_| "p".to_owned()));
            let r = ArtifactRef { entity, project, name, selector };
            prop_assert_eq!(r.to_string().parse::<ArtifactRef>().unwrap(), r);
        }

        #[test]
        fn never_panics_and_accepts_only_safe_segments(s in "\\PC{0,40}") {
            if let Ok(r) = s.parse::<ArtifactRef>() {
                for part in [r.entity.as_deref(), r.project.as_deref(), Some(r.name.as_str())].into_iter().flatten() {
                    prop_assert!(!part.is_empty() && !part.starts_with('.') && !part.contains('/'));
                }
            }
        }
    }
}
