//! The destination directory tree, opened without ever following a symlink, and changed
//! only with the rights of the user it is for.
//!
//! The root the caller names is opened as given (symlinks in the caller's own path are the
//! caller's choice). Below it, every directory is created with `mkdirat` and opened with
//! `openat(parent, name, O_NOFOLLOW | O_DIRECTORY)`, one component at a time, and files are
//! then placed with `*at` calls relative to those descriptors. A symlink planted anywhere
//! in the tree, even between our check and our write, makes the open fail instead of
//! leading a write outside the destination.
//!
//! For a caller who is not the daemon's user, the tree belongs to an [`AsUser`] thread:
//! it opens and creates every directory (so they are the caller's, with no `chown`),
//! checks which ones the caller may write, and does every rename, removal and file
//! creation (see [`crate::as_user`] for what the daemon itself still does).

use std::collections::{BTreeSet, HashMap};
use std::ffi::OsStr;
use std::fs;
use std::os::fd::OwnedFd;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use rustix::fs::{Access, AtFlags, Mode, OFlags};
use rustix::io::Errno;

use crate::as_user::AsUser;
use crate::error::{Error, IoContext, Result};

/// A destination directory, opened: by path for the daemon's own user, or by an
/// [`AsUser`] thread for another caller, so that the daemon works relative to a directory
/// the caller could reach and write, whatever the path points to later.
#[derive(Debug)]
pub struct DestRoot {
    pub(crate) path: PathBuf,
    pub(crate) fd: Arc<OwnedFd>,
    /// Whether the directory was created by this request (so it holds nothing yet).
    pub(crate) fresh: bool,
    /// Who changes the tree (`None`: the daemon's user, in the calling thread).
    pub(crate) user: Option<Arc<AsUser>>,
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
            fd: Arc::new(fd),
            fresh,
            user: None,
        })
    }

    /// Opens `dest` as `user` does: the nearest existing ancestor, then each missing
    /// directory, created and opened by them without following symlinks; the last must be
    /// one they may write. Refusals ([`Error::Refused`]) say why, before anything is
    /// fetched.
    pub fn open_as(dest: PathBuf, user: Arc<AsUser>) -> Result<Self> {
        let path = dest.clone();
        let (fd, fresh) = user.run(move || open_as_user(&dest))??;
        Ok(Self {
            path,
            fd: Arc::new(fd),
            fresh,
            user: Some(user),
        })
    }

    /// Another handle on the same directory (for a second attempt).
    pub fn try_clone(&self) -> Result<Self> {
        Ok(Self {
            path: self.path.clone(),
            fd: self.fd.clone(),
            fresh: self.fresh,
            user: self.user.clone(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` with the rights of the tree's user: on its thread, or here for the
    /// daemon's own.
    pub(crate) fn run<R: Send + 'static>(
        &self,
        f: impl FnOnce() -> R + Send + 'static,
    ) -> Result<R> {
        run_as(self.user.as_deref(), f)
    }
}

fn run_as<R: Send + 'static>(
    user: Option<&AsUser>,
    f: impl FnOnce() -> R + Send + 'static,
) -> Result<R> {
    match user {
        None => Ok(f()),
        Some(user) => user.run(f),
    }
}

/// On the user's thread: [`DestRoot::open_as`].
fn open_as_user(dest: &Path) -> Result<(OwnedFd, bool)> {
    let refuse = |reason: String| Error::Refused {
        dest: dest.to_owned(),
        reason,
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
        let shown = Path::new(name).display();
        match rustix::fs::mkdirat(&fd, name, Mode::from_raw_mode(0o755)) {
            Ok(()) | Err(Errno::EXIST) => {}
            Err(Errno::ACCESS) => {
                return Err(refuse(format!(
                    "you may not create `{shown}` in it (permission denied)"
                )));
            }
            Err(e) => {
                return Err(refuse(format!(
                    "cannot create `{shown}`: {}",
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
                "cannot open `{shown}`: {}",
                std::io::Error::from(e)
            ))
        })?;
    }
    if !may_write(&fd) {
        return Err(refuse("you may not write there (permission denied)".into()));
    }
    Ok((fd, fresh))
}

/// Whether the thread's user may create and remove names in the directory `fd`.
fn may_write(fd: &OwnedFd) -> bool {
    rustix::fs::accessat(
        fd,
        ".",
        Access::WRITE_OK | Access::EXEC_OK,
        AtFlags::EACCESS,
    )
    .is_ok()
}

/// One directory of the tree.
pub(crate) struct Dir {
    pub(crate) fd: Arc<OwnedFd>,
    /// Created by this request, so it cannot hold any file yet.
    pub(crate) fresh: bool,
    /// The tree's user may create names in it: only then may the daemon link blobs into
    /// it on their behalf. Always true for the daemon's own user (the kernel checks).
    pub(crate) writable: bool,
}

pub(crate) struct DestTree {
    pub(crate) path: PathBuf,
    pub(crate) dev: u64,
    pub(crate) user: Option<Arc<AsUser>>,
    root: Dir,
    /// Directory path (relative, `/`-separated) → the directory.
    dirs: HashMap<String, Dir>,
}

impl DestTree {
    /// Creates and opens, as the destination's user, every directory in `dirs` (relative
    /// paths; ancestors are added as needed).
    pub(crate) fn open<'a>(
        dest: DestRoot,
        dirs: impl IntoIterator<Item = &'a str>,
    ) -> Result<Self> {
        // BTreeSet order puts every directory after its ancestors.
        let mut all = BTreeSet::new();
        for dir in dirs {
            for (i, _) in dir.match_indices('/') {
                all.insert(dir[..i].to_owned());
            }
            all.insert(dir.to_owned());
        }
        let dev = rustix::fs::fstat(&*dest.fd).io("stat", &dest.path)?.st_dev;
        let (root, path, check) = (dest.fd.clone(), dest.path.clone(), dest.user.is_some());
        let opened = dest.run(move || open_dirs(&root, &path, all, check))??;
        Ok(Self {
            root: Dir {
                fd: dest.fd,
                fresh: dest.fresh,
                writable: true,
            },
            dirs: opened,
            path: dest.path,
            dev,
            user: dest.user,
        })
    }

    /// The directory of a file (`None`: the root).
    pub(crate) fn dir(&self, parent: Option<&str>) -> &Dir {
        parent.map_or(&self.root, |p| &self.dirs[p])
    }

    /// Refuses to create a name in `dir` (at the file `path`) when its user may not.
    pub(crate) fn may_create(&self, dir: &Dir, path: &str) -> Result<()> {
        if dir.writable {
            return Ok(());
        }
        Err(self.error(
            path,
            "you may not create files in its directory (permission denied)",
        ))
    }

    /// [`DestRoot::run`] for the tree.
    pub(crate) fn run<R: Send + 'static>(
        &self,
        f: impl FnOnce() -> R + Send + 'static,
    ) -> Result<R> {
        run_as(self.user.as_deref(), f)
    }

    pub(crate) fn error(&self, path: &str, reason: &str) -> Error {
        Error::Destination {
            dest: self.path.clone(),
            path: path.to_owned(),
            reason: reason.to_owned(),
        }
    }
}

/// As the tree's user: creates and opens every directory of `all` (in order, ancestors
/// first) below `root`; with `check`, also finds out which ones they may write.
fn open_dirs(
    root: &OwnedFd,
    dest: &Path,
    all: BTreeSet<String>,
    check: bool,
) -> Result<HashMap<String, Dir>> {
    let error = |dir: &str, reason: String| Error::Destination {
        dest: dest.to_owned(),
        path: dir.to_owned(),
        reason,
    };
    let mut dirs: HashMap<String, Dir> = HashMap::with_capacity(all.len());
    for dir in all {
        let (parent, name) = match dir.rsplit_once('/') {
            Some((parent, name)) => (Some(parent), name),
            None => (None, dir.as_str()),
        };
        let parent_fd: &OwnedFd = match parent {
            Some(p) => &dirs[p].fd,
            None => root,
        };
        let fresh = match rustix::fs::mkdirat(parent_fd, name, Mode::from_raw_mode(0o755)) {
            Ok(()) => true,
            Err(Errno::EXIST) => false,
            Err(Errno::ACCESS) => {
                return Err(error(
                    &dir,
                    "you may not create the directory (permission denied)".to_owned(),
                ));
            }
            Err(e) => {
                return Err(error(
                    &dir,
                    format!("cannot create the directory: {}", std::io::Error::from(e)),
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
                let is_link = rustix::fs::statat(parent_fd, name, AtFlags::SYMLINK_NOFOLLOW)
                    .is_ok_and(|st| {
                        rustix::fs::FileType::from_raw_mode(st.st_mode)
                            == rustix::fs::FileType::Symlink
                    });
                let reason = if is_link {
                    "it is a symlink, which hoard does not follow"
                } else {
                    "it exists and is not a directory"
                };
                return Err(error(&dir, reason.to_owned()));
            }
            Err(e) => {
                return Err(error(
                    &dir,
                    format!("cannot open the directory: {}", std::io::Error::from(e)),
                ));
            }
        };
        let writable = !check || may_write(&fd);
        dirs.insert(
            dir,
            Dir {
                fd: Arc::new(fd),
                fresh,
                writable,
            },
        );
    }
    Ok(dirs)
}
