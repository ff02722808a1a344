//! A fake Weights & Biases server for tests: the GraphQL operations and file paths the
//! wandb SDK and hoard use (read from the SDK's source, v0.28–0.31), with failures on
//! demand: signed URLs that expire (403 until asked for again), 429s, corrupt bytes, a
//! key that cannot see a project. It counts what it was asked.
//!
//! Operations: `Viewer`, `GetDefaultEntity`, `ServerFeaturesQuery` (what `wandb.Api()`
//! asks first), `ArtifactMembershipByName`, `FetchArtifactManifest`,
//! `GetArtifactMembershipFileUrls` (with the `fileNames` filter of
//! `ArtifactMembershipFiles`). Paths: `/manifests/{id}` and `/signed/{generation}/{md5}`
//! (the signed URLs), `/artifactsV2/…/{md5}/{file}` (authenticated, as the SDK builds it).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};

use base64::Engine as _;
use bytes::Bytes;
use hoard_http::Body;
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use md5::Digest as _;
use serde_json::{Value, json};

use crate::server::Served;

/// A file of a version: base64 MD5, size, reference.
type FakeFile = (String, u64, Option<String>);

/// One version of an artifact.
struct FakeVersion {
    entity: String,
    project: String,
    name: String,
    index: u32,
    id: String,
    aliases: Vec<String>,
    files: BTreeMap<String, FakeFile>,
}

#[derive(Default)]
struct State {
    key: String,
    versions: Vec<FakeVersion>,
    /// hex MD5 → bytes.
    blobs: HashMap<String, Vec<u8>>,
    /// Signed URLs of older generations answer 403.
    generation: u64,
    /// GraphQL requests answered 429 before any is served.
    throttle: u32,
    /// hex MD5s whose next download sends wrong bytes.
    corrupt: HashSet<String>,
    /// `entity/project`s the key cannot see.
    hidden: HashSet<String>,
    /// Operations by name; file downloads by path; file names asked for URLs.
    ops: HashMap<String, u64>,
    downloads: HashMap<String, u64>,
    asked_names: Vec<String>,
    asked_all: u64,
    expired: u64,
    fallbacks: u64,
    page_size: Option<usize>,
    /// File-URL answers that hand out already expired URLs.
    stale: u32,
    /// The S3-compatible endpoint's objects, by `bucket/key`.
    objects: HashMap<String, Vec<u8>>,
    /// Object GETs (S3 and GCS) answered 503 before any is served.
    objects_down: u32,
    /// S3 requests refused for want of a signature.
    unsigned: u64,
    /// The next GraphQL answer: 200 with this error and no data.
    error: Option<String>,
    /// Google's token endpoint (`/gcs-token`): the service account it knows (email and
    /// RSA public key, DER), and the tokens it granted.
    gcs_account: Option<(String, Vec<u8>)>,
    gcs_grants: u64,
    /// AWS credential services (`imds`, `container`, `sts`): calls answered; and the
    /// (region, session token) of each signed S3 request.
    aws_calls: HashMap<&'static str, u64>,
    s3_signed: Vec<(String, String)>,
}

/// The session tokens of the keys the fake's AWS credential services hand out (the S3
/// endpoint takes any request signed by `AKIDFAKE`): the instance's, a container's
/// (`GET /container-credentials` with `Authorization: container-token`), and STS's for a
/// web identity (`POST /sts`, role `arn:aws:iam::1:role/hoard`, token `web-identity`).
pub const IMDS_SESSION: &str = "instance-session-token";
pub const CONTAINER_SESSION: &str = "container-session-token";
pub const STS_SESSION: &str = "sts-session-token";

/// The refresh token (and client) `/gcs-token` accepts from a user's login.
pub const GCS_REFRESH: (&str, &str, &str) = ("hoard-client", "client-secret", "refresh-1");

/// The fake, serving on a loopback port until dropped.
pub struct FakeWandb {
    pub url: String,
    state: Arc<Mutex<State>>,
    _server: Served,
}

fn b64md5(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(md5::Md5::digest(data))
}

fn hex(b64: &str) -> String {
    use std::fmt::Write as _;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap_or_default();
    bytes.iter().fold(String::new(), |mut out, b| {
        let _ = write!(out, "{b:02x}");
        out
    })
}

impl FakeWandb {
    /// Starts the fake; requests must carry `Basic api:<key>`.
    pub fn start(key: &str) -> Self {
        let state = Arc::new(Mutex::new(State {
            key: key.to_owned(),
            ..State::default()
        }));
        let shared = state.clone();
        let server = Served::start(|url| {
            let base = url.to_owned();
            move |request: Request<hyper::body::Incoming>| {
                let (state, base) = (shared.clone(), base.clone());
                async move { handle(&state, &base, request).await }
            }
        });
        Self {
            url: server.url.clone(),
            state,
            _server: server,
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Logs a version of `entity/project/name` with these files; returns its index (`vN`).
    /// A file whose content is `ref:file:///path` is a reference entry to that file,
    /// logged with its MD5 and size; `ref:s3://bucket/key` one to an object of the fake's
    /// S3 endpoint ([`Self::put_object`]), logged with its ETag.
    pub fn add_version(&self, artifact: &str, files: &[(&str, &[u8])], aliases: &[&str]) -> u32 {
        let mut state = self.state();
        let parts: Vec<&str> = artifact.split('/').collect();
        let index = state
            .versions
            .iter()
            .filter(|v| format!("{}/{}/{}", v.entity, v.project, v.name) == artifact)
            .count() as u32;
        for alias in aliases {
            for v in &mut state.versions {
                if format!("{}/{}/{}", v.entity, v.project, v.name) == artifact {
                    v.aliases.retain(|a| a != alias);
                }
            }
        }
        let id = base64::engine::general_purpose::STANDARD
            .encode(format!("Artifact:{}", state.versions.len() + 1));
        let mut listed = BTreeMap::new();
        for (path, data) in files {
            if let Some(uri) = data.strip_prefix(b"ref:") {
                let uri = String::from_utf8(uri.to_vec()).expect("a UTF-8 URI");
                if let Some(object) = uri.strip_prefix("gs://") {
                    // Logged with the object's base64 MD5, as W&B logs GCS references.
                    let bytes = state.objects.get(object).expect("put_object first").clone();
                    listed.insert(
                        (*path).to_owned(),
                        (b64md5(&bytes), bytes.len() as u64, Some(uri)),
                    );
                    continue;
                }
                if let Some(object) = uri.strip_prefix("s3://") {
                    // Logged with the object's ETag, as W&B logs S3 references.
                    let bytes = state.objects.get(object).expect("put_object first").clone();
                    let etag = hex(&b64md5(&bytes));
                    listed.insert((*path).to_owned(), (etag, bytes.len() as u64, Some(uri)));
                    continue;
                }
                // A reference entry, logged with the MD5 and size of the file it names.
                let local = uri
                    .strip_prefix("file://")
                    .expect("file:// or s3:// references");
                let bytes = std::fs::read(local).expect("the referenced file exists");
                listed.insert(
                    (*path).to_owned(),
                    (b64md5(&bytes), bytes.len() as u64, Some(uri)),
                );
                continue;
            }
            let digest = b64md5(data);
            state.blobs.insert(hex(&digest), data.to_vec());
            listed.insert((*path).to_owned(), (digest, data.len() as u64, None));
        }
        let mut all_aliases: Vec<String> = aliases.iter().map(|a| (*a).to_owned()).collect();
        all_aliases.push("latest".to_owned());
        for v in &mut state.versions {
            if format!("{}/{}/{}", v.entity, v.project, v.name) == artifact {
                v.aliases.retain(|a| a != "latest");
            }
        }
        state.versions.push(FakeVersion {
            entity: parts[0].to_owned(),
            project: parts[1].to_owned(),
            name: parts[2].to_owned(),
            index,
            id,
            aliases: all_aliases,
            files: listed,
        });
        index
    }

    /// Makes every signed URL handed out so far answer 403, as expired URLs do.
    pub fn expire_urls(&self) {
        self.state().generation += 1;
    }

    /// Stores an object at `s3://bucket/key` of the fake's S3-compatible endpoint (its
    /// root, path-style: set `AWS_ENDPOINT_URL` to [`Self::url`]), also served as
    /// `gs://bucket/key` by its GCS JSON API (`STORAGE_EMULATOR_HOST`, token `gcs-token`).
    pub fn put_object(&self, bucket_key: &str, data: &[u8]) {
        self.state()
            .objects
            .insert(bucket_key.to_owned(), data.to_vec());
    }

    /// Makes `/gcs-token` accept JWTs of this service account, signed with the key whose
    /// public half this is (DER `RSAPublicKey`).
    pub fn gcs_account(&self, email: &str, public_key: Vec<u8>) {
        self.state().gcs_account = Some((email.to_owned(), public_key));
    }

    /// Calls an AWS credential service (`imds`, `container`, `sts`) answered.
    pub fn aws_calls(&self, service: &str) -> u64 {
        self.state().aws_calls.get(service).copied().unwrap_or(0)
    }

    /// The (region, `x-amz-security-token`) of each S3 request signed right.
    pub fn s3_signed(&self) -> Vec<(String, String)> {
        self.state().s3_signed.clone()
    }

    /// Tokens `/gcs-token` granted.
    pub fn gcs_grants(&self) -> u64 {
        self.state().gcs_grants
    }

    /// S3 requests refused because they were not signed with the expected key id.
    pub fn unsigned(&self) -> u64 {
        self.state().unsigned
    }

    /// The next `n` file-URL answers hand out URLs that have already expired.
    pub fn stale_urls(&self, n: u32) {
        self.state().stale = n;
    }

    /// The next GraphQL request is answered 200 with this error and no data.
    pub fn graphql_error(&self, message: &str) {
        self.state().error = Some(message.to_owned());
    }

    /// The next `n` object GETs (S3 or GCS) get 503 Slow Down.
    pub fn fail_objects(&self, n: u32) {
        self.state().objects_down = n;
    }

    /// The next `n` GraphQL requests get 429.
    pub fn throttle(&self, n: u32) {
        self.state().throttle = n;
    }

    /// The next download of this content sends other bytes.
    pub fn corrupt_once(&self, content: &[u8]) {
        let digest = hex(&b64md5(content));
        self.state().corrupt.insert(digest);
    }

    /// The key cannot see `entity/project`: it resolves to null.
    pub fn hide(&self, project: &str) {
        self.state().hidden.insert(project.to_owned());
    }

    /// File URLs per page when the client asks for more.
    pub fn page_size(&self, n: usize) {
        self.state().page_size = Some(n);
    }

    /// How often the operation `name` was asked.
    pub fn ops(&self, name: &str) -> u64 {
        self.state().ops.get(name).copied().unwrap_or(0)
    }

    /// Every operation asked, of any name.
    pub fn all_ops(&self) -> u64 {
        self.state().ops.values().sum()
    }

    /// File downloads served (200/206), by path of the artifact.
    pub fn downloads(&self) -> u64 {
        self.state().downloads.values().sum()
    }

    /// The file names asked for URLs by name; and how many unfiltered pages were asked.
    pub fn asked(&self) -> (Vec<String>, u64) {
        let state = self.state();
        (state.asked_names.clone(), state.asked_all)
    }

    /// Files fetched by the authenticated path, without a signed URL.
    pub fn fallbacks(&self) -> u64 {
        self.state().fallbacks
    }

    /// Signed URLs refused as expired.
    pub fn expired(&self) -> u64 {
        self.state().expired
    }
}

fn reply(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(hoard_http::full(body))
        .expect("a response")
}

fn data(value: &Value) -> Response<Body> {
    reply(StatusCode::OK, json!({ "data": value }).to_string())
}

async fn handle(
    state: &Arc<Mutex<State>>,
    base: &str,
    request: Request<hyper::body::Incoming>,
) -> Response<Body> {
    let path = request.uri().path().to_owned();
    let authorized = {
        let key = state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .key
            .clone();
        let expected = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("api:{key}"))
        );
        request
            .headers()
            .get("authorization")
            .is_some_and(|v| v.as_bytes() == expected.as_bytes())
    };
    if path.starts_with("/latest/") {
        return imds(state, &request, &path);
    }
    if path == "/container-credentials" || path == "/sts" {
        let authorized = request
            .headers()
            .get("authorization")
            .is_some_and(|v| v.as_bytes() == b"container-token");
        let body = String::from_utf8_lossy(&body(request).await).into_owned();
        let mut state = state.lock().unwrap_or_else(PoisonError::into_inner);
        return if path == "/sts" {
            sts(&mut state, &body)
        } else if authorized {
            *state.aws_calls.entry("container").or_default() += 1;
            reply(StatusCode::OK, role_keys(CONTAINER_SESSION))
        } else {
            reply(StatusCode::FORBIDDEN, "")
        };
    }
    if path == "/computeMetadata/v1/instance/service-accounts/default/token" {
        // The GCE metadata server answers only requests that say they are meant for it.
        if request
            .headers()
            .get("metadata-flavor")
            .map(http::HeaderValue::as_bytes)
            != Some(b"Google")
        {
            return reply(
                StatusCode::FORBIDDEN,
                "Missing Metadata-Flavor:Google header.",
            );
        }
        state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .gcs_grants += 1;
        return reply(
            StatusCode::OK,
            json!({"access_token": "gcs-token", "expires_in": 3599, "token_type": "Bearer"})
                .to_string(),
        );
    }
    if path == "/gcs-token" && request.method() == http::Method::POST {
        let body = body(request).await;
        let mut state = state.lock().unwrap_or_else(PoisonError::into_inner);
        return gcs_token(&mut state, &format!("{base}/gcs-token"), &body);
    }
    if path == "/graphql" && request.method() == http::Method::POST {
        if !authorized {
            return reply(
                StatusCode::UNAUTHORIZED,
                r#"{"errors":[{"message":"user is not logged in"}]}"#,
            );
        }
        let body = body(request).await;
        let Ok(asked) = serde_json::from_slice::<Value>(&body) else {
            return reply(
                StatusCode::BAD_REQUEST,
                r#"{"errors":[{"message":"bad JSON"}]}"#,
            );
        };
        return graphql(state, base, &asked);
    }
    if request.method() != http::Method::GET {
        // The SDK's telemetry and anything else: accepted and ignored.
        return reply(StatusCode::OK, "");
    }
    serve_file(state, &request, &path, authorized)
}

/// `GET` of a manifest or a file.
fn serve_file(
    state: &Arc<Mutex<State>>,
    request: &Request<hyper::body::Incoming>,
    path: &str,
    authorized: bool,
) -> Response<Body> {
    let range = request
        .headers()
        .get("range")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("bytes="))
        .and_then(|v| v.split_once('-'))
        .and_then(|(a, b)| Some((a.parse::<usize>().ok()?, b.parse::<usize>().ok()?)));
    let mut state = state.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(id) = path.strip_prefix("/manifests/") {
        let Some(version) = state.versions.iter().find(|v| v.id == id) else {
            return reply(StatusCode::NOT_FOUND, "");
        };
        let contents: serde_json::Map<String, Value> = version
            .files
            .iter()
            .map(|(path, (digest, size, reference))| {
                let mut entry = json!({"digest": digest, "size": size, "birthArtifactID": version.id, "extra": {}});
                if let Some(uri) = reference {
                    entry["ref"] = json!(uri);
                }
                (path.clone(), entry)
            })
            .collect();
        let manifest = json!({
            "version": 1,
            "storagePolicy": "wandb-storage-policy-v1",
            "storagePolicyConfig": {"storageLayout": "V2"},
            "contents": contents,
        });
        return reply(StatusCode::OK, manifest.to_string());
    }
    let md5 = if let Some(rest) = path.strip_prefix("/signed/") {
        let Some((generation, md5)) = rest.split_once('/') else {
            return reply(StatusCode::NOT_FOUND, "");
        };
        if generation.parse::<u64>().ok() != Some(state.generation) {
            state.expired += 1;
            return reply(
                StatusCode::FORBIDDEN,
                "<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>",
            );
        }
        md5.to_owned()
    } else if path.starts_with("/artifactsV2/") {
        if !authorized {
            return reply(StatusCode::UNAUTHORIZED, "");
        }
        state.fallbacks += 1;
        let segments: Vec<&str> = path.split('/').collect();
        segments[segments.len() - 2].to_owned()
    } else if let Some(object) = path.strip_prefix("/storage/v1/b/") {
        return serve_gcs(&mut state, request, object, range);
    } else {
        return serve_object(&mut state, request, path, range);
    };
    let Some(mut bytes) = state.blobs.get(&md5).cloned() else {
        return reply(StatusCode::NOT_FOUND, "");
    };
    *state.downloads.entry(md5.clone()).or_default() += 1;
    if state.corrupt.remove(&md5) {
        for b in &mut bytes {
            *b = b.wrapping_add(1);
        }
        if bytes.is_empty() {
            bytes.push(0);
        }
    }
    ranged(bytes, range, None)
}

/// The bytes, or the asked range of them (206), with an ETag when given.
fn ranged(bytes: Vec<u8>, range: Option<(usize, usize)>, etag: Option<String>) -> Response<Body> {
    let builder = match etag {
        Some(etag) => Response::builder().header("etag", etag),
        None => Response::builder(),
    };
    match range {
        Some((start, end)) if start <= end && end < bytes.len() => builder
            .status(StatusCode::PARTIAL_CONTENT)
            .header(
                "content-range",
                format!("bytes {start}-{end}/{}", bytes.len()),
            )
            .body(hoard_http::full(bytes[start..=end].to_vec()))
            .expect("a response"),
        _ => builder
            .status(StatusCode::OK)
            .body(hoard_http::full(bytes))
            .expect("a response"),
    }
}

fn project_info(v: &FakeVersion) -> Value {
    json!({"id": "UHJvamVjdDox", "internalId": "1", "name": v.project, "entity": {"name": v.entity}})
}

/// The SDK's listings of a visible project (every artifact here is a `dataset`): its
/// types, a type's collections, a collection's versions, oldest first, on one page.
fn listing(state: &State, op: &str, entity: &str, project: &str, vars: &Value) -> Response<Body> {
    let page = json!({"__typename": "PageInfo", "endCursor": null, "hasNextPage": false});
    let mut here: Vec<&FakeVersion> = state
        .versions
        .iter()
        .filter(|v| v.entity == entity && v.project == project)
        .collect();
    here.sort_by_key(|v| (v.name.clone(), v.index));
    let typed = vars["type"].as_str() == Some("dataset");
    let answer = match op {
        "ProjectArtifactTypes" => {
            let edges: Vec<Value> = here
                .first()
                .map(|_| {
                    json!({"node": {"__typename": "ArtifactType", "id": "QXJ0aWZhY3RUeXBlOjE=",
                    "name": "dataset", "description": null, "createdAt": "2026-11-01T00:00:00"}})
                })
                .into_iter()
                .collect();
            json!({"artifactTypes": {"edges": edges, "pageInfo": page}})
        }
        "ArtifactTypeArtifactCollections" => {
            let mut names: Vec<&str> = here.iter().map(|v| v.name.as_str()).collect();
            names.dedup();
            let edges: Vec<Value> = names
                .iter()
                .map(|name| json!({"node": {
                    "__typename": "ArtifactSequence", "id": format!("U2VxOn{name}"), "name": name,
                    "description": null, "createdAt": "2026-11-01T00:00:00", "updatedAt": null,
                    "project": project_info(here[0]), "type": {"name": "dataset"}, "tags": {"edges": []},
                }}))
                .collect();
            let collections = json!({"totalCount": edges.len(), "pageInfo": page, "edges": edges});
            json!({"artifactType": typed.then(|| json!({"artifactCollections": collections}))})
        }
        _ => {
            let collection = vars["collection"].as_str().unwrap_or_default();
            let edges: Vec<Value> = here
                .iter()
                .filter(|v| v.name == collection)
                .map(|v| json!({"version": format!("v{}", v.index), "node": membership(v)["artifact"]}))
                .collect();
            let found = typed && !edges.is_empty();
            json!({"artifactType": found.then(|| json!({"artifactCollection": {
                "__typename": "ArtifactSequence",
                "artifacts": {"totalCount": edges.len(), "pageInfo": page, "edges": edges},
            }}))})
        }
    };
    data(&json!({"project": answer}))
}

/// The SDK's `ArtifactFragment` and `ArtifactMembershipFragment`, filled in.
fn membership(v: &FakeVersion) -> Value {
    let size: u64 = v.files.values().map(|f| f.1).sum();
    let collection =
        json!({"__typename": "ArtifactSequence", "name": v.name, "project": project_info(v)});
    let aliases: Vec<Value> = v
        .aliases
        .iter()
        .map(|a| json!({"__typename": "ArtifactAlias", "id": format!("QWxpYXM6{a}"), "alias": a}))
        .collect();
    // The artifact's aliases carry their collection (`CollectionInfoFragment`), the
    // membership's do not.
    let artifact_aliases: Vec<Value> = v
        .aliases
        .iter()
        .map(|a| json!({"__typename": "ArtifactAlias", "id": format!("QWxpYXM6{a}"), "alias": a,
            "artifactCollection": {"__typename": "ArtifactSequence", "name": v.name, "project": project_info(v)}}))
        .collect();
    json!({
        "__typename": "ArtifactCollectionMembership",
        "id": format!("TWVtYmVyc2hpcDp{}", v.index),
        "versionIndex": v.index,
        "createdAt": "2026-11-01T00:00:00",
        "aliases": aliases,
        "artifactCollection": collection,
        "artifact": {
            "__typename": "Artifact",
            "id": v.id,
            "artifactSequence": collection,
            "versionIndex": v.index,
            "artifactType": {"name": "dataset"},
            "description": null,
            "metadata": "{\"rows\": 3}",
            "ttlDurationSeconds": -1,
            "ttlIsInherited": true,
            "tags": [],
            "historyStep": null,
            "state": "COMMITTED",
            "size": size,
            "digest": "0123456789abcdef",
            "digestAlgorithm": "MANIFEST_MD5",
            "commitHash": null,
            "fileCount": v.files.len(),
            "createdAt": "2026-11-01T00:00:00",
            "updatedAt": null,
            "aliases": artifact_aliases,
        }
    })
}

fn graphql(state: &Arc<Mutex<State>>, base: &str, asked: &Value) -> Response<Body> {
    let mut state = state.lock().unwrap_or_else(PoisonError::into_inner);
    if state.throttle > 0 {
        state.throttle -= 1;
        return Response::builder()
            .status(StatusCode::TOO_MANY_REQUESTS)
            .header("retry-after", "0")
            .body(hoard_http::full(
                r#"{"errors":[{"message":"rate limit exceeded"}]}"#,
            ))
            .expect("a response");
    }
    if let Some(message) = state.error.take() {
        return reply(
            StatusCode::OK,
            json!({"data": null, "errors": [{"message": message}]}).to_string(),
        );
    }
    let query = asked["query"].as_str().unwrap_or_default();
    let op = asked["operationName"]
        .as_str()
        .filter(|name| !name.is_empty())
        .map(str::to_owned)
        .or_else(|| {
            query
                .split_whitespace()
                .skip_while(|w| *w != "query")
                .nth(1)
                .map(|w| w.split(['(', '{']).next().unwrap_or(w).to_owned())
        })
        .unwrap_or_default();
    *state.ops.entry(op.clone()).or_default() += 1;
    let vars = &asked["variables"];
    let var = |name: &str| vars[name].as_str().unwrap_or_default().to_owned();
    let visible = |state: &State, entity: &str, project: &str| {
        !state.hidden.contains(&format!("{entity}/{project}"))
    };
    match op.as_str() {
        "Viewer" | "GetDefaultEntity" => data(&json!({"viewer": {
            "id": "VXNlcjox", "entity": "e", "username": "tester", "email": "t@example.com",
            "flags": null, "teams": {"edges": []}
        }})),
        "ServerFeaturesQuery" => data(&json!({"serverInfo": {"features": []}})),
        "ArtifactMembershipByName" => {
            let (entity, project, name) = (var("entity"), var("project"), var("name"));
            if !visible(&state, &entity, &project) {
                return data(&json!({"project": null}));
            }
            let (collection, tag) = name.split_once(':').unwrap_or((&name, "latest"));
            let found = state.versions.iter().find(|v| {
                v.entity == entity
                    && v.project == project
                    && v.name == collection
                    && (format!("v{}", v.index) == tag || v.aliases.iter().any(|a| a == tag))
            });
            data(&json!({"project": {"artifactCollectionMembership": found.map(membership)}}))
        }
        "FetchArtifactManifest" => {
            let id = var("id");
            let found = state.versions.iter().any(|v| v.id == id);
            data(&json!({"artifact": found.then(|| json!({
                "currentManifest": {"file": {"directUrl": format!("{base}/manifests/{id}")}}
            }))}))
        }
        "GetArtifactMembershipFileUrls" => file_urls(&mut state, base, vars),
        "ProjectArtifactTypes" | "ArtifactTypeArtifactCollections" | "ProjectArtifacts" => {
            let (entity, project) = (var("entity"), var("project"));
            if !visible(&state, &entity, &project) {
                return data(&json!({"project": null}));
            }
            listing(&state, &op, &entity, &project, vars)
        }
        _ => reply(
            StatusCode::OK,
            json!({"errors": [{"message": format!("unknown operation `{op}`")}]}).to_string(),
        ),
    }
}

fn file_urls(state: &mut State, base: &str, vars: &Value) -> Response<Body> {
    let var = |name: &str| vars[name].as_str().unwrap_or_default().to_owned();
    let (entity, project, collection, alias) = (
        var("entity"),
        var("project"),
        var("collection"),
        var("alias"),
    );
    let names: Option<Vec<String>> = vars["fileNames"].as_array().map(|a| {
        a.iter()
            .filter_map(|n| n.as_str().map(str::to_owned))
            .collect()
    });
    match &names {
        Some(names) => state.asked_names.extend(names.iter().cloned()),
        None => state.asked_all += 1,
    }
    let per_page = vars["perPage"].as_u64().unwrap_or(50) as usize;
    let per_page = state.page_size.map_or(per_page, |p| p.min(per_page));
    let start: usize = vars["cursor"]
        .as_str()
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let generation = if state.stale > 0 {
        state.stale -= 1;
        state.generation.wrapping_sub(1)
    } else {
        state.generation
    };
    let Some(version) = state.versions.iter().find(|v| {
        v.entity == entity
            && v.project == project
            && v.name == collection
            && (format!("v{}", v.index) == alias || v.aliases.contains(&alias))
    }) else {
        return data(&json!({"project": {"artifactCollection": null}}));
    };
    let files: Vec<(&String, &FakeFile)> = version
        .files
        .iter()
        .filter(|(path, _)| names.as_ref().is_none_or(|n| n.contains(path)))
        .collect();
    let page: Vec<Value> = files
        .iter()
        .skip(start)
        .take(per_page)
        .map(|(path, (digest, _, _))| {
            json!({"node": {"__typename": "File", "name": path,
                "directUrl": format!("{base}/signed/{generation}/{}", hex(digest))}})
        })
        .collect();
    let end = start + page.len();
    data(&json!({"project": {"artifactCollection": {
        "__typename": "ArtifactSequence",
        "artifactMembership": {"files": {
            "pageInfo": {"__typename": "PageInfo", "endCursor": end.to_string(), "hasNextPage": end < files.len()},
            "edges": page,
        }}
    }}}))
}

/// A path-style S3 `GET /bucket/key`, which must carry a `SigV4` authorization with the
/// fake's key id (`AKIDFAKE`) and the headers it signs. (The signature itself is checked
/// against botocore's in `hoard-upstream`'s unit tests.)
fn serve_object(
    state: &mut State,
    request: &Request<hyper::body::Incoming>,
    path: &str,
    range: Option<(usize, usize)>,
) -> Response<Body> {
    let header = |name: &str| {
        request
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    };
    let signed = header("authorization").starts_with("AWS4-HMAC-SHA256 Credential=AKIDFAKE/")
        && header("authorization").contains("SignedHeaders=host;x-amz-content-sha256;x-amz-date")
        && header("x-amz-date").len() == 16
        && !header("x-amz-content-sha256").is_empty();
    if !signed {
        state.unsigned += 1;
        return reply(
            StatusCode::FORBIDDEN,
            "<Error><Code>AccessDenied</Code></Error>",
        );
    }
    let region = header("authorization")
        .split('/')
        .nth(2)
        .unwrap_or_default()
        .to_owned();
    let token = header("x-amz-security-token").to_owned();
    state.s3_signed.push((region, token));
    if state.objects_down > 0 {
        state.objects_down -= 1;
        return reply(
            StatusCode::SERVICE_UNAVAILABLE,
            "<Error><Code>SlowDown</Code></Error>",
        );
    }
    let Some(bytes) = state.objects.get(path.trim_start_matches('/')).cloned() else {
        return reply(
            StatusCode::NOT_FOUND,
            "<Error><Code>NoSuchKey</Code></Error>",
        );
    };
    let etag = format!("\"{}\"", hex(&b64md5(&bytes)));
    ranged(bytes, range, Some(etag))
}

/// A GCS JSON API `GET /storage/v1/b/{bucket}/o/{object}?alt=media` with the bearer token
/// `gcs-token`.
fn serve_gcs(
    state: &mut State,
    request: &Request<hyper::body::Incoming>,
    rest: &str,
    range: Option<(usize, usize)>,
) -> Response<Body> {
    let authorized = request
        .headers()
        .get("authorization")
        .is_some_and(|v| v.as_bytes() == b"Bearer gcs-token");
    if !authorized || request.uri().query() != Some("alt=media") {
        state.unsigned += 1;
        return reply(StatusCode::UNAUTHORIZED, r#"{"error":{"code":401}}"#);
    }
    let Some((bucket, object)) = rest.split_once("/o/") else {
        return reply(StatusCode::NOT_FOUND, "");
    };
    let object = object.replace("%2F", "/");
    if state.objects_down > 0 {
        state.objects_down -= 1;
        return reply(
            StatusCode::SERVICE_UNAVAILABLE,
            "<Error><Code>SlowDown</Code></Error>",
        );
    }
    let Some(bytes) = state.objects.get(&format!("{bucket}/{object}")).cloned() else {
        return reply(StatusCode::NOT_FOUND, r#"{"error":{"code":404}}"#);
    };
    ranged(bytes, range, None)
}

/// A request's whole body (empty if it breaks off).
async fn body(request: Request<hyper::body::Incoming>) -> Bytes {
    request
        .into_body()
        .collect()
        .await
        .map(http_body_util::Collected::to_bytes)
        .unwrap_or_default()
}

/// Google's OAuth token endpoint: a service account's signed JWT (checked: signature,
/// issuer, audience, scope, expiry) or a user's refresh token, for the token `gcs-token`.
fn gcs_token(state: &mut State, audience: &str, body: &[u8]) -> Response<Body> {
    let form: HashMap<String, String> = String::from_utf8_lossy(body)
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.replace("%3A", ":")))
        .collect();
    let refuse = |why: &str| {
        reply(
            StatusCode::BAD_REQUEST,
            json!({"error": "invalid_grant", "error_description": why}).to_string(),
        )
    };
    let field = |name: &str| form.get(name).map(String::as_str).unwrap_or_default();
    match field("grant_type") {
        "urn:ietf:params:oauth:grant-type:jwt-bearer" => {
            let Some((email, public_key)) = &state.gcs_account else {
                return refuse("no service account is known");
            };
            let jwt = field("assertion");
            let Some((signed, signature)) = jwt.rsplit_once('.') else {
                return refuse("Invalid JWT.");
            };
            let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
            let key = ring::signature::UnparsedPublicKey::new(
                &ring::signature::RSA_PKCS1_2048_8192_SHA256,
                public_key,
            );
            let verified = engine
                .decode(signature)
                .is_ok_and(|sig| key.verify(signed.as_bytes(), &sig).is_ok());
            if !verified {
                return refuse("Invalid JWT Signature.");
            }
            let claims: Value = signed
                .split_once('.')
                .and_then(|(_, claims)| engine.decode(claims).ok())
                .and_then(|bytes| serde_json::from_slice(&bytes).ok())
                .unwrap_or_default();
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs();
            if claims["iss"] != email.as_str()
                || claims["aud"] != audience
                || !claims["scope"]
                    .as_str()
                    .is_some_and(|s| s.contains("devstorage.read_only"))
                || claims["exp"].as_u64().is_none_or(|exp| exp <= now)
            {
                return refuse(&format!("Invalid JWT claims: {claims}"));
            }
        }
        "refresh_token" => {
            let (client, secret, refresh) = GCS_REFRESH;
            if (
                field("client_id"),
                field("client_secret"),
                field("refresh_token"),
            ) != (client, secret, refresh)
            {
                return refuse("Bad Request");
            }
        }
        _ => return refuse("unsupported grant_type"),
    }
    state.gcs_grants += 1;
    reply(
        StatusCode::OK,
        json!({"access_token": "gcs-token", "expires_in": 3599, "token_type": "Bearer"})
            .to_string(),
    )
}

/// The EC2 instance metadata service, version 2: a session token from `PUT
/// /latest/api/token`, then, with it, the role `fake-role`'s keys and the region.
fn imds(
    state: &Arc<Mutex<State>>,
    request: &Request<hyper::body::Incoming>,
    path: &str,
) -> Response<Body> {
    let mut state = state.lock().unwrap_or_else(PoisonError::into_inner);
    *state.aws_calls.entry("imds").or_default() += 1;
    let header = |name: &str| request.headers().get(name).map(http::HeaderValue::as_bytes);
    if path == "/latest/api/token" {
        if request.method() != http::Method::PUT
            || header("x-aws-ec2-metadata-token-ttl-seconds").is_none()
        {
            return reply(StatusCode::BAD_REQUEST, "");
        }
        return reply(StatusCode::OK, "imds-v2-session");
    }
    if header("x-aws-ec2-metadata-token") != Some(b"imds-v2-session") {
        return reply(StatusCode::UNAUTHORIZED, "");
    }
    match path {
        "/latest/meta-data/iam/security-credentials/" => reply(StatusCode::OK, "fake-role"),
        "/latest/meta-data/iam/security-credentials/fake-role" => {
            reply(StatusCode::OK, role_keys(IMDS_SESSION))
        }
        "/latest/meta-data/placement/region" => reply(StatusCode::OK, "ap-south-1"),
        _ => reply(StatusCode::NOT_FOUND, ""),
    }
}

/// A role's keys as the metadata service and container endpoints give them.
fn role_keys(session: &str) -> String {
    json!({
        "Code": "Success", "Type": "AWS-HMAC", "AccessKeyId": "AKIDFAKE",
        "SecretAccessKey": "secret", "Token": session,
        "Expiration": "2099-01-01T00:00:00Z",
    })
    .to_string()
}

/// STS `AssumeRoleWithWebIdentity`, for the role `arn:aws:iam::1:role/hoard` and the token
/// `web-identity`.
fn sts(state: &mut State, form: &str) -> Response<Body> {
    let fields: HashMap<&str, String> = form
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (k, v.replace("%3A", ":").replace("%2F", "/")))
        .collect();
    let field = |name: &str| fields.get(name).map(String::as_str).unwrap_or_default();
    if field("Action") != "AssumeRoleWithWebIdentity"
        || field("RoleArn") != "arn:aws:iam::1:role/hoard"
        || field("WebIdentityToken") != "web-identity"
    {
        return reply(
            StatusCode::FORBIDDEN,
            "<ErrorResponse><Error><Code>AccessDenied</Code><Message>Not authorized to perform sts:AssumeRoleWithWebIdentity</Message></Error></ErrorResponse>",
        );
    }
    *state.aws_calls.entry("sts").or_default() += 1;
    reply(
        StatusCode::OK,
        format!(
            "<AssumeRoleWithWebIdentityResponse><AssumeRoleWithWebIdentityResult><Credentials>\
             <AccessKeyId>AKIDFAKE</AccessKeyId><SecretAccessKey>secret</SecretAccessKey>\
             <SessionToken>{STS_SESSION}</SessionToken><Expiration>2099-01-01T00:00:00Z</Expiration>\
             </Credentials></AssumeRoleWithWebIdentityResult></AssumeRoleWithWebIdentityResponse>"
        ),
    )
}
