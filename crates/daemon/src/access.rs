//! Cached bytes are not an access grant: before a caller who sent their own credential
//! gets a version's files, the upstream confirms, with that credential, that they may
//! download it.
//!
//! The credential comes in the `X-Hoard-Token` header (the CLI and the Python client send
//! `HOARD_TOKEN`). It is kept in memory only, inside the upstream client made for it, and
//! never logged; decisions are remembered per (credential, artifact, version) for
//! `access_ttl`. A view-only member is refused even when every blob is on disk; a caller
//! with no access gets the same answer as for a missing artifact. When the upstream cannot
//! be reached, a caller whose access was confirmed within `access_ttl` is served, anyone
//! else refused with the reason. Callers without a credential are served on the daemon's
//! own (the per-user case).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use hoard_types::{Selector, Version};
use hoard_upstream::Upstream;

use crate::error::ApiError;

/// The header a caller's credential travels in.
pub(crate) const TOKEN_HEADER: &str = "x-hoard-token";

/// Upstream clients kept per credential at most (the oldest go first).
const CLIENTS: usize = 256;

/// Who may download what, as the upstream last said.
pub(crate) struct Access {
    /// Milliseconds; replaced when the configuration is reloaded.
    ttl_ms: std::sync::atomic::AtomicU64,
    /// By blake3 of the credential: the client that speaks with it.
    clients: Mutex<HashMap<[u8; 32], Arc<dyn Upstream>>>,
    /// (credential, `entity/project/name@digest`) → when the upstream said yes.
    allowed: Mutex<HashMap<([u8; 32], String), Instant>>,
}

impl Access {
    pub(crate) fn new(ttl: Duration) -> Self {
        Self {
            ttl_ms: std::sync::atomic::AtomicU64::new(millis(ttl)),
            clients: Mutex::default(),
            allowed: Mutex::default(),
        }
    }

    pub(crate) fn set_ttl(&self, ttl: Duration) {
        self.ttl_ms
            .store(millis(ttl), std::sync::atomic::Ordering::Relaxed);
    }

    fn ttl(&self) -> Duration {
        Duration::from_millis(self.ttl_ms.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// Confirms that the holder of `token` may download `version` (see the module docs).
    pub(crate) async fn check(
        &self,
        upstream: &Arc<dyn Upstream>,
        token: Option<&str>,
        version: &Version,
    ) -> Result<(), ApiError> {
        let Some(token) = token else {
            return Ok(());
        };
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
        let asked = match client.foreign() {
            // A foreign upstream (W&B) knows versions by number; the answer must be the
            // version this cache holds.
            Some(foreign) => foreign
                .resolve_foreign(&name, &Selector::Version(version.number()?))
                .await
                .and_then(|v| {
                    if v.digest() == version.digest {
                        Ok(())
                    } else {
                        Err(hoard_upstream::Error::NotFound {
                            what: format!(
                                "`{name}:{}` as this cache knows it (it changed upstream)",
                                version.version
                            ),
                        })
                    }
                }),
            None => client
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

    fn client(
        &self,
        upstream: &Arc<dyn Upstream>,
        who: [u8; 32],
        token: &str,
    ) -> Result<Option<Arc<dyn Upstream>>, ApiError> {
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
