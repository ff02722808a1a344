//! Pinned versions: fetched, then kept from eviction until unpinned.
//!
//! A pin is a record in the store's `pins` table under `entity/project/name@digest`, and one
//! pin count on each of the version's blobs (eviction skips a blob with any). Pinning the
//! same version twice is one pin.

use std::sync::Arc;

use hoard_store::{BlobKey, Table};
use hoard_types::api::{Pin, PinRequest};
use hoard_types::{Manifest, Version};
use tokio::sync::mpsc;

use crate::daemon::{Daemon, Selection, blocking};
use crate::error::ApiError;

fn key(version: &Version) -> String {
    format!(
        "{}/{}/{}@{}",
        version.entity, version.project, version.name, version.digest
    )
}

fn blob_keys(manifest: &Manifest) -> Vec<BlobKey> {
    let mut keys: Vec<BlobKey> = manifest
        .entries
        .values()
        .map(|e| BlobKey::new(e.digest, e.exec))
        .collect();
    keys.sort_unstable_by_key(|k| (k.digest, k.exec));
    keys.dedup();
    keys
}

fn pin_of(version: &Version) -> Pin {
    Pin {
        entity: version.entity.clone(),
        project: version.project.clone(),
        name: version.name.clone(),
        version: version.version.clone(),
        digest: version.digest,
        files: version.manifest.entries.len() as u64,
        bytes: version.manifest.total_size(),
    }
}

impl Daemon {
    /// The blobs a pin of this version holds: its manifest's, or for a foreign version
    /// (W&B) the blobs its files are bound to (all of them, once it was fetched whole).
    async fn pinned_keys(&self, found: &crate::daemon::Found) -> Result<Vec<BlobKey>, ApiError> {
        let Some(foreign) = &found.foreign else {
            return Ok(blob_keys(&found.version.manifest));
        };
        let mut manifest = Manifest::new();
        for entry in crate::foreign::listed(&self.store, foreign).await? {
            let digest = entry.digest.ok_or_else(|| {
                ApiError::internal(format!(
                    "`{}` is not cached after fetching the version",
                    entry.path
                ))
            })?;
            manifest.entries.insert(
                entry.path,
                hoard_types::Entry {
                    digest,
                    exec: false,
                    reference: None,
                    size: entry.size,
                },
            );
        }
        Ok(blob_keys(&manifest))
    }

    /// Fetches what is missing of a version, then pins it.
    pub(crate) async fn pin(self: &Arc<Self>, asked: &PinRequest) -> Result<Pin, ApiError> {
        let found = self
            .resolve(
                &asked.reference,
                asked.entity.as_deref(),
                asked.project.as_deref(),
            )
            .await?;
        let (events, _) = mpsc::channel(1);
        let all = Selection {
            path_prefix: None,
            file: None,
            clean: false,
        };
        self.materialize(&found, &all, None, hoard_store::LinkMode::Auto, &events)
            .await?;
        let keys = self.pinned_keys(&found).await?;
        let version = found.version;
        let pin = pin_of(&version);
        let _turn = self.pin_turn.lock().await;
        let store = self.store.clone();
        let record = serde_json::to_vec(&pin).expect("a pin serializes");
        blocking(move || {
            let key = key(&version);
            if store.get_record(Table::Pins, &key)?.is_none() {
                store.pin(&keys)?;
                store.put_record(Table::Pins, &key, &record)?;
            }
            Ok(())
        })
        .await?;
        Ok(pin)
    }

    /// Unpins the version a reference names.
    pub(crate) async fn unpin(self: &Arc<Self>, asked: &PinRequest) -> Result<Pin, ApiError> {
        let found = self
            .resolve(
                &asked.reference,
                asked.entity.as_deref(),
                asked.project.as_deref(),
            )
            .await?;
        let keys = self.pinned_keys(&found).await?;
        let version = found.version;
        let pin = pin_of(&version);
        let _turn = self.pin_turn.lock().await;
        let store = self.store.clone();
        let removed = blocking(move || {
            let key = key(&version);
            if store.get_record(Table::Pins, &key)?.is_none() {
                return Ok(false);
            }
            store.unpin(&keys)?;
            store.remove_record(Table::Pins, &key)?;
            Ok(true)
        })
        .await?;
        if !removed {
            return Err(ApiError::not_found(format!(
                "`{}/{}/{}:{}` is not pinned (see `hoard pins`)",
                pin.entity, pin.project, pin.name, pin.version
            )));
        }
        Ok(pin)
    }

    /// Every pinned version.
    pub(crate) async fn pins(&self) -> Result<Vec<Pin>, ApiError> {
        let store = self.store.clone();
        blocking(move || {
            Ok(store
                .records(Table::Pins)?
                .into_iter()
                .filter_map(|(key, json)| {
                    let parsed = serde_json::from_slice::<Pin>(&json);
                    if parsed.is_err() {
                        tracing::error!(key, "a pin record does not parse; ignoring it");
                    }
                    parsed.ok()
                })
                .collect())
        })
        .await
    }
}
