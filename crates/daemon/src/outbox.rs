//! The outbox: publishes recorded on this machine, on their way upstream.
//!
//! A publish (see `publish.rs`) is recorded in the outbox, a column family of the index,
//! under `entity/project/name@digest`, with its blobs pinned. From then on `NAME@DIGEST`
//! materializes on this machine. The [`Outbox`] task uploads what the upstream lacks
//! (`missing_blobs`, then the uploads, which the upstream verifies) and commits the
//! manifest; the upstream's commit is idempotent, so publishing identical content twice
//! gives one version and uploads nothing the second time. Publishing identical content
//! while it is pending adds its aliases to the record. When a commit succeeds, the version
//! is cached under its number and the outbox record goes, in one index write, and the
//! blobs are unpinned; if aliases were added while the commit was in flight, the record
//! stays and is committed again. When the upstream cannot be reached or fails, the attempt is
//! repeated with backoff (1 s doubling to 5 min, with full jitter), also after a daemon restart; when it
//! refuses (a viewer's token, a bad request), the publish is marked failed and retried
//! only when the daemon restarts.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::{StreamExt, TryStreamExt};
use hoard_store::{BlobKey, OutboxRecord, Store};
use hoard_types::api::PendingUpload;
use hoard_types::{ArtifactName, Digest, Version};
use hoard_upstream::{Publisher, RetryPolicy, Upstream};
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use crate::error::{ApiError, chain};
use crate::reachability::Reachability;
use crate::runtime::{blocking, now_ms};

/// Uploads of one publish at the same time.
const UPLOADS: usize = 4;
/// Backoff between attempts: the one retry policy, from 1 s doubling to 5 min (each wait
/// drawn with full jitter), for as long as it takes.
const RETRY: RetryPolicy = RetryPolicy {
    retries: u32::MAX,
    base: Duration::from_secs(1),
    max: Duration::from_secs(300),
    max_retry_after: Duration::from_secs(300),
};
/// Committed publishes remembered for waiters (the newest ones).
const REMEMBERED: usize = 1024;

/// A publish in the outbox (its record, kept by the store).
pub(crate) type Pending = OutboxRecord;

/// The outbox key of a publish.
pub(crate) fn outbox_key(name: &ArtifactName, digest: &Digest) -> String {
    OutboxRecord::key(name, digest)
}

/// The blobs a publish pins.
fn keys(pending: &Pending) -> Vec<BlobKey> {
    crate::version::blob_keys(&pending.commit.manifest)
}

/// A publish as this machine knows it before the upstream numbered it.
pub(crate) fn local_version(pending: &Pending) -> Version {
    Version {
        entity: pending.entity.clone(),
        project: pending.project.clone(),
        name: pending.name.clone(),
        version: crate::version::PENDING.to_owned(),
        digest: pending.digest,
        aliases: Vec::new(),
        kind: pending.commit.kind.clone(),
        metadata: pending.commit.metadata.clone(),
        created_at: None,
        manifest: pending.commit.manifest.clone(),
    }
}

/// A publish that reached the upstream, for those waiting on it.
#[derive(Clone)]
pub(crate) struct Done {
    pub(crate) version: String,
    pub(crate) uploaded_blobs: u64,
    pub(crate) uploaded_bytes: u64,
}

/// The task that empties the outbox; see the module docs.
pub(crate) struct Outbox {
    store: Arc<Store>,
    /// Where publishes go: `None` for an upstream that takes none (W&B), whose records
    /// stay in the outbox until the daemon runs with one that does.
    upstream: Option<Arc<dyn Publisher>>,
    /// The upstream, for messages.
    describe: String,
    /// What each attempt says about reaching the upstream (for `status`).
    reachability: Arc<Reachability>,
    wake: Notify,
    /// Bumped whenever a publish is committed or an attempt fails.
    changed: watch::Sender<u64>,
    done: Mutex<(HashMap<String, Done>, Vec<String>)>,
    /// Held while an outbox record is read, changed and written back: a publish adding
    /// aliases must not race an attempt recording its outcome.
    records: Arc<Mutex<()>>,
}

/// What a successful commit left to do.
enum Outcome {
    Done,
    /// Aliases were added to the publish while the commit was in flight: commit again.
    Again,
}

impl Outbox {
    pub(crate) fn start(
        store: Arc<Store>,
        upstream: &Upstream,
        reachability: Arc<Reachability>,
    ) -> Arc<Self> {
        let outbox = Arc::new(Self {
            store,
            upstream: upstream.publisher(),
            describe: upstream.describe(),
            reachability,
            wake: Notify::new(),
            changed: watch::channel(0).0,
            done: Mutex::default(),
            records: Arc::default(),
        });
        tokio::spawn(outbox.clone().run());
        outbox
    }

    /// Whether the upstream takes publishes at all.
    pub(crate) fn takes_publishes(&self) -> bool {
        self.upstream.is_some()
    }

    /// The upstream, for messages.
    pub(crate) fn describe(&self) -> &str {
        &self.describe
    }

    async fn run(self: Arc<Self>) {
        let Some(publisher) = self.upstream.clone() else {
            let store = self.store.clone();
            if let Ok(waiting) = blocking(move || Ok(store.outbox_len()?)).await
                && waiting > 0
            {
                tracing::warn!(
                    waiting,
                    upstream = self.describe,
                    "publishes wait in the outbox for an upstream that takes publishes; they stay until the daemon runs with one"
                );
            }
            return;
        };
        // When each publish that failed may be tried again, and how many times it failed.
        let mut due: HashMap<String, (Instant, u32)> = HashMap::new();
        let mut given_up: HashSet<String> = HashSet::new();
        loop {
            let store = self.store.clone();
            // Records that do not parse are logged by the store and left.
            let mut pending = match blocking(move || Ok(store.outbox_records()?)).await {
                Ok(records) => records,
                Err(e) => {
                    tracing::error!(error = %e, "cannot read the outbox");
                    Vec::new()
                }
            };
            // Oldest first, and one at a time per artifact: versions are numbered upstream
            // in the order they were published here.
            pending.sort_by_key(|(_, p)| p.created_ms);
            let mut blocked: HashSet<(String, String, String)> = HashSet::new();
            let mut next: Option<Instant> = None;
            for (key, record) in pending {
                let artifact = (
                    record.entity.clone(),
                    record.project.clone(),
                    record.name.clone(),
                );
                if blocked.contains(&artifact) {
                    continue;
                }
                // Refused in this run of the daemon: wait for a restart or a new publish.
                if record.failed && given_up.contains(&key) {
                    blocked.insert(artifact);
                    continue;
                }
                if let Some((at, _)) = due.get(&key)
                    && *at > Instant::now()
                {
                    next = Some(next.map_or(*at, |n| n.min(*at)));
                    blocked.insert(artifact);
                    continue;
                }
                match self.attempt(publisher.as_ref(), &key, record).await {
                    Ok(()) => {
                        due.remove(&key);
                        given_up.remove(&key);
                    }
                    Err(refused) => {
                        blocked.insert(artifact);
                        if refused {
                            given_up.insert(key);
                        } else {
                            let failures = due.get(&key).map_or(0, |(_, n)| *n);
                            let at = Instant::now() + RETRY.backoff(failures);
                            due.insert(key, (at, failures.saturating_add(1)));
                            next = Some(next.map_or(at, |n| n.min(at)));
                        }
                    }
                }
                self.changed.send_modify(|n| *n += 1);
            }
            let sleep = next.map_or(RETRY.max, |at| at.saturating_duration_since(Instant::now()));
            tokio::select! {
                () = self.wake.notified() => {}
                () = tokio::time::sleep(sleep) => {}
            }
        }
    }

    /// One try at uploading and committing. `Err(true)` when the upstream refused (do not
    /// retry), `Err(false)` when it may work later.
    async fn attempt(
        &self,
        publisher: &dyn Publisher,
        key: &str,
        mut pending: Pending,
    ) -> Result<(), bool> {
        let mut uploaded = (0, 0);
        let result = self
            .upload_and_commit(publisher, &pending, &mut uploaded)
            .await;
        self.reachability.note(&result);
        pending.uploaded_blobs += uploaded.0;
        pending.uploaded_bytes += uploaded.1;
        match result {
            Ok(version) => {
                let stored = self.record_commit(key, &pending, version.clone()).await;
                match stored {
                    Ok(Outcome::Done) => {}
                    Ok(Outcome::Again) => {
                        tracing::info!(key, "aliases were added during the commit: again");
                        self.wake.notify_one();
                        return Ok(());
                    }
                    Err(e) => {
                        tracing::error!(key, error = %e, "cannot record a committed publish");
                        return Err(false);
                    }
                }
                tracing::info!(
                    key,
                    version = version.version,
                    blobs = uploaded.0,
                    "published"
                );
                let mut done = self.done.lock().unwrap_or_else(PoisonError::into_inner);
                done.0.insert(
                    key.to_owned(),
                    Done {
                        version: version.version,
                        uploaded_blobs: pending.uploaded_blobs,
                        uploaded_bytes: pending.uploaded_bytes,
                    },
                );
                done.1.push(key.to_owned());
                if done.1.len() > REMEMBERED {
                    let old = done.1.remove(0);
                    done.0.remove(&old);
                }
                Ok(())
            }
            Err(e) => {
                let refused = !e.is_unreachable()
                    && !matches!(
                        e,
                        hoard_upstream::Error::Io { .. }
                            | hoard_upstream::Error::MissingBlobs { .. }
                            | hoard_upstream::Error::Protocol { .. }
                    );
                tracing::warn!(key, error = %chain(&e), refused, "publish attempt failed");
                let _ = self.record_failure(key, &pending, chain(&e), refused).await;
                Err(refused)
            }
        }
    }

    /// Caches the committed version and its aliases. The outbox record goes (and the
    /// blobs are unpinned) in the same write, unless a publish added aliases since the
    /// commit was sent: then the record stays, to be committed again.
    async fn record_commit(
        &self,
        key: &str,
        pending: &Pending,
        committed: Version,
    ) -> Result<Outcome, ApiError> {
        let (store, records) = (self.store.clone(), self.records.clone());
        let (key, keys, sent) = (
            key.to_owned(),
            keys(pending),
            pending.commit.aliases.clone(),
        );
        blocking(move || {
            let _records = records.lock().unwrap_or_else(PoisonError::into_inner);
            let added = match store.outbox_record(&key) {
                Ok(Some(now)) => now.commit.aliases.iter().any(|a| !sent.contains(a)),
                Ok(None) | Err(hoard_store::Error::CorruptRecord { .. }) => false,
                Err(e) => return Err(e.into()),
            };
            if added {
                store.put_version(&committed)?;
            } else {
                store.put_published(&committed, &key)?;
                store.unpin(&keys)?;
            }
            let number = committed.number()?;
            let name = committed.artifact()?;
            for alias in &committed.aliases {
                let record = hoard_store::AliasRecord {
                    version: number,
                    digest: committed.digest,
                    resolved_ms: now_ms(),
                };
                store.put_alias(&name, alias, &record)?;
            }
            Ok(if added { Outcome::Again } else { Outcome::Done })
        })
        .await
    }

    /// Records a failed attempt in the outbox record as it is now (a publish may have
    /// added aliases since it was read), if it is still there: a record is never brought
    /// back.
    async fn record_failure(
        &self,
        key: &str,
        attempted: &Pending,
        error: String,
        refused: bool,
    ) -> Result<(), ApiError> {
        let (store, records) = (self.store.clone(), self.records.clone());
        let key = key.to_owned();
        let uploaded = (attempted.uploaded_blobs, attempted.uploaded_bytes);
        blocking(move || {
            let _records = records.lock().unwrap_or_else(PoisonError::into_inner);
            let Some(mut now) = store.outbox_record(&key)? else {
                return Ok(());
            };
            now.attempts += 1;
            (now.uploaded_blobs, now.uploaded_bytes) = uploaded;
            now.last_error = Some(error);
            now.failed = refused;
            store.put_outbox_record(&key, &now)?;
            Ok(())
        })
        .await
    }

    async fn upload_and_commit(
        &self,
        publisher: &dyn Publisher,
        pending: &Pending,
        uploaded: &mut (u64, u64),
    ) -> Result<Version, hoard_upstream::Error> {
        let name = ArtifactName::new(&pending.entity, &pending.project, &pending.name)?;
        let mut sizes: HashMap<Digest, (BlobKey, u64)> = HashMap::new();
        for entry in pending.commit.manifest.entries.values() {
            sizes.insert(
                entry.digest,
                (BlobKey::new(entry.digest, entry.exec), entry.size),
            );
        }
        let digests: Vec<Digest> = sizes.keys().copied().collect();
        let missing = publisher.missing_blobs(&digests).await?;
        let counts = Mutex::new((0u64, 0u64));
        futures_util::stream::iter(missing)
            .map(|digest| {
                let (key, size) = sizes
                    .get(&digest)
                    .copied()
                    .unwrap_or((BlobKey::new(digest, false), 0));
                let path = self.store.blob_path(&key);
                let counts = &counts;
                async move {
                    publisher.upload_blob(&digest, &path).await?;
                    let mut c = counts.lock().unwrap_or_else(PoisonError::into_inner);
                    c.0 += 1;
                    c.1 += size;
                    Ok::<_, hoard_upstream::Error>(())
                }
            })
            .buffer_unordered(UPLOADS)
            .try_collect::<()>()
            .await
            .inspect_err(|_| *uploaded = *counts.lock().unwrap_or_else(PoisonError::into_inner))?;
        *uploaded = counts.into_inner().unwrap_or_else(PoisonError::into_inner);
        let committed = publisher.commit(&name, &pending.commit).await?;
        if committed.version.digest != pending.digest {
            return Err(hoard_upstream::Error::Protocol {
                upstream: self.describe.clone(),
                reason: format!(
                    "committed manifest `{}` came back as `{}`",
                    pending.digest, committed.version.digest
                ),
            });
        }
        Ok(committed.version)
    }

    /// Records a publish (pinning its blobs) unless it is already pending, and wakes the
    /// task.
    pub(crate) async fn enqueue(&self, key: String, pending: Pending) -> Result<(), ApiError> {
        // A waiter must see this publish's outcome, not an earlier one of the same content.
        self.done
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .0
            .remove(&key);
        let store = self.store.clone();
        let records = self.records.clone();
        blocking(move || {
            let _records = records.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(mut existing) = store.outbox_record(&key)? {
                // The same content again: keep the record (and its pins), add aliases,
                // and try again now even if it had failed.
                for alias in pending.commit.aliases {
                    if !existing.commit.aliases.contains(&alias) {
                        existing.commit.aliases.push(alias);
                    }
                }
                existing.failed = false;
                store.put_outbox_record(&key, &existing)?;
            } else {
                store.pin(&keys(&pending))?;
                store.put_outbox_record(&key, &pending)?;
            }
            Ok(())
        })
        .await?;
        self.wake.notify_one();
        Ok(())
    }

    /// Waits until the publish `key` is committed (its version and upload counts), refused,
    /// or `timeout` passes (`None`).
    pub(crate) async fn wait(
        &self,
        key: &str,
        name: &ArtifactName,
        digest: &Digest,
        timeout: Duration,
        // Stop once an attempt beyond this many has failed.
        one_attempt: Option<u32>,
    ) -> Result<Option<Done>, ApiError> {
        let deadline = Instant::now() + timeout;
        let mut changed = self.changed.subscribe();
        loop {
            if let Some(done) = self
                .done
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .0
                .get(key)
            {
                return Ok(Some(done.clone()));
            }
            let record = self.record(key).await?;
            if let Some(pending) = &record
                && pending.failed
            {
                return Err(ApiError::new(
                    http::StatusCode::BAD_GATEWAY,
                    "publish-refused",
                    format!(
                        "the upstream refused the publish: {}",
                        pending.last_error.as_deref().unwrap_or("no reason given")
                    ),
                ));
            }
            if let (Some(before), Some(record)) = (one_attempt, &record)
                && record.attempts > before
            {
                return Ok(None);
            }
            if record.is_none() {
                // Committed just now, or by an earlier run of the daemon.
                if let Some(done) = self
                    .done
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .0
                    .get(key)
                {
                    return Ok(Some(done.clone()));
                }
                let (store, name, digest) = (self.store.clone(), name.clone(), *digest);
                let known = blocking(move || Ok(store.version_by_digest(&digest)?)).await?;
                return Ok(known
                    .filter(|v| v.artifact().is_ok_and(|a| a == name))
                    .map(|v| Done {
                        version: v.version,
                        uploaded_blobs: 0,
                        uploaded_bytes: 0,
                    }));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            let _ = tokio::time::timeout(left, changed.changed()).await;
        }
    }

    /// The publishes of `name` waiting here, oldest first.
    pub(crate) async fn pending_of(&self, name: &ArtifactName) -> Result<Vec<Pending>, ApiError> {
        let (store, name) = (self.store.clone(), name.clone());
        let mut pending: Vec<Pending> = blocking(move || {
            Ok(store
                .outbox_records()?
                .into_iter()
                .map(|(_, record)| record)
                .filter(|r| {
                    r.entity == name.entity && r.project == name.project && r.name == name.name
                })
                .collect())
        })
        .await?;
        pending.sort_by_key(|r| r.created_ms);
        Ok(pending)
    }

    /// The newest publish of `name` waiting here that gave it `alias` (`latest`: any).
    pub(crate) async fn pending_alias(
        &self,
        name: &ArtifactName,
        alias: &str,
    ) -> Result<Option<Pending>, ApiError> {
        Ok(self.pending_of(name).await?.into_iter().rev().find(|r| {
            alias == hoard_types::Selector::LATEST || r.commit.aliases.iter().any(|a| a == alias)
        }))
    }

    pub(crate) async fn record(&self, key: &str) -> Result<Option<Pending>, ApiError> {
        let (store, key) = (self.store.clone(), key.to_owned());
        blocking(move || Ok(store.outbox_record(&key)?)).await
    }

    /// What `status` lists.
    pub(crate) async fn pending(&self) -> Result<Vec<PendingUpload>, ApiError> {
        let store = self.store.clone();
        blocking(move || {
            Ok(store
                .outbox_records()?
                .into_iter()
                .map(|(_, p)| PendingUpload {
                    artifact: format!("{}/{}/{}", p.entity, p.project, p.name),
                    digest: p.digest,
                    attempts: p.attempts,
                    state: if p.failed { "failed" } else { "retrying" }.to_owned(),
                    last_error: p.last_error,
                })
                .collect())
        })
        .await
    }
}
