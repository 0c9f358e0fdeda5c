//! The data plane's narrow handle on the running process ([`Shared`]: the snapshot it
//! routes by, drain and stop signals, settings read at start, counters) and the guard that
//! counts an open client connection. Built by the control plane; knows nothing of it.

use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio_util::sync::CancellationToken;

use crate::metrics::ListenerStats;
use crate::snapshot::Snapshot;

/// What every data-path task shares: the data plane's narrow handle on the running
/// process (the snapshot it routes by, drain and stop signals, counters), built by the
/// runtime; the data path knows nothing else of the control plane.
pub struct Shared {
    pub snapshot: ArcSwap<Snapshot>,
    /// `[runtime] header_timeout`, read at start.
    pub header_timeout: std::time::Duration,
    /// Cancelled when the process stops: every session still open is cut. Parent of every
    /// listener's accept token.
    pub shutdown: CancellationToken,
    /// Cancelled when the process starts draining (SIGTERM, upgrade, admin `drain`):
    /// `/ready` fails, HTTP/1.1 responses carry `Connection: close`, HTTP/2 connections get
    /// GOAWAY. Parent of every listener's drain token. Replaced by a fresh token on
    /// `undrain` (which a stopping process refuses).
    pub drain: ArcSwap<CancellationToken>,
    /// Cancelled once the process is stopping (SIGTERM, upgrade hand-over): a drain that
    /// can no longer be undone.
    pub stopping: CancellationToken,
    /// `[runtime] body_timeout`, read at start.
    pub body_timeout: std::time::Duration,
    /// `[runtime] max_header_size` and `max_headers`, read at start.
    pub head_limits: crate::proxy::h1::codec::HeadLimits,
    /// Client connections open now, and accepted since start (for `show info`).
    pub current_conns: AtomicUsize,
    pub total_conns: AtomicU64,
    /// Set from `[access_log]` at start.
    pub access_log: Option<Arc<crate::access_log::AccessLog>>,
}

/// Counts an open client connection until it ends, however it ends. Created in the accept
/// loop, before the connection's task is spawned, so a drain never misses a connection that
/// was accepted but not yet served.
pub struct OpenConn {
    shared: Arc<Shared>,
    pub listener: Arc<ListenerStats>,
}

impl OpenConn {
    pub fn new(shared: &Arc<Shared>, listener: &Arc<ListenerStats>) -> Self {
        use std::sync::atomic::Ordering::Relaxed;
        shared.total_conns.fetch_add(1, Relaxed);
        shared.current_conns.fetch_add(1, Relaxed);
        listener.total.fetch_add(1, Relaxed);
        listener.active.fetch_add(1, Relaxed);
        OpenConn {
            shared: shared.clone(),
            listener: listener.clone(),
        }
    }
}

impl Drop for OpenConn {
    fn drop(&mut self) {
        use std::sync::atomic::Ordering::Relaxed;
        self.shared.current_conns.fetch_sub(1, Relaxed);
        self.listener.active.fetch_sub(1, Relaxed);
        if self.listener.max_connections.load(Relaxed) != 0 {
            self.listener.released.notify_waiters();
        }
    }
}
