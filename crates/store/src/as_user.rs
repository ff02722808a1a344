//! Acting as another user: a thread that has taken on their uid, gid and groups.
//!
//! A system daemon runs as root, and root ignores directory permissions and the sticky
//! bit. So every change to a caller's destination — creating, opening, renaming and
//! removing names, creating copies and symlinks — runs on an [`AsUser`] thread with the
//! caller's credentials, relative to descriptors that thread opened: the kernel then
//! allows exactly what it would allow the caller. Only what the caller cannot do
//! themselves, and what gives them nothing they could not get otherwise, stays with the
//! daemon: linking a blob (which the kernel's `protected_hardlinks` refuses to a user who
//! does not own it) under a *new* name in a directory the caller may write, and reading
//! a blob into a file the caller created. Nothing is ever chowned.
//!
//! The credentials are the thread's own (raw `setresuid`/`setresgid`/`setgroups`
//! syscalls; libc's wrappers would change every thread of the process) and die with it.

use std::sync::mpsc;

use crate::error::{Error, Result};

/// Who an [`AsUser`] thread acts as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups (the primary one may be among them).
    pub groups: Vec<u32>,
}

type Job = Box<dyn FnOnce() + Send>;

/// A thread running as one [`Identity`], doing filesystem work handed to it by
/// [`AsUser::run`]. It ends when the last handle is dropped.
#[derive(Debug)]
pub struct AsUser {
    jobs: mpsc::Sender<Job>,
    uid: u32,
}

impl AsUser {
    /// Starts the thread and takes on `identity` in it (needs root).
    pub fn spawn(identity: Identity) -> Result<Self> {
        let (jobs, queue) = mpsc::channel::<Job>();
        let (ready, started) = mpsc::channel();
        let uid = identity.uid;
        std::thread::Builder::new()
            .name(format!("hoard-as-{uid}"))
            .spawn(move || {
                let became = become_user(&identity);
                let ok = became.is_ok();
                let _ = ready.send(became);
                if ok {
                    for job in queue {
                        job();
                    }
                }
            })
            .map_err(|e| Error::AsUser {
                uid,
                reason: format!("cannot start a thread: {e}"),
            })?;
        started
            .recv()
            .map_err(|_| Error::AsUser {
                uid,
                reason: "the thread ended before it started".to_owned(),
            })?
            .map_err(|e| Error::AsUser {
                uid,
                reason: format!("cannot take on their identity: {}", std::io::Error::from(e)),
            })?;
        Ok(Self { jobs, uid })
    }

    pub fn uid(&self) -> u32 {
        self.uid
    }

    /// Runs `f` on the thread, as the user, and waits for its result.
    pub fn run<R: Send + 'static>(&self, f: impl FnOnce() -> R + Send + 'static) -> Result<R> {
        let (tx, rx) = mpsc::sync_channel(1);
        let lost = || Error::AsUser {
            uid: self.uid,
            reason: "its thread is gone (a panic?)".to_owned(),
        };
        self.jobs
            .send(Box::new(move || {
                let _ = tx.send(f());
            }))
            .map_err(|_| lost())?;
        rx.recv().map_err(|_| lost())
    }
}

/// Takes on `identity` for the calling thread only. Groups first, then the gid, then the
/// uid: after the uid the thread may no longer change the others.
fn become_user(identity: &Identity) -> rustix::io::Result<()> {
    let groups: Vec<rustix::fs::Gid> = identity
        .groups
        .iter()
        .map(|g| rustix::fs::Gid::from_raw(*g))
        .collect();
    let gid = rustix::fs::Gid::from_raw(identity.gid);
    let uid = rustix::fs::Uid::from_raw(identity.uid);
    rustix::thread::set_thread_groups(&groups)?;
    rustix::thread::set_thread_res_gid(gid, gid, gid)?;
    rustix::thread::set_thread_res_uid(uid, uid, uid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[ignore = "needs root: scripts/test runs it when run as root, as CI does"]
    fn jobs_run_with_the_users_ids_and_only_on_that_thread() {
        assert!(
            rustix::process::geteuid().is_root(),
            "needs root to take on another user's ids"
        );
        let user = AsUser::spawn(Identity {
            uid: 65534,
            gid: 65534,
            groups: vec![65534],
        })
        .unwrap();
        let ids = user
            .run(|| {
                (
                    rustix::process::geteuid().as_raw(),
                    rustix::process::getegid().as_raw(),
                )
            })
            .unwrap();
        assert_eq!(ids, (65534, 65534));
        assert!(
            rustix::process::geteuid().is_root(),
            "the rest of the process stays root"
        );
    }
}
