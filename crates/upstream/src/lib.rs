//! The upstreams hoard fetches from and publishes to, behind narrow traits.
//!
//! [`Upstream`] is what the daemon sees: a native catalog that resolves references to
//! [`hoard_types::Version`]s, streams blobs (or byte ranges) as [`BlobStream`]s that
//! verify themselves and takes publishes, or a foreign catalog (W&B) whose files are
//! fetched by path and checked against its own digests. The traits, and how to add an
//! upstream kind, are in `upstream.rs` ([`BlobSource`], [`Catalog`], [`Publisher`],
//! [`ForeignCatalog`], [`FileSource`]). The implementations so far:
//!
//! - [`RegistryClient`]: the hoard registry over HTTP(S), with timeouts, retries with
//!   backoff and jitter, and downloads that resume where a connection broke;
//! - [`hoard_layout::DirRoot`]: a plain directory (`dir:///path`) in the registry's own
//!   storage layout (the crate `hoard-layout`, which the registry server also uses);
//! - [`wandb::WandbClient`] and [`hf::HfClient`]: W&B and the Hugging Face Hub, foreign
//!   catalogs whose files are checked against their own digests (MD5; SHA-256 and git's
//!   blob SHA-1).
//!
//! Layout: `upstream.rs` (the traits), `blob.rs` (verified streams), `batch.rs` (many
//! small blobs in one answer), `dir_upstream.rs`
//! (the `dir://` layout of `hoard-layout` as a [`Publisher`]), `registry.rs` (the HTTP
//! client), `http.rs` (requests with retries, bodies that resume), `wandb/` (GraphQL,
//! manifests, signed URLs), `error.rs`; `reference.rs`: reference entries' sources
//! (`https://`, `file://`, `s3://`, `gs://`) as [`BlobSource`]s; `tier/`: the fleet tier
//! on an S3-compatible store ([`Tier`]), a [`BlobSource`] the daemon asks before the
//! upstream. Cloud credentials and request signing are the crate `hoard-cloud`'s.

mod batch;
mod blob;
mod dir_upstream;
mod error;
pub mod hf;
mod http;
pub mod reference;
mod registry;
mod retry;
pub mod tier;
mod upstream;
pub mod wandb;

use std::sync::Arc;

pub use batch::{Batched, BlobBatch};
pub use blob::{BlobStream, BoxFuture, ForeignCheck};
pub use error::Error;
use hoard_layout::DirRoot;
pub use registry::{ClientOptions, RegistryClient};
pub use retry::RetryPolicy;
pub use tier::{Batch, Claim, Tier, TierConfig, Upload};
pub use upstream::{
    BlobSource, Catalog, FileSource, ForeignCatalog, ForeignListed, Publisher, Upstream,
};

/// An upstream URL, parsed: the one grammar of upstream URLs (flags, `hoard.toml`,
/// [`open`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UpstreamUrl {
    /// `http(s)://host:port`: a hoard registry.
    Registry(String),
    /// `dir:///path`: a directory in the registry's layout.
    Dir(std::path::PathBuf),
    /// `wandb`: W&B at `WANDB_BASE_URL` (default `https://api.wandb.ai`); `wandb+https://host`:
    /// W&B at that server.
    Wandb(Option<String>),
    /// `hf`: the Hugging Face Hub at `HF_ENDPOINT` (default `https://huggingface.co`);
    /// `hf+https://host`: a mirror or a self-hosted Hub.
    Hf(Option<String>),
}

impl std::str::FromStr for UpstreamUrl {
    type Err = Error;

    fn from_str(url: &str) -> Result<Self, Error> {
        let bad = |reason: &str| Error::Url {
            url: url.to_owned(),
            reason: reason.to_owned(),
        };
        if let Some(path) = url.strip_prefix("dir://") {
            if !path.starts_with('/') {
                return Err(bad(
                    "a `dir://` URL needs an absolute path: `dir:///data/hoard`",
                ));
            }
            return Ok(Self::Dir(path.into()));
        }
        if url.starts_with("http://") || url.starts_with("https://") {
            return Ok(Self::Registry(url.to_owned()));
        }
        if url == "wandb" {
            return Ok(Self::Wandb(None));
        }
        if url == "hf" {
            return Ok(Self::Hf(None));
        }
        if let Some(endpoint) = url.strip_prefix("hf+") {
            if endpoint.starts_with("http://") || endpoint.starts_with("https://") {
                return Ok(Self::Hf(Some(endpoint.to_owned())));
            }
            return Err(bad(
                "an `hf+` URL names the Hub's endpoint: `hf+https://host[:port]`",
            ));
        }
        if let Some(base) = url.strip_prefix("wandb+") {
            if base.starts_with("http://") || base.starts_with("https://") {
                return Ok(Self::Wandb(Some(base.to_owned())));
            }
            return Err(bad(
                "a `wandb+` URL names the server: `wandb+https://host[:port]`",
            ));
        }
        Err(bad(
            "expected `http(s)://host:port` (a hoard registry), `dir:///path`, `wandb` (W&B at `WANDB_BASE_URL`; `wandb+https://host` for another server), or `hf` (the Hugging Face Hub at `HF_ENDPOINT`; `hf+https://host` for a mirror)",
        ))
    }
}

/// Opens an upstream by URL (see [`UpstreamUrl`]); a `dir://` root must exist.
pub fn open(url: &str, options: ClientOptions) -> Result<Upstream, Error> {
    match url.parse::<UpstreamUrl>()? {
        UpstreamUrl::Dir(path) => {
            let root = DirRoot::new(&path);
            if !root.root().join("artifacts").is_dir() && !root.root().join("blobs").is_dir() {
                return Err(Error::Url {
                    url: url.to_owned(),
                    reason:
                        "the directory is not a hoard `dir://` root (no `artifacts/` or `blobs/`)"
                            .to_owned(),
                });
            }
            Ok(Upstream::publishing(Arc::new(root)))
        }
        UpstreamUrl::Registry(url) => Ok(Upstream::publishing(Arc::new(RegistryClient::new(
            &url, options,
        )?))),
        UpstreamUrl::Hf(endpoint) => {
            let client = ClientOptions {
                token: None,
                ..options
            };
            Ok(Upstream::Foreign(Arc::new(hf::HfClient::new(
                hf::HfOptions::from_env(endpoint.as_deref(), client),
            )?)))
        }
        UpstreamUrl::Wandb(base) => {
            let client = ClientOptions {
                token: None,
                ..options
            };
            Ok(Upstream::Foreign(Arc::new(wandb::WandbClient::new(
                wandb::WandbOptions::from_env(base.as_deref(), client),
            )?)))
        }
    }
}
