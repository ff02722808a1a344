//! Small facts and system calls every part of the store uses: the pinned blob mtime, the
//! daemon's uid, the wall clock, a rename that never replaces.

use std::os::fd::AsFd;

use rustix::fs::RenameFlags;

/// The mtime every blob file gets (one second after the epoch, as in the Nix store). A
/// write through a hardlink sets the mtime to "now", so a blob whose mtime is anything
/// else has been written to. It also makes materialized trees byte- and time-identical
/// from machine to machine.
pub const BLOB_MTIME: i64 = 1;

/// The effective uid of the process, which owns every blob it writes.
pub(crate) fn daemon_uid() -> u32 {
    static UID: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *UID.get_or_init(|| rustix::process::geteuid().as_raw())
}

/// Sets a file's atime and mtime to [`BLOB_MTIME`].
pub(crate) fn pin_mtime(file: impl AsFd) -> rustix::io::Result<()> {
    let pinned = rustix::fs::Timespec {
        tv_sec: BLOB_MTIME,
        tv_nsec: 0,
    };
    rustix::fs::futimens(
        file,
        &rustix::fs::Timestamps {
            last_access: pinned,
            last_modification: pinned,
        },
    )
}

pub(crate) use hoard_types::now_ms;

pub(crate) fn rename_noreplace(
    from_dir: impl AsFd,
    from: &str,
    to_dir: impl AsFd,
    to: &str,
) -> rustix::io::Result<()> {
    rustix::fs::renameat_with(from_dir, from, to_dir, to, RenameFlags::NOREPLACE)
}
