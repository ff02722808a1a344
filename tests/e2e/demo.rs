//! The README's main job, `hoard demo`, on a small dataset.

use std::process::Command;

use hoard_tests::binary;

#[test]
fn the_demo_runs_cold_then_warm_then_publishes() {
    let out = Command::new(binary("hoard"))
        .args(["demo", "--files", "50", "--large", "1", "--large-mib", "1"])
        .env("HOARD_LOG", "warn")
        .output()
        .expect("hoard runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = |prefix: &str| {
        stdout
            .lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no `{prefix}` line in:\n{stdout}"))
            .to_owned()
    };
    assert!(line("cold:").contains("fetched 51 blobs"), "{stdout}");
    assert!(line("warm:").contains("fetched 0 blobs"), "{stdout}");
    assert!(line("publish:").contains("acme/demo/model:v0 (committed), 1 blobs uploaded"));
    assert!(line("publish again:").contains("acme/demo/model:v0 (committed), 0 blobs uploaded"));
}
