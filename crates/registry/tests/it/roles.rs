use hoard_types::Digest;
use hoard_types::registry::MissingResponse;
use reqwest::Method;

use crate::common::*;

const BASE: &str = "/v1/artifacts/acme/vision/bike";

async fn seeded() -> Server {
    let server = Server::start(Some(tokens())).await;
    server
        .as_(MEMBER)
        .publish("acme/vision/bike", &[("a.txt", b"secret data")], &[])
        .await;
    server
}

#[tokio::test]
async fn every_request_needs_a_valid_token() {
    let server = seeded().await;
    let r = server.http().get(&format!("{BASE}/latest")).await;
    assert_eq!(r.headers()["www-authenticate"], "Bearer");
    assert_problem(r, 401, "Authorization: Bearer").await;
    assert_problem(
        server.as_("wrong").get(&format!("{BASE}/latest")).await,
        401,
        "not valid",
    )
    .await;
    assert_problem(server.http().get("/metrics").await, 401, "Bearer").await;
    assert_eq!(server.as_(VIEWER).get("/metrics").await.status(), 200);
}

#[tokio::test]
async fn a_viewer_lists_but_cannot_download() {
    let server = seeded().await;
    let viewer = server.as_(VIEWER);
    assert_eq!(viewer.get(&format!("{BASE}/versions")).await.status(), 200);
    assert_problem(
        viewer.get(&format!("{BASE}/latest")).await,
        403,
        "view-only members cannot download artifacts",
    )
    .await;
    assert_problem(
        viewer
            .get(&format!("/v1/blobs/{}", Digest::of(b"secret data")))
            .await,
        403,
        "view-only members cannot download artifacts",
    )
    .await;
    assert_problem(
        viewer
            .commit("acme/vision/bike", &request(&[("b", b"x")], &[]))
            .await,
        403,
        "view-only members cannot publish",
    )
    .await;
    assert_eq!(viewer.put_blob(b"x").await.status(), 403);
}

#[tokio::test]
async fn a_member_downloads_and_publishes_but_does_not_move_aliases() {
    let server = seeded().await;
    let member = server.as_(MEMBER);
    assert_eq!(member.get(&format!("{BASE}/latest")).await.status(), 200);
    let r = member
        .get(&format!("/v1/blobs/{}", Digest::of(b"secret data")))
        .await;
    assert_eq!(r.bytes().await.unwrap(), &b"secret data"[..]);
    let r = member
        .req(Method::PUT, &format!("{BASE}/aliases/prod"))
        .json(&serde_json::json!({"version": "v0"}))
        .send()
        .await
        .unwrap();
    assert_problem(r, 403, "only admins can move aliases").await;

    let admin = server.as_(ADMIN);
    let r = admin
        .req(Method::PUT, &format!("{BASE}/aliases/prod"))
        .json(&serde_json::json!({"version": "v0"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        server
            .root
            .join("artifacts/acme/vision/bike/aliases/prod")
            .exists()
    );
}

#[tokio::test]
async fn no_grant_looks_like_no_artifact() {
    let server = seeded().await;
    let outsider = server.as_(OUTSIDER);
    for path in [
        format!("{BASE}/latest"),
        format!("{BASE}/versions"),
        format!("/v1/blobs/{}", Digest::of(b"secret data")),
    ] {
        let hidden = outsider.get(&path).await;
        assert_problem(hidden, 404, "Not found").await;
    }
    // The same answer as for an artifact that does not exist at all.
    let missing = server
        .as_(MEMBER)
        .get("/v1/artifacts/acme/vision/nothing/latest")
        .await;
    assert_problem(missing, 404, "Not found").await;
    assert_problem(
        outsider
            .commit("acme/vision/bike", &request(&[("b", b"x")], &[]))
            .await,
        404,
        "Not found",
    )
    .await;
}

/// Knowing a digest is not having the bytes: a commit in another project may use a blob
/// only after uploading it (which the server verifies).
#[tokio::test]
async fn a_commit_cannot_claim_blobs_it_could_not_read() {
    let server = seeded().await;
    let outsider = server.as_(OUTSIDER);
    let stolen = Digest::of(b"secret data");
    let r = outsider
        .req(Method::POST, "/v1/blobs/missing")
        .json(&serde_json::json!({"digests": [stolen]}))
        .send()
        .await
        .unwrap();
    let answer: MissingResponse = r.json().await.unwrap();
    assert_eq!(answer.missing, vec![stolen], "existence does not leak");

    let claim = request(&[("loot.txt", b"secret data")], &[]);
    let r = outsider.commit("beta/heist/loot", &claim).await;
    assert_eq!(r.status(), 409, "{}", r.text().await.unwrap());

    // With the bytes uploaded (proof of possession), the same commit works.
    assert_eq!(outsider.put_blob(b"secret data").await.status(), 200);
    let r = outsider.commit("beta/heist/loot", &claim).await;
    assert_eq!(r.status(), 201);
    let r = outsider.get(&format!("/v1/blobs/{stolen}")).await;
    assert_eq!(r.status(), 200);
}

/// A reference entry is no way around that rule: naming a stored blob's digest with a
/// `ref` is using the blob, and a commit whose reference names a digest the server does
/// not hold gives nobody access to that digest later.
#[tokio::test]
async fn a_reference_entry_cannot_claim_blobs_it_could_not_read() {
    let server = seeded().await;
    let outsider = server.as_(OUTSIDER);
    let stolen = Digest::of(b"secret data");
    let mut claim = request(&[("loot.txt", b"secret data")], &[]);
    for entry in claim.manifest.entries.values_mut() {
        entry.reference = Some("https://example.invalid/x".to_owned());
    }
    let r = outsider.commit("beta/heist/loot", &claim).await;
    assert_eq!(r.status(), 409, "{}", r.text().await.unwrap());
    assert_problem(
        outsider.get(&format!("/v1/blobs/{stolen}")).await,
        404,
        "Not found",
    )
    .await;

    // A reference to bytes the server does not hold is committed, and does not make those
    // bytes readable to the project once someone else uploads them.
    let mut pure = request(&[("later.txt", b"uploaded later by a member")], &[]);
    for entry in pure.manifest.entries.values_mut() {
        entry.reference = Some("https://example.invalid/later".to_owned());
    }
    assert_eq!(
        outsider.commit("beta/heist/later", &pure).await.status(),
        201
    );
    let member = server.as_(MEMBER);
    assert!(
        member
            .put_blob(b"uploaded later by a member")
            .await
            .status()
            .is_success()
    );
    let later = Digest::of(b"uploaded later by a member");
    assert_problem(
        outsider.get(&format!("/v1/blobs/{later}")).await,
        404,
        "Not found",
    )
    .await;
}
