//! `hoard registry import`: a local directory tree becomes a version in a `dir://` root,
//! without a server.
//!
//! Files are copied (never moved or linked: a later edit of the source must not change a
//! stored blob) and hashed in the same pass, in parallel. Durability is batched: a chunk of
//! blobs is written to `tmp/`, one `syncfs`, renamed into `blobs/`; after the last chunk
//! one more `syncfs`, and only then is the version committed, so a blob file never holds
//! bytes that are not durable and a version never names a blob that is not. Chunks bound
//! the files open at once (a 20,000-file tree ran out of descriptors without them).

use std::fs;
use std::path::{Path, PathBuf};

use hoard_types::registry::{CommitRequest, Committed};
use hoard_types::{ArtifactName, Entry, Manifest, RelPath};
use hoard_upstream::DirRoot;
use rayon::prelude::*;

/// Files staged (and so open) at once.
const CHUNK: usize = 512;

/// Why an import failed.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("Cannot import `{}`: {reason}", path.display())]
    Source { path: PathBuf, reason: String },
    #[error(transparent)]
    Upstream(#[from] hoard_upstream::Error),
    #[error(transparent)]
    Invalid(#[from] hoard_types::Error),
}

/// A file found under the source directory.
struct Found {
    logical: RelPath,
    path: PathBuf,
    exec: bool,
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
    let mut found = Vec::new();
    walk(src, "", &mut found)?;
    let mut manifest = Manifest::new();
    let mut found = found.into_iter().peekable();
    while found.peek().is_some() {
        let chunk: Vec<Found> = found.by_ref().take(CHUNK).collect();
        let staged = chunk
            .into_par_iter()
            .map(|file| {
                let staged = root.stage_file(&file.path)?;
                Ok((file, staged))
            })
            .collect::<Result<Vec<_>, hoard_upstream::Error>>()?;
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

/// Regular files under `dir` (symlinks to files are followed; to directories refused, as
/// they may loop), with their logical paths.
fn walk(dir: &Path, prefix: &str, found: &mut Vec<Found>) -> Result<(), ImportError> {
    let mut entries = fs::read_dir(dir)
        .map_err(|e| source(dir, e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| source(dir, e.to_string()))?;
    entries.sort_by_key(fs::DirEntry::file_name);
    for entry in entries {
        let path = entry.path();
        let Ok(file_name) = entry.file_name().into_string() else {
            return Err(source(&path, "the name is not UTF-8".to_owned()));
        };
        let logical = if prefix.is_empty() {
            file_name
        } else {
            format!("{prefix}/{file_name}")
        };
        let link = entry
            .file_type()
            .map_err(|e| source(&path, e.to_string()))?
            .is_symlink();
        let meta = fs::metadata(&path).map_err(|e| source(&path, e.to_string()))?;
        if meta.is_dir() {
            if link {
                return Err(source(
                    &path,
                    "it is a symlink to a directory; copy the directory in instead".to_owned(),
                ));
            }
            walk(&path, &logical, found)?;
        } else if meta.is_file() {
            use std::os::unix::fs::PermissionsExt;
            found.push(Found {
                logical: RelPath::new(logical)?,
                path,
                exec: meta.permissions().mode() & 0o111 != 0,
            });
        } else {
            return Err(source(
                &path,
                "it is not a regular file or directory".to_owned(),
            ));
        }
    }
    Ok(())
}
