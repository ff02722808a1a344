//! Who is asking, and acting within their rights.
//!
//! The caller's identity is the kernel's (`SO_PEERCRED` on the socket), never the request's.
//! When it is not the daemon's own user (a system daemon serving several users), every
//! change to their destination is made by a thread that has taken on the caller's uid,
//! gid and groups ([`act_as`], [`hoard_store::AsUser`]): the kernel then decides, as it
//! would for the caller, what may be created, replaced and removed.

use std::sync::Arc;

use hoard_http::Peer;
use hoard_store::{AsUser, Identity};

use crate::error::ApiError;

/// The process on the other end of the socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Caller {
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    pub(crate) pid: Option<i32>,
}

/// Who asks: the socket's peer, and the upstream credential they sent (never logged).
#[derive(Clone)]
pub(crate) struct Asker {
    pub(crate) caller: Caller,
    pub(crate) token: Option<String>,
}

impl std::fmt::Debug for Asker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Asker")
            .field("caller", &self.caller)
            .field("token", &self.token.as_ref().map(|_| "…"))
            .finish()
    }
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
    /// The daemon itself (its own work, such as materializing what it published).
    pub(crate) fn daemon() -> Self {
        Self {
            uid: rustix::process::geteuid().as_raw(),
            gid: rustix::process::getegid().as_raw(),
            pid: None,
        }
    }

    /// Whether the caller is the daemon's own user (then plain paths are fine: the kernel
    /// already checks every access against that user).
    pub(crate) fn is_daemon_user(self) -> bool {
        self.uid == rustix::process::geteuid().as_raw()
    }

    /// The daemon's own user or root: who may run `gc` and `verify`, and see and remove
    /// everyone's pins.
    pub(crate) fn is_admin(self) -> bool {
        self.uid == 0 || self.is_daemon_user()
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

/// A thread acting as `caller`, for the changes a request makes to their destination
/// (see [`hoard_store::AsUser`]); refused when this daemon cannot take on their ids.
pub(crate) fn act_as(caller: Caller) -> Result<Arc<AsUser>, ApiError> {
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
    let identity = Identity {
        uid: caller.uid,
        gid: caller.gid,
        groups: caller.groups(),
    };
    Ok(Arc::new(AsUser::spawn(identity)?))
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
