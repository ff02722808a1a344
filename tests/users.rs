//! Two throwaway Unix users and a shared group, for tests of a system daemon serving
//! several users. Creating them needs root; tests that use them say "skipped" otherwise.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

use crate::binary;

pub const GROUP: &str = "hoard-test";
pub const USER_A: &str = "hoard-test-a";
pub const USER_B: &str = "hoard-test-b";

pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .output()
        .expect("the program starts")
}

/// Makes the test users and their shared group (kept between runs: creating them is
/// idempotent; tests running at once may race on `/etc/passwd`'s lock, so this retries).
pub fn users() {
    for _ in 0..50 {
        let _ = run("groupadd", &["--system", GROUP]);
        for user in [USER_A, USER_B] {
            let _ = run(
                "useradd",
                &[
                    "--system",
                    "--no-create-home",
                    "--shell",
                    "/usr/sbin/nologin",
                    "--groups",
                    GROUP,
                    user,
                ],
            );
        }
        let ready = [USER_A, USER_B].iter().all(|user| {
            let groups = run("id", &["-nG", user]);
            groups.status.success() && String::from_utf8_lossy(&groups.stdout).contains(GROUP)
        });
        if ready {
            return;
        }
        for user in [USER_A, USER_B] {
            let _ = run("usermod", &["--append", "--groups", GROUP, user]);
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!("cannot create the test users");
}

/// `id FLAG USER` as a number: `-u` for the uid, `-g` for the primary gid.
pub fn id(user: &str, flag: &str) -> u32 {
    let out = run("id", &[flag, user]);
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("id prints a number")
}

/// The gid of the shared group.
pub fn group_gid() -> u32 {
    let out = run("getent", &["group", GROUP]);
    String::from_utf8_lossy(&out.stdout)
        .split(':')
        .nth(2)
        .and_then(|g| g.parse().ok())
        .expect("getent prints the group")
}

/// `hoard ARGS` as `user` (runuser gives them their groups), against `socket`, with
/// `env` set and `HOARD_TOKEN` only if `env` names it.
pub fn hoard_as(user: &str, socket: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new("runuser")
        .args(["-u", user, "--"])
        .arg(binary("hoard"))
        .args(args)
        .env("HOARD_SOCKET", socket)
        .env("HOARD_LOG", "warn")
        .env_remove("HOARD_TOKEN")
        .envs(env.iter().copied())
        .current_dir("/")
        .output()
        .expect("runuser starts")
}

/// `sh -c SCRIPT` as `user`.
pub fn as_user(user: &str, script: &str) -> Output {
    run("runuser", &["-u", user, "--", "sh", "-c", script])
}

/// Creates `path` (and its parents) owned by `uid:gid` with `mode`.
pub fn dir_of(path: &Path, uid: u32, gid: u32, mode: u32) {
    std::fs::create_dir_all(path).expect("create the directory");
    rustix::fs::chown(
        path,
        Some(rustix::fs::Uid::from_raw(uid)),
        Some(rustix::fs::Gid::from_raw(gid)),
    )
    .expect("chown");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// Writes `bytes` to `path` as a file owned by `uid:gid`.
pub fn file_of(path: &Path, bytes: &[u8], uid: u32, gid: u32) {
    std::fs::write(path, bytes).expect("write the file");
    rustix::fs::chown(
        path,
        Some(rustix::fs::Uid::from_raw(uid)),
        Some(rustix::fs::Gid::from_raw(gid)),
    )
    .expect("chown");
}
