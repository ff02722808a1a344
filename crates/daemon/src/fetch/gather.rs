//! Small blobs gathered into batch requests: a request that fetches many small blobs from
//! the upstream asks for them a few dozen at a time (`POST /v1/blobs/batch` of the hoard
//! registry; see [`hoard_upstream::BlobBatch`]) instead of one request each.
//!
//! Measured on a cold fetch of 20,000 small files from a local registry, the two HTTP
//! stacks (the daemon's client and the registry's server) took about a fifth of all CPU
//! time, request by request; a batch of [`BATCH_BLOBS`] pays that once.
//!
//! Each blob keeps its own fetch (coalescing, staging and the commit are unchanged): its
//! fetch waits here for its bytes instead of sending a request. Whoever queues a blob
//! while fewer than [`BATCHES`] batches are under way starts a sender, which takes what
//! has queued, asks for it in one request, hands each blob to its fetch as it arrives,
//! and takes the next batch until none is left. So the batches fill while others are
//! under way, with no timer to wait for.
//!
//! A batch is only a faster way to ask. A blob it does not deliver (the server lacks it
//! or says the caller may not read it, the answer broke off, the route is unknown) is
//! fetched alone, where the single-blob path's retries and error messages apply; wrong
//! bytes are wrong bytes either way, and fetched again. An upstream without the route
//! (a `dir://` root; a registry older than the route) is asked one blob at a time from
//! then on.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use hoard_types::Digest;
use hoard_upstream::{Batched, BlobSource, Error};
use tokio::sync::oneshot;

use crate::error::ApiError;

/// Blobs up to this size are gathered.
pub(crate) const GATHER_MAX: u64 = 256 << 10;

/// A request gathers its small blobs when it fetches at least this many: for fewer, a
/// request each costs little, and keeps each blob's own retries and resumption.
pub(crate) const GATHER_FROM: usize = 64;

/// Most blobs in one batch.
const BATCH_BLOBS: usize = 64;

/// Most bytes in one batch (the blobs a batch delivers wait in memory for their writes).
const BATCH_BYTES: u64 = 1 << 20;

/// Batches under way at once.
const BATCHES: usize = 4;

/// A sender that ends in a panic gives its place back and answers what is queued
/// (fetched alone), so that no blob waits for a sender that is gone.
struct OnPanic<'a>(&'a Gather);

impl Drop for OnPanic<'_> {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let queued = {
            let mut queue = self.0.queue.lock().unwrap_or_else(PoisonError::into_inner);
            queue.senders -= 1;
            std::mem::take(&mut queue.wants)
        };
        for want in queued {
            let _ = want.reply.send(Answer::Alone);
        }
    }
}

/// What a gathered blob's fetch is told.
pub(crate) enum Answer {
    /// The bytes; their length and digest checked out.
    Blob(Bytes),
    /// Wrong bytes: an attempt that failed like any other.
    Wrong(ApiError),
    /// Not delivered: fetch it alone.
    Alone,
}

struct Want {
    digest: Digest,
    size: u64,
    reply: oneshot::Sender<Answer>,
}

#[derive(Default)]
struct Queue {
    wants: VecDeque<Want>,
    /// Senders running.
    senders: usize,
    /// The upstream has no batch route: everything is fetched alone.
    unsupported: bool,
}

pub(crate) struct Gather {
    source: Arc<dyn BlobSource>,
    queue: Mutex<Queue>,
}

impl Gather {
    pub(crate) fn new(source: Arc<dyn BlobSource>) -> Arc<Self> {
        Arc::new(Self {
            source,
            queue: Mutex::default(),
        })
    }

    /// The blob `digest` of `size` bytes, asked for in a batch.
    pub(crate) async fn get(self: &Arc<Self>, digest: Digest, size: u64) -> Answer {
        let (reply, answer) = oneshot::channel();
        {
            let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
            if queue.unsupported {
                return Answer::Alone;
            }
            queue.wants.push_back(Want {
                digest,
                size,
                reply,
            });
            if queue.senders < BATCHES {
                queue.senders += 1;
                tokio::spawn(self.clone().send());
            }
        }
        answer.await.unwrap_or(Answer::Alone)
    }

    /// Sends batches until none is left to send.
    async fn send(self: Arc<Self>) {
        let _unwinding = OnPanic(&self);
        loop {
            let wants = {
                let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
                if queue.wants.is_empty() {
                    queue.senders -= 1;
                    return;
                }
                let mut bytes = 0;
                let mut wants = Vec::with_capacity(BATCH_BLOBS.min(queue.wants.len()));
                while let Some(want) = queue.wants.front()
                    && wants.len() < BATCH_BLOBS
                    && (wants.is_empty() || bytes + want.size <= BATCH_BYTES)
                {
                    bytes += want.size;
                    wants.extend(queue.wants.pop_front());
                }
                wants
            };
            self.batch(wants).await;
        }
    }

    /// One batch request, and each blob's answer.
    async fn batch(&self, wants: Vec<Want>) {
        let asked = wants.iter().map(|w| (w.digest, w.size)).collect();
        let opened = match self.source.fetch_batch(asked) {
            Some(opening) => opening.await,
            None => Err(Error::Unsupported {
                what: "batch requests".to_owned(),
            }),
        };
        let mut batch = match opened {
            Ok(batch) => batch,
            Err(e) => {
                if matches!(
                    e,
                    Error::Unsupported { .. }
                        | Error::NotFound { .. }
                        | Error::Rejected { status: 405, .. }
                ) {
                    self.unsupported(&e);
                } else {
                    tracing::debug!(error = %e, "a batch request failed; its blobs are fetched alone");
                }
                for want in wants {
                    let _ = want.reply.send(Answer::Alone);
                }
                return;
            }
        };
        let mut wants = wants.into_iter();
        for want in wants.by_ref() {
            let answer = match batch.next_blob().await {
                Ok(Some(Batched::Blob(bytes))) => Answer::Blob(bytes),
                Ok(Some(Batched::Wrong(e))) => Answer::Wrong(e.into()),
                Ok(Some(Batched::Absent) | None) => Answer::Alone,
                Err(e) => {
                    tracing::debug!(error = %e, "a batch answer broke off; the rest of its blobs are fetched alone");
                    let _ = want.reply.send(Answer::Alone);
                    break;
                }
            };
            let _ = want.reply.send(answer);
        }
        for want in wants {
            let _ = want.reply.send(Answer::Alone);
        }
    }

    /// From now on every blob is fetched alone, and so is everything queued.
    fn unsupported(&self, why: &Error) {
        let queued = {
            let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
            if !queue.unsupported && !matches!(why, Error::Unsupported { .. }) {
                tracing::info!(upstream = %self.source.describe(), reason = %why, "the upstream takes no batch requests; small blobs are fetched one by one");
            }
            queue.unsupported = true;
            std::mem::take(&mut queue.wants)
        };
        for want in queued {
            let _ = want.reply.send(Answer::Alone);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::ops::Range;

    use hoard_upstream::{BlobBatch, BlobStream, BoxFuture};

    use super::*;

    /// A source whose batch requests panic.
    struct Panicking;

    impl BlobSource for Panicking {
        fn describe(&self) -> String {
            "panicking".into()
        }

        fn fetch_blob<'a>(
            &'a self,
            _digest: &'a Digest,
            _size: u64,
            _range: Option<Range<u64>>,
        ) -> BoxFuture<'a, Result<BlobStream, Error>> {
            Box::pin(async {
                Err(Error::Unsupported {
                    what: "blobs".into(),
                })
            })
        }

        fn fetch_batch(
            &self,
            _blobs: Vec<(Digest, u64)>,
        ) -> Option<BoxFuture<'_, Result<BlobBatch, Error>>> {
            panic!("a sender's bug");
        }
    }

    #[tokio::test]
    async fn a_sender_that_panics_leaves_no_blob_waiting() {
        let gather = Gather::new(Arc::new(Panicking));
        for round in 0..6 {
            let asks = (0..20u8).map(|i| gather.get(Digest::of(&[round, i]), 1));
            let answers = tokio::time::timeout(
                std::time::Duration::from_secs(10),
                futures_util::future::join_all(asks),
            )
            .await
            .expect("every blob is answered");
            assert!(answers.iter().all(|a| matches!(a, Answer::Alone)));
        }
        assert_eq!(
            gather
                .queue
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .senders,
            0,
            "the senders gave their places back"
        );
    }
}
