//! Request dispatch and the artifact routes (resolve, list, commit, move an alias).
//!
//! Paths are matched segment by segment. Entity, project, name and alias segments are
//! checked with the reference grammar before they touch the file system, so a path
//! segment can never be `..` or contain a `/`.

use std::sync::Arc;

use hoard_types::registry::{AliasRequest, CommitRequest, problem};
use hoard_types::{ArtifactName, ProjectName, Selector};
use http::{Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use tracing::Instrument;

use crate::api::{ApiError, blocking};
use crate::blobs;
use crate::state::{Action, Caller, State};
use hoard_http::{Body, json};

/// Answers one request; never fails (errors become problem documents).
pub(crate) async fn handle(state: Arc<State>, request: Request<Incoming>) -> Response<Body> {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let (route, result) = dispatch(&state, request).await;
    let response = result.unwrap_or_else(ApiError::into_response);
    state.metrics.request(route, response.status().as_u16());
    tracing::debug!(%method, path, route, status = response.status().as_u16(), "request");
    response
}

type Routed = (&'static str, Result<Response<Body>, ApiError>);

async fn dispatch(state: &Arc<State>, request: Request<Incoming>) -> Routed {
    let path = request.uri().path().to_owned();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let method = request.method().clone();
    let route: &'static str = match (&method, segments.as_slice()) {
        (&Method::GET, ["v1", "health"]) => "health",
        (&Method::GET, ["metrics"]) => "metrics",
        (&Method::GET, ["v1", "artifacts", _, _]) => "artifacts_list",
        (&Method::GET, ["v1", "artifacts", _, _, _, "versions"]) => "versions_list",
        (&Method::POST, ["v1", "artifacts", _, _, _, "versions"]) => "commit",
        (&Method::PUT, ["v1", "artifacts", _, _, _, "aliases", _]) => "alias_put",
        (&Method::GET, ["v1", "artifacts", _, _, _, _]) => "version_get",
        (&Method::POST, ["v1", "blobs", "missing"]) => "blobs_missing",
        (&Method::POST, ["v1", "blobs", "batch"]) => "blobs_batch",
        (&Method::GET, ["v1", "blobs", _]) => "blob_get",
        (&Method::HEAD, ["v1", "blobs", _]) => "blob_head",
        (&Method::PUT, ["v1", "blobs", _]) => "blob_put",
        (&Method::GET, ["v1", "blobs", _, "upload"]) => "upload_offset",
        (
            _,
            ["v1", "health"]
            | ["metrics"]
            | ["v1", "artifacts", _, _]
            | ["v1", "artifacts", _, _, _, _]
            | ["v1", "artifacts", _, _, _, "aliases", _]
            | ["v1", "blobs", _]
            | ["v1", "blobs", _, "upload"],
        ) => {
            let error = ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                problem::METHOD_NOT_ALLOWED,
                format!("`{method}` is not allowed on `{path}`"),
            );
            return ("method_not_allowed", Err(error));
        }
        _ => {
            return (
                "unknown",
                Err(ApiError::not_found(format!(
                    "route `{method} {}`; see the registry protocol (v1) in docs/registry.md",
                    hoard_types::truncate(&path)
                ))),
            );
        }
    };
    let authorization = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let caller = match state.caller(authorization.as_deref()) {
        Ok(caller) => caller,
        Err(e) => return (route, Err(e)),
    };
    let span = tracing::debug_span!("request", route, caller = caller.name());
    let result = async { match (route, segments.as_slice()) {
        ("health", _) => Ok(json(
            StatusCode::OK,
            &serde_json::json!({"status": "ok", "version": env!("CARGO_PKG_VERSION"), "open": state.is_open()}),
        )),
        ("metrics", _) => Ok(metrics(state)),
        ("artifacts_list", [_, _, e, p]) => artifacts(state, &caller, e, p).await,
        ("versions_list", [_, _, e, p, n, _]) => list(state, &caller, e, p, n).await,
        ("version_get", [_, _, e, p, n, s]) => resolve(state, &caller, e, p, n, s).await,
        ("commit", [_, _, e, p, n, _]) => {
            let (e, p, n) = ((*e).to_owned(), (*p).to_owned(), (*n).to_owned());
            commit(state, &caller, &e, &p, &n, request).await
        }
        ("alias_put", [_, _, e, p, n, _, a]) => {
            let (e, p, n, a) = ((*e).to_owned(), (*p).to_owned(), (*n).to_owned(), (*a).to_owned());
            move_alias(state, &caller, &e, &p, &n, &a, request).await
        }
        ("blobs_missing", _) => blobs::missing(state, &caller, request).await,
        ("blobs_batch", _) => blobs::batch(state, &caller, request).await,
        ("blob_get" | "blob_head", [_, _, d]) => {
            let d = (*d).to_owned();
            blobs::get(state, &caller, &d, &request).await
        }
        ("upload_offset", [_, _, d, _]) => blobs::upload_offset(state, &caller, d).await,
        ("blob_put", [_, _, d]) => {
            let d = (*d).to_owned();
            blobs::put(state, &caller, &d, request).await
        }
        // A route named above and not handled here: a gap between the two tables.
        _ => Err(ApiError::not_found(format!("a handler for route `{route}`"))),
    } }
    .instrument(span)
    .await;
    (route, result)
}

fn metrics(state: &State) -> Response<Body> {
    let mut response = Response::new(hoard_http::full(state.metrics.render()));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    response
}

fn artifact(entity: &str, project: &str, name: &str) -> Result<ArtifactName, ApiError> {
    ArtifactName::new(entity, project, name).map_err(|e| ApiError::bad_request(e.to_string()))
}

async fn artifacts(
    state: &Arc<State>,
    caller: &Caller,
    e: &str,
    p: &str,
) -> Result<Response<Body>, ApiError> {
    let project = ProjectName::parse(Some(&format!("{e}/{p}")), None, None)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    caller.authorize_project(&project)?;
    let root = state.root.clone();
    let list = blocking(move || root.artifacts(&project)).await?;
    Ok(json(StatusCode::OK, &list))
}

async fn list(
    state: &Arc<State>,
    caller: &Caller,
    e: &str,
    p: &str,
    n: &str,
) -> Result<Response<Body>, ApiError> {
    let name = artifact(e, p, n)?;
    caller.authorize(&name, Action::List)?;
    let root = state.root.clone();
    let list = blocking(move || root.list(&name)).await?;
    Ok(json(StatusCode::OK, &list))
}

async fn resolve(
    state: &Arc<State>,
    caller: &Caller,
    e: &str,
    p: &str,
    n: &str,
    selector: &str,
) -> Result<Response<Body>, ApiError> {
    let name = artifact(e, p, n)?;
    let selector = Selector::from_segment(selector).map_err(|reason| {
        ApiError::bad_request(format!(
            "invalid version selector: {reason}; expected an alias, `vN` or `@<digest>`"
        ))
    })?;
    caller.authorize(&name, Action::Download)?;
    let root = state.root.clone();
    let version = blocking(move || root.resolve(&name, &selector)).await?;
    Ok(json(StatusCode::OK, &version))
}

async fn commit(
    state: &Arc<State>,
    caller: &Caller,
    e: &str,
    p: &str,
    n: &str,
    request: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let name = artifact(e, p, n)?;
    caller.authorize(&name, Action::Publish)?;
    let commit: CommitRequest = state.read_json(request).await?;
    let (st, who, name2) = (state.clone(), caller.clone(), name.clone());
    let committed = blocking(move || {
        st.root
            .commit(&name2, &commit, |d| st.may_read_blob(&who, d).is_ok())
    })
    .await?;
    if !state.is_open() {
        state.note_blobs(&name, &committed.version.manifest);
    }
    tracing::info!(
        artifact = %name, version = committed.version.version, created = committed.created,
        caller = caller.name(), "commit"
    );
    let status = if committed.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(json(status, &committed.version))
}

async fn move_alias(
    state: &Arc<State>,
    caller: &Caller,
    e: &str,
    p: &str,
    n: &str,
    alias: &str,
    request: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let name = artifact(e, p, n)?;
    hoard_types::check_alias(alias).map_err(|e| ApiError::bad_request(e.to_string()))?;
    caller.authorize(&name, Action::MoveAlias)?;
    let body: AliasRequest = state.read_json(request).await?;
    let Ok(Selector::Version(number)) = Selector::parse_tag(&body.version) else {
        return Err(ApiError::bad_request(format!(
            "`version` must be `vN`, not `{}`",
            hoard_types::truncate(&body.version)
        )));
    };
    let (root, name2, alias2) = (state.root.clone(), name.clone(), alias.to_owned());
    blocking(move || root.set_alias(&name2, &alias2, number)).await?;
    tracing::info!(artifact = %name, alias, version = number, caller = caller.name(), "alias moved");
    let root = state.root.clone();
    let version = blocking(move || root.resolve(&name, &Selector::Version(number))).await?;
    Ok(json(StatusCode::OK, &version))
}
