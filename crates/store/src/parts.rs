//! Writing one blob as parallel parts (byte ranges), hashed as they arrive.
//!
//! BLAKE3 is a tree: a part that starts at a multiple of a power-of-two size and is at most
//! that long is a subtree of its own, so each part is hashed while it is written (its
//! "chaining value"), and the blob's digest is merged from them at the end, with no second
//! read of the file. Before this, a 1 GiB blob fetched as ranges was read back and hashed
//! in one thread after the last range landed.
//!
//! The bytes are the same as for any [`crate::BlobWriter`]: a temporary file, checked
//! against the expected size and digest before it is staged, removed if it is wrong.
//!
//! A blob whose digest is known is written to `tmp/<digest>.ranges` (locked while
//! written), and each complete part is appended to the ledger `tmp/<digest>.ranges.done`:
//! after a crash, the next writer of that blob re-hashes the parts the ledger names from
//! the file (reading is far cheaper than downloading) and fetches only the others. The
//! ledger holds no hashes: bytes lost with the page cache (a power cut) hash to something
//! else, and the whole blob fails its digest and is fetched again. The ledger's format:
//! the part size and the blob's size (u64 LE each), then one u64 LE part index per part;
//! another part size or size starts over. Changing it needs a new suffix.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Write};
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::sync::{Mutex, PoisonError};

use rustix::fs::{AtFlags, FlockOperation, OFlags};
use rustix::io::Errno;

use blake3::hazmat::{
    HasherExt, Mode, left_subtree_len, merge_subtrees_non_root, merge_subtrees_root,
};
use hoard_types::Digest;

use crate::error::{Error, IoContext, Result};
use crate::ingest::{BlobWriter, Staged};
use crate::store::Store;

/// A blob being written in parts; see the module docs.
pub struct PartedWriter<'s> {
    writer: BlobWriter<'s>,
    /// `None`: not known yet (a file an upstream names by its own digest); the blob is
    /// named by what the parts hash to.
    digest: Option<Digest>,
    size: u64,
    step: u64,
    parts: u64,
    /// What each complete part hashed to. Filled as parts complete, never sized from
    /// `size`: the size comes from an untrusted manifest, and 1 PiB in 16 MiB parts
    /// would be 67 million entries before a single byte had arrived.
    done: Mutex<Done>,
    /// The ledger of complete parts (see the module docs), for a blob whose digest is
    /// known: its name in `tmp/` and the file, appended to as parts complete.
    ledger: Option<(String, Mutex<File>)>,
    /// Parts found complete from an earlier, interrupted writer.
    resumed: u64,
}

/// The suffix of a resumable parted blob in `tmp/`, and of its ledger.
pub(crate) const RANGES: &str = ".ranges";
pub(crate) const LEDGER: &str = ".ranges.done";

/// The hashes of the complete parts.
#[derive(Default)]
struct Done {
    /// A blob of one part: its hasher, whose root hash is the digest.
    whole: Option<blake3::Hasher>,
    /// Otherwise each part's chaining value, by index.
    parts: HashMap<u64, [u8; 32]>,
}

/// One part of a [`PartedWriter`]: written in order from its start, then finished.
pub struct Part<'p, 's> {
    parent: &'p PartedWriter<'s>,
    index: u64,
    range: Range<u64>,
    at: u64,
    hasher: blake3::Hasher,
}

impl Store {
    /// Starts writing the blob `digest` (`size` bytes; `None`: a blob whose digest is not
    /// known yet) as parts of `step` bytes each (the last one shorter), which must be a
    /// power of two of at least 1 KiB.
    pub fn parted_writer(
        &self,
        exec: bool,
        digest: Option<Digest>,
        size: u64,
        step: u64,
    ) -> Result<PartedWriter<'_>> {
        if !step.is_power_of_two() || step < blake3::CHUNK_LEN as u64 {
            return Err(Error::Parts {
                digest: digest.map_or_else(|| "(not known yet)".to_owned(), |d| d.to_string()),
                reason: format!(
                    "a part size must be a power of two of at least {} bytes, not {step}",
                    blake3::CHUNK_LEN
                ),
            });
        }
        let name = digest.map_or_else(|| "(not known yet)".to_owned(), |d| d.to_string());
        self.room_for(&name, size)?;
        let parts = size.div_ceil(step).max(1);
        if let Some(digest) = digest
            && let Some(resumable) = self.resumable_parts(exec, digest, size, step, parts)?
        {
            return Ok(resumable);
        }
        let writer = self.writer(exec, digest.map(|d| (d, size)))?;
        Ok(PartedWriter {
            writer,
            digest,
            size,
            step,
            parts,
            done: Mutex::default(),
            ledger: None,
            resumed: 0,
        })
    }

    /// The writer of `tmp/<digest>.ranges`, with the parts its ledger names re-hashed;
    /// `None` when another writer holds it (this one then writes a private file).
    fn resumable_parts(
        &self,
        exec: bool,
        digest: Digest,
        size: u64,
        step: u64,
        parts: u64,
    ) -> Result<Option<PartedWriter<'_>>> {
        let base = format!("{digest}{}{RANGES}", if exec { ".x" } else { "" });
        let ledger_name = format!("{digest}{}{LEDGER}", if exec { ".x" } else { "" });
        let open = |name: &str| {
            rustix::fs::openat(
                &self.tmp,
                name,
                OFlags::RDWR | OFlags::CREATE | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                rustix::fs::Mode::from_raw_mode(0o600),
            )
            .map(File::from)
            .io("create", self.tmp_path(name))
        };
        let file = open(&base)?;
        match rustix::fs::flock(&file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(Errno::WOULDBLOCK) => return Ok(None),
            Err(e) => return Err(e).io("lock", self.tmp_path(&base)),
        }
        let mut ledger = open(&ledger_name)?;
        let mut recorded = Vec::new();
        ledger
            .read_to_end(&mut recorded)
            .io("read", self.tmp_path(&ledger_name))?;
        let header = [step.to_le_bytes(), size.to_le_bytes()].concat();
        let mut indexes: Vec<u64> = Vec::new();
        if recorded.len() >= 16 && recorded[..16] == header[..] {
            indexes = recorded[16..]
                .chunks_exact(8)
                .filter_map(|c| c.try_into().ok().map(u64::from_le_bytes))
                .filter(|i| *i < parts)
                .collect();
            indexes.sort_unstable();
            indexes.dedup();
        } else {
            file.set_len(0).io("truncate", self.tmp_path(&base))?;
            ledger
                .set_len(0)
                .io("truncate", self.tmp_path(&ledger_name))?;
            ledger
                .write_all(&header)
                .io("write", self.tmp_path(&ledger_name))?;
        }
        let mut done = Done::default();
        for &index in &indexes {
            let start = index * step;
            let end = (start + step).min(size);
            let mut hasher = blake3::Hasher::new();
            hasher.set_input_offset(start);
            let mut at = start;
            let mut buf = vec![0; usize::try_from(end - start).unwrap_or(1 << 20).min(1 << 20)];
            while at < end {
                let want = usize::try_from(end - at)
                    .unwrap_or(buf.len())
                    .min(buf.len());
                let n = file
                    .read_at(&mut buf[..want], at)
                    .io("read", self.tmp_path(&base))?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
                at += n as u64;
            }
            if at < end {
                continue; // shorter than the ledger says: fetch the part again
            }
            if parts == 1 {
                done.whole = Some(hasher);
            } else {
                done.parts.insert(index, hasher.finalize_non_root());
            }
        }
        let resumed = (done.parts.len() + usize::from(done.whole.is_some())) as u64;
        if resumed > 0 {
            tracing::info!(%digest, resumed, parts, "resuming a blob fetched in parts");
        }
        let writer = self.resumable_writer(base, file, exec, (digest, size));
        Ok(Some(PartedWriter {
            writer,
            digest: Some(digest),
            size,
            step,
            parts,
            done: Mutex::new(done),
            ledger: Some((ledger_name, Mutex::new(ledger))),
            resumed,
        }))
    }
}

impl<'s> PartedWriter<'s> {
    /// The byte ranges of the parts, in order.
    pub fn ranges(&self) -> impl Iterator<Item = Range<u64>> + use<> {
        let (step, size) = (self.step, self.size);
        (0..self.parts).map(move |i| i * step..((i + 1) * step).min(size))
    }

    /// The parts still to write (all but those an interrupted writer completed), with
    /// their indexes.
    pub fn pending(&self) -> Vec<(u64, Range<u64>)> {
        let done = self.done.lock().unwrap_or_else(PoisonError::into_inner);
        (0..self.parts)
            .zip(self.ranges())
            .filter(|(i, _)| {
                if self.parts == 1 {
                    done.whole.is_none()
                } else {
                    !done.parts.contains_key(i)
                }
            })
            .collect()
    }

    /// Parts that an interrupted earlier writer completed, kept.
    pub fn resumed(&self) -> u64 {
        self.resumed
    }

    /// Part `index`, to be written from its start.
    pub fn part(&self, index: u64) -> Part<'_, 's> {
        let start = index * self.step;
        let mut hasher = blake3::Hasher::new();
        hasher.set_input_offset(start);
        Part {
            parent: self,
            index,
            range: start..(start + self.step).min(self.size),
            at: start,
            hasher,
        }
    }

    /// Checks that every part is complete and that together they hash to the expected
    /// digest, then stages the blob like [`BlobWriter::finish_staged`]. Wrong bytes are
    /// removed.
    pub fn finish_staged(self) -> Result<Staged> {
        let digest = self.name();
        self.remove_ledger();
        let done = self
            .done
            .into_inner()
            .unwrap_or_else(PoisonError::into_inner);
        let actual = match done.whole {
            Some(whole) if self.parts == 1 => Some(Digest::from(whole.finalize())),
            _ if done.parts.len() as u64 == self.parts => {
                Some(combine(&done.parts, self.step, self.size))
            }
            _ => None,
        };
        let Some(actual) = actual else {
            self.writer.discard();
            return Err(Error::Parts {
                digest,
                reason: "a part was not written".into(),
            });
        };
        // The ledger is done with either way: the blob is staged, or its wrong bytes go.
        self.writer.finish_hashed(self.size, actual)
    }

    /// Drops what was written.
    pub fn discard(self) {
        self.remove_ledger();
        self.writer.discard();
    }

    fn remove_ledger(&self) {
        if let Some((name, _)) = &self.ledger {
            let _ = rustix::fs::unlinkat(&self.writer.store().tmp, name, AtFlags::empty());
        }
    }

    /// Reads the bytes written so far, in order, in chunks: for a caller that must check
    /// them against another digest (W&B's MD5) before [`Self::finish_staged`].
    pub fn read_back(&self, mut each: impl FnMut(&[u8])) -> Result<()> {
        let mut buf = vec![0; 1 << 20];
        let mut at = 0;
        while at < self.size {
            let n = self
                .writer
                .file()
                .read_at(&mut buf, at)
                .io("read back", self.writer.path())?;
            if n == 0 {
                break;
            }
            each(&buf[..n]);
            at += n as u64;
        }
        Ok(())
    }

    fn name(&self) -> String {
        self.digest
            .map_or_else(|| "(not known yet)".to_owned(), |d| d.to_string())
    }
}

/// The digest of a blob of `size` bytes (more than one part) from the chaining values of
/// its parts of `step` bytes.
fn combine(cvs: &HashMap<u64, [u8; 32]>, step: u64, size: u64) -> Digest {
    let left = left_subtree_len(size);
    let (l, r) = (
        subtree(cvs, step, 0, left),
        subtree(cvs, step, left, size - left),
    );
    Digest::from(merge_subtrees_root(&l, &r, Mode::Hash))
}

/// The chaining value of the subtree of `len` bytes at `start`, from the parts' values.
fn subtree(cvs: &HashMap<u64, [u8; 32]>, step: u64, start: u64, len: u64) -> [u8; 32] {
    if len <= step {
        return cvs[&(start / step)];
    }
    let left = left_subtree_len(len);
    merge_subtrees_non_root(
        &subtree(cvs, step, start, left),
        &subtree(cvs, step, start + left, len - left),
        Mode::Hash,
    )
}

impl Part<'_, '_> {
    pub fn range(&self) -> Range<u64> {
        self.range.clone()
    }

    /// Appends `data` to the part.
    pub fn write(&mut self, data: &[u8]) -> Result<()> {
        let end = self.at + data.len() as u64;
        if end > self.range.end {
            return Err(Error::SizeMismatch {
                digest: self.parent.name(),
                expected: self.range.end - self.range.start,
                actual: end - self.range.start,
            });
        }
        self.hasher.update(data);
        let writer = &self.parent.writer;
        writer
            .file()
            .write_all_at(data, self.at)
            .io("write", writer.path())?;
        self.at = end;
        Ok(())
    }

    /// Marks the part complete; it must have all its bytes.
    pub fn finish(self) -> Result<()> {
        if self.at != self.range.end {
            return Err(Error::SizeMismatch {
                digest: self.parent.name(),
                expected: self.range.end - self.range.start,
                actual: self.at - self.range.start,
            });
        }
        let mut done = self
            .parent
            .done
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if self.parent.parts == 1 {
            done.whole = Some(self.hasher);
        } else {
            done.parts
                .insert(self.index, self.hasher.finalize_non_root());
        }
        drop(done);
        crate::sys::start_writeback(self.parent.writer.file(), self.range.clone());
        if let Some((name, ledger)) = &self.parent.ledger {
            ledger
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .write_all(&self.index.to_le_bytes())
                .io("write", self.parent.writer.store().tmp_path(name))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest_by_parts(data: &[u8], step: u64) -> Digest {
        let size = data.len() as u64;
        let parts = size.div_ceil(step).max(1);
        let hashers: Vec<_> = (0..parts)
            .map(|i| {
                let start = i * step;
                let end = (start + step).min(size);
                let mut h = blake3::Hasher::new();
                h.set_input_offset(start);
                h.update(&data[start as usize..end as usize]);
                h
            })
            .collect();
        if let [only] = hashers.as_slice() {
            return Digest::from(only.finalize());
        }
        let cvs = (0..parts)
            .zip(&hashers)
            .map(|(i, h)| (i, h.finalize_non_root()))
            .collect();
        combine(&cvs, step, size)
    }

    #[test]
    fn merged_parts_equal_the_plain_digest() {
        let data: Vec<u8> = (0..70_000u32).map(|i| (i * 7 % 251) as u8).collect();
        for step in [1024u64, 2048, 4096, 16384] {
            for len in [
                0,
                1,
                1023,
                1024,
                1025,
                2048,
                3000,
                4096,
                4097,
                5 * 4096,
                5 * 4096 + 1,
                16384,
                16385,
                33_333,
                65_536,
                70_000,
            ] {
                let slice = &data[..len];
                assert_eq!(
                    digest_by_parts(slice, step),
                    Digest::of(slice),
                    "len {len}, step {step}"
                );
            }
        }
    }
}
