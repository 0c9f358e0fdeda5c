//! Hot binary upgrade: the listening sockets move from the running process to a new one over
//! the admin socket (SCM_RIGHTS), so no connection is refused or reset across the hand-over.
//!
//! `veer run -c FILE --upgrade` (the new process) connects to `[admin].socket` and sends
//! `handover`. The old process answers with one message: a JSON line naming its listeners
//! (and whether the admin socket and admin HTTP listener follow), with their file
//! descriptors attached, in that order. The new process builds its listeners from those
//! sockets (binding only what the config adds), loads the same state file, starts serving and
//! writes `ready`. Only then does the old process drain and exit; until then both accept
//! from the same sockets, so every connection in the kernel's backlog is served by one of
//! them. If the new process fails before `ready`, the old one simply keeps serving.
//!
//! File descriptors cross with rustix's safe `sendmsg`/`recvmsg` wrappers: no unsafe code.

use std::collections::HashMap;
use std::io::{self, IoSlice, IoSliceMut, Read, Write};
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;

use rustix::net::{
    recvmsg, sendmsg, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer, SendAncillaryMessage,
    SendFlags,
};
use serde::{Deserialize, Serialize};

/// Most descriptors one hand-over carries (listeners + 3 admin sockets).
const MAX_FDS: usize = 250;

/// What the old process hands over, in the order of the attached descriptors.
#[derive(Debug, Serialize, Deserialize)]
struct Manifest {
    /// (listener name, configured bind address)
    listeners: Vec<(String, SocketAddr)>,
    admin_socket: bool,
    admin_http: bool,
    /// The `[admin] probe` listener (absent in hand-overs from older versions).
    #[serde(default)]
    probe: bool,
}

/// Sockets received from the previous process, consumed as the new one starts.
#[derive(Debug, Default)]
pub struct Inherited {
    /// By listener name: (configured address, socket).
    pub listeners: HashMap<String, (SocketAddr, std::net::TcpListener)>,
    pub admin_socket: Option<std::os::unix::net::UnixListener>,
    pub admin_http: Option<std::net::TcpListener>,
    pub probe: Option<std::net::TcpListener>,
}

/// Old side: sends the manifest and descriptors over `stream`, then waits for `ready`.
/// Returns `Ok(true)` when the new process took over.
pub fn send(
    mut stream: UnixStream,
    listeners: &[(String, SocketAddr, BorrowedFd<'_>)],
    admin_socket: Option<BorrowedFd<'_>>,
    admin_http: Option<BorrowedFd<'_>>,
    probe: Option<BorrowedFd<'_>>,
) -> io::Result<bool> {
    let manifest = Manifest {
        listeners: listeners.iter().map(|(n, a, _)| (n.clone(), *a)).collect(),
        admin_socket: admin_socket.is_some(),
        admin_http: admin_http.is_some(),
        probe: probe.is_some(),
    };
    let mut fds: Vec<BorrowedFd<'_>> = listeners.iter().map(|(_, _, fd)| *fd).collect();
    fds.extend(admin_socket);
    fds.extend(admin_http);
    fds.extend(probe);
    if fds.len() > MAX_FDS {
        return Err(io::Error::other(format!(
            "too many sockets to hand over ({})",
            fds.len()
        )));
    }
    let mut line = serde_json::to_vec(&manifest).map_err(io::Error::other)?;
    line.push(b'\n');
    let mut space = vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(fds.len().max(1)))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !control.push(SendAncillaryMessage::ScmRights(&fds)) {
        return Err(io::Error::other("cannot attach the sockets"));
    }
    let sent = sendmsg(&stream, &[IoSlice::new(&line)], &mut control, SendFlags::empty())?;
    stream.write_all(&line[sent..])?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    Ok(answer.trim() == "ready")
}

/// New side: asks the process behind `socket` for its sockets. Returns them and the stream
/// on which to confirm with [`confirm`].
pub fn receive(socket: &Path) -> io::Result<(Inherited, UnixStream)> {
    let mut stream = UnixStream::connect(socket).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot reach the running veer at {}: {e}", socket.display()),
        )
    })?;
    stream.write_all(b"handover\n")?;
    let mut line = Vec::new();
    let mut fds: Vec<OwnedFd> = Vec::new();
    let mut space = vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    while !line.ends_with(b"\n") {
        let mut buf = [0u8; 16 * 1024];
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let got = recvmsg(
            &stream,
            &mut [IoSliceMut::new(&mut buf)],
            &mut control,
            RecvFlags::CMSG_CLOEXEC,
        )?;
        for msg in control.drain() {
            if let RecvAncillaryMessage::ScmRights(received) = msg {
                fds.extend(received);
            }
        }
        if got.bytes == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the running veer refused the hand-over",
            ));
        }
        line.extend_from_slice(&buf[..got.bytes]);
    }
    let manifest: Manifest = serde_json::from_slice(&line).map_err(|e| {
        io::Error::other(format!(
            "unexpected hand-over answer {:?}: {e}",
            String::from_utf8_lossy(&line).trim()
        ))
    })?;
    let expected = manifest.listeners.len()
        + manifest.admin_socket as usize
        + manifest.admin_http as usize
        + manifest.probe as usize;
    if fds.len() != expected {
        return Err(io::Error::other(format!(
            "expected {expected} sockets, received {}",
            fds.len()
        )));
    }
    let mut fds = fds.into_iter();
    let mut inherited = Inherited::default();
    for (name, addr) in manifest.listeners {
        let listener = std::net::TcpListener::from(fds.next().ok_or_else(|| io::Error::other("missing socket"))?);
        inherited.listeners.insert(name, (addr, listener));
    }
    if manifest.admin_socket {
        inherited.admin_socket = fds.next().map(std::os::unix::net::UnixListener::from);
    }
    if manifest.admin_http {
        inherited.admin_http = fds.next().map(std::net::TcpListener::from);
    }
    if manifest.probe {
        inherited.probe = fds.next().map(std::net::TcpListener::from);
    }
    Ok((inherited, stream))
}

/// New side: tells the old process that the new one is serving, so it drains and exits.
pub fn confirm(mut stream: UnixStream) -> io::Result<()> {
    stream.write_all(b"ready\n")?;
    stream.shutdown(std::net::Shutdown::Write)
}

/// A duplicate of a socket's descriptor, kept for a later hand-over.
pub fn keep(fd: impl AsFd) -> io::Result<OwnedFd> {
    fd.as_fd().try_clone_to_owned()
}

/// Tells systemd about a state change when run under it (`NOTIFY_SOCKET`); a no-op otherwise.
pub fn notify(states: &[sd_notify::NotifyState]) {
    if let Err(e) = sd_notify::notify(false, states) {
        tracing::debug!(error = %e, "sd_notify failed");
    }
}

/// systemd's reload protocol (`Type=notify-reload`): `RELOADING=1` with the monotonic time
/// the reload started at; [`reloaded`] ends it.
pub fn reloading() {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    let usec = i128::from(t.tv_sec) * 1_000_000 + i128::from(t.tv_nsec) / 1000;
    notify(&[
        sd_notify::NotifyState::Reloading,
        sd_notify::NotifyState::MonotonicUsec(usec),
    ]);
}

/// Ends a reload for systemd: `READY=1`, with what happened as the unit's status line.
pub fn reloaded(status: &str) {
    notify(&[sd_notify::NotifyState::Ready, sd_notify::NotifyState::Status(status)]);
}
