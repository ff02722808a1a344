//! Resolution: which version a reference names, from the index when it can be, from the
//! upstream when it must be.
//!
//! Immutable selectors (`vN`, `@digest`) are answered from the index once cached (for a
//! foreign upstream, from the versions it described, kept by the store). Aliases ask the
//! upstream unless resolved within `alias_ttl`, and fall back to the last answer, with a
//! warning, when it cannot be reached. A publish still in the outbox resolves by digest.
//! The [`Resolver`] also notes whether the upstream could be reached ([`Reachability`]).
//!
//! With a fleet tier, a native version by number or digest that this cache lacks is read
//! from the tier before the upstream is asked, and validated as the upstream's answer
//! would be; a version the upstream gave is stored there for the next box. Aliases are
//! never: they are mutable.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use hoard_store::{AliasRecord, Store};
use hoard_types::{ArtifactName, ArtifactRef, ForeignVersion, Selector, Version};
use hoard_upstream::Upstream;

use crate::error::ApiError;
use crate::outbox::{Outbox, outbox_key};
use crate::reachability::Reachability;
use crate::runtime::{blocking, now_ms};
use crate::version::Found;

/// See the module docs.
pub(crate) struct Resolver {
    store: Arc<Store>,
    upstream: Upstream,
    /// Publishes not yet committed upstream, which resolve by digest.
    outbox: Arc<Outbox>,
    /// `Options::alias_ttl`, replaced on reload.
    alias_ttl_ms: AtomicU64,
    /// Whether the upstream could last be reached (shared with the outbox).
    reachability: Arc<Reachability>,
    /// Native versions decoded from the index, so that a warm request does not decode
    /// its manifest again (20 ms for 20,000 files).
    decoded: Mutex<Decoded>,
    /// The fleet tier: immutable versions other boxes resolved.
    tier: Option<Arc<hoard_upstream::Tier>>,
}

/// Decoded native versions by manifest digest, and their digests by number; emptied when
/// they hold more than [`Decoded::MAX_ENTRIES`] files in all. A version is immutable, so
/// an entry is never stale, except for a number the upstream gave again (see
/// [`Resolver::remember`]).
#[derive(Default)]
struct Decoded {
    by_digest: HashMap<hoard_types::Digest, Arc<Version>>,
    by_number: HashMap<(ArtifactName, u32), hoard_types::Digest>,
    entries: usize,
}

impl Decoded {
    /// About 150 bytes each in memory: 7 MiB at most.
    const MAX_ENTRIES: usize = 50_000;

    /// The version, shared; kept unless it alone is over the bound.
    fn keep(&mut self, version: Version) -> Arc<Version> {
        let entries = version.manifest.entries.len();
        let version = Arc::new(version);
        if entries > Self::MAX_ENTRIES {
            return version;
        }
        if self.entries + entries > Self::MAX_ENTRIES {
            *self = Self::default();
        }
        if let (Ok(name), Ok(n)) = (version.artifact(), version.number()) {
            self.by_number.insert((name, n), version.digest);
        }
        if self
            .by_digest
            .insert(version.digest, version.clone())
            .is_none()
        {
            self.entries += entries;
        }
        version
    }
}

impl Resolver {
    pub(crate) fn new(
        store: Arc<Store>,
        upstream: Upstream,
        outbox: Arc<Outbox>,
        reachability: Arc<Reachability>,
        alias_ttl: Duration,
        tier: Option<Arc<hoard_upstream::Tier>>,
    ) -> Self {
        let resolver = Self {
            store,
            upstream,
            outbox,
            alias_ttl_ms: AtomicU64::new(0),
            reachability,
            decoded: Mutex::new(Decoded::default()),
            tier,
        };
        resolver.set_alias_ttl(alias_ttl);
        resolver
    }

    pub(crate) fn upstream(&self) -> &Upstream {
        &self.upstream
    }

    pub(crate) fn set_alias_ttl(&self, ttl: Duration) {
        self.alias_ttl_ms.store(
            u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    /// `reachable (3 s ago)`, `unreachable (2 s ago): …`, or `unknown`.
    pub(crate) fn upstream_state(&self) -> String {
        self.reachability.describe()
    }

    /// Remembers whether the upstream could be reached (for `status`).
    pub(crate) fn note_upstream<T>(
        &self,
        result: Result<T, hoard_upstream::Error>,
    ) -> Result<T, hoard_upstream::Error> {
        self.reachability.note(&result);
        result
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
        let name = self.upstream.qualify(&reference, entity, project)?;
        if let Upstream::Foreign(foreign) = &self.upstream
            && let Some(label) = foreign.fixed(&reference.selector)
        {
            // A commit: one version for good, asked of the upstream only the first time.
            let (store, key, wanted) = (self.store.clone(), name.clone(), label.to_owned());
            let cached =
                blocking(move || Ok(store.foreign_version_by_label(&key, &wanted)?)).await?;
            if let Some(version) = cached {
                return Ok(Found::foreign(version));
            }
            if let Some(version) = self.tier_foreign(&name, label).await {
                return self.remember_foreign(version).await;
            }
            let asked = self.ask(&name, &reference.selector).await?;
            return Ok(self.note_upstream(asked)?);
        }
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
                let key = outbox_key(&name, digest);
                if let Some(pending) = self.outbox.record(&key).await? {
                    return Ok(Found::fresh(crate::outbox::local_version(&pending)));
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
            let (store, key) = (self.store.clone(), name.clone());
            return Ok(blocking(move || Ok(store.foreign_version(&key, n)?))
                .await?
                .map(Found::foreign));
        }
        if let Some(version) = self.decoded_by_number(name, n) {
            return Ok(Some(Found::shared(version)));
        }
        let (store, key) = (self.store.clone(), name.clone());
        let version = blocking(move || Ok(store.version(&key, n)?)).await?;
        Ok(version.map(|v| self.keep_decoded(v)).map(Found::shared))
    }

    fn decoded_by_number(&self, name: &ArtifactName, n: u32) -> Option<Arc<Version>> {
        let decoded = self.decoded.lock().unwrap_or_else(PoisonError::into_inner);
        let digest = decoded.by_number.get(&(name.clone(), n))?;
        decoded.by_digest.get(digest).cloned()
    }

    fn decoded_by_digest(&self, digest: &hoard_types::Digest) -> Option<Arc<Version>> {
        let decoded = self.decoded.lock().unwrap_or_else(PoisonError::into_inner);
        decoded.by_digest.get(digest).cloned()
    }

    fn keep_decoded(&self, version: Version) -> Arc<Version> {
        self.decoded
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .keep(version)
    }

    /// A version this cache holds, by digest.
    async fn cached_by_digest(
        &self,
        name: &ArtifactName,
        digest: &hoard_types::Digest,
    ) -> Result<Option<Found>, ApiError> {
        let (store, digest) = (self.store.clone(), *digest);
        let found = if let Upstream::Foreign(_) = self.upstream {
            blocking(move || Ok(store.foreign_version_by_digest(&digest)?))
                .await?
                .map(Found::foreign)
        } else if let Some(version) = self.decoded_by_digest(&digest) {
            Some(Found::shared(version))
        } else {
            blocking(move || Ok(store.version_by_digest(&digest)?))
                .await?
                .map(|v| self.keep_decoded(v))
                .map(Found::shared)
        };
        Ok(found.filter(|f| f.head().artifact().is_ok_and(|a| a == *name)))
    }

    /// Asks the upstream and remembers its answer.
    async fn ask(
        &self,
        name: &ArtifactName,
        selector: &Selector,
    ) -> Result<Result<Found, hoard_upstream::Error>, ApiError> {
        match &self.upstream {
            Upstream::Foreign(foreign) => {
                // A branch that still names a commit the index holds: its files are known.
                let label = match foreign.label(name, selector).await {
                    Ok(label) => label,
                    Err(e) => return Ok(Err(e)),
                };
                if let Some(label) = label {
                    let (store, key) = (self.store.clone(), name.clone());
                    let cached =
                        blocking(move || Ok(store.foreign_version_by_label(&key, &label)?)).await?;
                    if let Some(version) = cached {
                        return Ok(Ok(Found::foreign(version)));
                    }
                }
                if let Selector::Version(n) = selector
                    && let Some(version) = self.tier_foreign(name, &format!("v{n}")).await
                {
                    return Ok(Ok(self.remember_foreign(version).await?));
                }
                match foreign.resolve_foreign(name, selector).await {
                    Ok(version) => {
                        self.share_foreign(&version);
                        Ok(Ok(self.remember_foreign(version).await?))
                    }
                    Err(e) => Ok(Err(e)),
                }
            }
            Upstream::Native { catalog, .. } => {
                if let Some(version) = self.tier_version(name, selector).await {
                    self.remember(version.clone()).await?;
                    return Ok(Ok(Found::shared(self.keep_decoded(version))));
                }
                self.ask_native(catalog.as_ref(), name, selector).await
            }
        }
    }

    /// Asks a native upstream, remembers its answer here and in the tier.
    async fn ask_native(
        &self,
        catalog: &dyn hoard_upstream::Catalog,
        name: &ArtifactName,
        selector: &Selector,
    ) -> Result<Result<Found, hoard_upstream::Error>, ApiError> {
        match catalog.resolve(name, selector).await {
            Ok(version) => {
                self.remember(version.clone()).await?;
                self.share(&version);
                // A warm request that follows need not decode it from the index.
                Ok(Ok(Found::shared(self.keep_decoded(version))))
            }
            Err(e) => Ok(Err(e)),
        }
    }

    /// A native version by number or digest from the fleet tier, if it has one that
    /// validates and is the one asked for; anything else is ignored (and the upstream
    /// asked).
    async fn tier_version(&self, name: &ArtifactName, selector: &Selector) -> Option<Version> {
        let tier = self.tier.as_ref().filter(|t| t.usable())?;
        if selector.is_mutable() {
            return None;
        }
        let body = tier.version(name, selector).await?;
        let checked = serde_json::from_slice::<Version>(&body)
            .map_err(|e| e.to_string())
            .and_then(|v| {
                v.validate().map_err(|e| e.to_string())?;
                let same = v.artifact().is_ok_and(|a| a == *name)
                    && match selector {
                        Selector::Version(n) => v.number().is_ok_and(|m| m == *n),
                        Selector::Digest(d) => v.digest == *d,
                        Selector::Alias(_) => false,
                    };
                if same {
                    Ok(v)
                } else {
                    Err(format!(
                        "it is `{}:{}`, not `{name}:{selector}`",
                        v.name, v.version
                    ))
                }
            });
        match checked {
            Ok(version) => Some(version),
            Err(reason) => {
                tracing::warn!(version = %format!("{name}:{selector}"), %reason, "the tier's copy of a version is unusable; asking the upstream");
                None
            }
        }
    }

    /// A foreign version by the label that names it for good (`vN`, a Hub commit) from
    /// the fleet tier, if it has one that parses and is the one asked for.
    async fn tier_foreign(&self, name: &ArtifactName, label: &str) -> Option<ForeignVersion> {
        let tier = self.tier.as_ref().filter(|t| t.usable())?;
        let body = tier.foreign_version(name, label).await?;
        match serde_json::from_slice::<ForeignVersion>(&body) {
            Ok(v) if v.artifact().is_ok_and(|a| a == *name) && v.version == label => Some(v),
            Ok(v) => {
                tracing::warn!(version = %format!("{name}:{label}"), found = %format!("{}/{}/{}:{}", v.entity, v.project, v.name, v.version), "the tier's copy of a version is another one; asking the upstream");
                None
            }
            Err(e) => {
                tracing::warn!(version = %format!("{name}:{label}"), error = %e, "the tier's copy of a version does not parse; asking the upstream");
                None
            }
        }
    }

    /// Stores a foreign version the upstream gave in the tier, by its label, without its
    /// aliases.
    fn share_foreign(&self, version: &ForeignVersion) {
        let (Some(tier), Ok(name)) = (&self.tier, version.artifact()) else {
            return;
        };
        let stored = ForeignVersion {
            aliases: Vec::new(),
            ..version.clone()
        };
        if let Ok(body) = serde_json::to_vec(&stored) {
            tier.put_foreign_version(&name, &version.version, body.into());
        }
    }

    /// Stores a version the upstream gave in the tier, by number and digest, without its
    /// aliases (they change).
    fn share(&self, version: &Version) {
        let Some(tier) = &self.tier else {
            return;
        };
        let Ok(number) = version.number() else {
            return;
        };
        let Ok(name) = version.artifact() else {
            return;
        };
        let stored = Version {
            aliases: Vec::new(),
            ..version.clone()
        };
        match serde_json::to_vec(&stored) {
            Ok(body) => tier.put_version(&name, number, version.digest, body.into()),
            Err(e) => tracing::debug!(error = %e, "cannot encode a version for the tier"),
        }
    }

    async fn resolve_alias(&self, name: &ArtifactName, alias: &str) -> Result<Found, ApiError> {
        // A publish waiting here that gave the alias is where it will point once uploaded.
        if let Some(found) = self.pending(name, alias).await? {
            return Ok(found);
        }
        let (store, key, a) = (self.store.clone(), name.clone(), alias.to_owned());
        let record = blocking(move || Ok(store.alias(&key, &a)?)).await?;
        // By digest: a version without a number (a Hub commit) is found the same way.
        let known = match record {
            Some(record) => self
                .cached_by_digest(name, &record.digest)
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
                    // Found again by digest; `u32::MAX` for a version without a number.
                    version: head.number().unwrap_or(u32::MAX),
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
                        e.reason(),
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

    /// The newest publish waiting here that gave `name` the alias, with a warning that the
    /// upstream has not confirmed it.
    async fn pending(&self, name: &ArtifactName, alias: &str) -> Result<Option<Found>, ApiError> {
        let Some(pending) = self.outbox.pending_alias(name, alias).await? else {
            return Ok(None);
        };
        let mut found = Found::fresh(crate::outbox::local_version(&pending));
        found.warning = Some(format!(
            "`{name}:{alias}` is a publish made here and not uploaded yet (`{name}@{}`); the upstream has not confirmed the alias",
            pending.digest
        ));
        Ok(Some(found))
    }

    /// Stores a version from the upstream.
    /// Keeping it is a cache: a version already held is not written again, and on a disk
    /// into the index's reserve (or when the write fails) the request goes on without it.
    async fn remember(&self, version: Version) -> Result<(), ApiError> {
        // An untrusted answer, kept or not.
        version.validate()?;
        let name = version.artifact()?;
        // Held and decoded already: no index read (20 ms for 20,000 files) to compare.
        if self
            .decoded_by_number(&name, version.number()?)
            .is_some_and(|v| v.digest == version.digest)
        {
            return Ok(());
        }
        let store = self.store.clone();
        blocking(move || {
            let held = store.version(&name, version.number()?)?;
            if held.is_some_and(|v| v.digest == version.digest) {
                return Ok(None);
            }
            if store.low_on_space() {
                tracing::warn!(version = %name, "the disk is nearly full: not caching the version's manifest");
                return Ok(None);
            }
            if let Err(e) = store.put_version(&version) {
                tracing::warn!(error = %crate::error::chain(&e), "cannot cache a version's manifest");
            }
            Ok(Some((name, version.number()?)))
        })
        .await
        .map(|written| {
            // The upstream gave a number again, to other contents: forget the old answer.
            if let Some(key) = written {
                self.decoded
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .by_number
                    .remove(&key);
            }
        })
    }

    /// Keeps a version the foreign upstream described.
    /// A cache, as for hoard's own versions: not written again when held as is, and a
    /// request goes on without it on a disk into the index's reserve.
    async fn remember_foreign(&self, version: ForeignVersion) -> Result<Found, ApiError> {
        let store = self.store.clone();
        blocking(move || {
            if store.low_on_space() {
                tracing::warn!(version = %version.artifact()?, "the disk is nearly full: not caching the version");
            } else if let Err(e) = store.put_foreign_version(&version) {
                tracing::warn!(error = %crate::error::chain(&e), "cannot cache a W&B version");
            }
            Ok(Found::foreign(version))
        })
        .await
    }
}

fn humanize(age: Duration) -> String {
    let s = age.as_secs();
    match s {
        0..120 => format!("{s} s"),
        120..7200 => format!("{} min", s / 60),
        _ => format!("{} h", s / 3600),
    }
}

#[cfg(test)]
mod tests {
    use hoard_types::{Digest, Entry, Manifest, RelPath};

    use super::*;

    fn version(n: u32, files: usize) -> Version {
        let mut manifest = Manifest::new();
        for i in 0..files {
            manifest.entries.insert(
                RelPath::new(format!("f{i}")).expect("a plain name"),
                Entry {
                    digest: Digest::of(format!("{n}/{i}").as_bytes()),
                    exec: false,
                    reference: None,
                    size: 1,
                },
            );
        }
        crate::version::a_version(&format!("v{n}"), manifest)
    }

    /// Decoded versions are found by number and by digest, and hold at most
    /// `MAX_ENTRIES` files in all: over it they are let go, and a version larger than
    /// the bound alone is handed back without being kept.
    #[test]
    fn decoded_versions_are_bounded_by_their_files() {
        let mut decoded = Decoded::default();
        let half = Decoded::MAX_ENTRIES / 2;
        let v0 = decoded.keep(version(0, half));
        let name = v0.artifact().expect("a name");
        assert_eq!(decoded.by_number.get(&(name.clone(), 0)), Some(&v0.digest));
        assert!(decoded.by_digest.contains_key(&v0.digest));
        decoded.keep(version(1, half));
        assert_eq!(decoded.entries, 2 * half);
        // A third does not fit: the others are let go.
        let v2 = decoded.keep(version(2, 10));
        assert_eq!(decoded.entries, 10);
        assert_eq!(decoded.by_digest.len(), 1);
        assert!(decoded.by_digest.contains_key(&v2.digest));
        let huge = decoded.keep(version(3, Decoded::MAX_ENTRIES + 1));
        assert!(!decoded.by_digest.contains_key(&huge.digest));
        assert_eq!(decoded.entries, 10);
    }
}
