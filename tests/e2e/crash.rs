#![expect(
    clippy::unwrap_used,
    reason = "test helpers fail the test that calls them"
)]

//! kill -9 in the middle of gets (issue 21, finding 8, and a soak): after a restart, the
//! next get has the right bytes, nothing bad is in the cache, and what was downloaded
//! before the kill is not downloaded again.

use std::time::{Duration, Instant};

use hoard_tests::proxy::FaultyProxy;
use hoard_tests::{DaemonProcess, RegistryProcess, hoard_json, hoard_on as hoard, import};

/// A registry with `acme/vision/data` behind a slow proxy; daemons fetch blobs of 4 MiB
/// and more in 1 MiB ranges.
struct Setup {
    tmp: tempfile::TempDir,
    _registry: RegistryProcess,
    proxy: FaultyProxy,
    files: Vec<(String, Vec<u8>)>,
}

impl Setup {
    fn new(files: Vec<(String, Vec<u8>)>) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        for (name, bytes) in &files {
            let path = src.join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, bytes).unwrap();
        }
        import(&tmp.path().join("root"), "acme/vision/data", &src);
        let registry = RegistryProcess::start(&tmp.path().join("root"), &[]);
        let proxy = FaultyProxy::start(&registry.url);
        Self {
            tmp,
            _registry: registry,
            proxy,
            files,
        }
    }

    fn daemon(&self) -> DaemonProcess {
        DaemonProcess::start_with(
            &self.tmp.path().join("d.sock"),
            &self.tmp.path().join("cache"),
            &self.proxy.url,
            &["--large-blob-mib", "4", "--range-mib", "1"],
        )
    }

    fn get(&self, daemon: &DaemonProcess, root: &str) -> std::process::Output {
        hoard(
            &daemon.socket,
            self.tmp.path(),
            &["get", "acme/vision/data:v0", "--root", root],
        )
    }

    fn right(&self, root: &str) {
        for (name, bytes) in &self.files {
            let got = std::fs::read(self.tmp.path().join(root).join(name)).unwrap();
            assert!(&got == bytes, "{root}/{name} has the wrong bytes");
        }
    }
}

fn bytes(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(13).wrapping_add(seed))
        .collect()
}

/// Finding 8: a large blob fetched in ranges, killed midway, is resumed from the ranges
/// that had arrived: the ranges downloaded in all are about one blob's worth.
#[test]
fn a_crash_in_a_ranged_fetch_keeps_the_ranges_that_arrived() {
    let setup = Setup::new(vec![("model.bin".to_owned(), bytes(16 << 20, 1))]);
    setup.proxy.delay("/v1/blobs/", Duration::from_millis(150));
    let daemon = setup.daemon();
    let socket = daemon.socket.clone();
    let dir = setup.tmp.path().to_owned();
    let get = std::thread::spawn(move || {
        hoard(
            &socket,
            &dir,
            &["get", "acme/vision/data:v0", "--root", "first"],
        )
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    while setup.proxy.asked("/v1/blobs/") < 9 {
        assert!(Instant::now() < deadline, "the fetch never got going");
        std::thread::sleep(Duration::from_millis(10));
    }
    daemon.kill9();
    let _ = get.join();
    let before = setup.proxy.asked("/v1/blobs/");
    let daemon = setup.daemon();
    let out = setup.get(&daemon, "second");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    setup.right("second");
    let after = setup.proxy.asked("/v1/blobs/") - before;
    // 16 ranges in all; at the kill, at most 4 were in flight and are asked again.
    assert!(
        before + after <= 16 + 4 + 1,
        "{before} ranges before the kill and {after} after: arrived ranges were fetched again"
    );
}

/// A few rounds of kill -9 at random moments of a cold get of many files: each restart's
/// get has the right bytes and `verify` finds nothing bad.
#[test]
fn kill_9_at_any_moment_leaves_a_cache_that_serves_right_bytes() {
    let mut files: Vec<(String, Vec<u8>)> = (0..60)
        .map(|i| (format!("small/{i:02}.bin"), bytes(2000 + i * 300, i as u8)))
        .collect();
    files.push(("big/a.bin".to_owned(), bytes(6 << 20, 200)));
    files.push(("big/b.bin".to_owned(), bytes(5 << 20, 201)));
    let setup = Setup::new(files);
    setup.proxy.delay("/v1/blobs/", Duration::from_millis(5));
    for round in 0..5u64 {
        let daemon = setup.daemon();
        let socket = daemon.socket.clone();
        let dir = setup.tmp.path().to_owned();
        let root = format!("killed-{round}");
        let get = std::thread::spawn(move || {
            hoard(
                &socket,
                &dir,
                &["get", "acme/vision/data:v0", "--root", &root],
            )
        });
        // Somewhere between the start and the end of a cold get.
        std::thread::sleep(Duration::from_millis(30 + (round * 7919) % 400));
        daemon.kill9();
        let killed = get.join().unwrap();
        if !killed.status.success() {
            // Finding 9: the user is told the daemon stopped, not an HTTP library's words.
            let err = String::from_utf8_lossy(&killed.stderr);
            assert!(
                err.contains("stopped in the middle") || err.contains("No hoard daemon"),
                "round {round}: {err}"
            );
        }
        let daemon = setup.daemon();
        let root = format!("after-{round}");
        let out = setup.get(&daemon, &root);
        assert!(
            out.status.success(),
            "round {round}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        setup.right(&root);
        let verified = hoard_json(&daemon.socket, setup.tmp.path(), &["verify"]);
        assert_eq!(
            verified["bad"].as_array().unwrap().len(),
            0,
            "round {round}: {verified}"
        );
        // Start cold again for the next round.
        hoard_json(&daemon.socket, setup.tmp.path(), &["gc", "--target", "0"]);
        drop(daemon);
    }
}
