//! End-to-end tests: they start the real binaries.
//!
//! - `batch`: many small files in batch requests; damaged batches; a registry without them.
//! - `budget`: the cache budget: eviction under a stream of gets, pins, `gc`, refusals.
//! - `corrupt`: damaged answers (a flipped byte, a short body, one that breaks off) through a
//!   proxy: fetched again, and nothing of them kept.
//! - `crash`: kill -9 in the middle of gets: right bytes after a restart, ranges kept.
//! - `access`: a caller's own credential is checked before cached files are handed out.
//! - `bench`: the benchmark command docs/benchmark.md names runs and reports its comparison.
//! - `demo`: the README's main job on a small dataset.
//! - `daemon`: `hoard daemon` and `hoard get` against a real registry: cold, warm, prefixes,
//!   concurrency, aliases, offline, kill -9.
//! - `hf`: the Hugging Face Hub as an upstream, against the fake Hub of `hoard_tests`.
//! - `fuzz`: random and hostile socket requests and manifests; nothing outside changes.
//! - `hostile`: hostile `dir://` roots, the cache as a destination, SIGTERM while stuck.
//! - `ops`: `config check`, start-up checks, systemd readiness, `/metrics` on TCP,
//!   completions, `hoard` handing the servers' subcommands to `hoardd`.
//! - `publish`: `hoard publish` with the registry up, down and coming back; bad inputs;
//!   a viewer's token.
//! - `users`: a system daemon serving two Unix users (root only).
//! - `shared`: the same, attacked: one user cannot read, change or delete another's files.
//! - `tier`: the fleet tier on a real Garage cluster: a second box with no upstream call,
//!   wrong bytes in the bucket, a tier down or refusing, eight boxes at once, a node killed.
//! - `texts`: what users read (summaries, errors), pinned as insta snapshots.
//! - `verity`: blobs sealed with fs-verity, in a VM whose kernel has it.
//! - `references`: reference entries fetched from their URI and checked.
//! - `registry`: `hoard registry import` and `serve` as processes; tokens; refusals.
//! - `wandb`: W&B as an upstream, against the fake W&B server of `hoard_tests`.

mod access;
mod batch;
mod bench;
mod budget;
mod corrupt;
mod crash;
mod daemon;
mod damaged;
mod demo;
mod discover;
mod fuzz;
mod hf;
mod hostile;
mod ops;
mod progress;
mod publish;
mod references;
mod registry;
mod shared;
mod texts;
mod tier;
mod users;
mod verity;
mod wandb;
