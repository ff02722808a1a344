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
    pub(crate) fn prepare(&self) -> Result<()> {
        fs::create_dir_all(&self.root).io("create the cache directory", &self.root)?;
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
        for dir in [self.blobs(), self.tmp(), self.quarantine()] {
            fs::create_dir_all(&dir).io("create", &dir)?;
        }
        let tag = self.root.join("CACHEDIR.TAG");
        if !tag.exists() {
            fs::write(&tag, CACHEDIR_TAG).io("write", &tag)?;
        }
        Ok(())
    }
}

/// `blobs-v1/ab` for a blob's relative path `ab/cdef…`.
pub(crate) fn shard_of(relative: &str) -> &str {
    &relative[..2]
}
