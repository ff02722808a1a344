//! Bringing the index and the blob files back into agreement when a cache is opened, after
//! whatever happened before (a crash, a full disk, a hand-deleted file).

use std::collections::HashSet;
use std::fs;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use hoard_types::Digest;
use rustix::fs::{Mode, OFlags};

use crate::Store;
use crate::error::{IoContext, Result};
use crate::index::Index;
use crate::ingest::{Rehashed, rehash};
use crate::layout::Layout;
use crate::record::BlobKey;
use crate::sys::now_ms;

/// What reconciliation changed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReconcileReport {
    /// Temporary files removed from `tmp/`.
    pub tmp_removed: u64,
    /// Partials (and parted blobs with their ledgers) kept in `tmp/` to be resumed.
    pub partials_kept: u64,
    /// Index rows dropped because their blob file was gone.
    pub rows_dropped: u64,
    /// Blob files without a row that were re-hashed and adopted.
    pub adopted: u64,
    /// Files in `blobs-v1/` that were not valid blobs, moved to `quarantine/`.
    pub quarantined: u64,
}

impl Store {
    /// Opens (creating if needed) the cache at `root`, then reconciles it: orphans in
    /// `tmp/` are removed (partials named by digest are kept for resuming), rows whose blob
    /// is gone are dropped, and blob files without a row are re-hashed and adopted or
    /// quarantined.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self> {
        let layout = Layout::new(root);
        layout.prepare()?;
        let index = Index::open(&layout.index())?;
        let open_dir = |path: PathBuf| {
            rustix::fs::open(
                &path,
                OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .io("open", path)
        };
        let blobs = open_dir(layout.blobs())?;
        let dev = rustix::fs::fstat(&blobs).io("stat", layout.blobs())?.st_dev;
        let store = Self {
            tmp: open_dir(layout.tmp())?,
            quarantine: open_dir(layout.quarantine())?,
            blobs,
            layout,
            index,
            dev,
            leases: Arc::default(),
            probes: Mutex::default(),
            renew: Mutex::default(),
            uses: Mutex::default(),
            shards: Default::default(),
            verity: crate::verity::VerityState::default(),
            guard: crate::guard::Guard::default(),
        };
        store
            .guard
            .protect(&store.layout.root, "the daemon's cache directory")
            .io("stat", &store.layout.root)?;
        let report = run(&store)?;
        tracing::debug!(?report, root = %store.layout.root.display(), "opened cache");
        Ok(store)
    }
}

pub(crate) fn run(store: &Store) -> Result<ReconcileReport> {
    let mut report = ReconcileReport::default();
    let tmp = store.layout.tmp();
    for entry in fs::read_dir(&tmp).io("read", &tmp)? {
        let entry = entry.io("read", &tmp)?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let resumable = name
            .strip_suffix(".partial")
            .or_else(|| name.strip_suffix(crate::parts::LEDGER))
            .or_else(|| name.strip_suffix(crate::parts::RANGES))
            .and_then(|n| n.strip_suffix(".x").or(Some(n)))
            .is_some_and(|hex| hex.parse::<Digest>().is_ok());
        if resumable {
            report.partials_kept += 1;
        } else {
            fs::remove_file(entry.path()).io("remove", entry.path())?;
            report.tmp_removed += 1;
        }
    }

    let blobs = store.layout.blobs();
    let mut files: HashSet<BlobKey> = HashSet::new();
    for shard in fs::read_dir(&blobs).io("read", &blobs)? {
        let shard = shard.io("read", &blobs)?;
        let shard_name = shard.file_name().to_string_lossy().into_owned();
        if shard_name.len() != 2 || !shard.file_type().io("stat", shard.path())?.is_dir() {
            tracing::warn!(path = %shard.path().display(), "unexpected entry in the blob directory; leaving it alone");
            continue;
        }
        for entry in fs::read_dir(shard.path()).io("read", shard.path())? {
            let entry = entry.io("read", shard.path())?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(key) =
                BlobKey::from_file_name(&name).filter(|k| k.relative_path()[..2] == shard_name)
            {
                files.insert(key);
            } else {
                let target = store
                    .layout
                    .quarantine()
                    .join(format!("{shard_name}-{name}.{}", now_ms()));
                fs::rename(entry.path(), &target).io("quarantine", entry.path())?;
                report.quarantined += 1;
            }
        }
    }

    let mut dropped = Vec::new();
    for (key, _, _) in store.index.all_blobs()? {
        if !files.remove(&key) {
            dropped.push(key);
        }
    }
    report.rows_dropped = dropped.len() as u64;
    store.index.remove_blobs(&dropped)?;

    let mut adopted = Vec::new();
    for key in files {
        if let Rehashed::Matches(record) = rehash(store, &key)? {
            adopted.push((key, record));
        } else {
            store.quarantine(&key)?;
            report.quarantined += 1;
        }
    }
    report.adopted = adopted.len() as u64;
    if !adopted.is_empty() {
        rustix::fs::syncfs(&store.blobs).io("sync the filesystem of", &blobs)?;
        store.index.insert_blobs(&adopted, &[], now_ms())?;
    }
    if report != ReconcileReport::default() {
        tracing::info!(?report, "reconciled the cache with its index");
    }
    Ok(report)
}
