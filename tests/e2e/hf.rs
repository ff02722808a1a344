#![expect(
    clippy::unwrap_used,
    reason = "test helpers fail the test that calls them"
)]

//! The Hugging Face Hub as an upstream, against the fake Hub (`hoard_tests::fake_hub`),
//! which the real `huggingface_hub` client checks: cold and warm gets, a commit answered
//! offline, files shared between repos fetched once, faults, and the errors of private,
//! gated and missing repos.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use hoard_tests::fake_hub::{FakeHub, LFS_FROM};
use hoard_tests::{DaemonProcess, hoard_json, hoard_on};

const TOKEN: &str = "hf_0123456789abcdefghijklmnopqrstuvwx";

struct Setup {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    daemon: DaemonProcess,
}

impl Setup {
    fn new(hub: &FakeHub, token: Option<&str>) -> Self {
        Self::with_args(hub, token, &[])
    }

    fn with_args(hub: &FakeHub, token: Option<&str>, args: &[&str]) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_owned();
        let home = dir.join("hf-home");
        let mut env = vec![("HF_HOME", home.to_str().unwrap().to_owned())];
        if let Some(token) = token {
            env.push(("HF_TOKEN", token.to_owned()));
        }
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let daemon = DaemonProcess::start_env(
            &dir.join("sock"),
            &dir.join("cache"),
            &format!("hf+{}", hub.url),
            args,
            &env,
        );
        Self {
            _tmp: tmp,
            dir,
            daemon,
        }
    }

    fn get(&self, reference: &str, root: &str) -> serde_json::Value {
        let root = self.dir.join(root);
        hoard_json(
            &self.daemon.socket,
            &self.dir,
            &["get", reference, "--root", root.to_str().unwrap()],
        )
    }

    /// `get REFERENCE --hf-cache=CACHE --json`, which must succeed: its summary.
    fn hf_get(&self, reference: &str, cache: &Path) -> serde_json::Value {
        hoard_json(
            &self.daemon.socket,
            &self.dir,
            &["get", reference, &format!("--hf-cache={}", cache.display())],
        )
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

/// The Python with the real `huggingface_hub` (`scripts/hf-hub` installs it; the README's
/// test command sets `HOARD_HF_PYTHON`).
fn hf_python() -> String {
    std::env::var("HOARD_HF_PYTHON").expect(
        "HOARD_HF_PYTHON names a Python with huggingface_hub: run scripts/test, or export HOARD_HF_PYTHON=$(scripts/hf-hub)",
    )
}

/// A small model: git files and LFS files, one of them in a directory.
fn model() -> Vec<(String, Vec<u8>)> {
    vec![
        ("config.json".into(), br#"{"model_type": "toy"}"#.to_vec()),
        ("README.md".into(), b"# toy model\n".to_vec()),
        (
            "model.safetensors".into(),
            (0..LFS_FROM * 5).map(|i| (i % 251) as u8).collect(),
        ),
        (
            "tokenizer/vocab.json".into(),
            (0..LFS_FROM * 2).map(|i| (i % 7) as u8 + b'a').collect(),
        ),
        ("tokenizer/empty.txt".into(), Vec::new()),
    ]
}

fn commit(hub: &FakeHub, repo: &str, branch: &str, files: &[(String, Vec<u8>)]) -> String {
    let files: Vec<(&str, &[u8])> = files
        .iter()
        .map(|(p, b)| (p.as_str(), b.as_slice()))
        .collect();
    hub.commit(repo, branch, &files)
}

fn assert_tree(root: &Path, files: &[(String, Vec<u8>)]) {
    for (path, bytes) in files {
        assert_eq!(&std::fs::read(root.join(path)).unwrap(), bytes, "{path}");
    }
}

/// The fake is faithful: the real `huggingface_hub` (`scripts/hf-hub` installs it; the
/// README's test command sets `HOARD_HF_PYTHON`) downloads a snapshot from it, and hoard
/// gets the same bytes.
#[test]
fn the_real_client_downloads_from_the_fake_and_hoard_gets_the_same_bytes() {
    let python = hf_python();
    let hub = FakeHub::start(TOKEN);
    let files = model();
    let sha = commit(&hub, "models/acme/toy", "main", &files);
    let s = Setup::new(&hub, Some(TOKEN));
    let home = s.path("client-home");
    let script = "import sys\n\
         from huggingface_hub import snapshot_download, hf_hub_download\n\
         folder = snapshot_download('acme/toy', revision='main')\n\
         one = hf_hub_download('acme/toy', 'tokenizer/vocab.json', revision='main')\n\
         print(folder)\n\
         print(one)\n";
    let out = std::process::Command::new(python)
        .args(["-c", script])
        .env("HF_ENDPOINT", &hub.url)
        .env("HF_HOME", &home)
        .env("HF_TOKEN", TOKEN)
        .env("HF_HUB_DISABLE_XET", "1")
        .env("HF_HUB_DISABLE_TELEMETRY", "1")
        .env("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        .env_remove("HF_HUB_OFFLINE")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "huggingface_hub failed against the fake:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let folder = PathBuf::from(stdout.lines().next().unwrap());
    assert!(folder.ends_with(format!("snapshots/{sha}")), "{stdout}");
    assert_tree(&folder, &files);

    let got = s.get("acme/toy:main", "hoard");
    assert_eq!(got["version"], sha.as_str(), "{got}");
    assert_tree(&s.path("hoard"), &files);
    assert_eq!(hub.cdn_tokens(), 0, "hoard sent the token to the CDN");
}

#[test]
fn cold_then_warm_then_a_commit_offline() {
    let hub = FakeHub::start(TOKEN);
    let files = model();
    let sha = commit(&hub, "models/acme/toy", "main", &files);
    let s = Setup::new(&hub, None);

    let cold = s.get("acme/toy:main", "cold");
    assert_tree(&s.path("cold"), &files);
    // `get --json` names what it materialized.
    assert_eq!(
        (
            &cold["entity"],
            &cold["project"],
            &cold["name"],
            &cold["version"]
        ),
        (
            &"models".into(),
            &"acme".into(),
            &"toy".into(),
            &sha.as_str().into()
        ),
        "{cold}"
    );
    assert_eq!(cold["fetched_blobs"], files.len() as u64, "{cold}");
    // An empty file needs no bytes from anywhere.
    let downloads = hub.downloads();
    let nonempty = files.iter().filter(|(_, b)| !b.is_empty()).count() as u64;
    assert_eq!(downloads, nonempty);

    // Warm, by branch (within alias_ttl) and by commit, and by `models/` spelled out.
    let warm = s.get("acme/toy:main", "warm");
    assert_eq!(warm["fetched_blobs"], 0, "{warm}");
    let by_commit = s.get(&format!("models/acme/toy:{sha}"), "commit");
    assert_eq!(by_commit["fetched_blobs"], 0, "{by_commit}");
    assert_tree(&s.path("commit"), &files);
    assert_eq!(hub.downloads(), downloads, "nothing downloaded again");

    // A commit is one version for good: asked of the Hub once, then answered from the
    // index, also with the Hub gone.
    let calls = hub.api_calls();
    s.get(&format!("acme/toy:{sha}"), "again");
    assert_eq!(
        hub.api_calls(),
        calls,
        "a cached commit was asked of the Hub"
    );
    drop(hub);
    let offline = s.get(&format!("acme/toy:{sha}"), "offline");
    assert_eq!(offline["version"], sha.as_str());
    assert_tree(&s.path("offline"), &files);
    // A branch falls back to its last answer, with a warning.
    let out = hoard_on(
        &s.daemon.socket,
        &s.dir,
        &[
            "get",
            "acme/toy:main",
            "--root",
            s.path("branch").to_str().unwrap(),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot be reached"));
    assert_tree(&s.path("branch"), &files);
}

#[test]
fn a_moved_branch_is_followed_and_shared_files_are_fetched_once() {
    let hub = FakeHub::start(TOKEN);
    let mut files = model();
    commit(&hub, "models/acme/toy", "main", &files);
    let s = Setup::new(&hub, None);
    s.get("acme/toy:main", "one");
    let weights = files[2].1.clone();
    assert_eq!(hub.downloads_of(&weights), 1);

    // Another repo with the same weights, and a new commit on main: only new bytes move.
    let other = vec![
        ("weights.safetensors".to_owned(), weights.clone()),
        ("config.json".to_owned(), b"{}".to_vec()),
    ];
    commit(&hub, "models/other/copy", "main", &other);
    let got = s.get("other/copy:main", "copy");
    assert_tree(&s.path("copy"), &other);
    assert_eq!(got["fetched_blobs"], 1, "{got}");
    assert_eq!(
        hub.downloads_of(&weights),
        1,
        "the shared LFS file came from the cache"
    );

    // A branch whose commit the index holds costs one small call, not a file listing.
    let calls = hub.api_calls();
    s.get("acme/toy:main", "same");
    assert_eq!(hub.api_calls(), calls + 1, "only the revision was asked");

    // The branch moves (alias_ttl is 0 here): the new commit, and only the changed file.
    files[0].1 = br#"{"model_type": "toy", "layers": 2}"#.to_vec();
    let moved = commit(&hub, "models/acme/toy", "main", &files);
    let again = s.get("acme/toy:main", "two");
    assert_eq!(again["version"], moved.as_str(), "{again}");
    assert_tree(&s.path("two"), &files);
    assert_eq!(again["fetched_blobs"], 1, "{again}");
}

#[test]
fn corrupt_and_truncated_downloads_and_429s_are_survived() {
    let hub = FakeHub::start(TOKEN);
    let files = model();
    commit(&hub, "models/acme/toy", "main", &files);
    hub.throttle(2);
    hub.corrupt_once(&files[2].1);
    hub.truncate_once(&files[0].1);
    let s = Setup::new(&hub, None);
    s.get("acme/toy:main", "out");
    assert_tree(&s.path("out"), &files);
    assert_eq!(
        hub.downloads_of(&files[2].1),
        2,
        "the corrupt LFS file was fetched again"
    );
    assert_eq!(
        hub.downloads_of(&files[0].1),
        2,
        "the truncated file was fetched again"
    );
}

#[test]
fn private_gated_and_missing_repos_are_clear_errors() {
    let hub = FakeHub::start(TOKEN);
    let files = model();
    commit(&hub, "models/acme/secret", "main", &files);
    hub.make_private("models/acme/secret");
    commit(&hub, "models/acme/gated", "main", &files);
    hub.make_gated("models/acme/gated");
    commit(&hub, "datasets/acme/pets", "main", &files[..2]);

    let anonymous = Setup::new(&hub, None);
    let e = anonymous.fail(&["get", "acme/secret:main", "--root", "x"]);
    assert!(e.contains("acme/secret") && e.contains("HF_TOKEN"), "{e}");
    let e = anonymous.fail(&["get", "acme/gated:main", "--root", "x"]);
    assert!(e.contains("gated") && e.contains("accept"), "{e}");
    let e = anonymous.fail(&["get", "acme/nothing:main", "--root", "x"]);
    assert!(
        e.to_lowercase().contains("not found") && e.contains("acme/nothing"),
        "{e}"
    );
    let e = anonymous.fail(&["get", "acme/gated:no-such-branch", "--root", "x"]);
    assert!(e.contains("no such revision"), "{e}");
    let e = anonymous.fail(&["get", "spaces/acme/app:main", "--root", "x"]);
    assert!(e.contains("datasets/ORG/NAME"), "{e}");
    let e = anonymous.fail(&["get", "acme/gated:v3", "--root", "x"]);
    assert!(e.contains("no numbers"), "{e}");
    assert!(!anonymous.path("x").join("config.json").exists());
    assert_eq!(hub.downloads(), 0);

    // A dataset, by its entity.
    let data = anonymous.get("datasets/acme/pets:main", "pets");
    assert_eq!(data["files"], 2, "{data}");
    assert_tree(&anonymous.path("pets"), &files[..2]);

    let member = Setup::new(&hub, Some(TOKEN));
    member.get("acme/secret:main", "secret");
    assert_tree(&member.path("secret"), &files);
    member.get("acme/gated:main", "gated");
    assert_tree(&member.path("gated"), &files);
    assert_eq!(hub.cdn_tokens(), 0, "the token went to the CDN");
}

/// A tree listing long enough to be paged is read to its end.
#[test]
fn many_pages_of_files() {
    let hub = FakeHub::start(TOKEN);
    hub.page_size(7);
    let files: Vec<(String, Vec<u8>)> = (0..40)
        .map(|i| {
            (
                format!("shards/{i:02}.txt"),
                format!("shard {i}").into_bytes(),
            )
        })
        .collect();
    commit(&hub, "models/acme/many", "main", &files);
    let s = Setup::new(&hub, None);
    let got = s.get("acme/many:main", "many");
    assert_eq!(got["files"], 40, "{got}");
    assert_tree(&s.path("many"), &files);
}

/// Hostile or inconsistent file lists are refused whole, before anything is written.
#[test]
fn hostile_tree_listings_are_refused() {
    let sha = "0".repeat(40);
    for (item, needle) in [
        (
            serde_json::json!({"type": "file", "path": "../escape.txt", "size": 1, "oid": sha}),
            "escape",
        ),
        (
            serde_json::json!({"type": "file", "path": "/etc/passwd", "size": 1, "oid": sha}),
            "passwd",
        ),
        (
            serde_json::json!({"type": "file", "path": "config.json", "size": 1, "oid": sha}),
            "twice",
        ),
        (
            serde_json::json!({"type": "file", "path": "config.json/x", "size": 1, "oid": sha}),
            "directory",
        ),
        (
            serde_json::json!({"type": "file", "path": "w.bin", "size": 5, "lfs": {"oid": "ab", "size": 5}}),
            "hex",
        ),
        (
            serde_json::json!({"type": "file", "path": "w.bin", "size": 5, "lfs": {"oid": "0".repeat(64), "size": 6}}),
            "two sizes",
        ),
    ] {
        let hub = FakeHub::start(TOKEN);
        commit(&hub, "models/acme/toy", "main", &model());
        hub.add_tree_item(item.clone());
        let s = Setup::new(&hub, None);
        let e = s.fail(&["get", "acme/toy:main", "--root", "out"]);
        assert!(e.contains(needle), "{item}: {e}");
        assert!(!s.path("out").exists(), "{item}: something was written");
        assert!(!s.dir.parent().unwrap().join("escape.txt").exists());
        assert_eq!(hub.downloads(), 0, "{item}");
    }
}

/// A large LFS file comes in parallel ranges from the CDN and is checked whole against its
/// SHA-256; a CDN URL that expired is asked of the Hub again.
#[test]
fn large_files_come_in_ranges_and_expired_cdn_urls_are_renewed() {
    let hub = FakeHub::start(TOKEN);
    let big: Vec<u8> = (0..(3 << 20) + 12_345u32)
        .map(|i| (i % 251) as u8)
        .collect();
    let files = vec![("model.safetensors".to_owned(), big.clone())];
    commit(&hub, "models/acme/big", "main", &files);
    let s = Setup::with_args(
        &hub,
        Some(TOKEN),
        &["--large-blob-mib", "1", "--range-mib", "1"],
    );
    hub.corrupt_once(&big);
    let got = s.get("acme/big:main", "a");
    assert_eq!(got["fetched_blobs"], 1, "{got}");
    assert_tree(&s.path("a"), &files);
    // Four ranges of 1 MiB, twice: the assembled file did not match its SHA-256 at first.
    assert_eq!(hub.downloads_of(&big), 8);
    assert_eq!(hub.cdn_tokens(), 0);

    // A CDN URL that has expired already is asked of the Hub again (one stale URL: two
    // for two files fetched at once could both go to the same file, which renews once).
    let more = vec![
        ("a.bin".to_owned(), vec![7u8; LFS_FROM * 3]),
        ("b.bin".to_owned(), vec![9u8; LFS_FROM * 4]),
    ];
    commit(&hub, "models/acme/more", "main", &more);
    hub.stale_urls(1);
    s.get("acme/more:main", "b");
    assert_tree(&s.path("b"), &more);
}

/// `get --hf-cache`: hoard fills the HF cache layout with hardlinks of its blobs, and the
/// real `huggingface_hub` finds every file there: offline with no request, online with no
/// file downloaded. A second cache shares the same inodes.
#[test]
fn the_hf_cache_filled_by_hoard_serves_the_real_client_with_no_download() {
    let python = hf_python();
    let hub = FakeHub::start(TOKEN);
    let files = model();
    let sha = commit(&hub, "models/acme/toy", "main", &files);
    let s = Setup::new(&hub, None);
    let cache = s.path("hf/hub");
    let got = s.hf_get("acme/toy:main", &cache);
    let folder = PathBuf::from(got["dest"].as_str().unwrap());
    assert_eq!(
        folder,
        cache.join(format!("models--acme--toy/snapshots/{sha}"))
    );
    assert_tree(&folder, &files);
    let repo = cache.join("models--acme--toy");
    assert_eq!(
        std::fs::read_to_string(repo.join("refs/main")).unwrap(),
        sha
    );
    let link = std::fs::read_link(folder.join("tokenizer/vocab.json")).unwrap();
    assert!(link.starts_with("../../../blobs/"), "{}", link.display());
    assert!(repo.join(format!("trees/{sha}.json")).is_file());
    let downloads = hub.downloads();
    let listings = hub.tree_calls();

    let home = s.path("client-home");
    let client =
        |offline: bool, script: &str| run_client(&python, &hub, &cache, &home, offline, script);
    let script = "from huggingface_hub import snapshot_download, hf_hub_download\n\
                  hf_hub_download('acme/toy', 'tokenizer/vocab.json')\n\
                  print(snapshot_download('acme/toy'))\n";
    let calls = hub.api_calls();
    assert_eq!(PathBuf::from(client(true, script)), folder);
    assert_eq!(hub.api_calls(), calls, "offline, the client asked the Hub");
    assert_eq!(PathBuf::from(client(false, script)), folder);
    assert!(
        hub.api_calls() > calls,
        "online, the client did not ask the Hub at all"
    );
    assert_eq!(
        hub.downloads(),
        downloads,
        "online, the client downloaded a file again"
    );
    assert_eq!(
        hub.tree_calls(),
        listings,
        "online, the client listed the commit's files: it did not read the tree hoard wrote"
    );

    // Another user's (or job's) cache: the same inodes, nothing fetched.
    let second = s.path("other/hub");
    let summary = s.hf_get(&format!("acme/toy:{sha}"), &second);
    assert_eq!(summary["fetched_blobs"], 0, "{summary}");
    let inode = |root: &Path| {
        std::fs::metadata(root.join(format!(
            "models--acme--toy/snapshots/{sha}/model.safetensors"
        )))
        .unwrap()
        .ino()
    };
    assert_eq!(inode(&cache), inode(&second));
    assert!(
        !second.join("models--acme--toy/refs").join("main").exists(),
        "a commit writes no ref"
    );
}

/// A pull request's revision (`refs/pr/N`), as `hf download --revision refs/pr/1` takes
/// it: fetched, and written to the HF cache where the real client looks for it
/// (`refs/refs/pr/1`), offline and online with no download.
#[test]
fn a_pull_request_revision_is_fetched_and_cached_as_huggingface_hub_does() {
    let python = hf_python();
    let hub = FakeHub::start(TOKEN);
    commit(&hub, "models/acme/toy", "main", &model());
    let proposed = vec![("config.json".to_owned(), b"{\"proposed\": true}".to_vec())];
    let sha = commit(&hub, "models/acme/toy", "refs/pr/1", &proposed);
    let s = Setup::new(&hub, None);
    let got = s.get("acme/toy:refs/pr/1", "pr");
    assert_eq!(got["version"], sha.as_str(), "{got}");
    assert_tree(&s.path("pr"), &proposed);

    let cache = s.path("hf/hub");
    let got = s.hf_get("acme/toy:refs/pr/1", &cache);
    let repo = cache.join("models--acme--toy");
    assert_eq!(
        std::fs::read_to_string(repo.join("refs/refs/pr/1")).unwrap(),
        sha
    );
    assert_eq!(
        PathBuf::from(got["dest"].as_str().unwrap()),
        repo.join("snapshots").join(&sha)
    );
    let downloads = hub.downloads();
    let home = s.path("client-home");
    let script = "from huggingface_hub import snapshot_download\n\
                  print(snapshot_download('acme/toy', revision='refs/pr/1'))\n";
    for offline in [true, false] {
        let folder = run_client(&python, &hub, &cache, &home, offline, script);
        assert_eq!(PathBuf::from(folder), repo.join("snapshots").join(&sha));
    }
    assert_eq!(
        hub.downloads(),
        downloads,
        "the client downloaded a file again"
    );
}

/// A repo without an owner (`gpt2`), as `from_pretrained("gpt2")` still names it: the
/// Hub answers it with a redirect to the organization that has it now, which hoard follows,
/// and the HF cache is filled as `models--gpt2`, where the real client looks.
#[test]
fn a_repo_without_an_owner_is_followed_to_its_organization() {
    let python = hf_python();
    let hub = FakeHub::start(TOKEN);
    let files = model();
    let sha = commit(&hub, "models/openai-community/gpt2", "main", &files);
    hub.move_repo("models/gpt2", "models/openai-community/gpt2");
    let s = Setup::new(&hub, None);
    let home = s.path("client-home");
    // The real client downloads `gpt2` through the fake's redirects.
    let own = s.path("own/hub");
    let script = "from huggingface_hub import snapshot_download\n\
                  print(snapshot_download('gpt2'))\n";
    let theirs = run_client(&python, &hub, &own, &home, false, script);
    assert_tree(Path::new(&theirs), &files);

    let got = s.get("gpt2:main", "plain");
    assert_eq!(got["version"], sha.as_str(), "{got}");
    assert_tree(&s.path("plain"), &files);
    let cache = s.path("hf/hub");
    let got = s.hf_get("gpt2", &cache);
    let folder = cache.join(format!("models--gpt2/snapshots/{sha}"));
    assert_eq!(PathBuf::from(got["dest"].as_str().unwrap()), folder);
    let downloads = hub.downloads();
    for offline in [true, false] {
        let found = run_client(&python, &hub, &cache, &home, offline, script);
        assert_eq!(PathBuf::from(found), folder, "offline: {offline}");
    }
    assert_eq!(
        hub.downloads(),
        downloads,
        "the client downloaded a file again"
    );
}

/// `hoard artifacts` and `hoard versions` on the Hub: an owner's repos, and a repo's
/// branches and tags by the commit each names, with how much of each is cached. The real
/// client's `list_models` and `list_repo_refs` read the fake's answers the same way.
#[test]
fn an_owners_repos_and_a_repos_refs_are_listed() {
    let python = hf_python();
    let hub = FakeHub::start(TOKEN);
    let main = commit(&hub, "models/acme/toy", "main", &model());
    let small = vec![("a.txt".to_owned(), b"a".to_vec())];
    let tagged = commit(&hub, "models/acme/toy", "v1.0", &small);
    commit(&hub, "models/acme/zoo", "main", &small);
    commit(&hub, "models/other/elsewhere", "main", &small);
    let s = Setup::new(&hub, None);
    let script = "from huggingface_hub import HfApi\n\
                  api = HfApi()\n\
                  ids = sorted(m.id for m in api.list_models(author='acme'))\n\
                  refs = sorted((b.name, b.target_commit) for b in api.list_repo_refs('acme/toy').branches)\n\
                  print(ids, refs)\n";
    let seen = run_client(&python, &hub, &s.path("hf"), &s.path("home"), false, script);
    assert_eq!(
        seen,
        format!("['acme/toy', 'acme/zoo'] [('main', '{main}'), ('v1.0', '{tagged}')]")
    );

    let listed = hoard_json(&s.daemon.socket, &s.dir, &["artifacts", "acme"]);
    assert_eq!(
        hoard_tests::artifact_names(&listed),
        ["toy", "zoo"],
        "{listed}"
    );
    s.get("acme/toy:main", "got");
    let listed = hoard_json(&s.daemon.socket, &s.dir, &["versions", "acme/toy"]);
    let versions = listed["versions"].as_array().unwrap();
    let of = |commit: &str| versions.iter().find(|v| v["version"] == commit).unwrap();
    assert_eq!(
        of(&main)["aliases"],
        serde_json::json!(["main"]),
        "{listed}"
    );
    assert_eq!(of(&main)["cached_files"], model().len(), "{listed}");
    assert_eq!(of(&main)["files"], model().len(), "{listed}");
    assert_eq!(
        of(&tagged)["aliases"],
        serde_json::json!(["v1.0"]),
        "{listed}"
    );
    assert!(of(&tagged)["cached_files"].is_null(), "{listed}");
    assert_eq!(listed["aliases"]["main"], main.as_str());
    let err = s.fail(&["artifacts", "nobody"]);
    assert!(err.contains("no project `models/nobody`"), "{err}");
}

/// Runs `script` with the real `huggingface_hub` on the HF cache `cache` (offline: with
/// `HF_HUB_OFFLINE=1`); returns the last line it printed.
fn run_client(
    python: &str,
    hub: &FakeHub,
    cache: &Path,
    home: &Path,
    offline: bool,
    script: &str,
) -> String {
    let mut command = std::process::Command::new(python);
    command
        .args(["-c", script])
        .env("HF_ENDPOINT", &hub.url)
        .env("HF_HUB_CACHE", cache)
        .env("HF_HOME", home)
        .env("HF_HUB_DISABLE_XET", "1")
        .env("HF_HUB_DISABLE_TELEMETRY", "1")
        .env("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        .env("TRANSFORMERS_VERBOSITY", "error")
        .env_remove("HF_TOKEN");
    if offline {
        command.env("HF_HUB_OFFLINE", "1");
    }
    let out = command.output().unwrap();
    assert!(
        out.status.success(),
        "huggingface_hub (offline: {offline}):\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .to_owned()
}

/// What is already in an HF cache stays: `huggingface_hub`'s own blob, and a symlink
/// planted where hoard would write, which hoard never follows.
#[test]
fn an_hf_cache_keeps_what_is_there_and_follows_no_planted_symlink() {
    let hub = FakeHub::start(TOKEN);
    let files = model();
    let sha = commit(&hub, "models/acme/toy", "main", &files);
    let s = Setup::new(&hub, None);
    let cache = s.path("hf");
    let repo = cache.join("models--acme--toy");
    std::fs::create_dir_all(repo.join("blobs")).unwrap();
    std::fs::create_dir_all(repo.join(format!("snapshots/{sha}"))).unwrap();
    // huggingface_hub's own copy of README.md (its etag is the git blob id).
    let readme_etag = hoard_tests::fake_hub::git_sha1_hex(&files[1].1);
    std::fs::write(repo.join("blobs").join(&readme_etag), &files[1].1).unwrap();
    let theirs = std::fs::metadata(repo.join("blobs").join(&readme_etag)).unwrap();
    // A symlink planted at config.json's place, pointing outside.
    let outside = s.path("outside.txt");
    std::fs::write(&outside, b"not yours").unwrap();
    std::os::unix::fs::symlink(&outside, repo.join(format!("snapshots/{sha}/config.json")))
        .unwrap();

    let summary = s.hf_get("acme/toy:main", &cache);
    assert_eq!(summary["unchanged"], 2, "{summary}");
    assert_eq!(std::fs::read(&outside).unwrap(), b"not yours");
    let now = std::fs::metadata(repo.join("blobs").join(&readme_etag)).unwrap();
    assert_eq!(
        now.ino(),
        theirs.ino(),
        "huggingface_hub's blob was replaced"
    );
    assert_eq!(
        std::fs::read_link(repo.join(format!("snapshots/{sha}/config.json"))).unwrap(),
        outside
    );
    assert_eq!(
        std::fs::read(repo.join(format!("snapshots/{sha}/tokenizer/vocab.json"))).unwrap(),
        files[3].1
    );

    // `--hf-cache` alone: where huggingface_hub looks (`HF_HUB_CACHE` here).
    let default = s.path("default-hub");
    let out = std::process::Command::new(hoard_tests::binary("hoard"))
        .args(["get", "acme/toy:main", "--hf-cache"])
        .env("HOARD_SOCKET", &s.daemon.socket)
        .env("HF_HUB_CACHE", &default)
        .current_dir(&s.dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        default
            .join(format!("models--acme--toy/snapshots/{sha}"))
            .display()
            .to_string()
    );

    // Not a Hub upstream, or a bad path: refused.
    let e = s.fail(&["get", "acme/toy:main", "--hf-cache=x", "--root", "y"]);
    assert!(e.contains("cannot be used with"), "{e}");
}

/// The Python client's `hoard.hf.snapshot_download` (`huggingface_hub`'s signature) fills the
/// HF cache through the daemon; patterns select files; the real client then loads offline.
#[test]
fn the_python_clients_snapshot_download_fills_the_hf_cache() {
    let python = hf_python();
    let hub = FakeHub::start(TOKEN);
    let files = model();
    let sha = commit(&hub, "models/acme/toy", "main", &files);
    let s = Setup::new(&hub, None);
    let (all, some) = (s.path("all/hub"), s.path("some/hub"));
    let script = format!(
        "from hoard import hf\n\
         print(hf.snapshot_download('acme/toy', revision='main', cache_dir={all:?}))\n\
         print(hf.snapshot_download('acme/toy', cache_dir={some:?}, allow_patterns=['tokenizer/*'], ignore_patterns='*.txt'))\n",
        all = all.to_str().unwrap(),
        some = some.to_str().unwrap()
    );
    let client = hoard_tests::repo("clients/python");
    let out = std::process::Command::new(&python)
        .args(["-c", &script])
        .env("PYTHONPATH", &client)
        .env("HOARD_SOCKET", &s.daemon.socket)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let printed: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        printed[0],
        all.join(format!("models--acme--toy/snapshots/{sha}"))
            .to_str()
            .unwrap()
    );
    assert_tree(Path::new(printed[0]), &files);
    let folder = Path::new(printed[1]);
    assert_eq!(
        std::fs::read(folder.join("tokenizer/vocab.json")).unwrap(),
        files[3].1
    );
    assert!(!folder.join("config.json").exists(), "not asked for");
    assert!(!folder.join("tokenizer/empty.txt").exists(), "ignored");
    assert_eq!(
        std::fs::read_to_string(some.join("models--acme--toy/refs/main")).unwrap(),
        sha
    );
    let home = s.path("client-home");
    let loaded = run_client(
        &python,
        &hub,
        &all,
        &home,
        true,
        "from huggingface_hub import snapshot_download\nprint(snapshot_download('acme/toy'))\n",
    );
    assert_eq!(loaded, printed[0]);
}

/// A caller's own token (`HOARD_TOKEN`) is confirmed with the Hub before cached files of a
/// gated or private repo are handed out; a public repo needs no confirmation.
#[test]
fn a_callers_token_is_confirmed_for_gated_repos_only() {
    let hub = FakeHub::start(TOKEN);
    let files = model();
    commit(&hub, "models/acme/open", "main", &files);
    let gated_sha = commit(&hub, "models/acme/gated", "main", &files);
    hub.make_gated("models/acme/gated");
    let s = Setup::new(&hub, Some(TOKEN));
    s.get("acme/open:main", "warm-open");
    s.get(&format!("acme/gated:{gated_sha}"), "warm-gated");
    let as_caller = |token: &str, reference: &str, root: &str| {
        std::process::Command::new(hoard_tests::binary("hoard"))
            .args(["get", reference, "--root", root])
            .env("HOARD_SOCKET", &s.daemon.socket)
            .env("HOARD_TOKEN", token)
            .env("HOARD_LOG", "warn")
            .current_dir(&s.dir)
            .output()
            .unwrap()
    };
    let calls = hub.api_calls();
    let open = as_caller("hf_someone_else", "acme/open:main", "open");
    assert!(
        open.status.success(),
        "{}",
        String::from_utf8_lossy(&open.stderr)
    );
    assert_tree(&s.path("open"), &files);
    assert_eq!(
        hub.api_calls(),
        calls + 1,
        "the public repo's branch was asked for its commit, and nothing confirmed"
    );

    let gated = format!("acme/gated:{gated_sha}");
    let calls_gated = hub.api_calls();
    let refused = as_caller("hf_someone_else", &gated, "refused");
    assert!(!refused.status.success());
    assert!(!s.path("refused/config.json").exists());
    assert!(
        hub.api_calls() > calls_gated,
        "the gated repo was not confirmed"
    );
    let allowed = as_caller(TOKEN, &gated, "allowed");
    assert!(
        allowed.status.success(),
        "{}",
        String::from_utf8_lossy(&allowed.stderr)
    );
    assert_tree(&s.path("allowed"), &files);
}

/// `transformers` (config-only, no torch) loads a model's config from the HF cache hoard
/// filled: offline with no request, online with no file downloaded.
#[test]
fn transformers_loads_from_the_hf_cache_hoard_filled() {
    let python = hf_python();
    let hub = FakeHub::start(TOKEN);
    let config = br#"{"model_type": "bert", "hidden_size": 64, "num_hidden_layers": 2,
        "num_attention_heads": 2, "intermediate_size": 128, "vocab_size": 100}"#;
    commit(
        &hub,
        "models/acme/tiny",
        "main",
        &[("config.json".to_owned(), config.to_vec())],
    );
    let s = Setup::new(&hub, None);
    let cache = s.path("hf/hub");
    s.hf_get("acme/tiny:main", &cache);
    let downloads = hub.downloads();
    let script = "from transformers import AutoConfig\n\
                  config = AutoConfig.from_pretrained('acme/tiny')\n\
                  print(config.model_type, config.hidden_size)\n";
    let home = s.path("client-home");
    let calls = hub.api_calls();
    assert_eq!(
        run_client(&python, &hub, &cache, &home, true, script),
        "bert 64"
    );
    assert_eq!(
        hub.api_calls(),
        calls,
        "offline, transformers asked the Hub"
    );
    assert_eq!(
        run_client(&python, &hub, &cache, &home, false, script),
        "bert 64"
    );
    assert_eq!(
        hub.downloads(),
        downloads,
        "transformers downloaded the config again"
    );
}
