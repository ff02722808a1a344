use hoard_types::Digest;
use hoard_types::registry::{MissingResponse, VersionList};
use reqwest::Method;

use crate::common::*;

#[tokio::test]
async fn resolve_by_alias_version_and_digest() {
    let server = Server::start(None).await;
    let http = server.http();
    let v0 = http
        .publish("acme/vision/bike", &[("a.txt", b"one")], &["best"])
        .await;
    let v1 = http
        .publish("acme/vision/bike", &[("a.txt", b"two")], &[])
        .await;
    assert_eq!((v0.version.as_str(), v1.version.as_str()), ("v0", "v1"));

    let get = |path: String| {
        let http = http.clone();
        async move {
            let r = http.get(&path).await;
            assert_eq!(r.status(), 200, "{path}");
            r.json::<hoard_types::Version>().await.unwrap()
        }
    };
    let base = "/v1/artifacts/acme/vision/bike";
    // `latest` follows the newest version; `best` stayed where it was put.
    assert_eq!(get(format!("{base}/latest")).await.version, "v1");
    let best = get(format!("{base}/best")).await;
    assert_eq!(
        (best.version.as_str(), best.aliases.clone()),
        ("v0", vec!["best".to_owned()])
    );
    assert_eq!(get(format!("{base}/v0")).await.digest, v0.digest);
    assert_eq!(get(format!("{base}/@{}", v1.digest)).await.version, "v1");
    let latest = get(format!("{base}/latest")).await;
    latest.validate().unwrap();
    assert_eq!(latest.aliases, vec!["latest".to_owned()]);

    assert_problem(
        http.get(&format!("{base}/v7")).await,
        404,
        "acme/vision/bike:v7",
    )
    .await;
    assert_problem(http.get(&format!("{base}/nope")).await, 404, "Not found").await;
    assert_problem(
        http.get("/v1/artifacts/acme/vision/other/latest").await,
        404,
        "Not found",
    )
    .await;
    assert_problem(
        http.get(&format!("{base}/@{}", Digest::of(b"x"))).await,
        404,
        "Not found",
    )
    .await;
    assert_problem(http.get(&format!("{base}/v01")).await, 400, "leading zero").await;
    assert_problem(
        http.get("/v1/artifacts/acme/vision/..%2Fx/latest").await,
        400,
        "starts with `.`",
    )
    .await;

    let list: VersionList = http
        .get(&format!("{base}/versions"))
        .await
        .json()
        .await
        .unwrap();
    let names: Vec<_> = list.versions.iter().map(|v| v.version.as_str()).collect();
    assert_eq!(names, ["v0", "v1"]);
    assert_eq!(list.aliases["latest"], "v1");
    assert_eq!(list.aliases["best"], "v0");
    assert_eq!((list.versions[0].files, list.versions[0].size), (1, 3));
}

#[tokio::test]
async fn blobs_get_head_and_ranges() {
    let server = Server::start(None).await;
    let http = server.http();
    let data: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
    let digest = Digest::of(&data);
    assert_eq!(http.put_blob(&data).await.status(), 201);
    assert_eq!(
        http.put_blob(&data).await.status(),
        200,
        "a second upload is idempotent"
    );

    let path = format!("/v1/blobs/{digest}");
    let r = http.get(&path).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["etag"], format!("\"{digest}\""));
    assert_eq!(r.headers()["accept-ranges"], "bytes");
    assert_eq!(r.bytes().await.unwrap(), data);

    let head = http.req(Method::HEAD, &path).send().await.unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(head.headers()["content-length"], "1000");

    let range = |spec: &'static str| {
        let http = http.clone();
        let path = path.clone();
        async move {
            http.req(Method::GET, &path)
                .header("range", spec)
                .send()
                .await
                .unwrap()
        }
    };
    for (spec, first, last) in [
        ("bytes=0-0", 0, 0),
        ("bytes=10-19", 10, 19),
        ("bytes=990-", 990, 999),
        ("bytes=-5", 995, 999),
        ("bytes=995-5000", 995, 999),
        ("bytes=0-999", 0, 999),
    ] {
        let r = range(spec).await;
        assert_eq!(r.status(), 206, "{spec}");
        assert_eq!(
            r.headers()["content-range"],
            format!("bytes {first}-{last}/1000")
        );
        assert_eq!(r.bytes().await.unwrap(), data[first..=last], "{spec}");
    }
    for spec in ["bytes=1000-", "bytes=5000-6000", "bytes=-0"] {
        let r = range(spec).await;
        assert_eq!(r.status(), 416, "{spec}");
        assert_eq!(r.headers()["content-range"], "bytes */1000");
    }
    // Malformed and multi-range requests are ignored: the whole blob.
    for spec in ["bytes=9-2", "lines=1-2", "bytes=0-1,5-6"] {
        let r = range(spec).await;
        assert_eq!(r.status(), 200, "{spec}");
        assert_eq!(r.bytes().await.unwrap().len(), 1000);
    }

    assert_problem(
        http.get(&format!("/v1/blobs/{}", Digest::of(b"nope")))
            .await,
        404,
        "blob",
    )
    .await;
    assert_problem(http.get("/v1/blobs/xyz").await, 400, "Invalid digest").await;

    let metrics = http.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains("hoard_registry_requests_total{route=\"blob_get\",status=\"206\"} 6"),
        "{metrics}"
    );
    assert!(
        metrics.contains("hoard_registry_requests_total{route=\"blob_put\",status=\"201\"} 1"),
        "{metrics}"
    );
    // 1000 (full) + 1+10+10+5+5+1000 (ranges) + 3*1000 (ignored ranges); HEAD sends none.
    assert!(
        metrics.contains("hoard_registry_blob_bytes_served_total 5031\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("hoard_registry_blob_bytes_received_total 2000\n"),
        "{metrics}"
    );
}

#[tokio::test]
async fn an_upload_with_wrong_bytes_is_not_kept() {
    let server = Server::start(None).await;
    let http = server.http();
    let claimed = Digest::of(b"the real bytes");
    let r = http
        .req(Method::PUT, &format!("/v1/blobs/{claimed}"))
        .body(&b"other bytes"[..])
        .send()
        .await
        .unwrap();
    assert_problem(r, 400, "nothing was stored").await;
    assert!(!server.blob_file(&claimed).exists());
    assert!(!server.blob_file(&Digest::of(b"other bytes")).exists());
    assert_eq!(server.tmp_files(), 0);
}

#[tokio::test]
async fn oversized_bodies_are_refused() {
    let limits = hoard_registry::Limits {
        max_json: 1000,
        max_blob: 100,
        ..Default::default()
    };
    let server = Server::start_with(None, limits, None).await;
    let http = server.http();
    let big = vec![7u8; 101];
    assert_problem(http.put_blob(&big).await, 413, "larger than 100 bytes").await;
    assert_eq!(server.tmp_files(), 0);
    assert!(!server.blob_file(&Digest::of(&big)).exists());

    let files: Vec<(String, Vec<u8>)> = (0..50)
        .map(|i| (format!("file-{i}.txt"), vec![i]))
        .collect();
    let refs: Vec<(&str, &[u8])> = files
        .iter()
        .map(|(p, d)| (p.as_str(), d.as_slice()))
        .collect();
    let r = http.commit("acme/vision/bike", &request(&refs, &[])).await;
    assert_problem(r, 413, "larger than the 1000 bytes").await;
}

#[tokio::test]
async fn missing_blobs_are_listed() {
    let server = Server::start(None).await;
    let http = server.http();
    http.put_blob(b"here").await;
    let here = Digest::of(b"here");
    let gone = Digest::of(b"gone");
    let r = http
        .req(Method::POST, "/v1/blobs/missing")
        .json(&serde_json::json!({"digests": [here, gone]}))
        .send()
        .await
        .unwrap();
    let answer: MissingResponse = r.json().await.unwrap();
    assert_eq!(answer.missing, vec![gone]);
}

#[tokio::test]
async fn commits_are_idempotent_and_check_their_blobs() {
    let server = Server::start(None).await;
    let http = server.http();
    let files: &[(&str, &[u8])] = &[("a.txt", b"A"), ("dir/b.txt", b"B")];

    // Blobs not uploaded yet: 409 naming them, and no version appears.
    let r = http.commit("acme/vision/bike", &request(files, &[])).await;
    assert_eq!(r.status(), 409);
    let problem: hoard_types::registry::Problem = r.json().await.unwrap();
    let mut expected = vec![Digest::of(b"A"), Digest::of(b"B")];
    expected.sort();
    assert_eq!(problem.missing, expected);
    assert_problem(
        http.get("/v1/artifacts/acme/vision/bike/versions").await,
        404,
        "Not found",
    )
    .await;

    let first = http.publish("acme/vision/bike", files, &[]).await;
    let r = http
        .commit("acme/vision/bike", &request(files, &["prod"]))
        .await;
    assert_eq!(
        r.status(),
        200,
        "identical content returns the existing version"
    );
    let again: hoard_types::Version = r.json().await.unwrap();
    assert_eq!((again.version.as_str(), again.digest), ("v0", first.digest));
    assert!(again.aliases.contains(&"prod".to_owned()));
    let versions = std::fs::read_dir(server.root.join("artifacts/acme/vision/bike/versions"))
        .unwrap()
        .count();
    assert_eq!(versions, 1);
}

#[tokio::test]
async fn bad_commits_are_refused_and_nothing_appears() {
    let server = Server::start(None).await;
    let http = server.http();
    http.put_blob(b"A").await;
    let a = Digest::of(b"A");
    let post = |body: String| {
        let http = http.clone();
        async move {
            http.req(Method::POST, "/v1/artifacts/acme/vision/bike/versions")
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap()
        }
    };
    let entry = format!(r#"{{"digest":"{a}","size":1}}"#);
    for (body, needle) in [
        (
            format!(r#"{{"manifest":{{"version":1,"entries":{{"../x":{entry}}}}}}}"#),
            "Invalid path",
        ),
        (
            format!(r#"{{"manifest":{{"version":1,"entries":{{"/etc/x":{entry}}}}}}}"#),
            "Invalid path",
        ),
        (
            format!(r#"{{"manifest":{{"version":1,"entries":{{"a":{entry},"a/b":{entry}}}}}}}"#),
            "is a file and also",
        ),
        (
            r#"{"manifest":{"version":2,"entries":{}}}"#.to_owned(),
            "format version",
        ),
        (
            format!(
                r#"{{"manifest":{{"version":1,"entries":{{"a":{{"digest":"{a}","size":2}}}}}}}}"#
            ),
            "has 1 bytes",
        ),
        (
            r#"{"manifest":{"version":1,"entries":{}},"aliases":["v3"]}"#.to_owned(),
            "version number",
        ),
        (
            r#"{"manifest":{"version":1,"entries":{}},"extra":1}"#.to_owned(),
            "unknown field",
        ),
        ("{not json".to_owned(), "invalid JSON"),
    ] {
        assert_problem(post(body.clone()).await, 400, needle).await;
    }
    assert!(
        !server
            .root
            .join("artifacts/acme/vision/bike/versions/v0.json")
            .exists()
    );
    assert_eq!(server.tmp_files(), 0);
}

#[tokio::test]
async fn concurrent_commits_get_distinct_numbers() {
    let server = Server::start(None).await;
    let http = server.http();
    let contents: Vec<Vec<u8>> = (0..8u8).map(|i| vec![i; 10]).collect();
    for data in &contents {
        http.put_blob(data).await;
    }
    let mut tasks = Vec::new();
    for data in contents {
        let http = http.clone();
        tasks.push(tokio::spawn(async move {
            let r = http
                .commit("acme/vision/bike", &request(&[("x", &data)], &[]))
                .await;
            assert_eq!(r.status(), 201);
            r.json::<hoard_types::Version>().await.unwrap().version
        }));
    }
    let mut numbers = Vec::new();
    for task in tasks {
        numbers.push(task.await.unwrap());
    }
    numbers.sort();
    let expected: Vec<String> = (0..8).map(|n| format!("v{n}")).collect();
    assert_eq!(numbers, expected);
}

#[tokio::test]
async fn aliases_move_and_latest_follows_new_versions() {
    let server = Server::start(None).await;
    let http = server.http();
    http.publish("acme/vision/bike", &[("a", b"1")], &[]).await;
    http.publish("acme/vision/bike", &[("a", b"2")], &[]).await;
    let put_alias = |alias: &'static str, version: &'static str| {
        let http = http.clone();
        async move {
            http.req(
                Method::PUT,
                &format!("/v1/artifacts/acme/vision/bike/aliases/{alias}"),
            )
            .json(&serde_json::json!({ "version": version }))
            .send()
            .await
            .unwrap()
        }
    };
    assert_eq!(put_alias("latest", "v0").await.status(), 200);
    let latest: hoard_types::Version = http
        .get("/v1/artifacts/acme/vision/bike/latest")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(latest.version, "v0", "an explicit move of latest holds");
    assert_eq!(
        std::fs::read_to_string(
            server
                .root
                .join("artifacts/acme/vision/bike/aliases/latest")
        )
        .unwrap(),
        "v0\n"
    );
    http.publish("acme/vision/bike", &[("a", b"3")], &[]).await;
    let latest: hoard_types::Version = http
        .get("/v1/artifacts/acme/vision/bike/latest")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(latest.version, "v2", "until the next version");

    assert_problem(put_alias("prod", "v9").await, 404, "v9").await;
    assert_problem(put_alias("v4", "v0").await, 400, "version number").await;
    assert_problem(put_alias("prod", "latest").await, 400, "must be `vN`").await;
}

#[tokio::test]
async fn unknown_routes_and_methods_are_problems() {
    let server = Server::start(None).await;
    let http = server.http();
    assert_problem(
        http.get("/v2/anything").await,
        404,
        "route `GET /v2/anything`",
    )
    .await;
    assert_problem(http.get("/").await, 404, "route").await;
    let r = http
        .req(Method::DELETE, "/v1/blobs/abc")
        .send()
        .await
        .unwrap();
    assert_problem(r, 405, "`DELETE` is not allowed").await;
    let health: serde_json::Value = http.get("/v1/health").await.json().await.unwrap();
    assert_eq!(health["status"], "ok");
}

#[tokio::test]
async fn a_restarted_server_serves_what_it_stored() {
    let server = Server::start(Some(tokens())).await;
    let v = server
        .as_(MEMBER)
        .publish("acme/vision/bike", &[("a", b"kept")], &[])
        .await;
    let dir = server.stop().await;
    let server =
        Server::start_with(Some(tokens()), hoard_registry::Limits::default(), Some(dir)).await;
    // The blob → project index is rebuilt at start: a member reads, a viewer is refused.
    let r = server
        .as_(MEMBER)
        .get(&format!("/v1/blobs/{}", Digest::of(b"kept")))
        .await;
    assert_eq!(r.bytes().await.unwrap(), &b"kept"[..]);
    let r = server
        .as_(VIEWER)
        .get(&format!("/v1/blobs/{}", Digest::of(b"kept")))
        .await;
    assert_eq!(r.status(), 403);
    let got: hoard_types::Version = server
        .as_(MEMBER)
        .get("/v1/artifacts/acme/vision/bike/v0")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(got.digest, v.digest);
}

#[tokio::test]
async fn a_broken_upload_continues_where_the_registry_copy_ends() {
    let server = Server::start(Some(tokens())).await;
    let http = server.as_(MEMBER);
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 253) as u8).collect();
    let digest = Digest::of(&data);
    broken_upload(&server, Some(MEMBER), &digest, &data, 1_000_000).await;
    assert!(
        !server.blob_file(&digest).exists(),
        "not a blob until complete"
    );
    // Another caller does not see (or continue) this caller's upload.
    assert_eq!(upload_offset(&server, Some(ADMIN), &digest).await, 0);
    let r = server
        .as_(VIEWER)
        .get(&format!("/v1/blobs/{digest}/upload"))
        .await;
    assert_eq!(r.status(), 403, "a viewer may not upload");

    // At the wrong offset: 409, and where it is.
    let r = http
        .req(Method::PUT, &format!("/v1/blobs/{digest}"))
        .header("upload-offset", 1_000_001)
        .body(data[1_000_001..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    assert_eq!(r.headers()["upload-offset"], "1000000");

    // The rest, from there: the blob is whole and verified.
    let r = http
        .req(Method::PUT, &format!("/v1/blobs/{digest}"))
        .header("upload-offset", 1_000_000)
        .body(data[1_000_000..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{:?}", r.text().await);
    assert_eq!(std::fs::read(server.blob_file(&digest)).unwrap(), data);
    assert_eq!(server.tmp_files(), 0);
    assert_eq!(upload_offset(&server, Some(MEMBER), &digest).await, 0);

    // A continuation with wrong bytes: refused, and the partial is gone.
    let other: Vec<u8> = data.iter().map(|b| b ^ 0x55).collect();
    let other_digest = Digest::of(&other);
    broken_upload(&server, Some(MEMBER), &other_digest, &other, 500_000).await;
    let r = http
        .req(Method::PUT, &format!("/v1/blobs/{other_digest}"))
        .header("upload-offset", 500_000)
        .body(data[500_000..].to_vec())
        .send()
        .await
        .unwrap();
    assert_problem(r, 400, "nothing was stored").await;
    assert!(!server.blob_file(&other_digest).exists());
    assert_eq!(upload_offset(&server, Some(MEMBER), &other_digest).await, 0);
    assert_eq!(server.tmp_files(), 0);
}
