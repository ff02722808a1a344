//! The fleet tier in the fetch engine (see `hoard_upstream::tier`).
//!
//! A blob the upstream would serve is asked of the tier first. Missing there, a blob
//! larger than [`SMALL_BLOB`] is claimed fleet-wide ([`Tier::claim`]): another box may be
//! downloading it, and this one then reads it from the tier once it lands. Bytes from the
//! tier are checked like the upstream's; wrong ones are counted, the blob comes from the
//! upstream, and its upload replaces the tier's copy. A blob fetched from the upstream is
//! offered to the tier once committed (durable here), with its foreign digest's binding
//! for a W&B or Hub file (and so are a publish's blobs); a box holding a lease commits at once, so that the boxes waiting
//! on it are not kept waiting for the rest of its request. A failing tier costs a get
//! nothing but the time its breaker takes to open.

use std::sync::{Arc, PoisonError};

use hoard_store::{BlobKey, Staged};
use hoard_types::ForeignDigest;
use hoard_upstream::{Batch, BlobSource, Claim, ForeignCheck, Tier, Upload};

use super::{Fetcher, SMALL_BLOB, Tally, count};
use crate::error::ApiError;

/// The kind of error that says the tier lacks a file asked of it alone (see
/// [`Fetcher::ensure_foreign`]): the caller then asks the upstream.
pub(crate) const TIER_MISS: &str = "tier-miss";

pub(super) fn tier_miss(digest: &ForeignDigest) -> ApiError {
    ApiError::new(
        http::StatusCode::NOT_FOUND,
        TIER_MISS,
        format!("the fleet tier does not have {digest}"),
    )
}

/// What the tier did for a blob.
pub(super) enum Via {
    /// It served the blob (`None`: it turned out to be cached).
    Tier(Option<(Staged, u64)>),
    /// Fetch it from the upstream, then offer it.
    Upstream(Plan),
}

/// Requests with fewer small blobs than this to fetch claim none as a batch: a lease costs
/// a few requests to the tier and a tenth of a second.
const BATCH_MIN: usize = 16;

/// A request's small blobs, claimed as one batch across the fleet (see
/// [`Tier::claim_batch`]).
pub(crate) struct RequestBatch {
    tier: Arc<Tier>,
    /// Another box's lease on the batch, which this request's fetches wait on.
    theirs: Option<hoard_upstream::tier::Theirs>,
    /// This box's lease, let go when the request ends ([`Fetcher::end_batch`]).
    mine: std::sync::Mutex<Option<Batch>>,
    /// This box fetches the batch, and a sample of its blobs showed the tier has none of
    /// them: they go straight to the upstream (asking the tier for each one first cost a
    /// lone box 38 s instead of 4.5 s for 20,000 files, measured with Garage here).
    cold: bool,
    /// The batch holds files of every size, not only small ones: a foreign upstream's
    /// files, whose blobs (and so their leases) are unknown until downloaded.
    every_size: bool,
}

impl RequestBatch {
    /// The fleet's decision on the batch `id` (`every_size`: see the field).
    async fn claim(tier: Arc<Tier>, id: &hoard_types::Digest, every_size: bool) -> Self {
        let (theirs, mine) = match tier.claim_batch(id).await {
            Batch::Theirs(theirs) => (Some(theirs), None),
            mine => (None, Some(mine)),
        };
        Self {
            tier,
            theirs,
            mine: std::sync::Mutex::new(mine),
            cold: false,
            every_size,
        }
    }

    /// Whether this box won the batch (and fetches it).
    fn is_mine(&self) -> bool {
        matches!(
            *self.mine.lock().unwrap_or_else(PoisonError::into_inner),
            Some(Batch::Mine(_))
        )
    }

    /// Whether another box fetches this batch, still: a blob of at most `size` bytes that
    /// the tier lacks is then waited for rather than fetched.
    pub(crate) async fn others_at_work(&self, size: u64) -> bool {
        match &self.theirs {
            Some(theirs) if size <= SMALL_BLOB || self.every_size => {
                self.tier.still_theirs(theirs).await
            }
            _ => false,
        }
    }
}

/// Blobs of a batch this box won that are asked of the tier before it is taken as cold.
const SAMPLE: usize = 8;

/// How a blob fetched from the upstream is offered to the tier.
#[derive(Default)]
pub(super) struct Plan {
    /// The tier's copy was wrong: the upload writes over it.
    replace: bool,
    /// The tier lacked the blob: the upload need not ask first.
    missed: bool,
    /// This box's lease on the blob, let go once it is uploaded.
    claim: Option<Claim>,
}

/// A blob fetched from the upstream, waiting for its commit to be offered.
pub(super) struct Offer {
    key: BlobKey,
    size: u64,
    /// A foreign file's digest, and the project it was downloaded within.
    foreign: Option<(ForeignDigest, Arc<str>)>,
    plan: Plan,
}

impl Fetcher {
    /// Asks the tier for the blob; see the module docs.
    pub(super) async fn ask_tier(
        &self,
        key: BlobKey,
        size: u64,
        tally: Option<Arc<Tally>>,
        batch: Option<&RequestBatch>,
    ) -> Via {
        let Some(tier) = self.tier.clone().filter(|t| t.usable()) else {
            return Via::Upstream(Plan::default());
        };
        if size <= SMALL_BLOB && batch.is_some_and(|b| b.cold) {
            tier.missed();
            return Via::Upstream(Plan {
                missed: true,
                ..Plan::default()
            });
        }
        let source: Arc<dyn BlobSource> = tier.clone();
        let mut plan = Plan::default();
        let mut claimed = false;
        let mut wait = std::time::Duration::from_millis(20);
        loop {
            match self
                .attempt(key, size, source.clone(), tally.clone(), false)
                .await
            {
                Ok(staged) => {
                    tier.served(size);
                    return Via::Tier(staged);
                }
                Err(e) if e.kind == "not-found" && !claimed && size > SMALL_BLOB => {
                    claimed = true;
                    match tier.claim(&key.digest, size).await {
                        Claim::InTier => continue,
                        claim @ Claim::Download(_) => plan.claim = Some(claim),
                    }
                }
                Err(e) if e.kind == "not-found" && size <= SMALL_BLOB => {
                    // Another box fetching this request's batch uploads the blob soon.
                    if let Some(batch) = batch
                        && batch.others_at_work(size).await
                    {
                        tokio::time::sleep(wait).await;
                        wait = (wait * 2).min(std::time::Duration::from_millis(500));
                        continue;
                    }
                    plan.missed = true;
                }
                Err(e) if e.kind == "not-found" => plan.missed = true,
                Err(e) if e.kind == "upstream-invalid" => {
                    tier.refused_bytes(&key.digest);
                    plan.replace = true;
                }
                Err(e) => {
                    tracing::debug!(%key, error = %e, "the tier failed; fetching from the upstream");
                }
            }
            break;
        }
        tier.missed();
        Via::Upstream(plan)
    }

    /// A file known by a foreign digest, from the tier when it knows which blob the file
    /// is within `project` (a box downloaded it there from the upstream: what proves, as
    /// on one box, that the project's members may have the bytes; see `foreign.rs`). The
    /// bytes are checked against the blob's blake3 as they stream and against the
    /// foreign digest at their end (a binding could name another blob). `None`: fetch it
    /// from the upstream.
    pub(super) async fn foreign_from_tier(
        &self,
        digest: &ForeignDigest,
        project: &str,
        size: u64,
        tally: Option<Arc<Tally>>,
    ) -> Option<Staged> {
        let tier = self.tier.clone().filter(|t| t.usable())?;
        let (blob, bound_size) = tier.binding(project, digest).await?;
        if bound_size != size {
            tracing::warn!(%digest, "the tier binds the file to a blob of another size; ignored");
            return None;
        }
        let mut stream = match tier.fetch_blob(&blob, size, None).await {
            Ok(stream) => stream,
            Err(e) => {
                tracing::debug!(%digest, error = %e, "the tier has the binding but not the blob");
                tier.missed();
                return None;
            }
        };
        let (store, claimed) = (self.store.clone(), digest.clone());
        let handle = tokio::runtime::Handle::current();
        let staged = tokio::task::spawn_blocking(move || {
            let mut check = ForeignCheck::new(&claimed, size)?;
            let mut writer = store.writer(false, Some((blob, size))).ok()?;
            while let Some(chunk) = handle.block_on(stream.next_chunk()).ok()? {
                writer.write(&chunk).ok()?;
                check.update(&chunk);
                count(tally.as_deref(), chunk.len());
            }
            if check.finish() != claimed {
                writer.discard();
                return None;
            }
            writer.finish_staged().ok()
        })
        .await
        .ok()
        .flatten();
        if staged.is_some() {
            tier.served(size);
        } else {
            tier.refused_bytes(&blob);
            tier.missed();
        }
        staged
    }

    /// Keeps a blob fetched from the upstream for the tier, once committed: whether this
    /// box holds a lease on it (and should commit at once, for the boxes waiting).
    pub(super) fn keep_offer(
        &self,
        key: BlobKey,
        size: u64,
        foreign: Option<(ForeignDigest, Arc<str>)>,
        plan: Plan,
    ) -> bool {
        if self.tier.is_none() {
            return false;
        }
        let leased = matches!(plan.claim, Some(Claim::Download(Some(_))));
        self.offers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Offer {
                key,
                size,
                foreign,
                plan,
            });
        leased
    }

    /// Claims a request's small blobs to fetch (`missing`: blob and size) as one batch
    /// across the fleet; `None` without a tier, or for a few blobs.
    pub(crate) async fn claim_batch(&self, missing: &[(BlobKey, u64)]) -> Option<RequestBatch> {
        let tier = self.tier.clone().filter(|t| t.usable())?;
        let mut small: Vec<&BlobKey> = missing
            .iter()
            .filter(|(_, size)| *size <= SMALL_BLOB)
            .map(|(key, _)| key)
            .collect();
        if small.len() < BATCH_MIN {
            return None;
        }
        small.sort_unstable_by_key(|k| k.digest);
        small.dedup_by_key(|k| k.digest);
        let mut id = blake3::Hasher::new();
        for key in &small {
            id.update(key.digest.as_bytes());
        }
        let mut batch = RequestBatch::claim(tier, &id.finalize().into(), false).await;
        batch.cold = batch.is_mine() && {
            // Owned futures: borrowing closures here trip the request task's `Send`
            // check (a higher-ranked lifetime error).
            let step = (small.len() / SAMPLE).max(1);
            let asks: Vec<hoard_upstream::BoxFuture<'static, bool>> = small
                .iter()
                .step_by(step)
                .take(SAMPLE)
                .map(|key| {
                    let (tier, digest) = (batch.tier.clone(), key.digest);
                    Box::pin(async move { matches!(tier.has_blob(&digest).await, Ok(true)) })
                        as hoard_upstream::BoxFuture<'static, bool>
                })
                .collect();
            !futures_util::future::join_all(asks).await.contains(&true)
        };
        Some(batch)
    }

    /// Claims the files a request of a foreign upstream (W&B, the Hub) fetches within
    /// `project` (their foreign digests) as one batch across the fleet, whatever their
    /// size: their blobs are unknown until downloaded, so they cannot be leased one by
    /// one. `None` without a tier. The files are not sampled: the tier finds a foreign
    /// file through its binding, asked per file anyway.
    pub(crate) async fn claim_foreign_batch(
        &self,
        project: &str,
        missing: &[&ForeignDigest],
    ) -> Option<RequestBatch> {
        let tier = self.tier.clone().filter(|t| t.usable())?;
        let mut small: Vec<String> = missing.iter().map(ToString::to_string).collect();
        if small.is_empty() {
            return None;
        }
        small.sort_unstable();
        small.dedup();
        let mut id = blake3::Hasher::new();
        id.update(project.as_bytes());
        for digest in &small {
            id.update(b"\n").update(digest.as_bytes());
        }
        Some(RequestBatch::claim(tier, &id.finalize().into(), true).await)
    }

    /// Ends a request's batch: this box's lease goes once its uploads have.
    pub(crate) fn end_batch(batch: Option<&RequestBatch>) {
        let Some(batch) = batch else {
            return;
        };
        let mine = batch
            .mine
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(mine) = mine {
            batch.tier.release_batch(mine);
        }
    }

    /// Blobs a request fetches between two commits: with a tier, what is committed is
    /// uploaded, and other boxes may wait for it.
    pub(crate) fn commit_every(&self) -> u64 {
        if self.tier.is_some() { 512 } else { 4096 }
    }

    /// Whether a tier is configured (and worth asking now).
    pub(crate) fn tier_usable(&self) -> bool {
        self.tier.as_ref().is_some_and(|t| t.usable())
    }

    /// Offers the blobs of a publish (durable once ingested) to the tier: another box may
    /// want them before the upstream has them.
    pub(crate) fn offer_published(&self, manifest: &hoard_types::Manifest) {
        let Some(tier) = &self.tier else {
            return;
        };
        for entry in manifest.entries.values() {
            let key = BlobKey {
                digest: entry.digest,
                exec: entry.exec,
            };
            tier.offer(
                entry.digest,
                entry.size,
                self.store.blob_path(&key),
                Upload::IfMissing,
                None,
            );
        }
    }

    /// Lets go of a lease whose download failed.
    pub(super) fn let_go(&self, plan: Plan) {
        if let (Some(tier), Some(claim)) = (self.tier.clone(), plan.claim) {
            tokio::spawn(async move { tier.release_claim(claim).await });
        }
    }

    /// Hands the offers of the blobs `keys` just committed (or failed to) to the tier.
    pub(super) fn hand_offers(&self, keys: &[BlobKey], committed: bool) {
        let Some(tier) = &self.tier else {
            return;
        };
        let keys: std::collections::HashSet<&BlobKey> = keys.iter().collect();
        let offers: Vec<Offer> = {
            let mut all = self.offers.lock().unwrap_or_else(PoisonError::into_inner);
            let (these, others) = std::mem::take(&mut *all)
                .into_iter()
                .partition(|o| keys.contains(&o.key));
            *all = others;
            these
        };
        for offer in offers {
            if !committed {
                self.let_go(offer.plan);
                continue;
            }
            if let Some((foreign, project)) = &offer.foreign {
                tier.put_binding(project, foreign, offer.key.digest, offer.size);
            }
            let how = if offer.plan.replace {
                Upload::Replace
            } else if offer.plan.missed {
                Upload::Missing
            } else {
                Upload::IfMissing
            };
            tier.offer(
                offer.key.digest,
                offer.size,
                self.store.blob_path(&offer.key),
                how,
                offer.plan.claim,
            );
        }
    }
}
