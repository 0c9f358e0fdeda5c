//! Prometheus metrics (design §7): every name in one place ([`names`]), one recorder per
//! running veer, and the handles the data path records through. Rendering `/metrics` from
//! a snapshot is [`crate::scrape`]'s: this module knows no snapshot, so the model can carry
//! its handles.
//!
//! The hot path does no string formatting and no label lookup: histogram handles are
//! resolved when a snapshot is built and carried in it ([`ServerMetrics`]). Counters and
//! gauges are not kept twice: at scrape time they are read from the same atomics `show stat`
//! reads (requests by class, active counts, failures), so both always agree. Above
//! `max_servers_per_backend`, a backend's per-server series fold into `server="other"`.

use std::sync::Arc;

use ::metrics::{Counter, Gauge, Histogram, Key, Label, Recorder};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};

use crate::config::MetricsSpec;

/// Every metric name veer exports.
pub mod names {
    pub const REQUESTS: &str = "veer_requests_total";
    pub const REQUEST_DURATION: &str = "veer_request_duration_seconds";
    pub const UPSTREAM_RESPONSE: &str = "veer_upstream_response_duration_seconds";
    pub const UPSTREAM_CONNECT: &str = "veer_upstream_connect_duration_seconds";
    pub const SERVER_ACTIVE_REQUESTS: &str = "veer_server_active_requests";
    pub const SERVER_ACTIVE_CONNECTIONS: &str = "veer_server_active_connections";
    pub const SERVER_CONNECT_FAILURES: &str = "veer_server_connect_failures_total";
    pub const SERVER_RESPONSE_BYTES: &str = "veer_server_response_bytes_total";
    pub const SERVER_READ_TIMEOUTS: &str = "veer_server_read_timeouts_total";
    pub const SERVER_UP: &str = "veer_server_up";
    pub const SERVER_ADMIN_STATE: &str = "veer_server_admin_state";
    pub const GROUP_WEIGHT: &str = "veer_group_weight";
    pub const GROUP_INFO: &str = "veer_group_info";
    pub const NOTIFY: &str = "veer_notify_total";
    pub const NOTIFY_DROPPED: &str = "veer_notify_dropped_total";
    pub const LISTENER_ACTIVE_CONNECTIONS: &str = "veer_listener_active_connections";
    pub const LISTENER_CONNECTIONS: &str = "veer_listener_connections_total";
    pub const LISTENER_REQUEST_BYTES: &str = "veer_listener_request_bytes_total";
    pub const LISTENER_RESPONSES: &str = "veer_listener_responses_total";
    pub const PROXY_ERRORS: &str = "veer_proxy_errors_total";
    pub const BACKEND_RETRIES: &str = "veer_backend_retries_total";
    pub const BACKEND_TIMEOUTS: &str = "veer_backend_timeouts_total";
    pub const BACKEND_ZONE_PICKS: &str = "veer_backend_zone_picks_total";
    pub const MIRROR_REQUESTS: &str = "veer_mirror_requests_total";
    pub const RELOADS: &str = "veer_config_reloads_total";
    pub const CONFIG_INFO: &str = "veer_config_info";
    pub const ADMIN_COMMANDS: &str = "veer_admin_commands_total";
    pub const ACCESS_LOG_DROPPED: &str = "veer_access_log_dropped_total";
    pub const BUILD_INFO: &str = "veer_build_info";
    pub const TLS_CERT_NOT_AFTER: &str = "veer_tls_cert_not_after_seconds";
    pub const TLS_HANDSHAKES: &str = "veer_tls_handshakes_total";
    pub const TLS_NEGOTIATED: &str = "veer_tls_negotiated_total";
    pub const PROXY_PROTOCOL_ERRORS: &str = "veer_proxy_protocol_errors_total";
    pub const HEALTH_CHECKS: &str = "veer_health_checks_total";
    pub const QUEUE_CURRENT: &str = "veer_backend_queue_current";
    pub const QUEUE_WAIT: &str = "veer_backend_queue_wait_seconds";
    pub const QUEUE_REJECTED: &str = "veer_backend_queue_rejected_total";
    pub const RETRY_BUDGET_EXHAUSTED: &str = "veer_backend_retry_budget_exhausted_total";
    pub const OUTLIER_EJECTIONS: &str = "veer_server_outlier_ejections_total";
}

/// Histogram handles of one server, resolved once per snapshot.
#[derive(Clone)]
pub struct ServerMetrics {
    /// Client view: from the request's arrival to the end of the response body.
    pub request: Histogram,
    /// From sending upstream to the response headers.
    pub upstream: Histogram,
    /// Establishing a new upstream connection.
    pub connect: Histogram,
}

impl ServerMetrics {
    /// Handles that record nothing (snapshots built without a recorder: benches).
    pub fn noop() -> Self {
        ServerMetrics {
            request: Histogram::noop(),
            upstream: Histogram::noop(),
            connect: Histogram::noop(),
        }
    }
}

/// The recorder of one running veer.
pub struct Metrics {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    max_servers: usize,
    /// `process_cpu_seconds_total`, `process_resident_memory_bytes`, open and max file
    /// descriptors, threads, start time (the Prometheus client conventions).
    process: metrics_process::Collector,
}

static META: ::metrics::Metadata<'static> = ::metrics::Metadata::new(module_path!(), ::metrics::Level::INFO, None);

fn key(name: &'static str, labels: &[(&'static str, String)]) -> Key {
    Key::from_parts(
        name,
        labels
            .iter()
            .map(|(k, v)| Label::new(*k, v.clone()))
            .collect::<Vec<_>>(),
    )
}

impl Metrics {
    pub fn new(spec: &MetricsSpec) -> Arc<Metrics> {
        let builder = PrometheusBuilder::new();
        let builder = builder
            .set_buckets(&spec.buckets)
            .unwrap_or_else(|_| PrometheusBuilder::new());
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        for (name, help) in [
            (names::REQUESTS, "Responses from upstream servers, by status class."),
            (
                names::REQUEST_DURATION,
                "Request duration as the client sees it, to the end of the response body.",
            ),
            (
                names::UPSTREAM_RESPONSE,
                "Time from sending a request upstream to its response headers.",
            ),
            (names::UPSTREAM_CONNECT, "Time to establish a new upstream connection."),
            (names::SERVER_ACTIVE_REQUESTS, "Requests in flight per server."),
            (
                names::SERVER_ACTIVE_CONNECTIONS,
                "Open TCP sessions and upgraded tunnels per server.",
            ),
            (
                names::SERVER_CONNECT_FAILURES,
                "Failed upstream connection attempts per server.",
            ),
            (
                names::SERVER_RESPONSE_BYTES,
                "Response body bytes received from each server.",
            ),
            (
                names::SERVER_READ_TIMEOUTS,
                "Responses cut because the server sent no body bytes for read_timeout.",
            ),
            (
                names::SERVER_UP,
                "1 when the server is reachable (not ejected after connect failures).",
            ),
            (
                names::SERVER_ADMIN_STATE,
                "1 for the server's admin state (ready, drain, maint).",
            ),
            (names::GROUP_WEIGHT, "Split weight of each group."),
            (
                names::LISTENER_ACTIVE_CONNECTIONS,
                "Open client connections per listener.",
            ),
            (names::LISTENER_CONNECTIONS, "Client connections accepted per listener."),
            (
                names::LISTENER_REQUEST_BYTES,
                "Request body bytes received from clients per listener.",
            ),
            (
                names::LISTENER_RESPONSES,
                "Responses to clients per listener, by status class, veer's own errors included.",
            ),
            (
                names::PROXY_ERRORS,
                "Responses veer produced itself (veer-error), by reason.",
            ),
            (
                names::BACKEND_RETRIES,
                "Requests retried on another server after a connect failure.",
            ),
            (
                names::BACKEND_TIMEOUTS,
                "Requests answered 504 because the upstream did not answer in time.",
            ),
            (
                names::BACKEND_ZONE_PICKS,
                "Zone-aware routing: servers picked in veer's zone (local) and in another (cross_zone).",
            ),
            (names::MIRROR_REQUESTS, "Mirrored copies by result."),
            (names::RELOADS, "Config reloads by result."),
            (names::CONFIG_INFO, "The running config's hash."),
            (names::ADMIN_COMMANDS, "Admin commands by command and result."),
            (
                names::ACCESS_LOG_DROPPED,
                "Access log lines dropped because the sink could not keep up.",
            ),
            (names::BUILD_INFO, "veer's version."),
            (
                names::TLS_CERT_NOT_AFTER,
                "When each loaded certificate expires (Unix time), per listener and certificate file.",
            ),
            (
                names::TLS_HANDSHAKES,
                "TLS handshakes on client connections, by result (ok or the failure's reason).",
            ),
            (
                names::TLS_NEGOTIATED,
                "Completed TLS handshakes by protocol version and ALPN protocol.",
            ),
            (
                names::HEALTH_CHECKS,
                "Active health checks per server, by result (pass, fail).",
            ),
            (
                names::QUEUE_CURRENT,
                "Requests waiting in the backend's queue for a server under its maxconn.",
            ),
            (
                names::QUEUE_WAIT,
                "How long requests that got a server waited in the backend's queue.",
            ),
            (
                names::QUEUE_REJECTED,
                "Requests answered 503 by the queue, by reason (full, timeout).",
            ),
            (
                names::RETRY_BUDGET_EXHAUSTED,
                "Retries not made because the backend's retry budget was spent.",
            ),
            (
                names::OUTLIER_EJECTIONS,
                "Servers ejected by outlier detection (consecutive error responses).",
            ),
            (
                names::PROXY_PROTOCOL_ERRORS,
                "Connections closed because their PROXY protocol header was missing, malformed, oversized or late.",
            ),
        ] {
            if name == names::TLS_CERT_NOT_AFTER {
                recorder.describe_gauge(name.into(), Some(::metrics::Unit::Seconds), help.into());
            } else if name.ends_with("_seconds") {
                recorder.describe_histogram(name.into(), Some(::metrics::Unit::Seconds), help.into());
            } else if name.ends_with("_total") {
                recorder.describe_counter(name.into(), None, help.into());
            } else {
                recorder.describe_gauge(name.into(), None, help.into());
            }
        }
        let process = metrics_process::Collector::default();
        ::metrics::with_local_recorder(&recorder, || process.describe());
        Arc::new(Metrics {
            recorder,
            handle,
            max_servers: spec.max_servers_per_backend,
            process,
        })
    }

    /// The server label: its name, or "other" past the backend's cardinality limit.
    pub fn server_label(&self, server: &str, index_in_backend: usize) -> String {
        if index_in_backend < self.max_servers {
            server.to_string()
        } else {
            "other".to_string()
        }
    }

    /// The histogram handles for one server.
    pub fn server(&self, backend: &str, group: &str, server_label: &str) -> ServerMetrics {
        let labels = [
            ("backend", backend.to_string()),
            ("group", group.to_string()),
            ("server", server_label.to_string()),
        ];
        let h = |name| self.recorder.register_histogram(&key(name, &labels), &META);
        ServerMetrics {
            request: h(names::REQUEST_DURATION),
            upstream: h(names::UPSTREAM_RESPONSE),
            connect: h(names::UPSTREAM_CONNECT),
        }
    }

    pub fn histogram(&self, name: &'static str, labels: &[(&'static str, String)]) -> Histogram {
        self.recorder.register_histogram(&key(name, labels), &META)
    }

    pub fn counter(&self, name: &'static str, labels: &[(&'static str, String)]) -> Counter {
        self.recorder.register_counter(&key(name, labels), &META)
    }

    pub fn gauge(&self, name: &'static str, labels: &[(&'static str, String)]) -> Gauge {
        self.recorder.register_gauge(&key(name, labels), &META)
    }

    /// Drains histogram samples into their buckets (call periodically).
    pub fn upkeep(&self) {
        self.handle.run_upkeep();
    }

    /// Everything recorded, in the Prometheus text format (after [`crate::scrape`] has
    /// refreshed the counters and gauges it reads from live atomics).
    pub fn render_recorded(&self) -> String {
        ::metrics::with_local_recorder(&self.recorder, || self.process.collect());
        self.handle.render()
    }
}

/// HAProxy's session rate: sessions started in the last whole second (`rate`), the most in
/// any second (`rate_max`), and `now_ms()` of the second the last one started in
/// (`lastsess`). Derived from a running total by [`Rate::tick`] once a second, off the data
/// path.
#[derive(Debug, Default)]
pub struct Rate {
    pub rate: std::sync::atomic::AtomicU64,
    pub rate_max: std::sync::atomic::AtomicU64,
    pub last: std::sync::atomic::AtomicU64,
    /// The total the last tick saw, plus one (0: no tick yet).
    seen: std::sync::atomic::AtomicU64,
}

impl Rate {
    /// Called once a second with the running total of sessions.
    pub fn tick(&self, total: u64, now_ms: u64) {
        use std::sync::atomic::Ordering::Relaxed;
        let seen = self.seen.swap(total + 1, Relaxed);
        if seen == 0 {
            // The first tick only learns where the count stands.
            return;
        }
        let started = total.saturating_sub(seen - 1);
        self.rate.store(started, Relaxed);
        self.rate_max.fetch_max(started, Relaxed);
        if started > 0 {
            self.last.store(now_ms, Relaxed);
        }
    }

    /// `rate`, `rate_max`, and seconds since the last session (`None`: none yet).
    pub fn read(&self, now_ms: u64) -> (u64, u64, Option<u64>) {
        use std::sync::atomic::Ordering::Relaxed;
        let last = self.last.load(Relaxed);
        (
            self.rate.load(Relaxed),
            self.rate_max.load(Relaxed),
            (last != 0).then(|| now_ms.saturating_sub(last) / 1000),
        )
    }
}

/// Per-listener counters, kept by the listener's accept loop (a rename keeps them).
#[derive(Debug, Default)]
pub struct ListenerStats {
    /// Connections per second.
    pub rate: Rate,
    pub active: std::sync::atomic::AtomicUsize,
    pub total: std::sync::atomic::AtomicU64,
    pub request_bytes: std::sync::atomic::AtomicU64,
    /// Responses to clients by status class (proxied and veer's own), as in `ServerState`.
    pub responses: [std::sync::atomic::AtomicU64; 6],
    /// veer's own error responses, by `veer-error` reason ([`crate::error::REASONS`]).
    pub errors: [std::sync::atomic::AtomicU64; crate::error::REASONS.len()],
    /// TLS handshakes by result ([`TLS_RESULTS`]).
    pub tls_handshakes: [std::sync::atomic::AtomicU64; TLS_RESULTS.len()],
    /// Completed handshakes by (version, ALPN): [`TLS_VERSIONS`] × [`TLS_ALPNS`].
    pub tls_negotiated: [std::sync::atomic::AtomicU64; TLS_VERSIONS.len() * TLS_ALPNS.len()],
    /// Connections closed for a bad or missing PROXY protocol header.
    pub proxy_protocol_errors: std::sync::atomic::AtomicU64,
    /// Woken whenever a connection of the listener closes (the accept loop waits on it at
    /// `max_connections`).
    pub released: tokio::sync::Notify,
    /// The listener's `max_connections` (0: no limit), set when the config is applied.
    pub max_connections: std::sync::atomic::AtomicUsize,
}

/// `result` label values of `veer_tls_handshakes_total`.
pub const TLS_RESULTS: [&str; 7] = [
    "ok",
    "timeout",
    "closed",
    "no_client_cert",
    "bad_client_cert",
    "incompatible",
    "protocol",
];
pub const TLS_VERSIONS: [&str; 2] = ["TLSv1.2", "TLSv1.3"];
pub const TLS_ALPNS: [&str; 3] = ["h2", "http/1.1", "none"];
