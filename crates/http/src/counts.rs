//! Requests by route and status, for `/metrics` (Prometheus text format).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Mutex, PoisonError};

/// A std `Mutex` is enough: it is held for one map update, never across an `.await`.
#[derive(Debug, Default)]
pub struct RequestCounts {
    counts: Mutex<BTreeMap<(&'static str, u16), u64>>,
}

impl RequestCounts {
    pub fn record(&self, route: &'static str, status: u16) {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        *counts.entry((route, status)).or_default() += 1;
    }

    /// Appends the counter `name`, labelled `{label}="…",status="…"`.
    pub fn render(&self, out: &mut String, name: &str, label: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        let counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        for ((route, status), n) in counts.iter() {
            let _ = writeln!(out, "{name}{{{label}=\"{route}\",status=\"{status}\"}} {n}");
        }
    }
}
