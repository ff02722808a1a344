//! Getting bytes into the cache: from a stream (an upstream download, resumable), from a
//! reader, or from local files (a publish).
//!
//! Every path ends in [`BlobWriter::finish`], which keeps the order the design requires:
//! bytes hashed while written into `tmp/`; size and digest checked; mode and mtime set;
//! `fsync`; rename into `blobs-v1/` without replacing; directory `fsync`; then the index
//! row. A crash anywhere leaves nothing, a resumable partial in `tmp/`, or a complete blob
//! without a row, which the next open re-hashes and adopts. Batched ingest
//! ([`Store::ingest_files`], [`Store::commit_staged`]) makes a batch durable before one
//! index batch: many blobs with one `syncfs`, a few with parallel `fsync`s (a `syncfs`
//! would also wait for other processes' writes); rows never point at bytes that are not
//! durable.

use std::fs::File;
use std::io::{self, Read, Seek, Write};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use hoard_types::Digest;
use rayon::prelude::*;
use rustix::fs::{AtFlags, FlockOperation, Mode, OFlags};
use rustix::io::Errno;

use crate::Store;
use crate::error::{Error, IoContext, Result};
use crate::record::{BlobKey, BlobRecord};
use crate::sys::{now_ms, pin_mtime, rename_noreplace};

const CHUNK: usize = 256 * 1024;

/// Batches of at most this many new blobs are made durable blob by blob (`fsync`s)
/// instead of with one `syncfs`. `syncfs` also waits for every other process's dirty data
/// on the filesystem: a training job writing a checkpoint made a 5-file cold get take
/// 1.3–1.5 s instead of 0.02 s (3 GB dirty). For many blobs one `syncfs` is the faster
/// way (per-blob `fsync`s kept 20,000 small files at 1.6–2.4× curl's time).
pub(crate) const SYNC_EACH_AT_MOST: usize = 64;

/// The result of an ingest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ingested {
    pub key: BlobKey,
    pub size: u64,
    /// `false` when the blob was already in the cache (nothing was written to `blobs-v1/`).
    pub fresh: bool,
}

/// A blob renamed into place whose bytes and index row are not durable yet: hand a batch
/// of them to [`Store::commit_staged`] (one `syncfs`, one index batch). Until then the blob
/// is not `Store::present`; after a crash, reconciliation re-hashes it.
#[derive(Debug)]
#[must_use = "a staged blob is not in the index until it is committed"]
pub struct Staged {
    pub ingested: Ingested,
    record: Option<BlobRecord>,
    /// The upstream's own digest of these bytes, mapped to the blob in the same commit.
    foreign: Option<hoard_types::ForeignDigest>,
}

impl Staged {
    /// Records, when this blob is committed, that the upstream calls it `foreign` (a W&B
    /// MD5 the bytes were checked against).
    pub fn with_foreign(self, foreign: hoard_types::ForeignDigest) -> Self {
        Self {
            foreign: Some(foreign),
            ..self
        }
    }

    pub fn foreign(&self) -> Option<&hoard_types::ForeignDigest> {
        self.foreign.as_ref()
    }
}

/// What [`Store::begin`] found.
pub enum Begin<'a> {
    /// The blob is already cached and checks out.
    Present(Ingested),
    /// Write the bytes from [`BlobWriter::offset`] on.
    /// Boxed: a writer carries a blake3 hasher (about 2 KB).
    Write(Box<BlobWriter<'a>>),
}

/// A blob being written into `tmp/`. Dropping it without [`Self::finish`] keeps a
/// resumable partial (one named by its digest) and removes any other temporary file.
pub struct BlobWriter<'a> {
    store: &'a Store,
    file: File,
    name: String,
    hasher: blake3::Hasher,
    written: u64,
    exec: bool,
    expected: Option<(Digest, u64)>,
    /// Named `<digest>.partial` and locked: kept on drop so a later [`Store::begin`] resumes.
    resumable: bool,
    done: bool,
    /// The digest of bytes written by position, hashed as they were written.
    precomputed: Option<Digest>,
}

/// Blobs at least this large are checked against the filesystem's free space first.
const CHECKED_ROOM: u64 = 1 << 20;

impl Store {
    /// Starts (or resumes) writing the blob `key`, expected to be `size` bytes, unless it is
    /// already cached. A partial left by an interrupted earlier attempt is continued from
    /// its length (its prefix is re-hashed). If another writer holds that partial, this one
    /// writes a private temporary file instead.
    pub fn begin(&self, key: BlobKey, size: u64) -> Result<Begin<'_>> {
        if let Some(present) = self.present(&key)? {
            return Ok(Begin::Present(present));
        }
        self.room_for(&key.digest.to_string(), size)?;
        let name = format!("{}{}.partial", key.digest, if key.exec { ".x" } else { "" });
        let fd = rustix::fs::openat(
            &self.tmp,
            &name,
            OFlags::RDWR | OFlags::CREATE | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .io("create", self.tmp_path(&name))?;
        match rustix::fs::flock(&fd, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(Errno::WOULDBLOCK) => {
                return self
                    .writer(key.exec, Some((key.digest, size)))
                    .map(|w| Begin::Write(Box::new(w)));
            }
            Err(e) => return Err(e).io("lock", self.tmp_path(&name)),
        }
        let mut file = File::from(fd);
        let mut len = file.metadata().io("stat", self.tmp_path(&name))?.len();
        if len > size {
            file.set_len(0).io("truncate", self.tmp_path(&name))?;
            len = 0;
        }
        let mut hasher = blake3::Hasher::new();
        if len > 0 {
            let mut prefix = (&file).take(len);
            let copied = io::copy(&mut prefix, &mut hasher).io("read", self.tmp_path(&name))?;
            if copied != len {
                file.set_len(copied).io("truncate", self.tmp_path(&name))?;
                len = copied;
            }
            tracing::debug!(%key, offset = len, "resuming partial blob");
        }
        file.seek(io::SeekFrom::Start(len))
            .io("seek", self.tmp_path(&name))?;
        Ok(Begin::Write(Box::new(BlobWriter {
            store: self,
            file,
            name,
            hasher,
            written: len,
            exec: key.exec,
            expected: Some((key.digest, size)),
            resumable: true,
            done: false,
            precomputed: None,
        })))
    }

    /// A writer to a private temporary file, for bytes whose digest may not be known yet.
    /// Refuses, before anything is written, a blob of `size` bytes that cannot fit on the
    /// cache's filesystem: sizes come from untrusted manifests (a claim of 1 PiB would
    /// otherwise be downloaded until the disk is full). Small blobs skip the check: a
    /// full disk fails their write just as clearly.
    ///
    /// A reserve stays free for the index (see `Store::free_space`): RocksDB, once a write of
    /// its fails for want of space, refuses every write until it has polled the disk again
    /// (every 5 s), so hoard's own blobs must never be what fills the disk.
    pub fn room_for(&self, what: &str, size: u64) -> Result<()> {
        if size < CHECKED_ROOM {
            return Ok(());
        }
        let (free, reserve) = self.free_space()?;
        let free = free.saturating_sub(reserve);
        if size > free {
            return Err(Error::NoRoom {
                what: what.to_owned(),
                cache: self.layout.root.clone(),
                size,
                free,
            });
        }
        Ok(())
    }

    /// Bytes free on the cache's filesystem for unprivileged writes, and the reserve kept
    /// for the index: 5% of the filesystem, at most 64 MiB.
    pub fn free_space(&self) -> Result<(u64, u64)> {
        let fs = rustix::fs::fstatvfs(&self.tmp).io("stat the filesystem of", self.layout.tmp())?;
        let free = fs.f_bavail.saturating_mul(fs.f_frsize);
        let total = fs.f_blocks.saturating_mul(fs.f_frsize);
        Ok((free, (total / 20).min(64 << 20)))
    }

    /// Whether the filesystem is into the index's reserve: writes that only save work
    /// later (an alias's last answer) are skipped then, so that the index keeps working.
    pub fn low_on_space(&self) -> bool {
        self.free_space()
            .is_ok_and(|(free, reserve)| free < reserve)
    }

    /// A writer of the named, locked file `name` in `tmp/` that outlives this process:
    /// kept on drop (see [`crate::PartedWriter`]), removed once staged or found wrong.
    pub(crate) fn resumable_writer(
        &self,
        name: String,
        file: File,
        exec: bool,
        expected: (Digest, u64),
    ) -> BlobWriter<'_> {
        BlobWriter {
            store: self,
            file,
            name,
            hasher: blake3::Hasher::new(),
            written: 0,
            exec,
            expected: Some(expected),
            resumable: true,
            done: false,
            precomputed: None,
        }
    }

    pub fn writer(&self, exec: bool, expected: Option<(Digest, u64)>) -> Result<BlobWriter<'_>> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        // Asked once: `getpid` was a syscall per blob. A name taken anyway (a fork) is
        // skipped by `O_EXCL` below.
        static PID: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
        let pid = *PID.get_or_init(std::process::id);
        loop {
            let name = format!("ingest-{pid}-{}", COUNTER.fetch_add(1, Ordering::Relaxed));
            let flags =
                OFlags::RDWR | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
            match rustix::fs::openat(&self.tmp, &name, flags, Mode::from_raw_mode(0o600)) {
                Ok(fd) => {
                    return Ok(BlobWriter {
                        store: self,
                        file: File::from(fd),
                        name,
                        hasher: blake3::Hasher::new(),
                        written: 0,
                        exec,
                        expected,
                        resumable: false,
                        done: false,
                        precomputed: None,
                    });
                }
                Err(Errno::EXIST) => {}
                Err(e) => return Err(e).io("create", self.tmp_path(&name)),
            }
        }
    }

    /// Ingests everything `reader` yields. With `expected` set and the blob already cached,
    /// nothing is read.
    pub fn ingest_reader(
        &self,
        reader: impl Read,
        exec: bool,
        expected: Option<(Digest, u64)>,
    ) -> Result<Ingested> {
        if let Some((digest, _)) = expected
            && let Some(present) = self.present(&BlobKey::new(digest, exec))?
        {
            return Ok(present);
        }
        let mut writer = self.writer(exec, expected)?;
        let stream = writer.path();
        writer.write_from(reader, "read the blob stream for", &stream)?;
        writer.finish()
    }

    /// Ingests one local file without modifying it (it is copied, or reflinked where the
    /// filesystem can). The exec bit comes from the file's mode.
    pub fn ingest_file(&self, path: &Path) -> Result<Ingested> {
        let (writer, source) = self.copy_in(path)?;
        drop(source);
        writer.finish()
    }

    /// Ingests many local files in parallel, with one `syncfs` and one index batch for all
    /// of them instead of two `fsync`s and a write per blob. Returns one result per path,
    /// in order; the first error is returned after the others were committed.
    pub fn ingest_files(&self, paths: &[PathBuf]) -> Result<Vec<Ingested>> {
        let staged: Vec<Result<Staged>> = paths
            .par_iter()
            .map(|path| {
                let (writer, _source) = self.copy_in(path)?;
                writer.finish_staged()
            })
            .collect();
        self.commit_staged(staged.iter().filter_map(|r| r.as_ref().ok()))?;
        staged
            .into_iter()
            .map(|r| r.map(|staged| staged.ingested))
            .collect()
    }

    /// Makes staged blobs durable, then writes their rows in one batch: a row never points
    /// at bytes that are not durable. Up to `SYNC_EACH_AT_MOST` new blobs are synced one
    /// by one (in parallel, with their directories); more, with one `syncfs`.
    pub fn commit_staged<'s>(&self, staged: impl IntoIterator<Item = &'s Staged>) -> Result<()> {
        let staged: Vec<&Staged> = staged.into_iter().collect();
        let fresh: Vec<BlobKey> = staged
            .iter()
            .filter(|s| s.record.is_some())
            .map(|s| s.ingested.key)
            .collect();
        if fresh.len() <= SYNC_EACH_AT_MOST {
            self.sync_each(&fresh)?;
        } else {
            rustix::fs::syncfs(&self.blobs).io("sync the filesystem of", self.layout.blobs())?;
        }
        let rows: Vec<(BlobKey, BlobRecord)> = staged
            .iter()
            .filter_map(|s| s.record.map(|record| (s.ingested.key, record)))
            .collect();
        let foreign: Vec<_> = staged
            .iter()
            .filter_map(|s| Some((s.foreign.as_ref()?, s.ingested.key.digest)))
            .collect();
        self.index.insert_blobs(&rows, &foreign, now_ms())
    }

    /// `fsync`s each blob, the shard directories they were renamed into, and `blobs-v1/`
    /// (which may have gained a shard). The file syncs run in parallel, so the filesystem
    /// can commit them together.
    fn sync_each(&self, keys: &[BlobKey]) -> Result<()> {
        if keys.is_empty() {
            return Ok(());
        }
        keys.par_iter().try_for_each(|key| {
            let fd = crate::verity::open_readonly(&self.blobs, key.relative_path())
                .io("open", self.blob_path(key))?;
            rustix::fs::fsync(&fd).io("sync", self.blob_path(key))
        })?;
        let shards: std::collections::BTreeSet<String> = keys
            .iter()
            .map(|key| crate::layout::shard_of(&key.relative_path()).to_owned())
            .collect();
        for shard in &shards {
            self.fsync_shard(shard)?;
        }
        rustix::fs::fsync(&self.blobs).io("sync", self.layout.blobs())
    }

    fn copy_in(&self, path: &Path) -> Result<(BlobWriter<'_>, File)> {
        // Without blocking: a FIFO swapped in for an input would hang the open.
        let source = rustix::fs::open(
            path,
            OFlags::RDONLY | OFlags::NONBLOCK | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map(File::from)
        .io("open", path)?;
        let meta = source.metadata().io("stat", path)?;
        if !meta.is_file() {
            return Err(Error::Io {
                op: "ingest",
                path: path.to_owned(),
                source: io::Error::other("not a regular file"),
            });
        }
        let exec = std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o111 != 0;
        let mut writer = self.writer(exec, None)?;
        if rustix::fs::ioctl_ficlone(&writer.file, &source).is_ok() {
            // A clone shares extents: hash the private copy, which cannot change under us.
            let mut clone = File::from(
                writer
                    .file
                    .as_fd()
                    .try_clone_to_owned()
                    .io("dup", writer.path())?,
            );
            let mut buf = vec![0; CHUNK];
            loop {
                let n = clone.read(&mut buf).io("read", writer.path())?;
                if n == 0 {
                    break;
                }
                writer.hasher.update(&buf[..n]);
                writer.written += n as u64;
            }
        } else {
            writer.write_from(&source, "read", path)?;
        }
        // A file written to while it was read would give a blob that never existed as a
        // whole: refuse it rather than publish a torn file.
        let after = source.metadata().io("stat", path)?;
        if changed(&meta, &after) || writer.written != meta.len() {
            writer.discard();
            return Err(Error::Io {
                op: "ingest",
                path: path.to_owned(),
                source: io::Error::other(
                    "the file changed while it was read; try again once it is complete",
                ),
            });
        }
        Ok((writer, source))
    }

    /// The blob, if it is cached and its file checks out.
    pub(crate) fn present(&self, key: &BlobKey) -> Result<Option<Ingested>> {
        let Some(record) = self.index.blob(key)? else {
            return Ok(None);
        };
        match self.check(key, &record) {
            Ok(_) => Ok(Some(Ingested {
                key: *key,
                size: record.size,
                fresh: false,
            })),
            Err(Error::Tampered { .. } | Error::MissingBlobs { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

impl BlobWriter<'_> {
    /// Bytes already in the file: where a resumed download continues.
    pub fn offset(&self) -> u64 {
        self.written
    }

    pub fn path(&self) -> PathBuf {
        self.store.tmp_path(&self.name)
    }

    pub(crate) fn store(&self) -> &Store {
        self.store
    }

    pub fn write(&mut self, data: &[u8]) -> Result<()> {
        self.hasher.update(data);
        self.write_unhashed(data)
    }

    /// The whole blob, from bytes the caller has just hashed to `digest` in this very
    /// buffer (an upstream's checked answer): written without hashing them again, then
    /// staged like [`Self::finish_staged`], which still checks the size and the digest
    /// against what was expected.
    pub fn stage_checked(mut self, data: &[u8], digest: Digest) -> Result<Staged> {
        self.write_unhashed(data)?;
        self.precomputed = Some(digest);
        self.finish_staged()
    }

    fn write_unhashed(&mut self, data: &[u8]) -> Result<()> {
        if let Some((digest, size)) = self.expected
            && self.written + data.len() as u64 > size
        {
            let actual = self.written + data.len() as u64;
            self.abandon();
            return Err(Error::SizeMismatch {
                digest: digest.to_string(),
                expected: size,
                actual,
            });
        }
        if let Err(e) = self.file.write_all(data) {
            // A partial that filled the disk would keep it full (even the index could not
            // open): drop it; resuming is worth less than a working cache.
            if matches!(
                e.kind(),
                io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
            ) {
                self.abandon();
            }
            return Err(Error::Io {
                op: "write",
                path: self.path(),
                source: e,
            });
        }
        let step = crate::sys::WRITEBACK_STEP;
        let before = self.written / step * step;
        self.written += data.len() as u64;
        let after = self.written / step * step;
        if after > before {
            crate::sys::start_writeback(&self.file, before..after);
        }
        Ok(())
    }

    pub(crate) fn file(&self) -> &File {
        &self.file
    }

    /// Stages a blob whose `size` bytes were written by position and hashed by the
    /// caller ([`crate::PartedWriter`]): checks the result like [`Self::finish_staged`].
    pub(crate) fn finish_hashed(mut self, size: u64, digest: Digest) -> Result<Staged> {
        self.hasher = blake3::Hasher::new();
        self.written = size;
        self.precomputed = Some(digest);
        self.file
            .seek(io::SeekFrom::Start(size))
            .io("seek", self.path())?;
        self.finish_staged()
    }

    /// Writes everything `reader` yields; a read error names `source` (with `op`).
    pub fn write_from(
        &mut self,
        mut reader: impl Read,
        op: &'static str,
        source: &Path,
    ) -> Result<()> {
        let mut buf = vec![0; CHUNK];
        loop {
            match reader.read(&mut buf) {
                Ok(0) => return Ok(()),
                Ok(n) => self.write(&buf[..n])?,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    return Err(Error::Io {
                        op,
                        path: source.to_owned(),
                        source: e,
                    });
                }
            }
        }
    }

    /// Checks size and digest and makes the blob durable and visible.
    pub fn finish(self) -> Result<Ingested> {
        let store = self.store;
        let (ingested, record) = self.finish_inner(true)?;
        if let Some(record) = record {
            store
                .index
                .insert_blobs(&[(ingested.key, record)], &[], now_ms())?;
        }
        Ok(ingested)
    }

    /// Like [`Self::finish`] but without `fsync`s and without the index row: the caller
    /// commits a batch of these with [`Store::commit_staged`]. For many small blobs this
    /// replaces two `fsync`s per blob with one `syncfs` per batch.
    pub fn finish_staged(self) -> Result<Staged> {
        let (ingested, record) = self.finish_inner(false)?;
        Ok(Staged {
            ingested,
            record,
            foreign: None,
        })
    }

    fn finish_inner(mut self, durable: bool) -> Result<(Ingested, Option<BlobRecord>)> {
        let store = self.store;
        let key = self.verify()?;
        let ingested = Ingested {
            key,
            size: self.written,
            fresh: false,
        };
        if store.present(&key)?.is_some() {
            self.abandon();
            return Ok((ingested, None));
        }
        self.seal(&key, durable)?;
        let rel = key.relative_path();
        store.ensure_shard(&rel)?;
        let mut renamed = rename_noreplace(&store.tmp, &self.name, &store.blobs, &rel);
        if renamed == Err(Errno::NOENT) {
            // The shard directory went away behind hoard's back: make it again.
            store.forget_shard(&rel);
            store.ensure_shard(&rel)?;
            renamed = rename_noreplace(&store.tmp, &self.name, &store.blobs, &rel);
        }
        match renamed {
            Ok(()) => {}
            Err(Errno::EXIST) => {
                // Another writer got there first, or a file without a row is in the way
                // (a crash before the index batch): keep it if its bytes are right.
                self.abandon();
                return adopt_existing(store, key).map(|record| (ingested, Some(record)));
            }
            Err(e) => {
                self.abandon();
                return Err(e).io("rename into the cache", store.blob_path(&key));
            }
        }
        self.done = true;
        self.seal_verity(&key, durable)?;
        if durable {
            store.fsync_shard(&rel)?;
        }
        let stat = rustix::fs::fstat(&self.file).io("stat", store.blob_path(&key))?;
        let record = BlobRecord {
            size: self.written,
            ino: stat.st_ino,
            pins: 0,
            ingested_ms: now_ms(),
        };
        Ok((
            Ingested {
                fresh: true,
                ..ingested
            },
            Some(record),
        ))
    }

    /// Replaces the blob file of the same key with this one (a fresh inode of the same,
    /// verified bytes) and returns the new inode number. Used when a blob's link count is
    /// at the filesystem's limit.
    pub(crate) fn finish_replacing(mut self) -> Result<u64> {
        let store = self.store;
        let key = self.verify()?;
        self.seal(&key, true)?;
        let rel = key.relative_path();
        if let Err(e) = rustix::fs::renameat(&store.tmp, &self.name, &store.blobs, &rel) {
            self.abandon();
            return Err(e).io("rename into the cache", store.blob_path(&key));
        }
        self.done = true;
        self.seal_verity(&key, true)?;
        store.fsync_shard(&rel)?;
        Ok(rustix::fs::fstat(&self.file)
            .io("stat", store.blob_path(&key))?
            .st_ino)
    }

    /// Checks size and digest against what was expected; on a mismatch the file is removed.
    fn verify(&mut self) -> Result<BlobKey> {
        let digest = self
            .precomputed
            .unwrap_or_else(|| Digest::from(self.hasher.finalize()));
        if let Some((expected, size)) = self.expected {
            if self.written != size {
                let actual = self.written;
                self.abandon();
                return Err(Error::SizeMismatch {
                    digest: expected.to_string(),
                    expected: size,
                    actual,
                });
            }
            if digest != expected {
                self.abandon();
                return Err(Error::DigestMismatch {
                    expected,
                    actual: digest,
                });
            }
        }
        Ok(BlobKey::new(digest, self.exec))
    }

    /// Gives the file the blob's mode and pinned mtime, and makes its bytes durable.
    fn seal(&self, key: &BlobKey, durable: bool) -> Result<()> {
        let path = self.path();
        normalize(&self.file, key, &path)?;
        if durable {
            rustix::fs::fsync(&self.file).io("sync", &path)?;
        }
        Ok(())
    }

    /// With fs-verity on, seals the blob now at its final name: the writable descriptor
    /// is swapped for a read-only one first (the kernel refuses while one is open).
    fn seal_verity(&mut self, key: &BlobKey, durable: bool) -> Result<()> {
        if !self.store.verity() {
            return Ok(());
        }
        let path = self.store.blob_path(key);
        let fd = crate::verity::open_readonly(&self.store.blobs, key.relative_path())
            .io("open", &path)?;
        self.file = File::from(fd);
        if matches!(
            self.store.seal_verity(&self.file, key),
            crate::verity::Sealed::Now
        ) && durable
        {
            rustix::fs::fsync(&self.file).io("sync", &path)?;
        }
        Ok(())
    }

    /// Drops the bytes written so far, resumable or not: for a source that turned out to
    /// send wrong bytes, which a later attempt must not resume from.
    pub fn discard(mut self) {
        self.abandon();
    }

    /// Removes the temporary file, resumable or not: its contents are wrong or redundant.
    fn abandon(&mut self) {
        if !self.done {
            self.done = true;
            let _ = rustix::fs::unlinkat(&self.store.tmp, &self.name, AtFlags::empty());
        }
    }
}

impl Drop for BlobWriter<'_> {
    fn drop(&mut self) {
        if !self.resumable {
            self.abandon();
        }
    }
}

/// A blob file is already at the final name: keep it (returning its record) if its row
/// checks out or its bytes are right; otherwise quarantine it and report the conflict.
pub(crate) fn adopt_existing(store: &Store, key: BlobKey) -> Result<BlobRecord> {
    if let Some(record) = store.index.blob(&key)?
        && store.check(&key, &record).is_ok()
    {
        return Ok(record);
    }
    match rehash(store, &key)? {
        Rehashed::Matches(record) => Ok(record),
        Rehashed::Differs(actual) => {
            store.quarantine(&key)?;
            Err(Error::DigestMismatch {
                expected: key.digest,
                actual,
            })
        }
        Rehashed::NotAFile => {
            store.quarantine(&key)?;
            Err(Error::Tampered {
                key,
                what: "it is not a regular file".to_owned(),
                placed: 0,
            })
        }
    }
}

/// What re-hashing a file found at a blob's name showed.
pub(crate) enum Rehashed {
    /// The bytes are the blob's: here is its record (the file now has the blob's mode and
    /// mtime).
    Matches(BlobRecord),
    Differs(Digest),
    NotAFile,
}

/// Re-hashes the file at `key`'s name, for adopting a blob that has no trustworthy row.
pub(crate) fn rehash(store: &Store, key: &BlobKey) -> Result<Rehashed> {
    let path = store.blob_path(key);
    let fd = rustix::fs::openat(
        &store.blobs,
        key.relative_path(),
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
        Mode::empty(),
    );
    let fd = match fd {
        Ok(fd) => fd,
        Err(Errno::LOOP) => return Ok(Rehashed::NotAFile),
        Err(e) => return Err(e).io("open", &path),
    };
    let mut file = File::from(fd);
    let meta = file.metadata().io("stat", &path)?;
    if !meta.is_file() {
        return Ok(Rehashed::NotAFile);
    }
    let mut hasher = blake3::Hasher::new();
    io::copy(&mut file, &mut hasher).io("read", &path)?;
    let digest = Digest::from(hasher.finalize());
    if digest != key.digest {
        return Ok(Rehashed::Differs(digest));
    }
    normalize(&file, key, &path)?;
    Ok(Rehashed::Matches(BlobRecord {
        size: meta.len(),
        ino: std::os::unix::fs::MetadataExt::ino(&meta),
        pins: 0,
        ingested_ms: now_ms(),
    }))
}

/// Gives a verified blob file its canonical mode and mtime.
pub(crate) fn normalize(file: &File, key: &BlobKey, path: &Path) -> Result<()> {
    rustix::fs::fchmod(file, Mode::from_raw_mode(key.file_mode())).io("chmod", path)?;
    pin_mtime(file).io("set the mtime of", path)
}

/// Whether a file's size or times moved between two `stat`s.
fn changed(before: &std::fs::Metadata, after: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    (
        before.len(),
        before.mtime(),
        before.mtime_nsec(),
        before.ctime(),
        before.ctime_nsec(),
    ) != (
        after.len(),
        after.mtime(),
        after.mtime_nsec(),
        after.ctime(),
        after.ctime_nsec(),
    )
}
