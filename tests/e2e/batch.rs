#![expect(
    clippy::unwrap_used,
    reason = "test helpers fail the test that calls them"
)]

//! Many small files come in batch requests (`POST /v1/blobs/batch`, issue 20): the right
//! bytes with a request per few dozen blobs; a damaged batch costs no wrong byte; a
//! registry without the route is asked blob by blob.

use hoard_tests::hoard_on as hoard;
use hoard_tests::proxy::{Fault, Proxied};

/// Distinct small files, 100 B to 12 KiB; a few more share the first ones' bytes.
const FILES: usize = 150;
const SHARED: usize = 10;

fn files(seed: u8) -> Vec<(String, Vec<u8>)> {
    let bytes = |i: usize| -> Vec<u8> {
        (0..100 + i * 80)
            .map(|j| (j as u8).wrapping_mul(7).wrapping_add(i as u8) ^ seed)
            .collect()
    };
    let mut out: Vec<(String, Vec<u8>)> = (0..FILES)
        .map(|i| (format!("part{}/f{i:03}.bin", i % 7), bytes(i)))
        .collect();
    out.extend((0..SHARED).map(|i| (format!("copies/c{i}.bin"), bytes(i))));
    out
}

struct Setup {
    tmp: tempfile::TempDir,
    up: Proxied,
}

impl Setup {
    /// Artifacts `acme/vision/d0` … `d{n-1}`, each with its own bytes.
    fn new(n: u8) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let artifacts: Vec<_> = (0..n)
            .map(|i| (format!("acme/vision/d{i}"), files(i)))
            .collect();
        let up = Proxied::start(tmp.path(), &artifacts, &[]);
        Self { tmp, up }
    }

    /// `get` must succeed with exactly the artifact's bytes.
    fn get_right(&self, artifact: u8, root: &str) {
        let reference = format!("acme/vision/d{artifact}:v0");
        let out = hoard(
            &self.up.daemon.socket,
            self.tmp.path(),
            &["get", &reference, "--root", root],
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        for (name, bytes) in files(artifact) {
            let got = std::fs::read(self.tmp.path().join(root).join(&name)).unwrap();
            assert!(got == bytes, "{root}/{name} has the wrong bytes");
        }
    }

    fn batched(&self) -> u64 {
        self.up
            .registry
            .metric("hoard_registry_batched_blobs_total")
    }
}

#[test]
fn many_small_files_come_in_batches() {
    let setup = Setup::new(1);
    setup.get_right(0, "cold");
    let batches = setup.up.proxy.asked("/v1/blobs/batch");
    assert_eq!(setup.batched(), FILES as u64, "each blob sent once");
    assert_eq!(setup.up.registry.blob_gets(), 0, "no blob asked alone");
    assert!(
        (FILES.div_ceil(64)..=FILES / 8).contains(&batches),
        "{batches} batch requests for {FILES} blobs"
    );
    setup.get_right(0, "warm");
    assert_eq!(
        setup.up.proxy.asked("/v1/blobs/batch"),
        batches,
        "warm: none"
    );
}

/// A flipped byte, a body cut short and one that breaks off, each once in the first
/// batch answer of its own artifact: the gets succeed with the right bytes, and what the
/// damaged answer spoiled was asked for again.
#[test]
fn a_damaged_batch_costs_no_wrong_byte() {
    let setup = Setup::new(3);
    for (artifact, fault) in [(0, Fault::Flip), (1, Fault::Shorten), (2, Fault::BreakOff)] {
        setup.up.proxy.fault("/v1/blobs/batch", fault, 1);
        let sent = setup.batched() + setup.up.registry.blob_gets();
        setup.get_right(artifact, &format!("out-{artifact}"));
        let sent = setup.batched() + setup.up.registry.blob_gets() - sent;
        assert!(
            sent > FILES as u64,
            "{fault:?}: {sent} blobs sent for {FILES}, so nothing was asked again"
        );
    }
}

/// A registry that lacks the route (older than it, or a proxy that refuses it): a few
/// batch requests at most, then every blob on its own request.
#[test]
fn a_registry_without_batches_is_asked_blob_by_blob() {
    let setup = Setup::new(1);
    setup.up.proxy.fault("/v1/blobs/batch", Fault::Refuse, 1000);
    setup.get_right(0, "out");
    assert_eq!(setup.up.registry.blob_gets(), FILES as u64);
    assert_eq!(setup.batched(), 0);
    let refused = setup.up.proxy.asked("/v1/blobs/batch");
    assert!((1..=4).contains(&refused), "{refused} batch requests");
}
