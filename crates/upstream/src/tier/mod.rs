//! The fleet tier: an S3-compatible bucket that every box of a fleet reads before the
//! upstream and fills after it, so that one box's download serves the others.
//!
//! [`Tier`] is a [`BlobSource`] (blobs by blake3, whole or in ranges, checked by the
//! stream like any upstream's bytes), a store of immutable metadata (native versions by
//! number and digest, foreign digests' blobs), an upload queue (blobs offered once durable
//! on this box, uploaded in the background, bounded), and the fleet's single flight
//! ([`Tier::claim`]: leases elected by listing). Its layout is `layout.rs`'s; its S3 calls
//! `s3.rs`'s; `health.rs` keeps the circuit breaker that takes the tier out of the way
//! when it fails, and `lease.rs` the leases.
//!
//! Nothing here trusts the bucket: a blob is checked against its digest as it streams, a
//! metadata object is validated by its user (the daemon) as an upstream's answer would
//! be, and listings are parsed strictly. A failing tier never fails a caller: every call
//! is sent once with short timeouts, failures open the breaker, and callers go to the
//! upstream.

mod health;
mod layout;
mod lease;
mod s3;

use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};

use bytes::Bytes;
use hoard_cloud::aws::AwsCredentials;
use hoard_cloud::sigv4::Target;
use hoard_types::api::TierStatus;
use hoard_types::{ArtifactName, Digest, ForeignDigest, Selector};
use tokio::sync::mpsc;

use crate::blob::check_range;
use crate::{BlobSource, BlobStream, BoxFuture, Error};
pub use lease::{Batch, Claim, Theirs};

/// Blobs at least this large are uploaded in parts of [`PART`] bytes.
const MULTIPART: u64 = 64 << 20;
const PART: u64 = 16 << 20;

/// Offers waiting for upload at most (about 100 bytes each); more are dropped (and
/// counted): the next box that misses such a blob downloads it from the upstream and
/// offers it again. A 20,000-file version fits.
const QUEUE: usize = 32_768;

/// Uploads running at once: most are small blobs, whose time is the store's latency.
const UPLOADS: usize = 16;

/// Metadata objects are read up to this size (a 20,000-file manifest is about 4 MiB).
const MAX_META: usize = 64 << 20;

/// Where the tier is, from `[tier]` in `hoard.toml`, `--tier`, `HOARD_TIER`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TierConfig {
    /// `s3://BUCKET/PREFIX`.
    pub url: String,
    /// An S3-compatible server's base URL; `None`: AWS.
    pub endpoint_url: Option<String>,
    /// The store's region; default: the AWS settings' (`AWS_REGION`, the profile's), else
    /// `us-east-1`.
    pub region: Option<String>,
    /// Path-style requests (`ENDPOINT/BUCKET/KEY`); default: with an endpoint yes, on AWS
    /// no (virtual-hosted).
    pub path_style: Option<bool>,
}

impl TierConfig {
    /// Checks the settings: the bucket and prefix of [`Self::url`].
    pub fn check(&self) -> Result<(String, String), Error> {
        if let Some(endpoint) = &self.endpoint_url
            && !(endpoint.starts_with("http://") || endpoint.starts_with("https://"))
        {
            return Err(Error::Url {
                url: endpoint.clone(),
                reason: "the tier's `endpoint_url` is `http(s)://host[:port]`".to_owned(),
            });
        }
        self.bucket_and_prefix()
    }

    /// The bucket and prefix of [`Self::url`].
    fn bucket_and_prefix(&self) -> Result<(String, String), Error> {
        let bad = |reason: &str| Error::Url {
            url: self.url.clone(),
            reason: reason.to_owned(),
        };
        let rest = self
            .url
            .strip_prefix("s3://")
            .ok_or_else(|| bad("a tier is `s3://BUCKET/PREFIX`"))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let valid = (3..=63).contains(&bucket.len())
            && bucket
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
        if !valid {
            return Err(bad(
                "the bucket must be 3–63 of `a-z 0-9 - .` (an S3 bucket name)",
            ));
        }
        let prefix = prefix.trim_matches('/');
        if prefix.split('/').any(|s| s == "." || s == "..")
            || prefix.contains("//")
            || prefix.chars().any(char::is_control)
        {
            return Err(bad("the prefix must be plain `/`-separated names"));
        }
        Ok((bucket.to_owned(), prefix.to_owned()))
    }
}

/// What the store does with `If-None-Match: *` on a PUT, learned at start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
enum Conditional {
    Unknown = 0,
    /// A second conditional PUT of a key is refused (AWS S3, `MinIO`, Ceph RGW).
    Honoured = 1,
    /// It replaces the object (Garage 2.5).
    Ignored = 2,
}

/// Counters for `status` and `/metrics`.
#[derive(Debug, Default)]
struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    bad: AtomicU64,
    bytes_read: AtomicU64,
    bytes_written: AtomicU64,
    uploads: AtomicU64,
    upload_failures: AtomicU64,
    dropped: AtomicU64,
    queued: AtomicU64,
    metadata_hits: AtomicU64,
    metadata_misses: AtomicU64,
    leases_won: AtomicU64,
    leases_waited: AtomicU64,
}

/// What an upload of an offered blob does about the tier's copy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Upload {
    /// The tier may have it already: asked first (a HEAD), uploaded only if not.
    IfMissing,
    /// The tier lacked it a moment ago: uploaded (conditionally) without asking.
    Missing,
    /// The tier's copy was wrong: written over.
    Replace,
}

/// A blob this box holds, offered to the tier.
struct Offer {
    digest: Digest,
    size: u64,
    path: PathBuf,
    how: Upload,
    /// This box's lease on the blob, let go once uploaded.
    lease: Option<lease::Held>,
}

/// See the module docs.
pub struct Tier {
    bucket: s3::Bucket,
    layout: layout::Layout,
    /// This box, in lease keys: random per daemon start.
    box_id: String,
    health: health::Health,
    conditional: AtomicU8,
    counters: Counters,
    uploads: mpsc::Sender<Offer>,
    /// Offers of blobs this box holds a lease on: uploaded before the others, since other
    /// boxes wait for them.
    leased_uploads: mpsc::Sender<Offer>,
}

impl std::fmt::Debug for Tier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Tier").field(&self.describe()).finish()
    }
}

impl Tier {
    /// A tier for the upstream `upstream` (as [`crate::Upstream::describe`] names it),
    /// with its upload queue running. Call inside a tokio runtime. The store is not asked
    /// anything yet: see [`Self::probe`].
    pub fn start(config: &TierConfig, upstream: &str) -> Result<Arc<Self>, Error> {
        let (bucket, prefix) = config.check()?;
        let credentials = AwsCredentials::from_env().ok_or_else(|| Error::Url {
            url: config.url.clone(),
            reason: "the tier needs AWS credentials: set `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY` for the daemon, or `AWS_PROFILE` (on EC2 the instance role is used)".to_owned(),
        })?;
        let target = Target {
            endpoint: config
                .endpoint_url
                .as_ref()
                .map(|e| e.trim_end_matches('/').to_owned()),
            region: config
                .region
                .clone()
                .unwrap_or_else(|| credentials.region()),
            path_style: config.path_style.unwrap_or(config.endpoint_url.is_some()),
        };
        let name = match &target.endpoint {
            Some(endpoint) => format!("{} at {endpoint}", config.url),
            None => config.url.clone(),
        };
        let (uploads, queue) = mpsc::channel(QUEUE);
        let (leased_uploads, leased) = mpsc::channel(QUEUE);
        let tier = Arc::new(Self {
            bucket: s3::Bucket::new(credentials, target, bucket, name),
            layout: layout::Layout::new(&prefix, upstream),
            box_id: format!("{:016x}", fastrand::u64(..)),
            health: health::Health::default(),
            conditional: AtomicU8::new(Conditional::Unknown as u8),
            counters: Counters::default(),
            uploads,
            leased_uploads,
        });
        tokio::spawn(upload_loop(Arc::downgrade(&tier), leased, queue));
        Ok(tier)
    }

    /// `s3://bucket/prefix at http://endpoint`.
    pub fn describe(&self) -> &str {
        self.bucket.name()
    }

    /// Asks the store whether it can be used and whether it honours conditional creates
    /// (two conditional PUTs of one probe key): the answer decides nothing about
    /// correctness, and is shown in `status`.
    pub async fn probe(&self) {
        let key = self.layout.probe(&self.box_id);
        let result = async {
            self.bucket
                .put(&key, s3::Body::Bytes(Bytes::from_static(b"probe")), true)
                .await?;
            let again = self
                .bucket
                .put(&key, s3::Body::Bytes(Bytes::from_static(b"probe")), true)
                .await?;
            self.bucket.delete(&key).await?;
            Ok::<_, Error>(again)
        }
        .await;
        match result {
            Ok(again) => {
                self.health.success();
                let kind = if again == s3::Created::Exists {
                    Conditional::Honoured
                } else {
                    Conditional::Ignored
                };
                self.conditional.store(kind as u8, Ordering::Relaxed);
                tracing::info!(tier = %self.describe(), conditional_create = ?kind, "the tier answers");
            }
            Err(e) => {
                tracing::warn!(tier = %self.describe(), error = %hoard_types::error_chain(&e), "the tier cannot be used; gets go to the upstream");
                self.health.failure(&e);
            }
        }
    }

    fn conditional(&self) -> Conditional {
        match self.conditional.load(Ordering::Relaxed) {
            1 => Conditional::Honoured,
            2 => Conditional::Ignored,
            _ => Conditional::Unknown,
        }
    }

    /// Whether the tier is worth asking now (its breaker is closed, or lets a trial by).
    pub fn usable(&self) -> bool {
        self.health.allow()
    }

    /// Runs one call of the tier, noting its outcome in the breaker.
    async fn call<T>(&self, work: impl Future<Output = Result<T, Error>>) -> Result<T, Error> {
        if !self.health.allow() {
            return Err(self.off());
        }
        let result = work.await;
        match &result {
            Ok(_) => self.health.success(),
            Err(e) => self.health.failure(e),
        }
        result
    }

    fn off(&self) -> Error {
        Error::Unavailable {
            upstream: self.describe().to_owned(),
            status: 503,
            attempts: 0,
            detail: format!("the tier is off for now: {}", self.health.describe()),
        }
    }

    /// Whether the tier holds the blob.
    pub async fn has_blob(&self, digest: &Digest) -> Result<bool, Error> {
        let key = self.layout.blob(digest);
        Ok(self.call(self.bucket.head(&key)).await?.is_some())
    }

    /// Counts a blob that had to come from the upstream.
    pub fn missed(&self) {
        self.counters.misses.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a blob the tier served, once its bytes checked out.
    pub fn served(&self, bytes: u64) {
        self.counters.hits.fetch_add(1, Ordering::Relaxed);
        self.counters.bytes_read.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Counts a blob whose tier copy was wrong (it is replaced when offered again).
    pub fn refused_bytes(&self, digest: &Digest) {
        self.counters.bad.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(%digest, tier = %self.describe(), "the tier's copy of a blob is wrong; fetching it from the upstream, and replacing it");
    }

    /// Offers a blob this box holds durably (at `path`) for upload, in the background; a
    /// full queue drops it. `lease`: this box's claim on the blob, let go once uploaded.
    pub fn offer(
        &self,
        digest: Digest,
        size: u64,
        path: PathBuf,
        how: Upload,
        lease: Option<Claim>,
    ) {
        let lease = lease.and_then(Claim::into_held);
        let offer = Offer {
            digest,
            size,
            path,
            how,
            lease,
        };
        let queue = if offer.lease.is_some() {
            &self.leased_uploads
        } else {
            &self.uploads
        };
        match queue.try_send(offer) {
            Ok(()) => {
                self.counters.queued.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {
                self.counters.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Uploads one blob (unless the tier has it and it need not be replaced).
    async fn upload(&self, offer: &Offer) -> Result<(), Error> {
        let key = self.layout.blob(&offer.digest);
        if offer.how == Upload::IfMissing && self.call(self.bucket.head(&key)).await?.is_some() {
            return Ok(());
        }
        let conditional = offer.how != Upload::Replace;
        if offer.size < MULTIPART {
            let body = s3::Body::File {
                path: &offer.path,
                offset: 0,
                len: offer.size,
            };
            self.call(self.bucket.put(&key, body, conditional)).await?;
        } else {
            self.call(self.upload_parts(&key, offer, conditional))
                .await?;
        }
        self.counters
            .bytes_written
            .fetch_add(offer.size, Ordering::Relaxed);
        self.counters.uploads.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    async fn upload_parts(&self, key: &str, offer: &Offer, conditional: bool) -> Result<(), Error> {
        let upload = self.bucket.create_multipart(key).await?;
        let parts = async {
            let mut etags = Vec::new();
            let mut offset = 0;
            while offset < offer.size {
                let len = PART.min(offer.size - offset);
                let body = s3::Body::File {
                    path: &offer.path,
                    offset,
                    len,
                };
                let number = u32::try_from(etags.len() + 1).unwrap_or(u32::MAX);
                etags.push(self.bucket.upload_part(key, &upload, number, body).await?);
                offset += len;
            }
            self.bucket
                .complete_multipart(key, &upload, &etags, conditional)
                .await
        }
        .await;
        if parts.is_err() {
            let _ = self.bucket.abort_multipart(key, &upload).await;
        }
        parts.map(drop)
    }

    /// A native version's stored form (by number or digest), for the caller to validate;
    /// `None` when the tier has none, is off, or fails.
    pub async fn version(&self, name: &ArtifactName, selector: &Selector) -> Option<Bytes> {
        let key = self.layout.version(name, selector)?;
        self.meta(&key).await
    }

    /// Stores a native version (its stored form, aliases left out by the caller) under
    /// its number and its digest, in the background.
    pub fn put_version(
        self: &Arc<Self>,
        name: &ArtifactName,
        number: u32,
        digest: Digest,
        body: Bytes,
    ) {
        let keys = [Selector::Version(number), Selector::Digest(digest)]
            .iter()
            .filter_map(|s| self.layout.version(name, s))
            .collect::<Vec<_>>();
        self.put_meta(keys, body);
    }

    /// A foreign version's stored form by the label that names it for good (W&B's `vN`,
    /// a Hub commit), for the caller to validate; `None` when the tier has none.
    pub async fn foreign_version(&self, name: &ArtifactName, label: &str) -> Option<Bytes> {
        let key = self.layout.foreign_version(name, label)?;
        self.meta(&key).await
    }

    /// Stores a foreign version (aliases left out by the caller) by its label, in the
    /// background.
    pub fn put_foreign_version(self: &Arc<Self>, name: &ArtifactName, label: &str, body: Bytes) {
        if let Some(key) = self.layout.foreign_version(name, label) {
            self.put_meta(vec![key], body);
        }
    }

    /// The blob a foreign digest's file is within `project` (`entity/project`: a box
    /// downloaded it there), as `(digest, size)`, for the caller to check by the bytes;
    /// `None` when unknown.
    pub async fn binding(&self, project: &str, foreign: &ForeignDigest) -> Option<(Digest, u64)> {
        #[derive(serde::Deserialize)]
        struct Binding {
            digest: Digest,
            size: u64,
        }
        let key = self.layout.binding(project, foreign)?;
        let body = self.meta(&key).await?;
        match serde_json::from_slice::<Binding>(&body) {
            Ok(b) => Some((b.digest, b.size)),
            Err(e) => {
                tracing::warn!(%key, error = %e, "a binding in the tier does not parse; ignored");
                None
            }
        }
    }

    /// Stores which blob a foreign digest's file downloaded within `project` is, in the
    /// background.
    pub fn put_binding(
        self: &Arc<Self>,
        project: &str,
        foreign: &ForeignDigest,
        digest: Digest,
        size: u64,
    ) {
        let Some(key) = self.layout.binding(project, foreign) else {
            return;
        };
        let body = serde_json::json!({ "digest": digest, "size": size }).to_string();
        self.put_meta(vec![key], body.into());
    }

    async fn meta(&self, key: &str) -> Option<Bytes> {
        match self.call(self.bucket.get_small(key, MAX_META)).await {
            Ok(Some(body)) => {
                self.counters.metadata_hits.fetch_add(1, Ordering::Relaxed);
                Some(body)
            }
            Ok(None) => {
                self.counters
                    .metadata_misses
                    .fetch_add(1, Ordering::Relaxed);
                None
            }
            Err(e) => {
                tracing::debug!(%key, error = %hoard_types::error_chain(&e), "tier metadata: going to the upstream");
                None
            }
        }
    }

    fn put_meta(self: &Arc<Self>, keys: Vec<String>, body: Bytes) {
        let this = self.clone();
        tokio::spawn(async move {
            for key in keys {
                let put = this.bucket.put(&key, s3::Body::Bytes(body.clone()), true);
                if let Err(e) = this.call(put).await {
                    tracing::debug!(%key, error = %hoard_types::error_chain(&e), "cannot store metadata in the tier");
                }
            }
        });
    }

    /// What `status` shows.
    pub fn status(&self) -> TierStatus {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        TierStatus {
            url: self.describe().to_owned(),
            state: self.health.describe(),
            conditional_create: match self.conditional() {
                Conditional::Unknown => "unknown",
                Conditional::Honoured => "honoured",
                Conditional::Ignored => "ignored (leases are elected by listing)",
            }
            .to_owned(),
            hits: get(&c.hits),
            misses: get(&c.misses),
            bad: get(&c.bad),
            bytes_read: get(&c.bytes_read),
            bytes_written: get(&c.bytes_written),
            uploads: get(&c.uploads),
            queued: get(&c.queued),
            upload_failures: get(&c.upload_failures),
            dropped: get(&c.dropped),
            metadata_hits: get(&c.metadata_hits),
            metadata_misses: get(&c.metadata_misses),
            leases_won: get(&c.leases_won),
            leases_waited: get(&c.leases_waited),
            last_error: self.health.last_error(),
        }
    }
}

/// Uploads offers, [`UPLOADS`] at a time (leased ones first), until the tier is dropped.
async fn upload_loop(
    tier: std::sync::Weak<Tier>,
    mut leased: mpsc::Receiver<Offer>,
    mut queue: mpsc::Receiver<Offer>,
) {
    let permits = Arc::new(tokio::sync::Semaphore::new(UPLOADS));
    loop {
        // A slot first, then the offer: a leased one that arrives meanwhile goes first.
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let offer = tokio::select! {
            biased;
            Some(offer) = leased.recv() => offer,
            Some(offer) = queue.recv() => offer,
            else => return,
        };
        let Some(tier) = tier.upgrade() else {
            return;
        };
        tokio::spawn(async move {
            let _permit = permit;
            if let Err(e) = tier.upload(&offer).await {
                tier.counters
                    .upload_failures
                    .fetch_add(1, Ordering::Relaxed);
                tracing::debug!(digest = %offer.digest, error = %hoard_types::error_chain(&e), "cannot upload a blob to the tier");
            }
            if let Some(lease) = offer.lease {
                tier.release(lease).await;
            }
            // Counted until done: `queued` 0 means every upload offered has ended.
            tier.counters.queued.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

impl BlobSource for Tier {
    fn describe(&self) -> String {
        self.bucket.name().to_owned()
    }

    fn fetch_blob<'a>(
        &'a self,
        digest: &'a Digest,
        size: u64,
        range: Option<Range<u64>>,
    ) -> BoxFuture<'a, Result<BlobStream, Error>> {
        Box::pin(async move {
            let range = check_range(digest, size, range)?;
            let whole = range.start == 0 && range.end == size;
            let key = self.layout.blob(digest);
            let asked = (!whole).then(|| range.clone());
            let response = self
                .call(self.bucket.get(&key, asked))
                .await?
                .ok_or_else(|| Error::NotFound {
                    what: format!("blob `{digest}` in the tier `{}`", self.describe()),
                })?;
            // A size that disagrees with the key is known before a byte is read.
            if whole && response.content_length().is_some_and(|len| len != size) {
                return Err(Error::ShortBody {
                    blob: format!("Blob `{digest}` in the tier"),
                    expected: size,
                    received: response.content_length().unwrap_or(0),
                });
            }
            // A break is an error: the caller goes to the upstream.
            let body = crate::http::Body {
                url: self.describe().to_owned(),
                response,
            };
            Ok(BlobStream::new(*digest, size, range, Box::new(body)))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(url: &str) -> TierConfig {
        TierConfig {
            url: url.to_owned(),
            endpoint_url: None,
            region: None,
            path_style: None,
        }
    }

    #[test]
    fn tier_urls_name_a_bucket_and_a_plain_prefix() {
        assert_eq!(
            config("s3://fleet-cache/hoard/").check().unwrap(),
            ("fleet-cache".into(), "hoard".into())
        );
        assert_eq!(
            config("s3://fleet").check().unwrap(),
            ("fleet".into(), String::new())
        );
        for bad in [
            "fleet/x",
            "https://fleet",
            "s3://UPPER",
            "s3://ab",
            "s3://fleet/../x",
            "s3://fleet/a//b",
            "s3://fle_et",
        ] {
            assert!(config(bad).check().is_err(), "{bad}");
        }
    }
}
