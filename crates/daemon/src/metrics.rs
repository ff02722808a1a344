//! `/metrics` in the Prometheus text format.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::sync::{Mutex, PoisonError};

use crate::Daemon;

/// Requests by (call, status). A std `Mutex`: held for one map update, never across an
/// `.await`.
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    requests: Mutex<BTreeMap<(&'static str, u16), u64>>,
}

impl Metrics {
    pub(crate) fn request(&self, call: &'static str, status: u16) {
        let mut requests = self.requests.lock().unwrap_or_else(PoisonError::into_inner);
        *requests.entry((call, status)).or_default() += 1;
    }

    pub(crate) fn render(&self, daemon: &Daemon) -> String {
        let mut out = String::from(
            "# HELP hoard_requests_total Socket API calls answered, by call and status.\n\
             # TYPE hoard_requests_total counter\n",
        );
        for ((call, status), n) in self
            .requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
        {
            let _ = writeln!(
                out,
                "hoard_requests_total{{call=\"{call}\",status=\"{status}\"}} {n}"
            );
        }
        let c = &daemon.fetcher.counters;
        for (name, kind, help, value) in [
            (
                "hoard_cache_hits_total",
                "counter",
                "Blobs found cached when a call needed them.",
                daemon.hits.load(Ordering::Relaxed),
            ),
            (
                "hoard_cache_misses_total",
                "counter",
                "Blobs missing when a call needed them.",
                daemon.misses.load(Ordering::Relaxed),
            ),
            (
                "hoard_fetched_blobs_total",
                "counter",
                "Blobs fetched from the upstream.",
                c.fetched_blobs.load(Ordering::Relaxed),
            ),
            (
                "hoard_fetched_bytes_total",
                "counter",
                "Bytes fetched from the upstream.",
                c.fetched_bytes.load(Ordering::Relaxed),
            ),
            (
                "hoard_fetch_failures_total",
                "counter",
                "Blob fetches that failed.",
                c.failed.load(Ordering::Relaxed),
            ),
            (
                "hoard_fetches_in_flight",
                "gauge",
                "Blob fetches running now.",
                c.in_flight.load(Ordering::Relaxed),
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        }
        out
    }
}
