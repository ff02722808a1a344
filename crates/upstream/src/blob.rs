//! [`BlobStream`]: the bytes of one blob (or a byte range of it) from any upstream, checked
//! as they arrive.
//!
//! Each upstream supplies a [`ChunkSource`]; the stream around it counts the bytes and
//! hashes them when the whole blob was asked for. It ends with `Ok(None)` only when the
//! count matches and, for a whole blob, the digest does too: blake3, or for a file an
//! upstream names by MD5 (W&B) before hoard knows its blake3, MD5. Callers write chunks
//! somewhere private and make them visible only after that end: a body that breaks off
//! early, runs long or hashes wrong is an error, never a short success.

use std::ops::Range;

use bytes::Bytes;
use hoard_types::{Digest, ForeignDigest};

use crate::Error;

/// A boxed future, so that the traits (and chunk sources) can be used as `dyn` objects.
pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Where a [`BlobStream`] gets its bytes.
pub(crate) trait ChunkSource: Send {
    /// The next chunk, or `None` at the end of the body. `offset` is the blob offset of the
    /// next byte the stream still needs, so a source can resume a broken transfer there.
    fn next_chunk(&mut self, offset: u64) -> BoxFuture<'_, Result<Option<Bytes>, Error>>;
}

/// A verified stream of a blob's bytes; see the module docs.
pub struct BlobStream {
    digest: Digest,
    range: Range<u64>,
    received: u64,
    /// Only when the whole blob is streamed: a range cannot be checked on its own (the
    /// caller checks the blob it assembles from ranges).
    hasher: Option<Hasher>,
    source: Box<dyn ChunkSource>,
    done: bool,
    /// What the stream is called in errors.
    what: String,
}

/// What the bytes of a whole blob are checked against.
enum Hasher {
    Blake3(Box<blake3::Hasher>),
    /// The digest the upstream claims (the blake3 digest is not known yet).
    Foreign(Box<ForeignCheck>, ForeignDigest),
}

/// Hashes bytes the way an upstream named them: MD5 (W&B), SHA-256 (the Hub's LFS files),
/// git's blob SHA-1 (the Hub's other files).
pub struct ForeignCheck(Algorithm);

enum Algorithm {
    Md5(md5::Md5),
    Sha256(ring::digest::Context),
    GitSha1(ring::digest::Context),
}

impl ForeignCheck {
    /// A check for bytes claimed to be `digest` and `size` bytes long, or `None` for a
    /// digest that is not computed from the bytes (an ETag).
    pub fn new(digest: &ForeignDigest, size: u64) -> Option<Self> {
        use md5::Digest as _;
        Some(Self(match digest {
            ForeignDigest::Md5(_) => Algorithm::Md5(md5::Md5::new()),
            ForeignDigest::Sha256(_) => {
                Algorithm::Sha256(ring::digest::Context::new(&ring::digest::SHA256))
            }
            ForeignDigest::GitSha1(_) => {
                let mut context =
                    ring::digest::Context::new(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY);
                context.update(format!("blob {size}\0").as_bytes());
                Algorithm::GitSha1(context)
            }
            ForeignDigest::Etag(_) => return None,
        }))
    }

    pub fn update(&mut self, bytes: &[u8]) {
        match &mut self.0 {
            Algorithm::Md5(hasher) => md5::Digest::update(hasher, bytes),
            Algorithm::Sha256(context) | Algorithm::GitSha1(context) => context.update(bytes),
        }
    }

    /// The digest of the bytes seen, in the claimed digest's algorithm.
    pub fn finish(self) -> ForeignDigest {
        match self.0 {
            Algorithm::Md5(hasher) => ForeignDigest::Md5(md5::Digest::finalize(hasher).into()),
            Algorithm::Sha256(context) => ForeignDigest::Sha256(
                context
                    .finish()
                    .as_ref()
                    .try_into()
                    .expect("SHA-256 is 32 bytes"),
            ),
            Algorithm::GitSha1(context) => ForeignDigest::GitSha1(
                context
                    .finish()
                    .as_ref()
                    .try_into()
                    .expect("SHA-1 is 20 bytes"),
            ),
        }
    }
}

impl std::fmt::Debug for BlobStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobStream")
            .field("digest", &self.digest)
            .field("range", &self.range)
            .field("received", &self.received)
            .finish_non_exhaustive()
    }
}

/// Checks a requested range against the blob's size: `start < end <= size`. `None` means
/// the whole blob.
pub(crate) fn check_range(
    digest: &Digest,
    size: u64,
    range: Option<Range<u64>>,
) -> Result<Range<u64>, Error> {
    match range {
        None => Ok(0..size),
        Some(r) if r.start < r.end && r.end <= size => Ok(r),
        Some(r) => Err(Error::BadRange {
            digest: *digest,
            start: r.start,
            end: r.end,
            size,
        }),
    }
}

impl BlobStream {
    /// `range` must have passed [`check_range`] for a blob of `size` bytes.
    pub(crate) fn new(
        digest: Digest,
        size: u64,
        range: Range<u64>,
        source: Box<dyn ChunkSource>,
    ) -> Self {
        let whole = range.start == 0 && range.end == size;
        Self {
            digest,
            range,
            received: 0,
            hasher: whole.then(|| Hasher::Blake3(Box::default())),
            source,
            done: false,
            what: format!("Blob `{digest}`"),
        }
    }

    /// A byte range of a file whose digest is not known yet: counted, not hashed (the
    /// caller checks the file it assembles).
    pub(crate) fn part(range: Range<u64>, what: String, source: Box<dyn ChunkSource>) -> Self {
        Self {
            digest: Digest::from_bytes([0; 32]),
            range,
            received: 0,
            hasher: None,
            source,
            done: false,
            what,
        }
    }

    /// The whole of a file the upstream names by `claimed`, checked against it (only its
    /// size, for an ETag): the caller hashes the bytes with blake3 as it writes them.
    /// `what` names the file in errors.
    pub(crate) fn foreign(
        claimed: ForeignDigest,
        size: u64,
        what: String,
        source: Box<dyn ChunkSource>,
    ) -> Self {
        Self {
            // Not known yet: only `Self::digest` shows it, and callers of a foreign stream
            // learn the digest from what they write.
            digest: Digest::from_bytes([0; 32]),
            range: 0..size,
            received: 0,
            hasher: ForeignCheck::new(&claimed, size)
                .map(|check| Hasher::Foreign(Box::new(check), claimed)),
            source,
            done: false,
            what,
        }
    }

    pub fn digest(&self) -> &Digest {
        &self.digest
    }

    /// The byte range of the blob this stream delivers.
    pub fn range(&self) -> Range<u64> {
        self.range.clone()
    }

    /// Bytes delivered so far.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// The next chunk; `Ok(None)` once every byte arrived and checked out.
    pub async fn next_chunk(&mut self) -> Result<Option<Bytes>, Error> {
        if self.done {
            return Ok(None);
        }
        let expected = self.range.end - self.range.start;
        loop {
            let offset = self.range.start + self.received;
            match self.source.next_chunk(offset).await? {
                Some(chunk) if chunk.is_empty() => {}
                Some(chunk) => {
                    if self.received + chunk.len() as u64 > expected {
                        return Err(Error::LongBody {
                            blob: self.what.clone(),
                            expected,
                        });
                    }
                    match &mut self.hasher {
                        Some(Hasher::Blake3(hasher)) => {
                            hasher.update(&chunk);
                        }
                        Some(Hasher::Foreign(check, _)) => check.update(&chunk),
                        None => {}
                    }
                    self.received += chunk.len() as u64;
                    return Ok(Some(chunk));
                }
                None => {
                    if self.received < expected {
                        return Err(Error::ShortBody {
                            blob: self.what.clone(),
                            expected,
                            received: self.received,
                        });
                    }
                    match self.hasher.take() {
                        Some(Hasher::Blake3(hasher)) => {
                            let actual = Digest::from(hasher.finalize());
                            if actual != self.digest {
                                return Err(Error::DigestMismatch {
                                    digest: self.digest,
                                    actual,
                                });
                            }
                        }
                        Some(Hasher::Foreign(check, claimed)) => {
                            let actual = (*check).finish();
                            if actual != claimed {
                                return Err(Error::ForeignMismatch {
                                    blob: self.what.clone(),
                                    expected: claimed.to_string(),
                                    actual: actual.to_string(),
                                });
                            }
                        }
                        None => {}
                    }
                    self.done = true;
                    return Ok(None);
                }
            }
        }
    }

    /// Reads the rest into memory: for tests and small blobs only.
    pub async fn read_to_vec(mut self) -> Result<Vec<u8>, Error> {
        let mut out = Vec::new();
        while let Some(chunk) = self.next_chunk().await? {
            out.extend_from_slice(&chunk);
        }
        Ok(out)
    }
}

/// A part must lie within the file.
pub(crate) fn check_part(range: &Range<u64>, size: u64, what: &str) -> Result<Range<u64>, Error> {
    if range.start < range.end && range.end <= size {
        Ok(range.clone())
    } else {
        Err(Error::Protocol {
            upstream: what.to_owned(),
            reason: format!("bytes {}..{} of a file of {size}", range.start, range.end),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use super::*;

    struct Chunks(VecDeque<&'static [u8]>);

    impl ChunkSource for Chunks {
        fn next_chunk(&mut self, _offset: u64) -> BoxFuture<'_, Result<Option<Bytes>, Error>> {
            let next = self.0.pop_front().map(Bytes::from_static);
            Box::pin(async move { Ok(next) })
        }
    }

    fn stream(data: &[u8], chunks: &[&'static [u8]], range: Option<Range<u64>>) -> BlobStream {
        let digest = Digest::of(data);
        let range = check_range(&digest, data.len() as u64, range).unwrap();
        BlobStream::new(
            digest,
            data.len() as u64,
            range,
            Box::new(Chunks(chunks.iter().copied().collect())),
        )
    }

    fn run<T>(f: impl Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn whole_blob_is_hashed_and_counted() {
        let ok = run(stream(b"hello world", &[b"hello ", b"", b"world"], None).read_to_vec());
        assert_eq!(ok.unwrap(), b"hello world");

        let wrong = run(stream(b"hello world", &[b"hello WORLD"], None).read_to_vec());
        assert!(
            matches!(wrong, Err(Error::DigestMismatch { .. })),
            "{wrong:?}"
        );

        let short = run(stream(b"hello world", &[b"hello"], None).read_to_vec());
        assert!(
            matches!(
                short,
                Err(Error::ShortBody {
                    received: 5,
                    expected: 11,
                    ..
                })
            ),
            "{short:?}"
        );

        let long = run(stream(b"hello", &[b"hello", b"!"], None).read_to_vec());
        assert!(matches!(long, Err(Error::LongBody { .. })), "{long:?}");
    }

    /// The Hub's digests: SHA-256 for LFS files, git's blob SHA-1 for the others (the
    /// values `sha256sum` and `git hash-object` give for "hello world").
    #[test]
    fn sha256_and_git_sha1_streams_check_the_claimed_digest() {
        for claimed in [
            "sha256:b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9",
            "gitsha1:95d09f2b10159347eece71399a7e2e907ea3df4f",
        ] {
            let claimed: ForeignDigest = claimed.parse().unwrap();
            let open = |chunks: &[&'static [u8]]| {
                BlobStream::foreign(
                    claimed.clone(),
                    11,
                    "`a.txt`".into(),
                    Box::new(Chunks(chunks.iter().copied().collect())),
                )
            };
            assert_eq!(
                run(open(&[b"hello", b" world"]).read_to_vec()).unwrap(),
                b"hello world",
                "{claimed}"
            );
            let wrong = run(open(&[b"hello World"]).read_to_vec()).unwrap_err();
            assert!(matches!(wrong, Error::ForeignMismatch { .. }), "{wrong:?}");
        }
    }

    #[test]
    fn md5_streams_check_the_claimed_md5() {
        use md5::Digest as _;
        let claimed = ForeignDigest::Md5(md5::Md5::digest(b"hello world").into());
        let md5 = |chunks: &[&'static [u8]]| {
            BlobStream::foreign(
                claimed.clone(),
                11,
                "`a.txt`".into(),
                Box::new(Chunks(chunks.iter().copied().collect())),
            )
        };
        assert_eq!(
            run(md5(&[b"hello ", b"world"]).read_to_vec()).unwrap(),
            b"hello world"
        );
        let wrong = run(md5(&[b"hello WORLD"]).read_to_vec()).unwrap_err();
        assert!(matches!(wrong, Error::ForeignMismatch { .. }), "{wrong:?}");
        assert!(wrong.to_string().contains("`a.txt`"), "{wrong}");
        let short = run(md5(&[b"hello"]).read_to_vec()).unwrap_err();
        assert!(matches!(short, Error::ShortBody { .. }), "{short:?}");
    }

    #[test]
    fn ranges_are_counted_not_hashed() {
        let ok = run(stream(b"hello world", &[b"lo w"], Some(3..7)).read_to_vec());
        assert_eq!(ok.unwrap(), b"lo w");
        let short = run(stream(b"hello world", &[b"lo"], Some(3..7)).read_to_vec());
        assert!(matches!(short, Err(Error::ShortBody { .. })));
    }

    #[test]
    fn bad_ranges_are_refused() {
        let d = Digest::of(b"x");
        for (start, end) in [(5, 5), (6, 5), (0, 11)] {
            assert!(check_range(&d, 10, Some(start..end)).is_err());
        }
        assert_eq!(check_range(&d, 10, None).unwrap(), 0..10);
        assert_eq!(check_range(&d, 0, None).unwrap(), 0..0);
    }
}
