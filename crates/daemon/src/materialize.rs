//! Fetch and materialization: the blobs a selection needs are made cached (each fetched
//! once, however many requests want it, within the budget), then linked or copied into
//! the destination, as the caller when the caller is another user.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use futures_util::StreamExt;
use hoard_store::{BlobKey, LinkMode, Provenance};
use hoard_types::api::{Event, ListedEntry, Resolved, Summary};
use hoard_types::{Manifest, PathPrefix, RelPath};
use tokio::sync::mpsc;

use crate::caller::Caller;
use crate::daemon::Daemon;
use crate::drive::{FETCH_WINDOW, Got};
use crate::error::ApiError;
use crate::runtime::blocking;
use crate::version::{Found, Head, Selected, Selection, Versioned, blob_keys, select};

/// What [`Daemon::materialize`] fetches: a native selection, or a foreign version to
/// bind.
enum Chosen<'a> {
    Native(Selected),
    Foreign(&'a Arc<hoard_types::ForeignVersion>),
}

/// What the attempts of [`Daemon::place`] before its last one did: files placed before a
/// modified blob stopped them, and the blobs fetched again.
#[derive(Default)]
pub(crate) struct Retried {
    placed: u64,
    blobs: u64,
    bytes: u64,
}

/// What [`Daemon::fetch_native`] did: the blobs and bytes it fetched, or the files it
/// placed when every blob was cached. `_lease` keeps the version's blobs from eviction
/// between their fetch and their placing.
struct Fetched {
    manifest: Selected,
    blobs: u64,
    bytes: u64,
    placed: Option<hoard_store::MaterializeReport>,
    _lease: Option<hoard_store::Lease>,
}

/// A destination ready to be written: a path (the daemon's own user), or a directory
/// opened as the caller.
pub(crate) enum Target {
    Path(PathBuf),
    Opened(hoard_store::DestRoot),
}

impl Target {
    /// For another user than the daemon's, the destination is opened (and checked) as
    /// them.
    async fn open(dest: &std::path::Path, caller: Caller) -> Result<Self, ApiError> {
        if caller.is_daemon_user() {
            return Ok(Self::Path(dest.to_owned()));
        }
        let path = dest.to_owned();
        Ok(Self::Opened(
            blocking(move || {
                let user = crate::caller::act_as(caller)?;
                Ok(hoard_store::DestRoot::open_as(path, user)?)
            })
            .await?,
        ))
    }
}

impl Daemon {
    /// Makes the selected files cached for `caller`, then (with a destination)
    /// materializes them, reporting progress on `events`.
    pub(crate) async fn materialize(
        self: &Arc<Self>,
        found: &Found,
        selection: &Selection<'_>,
        caller: Caller,
        dest: Option<&std::path::Path>,
        mode: LinkMode,
        events: &mpsc::Sender<Event>,
    ) -> Result<Summary, ApiError> {
        let start = Instant::now();
        let head = found.head();
        // A native selection is checked before anything else is done.
        let chosen = match &found.version {
            Versioned::Native(version) => Chosen::Native(select(version, selection)?),
            Versioned::Foreign(foreign, _) => Chosen::Foreign(foreign),
        };
        // Before anything is fetched.
        let target = match dest {
            None => None,
            Some(dest) => Some(Arc::new(Target::open(dest, caller).await?)),
        };
        let tampered_before = self.metrics.tampered.load(Ordering::Relaxed);
        let mut retried = Retried::default();
        let fetched = match chosen {
            Chosen::Native(manifest) => {
                let placing = target.as_ref().map(|t| (t, mode, &mut retried));
                self.fetch_native(&head, manifest, caller, placing, events)
                    .await?
            }
            Chosen::Foreign(foreign) => {
                self.bind_leased(foreign, selection, caller, events).await?
            }
        };
        let manifest = fetched.manifest.clone();
        let mut summary = Summary {
            entity: head.entity.to_owned(),
            project: head.project.to_owned(),
            name: head.name.to_owned(),
            version: head.version.to_owned(),
            digest: head.digest,
            dest: dest.map(|d| d.display().to_string()),
            files: manifest.entries.len() as u64,
            bytes: manifest.total_size(),
            fetched_blobs: fetched.blobs,
            fetched_bytes: fetched.bytes,
            placed: 0,
            unchanged: 0,
            removed: 0,
            mode: None,
            seconds: 0.0,
            dry_run: false,
            planned: Vec::new(),
        };
        if let Some(target) = target {
            let report = match fetched.placed {
                Some(report) => report,
                None => {
                    self.place_version(
                        &found.version,
                        &manifest,
                        &target,
                        (mode, caller, &mut retried),
                        selection,
                        events,
                    )
                    .await?
                }
            };
            summary.fetched_blobs += retried.blobs;
            summary.fetched_bytes += retried.bytes;
            let tampered = self.metrics.tampered.load(Ordering::Relaxed) != tampered_before;
            self.after_placing(
                &head,
                &manifest,
                (report.mode, tampered),
                caller,
                dest,
                events,
            )
            .await;
            // What an interrupted first attempt placed, the retry found in place.
            summary.placed = report.placed + retried.placed;
            summary.unchanged = report.unchanged.saturating_sub(retried.placed);
            self.metrics
                .materialized_bytes
                .fetch_add(summary.bytes, Ordering::Relaxed);
            self.metrics.from_cache_bytes.fetch_add(
                summary.bytes.saturating_sub(summary.fetched_bytes),
                Ordering::Relaxed,
            );
            summary.mode = Some(report.mode.to_string());
            if selection.clean {
                let prefix = PathPrefix::new(selection.path_prefix.unwrap_or_default())?;
                let store = self.store.clone();
                let removed = blocking(move || {
                    Ok(match &*target {
                        Target::Path(dest) => store.clean(&manifest, &prefix, dest)?,
                        Target::Opened(root) => store.clean_into(&manifest, &prefix, root)?,
                    })
                })
                .await?;
                summary.removed = removed.files + removed.dirs;
            }
        }
        summary.seconds = start.elapsed().as_secs_f64();
        Ok(summary)
    }

    /// After files were placed: a hardlinked destination is recorded (and root told once
    /// what that means), and if a blob was found modified meanwhile, the files elsewhere
    /// that still hold it are named.
    async fn after_placing(
        &self,
        head: &Head<'_>,
        manifest: &Manifest,
        (mode, tampered): (LinkMode, bool),
        caller: Caller,
        dest: Option<&std::path::Path>,
        events: &mpsc::Sender<Event>,
    ) {
        if tampered {
            self.name_damaged(manifest, caller, events).await;
        }
        if mode == LinkMode::Hardlink
            && let Some(dest) = dest
        {
            self.warn_root(caller, events).await;
            self.placements.record(head.digest, dest, caller).await;
        }
    }

    /// A blob of `manifest` was found modified (a write through a hardlink): names the
    /// files elsewhere that still hold it, the caller's own by path, others' by count.
    async fn name_damaged(
        &self,
        manifest: &Manifest,
        caller: Caller,
        events: &mpsc::Sender<Event>,
    ) {
        let digests = manifest.entries.values().map(|e| e.digest).collect();
        let damaged = match self.damaged(Some(&digests)).await {
            Ok(damaged) if !damaged.is_empty() => damaged,
            Ok(_) => return,
            Err(e) => {
                tracing::warn!(error = %e.detail, "cannot look for files that hold a modified blob");
                return;
            }
        };
        let (own, others): (Vec<_>, Vec<_>) = damaged
            .into_iter()
            .partition(|d| caller.is_admin() || d.placement.uid == caller.uid);
        let held = own.len() + others.len();
        let mut message = format!(
            "a file of this version had been modified in place, through a hardlink (root ignores the 0444 mode); this get has it fetched again, but {held} {} placed earlier still {} the modified bytes",
            if held == 1 { "file" } else { "files" },
            if held == 1 { "holds" } else { "hold" },
        );
        if !own.is_empty() {
            let _ = write!(message, ": {}", crate::placements::named(&own));
        }
        if !others.is_empty() {
            let _ = write!(message, " ({} of other users)", others.len());
        }
        message.push_str("; `hoard verify --repair` links them to the fetched blob again (`--mode copy` keeps a job's writes out of the cache)");
        tracing::warn!("{message}");
        let _ = events.send(Event::Warning { message }).await;
    }

    /// Tells root once per daemon that a hardlinked file is the cache's blob, unless
    /// fs-verity makes blobs immutable.
    async fn warn_root(&self, caller: Caller, events: &mpsc::Sender<Event>) {
        if caller.uid != 0 || self.store.verity() || self.warned_root.swap(true, Ordering::Relaxed)
        {
            return;
        }
        let message = "these files are hardlinks of the cache's blobs, and root can write to them despite their 0444 mode: a write would change them for every job on this machine (hoard then re-fetches the blob, but other directories keep the changed file); use `--mode copy` for files a job modifies, or fs-verity (see docs/shared-daemon.md)".to_owned();
        let _ = events.send(Event::Warning { message }).await;
    }

    /// Checks that the selected reference entries can be fetched for `caller`, then
    /// fetches what is missing. With somewhere to place the files, a version whose blobs
    /// are all cached is placed at once: one index read, where fetching first would read
    /// every blob's row twice (a missing blob falls through to fetching).
    async fn fetch_native(
        self: &Arc<Self>,
        version: &Head<'_>,
        manifest: Selected,
        caller: Caller,
        placing: Option<(&Arc<Target>, LinkMode, &mut Retried)>,
        events: &mpsc::Sender<Event>,
    ) -> Result<Fetched, ApiError> {
        crate::references::check_all(&self.references, caller, &manifest)?;
        // A blob that only reference entries name is proven for another user first.
        let at_once =
            caller.is_daemon_user() || crate::references::only_referenced(&manifest).is_empty();
        if let Some((target, mode, retried)) = placing
            && at_once
        {
            let placed = self.materialize_blocking(&manifest, target, mode).await?;
            match placed {
                Ok(report) => {
                    let unique = blob_keys(&manifest).len() as u64;
                    self.hits.fetch_add(unique, Ordering::Relaxed);
                    return Ok(Fetched {
                        manifest,
                        blobs: 0,
                        bytes: 0,
                        placed: Some(report),
                        _lease: None,
                    });
                }
                Err(hoard_store::Error::MissingBlobs { .. }) => {}
                Err(hoard_store::Error::Tampered { key, what, placed }) => {
                    tracing::warn!(%key, what, "a blob was modified behind hoard's back: quarantined, fetching it again");
                    self.metrics.tampered.fetch_add(1, Ordering::Relaxed);
                    retried.placed += placed;
                }
                Err(e) => return Err(e.into()),
            }
        }
        let what = format!("`{version}`");
        let (blobs, bytes, lease) = self.fetch_missing(&manifest, &what, caller, events).await?;
        Ok(Fetched {
            manifest,
            blobs,
            bytes,
            placed: None,
            _lease: Some(lease),
        })
    }

    /// [`Self::bind`], with the bound blobs leased until they are placed.
    async fn bind_leased(
        self: &Arc<Self>,
        foreign: &Arc<hoard_types::ForeignVersion>,
        selection: &Selection<'_>,
        caller: Caller,
        events: &mpsc::Sender<Event>,
    ) -> Result<Fetched, ApiError> {
        let (manifest, blobs, bytes) = self.bind(foreign, selection, caller, events).await?;
        let lease = self.store.lease(blob_keys(&manifest));
        Ok(Fetched {
            manifest: Selected::part(manifest),
            blobs,
            bytes,
            placed: None,
            _lease: Some(lease),
        })
    }

    /// The store's materialize of every file of `manifest` into `target`, off the runtime.
    async fn materialize_blocking(
        &self,
        manifest: &Selected,
        target: &Arc<Target>,
        mode: LinkMode,
    ) -> Result<Result<hoard_store::MaterializeReport, hoard_store::Error>, ApiError> {
        let (store, m, t) = (self.store.clone(), manifest.clone(), target.clone());
        tokio::task::spawn_blocking(move || {
            let all = PathPrefix::all();
            // The store's materialize records the blobs' use.
            match &*t {
                Target::Path(dest) => store.materialize(&m, &all, dest, mode),
                Target::Opened(root) => store.materialize_into(&m, &all, root.try_clone()?, mode),
            }
        })
        .await
        .map_err(|e| ApiError::internal(format!("a store task failed: {e}")))
    }

    /// The upstream's blobs of `work` (not the reference entries'), claimed as one batch
    /// by the fleet; `None` without a tier. Boxed: the tier's calls make a large future.
    async fn claim_batch(
        &self,
        work: &[(hoard_store::BlobKey, u64, bool)],
        references: &std::collections::HashMap<hoard_store::BlobKey, (RelPath, String)>,
    ) -> Option<Arc<crate::fetch::RequestBatch>> {
        if !self.fetcher.tier_usable() {
            return None;
        }
        let upstream_blobs: Vec<(hoard_store::BlobKey, u64)> = work
            .iter()
            .filter(|(key, _, _)| !references.contains_key(key))
            .map(|(key, size, _)| (*key, *size))
            .collect();
        Box::pin(self.fetcher.claim_batch(&upstream_blobs))
            .await
            .map(Arc::new)
    }

    /// Fetches the blobs of `manifest` that are not cached; returns (blobs, bytes) fetched,
    /// and a lease that keeps all the version's blobs from eviction (hold it until they
    /// are linked). For a caller who is not the daemon's user, a cached blob that only
    /// reference entries name counts only once its bytes came from that reference (see
    /// [`hoard_store::Store::proven`]): until then it is fetched from there and checked, unkept.
    async fn fetch_missing(
        self: &Arc<Self>,
        manifest: &Manifest,
        what: &str,
        caller: Caller,
        events: &mpsc::Sender<Event>,
    ) -> Result<(u64, u64, hoard_store::Lease), ApiError> {
        // Where a blob's bytes come from when no entry has it in the upstream: a reference.
        let references = Arc::new(crate::references::only_referenced(manifest));
        let (keys, work) = self.fetch_plan(manifest, &references, caller).await?;
        if work.is_empty() {
            self.hits.fetch_add(keys.len() as u64, Ordering::Relaxed);
            return Ok((0, 0, self.store.lease(keys)));
        }
        // Room first, without a lease: a request waiting for room must not hold blobs that
        // the requests it waits for might need evicted (they would wait for each other).
        let claims = work
            .iter()
            .filter(|(_, _, prove)| !prove)
            .map(|(key, size, _)| (crate::budget::Claim::Blob(*key), *size))
            .collect::<Vec<_>>();
        let _room = if claims.is_empty() {
            None
        } else {
            Some(self.keeper.reserve(claims, what, Some(events)).await?)
        };
        // Then the lease, and what is missing now: eviction while this waited may have
        // taken some of the version's cached blobs (they are fetched too, over the room
        // reserved by as much; the eviction after the fetch makes up for it).
        let lease = self.store.lease(keys.iter().copied());
        let (keys, work) = self.fetch_plan(manifest, &references, caller).await?;
        let unique = keys.len() as u64;
        self.misses.fetch_add(work.len() as u64, Ordering::Relaxed);
        self.hits
            .fetch_add(unique.saturating_sub(work.len() as u64), Ordering::Relaxed);
        if work.is_empty() {
            return Ok((0, 0, lease));
        }
        let missing_blobs = work.len() as u64;
        let missing_bytes = work.iter().map(|(_, s, _)| s).sum();
        // A window of blobs in flight per request, not one future per blob (a 20,000-file
        // version would hold 20,000 waiting tasks). Larger than the fetch concurrency, so
        // that blobs fetched by other requests, which this one only waits for, do not
        // hold up its own fetches.
        let window = FETCH_WINDOW.max(self.options.fetch_concurrency);
        let receiving = crate::fetch::Receiving::default();
        let batch = self.claim_batch(&work, &references).await;
        // Many small blobs from the upstream: asked for in batches (`fetch/gather.rs`).
        let gather = work
            .iter()
            .filter(|(key, size, _)| {
                *size <= crate::fetch::GATHER_MAX && !references.contains_key(key)
            })
            .count()
            >= crate::fetch::GATHER_FROM;
        let work = futures_util::stream::iter(work)
            .map(|(key, size, prove)| {
                let (fetcher, receiving) = (self.fetcher.clone(), receiving.clone());
                let batch = batch.clone();
                let reference = references.get(&key).cloned();
                let policy = self.references.clone();
                async move {
                    let Some((path, uri)) = reference else {
                        let downloaded = fetcher
                            .ensure_from(key, size, None, Some(&receiving), batch.as_ref(), gather)
                            .await?;
                        return Ok(Got {
                            size,
                            downloaded,
                            kept: None,
                        });
                    };
                    let source = crate::references::source(&policy, caller, &path, &uri)?;
                    let downloaded = if prove {
                        Some(fetcher.prove(key, size, source).await)
                    } else {
                        fetcher
                            .ensure_from(key, size, Some(source), Some(&receiving), None, false)
                            .await
                            .transpose()
                    }
                    .transpose()
                    .map_err(|e| crate::references::fetch_error(&uri, e))?;
                    Ok(Got {
                        size,
                        downloaded,
                        kept: Some((uri, key.digest)),
                    })
                }
            })
            .buffer_unordered(window);
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
        let (kept, (fetched_blobs, fetched_bytes)) = driven?;
        let proven: Vec<(String, hoard_types::Digest)> = kept.into_iter().flatten().collect();
        if !proven.is_empty() {
            let store = self.store.clone();
            blocking(move || {
                for (uri, digest) in proven {
                    store.put_provenance(&Provenance::Reference(uri), &[digest])?;
                }
                Ok(())
            })
            .await?;
        }
        Ok((fetched_blobs, fetched_bytes, lease))
    }

    /// The blobs `manifest` names, and those of them a request for `caller` must fetch
    /// (`false`) or prove (`true`: cached, but only referenced, and not yet fetched from
    /// that reference; see [`Self::fetch_missing`]), with their sizes.
    async fn fetch_plan(
        &self,
        manifest: &Manifest,
        references: &Arc<std::collections::HashMap<BlobKey, (RelPath, String)>>,
        caller: Caller,
    ) -> Result<(Vec<BlobKey>, Vec<(BlobKey, u64, bool)>), ApiError> {
        let mut wanted: Vec<(BlobKey, u64)> = manifest
            .entries
            .values()
            .map(|e| (BlobKey::new(e.digest, e.exec), e.size))
            .collect();
        wanted.sort_unstable_by_key(|(k, _)| (k.digest, k.exec));
        wanted.dedup_by_key(|(k, _)| *k);
        let keys: Vec<BlobKey> = wanted.iter().map(|(k, _)| *k).collect();
        let (store, references) = (self.store.clone(), references.clone());
        let shared = !caller.is_daemon_user();
        let (keys, missing, unproven) = blocking(move || {
            let missing = store.missing(&keys)?;
            let mut unproven = std::collections::HashSet::new();
            if shared {
                for (key, (_, uri)) in references.iter() {
                    let source = Provenance::Reference(uri.clone());
                    if store.proven(&source, &[key.digest])? == [false] {
                        unproven.insert(*key);
                    }
                }
            }
            Ok((keys, missing, unproven))
        })
        .await?;
        let missing: std::collections::HashSet<BlobKey> = missing.into_iter().collect();
        let work = wanted
            .into_iter()
            .filter_map(|(key, size)| {
                if missing.contains(&key) {
                    Some((key, size, false))
                } else {
                    unproven.contains(&key).then_some((key, size, true))
                }
            })
            .collect();
        Ok((keys, work))
    }

    /// [`Self::place`], and for a foreign version whose blob was modified or evicted
    /// meanwhile: bind again (which fetches it from the upstream), then place once more.
    async fn place_version(
        self: &Arc<Self>,
        version: &Versioned,
        manifest: &Selected,
        target: &Arc<Target>,
        (mode, caller, retried): (LinkMode, Caller, &mut Retried),
        selection: &Selection<'_>,
        events: &mpsc::Sender<Event>,
    ) -> Result<hoard_store::MaterializeReport, ApiError> {
        let placed = self
            .place(manifest.clone(), target.clone(), mode, caller, retried)
            .await;
        let report = match (placed, version) {
            (Err(e), Versioned::Foreign(foreign, _))
                if matches!(e.kind, "tampered" | "not-cached") =>
            {
                let (rebound, blobs, bytes) = self.bind(foreign, selection, caller, events).await?;
                retried.blobs += blobs;
                retried.bytes += bytes;
                let rebound = Selected::part(rebound);
                self.place(rebound, target.clone(), mode, caller, retried)
                    .await?
            }
            (placed, _) => placed?,
        };
        Ok(report)
    }

    /// Materializes; a blob found tampered or gone meanwhile is fetched again, once.
    /// `retried` adds up what the attempts before the last one placed and fetched.
    pub(crate) async fn place(
        self: &Arc<Self>,
        manifest: Selected,
        target: Arc<Target>,
        mode: LinkMode,
        caller: Caller,
        retried: &mut Retried,
    ) -> Result<hoard_store::MaterializeReport, ApiError> {
        for attempt in 0..2 {
            let result = self.materialize_blocking(&manifest, &target, mode).await?;
            // A foreign upstream (W&B) fetches files by path, not by digest: the caller
            // binds the version again instead.
            let by_digest =
                attempt == 0 && matches!(self.upstream(), hoard_upstream::Upstream::Native { .. });
            let refetch = match result {
                Ok(report) => return Ok(report),
                Err(hoard_store::Error::Tampered { key, what, placed }) if attempt == 0 => {
                    tracing::warn!(%key, what, "a blob was modified behind hoard's back: quarantined, fetching it again");
                    self.metrics.tampered.fetch_add(1, Ordering::Relaxed);
                    retried.placed += placed;
                    if !by_digest {
                        return Err(hoard_store::Error::Tampered { key, what, placed }.into());
                    }
                    vec![key]
                }
                Err(hoard_store::Error::MissingBlobs { missing }) if by_digest => missing,
                Err(e) => return Err(e.into()),
            };
            let references = crate::references::only_referenced(&manifest);
            for key in refetch {
                let size = manifest
                    .entries
                    .values()
                    .find(|e| e.digest == key.digest)
                    .map_or(0, |e| e.size);
                let source = references
                    .get(&key)
                    .map(|(path, uri)| {
                        crate::references::source(&self.references, caller, path, uri)
                    })
                    .transpose()?;
                if let Some(bytes) = self
                    .fetcher
                    .ensure_from(key, size, source, None, None, false)
                    .await?
                {
                    retried.blobs += 1;
                    retried.bytes += bytes;
                }
            }
            self.fetcher.commit_now().await?;
        }
        Err(ApiError::internal(
            "materialization kept finding blobs missing",
        ))
    }

    /// What `status` and `resolve` report about a version.
    /// With `count_cached`, one index lookup per file tells how many are cached; the
    /// streaming calls skip that (they find out while fetching).
    /// A dry run: the files `selection` picks, which of them are cached, and the blobs a
    /// real call would fetch. Nothing is fetched, and the destination is not looked at.
    pub(crate) async fn plan(
        &self,
        found: &Found,
        selection: &Selection<'_>,
        dest: Option<String>,
    ) -> Result<Summary, ApiError> {
        let start = Instant::now();
        let listed: std::collections::BTreeMap<RelPath, ListedEntry> = self
            .describe(found, true, false)
            .await?
            .entries
            .into_iter()
            .map(|e| (e.path.clone(), e))
            .collect();
        let selected = crate::version::select_entries(&listed, selection)?;
        let keys: Vec<BlobKey> = selected
            .iter()
            .filter_map(|(_, e)| Some(BlobKey::new(e.digest?, e.exec)))
            .collect();
        let store = self.store.clone();
        let missing: std::collections::HashSet<BlobKey> =
            blocking(move || Ok(store.missing(&keys)?))
                .await?
                .into_iter()
                .collect();
        // Each blob is fetched once, however many files share it: by blake3 where known,
        // else by the upstream's digest.
        let mut to_fetch = std::collections::HashMap::new();
        let mut planned = Vec::with_capacity(selected.len());
        for (path, entry) in selected {
            let cached = entry
                .digest
                .is_some_and(|d| !missing.contains(&BlobKey::new(d, entry.exec)));
            if !cached {
                let blob = match (&entry.digest, &entry.upstream_digest) {
                    (Some(digest), _) => digest.to_string(),
                    (None, Some(upstream)) => upstream.to_string(),
                    (None, None) => path.to_string(),
                };
                to_fetch.insert(blob, entry.size);
            }
            planned.push(hoard_types::api::PlannedFile {
                path,
                size: entry.size,
                cached,
            });
        }
        let head = found.head();
        Ok(Summary {
            entity: head.entity.to_owned(),
            project: head.project.to_owned(),
            name: head.name.to_owned(),
            version: head.version.to_owned(),
            digest: head.digest,
            dest,
            files: planned.len() as u64,
            bytes: planned.iter().map(|p| p.size).sum(),
            fetched_blobs: to_fetch.len() as u64,
            fetched_bytes: to_fetch.values().sum(),
            placed: planned.len() as u64,
            unchanged: 0,
            removed: 0,
            mode: None,
            seconds: start.elapsed().as_secs_f64(),
            dry_run: true,
            planned,
        })
    }

    pub(crate) async fn describe(
        &self,
        found: &Found,
        entries: bool,
        count_cached: bool,
    ) -> Result<Resolved, ApiError> {
        let listed = match &found.version {
            Versioned::Foreign(foreign, _) => crate::foreign::listed(&self.store, foreign).await?,
            // Only the counts: a one-file get of a large version must not list all of it.
            Versioned::Native(version) if !entries && !count_cached => {
                return Ok(resolved(
                    found,
                    version.manifest.entries.len() as u64,
                    version.manifest.total_size(),
                    None,
                    Vec::new(),
                ));
            }
            Versioned::Native(version) => version
                .manifest
                .entries
                .iter()
                .map(|(path, e)| ListedEntry {
                    path: path.clone(),
                    size: e.size,
                    digest: Some(e.digest),
                    upstream_digest: None,
                    exec: e.exec,
                    reference: e.reference.clone(),
                })
                .collect(),
        };
        let total = listed.len() as u64;
        let cached_files = if count_cached {
            let keys: Vec<BlobKey> = listed
                .iter()
                .filter_map(|e| Some(BlobKey::new(e.digest?, e.exec)))
                .collect();
            let unbound = total - keys.len() as u64;
            let store = self.store.clone();
            let missing = blocking(move || Ok(store.missing(&keys)?)).await?;
            Some(total.saturating_sub(missing.len() as u64 + unbound))
        } else {
            None
        };
        let bytes = listed.iter().map(|e| e.size).sum();
        let listed = if entries { listed } else { Vec::new() };
        Ok(resolved(found, total, bytes, cached_files, listed))
    }
}

/// What `resolve` answers about `found`: its files and bytes, and what is listed.
fn resolved(
    found: &Found,
    files: u64,
    bytes: u64,
    cached_files: Option<u64>,
    entries: Vec<ListedEntry>,
) -> Resolved {
    let version = found.head();
    Resolved {
        entity: version.entity.to_owned(),
        project: version.project.to_owned(),
        name: version.name.to_owned(),
        version: version.version.to_owned(),
        digest: version.digest,
        aliases: version.aliases.to_vec(),
        kind: version.kind.map(str::to_owned),
        metadata: version.metadata.clone(),
        files,
        bytes,
        cached_files,
        warning: found.warning.clone(),
        entries,
    }
}
