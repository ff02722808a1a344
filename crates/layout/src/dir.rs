//! The `dir://` layout: the hoard registry's own storage, also usable as an upstream by
//! itself (and the embedded default).
//!
//! ```text
//! ROOT/blobs/ab/abcdef…                                    blob bytes, named by blake3 hex
//! ROOT/artifacts/{entity}/{project}/{name}/versions/vN.json  the version JSON
//! ROOT/artifacts/{entity}/{project}/{name}/aliases/{alias}   "vN"
//! ROOT/tmp/                                                 files being written
//! ```
//!
//! Everything is written crash-safely: into `tmp/`, fsync, rename into place, fsync the
//! directory. Blobs are renamed without replacing (bytes named by their digest never
//! change); a version file appears only after every blob it names is durable, and is
//! created without replacing, under an exclusive `flock` on the artifact's directory, so
//! concurrent commits (threads or processes, e.g. `registry serve` and `registry import`)
//! get distinct numbers. Aliases are replaced atomically by rename.
//!
//! The alias files are the truth about aliases; a version file's `aliases` field records
//! only what it got at commit time, and readers fill it from the alias files. `latest`
//! without an alias file means the newest version.
//!
//! Everything read back is untrusted (someone may have edited the directory): version
//! files are validated and must match the path they were found at.
//!
//! Changing this layout breaks every `dir://` root and registry in use: the pinned layout
//! is drawn in `docs/registry.md`, and `crates/layout/tests/it/dir.rs` checks it byte for byte.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use hoard_types::registry::{
    ArtifactList, ArtifactSummary, CommitRequest, Committed, VersionList, VersionSummary,
};
use hoard_types::{ArtifactName, Digest, ProjectName, Selector, Version, check_alias};
use rustix::fs::{FlockOperation, RenameFlags};
use serde::Deserialize;

use crate::error::{Error, IoContext};

/// Read and write buffer for blob copies.
const CHUNK: usize = 256 * 1024;
/// The largest version JSON read from a root (the registry takes commits up to this).
const VERSION_LIMIT: u64 = 256 << 20;
/// The largest alias file read from a root (it holds `vN`).
const ALIAS_LIMIT: u64 = 64;

/// A `dir://` root; see the module docs. Methods block: call them from a blocking task.
#[derive(Clone, Debug)]
pub struct DirRoot {
    root: PathBuf,
}

/// How long an abandoned resumable upload stays in `tmp/`.
const RESUMABLE_KEPT: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// A blob being written in `tmp/`; removed on drop unless kept (or resumable).
#[derive(Debug)]
pub struct TempBlob {
    path: PathBuf,
    file: Option<File>,
    /// A resumable upload's partial: left in `tmp/` on drop.
    resumable: bool,
}

impl TempBlob {
    pub fn file(&mut self) -> &mut File {
        self.file
            .as_mut()
            .expect("the file is present until the blob is kept")
    }

    pub fn write_all(&mut self, data: &[u8]) -> Result<(), Error> {
        let file = self
            .file
            .as_mut()
            .expect("the file is present until the blob is kept");
        file.write_all(data).io("write", &self.path)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn file_ref(&self) -> &File {
        self.file
            .as_ref()
            .expect("the file is present until the blob is kept")
    }

    /// Removes the file, resumable or not (its bytes are wrong).
    pub fn discard(mut self) {
        self.resumable = false;
    }

    /// Renames the file to `target` unless something is there already: `Ok(false)` then,
    /// and the temp file goes when this is dropped.
    fn persist_new(&mut self, target: &Path) -> Result<bool, Error> {
        let flags = RenameFlags::NOREPLACE;
        match rustix::fs::renameat_with(rustix::fs::CWD, &self.path, rustix::fs::CWD, target, flags)
        {
            Ok(()) => {
                self.file = None;
                Ok(true)
            }
            Err(rustix::io::Errno::EXIST) => Ok(false),
            Err(e) => Err(io::Error::from(e)).io("rename into place", target),
        }
    }
}

impl Drop for TempBlob {
    fn drop(&mut self) {
        if self.file.take().is_some() && !self.resumable {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// A file copied into `tmp/` and hashed, waiting to be renamed into `blobs/`.
#[derive(Debug)]
pub struct StagedBlob {
    pub digest: Digest,
    pub size: u64,
    temp: TempBlob,
}

impl DirRoot {
    /// A root at `root`; nothing is read or created yet.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// Creates the root's directories if they are missing.
    pub fn create(root: impl Into<PathBuf>) -> Result<Self, Error> {
        let this = Self::new(root);
        for dir in ["blobs", "artifacts", "tmp"] {
            let path = this.root.join(dir);
            fs::create_dir_all(&path).io("create", &path)?;
        }
        Ok(this)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `blobs/ab/abcdef…`.
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        let hex = digest.to_hex();
        self.root.join("blobs").join(&hex[..2]).join(hex)
    }

    /// The size of a stored blob, or `None` if it is not stored.
    pub fn blob_size(&self, digest: &Digest) -> Result<Option<u64>, Error> {
        let path = self.blob_path(digest);
        match fs::metadata(&path) {
            Ok(meta) if meta.is_file() => Ok(Some(meta.len())),
            Ok(meta) => Err(Error::Corrupt {
                root: self.root.clone(),
                reason: format!(
                    "blob `{digest}` (`{}`) is {}, not a regular file",
                    path.display(),
                    if meta.is_dir() {
                        "a directory"
                    } else {
                        "a special file"
                    }
                ),
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).io("stat", path),
        }
    }

    /// `dir:///path`, for messages.
    pub fn describe(&self) -> String {
        format!("dir://{}", self.root.display())
    }

    /// A new private file in `tmp/`.
    pub fn temp_blob(&self) -> Result<TempBlob, Error> {
        let dir = self.root.join("tmp");
        fs::create_dir_all(&dir).io("create", &dir)?;
        loop {
            let path = dir.join(format!(
                "{}-{:016x}.tmp",
                std::process::id(),
                fastrand::u64(..)
            ));
            match File::options().write(true).create_new(true).open(&path) {
                Ok(file) => {
                    // Held while the file is written: `clean_tmp` removes only files
                    // whose writer is gone.
                    rustix::fs::flock(&file, FlockOperation::NonBlockingLockExclusive)
                        .map_err(io::Error::from)
                        .io("lock", &path)?;
                    return Ok(TempBlob {
                        path,
                        file: Some(file),
                        resumable: false,
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e).io("create", path),
            }
        }
    }

    /// The partial of a resumable upload of `digest` by `owner` (a caller's name), opened
    /// for appending and locked, with its length; `None` when another upload holds it.
    /// It stays in `tmp/` when dropped, so that a broken upload can continue; `clean_tmp`
    /// removes it once it is old and unlocked.
    pub fn resumable_blob(
        &self,
        owner: &str,
        digest: &Digest,
    ) -> Result<Option<(TempBlob, u64)>, Error> {
        let path = self.upload_path(owner, digest);
        let dir = self.root.join("tmp");
        fs::create_dir_all(&dir).io("create", &dir)?;
        let file = File::options()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)
            .io("open", &path)?;
        match rustix::fs::flock(&file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(rustix::io::Errno::WOULDBLOCK) => return Ok(None),
            Err(e) => return Err(io::Error::from(e)).io("lock", &path),
        }
        let len = file.metadata().io("stat", &path)?.len();
        Ok(Some((
            TempBlob {
                path,
                file: Some(file),
                resumable: true,
            },
            len,
        )))
    }

    /// How many bytes of `digest` a resumable upload by `owner` left (0 if none).
    pub fn upload_offset(&self, owner: &str, digest: &Digest) -> Result<u64, Error> {
        let path = self.upload_path(owner, digest);
        match fs::metadata(&path) {
            Ok(meta) => Ok(meta.len()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(e).io("stat", path),
        }
    }

    fn upload_path(&self, owner: &str, digest: &Digest) -> PathBuf {
        let owner = blake3::hash(owner.as_bytes()).to_hex();
        self.root
            .join("tmp")
            .join(format!("upload-{}-{digest}.partial", &owner[..16]))
    }

    /// Makes a fully written temp blob the blob `digest` (the caller verified the
    /// digest). With `sync`, its bytes and its name are durable on return; without, the
    /// caller makes them durable in one pass ([`Self::sync`]) before anything refers to
    /// them. A blob already stored is kept and the temp file removed.
    pub fn keep_blob(&self, mut temp: TempBlob, digest: &Digest, sync: bool) -> Result<(), Error> {
        // Complete and verified: if it cannot become the blob, it goes.
        temp.resumable = false;
        let path = temp.path.clone();
        let file = temp.file();
        file.set_permissions(fs::Permissions::from_mode(0o444))
            .io("chmod", &path)?;
        if sync {
            file.sync_all().io("fsync", &path)?;
        }
        let target = self.blob_path(digest);
        let shard = target.parent().expect("blob paths have a shard directory");
        fs::create_dir_all(shard).io("create", shard)?;
        if !temp.persist_new(&target)? {
            return Ok(());
        }
        if sync {
            sync_dir(shard)?;
        }
        Ok(())
    }

    /// Stores a blob from a stream, verifying size (when known) and digest first; `what`
    /// names the bytes in errors ("the uploaded bytes", "`/data/a.bin`").
    pub fn put_blob(
        &self,
        digest: &Digest,
        size: Option<u64>,
        reader: impl Read,
        what: &str,
    ) -> Result<u64, Error> {
        let staged = self.stage(reader, Path::new("<upload>"))?;
        if staged.digest != *digest {
            return Err(Error::WrongBytes {
                what: what.to_owned(),
                digest: *digest,
                actual: staged.digest,
            });
        }
        if let Some(size) = size
            && size != staged.size
        {
            return Err(Error::WrongSize {
                what: what.to_owned(),
                expected: size,
                received: staged.size,
            });
        }
        let stored = staged.size;
        self.keep_blob(staged.temp, digest, true)?;
        Ok(stored)
    }

    /// Copies a local file into `tmp/`, hashing it on the way (one read).
    pub fn stage_file(&self, path: &Path) -> Result<StagedBlob, Error> {
        let file = open_regular(path).io("open", path)?;
        self.stage(file, path)
    }

    fn stage(&self, mut reader: impl Read, what: &Path) -> Result<StagedBlob, Error> {
        let mut temp = self.temp_blob()?;
        let mut hasher = blake3::Hasher::new();
        let mut buf = vec![0; CHUNK];
        let mut size = 0u64;
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e).io("read", what),
            };
            hasher.update(&buf[..n]);
            temp.write_all(&buf[..n])?;
            size += n as u64;
        }
        Ok(StagedBlob {
            digest: hasher.finalize().into(),
            size,
            temp,
        })
    }

    /// Keeps a staged blob without syncing; see [`Self::keep_blob`].
    pub fn keep_staged(&self, staged: StagedBlob) -> Result<(), Error> {
        self.keep_blob(staged.temp, &staged.digest, false)
    }

    /// Makes everything written under the root durable (one `syncfs`).
    pub fn sync(&self) -> Result<(), Error> {
        let dir = File::open(&self.root).io("open", &self.root)?;
        rustix::fs::syncfs(&dir)
            .map_err(io::Error::from)
            .io("sync", &self.root)
    }

    fn artifact_dir(&self, name: &ArtifactName) -> PathBuf {
        self.root
            .join("artifacts")
            .join(&name.entity)
            .join(&name.project)
            .join(&name.name)
    }

    fn not_found(name: &ArtifactName, selector: Option<&Selector>) -> Error {
        Error::NotFound {
            what: match selector {
                Some(selector) => format!("artifact `{name}{selector}`"),
                None => format!("artifact `{name}`"),
            },
        }
    }

    /// Version numbers present, ascending.
    pub fn version_numbers(&self, name: &ArtifactName) -> Result<Vec<u32>, Error> {
        let dir = self.artifact_dir(name).join("versions");
        let mut numbers = Vec::new();
        for file in read_dir_names(&dir)? {
            if let Some(Ok(Selector::Version(n))) =
                file.strip_suffix(".json").map(Selector::parse_tag)
            {
                numbers.push(n);
            }
        }
        numbers.sort_unstable();
        Ok(numbers)
    }

    /// Alias → version number, from the alias files.
    pub fn aliases(&self, name: &ArtifactName) -> Result<BTreeMap<String, u32>, Error> {
        let dir = self.artifact_dir(name).join("aliases");
        let mut aliases = BTreeMap::new();
        for alias in read_dir_names(&dir)? {
            if check_alias(&alias).is_err() {
                continue;
            }
            let path = dir.join(&alias);
            let text = read_small(&path, ALIAS_LIMIT).io("read", &path)?;
            let text = String::from_utf8_lossy(&text);
            match Selector::parse_tag(text.trim()) {
                Ok(Selector::Version(n)) => {
                    aliases.insert(alias, n);
                }
                _ => {
                    return Err(Error::Corrupt {
                        root: self.root.clone(),
                        reason: format!(
                            "alias file `{}` does not hold a version `vN`",
                            path.display()
                        ),
                    });
                }
            }
        }
        Ok(aliases)
    }

    /// Reads and validates `vN.json`, with its aliases filled in from the alias files.
    fn read_version(
        &self,
        name: &ArtifactName,
        number: u32,
        aliases: &BTreeMap<String, u32>,
    ) -> Result<Option<Version>, Error> {
        let path = self
            .artifact_dir(name)
            .join("versions")
            .join(format!("v{number}.json"));
        let json = match read_small(&path, VERSION_LIMIT) {
            Ok(json) => json,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).io("read", path),
        };
        let invalid = |reason: String| Error::Corrupt {
            root: self.root.clone(),
            reason: format!("`{}`: {reason}", path.display()),
        };
        let mut version = Version::from_json(&json).map_err(|e| invalid(e.to_string()))?;
        if version.artifact()? != *name || version.number()? != number {
            return Err(invalid(format!(
                "it holds `{}/{}/{}:{}`",
                version.entity, version.project, version.name, version.version
            )));
        }
        version.aliases = aliases
            .iter()
            .filter(|(_, n)| **n == number)
            .map(|(alias, _)| alias.clone())
            .collect();
        Ok(Some(version))
    }

    /// The version a selector names. An artifact that does not exist, and a selector that
    /// matches nothing, are both [`Error::NotFound`].
    pub fn resolve(&self, name: &ArtifactName, selector: &Selector) -> Result<Version, Error> {
        let aliases = self.aliases(name)?;
        let number = match selector {
            Selector::Version(n) => Some(*n),
            Selector::Alias(alias) => match aliases.get(alias) {
                Some(n) => Some(*n),
                None if alias == Selector::LATEST => self.version_numbers(name)?.last().copied(),
                None => None,
            },
            Selector::Digest(digest) => self.find_digest(name, digest)?,
        };
        number
            .map(|n| self.read_version(name, n, &aliases))
            .transpose()?
            .flatten()
            .ok_or_else(|| Self::not_found(name, Some(selector)))
    }

    /// The newest version whose manifest has this digest.
    fn find_digest(&self, name: &ArtifactName, digest: &Digest) -> Result<Option<u32>, Error> {
        /// Only the field compared: skips building the manifest of every version.
        #[derive(Deserialize)]
        struct DigestOnly {
            digest: Digest,
        }
        let dir = self.artifact_dir(name).join("versions");
        for n in self.version_numbers(name)?.into_iter().rev() {
            let path = dir.join(format!("v{n}.json"));
            let json = read_small(&path, VERSION_LIMIT).io("read", &path)?;
            if serde_json::from_slice::<DigestOnly>(&json).is_ok_and(|v| v.digest == *digest) {
                return Ok(Some(n));
            }
        }
        Ok(None)
    }

    /// Every version (without manifests) and alias of an artifact.
    pub fn list(&self, name: &ArtifactName) -> Result<VersionList, Error> {
        let numbers = self.version_numbers(name)?;
        if numbers.is_empty() {
            return Err(Self::not_found(name, None));
        }
        let aliases = self.aliases(name)?;
        let mut list = VersionList::default();
        for n in numbers {
            if let Some(version) = self.read_version(name, n, &aliases)? {
                list.versions.push(VersionSummary::of(&version));
            }
        }
        list.aliases = aliases
            .into_iter()
            .map(|(alias, n)| (alias, format!("v{n}")))
            .collect();
        if !list.aliases.contains_key(Selector::LATEST)
            && let Some(newest) = list.versions.last_mut()
        {
            newest.aliases.push(Selector::LATEST.to_owned());
            list.aliases
                .insert(Selector::LATEST.to_owned(), newest.version.clone());
        }
        Ok(list)
    }

    /// The artifacts of a project, by name; a project with none is [`Error::NotFound`].
    pub fn artifacts(&self, project: &ProjectName) -> Result<ArtifactList, Error> {
        let dir = self
            .root
            .join("artifacts")
            .join(&project.entity)
            .join(&project.project);
        let mut list = ArtifactList::default();
        let mut names = read_dir_names(&dir)?;
        names.sort_unstable();
        for name in names {
            // A directory that is not an artifact (a stray file, a bad name) is not listed.
            let Ok(artifact) = ArtifactName::new(&project.entity, &project.project, &name) else {
                continue;
            };
            let numbers = self.version_numbers(&artifact)?;
            let Some(newest) = numbers.last() else {
                continue;
            };
            let mut aliases: Vec<String> = self.aliases(&artifact)?.into_keys().collect();
            if !aliases.iter().any(|a| a == Selector::LATEST) {
                aliases.push(Selector::LATEST.to_owned());
                aliases.sort_unstable();
            }
            list.artifacts.push(ArtifactSummary {
                name,
                versions: numbers.len() as u64,
                latest: Some(format!("v{newest}")),
                aliases,
            });
        }
        if list.artifacts.is_empty() {
            return Err(Error::NotFound {
                what: format!("project `{project}` (it has no artifacts)"),
            });
        }
        Ok(list)
    }

    /// Commits a version. `has_blob` says whether a blob may be used by this commit (the
    /// registry also checks the committer's right to it); blobs must also be stored.
    /// Identical content (same manifest digest) returns the existing version, with the
    /// requested aliases moved to it.
    pub fn commit(
        &self,
        name: &ArtifactName,
        request: &CommitRequest,
        may_use: impl Fn(&Digest) -> bool,
    ) -> Result<Committed, Error> {
        let manifest = &request.manifest;
        manifest.validate()?;
        for alias in &request.aliases {
            check_alias(alias)?;
        }
        if let Some(kind) = &request.kind
            && (kind.len() > 128 || kind.chars().any(char::is_control))
        {
            return Err(Error::Rejected {
                reason: "the type must be at most 128 printable characters".to_owned(),
            });
        }
        self.check_blobs(manifest, may_use)?;

        let dir = self.artifact_dir(name);
        let versions = dir.join("versions");
        create_dirs_durably(&self.root.join("artifacts"), &versions)?;
        let _lock = lock_dir(&dir)?;

        let digest = manifest.digest();
        if let Some(n) = self.find_digest(name, &digest)? {
            for alias in &request.aliases {
                self.write_alias(name, alias, n)?;
            }
            let version = self
                .read_version(name, n, &self.aliases(name)?)?
                .ok_or_else(|| Self::not_found(name, Some(&Selector::Version(n))))?;
            return Ok(Committed {
                version,
                created: false,
            });
        }

        let mut number = self.version_numbers(name)?.last().map_or(0, |n| n + 1);
        let mut aliases = vec![Selector::LATEST.to_owned()];
        aliases.extend(request.aliases.iter().cloned());
        aliases.sort_unstable();
        aliases.dedup();
        let mut version = Version {
            entity: name.entity.clone(),
            project: name.project.clone(),
            name: name.name.clone(),
            version: String::new(),
            digest,
            aliases,
            kind: request.kind.clone(),
            metadata: if request.metadata.is_null() {
                serde_json::Value::Object(serde_json::Map::new())
            } else {
                request.metadata.clone()
            },
            created_at: Some(humantime::format_rfc3339_seconds(SystemTime::now()).to_string()),
            manifest: manifest.clone(),
        };
        loop {
            version.version = format!("v{number}");
            let json = serde_json::to_vec(&version).expect("a version always serializes");
            let mut temp = self.temp_blob()?;
            temp.write_all(&json)?;
            temp.file().sync_all().io("fsync", &temp.path)?;
            let target = versions.join(format!("v{number}.json"));
            if temp.persist_new(&target)? {
                break;
            }
            // Someone wrote this number without the lock (by hand): take the next.
            number += 1;
        }
        sync_dir(&versions)?;
        for alias in &version.aliases {
            self.write_alias(name, alias, number)?;
        }
        Ok(Committed {
            version,
            created: true,
        })
    }

    /// Every blob a manifest names (reference entries aside) must be stored with the
    /// manifest's size and usable by the committer.
    fn check_blobs(
        &self,
        manifest: &hoard_types::Manifest,
        may_use: impl Fn(&Digest) -> bool,
    ) -> Result<(), Error> {
        let mut missing = Vec::new();
        for entry in manifest.entries.values() {
            let stored = self.blob_size(&entry.digest)?;
            // A reference entry's bytes live at its URI, so the root need not have them; but
            // where the root holds a blob of that digest, naming it is using it: knowing a
            // digest is not having the bytes.
            if entry.reference.is_some() && (stored.is_none() || may_use(&entry.digest)) {
                continue;
            }
            if stored != Some(entry.size) || !may_use(&entry.digest) {
                if let Some(size) = stored.filter(|s| *s != entry.size) {
                    return Err(Error::Rejected {
                        reason: format!(
                            "blob `{}` has {size} bytes but the manifest says {}",
                            entry.digest, entry.size
                        ),
                    });
                }
                missing.push(entry.digest);
            }
        }
        if missing.is_empty() {
            return Ok(());
        }
        missing.sort_unstable();
        missing.dedup();
        Err(Error::MissingBlobs { missing })
    }

    /// Points an alias at an existing version.
    pub fn set_alias(&self, name: &ArtifactName, alias: &str, number: u32) -> Result<(), Error> {
        check_alias(alias)?;
        let dir = self.artifact_dir(name);
        if !dir.is_dir() {
            return Err(Self::not_found(name, None));
        }
        let _lock = lock_dir(&dir)?;
        if self.read_version(name, number, &BTreeMap::new())?.is_none() {
            return Err(Self::not_found(name, Some(&Selector::Version(number))));
        }
        self.write_alias(name, alias, number)
    }

    fn write_alias(&self, name: &ArtifactName, alias: &str, number: u32) -> Result<(), Error> {
        let dir = self.artifact_dir(name).join("aliases");
        fs::create_dir_all(&dir).io("create", &dir)?;
        let mut temp = self.temp_blob()?;
        temp.write_all(format!("v{number}\n").as_bytes())?;
        temp.file().sync_all().io("fsync", &temp.path)?;
        let target = dir.join(alias);
        fs::rename(&temp.path, &target).io("rename into place", &target)?;
        temp.file = None;
        sync_dir(&dir)
    }

    /// Removes temp files left by writers that are gone (a crash): files older than
    /// `age` whose `flock` nobody holds. A live writer (this process or another, e.g. an
    /// import beside a server) keeps its lock, and so its file.
    pub fn clean_tmp(&self, age: std::time::Duration) -> Result<usize, Error> {
        let dir = self.root.join("tmp");
        let mut removed = 0;
        for name in read_dir_names(&dir)? {
            // A resumable upload's partial is kept for a day, to be continued.
            let age = if name.starts_with("upload-") {
                age.max(RESUMABLE_KEPT)
            } else {
                age
            };
            let path = dir.join(name);
            let old = fs::symlink_metadata(&path)
                .and_then(|m| m.modified())
                .is_ok_and(|t| t.elapsed().is_ok_and(|e| e >= age));
            let abandoned = old
                && File::open(&path).is_ok_and(|f| {
                    rustix::fs::flock(&f, FlockOperation::NonBlockingLockExclusive).is_ok()
                });
            if abandoned && fs::remove_file(&path).is_ok() {
                removed += 1;
            }
        }
        Ok(removed)
    }
}

/// Names in a directory; a missing directory has none.
fn read_dir_names(dir: &Path) -> Result<Vec<String>, Error> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).io("read", dir),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.io("read", dir)?;
        if let Ok(name) = entry.file_name().into_string() {
            names.push(name);
        }
    }
    Ok(names)
}

fn sync_dir(dir: &Path) -> Result<(), Error> {
    File::open(dir).and_then(|d| d.sync_all()).io("fsync", dir)
}

/// `create_dir_all(leaf)`, then fsync every directory from `base` down whose entries changed.
fn create_dirs_durably(base: &Path, leaf: &Path) -> Result<(), Error> {
    if leaf.is_dir() {
        return Ok(());
    }
    fs::create_dir_all(leaf).io("create", leaf)?;
    let mut dir = leaf;
    while let Some(parent) = dir.parent() {
        sync_dir(parent)?;
        if parent == base || !parent.starts_with(base) {
            break;
        }
        dir = parent;
    }
    Ok(())
}

/// An exclusive `flock` on a directory, released when the returned file closes.
fn lock_dir(dir: &Path) -> Result<File, Error> {
    let file = File::open(dir).io("open", dir)?;
    rustix::fs::flock(&file, FlockOperation::LockExclusive)
        .map_err(io::Error::from)
        .io("lock", dir)?;
    Ok(file)
}

/// Opens `path` for reading if it is a regular file, without ever blocking: a FIFO or a
/// device planted where a blob or a version file should be would otherwise hang the open
/// (and with it a request and the process's shutdown). Anything but a regular file is an
/// [`io::ErrorKind::InvalidInput`] error that says what it is.
pub fn open_regular(path: &Path) -> io::Result<File> {
    open_regular_len(path).map(|(file, _)| file)
}

/// [`open_regular`], and the file's length from the same `fstat`.
pub fn open_regular_len(path: &Path) -> io::Result<(File, u64)> {
    use rustix::fs::{FileType, Mode, OFlags};
    let fd = rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::NONBLOCK | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let stat = rustix::fs::fstat(&fd)?;
    let kind = FileType::from_raw_mode(stat.st_mode);
    if kind != FileType::RegularFile {
        let what = match kind {
            FileType::Directory => "a directory",
            FileType::Fifo => "a FIFO",
            FileType::Socket => "a socket",
            FileType::CharacterDevice | FileType::BlockDevice => "a device",
            _ => "not a regular file",
        };
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("it is {what}, not a regular file"),
        ));
    }
    // Reads of a regular file never block anyway; the flag only mattered for the open.
    rustix::fs::fcntl_setfl(&fd, OFlags::empty())?;
    Ok((File::from(fd), stat.st_size.try_into().unwrap_or(0)))
}

/// Reads a small file of the layout (a version's JSON, an alias) with [`open_regular`],
/// refusing one longer than `limit` bytes.
pub(crate) fn read_small(path: &Path, limit: u64) -> io::Result<Vec<u8>> {
    let file = open_regular(path)?;
    let mut out = Vec::new();
    file.take(limit + 1).read_to_end(&mut out)?;
    if out.len() as u64 > limit {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("it is longer than the {limit} bytes a file of this kind may have"),
        ));
    }
    Ok(out)
}
