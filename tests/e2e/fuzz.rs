#![expect(
    clippy::unwrap_used,
    reason = "test helpers fail the test that calls them"
)]

//! Random socket requests and hostile manifests against a real daemon: every request gets
//! an answer, the daemon stays up, and nothing outside the destinations changes.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use hoard_tests::{DaemonProcess, import};

/// A small deterministic generator (xorshift64*): the same cases every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[usize::try_from(self.next() % items.len() as u64).unwrap()]
    }
}

const REFS: &[&str] = &[
    "acme/vision/bike",
    "acme/vision/bike:v0",
    "acme/vision/bike:latest",
    "acme/vision/hostile:v0",
    "acme/vision/bike@0000000000000000000000000000000000000000000000000000000000000000",
    "../../etc/passwd",
    "acme/vision/bike:v99999999999",
    "a/b/c/d",
    "",
    "acme/vision/bi\u{0}ke",
    "acme/vision/ビ",
];

const PATHS: &[&str] = &[
    "images/",
    "images",
    "../",
    "/etc",
    "labels.csv",
    "a\u{0}b",
    "images/../../x",
    "",
    "./labels.csv",
];

/// Every file under `dir` with its bytes (a snapshot to compare).
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let kind = entry.file_type().unwrap();
            if kind.is_dir() {
                stack.push(entry.path());
            } else if kind.is_file() {
                out.push((entry.path(), std::fs::read(entry.path()).unwrap()));
            } else {
                out.push((entry.path(), Vec::new()));
            }
        }
    }
    out.sort();
    out
}

/// A version whose manifest is hostile, written straight into a `dir://` root (its
/// digest is wrong too: the daemon must refuse it either way).
fn hostile_version(root: &Path) {
    let dir = root.join("artifacts/acme/vision/hostile/versions");
    std::fs::create_dir_all(&dir).unwrap();
    let version = serde_json::json!({
        "entity": "acme", "project": "vision", "name": "hostile", "version": "v0",
        "digest": "11".repeat(32), "aliases": [], "metadata": {},
        "manifest": {"version": 1, "entries": {
            "../../outside/pwned": {"digest": "22".repeat(32), "size": 3},
            "/etc/evil": {"digest": "22".repeat(32), "size": 3},
            "ok.txt": {"digest": "22".repeat(32), "size": 3}
        }}
    });
    std::fs::write(dir.join("v0.json"), serde_json::to_vec(&version).unwrap()).unwrap();
}

/// A request body: well-formed with hostile values, or malformed.
fn random_body(rng: &mut Rng, dests: &Path) -> String {
    let dest = dests.join(*rng.pick(&["a", "b", "a/sub", "c"]));
    let reference = if rng.next().is_multiple_of(2) {
        *rng.pick(&["acme/vision/bike", "acme/vision/bike:v0"])
    } else {
        *rng.pick(REFS)
    };
    match rng.next() % 6 {
        // Well-formed but hostile values.
        0..=2 => serde_json::json!({
            "reference": reference,
            "dest": dest.display().to_string(),
            "path_prefix": rng.pick(PATHS),
            "mode": rng.pick(&["auto", "copy", "symlink", "hardlink", "auto", "teleport"]),
        })
        .to_string(),
        3 => serde_json::json!({
            "reference": reference,
            "dest": dest.display().to_string(),
            "file": rng.pick(PATHS),
        })
        .to_string(),
        // Malformed JSON and garbage.
        4 => {
            let len = usize::try_from(rng.next() % 64).unwrap();
            (0..len)
                .map(|_| char::from(u8::try_from(rng.next() % 95 + 32).unwrap()))
                .collect()
        }
        _ => format!("{{\"reference\": {}, \"dest\": 7}}", rng.next()),
    }
}

#[test]
fn random_requests_are_all_answered_and_nothing_outside_changes() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    // The upstream: a dir:// root with a real version and a hostile one.
    let src = t.join("src");
    std::fs::create_dir_all(src.join("images")).unwrap();
    std::fs::write(src.join("images/a.png"), b"a").unwrap();
    std::fs::write(src.join("labels.csv"), b"l").unwrap();
    let root = t.join("up");
    import(&root, "acme/vision/bike", &src);
    hostile_version(&root);
    // Something outside that a request might try to reach, and a symlink to it.
    let outside = t.join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("precious"), b"keep").unwrap();
    // Symlinks planted inside destinations: where the version has a directory (`images`)
    // and a file (`labels.csv`). Neither may lead a write outside.
    let dests = t.join("dests");
    for d in ["a", "b"] {
        std::fs::create_dir_all(dests.join(d)).unwrap();
    }
    std::os::unix::fs::symlink(&outside, dests.join("a/images")).unwrap();
    std::os::unix::fs::symlink(outside.join("precious"), dests.join("b/labels.csv")).unwrap();
    let daemon = DaemonProcess::start(
        &t.join("d.sock"),
        &t.join("cache"),
        &format!("dir://{}", root.display()),
    );
    let before_outside = snapshot(&outside);
    let before_src = snapshot(&src);

    // Mostly the calls that write; the others with bodies that are not theirs.
    let calls = [
        "/v1/materialize",
        "/v1/materialize",
        "/v1/materialize",
        "/v1/file",
        "/v1/prefetch",
        "/v1/resolve",
        "/v1/pins",
        "/v1/gc",
    ];
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut done = 0;
    for case in 0..300 {
        let call = *rng.pick(&calls);
        let body = random_body(&mut rng, &dests);
        let mut stream = std::os::unix::net::UnixStream::connect(&daemon.socket).unwrap();
        stream
            .set_read_timeout(Some(std::time::Duration::from_secs(30)))
            .unwrap();
        write!(
            stream,
            "POST {call} HTTP/1.1\r\nHost: hoard\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        assert!(
            answer.starts_with("HTTP/1.1 "),
            "case {case}: {call} {body}: no answer"
        );
        assert!(
            !answer.starts_with("HTTP/1.1 500"),
            "case {case}: {call} {body}: {answer}"
        );
        if answer.starts_with("HTTP/1.1 200") && !answer.contains("\"event\":\"error\"") {
            done += 1;
        }
    }
    assert!(
        done >= 15,
        "only {done} requests succeeded: the cases are too hostile to test much"
    );
    assert!(
        daemon
            .get("/v1/health")
            .unwrap()
            .starts_with("HTTP/1.1 200")
    );
    assert_eq!(
        snapshot(&outside),
        before_outside,
        "nothing outside changed"
    );
    assert_eq!(snapshot(&src), before_src);
    // The hostile manifest wrote nothing anywhere.
    let everything = snapshot(t);
    assert!(
        !everything
            .iter()
            .any(|(p, _)| p.ends_with("pwned") || p.ends_with("evil")),
        "{everything:?}"
    );
}
