//! Who is asking, and acting within their rights.
//!
//! The caller's identity is the kernel's (`SO_PEERCRED` on the socket), never the request's.
//! When it is not the daemon's own user (a system daemon serving several users), the
//! destination is opened by a thread that has taken on the caller's uid, gid and groups:
//! the kernel then decides, as it would for the caller, whether the path can be followed
//! and the directory created and written. The daemon works relative to the directory
//! that thread opened, so what the path points to later does not matter, and what it
//! creates below it is given to the caller.

use std::ffi::OsStr;
use std::os::fd::OwnedFd;
use std::path::{Component, Path, PathBuf};

use hoard_http::Peer;
use hoard_store::DestRoot;
use rustix::fs::{Access, AtFlags, Mode, OFlags};
use rustix::io::Errno;

use crate::error::ApiError;

/// The process on the other end of the socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Caller {
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    pub(crate) pid: Option<i32>,
}

impl From<Peer> for Caller {
    fn from(peer: Peer) -> Self {
        Self {
            uid: peer.uid,
            gid: peer.gid,
            pid: peer.pid,
        }
    }
}

impl Caller {
    /// Whether the caller is the daemon's own user (then plain paths are fine: the kernel
    /// already checks every access against that user).
    pub(crate) fn is_daemon_user(self) -> bool {
        self.uid == rustix::process::geteuid().as_raw()
    }

    /// The caller's groups: its primary group, and the supplementary ones from
    /// `/proc/PID/status` when that process still has the caller's uid.
    fn groups(self) -> Vec<u32> {
        let mut groups = vec![self.gid];
        let Some(pid) = self.pid else {
            return groups;
        };
        let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
            return groups;
        };
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|rest| {
                    rest.split_whitespace()
                        .filter_map(|n| n.parse::<u32>().ok())
                        .collect::<Vec<_>>()
                })
        };
        // The pid may have been reused: only trust a process with the caller's real uid.
        if field("Uid:").and_then(|ids| ids.first().copied()) != Some(self.uid) {
            return groups;
        }
        for gid in field("Groups:").unwrap_or_default() {
            if !groups.contains(&gid) {
                groups.push(gid);
            }
        }
        groups
    }
}

/// Opens `dest` for `caller` (creating missing directories as them); refuses when they
/// could not write there. Runs on its own thread, whose credentials die with it.
pub(crate) fn open_dest_as(caller: Caller, dest: PathBuf) -> Result<DestRoot, ApiError> {
    if !rustix::process::geteuid().is_root() {
        return Err(ApiError::new(
            http::StatusCode::FORBIDDEN,
            "wrong-user",
            format!(
                "this daemon runs as uid {} and cannot act for uid {}; run your own (`hoard daemon`) or ask the system daemon",
                rustix::process::geteuid().as_raw(),
                caller.uid
            ),
        ));
    }
    let groups = caller.groups();
    let path = dest.clone();
    let worker = std::thread::Builder::new()
        .name("hoard-as-caller".into())
        .spawn(move || -> Result<(OwnedFd, bool), ApiError> {
            become_caller(caller, &groups)?;
            open_as_caller(&dest)
        })
        .map_err(|e| ApiError::internal(format!("cannot start a thread: {e}")))?;
    let (fd, fresh) = worker
        .join()
        .map_err(|_| ApiError::internal("the destination thread panicked"))??;
    Ok(DestRoot::opened(path, fd, fresh, (caller.uid, caller.gid)))
}

/// Takes on the caller's identity, for this thread only (raw syscalls: libc would change
/// every thread of the process).
fn become_caller(caller: Caller, groups: &[u32]) -> Result<(), ApiError> {
    let groups: Vec<rustix::fs::Gid> = groups
        .iter()
        .map(|g| rustix::fs::Gid::from_raw(*g))
        .collect();
    let gid = rustix::fs::Gid::from_raw(caller.gid);
    let uid = rustix::fs::Uid::from_raw(caller.uid);
    rustix::thread::set_thread_groups(&groups)
        .and_then(|()| rustix::thread::set_thread_res_gid(gid, gid, gid))
        .and_then(|()| rustix::thread::set_thread_res_uid(uid, uid, uid))
        .map_err(|e| ApiError::internal(format!("cannot act as uid {}: {e}", caller.uid)))
}

/// As the caller: the nearest existing ancestor of `dest`, then each missing directory,
/// created and opened without following symlinks; the last must be writable.
fn open_as_caller(dest: &Path) -> Result<(OwnedFd, bool), ApiError> {
    let refuse = |reason: String| {
        ApiError::new(
            http::StatusCode::FORBIDDEN,
            "destination-refused",
            format!("cannot materialize into `{}`: {reason}", dest.display()),
        )
    };
    let mut missing: Vec<&OsStr> = Vec::new();
    let mut base = dest;
    let mut fd = loop {
        match rustix::fs::open(
            base,
            OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => break fd,
            Err(Errno::NOENT) => {
                let (Some(parent), Some(Component::Normal(name))) =
                    (base.parent(), base.components().next_back())
                else {
                    return Err(refuse("no part of the path exists".into()));
                };
                missing.push(name);
                base = parent;
            }
            Err(Errno::ACCESS) => {
                return Err(refuse(format!(
                    "you may not open `{}` (permission denied)",
                    base.display()
                )));
            }
            Err(Errno::NOTDIR) => {
                return Err(refuse(format!("`{}` is not a directory", base.display())));
            }
            Err(e) => {
                return Err(refuse(format!(
                    "`{}`: {}",
                    base.display(),
                    std::io::Error::from(e)
                )));
            }
        }
    };
    let fresh = !missing.is_empty();
    for name in missing.into_iter().rev() {
        match rustix::fs::mkdirat(&fd, name, Mode::from_raw_mode(0o755)) {
            Ok(()) | Err(Errno::EXIST) => {}
            Err(Errno::ACCESS) => {
                return Err(refuse(format!(
                    "you may not create `{}` in it (permission denied)",
                    Path::new(name).display()
                )));
            }
            Err(e) => {
                return Err(refuse(format!(
                    "cannot create `{}`: {}",
                    Path::new(name).display(),
                    std::io::Error::from(e)
                )));
            }
        }
        fd = rustix::fs::openat(
            &fd,
            name,
            OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| {
            refuse(format!(
                "cannot open `{}`: {}",
                Path::new(name).display(),
                std::io::Error::from(e)
            ))
        })?;
    }
    rustix::fs::accessat(
        &fd,
        ".",
        Access::WRITE_OK | Access::EXEC_OK,
        AtFlags::EACCESS,
    )
    .map_err(|_| refuse("you may not write there (permission denied)".into()))?;
    Ok((fd, fresh))
}

/// Long calls (materialize, file, prefetch) one uid may have running at once: one user's
/// burst cannot take every worker from the others.
pub(crate) const CALLS_PER_UID: u32 = 64;

/// Long calls running, by uid.
#[derive(Debug, Default)]
pub(crate) struct Slots {
    running: std::sync::Mutex<std::collections::HashMap<u32, u32>>,
}

/// One running call; its slot is given back when dropped.
pub(crate) struct Slot {
    slots: std::sync::Arc<Slots>,
    uid: u32,
}

impl Slots {
    pub(crate) fn take(
        self: &std::sync::Arc<Self>,
        uid: u32,
        limit: u32,
    ) -> Result<Slot, ApiError> {
        let mut running = self
            .running
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let count = running.entry(uid).or_default();
        if *count >= limit {
            return Err(ApiError::new(
                http::StatusCode::TOO_MANY_REQUESTS,
                "too-many-calls",
                format!(
                    "uid {uid} already has {limit} calls running, the most one user may; wait for some to finish"
                ),
            ));
        }
        *count += 1;
        Ok(Slot {
            slots: self.clone(),
            uid,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut running = self
            .slots
            .running
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(count) = running.get_mut(&self.uid) {
            *count -= 1;
            if *count == 0 {
                running.remove(&self.uid);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_uid_cannot_take_every_slot() {
        let slots = std::sync::Arc::new(Slots::default());
        let a: Vec<Slot> = (0..3).map(|_| slots.take(1000, 3).unwrap()).collect();
        let refused = slots.take(1000, 3).err().unwrap();
        assert_eq!(refused.status, http::StatusCode::TOO_MANY_REQUESTS);
        assert!(refused.detail.contains("uid 1000"));
        let _other = slots.take(1001, 3).unwrap();
        drop(a);
        assert!(slots.take(1000, 3).is_ok(), "slots come back");
    }
}
