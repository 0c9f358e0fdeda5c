//! The control plane: the running proxy's one handle ([`Veer`]), the two ways its snapshot
//! changes (a config reload and an admin mutation), draining and stopping, the overlay
//! and its state file, and the event stream.
//!
//! Both changes are one serialized procedure under the control lock: compute the new spec
//! (`config ⊕ overlay`), bind any new listeners, build the snapshot (reusing per-server
//! state), persist the overlay, swap the snapshot in with one store, then start and stop
//! accept loops and publish events. Any failure before the swap leaves everything as it was.
//!
//! Knows the data plane only through its narrow handle ([`Shared`]) and the listener set;
//! knows nothing of the admin plane above it, which drives it through these methods.

mod dns;
pub mod events;
mod notify;
pub mod overlay;
mod preview;
pub mod rollout;
pub mod rollout_state;
pub mod source;
pub use source::Source;
mod stop;

use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;
use tokio::sync::{broadcast, Mutex};
use tokio_util::sync::CancellationToken;

use crate::config::{self, ConfigErrors, Spec};
use crate::lifecycle::Inherited;
use crate::listeners::{BindError, ListenerSet};
pub use crate::proxy::Shared;
use crate::snapshot::Snapshot;
use crate::state::Registry;
use overlay::Overlay;

/// Why a reload (or the first load, or an admin change) did not apply.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("{0}")]
    Config(#[from] ConfigErrors),
    #[error("{0}")]
    Bind(#[from] BindError),
    #[error("state file: {0}")]
    State(String),
    #[error("admin: {0}")]
    Admin(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadOutcome {
    /// A new snapshot with this generation is serving.
    Applied { generation: u64 },
    /// The file's contents are what is already running.
    Unchanged,
}

/// The last reload attempt, for the admin plane and logs.
#[derive(Debug, Clone)]
pub struct ReloadReport {
    pub at: SystemTime,
    pub result: Result<ReloadOutcome, String>,
}

struct Control {
    registry: Registry,
    /// The active health check loops, matched to every new snapshot.
    checks: crate::health::Checks,
    /// DNS-named servers' answers and instance numbers.
    dns: dns::Dns,
    listeners: ListenerSet,
    /// The config file as last loaded successfully.
    config: Arc<Spec>,
    /// Runtime changes on top of it.
    overlay: Overlay,
    loaded_at: SystemTime,
}

/// Counters about reloads (metrics read them).
#[derive(Debug, Default)]
pub struct ReloadStats {
    pub ok: AtomicU64,
    pub failed: AtomicU64,
}

/// A running veer. Cheap to clone.
#[derive(Clone)]
pub struct Veer {
    source: Arc<Source>,
    pub(crate) shared: Arc<Shared>,
    control: Arc<Mutex<Control>>,
    pub stats: Arc<ReloadStats>,
    pub metrics: Arc<crate::metrics::Metrics>,
    last: Arc<std::sync::Mutex<Option<ReloadReport>>>,
    events: broadcast::Sender<String>,
    started: SystemTime,
    admin_http: Arc<std::sync::OnceLock<SocketAddr>>,
    probe: Arc<std::sync::OnceLock<SocketAddr>>,
    state_file: Option<Arc<PathBuf>>,
    /// Sockets received in a binary upgrade, consumed as listeners are set up.
    pub(crate) inherited: Arc<std::sync::Mutex<Inherited>>,
    /// Duplicates of the admin sockets, for handing them over in an upgrade.
    pub(crate) admin_fds: Arc<std::sync::Mutex<Vec<(AdminSocket, OwnedFd)>>>,
    /// Cancelled once a new process has taken over the sockets.
    handover: CancellationToken,
    /// Running rollouts' step windows.
    windows: Arc<rollout_state::Windows>,
}

/// Which admin socket a kept descriptor is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminSocket {
    Unix,
    Http,
    Probe,
}

impl Veer {
    /// Loads `path` and the state file it names, binds the listeners (on sockets handed
    /// over by the previous process where they match, see [`crate::lifecycle`]) and starts
    /// serving. The admin endpoints are the runtime's to start ([`Veer::start`]).
    pub async fn open(source: impl Into<Source>, inherited: Inherited) -> Result<Veer, ReloadError> {
        let source = source.into();
        let config = source.load()?;
        let state_file = config.admin.state_file.clone().map(Arc::new);
        // Buckets and the cardinality limit are read at start, like [admin].
        let metrics = crate::metrics::Metrics::new(&config.metrics);
        let access_log = match &config.access_log {
            Some(spec) => Some(
                crate::access_log::AccessLog::open(spec).map_err(|e| ReloadError::Admin(format!("access log: {e}")))?,
            ),
            None => None,
        };
        let overlay = match &config.admin.state_file {
            Some(f) => Overlay::load(f).map_err(ReloadError::State)?,
            None => Overlay::default(),
        };
        let veer = Veer {
            source: Arc::new(source),
            shared: Arc::new(Shared {
                snapshot: ArcSwap::from_pointee(Snapshot::empty()),
                header_timeout: config.runtime.header_timeout,
                body_timeout: config.runtime.body_timeout,
                head_limits: crate::proxy::h1::codec::HeadLimits::new(
                    config.runtime.max_header_size,
                    config.runtime.max_headers,
                ),
                shutdown: CancellationToken::new(),
                drain: ArcSwap::from_pointee(CancellationToken::new()),
                stopping: CancellationToken::new(),
                current_conns: AtomicUsize::new(0),
                total_conns: AtomicU64::new(0),
                access_log,
            }),
            control: Arc::new(Mutex::new(Control {
                registry: Registry::with_metrics(metrics.clone()),
                checks: crate::health::Checks::default(),
                dns: dns::Dns::default(),
                listeners: ListenerSet::default(),
                config: Snapshot::empty().spec,
                overlay,
                loaded_at: SystemTime::now(),
            })),
            stats: Arc::default(),
            metrics,
            last: Arc::default(),
            events: broadcast::channel(1024).0,
            started: SystemTime::now(),
            admin_http: Arc::default(),
            probe: Arc::default(),
            state_file,
            inherited: Arc::new(std::sync::Mutex::new(inherited)),
            admin_fds: Arc::default(),
            handover: CancellationToken::new(),
            windows: Arc::default(),
        };
        veer.apply_config(config, true).await?;
        tokio::spawn(veer.clone().housekeeping());
        tokio::spawn(veer.clone().resolver());
        tokio::spawn(veer.clone().rollouts());
        tokio::spawn(veer.clone().notifier());
        Ok(veer)
    }

    /// What a reload reads: the config file, else the Gateway manifests' directory.
    pub fn config_path(&self) -> &Path {
        self.source.path()
    }

    pub fn source(&self) -> &Source {
        &self.source
    }

    /// When this process started.
    pub fn started(&self) -> SystemTime {
        self.started
    }

    /// The snapshot serving now.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.shared.snapshot.load_full()
    }

    /// The bound address of a listener (useful with port 0).
    pub async fn listener_addr(&self, name: &str) -> Option<SocketAddr> {
        self.control.lock().await.listeners.local_addr(name)
    }

    /// The bound address of the admin HTTP listener, when configured.
    pub fn admin_http_addr(&self) -> Option<SocketAddr> {
        self.admin_http.get().copied()
    }

    pub(crate) fn set_admin_http_addr(&self, addr: SocketAddr) {
        let _ = self.admin_http.set(addr);
    }

    /// The bound address of the probe listener (`[admin] probe`), when configured.
    pub fn probe_addr(&self) -> Option<SocketAddr> {
        self.probe.get().copied()
    }

    pub(crate) fn set_probe_addr(&self, addr: SocketAddr) {
        let _ = self.probe.set(addr);
    }

    pub fn last_reload(&self) -> Option<ReloadReport> {
        self.last.lock().ok().and_then(|l| l.clone())
    }

    /// When the running config file was loaded.
    pub async fn loaded_at(&self) -> SystemTime {
        self.control.lock().await.loaded_at
    }

    /// The runtime changes currently applied.
    pub async fn overlay(&self) -> Overlay {
        self.control.lock().await.overlay.clone()
    }

    /// A stream of JSON event lines (server state, health, split, reload).
    pub fn subscribe(&self) -> broadcast::Receiver<String> {
        self.events.subscribe()
    }

    pub(crate) fn publish(&self, event: String) {
        let _ = self.events.send(event);
    }

    /// Re-reads the config file and applies it (with the overlay) if it changed. On error
    /// the running snapshot keeps serving; the error is logged, counted and returned.
    pub async fn reload(&self) -> Result<ReloadOutcome, ReloadError> {
        crate::lifecycle::reloading();
        let result = match self.source.load() {
            Ok(spec) => self.apply_config(spec, false).await,
            Err(e) => Err(e.into()),
        };
        match &result {
            Ok(ReloadOutcome::Applied { generation }) => {
                self.stats.ok.fetch_add(1, Relaxed);
                // Runtime changes win over the file: say so, or an operator wonders why
                // the weight just edited in the file did not take.
                match self.overlay().await.summary() {
                    Some(overlay) => tracing::info!(
                        generation,
                        path = %self.config_path().display(),
                        overlay = %overlay,
                        "config reloaded; runtime changes still win over the file (`clear overlay` hands them back)"
                    ),
                    None => tracing::info!(generation, path = %self.config_path().display(), "config reloaded"),
                }
                crate::lifecycle::reloaded(&format!("config generation {generation}"));
            }
            Ok(ReloadOutcome::Unchanged) => {
                tracing::info!(path = %self.config_path().display(), "config reload: contents unchanged, nothing to do");
                crate::lifecycle::reloaded("config unchanged");
            }
            Err(e) => {
                self.stats.failed.fetch_add(1, Relaxed);
                tracing::error!("config reload rejected, previous config keeps serving:\n{e}");
                let first = e.to_string();
                let first = first.lines().next().unwrap_or("");
                crate::lifecycle::reloaded(&format!("reload failed, previous config serving: {first}"));
            }
        }
        self.publish(reload_event(&result));
        if let Ok(mut last) = self.last.lock() {
            *last = Some(ReloadReport {
                at: SystemTime::now(),
                result: result.as_ref().map(|o| *o).map_err(|e| e.to_string()),
            });
        }
        result
    }

    async fn apply_config(&self, config: Spec, first: bool) -> Result<ReloadOutcome, ReloadError> {
        let mut control = self.control.lock().await;
        if !first && *control.config == config {
            return Ok(ReloadOutcome::Unchanged);
        }
        // Names not looked up yet are, now (a reload adding a DNS-named server serves it
        // at once); known ones are refreshed by `resolver`.
        let names = dns::Dns::names(&config);
        let new_names = control.dns.unknown(&names);
        let looked_up = dns::lookup_all(&new_names, config.runtime.hosts_file.as_deref()).await;
        control.dns.update(&names, looked_up);
        let expanded = control.dns.expand(&config);
        let mut overlay = control.overlay.clone();
        let (spec, notes) = overlay.apply(&expanded);
        for note in &notes {
            tracing::warn!("{note}");
        }
        let plan = {
            let mut inherited = self.inherited.lock().unwrap_or_else(|p| p.into_inner());
            control
                .listeners
                .plan(&spec.listeners, spec.runtime.backlog, &mut inherited.listeners)?
        };
        if overlay != control.overlay {
            self.persist(&overlay)?;
        }
        let generation = self.install(&mut control, spec, "config");
        control.listeners.apply(plan, &self.shared).await;
        control.config = Arc::new(config);
        control.overlay = overlay;
        control.loaded_at = SystemTime::now();
        Ok(ReloadOutcome::Applied { generation })
    }

    /// Applies one admin change. `change` sees the running spec and edits a copy of the
    /// overlay; its `Ok` value is the command's answer. The new overlay is persisted
    /// before the new snapshot is swapped in; on any error nothing changes.
    pub async fn mutate<T>(&self, change: impl FnOnce(&Spec, &mut Overlay) -> Result<T, String>) -> Result<T, String> {
        self.mutate_by("admin", change).await
    }

    /// [`Veer::mutate`] on behalf of `who` (an admin peer, "rollout"), named in the events
    /// it publishes.
    pub async fn mutate_by<T>(
        &self,
        who: &str,
        change: impl FnOnce(&Spec, &mut Overlay) -> Result<T, String>,
    ) -> Result<T, String> {
        let mut control = self.control.lock().await;
        let current = self.shared.snapshot.load_full();
        let mut overlay = control.overlay.clone();
        let answer = change(&current.spec, &mut overlay)?;
        if overlay == control.overlay {
            return Ok(answer);
        }
        let config = control.config.clone();
        let expanded = control.dns.expand(&config);
        let (spec, notes) = overlay.apply(&expanded);
        for note in notes {
            tracing::warn!("{note}");
        }
        self.persist(&overlay)
            .map_err(|e| format!("Cannot save the change: {e}. Nothing was changed."))?;
        self.install(&mut control, spec, who);
        control.overlay = overlay;
        Ok(answer)
    }

    /// Writes the overlay to the state file named at start (like the rest of `[admin]`, a
    /// changed `state_file` takes effect on restart, so a restart reads what was written).
    fn persist(&self, overlay: &Overlay) -> Result<(), ReloadError> {
        match self.state_file.as_deref() {
            Some(path) => overlay
                .save(path)
                .map_err(|e| ReloadError::State(format!("{}: {e}", path.display()))),
            None => Ok(()),
        }
    }

    /// Builds and swaps in the snapshot for `spec`; publishes what changed.
    fn install(&self, control: &mut Control, spec: Spec, who: &str) -> u64 {
        let old = self.shared.snapshot.load_full();
        let generation = old.generation + 1;
        let (snapshot, dropped) = Snapshot::build(Arc::new(spec), &mut control.registry, generation);
        for (b, s) in dropped {
            tracing::info!(server = %format!("{b}/{s}"), "server removed");
        }
        let snapshot = Arc::new(snapshot);
        self.shared.snapshot.store(snapshot.clone());
        control.checks.reconcile(&snapshot, &self.shared.shutdown);
        for event in events::diff(&old, &snapshot, who) {
            self.publish(event);
        }
        generation
    }

    /// Background chores until shutdown: publishes passive-health transitions (a server
    /// ejected after connect failures, or reachable again) on the event stream, closes
    /// pooled upstream connections idle past `pool_idle_timeout`, derives the session
    /// rates `show stat` reports once a second, and drains histogram samples into their
    /// buckets.
    async fn housekeeping(self) {
        let mut tick = tokio::time::interval(std::time::Duration::from_millis(250));
        let mut up: std::collections::HashMap<Arc<str>, bool> = std::collections::HashMap::new();
        for round in 0u64.. {
            tokio::select! {
                _ = self.shared.shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let snap = self.snapshot();
            let now = crate::clock::now_ms();
            for s in snap.servers() {
                s.pool.expire_idle();
                let reachable = s.state.available(now);
                // A server starts out healthy: first seen ejected is a transition too.
                if up.insert(s.id.clone(), reachable).unwrap_or(true) != reachable {
                    self.publish(events::health(&s.id, reachable));
                }
                if round % 4 == 0 {
                    s.state.stats.rate.tick(s.state.total.load(Relaxed), now);
                }
            }
            if round % 4 == 0 {
                for (_, l) in self.listener_stats().await {
                    l.rate.tick(l.total.load(Relaxed), now);
                }
            }
            // Every round: the samples recorded since the last drain are bucketed in one go
            // on the data path's thread, so a drain every 5 s at tens of thousands of
            // requests a second held that thread for milliseconds (and the samples in memory).
            self.metrics.upkeep();
        }
    }

    /// Looks DNS-named servers up again every `resolve_interval` (the shortest of the
    /// backends that have them) until shutdown; a changed answer adds and removes instances
    /// through the same procedure as any change (the overlay applies to them too).
    async fn resolver(self) {
        loop {
            let (names, hosts_file, every) = {
                let control = self.control.lock().await;
                let every = control
                    .config
                    .backends
                    .iter()
                    .filter(|b| b.servers().any(|s| s.dns.is_some()))
                    .map(|b| b.resolve_interval)
                    .min()
                    .unwrap_or(std::time::Duration::from_secs(10));
                (
                    dns::Dns::names(&control.config),
                    control.config.runtime.hosts_file.clone(),
                    every,
                )
            };
            tokio::select! {
                _ = self.shared.shutdown.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
            if names.is_empty() {
                continue;
            }
            let looked_up = dns::lookup_all(&names, hosts_file.as_deref()).await;
            let mut control = self.control.lock().await;
            // The config may have changed meanwhile: only its names count.
            let names = dns::Dns::names(&control.config);
            if !control.dns.update(&names, looked_up) {
                continue;
            }
            let config = control.config.clone();
            let expanded = control.dns.expand(&config);
            let mut overlay = control.overlay.clone();
            let (spec, _) = overlay.apply(&expanded);
            let generation = self.install(&mut control, spec, "dns");
            tracing::info!(generation, "DNS answers changed: server instances updated");
        }
    }

    /// Every listener's counters, by name.
    pub async fn listener_stats(&self) -> Vec<(String, Arc<crate::metrics::ListenerStats>)> {
        self.control.lock().await.listeners.stats()
    }

    /// The Prometheus exposition for `/metrics`.
    pub async fn render_metrics(&self) -> String {
        let listeners = self.listener_stats().await;
        let inputs = crate::scrape::ScrapeInputs {
            listeners,
            reloads_ok: self.stats.ok.load(Relaxed),
            reloads_failed: self.stats.failed.load(Relaxed),
            access_log_dropped: self.shared.access_log.as_ref().map_or(0, |l| l.dropped()),
        };
        crate::scrape::render(&self.metrics, &self.snapshot(), &inputs)
    }

    /// Sessions currently subscribed to the event stream (the notifier's own receiver
    /// not counted).
    pub fn subscribers(&self) -> usize {
        self.events.receiver_count().saturating_sub(1)
    }

    /// Reloads whenever the config file changes (see [`config::watch`]) until shutdown.
    pub fn spawn_watcher(&self) -> std::io::Result<()> {
        let mut changes = config::watch::watch(self.source.file.as_deref())?;
        match self.source.gateway.as_ref().map(|g| (g, g.cluster.clone())) {
            Some((_, Some(cluster))) => {
                // The API server's changes go through the same debounce as a file's.
                let trigger = changes.trigger();
                let stop = self.shared.shutdown.clone();
                tokio::spawn(async move {
                    loop {
                        tokio::select! {
                            _ = stop.cancelled() => return,
                            _ = cluster.changed() => {}
                        }
                        // Full: a tick is pending already, which is enough.
                        if let Err(tokio::sync::mpsc::error::TrySendError::Closed(())) = trigger.try_send(()) {
                            return;
                        }
                    }
                });
            }
            Some((g, None)) => changes.follow_dir(&g.dir)?,
            None => {}
        }
        changes.follow(&self.snapshot().spec.tls_files());
        let veer = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = veer.shared.shutdown.cancelled() => return,
                    changed = changes.next() => if !changed { return },
                }
                let _ = veer.reload().await;
                // The files of the config now running (a reload may name new ones).
                changes.follow(&veer.snapshot().spec.tls_files());
            }
        });
        Ok(())
    }
}

/// The event line for a reload attempt.
fn reload_event(result: &Result<ReloadOutcome, ReloadError>) -> String {
    use serde_json::json;
    let now = events::now();
    match result {
        Ok(ReloadOutcome::Applied { generation }) => {
            json!({"time": now, "event": "reload", "result": "applied", "generation": generation})
        }
        Ok(ReloadOutcome::Unchanged) => json!({"time": now, "event": "reload", "result": "unchanged"}),
        Err(e) => json!({"time": now, "event": "reload", "result": "error", "error": e.to_string()}),
    }
    .to_string()
}
