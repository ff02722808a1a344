//! AWS credentials, found in the order AWS's SDKs look:
//!
//! 1. `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` (and `AWS_SESSION_TOKEN`);
//! 2. the shared files: the profile `AWS_PROFILE` (else `default`) of
//!    `AWS_SHARED_CREDENTIALS_FILE` (else `~/.aws/credentials`), then of
//!    `AWS_CONFIG_FILE` (else `~/.aws/config`, where it is `[profile NAME]`);
//! 3. a Kubernetes service account's role (EKS "IRSA": `AWS_WEB_IDENTITY_TOKEN_FILE` and
//!    `AWS_ROLE_ARN`), assumed with STS `AssumeRoleWithWebIdentity`
//!    (`AWS_ENDPOINT_URL_STS` for another STS);
//! 4. container credentials (ECS, EKS Pod Identity: `AWS_CONTAINER_CREDENTIALS_FULL_URI`
//!    or `…_RELATIVE_URI`, with `AWS_CONTAINER_AUTHORIZATION_TOKEN(_FILE)`);
//! 5. on an EC2 instance (its DMI vendor says Amazon EC2), or with
//!    `AWS_EC2_METADATA_SERVICE_ENDPOINT` set: the instance role's credentials from the
//!    instance metadata service (version 2: a session token first).
//!    `AWS_EC2_METADATA_DISABLED=true` turns this off.
//!
//! Keys from 3–5 are renewed five minutes before they expire.
//!
//! The region is `AWS_REGION`, `AWS_DEFAULT_REGION`, the profile's `region`, the
//! instance's region (IMDS), else `us-east-1`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use serde::Deserialize;
use tokio::time::Instant;

use crate::Error;
use crate::ask::{ask, xml_text};
use crate::sigv4::SigV4;

/// Temporary keys are renewed this long before they expire.
const MARGIN: Duration = Duration::from_secs(300);

/// Where S3 requests get their signing keys; cheap to clone (renewed keys are shared).
#[derive(Clone, Debug)]
pub struct AwsCredentials(Keys);

#[derive(Clone, Debug)]
enum Keys {
    /// Keys from the environment or a profile.
    Fixed(SigV4),
    /// Temporary keys (a role's), renewed as they expire.
    Renewed(Arc<Renewed>),
}

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

impl AwsCredentials {
    /// The credentials of this process's environment; `None` when there are none. Looked
    /// for once (files read, sources chosen) and then shared by every reference.
    pub fn from_env() -> Option<Self> {
        static FOUND: OnceLock<Option<AwsCredentials>> = OnceLock::new();
        FOUND.get_or_init(Self::find).clone()
    }

    fn find() -> Option<Self> {
        let endpoint = var("AWS_ENDPOINT_URL").map(|e| e.trim_end_matches('/').to_owned());
        let profile = var("AWS_PROFILE").unwrap_or_else(|| "default".to_owned());
        let config = Profile::read(
            config_file().as_deref(),
            &format!("profile {profile}"),
            &profile,
        );
        let region = var("AWS_REGION")
            .or_else(|| var("AWS_DEFAULT_REGION"))
            .or_else(|| config.get("region"));
        let keys = |id: Option<String>, secret: Option<String>, token: Option<String>| {
            Some(SigV4::new(
                id?,
                secret?,
                token,
                region.clone().unwrap_or_else(|| "us-east-1".to_owned()),
                endpoint.clone(),
            ))
        };
        if let Some(s3) = keys(
            var("AWS_ACCESS_KEY_ID"),
            var("AWS_SECRET_ACCESS_KEY"),
            var("AWS_SESSION_TOKEN"),
        ) {
            return Some(Self(Keys::Fixed(s3)));
        }
        for profile in [
            Profile::read(credentials_file().as_deref(), &profile, &profile),
            config,
        ] {
            if let Some(s3) = keys(
                profile.get("aws_access_key_id"),
                profile.get("aws_secret_access_key"),
                profile.get("aws_session_token"),
            ) {
                return Some(Self(Keys::Fixed(s3)));
            }
        }
        let source = web_identity(region.as_deref())
            .or_else(container)
            .or_else(|| metadata_service().map(Source::Instance))?;
        Some(Self(Keys::Renewed(Arc::new(Renewed::new(
            source, region, endpoint,
        )))))
    }

    /// Signing keys valid now.
    pub async fn signer(&self) -> Result<SigV4, Error> {
        match &self.0 {
            Keys::Fixed(s3) => Ok(s3.clone()),
            Keys::Renewed(renewed) => renewed.keys().await,
        }
    }

    /// The region the AWS settings give (`AWS_REGION`, the profile's), else `us-east-1`.
    pub fn region(&self) -> String {
        match &self.0 {
            Keys::Fixed(s3) => s3.target().region,
            Keys::Renewed(renewed) => renewed
                .region
                .clone()
                .unwrap_or_else(|| "us-east-1".to_owned()),
        }
    }

    /// Checks that requests for `bucket`/`key` can be made (the endpoint parses), with
    /// placeholder keys where the real ones come later.
    pub fn check(&self, bucket: &str, key: &str) -> Result<(), Error> {
        let s3 = match &self.0 {
            Keys::Fixed(s3) => s3.clone(),
            Keys::Renewed(renewed) => renewed.placeholder(),
        };
        s3.get(bucket, key, SystemTime::now()).map(drop)
    }
}

fn home() -> Option<PathBuf> {
    std::env::var_os("HOME").map(PathBuf::from)
}

fn credentials_file() -> Option<PathBuf> {
    var("AWS_SHARED_CREDENTIALS_FILE")
        .map(PathBuf::from)
        .or_else(|| Some(home()?.join(".aws/credentials")))
}

fn config_file() -> Option<PathBuf> {
    var("AWS_CONFIG_FILE")
        .map(PathBuf::from)
        .or_else(|| Some(home()?.join(".aws/config")))
}

/// One section of an INI file of AWS's: `key = value` lines.
#[derive(Default)]
struct Profile(Vec<(String, String)>);

impl Profile {
    /// The section `[section]` (or `[plain]`, which the config file also accepts for
    /// `default`) of `file`; empty when either is missing.
    fn read(file: Option<&Path>, section: &str, plain: &str) -> Self {
        let Some(text) = file.and_then(|f| std::fs::read_to_string(f).ok()) else {
            return Self::default();
        };
        let mut inside = false;
        let mut found = Vec::new();
        for line in text.lines().map(str::trim) {
            if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                let name = name.trim();
                inside = name == section || name == plain;
            } else if inside && let Some((key, value)) = line.split_once('=') {
                found.push((key.trim().to_owned(), value.trim().to_owned()));
            }
        }
        Self(found)
    }

    fn get(&self, key: &str) -> Option<String> {
        self.0
            .iter()
            .find(|(k, v)| k == key && !v.is_empty())
            .map(|(_, v)| v.clone())
    }
}

/// The instance metadata service: `AWS_EC2_METADATA_SERVICE_ENDPOINT`, else the usual one
/// when this machine is an EC2 instance (by its DMI vendor, as AWS's SDKs tell).
fn metadata_service() -> Option<String> {
    if var("AWS_EC2_METADATA_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
        return None;
    }
    if let Some(endpoint) = var("AWS_EC2_METADATA_SERVICE_ENDPOINT") {
        return Some(endpoint.trim_end_matches('/').to_owned());
    }
    let vendor = |file: &str| std::fs::read_to_string(Path::new("/sys/class/dmi/id").join(file));
    let ec2 = ["sys_vendor", "board_vendor"]
        .iter()
        .any(|f| vendor(f).is_ok_and(|v| v.contains("Amazon EC2")));
    ec2.then(|| "http://169.254.169.254".to_owned())
}

/// EKS's service account role: `AWS_ROLE_ARN` assumed with the token in
/// `AWS_WEB_IDENTITY_TOKEN_FILE`.
fn web_identity(region: Option<&str>) -> Option<Source> {
    let sts = var("AWS_ENDPOINT_URL_STS").map_or_else(
        || match region {
            Some(region) => format!("https://sts.{region}.amazonaws.com"),
            None => "https://sts.amazonaws.com".to_owned(),
        },
        |e| e.trim_end_matches('/').to_owned(),
    );
    Some(Source::WebIdentity {
        token_file: var("AWS_WEB_IDENTITY_TOKEN_FILE")?.into(),
        role_arn: var("AWS_ROLE_ARN")?,
        session: var("AWS_ROLE_SESSION_NAME").unwrap_or_else(|| "hoard".to_owned()),
        sts,
    })
}

/// ECS's or EKS Pod Identity's credentials endpoint.
fn container() -> Option<Source> {
    let uri = var("AWS_CONTAINER_CREDENTIALS_FULL_URI").or_else(|| {
        var("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI").map(|r| format!("http://169.254.170.2{r}"))
    })?;
    Some(Source::Container {
        uri,
        token: var("AWS_CONTAINER_AUTHORIZATION_TOKEN"),
        token_file: var("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE").map(PathBuf::from),
    })
}

/// Where temporary keys come from.
#[derive(Debug)]
enum Source {
    /// The EC2 instance metadata service at this URL.
    Instance(String),
    /// A container credentials endpoint, with its authorization token (or the file that
    /// holds it, read at each renewal: it rotates).
    Container {
        uri: String,
        token: Option<String>,
        token_file: Option<PathBuf>,
    },
    /// STS, assuming `role_arn` with the web identity token in `token_file` (read at each
    /// renewal: it rotates).
    WebIdentity {
        role_arn: String,
        token_file: PathBuf,
        session: String,
        sts: String,
    },
}

impl Source {
    /// The service's URL.
    fn url(&self) -> &str {
        match self {
            Self::Instance(base) => base,
            Self::Container { uri, .. } => uri,
            Self::WebIdentity { sts, .. } => sts,
        }
    }

    /// What is asked of it, for messages.
    fn asking(&self) -> String {
        match self {
            Self::Instance(_) => "the EC2 instance metadata service".to_owned(),
            Self::Container { .. } => "the container credentials endpoint".to_owned(),
            Self::WebIdentity { role_arn, .. } => {
                format!("assuming `{role_arn}` with a web identity")
            }
        }
    }
}

/// A role's temporary keys, renewed before they expire.
#[derive(Debug)]
struct Renewed {
    source: Source,
    region: Option<String>,
    endpoint: Option<String>,
    http: reqwest::Client,
    current: tokio::sync::Mutex<Option<(SigV4, Instant)>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RoleKeys {
    access_key_id: String,
    secret_access_key: String,
    token: String,
    expiration: String,
}

impl Renewed {
    fn new(source: Source, region: Option<String>, endpoint: Option<String>) -> Self {
        Self {
            source,
            region,
            endpoint,
            http: crate::ask::client(),
            current: tokio::sync::Mutex::default(),
        }
    }

    fn placeholder(&self) -> SigV4 {
        SigV4::new(
            "placeholder".into(),
            "placeholder".into(),
            None,
            self.region.clone().unwrap_or_else(|| "us-east-1".into()),
            self.endpoint.clone(),
        )
    }

    async fn keys(&self) -> Result<SigV4, Error> {
        let mut current = self.current.lock().await;
        if let Some((s3, until)) = &*current
            && Instant::now() < *until
        {
            return Ok(s3.clone());
        }
        let (keys, region) = match &self.source {
            Source::Instance(base) => self.instance_keys(base).await?,
            Source::Container {
                uri,
                token,
                token_file,
            } => {
                let mut request = self.http.get(uri);
                let token = match token_file {
                    Some(file) => Some(std::fs::read_to_string(file).map_err(|e| {
                        self.refused(&format!("cannot read `{}`: {e}", file.display()))
                    })?),
                    None => token.clone(),
                };
                if let Some(token) = token {
                    request = request.header("authorization", token.trim());
                }
                (self.parse(&self.call(request).await?)?, None)
            }
            Source::WebIdentity {
                role_arn,
                token_file,
                session,
                sts,
            } => {
                let token = std::fs::read_to_string(token_file).map_err(|e| {
                    self.refused(&format!("cannot read `{}`: {e}", token_file.display()))
                })?;
                let request = self.http.post(sts).form(&[
                    ("Action", "AssumeRoleWithWebIdentity"),
                    ("Version", "2011-06-15"),
                    ("RoleArn", role_arn),
                    ("RoleSessionName", session),
                    ("WebIdentityToken", token.trim()),
                ]);
                let answer = self.call(request).await?;
                let field = |name: &str| xml_text(&answer, name).map(str::to_owned);
                let keys = (|| {
                    Some(RoleKeys {
                        access_key_id: field("AccessKeyId")?,
                        secret_access_key: field("SecretAccessKey")?,
                        token: field("SessionToken")?,
                        expiration: field("Expiration")?,
                    })
                })()
                .ok_or_else(|| Error::Protocol {
                    service: sts.clone(),
                    reason: "an AssumeRoleWithWebIdentity answer without credentials".to_owned(),
                })?;
                (keys, None)
            }
        };
        let region = region
            .or_else(|| self.region.clone())
            .unwrap_or_else(|| "us-east-1".to_owned());
        let s3 = SigV4::new(
            keys.access_key_id,
            keys.secret_access_key,
            Some(keys.token),
            region,
            self.endpoint.clone(),
        );
        // Renewed before they expire; every ten minutes when the expiry does not parse.
        let left = seconds_until(&keys.expiration).map_or(Duration::from_secs(600), |s| {
            Duration::from_secs(s).saturating_sub(MARGIN)
        });
        *current = Some((s3.clone(), Instant::now() + left));
        Ok(s3)
    }

    /// The instance role's keys, and the instance's region unless one was configured.
    async fn instance_keys(&self, base: &str) -> Result<(RoleKeys, Option<String>), Error> {
        let session = self
            .call(
                self.http
                    .put(format!("{base}/latest/api/token"))
                    .header("x-aws-ec2-metadata-token-ttl-seconds", "21600"),
            )
            .await?;
        let get = |path: &str| {
            self.http
                .get(format!("{base}/latest/meta-data/{path}"))
                .header("x-aws-ec2-metadata-token", session.trim())
        };
        let roles = self.call(get("iam/security-credentials/")).await?;
        let role = roles.lines().next().unwrap_or_default().trim().to_owned();
        if role.is_empty() {
            return Err(self.refused("the instance has no IAM role"));
        }
        let keys = self.parse(
            &self
                .call(get(&format!("iam/security-credentials/{role}")))
                .await?,
        )?;
        let region = match &self.region {
            Some(_) => None,
            None => Some(self.call(get("placement/region")).await?.trim().to_owned()),
        };
        Ok((keys, region))
    }

    /// Keys as the metadata service and container endpoints give them (JSON).
    fn parse(&self, answer: &str) -> Result<RoleKeys, Error> {
        serde_json::from_str(answer).map_err(|e| Error::Protocol {
            service: self.source.url().to_owned(),
            reason: format!("the role's credentials do not parse: {e}"),
        })
    }

    async fn call(&self, request: reqwest::RequestBuilder) -> Result<String, Error> {
        ask(request, self.source.url(), |e| self.refused(&e)).await
    }

    fn refused(&self, detail: &str) -> Error {
        Error::Refused {
            service: self.source.url().to_owned(),
            detail: format!("{}: {detail}", self.source.asking()),
        }
    }
}

/// Seconds from now until an RFC 3339 time (`2026-12-01T12:00:00Z`, as AWS's services
/// give expiries), 0 if it has passed.
fn seconds_until(stamp: &str) -> Option<u64> {
    let at = humantime::parse_rfc3339_weak(stamp.trim()).ok()?;
    Some(
        at.duration_since(SystemTime::now())
            .unwrap_or_default()
            .as_secs(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiries_are_read_as_utc() {
        let in_an_hour = SystemTime::now() + Duration::from_secs(3600);
        let stamp = humantime::format_rfc3339_seconds(in_an_hour).to_string();
        let left = seconds_until(&stamp).unwrap();
        assert!((3590..=3600).contains(&left), "{stamp}: {left}");
        assert_eq!(seconds_until("2000-02-29T00:00:00Z"), Some(0));
        assert_eq!(seconds_until("tomorrow"), None);
    }

    #[test]
    fn profiles_are_read_from_their_section() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config");
        std::fs::write(
            &file,
            "[default]\nregion = us-west-2\n\n[profile work]\nregion=eu-west-1\naws_access_key_id = AKID\n# a comment\n",
        )
        .unwrap();
        assert_eq!(
            Profile::read(Some(&file), "profile work", "work").get("region"),
            Some("eu-west-1".into())
        );
        assert_eq!(
            Profile::read(Some(&file), "profile default", "default").get("region"),
            Some("us-west-2".into())
        );
        assert_eq!(
            Profile::read(Some(&file), "profile x", "x").get("region"),
            None
        );
        assert_eq!(
            Profile::read(None, "default", "default").get("region"),
            None
        );
    }
}
