//! The fetch engine: each missing blob is fetched from the upstream once, however many
//! requests (from however many clients) need it at the same time.
//!
//! The first caller for a blob starts a detached task and registers a `watch` channel;
//! later callers wait on the same channel. The task is not tied to any request, so a client
//! that disconnects does not cancel a fetch others wait for (it also finishes a fetch that
//! nobody waits for any more: the bytes are wanted). A semaphore bounds concurrent
//! fetches. Bytes go through the store's [`hoard_store::BlobWriter`] (verified, then made
//! visible) on the blocking pool; a broken fetch leaves a resumable partial that the next
//! attempt continues.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use hoard_store::{Begin, BlobKey, Store};
use hoard_upstream::Upstream;
use tokio::sync::{Semaphore, watch};

use crate::error::ApiError;

/// What a finished fetch tells everyone who waited: the bytes downloaded (`None` if the
/// blob turned out to be cached already), or why it failed.
type Outcome = Option<Result<Option<u64>, ApiError>>;

/// Counters for `status` and `/metrics`.
#[derive(Debug, Default)]
pub(crate) struct FetchCounters {
    pub(crate) fetched_blobs: AtomicU64,
    pub(crate) fetched_bytes: AtomicU64,
    pub(crate) failed: AtomicU64,
    pub(crate) in_flight: AtomicU64,
}

pub(crate) struct Fetcher {
    store: Arc<Store>,
    upstream: Arc<dyn Upstream>,
    permits: Arc<Semaphore>,
    inflight: Mutex<HashMap<BlobKey, watch::Receiver<Outcome>>>,
    pub(crate) counters: FetchCounters,
}

impl Fetcher {
    pub(crate) fn new(store: Arc<Store>, upstream: Arc<dyn Upstream>, concurrency: usize) -> Self {
        Self {
            store,
            upstream,
            permits: Arc::new(Semaphore::new(concurrency.max(1))),
            inflight: Mutex::default(),
            counters: FetchCounters::default(),
        }
    }

    pub(crate) fn upstream(&self) -> &Arc<dyn Upstream> {
        &self.upstream
    }

    /// Makes sure the blob `key` of `size` bytes is cached. Returns the bytes this fetch
    /// (or the concurrent one it joined) downloaded, `None` if nothing had to be.
    pub(crate) async fn ensure(
        self: &Arc<Self>,
        key: BlobKey,
        size: u64,
    ) -> Result<Option<u64>, ApiError> {
        let mut outcome = {
            let mut inflight = self.inflight.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(existing) = inflight.get(&key) {
                existing.clone()
            } else {
                let (tx, rx) = watch::channel(None);
                inflight.insert(key, rx.clone());
                let this = self.clone();
                tokio::spawn(async move {
                    let result = this.fetch(key, size).await;
                    match &result {
                        Ok(Some(bytes)) => {
                            this.counters.fetched_blobs.fetch_add(1, Ordering::Relaxed);
                            this.counters
                                .fetched_bytes
                                .fetch_add(*bytes, Ordering::Relaxed);
                        }
                        Ok(None) => {}
                        Err(e) => {
                            this.counters.failed.fetch_add(1, Ordering::Relaxed);
                            tracing::warn!(%key, error = %e, "fetch failed");
                        }
                    }
                    let _ = tx.send(Some(result));
                    this.inflight
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .remove(&key);
                });
                rx
            }
        };
        let done = outcome
            .wait_for(Option::is_some)
            .await
            .map_err(|_| ApiError::internal(format!("the fetch of blob `{key}` was lost")))?;
        done.clone()
            .unwrap_or_else(|| Err(ApiError::internal("unreachable: waited for an outcome")))
    }

    async fn fetch(&self, key: BlobKey, size: u64) -> Result<Option<u64>, ApiError> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| ApiError::internal("the fetch engine is shutting down"))?;
        self.counters.in_flight.fetch_add(1, Ordering::Relaxed);
        let (store, upstream) = (self.store.clone(), self.upstream.clone());
        let handle = tokio::runtime::Handle::current();
        let result = tokio::task::spawn_blocking(move || -> Result<Option<u64>, ApiError> {
            let mut writer = match store.begin(key, size)? {
                Begin::Present(_) => return Ok(None),
                Begin::Write(writer) => writer,
            };
            let offset = writer.offset();
            if offset < size {
                let range = (offset > 0).then_some(offset..size);
                let mut stream = handle.block_on(upstream.fetch_blob(&key.digest, size, range))?;
                while let Some(chunk) = handle.block_on(stream.next_chunk())? {
                    writer.write(&chunk)?;
                }
            }
            writer.finish()?;
            Ok(Some(size - offset))
        })
        .await
        .unwrap_or_else(|e| Err(ApiError::internal(format!("the fetch task failed: {e}"))));
        self.counters.in_flight.fetch_sub(1, Ordering::Relaxed);
        result
    }
}
