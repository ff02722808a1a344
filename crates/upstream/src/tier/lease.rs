//! One upstream download per blob across the fleet: leases, elected by listing.
//!
//! A box that misses a blob in the tier writes its own lease object,
//! `leases-v1/<digest>/<unix ms>-<box>`, then lists that digest's leases. The live lease
//! with the smallest time (then box id) wins, once a second listing, a moment later,
//! still says so (a box whose lease is older may have been writing it during the first
//! listing: measured with eight boxes at once, without it two boxes won one blob in one
//! run of six). The winner downloads the blob from the
//! upstream and uploads it; the others poll the tier (with backoff) until the blob
//! appears, and read it from there. A lease lives for a time sized to the blob
//! ([`ttl`]); one whose box died expires, and the next lease in order wins. Nothing here
//! needs `If-None-Match` (Garage 2.5 ignores it), only a listing that shows a PUT that
//! has been answered, which S3, `MinIO`, Ceph RGW and Garage all give.
//!
//! A request's small blobs (up to 1 MiB each, where a lease per blob would cost more than
//! the blob) are claimed as one batch ([`Tier::claim_batch`]): the boxes that miss the
//! same blobs elect one to fetch them, and the others read each from the tier once it
//! lands, while the winner's lease lives.
//!
//! Correctness never rests on it: two boxes that both think they won (clocks far apart,
//! a listing that lags) download the same bytes twice, which content addressing makes
//! harmless. Leases from the future (beyond [`SKEW`]) and keys that do not parse are
//! ignored.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use hoard_types::{Digest, now_ms};

use super::Tier;
use super::s3::Body;

/// How far ahead of this box's clock a lease may be and still count.
const SKEW: u64 = 60_000;

/// How long a lease lives after it was last written (by the store's clock, as listed).
const TTL: u64 = 30_000;

/// How often a box rewrites the leases it holds while it works.
const RENEW: Duration = Duration::from_secs(10);

/// How long a box waits for another's download of a blob of `size` bytes at most, however
/// alive its lease: 30 s, and 1 s per MiB (a slow download; beyond, a second one is
/// cheaper than waiting).
fn patience(size: u64) -> u64 {
    30_000 + size / (1 << 20) * 1_000
}

/// What a box does about a blob the tier lacks.
pub enum Claim {
    /// This box downloads it (holding a lease, unless the tier could not take one).
    Download(Option<Held>),
    /// Another box's download reached the tier: read it from there.
    InTier,
}

/// A lease this box wrote; deleted once the blob is uploaded (or the download failed).
/// A won lease is rewritten every [`RENEW`] until then; dropping it stops that, and the
/// lease expires.
pub struct Held {
    key: String,
    renewal: Option<tokio::task::AbortHandle>,
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Some(renewal) = self.renewal.take() {
            renewal.abort();
        }
    }
}

impl Claim {
    pub(crate) fn into_held(self) -> Option<Held> {
        match self {
            Self::Download(held) => held,
            Self::InTier => None,
        }
    }
}

/// The outcome of one election among the leases of an id.
enum Election {
    Won,
    /// Another box's lease came first: its time and box.
    Lost(u64, String),
    /// The tier failed: act alone.
    Failed,
}

/// A request's batch of small blobs, as the fleet decided it: see [`Tier::claim_batch`].
pub enum Batch {
    /// This box fetches the batch (its lease is let go with [`Tier::release_batch`]).
    Mine(Held),
    /// Another box fetches it: wait for its blobs in the tier while it is at work.
    Theirs(Theirs),
    /// No coordination (the tier failed): fetch alone.
    Alone,
}

/// Another box's batch lease, watched.
pub struct Theirs {
    id: Digest,
    winner: (u64, String),
    /// When the lease was last seen live, and whether it still was.
    seen: std::sync::Mutex<(tokio::time::Instant, bool)>,
}

impl Tier {
    /// Writes this box's lease on `id` (a blob, or a batch) and elects, among the live
    /// leases of `id`, the one that came first; a win is confirmed by a second listing.
    /// The lease written is returned whatever the outcome (with `Failed`, perhaps none).
    async fn elect(&self, id: &Digest) -> (Election, Option<Held>) {
        let at = now_ms();
        let key = self.layout.lease(id, at, &self.box_id);
        let put = self.bucket.put(&key, Body::Bytes(Bytes::new()), false);
        let started = tokio::time::Instant::now();
        if self.call(put).await.is_err() {
            return (Election::Failed, None);
        }
        // A box whose lease is older than this one's may still be writing it: a win is
        // confirmed by a second listing once such a write would have landed.
        let settle = (started.elapsed() * 4).max(Duration::from_millis(100));
        let held = Some(Held { key, renewal: None });
        let mut confirmed = false;
        loop {
            let Some(winner) = self.first_lease(id).await else {
                return (Election::Failed, held);
            };
            match winner.filter(|w| (w.0, w.1.as_str()) < (at, self.box_id.as_str())) {
                Some((when, by)) => return (Election::Lost(when, by), held),
                // A listing that does not show this box's own lease yet is no reason to
                // wait.
                None if confirmed => return (Election::Won, held),
                None => {
                    confirmed = true;
                    tokio::time::sleep(settle).await;
                }
            }
        }
    }

    /// The live lease of `id` that came first, `Some(None)` when there is none, `None`
    /// when the tier cannot be listed.
    async fn first_lease(&self, id: &Digest) -> Option<Option<(u64, String)>> {
        let leases = self
            .call(self.bucket.list(&self.layout.leases(id)))
            .await
            .ok()?;
        let now = now_ms();
        Some(
            leases
                .iter()
                .filter_map(|l| {
                    let (at, by) = self.layout.parse_lease(id, &l.key)?;
                    let written = l.modified_ms.unwrap_or(at).max(at);
                    (at <= now + SKEW && written + TTL > now).then(|| (at, by.to_owned()))
                })
                .min(),
        )
    }

    /// Keeps a won lease alive: rewritten every [`RENEW`] until it is let go or dropped.
    fn renew(&self, held: &mut Held) {
        let (bucket, key) = (self.bucket.clone(), held.key.clone());
        let task = tokio::spawn(async move {
            loop {
                tokio::time::sleep(RENEW).await;
                let _ = bucket.put(&key, Body::Bytes(Bytes::new()), false).await;
            }
        });
        held.renewal = Some(task.abort_handle());
    }

    /// Decides who downloads the blob `digest` of `size` bytes (see the module docs);
    /// waits while another box does, at most its lease's life. A tier that fails says
    /// [`Claim::Download`]: the upstream is always there.
    pub async fn claim(&self, digest: &Digest, size: u64) -> Claim {
        if !self.usable() {
            return Claim::Download(None);
        }
        let mut wait = Duration::from_millis(50);
        let mut waited = false;
        loop {
            let (winner, mut held) = self.elect(digest).await;
            let (at, by) = match winner {
                Election::Won => {
                    // The blob may have landed since this box missed it (its downloader
                    // uploaded it and let its lease go meanwhile).
                    if let Ok(true) = self.has_blob(digest).await {
                        if let Some(held) = held {
                            self.release(held).await;
                        }
                        return Claim::InTier;
                    }
                    if waited {
                        tracing::info!(%digest, "the box downloading a blob went away; this one takes over");
                    }
                    self.counters.leases_won.fetch_add(1, Ordering::Relaxed);
                    if let Some(held) = &mut held {
                        self.renew(held);
                    }
                    return Claim::Download(held);
                }
                Election::Failed => return Claim::Download(held),
                Election::Lost(at, by) => (at, by),
            };
            // This box's lease goes: it would only keep the next box waiting longer.
            if let Some(held) = held {
                self.release(held).await;
            }
            if !waited {
                waited = true;
                self.counters.leases_waited.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(%digest, holder = by, "another box is downloading the blob; waiting for it in the tier");
            }
            let deadline = at + patience(size);
            loop {
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(2));
                match self.has_blob(digest).await {
                    Ok(true) => return Claim::InTier,
                    Ok(false) => {}
                    Err(_) => return Claim::Download(None),
                }
                // The winner gone without the blob (it failed, or its lease ran out):
                // elect again.
                let live = self.first_lease(digest).await;
                if now_ms() >= deadline
                    || !matches!(live, Some(Some((a, ref b))) if a == at && *b == by)
                {
                    break;
                }
            }
        }
    }

    /// Decides who fetches a request's batch of small blobs: `id` names the batch (blake3
    /// of its blobs' digests, so that boxes missing the same blobs meet on it). Leasing each small blob would cost more requests than the blob; one
    /// lease for all of them lets the other boxes read each blob from the tier as the
    /// winner uploads it.
    pub async fn claim_batch(&self, id: &Digest) -> Batch {
        if !self.usable() {
            return Batch::Alone;
        }
        match self.elect(id).await {
            (Election::Won, Some(mut held)) => {
                self.counters.leases_won.fetch_add(1, Ordering::Relaxed);
                self.renew(&mut held);
                Batch::Mine(held)
            }
            (Election::Lost(at, by), held) => {
                if let Some(held) = held {
                    self.release(held).await;
                }
                self.counters.leases_waited.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(batch = %id, holder = by, "another box is fetching these blobs; reading them from the tier as they land");
                Batch::Theirs(Theirs {
                    id: *id,
                    winner: (at, by),
                    seen: std::sync::Mutex::new((tokio::time::Instant::now(), true)),
                })
            }
            (_, held) => {
                if let Some(held) = held {
                    self.release(held).await;
                }
                Batch::Alone
            }
        }
    }

    /// Whether the box fetching `theirs` is still at it (its lease live), asked of the
    /// tier at most once a second.
    pub async fn still_theirs(&self, theirs: &Theirs) -> bool {
        let (when, live) = *theirs
            .seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !live || when.elapsed() < Duration::from_secs(1) {
            return live;
        }
        let first = self.first_lease(&theirs.id).await;
        let live = matches!(first, Some(Some(ref w)) if *w == theirs.winner);
        *theirs
            .seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) =
            (tokio::time::Instant::now(), live);
        live
    }

    /// Lets go of this box's batch lease once its uploads have ended (the boxes reading
    /// the batch from the tier stop waiting when it goes): as soon as none is queued, or
    /// when none has ended for 30 s (the tier stalls; the others fetch the rest).
    pub fn release_batch(self: &Arc<Self>, batch: Batch) {
        let Batch::Mine(held) = batch else {
            return;
        };
        let this = self.clone();
        tokio::spawn(async move {
            let queued = || this.counters.queued.load(Ordering::Relaxed);
            let (mut last, mut since) = (queued(), tokio::time::Instant::now());
            while last > 0 && since.elapsed() < Duration::from_secs(30) {
                tokio::time::sleep(Duration::from_millis(100)).await;
                let now = queued();
                if now != last {
                    (last, since) = (now, tokio::time::Instant::now());
                }
            }
            this.release(held).await;
        });
    }

    /// Lets go of a lease (a failed download, or the blob uploaded).
    pub async fn release_claim(&self, claim: Claim) {
        if let Some(held) = claim.into_held() {
            self.release(held).await;
        }
    }

    pub(crate) async fn release(&self, held: Held) {
        if let Err(e) = self.call(self.bucket.delete(&held.key)).await {
            tracing::debug!(key = %held.key, error = %hoard_types::error_chain(&e), "cannot delete a lease; it expires");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boxes_wait_longer_for_larger_blobs() {
        assert_eq!(patience(0), 30_000);
        assert_eq!(patience(256 << 20), 286_000);
    }
}
