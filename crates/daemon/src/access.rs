//! Who may have what: cached bytes are not an access grant.
//!
//! Every call that names an artifact (resolve, ls, file, materialize, prefetch, pin,
//! unpin, publish) goes through [`Access::demand_credential`] before it asks anything of
//! the upstream, and through [`Access::authorize`] before it answers anything about a
//! version or hands out a file.
//!
//! Before a caller who sent their own credential gets a version, the upstream confirms,
//! with that credential, that they may download it. The credential comes in the
//! `X-Hoard-Token` header (the CLI and the Python client send `HOARD_TOKEN`). It is kept
//! in memory only, inside the upstream client made for it, and never logged; decisions are
//! remembered per (credential, artifact, version) for `access_ttl`. A view-only member is
//! refused even when every blob is on disk; a caller with no access gets the same answer
//! as for a missing artifact. When the upstream cannot be reached, a caller whose access
//! was confirmed within `access_ttl` is served, anyone else refused with the reason.
//! Callers without a credential are served on the daemon's own (the per-user case), unless
//! `require_caller_token` is set (a system daemon). A version published here and not yet
//! committed upstream has no upstream to ask: only the daemon's own user, who published
//! it, gets it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use hoard_types::Selector;
use hoard_upstream::Upstream;

use crate::caller::Asker;
use crate::error::ApiError;
use crate::version::{Found, Head, Versioned};

/// The header a caller's credential travels in.
pub(crate) const TOKEN_HEADER: &str = "x-hoard-token";

/// Upstream clients kept per credential at most (the oldest go first).
const CLIENTS: usize = 256;

/// Who may download what, as the upstream last said.
pub(crate) struct Access {
    /// Milliseconds; replaced when the configuration is reloaded.
    ttl_ms: AtomicU64,
    /// Callers must send their own credential (replaced on reload).
    require_token: AtomicBool,
    /// By blake3 of the credential: the client that speaks with it.
    clients: Mutex<HashMap<[u8; 32], Upstream>>,
    /// (credential, `entity/project/name@digest`) → when the upstream said yes.
    allowed: Mutex<HashMap<([u8; 32], String), Instant>>,
}

impl Access {
    pub(crate) fn new(ttl: Duration, require_token: bool) -> Self {
        Self {
            ttl_ms: AtomicU64::new(millis(ttl)),
            require_token: AtomicBool::new(require_token),
            clients: Mutex::default(),
            allowed: Mutex::default(),
        }
    }

    /// Applies a reloaded configuration.
    pub(crate) fn reload(&self, ttl: Duration, require_token: bool) {
        self.ttl_ms.store(millis(ttl), Ordering::Relaxed);
        self.require_token.store(require_token, Ordering::Relaxed);
    }

    pub(crate) fn requires_token(&self) -> bool {
        self.require_token.load(Ordering::Relaxed)
    }

    fn ttl(&self) -> Duration {
        Duration::from_millis(self.ttl_ms.load(Ordering::Relaxed))
    }

    /// Refuses a caller without a credential where one is required: before anything is
    /// asked of the upstream on their behalf.
    pub(crate) fn demand_credential(&self, who: &Asker) -> Result<(), ApiError> {
        if who.token.is_none() && self.requires_token() {
            return Err(ApiError::new(
                http::StatusCode::UNAUTHORIZED,
                "credential-required",
                "this daemon serves artifacts only to callers who send their own upstream credential: set HOARD_TOKEN",
            ));
        }
        Ok(())
    }

    /// Whether `who` may have `version` (see the module docs). A version published here
    /// and not committed upstream yet is the daemon's user's alone.
    pub(crate) async fn authorize(
        &self,
        upstream: &Upstream,
        who: &Asker,
        found: &Found,
    ) -> Result<(), ApiError> {
        self.demand_credential(who)?;
        let version = &found.head();
        if version.is_pending() {
            if who.caller.is_daemon_user() {
                return Ok(());
            }
            return Err(ApiError::not_found(format!(
                "artifact `{}/{}/{}@{}`",
                version.entity, version.project, version.name, version.digest
            )));
        }
        let foreign = match &found.version {
            Versioned::Foreign(foreign, _) => Some(foreign.as_ref()),
            Versioned::Native(_) => None,
        };
        self.check(upstream, who.token.as_deref(), version, foreign)
            .await
    }

    /// Confirms that the holder of `token` may download `version` (see the module docs).
    async fn check(
        &self,
        upstream: &Upstream,
        token: Option<&str>,
        version: &Head<'_>,
        foreign_version: Option<&hoard_types::ForeignVersion>,
    ) -> Result<(), ApiError> {
        let Some(token) = token else {
            return Ok(());
        };
        // A public repo of the Hub: anyone may download it, nothing to confirm.
        if let Upstream::Foreign(foreign) = upstream
            && foreign.public(version.metadata)
        {
            return Ok(());
        }
        let who = *blake3::hash(token.as_bytes()).as_bytes();
        let what = format!(
            "{}/{}/{}@{}",
            version.entity, version.project, version.name, version.digest
        );
        let key = (who, what);
        let confirmed = self
            .allowed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&key)
            .copied();
        if confirmed.is_some_and(|at| at.elapsed() < self.ttl()) {
            return Ok(());
        }
        let Some(client) = self.client(upstream, who, token)? else {
            // No credentials upstream (a `dir://` root): nothing to confirm.
            return Ok(());
        };
        let name = version.artifact()?;
        let asked = match &client {
            // A foreign upstream knows versions by number (W&B) or commit (the Hub); the
            // answer must be the version this cache holds.
            Upstream::Foreign(foreign) => match foreign_version {
                Some(held) => foreign.confirm(held).await,
                None => Err(hoard_upstream::Error::NotFound {
                    what: format!("`{name}:{}` as a version of this upstream", version.version),
                }),
            },
            Upstream::Native { catalog, .. } => catalog
                .resolve(&name, &Selector::Digest(version.digest))
                .await
                .map(drop),
        };
        match asked {
            Ok(()) => {
                let mut allowed = self.allowed.lock().unwrap_or_else(PoisonError::into_inner);
                if allowed.len() > 100_000 {
                    allowed.retain(|_, at| at.elapsed() < self.ttl());
                }
                allowed.insert(key, Instant::now());
                Ok(())
            }
            Err(e) if e.is_unreachable() => Err(ApiError::new(
                http::StatusCode::SERVICE_UNAVAILABLE,
                "access-unconfirmed",
                format!(
                    "cannot confirm that your credential may download `{}/{}/{}:{}`: the upstream `{}` cannot be reached{}; cached files are served only to callers it confirmed within `access_ttl` ({})",
                    version.entity,
                    version.project,
                    version.name,
                    version.version,
                    upstream.describe(),
                    confirmed.map_or_else(String::new, |at| format!(
                        " (yours was confirmed {} s ago)",
                        at.elapsed().as_secs()
                    )),
                    humanize(self.ttl())
                ),
            )),
            Err(e) => Err(e.into()),
        }
    }

    /// The upstream as the holder of `token` sees it (the daemon's own where the upstream
    /// has no credentials).
    pub(crate) fn upstream_for(
        &self,
        upstream: &Upstream,
        token: &str,
    ) -> Result<Upstream, ApiError> {
        let who = *blake3::hash(token.as_bytes()).as_bytes();
        Ok(self
            .client(upstream, who, token)?
            .unwrap_or_else(|| upstream.clone()))
    }

    fn client(
        &self,
        upstream: &Upstream,
        who: [u8; 32],
        token: &str,
    ) -> Result<Option<Upstream>, ApiError> {
        let mut clients = self.clients.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(client) = clients.get(&who) {
            return Ok(Some(client.clone()));
        }
        let Some(client) = upstream.with_token(token) else {
            return Ok(None);
        };
        let client = client?;
        if clients.len() >= CLIENTS {
            clients.clear();
        }
        clients.insert(who, client.clone());
        Ok(Some(client))
    }
}

fn humanize(d: Duration) -> String {
    format!("{} s", d.as_secs())
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;

    use hoard_types::registry::VersionList;
    use hoard_types::{ArtifactName, Digest, Manifest, Version};
    use hoard_upstream::{BlobSource, BlobStream, BoxFuture, Catalog, Error};

    use super::*;

    /// An upstream that confirms every credential while `online`, and cannot be reached
    /// otherwise; it counts the confirmations asked of it.
    struct Confirming {
        online: Arc<AtomicBool>,
        asked: Arc<AtomicU64>,
        version: Version,
    }

    impl BlobSource for Confirming {
        fn describe(&self) -> String {
            "test://confirming".to_owned()
        }

        fn fetch_blob<'a>(
            &'a self,
            digest: &'a Digest,
            _: u64,
            _: Option<std::ops::Range<u64>>,
        ) -> BoxFuture<'a, Result<BlobStream, Error>> {
            Box::pin(async move {
                Err(Error::NotFound {
                    what: format!("blob `{digest}`"),
                })
            })
        }
    }

    impl Catalog for Confirming {
        fn resolve<'a>(
            &'a self,
            _: &'a ArtifactName,
            _: &'a Selector,
        ) -> BoxFuture<'a, Result<Version, Error>> {
            self.asked.fetch_add(1, Ordering::Relaxed);
            let answer = if self.online.load(Ordering::Relaxed) {
                Ok(self.version.clone())
            } else {
                Err(Error::Unreachable {
                    url: self.describe(),
                    attempts: 1,
                    cause: "down".into(),
                })
            };
            Box::pin(async move { answer })
        }

        fn list<'a>(&'a self, name: &'a ArtifactName) -> BoxFuture<'a, Result<VersionList, Error>> {
            Box::pin(async move {
                Err(Error::NotFound {
                    what: format!("artifact `{name}`"),
                })
            })
        }

        fn artifacts<'a>(
            &'a self,
            project: &'a hoard_types::ProjectName,
        ) -> BoxFuture<'a, Result<hoard_types::registry::ArtifactList, Error>> {
            Box::pin(async move {
                Err(Error::NotFound {
                    what: format!("project `{project}`"),
                })
            })
        }

        fn with_token(&self, _: &str) -> Option<Result<Upstream, Error>> {
            Some(Ok(Upstream::read_only(Arc::new(Self {
                online: self.online.clone(),
                asked: self.asked.clone(),
                version: self.version.clone(),
            }))))
        }
    }

    /// A confirmation is reused within `access_ttl`, also while the upstream is down, and
    /// expires after it: then a caller is refused until the upstream answers again. Under
    /// paused time: the hour passes in no time.
    #[tokio::test(start_paused = true)]
    async fn a_confirmation_expires_while_the_upstream_is_down() {
        let manifest = Manifest::new();
        let version = crate::version::a_version("v0", manifest);
        let (online, asked) = (Arc::new(AtomicBool::new(true)), Arc::new(AtomicU64::new(0)));
        let upstream = Upstream::read_only(Arc::new(Confirming {
            online: online.clone(),
            asked: asked.clone(),
            version: version.clone(),
        }));
        let access = Access::new(Duration::from_secs(60), false);
        let found = crate::version::Found::fresh(version);
        let version = found.head();
        access
            .check(&upstream, Some("mia"), &version, None)
            .await
            .unwrap();
        assert_eq!(asked.load(Ordering::Relaxed), 1);

        online.store(false, Ordering::Relaxed);
        tokio::time::advance(Duration::from_secs(59)).await;
        access
            .check(&upstream, Some("mia"), &version, None)
            .await
            .unwrap();
        assert_eq!(asked.load(Ordering::Relaxed), 1, "reused within the TTL");

        tokio::time::advance(Duration::from_secs(2)).await;
        let refused = access
            .check(&upstream, Some("mia"), &version, None)
            .await
            .unwrap_err();
        assert_eq!(refused.kind, "access-unconfirmed", "{refused:?}");
        assert!(refused.detail.contains("61 s ago"), "{}", refused.detail);

        online.store(true, Ordering::Relaxed);
        access
            .check(&upstream, Some("mia"), &version, None)
            .await
            .unwrap();
        assert_eq!(asked.load(Ordering::Relaxed), 3);
    }
}
