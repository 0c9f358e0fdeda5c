//! The running proxy: the shared snapshot, the reload procedure, and the handle tests and
//! `main` hold.
//!
//! A reload is one serialized procedure: read + validate the file, bind any new listeners,
//! build the snapshot (reusing per-server state), swap it in with one store, then start and
//! stop accept loops. Any failure before the swap leaves everything as it was.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;
use hyper_util::rt::TokioExecutor;
use hyper_util::server::conn::auto;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use crate::config::{self, ConfigErrors, Spec};
use crate::listeners::{BindError, ListenerSet};
use crate::snapshot::Snapshot;
use crate::state::Registry;

/// What every data-path task shares.
pub struct Shared {
    pub snapshot: ArcSwap<Snapshot>,
    pub http: auto::Builder<TokioExecutor>,
    /// Cancelled when the process stops; parent of every listener's token.
    pub shutdown: CancellationToken,
}

/// Why a reload (or the first load) did not apply.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("{0}")]
    Config(#[from] ConfigErrors),
    #[error("{0}")]
    Bind(#[from] BindError),
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
    listeners: ListenerSet,
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
    path: Arc<PathBuf>,
    shared: Arc<Shared>,
    control: Arc<Mutex<Control>>,
    pub stats: Arc<ReloadStats>,
    last: Arc<std::sync::Mutex<Option<ReloadReport>>>,
}

impl Veer {
    /// Loads `path`, binds its listeners and starts serving.
    pub async fn start(path: impl Into<PathBuf>) -> Result<Veer, ReloadError> {
        let path = path.into();
        let spec = config::load(&path)?;
        let veer = Veer {
            path: Arc::new(path),
            shared: Arc::new(Shared {
                snapshot: ArcSwap::from_pointee(Snapshot::empty()),
                http: crate::proxy::http::builder(),
                shutdown: CancellationToken::new(),
            }),
            control: Arc::new(Mutex::new(Control {
                registry: Registry::default(),
                listeners: ListenerSet::default(),
            })),
            stats: Arc::default(),
            last: Arc::default(),
        };
        veer.apply(spec, true).await?;
        Ok(veer)
    }

    pub fn config_path(&self) -> &Path {
        &self.path
    }

    /// The snapshot serving now.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.shared.snapshot.load_full()
    }

    /// The bound address of a listener (useful with port 0).
    pub async fn listener_addr(&self, name: &str) -> Option<SocketAddr> {
        self.control.lock().await.listeners.local_addr(name)
    }

    pub fn last_reload(&self) -> Option<ReloadReport> {
        self.last.lock().ok().and_then(|l| l.clone())
    }

    /// Re-reads the config file and applies it if it changed. On error the running
    /// snapshot keeps serving; the error is logged, counted and returned.
    pub async fn reload(&self) -> Result<ReloadOutcome, ReloadError> {
        let result = match config::load(&self.path) {
            Ok(spec) => self.apply(spec, false).await,
            Err(e) => Err(e.into()),
        };
        match &result {
            Ok(ReloadOutcome::Applied { generation }) => {
                self.stats.ok.fetch_add(1, Relaxed);
                tracing::info!(generation, path = %self.path.display(), "config reloaded");
            }
            Ok(ReloadOutcome::Unchanged) => tracing::debug!("config unchanged; nothing to reload"),
            Err(e) => {
                self.stats.failed.fetch_add(1, Relaxed);
                tracing::error!("config reload rejected, previous config keeps serving:\n{e}");
            }
        }
        if let Ok(mut last) = self.last.lock() {
            *last = Some(ReloadReport {
                at: SystemTime::now(),
                result: result.as_ref().map(|o| *o).map_err(|e| e.to_string()),
            });
        }
        result
    }

    async fn apply(&self, spec: Spec, first: bool) -> Result<ReloadOutcome, ReloadError> {
        let mut control = self.control.lock().await;
        let current = self.shared.snapshot.load();
        if !first && *current.spec == spec {
            return Ok(ReloadOutcome::Unchanged);
        }
        let plan = control.listeners.plan(&spec.listeners, spec.runtime.backlog)?;
        let generation = current.generation + 1;
        let (snapshot, dropped) = Snapshot::build(Arc::new(spec), &mut control.registry, generation);
        for (b, s) in dropped {
            tracing::info!(server = %format!("{b}/{s}"), "server removed by config");
        }
        self.shared.snapshot.store(Arc::new(snapshot));
        control.listeners.apply(plan, &self.shared).await;
        Ok(ReloadOutcome::Applied { generation })
    }

    /// Stops accepting on every listener. (Graceful draining lands with the lifecycle work.)
    pub async fn shutdown(&self) {
        self.shared.shutdown.cancel();
        self.control.lock().await.listeners.close_all().await;
    }

    /// Reloads whenever the config file changes (see [`config::watch`]) until shutdown.
    pub fn spawn_watcher(&self) -> std::io::Result<()> {
        let mut changes = config::watch::watch(&self.path)?;
        let veer = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = veer.shared.shutdown.cancelled() => return,
                    changed = changes.next() => if !changed { return },
                }
                let _ = veer.reload().await;
            }
        });
        Ok(())
    }
}
