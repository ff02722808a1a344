//! `/metrics` in the Prometheus text format.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use crate::fetch::FetchCounters;

/// What the daemon's parts report for one rendering: each hands over its figures.
pub(crate) struct Snapshot<'a> {
    pub fetch: &'a FetchCounters,
    /// Blobs found cached / missing when a call needed them.
    pub hits: u64,
    pub misses: u64,
    pub scrubbed_bytes: u64,
    pub scrub_bad: u64,
    pub verity_sealed: u64,
    pub evicted_blobs: u64,
    pub evicted_bytes: u64,
    /// `max_size`, 0 when unbounded.
    pub budget_bytes: u64,
    /// The cache's (bytes, blobs) now.
    pub cache: (u64, u64),
    /// The fleet tier's figures, when there is one.
    pub tier: Option<hoard_types::api::TierStatus>,
}

/// Requests by (call, status), refusals by reason; the rest is read from the daemon's
/// counters.
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    requests: hoard_http::RequestCounts,
    refusals: std::sync::Mutex<std::collections::BTreeMap<&'static str, u64>>,
    /// Blobs found modified behind the daemon's back (quarantined, fetched again).
    pub(crate) tampered: std::sync::atomic::AtomicU64,
    /// Bytes of files materialized, and of those the bytes that were already cached.
    pub(crate) materialized_bytes: std::sync::atomic::AtomicU64,
    pub(crate) from_cache_bytes: std::sync::atomic::AtomicU64,
}

impl Metrics {
    pub(crate) fn request(&self, call: &'static str, status: u16) {
        self.requests.record(call, status);
    }

    /// A request refused or failed, by the problem's `type` (the rule that refused it).
    pub(crate) fn refusal(&self, reason: &'static str) {
        *self
            .refusals
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(reason)
            .or_default() += 1;
    }

    /// The text of `/metrics`.
    pub(crate) fn render(&self, now: &Snapshot<'_>) -> String {
        let mut out = String::new();
        self.requests.render(
            &mut out,
            "hoard_requests_total",
            "call",
            "Socket API calls answered, by call and status.",
        );
        self.render_refusals(&mut out);
        let c = now.fetch;
        render_histogram(&mut out, &c.seconds);
        render_failures(&mut out, c);
        render_values(
            &mut out,
            &[
                (
                    "hoard_cache_hits_total",
                    "counter",
                    "Blobs found cached when a call needed them.",
                    now.hits,
                ),
                (
                    "hoard_cache_misses_total",
                    "counter",
                    "Blobs missing when a call needed them.",
                    now.misses,
                ),
                (
                    "hoard_fetched_blobs_total",
                    "counter",
                    "Blobs fetched (from the upstream, or the fleet tier).",
                    c.fetched_blobs.load(Ordering::Relaxed),
                ),
                (
                    "hoard_fetched_bytes_total",
                    "counter",
                    "Bytes fetched (from the upstream, or the fleet tier).",
                    c.fetched_bytes.load(Ordering::Relaxed),
                ),
                (
                    "hoard_fetch_failures_total",
                    "counter",
                    "Blob fetches that failed.",
                    c.failed.load(Ordering::Relaxed),
                ),
                (
                    "hoard_scrubbed_bytes_total",
                    "counter",
                    "Bytes the background scrub re-hashed.",
                    now.scrubbed_bytes,
                ),
                (
                    "hoard_scrub_bad_blobs_total",
                    "counter",
                    "Blobs the background scrub found bad (quarantined, fetched again).",
                    now.scrub_bad,
                ),
                (
                    "hoard_refetched_blobs_total",
                    "counter",
                    "Downloads whose bytes were wrong, thrown away and fetched again.",
                    c.refetched.load(Ordering::Relaxed),
                ),
                (
                    "hoard_fetches_in_flight",
                    "gauge",
                    "Blob fetches running now.",
                    c.in_flight.load(Ordering::Relaxed),
                ),
                (
                    "hoard_materialized_bytes_total",
                    "counter",
                    "Bytes of files materialized into destinations.",
                    self.materialized_bytes.load(Ordering::Relaxed),
                ),
                (
                    "hoard_served_from_cache_bytes_total",
                    "counter",
                    "Bytes of materialized files that were already cached (not fetched for the call).",
                    self.from_cache_bytes.load(Ordering::Relaxed),
                ),
            ],
        );
        self.render_cache(&mut out, now);
        if let Some(tier) = &now.tier {
            render_tier(&mut out, tier);
        }
        out
    }

    /// The cache's contents and what happened to them.
    fn render_cache(&self, out: &mut String, now: &Snapshot<'_>) {
        render_values(
            out,
            &[
                (
                    "hoard_tampered_blobs_total",
                    "counter",
                    "Blobs found modified behind hoard's back: quarantined and fetched again.",
                    self.tampered.load(Ordering::Relaxed),
                ),
                (
                    "hoard_verity_sealed_blobs_total",
                    "counter",
                    "Blobs sealed with fs-verity since start.",
                    now.verity_sealed,
                ),
                (
                    "hoard_evicted_blobs_total",
                    "counter",
                    "Blobs evicted from the cache.",
                    now.evicted_blobs,
                ),
                (
                    "hoard_evicted_bytes_total",
                    "counter",
                    "Bytes of blobs evicted from the cache.",
                    now.evicted_bytes,
                ),
                (
                    "hoard_cache_bytes",
                    "gauge",
                    "Bytes of blobs in the cache.",
                    now.cache.0,
                ),
                (
                    "hoard_cache_blobs",
                    "gauge",
                    "Blobs in the cache.",
                    now.cache.1,
                ),
                (
                    "hoard_cache_budget_bytes",
                    "gauge",
                    "The cache budget (`max_size`); 0 when unbounded.",
                    now.budget_bytes,
                ),
            ],
        );
    }

    fn render_refusals(&self, out: &mut String) {
        let refusals = self
            .refusals
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let _ = writeln!(
            out,
            "# HELP hoard_refusals_total Requests refused or failed, by the rule or failure (the problem type).\n# TYPE hoard_refusals_total counter"
        );
        for (reason, count) in refusals {
            let _ = writeln!(out, "hoard_refusals_total{{reason=\"{reason}\"}} {count}");
        }
    }
}

fn render_histogram(out: &mut String, histogram: &crate::fetch::Histogram) {
    let (buckets, count, sum) = histogram.snapshot();
    let _ = writeln!(
        out,
        "# HELP hoard_fetch_duration_seconds Time to fetch one blob from the upstream, until it is staged.\n# TYPE hoard_fetch_duration_seconds histogram"
    );
    for (le, cumulative) in crate::fetch::BUCKETS.iter().zip(&buckets) {
        let _ = writeln!(
            out,
            "hoard_fetch_duration_seconds_bucket{{le=\"{le}\"}} {cumulative}"
        );
    }
    let _ = writeln!(
        out,
        "hoard_fetch_duration_seconds_bucket{{le=\"+Inf\"}} {count}\nhoard_fetch_duration_seconds_sum {sum}\nhoard_fetch_duration_seconds_count {count}"
    );
}

fn render_failures(out: &mut String, counters: &crate::fetch::FetchCounters) {
    let failures = counters
        .failures
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    let _ = writeln!(
        out,
        "# HELP hoard_fetch_failures_by_kind_total Blob fetches that failed, by kind of error.\n# TYPE hoard_fetch_failures_by_kind_total counter"
    );
    for (kind, count) in failures {
        let _ = writeln!(
            out,
            "hoard_fetch_failures_by_kind_total{{kind=\"{kind}\"}} {count}"
        );
    }
}

/// The fleet tier's figures (`hoard status` shows the same).
fn render_tier(out: &mut String, t: &hoard_types::api::TierStatus) {
    let c = "counter";
    render_values(
        out,
        &[
            (
                "hoard_tier_up",
                "gauge",
                "1 while the fleet tier is used, 0 while its breaker keeps it off.",
                u64::from(t.state == "on"),
            ),
            (
                "hoard_tier_hits_total",
                c,
                "Blobs the fleet tier served.",
                t.hits,
            ),
            (
                "hoard_tier_misses_total",
                c,
                "Blobs the fleet tier lacked (fetched from the upstream).",
                t.misses,
            ),
            (
                "hoard_tier_bad_blobs_total",
                c,
                "Blobs whose tier copy was wrong: refused and replaced.",
                t.bad,
            ),
            (
                "hoard_tier_read_bytes_total",
                c,
                "Bytes read from the fleet tier.",
                t.bytes_read,
            ),
            (
                "hoard_tier_written_bytes_total",
                c,
                "Bytes uploaded to the fleet tier.",
                t.bytes_written,
            ),
            (
                "hoard_tier_uploads_total",
                c,
                "Blobs uploaded to the fleet tier.",
                t.uploads,
            ),
            (
                "hoard_tier_uploads_queued",
                "gauge",
                "Uploads waiting or running.",
                t.queued,
            ),
            (
                "hoard_tier_upload_failures_total",
                c,
                "Uploads that failed.",
                t.upload_failures,
            ),
            (
                "hoard_tier_uploads_dropped_total",
                c,
                "Offers dropped from a full upload queue.",
                t.dropped,
            ),
            (
                "hoard_tier_metadata_hits_total",
                c,
                "Immutable versions and bindings found in the fleet tier.",
                t.metadata_hits,
            ),
            (
                "hoard_tier_metadata_misses_total",
                c,
                "Immutable versions and bindings the fleet tier lacked.",
                t.metadata_misses,
            ),
            (
                "hoard_tier_leases_won_total",
                c,
                "Blobs this box downloaded for the fleet, holding the lease.",
                t.leases_won,
            ),
            (
                "hoard_tier_leases_waited_total",
                c,
                "Blobs this box waited for while another box downloaded them.",
                t.leases_waited,
            ),
        ],
    );
}

/// Writes each `(name, kind, help, value)` in the text format.
fn render_values(out: &mut String, values: &[(&str, &str, &str, u64)]) {
    for (name, kind, help, value) in values {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
        );
    }
}
