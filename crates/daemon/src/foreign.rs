//! Versions of a foreign upstream (W&B), whose manifests name files by MD5.
//!
//! The resolver keeps each [`ForeignVersion`] it resolved in the store (see
//! `hoard_store`'s `tables.rs`), so a warm request for `name:vN` or `name@digest` makes no
//! network call. A request binds the entries it
//! selects to blobs: the index maps each MD5 it has seen to a blake3 digest; a file never
//! seen, or whose blob was evicted, is fetched (asking the upstream for the URLs of just
//! those files) and checked against its MD5 while it is hashed. The bound entries make an
//! ordinary [`Manifest`] that is materialized like any other.
//!
//! Knowing an MD5 is not having the bytes: anyone can log a W&B manifest that names any
//! MD5. So for a caller who is not the daemon's user, a binding counts only once the
//! bytes were downloaded within the version's own project ([`Provenance::Project`]);
//! until then the file is fetched from the version's own source, like an unseen one.

use std::collections::HashMap;
use std::sync::Arc;

use futures_util::StreamExt;
use hoard_store::{BlobKey, Provenance};
use hoard_types::api::Event;
use hoard_types::{Digest, Entry, ForeignDigest, ForeignEntry, ForeignVersion, Manifest, RelPath};
use hoard_upstream::ForeignCatalog;
use tokio::sync::mpsc;

use crate::caller::Caller;
use crate::daemon::Daemon;
use crate::drive::{FETCH_WINDOW, Got};
use crate::error::ApiError;
use crate::runtime::blocking;
use crate::version::{Selection, select_entries};

/// A fetched file: its entry, its blob, the bytes downloaded.
type Fetched = Got<(ForeignDigest, Digest)>;

/// Where the files a request fetches come from, asked of the upstream once.
type Sources = tokio::sync::OnceCell<Vec<Arc<dyn hoard_upstream::FileSource>>>;

impl Daemon {
    /// Binds the entries of `version` that `selection` selects to blobs, fetching those
    /// never seen or evicted; returns the bound manifest and (blobs, bytes) fetched.
    pub(crate) async fn bind(
        self: &Arc<Self>,
        version: &Arc<ForeignVersion>,
        selection: &Selection<'_>,
        caller: Caller,
        events: &mpsc::Sender<Event>,
    ) -> Result<(Manifest, u64, u64), ApiError> {
        let selected = select_entries(&version.entries, selection)?;
        for (path, entry) in &selected {
            if let Some(uri) = &entry.reference {
                crate::references::source(&self.references, caller, path, uri)?;
            }
        }
        let project = Provenance::Project(format!("{}/{}", version.entity, version.project));
        let shared = !caller.is_daemon_user();
        let (mut bound, need) = self.lookup(&selected, &project, shared).await?;
        let mut fetched = (0, 0);
        if !need.is_empty() {
            let hoard_upstream::Upstream::Foreign(foreign) = self.upstream().clone() else {
                return Err(ApiError::internal(
                    "a foreign version without a foreign upstream",
                ));
            };
            let what = format!(
                "`{}/{}/{}:{}`",
                version.entity, version.project, version.name, version.version
            );
            let (digests, bytes) = self
                .fetch_foreign(foreign, version, &selected, &need, &what, events)
                .await?;
            fetched = bytes;
            let proven: Vec<Digest> = digests.values().copied().collect();
            let store = self.store.clone();
            let scope = project.clone();
            blocking(move || Ok(store.put_provenance(&scope, &proven)?)).await?;
            bound.extend(digests);
        }
        let mut manifest = Manifest::new();
        for (path, entry) in selected {
            let digest = *bound.get(&entry.digest).ok_or_else(|| {
                ApiError::internal(format!("`{path}` was fetched but is not bound"))
            })?;
            manifest.entries.insert(
                path,
                Entry {
                    digest,
                    exec: false,
                    reference: entry.reference,
                    size: entry.size,
                },
            );
        }
        Ok((manifest, fetched.0, fetched.1))
    }

    /// The blobs the index binds the selected entries to, and the entries (one per foreign
    /// digest) that must be fetched: never seen, or evicted since, or (with `shared`, for
    /// a caller who is not the daemon's user) never downloaded within `project`.
    async fn lookup(
        &self,
        selected: &[(RelPath, ForeignEntry)],
        project: &Provenance,
        shared: bool,
    ) -> Result<(HashMap<ForeignDigest, Digest>, Vec<usize>), ApiError> {
        let store = self.store.clone();
        let digests: Vec<ForeignDigest> = selected.iter().map(|(_, e)| e.digest.clone()).collect();
        let project = project.clone();
        let (digests, found) = blocking(move || {
            let refs: Vec<&ForeignDigest> = digests.iter().collect();
            let found = store.foreign_many(&refs)?;
            let keys: Vec<BlobKey> = found
                .iter()
                .flatten()
                .map(|d| BlobKey::new(*d, false))
                .collect();
            let mut absent: std::collections::HashSet<Digest> = store
                .missing(&keys)?
                .into_iter()
                .map(|k| k.digest)
                .collect();
            if shared {
                let present: Vec<Digest> = keys
                    .iter()
                    .map(|k| k.digest)
                    .filter(|d| !absent.contains(d))
                    .collect();
                let proven = store.proven(&project, &present)?;
                absent.extend(
                    present
                        .into_iter()
                        .zip(proven)
                        .filter(|(_, proven)| !proven)
                        .map(|(d, _)| d),
                );
            }
            let found = found
                .into_iter()
                .map(|d| d.filter(|d| !absent.contains(d)))
                .collect::<Vec<_>>();
            Ok((digests, found))
        })
        .await?;
        let mut bound = HashMap::new();
        let mut need = Vec::new();
        let mut asked = std::collections::HashSet::new();
        for (index, (digest, blob)) in digests.into_iter().zip(found).enumerate() {
            match blob {
                Some(blob) => {
                    bound.insert(digest, blob);
                }
                None if asked.insert(digest.clone()) => need.push(index),
                None => {}
            }
        }
        self.hits
            .fetch_add(bound.len() as u64, std::sync::atomic::Ordering::Relaxed);
        self.misses
            .fetch_add(need.len() as u64, std::sync::atomic::Ordering::Relaxed);
        Ok((bound, need))
    }

    /// Fetches the entries `need` (indexes into `selected`), reporting progress. With a
    /// fleet tier, each is asked of the tier first, and the upstream is asked for the
    /// files' sources only once one is missing there: a box whose files are all in the
    /// tier makes no call to the upstream.
    async fn fetch_foreign(
        self: &Arc<Self>,
        foreign: Arc<dyn ForeignCatalog>,
        version: &Arc<ForeignVersion>,
        selected: &[(RelPath, ForeignEntry)],
        need: &[usize],
        what: &str,
        events: &mpsc::Sender<Event>,
    ) -> Result<(HashMap<ForeignDigest, Digest>, (u64, u64)), ApiError> {
        let missing_blobs = need.len() as u64;
        let missing_bytes: u64 = need.iter().map(|&i| selected[i].1.size).sum();
        let claims = need
            .iter()
            .map(|&i| {
                let entry = &selected[i].1;
                (
                    crate::budget::Claim::Foreign(entry.digest.clone()),
                    entry.size,
                )
            })
            .collect();
        let _room = self.keeper.reserve(claims, what, Some(events)).await?;
        let paths: Arc<Vec<RelPath>> =
            Arc::new(need.iter().map(|&i| selected[i].0.clone()).collect());
        let project: Arc<str> = format!("{}/{}", version.entity, version.project).into();
        let tiered = self.fetcher.tier_usable();
        let sources: Arc<Sources> = Arc::default();
        if !tiered {
            let found = self
                .resolver
                .note_upstream(foreign.sources(version, &paths).await)?;
            let _ = sources.set(found);
        }
        let batch = if tiered {
            let files: Vec<&ForeignDigest> = need.iter().map(|&i| &selected[i].1.digest).collect();
            Box::pin(self.fetcher.claim_foreign_batch(&project, &files))
                .await
                .map(Arc::new)
        } else {
            None
        };
        // Boxed futures, collected first: a closure in `StreamExt::map` here trips the
        // compiler's `Send` check of the request task (a higher-ranked lifetime error).
        let receiving = crate::fetch::Receiving::default();
        let work: Vec<hoard_upstream::BoxFuture<'static, Result<Fetched, ApiError>>> = need
            .iter()
            .map(|&index| selected[index].1.clone())
            .enumerate()
            .map(|(n, entry)| {
                let (daemon, project) = (self.clone(), project.clone());
                let (foreign, version) = (foreign.clone(), version.clone());
                let (paths, sources) = (paths.clone(), sources.clone());
                let (receiving, batch) = (receiving.clone(), batch.clone());
                Box::pin(async move {
                    let fetcher = &daemon.fetcher;
                    let ensure = |source| {
                        fetcher.ensure_foreign(
                            entry.digest.clone(),
                            project.clone(),
                            entry.size,
                            source,
                            Some(&receiving),
                        )
                    };
                    let from_tier = if tiered {
                        from_tier(ensure, entry.size, batch.as_deref()).await?
                    } else {
                        None
                    };
                    let (key, downloaded) = if let Some(got) = from_tier {
                        got
                    } else {
                        let sources = sources
                            .get_or_try_init(|| async {
                                daemon
                                    .resolver
                                    .note_upstream(foreign.sources(&version, &paths).await)
                                    .map_err(ApiError::from)
                            })
                            .await?;
                        ensure(Some(sources[n].clone())).await?
                    };
                    Ok(Got {
                        size: entry.size,
                        downloaded,
                        kept: (entry.digest, key.digest),
                    })
                }) as hoard_upstream::BoxFuture<'static, _>
            })
            .collect();
        let work = futures_util::stream::iter(work).buffer_unordered(FETCH_WINDOW);
        let driven = crate::drive::drive(
            &self.fetcher,
            &self.keeper,
            work,
            (missing_blobs, missing_bytes),
            &receiving,
            events,
        )
        .await;
        crate::fetch::Fetcher::end_batch(batch.as_deref());
        let (bound, fetched) = driven?;
        Ok((bound.into_iter().collect(), fetched))
    }
}

/// A file from the tier alone (`ask` asks it), waiting while another box fetches this
/// request's batch; `None`: the tier lacks it.
async fn from_tier<F>(
    ask: impl Fn(Option<Arc<dyn hoard_upstream::FileSource>>) -> F,
    size: u64,
    batch: Option<&crate::fetch::RequestBatch>,
) -> Result<Option<(BlobKey, Option<u64>)>, ApiError>
where
    F: Future<Output = Result<(BlobKey, Option<u64>), ApiError>>,
{
    let mut wait = std::time::Duration::from_millis(20);
    loop {
        match ask(None).await {
            Ok(got) => return Ok(Some(got)),
            // Another box fetching this request's files uploads this one soon.
            Err(e) if e.kind == crate::fetch::TIER_MISS => {
                let waits = match batch {
                    Some(batch) => Box::pin(batch.others_at_work(size)).await,
                    None => false,
                };
                if !waits {
                    return Ok(None);
                }
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(std::time::Duration::from_millis(500));
            }
            Err(e) => return Err(e),
        }
    }
}

/// The entries of a foreign version as `ls` shows them: the blake3 digest of each file
/// the cache has bound, and the upstream's digest.
pub(crate) async fn listed(
    store: &Arc<hoard_store::Store>,
    version: &Arc<ForeignVersion>,
) -> Result<Vec<hoard_types::api::ListedEntry>, ApiError> {
    let (store, version) = (store.clone(), version.clone());
    blocking(move || {
        let digests: Vec<&ForeignDigest> = version.entries.values().map(|e| &e.digest).collect();
        let bound = store.foreign_many(&digests)?;
        Ok(version
            .entries
            .iter()
            .zip(bound)
            .map(|((path, entry), digest)| hoard_types::api::ListedEntry {
                path: path.clone(),
                size: entry.size,
                digest,
                upstream_digest: Some(entry.digest.clone()),
                exec: false,
                reference: entry.reference.clone(),
            })
            .collect())
    })
    .await
}
