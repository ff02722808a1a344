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
//! Correctness never rests on it: two boxes that both think they won (clocks far apart,
//! a listing that lags) download the same bytes twice, which content addressing makes
//! harmless. Leases from the future (beyond [`SKEW`]) and keys that do not parse are
//! ignored.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use hoard_types::Digest;

use super::Tier;
use super::s3::Body;

/// How far ahead of this box's clock a lease may be and still count.
const SKEW: u64 = 60_000;

/// How long a lease on a blob of `size` bytes lives: 30 s, and 1 s per 8 MiB.
fn ttl(size: u64) -> u64 {
    30_000 + size / (8 << 10 << 10) * 1_000
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// What a box does about a blob the tier lacks.
pub enum Claim {
    /// This box downloads it (holding a lease, unless the tier could not take one).
    Download(Option<Held>),
    /// Another box's download reached the tier: read it from there.
    InTier,
}

/// A lease this box wrote; deleted once the blob is uploaded (or the download failed).
pub struct Held {
    key: String,
}

impl Claim {
    pub(crate) fn into_held(self) -> Option<Held> {
        match self {
            Self::Download(held) => held,
            Self::InTier => None,
        }
    }
}

impl Tier {
    /// Decides who downloads the blob `digest` of `size` bytes (see the module docs);
    /// waits while another box does, at most its lease's life. A tier that fails says
    /// [`Claim::Download`]: the upstream is always there.
    pub async fn claim(&self, digest: &Digest, size: u64) -> Claim {
        if !self.usable() {
            return Claim::Download(None);
        }
        let at = now_ms();
        let key = self.layout.lease(digest, at, &self.box_id);
        let put = self.bucket.put(&key, Body::Bytes(Bytes::new()), false);
        let started = tokio::time::Instant::now();
        if self.call(put).await.is_err() {
            return Claim::Download(None);
        }
        // A box whose lease is older than this one's may still be writing it: a win is
        // confirmed by a second listing once such a write would have landed.
        let settle = (started.elapsed() * 4).max(Duration::from_millis(100));
        let held = Held { key };
        let mut wait = Duration::from_millis(50);
        let mut waited = false;
        let mut confirmed = false;
        loop {
            let Ok(leases) = self
                .call(self.bucket.list(&self.layout.leases(digest)))
                .await
            else {
                return Claim::Download(Some(held));
            };
            let now = now_ms();
            let winner = leases
                .iter()
                .filter_map(|l| self.layout.parse_lease(digest, &l.key))
                .filter(|(at, _)| *at <= now + SKEW && at + ttl(size) > now)
                .min();
            let mine = (at, self.box_id.as_str());
            // A listing that does not show this box's own lease yet is no reason to wait.
            let Some(winner) = winner.filter(|w| *w < mine) else {
                if !confirmed {
                    confirmed = true;
                    tokio::time::sleep(settle).await;
                    continue;
                }
                if waited {
                    tracing::info!(%digest, "the box downloading a blob went away; this one takes over");
                }
                self.counters
                    .leases_won
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                return Claim::Download(Some(held));
            };
            if !waited {
                waited = true;
                self.counters
                    .leases_waited
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::debug!(%digest, holder = winner.1, "another box is downloading the blob; waiting for it in the tier");
            }
            let deadline = winner.0 + ttl(size);
            while now_ms() < deadline {
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(2));
                match self.has_blob(digest).await {
                    Ok(true) => {
                        self.release(held).await;
                        return Claim::InTier;
                    }
                    Ok(false) => {}
                    Err(_) => return Claim::Download(Some(held)),
                }
                // The winner's lease gone without the blob: it failed; elect again.
                if wait >= Duration::from_secs(1) {
                    break;
                }
            }
        }
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
    fn leases_live_longer_for_larger_blobs() {
        assert_eq!(ttl(0), 30_000);
        assert_eq!(ttl(256 << 20), 62_000);
    }
}
