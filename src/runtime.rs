//! Assembly: builds a running veer from its pieces and wires them — the control plane
//! ([`Veer`]) with the admin endpoints on top — and the process's life around it (signals,
//! systemd notifications, the binary upgrade's hand-over). Only `main`, `demo` and tests
//! stand above it; nothing below knows it.

use crate::admin;
pub use crate::control::{ReloadError, ReloadOutcome, Source, Veer};
use crate::lifecycle::{self, Inherited};
pub use crate::proxy::Shared;

impl Veer {
    /// Loads `path` and the state file it names, binds the listeners and the admin
    /// endpoints, and starts serving.
    pub async fn start(source: impl Into<Source>) -> Result<Veer, ReloadError> {
        Self::start_with(source, Inherited::default()).await
    }

    /// Like [`Veer::start`], serving on sockets handed over by the previous process where
    /// they match the config (see [`crate::lifecycle`]).
    pub async fn start_with(source: impl Into<Source>, inherited: Inherited) -> Result<Veer, ReloadError> {
        let veer = Veer::open(source, inherited).await?;
        if let Err(e) = admin::start(&veer).await {
            // Nothing half-started is left behind: close the listeners just bound.
            veer.shutdown().await;
            return Err(ReloadError::Admin(e.to_string()));
        }
        Ok(veer)
    }
}

/// Runs veer with `source`: serves, watches it, reloads on change and on SIGHUP, and on
/// SIGTERM or SIGINT drains gracefully (a second signal stops at once). Returns `true` when
/// the drain finished without cutting any work.
///
/// With `upgrade`, the sockets are first taken over from the veer already running with the
/// same config (see [`lifecycle`]), which then drains and exits.
pub async fn run(source: Source, upgrade: bool) -> Result<bool, ReloadError> {
    let veer = if upgrade {
        let spec = source.load()?;
        let socket = spec
            .admin
            .socket
            .ok_or_else(|| ReloadError::Admin("--upgrade needs [admin] socket to reach the running veer".into()))?;
        let (inherited, old) = tokio::task::spawn_blocking(move || lifecycle::receive(&socket))
            .await
            .map_err(|e| ReloadError::Admin(e.to_string()))?
            .map_err(|e| ReloadError::Admin(format!("upgrade: {e}")))?;
        let veer = Veer::start_with(source, inherited).await?;
        lifecycle::confirm(old).map_err(|e| ReloadError::Admin(format!("upgrade: {e}")))?;
        tracing::info!("took over the listening sockets; the previous process drains");
        veer
    } else {
        Veer::start(source).await?
    };
    if let Err(e) = veer.spawn_watcher() {
        tracing::warn!(error = %e, "cannot watch the config file; reload with SIGHUP");
    }
    // SIGUSR2's handler before READY: a USR2 sent as soon as systemd (or a test) hears READY
    // must start an upgrade, not meet the default action, which ends the process.
    spawn_upgrade_on_usr2(&veer);
    // systemd (Type=notify): ready, and after an upgrade this process is the service's main
    // process (the unit needs NotifyAccess=all for that).
    let pid = std::process::id();
    lifecycle::notify(&[sd_notify::NotifyState::MainPid(pid), sd_notify::NotifyState::Ready]);
    tokio::select! {
        _ = wait_for_stop_signal() => tracing::info!("stop signal: draining"),
        _ = veer.handed_over() => tracing::info!("handed over to the new process: draining"),
    }
    lifecycle::notify(&[sd_notify::NotifyState::Stopping]);
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

/// The `veer run` arguments naming `source`.
fn source_args(source: &Source) -> Vec<std::ffi::OsString> {
    let mut args: Vec<std::ffi::OsString> = Vec::new();
    if let Some(file) = &source.file {
        args.extend(["-c".into(), file.into()]);
    }
    if source.zone_aware {
        args.push("--zone-aware".into());
    }
    if let Some(g) = &source.gateway {
        match &g.cluster {
            Some(c) => {
                args.push("--gateway".into());
                if let Some(k) = &c.options().kubeconfig {
                    args.extend(["--kubeconfig".into(), k.into()]);
                }
                for (flag, list) in [
                    ("--namespaces", &c.options().namespaces),
                    ("--certificate-namespaces", &c.options().certificate_namespaces),
                ] {
                    if !list.is_empty() {
                        args.extend([flag.into(), list.join(",").into()]);
                    }
                }
            }
            None => args.extend(["--gateway-dir".into(), g.dir.clone().into()]),
        }
        args.extend([
            "--gateway-address".into(),
            g.address.to_string().into(),
            "--gateway-class".into(),
            g.class.clone().into(),
            "--controller-name".into(),
            g.controller.clone().into(),
        ]);
        if g.experimental {
            args.push("--gateway-experimental".into());
        }
    }
    args
}

/// SIGUSR2 starts a hot binary upgrade, as nginx's does: the binary now installed at this
/// process's path runs `run <the same source> --upgrade` as a child, so under systemd it is in the
/// service's cgroup and may become its main process (`systemctl kill -s USR2 veer`). The
/// child takes the sockets over; this process then drains and exits. If the child fails,
/// this one keeps serving and logs why.
fn spawn_upgrade_on_usr2(veer: &Veer) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut usr2) = signal(SignalKind::user_defined2()) else {
        return;
    };
    let args = source_args(veer.source());
    tokio::spawn(async move {
        while usr2.recv().await.is_some() {
            // /proc/self/exe names the file this process was started from even after it was
            // replaced; the new binary is at the original path.
            let exe = std::fs::read_link("/proc/self/exe")
                .map(|p| std::path::PathBuf::from(p.to_string_lossy().trim_end_matches(" (deleted)")));
            let exe = match exe {
                Ok(e) => e,
                Err(e) => {
                    tracing::error!(error = %e, "SIGUSR2: cannot find this binary's path; no upgrade");
                    continue;
                }
            };
            tracing::info!(binary = %exe.display(), "SIGUSR2: starting the upgrade");
            let child = tokio::process::Command::new(&exe)
                .arg("run")
                .args(&args)
                .arg("--upgrade")
                .spawn();
            match child {
                Ok(mut child) => {
                    tokio::spawn(async move {
                        // Reaped when it ends (it outlives this process when it succeeds).
                        if let Ok(status) = child.wait().await {
                            if !status.success() {
                                tracing::error!(%status, "the upgrade process failed; this process keeps serving");
                            }
                        }
                    });
                }
                Err(e) => tracing::error!(error = %e, "SIGUSR2: cannot start {}", exe.display()),
            }
        }
    });
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
