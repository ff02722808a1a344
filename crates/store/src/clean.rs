//! Removing what a destination holds beyond a version (`materialize` with `clean`).
//!
//! Only paths under the request's prefix are considered, so a job that materializes
//! `images/` with `clean` never touches `labels/`. The walk opens every directory with
//! `openat(O_NOFOLLOW | O_DIRECTORY)` relative to its parent, like [`crate::dest`]: a
//! symlink is removed as a name, never followed, so nothing outside the destination is
//! ever deleted.

use std::collections::HashSet;
use std::ffi::CStr;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use hoard_types::{Manifest, PathPrefix};
use rustix::fs::{AtFlags, Dir, FileType, Mode, OFlags};
use rustix::io::Errno;

use crate::Store;
use crate::error::{Error, IoContext, Result};

/// What [`Store::clean`] removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CleanReport {
    /// Files, symlinks and other non-directories.
    pub files: u64,
    pub dirs: u64,
}

struct Walk {
    dest: PathBuf,
    prefix: String,
    files: HashSet<String>,
    dirs: HashSet<String>,
    report: CleanReport,
}

impl Store {
    /// Removes from `dest` every file and directory under `prefix` that `keep` (the
    /// version's files under that prefix) does not name. Call after materializing `keep`.
    pub fn clean(&self, keep: &Manifest, prefix: &PathPrefix, dest: &Path) -> Result<CleanReport> {
        let root = match rustix::fs::open(
            dest,
            OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(Errno::NOENT) => return Ok(CleanReport::default()),
            Err(e) => return Err(e).io("open the destination", dest),
        };
        self.guard.check(&root, dest)?;
        Walk::new(keep, prefix, dest).run(&root)
    }

    /// [`Self::clean`] in a destination already opened ([`crate::DestRoot`]); every removal
    /// is made by its user, so the kernel allows only what it would allow them (the
    /// sticky bit and directory permissions included).
    pub fn clean_into(
        &self,
        keep: &Manifest,
        prefix: &PathPrefix,
        dest: &crate::DestRoot,
    ) -> Result<CleanReport> {
        self.guard.check(&dest.fd, &dest.path)?;
        let walk = Walk::new(keep, prefix, &dest.path);
        let root = dest.fd.clone();
        dest.run(move || walk.run(&root))?
    }
}

impl Walk {
    fn new(keep: &Manifest, prefix: &PathPrefix, dest: &Path) -> Self {
        let mut dirs = HashSet::new();
        for path in keep.entries.keys() {
            let path = path.as_str();
            for (i, _) in path.match_indices('/') {
                dirs.insert(path[..i].to_owned());
            }
        }
        Self {
            dest: dest.to_owned(),
            prefix: prefix.as_str().to_owned(),
            files: keep.entries.keys().map(|p| p.as_str().to_owned()).collect(),
            dirs,
            report: CleanReport::default(),
        }
    }

    fn run(mut self, root: &OwnedFd) -> Result<CleanReport> {
        self.dir(root, "")?;
        Ok(self.report)
    }

    /// Cleans the directory `fd` at relative path `at` (`""` for the root).
    fn dir(&mut self, fd: &OwnedFd, at: &str) -> Result<()> {
        for (name, kind) in entries(fd).map_err(|e| self.error(at, "cannot list it", e))? {
            let Ok(text) = name.to_str() else {
                // Not UTF-8: no manifest path can name it. Remove it only when the whole
                // directory is in scope.
                if self.wholly_in_scope(at) {
                    let path = format!("{at}/{}", name.to_string_lossy());
                    self.remove(fd, &name, kind, &path)?;
                }
                continue;
            };
            let path = if at.is_empty() {
                text.to_owned()
            } else {
                format!("{at}/{text}")
            };
            if kind == FileType::Directory {
                if self.wholly_in_scope(&path) {
                    // Wholly in scope.
                    if self.dirs.contains(path.as_str()) {
                        let child = open_dir(fd, &name)
                            .map_err(|e| self.error(&path, "cannot open it", e))?;
                        self.dir(&child, &path)?;
                    } else {
                        self.remove(fd, &name, kind, &path)?;
                    }
                } else if self.prefix.starts_with(&format!("{path}/")) {
                    // Partly in scope: only some of its paths start with the prefix.
                    let child =
                        open_dir(fd, &name).map_err(|e| self.error(&path, "cannot open it", e))?;
                    self.dir(&child, &path)?;
                }
            } else if path.starts_with(&self.prefix) && !self.files.contains(path.as_str()) {
                self.remove(fd, &name, kind, &path)?;
            }
        }
        Ok(())
    }

    /// Whether every path in the directory at `at` starts with the prefix.
    fn wholly_in_scope(&self, at: &str) -> bool {
        if at.is_empty() {
            return self.prefix.is_empty();
        }
        format!("{at}/").starts_with(&self.prefix)
    }

    /// Removes `name` from `parent`: a directory with everything in it, anything else as a
    /// name (a symlink is not followed).
    fn remove(&mut self, parent: &OwnedFd, name: &CStr, kind: FileType, path: &str) -> Result<()> {
        if kind == FileType::Directory {
            let fd = open_dir(parent, name).map_err(|e| self.error(path, "cannot open it", e))?;
            for (child, kind) in entries(&fd).map_err(|e| self.error(path, "cannot list it", e))? {
                let child_path = format!("{path}/{}", child.to_string_lossy());
                self.remove(&fd, &child, kind, &child_path)?;
            }
            rustix::fs::unlinkat(parent, name, AtFlags::REMOVEDIR)
                .map_err(|e| self.error(path, "cannot remove the directory", e))?;
            self.report.dirs += 1;
        } else {
            rustix::fs::unlinkat(parent, name, AtFlags::empty())
                .map_err(|e| self.error(path, "cannot remove it", e))?;
            self.report.files += 1;
        }
        Ok(())
    }

    fn error(&self, path: &str, what: &str, e: Errno) -> Error {
        Error::Destination {
            dest: self.dest.clone(),
            path: if path.is_empty() {
                ".".into()
            } else {
                path.to_owned()
            },
            reason: format!("{what}: {}", std::io::Error::from(e)),
        }
    }
}

fn open_dir(parent: &OwnedFd, name: &CStr) -> rustix::io::Result<OwnedFd> {
    rustix::fs::openat(
        parent,
        name,
        OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

/// The names in a directory (without `.` and `..`) and their types.
fn entries(fd: &OwnedFd) -> rustix::io::Result<Vec<(std::ffi::CString, FileType)>> {
    let mut out = Vec::new();
    for entry in Dir::read_from(fd)? {
        let entry = entry?;
        let name = entry.file_name();
        if name == c"." || name == c".." {
            continue;
        }
        let mut kind = entry.file_type();
        if kind == FileType::Unknown {
            kind = rustix::fs::statat(fd, name, AtFlags::SYMLINK_NOFOLLOW)
                .map(|st| FileType::from_raw_mode(st.st_mode))?;
        }
        out.push((name.to_owned(), kind));
    }
    Ok(out)
}
