//! The fetch engine: each missing blob is fetched from the upstream once, however many
//! requests (from however many clients) need it at the same time.
//!
//! The first caller for a blob starts a detached task and registers a `watch` channel;
//! later callers wait on the same channel. The task is not tied to any request, so a client
//! that disconnects does not cancel a fetch others wait for (it also finishes a fetch that
//! nobody waits for any more: the bytes are wanted). A semaphore bounds concurrent
//! fetches. Bytes that do not check out are thrown away and fetched again, up to
//! [`ATTEMPTS`] times. Three ways in, by size: small blobs (≤ 1 MiB) are fetched into memory and
//! written in one blocking call; larger ones are streamed into a resumable partial from a
//! blocking thread (a broken fetch is continued by the next attempt); large ones (≥ 64 MiB
//! by default) come as parallel byte ranges into one file, each range hashed as it arrives. In every
//! case the store's [`hoard_store::BlobWriter`] checks size and digest before anything
//! becomes visible.
//!
//! Durability is committed per request, not per blob: a fetched blob is renamed into the
//! cache without `fsync` ("staged") and keeps its in-flight entry; when a request has all
//! its blobs staged (and every few thousand on the way: see `crate::drive`) it calls
//! [`Fetcher::commit_now`], which makes everything staged so far
//! durable (one `syncfs`, or `fsync`s for a few blobs: see
//! [`hoard_store::Store::commit_staged`]) with one index batch, and only then drops the in-flight
//! entries (a request arriving meanwhile joins them instead of fetching again). Commits
//! take turns, so a request whose blobs went into someone else's commit waits for it to
//! end. Measured on this disk: per-blob `fsync`, then a `syncfs` per small batch, kept a
//! cold fetch of 20,000 small files at 1.6–2.4× curl's time, while the same run without
//! any sync took less than curl.
//!
//! With a fleet tier, a blob the upstream would serve is asked of the tier first, and one
//! fetched from the upstream is offered to it once committed (`tier.rs`).

mod gather;
mod tier;

pub(crate) use gather::{GATHER_FROM, GATHER_MAX};
pub(crate) use tier::{RequestBatch, TIER_MISS};

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use hoard_store::{Begin, BlobKey, Staged, Store};
use hoard_types::ForeignDigest;
use hoard_upstream::{BlobSource, FileSource, ForeignCheck, Tier};
use tokio::sync::{Semaphore, watch};

use crate::error::ApiError;

/// Blobs up to this size are fetched into memory, then written in one go (at most
/// concurrency × this much memory).
const SMALL_BLOB: u64 = 1 << 20;

/// Blobs up to this size are written on the runtime thread: creating, writing and
/// renaming a file this small into the page cache takes about as long as the hand-off to
/// a blocking thread and back, which cost a tenth of the daemon's CPU time in a cold fetch
/// of 20,000 small files.
const INLINE_WRITE: u64 = 64 << 10;

/// Fetches under way by key: what each one's waiters will be told when it ends (`None`
/// until then).
type Inflight<K, T> = Mutex<HashMap<K, watch::Receiver<Option<Result<T, ApiError>>>>>;

/// The bytes of blobs a request is receiving, counted as their chunks arrive, so that its
/// progress moves during a large blob. A fetch takes its count back when it ends, when the
/// request counts the blob whole (see [`crate::drive::drive`]).
#[derive(Clone, Debug, Default)]
pub(crate) struct Receiving(Arc<AtomicU64>);

impl Receiving {
    pub(crate) fn bytes(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    fn tally(&self) -> Tally {
        Tally {
            total: self.0.clone(),
            added: AtomicU64::new(0),
        }
    }
}

/// One fetch's share of a [`Receiving`], given back when it is dropped or reset.
#[derive(Debug)]
struct Tally {
    total: Arc<AtomicU64>,
    added: AtomicU64,
}

impl Tally {
    fn add(&self, bytes: usize) {
        let bytes = bytes as u64;
        self.added.fetch_add(bytes, Ordering::Relaxed);
        self.total.fetch_add(bytes, Ordering::Relaxed);
    }

    /// A new attempt: what the last one received does not count.
    fn reset(&self) {
        let added = self.added.swap(0, Ordering::Relaxed);
        self.total.fetch_sub(added, Ordering::Relaxed);
    }
}

impl Drop for Tally {
    fn drop(&mut self) {
        self.reset();
    }
}

/// Adds to a tally, if there is one.
fn count(tally: Option<&Tally>, bytes: usize) {
    if let Some(tally) = tally {
        tally.add(bytes);
    }
}

/// Counters for `status` and `/metrics`.
#[derive(Debug, Default)]
pub(crate) struct FetchCounters {
    pub(crate) fetched_blobs: AtomicU64,
    pub(crate) fetched_bytes: AtomicU64,
    pub(crate) failed: AtomicU64,
    /// Downloads thrown away because their bytes were wrong, and asked for again.
    pub(crate) refetched: AtomicU64,
    pub(crate) in_flight: AtomicU64,
    /// Requests that materialize or prefetch, under way ([`Fetcher::foreground`]).
    pub(crate) requests: Arc<AtomicU64>,
    /// How long blob fetches took, start to staged.
    pub(crate) seconds: Histogram,
    /// Failed fetches by the problem type of their error (`upstream-unreachable`, …).
    pub(crate) failures: Mutex<std::collections::BTreeMap<&'static str, u64>>,
}

/// A request under way, for as long as it lives (see [`Fetcher::foreground`]).
pub(crate) struct Foreground(Arc<AtomicU64>);

impl Drop for Foreground {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Upper bounds (seconds) of the fetch-duration histogram's buckets.
pub(crate) const BUCKETS: [f64; 9] = [0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0, 120.0];

/// A Prometheus histogram of durations: counts per bucket (cumulative when rendered), sum.
#[derive(Debug, Default)]
pub(crate) struct Histogram {
    counts: [AtomicU64; BUCKETS.len() + 1],
    sum_micros: AtomicU64,
}

impl Histogram {
    pub(crate) fn observe(&self, elapsed: std::time::Duration) {
        let secs = elapsed.as_secs_f64();
        let bucket = BUCKETS
            .iter()
            .position(|le| secs <= *le)
            .unwrap_or(BUCKETS.len());
        self.counts[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(
            u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    /// (cumulative count per bucket, then +Inf), total count, sum in seconds.
    pub(crate) fn snapshot(&self) -> (Vec<u64>, u64, f64) {
        let mut cumulative = Vec::with_capacity(BUCKETS.len() + 1);
        let mut total = 0;
        for count in &self.counts {
            total += count.load(Ordering::Relaxed);
            cumulative.push(total);
        }
        #[expect(clippy::cast_precision_loss, reason = "a sum of seconds for display")]
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        (cumulative, total, sum)
    }
}

/// How large blobs are fetched: as parallel byte ranges.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Ranges {
    /// Blobs at least this large are fetched in ranges.
    pub(crate) threshold: u64,
    /// Size of each range.
    pub(crate) size: u64,
    /// Ranges of one blob in flight at once.
    pub(crate) parallel: usize,
}

pub(crate) struct Fetcher {
    store: Arc<Store>,
    ranges: Ranges,
    /// Where a blob comes from when a request names no other source: the upstream, unless
    /// it serves files by path only (W&B; see [`Self::ensure_foreign`]).
    blobs: Option<Arc<dyn BlobSource>>,
    /// The upstream's small blobs, asked for in batches (`gather.rs`).
    gather: Option<Arc<gather::Gather>>,
    permits: Arc<Semaphore>,
    /// Staged blobs not yet committed.
    pending: Mutex<Vec<Staged>>,
    /// One commit at a time (see the module docs).
    commit_turn: tokio::sync::Mutex<()>,
    /// Blob fetches: the bytes downloaded (`None` if the blob turned out to be cached).
    inflight: Inflight<BlobKey, Option<u64>>,
    /// Fetches of files known only by a foreign digest (W&B's MD5), until committed: the
    /// blob the bytes turned out to be, and the bytes downloaded.
    inflight_foreign: Inflight<ForeignKey, (BlobKey, Option<u64>)>,
    pub(crate) counters: FetchCounters,
    /// The fleet tier, asked before the upstream.
    tier: Option<Arc<Tier>>,
    /// Blobs fetched from the upstream, offered to the tier once committed.
    offers: Mutex<Vec<tier::Offer>>,
}

/// A fetch of a file known by a foreign digest, within one project: requests of two
/// projects never share one (a download within a project is what proves that its members
/// may have the bytes; see `foreign.rs`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct ForeignKey {
    pub(crate) digest: ForeignDigest,
    pub(crate) project: Arc<str>,
}

impl std::fmt::Display for ForeignKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} in `{}`", self.digest, self.project)
    }
}

/// Where a blob fetch goes first.
enum Route {
    /// Straight to its source (a reference entry's URI).
    Direct,
    /// The tier, then the upstream; with the request's tier batch, if it claimed one,
    /// and whether the request gathers its small blobs into batch requests.
    Tiered(Option<Arc<RequestBatch>>, bool),
}

/// Attempts at a blob or file whose bytes did not match the digest they should have (a
/// body too short or too long included); broken connections resume within an attempt.
const ATTEMPTS: u32 = 3;

impl Fetcher {
    /// Must be called inside a tokio runtime (it starts the committer task).
    pub(crate) fn new(
        store: Arc<Store>,
        blobs: Option<Arc<dyn BlobSource>>,
        concurrency: usize,
        ranges: Ranges,
        tier: Option<Arc<Tier>>,
    ) -> Self {
        Self {
            store,
            ranges,
            gather: blobs.clone().map(gather::Gather::new),
            blobs,
            tier,
            offers: Mutex::default(),
            pending: Mutex::default(),
            commit_turn: tokio::sync::Mutex::new(()),
            permits: Arc::new(Semaphore::new(concurrency.max(1))),
            inflight: Mutex::default(),
            inflight_foreign: Mutex::default(),
            counters: FetchCounters::default(),
        }
    }

    /// Marks a request under way until the guard drops: background work steps aside.
    pub(crate) fn foreground(&self) -> Foreground {
        self.counters.requests.fetch_add(1, Ordering::Relaxed);
        Foreground(self.counters.requests.clone())
    }

    /// Whether requests or fetches are running, or fetched blobs wait to be committed:
    /// background work (the scrub) steps aside then.
    pub(crate) fn busy(&self) -> bool {
        self.counters.requests.load(Ordering::Relaxed) > 0
            || self.counters.in_flight.load(Ordering::Relaxed) > 0
            || !self
                .pending
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .is_empty()
            || !self
                .inflight
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .is_empty()
    }

    /// Makes sure the blob `key` of `size` bytes is cached, fetching it from `source` (a
    /// reference entry's URI) or, without one, from the upstream; the bytes are checked
    /// against `key` either way. An upstream that serves files only by path (W&B) cannot
    /// be asked for a blob: that is an error, and the next request of a version naming the
    /// blob fetches it. A request that fetches many small blobs `gather`s them: the
    /// upstream's are asked for in batches (`gather.rs`). Returns the bytes this fetch (or
    /// the concurrent one it joined) downloaded, `None` if nothing had to be.
    pub(crate) async fn ensure_from(
        self: &Arc<Self>,
        key: BlobKey,
        size: u64,
        source: Option<Arc<dyn BlobSource>>,
        receiving: Option<&Receiving>,
        batch: Option<&Arc<RequestBatch>>,
        gather: bool,
    ) -> Result<Option<u64>, ApiError> {
        // Only the upstream's blobs go through the tier: a reference entry's bytes are
        // fetched from where the entry says, for whom the reference policy allows.
        let tiered = source.is_none();
        let Some(source) = source.or_else(|| self.blobs.clone()) else {
            return Err(ApiError::new(
                http::StatusCode::CONFLICT,
                "not-cached",
                format!(
                    "blob `{key}`: the upstream serves files by path, not by digest; the next request of a version naming it fetches it"
                ),
            ));
        };
        let this = self.clone();
        let receiving = receiving.cloned();
        let batch = batch.cloned();
        self.coalesced(
            |f| &f.inflight,
            key,
            Option::clone,
            move || {
                let (this, source, batch) = (this.clone(), source.clone(), batch.clone());
                let tally = receiving.as_ref().map(Receiving::tally);
                let route = if tiered {
                    Route::Tiered(batch, gather)
                } else {
                    Route::Direct
                };
                async move { this.fetch(key, size, source, tally, route).await }
            },
        )
        .await
    }

    /// Fetches the cached blob `key` from `source` again and checks it, keeping nothing:
    /// the proof that `source` serves those bytes (see [`hoard_store::Store::proven`]).
    /// Returns the bytes downloaded.
    pub(crate) async fn prove(
        &self,
        key: BlobKey,
        size: u64,
        source: Arc<dyn BlobSource>,
    ) -> Result<u64, ApiError> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| ApiError::internal("the fetch engine is shutting down"))?;
        // The stream checks the size and digest of the whole blob before it ends.
        let mut stream = source.fetch_blob(&key.digest, size, None).await?;
        while stream.next_chunk().await?.is_some() {}
        self.counters
            .fetched_bytes
            .fetch_add(size, Ordering::Relaxed);
        Ok(size)
    }

    /// One fetch per key, however many callers wait for it: the first caller starts
    /// `start()` in a detached task (a caller that goes away does not cancel it) and
    /// registers it in the map `inflight` picks; later callers wait on the same channel.
    /// A fetch that staged bytes (`downloaded` says how many) keeps its entry until
    /// [`Self::commit_now`]; counters and failure kinds are recorded here.
    async fn coalesced<K, T, F>(
        self: &Arc<Self>,
        inflight: fn(&Self) -> &Inflight<K, T>,
        key: K,
        downloaded: fn(&T) -> Option<u64>,
        start: impl Fn() -> F,
    ) -> Result<T, ApiError>
    where
        K: std::hash::Hash + Eq + Clone + std::fmt::Display + Send + Sync + 'static,
        T: Clone + Send + Sync + 'static,
        F: std::future::Future<Output = Result<T, ApiError>> + Send + 'static,
    {
        // A caller that joined a fetch already under way and is told its bytes were wrong
        // starts one of its own: those bytes arrived before it asked (a proxy that has
        // healed since, say), and must not fail it.
        let (result, joined) = self
            .coalesced_once(inflight, key.clone(), downloaded, &start)
            .await;
        match result {
            Err(e) if joined && e.kind == "upstream-invalid" => {
                tracing::debug!(%key, error = %e, "a fetch this call joined got wrong bytes; fetching anew");
                self.coalesced_once(inflight, key, downloaded, &start)
                    .await
                    .0
            }
            other => other,
        }
    }

    /// One round of [`Self::coalesced`]: the outcome, and whether this caller joined a
    /// fetch it did not start.
    async fn coalesced_once<K, T, F>(
        self: &Arc<Self>,
        inflight: fn(&Self) -> &Inflight<K, T>,
        key: K,
        downloaded: fn(&T) -> Option<u64>,
        start: &impl Fn() -> F,
    ) -> (Result<T, ApiError>, bool)
    where
        K: std::hash::Hash + Eq + Clone + std::fmt::Display + Send + Sync + 'static,
        T: Clone + Send + Sync + 'static,
        F: std::future::Future<Output = Result<T, ApiError>> + Send + 'static,
    {
        let mut joined = false;
        let mut outcome = {
            let mut map = inflight(self)
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if let Some(existing) = map.get(&key) {
                joined = true;
                existing.clone()
            } else {
                let (tx, rx) = watch::channel(None);
                map.insert(key.clone(), rx.clone());
                let (this, work, key) = (self.clone(), start(), key.clone());
                tokio::spawn(async move {
                    let started = std::time::Instant::now();
                    let result = work.await;
                    let fetched = result.as_ref().ok().and_then(downloaded);
                    if let Some(bytes) = fetched {
                        this.counters.seconds.observe(started.elapsed());
                        this.counters.fetched_blobs.fetch_add(1, Ordering::Relaxed);
                        this.counters
                            .fetched_bytes
                            .fetch_add(bytes, Ordering::Relaxed);
                    }
                    if let Err(e) = &result
                        && e.kind != tier::TIER_MISS
                    {
                        this.counters.failed.fetch_add(1, Ordering::Relaxed);
                        *this
                            .counters
                            .failures
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .entry(e.kind)
                            .or_default() += 1;
                        tracing::warn!(%key, error = %e, "fetch failed");
                    }
                    // A staged blob keeps its entry until it is committed; any other ends
                    // it before the waiters hear, so that none of them joins it again.
                    if fetched.is_none() {
                        inflight(&this)
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .remove(&key);
                    }
                    let _ = tx.send(Some(result));
                });
                rx
            }
        };
        let result = match outcome.wait_for(Option::is_some).await {
            Ok(done) => done
                .clone()
                .unwrap_or_else(|| Err(ApiError::internal("unreachable: waited for an outcome"))),
            Err(_) => Err(ApiError::internal(format!("the fetch of `{key}` was lost"))),
        };
        (result, joined)
    }

    async fn fetch(
        &self,
        key: BlobKey,
        size: u64,
        upstream: Arc<dyn BlobSource>,
        tally: Option<Tally>,
        route: Route,
    ) -> Result<Option<u64>, ApiError> {
        let tally = tally.map(Arc::new);
        let permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| ApiError::internal("the fetch engine is shutting down"))?;
        let gathered =
            matches!(route, Route::Tiered(_, true)) && size <= GATHER_MAX && self.gather.is_some();
        self.counters.in_flight.fetch_add(1, Ordering::Relaxed);
        // Boxed, and only with a tier: the tier's calls (leases, listings) make a future
        // of tens of KiB, which every fetch task would carry inline otherwise (measured:
        // 20 MiB more peak RSS in a cold fetch of 20,000 files, with no tier at all).
        let plan = if let Route::Tiered(batch, _) = route
            && self.tier.is_some()
        {
            match Box::pin(self.ask_tier(key, size, tally.clone(), batch.as_deref())).await {
                tier::Via::Tier(staged) => {
                    self.counters.in_flight.fetch_sub(1, Ordering::Relaxed);
                    return Ok(self.stage(staged));
                }
                tier::Via::Upstream(plan) => plan,
            }
        } else {
            tier::Plan::default()
        };
        // A batch holds its blobs' place: the gatherer bounds its own requests.
        let _permit = (!gathered).then_some(permit);
        let staged = self
            .until_right_bytes(&key, || {
                self.attempt(key, size, upstream.clone(), tally.clone(), gathered)
            })
            .await;
        self.counters.in_flight.fetch_sub(1, Ordering::Relaxed);
        match staged {
            Ok(None) => {
                self.let_go(plan);
                Ok(None)
            }
            Ok(staged) => {
                // Offered before it is staged: whichever commit takes it hands the offer on.
                let leased = self.keep_offer(key, size, None, plan);
                let fetched = self.stage(staged);
                if leased && let Err(e) = self.commit_now().await {
                    tracing::warn!(%key, error = %e, "cannot commit a leased blob");
                }
                Ok(fetched)
            }
            Err(e) => {
                self.let_go(plan);
                Err(e)
            }
        }
    }

    /// Runs `attempt` again while it finds wrong bytes, [`ATTEMPTS`] times at most. Wrong
    /// bytes (a flipped bit, a body short but complete) may be a bad proxy or NIC of the
    /// moment: they are thrown away, never resumed from, and asked for again.
    async fn until_right_bytes<T, F>(
        &self,
        what: &(impl std::fmt::Display + ?Sized),
        mut attempt: impl FnMut() -> F,
    ) -> Result<T, ApiError>
    where
        F: std::future::Future<Output = Result<T, ApiError>>,
    {
        let mut tried = 1;
        loop {
            match attempt().await {
                Err(e) if e.kind == "upstream-invalid" && tried < ATTEMPTS => {
                    tracing::warn!(%what, attempt = tried, error = %e, "wrong bytes from the upstream; fetching them again");
                    self.counters.refetched.fetch_add(1, Ordering::Relaxed);
                    tried += 1;
                }
                other => return other,
            }
        }
    }

    /// One attempt at a blob from `source`, by its size; `gathered` in a batch request.
    async fn attempt(
        &self,
        key: BlobKey,
        size: u64,
        source: Arc<dyn BlobSource>,
        tally: Option<Arc<Tally>>,
        gathered: bool,
    ) -> Result<Option<(Staged, u64)>, ApiError> {
        if let Some(tally) = &tally {
            tally.reset();
        }
        if size <= SMALL_BLOB {
            self.fetch_small(key, size, source.as_ref(), gathered).await
        } else {
            self.fetch_streaming(key, size, source, tally).await
        }
    }

    /// Keeps a staged blob for the next commit: the bytes it took.
    fn stage(&self, staged: Option<(Staged, u64)>) -> Option<u64> {
        let (staged, fetched) = staged?;
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(staged);
        Some(fetched)
    }

    /// Makes every staged blob durable and indexed (one `syncfs`, one index batch). Call
    /// after [`Self::ensure_from`] and before using the blobs.
    pub(crate) async fn commit_now(&self) -> Result<(), ApiError> {
        let _turn = self.commit_turn.lock().await;
        let batch =
            std::mem::take(&mut *self.pending.lock().unwrap_or_else(PoisonError::into_inner));
        if batch.is_empty() {
            return Ok(());
        }
        let keys: Vec<BlobKey> = batch.iter().map(|s| s.ingested.key).collect();
        let foreign: Vec<ForeignDigest> =
            batch.iter().filter_map(|s| s.foreign().cloned()).collect();
        let store = self.store.clone();
        let result = tokio::task::spawn_blocking(move || store.commit_staged(&batch))
            .await
            .map_err(|e| ApiError::internal(format!("the commit task failed: {e}")))
            .and_then(|r| r.map_err(ApiError::from));
        self.hand_offers(&keys, result.is_ok());
        // Either way the entries go: committed blobs are in the index; after a failed
        // commit the files are in place without rows, and the next fetch adopts them.
        let mut inflight = self.inflight.lock().unwrap_or_else(PoisonError::into_inner);
        for key in keys {
            inflight.remove(&key);
        }
        drop(inflight);
        if !foreign.is_empty() {
            let foreign: std::collections::HashSet<ForeignDigest> = foreign.into_iter().collect();
            self.inflight_foreign
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .retain(|key, _| !foreign.contains(&key.digest));
        }
        result
    }

    /// Makes sure the file the upstream calls `digest` (of `size` bytes) is cached,
    /// fetching it whole from the tier (when it knows the file within `project`) or from
    /// `source`, checked against `digest` while it is hashed with blake3; the blob is
    /// mapped to `digest` when it is committed. Returns the blob and the bytes downloaded.
    /// Concurrent calls for one digest within `project` share one fetch. Without a
    /// `source`, only the tier is asked: an error of kind [`tier::TIER_MISS`] says it
    /// lacked the file.
    pub(crate) async fn ensure_foreign(
        self: &Arc<Self>,
        digest: ForeignDigest,
        project: Arc<str>,
        size: u64,
        source: Option<Arc<dyn FileSource>>,
        receiving: Option<&Receiving>,
    ) -> Result<(BlobKey, Option<u64>), ApiError> {
        let this = self.clone();
        let key = ForeignKey {
            digest: digest.clone(),
            project: project.clone(),
        };
        let receiving = receiving.cloned();
        let start = move || {
            let (this, digest, source) = (this.clone(), digest.clone(), source.clone());
            let project = project.clone();
            let tally = receiving.as_ref().map(|r| Arc::new(r.tally()));
            async move {
                this.fetch_foreign(&digest, &project, size, source, tally)
                    .await
            }
        };
        self.coalesced(|f| &f.inflight_foreign, key, |(_, bytes)| *bytes, start)
            .await
    }

    /// Streams a file checked against its foreign digest into a new blob and stages it
    /// (mapped to that digest); bytes that do not check out are fetched again, up to
    /// [`ATTEMPTS`] times.
    async fn fetch_foreign(
        &self,
        digest: &ForeignDigest,
        project: &Arc<str>,
        size: u64,
        source: Option<Arc<dyn FileSource>>,
        tally: Option<Arc<Tally>>,
    ) -> Result<(BlobKey, Option<u64>), ApiError> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| ApiError::internal("the fetch engine is shutting down"))?;
        self.counters.in_flight.fetch_add(1, Ordering::Relaxed);
        let from_tier = if self.tier.is_some() {
            Box::pin(self.foreign_from_tier(digest, project, size, tally.clone())).await
        } else {
            None
        };
        if let Some(staged) = from_tier {
            self.counters.in_flight.fetch_sub(1, Ordering::Relaxed);
            let key = staged.ingested.key;
            self.pending
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(staged.with_foreign(digest.clone()));
            return Ok((key, Some(size)));
        }
        let Some(source) = source else {
            self.counters.in_flight.fetch_sub(1, Ordering::Relaxed);
            return Err(tier::tier_miss(digest));
        };
        let result = self
            .until_right_bytes(digest, || {
                let store = self.store.clone();
                let source = source.clone();
                let handle = tokio::runtime::Handle::current();
                let ranges = self.ranges;
                if let Some(tally) = &tally {
                    tally.reset();
                }
                let tally = tally.clone();
                let task = tokio::task::spawn_blocking(move || {
                    let tally = tally.as_deref();
                    if size >= ranges.threshold
                        && let Some(claimed) = source.whole()
                    {
                        return fetch_foreign_parts(
                            &store,
                            source.as_ref(),
                            &handle,
                            size,
                            ranges,
                            &claimed,
                            tally,
                        );
                    }
                    store.room_for(&source.describe(), size)?;
                    let mut stream = handle.block_on(source.fetch_foreign())?;
                    let mut writer = store.writer(false, None)?;
                    while let Some(chunk) = handle.block_on(stream.next_chunk())? {
                        writer.write(&chunk)?;
                        count(tally, chunk.len());
                    }
                    Ok::<_, ApiError>(writer.finish_staged()?)
                });
                async {
                    task.await.unwrap_or_else(|e| {
                        Err(ApiError::internal(format!("the fetch task failed: {e}")))
                    })
                }
            })
            .await;
        self.counters.in_flight.fetch_sub(1, Ordering::Relaxed);
        let staged = result?.with_foreign(digest.clone());
        let key = staged.ingested.key;
        self.keep_offer(
            key,
            size,
            Some((digest.clone(), project.clone())),
            tier::Plan::default(),
        );
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(staged);
        // Downloaded even when the bytes turn out to be cached already (from an upstream
        // that does not name them by this digest).
        Ok((key, Some(size)))
    }

    /// A small blob: fetched into memory on the runtime (verified by its stream), then
    /// written in one blocking call. Streaming it through a blocking thread cost two
    /// thread hand-offs per chunk; profiling a cold fetch of 5,000 small files showed a
    /// quarter of the daemon's time in context switches.
    async fn fetch_small(
        &self,
        key: BlobKey,
        size: u64,
        upstream: &dyn BlobSource,
        gathered: bool,
    ) -> Result<Option<(Staged, u64)>, ApiError> {
        let batched = match &self.gather {
            Some(gather) if gathered => gather.get(key.digest, size).await,
            _ => gather::Answer::Alone,
        };
        let data = match batched {
            gather::Answer::Blob(bytes) => bytes,
            gather::Answer::Wrong(e) => return Err(e),
            gather::Answer::Alone => self.fetch_alone(key, size, upstream, gathered).await?,
        };
        let store = self.store.clone();
        let write = move || {
            let writer = store.writer(key.exec, Some((key.digest, size)))?;
            Ok(Some((writer.stage_checked(&data, key.digest)?, size)))
        };
        if size <= INLINE_WRITE {
            return write();
        }
        tokio::task::spawn_blocking(write)
            .await
            .unwrap_or_else(|e| Err(ApiError::internal(format!("the fetch task failed: {e}"))))
    }

    /// A small blob's bytes in a request of its own. One that was to be gathered (and was
    /// not delivered) takes a place among the fetches first, as any fetch does.
    async fn fetch_alone(
        &self,
        key: BlobKey,
        size: u64,
        upstream: &dyn BlobSource,
        gathered: bool,
    ) -> Result<bytes::Bytes, ApiError> {
        let _permit = if gathered {
            let permit = self.permits.acquire().await;
            Some(permit.map_err(|_| ApiError::internal("the fetch engine is shutting down"))?)
        } else {
            None
        };
        // The stream checks the size and digest of the whole blob before it ends.
        let data = upstream
            .fetch_blob(&key.digest, size, None)
            .await?
            .read_to_vec()
            .await?;
        Ok(data.into())
    }

    /// A larger blob: streamed to disk from a blocking thread, resuming a partial, or as
    /// parallel ranges when it is large.
    async fn fetch_streaming(
        &self,
        key: BlobKey,
        size: u64,
        upstream: Arc<dyn BlobSource>,
        tally: Option<Arc<Tally>>,
    ) -> Result<Option<(Staged, u64)>, ApiError> {
        let (store, ranges) = (self.store.clone(), self.ranges);
        let handle = tokio::runtime::Handle::current();
        tokio::task::spawn_blocking(move || {
            let (upstream, tally) = (upstream.as_ref(), tally.as_deref());
            // A resumed partial can hold bad bytes (from a source that sent them before it
            // broke off); the check at the end removes it, and one fresh attempt follows.
            if size >= ranges.threshold {
                return fetch_ranges(&store, upstream, &handle, key, size, ranges, tally);
            }
            match fetch_blocking(&store, upstream, &handle, key, size, tally) {
                Err(Retry::Fresh) => {
                    if let Some(tally) = tally {
                        tally.reset();
                    }
                    fetch_blocking(&store, upstream, &handle, key, size, tally)
                        .map_err(Retry::into_error)
                }
                other => other.map_err(Retry::into_error),
            }
        })
        .await
        .unwrap_or_else(|e| Err(ApiError::internal(format!("the fetch task failed: {e}"))))
    }
}

/// Why one attempt at a fetch failed.
enum Retry {
    /// A resumed partial did not check out and is gone: try once more from the start.
    Fresh,
    Fail(ApiError),
}

impl Retry {
    fn into_error(self) -> ApiError {
        match self {
            Self::Fresh => ApiError::internal("a fetch failed twice"),
            Self::Fail(e) => e,
        }
    }
}

impl<E: Into<ApiError>> From<E> for Retry {
    fn from(e: E) -> Self {
        Self::Fail(e.into())
    }
}

/// One attempt: writes the blob's missing bytes (resuming a partial) and stages it. Bytes
/// the upstream got wrong are discarded, never left to be resumed from.
fn fetch_blocking(
    store: &Store,
    upstream: &dyn BlobSource,
    handle: &tokio::runtime::Handle,
    key: BlobKey,
    size: u64,
    tally: Option<&Tally>,
) -> Result<Option<(Staged, u64)>, Retry> {
    let mut writer = match store.begin(key, size)? {
        Begin::Present(_) => return Ok(None),
        Begin::Write(writer) => writer,
    };
    let offset = writer.offset();
    if offset < size {
        let range = (offset > 0).then_some(offset..size);
        let mut stream = handle.block_on(upstream.fetch_blob(&key.digest, size, range))?;
        loop {
            match handle.block_on(stream.next_chunk()) {
                Ok(Some(chunk)) => {
                    writer.write(&chunk)?;
                    count(tally, chunk.len());
                }
                Ok(None) => break,
                Err(
                    e @ (hoard_upstream::Error::DigestMismatch { .. }
                    | hoard_upstream::Error::LongBody { .. }),
                ) => {
                    writer.discard();
                    return Err(e.into());
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
    match writer.finish_staged() {
        Ok(staged) => Ok(Some((staged, size - offset))),
        Err(
            hoard_store::Error::DigestMismatch { .. } | hoard_store::Error::SizeMismatch { .. },
        ) if offset > 0 => {
            tracing::warn!(%key, offset, "a resumed partial did not check out; fetching it again");
            Err(Retry::Fresh)
        }
        Err(e) => Err(e.into()),
    }
}

/// A large blob as parallel byte ranges into one file, each range hashed as it arrives;
/// the parts a crashed or failed earlier attempt completed are not fetched again (see
/// [`hoard_store::PartedWriter`]).
fn fetch_ranges(
    store: &Store,
    upstream: &dyn BlobSource,
    handle: &tokio::runtime::Handle,
    key: BlobKey,
    size: u64,
    ranges: Ranges,
    tally: Option<&Tally>,
) -> Result<Option<(Staged, u64)>, ApiError> {
    if store.missing(&[key])?.is_empty() {
        return Ok(None);
    }
    // Parts must be a power of two long for their hashes to combine (see
    // `hoard_store::PartedWriter`): the configured range size, rounded down.
    let step = 1u64 << ranges.size.max(1 << 20).ilog2();
    let writer = store.parted_writer(key.exec, Some(key.digest), size, step)?;
    let writer = fill_parts(writer, handle, ranges.parallel, tally, |range| {
        upstream.fetch_blob(&key.digest, size, Some(range))
    })?;
    Ok(Some((writer.finish_staged()?, size)))
}

/// Fetches every part of `writer` still missing, `parallel` at a time, each with the
/// stream `open` gives for its range.
fn fill_parts<'s, 'u>(
    writer: hoard_store::PartedWriter<'s>,
    handle: &tokio::runtime::Handle,
    parallel: usize,
    tally: Option<&Tally>,
    open: impl Fn(
        std::ops::Range<u64>,
    ) -> hoard_upstream::BoxFuture<
        'u,
        Result<hoard_upstream::BlobStream, hoard_upstream::Error>,
    >,
) -> Result<hoard_store::PartedWriter<'s>, ApiError> {
    use futures_util::{StreamExt, TryStreamExt};
    let (writer_ref, open) = (&writer, &open);
    let fetched = handle.block_on(
        futures_util::stream::iter(writer.pending())
            .map(|(index, range)| async move {
                let mut part = writer_ref.part(index);
                let mut stream = open(range).await?;
                while let Some(chunk) = stream.next_chunk().await? {
                    part.write(&chunk)?;
                    count(tally, chunk.len());
                }
                part.finish()?;
                Ok::<_, ApiError>(())
            })
            .buffer_unordered(parallel.max(1))
            .try_collect::<()>(),
    );
    match fetched {
        Ok(()) => Ok(writer),
        // Wrong bytes go; parts that arrived whole stay for the next attempt (in this
        // process or after a restart) when the upstream only broke off.
        Err(e) if e.kind == "upstream-invalid" => {
            writer.discard();
            Err(e)
        }
        Err(e) => Err(e),
    }
}

/// A large file known only by a foreign digest (W&B's MD5, the Hub's SHA-256), as parallel
/// byte ranges into one private file (its blake3 digest merged from the parts' hashes),
/// then read back once to check that digest: neither can be computed from parts that
/// arrive out of order.
fn fetch_foreign_parts(
    store: &Store,
    source: &dyn FileSource,
    handle: &tokio::runtime::Handle,
    size: u64,
    ranges: Ranges,
    claimed: &ForeignDigest,
    tally: Option<&Tally>,
) -> Result<Staged, ApiError> {
    let step = 1u64 << ranges.size.max(1 << 20).ilog2();
    let writer = store.parted_writer(false, None, size, step)?;
    let writer = fill_parts(writer, handle, ranges.parallel, tally, |range| {
        source.fetch_part(range)
    })?;
    let mut check = ForeignCheck::new(claimed, size)
        .ok_or_else(|| ApiError::internal(format!("{claimed} cannot be checked from bytes")))?;
    writer.read_back(|bytes| check.update(bytes))?;
    let actual = check.finish();
    if actual != *claimed {
        writer.discard();
        return Err(hoard_upstream::Error::ForeignMismatch {
            blob: source.describe(),
            expected: claimed.to_string(),
            actual: actual.to_string(),
        }
        .into());
    }
    Ok(writer.finish_staged()?)
}
