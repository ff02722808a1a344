//! A version as the registry returns it and as a `dir://` root stores it
//! (`artifacts/{entity}/{project}/{name}/versions/vN.json`).

use serde::{Deserialize, Serialize};

use crate::{ArtifactName, Digest, Error, Manifest};

/// One immutable version of an artifact, with its manifest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Version {
    pub entity: String,
    pub project: String,
    pub name: String,
    /// `vN`, numbered from `v0`.
    pub version: String,
    /// blake3 of the canonical manifest.
    pub digest: Digest,
    #[serde(default)]
    pub aliases: Vec<String>,
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    #[serde(default)]
    pub metadata: serde_json::Value,
    /// RFC 3339, as the upstream wrote it.
    #[serde(default)]
    pub created_at: Option<String>,
    pub manifest: Manifest,
}

impl Version {
    /// Parses an upstream's answer and checks everything hoard will act on: names, the
    /// version number, the manifest, and that the digest is the manifest's.
    pub fn from_json(json: &[u8]) -> Result<Self, Error> {
        let version: Self = serde_json::from_slice(json).map_err(|e| Error::Manifest {
            reason: e.to_string(),
        })?;
        version.validate()?;
        Ok(version)
    }

    pub fn validate(&self) -> Result<(), Error> {
        self.artifact()?;
        self.number()?;
        self.manifest.validate()?;
        let actual = self.manifest.digest();
        if actual != self.digest {
            return Err(Error::Manifest {
                reason: format!(
                    "the version claims digest `{}` but its manifest has digest `{actual}`",
                    self.digest
                ),
            });
        }
        Ok(())
    }

    pub fn artifact(&self) -> Result<ArtifactName, Error> {
        ArtifactName::new(&self.entity, &self.project, &self.name)
    }

    /// The `N` of `vN`.
    pub fn number(&self) -> Result<u32, Error> {
        number(&self.version)
    }
}

/// The `N` of a version label `vN`.
pub(crate) fn number(version: &str) -> Result<u32, Error> {
    match crate::Selector::parse_tag(version) {
        Ok(crate::Selector::Version(n)) => Ok(n),
        _ => Err(Error::Manifest {
            reason: format!(
                "version `{}` is not of the form `vN`",
                crate::digest::truncate(version)
            ),
        }),
    }
}
