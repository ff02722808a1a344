#![expect(
    clippy::unwrap_used,
    reason = "test helpers fail the test that calls them"
)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use hoard_types::{ArtifactName, Digest, Selector};
use hoard_upstream::{BlobSource, Catalog, ClientOptions, Error, RegistryClient, RetryPolicy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One request as the fake server saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Seen {
    path: String,
    range: Option<String>,
}

/// What the fake server does with request number `n`.
enum Reply {
    /// Write these bytes, then close.
    Bytes(Vec<u8>),
    /// Write these bytes, then keep the connection open without a word.
    Stall(Vec<u8>),
}

type Script = dyn Fn(usize, &Seen) -> Reply + Send + Sync;

struct Fake {
    url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Fake {
    async fn start(script: impl Fn(usize, &Seen) -> Reply + Send + Sync + 'static) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let script: Arc<Script> = Arc::new(script);
        tokio::spawn(async move {
            loop {
                let (mut stream, _) = listener.accept().await.unwrap();
                let (log, script) = (log.clone(), script.clone());
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") {
                        if stream.read(&mut byte).await.unwrap_or(0) == 0 {
                            return;
                        }
                        head.push(byte[0]);
                    }
                    let text = String::from_utf8_lossy(&head).into_owned();
                    let path = text.split(' ').nth(1).unwrap_or_default().to_owned();
                    let range = text.lines().find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("range: ")
                            .map(str::to_owned)
                    });
                    let seen = Seen { path, range };
                    let n = {
                        let mut log = log.lock().unwrap();
                        log.push(seen.clone());
                        log.len() - 1
                    };
                    match script(n, &seen) {
                        Reply::Bytes(bytes) => {
                            let _ = stream.write_all(&bytes).await;
                            let _ = stream.shutdown().await;
                        }
                        Reply::Stall(bytes) => {
                            let _ = stream.write_all(&bytes).await;
                            tokio::time::sleep(Duration::from_secs(30)).await;
                        }
                    }
                });
            }
        });
        Self { url, seen }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    fn client(&self) -> RegistryClient {
        RegistryClient::new(&self.url, fast()).unwrap()
    }
}

fn fast() -> ClientOptions {
    ClientOptions {
        stall_timeout: Duration::from_millis(300),
        retry: RetryPolicy {
            retries: 3,
            base: Duration::from_millis(1),
            max: Duration::from_millis(5),
            max_retry_after: Duration::from_secs(5),
        },
        ..ClientOptions::default()
    }
}

/// An HTTP response head; `len` is the Content-Length announced.
fn head(status: &str, len: usize, extra: &[(&str, String)]) -> Vec<u8> {
    let mut h = format!("HTTP/1.1 {status}\r\ncontent-length: {len}\r\nconnection: close\r\n");
    for (name, value) in extra {
        h.push_str(name);
        h.push_str(": ");
        h.push_str(value);
        h.push_str("\r\n");
    }
    h.push_str("\r\n");
    h.into_bytes()
}

fn cat(a: Vec<u8>, b: &[u8]) -> Vec<u8> {
    let mut a = a;
    a.extend_from_slice(b);
    a
}

fn data() -> Vec<u8> {
    (0..300_000u32).map(|i| (i * 7 % 256) as u8).collect()
}

/// Serves `data` honestly for the range asked (or all of it).
fn serve(data: &[u8], seen: &Seen) -> (Vec<u8>, Vec<u8>) {
    let size = data.len();
    match &seen.range {
        None => (head("200 OK", size, &[]), data.to_vec()),
        Some(range) => {
            let spec = range.trim().strip_prefix("bytes=").unwrap();
            let (a, b) = spec.split_once('-').unwrap();
            let (a, b): (usize, usize) = (a.parse().unwrap(), b.parse().unwrap());
            let part = data[a..=b].to_vec();
            let extra = [("content-range", format!("bytes {a}-{b}/{size}"))];
            (head("206 Partial Content", part.len(), &extra), part)
        }
    }
}

/// Fetches `blob` (or a range of it) from the fake; the result of reading it all.
async fn fetch(
    fake: &Fake,
    blob: &[u8],
    range: Option<std::ops::Range<u64>>,
) -> Result<Vec<u8>, Error> {
    let stream = fake
        .client()
        .fetch_blob(&Digest::of(blob), blob.len() as u64, range)
        .await?;
    stream.read_to_vec().await
}

#[tokio::test]
async fn a_broken_download_resumes_from_the_last_byte() {
    let blob = data();
    let copy = blob.clone();
    let fake = Fake::start(move |n, seen| {
        let (head, body) = serve(&copy, seen);
        match n {
            // Announce everything, send a third, hang up.
            0 => Reply::Bytes(cat(head, &body[..100_000])),
            1 => Reply::Bytes(cat(head, &body[..50_000])),
            _ => Reply::Bytes(cat(head, &body)),
        }
    })
    .await;
    assert_eq!(fetch(&fake, &blob, None).await.unwrap(), blob);
    let ranges: Vec<_> = fake.seen().into_iter().map(|s| s.range).collect();
    assert_eq!(
        ranges,
        [
            None,
            Some("bytes=100000-299999".into()),
            Some("bytes=150000-299999".into())
        ]
    );
}

#[tokio::test]
async fn a_stalled_download_resumes() {
    let blob = data();
    let copy = blob.clone();
    let fake = Fake::start(move |n, seen| {
        let (head, body) = serve(&copy, seen);
        if n == 0 {
            Reply::Stall(cat(head, &body[..1000]))
        } else {
            Reply::Bytes(cat(head, &body))
        }
    })
    .await;
    assert_eq!(fetch(&fake, &blob, None).await.unwrap(), blob);
    assert_eq!(fake.seen()[1].range.as_deref(), Some("bytes=1000-299999"));
}

#[tokio::test]
async fn a_range_request_resumes_inside_its_range() {
    let blob = data();
    let copy = blob.clone();
    let fake = Fake::start(move |n, seen| {
        let (head, body) = serve(&copy, seen);
        if n == 0 {
            Reply::Bytes(cat(head, &body[..10]))
        } else {
            Reply::Bytes(cat(head, &body))
        }
    })
    .await;
    assert_eq!(
        fetch(&fake, &blob, Some(1000..2000)).await.unwrap(),
        &blob[1000..2000]
    );
    let ranges: Vec<_> = fake.seen().into_iter().map(|s| s.range.unwrap()).collect();
    assert_eq!(ranges, ["bytes=1000-1999", "bytes=1010-1999"]);
}

#[tokio::test]
async fn server_errors_and_429_are_retried() {
    let blob = data();
    let copy = blob.clone();
    let fake = Fake::start(move |n, seen| match n {
        0 => Reply::Bytes(head("500 Internal Server Error", 0, &[])),
        1 => Reply::Bytes(head(
            "429 Too Many Requests",
            0,
            &[("retry-after", "0".into())],
        )),
        2 => Reply::Bytes(head("503 Service Unavailable", 0, &[])),
        _ => {
            let (head, body) = serve(&copy, seen);
            Reply::Bytes(cat(head, &body))
        }
    })
    .await;
    assert_eq!(fetch(&fake, &blob, None).await.unwrap(), blob);
    assert_eq!(fake.seen().len(), 4);
}

#[tokio::test]
async fn retries_run_out() {
    let fake = Fake::start(|_, _| Reply::Bytes(head("503 Service Unavailable", 0, &[]))).await;
    let name = ArtifactName::new("a", "b", "c").unwrap();
    let e = fake
        .client()
        .resolve(&name, &Selector::Version(0))
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::Unavailable {
                status: 503,
                attempts: 4,
                ..
            }
        ),
        "{e}"
    );
    assert!(e.is_unreachable());
    assert_eq!(fake.seen().len(), 4, "one attempt and three retries");
}

#[tokio::test]
async fn a_long_retry_after_fails_at_once() {
    let fake = Fake::start(|_, _| {
        Reply::Bytes(head(
            "429 Too Many Requests",
            0,
            &[("retry-after", "3600".into())],
        ))
    })
    .await;
    let name = ArtifactName::new("a", "b", "c").unwrap();
    let e = fake.client().list(&name).await.unwrap_err();
    assert!(matches!(e, Error::Unavailable { status: 429, .. }), "{e}");
    assert_eq!(fake.seen().len(), 1);
}

#[tokio::test]
async fn wrong_bytes_are_never_a_success() {
    let blob = data();

    // Right length, wrong content.
    let fake =
        Fake::start(|_, _| Reply::Bytes(cat(head("200 OK", 300_000, &[]), &vec![0u8; 300_000])))
            .await;
    let e = fetch(&fake, &blob, None).await.unwrap_err();
    assert!(matches!(e, Error::DigestMismatch { .. }), "{e}");

    // Honest framing, but shorter than the blob.
    let copy = blob.clone();
    let fake =
        Fake::start(move |_, _| Reply::Bytes(cat(head("200 OK", 1000, &[]), &copy[..1000]))).await;
    let e = fetch(&fake, &blob, None).await.unwrap_err();
    assert!(matches!(e, Error::ShortBody { received: 1000, .. }), "{e}");

    // Longer than the blob.
    let copy = blob.clone();
    let fake = Fake::start(move |_, _| {
        Reply::Bytes(cat(head("200 OK", 300_001, &[]), &cat(copy.clone(), b"!")))
    })
    .await;
    let e = fetch(&fake, &blob, None).await.unwrap_err();
    assert!(matches!(e, Error::LongBody { .. }), "{e}");

    // A wrong ETag, a Range answered with 200, a wrong Content-Range.
    let fake =
        Fake::start(|_, _| Reply::Bytes(head("200 OK", 0, &[("etag", "\"abc\"".into())]))).await;
    let e = fetch(&fake, &blob, None).await.unwrap_err();
    assert!(matches!(e, Error::Protocol { .. }), "{e}");
    let copy = blob.clone();
    let fake =
        Fake::start(move |_, _| Reply::Bytes(cat(head("200 OK", 300_000, &[]), &copy))).await;
    let e = fetch(&fake, &blob, Some(10..20)).await.unwrap_err();
    assert!(e.to_string().contains("ignored the Range"), "{e}");
    let fake = Fake::start(|_, _| {
        Reply::Bytes(cat(
            head(
                "206 Partial Content",
                10,
                &[("content-range", "bytes 0-9/300000".into())],
            ),
            &[0; 10],
        ))
    })
    .await;
    let e = fetch(&fake, &blob, Some(10..20)).await.unwrap_err();
    assert!(e.to_string().contains("Content-Range"), "{e}");
}

#[tokio::test]
async fn bad_json_is_a_protocol_error() {
    let name = ArtifactName::new("a", "b", "c").unwrap();
    let fake = Fake::start(|_, _| Reply::Bytes(cat(head("200 OK", 5, &[]), b"{nope"))).await;
    let e = fake
        .client()
        .resolve(&name, &Selector::Version(0))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Protocol { .. }), "{e}");
    let fake = Fake::start(|_, _| Reply::Bytes(head("200 OK", 2 << 30, &[]))).await;
    let e = fake
        .client()
        .resolve(&name, &Selector::Version(0))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("an answer of more than"), "{e}");
}

#[tokio::test]
async fn an_absent_server_is_unreachable() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let client = RegistryClient::new(&url, fast()).unwrap();
    let name = ArtifactName::new("a", "b", "c").unwrap();
    let e = client
        .resolve(&name, &Selector::Version(0))
        .await
        .unwrap_err();
    assert!(
        matches!(e, Error::Unreachable { attempts: 2, .. }),
        "one quick retry: {e}"
    );
    assert!(e.is_unreachable());
}

#[test]
fn bad_urls_are_refused() {
    for url in [
        "ftp://x",
        "http://x/?a=b",
        "http://user@x",
        "dir://relative",
        "nonsense",
    ] {
        assert!(
            hoard_upstream::open(url, ClientOptions::default()).is_err(),
            "{url}"
        );
    }
}
