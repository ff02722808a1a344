#![expect(
    clippy::unwrap_used,
    reason = "test helpers fail the test that calls them"
)]

//! Wrong bytes from the upstream (issue 21, findings 4, 9 and 10), through a proxy that
//! damages answers: a flipped byte, a body short but complete, a body that breaks off.
//! Wrong bytes are fetched again a bounded number of times, and leave nothing behind that
//! a later fetch could pick up.

use hoard_tests::proxy::{Fault, FaultyProxy, Proxied};
use hoard_tests::{DaemonProcess, RegistryProcess, hoard_on as hoard};

/// Files of three sizes: fetched into memory, streamed, and in ranges (the daemon runs
/// with `--large-blob-mib 4 --range-mib 1`).
fn files(seed: u8) -> Vec<(&'static str, Vec<u8>)> {
    let bytes = |len: usize| -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    };
    vec![
        ("small.bin", bytes(100 << 10)),
        ("streamed.bin", bytes(3 << 20)),
        ("ranged.bin", bytes(6 << 20)),
    ]
}

struct Setup {
    tmp: tempfile::TempDir,
    _registry: RegistryProcess,
    proxy: FaultyProxy,
    daemon: DaemonProcess,
}

impl Setup {
    /// Artifacts `acme/vision/d0` … `d{n-1}`, each with its own bytes.
    fn new(n: u8) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let artifacts: Vec<_> = (0..n)
            .map(|i| {
                let files = files(i).into_iter().map(|(p, b)| (p.to_owned(), b));
                (format!("acme/vision/d{i}"), files.collect())
            })
            .collect();
        let Proxied {
            registry,
            proxy,
            daemon,
        } = Proxied::start(
            tmp.path(),
            &artifacts,
            &["--large-blob-mib", "4", "--range-mib", "1"],
        );
        Self {
            tmp,
            _registry: registry,
            proxy,
            daemon,
        }
    }

    fn get(&self, artifact: u8, root: &str) -> std::process::Output {
        let reference = format!("acme/vision/d{artifact}:v0");
        hoard(
            &self.daemon.socket,
            self.tmp.path(),
            &["get", &reference, "--root", root],
        )
    }

    /// `get` must succeed with exactly the artifact's bytes.
    fn get_right(&self, artifact: u8, root: &str) {
        let out = self.get(artifact, root);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        for (name, bytes) in files(artifact) {
            let got = std::fs::read(self.tmp.path().join(root).join(name)).unwrap();
            assert!(got == bytes, "{root}/{name} has the wrong bytes");
        }
    }
}

/// One damaged answer (each kind, each way a blob is fetched) is thrown away and asked
/// for again; the get succeeds with the right bytes.
#[test]
fn a_damaged_answer_is_fetched_again() {
    let setup = Setup::new(3);
    for (artifact, fault) in [(0, Fault::Flip), (1, Fault::Shorten), (2, Fault::BreakOff)] {
        // Once per blob: every one of the three files gets a damaged first answer (by its
        // own path: a count over all blobs could give one blob every damaged answer when
        // its retries outrun the others' first requests).
        for (_, bytes) in files(artifact) {
            let digest = hoard_types::Digest::of(&bytes);
            setup.proxy.fault(&format!("/v1/blobs/{digest}"), fault, 1);
        }
        let before = setup.proxy.asked("/v1/blobs/");
        setup.get_right(artifact, &format!("out-{artifact}"));
        let asked = setup.proxy.asked("/v1/blobs/") - before;
        assert!(
            asked > 3,
            "{fault:?}: {asked} blob requests, so nothing was asked again"
        );
    }
}

/// Damage on every answer fails the get after a few attempts, with an error that says
/// the bytes were wrong; once the upstream is clean again, the same daemon gets it right:
/// nothing of the wrong bytes was kept.
#[test]
fn wrong_bytes_leave_no_trace() {
    let setup = Setup::new(1);
    for round in 0..3 {
        setup.proxy.fault("/v1/blobs/", Fault::Flip, 1000);
        let before = setup.proxy.asked("/v1/blobs/");
        let out = setup.get(0, &format!("bad-{round}"));
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("corrupt") || err.contains("hash"), "{err}");
        // Three attempts of three blobs, the ranged one in six ranges each.
        let asked = setup.proxy.asked("/v1/blobs/") - before;
        assert!(
            asked <= 3 * (1 + 1 + 6) * 2,
            "{asked} requests: the attempts are bounded"
        );
        setup.proxy.heal();
        setup.get_right(0, &format!("good-{round}"));
        // Evict, so that the next round fetches again.
        let out = hoard(
            &setup.daemon.socket,
            setup.tmp.path(),
            &["gc", "--target", "0"],
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// A version's JSON that breaks off midway is asked for again; if it keeps breaking, the
/// error says so (the upstream answered: it is not "cannot reach").
#[test]
fn a_version_answer_that_breaks_off_is_asked_again_and_said_as_such() {
    let setup = Setup::new(2);
    setup.proxy.fault("/v1/artifacts/", Fault::BreakOff, 1);
    setup.get_right(0, "out-0");
    setup.proxy.fault("/v1/artifacts/", Fault::BreakOff, 1000);
    let out = setup.get(1, "out-1");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("broke off"), "{err}");
    assert!(!err.contains("Cannot reach"), "{err}");
}
