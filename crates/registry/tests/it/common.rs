#![expect(
    clippy::unwrap_used,
    reason = "test helpers fail the test that calls them"
)]

use std::path::PathBuf;
use std::sync::Arc;

use hoard_registry::{Limits, State, Tokens};
use hoard_types::registry::CommitRequest;
use hoard_types::{Digest, Entry, Manifest, RelPath};
use sha2::Digest as _;
use tokio::sync::oneshot;

pub(crate) struct Server {
    pub(crate) url: String,
    pub(crate) root: PathBuf,
    dir: tempfile::TempDir,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

pub(crate) const VIEWER: &str = "viewer-secret";
pub(crate) const MEMBER: &str = "member-secret";
pub(crate) const ADMIN: &str = "admin-secret";
/// Member of `beta/*` only.
pub(crate) const OUTSIDER: &str = "outsider-secret";

fn sha(secret: &str) -> String {
    use std::fmt::Write as _;
    sha2::Sha256::digest(secret.as_bytes())
        .iter()
        .fold(String::new(), |mut hex, b| {
            let _ = write!(hex, "{b:02x}");
            hex
        })
}

pub(crate) fn tokens() -> Tokens {
    Tokens::parse(&format!(
        r#"
        [[token]]
        name = "vera"
        secret_sha256 = "{}"
        grants = {{ "acme/vision" = "viewer" }}
        [[token]]
        name = "max"
        secret_sha256 = "{}"
        grants = {{ "acme/vision" = "member" }}
        [[token]]
        name = "ada"
        secret_sha256 = "{}"
        grants = {{ "acme/*" = "admin" }}
        [[token]]
        name = "otto"
        secret_sha256 = "{}"
        grants = {{ "beta/*" = "member" }}
        "#,
        sha(VIEWER),
        sha(MEMBER),
        sha(ADMIN),
        sha(OUTSIDER)
    ))
    .unwrap()
}

impl Server {
    pub(crate) async fn start(tokens: Option<Tokens>) -> Self {
        Self::start_with(tokens, Limits::default(), None).await
    }

    /// Starts on an existing directory (`keep`), or a new temp one.
    pub(crate) async fn start_with(
        tokens: Option<Tokens>,
        limits: Limits,
        keep: Option<tempfile::TempDir>,
    ) -> Self {
        let dir = keep.unwrap_or_else(|| tempfile::tempdir().unwrap());
        let root = dir.path().join("registry");
        let state = State::open(root.clone(), tokens, limits).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = oneshot::channel();
        let task = tokio::spawn(hoard_registry::run(listener, Arc::new(state), async {
            let _ = rx.await;
        }));
        Self {
            url,
            root,
            dir,
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    /// Stops the server and hands back its directory.
    pub(crate) async fn stop(mut self) -> tempfile::TempDir {
        let _ = self.shutdown.take().unwrap().send(());
        self.task.take().unwrap().await.unwrap().unwrap();
        std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap())
    }

    pub(crate) fn http(&self) -> Http {
        Http {
            base: self.url.clone(),
            client: reqwest::Client::new(),
            token: None,
        }
    }

    pub(crate) fn as_(&self, token: &str) -> Http {
        Http {
            token: Some(token.to_owned()),
            ..self.http()
        }
    }

    /// Files in `tmp/` (a failed upload must leave none).
    pub(crate) fn tmp_files(&self) -> usize {
        std::fs::read_dir(self.root.join("tmp")).map_or(0, Iterator::count)
    }

    pub(crate) fn blob_file(&self, digest: &Digest) -> PathBuf {
        let hex = digest.to_hex();
        self.root.join("blobs").join(&hex[..2]).join(hex)
    }
}

#[derive(Clone)]
pub(crate) struct Http {
    base: String,
    client: reqwest::Client,
    token: Option<String>,
}

impl Http {
    pub(crate) fn req(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let r = self.client.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
    }

    pub(crate) async fn get(&self, path: &str) -> reqwest::Response {
        self.req(reqwest::Method::GET, path).send().await.unwrap()
    }

    pub(crate) async fn put_blob(&self, data: &[u8]) -> reqwest::Response {
        self.req(
            reqwest::Method::PUT,
            &format!("/v1/blobs/{}", Digest::of(data)),
        )
        .body(data.to_vec())
        .send()
        .await
        .unwrap()
    }

    pub(crate) async fn commit(
        &self,
        artifact: &str,
        request: &CommitRequest,
    ) -> reqwest::Response {
        self.req(
            reqwest::Method::POST,
            &format!("/v1/artifacts/{artifact}/versions"),
        )
        .json(request)
        .send()
        .await
        .unwrap()
    }

    /// Uploads `files` and commits them; panics unless the commit succeeds.
    pub(crate) async fn publish(
        &self,
        artifact: &str,
        files: &[(&str, &[u8])],
        aliases: &[&str],
    ) -> hoard_types::Version {
        for (_, data) in files {
            let r = self.put_blob(data).await;
            assert!(r.status().is_success(), "{}", r.text().await.unwrap());
        }
        let r = self.commit(artifact, &request(files, aliases)).await;
        assert!(r.status().is_success(), "{}", r.text().await.unwrap());
        r.json().await.unwrap()
    }
}

pub(crate) fn manifest(files: &[(&str, &[u8])]) -> Manifest {
    let mut manifest = Manifest::new();
    for (path, data) in files {
        manifest.entries.insert(
            RelPath::new(*path).unwrap(),
            Entry {
                digest: Digest::of(data),
                exec: false,
                reference: None,
                size: data.len() as u64,
            },
        );
    }
    manifest
}

pub(crate) fn request(files: &[(&str, &[u8])], aliases: &[&str]) -> CommitRequest {
    CommitRequest {
        manifest: manifest(files),
        aliases: aliases.iter().map(|a| (*a).to_owned()).collect(),
        kind: Some("dataset".to_owned()),
        metadata: serde_json::Value::Null,
    }
}

/// Asserts a problem+json answer with `status` whose detail contains `needle`.
pub(crate) async fn assert_problem(response: reqwest::Response, status: u16, needle: &str) {
    assert_eq!(response.status().as_u16(), status);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let problem: hoard_types::registry::Problem = response.json().await.unwrap();
    assert_eq!(problem.status, status);
    assert!(
        problem.detail.contains(needle),
        "expected `{needle}` in `{}`",
        problem.detail
    );
}

/// Starts a resumable upload of `data` (whose digest is `digest`) at byte 0, sends
/// `sent` bytes of it, then closes the connection: what a broken upload leaves.
pub(crate) async fn broken_upload(
    server: &Server,
    token: Option<&str>,
    digest: &Digest,
    data: &[u8],
    sent: usize,
) {
    use tokio::io::AsyncWriteExt;
    let addr = server.url.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let head = format!(
        "PUT /v1/blobs/{digest} HTTP/1.1\r\nHost: x\r\n{auth}Upload-Offset: 0\r\nContent-Length: {}\r\n\r\n",
        data.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&data[..sent]).await.unwrap();
    stream.shutdown().await.unwrap();
    drop(stream);
    // The server writes what arrived once it sees the connection end.
    for _ in 0..200 {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        let offset = upload_offset(server, token, digest).await;
        if offset == sent as u64 {
            return;
        }
    }
    panic!("the registry never held the {sent} bytes sent");
}

/// `GET /v1/blobs/{digest}/upload`.
pub(crate) async fn upload_offset(server: &Server, token: Option<&str>, digest: &Digest) -> u64 {
    let http = match token {
        Some(t) => server.as_(t),
        None => server.http(),
    };
    let answer: serde_json::Value = http
        .get(&format!("/v1/blobs/{digest}/upload"))
        .await
        .json()
        .await
        .unwrap();
    answer["offset"].as_u64().unwrap()
}
