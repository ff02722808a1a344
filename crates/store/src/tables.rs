//! The daemon's tables in the index, with their keys and encodings: versions of a foreign
//! upstream (W&B). Defining them here keeps the whole of `index-v1` in this crate.
//!
//! `foreign_versions` holds each [`ForeignVersion`] as JSON under `v/<artifact>:<N>`, and
//! `d/<digest>` → that key for its [`ForeignVersion::digest`].

use hoard_types::{ArtifactName, Digest, ForeignVersion};

use crate::error::{Error, Result};
use crate::index::Table;
use crate::store::Store;

/// Keys of foreign versions by number start with this (the others, `d/…`, map digests to
/// them).
const BY_NUMBER: &str = "v/";

fn number_key(name: &ArtifactName, n: u32) -> String {
    format!("{BY_NUMBER}{name}:{n}")
}

fn digest_key(digest: &Digest) -> String {
    format!("d/{digest}")
}

fn parse_foreign(key: &str, json: &[u8]) -> Result<ForeignVersion> {
    serde_json::from_slice(json).map_err(|_| Error::CorruptRecord {
        what: "foreign version",
        key: key.to_owned(),
    })
}

impl Store {
    /// The foreign version `name:vN`, as the upstream described it.
    pub fn foreign_version(&self, name: &ArtifactName, n: u32) -> Result<Option<ForeignVersion>> {
        let key = number_key(name, n);
        self.index
            .record(Table::ForeignVersions, &key)?
            .map(|json| parse_foreign(&key, &json))
            .transpose()
    }

    /// The foreign version whose [`ForeignVersion::digest`] is `digest`.
    pub fn foreign_version_by_digest(&self, digest: &Digest) -> Result<Option<ForeignVersion>> {
        let Some(key) = self
            .index
            .record(Table::ForeignVersions, &digest_key(digest))?
        else {
            return Ok(None);
        };
        let key = String::from_utf8(key).map_err(|_| Error::CorruptRecord {
            what: "foreign version digest",
            key: digest_key(digest),
        })?;
        self.index
            .record(Table::ForeignVersions, &key)?
            .map(|json| parse_foreign(&key, &json))
            .transpose()
    }

    /// Keeps a foreign version (replacing what was kept under its number: W&B versions are
    /// immutable, but a re-upload after deletion is not). Returns whether anything was
    /// written: a version held as is is not written again.
    pub fn put_foreign_version(&self, version: &ForeignVersion) -> Result<bool> {
        let key = number_key(&version.artifact()?, version.number()?);
        let json = serde_json::to_vec(version).expect("a version serializes");
        if self.index.record(Table::ForeignVersions, &key)?.as_deref() == Some(&json[..]) {
            return Ok(false);
        }
        self.index.put_record(Table::ForeignVersions, &key, &json)?;
        self.index.put_record(
            Table::ForeignVersions,
            &digest_key(&version.digest()),
            key.as_bytes(),
        )?;
        Ok(true)
    }

    /// How many foreign versions are kept.
    pub fn foreign_version_count(&self) -> Result<u64> {
        self.index.count_records(Table::ForeignVersions, BY_NUMBER)
    }
}
