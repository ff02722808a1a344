//! fs-verity on blobs. A sealed file's bytes cannot be changed by anyone, not even root:
//! opening it for writing fails. The kernel also checks every page it reads against a
//! Merkle tree, so bytes changed beneath the filesystem read as `EIO`, never as wrong data.
//! That is the tamper-proofing a system daemon wants for blobs it hardlinks into users'
//! directories. It needs a kernel with `CONFIG_FS_VERITY` and a filesystem that has it:
//! ext4 created or tuned with `-O verity`, btrfs, f2fs.
//!
//! Sealing costs one pass of SHA-256 over the file in the kernel. A blob is sealed after
//! it is renamed into `blobs-v1/` and before its index row is written, so a blob the index
//! hands out is sealed whenever sealing is on. [`Store::verify`] seals blobs ingested
//! before sealing was turned on.

use std::os::fd::{AsFd, OwnedFd};
use std::sync::PoisonError;
use std::sync::atomic::Ordering;

use composefs_ioctls::fsverity::{EnableVerityError, fs_ioc_enable_verity};
use rustix::fs::{AtFlags, Mode, OFlags, StatxAttributes, StatxFlags};

use crate::error::{IoContext, Result};

/// SHA-256, the algorithm `fsverity digest` uses by default.
const SHA256: u8 = 1;
/// The Merkle tree's block size: the page size on x86-64 and most arm64 kernels.
const BLOCK: u32 = 4096;

/// What a trial on a scratch file in the cache showed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VeritySupport {
    Supported,
    /// The kernel or the cache's filesystem has no fs-verity.
    Unsupported,
    /// It is there, but sealing failed for another reason (the error).
    Failed(String),
}

/// Whether a file was sealed.
#[derive(Debug)]
pub(crate) enum Sealed {
    Now,
    Already,
    /// Sealing failed; the blob stays valid, just not sealed (the reason).
    Failed(String),
}

/// Whether blobs get sealed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verity {
    Seal,
    /// Not sealed, with the reason.
    Off(String),
}

/// The store's fs-verity switch and counters.
#[derive(Debug, Default)]
pub(crate) struct VerityState {
    on: std::sync::atomic::AtomicBool,
    off_because: std::sync::Mutex<String>,
    sealed: std::sync::atomic::AtomicU64,
    failed: std::sync::atomic::AtomicU64,
}

/// Tries sealing a scratch file `name` in the directory `tmp` (`path`, for messages).
pub(crate) fn probe(tmp: impl AsFd, name: &str, path: &std::path::Path) -> Result<VeritySupport> {
    let _ = rustix::fs::unlinkat(&tmp, name, AtFlags::empty());
    let fd = rustix::fs::openat(
        &tmp,
        name,
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    )
    .io("create", path)?;
    rustix::io::write(&fd, b"hoard").io("write", path)?;
    drop(fd);
    let fd = open_readonly(&tmp, name).io("open", path)?;
    let support = match fs_ioc_enable_verity(&fd, SHA256, BLOCK) {
        Ok(()) | Err(EnableVerityError::AlreadyEnabled) => VeritySupport::Supported,
        Err(EnableVerityError::FilesystemNotSupported) => VeritySupport::Unsupported,
        Err(e) => VeritySupport::Failed(e.to_string()),
    };
    drop(fd);
    let _ = rustix::fs::unlinkat(&tmp, name, AtFlags::empty());
    Ok(support)
}

impl VerityState {
    /// Seals blobs from now on, or stops doing so, with the reason `hoard status` shows.
    pub(crate) fn set(&self, setting: Verity) {
        self.on
            .store(matches!(setting, Verity::Seal), Ordering::Relaxed);
        if let Verity::Off(why) = setting {
            *self
                .off_because
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = why;
        }
    }

    pub(crate) fn on(&self) -> bool {
        self.on.load(Ordering::Relaxed)
    }

    /// Whether blobs are sealed and how that went, or why not.
    pub(crate) fn status(&self) -> String {
        if !self.on() {
            let why = self
                .off_because
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            return format!(
                "off: {}",
                if why.is_empty() {
                    "not asked for"
                } else {
                    &why
                }
            );
        }
        let sealed = self.sealed();
        match self.failed.load(Ordering::Relaxed) {
            0 => format!("on: {sealed} blobs sealed since start"),
            failed => {
                format!("on: {sealed} blobs sealed since start, {failed} failed (see the log)")
            }
        }
    }

    pub(crate) fn sealed(&self) -> u64 {
        self.sealed.load(Ordering::Relaxed)
    }

    /// Seals the file `fd` (read-only, with no writable descriptor left anywhere) and
    /// counts the outcome.
    pub(crate) fn seal(&self, fd: impl AsFd, what: &dyn std::fmt::Display) -> Sealed {
        let sealed = match fs_ioc_enable_verity(&fd, SHA256, BLOCK) {
            // Writing the Merkle tree moves the mtime (ext4 does); the blob's is pinned.
            Ok(()) => match crate::sys::pin_mtime(&fd) {
                Ok(()) => Sealed::Now,
                Err(e) => Sealed::Failed(format!("sealed, but its mtime could not be pinned: {e}")),
            },
            Err(EnableVerityError::AlreadyEnabled) => Sealed::Already,
            Err(e) => Sealed::Failed(e.to_string()),
        };
        match &sealed {
            Sealed::Now => self.sealed.fetch_add(1, Ordering::Relaxed),
            Sealed::Already => 0,
            Sealed::Failed(reason) => {
                tracing::warn!(blob = %what, %reason, "fs-verity: the blob stays unsealed");
                self.failed.fetch_add(1, Ordering::Relaxed)
            }
        };
        sealed
    }
}

/// Whether the file is sealed, by `statx` (no privilege needed).
pub(crate) fn is_sealed(fd: impl AsFd) -> bool {
    rustix::fs::statx(fd, "", AtFlags::EMPTY_PATH, StatxFlags::empty()).is_ok_and(|st| {
        (st.stx_attributes_mask & st.stx_attributes).contains(StatxAttributes::VERITY)
    })
}

pub(crate) fn open_readonly(
    dir: impl AsFd,
    name: impl rustix::path::Arg,
) -> rustix::io::Result<OwnedFd> {
    rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Store;

    /// The probe answers (here, on whatever filesystem holds the temp dir) and leaves
    /// nothing behind in `tmp/`.
    #[test]
    fn the_probe_answers_and_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("cache")).unwrap();
        let support = store.probe_verity().unwrap();
        assert!(
            !matches!(support, VeritySupport::Failed(_)),
            "unexpected: {support:?}"
        );
        let left: Vec<_> = std::fs::read_dir(store.layout().tmp())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }
}
