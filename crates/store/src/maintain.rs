//! Keeping the cache within its budget and honest: eviction and verification.

use std::fs::File;
use std::io;

use hoard_types::Digest;
use rayon::prelude::*;
use rustix::fs::{AtFlags, Mode, OFlags};
use rustix::io::Errno;

use crate::Store;
use crate::error::{IoContext, Result};
use crate::record::BlobKey;

/// What [`Store::evict_to`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EvictReport {
    /// Blobs whose cache name was removed.
    pub evicted: u64,
    /// Bytes actually returned to the filesystem (evicted blobs no workdir linked).
    pub freed_bytes: u64,
    /// Bytes of evicted blobs that a materialized directory still links: they leave the
    /// cache's accounting but stay on disk until that directory goes.
    pub released_bytes: u64,
    /// Bytes the cache holds after eviction.
    pub remaining_bytes: u64,
    /// Of those, bytes of blobs that workdirs also link (`nlink > 1`): evicting them would
    /// free nothing now.
    pub held_by_workdirs_bytes: u64,
}

/// A blob [`Store::verify`] found bad: its key and size (to fetch it again), and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadBlob {
    pub key: BlobKey,
    pub size: u64,
    pub why: String,
}

/// What [`Store::verify`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VerifyReport {
    pub checked: u64,
    pub bytes: u64,
    /// Blobs that failed; each was quarantined.
    pub bad: Vec<BadBlob>,
    /// Good blobs sealed with fs-verity by this run (they were ingested before sealing
    /// was on).
    pub sealed: u64,
    /// Good blobs that are sealed now (those sealed before included).
    pub sealed_total: u64,
}

impl Store {
    /// Evicts blobs until the cache holds at most `budget` bytes: least recently used
    /// first, blobs no workdir links (`nlink == 1`, whose eviction frees space) before
    /// linked ones, never a pinned or leased blob.
    pub fn evict_to(&self, budget: u64) -> Result<EvictReport> {
        let report = self.evict(budget, false)?;
        tracing::info!(?report, budget, "evicted");
        Ok(report)
    }

    /// What [`Self::evict_to`] would do now, without removing anything.
    pub fn eviction_plan(&self, budget: u64) -> Result<EvictReport> {
        self.evict(budget, true)
    }

    fn evict(&self, budget: u64, dry_run: bool) -> Result<EvictReport> {
        self.flush_uses()?;
        let rows = self.index.all_blobs()?;
        let mut total: u64 = rows.iter().map(|(_, r, _)| r.size).sum();
        let mut report = EvictReport::default();
        // (linked elsewhere, last use) orders the candidates; nlink comes from one stat each.
        let mut candidates: Vec<(bool, u64, BlobKey, u64, bool)> = Vec::with_capacity(rows.len());
        for (key, record, last_use) in &rows {
            let nlink = match rustix::fs::statat(
                &self.blobs,
                key.relative_path(),
                AtFlags::SYMLINK_NOFOLLOW,
            ) {
                Ok(stat) => stat.st_nlink,
                Err(Errno::NOENT) => 1,
                Err(e) => return Err(e).io("stat", self.blob_path(key)),
            };
            candidates.push((nlink > 1, *last_use, *key, record.size, record.pins > 0));
        }
        candidates.sort_unstable_by_key(|c| (c.0, c.1));
        let mut kept_linked = 0;
        for (linked, _, key, size, pinned) in candidates {
            if total <= budget || pinned {
                kept_linked += if linked { size } else { 0 };
                continue;
            }
            let removed = self.unless_leased(&key, || -> Result<()> {
                if dry_run {
                    return Ok(());
                }
                self.index.remove_blobs(&[key])?;
                match rustix::fs::unlinkat(&self.blobs, key.relative_path(), AtFlags::empty()) {
                    Ok(()) | Err(Errno::NOENT) => Ok(()),
                    Err(e) => Err(e).io("remove", self.blob_path(&key)),
                }
            });
            match removed {
                Some(result) => {
                    result?;
                    total -= size;
                    report.evicted += 1;
                    if linked {
                        report.released_bytes += size;
                    } else {
                        report.freed_bytes += size;
                    }
                }
                None => kept_linked += if linked { size } else { 0 },
            }
        }
        report.remaining_bytes = total;
        report.held_by_workdirs_bytes = kept_linked;
        Ok(report)
    }

    /// Re-hashes every blob; any whose bytes or metadata are wrong is quarantined.
    pub fn verify(&self) -> Result<VerifyReport> {
        let rows = self.index.all_blobs()?;
        let sealed = std::sync::atomic::AtomicU64::new(0);
        let sealed_total = std::sync::atomic::AtomicU64::new(0);
        let results: Vec<Result<Option<BadBlob>>> = rows
            .par_iter()
            .map(|(key, record, _)| {
                let mut buf = vec![0; SCRUB_CHUNK];
                let file = match self.check_bytes(key, record, &mut buf, &mut |_| {})? {
                    Checked::Good(file) => file,
                    Checked::Bad(bad) => return Ok(Some(bad)),
                    Checked::Missing => {
                        return Ok(Some(BadBlob {
                            key: *key,
                            size: record.size,
                            why: "the file is missing".to_owned(),
                        }));
                    }
                };
                let now_sealed = if crate::verity::is_sealed(&file) {
                    true
                } else if self.verity() {
                    let done = matches!(self.seal_verity(&file, key), crate::verity::Sealed::Now);
                    sealed.fetch_add(u64::from(done), std::sync::atomic::Ordering::Relaxed);
                    done
                } else {
                    false
                };
                sealed_total.fetch_add(u64::from(now_sealed), std::sync::atomic::Ordering::Relaxed);
                Ok(None)
            })
            .collect();
        let mut report = VerifyReport {
            checked: rows.len() as u64,
            bytes: rows.iter().map(|(_, r, _)| r.size).sum(),
            bad: Vec::new(),
            sealed: sealed.into_inner(),
            sealed_total: sealed_total.into_inner(),
        };
        for result in results {
            if let Some(bad) = result? {
                report.bad.push(bad);
            }
        }
        Ok(report)
    }

    /// Every blob's key, for a scrub to walk (in key order, so a pass can resume).
    pub fn blob_keys(&self) -> Result<Vec<(BlobKey, u64)>> {
        Ok(self
            .index
            .all_blobs()?
            .into_iter()
            .map(|(key, record, _)| (key, record.size))
            .collect())
    }

    /// Re-hashes one blob (a scrub's step), reading it into `buf` and calling `pace` with
    /// the bytes of each chunk read so the caller can bound the I/O rate. `None` if it is good or gone since;
    /// a bad one is quarantined and returned.
    pub fn scrub_blob(
        &self,
        key: &BlobKey,
        buf: &mut [u8],
        pace: &mut dyn FnMut(u64),
    ) -> Result<Option<BadBlob>> {
        // Leased before its row is read: eviction cannot take it in between (a blob that
        // went is gone, not rotten).
        let _lease = self.lease([*key]);
        let Some(record) = self.index.blob(key)? else {
            return Ok(None);
        };
        Ok(match self.check_bytes(key, &record, buf, pace)? {
            Checked::Good(_) | Checked::Missing => None,
            Checked::Bad(bad) => Some(bad),
        })
    }

    /// Re-hashes a blob against its key and checks its metadata against its record; a bad
    /// one is quarantined (its row dropped).
    fn check_bytes(
        &self,
        key: &BlobKey,
        record: &crate::BlobRecord,
        buf: &mut [u8],
        pace: &mut dyn FnMut(u64),
    ) -> Result<Checked> {
        let path = self.blob_path(key);
        let fd = match rustix::fs::openat(
            &self.blobs,
            key.relative_path(),
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(Errno::NOENT) => {
                self.index.remove_blobs(&[*key])?;
                return Ok(Checked::Missing);
            }
            Err(e) => return Err(e).io("open", path),
        };
        let stat = rustix::fs::fstat(&fd).io("stat", &path)?;
        let mut file = File::from(fd);
        let mut hasher = blake3::Hasher::new();
        let problem = loop {
            match io::Read::read(&mut file, buf) {
                Ok(0) => {
                    let actual = Digest::from(hasher.finalize());
                    break if actual == key.digest {
                        crate::store::tamper_signs(key, record, &stat)
                    } else {
                        Some(format!("its bytes hash to `{actual}`"))
                    };
                }
                Ok(n) => {
                    hasher.update(&buf[..n]);
                    pace(n as u64);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // fs-verity answers a read of changed bytes with EIO; so does a failing
                // disk. Either way the blob cannot be handed out.
                Err(e) if e.raw_os_error() == Some(Errno::IO.raw_os_error()) => {
                    break Some(format!(
                        "reading it failed ({e}): its bytes changed on disk"
                    ));
                }
                Err(e) => return Err(e).io("read", &path),
            }
        };
        if let Some(problem) = problem {
            tracing::warn!(%key, %problem, "quarantining a bad blob");
            self.quarantine(key)?;
            return Ok(Checked::Bad(BadBlob {
                key: *key,
                size: record.size,
                why: problem,
            }));
        }
        Ok(Checked::Good(file))
    }
}

/// What [`Store::check_bytes`] found.
enum Checked {
    /// The blob, opened.
    Good(File),
    Bad(BadBlob),
    /// Its file is gone (its row too, now).
    Missing,
}

/// Read size of `verify`.
const SCRUB_CHUNK: usize = 1 << 20;

#[cfg(test)]
mod tests {
    use crate::Store;

    /// Least recently used goes first, and a use still buffered in memory counts.
    #[test]
    fn eviction_follows_last_use_including_buffered_uses() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("cache")).unwrap();
        let [a, b, c] = [b"aaaa", b"bbbb", b"cccc"]
            .map(|d| store.ingest_reader(&d[..], false, None).unwrap().key);
        store.index.touch([(a, 100), (b, 300), (c, 200)]).unwrap();
        let report = store.evict_to(8).unwrap();
        assert_eq!(report.evicted, 1);
        assert!(
            store.record(&a).unwrap().is_none(),
            "a was used least recently"
        );

        store.touch(&[c]).unwrap(); // now, newer than b's 300 ms, but only in memory
        let report = store.evict_to(4).unwrap();
        assert_eq!(report.evicted, 1);
        assert!(
            store.record(&b).unwrap().is_none(),
            "b is now the least recently used"
        );
        assert!(store.record(&c).unwrap().is_some());
    }
}
