//! The `/metrics` page: the recorder's histograms plus counters and gauges refreshed, at
//! scrape time, from the same live atomics `show stat` reads (requests by class, active
//! counts, failures), so both always agree; series of servers, groups and backends the
//! snapshot no longer has are left out. Telemetry over the model: reads a snapshot and
//! its servers' state; knows nothing of the data path or the control plane.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use crate::config::AdminState;
use crate::metrics::{names, ListenerStats, Metrics, TLS_ALPNS, TLS_RESULTS, TLS_VERSIONS};
use crate::snapshot::Snapshot;

/// What a scrape reads besides the snapshot.
pub struct ScrapeInputs {
    pub listeners: Vec<(String, Arc<ListenerStats>)>,
    pub reloads_ok: u64,
    pub reloads_failed: u64,
    pub access_log_dropped: u64,
}

/// The Prometheus text exposition: counters and gauges refreshed from the live atomics,
/// then everything rendered.
pub fn render(metrics: &Metrics, snap: &Snapshot, extra: &ScrapeInputs) -> String {
    #[derive(Default)]
    struct Agg {
        responses: [u64; 6],
        active_requests: u64,
        active_connections: u64,
        connect_failures: u64,
        read_timeouts: u64,
        ejections: u64,
        bytes: u64,
        /// Active checks passed and failed, when the server is checked.
        checks: Option<(u64, u64)>,
    }
    let mut servers: BTreeMap<(String, String, String), Agg> = BTreeMap::new();
    let now = crate::clock::now_ms();
    for b in &snap.backends {
        let mut index = 0;
        for g in &b.groups {
            metrics
                .gauge(
                    names::GROUP_WEIGHT,
                    &[("backend", b.name.to_string()), ("group", g.name.to_string())],
                )
                .set(g.weight as f64);
            for s in &g.servers {
                let label = metrics.server_label(&s.name, index);
                index += 1;
                let st = &s.state;
                let agg = servers
                    .entry((b.name.to_string(), g.name.to_string(), label.clone()))
                    .or_default();
                for (a, c) in agg.responses.iter_mut().zip(&st.responses) {
                    *a += c.load(Relaxed);
                }
                agg.active_requests += st.active_requests.load(Relaxed) as u64;
                agg.active_connections += st.active_connections.load(Relaxed) as u64;
                agg.connect_failures += st.connect_failures.load(Relaxed);
                agg.read_timeouts += st.read_timeouts.load(Relaxed);
                agg.ejections += st.outlier.ejected_total.load(Relaxed);
                agg.bytes += st.response_bytes.load(Relaxed);
                if st.check.running.load(Relaxed) {
                    let (p, f) = agg.checks.unwrap_or_default();
                    agg.checks = Some((p + st.check.passed.load(Relaxed), f + st.check.failed.load(Relaxed)));
                }
                if label != "other" {
                    let labels = [
                        ("backend", b.name.to_string()),
                        ("group", g.name.to_string()),
                        ("server", label.clone()),
                    ];
                    metrics
                        .gauge(names::SERVER_UP, &labels)
                        .set(if st.available(now) { 1.0 } else { 0.0 });
                    for state in AdminState::ALL {
                        let mut l = labels.to_vec();
                        l.push(("state", state.as_str().to_string()));
                        metrics
                            .gauge(names::SERVER_ADMIN_STATE, &l)
                            .set(if s.admin == state { 1.0 } else { 0.0 });
                    }
                }
            }
        }
        let backend = [("backend", b.name.to_string())];
        metrics
            .counter(names::BACKEND_RETRIES, &backend)
            .absolute(b.state.retries.load(Relaxed));
        metrics
            .counter(names::BACKEND_TIMEOUTS, &backend)
            .absolute(b.state.timeouts.load(Relaxed));
        if b.zone_aware {
            for (locality, c) in [
                ("local", &b.state.local_picks),
                ("cross_zone", &b.state.cross_zone_picks),
            ] {
                let labels = [("backend", b.name.to_string()), ("locality", locality.to_string())];
                metrics
                    .counter(names::BACKEND_ZONE_PICKS, &labels)
                    .absolute(c.load(Relaxed));
            }
        }
        if b.limited {
            let q = &b.state.queue;
            metrics.gauge(names::QUEUE_CURRENT, &backend).set(q.len() as f64);
            for (reason, c) in [("full", &q.full), ("timeout", &q.timed_out)] {
                metrics
                    .counter(
                        names::QUEUE_REJECTED,
                        &[("backend", b.name.to_string()), ("reason", reason.into())],
                    )
                    .absolute(c.load(Relaxed));
            }
        }
        if b.retry_budget.is_some() {
            metrics
                .counter(names::RETRY_BUDGET_EXHAUSTED, &backend)
                .absolute(b.state.budget.exhausted.load(Relaxed));
        }
        if b.mirror.is_some() {
            for (result, c) in [
                ("ok", &b.state.mirror_ok),
                ("failed", &b.state.mirror_failed),
                ("skipped", &b.state.mirror_skipped),
            ] {
                metrics
                    .counter(
                        names::MIRROR_REQUESTS,
                        &[("backend", b.name.to_string()), ("result", result.into())],
                    )
                    .absolute(c.load(Relaxed));
            }
        }
    }
    let live = Live {
        servers: servers.keys().cloned().collect(),
        groups: snap
            .backends
            .iter()
            .flat_map(|b| b.groups.iter().map(|g| (b.name.to_string(), g.name.to_string())))
            .collect(),
        backends: snap.backends.iter().map(|b| b.name.to_string()).collect(),
    };
    for ((b, g, s), agg) in servers {
        let labels = [("backend", b), ("group", g), ("server", s)];
        for (class, v) in crate::state::STATUS_CLASSES.iter().zip(agg.responses) {
            let mut l = labels.to_vec();
            l.push(("code", class.to_string()));
            metrics.counter(names::REQUESTS, &l).absolute(v);
        }
        metrics
            .gauge(names::SERVER_ACTIVE_REQUESTS, &labels)
            .set(agg.active_requests as f64);
        metrics
            .gauge(names::SERVER_ACTIVE_CONNECTIONS, &labels)
            .set(agg.active_connections as f64);
        metrics
            .counter(names::SERVER_CONNECT_FAILURES, &labels)
            .absolute(agg.connect_failures);
        metrics
            .counter(names::SERVER_READ_TIMEOUTS, &labels)
            .absolute(agg.read_timeouts);
        metrics
            .counter(names::SERVER_RESPONSE_BYTES, &labels)
            .absolute(agg.bytes);
        metrics
            .counter(names::OUTLIER_EJECTIONS, &labels)
            .absolute(agg.ejections);
        if let Some((passed, failed)) = agg.checks {
            for (result, n) in [("pass", passed), ("fail", failed)] {
                let mut l = labels.to_vec();
                l.push(("result", result.to_string()));
                metrics.counter(names::HEALTH_CHECKS, &l).absolute(n);
            }
        }
    }
    for (name, stats) in &extra.listeners {
        let l = [("listener", name.clone())];
        metrics
            .gauge(names::LISTENER_ACTIVE_CONNECTIONS, &l)
            .set(stats.active.load(Relaxed) as f64);
        metrics
            .counter(names::LISTENER_CONNECTIONS, &l)
            .absolute(stats.total.load(Relaxed));
        metrics
            .counter(names::LISTENER_REQUEST_BYTES, &l)
            .absolute(stats.request_bytes.load(Relaxed));
        for (class, c) in crate::state::STATUS_CLASSES.iter().zip(&stats.responses) {
            metrics
                .counter(
                    names::LISTENER_RESPONSES,
                    &[("listener", name.clone()), ("code", class.to_string())],
                )
                .absolute(c.load(Relaxed));
        }
        for (reason, c) in crate::error::REASONS.iter().zip(&stats.errors) {
            metrics
                .counter(
                    names::PROXY_ERRORS,
                    &[("listener", name.clone()), ("reason", reason.to_string())],
                )
                .absolute(c.load(Relaxed));
        }
        let spec = snap.spec.listeners.iter().find(|l| l.name == *name);
        if let Some(tls) = spec.and_then(|l| l.tls.as_ref()) {
            for (result, c) in TLS_RESULTS.iter().zip(&stats.tls_handshakes) {
                metrics
                    .counter(
                        names::TLS_HANDSHAKES,
                        &[("listener", name.clone()), ("result", result.to_string())],
                    )
                    .absolute(c.load(Relaxed));
            }
            for (i, c) in stats.tls_negotiated.iter().enumerate() {
                let labels = [
                    ("listener", name.clone()),
                    ("version", TLS_VERSIONS[i / TLS_ALPNS.len()].to_string()),
                    ("alpn", TLS_ALPNS[i % TLS_ALPNS.len()].to_string()),
                ];
                metrics
                    .counter(names::TLS_NEGOTIATED, &labels)
                    .absolute(c.load(Relaxed));
            }
            for cert in &tls.certs {
                let labels = [
                    ("listener", name.clone()),
                    ("cert", cert.cert_file.display().to_string()),
                ];
                metrics
                    .gauge(names::TLS_CERT_NOT_AFTER, &labels)
                    .set(cert.info.not_after as f64);
            }
        }
        if spec.is_some_and(|l| l.accept_proxy) {
            metrics
                .counter(names::PROXY_PROTOCOL_ERRORS, &l)
                .absolute(stats.proxy_protocol_errors.load(Relaxed));
        }
    }
    metrics
        .counter(names::RELOADS, &[("result", "ok".into())])
        .absolute(extra.reloads_ok);
    metrics
        .counter(names::RELOADS, &[("result", "error".into())])
        .absolute(extra.reloads_failed);
    metrics
        .gauge(names::CONFIG_INFO, &[("hash", format!("{:016x}", snap.spec.hash))])
        .set(1.0);
    metrics
        .gauge(names::BUILD_INFO, &[("version", env!("CARGO_PKG_VERSION").into())])
        .set(1.0);
    metrics
        .counter(names::ACCESS_LOG_DROPPED, &[])
        .absolute(extra.access_log_dropped);
    let mut out = live.only(&metrics.render_recorded());
    group_info(&mut out, snap);
    out
}

/// The backends, groups and server labels the snapshot has.
struct Live {
    servers: std::collections::HashSet<(String, String, String)>,
    groups: std::collections::HashSet<(String, String)>,
    backends: std::collections::HashSet<String>,
}

impl Live {
    /// `rendered` without the series of servers, groups and backends no longer there: the
    /// recorder keeps every series it was ever given (it has no removal), so a deleted
    /// server's histograms and last counter values would otherwise stay on the page.
    fn only(&self, rendered: &str) -> String {
        let mut out = String::with_capacity(rendered.len());
        for line in rendered.split_inclusive('\n') {
            if self.keeps(line) {
                out.push_str(line);
            }
        }
        out
    }

    fn keeps(&self, line: &str) -> bool {
        let Some(backend) = label(line, "backend") else {
            return true;
        };
        let owned = |v: Option<&str>| v.map(str::to_string);
        match (owned(label(line, "group")), owned(label(line, "server"))) {
            (Some(g), Some(s)) => self.servers.contains(&(backend.to_string(), g, s)),
            (Some(g), None) => self.groups.contains(&(backend.to_string(), g)),
            (None, _) => self.backends.contains(backend),
        }
    }
}

/// The value of label `key` in a rendered sample line. Names of backends, groups and
/// servers hold no quotes, and a quote inside another label's value is escaped (`\"`),
/// so `{key="` or `,key="` starts this label and the next quote ends it.
fn label<'l>(line: &'l str, key: &str) -> Option<&'l str> {
    let value = [format!("{{{key}=\""), format!(",{key}=\"")]
        .iter()
        .find_map(|p| line.find(p.as_str()).map(|i| &line[i + p.len()..]))?;
    Some(&value[..value.find('"')?])
}

/// `veer_group_info{backend,group,version,commit,build} 1` per group: written here, not
/// registered, so a group whose metadata changed leaves no stale series behind.
fn group_info(out: &mut String, snap: &Snapshot) {
    use std::fmt::Write;
    let escape = |v: &str| v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n");
    let _ = write!(
        out,
        "# HELP {0} Deployment metadata of each group (version, commit, build).\n# TYPE {0} gauge\n",
        names::GROUP_INFO
    );
    for b in &snap.spec.backends {
        for g in &b.groups {
            let meta = |k: &str| escape(g.meta.get(k).map_or("", String::as_str));
            let _ = writeln!(
                out,
                "{}{{backend=\"{}\",group=\"{}\",version=\"{}\",commit=\"{}\",build=\"{}\"}} 1",
                names::GROUP_INFO,
                escape(&b.name),
                escape(&g.name),
                meta("version"),
                meta("commit"),
                meta("build")
            );
        }
    }
}
