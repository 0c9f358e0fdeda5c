//! The admin plane (design §6): one command parser and dispatcher (`commands`) behind thin
//! transports — the unix socket (`socket`, HAProxy-compatible), the HTTP admin listener
//! (`http`) and `veer ctl` (`ctl`) — plus HAProxy's output formats (`haproxy`), the runtime
//! overlay persisted in the state file (`overlay`) and the event stream (`events`). The
//! read-only probe listener (`[admin] probe`) is the HTTP listener without commands.

pub mod commands;
pub mod ctl;
pub mod haproxy;
pub mod http;
pub mod socket;
pub mod status;

use crate::control::Veer;

/// Binds the configured admin endpoints (or takes them over from the previous process in
/// a binary upgrade) and serves them until shutdown or hand-over.
pub async fn start(veer: &Veer) -> std::io::Result<()> {
    use crate::control::AdminSocket;
    let admin = veer.snapshot().spec.admin.clone();
    let (inherited_socket, inherited_http, inherited_probe) = {
        let mut inherited = veer.inherited.lock().unwrap_or_else(|p| p.into_inner());
        (
            inherited.admin_socket.take(),
            inherited.admin_http.take(),
            inherited.probe.take(),
        )
    };
    let tcp = |inherited: Option<std::net::TcpListener>, addr| -> std::io::Result<tokio::net::TcpListener> {
        match inherited {
            Some(l) => {
                l.set_nonblocking(true)?;
                tokio::net::TcpListener::from_std(l)
            }
            None => crate::listeners::bind(addr, 128),
        }
    };
    let keep = |kind, fd: std::os::fd::BorrowedFd<'_>| -> std::io::Result<()> {
        let fd = fd.try_clone_to_owned()?;
        veer.admin_fds
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((kind, fd));
        Ok(())
    };
    if let Some(path) = &admin.socket {
        let listener = match inherited_socket {
            Some(l) => {
                l.set_nonblocking(true)?;
                tokio::net::UnixListener::from_std(l)?
            }
            None => socket::bind(&admin, path).await?,
        };
        keep(AdminSocket::Unix, std::os::fd::AsFd::as_fd(&listener))?;
        tracing::info!(path = %path.display(), "admin socket listening");
        tokio::spawn(socket::serve(listener, veer.clone()));
    }
    if let Some(addr) = admin.http {
        let token = match &admin.token_file {
            Some(f) => Some(
                std::fs::read_to_string(f)
                    .map_err(|e| std::io::Error::new(e.kind(), format!("token_file {}: {e}", f.display())))?
                    .trim()
                    .to_string(),
            ),
            None => None,
        };
        let listener = tcp(inherited_http, addr)?;
        keep(AdminSocket::Http, std::os::fd::AsFd::as_fd(&listener))?;
        let local = listener.local_addr()?;
        veer.set_admin_http_addr(local);
        tracing::info!(addr = %local, "admin http listening");
        tokio::spawn(http::serve(listener, veer.clone(), http::Role::Admin { token }));
    }
    if let Some(addr) = admin.probe {
        let listener = tcp(inherited_probe, addr)?;
        keep(AdminSocket::Probe, std::os::fd::AsFd::as_fd(&listener))?;
        let local = listener.local_addr()?;
        veer.set_probe_addr(local);
        tracing::info!(addr = %local, "admin probe listening (/live, /ready, /metrics)");
        tokio::spawn(http::serve(listener, veer.clone(), http::Role::Probe));
    }
    Ok(())
}
