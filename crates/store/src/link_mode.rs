//! [`LinkMode`]: how a cached blob becomes a file in a destination.

use std::fmt;
use std::str::FromStr;

/// How a cached blob becomes a file in the destination.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum LinkMode {
    /// Reflink where the filesystem can, else hardlink, else copy; probed once per
    /// (cache filesystem, destination filesystem).
    Auto,
    /// Shares the blob's inode: instant, read-only (0444/0555), no extra space.
    #[default]
    Hardlink,
    /// A copy-on-write clone (btrfs, XFS): instant, writable, independent.
    Reflink,
    /// A plain copy: writable, independent, costs the bytes.
    Copy,
    /// A symlink to the blob file.
    Symlink,
}

impl LinkMode {
    pub const ALL: [Self; 5] = [
        Self::Auto,
        Self::Hardlink,
        Self::Reflink,
        Self::Copy,
        Self::Symlink,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Hardlink => "hardlink",
            Self::Reflink => "reflink",
            Self::Copy => "copy",
            Self::Symlink => "symlink",
        }
    }
}

impl fmt::Display for LinkMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for LinkMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|m| m.as_str() == s)
            .ok_or_else(|| format!("unknown link mode `{s}`; expected one of auto, hardlink, reflink, copy, symlink"))
    }
}
