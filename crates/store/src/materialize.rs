//! Making a version's files appear under a destination directory.
//!
//! Per file, the common case is two syscalls: `statat` of the blob (compared with its
//! record, so a modified blob is never handed out) and `linkat` to the final name, which
//! makes the file appear atomically. When the name is taken, one `statat` tells whether it
//! is already this blob (a no-op, the re-materialization case, checked by device and
//! inode); otherwise the file is placed under a temporary name and renamed over it. Files
//! are placed in parallel, in path-ordered chunks so that threads mostly work in different
//! directories.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::PoisonError;
use std::sync::atomic::{AtomicU64, Ordering};

use hoard_types::{Entry, Manifest, PathPrefix, RelPath};
use rayon::prelude::*;
use rustix::fs::{AtFlags, FileType, Mode, OFlags, Stat};
use rustix::io::Errno;

use crate::LinkMode;
use crate::Store;
use crate::dest::{DestRoot, DestTree};
use crate::error::missing;
use crate::error::{Error, Result};
use crate::record::{BlobKey, BlobRecord};
use crate::sys::{BLOB_MTIME, pin_mtime};

/// What [`Store::materialize`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MaterializeReport {
    /// Files of the version (under the prefix).
    pub files: u64,
    /// Files placed now.
    pub placed: u64,
    /// Files that were already the right ones.
    pub unchanged: u64,
    /// Bytes of all the files.
    pub bytes: u64,
    /// The mode actually used (never `Auto`).
    pub mode: LinkMode,
}

enum Outcome {
    Placed,
    Unchanged,
}

/// Whether [`Store::link_blob`] made the name, or found it taken.
pub(crate) enum Linked {
    Yes,
    Taken,
}

/// One file to place: where, and which blob.
pub(crate) struct Job<'a> {
    pub(crate) path: &'a RelPath,
    pub(crate) key: BlobKey,
    pub(crate) record: BlobRecord,
}

impl Store {
    /// Makes the files of `manifest` under `prefix` appear in `dest`, with `mode`.
    ///
    /// Every blob must be cached ([`Error::MissingBlobs`] lists the ones that are not); a
    /// blob found modified is quarantined and reported as [`Error::Tampered`] (fetch it
    /// again and retry). Files in `dest` that the version does not name are left alone.
    pub fn materialize(
        &self,
        manifest: &Manifest,
        prefix: &PathPrefix,
        dest: &Path,
        mode: LinkMode,
    ) -> Result<MaterializeReport> {
        // Before the destination is created: nothing is written for a hostile manifest, nor
        // anywhere in or around the cache.
        manifest.validate()?;
        if let Some(existing) = crate::guard::nearest_existing(dest) {
            self.guard.check_ancestor(&existing, dest)?;
        }
        // Nor is the destination created when a blob is missing.
        self.materialize_with(manifest, prefix, || DestRoot::open(dest), mode)
    }

    /// [`Self::materialize`] into a destination already opened ([`DestRoot`]): for a caller
    /// of another uid, whose side opened it; what is created below it is given to them.
    pub fn materialize_into(
        &self,
        manifest: &Manifest,
        prefix: &PathPrefix,
        dest: DestRoot,
        mode: LinkMode,
    ) -> Result<MaterializeReport> {
        self.materialize_with(manifest, prefix, || Ok(dest), mode)
    }

    /// Checks that every blob is cached, then opens the destination with `open` and
    /// places the files.
    fn materialize_with(
        &self,
        manifest: &Manifest,
        prefix: &PathPrefix,
        open: impl FnOnce() -> Result<DestRoot>,
        mode: LinkMode,
    ) -> Result<MaterializeReport> {
        manifest.validate()?;
        let entries: Vec<(&RelPath, &Entry)> = manifest.select(prefix).collect();
        let keys: Vec<BlobKey> = entries
            .iter()
            .map(|(_, e)| BlobKey::new(e.digest, e.exec))
            .collect();
        let _lease = self.lease(keys.iter().copied());
        let records = self.cached_records(&keys)?;
        let jobs: Vec<Job<'_>> = entries
            .iter()
            .zip(keys.iter().zip(records))
            .map(|((path, _), (key, record))| Job {
                path,
                key: *key,
                record,
            })
            .collect();
        let dest = open()?;
        self.guard.check(&dest.fd, &dest.path)?;
        let tree = DestTree::open(dest, jobs.iter().filter_map(|j| j.path.parent()))?;
        let mut report = MaterializeReport {
            files: jobs.len() as u64,
            bytes: jobs.iter().map(|j| j.record.size).sum(),
            ..Default::default()
        };
        let (mode, probed) = self.choose_mode(mode, &tree, jobs.first())?;
        report.mode = mode;
        let placed = AtomicU64::new(0);
        let unchanged = AtomicU64::new(0);
        let count = |outcome: Outcome| match outcome {
            Outcome::Placed => placed.fetch_add(1, Ordering::Relaxed),
            Outcome::Unchanged => unchanged.fetch_add(1, Ordering::Relaxed),
        };
        let rest = match probed {
            Some(outcome) => {
                count(outcome);
                &jobs[1..]
            }
            None => &jobs[..],
        };
        rest.par_chunks(128)
            .try_for_each(|chunk| {
                chunk.iter().try_for_each(|job| {
                    count(self.place(&tree, job, mode)?);
                    Ok::<_, Error>(())
                })
            })
            .map_err(|e| match e {
                // Every chunk has stopped: the count is final.
                Error::Tampered { key, what, .. } => Error::Tampered {
                    key,
                    what,
                    placed: placed.load(Ordering::Relaxed),
                },
                e => e,
            })?;
        report.placed = placed.into_inner();
        report.unchanged = unchanged.into_inner();
        self.touch(&keys)?;
        Ok(report)
    }

    /// The records of `keys`, in order, all of them cached: else [`Error::MissingBlobs`]
    /// names the ones that are not.
    pub(crate) fn cached_records(&self, keys: &[BlobKey]) -> Result<Vec<BlobRecord>> {
        let records = self.index.blobs(keys)?;
        let absent: Vec<BlobKey> = keys
            .iter()
            .zip(&records)
            .filter(|(_, r)| r.is_none())
            .map(|(k, _)| *k)
            .collect();
        if !absent.is_empty() {
            return Err(missing(absent));
        }
        Ok(records.into_iter().flatten().collect())
    }

    /// Resolves `Auto` (probing with the first file when this pair of filesystems has not
    /// been probed yet) and returns the outcome of the first file if the probe placed it.
    fn choose_mode(
        &self,
        mode: LinkMode,
        tree: &DestTree,
        first: Option<&Job<'_>>,
    ) -> Result<(LinkMode, Option<Outcome>)> {
        if mode != LinkMode::Auto {
            return Ok((mode, None));
        }
        let pair = (self.dev, tree.dev);
        if let Some(known) = self
            .probes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&pair)
        {
            return Ok((*known, None));
        }
        let Some(first) = first else {
            return Ok((LinkMode::Hardlink, None));
        };
        let remember = |mode: LinkMode| {
            tracing::debug!(%mode, cache_dev = pair.0, dest_dev = pair.1, "probed link mode");
            self.probes
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(pair, mode);
        };
        for candidate in [LinkMode::Reflink, LinkMode::Hardlink] {
            match self.place(tree, first, candidate) {
                Ok(outcome) => {
                    remember(candidate);
                    return Ok((candidate, Some(outcome)));
                }
                Err(Error::ModeUnsupported { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        let outcome = self.place(tree, first, LinkMode::Copy)?;
        remember(LinkMode::Copy);
        Ok((LinkMode::Copy, Some(outcome)))
    }

    /// Places one file. In a directory this request created, nothing can be in the way:
    /// check the blob and link (two syscalls). In one that existed, the file may already be
    /// right (a re-materialization): one `statat` of it decides, and a hardlink is judged
    /// by that same stat, since it is the blob's own inode.
    fn place(&self, tree: &DestTree, job: &Job<'_>, mode: LinkMode) -> Result<Outcome> {
        let dir = tree.dir(job.path.parent());
        let name = job.path.file_name();
        let mut taken = false;
        if !dir.fresh {
            match rustix::fs::statat(&*dir.fd, name, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(existing) if self.is_current(&existing, job, mode, &dir.fd, name)? => {
                    return Ok(Outcome::Unchanged);
                }
                Ok(_) => taken = true,
                Err(Errno::NOENT) => {}
                Err(e) => {
                    return Err(tree.error(job.path.as_str(), &std::io::Error::from(e).to_string()));
                }
            }
        }
        self.check(&job.key, &job.record)?;
        if mode == LinkMode::Hardlink && !taken {
            // linkat is atomic: the name appears with the whole file. It never replaces a
            // name, so the daemon may make it in a directory the caller may write.
            tree.may_create(dir, job.path.as_str())?;
            match self.link_blob(tree, job, &dir.fd, name)? {
                Linked::Yes => return Ok(Outcome::Placed),
                Linked::Taken => {}
            }
        }
        self.replace(tree, job, mode).map(|()| Outcome::Placed)
    }

    /// Links the blob as `name` in `dir` (a new name only), giving it a fresh inode
    /// once if its link count is at the filesystem's limit.
    pub(crate) fn link_blob(
        &self,
        tree: &DestTree,
        job: &Job<'_>,
        dir: &OwnedFd,
        name: &str,
    ) -> Result<Linked> {
        let blob = job.key.name();
        let mut renewed = false;
        loop {
            match rustix::fs::linkat(&self.blobs, blob.as_c_str(), dir, name, AtFlags::empty()) {
                Ok(()) => return Ok(Linked::Yes),
                Err(Errno::EXIST) => return Ok(Linked::Taken),
                Err(Errno::MLINK) if !renewed => {
                    self.renew_inode(&job.key)?;
                    renewed = true;
                }
                Err(e @ (Errno::XDEV | Errno::PERM | Errno::MLINK)) => {
                    return Err(unsupported(LinkMode::Hardlink, tree, e));
                }
                Err(e) => {
                    return Err(tree.error(
                        job.path.as_str(),
                        &format!("cannot link: {}", std::io::Error::from(e)),
                    ));
                }
            }
        }
    }

    /// Whether the file already at the destination name is this job's file.
    fn is_current(
        &self,
        existing: &Stat,
        job: &Job<'_>,
        mode: LinkMode,
        dir: &OwnedFd,
        name: &str,
    ) -> Result<bool> {
        let kind = FileType::from_raw_mode(existing.st_mode);
        match mode {
            LinkMode::Hardlink | LinkMode::Auto => {
                if existing.st_dev != self.dev || existing.st_ino != job.record.ino {
                    return Ok(false);
                }
                // It is the blob's own inode: judge the blob by this stat, saving a syscall.
                self.judge(&job.key, &job.record, existing)?;
                Ok(true)
            }
            LinkMode::Copy | LinkMode::Reflink => Ok(kind == FileType::RegularFile
                && u64::try_from(existing.st_size).ok() == Some(job.record.size)
                && existing.st_mtime == BLOB_MTIME
                && existing.st_mtime_nsec == 0
                && existing.st_ino != job.record.ino),
            LinkMode::Symlink => Ok(kind == FileType::Symlink
                && rustix::fs::readlinkat(dir, name, Vec::new()).is_ok_and(|t| {
                    t.as_bytes() == self.blob_path(&job.key).as_os_str().as_encoded_bytes()
                })),
        }
    }

    /// Places the file under a temporary name in its directory, then renames it over the
    /// final name, so readers see either the old file or the whole new one. The rename,
    /// and every file the caller gets to own (copies, symlinks), are the tree's user's.
    pub(crate) fn replace(&self, tree: &DestTree, job: &Job<'_>, mode: LinkMode) -> Result<()> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let dir = tree.dir(job.path.parent());
        let tmp = format!(
            ".hoard-tmp-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let name = job.path.file_name().to_owned();
        let fail = |e: Errno, what: &str| {
            tree.error(
                job.path.as_str(),
                &format!("{what}: {}", std::io::Error::from(e)),
            )
        };
        match mode {
            LinkMode::Hardlink | LinkMode::Auto => {
                tree.may_create(dir, job.path.as_str())?;
                match rustix::fs::linkat(
                    &self.blobs,
                    job.key.relative_path(),
                    &*dir.fd,
                    &tmp,
                    AtFlags::empty(),
                ) {
                    Ok(()) => {}
                    Err(e @ (Errno::XDEV | Errno::PERM | Errno::MLINK)) => {
                        return Err(unsupported(mode, tree, e));
                    }
                    Err(e) => return Err(fail(e, "cannot link")),
                }
                let (fd, from, to) = (dir.fd.clone(), tmp.clone(), name.clone());
                let renamed = tree.run(move || rustix::fs::renameat(&*fd, &from, &*fd, &to))?;
                match renamed {
                    Ok(()) => Ok(()),
                    // The temporary name holds the daemon's blob, which the caller may not
                    // rename in a sticky directory that is not theirs: they remove the old
                    // name (if the kernel lets them), the daemon links the new one.
                    Err(Errno::PERM | Errno::ACCESS) if tree.user.is_some() => {
                        let _ = rustix::fs::unlinkat(&*dir.fd, &tmp, AtFlags::empty());
                        let (fd, old) = (dir.fd.clone(), name.clone());
                        tree.run(move || rustix::fs::unlinkat(&*fd, &old, AtFlags::empty()))?
                            .map_err(|e| fail(e, "cannot replace it"))?;
                        match self.link_blob(tree, job, &dir.fd, &name)? {
                            Linked::Yes => Ok(()),
                            Linked::Taken => Err(tree
                                .error(job.path.as_str(), "another file took its name meanwhile")),
                        }
                    }
                    Err(e) => {
                        let _ = rustix::fs::unlinkat(&*dir.fd, &tmp, AtFlags::empty());
                        Err(rename_error(tree, job, e))
                    }
                }
            }
            LinkMode::Symlink => {
                if tree.user.is_some() {
                    return Err(Error::Refused {
                        dest: tree.path.clone(),
                        reason: "`symlink` mode links into the cache, which only the daemon's user may read; use `hardlink` or `copy`".to_owned(),
                    });
                }
                let target = self.blob_path(&job.key);
                rustix::fs::symlinkat(&target, &*dir.fd, &tmp)
                    .map_err(|e| fail(e, "cannot create a symlink"))?;
                rustix::fs::renameat(&*dir.fd, &tmp, &*dir.fd, &name).map_err(|e| {
                    let _ = rustix::fs::unlinkat(&*dir.fd, &tmp, AtFlags::empty());
                    rename_error(tree, job, e)
                })
            }
            LinkMode::Copy | LinkMode::Reflink => {
                let blob = self.open_blob(&job.key)?;
                // Created by the caller's side, so the copy is theirs; filled here.
                let perm = if job.key.exec { 0o755 } else { 0o644 };
                let (fd, at) = (dir.fd.clone(), tmp.clone());
                let out = tree
                    .run(move || {
                        rustix::fs::openat(
                            &*fd,
                            &at,
                            OFlags::WRONLY
                                | OFlags::CREATE
                                | OFlags::EXCL
                                | OFlags::NOFOLLOW
                                | OFlags::CLOEXEC,
                            Mode::from_raw_mode(perm),
                        )
                    })?
                    .map(File::from)
                    .map_err(|e| fail(e, "cannot create the file"))?;
                let (fd, from, to) = (dir.fd.clone(), tmp.clone(), name);
                let result = fill(self, &out, &blob, job, mode, tree).and_then(|()| {
                    tree.run(move || rustix::fs::renameat(&*fd, &from, &*fd, &to))?
                        .map_err(|e| rename_error(tree, job, e))
                });
                if result.is_err() {
                    let (fd, at) = (dir.fd.clone(), tmp);
                    let _ = tree.run(move || rustix::fs::unlinkat(&*fd, &at, AtFlags::empty()));
                }
                result
            }
        }
    }

    /// Gives a blob a fresh inode (a verified copy renamed over it) when its link count is
    /// at the filesystem's limit (EMLINK). Existing hardlinks keep the old inode and bytes.
    pub(crate) fn renew_inode(&self, key: &BlobKey) -> Result<BlobRecord> {
        let _guard = self.renew.lock().unwrap_or_else(PoisonError::into_inner);
        let record = self.index.blob(key)?.ok_or_else(|| missing(vec![*key]))?;
        let mut source = self.open_blob(key)?;
        let mut writer = self.writer(key.exec, Some((key.digest, record.size)))?;
        writer.write_from(&mut source, "read", &self.blob_path(key))?;
        let ino = writer.finish_replacing()?;
        tracing::info!(%key, ino, "gave a blob a fresh inode: its link count reached the filesystem's limit");
        self.index
            .update_blob(key, |r| r.ino = ino)?
            .ok_or_else(|| missing(vec![*key]))
    }
}

/// Writes a copy or a clone of the blob into `out`. A copy reads every byte anyway, so it
/// hashes them on the way: a blob whose bytes rotted (its metadata intact) is quarantined
/// and reported as [`Error::Tampered`] instead of handed out.
fn fill(
    store: &Store,
    out: &File,
    blob: &File,
    job: &Job<'_>,
    mode: LinkMode,
    tree: &DestTree,
) -> Result<()> {
    if mode == LinkMode::Reflink {
        rustix::fs::ioctl_ficlone(out, blob).map_err(|e| unsupported(mode, tree, e))?;
    } else {
        let failed =
            |e: std::io::Error| tree.error(job.path.as_str(), &format!("cannot copy: {e}"));
        let mut hasher = blake3::Hasher::new();
        let mut buf = vec![
            0;
            COPY_CHUNK
                .min(usize::try_from(job.record.size).unwrap_or(COPY_CHUNK))
                .max(1)
        ];
        let mut copied = 0u64;
        loop {
            let n = match (&*blob).read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(failed(e)),
            };
            hasher.update(&buf[..n]);
            (&*out).write_all(&buf[..n]).map_err(failed)?;
            copied += n as u64;
        }
        let actual = hoard_types::Digest::from(hasher.finalize());
        if copied != job.record.size || actual != job.key.digest {
            let what = format!("its bytes hash to `{actual}` ({copied} bytes) while copying");
            tracing::warn!(key = %job.key, %what, "blob rotted on disk; quarantining it");
            store.quarantine(&job.key)?;
            return Err(Error::Tampered {
                key: job.key,
                what,
                placed: 0,
            });
        }
    }
    pin_mtime(out).map_err(|e| tree.error(job.path.as_str(), &std::io::Error::from(e).to_string()))
}

/// Read size of copies.
const COPY_CHUNK: usize = 1 << 20;

fn rename_error(tree: &DestTree, job: &Job<'_>, e: Errno) -> Error {
    let reason = match e {
        Errno::ISDIR => "a directory of that name exists".to_owned(),
        Errno::PERM | Errno::ACCESS => {
            "you may not replace the file there (permission denied)".to_owned()
        }
        e => format!("cannot rename into place: {}", std::io::Error::from(e)),
    };
    tree.error(job.path.as_str(), &reason)
}

fn unsupported(mode: LinkMode, tree: &DestTree, e: Errno) -> Error {
    let reason = match e {
        Errno::XDEV => "the cache and the destination are on different filesystems".to_owned(),
        Errno::PERM => "the filesystem or its protection settings forbid it".to_owned(),
        Errno::MLINK => "the blob has as many links as the filesystem allows".to_owned(),
        Errno::OPNOTSUPP | Errno::INVAL | Errno::NOTTY => {
            "the filesystem cannot clone files".to_owned()
        }
        other => std::io::Error::from(other).to_string(),
    };
    Error::ModeUnsupported {
        mode,
        dest: tree.path.clone(),
        reason,
        source: e.into(),
    }
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::MetadataExt;

    use hoard_types::{Digest, Entry, Manifest, PathPrefix, RelPath};

    use crate::{LinkMode, Store};

    /// The EMLINK path: the blob gets a fresh inode with the same bytes; directories that
    /// link the old inode keep working, and new materializations link the new one.
    #[test]
    fn a_renewed_blob_keeps_old_links_and_serves_new_ones() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("cache")).unwrap();
        let key = store
            .ingest_reader(&b"shared"[..], false, None)
            .unwrap()
            .key;
        let mut manifest = Manifest::new();
        manifest.entries.insert(
            RelPath::new("f").unwrap(),
            Entry {
                digest: Digest::of(b"shared"),
                exec: false,
                reference: None,
                size: 6,
            },
        );
        let (old, new) = (dir.path().join("old"), dir.path().join("new"));
        store
            .materialize(&manifest, &PathPrefix::all(), &old, LinkMode::Hardlink)
            .unwrap();
        let old_ino = fs::metadata(old.join("f")).unwrap().ino();

        let record = store.renew_inode(&key).unwrap();
        assert_ne!(record.ino, old_ino);
        assert_eq!(
            fs::metadata(store.blob_path(&key)).unwrap().ino(),
            record.ino
        );
        assert_eq!(fs::read(old.join("f")).unwrap(), b"shared");

        store
            .materialize(&manifest, &PathPrefix::all(), &new, LinkMode::Hardlink)
            .unwrap();
        assert_eq!(fs::metadata(new.join("f")).unwrap().ino(), record.ino);
        let again = store
            .materialize(&manifest, &PathPrefix::all(), &old, LinkMode::Hardlink)
            .unwrap();
        assert_eq!(
            again.placed, 1,
            "the old inode is not the blob any more: relink"
        );
        assert_eq!(fs::metadata(old.join("f")).unwrap().ino(), record.ino);
    }
}
