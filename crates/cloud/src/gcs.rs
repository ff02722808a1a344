//! Google Cloud Storage credentials, found the way Google's client
//! libraries find them:
//!
//! 1. `GOOGLE_OAUTH_ACCESS_TOKEN`: an access token, used as it is;
//! 2. the JSON file `GOOGLE_APPLICATION_CREDENTIALS` names, else gcloud's
//!    `~/.config/gcloud/application_default_credentials.json`:
//!    - a service account's key (`"type": "service_account"`): a JWT naming the account,
//!      signed with its RSA key (RS256), is exchanged at its `token_uri` for a token;
//!    - a user's login (`"type": "authorized_user"`, from `gcloud auth
//!      application-default login`): its refresh token is exchanged for one;
//! 3. on a Google Compute Engine VM (its DMI product name says Google), or with
//!    `GCE_METADATA_HOST` set: the metadata server's token for the VM's service account.
//!
//! Exchanged tokens are kept until a minute before they expire, shared by every
//! reference (one exchange per hour, not per file). The scope asked for is read-only.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use reqwest::header::HeaderValue;
use rustls_pki_types::PrivatePkcs8KeyDer;
use rustls_pki_types::pem::PemObject as _;
use serde::Deserialize;
use tokio::time::Instant;

use crate::Error;

const SCOPE: &str = "https://www.googleapis.com/auth/devstorage.read_only";
const TOKEN_URI: &str = "https://oauth2.googleapis.com/token";
/// A token is renewed this long before it expires.
const MARGIN: Duration = Duration::from_secs(60);

/// The exchange of this process's credentials file: the environment does not change, so
/// one exchange (and its cached token) serves every reference.
/// What this process's credentials file (or the metadata server) gives: an exchange,
/// none, or why the file is unusable. Found once: the environment does not change, so one
/// exchange (and its cached token) serves every request.
type Found = Result<Option<Arc<Exchange>>, Unusable>;
static EXCHANGE: OnceLock<Found> = OnceLock::new();

/// A credentials file that cannot be used: [`Error::Unusable`], kept in [`EXCHANGE`]
/// (which needs `Clone`, and `Error` is not).
#[derive(Clone, Debug)]
struct Unusable {
    what: String,
    reason: String,
}

impl From<Unusable> for Error {
    fn from(Unusable { what, reason }: Unusable) -> Self {
        Self::Unusable { what, reason }
    }
}

/// How Google Cloud Storage requests are authorized; cheap to clone (exchanged tokens
/// are shared).
#[derive(Clone)]
pub struct GcsAuth(Auth);

#[derive(Clone)]
enum Auth {
    /// A fixed token (`GOOGLE_OAUTH_ACCESS_TOKEN`).
    Token(HeaderValue),
    /// Tokens exchanged from a credentials file or the metadata server.
    Exchanged(Arc<Exchange>),
}

impl GcsAuth {
    /// The credentials of this process's environment; `Ok(None)` when there are none, an
    /// error naming the file when its contents are unusable.
    pub fn from_env() -> Result<Option<Self>, Error> {
        if let Some(token) = std::env::var("GOOGLE_OAUTH_ACCESS_TOKEN")
            .ok()
            .filter(|t| !t.is_empty())
        {
            return bearer(&token)
                .map(|t| Some(Self(Auth::Token(t))))
                .ok_or_else(|| {
                    Error::unusable("`GOOGLE_OAUTH_ACCESS_TOKEN`", "is not a valid header value")
                });
        }
        EXCHANGE
            .get_or_init(|| {
                if let Some(file) = credentials_file() {
                    return Exchange::load(&file).map(|e| Some(Arc::new(e)));
                }
                Ok(metadata_server().map(|base| Arc::new(Exchange::metadata(&base))))
            })
            .clone()
            .map(|exchange| exchange.map(|e| Self(Auth::Exchanged(e))))
            .map_err(Error::from)
    }

    /// The `Authorization` header value for a request now.
    pub async fn header(&self) -> Result<HeaderValue, Error> {
        match &self.0 {
            Auth::Token(token) => Ok(token.clone()),
            Auth::Exchanged(exchange) => exchange.token().await,
        }
    }
}

fn bearer(token: &str) -> Option<HeaderValue> {
    let mut value = HeaderValue::from_str(&format!("Bearer {token}")).ok()?;
    value.set_sensitive(true);
    Some(value)
}

/// `GOOGLE_APPLICATION_CREDENTIALS` (which must then exist), else gcloud's file if present.
fn credentials_file() -> Option<PathBuf> {
    if let Some(file) = std::env::var_os("GOOGLE_APPLICATION_CREDENTIALS").filter(|f| !f.is_empty())
    {
        return Some(file.into());
    }
    let config = std::env::var_os("CLOUDSDK_CONFIG")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".config/gcloud")))?;
    let file = config.join("application_default_credentials.json");
    file.exists().then_some(file)
}

/// The GCE metadata server: `GCE_METADATA_HOST` (`host[:port]`), else the usual one when
/// this machine is a Compute Engine VM (as Google's libraries tell, by its DMI name).
fn metadata_server() -> Option<String> {
    if let Some(host) = std::env::var("GCE_METADATA_HOST")
        .ok()
        .filter(|h| !h.is_empty())
    {
        return Some(format!("http://{host}"));
    }
    let product = std::fs::read_to_string("/sys/class/dmi/id/product_name").ok()?;
    product
        .contains("Google")
        .then(|| "http://metadata.google.internal".to_owned())
}

/// A credentials file, as far as hoard reads it.
#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Credentials {
    ServiceAccount {
        client_email: String,
        private_key: String,
        #[serde(default)]
        token_uri: Option<String>,
    },
    AuthorizedUser {
        client_id: String,
        client_secret: String,
        refresh_token: String,
        #[serde(default)]
        token_uri: Option<String>,
    },
}

/// What is exchanged for a token.
enum Grant {
    /// A service account: its email and RSA key.
    Account {
        email: String,
        key: ring::signature::RsaKeyPair,
    },
    /// A user's refresh token and the OAuth client it was issued to.
    Refresh {
        client_id: String,
        client_secret: String,
        refresh_token: String,
    },
    /// The VM's service account, from the metadata server (a `GET` to `token_uri`).
    Metadata,
}

/// Exchanges a grant for access tokens, and keeps the current one.
struct Exchange {
    /// Where the grant comes from, for messages: the file, or the metadata server.
    source: String,
    grant: Grant,
    token_uri: String,
    http: reqwest::Client,
    current: tokio::sync::Mutex<Option<(HeaderValue, Instant)>>,
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
    expires_in: u64,
}

impl Exchange {
    fn load(file: &Path) -> Result<Self, Unusable> {
        let named = |reason: String| Unusable {
            what: format!("the Google credentials file `{}`", file.display()),
            reason,
        };
        let text =
            std::fs::read_to_string(file).map_err(|e| named(format!("cannot be read: {e}")))?;
        let credentials: Credentials = serde_json::from_str(&text).map_err(|e| {
            named(format!(
                "is not a service account key or an application-default login: {e}"
            ))
        })?;
        let (grant, token_uri) = match credentials {
            Credentials::ServiceAccount {
                client_email,
                private_key,
                token_uri,
            } => {
                let der =
                    PrivatePkcs8KeyDer::from_pem_slice(private_key.as_bytes()).map_err(|e| {
                        named(format!(
                            "has a `private_key` that is not a PEM private key: {e}"
                        ))
                    })?;
                let key = ring::signature::RsaKeyPair::from_pkcs8(der.secret_pkcs8_der())
                    .map_err(|e| named(format!("has a `private_key` ring cannot use: {e}")))?;
                (
                    Grant::Account {
                        email: client_email,
                        key,
                    },
                    token_uri,
                )
            }
            Credentials::AuthorizedUser {
                client_id,
                client_secret,
                refresh_token,
                token_uri,
            } => (
                Grant::Refresh {
                    client_id,
                    client_secret,
                    refresh_token,
                },
                token_uri,
            ),
        };
        let token_uri = token_uri.unwrap_or_else(|| TOKEN_URI.to_owned());
        reqwest::Url::parse(&token_uri)
            .map_err(|e| named(format!("has a bad `token_uri`: {e}")))?;
        Ok(Self {
            source: format!("`{}`", file.display()),
            grant,
            token_uri,
            http: crate::ask::client(),
            current: tokio::sync::Mutex::default(),
        })
    }

    /// The metadata server at `base`.
    fn metadata(base: &str) -> Self {
        Self {
            source: format!("the GCE metadata server `{base}`"),
            grant: Grant::Metadata,
            token_uri: format!(
                "{base}/computeMetadata/v1/instance/service-accounts/default/token?scopes={SCOPE}"
            ),
            http: crate::ask::client(),
            current: tokio::sync::Mutex::default(),
        }
    }

    /// The current token, exchanged anew when there is none or it is about to expire.
    /// Concurrent callers wait for one exchange.
    async fn token(&self) -> Result<HeaderValue, Error> {
        let mut current = self.current.lock().await;
        if let Some((token, until)) = &*current
            && Instant::now() < *until
        {
            return Ok(token.clone());
        }
        let refused = |detail: String| Error::Refused {
            service: self.token_uri.clone(),
            detail: format!("exchanging the credentials of {}: {detail}", self.source),
        };
        let request = match &self.grant {
            Grant::Account { email, key } => self.http.post(&self.token_uri).form(&[
                ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
                ("assertion", &self.assertion(email, key).map_err(&refused)?),
            ]),
            Grant::Refresh {
                client_id,
                client_secret,
                refresh_token,
            } => self.http.post(&self.token_uri).form(&[
                ("grant_type", "refresh_token"),
                ("client_id", client_id),
                ("client_secret", client_secret),
                ("refresh_token", refresh_token),
            ]),
            Grant::Metadata => self
                .http
                .get(&self.token_uri)
                .header("Metadata-Flavor", "Google"),
        };
        let body = crate::ask::ask(request, &self.token_uri, refused).await?;
        let answer: TokenAnswer = serde_json::from_str(&body).map_err(|e| Error::Protocol {
            service: self.token_uri.clone(),
            reason: format!("a token answer without `access_token` and `expires_in`: {e}"),
        })?;
        let token = bearer(&answer.access_token).ok_or_else(|| Error::Protocol {
            service: self.token_uri.clone(),
            reason: "the access token is not a valid header value".to_owned(),
        })?;
        let lifetime = Duration::from_secs(answer.expires_in).saturating_sub(MARGIN);
        *current = Some((token.clone(), Instant::now() + lifetime));
        Ok(token)
    }

    /// A JWT asking for a read-only storage token for `email`, valid for an hour.
    fn assertion(&self, email: &str, key: &ring::signature::RsaKeyPair) -> Result<String, String> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let header = serde_json::json!({"alg": "RS256", "typ": "JWT"});
        let claims = serde_json::json!({
            "iss": email,
            "scope": SCOPE,
            "aud": self.token_uri,
            "iat": now,
            "exp": now + 3600,
        });
        let signed = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let mut signature = vec![0; key.public().modulus_len()];
        key.sign(
            &ring::signature::RSA_PKCS1_SHA256,
            &ring::rand::SystemRandom::new(),
            signed.as_bytes(),
            &mut signature,
        )
        .map_err(|_| "signing the token request failed".to_owned())?;
        Ok(format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bad credentials files are refused at once, naming the file and what is wrong.
    #[test]
    fn bad_credentials_files_are_named_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        for (text, needle) in [
            ("not json", "is not a service account key"),
            (
                r#"{"type": "external_account"}"#,
                "unknown variant `external_account`",
            ),
            (
                r#"{"type": "service_account", "client_email": "a@b", "private_key": "key"}"#,
                "not a PEM private key",
            ),
            (
                r#"{"type": "service_account", "client_email": "a@b",
                    "private_key": "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"}"#,
                "ring cannot use",
            ),
            (
                r#"{"type": "authorized_user", "client_id": "c", "client_secret": "s",
                    "refresh_token": "r", "token_uri": "not a url"}"#,
                "bad `token_uri`",
            ),
        ] {
            let file = dir.path().join("credentials.json");
            std::fs::write(&file, text).unwrap();
            let err = Error::from(Exchange::load(&file).err().expect(text)).to_string();
            assert!(err.contains(&file.display().to_string()), "{err}");
            assert!(err.contains(needle), "{text}: {err}");
        }
        let missing = Exchange::load(&dir.path().join("missing.json"))
            .err()
            .unwrap()
            .reason;
        assert!(missing.contains("cannot be read"), "{missing}");
    }
}
