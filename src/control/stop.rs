//! Draining and stopping (design §4): the graceful stop, the immediate one, the admin
//! `drain`/`undrain`, readiness, and the old side of a binary upgrade (handing the sockets
//! over). The same `Veer` as `control/mod.rs`, its lifecycle half.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::{AdminSocket, Veer};

impl Veer {
    /// Stops at once: closes every listener and cuts every session.
    pub async fn shutdown(&self) {
        self.shared.stopping.cancel();
        self.shared.drain.load().cancel();
        self.shared.shutdown.cancel();
        self.control.lock().await.listeners.close_all().await;
        // The admin listeners' copies kept for a hand-over: nothing is handed over now, and
        // they would keep the admin socket answering connects after the stop.
        self.admin_fds.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    /// The graceful stop (design §4): readiness fails at once and connections are told to
    /// close (HTTP/1.1 on their next response, HTTP/2 by GOAWAY); listeners keep accepting
    /// for `accept_grace`, then close; client connections then get `shutdown_timeout` to
    /// finish and close; whatever is left is cut. Idle keep-alive connections are not closed
    /// early on purpose: closing one races a request the client may be sending at that
    /// moment (HAProxy #3472). Returns `true` when no in-flight work had to be cut.
    pub async fn shutdown_gracefully(&self) -> bool {
        let runtime = self.snapshot().spec.runtime.clone();
        tracing::info!(accept_grace = ?runtime.accept_grace, shutdown_timeout = ?runtime.shutdown_timeout, "draining");
        self.shared.stopping.cancel();
        self.shared.drain.load().cancel();
        tokio::time::sleep(runtime.accept_grace).await;
        self.control.lock().await.listeners.close_all().await;
        let deadline = tokio::time::Instant::now() + runtime.shutdown_timeout;
        while self.shared.current_conns.load(Relaxed) > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        let active = self.active_work();
        let clean = active == 0;
        if !clean {
            tracing::warn!(active, "shutdown timeout: cutting what is still in flight");
        }
        self.shared.shutdown.cancel();
        clean
    }

    /// Requests in flight plus open TCP sessions and tunnels, over every server.
    pub fn active_work(&self) -> usize {
        self.snapshot()
            .servers()
            .map(|s| s.state.active_requests.load(Relaxed) + s.state.active_connections.load(Relaxed))
            .sum()
    }

    /// Resolves once a new process has taken over the sockets (binary upgrade).
    pub async fn handed_over(&self) {
        self.handover.cancelled().await
    }

    /// After a clean stop: removes the admin socket file, unless a new process took it
    /// over (it serves on the same path).
    pub fn remove_admin_socket(&self) {
        if self.handover.is_cancelled() {
            return;
        }
        if let Some(path) = &self.snapshot().spec.admin.socket {
            match std::fs::remove_file(path) {
                Ok(()) => tracing::debug!(path = %path.display(), "admin socket removed"),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => tracing::warn!(path = %path.display(), error = %e, "cannot remove the admin socket"),
            }
        }
    }

    /// Old side of a binary upgrade: sends every listening socket (and the admin sockets)
    /// over `stream` and waits for the new process to confirm. Reloads wait meanwhile.
    pub(crate) async fn hand_over(&self, stream: tokio::net::UnixStream) -> std::io::Result<bool> {
        let control = self.control.lock().await;
        let keep = |fd: std::os::fd::BorrowedFd<'_>| fd.try_clone_to_owned();
        let listeners = control
            .listeners
            .sockets()
            .into_iter()
            .map(|(name, addr, fd)| Ok((name, addr, keep(fd)?)))
            .collect::<std::io::Result<Vec<_>>>()?;
        let admin = {
            let fds = self.admin_fds.lock().unwrap_or_else(|p| p.into_inner());
            let find = |kind| {
                fds.iter()
                    .find(|(k, _)| *k == kind)
                    .map(|(_, fd)| fd.try_clone())
                    .transpose()
            };
            (
                find(AdminSocket::Unix)?,
                find(AdminSocket::Http)?,
                find(AdminSocket::Probe)?,
            )
        };
        let stream = stream.into_std()?;
        stream.set_nonblocking(false)?;
        let taken = tokio::task::spawn_blocking(move || {
            use std::os::fd::AsFd;
            let borrowed: Vec<_> = listeners.iter().map(|(n, a, fd)| (n.clone(), *a, fd.as_fd())).collect();
            crate::lifecycle::send(
                stream,
                &borrowed,
                admin.0.as_ref().map(|f| f.as_fd()),
                admin.1.as_ref().map(|f| f.as_fd()),
                admin.2.as_ref().map(|f| f.as_fd()),
            )
        })
        .await
        .map_err(std::io::Error::other)??;
        drop(control);
        if taken {
            tracing::info!("a new process took over the sockets");
            self.shared.stopping.cancel();
            self.handover.cancel();
        }
        Ok(taken)
    }

    /// Starts draining without stopping: `/ready` fails and connections are told to close;
    /// listeners keep accepting until the stop (SIGTERM) that normally follows.
    pub fn start_draining(&self) {
        let drain = self.shared.drain.load();
        if !drain.is_cancelled() {
            tracing::info!("draining: readiness fails, connections are told to close");
        }
        drain.cancel();
    }

    /// Undoes [`Veer::start_draining`]: `/ready` passes again and new connections are no
    /// longer told to close (connections already told keep their verdict). Refused once the
    /// process is stopping.
    pub async fn undrain(&self) -> Result<bool, &'static str> {
        if self.shared.stopping.is_cancelled() {
            return Err("The process is stopping; it cannot be undrained.");
        }
        let control = self.control.lock().await;
        if !self.shared.drain.load().is_cancelled() {
            return Ok(false);
        }
        self.shared.drain.store(Arc::new(CancellationToken::new()));
        control.listeners.renew_drain(&self.shared);
        tracing::info!("undrained: readiness passes, connections are kept again");
        Ok(true)
    }

    /// True while the process drains.
    pub fn draining(&self) -> bool {
        self.shared.drain.load().is_cancelled()
    }

    /// Ready to take traffic: a config is serving, at least one listener accepts, and the
    /// process is not draining.
    pub async fn ready(&self) -> bool {
        self.snapshot().generation > 0 && !self.draining() && !self.control.lock().await.listeners.is_empty()
    }
}
