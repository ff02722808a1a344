//! The daemon's tables in the index, with their keys and encodings. Defining them here
//! keeps the whole of `index-v1` in this crate.
//!
//! - `foreign_versions`: each [`ForeignVersion`] as JSON under `v/<artifact>:<N>` (W&B's
//!   numbered versions) or `r/<artifact>@<label>` (a version named by its label alone: a
//!   Hub commit), and `d/<digest>` → that key for its [`ForeignVersion::digest`].
//! - `pins`: a [`PinRecord`] as JSON under `entity/project/name@digest`.
//! - `outbox`: an [`OutboxRecord`] as JSON under `entity/project/name@digest`.
//! - `placements`: a [`Placement`] as JSON under `<version digest>/<destination>`.
//!
//! A record that does not parse is an error where one record is asked for
//! ([`Error::CorruptRecord`]), and is logged and left out of listings.

use hoard_types::api::Pin;
use hoard_types::registry::CommitRequest;
use hoard_types::{ArtifactName, Digest, ForeignVersion};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::index::Table;
use crate::store::Store;

/// Keys of foreign versions by number start with this (the others, `d/…`, map digests to
/// them).
const BY_NUMBER: &str = "v/";

fn number_key(name: &ArtifactName, n: u32) -> String {
    format!("{BY_NUMBER}{name}:{n}")
}

/// Versions without a number, by their label, start with this.
const BY_LABEL: &str = "r/";

fn label_key(name: &ArtifactName, label: &str) -> String {
    format!("{BY_LABEL}{name}@{label}")
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

    /// The foreign version of `name` whose label (not a `vN`) is `label`: a Hub commit.
    pub fn foreign_version_by_label(
        &self,
        name: &ArtifactName,
        label: &str,
    ) -> Result<Option<ForeignVersion>> {
        let key = label_key(name, label);
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
        let name = version.artifact()?;
        let key = match version.number() {
            Ok(n) => number_key(&name, n),
            Err(_) => label_key(&name, &version.version),
        };
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
        Ok(self
            .index
            .count_records(Table::ForeignVersions, BY_NUMBER)?
            + self.index.count_records(Table::ForeignVersions, BY_LABEL)?)
    }
}

/// A pinned version: who pinned it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PinRecord {
    #[serde(flatten)]
    pub pin: Pin,
    /// Who pinned it. Empty in records written before owners were recorded: those are
    /// the daemon's user's (see [`Self::owners`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub owners: Vec<u32>,
}

impl PinRecord {
    /// The uids that pinned the version.
    pub fn owners(&self) -> Vec<u32> {
        if self.owners.is_empty() {
            vec![crate::sys::daemon_uid()]
        } else {
            self.owners.clone()
        }
    }
}

fn pin_key(pin: &Pin) -> String {
    format!("{}/{}/{}@{}", pin.entity, pin.project, pin.name, pin.digest)
}

/// A publish recorded on this machine and not yet committed upstream.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct OutboxRecord {
    pub entity: String,
    pub project: String,
    pub name: String,
    pub digest: Digest,
    pub commit: CommitRequest,
    pub created_ms: u64,
    #[serde(default)]
    pub attempts: u32,
    #[serde(default)]
    pub uploaded_blobs: u64,
    #[serde(default)]
    pub uploaded_bytes: u64,
    #[serde(default)]
    pub last_error: Option<String>,
    /// The upstream refused it: retried when the daemon restarts.
    #[serde(default)]
    pub failed: bool,
}

impl OutboxRecord {
    /// The key of the publish of `digest` as `name`.
    pub fn key(name: &ArtifactName, digest: &Digest) -> String {
        format!("{name}@{digest}")
    }
}

fn parse<T: serde::de::DeserializeOwned>(what: &'static str, key: &str, json: &[u8]) -> Result<T> {
    serde_json::from_slice(json).map_err(|_| Error::CorruptRecord {
        what,
        key: key.to_owned(),
    })
}

/// Every record of `table` that parses; the others are logged.
fn parsed<T: serde::de::DeserializeOwned>(
    store: &Store,
    table: Table,
    what: &'static str,
) -> Result<Vec<(String, T)>> {
    Ok(store
        .index
        .records(table)?
        .into_iter()
        .filter_map(|(key, json)| match parse(what, &key, &json) {
            Ok(record) => Some((key, record)),
            Err(e) => {
                tracing::error!(key, error = %e, "leaving an unreadable record");
                None
            }
        })
        .collect())
}

impl Store {
    /// The pin record of `pin`'s version.
    pub fn pin_record(&self, pin: &Pin) -> Result<Option<PinRecord>> {
        let key = pin_key(pin);
        self.index
            .record(Table::Pins, &key)?
            .map(|json| parse("pin", &key, &json))
            .transpose()
    }

    pub fn put_pin_record(&self, record: &PinRecord) -> Result<()> {
        let json = serde_json::to_vec(record).expect("a pin serializes");
        self.index
            .put_record(Table::Pins, &pin_key(&record.pin), &json)
    }

    pub fn remove_pin_record(&self, pin: &Pin) -> Result<()> {
        self.index.remove_record(Table::Pins, &pin_key(pin))
    }

    /// Every readable pin record.
    pub fn pin_records(&self) -> Result<Vec<PinRecord>> {
        Ok(parsed(self, Table::Pins, "pin")?
            .into_iter()
            .map(|(_, record)| record)
            .collect())
    }

    /// The outbox record under `key` (see [`OutboxRecord::key`]).
    pub fn outbox_record(&self, key: &str) -> Result<Option<OutboxRecord>> {
        self.index
            .record(Table::Outbox, key)?
            .map(|json| parse("outbox", key, &json))
            .transpose()
    }

    pub fn put_outbox_record(&self, key: &str, record: &OutboxRecord) -> Result<()> {
        let json = serde_json::to_vec(record).expect("a record serializes");
        self.index.put_record(Table::Outbox, key, &json)
    }

    /// Every readable outbox record, by key.
    pub fn outbox_records(&self) -> Result<Vec<(String, OutboxRecord)>> {
        parsed(self, Table::Outbox, "outbox")
    }

    /// How many records the outbox holds, readable or not.
    pub fn outbox_len(&self) -> Result<u64> {
        self.index.count_records(Table::Outbox, "")
    }
}

/// A version hardlinked into a destination: its files there share their inodes with the
/// cache's blobs, so a write through one of them (root ignores the 0444 mode) changes the
/// blob. Kept to find those files again when a blob is found modified.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placement {
    /// The version's digest ([`hoard_types::Version::digest`] or
    /// [`ForeignVersion::digest`]).
    pub version: Digest,
    /// The destination, absolute.
    pub dest: String,
    /// Who asked: the repair acts as them.
    pub uid: u32,
    pub gid: u32,
    pub placed_ms: u64,
}

impl Placement {
    fn key(&self) -> String {
        format!("{}/{}", self.version, self.dest)
    }
}

impl Store {
    /// Records (or renews) a placement.
    pub fn put_placement(&self, placement: &Placement) -> Result<()> {
        let json = serde_json::to_vec(placement).expect("a placement serializes");
        self.index
            .put_record(Table::Placements, &placement.key(), &json)
    }

    pub fn remove_placement(&self, placement: &Placement) -> Result<()> {
        self.index
            .remove_record(Table::Placements, &placement.key())
    }

    /// Every readable placement.
    pub fn placements(&self) -> Result<Vec<Placement>> {
        Ok(parsed(self, Table::Placements, "placement")?
            .into_iter()
            .map(|(_, record)| record)
            .collect())
    }

    /// How many placements are kept, readable or not.
    pub fn placement_count(&self) -> Result<u64> {
        self.index.count_records(Table::Placements, "")
    }
}
