//! The socket API (v1): dispatch, handlers, and NDJSON streams for long calls.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use futures_util::StreamExt;
use hoard_http::{Body, BodyError, full, json};
use hoard_store::LinkMode;
use hoard_types::api::{
    ArtifactsRequest, BadBlob, DamagedFile, Event, GcReport, GcRequest, Health, ListedEntry,
    MaterializeRequest, PinRequest, PublishRequest, ResolveRequest, Status, Verified,
    VerifyRequest, VersionsRequest,
};
use hoard_types::registry::Problem;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use tokio::sync::mpsc;
use tracing::Instrument;

use crate::caller::{Asker, Caller};
use crate::daemon::Daemon;
use crate::error::ApiError;
use crate::runtime::blocking;
use crate::version::{Selection, Versioned};

/// Largest request body: requests are small JSON documents.
const MAX_BODY: usize = 1 << 20;
/// How long a request body may take to arrive.
const BODY_DEADLINE: std::time::Duration = std::time::Duration::from_secs(30);

fn problem(error: &ApiError) -> Response<Body> {
    hoard_http::problem(&Problem {
        kind: error.kind.to_owned(),
        title: error
            .status
            .canonical_reason()
            .unwrap_or("Error")
            .to_owned(),
        status: error.status.as_u16(),
        detail: error.detail.clone(),
        missing: Vec::new(),
    })
}

/// Answers one request; errors become problem documents.
pub(crate) async fn handle(daemon: Arc<Daemon>, request: Request<Incoming>) -> Response<Body> {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let span = tracing::debug_span!("request", %method, path);
    let (call, result) = dispatch(&daemon, request).instrument(span).await;
    let response = result.unwrap_or_else(|e| {
        if e.status.is_server_error() {
            tracing::error!(call, detail = %e.detail, "request failed");
        }
        daemon.metrics.refusal(e.kind);
        problem(&e)
    });
    daemon.metrics.request(call, response.status().as_u16());
    response
}

/// The metrics listener: `GET /metrics`, nothing else.
pub(crate) async fn handle_metrics_only(
    daemon: Arc<Daemon>,
    request: Request<Incoming>,
) -> Response<Body> {
    let result = if request.method() == Method::GET && request.uri().path() == "/metrics" {
        metrics(&daemon).await
    } else {
        Err(ApiError::not_found("only `GET /metrics` is served here"))
    };
    result.unwrap_or_else(|e| problem(&e))
}

async fn dispatch(
    daemon: &Arc<Daemon>,
    request: Request<Incoming>,
) -> (&'static str, Result<Response<Body>, ApiError>) {
    let path = request.uri().path().to_owned();
    match (request.method(), path.as_str()) {
        (&Method::GET | &Method::HEAD, "/v1/health") => ("health", health(daemon, &request)),
        (&Method::GET, "/v1/status") => ("status", status(daemon, &request).await),
        (&Method::GET, "/metrics") => ("metrics", metrics(daemon).await),
        (&Method::POST, "/v1/resolve") => ("resolve", resolve(daemon, request).await),
        (&Method::POST, "/v1/artifacts") => ("artifacts", artifacts(daemon, request).await),
        (&Method::POST, "/v1/versions") => ("versions", versions(daemon, request).await),
        (&Method::POST, "/v1/materialize") => ("materialize", stream(daemon, request, true).await),
        (&Method::POST, "/v1/file") => ("file", file(daemon, request).await),
        (&Method::POST, "/v1/prefetch") => ("prefetch", stream(daemon, request, false).await),
        (&Method::POST, "/v1/publish") => ("publish", publish(daemon, request).await),
        (&Method::GET, "/v1/pins") => ("pins", pins(daemon, &request).await),
        (&Method::POST, "/v1/pins") => ("pin", pin(daemon, request).await),
        (&Method::POST, "/v1/pins/remove") => ("unpin", unpin(daemon, request).await),
        (&Method::POST, "/v1/gc") => ("gc", gc(daemon, request).await),
        (&Method::POST, "/v1/verify") => ("verify", verify(daemon, request).await),
        (
            _,
            "/v1/health" | "/v1/status" | "/metrics" | "/v1/resolve" | "/v1/artifacts"
            | "/v1/versions" | "/v1/materialize" | "/v1/file" | "/v1/prefetch" | "/v1/publish"
            | "/v1/pins" | "/v1/pins/remove" | "/v1/gc" | "/v1/verify",
        ) => (
            "method_not_allowed",
            Err(ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method-not-allowed",
                format!("`{}` is not allowed on `{path}`", request.method()),
            )),
        ),
        _ => (
            "unknown",
            Err(ApiError::not_found(format!(
                "no call `{} {}` in the socket API (v1)",
                request.method(),
                hoard_types::truncate(&path)
            ))),
        ),
    }
}

async fn read_json<T: serde::de::DeserializeOwned>(
    request: Request<Incoming>,
) -> Result<T, ApiError> {
    hoard_http::read_json(request, MAX_BODY, BODY_DEADLINE)
        .await
        .map_err(|e| match e {
            BodyError::TooLarge { .. } => {
                ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "too-large", e.to_string())
            }
            BodyError::Invalid(_) => ApiError::bad_request(format!("invalid request: {e}")),
            _ => ApiError::bad_request(e.to_string()),
        })
}

/// Where the cache is, as a caller may see it: only the daemon's own user (or root) is
/// told (the cache is private to it anyway).
fn cache_dir_for(daemon: &Daemon, caller: Caller) -> String {
    if caller.is_admin() {
        daemon.cache_dir.display().to_string()
    } else {
        "(private to the daemon's user)".to_owned()
    }
}

fn health(daemon: &Daemon, request: &Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let caller = caller_of(request)?;
    let trouble = daemon.store.trouble();
    Ok(json(
        StatusCode::OK,
        &Health {
            status: if trouble.is_some() { "degraded" } else { "ok" }.to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            cache_dir: cache_dir_for(daemon, caller),
            upstream: daemon.upstream().describe(),
            detail: trouble,
        },
    ))
}

/// `status`: the cache as a whole; of pins and pending uploads, only the caller's own
/// (everyone's for the daemon's own user).
async fn status(
    daemon: &Arc<Daemon>,
    request: &Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let who = who_asks(request)?;
    let store = daemon.store.clone();
    let ((bytes, blobs), plan, versions) = blocking(move || {
        Ok((
            store.usage()?,
            store.eviction_plan(0)?,
            store.version_count()? + store.foreign_version_count()?,
        ))
    })
    .await?;
    let budget = daemon.keeper.budget();
    let now = daemon.snapshot((bytes, blobs));
    Ok(json(
        StatusCode::OK,
        &Status {
            cache_dir: cache_dir_for(daemon, who.caller),
            upstream: daemon.upstream().describe(),
            blobs,
            versions,
            cache_bytes: bytes,
            hits: now.hits,
            misses: now.misses,
            fetched_bytes: now.fetch.fetched_bytes.load(Ordering::Relaxed),
            in_flight: now.fetch.in_flight.load(Ordering::Relaxed),
            // Only the daemon's own user publishes.
            pending_uploads: if who.caller.is_daemon_user() {
                daemon.outbox.pending().await?
            } else {
                Vec::new()
            },
            budget_bytes: budget.map(|b| b.max_bytes),
            high_watermark_bytes: budget.map(|b| b.high_bytes),
            reclaimable_bytes: plan.freed_bytes,
            held_by_workdirs_bytes: plan.released_bytes + plan.held_by_workdirs_bytes,
            pinned_versions: daemon.pins(&who).await?.len() as u64,
            evicted_blobs: now.evicted_blobs,
            upstream_state: daemon.resolver.upstream_state(),
            link_modes: daemon
                .store
                .link_probes()
                .into_iter()
                .map(|(cache, dest, mode)| {
                    format!(
                        "dev {}:{} → dev {}:{}: {mode}",
                        rustix::fs::major(cache),
                        rustix::fs::minor(cache),
                        rustix::fs::major(dest),
                        rustix::fs::minor(dest)
                    )
                })
                .collect(),
            fs_verity: daemon.store.verity_status(),
            scrub: daemon.scrub.describe(bytes),
            trouble: daemon.store.trouble(),
            tier: daemon.options.tier.as_ref().map(|t| t.status()),
        },
    ))
}

async fn metrics(daemon: &Arc<Daemon>) -> Result<Response<Body>, ApiError> {
    let store = daemon.store.clone();
    let cache = blocking(move || Ok(store.usage()?)).await?;
    let mut response = Response::new(full(daemon.metrics.render(&daemon.snapshot(cache))));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    Ok(response)
}

async fn resolve(
    daemon: &Arc<Daemon>,
    request: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let who = who_asks(&request)?;
    let asked: ResolveRequest = read_json(request).await?;
    let found = daemon
        .resolve_for(
            &who,
            &asked.reference,
            asked.entity.as_deref(),
            asked.project.as_deref(),
        )
        .await?;
    let resolved = daemon.describe(&found, asked.entries, true).await?;
    Ok(json(StatusCode::OK, &resolved))
}

async fn artifacts(
    daemon: &Arc<Daemon>,
    request: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let who = who_asks(&request)?;
    let asked: ArtifactsRequest = read_json(request).await?;
    Ok(json(
        StatusCode::OK,
        &daemon.artifacts_for(&who, &asked).await?,
    ))
}

async fn versions(
    daemon: &Arc<Daemon>,
    request: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let who = who_asks(&request)?;
    let asked: VersionsRequest = read_json(request).await?;
    Ok(json(
        StatusCode::OK,
        &daemon.versions_for(&who, &asked).await?,
    ))
}

/// `materialize`, `file` and `prefetch`: resolution errors are answered as problems; once
/// the version is known, the answer is an NDJSON stream of [`Event`]s ending in `done` or
/// `error`. The work runs in its own task: a client that goes away does not interrupt it.
async fn stream(
    daemon: &Arc<Daemon>,
    request: Request<Incoming>,
    place: bool,
) -> Result<Response<Body>, ApiError> {
    let who = who_asks(&request)?;
    let asked: MaterializeRequest = read_json(request).await?;
    stream_for(daemon, asked, place, who).await
}

/// Who asks, and the upstream credential they sent. A credential that is not valid
/// header text is refused, not ignored (the caller would be served as someone else).
fn who_asks(request: &Request<Incoming>) -> Result<Asker, ApiError> {
    let caller = caller_of(request)?;
    let token = match request.headers().get(crate::access::TOKEN_HEADER) {
        None => None,
        Some(value) => {
            let text = value.to_str().map_err(|_| {
                ApiError::bad_request(
                    "the `X-Hoard-Token` header is not valid text (printable ASCII): check `HOARD_TOKEN`",
                )
            })?;
            Some(text.trim().to_owned()).filter(|t| !t.is_empty())
        }
    };
    Ok(Asker { caller, token })
}

/// Who sent the request, as the socket's kernel side says.
fn caller_of(request: &Request<Incoming>) -> Result<Caller, ApiError> {
    request
        .extensions()
        .get::<hoard_http::Peer>()
        .copied()
        .map(Caller::from)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::FORBIDDEN,
                "unknown-caller",
                "the socket cannot tell who is calling (no peer credentials)",
            )
        })
}

/// `file`: one file of a version. With a `dest`, it is materialized there like
/// `materialize` with `file`; without, the answer is the entry itself (its size, digest
/// and, for a reference entry, its `ref` URI: W&B's `Entry.ref`), and nothing is fetched.
async fn file(
    daemon: &Arc<Daemon>,
    request: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let who = who_asks(&request)?;
    let asked: MaterializeRequest = read_json(request).await?;
    let Some(path) = asked.file.as_deref() else {
        return Err(ApiError::bad_request(
            "`file` is required: the logical path of the file",
        ));
    };
    if asked.dest.is_some() {
        return stream_for(daemon, asked, true, who).await;
    }
    let path = hoard_types::RelPath::new(path)?;
    let found = daemon
        .resolve_for(
            &who,
            &asked.reference,
            asked.entity.as_deref(),
            asked.project.as_deref(),
        )
        .await?;
    let listed = match &found.version {
        Versioned::Foreign(..) => daemon
            .describe(&found, true, false)
            .await?
            .entries
            .into_iter()
            .find(|e| e.path == path),
        Versioned::Native(version) => {
            version
                .manifest
                .entries
                .get(&path)
                .map(|entry| ListedEntry {
                    path: path.clone(),
                    size: entry.size,
                    digest: Some(entry.digest),
                    upstream_digest: None,
                    exec: entry.exec,
                    reference: entry.reference.clone(),
                })
        }
    };
    let entry =
        listed.ok_or_else(|| ApiError::not_found(format!("the version has no file `{path}`")))?;
    Ok(json(StatusCode::OK, &entry))
}

/// `publish`: answers when the files are in the cache (and `dest`), or, with
/// `wait_seconds`, once the upstream committed the version or that time passed.
async fn publish(
    daemon: &Arc<Daemon>,
    request: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let who = who_asks(&request)?;
    if !who.caller.is_daemon_user() {
        // The daemon would read the inputs with its own rights, not the caller's.
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "wrong-user",
            "publishing through a daemon of another user is not supported yet; run your own (`hoard daemon`) to publish",
        ));
    }
    daemon.access.demand_credential(&who)?;
    let asked: PublishRequest = read_json(request).await?;
    let published = daemon.publish(asked).await?;
    Ok(json(StatusCode::OK, &published))
}

async fn pins(
    daemon: &Arc<Daemon>,
    request: &Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let who = who_asks(request)?;
    Ok(json(StatusCode::OK, &daemon.pins(&who).await?))
}

/// `pin`: fetches the version if needed, then keeps it from eviction.
async fn pin(daemon: &Arc<Daemon>, request: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let who = who_asks(&request)?;
    let asked: PinRequest = read_json(request).await?;
    Ok(json(StatusCode::OK, &daemon.pin(&who, &asked).await?))
}

async fn unpin(
    daemon: &Arc<Daemon>,
    request: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let who = who_asks(&request)?;
    let asked: PinRequest = read_json(request).await?;
    Ok(json(StatusCode::OK, &daemon.unpin(&who, &asked).await?))
}

/// Refuses operations on the whole cache (`gc`, `verify`) to anyone but the daemon's own
/// user and root.
fn admin_only(request: &Request<Incoming>, call: &str) -> Result<(), ApiError> {
    let caller = caller_of(request)?;
    if caller.is_admin() {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::FORBIDDEN,
        "admin-only",
        format!(
            "`{call}` works on the whole cache, which only the daemon's own user (uid {}) or root may do",
            rustix::process::geteuid().as_raw()
        ),
    ))
}

/// `gc`: evicts down to `target_bytes` (default: the low watermark) now.
async fn gc(daemon: &Arc<Daemon>, request: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    admin_only(&request, "gc")?;
    let asked: GcRequest = read_json(request).await?;
    let target = match (asked.target_bytes, daemon.keeper.budget()) {
        (Some(target), _) => target,
        (None, Some(budget)) => budget.low_bytes,
        (None, None) => {
            return Err(ApiError::bad_request(
                "no cache budget is configured (`max_size`); give a target size",
            ));
        }
    };
    let report = daemon.keeper.gc(target, asked.dry_run).await?;
    Ok(json(
        StatusCode::OK,
        &GcReport {
            target_bytes: target,
            dry_run: asked.dry_run,
            evicted_blobs: report.evicted,
            freed_bytes: report.freed_bytes,
            released_bytes: report.released_bytes,
            remaining_bytes: report.remaining_bytes,
            held_by_workdirs_bytes: report.held_by_workdirs_bytes,
        },
    ))
}

/// Bad blobs fetched again at the same time by `verify`.
const REPAIRS: usize = 8;

/// `verify`: re-hashes every blob; bad ones are quarantined (and counted as tampered),
/// then fetched again from the upstream where it serves blobs by digest.
async fn verify(
    daemon: &Arc<Daemon>,
    request: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    admin_only(&request, "verify")?;
    let asked: VerifyRequest = read_json(request).await?;
    let store = daemon.store.clone();
    let report = blocking(move || Ok(store.verify()?)).await?;
    daemon
        .metrics
        .tampered
        .fetch_add(report.bad.len() as u64, Ordering::Relaxed);
    let bad = futures_util::stream::iter(report.bad)
        .map(|bad| async move {
            tracing::warn!(key = %bad.key, why = bad.why, "verify: quarantined a bad blob");
            let repaired = daemon.fetcher.ensure_from(bad.key, bad.size, None, None, None, false).await;
            if let Err(e) = &repaired {
                tracing::warn!(key = %bad.key, error = %e.detail, "verify: cannot fetch it again now");
            }
            BadBlob {
                blob: bad.key.to_string(),
                why: bad.why,
                repaired: repaired.is_ok(),
                repair_error: repaired.err().map(|e| e.detail),
            }
        })
        .buffer_unordered(REPAIRS)
        .collect()
        .await;
    let _ = daemon.fetcher.commit_now().await;
    // Files handed out before a blob was found modified keep its inode.
    let damaged = daemon.damaged(None).await?;
    let damaged = if asked.repair {
        daemon.repair(damaged).await
    } else {
        damaged
            .into_iter()
            .map(|d| (d, Err(ApiError::internal(""))))
            .collect()
    };
    let damaged = damaged
        .into_iter()
        .map(|(d, outcome)| DamagedFile {
            dest: d.placement.dest,
            path: d.path,
            blob: d.key.to_string(),
            repaired: outcome.is_ok(),
            repair_error: outcome.err().map(|e| e.detail).filter(|e| !e.is_empty()),
        })
        .collect();
    Ok(json(
        StatusCode::OK,
        &Verified {
            checked: report.checked,
            bytes: report.bytes,
            sealed: report.sealed,
            sealed_total: report.sealed_total,
            bad,
            damaged,
        },
    ))
}

/// Where a call puts the files: `dest`, or (instead) an HF cache to fill; both absolute.
/// A resolve-only call (`place` false) puts them nowhere.
fn destinations(
    asked: &MaterializeRequest,
    place: bool,
) -> Result<(Option<PathBuf>, Option<PathBuf>), ApiError> {
    let absolute = |what: &str, path: &str| {
        let path = PathBuf::from(path);
        if path.is_absolute() {
            Ok(path)
        } else {
            Err(ApiError::bad_request(format!(
                "`{what}` must be an absolute path, not `{}`",
                path.display()
            )))
        }
    };
    let hf_cache = match (&asked.hf_cache, &asked.dest) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request("give `dest` or `hf_cache`, not both"));
        }
        (Some(_), None) if !place => {
            return Err(ApiError::bad_request("`hf_cache` is for materialize calls"));
        }
        (Some(cache), None) => Some(absolute("hf_cache", cache)?),
        (None, _) => None,
    };
    let dest = if place && hf_cache.is_none() {
        let dest = asked.dest.as_deref().ok_or_else(|| {
            ApiError::bad_request("`dest` is required: the directory to materialize into")
        })?;
        let dest = PathBuf::from(dest);
        if !dest.is_absolute() {
            return Err(ApiError::bad_request(format!(
                "`dest` must be an absolute path, not `{}`",
                dest.display()
            )));
        }
        Some(dest)
    } else {
        None
    };
    Ok((dest, hf_cache))
}

/// The branch or tag a reference asked the Hub for (`latest` is `main`), for the HF
/// cache's `refs/`; `None` for a commit.
fn hf_revision(reference: &str) -> Option<String> {
    match reference.parse::<hoard_types::ArtifactRef>().ok()?.selector {
        hoard_types::Selector::Alias(alias) if alias == "latest" => Some("main".to_owned()),
        hoard_types::Selector::Alias(alias) if !hoard_types::foreign::is_commit(&alias) => {
            Some(alias)
        }
        _ => None,
    }
}

async fn stream_for(
    daemon: &Arc<Daemon>,
    asked: MaterializeRequest,
    place: bool,
    who: Asker,
) -> Result<Response<Body>, ApiError> {
    let mode: LinkMode = match &asked.mode {
        Some(mode) => mode.parse().map_err(|e: String| ApiError::bad_request(e))?,
        None => LinkMode::Auto,
    };
    if mode == LinkMode::Symlink && !who.caller.is_daemon_user() {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "destination-refused",
            "`symlink` mode links into the cache, which only the daemon's user may read; use `hardlink` or `copy`",
        ));
    }
    let (dest, hf_cache) = destinations(&asked, place)?;
    // Cached bytes are not an access grant.
    let found = daemon
        .resolve_for(
            &who,
            &asked.reference,
            asked.entity.as_deref(),
            asked.project.as_deref(),
        )
        .await?;
    let resolved = daemon.describe(&found, false, false).await?;
    tracing::info!(
        reference = asked.reference,
        version = found.head().version,
        "materialize"
    );
    let slot = daemon
        .slots
        .take(who.caller.uid, crate::caller::CALLS_PER_UID)?;
    let (tx, rx) = mpsc::channel::<Event>(64);
    let daemon = daemon.clone();
    let foreground = daemon.fetcher.foreground();
    tokio::spawn(async move {
        let (_slot, _foreground) = (slot, foreground);
        let _ = tx.send(Event::Resolved(resolved)).await;
        if let Some(message) = found.warning.clone() {
            let _ = tx.send(Event::Warning { message }).await;
        }
        let selection = Selection::of(&asked);
        let done = match &hf_cache {
            _ if asked.dry_run => {
                let dest = dest.as_ref().map(|d| d.display().to_string());
                let dest = dest.or_else(|| hf_cache.as_ref().map(|c| c.display().to_string()));
                daemon.plan(&found, &selection, dest).await
            }
            Some(cache) => {
                let revision = hf_revision(&asked.reference);
                daemon
                    .fill_hf_cache(&found, &selection, who.caller, cache, revision, &tx)
                    .await
            }
            None => {
                daemon
                    .materialize(&found, &selection, who.caller, dest.as_deref(), mode, &tx)
                    .await
            }
        };
        let end = match done {
            Ok(summary) => Event::Done(summary),
            Err(e) => {
                daemon.metrics.refusal(e.kind);
                Event::Error {
                    kind: e.kind.to_owned(),
                    detail: e.detail,
                }
            }
        };
        let _ = tx.send(end).await;
    });
    let lines = futures_util::stream::unfold(rx, |mut rx| async move {
        let event = rx.recv().await?;
        let mut line = serde_json::to_vec(&event).expect("events serialize");
        line.push(b'\n');
        Some((Ok::<_, std::io::Error>(Frame::data(Bytes::from(line))), rx))
    });
    let mut response = Response::new(StreamBody::new(lines).boxed_unsync());
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    Ok(response)
}
