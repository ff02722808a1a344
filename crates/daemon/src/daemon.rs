//! [`Daemon`]: the parts a request goes through (see the crate docs), built from
//! [`Options`], independent of HTTP.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hoard_store::Store;
use hoard_upstream::Upstream;

use crate::error::ApiError;
use crate::fetch::Fetcher;
use crate::version::Found;

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
    /// The fleet tier, asked before the upstream (see `docs/fleet.md`); read at start.
    pub tier: Option<Arc<hoard_upstream::Tier>>,
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
            tier: None,
        }
    }
}

/// The service: the store, the upstream and the fetch engine.
pub struct Daemon {
    pub(crate) store: Arc<Store>,
    /// Which version a reference names.
    pub(crate) resolver: crate::resolve::Resolver,
    pub(crate) fetcher: Arc<Fetcher>,
    pub(crate) cache_dir: PathBuf,
    pub(crate) options: Options,
    /// Blobs found cached / missing when a call needed them.
    pub(crate) hits: AtomicU64,
    pub(crate) misses: AtomicU64,
    pub(crate) metrics: crate::metrics::Metrics,
    /// Publishes on their way upstream.
    pub(crate) outbox: Arc<crate::outbox::Outbox>,
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
    /// Where versions were hardlinked.
    pub(crate) placements: crate::placements::Placements,
    /// Whether root was told that it can write through hardlinks into the cache.
    pub(crate) warned_root: std::sync::atomic::AtomicBool,
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
        let reachability = Arc::new(crate::reachability::Reachability::default());
        let outbox = crate::outbox::Outbox::start(store.clone(), &upstream, reachability.clone());
        let keeper = Arc::new(crate::budget::Keeper::new(store.clone(), options.budget));
        let access = crate::access::Access::new(options.access_ttl, options.require_caller_token);
        let references = Arc::new(options.references.clone().unwrap_or_else(|| {
            crate::ReferencePolicy::new(None, &upstream.describe())
                .expect("a policy without configured hosts is always valid")
        }));
        let fetcher = Arc::new(Fetcher::new(
            store.clone(),
            upstream.blobs(),
            options.fetch_concurrency,
            ranges,
            options.tier.clone(),
        ));
        let scrub = crate::scrub::Scrub::start(store.clone(), fetcher.clone(), options.scrub_rate);
        let resolver = crate::resolve::Resolver::new(
            store.clone(),
            upstream,
            outbox.clone(),
            reachability,
            options.alias_ttl,
            options.tier.clone(),
        );
        if let Some(tier) = options.tier.clone() {
            tokio::spawn(async move { tier.probe().await });
        }
        Self {
            placements: crate::placements::Placements::new(store.clone()),
            warned_root: std::sync::atomic::AtomicBool::new(false),
            store,
            resolver,
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
        self.resolver.set_alias_ttl(options.alias_ttl);
        self.access
            .reload(options.access_ttl, options.require_caller_token);
        self.keeper.set_budget(options.budget);
        tracing::info!(?options.budget, ?options.alias_ttl, ?options.access_ttl, "configuration reloaded");
        if options.budget.is_some() {
            self.keeper.after_fetch();
        }
    }

    pub fn upstream(&self) -> &Upstream {
        self.resolver.upstream()
    }

    /// Commits staged blobs, writes buffered state (last uses) and syncs the index: call
    /// before exiting.
    pub async fn flush(&self) -> Result<(), ApiError> {
        self.fetcher.commit_now().await?;
        Ok(self.store.flush()?)
    }

    /// Every part's figures for `/metrics`; `cache` is the cache's (bytes, blobs) now.
    pub(crate) fn snapshot(&self, cache: (u64, u64)) -> crate::metrics::Snapshot<'_> {
        let (evicted_blobs, evicted_bytes) = self.keeper.evicted();
        crate::metrics::Snapshot {
            fetch: &self.fetcher.counters,
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            scrubbed_bytes: self.scrub.bytes.load(Ordering::Relaxed),
            scrub_bad: self.scrub.bad.load(Ordering::Relaxed),
            verity_sealed: self.store.verity_sealed(),
            evicted_blobs,
            evicted_bytes,
            budget_bytes: self.keeper.budget().map_or(0, |b| b.max_bytes),
            cache,
            tier: self.options.tier.as_ref().map(|t| t.status()),
        }
    }

    /// [`crate::resolve::Resolver::resolve`] for `who`: refused before anything is asked of the upstream
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
        let found = match self.resolver.resolve(reference, entity, project).await {
            Ok(found) => found,
            Err(e) => return Err(self.explain(who, reference, entity, project, e).await),
        };
        self.access.authorize(self.upstream(), who, &found).await?;
        Ok(found)
    }
}
