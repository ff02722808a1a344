//! End-to-end tests: they start the real binaries.
//!
//! - `bench`: the benchmark command the README names runs and reports its comparison.
//! - `registry`: `hoard registry import` and `serve` as processes; tokens; refusals.

mod bench;
mod registry;
