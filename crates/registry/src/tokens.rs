//! Bearer tokens and their per-project roles, from the tokens file
//! (`config/registry-tokens.toml` documents it).
//!
//! The file holds only the SHA-256 of each secret, so reading it (or a backup of it) does
//! not give access. A request's secret is hashed and looked up; grants name a project
//! (`acme/vision`), every project of an entity (`acme/*`) or everything (`*`), and the
//! most specific grant that matches decides the role.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use sha2::{Digest as _, Sha256};

/// What a token may do in a project, in increasing order of power.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Lists versions; may not download (W&B's view-only members).
    Viewer,
    /// Downloads and publishes.
    Member,
    /// Also moves aliases.
    Admin,
}

impl Role {
    fn parse(text: &str) -> Option<Self> {
        match text {
            "viewer" => Some(Self::Viewer),
            "member" => Some(Self::Member),
            "admin" => Some(Self::Admin),
            _ => None,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Viewer => "viewer",
            Self::Member => "member",
            Self::Admin => "admin",
        })
    }
}

/// Why a tokens file was refused; the message names the file and the token.
#[derive(Debug, thiserror::Error)]
#[error("Invalid tokens file `{}`: {reason}", path.display())]
pub struct TokensError {
    pub path: PathBuf,
    pub reason: String,
}

/// One caller identity.
#[derive(Debug)]
pub struct Token {
    pub name: String,
    /// Most specific first.
    grants: Vec<Grant>,
}

#[derive(Debug)]
struct Grant {
    entity: Option<String>,
    project: Option<String>,
    role: Role,
}

impl Grant {
    fn specificity(&self) -> u8 {
        u8::from(self.entity.is_some()) + u8::from(self.project.is_some())
    }

    fn matches(&self, entity: &str, project: &str) -> bool {
        self.entity.as_deref().is_none_or(|e| e == entity)
            && self.project.as_deref().is_none_or(|p| p == project)
    }
}

impl Token {
    /// The role in `entity/project`, or `None` if no grant covers it.
    pub fn role(&self, entity: &str, project: &str) -> Option<Role> {
        self.grants
            .iter()
            .find(|g| g.matches(entity, project))
            .map(|g| g.role)
    }

    /// Whether any grant gives at least `role` somewhere (to upload blobs at all).
    pub fn has_anywhere(&self, role: Role) -> bool {
        self.grants.iter().any(|g| g.role >= role)
    }
}

/// Every token of a tokens file, by the SHA-256 of its secret.
#[derive(Debug)]
pub struct Tokens {
    by_hash: HashMap<[u8; 32], Arc<Token>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    token: Vec<Entry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    name: String,
    /// Present only to refuse it with a clear message.
    #[serde(default)]
    secret: Option<toml::Value>,
    #[serde(default)]
    secret_sha256: Option<String>,
    #[serde(default)]
    grants: BTreeMap<String, String>,
}

impl Tokens {
    pub fn load(path: &Path) -> Result<Self, TokensError> {
        let text = std::fs::read_to_string(path).map_err(|e| TokensError {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        Self::parse(&text).map_err(|reason| TokensError {
            path: path.to_owned(),
            reason,
        })
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        let file: File = toml::from_str(text).map_err(|e| e.to_string())?;
        if file.token.is_empty() {
            return Err("it defines no `[[token]]`, so every request would be refused".to_owned());
        }
        let mut by_hash = HashMap::new();
        let mut names = std::collections::HashSet::new();
        for entry in file.token {
            let name = entry.name;
            if !names.insert(name.clone()) {
                return Err(format!("token `{name}` is defined twice"));
            }
            if entry.secret.is_some() {
                return Err(format!(
                    "token `{name}` has a plaintext `secret`; store only its hash: \
                     `secret_sha256 = \"<output of printf %s SECRET | sha256sum>\"`"
                ));
            }
            let hash = entry
                .secret_sha256
                .as_deref()
                .and_then(parse_sha256)
                .ok_or_else(|| {
                    format!(
                        "`secret_sha256` of token `{name}` is missing or not 64 hex digits (if \
                         it is the secret itself, store `printf %s SECRET | sha256sum` instead)"
                    )
                })?;
            let mut grants = Vec::new();
            for (pattern, role) in entry.grants {
                let role = Role::parse(&role).ok_or_else(|| {
                    format!(
                        "token `{name}` grants unknown role `{role}` on `{pattern}`; \
                         expected `viewer`, `member` or `admin`"
                    )
                })?;
                grants.push(
                    parse_grant(&pattern, role).map_err(|reason| {
                        format!("token `{name}` has grant `{pattern}`: {reason}")
                    })?,
                );
            }
            grants.sort_by_key(|g| std::cmp::Reverse(g.specificity()));
            let token = Arc::new(Token {
                name: name.clone(),
                grants,
            });
            if by_hash.insert(hash, token).is_some() {
                return Err(format!(
                    "token `{name}` has the same secret as another token"
                ));
            }
        }
        Ok(Self { by_hash })
    }

    /// The token whose secret this is.
    pub fn find(&self, secret: &str) -> Option<Arc<Token>> {
        let hash: [u8; 32] = Sha256::digest(secret.as_bytes()).into();
        self.by_hash.get(&hash).cloned()
    }
}

fn parse_sha256(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0; 32];
    for (i, pair) in hex.as_bytes().chunks(2).enumerate() {
        let text = std::str::from_utf8(pair).ok()?;
        out[i] = u8::from_str_radix(text, 16).ok()?;
    }
    Some(out)
}

/// `entity/project`, `entity/*` or `*`.
fn parse_grant(pattern: &str, role: Role) -> Result<Grant, String> {
    let (entity, project) = match pattern.split_once('/') {
        None if pattern == "*" => (None, None),
        Some((entity, "*")) => (Some(entity), None),
        Some((entity, project)) => (Some(entity), Some(project)),
        None => return Err("expected `entity/project`, `entity/*` or `*`".to_owned()),
    };
    if let Some(entity) = entity {
        hoard_types::ArtifactName::new(entity, project.unwrap_or("x"), "x")
            .map_err(|e| e.to_string())?;
    }
    Ok(Grant {
        entity: entity.map(str::to_owned),
        project: project.map(str::to_owned),
        role,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha(secret: &str) -> String {
        use std::fmt::Write as _;
        Sha256::digest(secret.as_bytes())
            .iter()
            .fold(String::new(), |mut hex, b| {
                let _ = write!(hex, "{b:02x}");
                hex
            })
    }

    #[test]
    fn the_most_specific_grant_decides() {
        let tokens = Tokens::parse(&format!(
            r#"
            [[token]]
            name = "alice"
            secret_sha256 = "{}"
            grants = {{ "acme/vision" = "member", "acme/*" = "viewer", "*" = "admin" }}
            "#,
            sha("s3cret")
        ))
        .unwrap();
        let alice = tokens.find("s3cret").unwrap();
        assert_eq!(alice.name, "alice");
        assert_eq!(alice.role("acme", "vision"), Some(Role::Member));
        assert_eq!(alice.role("acme", "audio"), Some(Role::Viewer));
        assert_eq!(alice.role("other", "x"), Some(Role::Admin));
        assert!(tokens.find("wrong").is_none());
    }

    #[test]
    fn bad_files_are_refused_with_the_reason() {
        let h = sha("x");
        for (text, needle) in [
            ("", "no `[[token]]`"),
            ("[[token]]\nname = \"a\"\nsecret = \"x\"", "plaintext"),
            (
                "[[token]]\nname = \"a\"\nsecret_sha256 = \"hunter2\"",
                "not 64 hex",
            ),
            (
                &format!(
                    "[[token]]\nname = \"a\"\nsecret_sha256 = \"{h}\"\ngrants = {{ \"acme/*\" = \"owner\" }}"
                ),
                "unknown role `owner`",
            ),
            (
                &format!(
                    "[[token]]\nname = \"a\"\nsecret_sha256 = \"{h}\"\ngrants = {{ \"acme\" = \"member\" }}"
                ),
                "expected `entity/project`",
            ),
            (
                &format!(
                    "[[token]]\nname = \"a\"\nsecret_sha256 = \"{h}\"\n[[token]]\nname = \"b\"\nsecret_sha256 = \"{h}\""
                ),
                "same secret",
            ),
            ("[[token]]\nname = \"a\"\nrole = \"x\"", "unknown field"),
        ] {
            let err = Tokens::parse(text).unwrap_err();
            assert!(err.contains(needle), "{text:?}: {err}");
        }
    }
}
