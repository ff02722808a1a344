//! Cloud access for hoard: finding credentials the way each cloud's own tools find them,
//! and turning them into signed requests.
//!
//! - [`aws`]: AWS's credential chain (environment, shared files, EKS web identity,
//!   container endpoints, the EC2 instance role), renewed before temporary keys expire;
//! - [`sigv4`]: AWS Signature V4 for S3 requests (path-style for an S3-compatible
//!   endpoint, virtual-hosted for AWS);
//! - [`gcs`]: Google's application-default credentials (a token, a service account's key
//!   signed into a JWT, gcloud's login, the GCE metadata server);
//! - [`netrc`]: the password `~/.netrc` holds for a host (where `wandb login` writes it);
//! - [`uri`]: percent-encoding as S3's canonical requests and Google's JSON API want it.
//!
//! Nothing here knows about artifacts or upstreams (only `hoard-types`' small helpers): `hoard-upstream` uses it for reference
//! entries (`s3://`, `gs://`) and W&B's key, and the shared tier will use it for its
//! object store. Every failure is an [`Error`] that names the credentials service or the
//! setting it came from, never a bare string.

mod ask;
pub mod aws;
mod error;
pub mod gcs;
pub mod netrc;
pub mod sigv4;
pub mod uri;

pub use ask::xml_text;
pub use error::Error;
