//! A fake Hugging Face Hub on loopback, answering what `huggingface_hub` (2.4) and hoard
//! ask, in the shapes of the real Hub (read from the client's `hf_api.py` and
//! `file_download.py`), and checked by the real client (`e2e/hf.rs`):
//!
//! - `GET /api/{models,datasets}/ORG/NAME/revision/REV`: `{"id", "sha", "siblings", …}`;
//! - `GET /api/…/tree/REV?recursive=true`: files and directories, `size`, `oid` (git blob
//!   id) and `lfs` (`oid` = SHA-256), paged by `Link: <…>; rel="next"`;
//! - `HEAD`/`GET /[datasets/]ORG/NAME/resolve/REV/PATH`: a git file's bytes (`ETag` = its
//!   blob id), or for an LFS file a `302` to the CDN with `X-Linked-Etag` (the SHA-256) and
//!   `X-Linked-Size`; `X-Repo-Commit` always;
//! - the CDN, a second listener: `GET /objects/SHA256?gen=N`, with `Range`; a URL of an
//!   older generation answers 403 (expired).
//!
//! Errors carry `X-Error-Code` as the Hub's do: `RepoNotFound` (also for a private repo
//! without the token), `RevisionNotFound`, `EntryNotFound`, `GatedRepo`. Knobs: a gated or
//! private repo, moved branches, corrupt or truncated downloads, 429s, expired CDN URLs,
//! page size; counters of downloads, API calls, and tokens the CDN was sent.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use hoard_http::Body;
use http::{Request, Response, StatusCode};
use serde_json::{Value, json};

use crate::server::Served;

/// Files at or above this size are stored in LFS (served from the CDN).
pub const LFS_FROM: usize = 1024;

struct File {
    /// Shared, so that serving a range copies nothing.
    bytes: Bytes,
    /// Its digests, hex, computed once (hashing on every request made the fake the
    /// bottleneck of the benchmark).
    sha256: String,
    git_sha1: String,
    lfs: bool,
}

#[derive(Default)]
struct Repo {
    private: bool,
    gated: bool,
    /// Branches and tags → commits.
    refs: HashMap<String, String>,
    /// Commits → files by path.
    commits: HashMap<String, BTreeMap<String, Arc<File>>>,
}

#[derive(Default)]
struct State {
    token: String,
    /// `models/org/name` or `datasets/org/name`.
    repos: HashMap<String, Repo>,
    /// SHA-256 hex → bytes, as the CDN keeps them.
    objects: HashMap<String, Arc<File>>,
    cdn: String,
    hub: String,
    generation: u64,
    /// Redirects to the CDN that hand out an already expired URL.
    stale: u32,
    page_size: usize,
    /// Requests answered 429 before any is served.
    throttle: u32,
    /// Paths whose next download sends other bytes, or stops halfway.
    corrupt: HashSet<String>,
    truncate: HashSet<String>,
    /// Whole-file and range downloads, by [`key_of`] the content.
    downloads: HashMap<String, u64>,
    api_calls: u64,
    /// Repos moved, as `(kind, old id, new id)`: the Hub answers the old names with a
    /// redirect (`gpt2` → `openai-community/gpt2`).
    moved: Vec<(String, String, String)>,
    /// Calls of `/api/…/tree/…`: listings of a commit's files.
    tree_calls: u64,
    /// Requests to the CDN that carried an `Authorization` header.
    cdn_tokens: u64,
    commits_made: u64,
    /// Items added to every tree listing, as they are (hostile ones, for tests).
    extra_items: Vec<Value>,
}

pub struct FakeHub {
    /// The Hub's endpoint (`HF_ENDPOINT`).
    pub url: String,
    /// The CDN's base URL.
    pub cdn: String,
    state: Arc<Mutex<State>>,
    _servers: [Served; 2],
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hoard_types::hex_encode(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref())
}

/// Git's blob id: SHA-1 of `blob <len>\0` and the bytes.
pub fn git_sha1_hex(bytes: &[u8]) -> String {
    let mut context = ring::digest::Context::new(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY);
    context.update(format!("blob {}\0", bytes.len()).as_bytes());
    context.update(bytes);
    hoard_types::hex_encode(context.finish().as_ref())
}

/// What downloads and fault knobs are keyed by: the SHA-256 of the content.
fn key_of(content: &[u8]) -> String {
    sha256_hex(content)
}

impl FakeHub {
    /// Starts the Hub and its CDN; `token` is the one token it knows.
    pub fn start(token: &str) -> Self {
        let state = Arc::new(Mutex::new(State {
            token: token.to_owned(),
            page_size: 1000,
            ..State::default()
        }));
        let cdn_state = state.clone();
        let cdn = Served::start(|_| {
            move |request| {
                let answer = serve_cdn(&cdn_state, &request);
                async move { answer }
            }
        });
        let hub_state = state.clone();
        let hub = Served::start(|_| {
            move |request| {
                let answer = handle(&hub_state, &request);
                async move { answer }
            }
        });
        {
            let mut state = state.lock().unwrap_or_else(PoisonError::into_inner);
            state.cdn.clone_from(&cdn.url);
            state.hub.clone_from(&hub.url);
        }
        Self {
            url: hub.url.clone(),
            cdn: cdn.url.clone(),
            state,
            _servers: [hub, cdn],
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Commits `files` to `repo` (`models/org/name` or `datasets/org/name`) and points
    /// `branch` at the commit; returns the commit id.
    pub fn commit(&self, repo: &str, branch: &str, files: &[(&str, &[u8])]) -> String {
        let mut state = self.state();
        state.commits_made += 1;
        let commit = hoard_types::hex_encode(
            ring::digest::digest(
                &ring::digest::SHA1_FOR_LEGACY_USE_ONLY,
                format!("{repo} {}", state.commits_made).as_bytes(),
            )
            .as_ref(),
        );
        let mut tree = BTreeMap::new();
        for (path, bytes) in files {
            let file = Arc::new(File {
                bytes: Bytes::copy_from_slice(bytes),
                sha256: sha256_hex(bytes),
                git_sha1: git_sha1_hex(bytes),
                lfs: bytes.len() >= LFS_FROM,
            });
            if file.lfs {
                state.objects.insert(file.sha256.clone(), file.clone());
            }
            tree.insert((*path).to_owned(), file);
        }
        let entry = state.repos.entry(repo.to_owned()).or_default();
        entry.commits.insert(commit.clone(), tree);
        entry.refs.insert(branch.to_owned(), commit.clone());
        commit
    }

    /// `from` (`models/gpt2`) is answered with a redirect to `to`
    /// (`models/openai-community/gpt2`), as the Hub does for the repos it moved to
    /// organizations.
    pub fn move_repo(&self, from: &str, to: &str) {
        let (kind, old) = from.split_once('/').expect("kind/id");
        let (_, new) = to.split_once('/').expect("kind/id");
        self.state()
            .moved
            .push((kind.to_owned(), old.to_owned(), new.to_owned()));
    }

    /// Files of `repo` need the token (private: the repo is not found without it).
    pub fn make_private(&self, repo: &str) {
        self.state()
            .repos
            .entry(repo.to_owned())
            .or_default()
            .private = true;
    }

    /// Files of `repo` need the token (gated: its metadata stays public).
    pub fn make_gated(&self, repo: &str) {
        self.state().repos.entry(repo.to_owned()).or_default().gated = true;
    }

    /// Adds `item` to every tree listing, as it is: a hostile answer.
    pub fn add_tree_item(&self, item: Value) {
        self.state().extra_items.push(item);
    }

    pub fn page_size(&self, n: usize) {
        self.state().page_size = n.max(1);
    }

    /// The next `n` requests to the Hub get 429 (`Retry-After: 0`).
    pub fn throttle(&self, n: u32) {
        self.state().throttle = n;
    }

    /// The next download of these bytes sends other bytes.
    pub fn corrupt_once(&self, content: &[u8]) {
        self.state().corrupt.insert(key_of(content));
    }

    /// The next download of these bytes stops halfway.
    pub fn truncate_once(&self, content: &[u8]) {
        self.state().truncate.insert(key_of(content));
    }

    /// Downloads of these bytes (whole or in ranges).
    pub fn downloads_of(&self, content: &[u8]) -> u64 {
        self.state()
            .downloads
            .get(&key_of(content))
            .copied()
            .unwrap_or(0)
    }

    /// CDN URLs handed out so far expire.
    pub fn expire_urls(&self) {
        self.state().generation += 1;
    }

    /// The next `n` redirects to the CDN hand out a URL that has already expired.
    pub fn stale_urls(&self, n: u32) {
        self.state().stale = n;
    }

    /// Downloads of file bytes (Hub and CDN), all paths.
    pub fn downloads(&self) -> u64 {
        self.state().downloads.values().sum()
    }

    /// Calls of `/api/…`.
    pub fn api_calls(&self) -> u64 {
        self.state().api_calls
    }

    /// Listings of a commit's files (`/api/…/tree/…`).
    pub fn tree_calls(&self) -> u64 {
        self.state().tree_calls
    }

    /// CDN requests that carried a token (it must never be sent there).
    pub fn cdn_tokens(&self) -> u64 {
        self.state().cdn_tokens
    }
}

fn reply(status: StatusCode, code: Option<&str>, body: &Value) -> Response<Body> {
    let mut builder = Response::builder()
        .status(status)
        .header("content-type", "application/json");
    if let Some(code) = code {
        builder = builder.header("x-error-code", code);
    }
    builder
        .body(hoard_http::full(body.to_string()))
        .expect("a response")
}

fn error(status: StatusCode, code: &str, message: &str) -> Response<Body> {
    reply(status, Some(code), &json!({ "error": message }))
}

/// Bytes with `Range` support, counted as a download of `key` and damaged if a knob says
/// so (the part sent is damaged, whichever range it is); `head` sends the headers only.
fn bytes_reply(
    state: &mut State,
    key: &str,
    builder: http::response::Builder,
    bytes: &Bytes,
    range: Option<(usize, usize)>,
    head: bool,
) -> Response<Body> {
    let (status, part, builder) = match range {
        Some((start, end)) if start <= end && end < bytes.len() => (
            StatusCode::PARTIAL_CONTENT,
            bytes.slice(start..=end),
            builder.header(
                "content-range",
                format!("bytes {start}-{end}/{}", bytes.len()),
            ),
        ),
        _ => (StatusCode::OK, bytes.clone(), builder),
    };
    let part = if head {
        part
    } else {
        served_bytes(state, key, &part)
    };
    let builder = builder
        .status(status)
        .header("content-length", part.len())
        .header("accept-ranges", "bytes");
    let body = if head { Bytes::new() } else { part };
    builder.body(hoard_http::full(body)).expect("a response")
}

fn range_of(request: &Request<hyper::body::Incoming>) -> Option<(usize, usize)> {
    let value = request.headers().get("range")?.to_str().ok()?;
    let (a, b) = value.strip_prefix("bytes=")?.split_once('-')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// The bytes of one download, damaged if a knob says so.
fn served_bytes(state: &mut State, key: &str, bytes: &Bytes) -> Bytes {
    *state.downloads.entry(key.to_owned()).or_default() += 1;
    if state.corrupt.remove(key) {
        let mut other = bytes.to_vec();
        if let Some(b) = other.first_mut() {
            *b ^= 0xff;
        }
        return other.into();
    }
    if state.truncate.remove(key) {
        return bytes.slice(..bytes.len() / 2);
    }
    bytes.clone()
}

fn handle(state: &Arc<Mutex<State>>, request: &Request<hyper::body::Incoming>) -> Response<Body> {
    let mut state = state.lock().unwrap_or_else(PoisonError::into_inner);
    if state.throttle > 0 {
        state.throttle -= 1;
        return Response::builder()
            .status(StatusCode::TOO_MANY_REQUESTS)
            .header("retry-after", "0")
            .body(hoard_http::full(r#"{"error":"rate limited"}"#))
            .expect("a response");
    }
    let authorized = request
        .headers()
        .get("authorization")
        .is_some_and(|v| v.as_bytes() == format!("Bearer {}", state.token).as_bytes());
    let path = request.uri().path().to_owned();
    let query = request.uri().query().unwrap_or_default().to_owned();
    if let Some(location) = moved(&state, &path, &query) {
        return Response::builder()
            .status(StatusCode::TEMPORARY_REDIRECT)
            .header("location", location)
            .body(hoard_http::full(Bytes::new()))
            .expect("a response");
    }
    if let Some(rest) = path.strip_prefix("/api/") {
        state.api_calls += 1;
        return api(&mut state, rest, &query, authorized);
    }
    let head = request.method() == http::Method::HEAD;
    resolve(&mut state, &path, authorized, range_of(request), head)
}

/// `GET /api/…/ORG/NAME/refs`: every ref but pull requests as a branch (and those with
/// `include_prs=1`), as `list_repo_refs` reads them.
fn refs(repo: &Repo, query: &str) -> Response<Body> {
    let (mut branches, mut prs) = (Vec::new(), Vec::new());
    for (name, commit) in &repo.refs {
        if name.starts_with("refs/pr/") {
            prs.push(json!({"name": name, "ref": name, "targetCommit": commit}));
        } else {
            branches.push(
                json!({"name": name, "ref": format!("refs/heads/{name}"), "targetCommit": commit}),
            );
        }
    }
    let mut refs = json!({"branches": branches, "tags": [], "converts": []});
    if query.contains("include_prs=1") {
        refs["pullRequests"] = json!(prs);
    }
    reply(StatusCode::OK, None, &refs)
}

/// `GET /api/{models,datasets}?author=ORG`: the owner's repos the caller may see, as
/// `list_models`/`list_datasets` read them.
fn list_repos(state: &State, kind: &str, query: &str, authorized: bool) -> Response<Body> {
    let author = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("author="))
        .map(decode)
        .unwrap_or_default();
    let listed: Vec<Value> = state
        .repos
        .iter()
        .filter_map(|(key, repo)| {
            let id = key.strip_prefix(&format!("{kind}/"))?;
            let owner = id.split_once('/')?.0;
            (owner == author && (!repo.private || authorized)).then(|| {
                let sha = repo.refs.get("main").cloned();
                json!({"_id": "0123", "id": id, "modelId": id, "sha": sha, "private": repo.private,
                       "likes": 0, "downloads": 0, "tags": [], "createdAt": "2026-11-01T00:00:00.000Z"})
            })
        })
        .collect();
    reply(StatusCode::OK, None, &json!(listed))
}

/// Where a path of a moved repo goes now (relative, as the Hub answers).
fn moved(state: &State, path: &str, query: &str) -> Option<String> {
    for (kind, old, new) in &state.moved {
        let file_prefix = if kind == "datasets" { "/datasets" } else { "" };
        for prefix in [format!("/api/{kind}"), file_prefix.to_owned()] {
            let Some(rest) = path.strip_prefix(&format!("{prefix}/{old}")) else {
                continue;
            };
            if rest.is_empty() || rest.starts_with('/') {
                let query = if query.is_empty() {
                    String::new()
                } else {
                    format!("?{query}")
                };
                return Some(format!("{prefix}/{new}{rest}{query}"));
            }
        }
    }
    None
}

/// Splits `kind/org/name/rest…` (`kind`: `models` or `datasets`).
fn split_repo(rest: &str) -> Option<(String, &str)> {
    let mut parts = rest.splitn(4, '/');
    let (kind, org, name) = (parts.next()?, parts.next()?, parts.next()?);
    Some((
        format!("{kind}/{org}/{name}"),
        parts.next().unwrap_or_default(),
    ))
}

fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(b) = u8::from_str_radix(&text[i + 1..i + 3], 16)
        {
            out.push(b);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The repo, if the caller may see it, else the Hub's answer.
fn visible<'s>(
    state: &'s State,
    repo: &str,
    authorized: bool,
) -> Result<&'s Repo, Box<Response<Body>>> {
    match state.repos.get(repo) {
        Some(r) if !r.private || authorized => Ok(r),
        _ => Err(Box::new(error(
            StatusCode::UNAUTHORIZED,
            "RepoNotFound",
            "Repository Not Found",
        ))),
    }
}

fn commit_of(repo: &Repo, rev: &str) -> Option<String> {
    if repo.commits.contains_key(rev) {
        return Some(rev.to_owned());
    }
    repo.refs.get(rev).cloned()
}

fn api(state: &mut State, rest: &str, query: &str, authorized: bool) -> Response<Body> {
    if matches!(rest, "models" | "datasets") {
        return list_repos(state, rest, query, authorized);
    }
    let Some((repo_key, tail)) = split_repo(rest) else {
        return error(StatusCode::NOT_FOUND, "RepoNotFound", "no such route");
    };
    if tail.starts_with("tree/") {
        state.tree_calls += 1;
    }
    let repo = match visible(state, &repo_key, authorized) {
        Ok(repo) => repo,
        Err(answer) => return *answer,
    };
    let id = repo_key
        .split_once('/')
        .map(|(_, id)| id.to_owned())
        .unwrap_or_default();
    if tail == "refs" {
        return refs(repo, query);
    }
    if let Some(rev) = tail.strip_prefix("revision/") {
        let rev = decode(rev);
        let Some(commit) = commit_of(repo, &rev) else {
            return error(StatusCode::NOT_FOUND, "RevisionNotFound", "Invalid rev id");
        };
        let siblings: Vec<Value> = repo.commits[&commit]
            .keys()
            .map(|path| json!({ "rfilename": path }))
            .collect();
        return reply(
            StatusCode::OK,
            None,
            &json!({
                "_id": "0123", "id": id, "modelId": id, "sha": commit,
                "private": repo.private, "gated": if repo.gated { json!("auto") } else { json!(false) },
                "disabled": false, "tags": [], "siblings": siblings,
                "lastModified": "2026-11-01T00:00:00.000Z", "createdAt": "2026-11-01T00:00:00.000Z",
            }),
        );
    }
    if let Some(rev_path) = tail.strip_prefix("tree/") {
        let rev = decode(rev_path.split('/').next().unwrap_or_default());
        let Some(commit) = commit_of(repo, &rev) else {
            return error(StatusCode::NOT_FOUND, "RevisionNotFound", "Invalid rev id");
        };
        let mut items: Vec<Value> = Vec::new();
        let mut dirs: std::collections::BTreeSet<String> = std::collections::BTreeSet::new();
        for (path, file) in &repo.commits[&commit] {
            let mut dir = path.as_str();
            while let Some((parent, _)) = dir.rsplit_once('/') {
                dirs.insert(parent.to_owned());
                dir = parent;
            }
            let mut item = json!({
                "type": "file", "oid": file.git_sha1,
                "size": file.bytes.len(), "path": path,
            });
            if file.lfs {
                item["lfs"] = json!({
                    "oid": file.sha256, "size": file.bytes.len(), "pointerSize": 134,
                });
            }
            items.push(item);
        }
        items.extend(state.extra_items.iter().cloned());
        for dir in dirs {
            items.push(json!({ "type": "directory", "oid": "0000000000000000000000000000000000000000", "size": 0, "path": dir }));
        }
        let cursor: usize = query
            .split('&')
            .find_map(|kv| kv.strip_prefix("cursor="))
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let page = state.page_size;
        let end = (cursor + page).min(items.len());
        let mut builder = Response::builder()
            .status(StatusCode::OK)
            .header("content-type", "application/json");
        if end < items.len() {
            let next = format!(
                "{}/api/{repo_key}/tree/{commit}?recursive=true&expand=false&cursor={end}",
                state.hub
            );
            builder = builder.header("link", format!("<{next}>; rel=\"next\""));
        }
        let body = Value::Array(items[cursor.min(end)..end].to_vec()).to_string();
        return builder.body(hoard_http::full(body)).expect("a response");
    }
    error(StatusCode::NOT_FOUND, "EntryNotFound", "no such route")
}

fn resolve(
    state: &mut State,
    path: &str,
    authorized: bool,
    range: Option<(usize, usize)>,
    head: bool,
) -> Response<Body> {
    let rest = path.trim_start_matches('/');
    let rest = match rest.strip_prefix("datasets/") {
        Some(rest) => format!("datasets/{rest}"),
        None => format!("models/{rest}"),
    };
    let Some((repo_key, tail)) = split_repo(&rest) else {
        return error(StatusCode::NOT_FOUND, "RepoNotFound", "no such route");
    };
    let Some(tail) = tail.strip_prefix("resolve/") else {
        return error(StatusCode::NOT_FOUND, "EntryNotFound", "no such route");
    };
    let (rev, file_path) = tail.split_once('/').unwrap_or((tail, ""));
    let (rev, file_path) = (decode(rev), decode(file_path));
    let repo = match visible(state, &repo_key, authorized) {
        Ok(repo) => repo,
        Err(answer) => return *answer,
    };
    if repo.gated && !authorized {
        return error(
            StatusCode::UNAUTHORIZED,
            "GatedRepo",
            "Access to this model is restricted: you must have access to it and be authenticated",
        );
    }
    let Some(commit) = commit_of(repo, &rev) else {
        return error(StatusCode::NOT_FOUND, "RevisionNotFound", "Invalid rev id");
    };
    let Some(file) = repo.commits[&commit].get(&file_path).cloned() else {
        return error(StatusCode::NOT_FOUND, "EntryNotFound", "Entry not found");
    };
    let base = Response::builder().header("x-repo-commit", &commit);
    if file.lfs {
        let sha = file.sha256.clone();
        let generation = if state.stale > 0 {
            state.stale -= 1;
            state.generation + 1_000_000
        } else {
            state.generation
        };
        let location = format!("{}/objects/{sha}?gen={generation}", state.cdn);
        return base
            .status(StatusCode::FOUND)
            .header("location", location)
            .header("x-linked-etag", format!("\"{sha}\""))
            .header("x-linked-size", file.bytes.len())
            .header("etag", format!("\"{}\"", file.git_sha1))
            .body(hoard_http::full(Bytes::new()))
            .expect("a response");
    }
    let etag = format!("\"{}\"", file.git_sha1);
    bytes_reply(
        state,
        &file.sha256,
        base.header("etag", etag),
        &file.bytes,
        range,
        head,
    )
}

fn serve_cdn(
    state: &Arc<Mutex<State>>,
    request: &Request<hyper::body::Incoming>,
) -> Response<Body> {
    let mut state = state.lock().unwrap_or_else(PoisonError::into_inner);
    if request.headers().contains_key("authorization") {
        state.cdn_tokens += 1;
    }
    let Some(sha) = request.uri().path().strip_prefix("/objects/") else {
        return error(StatusCode::NOT_FOUND, "EntryNotFound", "no such object");
    };
    let generation = request
        .uri()
        .query()
        .and_then(|q| q.strip_prefix("gen="))
        .and_then(|g| g.parse::<u64>().ok());
    if generation != Some(state.generation) {
        return reply(
            StatusCode::FORBIDDEN,
            None,
            &json!({"error": "Request has expired"}),
        );
    }
    let Some(file) = state.objects.get(sha).cloned() else {
        return error(StatusCode::NOT_FOUND, "EntryNotFound", "no such object");
    };
    let head = request.method() == http::Method::HEAD;
    bytes_reply(
        &mut state,
        sha,
        Response::builder().header("etag", format!("\"{sha}\"")),
        &file.bytes,
        range_of(request),
        head,
    )
}
