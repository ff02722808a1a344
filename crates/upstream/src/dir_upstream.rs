//! [`DirRoot`] (the `dir://` layout of `hoard-layout`) as an [`Upstream`]: the blocking
//! layout code run on tokio's blocking pool, its errors as [`Error::Layout`].

use std::ops::Range;
use std::path::{Path, PathBuf};

use bytes::{Bytes, BytesMut};
use hoard_types::registry::{ArtifactList, CommitRequest, Committed, VersionList};
use hoard_types::{ArtifactName, Digest, ProjectName, Selector, Version};
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use crate::blob::{ChunkSource, check_range};
use crate::error::IoContext;
use crate::upstream::check_resolved;
use crate::{BlobSource, BlobStream, BoxFuture, Catalog, Error, Publisher};
use hoard_layout::DirRoot;

/// Read size for blob streams from a directory.
const CHUNK: usize = 256 * 1024;

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, hoard_layout::Error> + Send + 'static,
) -> Result<T, Error> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
        .map_err(Error::from)
}

struct FileChunks {
    file: tokio::fs::File,
    path: PathBuf,
    left: u64,
}

impl ChunkSource for FileChunks {
    fn next_chunk(&mut self, _offset: u64) -> BoxFuture<'_, Result<Option<Bytes>, Error>> {
        Box::pin(async move {
            if self.left == 0 {
                return Ok(None);
            }
            let want = CHUNK.min(usize::try_from(self.left).unwrap_or(CHUNK));
            let mut buf = BytesMut::with_capacity(want);
            let n = (&mut self.file)
                .take(want as u64)
                .read_buf(&mut buf)
                .await
                .io("read", &self.path)?;
            if n == 0 {
                // The file is shorter than it was: the stream reports a short body.
                self.left = 0;
                return Ok(None);
            }
            self.left -= n as u64;
            Ok(Some(buf.freeze()))
        })
    }
}

impl BlobSource for DirRoot {
    fn describe(&self) -> String {
        DirRoot::describe(self)
    }

    fn fetch_blob<'a>(
        &'a self,
        digest: &'a Digest,
        size: u64,
        range: Option<Range<u64>>,
    ) -> BoxFuture<'a, Result<BlobStream, Error>> {
        Box::pin(async move {
            let range = check_range(digest, size, range)?;
            let path = self.blob_path(digest);
            let opened = {
                let path = path.clone();
                tokio::task::spawn_blocking(move || hoard_layout::dir::open_regular(&path))
                    .await
                    .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
            };
            let mut file = match opened {
                Ok(file) => tokio::fs::File::from_std(file),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Err(Error::NotFound {
                        what: format!("blob `{digest}` in `{}`", self.describe()),
                    });
                }
                Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => {
                    return Err(Error::Protocol {
                        upstream: self.describe(),
                        reason: format!("blob `{digest}` (`{}`): {e}", path.display()),
                    });
                }
                Err(e) => return Err(e).io("open", path),
            };
            let stored = file.metadata().await.io("stat", &path)?.len();
            if stored != size {
                return Err(Error::Protocol {
                    upstream: self.describe(),
                    reason: format!("blob `{digest}` has {stored} bytes, the manifest says {size}"),
                });
            }
            file.seek(std::io::SeekFrom::Start(range.start))
                .await
                .io("seek", &path)?;
            let left = range.end - range.start;
            let source = FileChunks { file, path, left };
            Ok(BlobStream::new(*digest, size, range, Box::new(source)))
        })
    }
}

impl Catalog for DirRoot {
    fn resolve<'a>(
        &'a self,
        name: &'a ArtifactName,
        selector: &'a Selector,
    ) -> BoxFuture<'a, Result<Version, Error>> {
        Box::pin(async move {
            let (root, n, s) = (self.clone(), name.clone(), selector.clone());
            let version = blocking(move || root.resolve(&n, &s)).await?;
            check_resolved(&self.describe(), name, selector, &version)?;
            Ok(version)
        })
    }

    fn list<'a>(&'a self, name: &'a ArtifactName) -> BoxFuture<'a, Result<VersionList, Error>> {
        let (root, name) = (self.clone(), name.clone());
        Box::pin(blocking(move || root.list(&name)))
    }

    fn artifacts<'a>(
        &'a self,
        project: &'a ProjectName,
    ) -> BoxFuture<'a, Result<ArtifactList, Error>> {
        let (root, project) = (self.clone(), project.clone());
        Box::pin(blocking(move || root.artifacts(&project)))
    }
}

impl Publisher for DirRoot {
    fn missing_blobs<'a>(
        &'a self,
        digests: &'a [Digest],
    ) -> BoxFuture<'a, Result<Vec<Digest>, Error>> {
        let (root, digests) = (self.clone(), digests.to_vec());
        Box::pin(blocking(move || {
            let mut missing = Vec::new();
            for digest in digests {
                if root.blob_size(&digest)?.is_none() {
                    missing.push(digest);
                }
            }
            Ok(missing)
        }))
    }

    fn upload_blob<'a>(
        &'a self,
        digest: &'a Digest,
        file: &'a Path,
    ) -> BoxFuture<'a, Result<(), Error>> {
        let (root, digest, path) = (self.clone(), *digest, file.to_owned());
        Box::pin(blocking(move || {
            if root.blob_size(&digest)?.is_some() {
                return Ok(());
            }
            let file = hoard_layout::dir::open_regular(&path).map_err(|source| {
                hoard_layout::Error::Io {
                    op: "open",
                    path: path.clone(),
                    source,
                }
            })?;
            let what = format!("The bytes of `{}`", path.display());
            root.put_blob(&digest, None, file, &what).map(drop)
        }))
    }

    fn commit<'a>(
        &'a self,
        name: &'a ArtifactName,
        request: &'a CommitRequest,
    ) -> BoxFuture<'a, Result<Committed, Error>> {
        let (root, name, request) = (self.clone(), name.clone(), request.clone());
        Box::pin(blocking(move || root.commit(&name, &request, |_| true)))
    }

    fn set_alias<'a>(
        &'a self,
        name: &'a ArtifactName,
        alias: &'a str,
        version: u32,
    ) -> BoxFuture<'a, Result<(), Error>> {
        let (root, name, alias) = (self.clone(), name.clone(), alias.to_owned());
        Box::pin(blocking(move || root.set_alias(&name, &alias, version)))
    }
}
