use std::process::Command;

use hoard_tests::binary;

/// The benchmark of docs/benchmark.md, on a tree small enough for CI: it must run, check its own
/// results (it fails if a file is not placed), and print the ratio against `cp -al`.
#[test]
fn the_materialize_benchmark_runs_and_reports_a_ratio() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(binary("hoard-bench"))
        .args([
            "materialize",
            "--files",
            "300",
            "--large",
            "2",
            "--large-mib",
            "2",
            "--runs",
            "1",
            "--dir",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        stdout.matches("ratio of medians hoard / cp -al").count(),
        2,
        "{stdout}"
    );
    assert!(stdout.contains("small: 300 files"), "{stdout}");
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "the benchmark must clean up after itself"
    );
}
