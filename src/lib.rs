//! veer: an L4/L7 load balancer and traffic shifter for zero-downtime deploys.
//!
//! The architecture follows a request's path:
//!
//! ```text
//! config/     TOML → validated Spec (file:line:col errors), file watch + SIGHUP
//! runtime     the reload procedure; Spec → Snapshot → one ArcSwap store
//! snapshot    the immutable routing state: listeners' route tables, backends, groups, servers
//! state       per-server atomics (active counts, passive health) carried across snapshots
//! listeners   sockets (socket2) and accept loops, reconciled on reload
//! lifecycle   binary upgrade: listening sockets handed to a new process (SCM_RIGHTS)
//! proxy/      the data paths: http (HTTP/1.1 + h2c, upgrades) and tcp; header rewriting
//! routing     host / path-prefix / header matching, first match wins
//! balance/    group split, then round robin / least request / random inside the group
//! upstream    connect + per-server keep-alive pool
//! error       the one error type and its synthetic responses
//! ratelimit   one warning line per second per kind on the data path; local-resource errors
//! access_log  one line per request, written off the data path, dropped (and counted) when stalled
//! metrics     Prometheus names, recorder, handles carried in snapshots, /metrics rendering
//! admin/      the admin plane: HAProxy-compatible socket, HTTP admin, overlay, events, ctl
//! demo        `veer demo`: built-in blue/green upstreams
//! ```
//!
//! The rule that ties it together (design §2): everything routing reads lives in one
//! [`snapshot::Snapshot`]; a request loads it once and is routed entirely by it.
#![forbid(unsafe_code)]

pub mod access_log;
pub mod admin;
pub mod balance;
pub mod config;
pub mod demo;
pub mod error;
pub mod lifecycle;
pub mod listeners;
pub mod metrics;
pub mod proxy;
pub mod ratelimit;
pub mod routing;
pub mod runtime;
pub mod snapshot;
pub mod state;
pub mod upstream;

pub use runtime::{ReloadError, ReloadOutcome, Veer};

/// Runs veer with `path`: serves, watches the file, reloads on change and on SIGHUP, and on
/// SIGTERM or SIGINT drains gracefully (a second signal stops at once). Returns `true` when
/// the drain finished without cutting any work.
///
/// With `upgrade`, the sockets are first taken over from the veer already running with the
/// same config (see [`lifecycle`]), which then drains and exits.
pub async fn run(path: std::path::PathBuf, upgrade: bool) -> Result<bool, ReloadError> {
    let veer = if upgrade {
        let spec = config::load(&path)?;
        let socket = spec
            .admin
            .socket
            .ok_or_else(|| ReloadError::Admin("--upgrade needs [admin] socket to reach the running veer".into()))?;
        let (inherited, old) = tokio::task::spawn_blocking(move || lifecycle::receive(&socket))
            .await
            .map_err(|e| ReloadError::Admin(e.to_string()))?
            .map_err(|e| ReloadError::Admin(format!("upgrade: {e}")))?;
        let veer = Veer::start_with(path, inherited).await?;
        lifecycle::confirm(old).map_err(|e| ReloadError::Admin(format!("upgrade: {e}")))?;
        tracing::info!("took over the listening sockets; the previous process drains");
        veer
    } else {
        Veer::start(path).await?
    };
    if let Err(e) = veer.spawn_watcher() {
        tracing::warn!(error = %e, "cannot watch the config file; reload with SIGHUP");
    }
    // systemd (Type=notify): ready, and after an upgrade this process is the service's main
    // process (the unit needs NotifyAccess=all for that).
    let pid = std::process::id();
    notify(&[sd_notify::NotifyState::MainPid(pid), sd_notify::NotifyState::Ready]);
    tokio::select! {
        _ = wait_for_stop_signal() => tracing::info!("stop signal: draining"),
        _ = veer.handed_over() => tracing::info!("handed over to the new process: draining"),
    }
    notify(&[sd_notify::NotifyState::Stopping]);
    let clean = tokio::select! {
        clean = veer.shutdown_gracefully() => {
            tracing::info!(clean, "stopped");
            clean
        }
        _ = wait_for_stop_signal() => {
            tracing::warn!("second stop signal: stopping now");
            veer.shutdown().await;
            false
        }
    };
    veer.remove_admin_socket();
    Ok(clean)
}

/// Tells systemd about a state change when run under it (`NOTIFY_SOCKET`); a no-op otherwise.
fn notify(states: &[sd_notify::NotifyState]) {
    if let Err(e) = sd_notify::notify(false, states) {
        tracing::debug!(error = %e, "sd_notify failed");
    }
}

/// Resolves on the first SIGTERM or SIGINT.
pub async fn wait_for_stop_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {},
                _ = int.recv() => {},
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
