//! Per-server runtime state that outlives snapshots.
//!
//! Counters and health change per request, so they cannot live in the immutable snapshot.
//! Each server's [`ServerState`] is created once per stable identity (`backend/server`) and
//! handed to every later snapshot by the [`Registry`], so a reload never resets counts or
//! passive-health verdicts. Everything here is atomics: the hot path never locks.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

pub mod budget;
pub mod latency;
pub mod pool;
pub mod queue;
pub mod stats;

use pool::Pool;
pub use pool::PoolKey;

pub use crate::clock::now_ms;

/// The response counters' classes, in index order (see [`status_class`]).
pub const STATUS_CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "other"];

/// Index of a status code's class in response counters: 1xx, 2xx, 3xx, 4xx, 5xx, other.
pub fn status_class(status: u16) -> usize {
    match status {
        100..=199 => 0,
        200..=299 => 1,
        300..=399 => 2,
        400..=499 => 3,
        500..=599 => 4,
        _ => 5,
    }
}

/// Live counters and passive health of one server.
#[derive(Debug, Default)]
pub struct ServerState {
    /// Requests (HTTP) whose response is still streaming, upgrades included.
    pub active_requests: AtomicUsize,
    /// Proxied TCP connections and upgraded (WebSocket) tunnels currently open.
    pub active_connections: AtomicUsize,
    /// Requests and connections sent to this server since start.
    pub total: AtomicU64,
    pub connect_failures: AtomicU64,
    /// veer's own 502/504 for this server (timeouts, broken connections): failures that
    /// are in no response class.
    pub failures: AtomicU64,
    /// Response bodies cut because the server sent nothing for `read_timeout`.
    pub read_timeouts: AtomicU64,
    /// `now_ms()` until which the server is skipped after a connect failure; 0 = never.
    ejected_until: AtomicU64,
    /// `now_ms()` at which a draining server stops honouring sticky clients; 0 = not draining.
    drain_until: AtomicU64,
    /// Responses by status class: 1xx, 2xx, 3xx, 4xx, 5xx, other (HAProxy's hrsp_*).
    pub responses: [AtomicU64; 6],
    /// Response body bytes received from the server.
    pub response_bytes: AtomicU64,
    /// Time to response headers, readable in-process (rollout steps judge their p99 on it).
    pub latency: latency::Latency,
    /// Bytes, peaks, retries, rates and average times for `show stat`.
    pub stats: stats::Stats,
    /// `now_ms()` of the last admin-state or health change.
    pub last_change: AtomicU64,
    /// The admin state the last snapshot gave this server (to notice changes).
    admin: std::sync::atomic::AtomicU8,
    /// Cancelled by `shutdown sessions server`; long-lived sessions watch it.
    sessions: arc_swap::ArcSwap<tokio_util::sync::CancellationToken>,
    /// Active health, written by the server's check loop only.
    pub check: CheckState,
    /// Passive health from responses.
    pub outlier: OutlierState,
    /// `now_ms()` from which the server, coming back, ramps its weight up (slow start);
    /// 0 = never came back.
    warm_from: AtomicU64,
}

/// Consecutive error responses and ejections (Envoy's outlier detection).
#[derive(Debug, Default)]
pub struct OutlierState {
    pub consecutive_5xx: std::sync::atomic::AtomicU32,
    pub consecutive_gateway: std::sync::atomic::AtomicU32,
    /// Ejections in a row (their length grows with it); forgotten after a long healthy spell.
    pub ejections: std::sync::atomic::AtomicU32,
    /// Ejections since start, by errors (connect failures are `connect_failures`).
    pub ejected_total: AtomicU64,
}

/// What the active checks know of a server.
#[derive(Debug, Default)]
pub struct CheckState {
    /// DOWN by its checks (picks skip it).
    down: std::sync::atomic::AtomicBool,
    /// Consecutive results against the current state (failures while UP, passes while DOWN).
    streak: std::sync::atomic::AtomicU32,
    /// Whether a check loop runs for the server now.
    pub running: std::sync::atomic::AtomicBool,
    /// The last check: its [`CheckResult`], HTTP status (0: none), duration, when.
    pub last_result: std::sync::atomic::AtomicU8,
    pub last_code: std::sync::atomic::AtomicU32,
    pub last_duration_ms: AtomicU64,
    pub last_at: AtomicU64,
    /// Checks by outcome: passed, failed.
    pub passed: AtomicU64,
    pub failed: AtomicU64,
}

/// How a check ended (HAProxy's `check_status` names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum CheckResult {
    None = 0,
    /// TCP connect (or TLS handshake) succeeded (`tcp = true`).
    L4Ok,
    /// Connect refused or failed.
    L4Con,
    /// No answer within the timeout.
    Timeout,
    /// An HTTP status in `expect`.
    L7Ok,
    /// An HTTP status outside `expect`.
    L7Sts,
    /// Not an HTTP response.
    L7Rsp,
}

impl CheckResult {
    const ALL: [CheckResult; 7] = [
        CheckResult::None,
        CheckResult::L4Ok,
        CheckResult::L4Con,
        CheckResult::Timeout,
        CheckResult::L7Ok,
        CheckResult::L7Sts,
        CheckResult::L7Rsp,
    ];

    pub fn passed(self) -> bool {
        matches!(self, CheckResult::L4Ok | CheckResult::L7Ok)
    }

    /// HAProxy's `check_status` spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            CheckResult::None => "",
            CheckResult::L4Ok => "L4OK",
            CheckResult::L4Con => "L4CON",
            CheckResult::Timeout => "L4TOUT",
            CheckResult::L7Ok => "L7OK",
            CheckResult::L7Sts => "L7STS",
            CheckResult::L7Rsp => "L7RSP",
        }
    }
}

impl CheckState {
    pub fn is_down(&self) -> bool {
        self.down.load(Relaxed)
    }

    /// Where the server is on its way between states: consecutive results against it.
    pub fn streak(&self) -> u32 {
        self.streak.load(Relaxed)
    }

    /// Sets the state outright (a server added at runtime starts DOWN; checks turned off
    /// leave it UP), clearing the streak.
    pub fn force(&self, down: bool) {
        self.down.store(down, Relaxed);
        self.streak.store(0, Relaxed);
    }

    pub fn last(&self) -> CheckResult {
        CheckResult::ALL
            .get(self.last_result.load(Relaxed) as usize)
            .copied()
            .unwrap_or(CheckResult::None)
    }

    /// Records one check. `Some(up)` when it changed the state: `rise` passes in a row
    /// bring a DOWN server UP, `fall` failures in a row take an UP one DOWN.
    pub fn record(&self, result: CheckResult, code: u16, took: Duration, rise: u32, fall: u32) -> Option<bool> {
        self.last_result.store(result as u8, Relaxed);
        self.last_code.store(code as u32, Relaxed);
        self.last_duration_ms.store(took.as_millis() as u64, Relaxed);
        self.last_at.store(now_ms(), Relaxed);
        let passed = result.passed();
        if passed {
            self.passed.fetch_add(1, Relaxed);
        } else {
            self.failed.fetch_add(1, Relaxed);
        }
        let down = self.down.load(Relaxed);
        if passed != down {
            // The result agrees with the state: any way back or forth starts over.
            self.streak.store(0, Relaxed);
            return None;
        }
        let n = self.streak.load(Relaxed) + 1;
        if n >= if down { rise } else { fall } {
            self.force(!down);
            Some(down)
        } else {
            self.streak.store(n, Relaxed);
            None
        }
    }
}

impl ServerState {
    /// Counts one response by status class.
    pub fn count_response(&self, status: u16) {
        self.responses[status_class(status)].fetch_add(1, Relaxed);
    }

    /// Records the admin state a new snapshot gives the server, noting when it changed.
    /// True when it became `ready` from `maint` or `drain` (it comes back).
    pub fn set_admin(&self, state: crate::config::AdminState) -> bool {
        let code = state as u8 + 1;
        let was = self.admin.swap(code, Relaxed);
        if was != code {
            self.last_change.store(now_ms(), Relaxed);
        }
        let ready = crate::config::AdminState::Ready as u8 + 1;
        was != 0 && was != code && code == ready
    }

    /// A token cancelled when `shutdown sessions` is issued for this server.
    pub fn sessions(&self) -> Arc<tokio_util::sync::CancellationToken> {
        self.sessions.load_full()
    }

    /// Cuts every session that watches [`ServerState::sessions`].
    pub fn shutdown_sessions(&self) {
        self.sessions.swap(Arc::default()).cancel();
    }

    /// Enters drain (keeping an earlier deadline if already draining) or leaves it. At the
    /// deadline, sessions still open to the server (TCP, WebSocket and other tunnels) are
    /// cut, as sticky routing to it ends.
    pub fn set_draining(self: &Arc<Self>, draining: bool, timeout: Duration) {
        if !draining {
            self.drain_until.store(0, Relaxed);
            return;
        }
        if self.drain_until.load(Relaxed) != 0 {
            return;
        }
        let deadline = now_ms() + timeout.as_millis() as u64;
        self.drain_until.store(deadline, Relaxed);
        // Outside a runtime (benchmarks building snapshots) there are no sessions to cut.
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let state = Arc::downgrade(self);
            rt.spawn(async move {
                tokio::time::sleep(timeout).await;
                match state.upgrade() {
                    // Still draining under the same deadline (not re-enabled meanwhile).
                    Some(s) if s.drain_until.load(Relaxed) == deadline => s.shutdown_sessions(),
                    _ => {}
                }
            });
        }
    }

    /// The `now_ms()` drain deadline; 0 when not draining.
    pub fn drain_deadline(&self) -> u64 {
        self.drain_until.load(Relaxed)
    }

    /// True while a draining server is still within its drain deadline.
    pub fn drain_pending(&self, now: u64) -> bool {
        self.drain_until.load(Relaxed) > now
    }

    /// Whether picks may choose the server: not ejected by passive health, not DOWN by its
    /// active checks.
    pub fn available(&self, now: u64) -> bool {
        !self.is_ejected(now) && !self.check.is_down()
    }

    pub fn is_ejected(&self, now: u64) -> bool {
        self.ejected_until.load(Relaxed) > now
    }

    /// Records a failed connect: the server is skipped for `for_` from now.
    pub fn eject(&self, for_: Duration) {
        self.connect_failures.fetch_add(1, Relaxed);
        self.eject_until(now_ms() + for_.as_millis() as u64);
    }

    /// Skips the server until `until` (`now_ms()` clock).
    pub fn eject_until(&self, until: u64) {
        if !self.is_ejected(now_ms()) {
            self.last_change.store(now_ms(), Relaxed);
        }
        self.ejected_until.store(until, Relaxed);
    }

    /// When the last ejection ended (or ends); 0 = never ejected.
    pub fn ejected_until(&self) -> u64 {
        self.ejected_until.load(Relaxed)
    }

    /// Marks the server as coming back at `at`: slow start ramps it from then.
    pub fn warm_from(&self, at: u64) {
        self.warm_from.store(at, Relaxed);
    }

    /// How far a server coming back is into its `slow_start` ramp, in per mille of its
    /// weight (100 = 10 % at the start, linearly to 1000); `None` when it is fully warm.
    pub fn ramp(&self, slow_start_ms: u64, now: u64) -> Option<u64> {
        let from = self.warm_from.load(Relaxed);
        if from == 0 || now >= from + slow_start_ms {
            return None;
        }
        let into = now.saturating_sub(from);
        Some(100 + 900 * into / slow_start_ms)
    }

    /// Records a successful connect: clears a pending ejection early.
    pub fn mark_reachable(&self) {
        if self.ejected_until.load(Relaxed) != 0 {
            self.ejected_until.store(0, Relaxed);
            self.last_change.store(now_ms(), Relaxed);
        }
    }

    /// Counts one in-flight request until the guard drops.
    pub fn request_guard(self: &Arc<Self>) -> ActiveGuard {
        self.guard(Counter::Requests)
    }

    /// Counts one open connection/tunnel until the guard drops.
    pub fn connection_guard(self: &Arc<Self>) -> ActiveGuard {
        self.guard(Counter::Connections)
    }

    /// Counts one request or connection until the guard drops.
    pub fn guard(self: &Arc<Self>, counter: Counter) -> ActiveGuard {
        ActiveGuard::new(self.clone(), counter)
    }

    /// Whether the server has a free slot under `maxconn` (0: no limit).
    pub fn has_slot(&self, counter: Counter, maxconn: u32) -> bool {
        maxconn == 0 || self.counter(counter).load(Relaxed) < maxconn as usize
    }

    /// Takes one of the server's `maxconn` slots, or `None` when all are taken. Freeing
    /// the slot wakes the next waiter of `backend`'s queue.
    pub fn try_slot(
        self: &Arc<Self>,
        counter: Counter,
        maxconn: u32,
        backend: &Arc<BackendState>,
    ) -> Option<ActiveGuard> {
        if maxconn == 0 {
            return Some(self.guard(counter));
        }
        let c = self.counter(counter);
        let was = c
            .fetch_update(Relaxed, Relaxed, |n| (n < maxconn as usize).then_some(n + 1))
            .ok()?;
        self.total.fetch_add(1, Relaxed);
        self.stats.saw_active(was + 1);
        Some(ActiveGuard {
            state: self.clone(),
            counter,
            queue: Some(backend.clone()),
        })
    }
}

/// What a guard counts: requests (HTTP) or connections (TCP, tunnels).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counter {
    Requests,
    Connections,
}

/// Decrements its counter on drop, so the count is exact whatever path ends the work.
#[derive(Debug)]
pub struct ActiveGuard {
    state: Arc<ServerState>,
    counter: Counter,
    /// Set for a slot under `maxconn`: the backend whose queue the freed slot goes to.
    queue: Option<Arc<BackendState>>,
}

impl ActiveGuard {
    /// The server this guard counts for.
    pub fn state(&self) -> &Arc<ServerState> {
        &self.state
    }

    fn new(state: Arc<ServerState>, counter: Counter) -> Self {
        state.total.fetch_add(1, Relaxed);
        let was = state.counter(counter).fetch_add(1, Relaxed);
        state.stats.saw_active(was + 1);
        ActiveGuard {
            state,
            counter,
            queue: None,
        }
    }
}

impl ServerState {
    fn counter(&self, c: Counter) -> &AtomicUsize {
        match c {
            Counter::Requests => &self.active_requests,
            Counter::Connections => &self.active_connections,
        }
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.state.counter(self.counter).fetch_sub(1, Relaxed);
        if let Some(b) = &self.queue {
            b.queue.wake_one();
        }
    }
}

struct Entry {
    state: Arc<ServerState>,
    pool: Arc<Pool>,
    key: PoolKey,
}

/// Mirrored requests allowed in flight per backend; beyond that, samples are skipped so a
/// hanging mirror target cannot pile up tasks.
pub const MIRROR_MAX_IN_FLIGHT: usize = 256;

/// Per-backend counters that outlive snapshots.
#[derive(Debug)]
pub struct BackendState {
    /// Mirrored copies sent and answered.
    pub mirror_ok: AtomicU64,
    /// Mirrored copies that failed (connect, protocol, timeout).
    pub mirror_failed: AtomicU64,
    /// Sampled requests not mirrored: body too large, no mirror server, or saturated.
    pub mirror_skipped: AtomicU64,
    /// Requests retried on another server after a connect failure.
    pub retries: AtomicU64,
    /// Requests answered 504.
    pub timeouts: AtomicU64,
    /// Zone-aware routing: picks of a server in veer's zone, and of one in another zone.
    pub local_picks: AtomicU64,
    pub cross_zone_picks: AtomicU64,
    pub mirror_slots: Arc<tokio::sync::Semaphore>,
    /// Requests waiting for a server under its `maxconn`.
    pub queue: queue::Queue,
    pub budget: budget::RetryBudget,
    /// `now_ms()` until which some server of the backend is in its slow-start ramp: before
    /// then picks weigh ramps, after it they need not look.
    pub warm_until: AtomicU64,
}

impl Default for BackendState {
    fn default() -> Self {
        BackendState {
            mirror_ok: AtomicU64::new(0),
            mirror_failed: AtomicU64::new(0),
            mirror_skipped: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            timeouts: AtomicU64::new(0),
            local_picks: AtomicU64::new(0),
            cross_zone_picks: AtomicU64::new(0),
            mirror_slots: Arc::new(tokio::sync::Semaphore::new(MIRROR_MAX_IN_FLIGHT)),
            queue: queue::Queue::default(),
            budget: budget::RetryBudget::default(),
            warm_until: AtomicU64::new(0),
        }
    }
}

impl BackendState {
    /// `server` comes back at `at` (`now_ms()` clock): with `slow_start`, its weight ramps
    /// from then on.
    pub fn warm(&self, server: &ServerState, at: u64, slow_start_ms: u64) {
        if slow_start_ms == 0 {
            return;
        }
        server.warm_from(at);
        self.warm_until.fetch_max(at + slow_start_ms, Relaxed);
    }
}

/// Stable identity → runtime state, carried from one snapshot build to the next.
#[derive(Default)]
pub struct Registry {
    servers: HashMap<(String, String), Entry>,
    backends: HashMap<String, Arc<BackendState>>,
    /// Where snapshots resolve their metric handles; `None` records nothing (benches).
    pub metrics: Option<Arc<crate::metrics::Metrics>>,
}

impl Registry {
    /// A registry whose snapshots record into `metrics`.
    pub fn with_metrics(metrics: Arc<crate::metrics::Metrics>) -> Self {
        Registry {
            metrics: Some(metrics),
            ..Registry::default()
        }
    }

    /// Starts a build: the returned builder hands out existing state for servers that
    /// remain and fresh state for new ones; `finish` forgets servers no longer configured.
    pub fn begin(&mut self) -> RegistryBuild<'_> {
        RegistryBuild {
            old: std::mem::take(&mut self.servers),
            old_backends: std::mem::take(&mut self.backends),
            registry: self,
        }
    }
}

pub struct RegistryBuild<'r> {
    old: HashMap<(String, String), Entry>,
    old_backends: HashMap<String, Arc<BackendState>>,
    registry: &'r mut Registry,
}

impl RegistryBuild<'_> {
    /// Histogram handles for a server (noop without a recorder).
    pub fn server_metrics(
        &self,
        backend: &str,
        group: &str,
        server: &str,
        index: usize,
    ) -> crate::metrics::ServerMetrics {
        match &self.registry.metrics {
            Some(m) => m.server(backend, group, &m.server_label(server, index)),
            None => crate::metrics::ServerMetrics::noop(),
        }
    }

    /// The histogram of backend `name`'s queue waits (noop without a recorder).
    pub fn queue_wait(&self, backend: &str) -> ::metrics::Histogram {
        match &self.registry.metrics {
            Some(m) => m.histogram(crate::metrics::names::QUEUE_WAIT, &[("backend", backend.to_string())]),
            None => ::metrics::Histogram::noop(),
        }
    }

    /// The counters of backend `name`, carried over if it existed before.
    pub fn backend(&mut self, name: &str) -> Arc<BackendState> {
        let state = self.old_backends.remove(name).unwrap_or_default();
        self.registry.backends.insert(name.to_string(), state.clone());
        state
    }

    /// State and pool for `backend/server`, and whether the state is new. A changed address
    /// or pool setting gets a new pool (old connections go to the old address), but the
    /// counters carry over.
    pub fn get(&mut self, backend: &str, server: &str, key: PoolKey) -> (Arc<ServerState>, Arc<Pool>, bool) {
        let id = (backend.to_string(), server.to_string());
        let old = self.old.remove(&id);
        let fresh = old.is_none();
        let entry = match old {
            Some(e) if e.key == key => e,
            Some(e) => Entry {
                state: e.state,
                pool: Arc::new(Pool::new(key)),
                key,
            },
            None => Entry {
                state: Arc::default(),
                pool: Arc::new(Pool::new(key)),
                key,
            },
        };
        let out = (entry.state.clone(), entry.pool.clone(), fresh);
        self.registry.servers.insert(id, entry);
        out
    }

    /// The servers the new config no longer has.
    pub fn finish(self) -> Vec<(String, String)> {
        self.old.into_keys().collect()
    }
}
