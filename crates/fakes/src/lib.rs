//! The services hoard talks to, on loopback, for the end-to-end tests and the benchmark.
//!
//! Fakes, in the shapes the real services answer, each checked by that service's real
//! client in the end-to-end tests (the wandb SDK, `huggingface_hub`), so that it cannot
//! drift from the real thing:
//!
//! - [`wandb`]: W&B's GraphQL, manifests, signed URLs, and S3/GCS-style buckets and
//!   credential endpoints for reference entries.
//! - [`hub`]: the Hugging Face Hub's API, `resolve` URLs and a CDN.
//! - [`server`]: the plumbing they share, an HTTP server on its own thread.
//!
//! And real object stores for the fleet tier, started as processes: [`garage`] (a
//! three-node Garage cluster) and [`s3`] (moto's S3 server, and a hand in any bucket).

pub mod garage;
pub mod hub;
pub mod s3;
pub mod server;
pub mod wandb;
