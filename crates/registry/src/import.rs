//! `hoard registry import`: a local directory tree becomes a version in a `dir://` root,
//! without a server.
//!
//! Files are copied (never moved or linked: a later edit of the source must not change a
//! stored blob) and hashed in the same pass, in parallel. Durability is batched: a chunk of
//! blobs is written to `tmp/`, one `syncfs`, renamed into `blobs/`; after the last chunk
//! one more `syncfs`, and only then is the version committed, so a blob file never holds
//! bytes that are not durable and a version never names a blob that is not. Chunks bound
//! the files open at once (a 20,000-file tree ran out of descriptors without them). Which
//! files a tree gives (symlinks, special files) is `hoard_layout::local`'s rule.

use std::fs;
use std::path::{Path, PathBuf};

use hoard_layout::DirRoot;
use hoard_layout::local::{self, LocalFile, LocalInput};
use hoard_types::registry::{CommitRequest, Committed};
use hoard_types::{ArtifactName, Entry, Manifest};
use rayon::prelude::*;

/// Files staged (and so open) at once.
const CHUNK: usize = 512;

/// Why an import failed.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("Cannot import `{}`: {reason}", path.display())]
    Source { path: PathBuf, reason: String },
    #[error(transparent)]
    Layout(#[from] hoard_layout::Error),
    #[error(transparent)]
    Invalid(#[from] hoard_types::Error),
}

/// Imports every file under `src` as a new version of `name` (or finds the identical
/// existing one).
pub fn import_dir(
    root: &DirRoot,
    name: &ArtifactName,
    src: &Path,
    aliases: Vec<String>,
    kind: Option<String>,
    metadata: serde_json::Value,
) -> Result<Committed, ImportError> {
    let meta = fs::metadata(src).map_err(|e| source(src, e.to_string()))?;
    if !meta.is_dir() {
        return Err(source(src, "it is not a directory".to_owned()));
    }
    let found = local::collect(&[LocalInput {
        logical: None,
        path: src.to_owned(),
    }])
    .map_err(|e| source(&e.path, e.reason))?;
    let mut manifest = Manifest::new();
    let mut found = found.into_iter().peekable();
    while found.peek().is_some() {
        let chunk: Vec<LocalFile> = found.by_ref().take(CHUNK).collect();
        let staged = chunk
            .into_par_iter()
            .map(|file| {
                let staged = root.stage_file(&file.path)?;
                Ok((file, staged))
            })
            .collect::<Result<Vec<_>, hoard_layout::Error>>()?;
        root.sync()?;
        for (file, staged) in staged {
            manifest.entries.insert(
                file.logical,
                Entry {
                    digest: staged.digest,
                    exec: file.exec,
                    reference: None,
                    size: staged.size,
                },
            );
            root.keep_staged(staged)?;
        }
    }
    root.sync()?;
    let request = CommitRequest {
        manifest,
        aliases,
        kind,
        metadata,
    };
    Ok(root.commit(name, &request, |_| true)?)
}

fn source(path: &Path, reason: String) -> ImportError {
    ImportError::Source {
        path: path.to_owned(),
        reason,
    }
}
