#![expect(
    clippy::unwrap_used,
    reason = "test helpers fail the test that calls them"
)]

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use hoard_store::{BlobKey, Error, LinkMode, MaterializeReport, Store};
use hoard_types::{Digest, Entry, Manifest, PathPrefix, RelPath};
use tempfile::TempDir;

pub(crate) struct Cache {
    pub(crate) dir: TempDir,
    pub(crate) store: Store,
}

impl Cache {
    pub(crate) fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("cache")).unwrap();
        Self { dir, store }
    }

    pub(crate) fn root(&self) -> PathBuf {
        self.dir.path().join("cache")
    }

    /// A fresh path beside the cache (same filesystem), not yet created.
    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub(crate) fn reopen(self) -> Self {
        let Self { dir, store } = self;
        drop(store);
        let store = Store::open(dir.path().join("cache")).unwrap();
        Self { dir, store }
    }

    /// Ingests `files` (path, bytes, exec) and returns their manifest.
    pub(crate) fn manifest(&self, files: &[(&str, &[u8], bool)]) -> Manifest {
        let mut manifest = Manifest::new();
        for (path, data, exec) in files {
            let ingested = self.store.ingest_reader(*data, *exec, None).unwrap();
            assert_eq!(ingested.key.digest, Digest::of(data));
            manifest.entries.insert(
                RelPath::new(*path).unwrap(),
                Entry {
                    digest: Digest::of(data),
                    exec: *exec,
                    reference: None,
                    size: data.len() as u64,
                },
            );
        }
        manifest
    }

    /// Materializes the whole manifest into `dest`.
    pub(crate) fn materialize(
        &self,
        manifest: &Manifest,
        dest: &Path,
        mode: LinkMode,
    ) -> Result<MaterializeReport, Error> {
        self.store
            .materialize(manifest, &PathPrefix::all(), dest, mode)
    }

    pub(crate) fn blob_ino(&self, data: &[u8], exec: bool) -> u64 {
        fs::metadata(self.store.blob_path(&BlobKey::new(Digest::of(data), exec)))
            .unwrap()
            .ino()
    }
}

/// Every file (not directory) under `root`, relative, sorted.
pub(crate) fn files_under(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out.sort();
    out
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries {
        let entry = entry.unwrap();
        let kind = entry.file_type().unwrap();
        if kind.is_dir() {
            walk(root, &entry.path(), out);
        } else {
            out.push(
                entry
                    .path()
                    .strip_prefix(root)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned(),
            );
        }
    }
}

pub(crate) fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// A small tmpfs mounted in a temp dir (needs root): a full disk, or another filesystem.
pub(crate) struct Tmpfs {
    pub(crate) dir: TempDir,
}

impl Tmpfs {
    pub(crate) fn mount(size: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(status.success(), "mounting a tmpfs failed");
        Self { dir }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}
