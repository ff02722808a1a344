//! The cache directory's layout, and the checks made before anything in it is touched.
//!
//! ```text
//! $HOARD_CACHE_DIR
//!   CACHEDIR.TAG
//!   blobs-v1/ab/cdef…    one read-only file per blob (`….x` if executable)
//!   tmp/                 partial downloads, on the same filesystem as blobs-v1/
//!   quarantine/          blobs found modified or corrupt, kept for inspection
//!   index-v1/            RocksDB
//! ```
//!
//! The `-v1` suffixes version the formats: a change to the blob naming or to an index
//! record encoding (`record.rs`) needs a new suffix, an update of [`CURRENT`], and of the
//! `newer_layout_is_refused` test.

use std::fs;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::PathBuf;

use crate::error::{Error, IoContext, Result};

pub(crate) const BLOBS: &str = "blobs-v1";
pub(crate) const INDEX: &str = "index-v1";
pub(crate) const TMP: &str = "tmp";
pub(crate) const QUARANTINE: &str = "quarantine";
/// The layout generation this code reads and writes.
const CURRENT: u32 = 1;

const CACHEDIR_TAG: &str = "Signature: 8a477f597d28d172789f06886806bc55\n\
# This file is a cache directory tag created by hoard.\n\
# For information about cache directory tags see https://bford.info/cachedir/\n";

/// The paths of one cache directory.
#[derive(Clone, Debug)]
pub struct Layout {
    pub root: PathBuf,
}

impl Layout {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn blobs(&self) -> PathBuf {
        self.root.join(BLOBS)
    }

    pub fn index(&self) -> PathBuf {
        self.root.join(INDEX)
    }

    pub fn tmp(&self) -> PathBuf {
        self.root.join(TMP)
    }

    pub fn quarantine(&self) -> PathBuf {
        self.root.join(QUARANTINE)
    }

    /// Creates the directories that are missing, after refusing a cache written by a newer
    /// hoard (a `blobs-v2/` or `index-v2/` beside or instead of ours).
    /// The cache is private to the daemon's user (0700, enforced at every open): its blobs
    /// are other users' files, its index names their artifacts, and only the daemon hands
    /// them out, after checking who asks.
    pub(crate) fn prepare(&self) -> Result<()> {
        if let Some(parent) = self.root.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs::create_dir_all(parent).io("create the cache directory", &self.root)?;
        }
        match fs::DirBuilder::new().mode(0o700).create(&self.root) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e).io("create the cache directory", &self.root),
        }
        private(&self.root)?;
        for entry in fs::read_dir(&self.root).io("read the cache directory", &self.root)? {
            let entry = entry.io("read the cache directory", &self.root)?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let generation = name
                .strip_prefix("blobs-v")
                .or_else(|| name.strip_prefix("index-v"))
                .and_then(|n| n.parse::<u32>().ok());
            if generation.is_some_and(|g| g > CURRENT) {
                return Err(Error::NewerLayout {
                    path: self.root.clone(),
                    found: name.to_owned(),
                });
            }
        }
        for dir in [self.blobs(), self.tmp(), self.quarantine(), self.index()] {
            match fs::DirBuilder::new().mode(0o700).create(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => private(&dir)?,
                Err(e) => return Err(e).io("create", &dir),
            }
        }
        let tag = self.root.join("CACHEDIR.TAG");
        if !tag.exists() {
            fs::write(&tag, CACHEDIR_TAG).io("write", &tag)?;
        }
        Ok(())
    }
}

/// Makes `dir` (which must be the daemon user's) 0700 if it is more open, and refuses one
/// that is not a directory or belongs to someone else.
fn private(dir: &std::path::Path) -> Result<()> {
    let meta = fs::symlink_metadata(dir).io("stat", dir)?;
    let refuse = |reason: String| Error::NotPrivate {
        path: dir.to_owned(),
        reason,
    };
    if !meta.is_dir() {
        return Err(refuse("it is not a directory".to_owned()));
    }
    let me = crate::sys::daemon_uid();
    if meta.uid() != me {
        return Err(refuse(format!(
            "it belongs to uid {}, not to the daemon's uid {me}",
            meta.uid()
        )));
    }
    if meta.mode() & 0o077 != 0 {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).io("make private", dir)?;
    }
    Ok(())
}

/// `blobs-v1/ab` for a blob's relative path `ab/cdef…`.
pub(crate) fn shard_of(relative: &str) -> &str {
    &relative[..2]
}
