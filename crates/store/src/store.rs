//! [`Store`]: one open cache directory: its blob files, its index, and the in-memory state
//! (leases, link-mode probes) that lives only as long as the process.

use std::collections::HashMap;
use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use hoard_types::{ArtifactName, Digest, ForeignDigest, Version};
use rustix::fs::{AtFlags, FileType, Mode, OFlags, Stat};
use rustix::io::Errno;

use crate::LinkMode;
use crate::error::missing;
use crate::error::{Error, IoContext, Result};
use crate::index::{Index, Table};
use crate::layout::Layout;
use crate::record::{AliasRecord, BlobKey, BlobRecord};
use crate::sys::{BLOB_MTIME, daemon_uid, now_ms};
use crate::verity::{Sealed, Verity, VeritySupport};

/// An open cache directory. Cheap to share behind an [`Arc`]; every method takes `&self`
/// and is safe to call from many threads.
pub struct Store {
    pub(crate) layout: Layout,
    /// `blobs-v1/`, opened once: every blob is reached relative to it, so no path is
    /// resolved through the cache root again.
    pub(crate) blobs: OwnedFd,
    pub(crate) tmp: OwnedFd,
    pub(crate) quarantine: OwnedFd,
    pub(crate) index: Index,
    /// Device of the cache's filesystem, for link-mode probes.
    pub(crate) dev: u64,
    pub(crate) leases: Arc<Mutex<HashMap<BlobKey, u32>>>,
    /// Link mode found to work per (cache device, destination device). In memory only: a
    /// remount can change the answer, and a probe costs one file.
    pub(crate) probes: Mutex<HashMap<(u64, u64), LinkMode>>,
    /// Serializes giving a blob a fresh inode (EMLINK), so two threads don't both do it.
    pub(crate) renew: Mutex<()>,
    /// Last uses not yet written to the index. Writing 20,000 rows after every
    /// materialization would cost more than the links; eviction only needs the order, so
    /// uses are batched here and written before eviction reads them, on [`Store::flush`],
    /// on drop, and when the buffer grows past [`USES_BUFFERED`]. A crash loses some recency,
    /// never a blob.
    pub(crate) uses: Mutex<HashMap<BlobKey, u64>>,
    /// The shard directories (`blobs-v1/ab/`) known to exist, one bit each: a cold get
    /// of 20,000 files asked `mkdirat` for an existing one before each blob.
    pub(crate) shards: [AtomicU64; 4],
    /// Whether new blobs are sealed with fs-verity, and how that went.
    pub(crate) verity: crate::verity::VerityState,
    /// What no destination may be in or around: the cache, and what the daemon adds.
    pub(crate) guard: crate::guard::Guard,
}

/// Where a blob's bytes were fetched from, for [`Store::proven`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Provenance {
    /// A reference entry's URI.
    Reference(String),
    /// A foreign upstream's project (`entity/project`), whose members may download its
    /// files: W&B checks access per project.
    Project(String),
}

impl Provenance {
    /// The key text; changing it forgets what was recorded (`index-v1`'s `provenance`).
    fn scope(&self) -> String {
        let (kind, text) = match self {
            Self::Reference(uri) => ("ref", uri),
            Self::Project(project) => ("project", project),
        };
        format!("{kind} {}", text.replace('\0', ""))
    }
}

impl std::fmt::Display for Provenance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Reference(uri) => write!(f, "`{uri}`"),
            Self::Project(project) => write!(f, "the project `{project}`"),
        }
    }
}

/// Buffered last uses that trigger a write to the index.
const USES_BUFFERED: usize = 200_000;

impl Store {
    /// Tries sealing a scratch file in `tmp/`: whether blobs can be sealed with fs-verity.
    pub fn probe_verity(&self) -> Result<VeritySupport> {
        let name = format!("verity-probe-{}", std::process::id());
        crate::verity::probe(&self.tmp, &name, &self.tmp_path(&name))
    }

    /// Seals blobs from now on (and in [`Store::verify`]), or stops doing so, with the
    /// reason `hoard status` shows.
    pub fn set_verity(&self, setting: Verity) {
        self.verity.set(setting);
    }

    pub fn verity(&self) -> bool {
        self.verity.on()
    }

    /// For `hoard status`: whether blobs are sealed and how that went, or why not.
    pub fn verity_status(&self) -> String {
        self.verity.status()
    }

    /// Blobs sealed since the store was opened.
    pub fn verity_sealed(&self) -> u64 {
        self.verity.sealed()
    }

    /// Seals the file `fd` and counts the outcome.
    pub(crate) fn seal_verity(&self, fd: impl AsFd, what: &dyn std::fmt::Display) -> Sealed {
        self.verity.seal(fd, what)
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// Refuses, from now on, every destination that is, contains or is inside `path` (which
    /// must exist), called `what` in the refusal: the daemon's socket directory, its
    /// configuration. The cache itself is protected from the start.
    pub fn protect(&self, path: &std::path::Path, what: &'static str) -> Result<()> {
        self.guard.protect(path, what).io("stat", path)
    }

    /// The blob's path, for logs and for handing to a `symlink` materialization.
    pub fn blob_path(&self, key: &BlobKey) -> PathBuf {
        self.layout.blobs().join(key.relative_path())
    }

    /// The index row of a blob, if it has one (it may still fail `Self::check`).
    pub fn record(&self, key: &BlobKey) -> Result<Option<BlobRecord>> {
        self.index.blob(key)
    }

    /// Which of `keys` have no row in the index, in the order given.
    pub fn missing(&self, keys: &[BlobKey]) -> Result<Vec<BlobKey>> {
        let records = self.index.blobs(keys)?;
        Ok(keys
            .iter()
            .zip(records)
            .filter(|(_, r)| r.is_none())
            .map(|(k, _)| *k)
            .collect())
    }

    /// Opens a blob for reading after checking it against its record.
    pub fn open_blob(&self, key: &BlobKey) -> Result<File> {
        let record = self.index.blob(key)?.ok_or_else(|| missing(vec![*key]))?;
        let rel = key.relative_path();
        let fd = rustix::fs::openat(
            &self.blobs,
            &rel,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
            Mode::empty(),
        );
        let fd = match fd {
            Ok(fd) => fd,
            Err(Errno::NOENT) => {
                self.index.remove_blobs(&[*key])?;
                return Err(missing(vec![*key]));
            }
            Err(e) => return Err(e).io("open", self.blob_path(key)),
        };
        let stat = rustix::fs::fstat(&fd).io("stat", self.blob_path(key))?;
        self.judge(key, &record, &stat)?;
        Ok(File::from(fd))
    }

    /// Compares a blob file's metadata with its record; a mismatch quarantines the blob.
    pub(crate) fn judge(&self, key: &BlobKey, record: &BlobRecord, stat: &Stat) -> Result<()> {
        if let Some(what) = tamper_signs(key, record, stat) {
            tracing::warn!(%key, %what, "blob modified behind hoard's back; quarantining it");
            self.quarantine(key)?;
            return Err(Error::Tampered {
                key: *key,
                what,
                placed: 0,
            });
        }
        Ok(())
    }

    /// Stats a blob and compares it with its record (see [`Self::judge`]).
    pub(crate) fn check(&self, key: &BlobKey, record: &BlobRecord) -> Result<Stat> {
        let stat = match rustix::fs::statat(
            &self.blobs,
            key.name().as_c_str(),
            AtFlags::SYMLINK_NOFOLLOW,
        ) {
            Ok(stat) => stat,
            Err(Errno::NOENT) => {
                self.index.remove_blobs(&[*key])?;
                return Err(missing(vec![*key]));
            }
            Err(e) => return Err(e).io("stat", self.blob_path(key)),
        };
        self.judge(key, record, &stat)?;
        Ok(stat)
    }

    /// Moves a blob out of `blobs-v1/` into `quarantine/` and drops its row, so that it is
    /// never handed out again and the next request fetches it anew.
    pub(crate) fn quarantine(&self, key: &BlobKey) -> Result<()> {
        self.index.remove_blobs(&[*key])?;
        let name = format!("{}.{}", key.relative_path().replace('/', "-"), now_ms());
        match rustix::fs::renameat(&self.blobs, key.relative_path(), &self.quarantine, &name) {
            Ok(()) | Err(Errno::NOENT) => Ok(()),
            Err(e) => Err(e).io("quarantine", self.blob_path(key)),
        }
    }

    /// The (device, inode) of every file in `quarantine/`: a file elsewhere with one of
    /// them is a hardlink to a blob found modified.
    pub fn quarantined_inodes(&self) -> Result<std::collections::HashSet<(u64, u64)>> {
        use std::os::unix::fs::MetadataExt;
        let dir = self.layout().quarantine();
        let mut inodes = std::collections::HashSet::new();
        for entry in std::fs::read_dir(&dir).io("read", &dir)? {
            let entry = entry.io("read", &dir)?;
            if let Ok(meta) = entry.metadata()
                && meta.is_file()
            {
                inodes.insert((meta.dev(), meta.ino()));
            }
        }
        Ok(inodes)
    }

    /// Keeps `keys` from eviction until the returned [`Lease`] is dropped: held by
    /// in-flight materializations and fetches.
    pub fn lease(&self, keys: impl IntoIterator<Item = BlobKey>) -> Lease {
        let keys: Vec<BlobKey> = keys.into_iter().collect();
        let mut table = self.leases.lock().unwrap_or_else(PoisonError::into_inner);
        for key in &keys {
            *table.entry(*key).or_insert(0) += 1;
        }
        Lease {
            table: Arc::clone(&self.leases),
            keys,
        }
    }

    /// Runs `f` while no new lease can be taken, telling it whether `key` is leased now.
    /// Eviction deletes under this, so a blob is never deleted from under a lease.
    pub(crate) fn unless_leased<T>(&self, key: &BlobKey, f: impl FnOnce() -> T) -> Option<T> {
        let table = self.leases.lock().unwrap_or_else(PoisonError::into_inner);
        if table.contains_key(key) {
            return None;
        }
        let out = f();
        drop(table);
        Some(out)
    }

    /// The link modes `auto` chose so far, per (cache device, destination device).
    pub fn link_probes(&self) -> Vec<(u64, u64, LinkMode)> {
        let mut probes: Vec<_> = self
            .probes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(&(cache, dest), &mode)| (cache, dest, mode))
            .collect();
        probes.sort_unstable_by_key(|p| (p.0, p.1));
        probes
    }

    /// Pins blobs (a pinned version's) against eviction; counts nest.
    pub fn pin(&self, keys: &[BlobKey]) -> Result<()> {
        self.index.add_pins(keys, 1)
    }

    pub fn unpin(&self, keys: &[BlobKey]) -> Result<()> {
        self.index.add_pins(keys, -1)
    }

    /// Remembers that `foreign` (an upstream's own digest) names the same bytes as `digest`.
    pub fn put_foreign(&self, foreign: &ForeignDigest, digest: &Digest) -> Result<()> {
        self.index.put_foreign(foreign, digest)
    }

    /// [`Self::foreign`] of many digests at once, in the order asked.
    pub fn foreign_many(&self, foreign: &[&ForeignDigest]) -> Result<Vec<Option<Digest>>> {
        self.index.foreign_many(foreign)
    }

    pub fn foreign(&self, foreign: &ForeignDigest) -> Result<Option<Digest>> {
        self.index.foreign(foreign)
    }

    /// What is wrong with the cache now, if anything, for health checks: the index cannot
    /// write for want of disk space.
    pub fn trouble(&self) -> Option<String> {
        let since = self.index.no_space_since()?;
        Some(format!(
            "the cache index cannot write: the disk was full {} s ago (it writes again at the first write that finds free space)",
            now_ms().saturating_sub(since) / 1000
        ))
    }

    /// Records that the bytes of `digests` were fetched from `source`: a reference
    /// entry's URI, or a foreign upstream's project (see [`Self::proven`]).
    pub fn put_provenance(&self, source: &Provenance, digests: &[Digest]) -> Result<()> {
        self.index.put_provenance(&source.scope(), digests)
    }

    /// Whether the bytes of each of `digests` were ever fetched from `source`, in the order
    /// asked. Knowing a digest is not having the bytes: a caller who is not the daemon's
    /// user gets a cached blob through a reference entry, or a foreign upstream's entry,
    /// only once those bytes came from that same source (so they could have fetched them
    /// anyway); otherwise they are fetched from it first.
    pub fn proven(&self, source: &Provenance, digests: &[Digest]) -> Result<Vec<bool>> {
        self.index.provenance(&source.scope(), digests)
    }

    /// Caches an immutable version. It is validated first: an upstream's answer is
    /// untrusted, and the index only ever holds manifests that passed.
    pub fn put_version(&self, version: &Version) -> Result<()> {
        version.validate()?;
        self.index.put_version(version, None)
    }

    /// Caches a version that a publish in the outbox became upstream, and removes that
    /// outbox record, in one write.
    pub fn put_published(&self, version: &Version, outbox: &str) -> Result<()> {
        version.validate()?;
        self.index.put_version(version, Some(outbox))
    }

    /// Ties the cached versions to the upstream they come from (its URL). A cache filled
    /// from another upstream forgets that one's versions, aliases and W&B versions (which
    /// could name different content here) and its pins (which could not be unpinned
    /// here); blobs are content and stay until evicted. Refused while publishes wait to be
    /// uploaded to the other upstream. Returns how many versions and pins were forgotten.
    pub fn bind_upstream(&self, upstream: &str) -> Result<(u64, u64)> {
        match self.index.upstream()? {
            Some(recorded) if recorded == upstream => Ok((0, 0)),
            Some(recorded) => {
                let pending = self.index.records(Table::Outbox)?.len();
                if pending > 0 {
                    return Err(Error::PendingForAnotherUpstream {
                        cache: self.layout.root.clone(),
                        from: recorded,
                        to: upstream.to_owned(),
                        pending,
                    });
                }
                let (versions, pins) = self.index.switch_upstream(upstream)?;
                if versions + pins > 0 {
                    tracing::warn!(
                        from = recorded,
                        to = upstream,
                        versions,
                        pins,
                        "the cache's versions came from another upstream: forgot them and their pins (blobs stay)"
                    );
                } else {
                    tracing::info!(
                        from = recorded,
                        to = upstream,
                        "the cache now serves another upstream"
                    );
                }
                Ok((versions, pins))
            }
            // A new cache, or one from before the upstream was recorded.
            None => self.index.record_upstream(upstream).map(|()| (0, 0)),
        }
    }

    /// A raw record of `table`, for tests of the index itself: the tables' keys and
    /// encodings are `tables.rs`'s, and the daemon goes through its typed methods.
    pub fn put_record(&self, table: Table, key: &str, value: &[u8]) -> Result<()> {
        self.index.put_record(table, key, value)
    }

    pub fn get_record(&self, table: Table, key: &str) -> Result<Option<Vec<u8>>> {
        self.index.record(table, key)
    }

    pub fn remove_record(&self, table: Table, key: &str) -> Result<()> {
        self.index.remove_record(table, key)
    }

    /// Every record in `table`, by key.
    /// How many records of `table` have keys starting with `prefix`.
    pub fn count_records(&self, table: Table, prefix: &str) -> Result<u64> {
        self.index.count_records(table, prefix)
    }

    pub fn records(&self, table: Table) -> Result<Vec<(String, Vec<u8>)>> {
        self.index.records(table)
    }

    /// How many versions the index holds.
    pub fn version_count(&self) -> Result<u64> {
        self.index.version_count()
    }

    pub fn version(&self, name: &ArtifactName, number: u32) -> Result<Option<Version>> {
        self.index.version(name, number)
    }

    pub fn version_by_digest(&self, digest: &Digest) -> Result<Option<Version>> {
        self.index.version_by_digest(digest)
    }

    /// Remembers an alias resolution, with the time it was made.
    pub fn put_alias(&self, name: &ArtifactName, alias: &str, record: &AliasRecord) -> Result<()> {
        self.index.put_alias(name, alias, record)
    }

    pub fn alias(&self, name: &ArtifactName, alias: &str) -> Result<Option<AliasRecord>> {
        self.index.alias(name, alias)
    }

    /// Records that `keys` were used now (for LRU eviction), in memory; see `uses`.
    pub fn touch(&self, keys: &[BlobKey]) -> Result<()> {
        let now = now_ms();
        let mut uses = self.uses.lock().unwrap_or_else(PoisonError::into_inner);
        uses.extend(keys.iter().map(|key| (*key, now)));
        if uses.len() >= USES_BUFFERED {
            let batch = std::mem::take(&mut *uses);
            drop(uses);
            self.index.touch(batch)?;
        }
        Ok(())
    }

    /// Writes buffered last uses to the index.
    pub(crate) fn flush_uses(&self) -> Result<()> {
        let batch = std::mem::take(&mut *self.uses.lock().unwrap_or_else(PoisonError::into_inner));
        if batch.is_empty() {
            Ok(())
        } else {
            self.index.touch(batch)
        }
    }

    /// Writes buffered state and makes the index durable; call before a clean exit.
    pub fn flush(&self) -> Result<()> {
        self.flush_uses()?;
        self.index.flush()
    }

    /// Bytes of the blobs pinned versions hold: what eviction can never free.
    pub fn pinned_bytes(&self) -> Result<u64> {
        Ok(self
            .index
            .all_blobs()?
            .iter()
            .filter(|(_, r, _)| r.pins > 0)
            .map(|(_, r, _)| r.size)
            .sum())
    }

    /// Total bytes and count of blobs with a row.
    pub fn usage(&self) -> Result<(u64, u64)> {
        let rows = self.index.all_blobs()?;
        Ok((rows.iter().map(|(_, r, _)| r.size).sum(), rows.len() as u64))
    }

    /// Makes the shard directory of the blob at `rel`, unless it was made or seen before.
    pub(crate) fn ensure_shard(&self, rel: &str) -> Result<()> {
        let shard = crate::layout::shard_of(rel);
        let bit = u8::from_str_radix(shard, 16).ok().map(|n| {
            let (word, bit) = (usize::from(n / 64), 1u64 << (n % 64));
            (&self.shards[word], bit)
        });
        if let Some((word, bit)) = bit
            && word.load(Ordering::Relaxed) & bit != 0
        {
            return Ok(());
        }
        match rustix::fs::mkdirat(&self.blobs, shard, Mode::from_raw_mode(0o755)) {
            Ok(()) | Err(Errno::EXIST) => {
                if let Some((word, bit)) = bit {
                    word.fetch_or(bit, Ordering::Relaxed);
                }
                Ok(())
            }
            Err(e) => Err(e).io("create", self.layout.blobs().join(shard)),
        }
    }

    /// Forgets that the shard directory of `rel` exists (it was found gone).
    pub(crate) fn forget_shard(&self, rel: &str) {
        if let Ok(n) = u8::from_str_radix(crate::layout::shard_of(rel), 16) {
            self.shards[usize::from(n / 64)].fetch_and(!(1u64 << (n % 64)), Ordering::Relaxed);
        }
    }

    pub(crate) fn fsync_shard(&self, rel: &str) -> Result<()> {
        let shard = crate::layout::shard_of(rel);
        let fd = rustix::fs::openat(
            &self.blobs,
            shard,
            OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .io("open", self.layout.blobs().join(shard))?;
        rustix::fs::fsync(&fd).io("sync", self.layout.blobs().join(shard))
    }

    pub(crate) fn tmp_path(&self, name: &str) -> PathBuf {
        self.layout.tmp().join(name)
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        if let Err(e) = self.flush_uses() {
            tracing::warn!(error = %e, "could not record the last uses of blobs");
        }
    }
}

/// Releases its blobs for eviction when dropped.
#[must_use = "a lease protects blobs only while it is held"]
pub struct Lease {
    table: Arc<Mutex<HashMap<BlobKey, u32>>>,
    keys: Vec<BlobKey>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        let mut table = self
            .table
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for key in &self.keys {
            if let Some(count) = table.get_mut(key) {
                *count -= 1;
                if *count == 0 {
                    table.remove(key);
                }
            }
        }
    }
}

/// What, if anything, shows that a blob file is not what was ingested.
pub(crate) fn tamper_signs(key: &BlobKey, record: &BlobRecord, stat: &Stat) -> Option<String> {
    if FileType::from_raw_mode(stat.st_mode) != FileType::RegularFile {
        return Some("it is no longer a regular file".to_owned());
    }
    // Only the daemon's user may write a blob: one that belongs to anyone else could
    // have been changed by them (a `chown` raced onto it, say), whatever else it shows.
    let owner = daemon_uid();
    if stat.st_uid != owner {
        return Some(format!(
            "it belongs to uid {} instead of the daemon's uid {owner}",
            stat.st_uid
        ));
    }
    if stat.st_nlink == 0 {
        return Some("it was deleted".to_owned());
    }
    if stat.st_ino != record.ino {
        return Some(format!("inode {} instead of {}", stat.st_ino, record.ino));
    }
    let size = u64::try_from(stat.st_size).unwrap_or(u64::MAX);
    if size != record.size {
        return Some(format!("size {size} instead of {}", record.size));
    }
    if stat.st_mode & 0o7777 != key.file_mode() {
        return Some(format!(
            "mode {:o} instead of {:o}",
            stat.st_mode & 0o7777,
            key.file_mode()
        ));
    }
    if stat.st_mtime != BLOB_MTIME || stat.st_mtime_nsec != 0 {
        return Some("its modification time changed: it was written to".to_owned());
    }
    None
}
