//! Prometheus metrics: an [`Observer`] that counts what the engine and the HTTP layer
//! report, and renders it in the text exposition format for `/metrics`.

use std::time::Duration;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts,
    Registry, TextEncoder,
};
use tusk_core::Observer;

/// Every Tusk metric, registered in its own registry (plus the process collector).
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    errors: IntCounterVec,
    bytes_received: IntCounter,
    uploads_created: IntCounter,
    uploads_finished: IntCounter,
    uploads_terminated: IntCounter,
    open_connections: IntGauge,
    connections_cut: IntCounterVec,
    connections_refused: IntCounter,
    patch_duration: Histogram,
    storage_calls: HistogramVec,
    coordinator_calls: HistogramVec,
    leases_held: IntGauge,
    lease_waits: IntCounter,
    releases_requested: IntCounter,
    hook_calls: IntCounterVec,
    releases_honoured: IntCounter,
    lease_losses: IntCounter,
    sweeps: IntCounter,
    expired: IntCounter,
    purged: IntCounter,
    bytes_rewritten: IntCounterVec,
    leftovers_removed: IntCounter,
}

/// Call latencies from 0.1 ms to about 30 s.
fn latency_buckets() -> Vec<f64> {
    prometheus::exponential_buckets(0.0001, 2.5, 15).unwrap_or_default()
}

impl Metrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let counter = |name: &str, help: &str| -> Result<IntCounter, prometheus::Error> {
            let c = IntCounter::new(name, help)?;
            registry.register(Box::new(c.clone()))?;
            Ok(c)
        };
        let gauge = |name: &str, help: &str| -> Result<IntGauge, prometheus::Error> {
            let g = IntGauge::new(name, help)?;
            registry.register(Box::new(g.clone()))?;
            Ok(g)
        };
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels)?;
            registry.register(Box::new(c.clone()))?;
            Ok::<_, prometheus::Error>(c)
        };
        let histogram_vec = |name: &str, help: &str, labels: &[&str]| {
            let opts = HistogramOpts::new(name, help).buckets(latency_buckets());
            let h = HistogramVec::new(opts, labels)?;
            registry.register(Box::new(h.clone()))?;
            Ok::<_, prometheus::Error>(h)
        };
        let patch_duration = Histogram::with_opts(
            HistogramOpts::new("tusk_patch_duration_seconds", "Time to handle a PATCH.")
                .buckets(latency_buckets()),
        )?;
        registry.register(Box::new(patch_duration.clone()))?;
        #[cfg(target_os = "linux")]
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        Ok(Self {
            requests: counter_vec(
                "tusk_requests_total",
                "HTTP responses by method and status.",
                &["method", "status"],
            )?,
            errors: counter_vec(
                "tusk_request_errors_total",
                "Refused or failed requests by error kind.",
                &["kind"],
            )?,
            bytes_received: counter(
                "tusk_bytes_received_total",
                "Bytes of PATCH bodies committed.",
            )?,
            uploads_created: counter("tusk_uploads_created_total", "Uploads created.")?,
            uploads_finished: counter(
                "tusk_uploads_finished_total",
                "Uploads that received all their bytes.",
            )?,
            uploads_terminated: counter(
                "tusk_uploads_terminated_total",
                "Uploads terminated by clients.",
            )?,
            open_connections: gauge("tusk_open_connections", "Open client connections.")?,
            connections_cut: counter_vec(
                "tusk_connections_cut_total",
                "Connections the server closed at a bound, by reason (header_timeout, \
                 idle_timeout, ping_timeout, evicted).",
                &["reason"],
            )?,
            connections_refused: counter(
                "tusk_connections_refused_total",
                "New connections closed at once: at the connection limit with every \
                 connection busy.",
            )?,
            patch_duration,
            storage_calls: histogram_vec(
                "tusk_storage_call_duration_seconds",
                "Storage calls by backend and operation.",
                &["backend", "op"],
            )?,
            coordinator_calls: histogram_vec(
                "tusk_coordinator_call_duration_seconds",
                "Coordinator calls by backend and operation (round trips for remote ones).",
                &["backend", "op"],
            )?,
            leases_held: gauge("tusk_leases_held", "Upload leases this node holds now.")?,
            lease_waits: counter(
                "tusk_lease_waits_total",
                "Lease acquisitions that waited for another holder.",
            )?,
            releases_requested: counter(
                "tusk_release_requests_sent_total",
                "Requests that asked another holder of an upload's lease to let go.",
            )?,
            hook_calls: counter_vec(
                "tusk_hook_calls_total",
                "Hook calls by event and outcome (ok, rejected, failed, dropped).",
                &["event", "outcome"],
            )?,
            releases_honoured: counter(
                "tusk_release_requests_honoured_total",
                "PATCHes that stopped early because another request asked for the upload.",
            )?,
            lease_losses: counter(
                "tusk_lease_losses_total",
                "Commits or renewals refused by fencing.",
            )?,
            sweeps: counter("tusk_sweeps_total", "Expiry sweeps run by this node.")?,
            expired: counter(
                "tusk_expired_uploads_total",
                "Unfinished uploads removed by expiry.",
            )?,
            purged: counter(
                "tusk_purged_tombstones_total",
                "Tombstones of removed uploads forgotten.",
            )?,
            bytes_rewritten: counter_vec(
                "tusk_storage_bytes_rewritten_total",
                "Bytes a storage backend sent a second time (S3: tail bytes folded into a part; fs: small files folded into a write's file).",
                &["backend"],
            )?,
            leftovers_removed: counter(
                "tusk_storage_leftovers_removed_total",
                "Stored objects no record accounted for, removed by the sweeper.",
            )?,
            registry,
        })
    }

    /// The current values in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        if let Err(error) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::warn!(%error, "encoding metrics failed");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

/// A response status as a label. Statuses are chosen by Tusk or by the operator's hooks (a
/// hook's rejection keeps its status), never by a client; anything outside 100-599 is
/// `other`, so even a misbehaving hook adds at most 500 values.
fn status_label(status: u16) -> String {
    if (100..600).contains(&status) {
        status.to_string()
    } else {
        "other".to_string()
    }
}

impl Observer for Metrics {
    fn request(&self, method: &'static str, status: u16) {
        self.requests
            .with_label_values(&[method, &status_label(status)])
            .inc();
    }
    fn error(&self, kind: &'static str) {
        self.errors.with_label_values(&[kind]).inc();
    }
    fn connection_opened(&self) {
        self.open_connections.inc();
    }
    fn connection_closed(&self) {
        self.open_connections.dec();
    }
    fn connection_cut(&self, reason: &'static str) {
        self.connections_cut.with_label_values(&[reason]).inc();
    }
    fn connection_refused(&self) {
        self.connections_refused.inc();
    }
    fn bytes_committed(&self, bytes: u64) {
        self.bytes_received.inc_by(bytes);
    }
    fn upload_created(&self) {
        self.uploads_created.inc();
    }
    fn upload_finished(&self) {
        self.uploads_finished.inc();
    }
    fn upload_terminated(&self) {
        self.uploads_terminated.inc();
    }
    fn patch_handled(&self, elapsed: Duration) {
        self.patch_duration.observe(elapsed.as_secs_f64());
    }
    fn storage_call(&self, backend: &'static str, op: &'static str, elapsed: Duration) {
        self.storage_calls
            .with_label_values(&[backend, op])
            .observe(elapsed.as_secs_f64());
    }
    fn bytes_rewritten(&self, backend: &'static str, bytes: u64) {
        self.bytes_rewritten
            .with_label_values(&[backend])
            .inc_by(bytes);
    }
    fn leftovers_removed(&self, count: usize) {
        self.leftovers_removed.inc_by(count as u64);
    }
    fn coordinator_call(&self, backend: &'static str, op: &'static str, elapsed: Duration) {
        self.coordinator_calls
            .with_label_values(&[backend, op])
            .observe(elapsed.as_secs_f64());
    }
    fn lease_acquired(&self, waited: bool) {
        self.leases_held.inc();
        if waited {
            self.lease_waits.inc();
        }
    }
    fn lease_released(&self) {
        self.leases_held.dec();
    }
    fn release_requested(&self) {
        self.releases_requested.inc();
    }
    fn hook_call(&self, event: &'static str, outcome: &'static str) {
        self.hook_calls.with_label_values(&[event, outcome]).inc();
    }
    fn release_honoured(&self) {
        self.releases_honoured.inc();
    }
    fn lease_lost(&self) {
        self.lease_losses.inc();
    }
    fn sweep(&self, expired: usize, purged: usize) {
        self.sweeps.inc();
        self.expired.inc_by(expired as u64);
        self.purged.inc_by(purged as u64);
    }
}
