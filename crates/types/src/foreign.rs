//! Versions of upstreams that name files by their own digests (W&B: MD5), not by blake3.
//!
//! A [`ForeignVersion`] is what such an upstream says a version holds: paths, sizes and
//! foreign digests. hoard learns the blake3 digest of a file only by downloading it, so a
//! foreign version is not a [`crate::Manifest`]; the daemon binds the entries a request
//! selects to blobs (through the index's foreign-digest map, downloading what it has never
//! seen) and materializes the bound [`crate::Manifest`]. The daemon keeps the foreign
//! version itself, so a warm request for `name:vN` needs no network.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{ArtifactName, Digest, Error, ForeignDigest, PathPrefix, RelPath};

/// One version of an artifact as a foreign upstream describes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForeignVersion {
    pub entity: String,
    pub project: String,
    pub name: String,
    /// `vN`.
    pub version: String,
    /// The upstream's id of this version (W&B: the artifact id).
    pub id: String,
    #[serde(default)]
    pub aliases: Vec<String>,
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    #[serde(default)]
    pub metadata: serde_json::Value,
    #[serde(default)]
    pub created_at: Option<String>,
    /// Where the upstream keeps files, for fetching without a signed URL (W&B: `V1`, or
    /// `V2/<region>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<String>,
    pub entries: BTreeMap<RelPath, ForeignEntry>,
}

/// One file of a [`ForeignVersion`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForeignEntry {
    pub digest: ForeignDigest,
    pub size: u64,
    /// Where the bytes live, for a reference entry.
    #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    /// What the upstream needs to find the bytes without a signed URL (W&B: the id of the
    /// artifact version the file was first uploaded with).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
    /// The Hub's git blob id of an LFS file's pointer (the `oid` of its tree listing),
    /// which `huggingface_hub`'s tree cache records. Other files' is their `gitsha1:`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blob_id: Option<String>,
}

impl ForeignVersion {
    pub fn artifact(&self) -> Result<ArtifactName, Error> {
        ArtifactName::new(&self.entity, &self.project, &self.name)
    }

    /// The `N` of `vN`.
    pub fn number(&self) -> Result<u32, Error> {
        crate::version::number(&self.version)
    }

    /// hoard's name for this version (`name@digest`): blake3 of the artifact, the
    /// upstream's id and the entries, so it changes whenever what the version holds does.
    /// Aliases and metadata are left out, as they are for hoard's own versions.
    pub fn digest(&self) -> Digest {
        #[derive(Serialize)]
        struct Identity<'a> {
            artifact: String,
            entries: &'a BTreeMap<RelPath, ForeignEntry>,
            id: &'a str,
            version: &'a str,
        }
        let identity = Identity {
            artifact: format!("{}/{}/{}", self.entity, self.project, self.name),
            entries: &self.entries,
            id: &self.id,
            version: &self.version,
        };
        Digest::of(&serde_json::to_vec(&identity).expect("plain strings and integers serialize"))
    }

    /// Entries under a path prefix, in path order.
    pub fn select<'a>(
        &'a self,
        prefix: &PathPrefix,
    ) -> impl Iterator<Item = (&'a RelPath, &'a ForeignEntry)> + 'a {
        crate::manifest::under_prefix(&self.entries, prefix)
    }

    pub fn total_size(&self) -> u64 {
        self.entries.values().map(|e| e.size).sum()
    }

    /// Checks names, the version label (`vN`, or a commit: 40 lowercase hex), sizes, and
    /// that no path is both a file and a directory.
    pub fn validate(&self) -> Result<(), Error> {
        self.artifact()?;
        if !is_commit(&self.version) {
            self.number()?;
        }
        let invalid = |reason: String| Err(Error::Manifest { reason });
        if self.entries.len() > crate::manifest::MAX_ENTRIES {
            return invalid(format!("{} entries are too many", self.entries.len()));
        }
        for (path, entry) in &self.entries {
            if entry.size > crate::manifest::MAX_FILE_SIZE {
                return invalid(format!("`{path}` has size {}, more than 1 PiB", entry.size));
            }
            if let Some(dir) = path.ancestors().find(|dir| self.entries.contains_key(*dir)) {
                return invalid(format!(
                    "`{dir}` is a file and also the directory of `{path}`"
                ));
            }
        }
        Ok(())
    }
}

/// The project of a Hub repo without an owner (`gpt2`, `datasets/squad`): `models/_/gpt2`.
/// The Hub answers such names with a redirect to the organization that has the repo now.
pub const OWNERLESS: &str = "_";

/// The Hub's id of a repo: `ORG/NAME`, or `NAME` for one without an owner.
pub fn hub_repo_id(project: &str, name: &str) -> String {
    if project == OWNERLESS {
        name.to_owned()
    } else {
        format!("{project}/{name}")
    }
}

/// A git commit id as the Hub names revisions: 40 lowercase hex digits.
pub fn is_commit(label: &str) -> bool {
    label.len() == 40
        && label
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn version() -> ForeignVersion {
        let mut entries = BTreeMap::new();
        entries.insert(
            RelPath::new("a/b.txt").unwrap(),
            ForeignEntry {
                digest: "md5:00112233445566778899aabbccddeeff".parse().unwrap(),
                size: 3,
                reference: None,
                origin: Some("QXJ0aWZhY3Q6MQ==".to_owned()),
                blob_id: None,
            },
        );
        ForeignVersion {
            entity: "e".into(),
            project: "p".into(),
            name: "n".into(),
            version: "v0".into(),
            id: "QXJ0aWZhY3Q6MQ==".into(),
            aliases: vec!["latest".into()],
            kind: None,
            metadata: serde_json::Value::Null,
            created_at: None,
            storage: None,
            entries,
        }
    }

    #[test]
    fn the_digest_follows_the_contents_not_the_aliases() {
        let v = version();
        let mut moved = v.clone();
        moved.aliases.clear();
        assert_eq!(v.digest(), moved.digest());
        let mut changed = v.clone();
        changed.entries.values_mut().for_each(|e| e.size = 4);
        assert_ne!(v.digest(), changed.digest());
        let json = serde_json::to_vec(&v).unwrap();
        assert_eq!(serde_json::from_slice::<ForeignVersion>(&json).unwrap(), v);
    }

    #[test]
    fn a_file_that_is_also_a_directory_is_refused() {
        let mut v = version();
        let entry = v.entries.values().next().unwrap().clone();
        v.entries.insert(RelPath::new("a").unwrap(), entry);
        assert!(
            v.validate()
                .unwrap_err()
                .to_string()
                .contains("also the directory")
        );
        v.version = "latest".into();
        assert!(v.validate().is_err());
    }
}
