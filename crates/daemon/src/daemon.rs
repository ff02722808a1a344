//! [`Daemon`]: what one request does — resolve a reference, fetch what is missing,
//! materialize — independent of HTTP.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use hoard_store::{AliasRecord, BlobKey, LinkMode, Provenance, Store};
use hoard_types::api::{Event, ListedEntry, Resolved, Summary};
use hoard_types::{ArtifactName, ArtifactRef, Manifest, PathPrefix, RelPath, Selector, Version};
use hoard_upstream::Upstream;
use tokio::sync::mpsc;

use crate::caller::Caller;
use crate::error::ApiError;
use crate::fetch::Fetcher;

/// Blobs one request keeps in flight (fetching or waiting for their commit).
pub(crate) const FETCH_WINDOW: usize = 1024;

/// How often a long call reports progress at most.
pub(crate) const PROGRESS_EVERY: Duration = Duration::from_millis(100);

/// Settings of a daemon (from flags and `hoard.toml`; some change on reload, see
/// [`Daemon::reload`]).
#[derive(Clone, Debug)]
pub struct Options {
    /// How long an alias resolution is used without asking the upstream again. Zero (the
    /// default) asks every time; the last answer is still used when the upstream cannot be
    /// reached.
    pub alias_ttl: Duration,
    /// Blobs fetched at the same time.
    pub fetch_concurrency: usize,
    /// Blobs at least this large are fetched as parallel byte ranges.
    pub large_blob: u64,
    /// The size of each range, and how many ranges of one blob run at once.
    pub range_size: u64,
    pub range_parallel: usize,
    /// The cache budget; `None`: unbounded.
    pub budget: Option<crate::Budget>,
    /// How long the upstream's "yes, this credential may download that version" is reused.
    pub access_ttl: Duration,
    /// Serve cached files only to callers who send their own credential (a system daemon).
    pub require_caller_token: bool,
    /// Where references are fetched from for other users than the daemon's; `None`: the
    /// upstream's own origin.
    pub references: Option<crate::ReferencePolicy>,
    /// Bytes per second the background scrub re-hashes (`None`: off); read at start.
    pub scrub_rate: Option<u64>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            alias_ttl: Duration::ZERO,
            fetch_concurrency: 16,
            large_blob: 64 << 20,
            range_size: 16 << 20,
            range_parallel: 4,
            budget: None,
            access_ttl: Duration::from_secs(60),
            require_caller_token: false,
            references: None,
            scrub_rate: Some(crate::scrub::DEFAULT_RATE),
        }
    }
}

/// The service: the store, the upstream and the fetch engine.
pub struct Daemon {
    pub(crate) store: Arc<Store>,
    upstream: Upstream,
    pub(crate) fetcher: Arc<Fetcher>,
    pub(crate) cache_dir: PathBuf,
    options: Options,
    /// Blobs found cached / missing when a call needed them.
    pub(crate) hits: AtomicU64,
    pub(crate) misses: AtomicU64,
    pub(crate) metrics: crate::metrics::Metrics,
    /// Publishes on their way upstream.
    pub(crate) outbox: Arc<crate::publish::Outbox>,
    /// The cache budget and eviction.
    pub(crate) keeper: Arc<crate::budget::Keeper>,
    /// One pin or unpin at a time.
    pub(crate) pin_turn: tokio::sync::Mutex<()>,
    /// Callers' credentials and what the upstream allowed them.
    pub(crate) access: crate::access::Access,
    /// Long calls running, by uid.
    pub(crate) slots: Arc<crate::caller::Slots>,
    /// Which references are fetched for whom.
    pub(crate) references: Arc<crate::ReferencePolicy>,
    /// The background scrub.
    pub(crate) scrub: Arc<crate::scrub::Scrub>,
    /// `Options::alias_ttl`, replaced on reload.
    alias_ttl_ms: AtomicU64,
    /// When the upstream last answered a resolution, and whether it could be reached.
    pub(crate) last_upstream: std::sync::Mutex<Option<(Instant, Option<String>)>>,
}

/// A version and, if it is not fresh from the upstream, why.
pub(crate) struct Found {
    pub version: Versioned,
    pub warning: Option<String>,
}

/// A version of either kind of upstream.
pub(crate) enum Versioned {
    /// A blake3 manifest: from a native upstream, or published here and not yet
    /// committed upstream.
    Native(Box<Version>),
    /// A version of a foreign upstream (W&B), whose files are bound to blobs per request,
    /// and its [`ForeignVersion::digest`].
    Foreign(Arc<hoard_types::ForeignVersion>, hoard_types::Digest),
}

/// What names a version, of either kind: for messages, access checks and answers.
pub(crate) struct Head<'a> {
    pub entity: &'a str,
    pub project: &'a str,
    pub name: &'a str,
    /// `vN`, or [`crate::publish::PENDING`].
    pub version: &'a str,
    pub digest: hoard_types::Digest,
    pub aliases: &'a [String],
    pub kind: Option<&'a str>,
    pub metadata: &'a serde_json::Value,
}

impl Head<'_> {
    pub(crate) fn artifact(&self) -> Result<ArtifactName, hoard_types::Error> {
        ArtifactName::new(self.entity, self.project, self.name)
    }

    /// The `N` of `vN`.
    pub(crate) fn number(&self) -> Result<u32, hoard_types::Error> {
        match Selector::parse_tag(self.version) {
            Ok(Selector::Version(n)) => Ok(n),
            _ => Err(hoard_types::Error::Manifest {
                reason: format!(
                    "version `{}` is not of the form `vN`",
                    hoard_types::truncate(self.version)
                ),
            }),
        }
    }

    /// Published here and not yet committed upstream.
    pub(crate) fn is_pending(&self) -> bool {
        self.version == crate::publish::PENDING
    }
}

impl std::fmt::Display for Head<'_> {
    /// `entity/project/name:vN`
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}/{}/{}:{}",
            self.entity, self.project, self.name, self.version
        )
    }
}

impl Versioned {
    pub(crate) fn head(&self) -> Head<'_> {
        match self {
            Self::Native(v) => Head {
                entity: &v.entity,
                project: &v.project,
                name: &v.name,
                version: &v.version,
                digest: v.digest,
                aliases: &v.aliases,
                kind: v.kind.as_deref(),
                metadata: &v.metadata,
            },
            Self::Foreign(v, digest) => Head {
                entity: &v.entity,
                project: &v.project,
                name: &v.name,
                version: &v.version,
                digest: *digest,
                aliases: &v.aliases,
                kind: v.kind.as_deref(),
                metadata: &v.metadata,
            },
        }
    }
}

impl Found {
    pub(crate) fn fresh(version: Version) -> Self {
        Self {
            version: Versioned::Native(Box::new(version)),
            warning: None,
        }
    }

    pub(crate) fn foreign(version: hoard_types::ForeignVersion) -> Self {
        let digest = version.digest();
        Self {
            version: Versioned::Foreign(Arc::new(version), digest),
            warning: None,
        }
    }

    pub(crate) fn head(&self) -> Head<'_> {
        self.version.head()
    }
}

/// What [`Daemon::materialize`] fetches: a native selection, or a foreign version to
/// bind.
enum Chosen<'a> {
    Native(Manifest),
    Foreign(&'a Arc<hoard_types::ForeignVersion>),
}

/// A destination ready to be written: a path (the daemon's own user), or a directory
/// opened as the caller.
pub(crate) enum Target {
    Path(PathBuf),
    Opened(hoard_store::DestRoot),
}

/// One finished fetch of a request: the blob's size, the bytes downloaded (`None` when
/// the cache or another request had it), and what the caller keeps of it.
pub(crate) struct Got<T> {
    pub size: u64,
    pub downloaded: Option<u64>,
    pub kept: T,
}

/// Which files of a version a call wants.
pub(crate) struct Selection<'a> {
    pub path_prefix: Option<&'a str>,
    pub file: Option<&'a str>,
    /// Remove from the destination what the version does not name under the prefix.
    pub clean: bool,
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Runs blocking store work on the blocking pool.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(ApiError::internal(format!("a store task failed: {e}"))))
}

impl Daemon {
    /// Call inside a tokio runtime: the fetch engine starts its committer task.
    pub fn new(store: Store, upstream: Upstream, options: Options) -> Self {
        let cache_dir = store.layout().root.clone();
        let store = Arc::new(store);
        let ranges = crate::fetch::Ranges {
            threshold: options.large_blob,
            size: options.range_size,
            parallel: options.range_parallel,
        };
        let outbox = crate::publish::Outbox::start(store.clone(), &upstream);
        let keeper = Arc::new(crate::budget::Keeper::new(store.clone(), options.budget));
        let access = crate::access::Access::new(options.access_ttl, options.require_caller_token);
        let alias_ttl_ms =
            AtomicU64::new(u64::try_from(options.alias_ttl.as_millis()).unwrap_or(u64::MAX));
        let references = Arc::new(options.references.clone().unwrap_or_else(|| {
            crate::ReferencePolicy::new(None, &upstream.describe())
                .expect("a policy without configured hosts is always valid")
        }));
        let fetcher = Arc::new(Fetcher::new(
            store.clone(),
            upstream.blobs(),
            options.fetch_concurrency,
            ranges,
        ));
        let scrub = crate::scrub::Scrub::start(store.clone(), fetcher.clone(), options.scrub_rate);
        Self {
            store,
            upstream,
            fetcher,
            scrub,
            cache_dir,
            options,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            metrics: crate::metrics::Metrics::default(),
            outbox,
            keeper,
            pin_turn: tokio::sync::Mutex::new(()),
            access,
            slots: Arc::default(),
            references,
            last_upstream: std::sync::Mutex::default(),
            alias_ttl_ms,
        }
    }

    /// Remembers whether the upstream could be reached (for `status`).
    pub(crate) fn note_upstream<T>(
        &self,
        result: Result<T, hoard_upstream::Error>,
    ) -> Result<T, hoard_upstream::Error> {
        let outcome = match &result {
            Err(e) if e.is_unreachable() => Some(crate::error::chain(e)),
            _ => None,
        };
        *self
            .last_upstream
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some((Instant::now(), outcome));
        result
    }

    /// `reachable 3 s ago`, `unreachable 2 s ago: …`, or `unknown`.
    pub(crate) fn upstream_state(&self) -> String {
        let last = self
            .last_upstream
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        match last {
            None => "unknown (no call yet)".to_owned(),
            Some((at, None)) => format!("reachable ({} s ago)", at.elapsed().as_secs()),
            Some((at, Some(why))) => {
                format!("unreachable ({} s ago): {why}", at.elapsed().as_secs())
            }
        }
    }

    /// Applies what can change while running (a reloaded configuration): the alias and
    /// access TTLs, the budget, whether callers must bring a credential. The rest (socket,
    /// cache, upstream, concurrency, ranges) needs a restart; a change there is logged.
    pub fn reload(&self, options: &Options) {
        let fixed = (
            options.fetch_concurrency,
            options.large_blob,
            options.range_size,
            options.range_parallel,
        );
        let running = (
            self.options.fetch_concurrency,
            self.options.large_blob,
            self.options.range_size,
            self.options.range_parallel,
        );
        if fixed != running {
            tracing::warn!("fetch concurrency and range settings change only with a restart");
        }
        self.alias_ttl_ms.store(
            u64::try_from(options.alias_ttl.as_millis()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        self.access
            .reload(options.access_ttl, options.require_caller_token);
        self.keeper.set_budget(options.budget);
        tracing::info!(?options.budget, ?options.alias_ttl, ?options.access_ttl, "configuration reloaded");
        if options.budget.is_some() {
            self.keeper.after_fetch();
        }
    }

    pub fn upstream(&self) -> &Upstream {
        &self.upstream
    }

    /// Commits staged blobs, writes buffered state (last uses) and syncs the index: call
    /// before exiting.
    pub async fn flush(&self) -> Result<(), ApiError> {
        self.fetcher.commit_now().await?;
        Ok(self.store.flush()?)
    }

    /// [`Self::resolve`] for `who`: refused before anything is asked of the upstream
    /// when they bring no credential where one is required, and after resolution unless
    /// they may have the version (see [`crate::access`]).
    pub(crate) async fn resolve_for(
        &self,
        who: &crate::caller::Asker,
        reference: &str,
        entity: Option<&str>,
        project: Option<&str>,
    ) -> Result<Found, ApiError> {
        self.access.demand_credential(who)?;
        let found = self.resolve(reference, entity, project).await?;
        self.access
            .authorize(self.upstream(), who, &found.head())
            .await?;
        Ok(found)
    }

    /// The version a reference names. Immutable selectors are answered from the index
    /// once cached; aliases ask the upstream (unless resolved within the TTL) and fall back
    /// to the last answer, with a warning, when it cannot be reached.
    pub(crate) async fn resolve(
        &self,
        reference: &str,
        entity: Option<&str>,
        project: Option<&str>,
    ) -> Result<Found, ApiError> {
        let reference: ArtifactRef = reference.parse()?;
        let name = reference.qualify(entity, project)?;
        match &reference.selector {
            Selector::Version(n) => {
                if let Some(found) = self.cached(&name, *n).await? {
                    return Ok(found);
                }
            }
            Selector::Digest(digest) => {
                if let Some(found) = self.cached_by_digest(&name, digest).await? {
                    return Ok(found);
                }
                // Published here and not yet committed upstream.
                let key = crate::publish::outbox_key(&name, digest);
                if let Some(pending) = self.outbox.record(&key).await? {
                    return Ok(Found::fresh(pending.local_version()));
                }
            }
            Selector::Alias(alias) => return self.resolve_alias(&name, alias).await,
        }
        let asked = self.ask(&name, &reference.selector).await?;
        Ok(self.note_upstream(asked)?)
    }

    /// A version this cache holds, by number.
    async fn cached(&self, name: &ArtifactName, n: u32) -> Result<Option<Found>, ApiError> {
        if let Upstream::Foreign(_) = self.upstream {
            return self.cached_foreign(name, n).await;
        }
        let (store, key) = (self.store.clone(), name.clone());
        Ok(blocking(move || Ok(store.version(&key, n)?))
            .await?
            .map(Found::fresh))
    }

    /// A version this cache holds, by digest.
    async fn cached_by_digest(
        &self,
        name: &ArtifactName,
        digest: &hoard_types::Digest,
    ) -> Result<Option<Found>, ApiError> {
        if let Upstream::Foreign(_) = self.upstream {
            return self.cached_foreign_by_digest(name, digest).await;
        }
        let (store, digest) = (self.store.clone(), *digest);
        let cached = blocking(move || Ok(store.version_by_digest(&digest)?)).await?;
        Ok(cached
            .filter(|v| v.artifact().is_ok_and(|a| a == *name))
            .map(Found::fresh))
    }

    /// Asks the upstream and remembers its answer.
    async fn ask(
        &self,
        name: &ArtifactName,
        selector: &Selector,
    ) -> Result<Result<Found, hoard_upstream::Error>, ApiError> {
        match &self.upstream {
            Upstream::Foreign(foreign) => match foreign.resolve_foreign(name, selector).await {
                Ok(version) => Ok(Ok(self.remember_foreign(version).await?)),
                Err(e) => Ok(Err(e)),
            },
            Upstream::Native { catalog, .. } => match catalog.resolve(name, selector).await {
                Ok(version) => {
                    self.remember(version.clone()).await?;
                    Ok(Ok(Found::fresh(version)))
                }
                Err(e) => Ok(Err(e)),
            },
        }
    }

    async fn resolve_alias(&self, name: &ArtifactName, alias: &str) -> Result<Found, ApiError> {
        let (store, key, a) = (self.store.clone(), name.clone(), alias.to_owned());
        let record = blocking(move || Ok(store.alias(&key, &a)?)).await?;
        let known = match record {
            Some(record) => self
                .cached(name, record.version)
                .await?
                .map(|found| (record, found)),
            None => None,
        };
        let ttl = self.alias_ttl_ms.load(Ordering::Relaxed);
        if let Some((record, _)) = &known
            && now_ms().saturating_sub(record.resolved_ms) < ttl
        {
            return Ok(known.expect("matched above").1);
        }
        let selector = Selector::Alias(alias.to_owned());
        let asked = self.ask(name, &selector).await?;
        match self.note_upstream(asked) {
            Ok(found) => {
                let head = found.head();
                let record = AliasRecord {
                    version: head.number()?,
                    digest: head.digest,
                    resolved_ms: now_ms(),
                };
                let (store, artifact, alias) =
                    (self.store.clone(), head.artifact()?, alias.to_owned());
                // The last answer is for when the upstream cannot be reached: a cache,
                // skipped on a disk into the index's reserve.
                blocking(move || {
                    if store.low_on_space() {
                        return Ok(());
                    }
                    if let Err(e) = store.put_alias(&artifact, &alias, &record) {
                        tracing::warn!(error = %crate::error::chain(&e), "cannot remember an alias's answer");
                    }
                    Ok(())
                })
                .await?;
                Ok(found)
            }
            Err(e) if e.is_unreachable() => match known {
                Some((record, mut found)) => {
                    let age = Duration::from_millis(now_ms().saturating_sub(record.resolved_ms));
                    let warning = format!(
                        "the upstream `{}` cannot be reached ({}); using `{name}:{alias}` = `{}` as resolved {} ago",
                        self.upstream().describe(),
                        crate::error::chain(&e),
                        found.head().version,
                        humanize(age)
                    );
                    tracing::warn!("{warning}");
                    found.warning = Some(warning);
                    Ok(found)
                }
                None => Err(e.into()),
            },
            Err(e) => Err(e.into()),
        }
    }

    /// Stores a version from the upstream.
    /// Keeping it is a cache: a version already held is not written again, and on a disk
    /// into the index's reserve (or when the write fails) the request goes on without it.
    async fn remember(&self, version: Version) -> Result<(), ApiError> {
        // An untrusted answer, kept or not.
        version.validate()?;
        let store = self.store.clone();
        blocking(move || {
            let name = version.artifact()?;
            let held = store.version(&name, version.number()?)?;
            if held.is_some_and(|v| v.digest == version.digest) {
                return Ok(());
            }
            if store.low_on_space() {
                tracing::warn!(version = %name, "the disk is nearly full: not caching the version's manifest");
                return Ok(());
            }
            if let Err(e) = store.put_version(&version) {
                tracing::warn!(error = %crate::error::chain(&e), "cannot cache a version's manifest");
            }
            Ok(())
        })
        .await
    }

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
            Versioned::Native(version) => Chosen::Native(select(&version.manifest, selection)?),
            Versioned::Foreign(foreign, _) => Chosen::Foreign(foreign),
        };
        // For another user, the destination is opened (and checked) as them, before anything
        // is fetched.
        let target = match dest {
            None => None,
            Some(path) if !caller.is_daemon_user() => {
                let path = path.to_owned();
                Some(Target::Opened(
                    blocking(move || {
                        let user = crate::caller::act_as(caller)?;
                        Ok(hoard_store::DestRoot::open_as(path, user)?)
                    })
                    .await?,
                ))
            }
            Some(path) => Some(Target::Path(path.to_owned())),
        };
        // The version's blobs stay from their fetch until they are linked (`_lease`):
        // eviction making room for another request must not take them in between.
        let (manifest, fetched_blobs, fetched_bytes, _lease) = match chosen {
            Chosen::Native(manifest) => self.fetch_native(&head, manifest, caller, events).await?,
            Chosen::Foreign(foreign) => {
                let (manifest, blobs, bytes) =
                    self.bind(foreign, selection, caller, events).await?;
                let lease = self.store.lease(blob_keys(&manifest));
                (manifest, blobs, bytes, lease)
            }
        };
        let mut summary = Summary {
            version: head.version.to_owned(),
            digest: head.digest,
            dest: dest.map(|d| d.display().to_string()),
            files: manifest.entries.len() as u64,
            bytes: manifest.total_size(),
            fetched_blobs,
            fetched_bytes,
            placed: 0,
            unchanged: 0,
            removed: 0,
            mode: None,
            seconds: 0.0,
        };
        if let Some(target) = target {
            let manifest = Arc::new(manifest);
            let target = Arc::new(target);
            let placed = self
                .place(manifest.clone(), target.clone(), mode, caller)
                .await;
            let report = match (placed, &found.version) {
                // A blob of a foreign version that was tampered with or evicted meanwhile:
                // bind again (which fetches it from the upstream), then place once more.
                (Err(e), Versioned::Foreign(foreign, _))
                    if matches!(e.kind, "tampered" | "not-cached") =>
                {
                    let (rebound, _, _) = self.bind(foreign, selection, caller, events).await?;
                    self.place(Arc::new(rebound), target.clone(), mode, caller)
                        .await?
                }
                (placed, _) => placed?,
            };
            summary.placed = report.placed;
            summary.unchanged = report.unchanged;
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

    /// Checks that the selected reference entries can be fetched for `caller`, then
    /// fetches what is missing; returns the manifest and (blobs, bytes) fetched.
    async fn fetch_native(
        self: &Arc<Self>,
        version: &Head<'_>,
        manifest: Manifest,
        caller: Caller,
        events: &mpsc::Sender<Event>,
    ) -> Result<(Manifest, u64, u64, hoard_store::Lease), ApiError> {
        crate::references::check_all(&self.references, caller, &manifest)?;
        let what = format!("`{version}`");
        let (blobs, bytes, lease) = self.fetch_missing(&manifest, &what, caller, events).await?;
        Ok((manifest, blobs, bytes, lease))
    }

    /// Fetches the blobs of `manifest` that are not cached; returns (blobs, bytes) fetched,
    /// and a lease that keeps all the version's blobs from eviction (hold it until they
    /// are linked). For a caller who is not the daemon's user, a cached blob that only
    /// reference entries name counts only once its bytes came from that reference (see
    /// [`Store::proven`]): until then it is fetched from there and checked, unkept.
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
        let work = futures_util::stream::iter(work)
            .map(|(key, size, prove)| {
                let fetcher = self.fetcher.clone();
                let reference = references.get(&key).cloned();
                let policy = self.references.clone();
                async move {
                    let Some((path, uri)) = reference else {
                        let downloaded = fetcher.ensure_from(key, size, None).await?;
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
                            .ensure_from(key, size, Some(source))
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
        let (kept, (fetched_blobs, fetched_bytes)) = self
            .drive_fetches(work, (missing_blobs, missing_bytes), events)
            .await?;
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

    /// Runs a request's fetches (`work`; `missing` blobs and bytes in all), reporting
    /// progress. What was fetched is committed at the end, and also when a fetch fails
    /// (for the next attempt). Returns what each fetch kept, and the blobs and bytes
    /// downloaded.
    pub(crate) async fn drive_fetches<T>(
        &self,
        work: impl futures_util::Stream<Item = Result<Got<T>, ApiError>>,
        (missing_blobs, missing_bytes): (u64, u64),
        events: &mpsc::Sender<Event>,
    ) -> Result<(Vec<T>, (u64, u64)), ApiError> {
        let progress = |blobs, bytes| Event::Progress {
            fetched_blobs: blobs,
            missing_blobs,
            fetched_bytes: bytes,
            missing_bytes,
        };
        let _ = events.send(progress(0, 0)).await;
        let mut work = Box::pin(work);
        let mut kept = Vec::new();
        let (mut done, mut done_bytes, mut fetched, mut fetched_bytes) = (0, 0, 0, 0);
        let mut last = Instant::now();
        while let Some(result) = work.next().await {
            let got = match result {
                Ok(got) => got,
                Err(e) => {
                    // What was fetched stays: commit it for the next attempt.
                    drop(work);
                    let _ = self.fetcher.commit_now().await;
                    self.keeper.after_fetch();
                    return Err(e);
                }
            };
            done += 1;
            done_bytes += got.size;
            if let Some(bytes) = got.downloaded {
                fetched += 1;
                fetched_bytes += bytes;
            }
            kept.push(got.kept);
            if last.elapsed() >= PROGRESS_EVERY || done == missing_blobs {
                last = Instant::now();
                let _ = events.send(progress(done, done_bytes)).await;
            }
        }
        self.fetcher.commit_now().await?;
        self.keeper.after_fetch();
        Ok((kept, (fetched, fetched_bytes)))
    }

    /// Materializes; a blob found tampered or gone meanwhile is fetched again, once.
    pub(crate) async fn place(
        self: &Arc<Self>,
        manifest: Arc<Manifest>,
        target: Arc<Target>,
        mode: LinkMode,
        caller: Caller,
    ) -> Result<hoard_store::MaterializeReport, ApiError> {
        for attempt in 0..2 {
            let (store, m, t) = (self.store.clone(), manifest.clone(), target.clone());
            let result = tokio::task::spawn_blocking(move || {
                let all = PathPrefix::all();
                let report = match &*t {
                    Target::Path(dest) => store.materialize(&m, &all, dest, mode)?,
                    Target::Opened(root) => {
                        store.materialize_into(&m, &all, root.try_clone()?, mode)?
                    }
                };
                let keys: Vec<BlobKey> = m
                    .entries
                    .values()
                    .map(|e| BlobKey::new(e.digest, e.exec))
                    .collect();
                store.touch(&keys)?;
                Ok::<_, hoard_store::Error>(report)
            })
            .await
            .map_err(|e| ApiError::internal(format!("a store task failed: {e}")))?;
            // A foreign upstream (W&B) fetches files by path, not by digest: the caller
            // binds the version again instead.
            let by_digest = attempt == 0 && matches!(self.upstream, Upstream::Native { .. });
            let refetch = match result {
                Ok(report) => return Ok(report),
                Err(hoard_store::Error::Tampered { key, what }) if attempt == 0 => {
                    tracing::warn!(%key, what, "a blob was modified behind hoard's back: quarantined, fetching it again");
                    self.metrics.tampered.fetch_add(1, Ordering::Relaxed);
                    if !by_digest {
                        return Err(hoard_store::Error::Tampered { key, what }.into());
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
                self.fetcher.ensure_from(key, size, source).await?;
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
    pub(crate) async fn describe(
        &self,
        found: &Found,
        entries: bool,
        count_cached: bool,
    ) -> Result<Resolved, ApiError> {
        let listed = match &found.version {
            Versioned::Foreign(foreign, _) => crate::foreign::listed(&self.store, foreign).await?,
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
        let version = found.head();
        Ok(Resolved {
            entity: version.entity.to_owned(),
            project: version.project.to_owned(),
            name: version.name.to_owned(),
            version: version.version.to_owned(),
            digest: version.digest,
            aliases: version.aliases.to_vec(),
            kind: version.kind.map(str::to_owned),
            metadata: version.metadata.clone(),
            files: total,
            bytes: listed.iter().map(|e| e.size).sum(),
            cached_files,
            warning: found.warning.clone(),
            entries: if entries { listed } else { Vec::new() },
        })
    }
}

/// The blobs a manifest names.
fn blob_keys(manifest: &Manifest) -> Vec<BlobKey> {
    manifest
        .entries
        .values()
        .map(|e| BlobKey::new(e.digest, e.exec))
        .collect()
}

/// The entries a call selected: all, those under W&B's string `path_prefix`, or one file.
fn select(manifest: &Manifest, selection: &Selection<'_>) -> Result<Manifest, ApiError> {
    let mut selected = Manifest::new();
    selected.entries = select_entries(&manifest.entries, selection)?
        .into_iter()
        .collect();
    Ok(selected)
}

/// [`select`] over any path-ordered entries (a manifest's, or a foreign version's).
pub(crate) fn select_entries<E: Clone>(
    entries: &std::collections::BTreeMap<RelPath, E>,
    selection: &Selection<'_>,
) -> Result<Vec<(RelPath, E)>, ApiError> {
    if let Some(file) = selection.file {
        if selection.clean {
            return Err(ApiError::bad_request(
                "`clean` applies to a version or a `path_prefix`, not to one `file`",
            ));
        }
        let path = RelPath::new(file)?;
        let entry = entries
            .get(&path)
            .ok_or_else(|| ApiError::not_found(format!("the version has no file `{path}`")))?;
        return Ok(vec![(path, entry.clone())]);
    }
    let prefix = match selection.path_prefix {
        Some(prefix) => PathPrefix::new(prefix)?,
        None => PathPrefix::all(),
    };
    let selected: Vec<_> = hoard_types::manifest::under_prefix(entries, &prefix)
        .map(|(path, entry)| (path.clone(), entry.clone()))
        .collect();
    if selected.is_empty() && selection.path_prefix.is_some() {
        return Err(ApiError::not_found(format!(
            "no file of the version starts with `{}`",
            prefix.as_str()
        )));
    }
    Ok(selected)
}

fn humanize(age: Duration) -> String {
    let s = age.as_secs();
    match s {
        0..120 => format!("{s} s"),
        120..7200 => format!("{} min", s / 60),
        _ => format!("{} h", s / 3600),
    }
}
