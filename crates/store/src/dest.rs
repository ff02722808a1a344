//! The destination directory tree, opened without ever following a symlink.
//!
//! The root the caller names is opened as given (symlinks in the caller's own path are the
//! caller's choice). Below it, every directory is created with `mkdirat` and opened with
//! `openat(parent, name, O_NOFOLLOW | O_DIRECTORY)`, one component at a time, and files are
//! then placed with `*at` calls relative to those descriptors. A symlink planted anywhere
//! in the tree, even between our check and our write, makes the open fail instead of
//! leading a write outside the destination.

use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;

use crate::error::{Error, IoContext, Result};

/// A destination directory, opened: by path for the daemon's own user, or (for a caller
/// with another uid) opened by the caller's side, so that the daemon works relative to a
/// directory the caller could reach and write, whatever the path points to later.
#[derive(Debug)]
pub struct DestRoot {
    pub(crate) path: PathBuf,
    pub(crate) fd: OwnedFd,
    /// Whether the directory was created by this request (so it holds nothing yet).
    pub(crate) fresh: bool,
    /// Who gets the directories and copies made below it (`None`: the daemon's user).
    pub(crate) owner: Option<(u32, u32)>,
}

impl DestRoot {
    /// Creates (like `mkdir -p`) and opens `dest` as the current user.
    pub fn open(dest: &Path) -> Result<Self> {
        // A hint only (another process may race us): a wrong "fresh" costs an EEXIST and
        // an atomic replace, never a wrong file.
        let fresh = !dest.exists();
        fs::create_dir_all(dest).io("create the destination", dest)?;
        let fd = rustix::fs::open(
            dest,
            OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .io("open the destination", dest)?;
        Ok(Self {
            path: dest.to_owned(),
            fd,
            fresh,
            owner: None,
        })
    }

    /// Another handle on the same directory (for a second attempt).
    pub fn try_clone(&self) -> Result<Self> {
        Ok(Self {
            path: self.path.clone(),
            fd: self.fd.try_clone().io("dup", &self.path)?,
            fresh: self.fresh,
            owner: self.owner,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A destination opened elsewhere (by the caller's side), for `owner` (uid, gid).
    pub fn opened(path: PathBuf, fd: OwnedFd, fresh: bool, owner: (u32, u32)) -> Self {
        Self {
            path,
            fd,
            fresh,
            owner: Some(owner),
        }
    }
}

pub(crate) struct DestTree {
    pub(crate) path: PathBuf,
    pub(crate) root: OwnedFd,
    pub(crate) dev: u64,
    /// Owner of what is created for another user.
    pub(crate) owner: Option<(u32, u32)>,
    /// Directory path (relative, `/`-separated) → its descriptor, and whether this request
    /// created it (so it cannot hold any file yet).
    dirs: HashMap<String, (OwnedFd, bool)>,
    root_fresh: bool,
}

impl DestTree {
    /// Creates and opens `dest` and every directory in `dirs` (relative paths; ancestors are
    /// added as needed).
    pub(crate) fn open<'a>(
        dest: DestRoot,
        dirs: impl IntoIterator<Item = &'a str>,
    ) -> Result<Self> {
        let DestRoot {
            path,
            fd: root,
            fresh: root_fresh,
            owner,
        } = dest;
        let dev = rustix::fs::fstat(&root).io("stat", &path)?.st_dev;
        let mut tree = Self {
            path,
            root,
            dev,
            owner,
            dirs: HashMap::new(),
            root_fresh,
        };
        // BTreeSet order puts every directory after its ancestors.
        let mut all = BTreeSet::new();
        for dir in dirs {
            for (i, _) in dir.match_indices('/') {
                all.insert(&dir[..i]);
            }
            all.insert(dir);
        }
        for dir in all {
            let (parent, name) = match dir.rsplit_once('/') {
                Some((parent, name)) => (Some(parent), name),
                None => (None, dir),
            };
            let parent_fd = match parent {
                Some(p) => &tree.dirs[p].0,
                None => &tree.root,
            };
            let fresh = match rustix::fs::mkdirat(parent_fd, name, Mode::from_raw_mode(0o755)) {
                Ok(()) => {
                    if let Some((uid, gid)) = tree.owner {
                        // Created for the caller: theirs, like a directory they made.
                        rustix::fs::chownat(
                            parent_fd,
                            name,
                            Some(rustix::fs::Uid::from_raw(uid)),
                            Some(rustix::fs::Gid::from_raw(gid)),
                            rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
                        )
                        .map_err(|e| {
                            tree.error(
                                dir,
                                &format!(
                                    "cannot give the directory to its owner: {}",
                                    std::io::Error::from(e)
                                ),
                            )
                        })?;
                    }
                    true
                }
                Err(Errno::EXIST) => false,
                Err(e) => {
                    return Err(tree.error(
                        dir,
                        &format!("cannot create the directory: {}", std::io::Error::from(e)),
                    ));
                }
            };
            let fd = match rustix::fs::openat(
                parent_fd,
                name,
                OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::RDONLY | OFlags::CLOEXEC,
                Mode::empty(),
            ) {
                Ok(fd) => fd,
                Err(Errno::LOOP | Errno::NOTDIR) => {
                    let is_link =
                        rustix::fs::statat(parent_fd, name, rustix::fs::AtFlags::SYMLINK_NOFOLLOW)
                            .is_ok_and(|st| {
                                rustix::fs::FileType::from_raw_mode(st.st_mode)
                                    == rustix::fs::FileType::Symlink
                            });
                    let reason = if is_link {
                        "it is a symlink, which hoard does not follow"
                    } else {
                        "it exists and is not a directory"
                    };
                    return Err(tree.error(dir, reason));
                }
                Err(e) => {
                    return Err(tree.error(
                        dir,
                        &format!("cannot open the directory: {}", std::io::Error::from(e)),
                    ));
                }
            };
            tree.dirs.insert(dir.to_owned(), (fd, fresh));
        }
        Ok(tree)
    }

    /// The descriptor of a file's directory (`None` for the root), and whether this
    /// request created that directory.
    pub(crate) fn dir(&self, parent: Option<&str>) -> (&OwnedFd, bool) {
        parent.map_or((&self.root, self.root_fresh), |p| {
            let (fd, fresh) = &self.dirs[p];
            (fd, *fresh)
        })
    }

    pub(crate) fn error(&self, path: &str, reason: &str) -> Error {
        Error::Destination {
            dest: self.path.clone(),
            path: path.to_owned(),
            reason: reason.to_owned(),
        }
    }
}
