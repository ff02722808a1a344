//! A typed client of the hoard daemon's socket API (v1): HTTP/1.1 over a Unix socket, one
//! connection per call.
//!
//! Long calls ([`Client::materialize`], [`Client::prefetch`]) read the daemon's NDJSON
//! stream and hand each [`Event`] to a callback (for a progress bar) before returning the
//! final [`Summary`].

use std::path::{Path, PathBuf};

use bytes::Bytes;
use hoard_types::api::{
    Artifacts, ArtifactsRequest, Event, GcReport, GcRequest, Health, ListedEntry,
    MaterializeRequest, Pin, PinRequest, PublishRequest, Published, ResolveRequest, Resolved,
    Status, Summary, Verified, VerifyRequest, Versions, VersionsRequest,
};
use http::{Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

/// What a call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("No hoard daemon is listening on `{}`; start one on your upstream, e.g. `hoard daemon --upstream http://registry:7700 &` (or `--upstream wandb`, `--upstream hf`; see docs/daemon.md), or point `HOARD_SOCKET` at a running one", socket.display())]
    NotRunning {
        socket: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The daemon answered with a problem document (or an `error` event).
    #[error("{detail}")]
    Api {
        status: u16,
        kind: String,
        detail: String,
    },

    #[error("Talking to the daemon on `{}` failed: {reason}", socket.display())]
    Connection { socket: PathBuf, reason: String },

    /// The connection ended in the middle of an answer: the daemon crashed or was stopped.
    #[error("The daemon on `{}` stopped in the middle of the call (it crashed or was stopped); its log is what `hoard daemon` wrote to stderr (`journalctl -u hoard` under systemd). Run the command again once it is back: what was fetched is kept", socket.display())]
    Stopped { socket: PathBuf },
}

impl Error {
    pub fn kind(&self) -> &str {
        match self {
            Self::NotRunning { .. } => "daemon-not-running",
            Self::Api { kind, .. } => kind,
            Self::Connection { .. } => "connection",
            Self::Stopped { .. } => "daemon-stopped",
        }
    }
}

/// A client of the daemon listening on one socket.
#[derive(Clone)]
pub struct Client {
    socket: PathBuf,
    /// The caller's own upstream credential, sent as `X-Hoard-Token`.
    token: Option<String>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("socket", &self.socket)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl Client {
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        Self {
            socket: socket.into(),
            token: None,
        }
    }

    /// Sends the caller's upstream credential with every call: the daemon then confirms
    /// with the upstream that this caller may download what it asks for.
    #[must_use]
    pub fn with_token(mut self, token: Option<String>) -> Self {
        self.token = token.filter(|t| !t.is_empty());
        self
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    fn connection_error(&self, reason: impl std::fmt::Display) -> Error {
        Error::Connection {
            socket: self.socket.clone(),
            reason: reason.to_string(),
        }
    }

    /// A failure of a call under way: [`Error::Stopped`] when the daemon went away.
    fn broken(&self, e: &hyper::Error) -> Error {
        if e.is_incomplete_message()
            || e.is_closed()
            || e.is_canceled()
            || e.is_body_write_aborted()
            || std::error::Error::source(e)
                .is_some_and(<dyn std::error::Error>::is::<std::io::Error>)
        {
            return Error::Stopped {
                socket: self.socket.clone(),
            };
        }
        self.connection_error(e)
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<http::Response<hyper::body::Incoming>, Error> {
        let stream = tokio::net::UnixStream::connect(&self.socket)
            .await
            .map_err(|source| Error::NotRunning {
                socket: self.socket.clone(),
                source,
            })?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| self.connection_error(e))?;
        tokio::spawn(connection);
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, "hoard")
            .header(header::CONTENT_TYPE, "application/json");
        if let Some(token) = &self.token {
            let mut value = http::HeaderValue::from_str(token).map_err(|_| {
                self.connection_error("the token has characters a header cannot carry")
            })?;
            value.set_sensitive(true);
            request = request.header("x-hoard-token", value);
        }
        let request = request
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| self.connection_error(e))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| self.broken(&e))?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status();
        let body = self.body(response).await?;
        let problem: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        Err(Error::Api {
            status: status.as_u16(),
            kind: problem["type"].as_str().unwrap_or("unknown").to_owned(),
            detail: problem["detail"]
                .as_str()
                .map_or_else(|| format!("the daemon answered {status}"), str::to_owned),
        })
    }

    async fn body(&self, response: http::Response<hyper::body::Incoming>) -> Result<Bytes, Error> {
        Ok(response
            .into_body()
            .collect()
            .await
            .map_err(|e| self.broken(&e))?
            .to_bytes())
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T, Error> {
        let response = self.call(Method::GET, path, None).await?;
        self.read_json(response).await
    }

    async fn post_json<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        body: &impl serde::Serialize,
    ) -> Result<T, Error> {
        let body = serde_json::to_vec(body).map_err(|e| self.connection_error(e))?;
        let response = self.call(Method::POST, path, Some(body)).await?;
        self.read_json(response).await
    }

    async fn read_json<T: serde::de::DeserializeOwned>(
        &self,
        response: http::Response<hyper::body::Incoming>,
    ) -> Result<T, Error> {
        let body = self.body(response).await?;
        serde_json::from_slice(&body).map_err(|e| self.connection_error(format!("bad answer: {e}")))
    }

    pub async fn health(&self) -> Result<Health, Error> {
        self.get_json("/v1/health").await
    }

    pub async fn status(&self) -> Result<Status, Error> {
        self.get_json("/v1/status").await
    }

    pub async fn metrics(&self) -> Result<String, Error> {
        let response = self.call(Method::GET, "/metrics", None).await?;
        let body = self.body(response).await?;
        Ok(String::from_utf8_lossy(&body).into_owned())
    }

    pub async fn resolve(&self, request: &ResolveRequest) -> Result<Resolved, Error> {
        self.post_json("/v1/resolve", request).await
    }

    /// The artifacts of a project, as the upstream lists them.
    pub async fn artifacts(&self, request: &ArtifactsRequest) -> Result<Artifacts, Error> {
        self.post_json("/v1/artifacts", request).await
    }

    /// Every version and alias of an artifact, and how much of each is cached.
    pub async fn versions(&self, request: &VersionsRequest) -> Result<Versions, Error> {
        self.post_json("/v1/versions", request).await
    }

    /// Materializes a version (or part of it); `on_event` sees every event as it arrives.
    pub async fn materialize(
        &self,
        request: &MaterializeRequest,
        on_event: impl FnMut(&Event),
    ) -> Result<Summary, Error> {
        self.stream("/v1/materialize", request, on_event).await
    }

    /// Materializes one file (`request.file`, with `request.dest`).
    pub async fn file(
        &self,
        request: &MaterializeRequest,
        on_event: impl FnMut(&Event),
    ) -> Result<Summary, Error> {
        self.stream("/v1/file", request, on_event).await
    }

    /// One entry of a version (`request.file`, without `dest`): size, digest and, for a
    /// reference entry, its `ref` URI. Nothing is fetched.
    pub async fn entry(&self, request: &MaterializeRequest) -> Result<ListedEntry, Error> {
        self.post_json("/v1/file", request).await
    }

    /// Fetches a version if needed and keeps it from eviction.
    pub async fn pin(&self, request: &PinRequest) -> Result<Pin, Error> {
        self.post_json("/v1/pins", request).await
    }

    pub async fn unpin(&self, request: &PinRequest) -> Result<Pin, Error> {
        self.post_json("/v1/pins/remove", request).await
    }

    pub async fn pins(&self) -> Result<Vec<Pin>, Error> {
        self.get_json("/v1/pins").await
    }

    /// Re-hashes every cached blob; bad ones are quarantined.
    pub async fn verify(&self, request: &VerifyRequest) -> Result<Verified, Error> {
        self.post_json("/v1/verify", request).await
    }

    /// Evicts now (or, with `dry_run`, reports what would be evicted).
    pub async fn gc(&self, request: &GcRequest) -> Result<GcReport, Error> {
        self.post_json("/v1/gc", request).await
    }

    /// Publishes local files as a new version (see `PublishRequest`).
    pub async fn publish(&self, request: &PublishRequest) -> Result<Published, Error> {
        self.post_json("/v1/publish", request).await
    }

    /// Makes a version (or part of it) cached without materializing it.
    pub async fn prefetch(
        &self,
        request: &MaterializeRequest,
        on_event: impl FnMut(&Event),
    ) -> Result<Summary, Error> {
        self.stream("/v1/prefetch", request, on_event).await
    }

    async fn stream(
        &self,
        path: &str,
        request: &MaterializeRequest,
        mut on_event: impl FnMut(&Event),
    ) -> Result<Summary, Error> {
        let body = serde_json::to_vec(request).map_err(|e| self.connection_error(e))?;
        let response = self.call(Method::POST, path, Some(body)).await?;
        let mut body = response.into_body();
        let mut pending = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| self.broken(&e))?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            pending.extend_from_slice(&data);
            while let Some(end) = pending.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = pending.drain(..=end).collect();
                let event: Event = serde_json::from_slice(&line)
                    .map_err(|e| self.connection_error(format!("bad event: {e}")))?;
                on_event(&event);
                match event {
                    Event::Done(summary) => return Ok(summary),
                    Event::Error { kind, detail } => {
                        return Err(Error::Api {
                            status: StatusCode::OK.as_u16(),
                            kind,
                            detail,
                        });
                    }
                    _ => {}
                }
            }
        }
        Err(Error::Stopped {
            socket: self.socket.clone(),
        })
    }
}
