//! A Hugging Face cache (`~/.cache/huggingface/hub`) filled from the store, in the layout
//! `huggingface_hub` writes (its `file_download.py`), so that its own code finds every file
//! with no download:
//!
//! ```text
//! models--ORG--NAME/blobs/<etag>                 hardlinks of the store's blobs
//! models--ORG--NAME/snapshots/<commit>/<path>    symlinks to ../../blobs/<etag> (relative)
//! models--ORG--NAME/refs/<revision>              the commit, for a branch or a tag
//! models--ORG--NAME/trees/<commit>.json          the commit's tree listing (huggingface_hub ≥ 2.4)
//! ```
//!
//! The etag is the Hub's digest of the file (the LFS SHA-256, or the git blob id). Every
//! change is made through the symlink-proof destination tree, as the caller (see
//! `dest.rs`). What is there already is left as it is: a blob that `huggingface_hub`
//! downloaded itself, a snapshot file it wrote, a symlink someone planted. Only a `refs/`
//! file naming another commit is replaced, as `huggingface_hub` does when a branch moves.
//! With the tree listing, `huggingface_hub` asks the Hub for no listing of the commit, and
//! offline it can tell a complete snapshot from a partial one (as for its own).

use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;

use hoard_types::RelPath;

use crate::LinkMode;
use crate::dest::{DestRoot, DestTree};
use crate::error::{Error, Result};
use crate::materialize::{Job, Linked};
use crate::record::BlobKey;
use crate::store::Store;

/// One repo's snapshot to fill in.
#[derive(Debug)]
pub struct HfSnapshot {
    /// `models--ORG--NAME` or `datasets--ORG--NAME`.
    pub folder: String,
    /// 40 hex digits.
    pub commit: String,
    /// The branch or tag asked for, written to `refs/`; `None` for a commit.
    pub revision: Option<String>,
    /// Each file: its path in the repo, the Hub's digest as hex (the etag), its blob.
    pub files: Vec<(RelPath, String, BlobKey)>,
    /// The commit's tree listing as `huggingface_hub` caches it (`trees/<commit>.json`),
    /// written unless one is there already; `None`: not known well enough to write.
    pub tree: Option<String>,
}

/// What filling a snapshot did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HfReport {
    /// Blobs linked (or copied, across filesystems) into `blobs/`.
    pub linked: u64,
    /// Snapshot symlinks made.
    pub symlinks: u64,
    /// Names already there and left as they are (the right ones, or someone else's).
    pub kept: u64,
}

impl Store {
    /// [`Self::fill_hf_cache`] into the directory at `path` (created if needed), for the
    /// daemon's own user; nothing is written in or around the store.
    pub fn fill_hf_cache_at(
        &self,
        path: &std::path::Path,
        snapshot: &HfSnapshot,
    ) -> Result<HfReport> {
        if let Some(existing) = crate::guard::nearest_existing(path) {
            self.guard.check_ancestor(&existing, path)?;
        }
        self.fill_hf_cache(DestRoot::open(path)?, snapshot)
    }

    /// Fills `snapshot` into the HF cache directory `cache` (see the module docs).
    pub fn fill_hf_cache(&self, cache: DestRoot, snapshot: &HfSnapshot) -> Result<HfReport> {
        let dest = cache.path.clone();
        let bad = |what: &str, value: &str| Error::Destination {
            dest: dest.clone(),
            path: value.to_owned(),
            reason: format!("not a valid {what}"),
        };
        let folder =
            RelPath::new(&snapshot.folder).map_err(|_| bad("repo folder", &snapshot.folder))?;
        if folder.as_str().contains('/') || !hoard_types::foreign::is_commit(&snapshot.commit) {
            return Err(bad("repo folder or commit", &snapshot.folder));
        }
        let revision = match &snapshot.revision {
            Some(rev) => Some(RelPath::new(rev).map_err(|_| bad("revision", rev))?),
            None => None,
        };
        for (_, etag, _) in &snapshot.files {
            if etag.is_empty() || !etag.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(bad("etag", etag));
            }
        }
        self.guard.check(&cache.fd, &cache.path)?;
        let blobs_dir = format!("{folder}/blobs");
        let snapshot_dir = format!("{folder}/snapshots/{}", snapshot.commit);
        let mut dirs = vec![blobs_dir.clone(), snapshot_dir.clone()];
        for (path, _, _) in &snapshot.files {
            if let Some(parent) = path.parent() {
                dirs.push(format!("{snapshot_dir}/{parent}"));
            }
        }
        if snapshot.tree.is_some() {
            dirs.push(format!("{folder}/trees"));
        }
        if let Some(rev) = &revision {
            dirs.push(match rev.parent() {
                Some(parent) => format!("{folder}/refs/{parent}"),
                None => format!("{folder}/refs"),
            });
        }
        let keys: Vec<BlobKey> = snapshot.files.iter().map(|(_, _, k)| *k).collect();
        let _lease = self.lease(keys.iter().copied());
        let records = self.cached_records(&keys)?;
        let tree = DestTree::open(cache, dirs.iter().map(String::as_str))?;
        let mut report = HfReport::default();
        let mut seen = std::collections::HashSet::new();
        for ((path, etag, key), record) in snapshot.files.iter().zip(records) {
            // The blob, once per etag.
            if seen.insert(etag.clone()) {
                let blob_path =
                    RelPath::new(format!("{blobs_dir}/{etag}")).map_err(|_| bad("etag", etag))?;
                let job = Job {
                    path: &blob_path,
                    key: *key,
                    record,
                };
                if self.place_new(&tree, &job)? {
                    report.linked += 1;
                } else {
                    report.kept += 1;
                }
            }
            // The snapshot's symlink, relative as huggingface_hub makes it.
            let depth = path.as_str().matches('/').count();
            let target = format!("{}../../blobs/{etag}", "../".repeat(depth));
            let link = RelPath::new(format!("{snapshot_dir}/{path}"))
                .map_err(|_| bad("path", path.as_str()))?;
            if symlink_new(&tree, &link, &target)? {
                report.symlinks += 1;
            } else {
                report.kept += 1;
            }
        }
        if let Some(rev) = &revision {
            let refs = RelPath::new(format!("{folder}/refs/{rev}"))
                .map_err(|_| bad("revision", rev.as_str()))?;
            write_small(&tree, &refs, &snapshot.commit, Replace::IfDifferent)?;
        }
        if let Some(listing) = &snapshot.tree {
            let path = RelPath::new(format!("{folder}/trees/{}.json", snapshot.commit))
                .map_err(|_| bad("commit", &snapshot.commit))?;
            // A commit's listing never changes: one already there is left as it is.
            write_small(&tree, &path, listing, Replace::Never)?;
        }
        Ok(report)
    }

    /// Links the blob as `job.path` unless that name exists (then it is left as it is);
    /// across filesystems, a copy. Returns whether it placed the file.
    fn place_new(&self, tree: &DestTree, job: &Job<'_>) -> Result<bool> {
        let dir = tree.dir(job.path.parent());
        let name = job.path.file_name();
        match rustix::fs::statat(&*dir.fd, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(_) => return Ok(false),
            Err(Errno::NOENT) => {}
            Err(e) => {
                return Err(tree.error(job.path.as_str(), &std::io::Error::from(e).to_string()));
            }
        }
        self.check(&job.key, &job.record)?;
        tree.may_create(dir, job.path.as_str())?;
        match self.link_blob(tree, job, &dir.fd, name) {
            Ok(Linked::Yes) => Ok(true),
            Ok(Linked::Taken) => Ok(false),
            Err(Error::ModeUnsupported { .. }) => {
                self.replace(tree, job, LinkMode::Copy)?;
                Ok(true)
            }
            Err(e) => Err(e),
        }
    }
}

/// Makes the symlink `path` → `target` as the tree's user, unless the name exists.
fn symlink_new(tree: &DestTree, path: &RelPath, target: &str) -> Result<bool> {
    let dir = tree.dir(path.parent());
    let name = path.file_name().to_owned();
    match rustix::fs::statat(&*dir.fd, name.as_str(), AtFlags::SYMLINK_NOFOLLOW) {
        Ok(_) => return Ok(false),
        Err(Errno::NOENT) => {}
        Err(e) => return Err(tree.error(path.as_str(), &std::io::Error::from(e).to_string())),
    }
    let (fd, target) = (dir.fd.clone(), target.to_owned());
    match tree.run(move || rustix::fs::symlinkat(target.as_str(), &*fd, name.as_str()))? {
        Ok(()) => Ok(true),
        Err(Errno::EXIST) => Ok(false),
        Err(e) => Err(tree.error(
            path.as_str(),
            &format!("cannot create a symlink: {}", std::io::Error::from(e)),
        )),
    }
}

/// When [`write_small`] replaces a file already there.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Replace {
    /// Unless it holds these bytes already (a ref, which moves).
    IfDifferent,
    /// Never, if it is a regular file (a commit's tree listing, which does not).
    Never,
}

/// Writes `content` to the regular file `path` (see [`Replace`]): through a temporary
/// name and a rename, as the tree's user.
fn write_small(tree: &DestTree, path: &RelPath, content: &str, replace: Replace) -> Result<()> {
    let dir = tree.dir(path.parent());
    let name = path.file_name().to_owned();
    let (fd, want) = (dir.fd.clone(), content.to_owned());
    let path_text = path.as_str().to_owned();
    let written = tree.run(move || -> std::result::Result<(), String> {
        if let Ok(existing) = rustix::fs::openat(
            &*fd,
            name.as_str(),
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            let stat = rustix::fs::fstat(&existing).map_err(|e| e.to_string())?;
            let regular = FileType::from_raw_mode(stat.st_mode) == FileType::RegularFile;
            if regular && replace == Replace::Never {
                return Ok(());
            }
            if regular && u64::try_from(stat.st_size).ok() == Some(want.len() as u64) {
                let mut buf = vec![0u8; want.len()];
                if rustix::io::read(&existing, &mut buf).is_ok_and(|n| n == want.len())
                    && buf == want.as_bytes()
                {
                    return Ok(());
                }
            }
        }
        let tmp = format!(".{name}.hoard-{}", std::process::id());
        let file = rustix::fs::openat(
            &*fd,
            tmp.as_str(),
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o644),
        )
        .map_err(|e| e.to_string())?;
        let wrote = rustix::io::write(&file, want.as_bytes()).map_err(|e| e.to_string());
        drop(file);
        wrote.and_then(|_| {
            rustix::fs::renameat(&*fd, tmp.as_str(), &*fd, name.as_str()).map_err(|e| {
                let _ = rustix::fs::unlinkat(&*fd, tmp.as_str(), AtFlags::empty());
                e.to_string()
            })
        })
    })?;
    written.map_err(|reason| tree.error(&path_text, &format!("cannot write it: {reason}")))
}
