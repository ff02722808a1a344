//! Counters for `GET /metrics`, in the Prometheus text format.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

/// Requests by (route, status) and blob bytes in and out.
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    requests: hoard_http::RequestCounts,
    bytes_served: AtomicU64,
    bytes_received: AtomicU64,
    batched_blobs: AtomicU64,
}

impl Metrics {
    pub(crate) fn request(&self, route: &'static str, status: u16) {
        self.requests.record(route, status);
    }

    pub(crate) fn served(&self, bytes: u64) {
        self.bytes_served.fetch_add(bytes, Ordering::Relaxed);
    }

    /// One blob sent whole in a `blobs/batch` answer.
    pub(crate) fn batched(&self) {
        self.batched_blobs.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn received(&self, bytes: u64) {
        self.bytes_received.fetch_add(bytes, Ordering::Relaxed);
    }

    pub(crate) fn render(&self) -> String {
        let mut out = String::new();
        self.requests.render(
            &mut out,
            "hoard_registry_requests_total",
            "route",
            "Requests answered, by route and status.",
        );
        let _ = write!(
            out,
            "# HELP hoard_registry_blob_bytes_served_total Blob bytes sent to clients.\n\
             # TYPE hoard_registry_blob_bytes_served_total counter\n\
             hoard_registry_blob_bytes_served_total {}\n\
             # HELP hoard_registry_blob_bytes_received_total Blob bytes accepted from uploads.\n\
             # TYPE hoard_registry_blob_bytes_received_total counter\n\
             hoard_registry_blob_bytes_received_total {}\n\
             # HELP hoard_registry_batched_blobs_total Blobs sent in `blobs/batch` answers.\n\
             # TYPE hoard_registry_batched_blobs_total counter\n\
             hoard_registry_batched_blobs_total {}\n",
            self.bytes_served.load(Ordering::Relaxed),
            self.bytes_received.load(Ordering::Relaxed),
            self.batched_blobs.load(Ordering::Relaxed),
        );
        out
    }
}
