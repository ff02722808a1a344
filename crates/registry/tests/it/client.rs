#![expect(
    clippy::unwrap_used,
    reason = "test helpers fail the test that calls them"
)]

//! `RegistryClient` (the daemon's view) against the real server.

use std::ops::Range;

use hoard_types::{ArtifactName, Digest, Selector};
use hoard_upstream::{BlobSource, Catalog, ClientOptions, Error, Publisher, RegistryClient};

use crate::common::*;

fn client(server: &Server, token: Option<&str>) -> RegistryClient {
    RegistryClient::new(
        &server.url,
        ClientOptions {
            token: token.map(str::to_owned),
            ..ClientOptions::default()
        },
    )
    .unwrap()
}

fn bike() -> ArtifactName {
    ArtifactName::new("acme", "vision", "bike").unwrap()
}

#[tokio::test]
async fn publish_resolve_and_fetch_through_the_traits() {
    let server = Server::start(Some(tokens())).await;
    let upstream = client(&server, Some(MEMBER));
    let dir = tempfile::tempdir().unwrap();
    let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let file = dir.path().join("weights.bin");
    std::fs::write(&file, &data).unwrap();
    let digest = Digest::of(&data);

    assert_eq!(
        upstream.missing_blobs(&[digest]).await.unwrap(),
        vec![digest]
    );
    upstream.upload_blob(&digest, &file).await.unwrap();
    assert!(upstream.missing_blobs(&[digest]).await.unwrap().is_empty());
    assert!(server.blob_file(&digest).exists());

    let request = hoard_types::registry::CommitRequest {
        manifest: manifest(&[("weights.bin", &data)]),
        aliases: vec!["best".into()],
        kind: Some("model".into()),
        metadata: serde_json::json!({"epochs": 3}),
    };
    let first = upstream.commit(&bike(), &request).await.unwrap();
    assert!(first.created);
    let second = upstream.commit(&bike(), &request).await.unwrap();
    assert!(!second.created);
    assert_eq!(second.version.version, "v0");

    let resolved = upstream
        .resolve(&bike(), &Selector::Alias("best".into()))
        .await
        .unwrap();
    assert_eq!(resolved.digest, first.version.digest);
    assert_eq!(resolved.metadata["epochs"], 3);
    let by_digest = upstream
        .resolve(&bike(), &Selector::Digest(resolved.digest))
        .await
        .unwrap();
    assert_eq!(by_digest.version, "v0");

    let whole = upstream
        .fetch_blob(&digest, data.len() as u64, None)
        .await
        .unwrap();
    assert_eq!(whole.read_to_vec().await.unwrap(), data);
    let range: Range<u64> = 1000..150_000;
    let part = upstream
        .fetch_blob(&digest, data.len() as u64, Some(range.clone()))
        .await
        .unwrap();
    assert_eq!(part.read_to_vec().await.unwrap(), &data[1000..150_000]);

    // A size that does not match what the server has: never a silent success.
    let wrong = upstream
        .fetch_blob(&digest, data.len() as u64 + 1, None)
        .await;
    let wrong = match wrong {
        Ok(stream) => stream.read_to_vec().await.map(drop),
        Err(e) => Err(e),
    };
    assert!(wrong.is_err());

    upstream.set_alias(&bike(), "prod", 0).await.unwrap_err();
    client(&server, Some(ADMIN))
        .set_alias(&bike(), "prod", 0)
        .await
        .unwrap();
    let list = upstream.list(&bike()).await.unwrap();
    assert_eq!(list.aliases["prod"], "v0");
}

#[tokio::test]
async fn errors_are_typed() {
    let server = Server::start(Some(tokens())).await;
    server
        .as_(MEMBER)
        .publish("acme/vision/bike", &[("a", b"A")], &[])
        .await;
    let viewer = client(&server, Some(VIEWER));
    let e = viewer
        .resolve(&bike(), &Selector::Alias("latest".into()))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, Error::Forbidden { detail } if detail.contains("view-only members cannot download")),
        "{e}"
    );
    let e = client(&server, Some(OUTSIDER))
        .resolve(&bike(), &Selector::Version(0))
        .await
        .unwrap_err();
    assert!(e.is_not_found(), "{e}");
    let e = client(&server, Some("bad"))
        .resolve(&bike(), &Selector::Version(0))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Unauthorized { .. }), "{e}");
    let member = client(&server, Some(MEMBER));
    let request = hoard_types::registry::CommitRequest {
        manifest: manifest(&[("b", b"never uploaded")]),
        aliases: vec![],
        kind: None,
        metadata: serde_json::Value::Null,
    };
    let e = member.commit(&bike(), &request).await.unwrap_err();
    assert!(
        matches!(&e, Error::MissingBlobs { missing } if missing == &[Digest::of(b"never uploaded")]),
        "{e}"
    );
}

#[tokio::test]
async fn a_large_upload_continues_a_broken_one() {
    let server = Server::start(Some(tokens())).await;
    let upstream = client(&server, Some(MEMBER));
    let dir = tempfile::tempdir().unwrap();
    let data: Vec<u8> = (0..(20u32 << 20)).map(|i| (i % 241) as u8).collect();
    let file = dir.path().join("model.bin");
    std::fs::write(&file, &data).unwrap();
    let digest = Digest::of(&data);
    let sent = 8 << 20;
    broken_upload(&server, Some(MEMBER), &digest, &data, sent).await;

    upstream.upload_blob(&digest, &file).await.unwrap();
    assert_eq!(std::fs::read(server.blob_file(&digest)).unwrap(), data);
    // Each byte crossed the wire once: the client sent only what the registry lacked.
    let metrics = server
        .as_(MEMBER)
        .get("/metrics")
        .await
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(&format!(
            "hoard_registry_blob_bytes_received_total {}\n",
            data.len()
        )),
        "{metrics}"
    );
    assert_eq!(server.tmp_files(), 0);
}

/// `POST /v1/blobs/batch` through [`BlobSource::fetch_batch`]: the blobs in the order
/// asked, checked; what the caller may not read, or the server lacks, is absent.
#[tokio::test]
async fn blobs_come_in_batches_in_the_order_asked() {
    use hoard_upstream::Batched;

    let server = Server::start(Some(tokens())).await;
    let (a, b) = (b"first blob".as_slice(), vec![7u8; 300_000]);
    server
        .as_(MEMBER)
        .publish("acme/vision/bike", &[("a", a), ("b", &b)], &[])
        .await;
    let gone = Digest::of(b"gone");
    let asked = vec![
        (Digest::of(&b), b.len() as u64),
        (gone, 4),
        (Digest::of(a), a.len() as u64),
    ];
    let read = |token: &'static str| {
        let asked = asked.clone();
        let upstream = client(&server, Some(token));
        async move {
            let mut batch = upstream.fetch_batch(asked).unwrap().await.unwrap();
            let mut got = Vec::new();
            while let Some(blob) = batch.next_blob().await.unwrap() {
                got.push(match blob {
                    Batched::Blob(bytes) => Some(bytes.to_vec()),
                    Batched::Absent => None,
                    Batched::Wrong(e) => panic!("{e}"),
                });
            }
            got
        }
    };
    assert_eq!(
        read(MEMBER).await,
        [Some(b.clone()), None, Some(a.to_vec())]
    );
    assert_eq!(
        read(VIEWER).await,
        [None, None, None],
        "a viewer downloads nothing"
    );
    assert_eq!(read(OUTSIDER).await, [None, None, None]);

    // The frames as sent: length (8 bytes, big-endian), bytes; absent is u64::MAX alone.
    let raw = server
        .as_(MEMBER)
        .req(reqwest::Method::POST, "/v1/blobs/batch")
        .json(&serde_json::json!({"digests": [Digest::of(a), gone]}))
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status(), 200);
    let mut expected = (a.len() as u64).to_be_bytes().to_vec();
    expected.extend_from_slice(a);
    expected.extend_from_slice(&u64::MAX.to_be_bytes());
    assert_eq!(raw.bytes().await.unwrap(), expected);

    let anonymous = server
        .http()
        .req(reqwest::Method::POST, "/v1/blobs/batch")
        .json(&serde_json::json!({"digests": [Digest::of(a)]}))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401, "no token, no bytes");

    let too_many = vec![gone; hoard_types::registry::MAX_BATCH + 1];
    let refused = server
        .as_(MEMBER)
        .req(reqwest::Method::POST, "/v1/blobs/batch")
        .json(&serde_json::json!({ "digests": too_many }))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 413);
}
