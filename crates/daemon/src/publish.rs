//! Publishing (W&B's create-and-use): local files become a version on this machine at once,
//! and upstream as soon as the upstream takes it.
//!
//! A publish hashes and copies its inputs into the cache (reflink where the filesystem
//! can; never a hardlink, so a later edit of a source file cannot change a blob), builds
//! the manifest, and records the publish in the outbox (`outbox.rs`), which takes it
//! upstream. An upstream that takes no publishes (W&B) refuses a publish up front.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hoard_layout::local::{self, LocalInput};
use hoard_store::{LinkMode, Store};
use hoard_types::api::{PublishRequest, Published};
use hoard_types::registry::CommitRequest;
use hoard_types::{ArtifactName, ArtifactRef, Entry, Manifest};

use crate::daemon::Daemon;
use crate::error::ApiError;
use crate::outbox::{Pending, outbox_key};
use crate::runtime::{blocking, now_ms};

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
        if !self.outbox.takes_publishes() {
            return Err(ApiError::new(
                http::StatusCode::NOT_IMPLEMENTED,
                "publish-unsupported",
                format!(
                    "the upstream `{}` takes no publishes from hoard: publish with its own tools (for W&B, `wandb artifact put` or `run.log_artifact` of the wandb SDK), then get the artifact through hoard",
                    self.outbox.describe()
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
        self.fetcher.offer_published(&manifest);
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
        let manifest = crate::version::Selected::part(pending.commit.manifest.clone());
        let attempts_before = self.outbox.record(&key).await?.map_or(0, |r| r.attempts);
        self.outbox.enqueue(key.clone(), pending).await?;
        tracing::info!(key, files, bytes, "publish recorded");
        if let Some(dest) = &dest {
            let target = Arc::new(crate::materialize::Target::Path(dest.clone()));
            let mut retried = crate::materialize::Retried::default();
            self.place(
                manifest,
                target,
                mode,
                crate::caller::Caller::daemon(),
                &mut retried,
            )
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
    use hoard_store::BlobKey;
    use hoard_types::registry::Committed;
    use hoard_types::{Digest, Selector};
    use hoard_upstream::{BoxFuture, Error, Publisher, Upstream};
    use tokio::sync::{Semaphore, mpsc};
    use tokio::time::Instant;

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
