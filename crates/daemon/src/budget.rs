//! The cache budget: eviction before a fetch that would cross the high watermark, in the
//! background after one that did, and on request (`gc`); and pins, which eviction never
//! touches.
//!
//! Room is reserved before a fetch starts: the bytes it will add are counted against the
//! budget while it runs, so concurrent requests cannot together overrun it. Eviction
//! follows the store's policy (least recently used first, blobs no workdir links before
//! linked ones, never a pinned or leased blob). A request whose missing bytes cannot fit
//! even after eviction fails before it downloads anything.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use hoard_store::{EvictReport, Store};
use hoard_types::human_bytes;

use crate::daemon::blocking;
use crate::error::ApiError;

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
    pub fn new(max_bytes: u64, high: f64, low: f64) -> Result<Self, String> {
        if !(low > 0.0 && low < high && high <= 1.0) {
            return Err(format!(
                "the watermarks must satisfy 0 < low < high <= 1, not low {low}, high {high}"
            ));
        }
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
    /// Bytes of fetches under way, counted against the budget.
    reserved: AtomicU64,
    /// One room-making decision at a time.
    turn: tokio::sync::Mutex<()>,
    pub(crate) evicted_blobs: AtomicU64,
    pub(crate) evicted_bytes: AtomicU64,
}

/// Room reserved for a fetch; given back when dropped (the bytes are in the cache then).
pub(crate) struct Reservation<'k> {
    keeper: &'k Keeper,
    bytes: u64,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        self.keeper
            .reserved
            .fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

impl Keeper {
    pub(crate) fn new(store: Arc<Store>, budget: Option<Budget>) -> Self {
        Self {
            store,
            budget: std::sync::RwLock::new(budget),
            reserved: AtomicU64::new(0),
            turn: tokio::sync::Mutex::new(()),
            evicted_blobs: AtomicU64::new(0),
            evicted_bytes: AtomicU64::new(0),
        }
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

    /// Makes room for `bytes` about to be fetched for `what`: evicts so that the cache plus
    /// fetches under way stay under the high watermark, and refuses when they cannot stay
    /// under `max_size` even then.
    pub(crate) async fn reserve(
        &self,
        bytes: u64,
        what: &str,
    ) -> Result<Reservation<'_>, ApiError> {
        let Some(budget) = self.budget() else {
            return Ok(Reservation {
                keeper: self,
                bytes: 0,
            });
        };
        let _turn = self.turn.lock().await;
        let reserved = self.reserved.load(Ordering::Relaxed);
        let store = self.store.clone();
        let (used, _) = blocking(move || Ok(store.usage()?)).await?;
        let mut after = used;
        if used + reserved + bytes > budget.high_bytes {
            let target = budget.high_bytes.saturating_sub(reserved + bytes);
            after = self.evict(target).await?.remaining_bytes;
        }
        if after + reserved + bytes > budget.max_bytes {
            return Err(ApiError::new(
                http::StatusCode::INSUFFICIENT_STORAGE,
                "budget-exceeded",
                format!(
                    "{what} needs {} that are not cached, but the cache budget (`max_size`) is {}: \
                     {} stay cached because they are pinned or in use{}; raise `max_size`, \
                     unpin versions (`hoard pins`), or fetch a part with `--path-prefix`",
                    human_bytes(bytes),
                    human_bytes(budget.max_bytes),
                    human_bytes(after),
                    if reserved > 0 {
                        format!(", and {} are being fetched", human_bytes(reserved))
                    } else {
                        String::new()
                    }
                ),
            ));
        }
        self.reserved.fetch_add(bytes, Ordering::Relaxed);
        Ok(Reservation {
            keeper: self,
            bytes,
        })
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
        self.evicted_blobs
            .fetch_add(report.evicted, Ordering::Relaxed);
        self.evicted_bytes.fetch_add(
            report.freed_bytes + report.released_bytes,
            Ordering::Relaxed,
        );
        Ok(report)
    }
}
