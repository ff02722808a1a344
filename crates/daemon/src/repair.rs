//! The files of recorded destinations ([`crate::placements`]) that still hold a blob
//! found modified: found by their inode (one in `quarantine/`), and linked to the blob
//! again, as the user who asked for them there.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use hoard_store::{BlobKey, LinkMode};
use hoard_types::{Digest, RelPath};
use tokio::sync::mpsc;

use crate::caller::Caller;
use crate::daemon::Daemon;
use crate::error::ApiError;
use crate::placements::Damaged;
use crate::runtime::blocking;
use crate::version::{Found, Selection, Versioned};

impl Daemon {
    /// The files of recorded destinations that are hardlinks to a quarantined blob (of
    /// `only`, when given); placements whose destination is gone are dropped.
    pub(crate) async fn damaged(
        &self,
        only: Option<&HashSet<Digest>>,
    ) -> Result<Vec<Damaged>, ApiError> {
        let store = self.store.clone();
        let (quarantined, placements) =
            blocking(move || Ok((store.quarantined_inodes()?, store.placements()?))).await?;
        if quarantined.is_empty() || placements.is_empty() {
            return Ok(Vec::new());
        }
        let mut files: HashMap<Digest, Arc<Vec<(RelPath, BlobKey)>>> = HashMap::new();
        for placement in &placements {
            if let std::collections::hash_map::Entry::Vacant(slot) = files.entry(placement.version)
            {
                slot.insert(Arc::new(self.files_of(placement.version).await?));
            }
        }
        let (store, only) = (self.store.clone(), only.cloned());
        blocking(move || {
            use std::os::unix::fs::MetadataExt;
            let mut damaged = Vec::new();
            let mut seen = HashSet::new();
            for placement in placements {
                let dest = Path::new(&placement.dest);
                let of = &files[&placement.version];
                if of.is_empty() || !dest.is_dir() {
                    // The version is forgotten or the directory gone: nothing to find.
                    store.remove_placement(&placement)?;
                    continue;
                }
                for (path, key) in of.iter() {
                    if only
                        .as_ref()
                        .is_some_and(|only| !only.contains(&key.digest))
                    {
                        continue;
                    }
                    let file = dest.join(path.as_str());
                    let Ok(meta) = std::fs::symlink_metadata(&file) else {
                        continue;
                    };
                    if meta.is_file()
                        && quarantined.contains(&(meta.dev(), meta.ino()))
                        && seen.insert(file)
                    {
                        damaged.push(Damaged {
                            placement: placement.clone(),
                            path: path.clone(),
                            key: *key,
                        });
                    }
                }
            }
            Ok(damaged)
        })
        .await
    }

    /// The version with this digest, native or foreign, if this cache knows it.
    async fn version_at(&self, digest: Digest) -> Result<Option<Found>, ApiError> {
        let store = self.store.clone();
        blocking(move || {
            Ok(match store.version_by_digest(&digest)? {
                Some(version) => Some(Found::fresh(version)),
                None => store
                    .foreign_version_by_digest(&digest)?
                    .map(Found::foreign),
            })
        })
        .await
    }

    /// The files of the version with this digest, by path (none: not known here).
    async fn files_of(&self, digest: Digest) -> Result<Vec<(RelPath, BlobKey)>, ApiError> {
        Ok(match self.version_at(digest).await?.map(|f| f.version) {
            None => Vec::new(),
            Some(Versioned::Native(version)) => version
                .manifest
                .entries
                .iter()
                .map(|(path, e)| (path.clone(), BlobKey::new(e.digest, e.exec)))
                .collect(),
            Some(Versioned::Foreign(foreign, _)) => crate::foreign::listed(&self.store, &foreign)
                .await?
                .into_iter()
                .filter_map(|e| Some((e.path, BlobKey::new(e.digest?, e.exec))))
                .collect(),
        })
    }

    /// Links each damaged file to the blob again (fetched if it is not cached), in its
    /// destination and as the user who asked for it there. Returns each file's outcome.
    pub(crate) async fn repair(
        self: &Arc<Self>,
        damaged: Vec<Damaged>,
    ) -> Vec<(Damaged, Result<(), ApiError>)> {
        let mut by_place: HashMap<(String, Digest), Vec<Damaged>> = HashMap::new();
        for file in damaged {
            let place = (file.placement.dest.clone(), file.placement.version);
            by_place.entry(place).or_default().push(file);
        }
        let mut outcomes = Vec::new();
        for ((dest, version), files) in by_place {
            let result = self.relink(&dest, version, &files).await;
            outcomes.extend(files.into_iter().map(|f| (f, result.clone())));
        }
        outcomes
    }

    async fn relink(
        self: &Arc<Self>,
        dest: &str,
        version: Digest,
        files: &[Damaged],
    ) -> Result<(), ApiError> {
        let found = self.version_at(version).await?.ok_or_else(|| {
            ApiError::not_found(format!("version `{version}` is no longer known here"))
        })?;
        let placement = &files[0].placement;
        let caller = Caller {
            uid: placement.uid,
            gid: placement.gid,
            pid: None,
        };
        let selection = Selection {
            files: files.iter().map(|f| f.path.as_str()).collect(),
            ..Selection::default()
        };
        // Nobody listens to this materialization's events.
        let (events, _) = mpsc::channel(1);
        self.materialize(
            &found,
            &selection,
            caller,
            Some(Path::new(dest)),
            LinkMode::Hardlink,
            &events,
        )
        .await
        .map(drop)
    }
}
