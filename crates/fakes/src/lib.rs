//! Fakes of the foreign services hoard talks to, on loopback, in the shapes the real
//! services answer. Each is checked by that service's real client in the end-to-end tests
//! (the wandb SDK, `huggingface_hub`), so that it cannot drift from the real thing.
//!
//! - [`wandb`]: W&B's GraphQL, manifests, signed URLs, and S3/GCS-style buckets and
//!   credential endpoints for reference entries.
//! - [`hub`]: the Hugging Face Hub's API, `resolve` URLs and a CDN.
//! - [`server`]: the plumbing they share, an HTTP server on its own thread.

pub mod hub;
pub mod server;
pub mod wandb;
