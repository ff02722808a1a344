//! The cache budget: eviction before a fetch that would cross the high watermark, in the
//! background after one that did, and on request (`gc`); and pins, which eviction never
//! touches.
//!
//! Room is reserved before a fetch starts: the bytes it will add are counted against the
//! budget while it runs, so concurrent requests cannot together overrun it. Room is
//! reserved per blob: requests that share blobs (16 jobs asking for one model) count them
//! once, since each blob is fetched once. Eviction
//! follows the store's policy (least recently used first, blobs no workdir links before
//! linked ones, never a pinned or leased blob). A request whose missing bytes cannot fit
//! even after eviction fails before it downloads anything.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use hoard_store::{BlobKey, EvictReport, Store};
use hoard_types::{ForeignDigest, human_bytes};

use crate::error::ApiError;
use crate::runtime::blocking;

/// `max_size` and its watermarks, in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budget {
    pub max_bytes: u64,
    /// Above this, eviction runs (down to `low_bytes`).
    pub high_bytes: u64,
    pub low_bytes: u64,
}

impl Budget {
    /// A budget of `max_bytes` with watermarks as fractions of it (`0 < low < high <= 1`).
    /// `high_watermark` and `low_watermark` when not configured.
    pub const DEFAULT_HIGH: f64 = 0.95;
    pub const DEFAULT_LOW: f64 = 0.85;

    /// The rule for watermarks: fractions of the budget, above 0 and at most 1, low below
    /// high.
    pub fn check_watermarks(high: f64, low: f64) -> Result<(), String> {
        for (key, value) in [("high_watermark", high), ("low_watermark", low)] {
            if !(value > 0.0 && value <= 1.0) {
                return Err(format!(
                    "`{key}` must be a fraction above 0 and at most 1, not {value}"
                ));
            }
        }
        if low >= high {
            return Err(format!(
                "the watermarks must satisfy low < high, not low {low}, high {high}"
            ));
        }
        Ok(())
    }

    pub fn new(max_bytes: u64, high: f64, low: f64) -> Result<Self, String> {
        Self::check_watermarks(high, low)?;
        #[expect(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss,
            reason = "a fraction of a byte count, rounded down"
        )]
        let part = |f: f64| (max_bytes as f64 * f) as u64;
        Ok(Self {
            max_bytes,
            high_bytes: part(high),
            low_bytes: part(low),
        })
    }
}

/// Keeps the cache within its [`Budget`].
pub(crate) struct Keeper {
    store: Arc<Store>,
    /// Replaced when the configuration is reloaded.
    budget: std::sync::RwLock<Option<Budget>>,
    /// Blobs being fetched, counted against the budget.
    reserved: Mutex<Reserved>,
    /// One room-making decision at a time.
    turn: tokio::sync::Mutex<()>,
    /// Told when room may have been freed (a reservation ended, blobs were evicted).
    freed: tokio::sync::Notify,
    evicted_blobs: AtomicU64,
    evicted_bytes: AtomicU64,
}

/// What room is reserved for: a blob, or a W&B file not yet bound to one (by its MD5).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Claim {
    Blob(BlobKey),
    Foreign(ForeignDigest),
}

/// The claims of fetches under way: each claim's size and how many reservations hold it,
/// and the sum of the sizes.
#[derive(Debug, Default)]
struct Reserved {
    bytes: u64,
    claims: HashMap<Claim, (u64, u32)>,
}

/// Room reserved for a fetch; given back when dropped (the bytes are in the cache then).
pub(crate) struct Reservation<'k> {
    keeper: &'k Keeper,
    claims: Vec<Claim>,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        let keeper = self.keeper;
        let _wake = Wake(&keeper.freed);
        let mut reserved = keeper
            .reserved
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for claim in &self.claims {
            if let Some((size, holders)) = reserved.claims.get_mut(claim) {
                *holders -= 1;
                if *holders == 0 {
                    let size = *size;
                    reserved.claims.remove(claim);
                    reserved.bytes -= size;
                }
            }
        }
    }
}

/// Wakes those waiting for room when dropped (after the lock it follows is released).
struct Wake<'n>(&'n tokio::sync::Notify);

impl Drop for Wake<'_> {
    fn drop(&mut self) {
        self.0.notify_waiters();
    }
}

/// How long a request waits for room that fetches in flight or blobs in use hold.
const WAIT_FOR_ROOM: std::time::Duration = std::time::Duration::from_secs(600);

impl Keeper {
    pub(crate) fn new(store: Arc<Store>, budget: Option<Budget>) -> Self {
        Self {
            store,
            budget: std::sync::RwLock::new(budget),
            reserved: Mutex::default(),
            turn: tokio::sync::Mutex::new(()),
            freed: tokio::sync::Notify::new(),
            evicted_blobs: AtomicU64::new(0),
            evicted_bytes: AtomicU64::new(0),
        }
    }

    /// Blobs and bytes evicted since start.
    pub(crate) fn evicted(&self) -> (u64, u64) {
        (
            self.evicted_blobs.load(Ordering::Relaxed),
            self.evicted_bytes.load(Ordering::Relaxed),
        )
    }

    pub(crate) fn budget(&self) -> Option<Budget> {
        *self
            .budget
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn set_budget(&self, budget: Option<Budget>) {
        *self
            .budget
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = budget;
    }

    /// Makes room for the `claims` (with their sizes) about to be fetched for `what`:
    /// evicts so that the cache plus fetches under way stay under the high watermark.
    /// When they cannot stay under `max_size` even then, but would once fetches in flight
    /// end and blobs in use are released, it waits for that (up to [`WAIT_FOR_ROOM`],
    /// saying so once on `events`); it refuses at once only when what is pinned leaves
    /// too little room for good. Claims another fetch already holds need no more room.
    pub(crate) async fn reserve(
        &self,
        claims: Vec<(Claim, u64)>,
        what: &str,
        events: Option<&tokio::sync::mpsc::Sender<hoard_types::api::Event>>,
    ) -> Result<Reservation<'_>, ApiError> {
        let Some(budget) = self.budget() else {
            return Ok(Reservation {
                keeper: self,
                claims: Vec::new(),
            });
        };
        let waiting_since = tokio::time::Instant::now();
        let mut told = false;
        loop {
            // Registered before the check, so that room freed in between is not missed.
            let freed = self.freed.notified();
            let (after, reserved, bytes) = {
                let _turn = self.turn.lock().await;
                let (reserved, bytes) = self.sizes(&claims);
                let store = self.store.clone();
                let (used, _) = blocking(move || Ok(store.usage()?)).await?;
                let mut after = used;
                if used + reserved + bytes > budget.high_bytes {
                    let target = budget.high_bytes.saturating_sub(reserved + bytes);
                    after = self.evict(target).await?.remaining_bytes;
                }
                if after + reserved + bytes <= budget.max_bytes {
                    return Ok(self.hold(claims));
                }
                (after, reserved, bytes)
            };
            let store = self.store.clone();
            let pinned = blocking(move || Ok(store.pinned_bytes()?)).await?;
            let waited = waiting_since.elapsed();
            if pinned + bytes > budget.max_bytes || waited >= WAIT_FOR_ROOM {
                return Err(Self::refusal(
                    what,
                    budget,
                    (bytes, after, reserved),
                    waited,
                ));
            }
            if !told && let Some(events) = events {
                told = true;
                let message = format!(
                    "{what} waits for room in the cache budget ({}): {} are being fetched or in use by other calls",
                    human_bytes(budget.max_bytes),
                    human_bytes((after + reserved).saturating_sub(pinned))
                );
                let _ = events
                    .send(hoard_types::api::Event::Warning { message })
                    .await;
            }
            // Leases (blobs in use) end without a word: look again every second too.
            let _ = tokio::time::timeout(std::time::Duration::from_secs(1), freed).await;
        }
    }

    /// Bytes held by fetches under way, and the bytes of `claims` none of them holds.
    fn sizes(&self, claims: &[(Claim, u64)]) -> (u64, u64) {
        let held = self.reserved.lock().unwrap_or_else(PoisonError::into_inner);
        let new: u64 = claims
            .iter()
            .filter(|(claim, _)| !held.claims.contains_key(claim))
            .map(|(_, size)| size)
            .sum();
        (held.bytes, new)
    }

    /// Holds `claims`. The bytes held grow by the claims no other fetch holds *now*: one
    /// that was held when the room was counted may have been given back since (a
    /// reservation drops without the turn), and then it is this one's to count.
    fn hold(&self, claims: Vec<(Claim, u64)>) -> Reservation<'_> {
        let mut held = self.reserved.lock().unwrap_or_else(PoisonError::into_inner);
        let mut added = 0;
        for (claim, size) in &claims {
            let (_, holders) = held.claims.entry(claim.clone()).or_insert_with(|| {
                added += *size;
                (*size, 0)
            });
            *holders += 1;
        }
        held.bytes += added;
        Reservation {
            keeper: self,
            claims: claims.into_iter().map(|(claim, _)| claim).collect(),
        }
    }

    fn refusal(
        what: &str,
        budget: Budget,
        (bytes, after, reserved): (u64, u64, u64),
        waited: std::time::Duration,
    ) -> ApiError {
        ApiError::new(
            http::StatusCode::INSUFFICIENT_STORAGE,
            "budget-exceeded",
            format!(
                "{what} needs {} that are not cached, but the cache budget (`max_size`) is {}: \
                 {} stay cached because they are pinned or in use{}{}; raise `max_size`, \
                 unpin versions (`hoard pins`), or fetch a part with `--path-prefix`",
                human_bytes(bytes),
                human_bytes(budget.max_bytes),
                human_bytes(after),
                if reserved > 0 {
                    format!(", and {} are being fetched", human_bytes(reserved))
                } else {
                    String::new()
                },
                if waited.is_zero() {
                    String::new()
                } else {
                    format!(" (after waiting {} s for room)", waited.as_secs())
                }
            ),
        )
    }

    /// After a fetch: back under the low watermark if the high one was crossed, in the
    /// background.
    pub(crate) fn after_fetch(self: &Arc<Self>) {
        let Some(budget) = self.budget() else {
            return;
        };
        let keeper = self.clone();
        tokio::spawn(async move {
            let _turn = keeper.turn.lock().await;
            let store = keeper.store.clone();
            let used = match blocking(move || Ok(store.usage()?)).await {
                Ok((used, _)) => used,
                Err(e) => {
                    tracing::error!(error = %e, "cannot measure the cache");
                    return;
                }
            };
            if used > budget.high_bytes
                && let Err(e) = keeper.evict(budget.low_bytes).await
            {
                tracing::error!(error = %e, "eviction failed");
            }
        });
    }

    /// Evicts down to `target` bytes (or reports what would go, with `dry_run`).
    pub(crate) async fn gc(&self, target: u64, dry_run: bool) -> Result<EvictReport, ApiError> {
        let _turn = self.turn.lock().await;
        if dry_run {
            let store = self.store.clone();
            return blocking(move || Ok(store.eviction_plan(target)?)).await;
        }
        self.evict(target).await
    }

    async fn evict(&self, target: u64) -> Result<EvictReport, ApiError> {
        let store = self.store.clone();
        let report = blocking(move || Ok(store.evict_to(target)?)).await?;
        if report.evicted > 0 {
            self.freed.notify_waiters();
        }
        self.evicted_blobs
            .fetch_add(report.evicted, Ordering::Relaxed);
        self.evicted_bytes.fetch_add(
            report.freed_bytes + report.released_bytes,
            Ordering::Relaxed,
        );
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(seed: u8, n: u8, size: u64) -> Vec<(Claim, u64)> {
        (0..n)
            .map(|i| {
                let digest = hoard_types::Digest::of(&[seed, i]);
                (Claim::Blob(BlobKey::new(digest, false)), size)
            })
            .collect()
    }

    fn reserved(keeper: &Keeper) -> u64 {
        keeper.reserved.lock().unwrap().bytes
    }

    /// A claim given back between another request's count of the room and its hold is
    /// counted by that hold: the bytes held stay the sum of the claims held (they
    /// underflowed on the second drop before: a daemon thread panicked under load).
    #[test]
    fn a_claim_given_back_before_another_holds_it_is_counted_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path().join("cache")).unwrap());
        let keeper = Keeper::new(store, Some(Budget::new(1000, 0.95, 0.85).unwrap()));
        let first = keeper.hold(claims(1, 2, 100));
        assert_eq!(reserved(&keeper), 200);
        // The second request counted the room while the first held both claims...
        let (_, new) = keeper.sizes(&claims(1, 2, 100));
        assert_eq!(new, 0);
        // ...and the first gives them back before the second holds them.
        drop(first);
        assert_eq!(reserved(&keeper), 0);
        let second = keeper.hold(claims(1, 2, 100));
        assert_eq!(reserved(&keeper), 200);
        drop(second);
        assert_eq!(reserved(&keeper), 0);
    }

    /// Sixteen jobs asking for one model that takes 70% of the budget fetch it once, so
    /// they must all get room; a different 70% must wait until the first is done, then
    /// gets room.
    #[tokio::test]
    async fn requests_sharing_blobs_reserve_them_once_and_others_wait_for_room() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path().join("cache")).unwrap());
        let keeper = Keeper::new(store, Some(Budget::new(1000, 0.95, 0.85).unwrap()));
        let model = claims(1, 7, 100);
        let mut jobs = Vec::new();
        for _ in 0..16 {
            jobs.push(
                keeper
                    .reserve(model.clone(), "the model", None)
                    .await
                    .unwrap(),
            );
        }
        assert_eq!(reserved(&keeper), 700);
        // Half of it shared, half new: only the new half counts, and it does not fit now.
        let mut mixed = claims(1, 3, 100);
        mixed.extend(claims(2, 4, 100));
        let (events, mut told) = tokio::sync::mpsc::channel(4);
        let waited = tokio::time::timeout(
            std::time::Duration::from_millis(300),
            keeper.reserve(mixed.clone(), "another", Some(&events)),
        )
        .await;
        assert!(
            waited.is_err(),
            "it waits for the room the model's fetch holds"
        );
        let warning = told.try_recv().unwrap();
        assert!(
            format!("{warning:?}").contains("waits for room"),
            "{warning:?}"
        );
        assert_eq!(reserved(&keeper), 700);

        drop(jobs.split_off(1));
        assert_eq!(reserved(&keeper), 700, "one job still fetches the model");
        let (waiting, ()) = tokio::join!(keeper.reserve(mixed, "another", None), async {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            drop(jobs);
        });
        let both = waiting.unwrap();
        assert_eq!(reserved(&keeper), 700);
        drop(both);
        assert_eq!(reserved(&keeper), 0);
    }

    /// What pinned blobs hold can never be freed: a request that cannot fit beside them
    /// is refused at once.
    #[tokio::test]
    async fn room_that_pins_hold_is_refused_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path().join("cache")).unwrap());
        let key = store
            .ingest_reader(&[7u8; 800][..], false, None)
            .unwrap()
            .key;
        store.pin(&[key]).unwrap();
        let keeper = Keeper::new(store, Some(Budget::new(1000, 0.95, 0.85).unwrap()));
        let started = std::time::Instant::now();
        let err = keeper
            .reserve(claims(3, 3, 100), "the dataset", None)
            .await
            .err()
            .unwrap();
        assert_eq!(err.kind, "budget-exceeded", "{err:?}");
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
    }
}
