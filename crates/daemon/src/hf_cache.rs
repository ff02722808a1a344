//! `get --hf-cache`: a Hub version's files, bound and fetched like any foreign version's,
//! then filled into a Hugging Face cache directory in `huggingface_hub`'s own layout (see
//! `hoard_store`'s `hf_cache.rs`), as the caller. Unmodified `huggingface_hub` and
//! `transformers` code then finds them with no download, and the users of one machine
//! share one copy of each file.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use hoard_store::{BlobKey, HfSnapshot};
use hoard_types::api::{Event, Summary};
use hoard_types::foreign::is_commit;
use tokio::sync::mpsc;

use crate::caller::Caller;
use crate::daemon::Daemon;
use crate::error::ApiError;
use crate::runtime::blocking;
use crate::version::{Found, Selection, Versioned, blob_keys};

impl Daemon {
    /// Fills the version `found` (a Hub commit; `revision`: the branch or tag asked for)
    /// into the HF cache at `cache`, and answers with the snapshot folder as `dest`.
    pub(crate) async fn fill_hf_cache(
        self: &Arc<Self>,
        found: &Found,
        selection: &Selection<'_>,
        caller: Caller,
        cache: &Path,
        revision: Option<String>,
        events: &mpsc::Sender<Event>,
    ) -> Result<Summary, ApiError> {
        let start = Instant::now();
        let version = match &found.version {
            Versioned::Foreign(version, _)
                if is_commit(&version.version)
                    && matches!(version.entity.as_str(), "models" | "datasets") =>
            {
                version
            }
            _ => {
                return Err(ApiError::bad_request(
                    "`--hf-cache` fills the Hugging Face cache from a version of the Hub; this daemon's upstream is not the Hub (`--upstream hf`)",
                ));
            }
        };
        // `models--ORG--NAME`, or `models--NAME` for a repo without an owner, as
        // `huggingface_hub` names the folder after the repo id it was given.
        let folder = format!(
            "{}--{}",
            version.entity,
            hoard_types::foreign::hub_repo_id(&version.project, &version.name).replace('/', "--")
        );
        let mut attempt = 0;
        loop {
            let (manifest, fetched_blobs, fetched_bytes) =
                self.bind(version, selection, caller, events).await?;
            let _lease = self.store.lease(blob_keys(&manifest));
            let files = manifest
                .entries
                .iter()
                .map(|(path, entry)| {
                    let hub = version.entries.get(path).ok_or_else(|| {
                        ApiError::internal(format!("`{path}` is bound but not in the version"))
                    })?;
                    let digest = hub.digest.to_string();
                    let etag = digest
                        .split_once(':')
                        .map_or(digest.as_str(), |(_, hex)| hex);
                    Ok((
                        path.clone(),
                        etag.to_owned(),
                        BlobKey::new(entry.digest, entry.exec),
                    ))
                })
                .collect::<Result<Vec<_>, ApiError>>()?;
            let snapshot = HfSnapshot {
                folder: folder.clone(),
                commit: version.version.clone(),
                revision: revision.clone(),
                files,
                tree: tree_listing(version),
            };
            let (store, path) = (self.store.clone(), cache.to_owned());
            let filled = blocking(move || {
                Ok(if caller.is_daemon_user() {
                    store.fill_hf_cache_at(&path, &snapshot)?
                } else {
                    let user = crate::caller::act_as(caller)?;
                    store.fill_hf_cache(hoard_store::DestRoot::open_as(path, user)?, &snapshot)?
                })
            })
            .await;
            let report = match filled {
                // A blob tampered with or evicted meanwhile: bind again (which fetches it),
                // once.
                Err(e) if attempt == 0 && matches!(e.kind, "tampered" | "not-cached") => {
                    attempt += 1;
                    continue;
                }
                other => other?,
            };
            let snapshot_dir = cache.join(&folder).join("snapshots").join(&version.version);
            return Ok(Summary {
                entity: version.entity.clone(),
                project: version.project.clone(),
                name: version.name.clone(),
                version: version.version.clone(),
                digest: found.head().digest,
                dest: Some(snapshot_dir.display().to_string()),
                files: manifest.entries.len() as u64,
                bytes: manifest.total_size(),
                fetched_blobs,
                fetched_bytes,
                placed: report.linked + report.symlinks,
                unchanged: report.kept,
                removed: 0,
                mode: Some("hf-cache".to_owned()),
                seconds: start.elapsed().as_secs_f64(),
                dry_run: false,
                planned: Vec::new(),
            });
        }
    }
}

/// The commit's whole tree listing as `huggingface_hub` caches it (its `_tree_cache.py`,
/// format 1): each file's size and git blob id, and for an LFS file its SHA-256. `None`
/// when an LFS file's blob id is not known (a version resolved by an older hoard).
fn tree_listing(version: &hoard_types::ForeignVersion) -> Option<String> {
    let mut files = serde_json::Map::new();
    for (path, entry) in &version.entries {
        let digest = entry.digest.to_string();
        let (kind, hex) = digest.split_once(':')?;
        let info = match kind {
            "gitsha1" => serde_json::json!({"size": entry.size, "blob_id": hex}),
            "sha256" => serde_json::json!({
                "size": entry.size, "blob_id": entry.blob_id.as_deref()?,
                "lfs_sha256": hex, "lfs_size": entry.size,
            }),
            _ => return None,
        };
        files.insert(path.to_string(), info);
    }
    Some(serde_json::json!({"format_version": 1, "files": files}).to_string())
}
