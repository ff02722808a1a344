//! Local inputs of a new version: the files and directory trees on this machine that
//! `hoard registry import` and `hoard publish` turn into manifest entries.
//!
//! Rules (the same for both commands):
//! - a file is added at its file name (W&B's `add_file`), a directory as its tree
//!   (`add_dir`); `NAME=PATH` puts a file at the logical path `NAME`, or a tree under
//!   `NAME/`;
//! - inside a directory, a symlink to a file is followed when its target is inside that
//!   same directory, and refused when it points outside it (publishing should never pick
//!   up bytes from elsewhere by accident); a symlink to a directory is refused (it may
//!   loop);
//! - sockets, devices and FIFOs are refused, as are names that are not UTF-8 and two
//!   inputs that give the same logical path.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use hoard_types::RelPath;

/// One input as given: a path, and the logical path to put it at (`NAME=PATH`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalInput {
    pub logical: Option<String>,
    pub path: PathBuf,
}

impl LocalInput {
    /// Parses `PATH` or `NAME=PATH`.
    pub fn parse(text: &str) -> Self {
        match text.split_once('=') {
            Some((name, path)) if !name.is_empty() && !path.is_empty() => Self {
                logical: Some(name.trim_end_matches('/').to_owned()),
                path: PathBuf::from(path),
            },
            _ => Self {
                logical: None,
                path: PathBuf::from(text),
            },
        }
    }
}

/// A file to add: where it goes in the version, where its bytes are, its exec bit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalFile {
    pub logical: RelPath,
    pub path: PathBuf,
    pub exec: bool,
}

/// Why a local input cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("Cannot add `{}`: {reason}", path.display())]
pub struct LocalError {
    pub path: PathBuf,
    pub reason: String,
}

fn refuse(path: &Path, reason: impl Into<String>) -> LocalError {
    LocalError {
        path: path.to_owned(),
        reason: reason.into(),
    }
}

/// Every file the inputs name, sorted by logical path.
pub fn collect(inputs: &[LocalInput]) -> Result<Vec<LocalFile>, LocalError> {
    let mut found: BTreeMap<RelPath, LocalFile> = BTreeMap::new();
    let mut add = |file: LocalFile| {
        if let Some(first) = found.get(&file.logical) {
            return Err(refuse(
                &file.path,
                format!(
                    "its logical path `{}` is also given by `{}`",
                    file.logical,
                    first.path.display()
                ),
            ));
        }
        found.insert(file.logical.clone(), file);
        Ok(())
    };
    for input in inputs {
        let path = &input.path;
        let link = fs::symlink_metadata(path).map_err(|e| refuse(path, e.to_string()))?;
        let meta = fs::metadata(path).map_err(|e| refuse(path, e.to_string()))?;
        if meta.is_dir() {
            if link.file_type().is_symlink() {
                return Err(refuse(
                    path,
                    "it is a symlink to a directory; name the directory itself",
                ));
            }
            let top = fs::canonicalize(path).map_err(|e| refuse(path, e.to_string()))?;
            let prefix = input.logical.clone().unwrap_or_default();
            walk(&top, path, &prefix, &mut add)?;
        } else if meta.is_file() {
            let logical = match &input.logical {
                Some(name) => name.clone(),
                None => path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .ok_or_else(|| refuse(path, "the file name is not UTF-8"))?
                    .to_owned(),
            };
            add(LocalFile {
                logical: RelPath::new(&logical).map_err(|e| refuse(path, e.to_string()))?,
                path: path.clone(),
                exec: meta.permissions().mode() & 0o111 != 0,
            })?;
        } else {
            return Err(refuse(path, "it is not a regular file or directory"));
        }
    }
    Ok(found.into_values().collect())
}

/// The files under `dir` (canonical `top` is the input directory), at `prefix/…`.
fn walk(
    top: &Path,
    dir: &Path,
    prefix: &str,
    add: &mut impl FnMut(LocalFile) -> Result<(), LocalError>,
) -> Result<(), LocalError> {
    let mut entries = fs::read_dir(dir)
        .map_err(|e| refuse(dir, e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| refuse(dir, e.to_string()))?;
    entries.sort_by_key(fs::DirEntry::file_name);
    for entry in entries {
        let path = entry.path();
        let Ok(name) = entry.file_name().into_string() else {
            return Err(refuse(&path, "the name is not UTF-8"));
        };
        let logical = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        let kind = entry
            .file_type()
            .map_err(|e| refuse(&path, e.to_string()))?;
        if kind.is_dir() {
            walk(top, &path, &logical, add)?;
            continue;
        }
        if kind.is_symlink() {
            let target = fs::canonicalize(&path)
                .map_err(|e| refuse(&path, format!("a broken symlink ({e})")))?;
            if !target.starts_with(top) {
                return Err(refuse(
                    &path,
                    format!(
                        "it is a symlink to `{}`, outside `{}`; copy the file in, or add it as its own input",
                        target.display(),
                        top.display()
                    ),
                ));
            }
        }
        let meta = fs::metadata(&path).map_err(|e| refuse(&path, e.to_string()))?;
        if meta.is_dir() {
            return Err(refuse(
                &path,
                "it is a symlink to a directory (it may loop); name the directory itself",
            ));
        }
        if !meta.is_file() {
            return Err(refuse(&path, "it is not a regular file or directory"));
        }
        add(LocalFile {
            logical: RelPath::new(&logical).map_err(|e| refuse(&path, e.to_string()))?,
            path,
            exec: meta.permissions().mode() & 0o111 != 0,
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    fn names(files: &[LocalFile]) -> Vec<&str> {
        files.iter().map(|f| f.logical.as_str()).collect()
    }

    #[test]
    fn files_trees_and_named_inputs() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        fs::create_dir_all(d.join("data/sub")).unwrap();
        fs::write(d.join("data/a.txt"), b"a").unwrap();
        fs::write(d.join("data/sub/b.txt"), b"b").unwrap();
        fs::write(d.join("model.h5"), b"m").unwrap();
        symlink("a.txt", d.join("data/alias.txt")).unwrap();
        let input = LocalInput::parse;
        let files = collect(&[
            input(d.join("data").to_str().unwrap()),
            input(d.join("model.h5").to_str().unwrap()),
            input(&format!("weights/best.h5={}", d.join("model.h5").display())),
            input(&format!("copy/={}", d.join("data/sub").display())),
        ])
        .unwrap();
        assert_eq!(
            names(&files),
            [
                "a.txt",
                "alias.txt",
                "copy/b.txt",
                "model.h5",
                "sub/b.txt",
                "weights/best.h5"
            ]
        );
    }

    #[test]
    fn bad_inputs_are_refused_with_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        fs::create_dir_all(d.join("data")).unwrap();
        fs::write(d.join("secret"), b"s").unwrap();
        fs::write(d.join("data/a.txt"), b"a").unwrap();
        let err = |inputs: &[LocalInput]| collect(inputs).unwrap_err().to_string();
        let plain = |p: &Path| LocalInput {
            logical: None,
            path: p.to_owned(),
        };

        assert!(err(&[plain(&d.join("nope"))]).contains("nope"));
        // Two inputs, one logical path.
        let e = err(&[plain(&d.join("data/a.txt")), plain(&d.join("data"))]);
        assert!(e.contains("`a.txt` is also given by"), "{e}");
        // A symlink out of the directory.
        symlink(d.join("secret"), d.join("data/leak")).unwrap();
        let e = err(&[plain(&d.join("data"))]);
        assert!(e.contains("outside"), "{e}");
        fs::remove_file(d.join("data/leak")).unwrap();
        // A symlink to a directory, a FIFO, a hostile logical name.
        symlink(d.join("data"), d.join("data/loop")).unwrap();
        assert!(err(&[plain(&d.join("data"))]).contains("symlink to a directory"));
        fs::remove_file(d.join("data/loop")).unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            d.join("data/fifo"),
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        assert!(err(&[plain(&d.join("data"))]).contains("not a regular file"));
        let e = err(&[LocalInput::parse(&format!(
            "../x={}",
            d.join("secret").display()
        ))]);
        assert!(e.contains(".."), "{e}");
    }
}
