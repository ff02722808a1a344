//! Pinned versions: fetched, then kept from eviction until unpinned.
//!
//! A pin is a record in the store's `pins` table under `entity/project/name@digest`, and one
//! pin count on each of the version's blobs (eviction skips a blob with any). Pinning the
//! same version twice is one pin. The record names the uids that pinned the version: a
//! caller sees and removes only their own pins, and the blobs are released when the last
//! one goes; the daemon's own user (or root) sees all of them and removes a pin for all.
//! With a budget, another user's pins may hold at most half of it.

use std::sync::Arc;

use hoard_store::{BlobKey, PinRecord};
use hoard_types::api::{Pin, PinRequest};
use hoard_types::{Manifest, human_bytes};
use tokio::sync::mpsc;

use crate::caller::Asker;
use crate::daemon::Daemon;
use crate::error::ApiError;
use crate::runtime::blocking;
use crate::version::{Found, Selection, Versioned, blob_keys};

/// A user other than the daemon's may pin at most this fraction (1/N) of the budget.
const PIN_SHARE: u64 = 2;

/// The pin of a version: its files and bytes from its manifest, or for a foreign version
/// from its entries.
fn pin_of(found: &Found) -> Pin {
    let (files, bytes) = match &found.version {
        Versioned::Foreign(foreign, _) => (
            foreign.entries.len() as u64,
            foreign.entries.values().map(|e| e.size).sum(),
        ),
        Versioned::Native(version) => (
            version.manifest.entries.len() as u64,
            version.manifest.total_size(),
        ),
    };
    let version = found.head();
    Pin {
        entity: version.entity.to_owned(),
        project: version.project.to_owned(),
        name: version.name.to_owned(),
        version: version.version.to_owned(),
        digest: version.digest,
        files,
        bytes,
    }
}

impl Daemon {
    /// The blobs a pin of this version holds: its manifest's, or for a foreign version
    /// (W&B) the blobs its files are bound to (all of them, once it was fetched whole).
    async fn pinned_keys(&self, found: &Found) -> Result<Vec<BlobKey>, ApiError> {
        let foreign = match &found.version {
            Versioned::Native(version) => return Ok(blob_keys(&version.manifest)),
            Versioned::Foreign(foreign, _) => foreign,
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

    /// Refuses a pin that would make the versions `who` pinned hold more than their share
    /// of the budget ([`PIN_SHARE`]): one user's pins must not leave the others no room.
    async fn check_share(&self, who: &Asker, adding: u64) -> Result<(), ApiError> {
        let Some(budget) = self.keeper.budget() else {
            return Ok(());
        };
        if who.caller.is_admin() {
            return Ok(());
        }
        let share = budget.max_bytes / PIN_SHARE;
        let held: u64 = self.pins(who).await?.iter().map(|p| p.bytes).sum::<u64>() + adding;
        if held > share {
            return Err(ApiError::new(
                http::StatusCode::INSUFFICIENT_STORAGE,
                "pin-share",
                format!(
                    "your pins would hold {}, more than a user's share of this shared cache ({}, 1/{PIN_SHARE} of its {} budget); unpin something first (`hoard pins`)",
                    human_bytes(held),
                    human_bytes(share),
                    human_bytes(budget.max_bytes)
                ),
            ));
        }
        Ok(())
    }

    /// Fetches what is missing of a version, then pins it for the caller.
    pub(crate) async fn pin(
        self: &Arc<Self>,
        who: &Asker,
        asked: &PinRequest,
    ) -> Result<Pin, ApiError> {
        let found = self
            .resolve_for(
                who,
                &asked.reference,
                asked.entity.as_deref(),
                asked.project.as_deref(),
            )
            .await?;
        let mine = self.pins(who).await?;
        if !mine.iter().any(|p| p.digest == found.head().digest) {
            self.check_share(who, pin_of(&found).bytes).await?;
        }
        let pin = pin_of(&found);
        // The eviction that follows a fetch could take the version's blobs before they
        // are pinned: they are leased from before the fetch (a native version's, whose
        // keys are known) until pinned.
        let _early = match &found.version {
            Versioned::Native(version) => Some(self.store.lease(blob_keys(&version.manifest))),
            Versioned::Foreign(..) => None,
        };
        let fill = || async {
            let (events, _) = mpsc::channel(1);
            let all = Selection::default();
            self.materialize(
                &found,
                &all,
                who.caller,
                None,
                hoard_store::LinkMode::Auto,
                &events,
            )
            .await
        };
        fill().await?;
        let keys = self.pinned_keys(&found).await?;
        let _lease = self.store.lease(keys.iter().copied());
        let pinned = self.record_pin(&pin, who.caller.uid, keys.clone()).await?;
        let store = self.store.clone();
        let missing = blocking(move || Ok(store.missing(&keys)?)).await?;
        if !missing.is_empty() {
            // A foreign version's keys are known only once bound: blobs evicted before
            // their lease are fetched again (leased now), and pinned.
            tracing::warn!(
                missing = missing.len(),
                "blobs of a version being pinned were evicted first; fetching them again"
            );
            fill().await?;
            let store = self.store.clone();
            let still = blocking(move || {
                if pinned {
                    store.pin(&missing)?;
                }
                Ok(store.missing(&missing)?)
            })
            .await?;
            if !still.is_empty() {
                return Err(ApiError::internal(
                    "the version's blobs were evicted again while it was pinned",
                ));
            }
        }
        Ok(pin)
    }

    /// Records `uid`'s pin of `pin`; the blobs `keys` are pinned once, by its first owner.
    /// Returns whether this call pinned them.
    async fn record_pin(&self, pin: &Pin, uid: u32, keys: Vec<BlobKey>) -> Result<bool, ApiError> {
        let _turn = self.pin_turn.lock().await;
        let (store, new) = (self.store.clone(), pin.clone());
        blocking(move || {
            let mut pinned = false;
            let record = match store.pin_record(&new) {
                Ok(None) => {
                    store.pin(&keys)?;
                    pinned = true;
                    PinRecord {
                        pin: new,
                        owners: vec![uid],
                    }
                }
                Ok(Some(mut record)) if !record.owners().contains(&uid) => {
                    record.owners = record.owners();
                    record.owners.push(uid);
                    record
                }
                Ok(Some(_)) => return Ok(false),
                // Unreadable: its pin counts are on the blobs already; own it anew.
                Err(e @ hoard_store::Error::CorruptRecord { .. }) => {
                    tracing::error!(error = %e, "replacing an unreadable pin record");
                    PinRecord {
                        pin: new,
                        owners: vec![uid],
                    }
                }
                Err(e) => return Err(e.into()),
            };
            store.put_pin_record(&record)?;
            Ok(pinned)
        })
        .await
    }

    /// Unpins the version a reference names: the caller's pin, or (for the daemon's own
    /// user) everyone's.
    pub(crate) async fn unpin(
        self: &Arc<Self>,
        who: &Asker,
        asked: &PinRequest,
    ) -> Result<Pin, ApiError> {
        let found = self
            .resolve_for(
                who,
                &asked.reference,
                asked.entity.as_deref(),
                asked.project.as_deref(),
            )
            .await?;
        let keys = self.pinned_keys(&found).await?;
        let pin = pin_of(&found);
        let (uid, admin) = (who.caller.uid, who.caller.is_admin());
        let _turn = self.pin_turn.lock().await;
        let (store, asked) = (self.store.clone(), pin.clone());
        let removed = blocking(move || {
            let record = match store.pin_record(&asked) {
                Ok(None) => return Ok(false),
                Ok(Some(record)) => Some(record),
                // Unreadable: anyone who may unpin removes it.
                Err(hoard_store::Error::CorruptRecord { .. }) => None,
                Err(e) => return Err(e.into()),
            };
            let mut owners = record.as_ref().map_or_else(Vec::new, PinRecord::owners);
            if admin {
                owners.clear();
            } else if let Some(at) = owners.iter().position(|o| *o == uid) {
                owners.remove(at);
            } else {
                return Ok(false);
            }
            if owners.is_empty() {
                store.unpin(&keys)?;
                store.remove_pin_record(&asked)?;
            } else if let Some(mut record) = record {
                record.owners = owners;
                store.put_pin_record(&record)?;
            }
            Ok(true)
        })
        .await?;
        if !removed {
            return Err(ApiError::not_found(format!(
                "`{}/{}/{}:{}` is not pinned by you (see `hoard pins`)",
                pin.entity, pin.project, pin.name, pin.version
            )));
        }
        Ok(pin)
    }

    /// The pinned versions `who` may see: their own (all, for the daemon's own user).
    pub(crate) async fn pins(&self, who: &Asker) -> Result<Vec<Pin>, ApiError> {
        let (store, who) = (self.store.clone(), who.clone());
        blocking(move || {
            Ok(store
                .pin_records()?
                .into_iter()
                .filter(|record| who.caller.is_admin() || record.owners().contains(&who.caller.uid))
                .map(|record| record.pin)
                .collect())
        })
        .await
    }
}
