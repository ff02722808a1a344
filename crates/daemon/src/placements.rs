//! Where versions were hardlinked, and the files there that still hold a blob found
//! modified.
//!
//! A hardlinked file is the cache's blob: its 0444 mode does not stop root, so a root job
//! that appends to one changes it in every directory that has it. The store finds such a
//! blob changed (its metadata no longer matches its record), quarantines it and fetches it
//! again, but the directories handed out before keep the changed inode. Each hardlinked
//! materialization is recorded as a [`Placement`] (at most [`KEPT`]; those whose
//! directory is gone are pruned), so that these files can be found (their inode is one in
//! `quarantine/`), named (at the get that found the blob changed, and by `hoard verify`),
//! and linked to the fetched blob again (`hoard verify --repair`): see [`crate::repair`].

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use hoard_store::{BlobKey, Placement, Store};
use hoard_types::{Digest, RelPath};

use crate::caller::Caller;
use crate::error::ApiError;
use crate::runtime::{blocking, now_ms};

/// Placements kept; above it, the oldest go.
pub(crate) const KEPT: u64 = 10_000;

/// The placements, and how many there are (so that pruning is not a scan per request).
pub(crate) struct Placements {
    store: Arc<Store>,
    count: AtomicU64,
}

/// A file in a destination that is a hardlink to a blob found modified.
#[derive(Clone, Debug)]
pub(crate) struct Damaged {
    pub(crate) placement: Placement,
    pub(crate) path: RelPath,
    pub(crate) key: BlobKey,
}

impl Placements {
    pub(crate) fn new(store: Arc<Store>) -> Self {
        let count = store.placement_count().unwrap_or(0);
        Self {
            store,
            count: AtomicU64::new(count),
        }
    }

    /// Records that the version `version` was hardlinked into `dest` for `caller`. A
    /// failure is logged: the request it serves has succeeded.
    pub(crate) async fn record(&self, version: Digest, dest: &Path, caller: Caller) {
        let placement = Placement {
            version,
            dest: dest.display().to_string(),
            uid: caller.uid,
            gid: caller.gid,
            placed_ms: now_ms(),
        };
        let store = self.store.clone();
        let over = self.count.fetch_add(1, Ordering::Relaxed) + 1 > KEPT;
        let kept = blocking(move || {
            store.put_placement(&placement)?;
            Ok(if over { Some(prune(&store)?) } else { None })
        })
        .await;
        match kept {
            Ok(Some(kept)) => self.count.store(kept, Ordering::Relaxed),
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e.detail, "cannot record where a version was linked"),
        }
    }
}

/// Drops the placements whose destination is gone, then the oldest down to three
/// quarters of [`KEPT`]; returns how many are left.
fn prune(store: &Store) -> Result<u64, ApiError> {
    let mut placements = store.placements()?;
    placements.sort_by_key(|p| std::cmp::Reverse(p.placed_ms));
    let mut kept = 0;
    for placement in placements {
        if kept < KEPT * 3 / 4 && Path::new(&placement.dest).is_dir() {
            kept += 1;
        } else {
            store.remove_placement(&placement)?;
        }
    }
    Ok(kept)
}

/// `dir/a.png, dir/b.png and 3 more` for a warning.
pub(crate) fn named(damaged: &[Damaged]) -> String {
    const SHOWN: usize = 5;
    let mut names: Vec<String> = damaged
        .iter()
        .take(SHOWN)
        .map(|d| {
            Path::new(&d.placement.dest)
                .join(d.path.as_str())
                .display()
                .to_string()
        })
        .collect();
    if damaged.len() > SHOWN {
        names.push(format!("and {} more", damaged.len() - SHOWN));
    }
    names.join(", ")
}
