//! Publishing (W&B's create-and-use): local files become a version on this machine at once,
//! and upstream as soon as the upstream takes it.
//!
//! A publish hashes and copies its inputs into the cache (reflink where the filesystem
//! can; never a hardlink, so a later edit of a source file cannot change a blob), builds
//! the manifest, and records the publish in the outbox, a column family of the index,
//! under `entity/project/name@digest`, with its blobs pinned. From then on `NAME@DIGEST`
//! materializes on this machine. The [`Outbox`] task uploads what the upstream lacks
//! (`missing_blobs`, then the uploads, which the upstream verifies) and commits the
//! manifest; the upstream's commit is idempotent, so publishing identical content twice
//! gives one version and uploads nothing the second time. Publishing identical content
//! while it is pending adds its aliases to the record. When a commit succeeds, the version
//! is cached under its number and the outbox record goes, in one index write, and the
//! blobs are unpinned; if aliases were added while the commit was in flight, the record
//! stays and is committed again. When the upstream cannot be reached or fails, the attempt is
//! repeated with backoff (1 s doubling to 5 min), also after a daemon restart; when it
//! refuses (a viewer's token, a bad request), the publish is marked failed and retried
//! only when the daemon restarts.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::{StreamExt, TryStreamExt};
use hoard_layout::local::{self, LocalInput};
use hoard_store::{BlobKey, LinkMode, Store, Table};
use hoard_types::api::{PendingUpload, PublishRequest, Published};
use hoard_types::registry::CommitRequest;
use hoard_types::{ArtifactName, ArtifactRef, Digest, Entry, Manifest, Version};
use hoard_upstream::{Publisher, Upstream};
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use crate::daemon::{Daemon, blocking, now_ms};
use crate::error::{ApiError, chain};

/// Uploads of one publish at the same time.
const UPLOADS: usize = 4;
/// Backoff between attempts: doubling from the first to the last.
const BACKOFF_FIRST: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(300);
/// Committed publishes remembered for waiters (the newest ones).
const REMEMBERED: usize = 1024;

/// One outbox record, as JSON in the store's outbox.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Pending {
    entity: String,
    project: String,
    name: String,
    digest: Digest,
    commit: CommitRequest,
    created_ms: u64,
    #[serde(default)]
    attempts: u32,
    #[serde(default)]
    uploaded_blobs: u64,
    #[serde(default)]
    uploaded_bytes: u64,
    #[serde(default)]
    last_error: Option<String>,
    /// The upstream refused it: retried when the daemon restarts.
    #[serde(default)]
    failed: bool,
}

impl Pending {
    fn keys(&self) -> Vec<BlobKey> {
        let mut keys: Vec<BlobKey> = self
            .commit
            .manifest
            .entries
            .values()
            .map(|e| BlobKey::new(e.digest, e.exec))
            .collect();
        keys.sort_unstable_by_key(|k| (k.digest, k.exec));
        keys.dedup();
        keys
    }

    /// The version as this machine knows it before the upstream numbered it.
    pub(crate) fn local_version(&self) -> Version {
        Version {
            entity: self.entity.clone(),
            project: self.project.clone(),
            name: self.name.clone(),
            version: PENDING.to_owned(),
            digest: self.digest,
            aliases: Vec::new(),
            kind: self.commit.kind.clone(),
            metadata: self.commit.metadata.clone(),
            created_at: None,
            manifest: self.commit.manifest.clone(),
        }
    }
}

/// The version label of a publish not yet committed upstream.
pub(crate) const PENDING: &str = "pending";

/// The outbox key of a publish.
pub(crate) fn outbox_key(name: &ArtifactName, digest: &Digest) -> String {
    format!("{name}@{digest}")
}

/// A publish that reached the upstream, for those waiting on it.
#[derive(Clone)]
struct Done {
    version: String,
    uploaded_blobs: u64,
    uploaded_bytes: u64,
}

/// The task that empties the outbox; see the module docs.
pub(crate) struct Outbox {
    store: Arc<Store>,
    /// Where publishes go: `None` for an upstream that takes none (W&B), whose records
    /// stay in the outbox until the daemon runs with one that does.
    upstream: Option<Arc<dyn Publisher>>,
    /// The upstream, for messages.
    describe: String,
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
    pub(crate) fn start(store: Arc<Store>, upstream: &Upstream) -> Arc<Self> {
        let outbox = Arc::new(Self {
            store,
            upstream: upstream.publisher(),
            describe: upstream.describe(),
            wake: Notify::new(),
            changed: watch::channel(0).0,
            done: Mutex::default(),
            records: Arc::default(),
        });
        tokio::spawn(outbox.clone().run());
        outbox
    }

    async fn run(self: Arc<Self>) {
        let Some(publisher) = self.upstream.clone() else {
            let store = self.store.clone();
            if let Ok(waiting) = blocking(move || Ok(store.count_records(Table::Outbox, "")?)).await
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
        let mut due: HashMap<String, (Instant, Duration)> = HashMap::new();
        let mut given_up: HashSet<String> = HashSet::new();
        loop {
            let store = self.store.clone();
            let records = match blocking(move || Ok(store.records(Table::Outbox)?)).await {
                Ok(records) => records,
                Err(e) => {
                    tracing::error!(error = %e, "cannot read the outbox");
                    Vec::new()
                }
            };
            // Oldest first, and one at a time per artifact: versions are numbered upstream
            // in the order they were published here.
            let mut pending: Vec<(String, Pending)> = Vec::new();
            for (key, value) in records {
                match serde_json::from_slice::<Pending>(&value) {
                    Ok(record) => pending.push((key, record)),
                    Err(e) => {
                        tracing::error!(key, error = %e, "an outbox record does not parse; leaving it");
                    }
                }
            }
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
                            let delay = due
                                .get(&key)
                                .map_or(BACKOFF_FIRST, |(_, d)| (*d * 2).min(BACKOFF_MAX));
                            let at = Instant::now() + delay;
                            due.insert(key, (at, delay));
                            next = Some(next.map_or(at, |n| n.min(at)));
                        }
                    }
                }
                self.changed.send_modify(|n| *n += 1);
            }
            let sleep = next.map_or(BACKOFF_MAX, |at| {
                at.saturating_duration_since(Instant::now())
            });
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
            pending.keys(),
            pending.commit.aliases.clone(),
        );
        blocking(move || {
            let _records = records.lock().unwrap_or_else(PoisonError::into_inner);
            let added = match store.get_record(Table::Outbox, &key)? {
                Some(json) => serde_json::from_slice::<Pending>(&json)
                    .is_ok_and(|now| now.commit.aliases.iter().any(|a| !sent.contains(a))),
                None => false,
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
            let Some(json) = store.get_record(Table::Outbox, &key)? else {
                return Ok(());
            };
            let mut now: Pending = serde_json::from_slice(&json)
                .map_err(|e| ApiError::internal(format!("outbox record `{key}`: {e}")))?;
            now.attempts += 1;
            (now.uploaded_blobs, now.uploaded_bytes) = uploaded;
            now.last_error = Some(error);
            now.failed = refused;
            let json = serde_json::to_vec(&now).expect("a record serializes");
            store.put_record(Table::Outbox, &key, &json)?;
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
    async fn enqueue(&self, key: String, pending: Pending) -> Result<(), ApiError> {
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
            if let Some(existing) = store.get_record(Table::Outbox, &key)? {
                // The same content again: keep the record (and its pins), add aliases,
                // and try again now even if it had failed.
                let mut existing: Pending = serde_json::from_slice(&existing)
                    .map_err(|e| ApiError::internal(format!("outbox record `{key}`: {e}")))?;
                for alias in pending.commit.aliases {
                    if !existing.commit.aliases.contains(&alias) {
                        existing.commit.aliases.push(alias);
                    }
                }
                existing.failed = false;
                let json = serde_json::to_vec(&existing).expect("a record serializes");
                store.put_record(Table::Outbox, &key, &json)?;
            } else {
                store.pin(&pending.keys())?;
                let json = serde_json::to_vec(&pending).expect("a record serializes");
                store.put_record(Table::Outbox, &key, &json)?;
            }
            Ok(())
        })
        .await?;
        self.wake.notify_one();
        Ok(())
    }

    /// Waits until the publish `key` is committed (its version and upload counts), refused,
    /// or `timeout` passes (`None`).
    async fn wait(
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

    pub(crate) async fn record(&self, key: &str) -> Result<Option<Pending>, ApiError> {
        let (store, key) = (self.store.clone(), key.to_owned());
        blocking(move || {
            store
                .get_record(Table::Outbox, &key)?
                .map(|json| {
                    serde_json::from_slice(&json)
                        .map_err(|e| ApiError::internal(format!("outbox record `{key}`: {e}")))
                })
                .transpose()
        })
        .await
    }

    /// What `status` lists.
    pub(crate) async fn pending(&self) -> Result<Vec<PendingUpload>, ApiError> {
        let store = self.store.clone();
        blocking(move || {
            Ok(store
                .records(Table::Outbox)?
                .into_iter()
                .filter_map(|(_, json)| serde_json::from_slice::<Pending>(&json).ok())
                .map(|p| PendingUpload {
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

/// A publish request, checked.
struct Checked {
    name: ArtifactName,
    inputs: Vec<LocalInput>,
    metadata: serde_json::Value,
    mode: LinkMode,
    dest: Option<PathBuf>,
}

fn check(asked: &PublishRequest) -> Result<Checked, ApiError> {
    if asked.artifact.contains([':', '@']) {
        return Err(ApiError::bad_request(format!(
            "publish names an artifact, not a version: `{}` has a `:` or `@`",
            hoard_types::truncate(&asked.artifact)
        )));
    }
    let reference: ArtifactRef = asked.artifact.parse()?;
    let name = reference.qualify(asked.entity.as_deref(), asked.project.as_deref())?;
    for alias in &asked.aliases {
        hoard_types::check_alias(alias)?;
    }
    let metadata = asked
        .metadata
        .clone()
        .unwrap_or_else(|| serde_json::json!({}));
    if !metadata.is_object() {
        return Err(ApiError::bad_request("`metadata` must be a JSON object"));
    }
    let mode: LinkMode = match &asked.mode {
        Some(mode) => mode.parse().map_err(|e: String| ApiError::bad_request(e))?,
        None => LinkMode::Auto,
    };
    if asked.inputs.is_empty() {
        return Err(ApiError::bad_request("nothing to publish: no input paths"));
    }
    let inputs: Vec<LocalInput> = asked.inputs.iter().map(|i| LocalInput::parse(i)).collect();
    if let Some(relative) = inputs.iter().find(|i| !i.path.is_absolute()) {
        return Err(ApiError::bad_request(format!(
            "input paths must be absolute, not `{}`",
            relative.path.display()
        )));
    }
    let dest = asked.dest.as_deref().map(PathBuf::from);
    if let Some(dest) = dest.as_ref().filter(|d| !d.is_absolute()) {
        return Err(ApiError::bad_request(format!(
            "`dest` must be an absolute path, not `{}`",
            dest.display()
        )));
    }
    Ok(Checked {
        name,
        inputs,
        metadata,
        mode,
        dest,
    })
}

/// Hashes and copies the inputs into the cache (one `syncfs` for all): their manifest.
async fn ingest(store: Arc<Store>, inputs: Vec<LocalInput>) -> Result<Manifest, ApiError> {
    let manifest = blocking(move || {
        let files = local::collect(&inputs).map_err(|e| {
            ApiError::new(
                http::StatusCode::UNPROCESSABLE_ENTITY,
                "bad-input",
                e.to_string(),
            )
        })?;
        let paths: Vec<PathBuf> = files.iter().map(|f| f.path.clone()).collect();
        let ingested = store.ingest_files(&paths)?;
        let mut manifest = Manifest::new();
        for (file, blob) in files.into_iter().zip(ingested) {
            manifest.entries.insert(
                file.logical,
                Entry {
                    digest: blob.key.digest,
                    exec: blob.key.exec,
                    reference: None,
                    size: blob.size,
                },
            );
        }
        Ok(manifest)
    })
    .await?;
    manifest.validate()?;
    Ok(manifest)
}

impl Daemon {
    /// A publish: see the module docs.
    pub(crate) async fn publish(
        self: &Arc<Self>,
        asked: PublishRequest,
    ) -> Result<Published, ApiError> {
        if self.outbox.upstream.is_none() {
            return Err(ApiError::new(
                http::StatusCode::NOT_IMPLEMENTED,
                "publish-unsupported",
                format!(
                    "the upstream `{}` takes no publishes from hoard: publish with its own tools (for W&B, `wandb artifact put` or `run.log_artifact` of the wandb SDK), then get the artifact through hoard",
                    self.outbox.describe
                ),
            ));
        }
        let Checked {
            name,
            inputs,
            metadata,
            mode,
            dest,
        } = check(&asked)?;
        let manifest = ingest(self.store.clone(), inputs).await?;
        let digest = manifest.digest();
        let (files, bytes) = (manifest.entries.len() as u64, manifest.total_size());
        let pending = Pending {
            entity: name.entity.clone(),
            project: name.project.clone(),
            name: name.name.clone(),
            digest,
            commit: CommitRequest {
                manifest,
                aliases: asked.aliases,
                kind: asked.kind,
                metadata,
            },
            created_ms: now_ms(),
            attempts: 0,
            uploaded_blobs: 0,
            uploaded_bytes: 0,
            last_error: None,
            failed: false,
        };
        let key = outbox_key(&name, &digest);
        let manifest = Arc::new(pending.commit.manifest.clone());
        let attempts_before = self.outbox.record(&key).await?.map_or(0, |r| r.attempts);
        self.outbox.enqueue(key.clone(), pending).await?;
        tracing::info!(key, files, bytes, "publish recorded");
        if let Some(dest) = &dest {
            let target = Arc::new(crate::daemon::Target::Path(dest.clone()));
            self.place(manifest, target, mode, crate::caller::Caller::daemon())
                .await?;
        }
        let wait = Duration::from_secs(asked.wait_seconds.unwrap_or(0));
        let done = if wait.is_zero() {
            None
        } else {
            self.outbox
                .wait(
                    &key,
                    &name,
                    &digest,
                    wait,
                    asked.wait_one_attempt.then_some(attempts_before),
                )
                .await?
        };
        let record = match &done {
            Some(_) => None,
            None => self.outbox.record(&key).await?,
        };
        let (uploaded_blobs, uploaded_bytes) = match (&done, &record) {
            (Some(d), _) => (d.uploaded_blobs, d.uploaded_bytes),
            (None, Some(r)) => (r.uploaded_blobs, r.uploaded_bytes),
            (None, None) => (0, 0),
        };
        Ok(Published {
            entity: name.entity,
            project: name.project,
            name: name.name,
            digest,
            state: if done.is_some() {
                "committed"
            } else {
                "pending"
            }
            .to_owned(),
            version: done.map(|d| d.version),
            uploaded_blobs,
            uploaded_bytes,
            files,
            bytes,
            dest: dest.map(|d| d.display().to_string()),
            last_error: record.and_then(|r| r.last_error),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use hoard_layout::DirRoot;
    use hoard_types::Selector;
    use hoard_types::registry::Committed;
    use hoard_upstream::{BoxFuture, Error};
    use tokio::sync::{Semaphore, mpsc};

    use super::*;

    /// Publishes to a `dir://` root whose commits wait at a gate, announcing that they
    /// arrived.
    struct Gated {
        inner: Arc<DirRoot>,
        arrived: mpsc::UnboundedSender<()>,
        gate: Semaphore,
    }

    impl Publisher for Gated {
        fn missing_blobs<'a>(
            &'a self,
            digests: &'a [Digest],
        ) -> BoxFuture<'a, Result<Vec<Digest>, Error>> {
            self.inner.missing_blobs(digests)
        }
        fn upload_blob<'a>(
            &'a self,
            digest: &'a Digest,
            file: &'a Path,
        ) -> BoxFuture<'a, Result<(), Error>> {
            self.inner.upload_blob(digest, file)
        }
        fn commit<'a>(
            &'a self,
            name: &'a ArtifactName,
            request: &'a CommitRequest,
        ) -> BoxFuture<'a, Result<Committed, Error>> {
            Box::pin(async move {
                let _ = self.arrived.send(());
                self.gate.acquire().await.expect("open").forget();
                Publisher::commit(self.inner.as_ref(), name, request).await
            })
        }
        fn set_alias<'a>(
            &'a self,
            name: &'a ArtifactName,
            alias: &'a str,
            version: u32,
        ) -> BoxFuture<'a, Result<(), Error>> {
            Publisher::set_alias(self.inner.as_ref(), name, alias, version)
        }
    }

    /// The same content published again with another alias while the first commit is in
    /// flight: the second alias reaches the upstream too.
    #[tokio::test]
    async fn an_alias_added_while_the_commit_is_in_flight_is_committed_too() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("weights.bin");
        std::fs::write(&file, b"weights").unwrap();
        let root = Arc::new(DirRoot::create(dir.path().join("up")).unwrap());
        let (arrived, mut commits) = mpsc::unbounded_channel();
        let upstream = Arc::new(Gated {
            inner: root.clone(),
            arrived,
            gate: Semaphore::new(0),
        });
        let store = Store::open(dir.path().join("cache")).unwrap();
        let daemon = Arc::new(Daemon::new(
            store,
            Upstream::Native {
                catalog: root.clone(),
                publisher: Some(upstream.clone()),
            },
            crate::Options::default(),
        ));
        let publish = |alias: &str| PublishRequest {
            artifact: "acme/models/net".to_owned(),
            entity: None,
            project: None,
            inputs: vec![file.display().to_string()],
            kind: None,
            aliases: vec![alias.to_owned()],
            metadata: None,
            dest: None,
            mode: None,
            wait_seconds: None,
            wait_one_attempt: false,
        };
        daemon.publish(publish("first")).await.unwrap();
        commits.recv().await.unwrap();
        daemon.publish(publish("second")).await.unwrap();
        upstream.gate.add_permits(100);

        let deadline = Instant::now() + Duration::from_secs(20);
        while !daemon.outbox.pending().await.unwrap().is_empty() {
            assert!(Instant::now() < deadline, "the outbox never emptied");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let name = ArtifactName::new("acme", "models", "net").unwrap();
        for alias in ["first", "second", "latest"] {
            let version = root
                .resolve(&name, &Selector::Alias(alias.to_owned()))
                .unwrap_or_else(|e| panic!("`{alias}` upstream: {e}"));
            assert_eq!(version.version, "v0", "{alias}");
            assert!(
                daemon.store.alias(&name, alias).unwrap().is_some(),
                "`{alias}` in the cache"
            );
        }
        let pins: u32 = daemon
            .store
            .record(&BlobKey::new(Digest::of(b"weights"), false))
            .unwrap()
            .unwrap()
            .pins;
        assert_eq!(pins, 0, "the publish's pins were released");
    }
}
