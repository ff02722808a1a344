#![expect(
    clippy::unwrap_used,
    reason = "test helpers fail the test that calls them"
)]

//! A system daemon (root) serving two Unix users on one box: each may materialize only
//! where they could write themselves, gets files they cannot modify, and cannot use a
//! planted symlink to write elsewhere. Needs root: ignored unless run as root by scripts/test (CI does).

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Output;

use hoard_tests::users::{GROUP, USER_A, USER_B, as_user, dir_of, id, is_root, users};
use hoard_tests::{DaemonProcess, RegistryProcess, import};

/// `hoard …` as `user`, with their groups (runuser initializes them).
fn hoard_as(user: &str, socket: &Path, args: &[&str]) -> Output {
    hoard_tests::users::hoard_as(user, socket, args, &[])
}

fn text(p: &Path) -> String {
    p.display().to_string()
}

/// Users A and B with private homes, a root-owned stand-in for `/etc`, a registry with
/// `acme/vision/bike`, and a root daemon whose socket (0660) serves the users' group.
struct System {
    tmp: tempfile::TempDir,
    ids: [(u32, u32); 2],
    socket: PathBuf,
    _registry: RegistryProcess,
    _daemon: DaemonProcess,
}

fn system() -> System {
    users();
    let (user_a, group_a) = (id(USER_A, "-u"), id(USER_A, "-g"));
    let (user_b, group_b) = (id(USER_B, "-u"), id(USER_B, "-g"));
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().to_owned();
    std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o755)).unwrap();

    // A dataset, a registry and a system daemon whose socket serves the group.
    let src = base.join("src");
    std::fs::create_dir_all(src.join("images")).unwrap();
    std::fs::write(src.join("images/a.png"), b"image a").unwrap();
    std::fs::write(src.join("labels.csv"), b"bike,1\n").unwrap();
    let root = base.join("registry");
    import(&root, "acme/vision/bike", &src);
    let registry = RegistryProcess::start(&root, &[]);
    let run_dir = base.join("run");
    let daemon = DaemonProcess::start_with(
        &run_dir.join("hoard.sock"),
        &base.join("cache"),
        &registry.url,
        &["--socket-mode", "0660", "--socket-group", GROUP],
    );
    let socket = daemon.socket.clone();
    let meta = std::fs::metadata(&socket).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
    assert_eq!(meta.gid(), hoard_tests::users::group_gid());

    // Homes: each user's own, private.
    let (home_a, home_b) = (base.join("a"), base.join("b"));
    dir_of(&home_a, user_a, group_a, 0o700);
    dir_of(&home_b, user_b, group_b, 0o700);
    // A root-owned directory standing in for /etc.
    let etc = base.join("etc");
    dir_of(&etc, 0, 0, 0o755);
    std::fs::write(etc.join("passwd"), b"root:x:0:0").unwrap();
    System {
        tmp,
        ids: [(user_a, group_a), (user_b, group_b)],
        socket,
        _registry: registry,
        _daemon: daemon,
    }
}

#[test]
#[ignore = "needs root: scripts/test runs it when run as root, as CI does"]
fn a_system_daemon_acts_within_each_callers_rights() {
    assert!(
        is_root(),
        "needs root to create users and run a system daemon"
    );
    let system = system();
    let socket = system.socket.clone();
    let [(user_a, group_a), _] = system.ids;
    let base = system.tmp.path().to_owned();
    let home_a = base.join("a");
    // A materializes into their own directory: directories theirs, files read-only blobs.
    let job = home_a.join("job");
    let out = hoard_as(
        USER_A,
        &socket,
        &["get", "acme/vision/bike", "--root", &text(&job)],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::read(job.join("labels.csv")).unwrap(), b"bike,1\n");
    for dir in [&job, &job.join("images")] {
        let m = std::fs::metadata(dir).unwrap();
        assert_eq!((m.uid(), m.gid()), (user_a, group_a), "{}", dir.display());
    }
    let file = std::fs::metadata(job.join("labels.csv")).unwrap();
    assert_eq!((file.uid(), file.mode() & 0o777), (0, 0o444));
    let labels = text(&job.join("labels.csv"));
    assert!(
        !as_user(USER_A, &format!("echo x >> '{labels}'"))
            .status
            .success()
    );
    assert!(
        !as_user(USER_A, &format!("chmod u+w '{labels}'"))
            .status
            .success()
    );
    assert_eq!(std::fs::read(job.join("labels.csv")).unwrap(), b"bike,1\n");

    // A copy is A's to modify.
    let copy = home_a.join("copy");
    let out = hoard_as(
        USER_A,
        &socket,
        &[
            "get",
            "acme/vision/bike",
            "--root",
            &text(&copy),
            "--mode",
            "copy",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let copied = text(&copy.join("labels.csv"));
    assert_eq!(std::fs::metadata(&copied).unwrap().uid(), user_a);
}

#[test]
#[ignore = "needs root: scripts/test runs it when run as root, as CI does"]
fn a_caller_cannot_write_where_they_could_not_themselves() {
    assert!(
        is_root(),
        "needs root to create users and run a system daemon"
    );
    let system = system();
    let socket = system.socket.clone();
    let [(user_a, group_a), _] = system.ids;
    let base = system.tmp.path().to_owned();
    let (home_a, home_b, etc) = (base.join("a"), base.join("b"), base.join("etc"));
    // A cannot materialize into B's directory, nor through a symlink into /etc.
    let into_b = home_b.join("job");
    let out = hoard_as(
        USER_A,
        &socket,
        &["get", "acme/vision/bike", "--root", &text(&into_b)],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("permission denied"), "{err}");
    assert!(!into_b.exists());

    std::os::unix::fs::symlink(&etc, home_a.join("evil")).unwrap();
    let out = hoard_as(
        USER_A,
        &socket,
        &[
            "get",
            "acme/vision/bike",
            "--root",
            &text(&home_a.join("evil/x")),
        ],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("permission denied"));
    // A symlink planted below the destination is refused too (never followed).
    let planted = home_a.join("planted");
    dir_of(&planted, user_a, group_a, 0o755);
    std::os::unix::fs::symlink(&etc, planted.join("images")).unwrap();
    let out = hoard_as(
        USER_A,
        &socket,
        &["get", "acme/vision/bike", "--root", &text(&planted)],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("symlink"));
    let etc_now: Vec<PathBuf> = std::fs::read_dir(&etc)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(
        etc_now,
        [etc.join("passwd")],
        "nothing was written into /etc"
    );
    assert_eq!(std::fs::read(etc.join("passwd")).unwrap(), b"root:x:0:0");

    // Publishing reads files with the daemon's rights: refused for other users for now.
    let out = hoard_as(
        USER_A,
        &socket,
        &["publish", "acme/vision/mine", &text(&home_a)],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("another user"));
}
