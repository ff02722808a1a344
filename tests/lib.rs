//! Helpers of the end-to-end tests, which run the real binaries of the profile under test.

use std::path::PathBuf;

/// The path of a workspace binary built by `cargo build --workspace` in the same profile
/// as this test (the test executable lives in `<target>/<profile>/deps/`).
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary has a path");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("tests run from <target>/<profile>/deps");
    let path = profile_dir.join(name);
    assert!(
        path.exists(),
        "`{}` is missing: run `cargo build --workspace --all-targets` first (scripts/test does)",
        path.display()
    );
    path
}
