//! Places no destination may be in or around: the cache itself, and what the daemon adds
//! (its socket's directory, its configuration file).
//!
//! A `--root` inside the cache would link blobs over blobs and `--clean` would empty it;
//! a `--root` that contains it (`/`, `~` with the default cache, the cache's parent) would
//! let a manifest's paths reach into it and `--clean` remove it. Both are refused before
//! anything is written. Directories are compared by (device, inode), not by path, so
//! symlinks, bind mounts' aliases and `..` change nothing: "contains" is "is one of the
//! protected paths' ancestors", "inside" is "has a protected directory among its own
//! ancestors", found by walking `..` up from the opened destination.

use std::collections::HashMap;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::sync::RwLock;

use rustix::fs::{Mode, OFlags};

use crate::error::{Error, Result};

/// A file or directory's identity.
type Id = (u64, u64);

/// What is protected, and every directory that leads to it.
#[derive(Debug, Default)]
pub(crate) struct Guard {
    inner: RwLock<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Protected directories (and files), with what to call them.
    protected: HashMap<Id, &'static str>,
    /// The protected paths themselves and each of their ancestors, with what they lead to.
    around: HashMap<Id, &'static str>,
}

impl Guard {
    /// Protects `path` (which must exist), calling it `what` in refusals.
    pub(crate) fn protect(&self, path: &Path, what: &'static str) -> std::io::Result<()> {
        let path = std::fs::canonicalize(path)?;
        let id = id_of(&rustix::fs::stat(&path)?);
        let mut ancestors = Vec::new();
        for ancestor in path.ancestors() {
            ancestors.push(id_of(&rustix::fs::stat(ancestor)?));
        }
        let mut inner = self
            .inner
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        inner.protected.insert(id, what);
        for ancestor in ancestors {
            inner.around.entry(ancestor).or_insert(what);
        }
        Ok(())
    }

    /// Refuses a destination that is, contains or is inside a protected place; `dir` is it,
    /// opened.
    pub(crate) fn check(&self, dir: &OwnedFd, dest: &Path) -> Result<()> {
        self.check_at(dir, dest, true)
    }

    /// Before `dest` is created: refuses it if `ancestor`, its nearest existing ancestor,
    /// is or is inside a protected place (a directory made there would be too).
    pub(crate) fn check_ancestor(&self, ancestor: &OwnedFd, dest: &Path) -> Result<()> {
        self.check_at(ancestor, dest, false)
    }

    fn check_at(&self, dir: &OwnedFd, dest: &Path, containing: bool) -> Result<()> {
        let refuse = |reason: String| Error::Refused {
            dest: dest.to_owned(),
            reason,
        };
        let inner = self
            .inner
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let stat = |fd: &OwnedFd| rustix::fs::fstat(fd).map(|s| id_of(&s));
        let here = stat(dir).map_err(|e| refuse(format!("cannot stat it: {e}")))?;
        if let Some(what) = inner.protected.get(&here) {
            return Err(refuse(format!(
                "it is {what}; materialize into a directory of its own"
            )));
        }
        if let Some(what) = inner.around.get(&here).filter(|_| containing) {
            return Err(refuse(format!(
                "it contains {what}, which its files or a `--clean` would reach; materialize into a directory of its own"
            )));
        }
        // Up through `..` until the root (whose `..` is itself), at most PATH_MAX deep.
        let mut at = dir
            .as_fd()
            .try_clone_to_owned()
            .map_err(|e| refuse(format!("{e}")))?;
        let mut id = here;
        for _ in 0..2048 {
            let Ok(parent) = rustix::fs::openat(
                &at,
                "..",
                OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
                Mode::empty(),
            ) else {
                break;
            };
            let Ok(parent_id) = stat(&parent) else { break };
            if parent_id == id {
                break;
            }
            if let Some(what) = inner.protected.get(&parent_id) {
                return Err(refuse(format!(
                    "it is inside {what}; materialize into a directory of its own"
                )));
            }
            (at, id) = (parent, parent_id);
        }
        Ok(())
    }
}

fn id_of(stat: &rustix::fs::Stat) -> Id {
    (stat.st_dev, stat.st_ino)
}

/// The nearest existing ancestor of `path` (itself if it exists), opened.
pub(crate) fn nearest_existing(path: &Path) -> Option<OwnedFd> {
    path.ancestors().find_map(|p| {
        let p = if p.as_os_str().is_empty() {
            Path::new(".")
        } else {
            p
        };
        rustix::fs::open(
            p,
            OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .ok()
    })
}
