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
//!   storage layout (the crate `hoard-layout`, which the registry server also uses).
//!
//! Layout: `upstream.rs` (the traits), `blob.rs` (verified streams), `dir_upstream.rs`
//! (the `dir://` layout of `hoard-layout` as a [`Publisher`]), `registry.rs` (the HTTP
//! client), `http.rs` (requests with retries, bodies that resume), `wandb/` (GraphQL,
//! manifests, signed URLs), `error.rs`; `reference.rs`: reference entries' sources
//! (`https://`, `file://`, `s3://`, `gs://`) as [`BlobSource`]s. Cloud credentials
//! and request signing are the crate `hoard-cloud`'s.

mod blob;
mod dir_upstream;
mod error;
mod http;
pub mod reference;
mod registry;
mod upstream;
pub mod wandb;

use std::sync::Arc;

pub use blob::BlobStream;
pub use error::Error;
use hoard_layout::DirRoot;
pub use registry::{ClientOptions, RegistryClient, RetryPolicy};
pub use upstream::{
    BlobSource, BoxFuture, Catalog, FileSource, ForeignCatalog, Publisher, Upstream,
};

/// Opens an upstream by URL: `http(s)://host:port` is a hoard registry, `dir:///path` a
/// directory (which must exist), `wandb` W&B at `WANDB_BASE_URL` (default
/// `https://api.wandb.ai`) and `wandb+https://host` W&B at that server.
pub fn open(url: &str, options: ClientOptions) -> Result<Upstream, Error> {
    if let Some(path) = url.strip_prefix("dir://") {
        if !path.starts_with('/') {
            return Err(Error::Url {
                url: url.to_owned(),
                reason: "a `dir://` URL needs an absolute path: `dir:///data/hoard`".to_owned(),
            });
        }
        let root = DirRoot::new(path);
        if !root.root().join("artifacts").is_dir() && !root.root().join("blobs").is_dir() {
            return Err(Error::Url {
                url: url.to_owned(),
                reason: "the directory is not a hoard `dir://` root (no `artifacts/` or `blobs/`)"
                    .to_owned(),
            });
        }
        return Ok(Upstream::publishing(Arc::new(root)));
    }
    if url.starts_with("http://") || url.starts_with("https://") {
        return Ok(Upstream::publishing(Arc::new(RegistryClient::new(
            url, options,
        )?)));
    }
    if url == "wandb" || url.starts_with("wandb+") {
        let base = url.strip_prefix("wandb+");
        let client = ClientOptions {
            token: None,
            ..options
        };
        return Ok(Upstream::Foreign(Arc::new(wandb::WandbClient::new(
            wandb::WandbOptions::from_env(base, client),
        )?)));
    }
    Err(Error::Url {
        url: url.to_owned(),
        reason: "expected `http(s)://host:port` (a hoard registry), `dir:///path`, or `wandb` (W&B at `WANDB_BASE_URL`; `wandb+https://host` for another server)".to_owned(),
    })
}
