#![expect(
    clippy::unwrap_used,
    reason = "test helpers fail the test that calls them"
)]

//! W&B as an upstream, against the fake W&B server (`hoard_tests::fake_wandb`): cold and
//! warm gets, files shared between artifacts fetched once, `path_prefix` asking only for
//! its files' URLs, corrupt downloads, expired URLs, 429s, and the errors a user meets.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use hoard_tests::fake_wandb::FakeWandb;
use hoard_tests::{DaemonProcess, hoard_json, hoard_on};

const KEY: &str = "0123456789abcdef0123456789abcdef01234567";

struct Setup {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    daemon: DaemonProcess,
}

impl Setup {
    fn new(fake: &FakeWandb, key: &str) -> Self {
        Self::with_args(fake, key, &[])
    }

    fn with_args(fake: &FakeWandb, key: &str, args: &[&str]) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_owned();
        let upstream = format!("wandb+{}", fake.url);
        let daemon = DaemonProcess::start_env(
            &dir.join("sock"),
            &dir.join("cache"),
            &upstream,
            args,
            &[("WANDB_API_KEY", key)],
        );
        Self {
            _tmp: tmp,
            dir,
            daemon,
        }
    }

    fn get(&self, reference: &str, root: &str, extra: &[&str]) -> serde_json::Value {
        let root = self.dir.join(root);
        let mut args = vec!["get", reference, "--root", root.to_str().unwrap()];
        args.extend_from_slice(extra);
        hoard_json(&self.daemon.socket, &self.dir, &args)
    }

    fn fail(&self, args: &[&str]) -> String {
        let out = hoard_on(&self.daemon.socket, &self.dir, args);
        assert!(!out.status.success(), "{args:?} should fail");
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }
}

/// Files of a small dataset: a few images, labels, and a duplicate.
fn dataset() -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = (0..6)
        .map(|i| {
            (
                format!("images/{i:03}.png"),
                format!("image {i}").repeat(50).into_bytes(),
            )
        })
        .collect();
    files.push(("labels.csv".into(), b"id,label\n0,cat\n1,dog\n".to_vec()));
    files.push((
        "copy/labels.csv".into(),
        b"id,label\n0,cat\n1,dog\n".to_vec(),
    ));
    files.push(("empty.txt".into(), Vec::new()));
    files
}

fn add(fake: &FakeWandb, artifact: &str, files: &[(String, Vec<u8>)], aliases: &[&str]) -> u32 {
    let borrowed: Vec<(&str, &[u8])> = files
        .iter()
        .map(|(p, d)| (p.as_str(), d.as_slice()))
        .collect();
    fake.add_version(artifact, &borrowed, aliases)
}

/// `script` run by the real wandb SDK against `fake`, in `home`.
fn sdk(python: &str, fake: &FakeWandb, home: &Path, script: &str) -> std::process::Output {
    std::process::Command::new(python)
        .args(["-c", script])
        .env("WANDB_BASE_URL", &fake.url)
        .env("WANDB_API_KEY", KEY)
        .env("HOME", home)
        .env("WANDB_CACHE_DIR", home.join("cache"))
        .env("WANDB_CONFIG_DIR", home.join("config"))
        .env("WANDB_DATA_DIR", home.join("data"))
        .env("WANDB_SILENT", "true")
        .current_dir(home)
        .output()
        .unwrap()
}

fn assert_tree(root: &Path, files: &[(String, Vec<u8>)]) {
    for (path, data) in files {
        assert_eq!(&std::fs::read(root.join(path)).unwrap(), data, "{path}");
    }
}

#[test]
fn cold_then_warm_with_no_network_for_a_pinned_version() {
    let fake = FakeWandb::start(KEY);
    let files = dataset();
    add(&fake, "acme/vision/pets", &files, &["best"]);
    let s = Setup::new(&fake, KEY);

    let cold = s.get("acme/vision/pets:best", "a", &[]);
    assert_eq!(cold["version"], "v0");
    assert_tree(&s.path("a"), &files);
    // Eight distinct contents (two files share bytes), each fetched once; the empty one
    // needs no request.
    assert_eq!(fake.downloads(), 7);
    assert_eq!(cold["fetched_blobs"], 8);
    assert_eq!(fake.ops("FetchArtifactManifest"), 1);

    // Warm, by version number: no GraphQL, no download, the same inodes.
    let ops_before =
        fake.ops("ArtifactMembershipByName") + fake.ops("GetArtifactMembershipFileUrls");
    let warm = s.get("acme/vision/pets:v0", "b", &[]);
    assert_eq!(warm["fetched_blobs"], 0);
    assert_eq!(
        fake.ops("ArtifactMembershipByName") + fake.ops("GetArtifactMembershipFileUrls"),
        ops_before,
        "a pinned version needs no network"
    );
    assert_eq!(fake.downloads(), 7);
    assert_tree(&s.path("b"), &files);
    let ino = |root: &str| {
        std::fs::metadata(s.path(root).join("labels.csv"))
            .unwrap()
            .ino()
    };
    assert_eq!(ino("a"), ino("b"));

    // `ls` shows the blake3 digest of each file, `@digest` names the same version.
    let listed = hoard_json(&s.daemon.socket, &s.dir, &["ls", "acme/vision/pets:v0"]);
    assert_eq!(listed["files"], files.len());
    let digest = listed["digest"].as_str().unwrap().to_owned();
    let by_digest = s.get(&format!("acme/vision/pets@{digest}"), "c", &[]);
    assert_eq!(by_digest["version"], "v0");

    // The server gone: a pinned version is still served.
    drop(fake);
    let offline = s.get("acme/vision/pets:v0", "d", &[]);
    assert_eq!(offline["fetched_blobs"], 0);
    assert_tree(&s.path("d"), &files);
}

#[test]
fn shared_files_are_fetched_once_and_prefixes_ask_only_for_their_urls() {
    let fake = FakeWandb::start(KEY);
    let files = dataset();
    add(&fake, "acme/vision/pets", &files, &[]);
    let s = Setup::new(&fake, KEY);

    // Only `images/00…`: the URLs of those files are asked for by name, nothing else.
    let some = s.get("acme/vision/pets:v0", "p", &["--path-prefix", "images/00"]);
    assert_eq!(some["files"], 6);
    let (asked, pages) = fake.asked();
    assert_eq!(pages, 0, "no unfiltered page of URLs");
    assert!(
        asked.iter().all(|n| n.starts_with("images/00")),
        "{asked:?}"
    );
    assert_eq!(fake.downloads(), 6);
    assert!(!s.path("p/labels.csv").exists());

    // A second artifact sharing the images: only its two new files are downloaded.
    let mut other: Vec<(String, Vec<u8>)> = files[..6].to_vec();
    other.push(("extra/a.txt".into(), b"new one".to_vec()));
    other.push(("extra/b.txt".into(), b"new two".to_vec()));
    add(&fake, "acme/vision/more", &other, &[]);
    let got = s.get("acme/vision/more:v0", "m", &[]);
    assert_eq!(got["fetched_blobs"], 2);
    assert_eq!(fake.downloads(), 8, "six images before, two new files now");
    assert_tree(&s.path("m"), &other);
}

#[test]
fn corrupt_bytes_expired_urls_and_429s_are_survived() {
    let fake = FakeWandb::start(KEY);
    let files = dataset();
    add(&fake, "acme/vision/pets", &files, &[]);
    let s = Setup::new(&fake, KEY);
    fake.corrupt_once(&files[0].1);
    fake.stale_urls(1);
    fake.throttle(2);
    let got = s.get("acme/vision/pets:v0", "a", &[]);
    assert_eq!(got["fetched_blobs"], 8);
    assert_tree(&s.path("a"), &files);
    assert!(fake.expired() >= 1, "the stale URLs were refused");
    // Downloads served: seven good ones (the empty file needs none) and the corrupt one.
    assert_eq!(fake.downloads(), 8);
    let status = hoard_json(&s.daemon.socket, &s.dir, &["status"]);
    assert_eq!(status["blobs"], 8, "{status}");
    assert_eq!(status["misses"], 8, "{status}");
    assert_eq!(status["versions"], 1, "the W&B version counts: {status}");
}

#[test]
fn bad_keys_hidden_projects_and_missing_versions_are_clear_errors() {
    let fake = FakeWandb::start(KEY);
    add(&fake, "acme/vision/pets", &dataset(), &[]);
    add(&fake, "acme/secret/plans", &dataset(), &[]);
    fake.hide("acme/secret");

    let wrong = Setup::new(&fake, "not-the-key");
    let e = wrong.fail(&["get", "acme/vision/pets:v0", "--root", "x"]);
    assert!(e.contains("WANDB_API_KEY"), "{e}");

    let s = Setup::new(&fake, KEY);
    let hidden = s.fail(&["get", "acme/secret/plans:v0", "--root", "x"]);
    let missing = s.fail(&["get", "acme/vision/nothing:v0", "--root", "x"]);
    assert!(hidden.to_lowercase().contains("not found"), "{hidden}");
    assert!(missing.to_lowercase().contains("not found"), "{missing}");
    let v9 = s.fail(&["get", "acme/vision/pets:v9", "--root", "x"]);
    assert!(v9.to_lowercase().contains("not found"), "{v9}");
    // Listing a project the key cannot see, or an artifact that does not exist: not found.
    for args in [
        &["artifacts", "acme/secret"][..],
        &["versions", "acme/vision/nothing"],
    ] {
        let e = s.fail(args);
        assert!(e.to_lowercase().contains("not found"), "{args:?}: {e}");
    }
    // Errors in a 200 answer are errors, with the server's words.
    fake.graphql_error("resolver exploded");
    let e = s.fail(&["get", "acme/vision/pets:v0", "--root", "x"]);
    assert!(e.contains("resolver exploded"), "{e}");
    assert!(!s.path("x").join("labels.csv").exists());
    assert_eq!(fake.downloads(), 0);

    // W&B takes no publishes from hoard: refused up front, naming its own tools, with
    // nothing recorded or ingested.
    std::fs::write(s.path("weights.bin"), b"weights").unwrap();
    let e = s.fail(&[
        "publish",
        "acme/vision/net",
        s.path("weights.bin").to_str().unwrap(),
    ]);
    assert!(
        e.contains("takes no publishes") && e.contains("wandb"),
        "{e}"
    );
    let status = hoard_json(&s.daemon.socket, &s.dir, &["status"]);
    assert_eq!(status["pending_uploads"], serde_json::json!([]), "{status}");
    assert_eq!(status["blobs"], 0, "{status}");
}

/// The fake is faithful: the real wandb SDK (`scripts/wandb-sdk` installs it; the README's
/// test command sets `HOARD_WANDB_PYTHON`) downloads a version from it, and hoard gets the
/// same bytes.
#[test]
fn the_real_wandb_sdk_downloads_from_the_fake() {
    let python = std::env::var("HOARD_WANDB_PYTHON").expect(
        "HOARD_WANDB_PYTHON names a Python with the wandb SDK: run scripts/test, or export HOARD_WANDB_PYTHON=$(scripts/wandb-sdk)",
    );
    let fake = FakeWandb::start(KEY);
    let files = dataset();
    add(&fake, "acme/vision/pets", &files, &["best"]);
    let s = Setup::new(&fake, KEY);
    let sdk_root = s.path("sdk");
    let home = s.path("home");
    std::fs::create_dir_all(&home).unwrap();
    let script = format!(
        "import wandb\n\
         a = wandb.Api().artifact('acme/vision/pets:v0')\n\
         print(a.version, a.download({root:?}))\n",
        root = sdk_root.to_str().unwrap()
    );
    let out = sdk(&python, &fake, &home, &script);
    assert!(
        out.status.success(),
        "the wandb SDK failed against the fake:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("v0 "));
    assert_tree(&sdk_root, &files);
    assert!(fake.ops("ArtifactMembershipByName") >= 1);
    assert!(fake.ops("GetArtifactMembershipFileUrls") >= 1);

    let got = s.get("acme/vision/pets:v0", "hoard", &[]);
    assert_eq!(got["files"], files.len());
    for (path, _) in &files {
        assert_eq!(
            std::fs::read(sdk_root.join(path)).unwrap(),
            std::fs::read(s.path("hoard").join(path)).unwrap(),
            "{path}"
        );
    }
}

#[test]
fn a_pinned_wandb_version_survives_gc() {
    let fake = FakeWandb::start(KEY);
    let files = dataset();
    add(&fake, "acme/vision/pets", &files, &[]);
    let s = Setup::new(&fake, KEY);
    let pin = hoard_json(&s.daemon.socket, &s.dir, &["pin", "acme/vision/pets:v0"]);
    assert_eq!(pin["version"], "v0");
    let gc = hoard_json(&s.daemon.socket, &s.dir, &["gc", "--target", "0"]);
    assert_eq!(gc["evicted_blobs"], 0, "{gc}");
    drop(fake);
    let got = s.get("acme/vision/pets:v0", "a", &[]);
    assert_eq!(got["fetched_blobs"], 0);
    assert_tree(&s.path("a"), &files);
    // Unpinned, the blobs can go.
    hoard_json(&s.daemon.socket, &s.dir, &["unpin", "acme/vision/pets:v0"]);
    let gc = hoard_json(&s.daemon.socket, &s.dir, &["gc", "--target", "0"]);
    assert!(gc["evicted_blobs"].as_u64().unwrap() > 0, "{gc}");
}

#[test]
fn many_pages_of_urls_and_reference_entries() {
    let fake = FakeWandb::start(KEY);
    fake.page_size(3);
    let s = Setup::new(&fake, KEY);
    let local = s.path("weights.bin");
    std::fs::write(&local, b"weights kept outside W&B").unwrap();
    let mut files = dataset();
    files.push((
        "model/weights.bin".into(),
        format!("ref:file://{}", local.display()).into_bytes(),
    ));
    add(&fake, "acme/vision/pets", &files, &[]);

    let got = s.get("acme/vision/pets:v0", "a", &[]);
    assert_eq!(got["files"], files.len());
    assert_tree(&s.path("a"), &files[..files.len() - 1]);
    assert_eq!(
        std::fs::read(s.path("a/model/weights.bin")).unwrap(),
        b"weights kept outside W&B"
    );
    // Eight distinct stored files (the reference is not asked for), by name, in pages of
    // three: three queries, every file's URL found (none fetched by the fallback path).
    let (names, pages) = fake.asked();
    assert_eq!(pages, 0);
    assert_eq!(fake.ops("GetArtifactMembershipFileUrls"), 3);
    assert!(!names.iter().any(|n| n.starts_with("model/")), "{names:?}");
    assert_eq!(fake.fallbacks(), 0);
    let ls = hoard_on(&s.daemon.socket, &s.dir, &["ls", "acme/vision/pets:v0"]);
    let ls = String::from_utf8_lossy(&ls.stdout);
    assert!(ls.contains(&format!("file://{}", local.display())), "{ls}");

    // Cached, the verified bytes are served even if the referenced file changes. A cache
    // that never saw them refuses a changed file: it no longer has the logged MD5.
    std::fs::write(&local, b"WEIGHTS KEPT OUTSIDE W&B").unwrap();
    let again = s.get("acme/vision/pets:v0", "b", &["--file", "model/weights.bin"]);
    assert_eq!(again["fetched_blobs"], 0);
    let fresh = Setup::new(&fake, KEY);
    let e = fresh.fail(&[
        "get",
        "acme/vision/pets:v0",
        "--file",
        "model/weights.bin",
        "--root",
        "c",
    ]);
    assert!(e.contains("md5:"), "{e}");
    assert!(!fresh.path("c/model/weights.bin").exists());
}

#[test]
fn s3_and_gs_references_are_fetched_with_the_daemons_credentials() {
    let fake = FakeWandb::start(KEY);
    let weights = b"model weights in a bucket".repeat(40);
    fake.put_object("models/resnet/weights.bin", &weights);
    let tokenizer = b"a tokenizer in a GCS bucket".to_vec();
    fake.put_object("nlp/tok/vocab.json", &tokenizer);
    let mut files = dataset();
    files.push((
        "model/weights.bin".into(),
        b"ref:s3://models/resnet/weights.bin".to_vec(),
    ));
    files.push((
        "model/vocab.json".into(),
        b"ref:gs://nlp/tok/vocab.json".to_vec(),
    ));
    add(&fake, "acme/vision/pets", &files, &[]);

    // Without credentials: refused before anything is fetched, naming what to set.
    let bare = Setup::new(&fake, KEY);
    let e = bare.fail(&["get", "acme/vision/pets:v0", "--root", "x"]);
    assert!(e.contains("GOOGLE_OAUTH_ACCESS_TOKEN"), "{e}");
    let e = bare.fail(&[
        "get",
        "acme/vision/pets:v0",
        "--file",
        "model/weights.bin",
        "--root",
        "x",
    ]);
    assert!(e.contains("AWS_ACCESS_KEY_ID"), "{e}");
    assert_eq!(fake.downloads(), 0);

    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let daemon = DaemonProcess::start_env(
        &dir.join("sock"),
        &dir.join("cache"),
        &format!("wandb+{}", fake.url),
        &[],
        &[
            ("WANDB_API_KEY", KEY),
            ("AWS_ACCESS_KEY_ID", "AKIDFAKE"),
            ("AWS_SECRET_ACCESS_KEY", "secret"),
            ("AWS_ENDPOINT_URL", &fake.url),
            ("GOOGLE_OAUTH_ACCESS_TOKEN", "gcs-token"),
            ("STORAGE_EMULATOR_HOST", &fake.url),
        ],
    );
    let root = dir.join("a");
    // A bucket that answers 503 Slow Down at first: asked again with backoff.
    fake.fail_objects(2);
    let got = hoard_json(
        &daemon.socket,
        dir,
        &[
            "get",
            "acme/vision/pets:v0",
            "--root",
            root.to_str().unwrap(),
        ],
    );
    assert_eq!(got["files"], files.len());
    assert_eq!(
        std::fs::read(root.join("model/weights.bin")).unwrap(),
        weights
    );
    assert_eq!(fake.unsigned(), 0);
}

/// A caller's own W&B key travels with its request: the daemon asks W&B with that key
/// before handing out cached files.
#[test]
fn a_callers_key_is_checked_with_wandb_even_for_cached_files() {
    let fake = FakeWandb::start(KEY);
    let files = dataset();
    add(&fake, "acme/vision/pets", &files, &[]);
    let s = Setup::new(&fake, KEY);
    s.get("acme/vision/pets:v0", "warm", &[]);
    let as_caller = |token: &str, root: &str| {
        std::process::Command::new(hoard_tests::binary("hoard"))
            .args(["get", "acme/vision/pets:v0", "--root", root])
            .env("HOARD_SOCKET", &s.daemon.socket)
            .env("HOARD_TOKEN", token)
            .current_dir(&s.dir)
            .output()
            .unwrap()
    };
    let refused = as_caller("someone-elses-key", "refused");
    assert!(!refused.status.success());
    let e = String::from_utf8_lossy(&refused.stderr);
    assert!(e.contains("refused the credential"), "{e}");
    assert!(!s.path("refused/labels.csv").exists());
    let memberships = fake.ops("ArtifactMembershipByName");
    let allowed = as_caller(KEY, "allowed");
    assert!(
        allowed.status.success(),
        "{}",
        String::from_utf8_lossy(&allowed.stderr)
    );
    assert_tree(&s.path("allowed"), &files);
    assert_eq!(
        fake.ops("ArtifactMembershipByName"),
        memberships + 1,
        "asked once, with the caller's key"
    );
    assert_eq!(fake.downloads(), 7, "nothing downloaded again");
}

/// A large file is fetched as parallel byte ranges, then checked against its MD5 as a
/// whole; a corrupt range fails the check and the file is fetched again.
#[test]
fn large_files_come_in_parallel_ranges_and_are_checked_whole() {
    let fake = FakeWandb::start(KEY);
    let big: Vec<u8> = (0..(3 << 20) + 12_345u32)
        .map(|i| (i % 251) as u8)
        .collect();
    let files = vec![("model.bin".to_owned(), big.clone())];
    add(&fake, "acme/vision/model", &files, &[]);
    let s = Setup::with_args(&fake, KEY, &["--large-blob-mib", "1", "--range-mib", "1"]);
    fake.corrupt_once(&big);
    let got = s.get("acme/vision/model:v0", "a", &[]);
    assert_eq!(got["fetched_blobs"], 1);
    assert_eq!(std::fs::read(s.path("a/model.bin")).unwrap(), big);
    // Four ranges of 1 MiB, twice: the first attempt had a corrupt range.
    assert_eq!(fake.downloads(), 8);
}

/// `hoard get REFERENCE` into `dir/name` through a daemon started with `env` (besides the
/// W&B key, the fake as S3 and GCS, and none of the machine's cloud credentials).
fn cloud_get(
    fake: &FakeWandb,
    dir: &Path,
    name: &str,
    reference: &str,
    env: &[(&str, &str)],
) -> std::process::Output {
    let nothing = dir.join("nothing");
    let nothing = nothing.to_str().unwrap();
    // Defaults first: what the test sets comes later and wins.
    let mut all = vec![
        ("WANDB_API_KEY", KEY),
        ("STORAGE_EMULATOR_HOST", fake.url.as_str()),
        ("AWS_ENDPOINT_URL", fake.url.as_str()),
        ("GOOGLE_APPLICATION_CREDENTIALS", ""),
        ("GCE_METADATA_HOST", ""),
        ("CLOUDSDK_CONFIG", nothing),
        ("AWS_ACCESS_KEY_ID", ""),
        ("AWS_SECRET_ACCESS_KEY", ""),
        ("AWS_PROFILE", ""),
        ("AWS_REGION", ""),
        ("AWS_SHARED_CREDENTIALS_FILE", nothing),
        ("AWS_CONFIG_FILE", nothing),
        ("AWS_EC2_METADATA_SERVICE_ENDPOINT", ""),
        ("AWS_WEB_IDENTITY_TOKEN_FILE", ""),
        ("AWS_CONTAINER_CREDENTIALS_FULL_URI", ""),
        ("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", ""),
    ];
    all.extend_from_slice(env);
    let daemon = DaemonProcess::start_env(
        &dir.join(format!("{name}.sock")),
        &dir.join(format!("{name}-cache")),
        &format!("wandb+{}", fake.url),
        &[],
        &all,
    );
    let root = dir.join(name);
    hoard_on(
        &daemon.socket,
        dir,
        &["get", reference, "--root", root.to_str().unwrap()],
    )
}

fn succeeded(out: &std::process::Output) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// An RSA key pair made with `openssl`: the PKCS#8 PEM of the private key and the DER of
/// the public key.
fn rsa_key(dir: &Path, name: &str) -> (String, Vec<u8>) {
    let pem = dir.join(format!("{name}.pem"));
    let der = dir.join(format!("{name}.der"));
    for args in [
        vec![
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
        ],
        vec!["rsa", "-RSAPublicKey_out", "-outform", "DER", "-out"],
    ] {
        let mut command = std::process::Command::new("openssl");
        command.args(&args);
        if args[0] == "genpkey" {
            command.arg(&pem);
        } else {
            command.arg(&der).arg("-in").arg(&pem);
        }
        let out = command.output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    (
        std::fs::read_to_string(pem).unwrap(),
        std::fs::read(der).unwrap(),
    )
}

/// `gs://` with a service account's key file (`GOOGLE_APPLICATION_CREDENTIALS`): hoard
/// signs a JWT with the account's key and exchanges it for a token, once for all the
/// files. A key the token endpoint does not know is refused with its words and the
/// file's name. gcloud's application-default login (a refresh token) and a VM's metadata
/// server work too.
#[test]
fn gs_references_with_a_service_account_key_or_a_gcloud_login() {
    let fake = FakeWandb::start(KEY);
    let (vocab, merges) = (b"vocab".repeat(50), b"merges".repeat(70));
    fake.put_object("nlp/tok/vocab.json", &vocab);
    fake.put_object("nlp/tok/merges.txt", &merges);
    let files = vec![
        (
            "vocab.json".to_owned(),
            b"ref:gs://nlp/tok/vocab.json".to_vec(),
        ),
        (
            "merges.txt".to_owned(),
            b"ref:gs://nlp/tok/merges.txt".to_vec(),
        ),
    ];
    add(&fake, "acme/nlp/tok", &files, &[]);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let email = "hoard@acme.iam.gserviceaccount.com";
    let (key, public) = rsa_key(dir, "account");
    fake.gcs_account(email, public);
    let token_uri = format!("{}/gcs-token", fake.url);
    let credentials = |name: &str, json: serde_json::Value| {
        let file = dir.join(name);
        std::fs::write(&file, json.to_string()).unwrap();
        file.to_str().unwrap().to_owned()
    };
    let account = |key: &str| {
        serde_json::json!({
            "type": "service_account", "project_id": "acme", "private_key_id": "k1",
            "private_key": key, "client_email": email, "token_uri": token_uri,
        })
    };
    let get =
        |name: &str, env: &[(&str, &str)]| cloud_get(&fake, dir, name, "acme/nlp/tok:v0", env);

    let file = credentials("account.json", account(&key));
    let out = get("account", &[("GOOGLE_APPLICATION_CREDENTIALS", &file)]);
    succeeded(&out);
    assert_eq!(
        std::fs::read(dir.join("account/vocab.json")).unwrap(),
        vocab
    );
    assert_eq!(
        std::fs::read(dir.join("account/merges.txt")).unwrap(),
        merges
    );
    assert_eq!(fake.gcs_grants(), 1, "one token for both files");
    assert_eq!(fake.unsigned(), 0);

    let (other, _) = rsa_key(dir, "other");
    let file = credentials("other.json", account(&other));
    let out = get("other", &[("GOOGLE_APPLICATION_CREDENTIALS", &file)]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Invalid JWT Signature") && err.contains("other.json"),
        "{err}"
    );

    let gcloud = dir.join("gcloud");
    std::fs::create_dir_all(&gcloud).unwrap();
    let (client, secret, refresh) = hoard_tests::fake_wandb::GCS_REFRESH;
    let login = serde_json::json!({
        "type": "authorized_user", "client_id": client, "client_secret": secret,
        "refresh_token": refresh, "token_uri": token_uri,
    });
    credentials("gcloud/application_default_credentials.json", login);
    let out = get("login", &[("CLOUDSDK_CONFIG", gcloud.to_str().unwrap())]);
    succeeded(&out);
    assert_eq!(std::fs::read(dir.join("login/vocab.json")).unwrap(), vocab);
    assert_eq!(fake.gcs_grants(), 2);

    // A VM's own service account, from the metadata server.
    let metadata = fake.url.trim_start_matches("http://");
    let out = get("vm", &[("GCE_METADATA_HOST", metadata)]);
    succeeded(&out);
    assert_eq!(std::fs::read(dir.join("vm/merges.txt")).unwrap(), merges);
    assert_eq!(fake.gcs_grants(), 3);
}

/// The fake with the object `s3://models/net/weights.bin` (returned) and the W&B version
/// `acme/vision/net:v0` that refers to it.
fn s3_fake() -> (FakeWandb, Vec<u8>) {
    let fake = FakeWandb::start(KEY);
    let weights = b"weights in a bucket".repeat(30);
    fake.put_object("models/net/weights.bin", &weights);
    let files = vec![(
        "weights.bin".to_owned(),
        b"ref:s3://models/net/weights.bin".to_vec(),
    )];
    add(&fake, "acme/vision/net", &files, &[]);
    (fake, weights)
}

/// `s3://` with a profile of the shared files (`AWS_PROFILE`: keys in `credentials`, the
/// region in `config`), or an EC2 instance role (the metadata service, version 2, with
/// its region and session token).
#[test]
fn s3_references_with_a_profile_or_an_instance_role() {
    let (fake, weights) = s3_fake();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let get =
        |name: &str, env: &[(&str, &str)]| cloud_get(&fake, dir, name, "acme/vision/net:v0", env);

    let out = get("bare", &[]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("AWS_PROFILE"));

    let (credentials, config) = (dir.join("credentials"), dir.join("config"));
    std::fs::write(
        &credentials,
        "[default]\naws_access_key_id = AKIDOTHER\n\n[work]\naws_access_key_id = AKIDFAKE\naws_secret_access_key = secret\n",
    )
    .unwrap();
    std::fs::write(&config, "[profile work]\nregion = eu-west-1\n").unwrap();
    let out = get(
        "profile",
        &[
            ("AWS_PROFILE", "work"),
            ("AWS_SHARED_CREDENTIALS_FILE", credentials.to_str().unwrap()),
            ("AWS_CONFIG_FILE", config.to_str().unwrap()),
        ],
    );
    succeeded(&out);
    assert_eq!(
        std::fs::read(dir.join("profile/weights.bin")).unwrap(),
        weights
    );
    assert_eq!(fake.s3_signed(), [("eu-west-1".to_owned(), String::new())]);

    let out = get(
        "instance",
        &[("AWS_EC2_METADATA_SERVICE_ENDPOINT", &fake.url)],
    );
    succeeded(&out);
    assert_eq!(
        std::fs::read(dir.join("instance/weights.bin")).unwrap(),
        weights
    );
    assert_eq!(
        fake.s3_signed()[1],
        (
            "ap-south-1".to_owned(),
            hoard_tests::fake_wandb::IMDS_SESSION.to_owned()
        )
    );
    assert_eq!(fake.aws_calls("imds"), 4, "session, role, keys, region");

    assert_eq!(fake.unsigned(), 0);
}

/// `s3://` on Kubernetes: a service account's role (EKS "IRSA": STS
/// `AssumeRoleWithWebIdentity` with the token file), refused with STS's words for a
/// token it does not take; and a container credentials endpoint (EKS Pod Identity, ECS).
#[test]
fn s3_references_with_a_kubernetes_role_or_container_credentials() {
    let (fake, weights) = s3_fake();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let get =
        |name: &str, env: &[(&str, &str)]| cloud_get(&fake, dir, name, "acme/vision/net:v0", env);
    let token = dir.join("web-identity");
    std::fs::write(&token, "web-identity\n").unwrap();
    let sts = format!("{}/sts", fake.url);
    let out = get(
        "irsa",
        &[
            ("AWS_WEB_IDENTITY_TOKEN_FILE", token.to_str().unwrap()),
            ("AWS_ROLE_ARN", "arn:aws:iam::1:role/hoard"),
            ("AWS_ENDPOINT_URL_STS", &sts),
            ("AWS_REGION", "us-west-2"),
        ],
    );
    succeeded(&out);
    std::fs::write(&token, "someone else's token").unwrap();
    let out = get(
        "irsa-refused",
        &[
            ("AWS_WEB_IDENTITY_TOKEN_FILE", token.to_str().unwrap()),
            ("AWS_ROLE_ARN", "arn:aws:iam::1:role/hoard"),
            ("AWS_ENDPOINT_URL_STS", &sts),
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("403 Forbidden: Not authorized to perform sts:AssumeRoleWithWebIdentity"),
        "{err}"
    );
    let session = |s: &str| ("us-west-2".to_owned(), s.to_owned());
    assert_eq!(
        fake.s3_signed()[0],
        session(hoard_tests::fake_wandb::STS_SESSION)
    );
    let uri = format!("{}/container-credentials", fake.url);
    let out = get(
        "pod",
        &[
            ("AWS_CONTAINER_CREDENTIALS_FULL_URI", &uri),
            ("AWS_CONTAINER_AUTHORIZATION_TOKEN", "container-token"),
            ("AWS_REGION", "us-west-2"),
        ],
    );
    succeeded(&out);
    assert_eq!(
        fake.s3_signed()[1],
        session(hoard_tests::fake_wandb::CONTAINER_SESSION)
    );
    assert_eq!((fake.aws_calls("sts"), fake.aws_calls("container")), (1, 1));
    assert_eq!(std::fs::read(dir.join("pod/weights.bin")).unwrap(), weights);
    assert_eq!(fake.unsigned(), 0);
}

/// `hoard artifacts` and `hoard versions` on W&B: a project's collections of every type,
/// and a collection's versions with their aliases and what is cached. The real SDK's
/// `artifact_types`, `artifact_collections` and `artifacts` read the fake's answers the
/// same way.
#[test]
fn a_projects_artifacts_and_an_artifacts_versions_are_listed() {
    let python = std::env::var("HOARD_WANDB_PYTHON").expect(
        "HOARD_WANDB_PYTHON names a Python with the wandb SDK: run scripts/test, or export HOARD_WANDB_PYTHON=$(scripts/wandb-sdk)",
    );
    let fake = FakeWandb::start(KEY);
    add(&fake, "acme/vision/pets", &dataset(), &["best"]);
    add(&fake, "acme/vision/pets", &dataset()[..2], &[]);
    add(&fake, "acme/vision/cars", &dataset()[..1], &[]);
    let s = Setup::new(&fake, KEY);
    let home = s.path("home");
    std::fs::create_dir_all(&home).unwrap();
    let script = "import wandb\n\
         api = wandb.Api()\n\
         types = [t.name for t in api.artifact_types('acme/vision')]\n\
         names = sorted(c.name for c in api.artifact_collections('acme/vision', 'dataset'))\n\
         versions = [(a.version, sorted(a.aliases)) for a in api.artifacts('dataset', 'acme/vision/pets')]\n\
         print(types, names, versions)\n";
    let out = sdk(&python, &fake, &home, script);
    assert!(
        out.status.success(),
        "the wandb SDK failed against the fake:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "['dataset'] ['cars', 'pets'] [('v0', ['best']), ('v1', ['latest'])]"
    );

    let listed = hoard_json(&s.daemon.socket, &s.dir, &["artifacts", "acme/vision"]);
    assert_eq!(
        hoard_tests::artifact_names(&listed),
        ["cars", "pets"],
        "{listed}"
    );
    s.get("acme/vision/pets:v1", "got", &[]);
    let listed = hoard_json(&s.daemon.socket, &s.dir, &["versions", "acme/vision/pets"]);
    let versions: Vec<(String, serde_json::Value, serde_json::Value)> = listed["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["version"].as_str().unwrap().to_owned(),
                v["aliases"].clone(),
                v["cached_files"].clone(),
            )
        })
        .collect();
    assert_eq!(
        versions,
        [
            (
                "v0".to_owned(),
                serde_json::json!(["best"]),
                serde_json::Value::Null
            ),
            (
                "v1".to_owned(),
                serde_json::json!(["latest"]),
                serde_json::json!(2)
            ),
        ],
        "{listed}"
    );
    assert_eq!(listed["versions"][0]["files"], dataset().len(), "{listed}");
    assert_eq!(listed["aliases"]["best"], "v0");
}
