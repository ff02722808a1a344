//! The RocksDB index: the only module of hoard that touches `rocksdb`.
//!
//! Column families (keys → values):
//!
//! | family      | key                                   | value                         |
//! |-------------|---------------------------------------|-------------------------------|
//! | `blobs`     | [`BlobKey`] (33 bytes)                | [`BlobRecord`]                |
//! | `last_use`  | [`BlobKey`]                           | unix ms, u64 LE               |
//! | `foreign`   | foreign digest text (`md5:…`)         | blake3 digest (32 bytes)      |
//! | `versions`  | `entity/project/name` NUL `N` (u32 BE)| the version JSON              |
//! | `manifests` | manifest digest (32 bytes)            | the `versions` key            |
//! | `aliases`   | `entity/project/name` NUL alias       | [`AliasRecord`]               |
//! | `outbox`, `pins`, `foreign_versions` | the daemon's keys | the daemon's records ([`Table`]) |
//! | `meta`      | `upstream`                            | where the versions came from  |
//! | `provenance`| scope text NUL blake3 digest (32)     | empty: "fetched from there"   |
//!
//! `last_use` is apart from `blobs` so that touching 20,000 blobs after a materialization
//! is blind writes, with no read-modify-write that could race a pin.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use hoard_types::{ArtifactName, Digest, ForeignDigest, Version};
use rocksdb::{
    BlockBasedOptions, Cache, ColumnFamily, ColumnFamilyDescriptor, DB, IteratorMode, Options,
    WriteBatch,
};

use crate::error::{Error, Result};
use crate::record::{AliasRecord, BlobKey, BlobRecord};

const BLOBS: &str = "blobs";
const LAST_USE: &str = "last_use";
const FOREIGN: &str = "foreign";
const VERSIONS: &str = "versions";
const MANIFESTS: &str = "manifests";
const ALIASES: &str = "aliases";
/// Publishes not yet committed upstream: opaque records, owned by the daemon.
const OUTBOX: &str = "outbox";
/// Pinned versions: opaque records, owned by the daemon (the blobs' pin counts are in
/// their blob records).
const PINS: &str = "pins";
/// Versions of foreign upstreams (W&B): opaque records, owned by the daemon.
const FOREIGN_VERSIONS: &str = "foreign_versions";
/// The cache's own facts: `upstream`, the upstream its versions came from.
const META: &str = "meta";
const UPSTREAM: &[u8] = b"upstream";
/// Where bytes were fetched from, for callers who may have a blob only through a source
/// (see [`crate::Store::proven`]).
const PROVENANCE: &str = "provenance";
/// Where versions were hardlinked: opaque records, owned by the daemon.
const PLACEMENTS: &str = "placements";
const FAMILIES: [&str; 12] = [
    BLOBS,
    LAST_USE,
    FOREIGN,
    VERSIONS,
    MANIFESTS,
    ALIASES,
    OUTBOX,
    PINS,
    FOREIGN_VERSIONS,
    META,
    PROVENANCE,
    PLACEMENTS,
];

/// A table of opaque records that the store keeps for its user, by string key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Table {
    /// Publishes not yet committed upstream.
    Outbox,
    /// Pinned versions.
    Pins,
    /// Versions of a foreign upstream (W&B), as it described them.
    ForeignVersions,
    /// Where versions were hardlinked.
    Placements,
}

impl Table {
    fn family(self) -> &'static str {
        match self {
            Self::Outbox => OUTBOX,
            Self::Pins => PINS,
            Self::ForeignVersions => FOREIGN_VERSIONS,
            Self::Placements => PLACEMENTS,
        }
    }
}

/// The RocksDB database, open: every operation of the index. [`Index`] holds it, and
/// opens it again after a failure RocksDB would not recover from by itself.
struct Open {
    db: DB,
    path: PathBuf,
    /// Serializes read-modify-write of blob records (pins, inode renewal). RocksDB has no
    /// compare-and-set; these updates are rare, so one std mutex (never held across an
    /// await: the store is synchronous) is simpler than a transaction DB.
    rmw: Mutex<()>,
    /// Shared with the [`Index`]: see [`Index::no_space_since`].
    no_space_since: Arc<AtomicU64>,
}

impl Open {
    fn connect(path: &Path, no_space_since: Arc<AtomicU64>) -> Result<Self> {
        // No `fallocate` ahead of writes: RocksDB preallocated its log from the largest
        // write buffer (72 MiB of disk for an index of 160 blobs, which the budget does not
        // see). The binding has no setter for it; the options grammar does.
        let mut opts = Options::default()
            .get_options_from_string("allow_fallocate=false")
            .map_err(|e| Error::Index {
                path: path.to_owned(),
                message: e.into_string(),
            })?;
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        // Bounded memory: the daemon's budget is 150 MiB RSS in all.
        opts.set_write_buffer_size(8 << 20);
        opts.set_max_write_buffer_number(2);
        opts.set_max_open_files(256);
        opts.set_keep_log_file_num(2);
        opts.set_max_log_file_size(1 << 20);
        let mut table = BlockBasedOptions::default();
        table.set_block_cache(&Cache::new_lru_cache(16 << 20));
        opts.set_block_based_table_factory(&table);
        // The default family too: left out, the binding opens it with RocksDB's defaults
        // (a 64 MiB write buffer).
        let families = std::iter::once(rocksdb::DEFAULT_COLUMN_FAMILY_NAME)
            .chain(FAMILIES)
            .map(|name| ColumnFamilyDescriptor::new(name, opts.clone()));
        let db = DB::open_cf_descriptors(&opts, path, families).map_err(|e| {
            let message = e.into_string();
            if message.contains("lock") || message.contains("Resource temporarily unavailable") {
                Error::Locked {
                    path: path.to_owned(),
                }
            } else {
                Error::Index {
                    path: path.to_owned(),
                    message,
                }
            }
        })?;
        Ok(Self {
            db,
            path: path.to_owned(),
            rmw: Mutex::new(()),
            no_space_since,
        })
    }

    fn cf(&self, name: &str) -> &ColumnFamily {
        self.db
            .cf_handle(name)
            .expect("every column family is created at open")
    }

    fn fail(&self, e: rocksdb::Error) -> Error {
        let message = e.into_string();
        if message.contains("No space left") || message.contains("NoSpace") {
            let _ = self.no_space_since.compare_exchange(
                0,
                crate::sys::now_ms(),
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
        Error::Index {
            path: self.path.clone(),
            message,
        }
    }

    fn write(&self, batch: WriteBatch) -> Result<()> {
        self.db.write(batch).map_err(|e| self.fail(e))?;
        self.no_space_since.store(0, Ordering::Relaxed);
        Ok(())
    }

    pub(crate) fn blob(&self, key: &BlobKey) -> Result<Option<BlobRecord>> {
        let value = self
            .db
            .get_pinned_cf(self.cf(BLOBS), key.encode())
            .map_err(|e| self.fail(e))?;
        value.map(|v| decode_blob(key, &v)).transpose()
    }

    /// Records of many blobs in one call, in the order asked.
    pub(crate) fn blobs(&self, keys: &[BlobKey]) -> Result<Vec<Option<BlobRecord>>> {
        // RocksDB looks keys up in order; given them sorted, it need not sort them itself
        // (a warm 20,000-file get asks for every blob of its version).
        let mut encoded: Vec<(usize, [u8; BlobKey::ENCODED_LEN])> =
            keys.iter().map(BlobKey::encode).enumerate().collect();
        encoded.sort_unstable_by_key(|(_, key)| *key);
        let values =
            self.db
                .batched_multi_get_cf(self.cf(BLOBS), encoded.iter().map(|(_, key)| key), true);
        let mut out = vec![None; keys.len()];
        for ((at, _), value) in encoded.iter().zip(values) {
            if let Some(v) = value.map_err(|e| self.fail(e))? {
                out[*at] = Some(decode_blob(&keys[*at], &v)?);
            }
        }
        Ok(out)
    }

    /// Adds blob rows (and their first use), and maps foreign digests to blobs, in one
    /// atomic batch. Pins already recorded for a key are kept.
    pub(crate) fn insert_blobs(
        &self,
        rows: &[(BlobKey, BlobRecord)],
        foreign: &[(&ForeignDigest, Digest)],
        now_ms: u64,
    ) -> Result<()> {
        let _guard = self.rmw.lock().unwrap_or_else(PoisonError::into_inner);
        let mut batch = WriteBatch::default();
        for (foreign, digest) in foreign {
            batch.put_cf(self.cf(FOREIGN), foreign.to_string(), digest.as_bytes());
        }
        for (key, record) in rows {
            let pins = self.blob(key)?.map_or(0, |r| r.pins);
            batch.put_cf(
                self.cf(BLOBS),
                key.encode(),
                BlobRecord { pins, ..*record }.encode(),
            );
            batch.put_cf(self.cf(LAST_USE), key.encode(), now_ms.to_le_bytes());
        }
        self.write(batch)
    }

    pub(crate) fn remove_blobs(&self, keys: &[BlobKey]) -> Result<()> {
        let mut batch = WriteBatch::default();
        for key in keys {
            batch.delete_cf(self.cf(BLOBS), key.encode());
            batch.delete_cf(self.cf(LAST_USE), key.encode());
        }
        self.write(batch)
    }

    /// Changes one record under the read-modify-write lock; `None` if there is no row.
    pub(crate) fn update_blob(
        &self,
        key: &BlobKey,
        change: impl FnOnce(&mut BlobRecord),
    ) -> Result<Option<BlobRecord>> {
        let _guard = self.rmw.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(mut record) = self.blob(key)? else {
            return Ok(None);
        };
        change(&mut record);
        let mut batch = WriteBatch::default();
        batch.put_cf(self.cf(BLOBS), key.encode(), record.encode());
        self.write(batch)?;
        Ok(Some(record))
    }

    /// Adds `delta` to the pin count of each blob that has a row.
    pub(crate) fn add_pins(&self, keys: &[BlobKey], delta: i64) -> Result<()> {
        let _guard = self.rmw.lock().unwrap_or_else(PoisonError::into_inner);
        let mut batch = WriteBatch::default();
        for key in keys {
            if let Some(mut record) = self.blob(key)? {
                record.pins =
                    u32::try_from((i64::from(record.pins) + delta).max(0)).unwrap_or(u32::MAX);
                batch.put_cf(self.cf(BLOBS), key.encode(), record.encode());
            }
        }
        self.write(batch)
    }

    pub(crate) fn touch(&self, uses: impl IntoIterator<Item = (BlobKey, u64)>) -> Result<()> {
        let mut batch = WriteBatch::default();
        for (key, at_ms) in uses {
            batch.put_cf(self.cf(LAST_USE), key.encode(), at_ms.to_le_bytes());
        }
        self.write(batch)
    }

    /// Every blob row with its last use, for eviction, verification and reconciliation.
    pub(crate) fn all_blobs(&self) -> Result<Vec<(BlobKey, BlobRecord, u64)>> {
        let mut out = Vec::new();
        let last_use = self.db.iterator_cf(self.cf(LAST_USE), IteratorMode::Start);
        let mut last_use = last_use.peekable();
        for item in self.db.iterator_cf(self.cf(BLOBS), IteratorMode::Start) {
            let (k, v) = item.map_err(|e| self.fail(e))?;
            let key = BlobKey::decode(&k).ok_or_else(|| corrupt("blob key", &k))?;
            let record = decode_blob(&key, &v)?;
            // Both families are sorted by the same key: merge instead of a lookup per row.
            let mut used = 0;
            while let Some(Ok((lk, lv))) = last_use.peek() {
                match lk.as_ref().cmp(k.as_ref()) {
                    std::cmp::Ordering::Less => {}
                    std::cmp::Ordering::Equal => {
                        used = lv.as_ref().try_into().map_or(0, u64::from_le_bytes);
                    }
                    std::cmp::Ordering::Greater => break,
                }
                last_use.next();
            }
            out.push((key, record, used));
        }
        Ok(out)
    }

    pub(crate) fn put_foreign(&self, foreign: &ForeignDigest, digest: &Digest) -> Result<()> {
        let mut batch = WriteBatch::default();
        batch.put_cf(self.cf(FOREIGN), foreign.to_string(), digest.as_bytes());
        self.write(batch)
    }

    /// [`Self::foreign`] of many digests in one call, in the order asked.
    pub(crate) fn foreign_many(&self, digests: &[&ForeignDigest]) -> Result<Vec<Option<Digest>>> {
        let keys: Vec<String> = digests.iter().map(ToString::to_string).collect();
        let values = self.db.batched_multi_get_cf(self.cf(FOREIGN), &keys, false);
        keys.iter()
            .zip(values)
            .map(|(key, value)| {
                value
                    .map_err(|e| self.fail(e))?
                    .map(|v| {
                        <[u8; 32]>::try_from(v.as_ref())
                            .map(Digest::from_bytes)
                            .map_err(|_| corrupt("foreign digest", key.as_bytes()))
                    })
                    .transpose()
            })
            .collect()
    }

    pub(crate) fn foreign(&self, foreign: &ForeignDigest) -> Result<Option<Digest>> {
        let key = foreign.to_string();
        let value = self
            .db
            .get_pinned_cf(self.cf(FOREIGN), &key)
            .map_err(|e| self.fail(e))?;
        value
            .map(|v| {
                <[u8; 32]>::try_from(v.as_ref())
                    .map(Digest::from_bytes)
                    .map_err(|_| corrupt("foreign digest", key.as_bytes()))
            })
            .transpose()
    }

    /// Stores an immutable version (already validated) and indexes it by manifest digest;
    /// with `outbox`, removes that outbox record in the same write.
    pub(crate) fn put_version(&self, version: &Version, outbox: Option<&str>) -> Result<()> {
        let name = version.artifact()?;
        let number = version.number()?;
        let key = version_key(&name, number);
        let json = serde_json::to_vec(version).expect("a version always serializes");
        let mut batch = WriteBatch::default();
        batch.put_cf(self.cf(VERSIONS), &key, json);
        batch.put_cf(self.cf(MANIFESTS), version.digest.as_bytes(), &key);
        if let Some(outbox) = outbox {
            batch.delete_cf(self.cf(Table::Outbox.family()), outbox.as_bytes());
        }
        self.write(batch)
    }

    /// How many versions are cached.
    pub(crate) fn version_count(&self) -> Result<u64> {
        let mut count = 0;
        for item in self
            .db
            .iterator_cf(self.cf(VERSIONS), rocksdb::IteratorMode::Start)
        {
            item.map_err(|e| self.fail(e))?;
            count += 1;
        }
        Ok(count)
    }

    /// The upstream the cached versions came from, if one was recorded.
    pub(crate) fn upstream(&self) -> Result<Option<String>> {
        let value = self
            .db
            .get_cf(self.cf(META), UPSTREAM)
            .map_err(|e| self.fail(e))?;
        value
            .map(|v| String::from_utf8(v).map_err(|e| corrupt(META, e.as_bytes())))
            .transpose()
    }

    /// Records `upstream` as the source of the cached versions, forgetting in the same
    /// batch every version, manifest, alias, foreign version and pin of another one (a
    /// pin's blobs get their pin counts back to 0). Returns how many of hoard's own
    /// versions and how many pins were forgotten.
    pub(crate) fn switch_upstream(&self, upstream: &str) -> Result<(u64, u64)> {
        let _guard = self.rmw.lock().unwrap_or_else(PoisonError::into_inner);
        let mut batch = WriteBatch::default();
        let (mut versions, mut pins) = (0, 0);
        for family in [
            VERSIONS,
            MANIFESTS,
            ALIASES,
            FOREIGN_VERSIONS,
            PINS,
            PROVENANCE,
            PLACEMENTS,
        ] {
            let cf = self.cf(family);
            for item in self.db.iterator_cf(cf, IteratorMode::Start) {
                let (key, _) = item.map_err(|e| self.fail(e))?;
                batch.delete_cf(cf, key);
                match family {
                    VERSIONS => versions += 1,
                    PINS => pins += 1,
                    _ => {}
                }
            }
        }
        for item in self.db.iterator_cf(self.cf(BLOBS), IteratorMode::Start) {
            let (k, v) = item.map_err(|e| self.fail(e))?;
            let key = BlobKey::decode(&k).ok_or_else(|| corrupt("blob key", &k))?;
            let record = decode_blob(&key, &v)?;
            if record.pins > 0 {
                batch.put_cf(self.cf(BLOBS), k, BlobRecord { pins: 0, ..record }.encode());
            }
        }
        batch.put_cf(self.cf(META), UPSTREAM, upstream.as_bytes());
        self.write(batch)?;
        Ok((versions, pins))
    }

    /// Records `upstream` without forgetting anything (a cache that never recorded one).
    pub(crate) fn record_upstream(&self, upstream: &str) -> Result<()> {
        let mut batch = WriteBatch::default();
        batch.put_cf(self.cf(META), UPSTREAM, upstream.as_bytes());
        self.write(batch)
    }

    pub(crate) fn put_record(&self, table: Table, key: &str, value: &[u8]) -> Result<()> {
        let mut batch = WriteBatch::default();
        batch.put_cf(self.cf(table.family()), key.as_bytes(), value);
        self.write(batch)
    }

    /// How many records of `table` have keys starting with `prefix` (keys only are read).
    pub(crate) fn count_records(&self, table: Table, prefix: &str) -> Result<u64> {
        let mut count = 0;
        let from = IteratorMode::From(prefix.as_bytes(), rocksdb::Direction::Forward);
        for item in self.db.iterator_cf(self.cf(table.family()), from) {
            let (key, _) = item.map_err(|e| self.fail(e))?;
            if !key.starts_with(prefix.as_bytes()) {
                break;
            }
            count += 1;
        }
        Ok(count)
    }

    pub(crate) fn record(&self, table: Table, key: &str) -> Result<Option<Vec<u8>>> {
        self.db
            .get_cf(self.cf(table.family()), key.as_bytes())
            .map_err(|e| self.fail(e))
    }

    pub(crate) fn remove_record(&self, table: Table, key: &str) -> Result<()> {
        let mut batch = WriteBatch::default();
        batch.delete_cf(self.cf(table.family()), key.as_bytes());
        self.write(batch)
    }

    pub(crate) fn records(&self, table: Table) -> Result<Vec<(String, Vec<u8>)>> {
        self.db
            .iterator_cf(self.cf(table.family()), rocksdb::IteratorMode::Start)
            .map(|item| {
                let (key, value) = item.map_err(|e| self.fail(e))?;
                let key = String::from_utf8(key.into_vec())
                    .map_err(|e| corrupt(table.family(), e.as_bytes()))?;
                Ok((key, value.into_vec()))
            })
            .collect()
    }

    pub(crate) fn version(&self, name: &ArtifactName, number: u32) -> Result<Option<Version>> {
        self.version_at(&version_key(name, number))
    }

    pub(crate) fn version_by_digest(&self, digest: &Digest) -> Result<Option<Version>> {
        let key = self
            .db
            .get_cf(self.cf(MANIFESTS), digest.as_bytes())
            .map_err(|e| self.fail(e))?;
        match key {
            Some(key) => self.version_at(&key),
            None => Ok(None),
        }
    }

    fn version_at(&self, key: &[u8]) -> Result<Option<Version>> {
        let value = self
            .db
            .get_pinned_cf(self.cf(VERSIONS), key)
            .map_err(|e| self.fail(e))?;
        value
            .map(|v| Version::from_json(&v).map_err(|_| corrupt("version", key)))
            .transpose()
    }

    pub(crate) fn put_alias(
        &self,
        name: &ArtifactName,
        alias: &str,
        record: &AliasRecord,
    ) -> Result<()> {
        let mut batch = WriteBatch::default();
        batch.put_cf(self.cf(ALIASES), alias_key(name, alias), record.encode());
        self.write(batch)
    }

    pub(crate) fn alias(&self, name: &ArtifactName, alias: &str) -> Result<Option<AliasRecord>> {
        let key = alias_key(name, alias);
        let value = self
            .db
            .get_pinned_cf(self.cf(ALIASES), &key)
            .map_err(|e| self.fail(e))?;
        value
            .map(|v| AliasRecord::decode(&v).ok_or_else(|| corrupt("alias", &key)))
            .transpose()
    }

    /// Records that the bytes of `digests` were fetched in `scope`.
    pub(crate) fn put_provenance(&self, scope: &str, digests: &[Digest]) -> Result<()> {
        let mut batch = WriteBatch::default();
        for digest in digests {
            batch.put_cf(self.cf(PROVENANCE), provenance_key(scope, digest), []);
        }
        self.write(batch)
    }

    /// Whether the bytes of each of `digests` were fetched in `scope`, in the order asked.
    pub(crate) fn provenance(&self, scope: &str, digests: &[Digest]) -> Result<Vec<bool>> {
        let keys: Vec<Vec<u8>> = digests.iter().map(|d| provenance_key(scope, d)).collect();
        self.db
            .batched_multi_get_cf(self.cf(PROVENANCE), &keys, false)
            .into_iter()
            .map(|value| Ok(value.map_err(|e| self.fail(e))?.is_some()))
            .collect()
    }

    /// Flushes the memtables and syncs the WAL, for a clean shutdown.
    pub(crate) fn flush(&self) -> Result<()> {
        self.db.flush_wal(true).map_err(|e| self.fail(e))?;
        let families: Vec<_> = FAMILIES.iter().map(|f| self.cf(f)).collect();
        self.db
            .flush_cfs_opt(&families, &rocksdb::FlushOptions::default())
            .map_err(|e| self.fail(e))
    }
}

/// The index: the RocksDB database, and its recovery.
///
/// RocksDB turns read-only after a write fails for want of disk space and, seen here on
/// tmpfs, never writes again until it is opened anew (its own recovery polls the disk
/// every 5 s, and only for some failures). So once a write failed that way, the next
/// operation that finds free space again closes and reopens the database (its WAL holds
/// every write it acknowledged) before it goes on.
pub(crate) struct Index {
    open: RwLock<Option<Open>>,
    path: PathBuf,
    /// When (unix ms) a write last failed for want of disk space; 0 if the last write
    /// worked. Health reports it.
    no_space_since: Arc<AtomicU64>,
}

/// Free bytes the disk must have again before the index is reopened after a full disk.
const REOPEN_FREE: u64 = 1 << 20;

impl Index {
    pub(crate) fn open(path: &Path) -> Result<Self> {
        let no_space_since = Arc::new(AtomicU64::new(0));
        let open = Open::connect(path, no_space_since.clone())?;
        Ok(Self {
            open: RwLock::new(Some(open)),
            path: path.to_owned(),
            no_space_since,
        })
    }

    /// Since when (unix ms) writes have been failing for want of disk space, if they are.
    pub(crate) fn no_space_since(&self) -> Option<u64> {
        Some(self.no_space_since.load(Ordering::Relaxed)).filter(|t| *t > 0)
    }

    /// Runs `f` on the open database, reopening it first if a full disk left it unable
    /// to write and the disk has room again.
    fn run<T>(&self, f: impl FnOnce(&Open) -> Result<T>) -> Result<T> {
        if self.no_space_since().is_some() {
            self.reopen_if_room();
        }
        let open = self.open.read().unwrap_or_else(PoisonError::into_inner);
        match open.as_ref() {
            Some(open) => f(open),
            None => Err(Error::Index {
                path: self.path.clone(),
                message: "it could not be opened again after a full disk; it tries again at the next call".to_owned(),
            }),
        }
    }

    fn reopen_if_room(&self) {
        let room = rustix::fs::statvfs(&self.path)
            .is_ok_and(|fs| fs.f_bavail.saturating_mul(fs.f_frsize) >= REOPEN_FREE);
        if !room {
            return;
        }
        let mut open = self.open.write().unwrap_or_else(PoisonError::into_inner);
        if self.no_space_since().is_none() && open.is_some() {
            return; // another thread got here first
        }
        // The old database must be closed first: it holds the directory's lock.
        drop(open.take());
        match Open::connect(&self.path, self.no_space_since.clone()) {
            Ok(reopened) => {
                *open = Some(reopened);
                self.no_space_since.store(0, Ordering::Relaxed);
                tracing::info!(path = %self.path.display(), "reopened the cache index after a full disk");
            }
            Err(e) => tracing::warn!(error = %e, "cannot reopen the cache index yet"),
        }
    }

    pub(crate) fn blob(&self, key: &BlobKey) -> Result<Option<BlobRecord>> {
        self.run(|o| o.blob(key))
    }

    pub(crate) fn blobs(&self, keys: &[BlobKey]) -> Result<Vec<Option<BlobRecord>>> {
        self.run(|o| o.blobs(keys))
    }

    pub(crate) fn insert_blobs(
        &self,
        rows: &[(BlobKey, BlobRecord)],
        foreign: &[(&ForeignDigest, Digest)],
        now_ms: u64,
    ) -> Result<()> {
        self.run(|o| o.insert_blobs(rows, foreign, now_ms))
    }

    pub(crate) fn remove_blobs(&self, keys: &[BlobKey]) -> Result<()> {
        self.run(|o| o.remove_blobs(keys))
    }

    pub(crate) fn update_blob(
        &self,
        key: &BlobKey,
        change: impl FnOnce(&mut BlobRecord),
    ) -> Result<Option<BlobRecord>> {
        self.run(|o| o.update_blob(key, change))
    }

    pub(crate) fn add_pins(&self, keys: &[BlobKey], delta: i64) -> Result<()> {
        self.run(|o| o.add_pins(keys, delta))
    }

    pub(crate) fn touch(&self, uses: impl IntoIterator<Item = (BlobKey, u64)>) -> Result<()> {
        self.run(|o| o.touch(uses))
    }

    pub(crate) fn all_blobs(&self) -> Result<Vec<(BlobKey, BlobRecord, u64)>> {
        self.run(Open::all_blobs)
    }

    pub(crate) fn put_foreign(&self, foreign: &ForeignDigest, digest: &Digest) -> Result<()> {
        self.run(|o| o.put_foreign(foreign, digest))
    }

    pub(crate) fn foreign_many(&self, digests: &[&ForeignDigest]) -> Result<Vec<Option<Digest>>> {
        self.run(|o| o.foreign_many(digests))
    }

    pub(crate) fn foreign(&self, foreign: &ForeignDigest) -> Result<Option<Digest>> {
        self.run(|o| o.foreign(foreign))
    }

    pub(crate) fn put_version(&self, version: &Version, outbox: Option<&str>) -> Result<()> {
        self.run(|o| o.put_version(version, outbox))
    }

    pub(crate) fn version_count(&self) -> Result<u64> {
        self.run(Open::version_count)
    }

    pub(crate) fn upstream(&self) -> Result<Option<String>> {
        self.run(Open::upstream)
    }

    pub(crate) fn switch_upstream(&self, upstream: &str) -> Result<(u64, u64)> {
        self.run(|o| o.switch_upstream(upstream))
    }

    pub(crate) fn record_upstream(&self, upstream: &str) -> Result<()> {
        self.run(|o| o.record_upstream(upstream))
    }

    pub(crate) fn put_record(&self, table: Table, key: &str, value: &[u8]) -> Result<()> {
        self.run(|o| o.put_record(table, key, value))
    }

    pub(crate) fn count_records(&self, table: Table, prefix: &str) -> Result<u64> {
        self.run(|o| o.count_records(table, prefix))
    }

    pub(crate) fn record(&self, table: Table, key: &str) -> Result<Option<Vec<u8>>> {
        self.run(|o| o.record(table, key))
    }

    pub(crate) fn remove_record(&self, table: Table, key: &str) -> Result<()> {
        self.run(|o| o.remove_record(table, key))
    }

    pub(crate) fn records(&self, table: Table) -> Result<Vec<(String, Vec<u8>)>> {
        self.run(|o| o.records(table))
    }

    pub(crate) fn version(&self, name: &ArtifactName, number: u32) -> Result<Option<Version>> {
        self.run(|o| o.version(name, number))
    }

    pub(crate) fn version_by_digest(&self, digest: &Digest) -> Result<Option<Version>> {
        self.run(|o| o.version_by_digest(digest))
    }

    pub(crate) fn put_alias(
        &self,
        name: &ArtifactName,
        alias: &str,
        record: &AliasRecord,
    ) -> Result<()> {
        self.run(|o| o.put_alias(name, alias, record))
    }

    pub(crate) fn alias(&self, name: &ArtifactName, alias: &str) -> Result<Option<AliasRecord>> {
        self.run(|o| o.alias(name, alias))
    }

    pub(crate) fn put_provenance(&self, scope: &str, digests: &[Digest]) -> Result<()> {
        self.run(|o| o.put_provenance(scope, digests))
    }

    pub(crate) fn provenance(&self, scope: &str, digests: &[Digest]) -> Result<Vec<bool>> {
        self.run(|o| o.provenance(scope, digests))
    }

    pub(crate) fn flush(&self) -> Result<()> {
        self.run(Open::flush)
    }
}

fn decode_blob(key: &BlobKey, bytes: &[u8]) -> Result<BlobRecord> {
    BlobRecord::decode(bytes).ok_or_else(|| Error::CorruptRecord {
        what: "blob",
        key: key.to_string(),
    })
}

fn corrupt(what: &'static str, key: &[u8]) -> Error {
    Error::CorruptRecord {
        what,
        key: String::from_utf8_lossy(key).into_owned(),
    }
}

/// Names cannot contain NUL or `/` (see `hoard_types::ArtifactName`), so the NUL separator
/// makes these keys unambiguous; the big-endian number sorts versions in order.
fn version_key(name: &ArtifactName, number: u32) -> Vec<u8> {
    let mut key = name.to_string().into_bytes();
    key.push(0);
    key.extend_from_slice(&number.to_be_bytes());
    key
}

/// A scope never holds NUL (it is a URI or an artifact's project), so the key splits.
fn provenance_key(scope: &str, digest: &Digest) -> Vec<u8> {
    let mut key = Vec::with_capacity(scope.len() + 33);
    key.extend_from_slice(scope.as_bytes());
    key.push(0);
    key.extend_from_slice(digest.as_bytes());
    key
}

fn alias_key(name: &ArtifactName, alias: &str) -> Vec<u8> {
    let mut key = name.to_string().into_bytes();
    key.push(0);
    key.extend_from_slice(alias.as_bytes());
    key
}
