#![expect(
    clippy::unwrap_used,
    reason = "test helpers fail the test that calls them"
)]

//! A write through a hardlink (root ignores 0444) changes the cache's blob and every
//! directory that has it. The next get finds the blob changed, fetches it again and names
//! the files that still hold the changed bytes; `hoard verify` lists them, and
//! `hoard verify --repair` links them to the fetched blob again.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use hoard_tests::{DaemonProcess, RegistryProcess, hoard_on as hoard, import};

/// What a root job does to a file it was handed: append to it, whatever its mode says.
/// (Without root: make it writable, write, and put the mode back.)
fn append_as_a_job(file: &Path, data: &[u8]) {
    use std::io::Write as _;
    std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut f = std::fs::OpenOptions::new().append(true).open(file).unwrap();
    f.write_all(data).unwrap();
    drop(f);
    std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o444)).unwrap();
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn files_that_share_a_modified_blob_are_named_and_repaired() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let src = t.join("src");
    std::fs::create_dir_all(src.join("images")).unwrap();
    std::fs::write(src.join("labels.csv"), b"id,label\n").unwrap();
    std::fs::write(src.join("images/a.png"), b"png a").unwrap();
    import(&t.join("registry"), "acme/vision/bike", &src);
    let registry = RegistryProcess::start(&t.join("registry"), &[]);
    let daemon = DaemonProcess::start(&t.join("d.sock"), &t.join("cache"), &registry.url);
    let socket = &daemon.socket;
    for dir in ["a", "b", "gone"] {
        let out = hoard(socket, t, &["get", "acme/vision/bike:v0", "--root", dir]);
        assert!(out.status.success(), "{}", stderr(&out));
        if dir == "a" && rustix::process::geteuid().is_root() {
            // Root is told once that it can write through the links.
            assert!(
                stderr(&out).contains("root can write to them"),
                "{}",
                stderr(&out)
            );
        }
        if dir == "b" {
            assert!(!stderr(&out).contains("root can write"), "once per daemon");
        }
    }
    std::fs::remove_dir_all(t.join("gone")).unwrap();
    append_as_a_job(&t.join("a/labels.csv"), b"oops\n");
    assert_eq!(
        std::fs::read(t.join("b/labels.csv")).unwrap(),
        b"id,label\noops\n",
        "b shares a's inode: the write reached it"
    );

    // The next get finds the blob changed, fetches it again, and names both files.
    let out = hoard(
        socket,
        t,
        &["get", "acme/vision/bike:v0", "--root", "c", "--json"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    // `images/a.png` was placed before `labels.csv` was found changed; the retry finds it
    // in place. Both are new to `c`, and the fetch again is counted.
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let counts = ["placed", "unchanged", "fetched_blobs", "fetched_bytes"].map(|k| &summary[k]);
    assert_eq!(
        counts,
        [2, 0, 1, 9].map(serde_json::Value::from).each_ref(),
        "{summary}"
    );
    assert_eq!(
        std::fs::read(t.join("c/labels.csv")).unwrap(),
        b"id,label\n"
    );
    let warned = stderr(&out);
    for file in ["a/labels.csv", "b/labels.csv"] {
        assert!(
            warned.contains(&t.join(file).display().to_string()),
            "{warned}"
        );
    }
    assert!(warned.contains("hoard verify --repair"), "{warned}");

    // verify lists them (and exits non-zero); --repair links them to the fetched blob.
    let out = hoard(socket, t, &["verify", "--json"]);
    assert!(!out.status.success());
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut listed: Vec<String> = report["damaged"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            format!(
                "{}/{}",
                d["dest"].as_str().unwrap(),
                d["path"].as_str().unwrap()
            )
        })
        .collect();
    listed.sort();
    let expected: Vec<String> = ["a/labels.csv", "b/labels.csv"]
        .iter()
        .map(|f| t.join(f).display().to_string())
        .collect();
    assert_eq!(listed, expected, "{report}");
    let out = hoard(socket, t, &["verify", "--repair"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let fresh = std::fs::metadata(t.join("c/labels.csv")).unwrap().ino();
    for dir in ["a", "b"] {
        let file = t.join(dir).join("labels.csv");
        assert_eq!(std::fs::read(&file).unwrap(), b"id,label\n", "{dir}");
        assert_eq!(std::fs::metadata(&file).unwrap().ino(), fresh, "{dir}");
        assert_eq!(
            std::fs::read(t.join(dir).join("images/a.png")).unwrap(),
            b"png a"
        );
    }
    let out = hoard(socket, t, &["verify", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["damaged"], serde_json::json!([]), "{report}");
}
