//! Counters for `GET /metrics`, in the Prometheus text format.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Requests by (route, status) and blob bytes in and out. A std `Mutex` is enough: it is
/// held for one map update, never across an `.await`.
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    requests: Mutex<BTreeMap<(&'static str, u16), u64>>,
    bytes_served: AtomicU64,
    bytes_received: AtomicU64,
}

impl Metrics {
    pub(crate) fn request(&self, route: &'static str, status: u16) {
        let mut requests = self
            .requests
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *requests.entry((route, status)).or_default() += 1;
    }

    pub(crate) fn served(&self, bytes: u64) {
        self.bytes_served.fetch_add(bytes, Ordering::Relaxed);
    }

    pub(crate) fn received(&self, bytes: u64) {
        self.bytes_received.fetch_add(bytes, Ordering::Relaxed);
    }

    pub(crate) fn render(&self) -> String {
        let mut out = String::new();
        out.push_str(
            "# HELP hoard_registry_requests_total Requests answered, by route and status.\n\
             # TYPE hoard_registry_requests_total counter\n",
        );
        let requests = self
            .requests
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for ((route, status), count) in requests.iter() {
            let _ = writeln!(
                out,
                "hoard_registry_requests_total{{route=\"{route}\",status=\"{status}\"}} {count}"
            );
        }
        let _ = write!(
            out,
            "# HELP hoard_registry_blob_bytes_served_total Blob bytes sent to clients.\n\
             # TYPE hoard_registry_blob_bytes_served_total counter\n\
             hoard_registry_blob_bytes_served_total {}\n\
             # HELP hoard_registry_blob_bytes_received_total Blob bytes accepted from uploads.\n\
             # TYPE hoard_registry_blob_bytes_received_total counter\n\
             hoard_registry_blob_bytes_received_total {}\n",
            self.bytes_served.load(Ordering::Relaxed),
            self.bytes_received.load(Ordering::Relaxed),
        );
        out
    }
}
