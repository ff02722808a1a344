//! The background scrub: every blob re-hashed at a bounded I/O rate, so that bytes that
//! rotted on disk (their metadata intact, which the per-request tamper check cannot see)
//! are found and fetched again within one pass: the cache's size divided by the rate.
//!
//! On by default at [`DEFAULT_RATE`] (`scrub_rate` in `hoard.toml`, `--scrub-rate`; `off`
//! turns it off): a 1 TB cache is read once every 17 hours or so of the daemon's idle
//! time, at a rate a disk serves beside its jobs. It steps aside while the daemon fetches
//! anything or a request is under way. A pass walks the blobs in key order. A bad blob is quarantined, counted as tampered, and fetched again by
//! digest where the upstream serves blobs by digest (W&B files are fetched again by the
//! next get that needs them). A pass pauses as long as it took (1 s to a minute) before
//! the next.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use hoard_store::Store;

use crate::fetch::Fetcher;

/// Bytes per second re-hashed by default.
pub(crate) const DEFAULT_RATE: u64 = 16 << 20;

/// The longest pause between two passes: as long as the last pass took, within 1 s and
/// this (the rate bounds the reading either way).
const BETWEEN_PASSES: Duration = Duration::from_secs(60);

/// What the scrub has done, for `status` and `/metrics`.
#[derive(Debug, Default)]
pub(crate) struct Scrub {
    /// Bytes per second; 0: off.
    rate: u64,
    pub(crate) bytes: AtomicU64,
    pub(crate) bad: AtomicU64,
    pub(crate) repaired: AtomicU64,
    progress: Mutex<Progress>,
}

#[derive(Debug, Default)]
struct Progress {
    passes: u64,
    /// Of the pass under way: blobs checked and in all.
    done: u64,
    total: u64,
    last_pass: Option<Instant>,
}

impl Scrub {
    /// Starts scrubbing `store` at `rate` bytes per second (`None`: off), fetching bad
    /// blobs again through `fetcher`. Call inside a tokio runtime. The scrub has a thread
    /// of its own, with one read buffer: paced reads on the runtime's blocking pool kept
    /// threads (and their allocator arenas) busy that gets then had to add.
    pub(crate) fn start(store: Arc<Store>, fetcher: Arc<Fetcher>, rate: Option<u64>) -> Arc<Self> {
        let scrub = Arc::new(Self {
            rate: rate.unwrap_or(0),
            ..Self::default()
        });
        if let Some(rate) = rate.filter(|r| *r > 0) {
            let (running, handle) = (scrub.clone(), tokio::runtime::Handle::current());
            let spawned = std::thread::Builder::new()
                .name("hoard-scrub".into())
                .spawn(move || {
                    let mut buf = vec![0; 1 << 20];
                    loop {
                        let started = Instant::now();
                        if let Err(e) = running.pass(&store, &fetcher, &handle, rate, &mut buf) {
                            tracing::warn!(error = %crate::error::chain(&e), "the scrub pass stopped; it starts again later");
                        }
                        let pause = started
                            .elapsed()
                            .clamp(Duration::from_secs(1), BETWEEN_PASSES);
                        std::thread::sleep(pause);
                    }
                });
            if let Err(e) = spawned {
                tracing::error!(error = %e, "cannot start the scrub");
            }
        }
        scrub
    }

    fn pass(
        &self,
        store: &Store,
        fetcher: &Arc<Fetcher>,
        handle: &tokio::runtime::Handle,
        rate: u64,
        buf: &mut [u8],
    ) -> hoard_store::Result<()> {
        let keys = store.blob_keys()?;
        self.set(|p| {
            p.done = 0;
            p.total = keys.len() as u64;
        });
        let mut pacer = Pacer::new(rate);
        for (key, _) in keys {
            // Gets come first: the scrub reads only while nothing is being fetched or
            // materialized (a cold fetch of 20,000 files took 40% longer beside it).
            while fetcher.busy() {
                std::thread::sleep(Duration::from_millis(250));
                pacer = Pacer::new(rate);
            }
            let mut read = 0;
            let bad = store.scrub_blob(&key, buf, &mut |n| {
                read += n;
                pacer.spend(n);
            })?;
            self.bytes.fetch_add(read, Ordering::Relaxed);
            self.set(|p| p.done += 1);
            if let Some(bad) = bad {
                self.bad.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(key = %bad.key, why = bad.why, "scrub: a blob rotted; fetching it again");
                let repaired = handle.block_on(async {
                    fetcher
                        .ensure_from(bad.key, bad.size, None, None, None, false)
                        .await?;
                    fetcher.commit_now().await
                });
                match repaired {
                    Ok(()) => {
                        self.repaired.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        tracing::warn!(key = %bad.key, error = %e.detail, "scrub: cannot fetch it again now; the next get will");
                    }
                }
            }
        }
        self.set(|p| {
            p.passes += 1;
            p.last_pass = Some(Instant::now());
        });
        Ok(())
    }

    fn set(&self, change: impl FnOnce(&mut Progress)) {
        change(&mut self.progress.lock().unwrap_or_else(PoisonError::into_inner));
    }

    /// `off`, or the rate, the pass under way and what it found.
    pub(crate) fn describe(&self, cache_bytes: u64) -> String {
        if self.rate == 0 {
            return "off".to_owned();
        }
        let p = self.progress.lock().unwrap_or_else(PoisonError::into_inner);
        let pass_time = Duration::from_secs(cache_bytes / self.rate.max(1));
        let mut text = format!(
            "{}/s, a pass takes about {}; pass {} at {}/{} blobs",
            hoard_types::human_bytes(self.rate),
            humantime::format_duration(pass_time),
            p.passes + 1,
            p.done,
            p.total
        );
        if let Some(at) = p.last_pass {
            let _ = write!(text, "; last pass ended {} s ago", at.elapsed().as_secs());
        }
        let (bad, repaired) = (
            self.bad.load(Ordering::Relaxed),
            self.repaired.load(Ordering::Relaxed),
        );
        if bad > 0 {
            let _ = write!(text, "; {bad} bad blob(s) found, {repaired} fetched again");
        }
        text
    }
}

/// Keeps reads at `rate` bytes per second on average, by sleeping the reading thread.
struct Pacer {
    rate: u64,
    started: Instant,
    spent: u64,
}

impl Pacer {
    fn new(rate: u64) -> Self {
        Self {
            rate,
            started: Instant::now(),
            spent: 0,
        }
    }

    fn spend(&mut self, bytes: u64) {
        self.spent += bytes;
        #[expect(clippy::cast_precision_loss, reason = "seconds of a pace")]
        let due = Duration::from_secs_f64(self.spent as f64 / self.rate as f64);
        if let Some(ahead) = due.checked_sub(self.started.elapsed()) {
            std::thread::sleep(ahead);
        }
    }
}
