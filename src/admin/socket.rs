//! The admin unix socket: HAProxy's CLI session behaviour over the shared dispatcher.
//!
//! Non-interactive (default): one line is read, split on unescaped `;`, each command's output
//! is written followed by one empty line, and the connection closes. `prompt` switches to
//! interactive mode: after each command the prompt `> ` follows the empty line and the
//! session stays open until `quit` or EOF. `subscribe` turns the session into an event
//! stream. A session that sends nothing for `[admin] session_timeout` is closed (HAProxy's
//! `stats timeout`); a subscribed one stays until the client closes it.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use super::commands::{execute, Peer, Reply};
use crate::config::AdminSpec;
use crate::control::Veer;

/// Longest command line accepted; HAProxy's own limit is its buffer size (16 KiB).
pub const MAX_LINE: usize = 64 * 1024;

/// Binds the socket: replaces a stale file only when nothing listens on it, then applies
/// `socket_mode` (default 0600) and `socket_group`.
pub async fn bind(spec: &AdminSpec, path: &Path) -> io::Result<UnixListener> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    if path.exists() {
        if UnixStream::connect(path).await.is_ok() {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!(
                    "admin socket {} is in use by another process (is another veer running?)",
                    path.display()
                ),
            ));
        }
        std::fs::remove_file(path)?;
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(spec.socket_mode))?;
    if let Some(group) = &spec.socket_group {
        let gid = resolve_group(group).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("unknown group {group:?} for the admin socket"),
            )
        })?;
        std::os::unix::fs::chown(path, None, Some(gid))?;
    }
    Ok(listener)
}

/// A numeric gid, or a group name looked up through the system's name service (getgrnam:
/// /etc/group, LDAP, SSSD — whatever nsswitch.conf says).
fn resolve_group(group: &str) -> Option<u32> {
    if let Ok(gid) = group.parse() {
        return Some(gid);
    }
    uzers::get_group_by_name(group).map(|g| g.gid())
}

pub async fn serve(listener: UnixListener, veer: Veer) {
    loop {
        let stream = tokio::select! {
            _ = veer.shared.shutdown.cancelled() => return,
            // After a hand-over the new process answers on this socket.
            _ = veer.handed_over() => return,
            accepted = listener.accept() => match accepted {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "admin socket accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let veer = veer.clone();
        tokio::spawn(async move {
            if let Err(e) = session(stream, &veer).await {
                tracing::debug!(error = %e, "admin session ended");
            }
        });
    }
}

/// Splits a line on unescaped `;` (`\;` is a literal semicolon).
pub fn split_commands(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&';') => {
                current.push(';');
                chars.next();
            }
            ';' => out.push(std::mem::take(&mut current)),
            c => current.push(c),
        }
    }
    out.push(current);
    out
}

async fn session(stream: UnixStream, veer: &Veer) -> io::Result<()> {
    let cred = stream.peer_cred().ok();
    let peer = Peer {
        via: "socket",
        uid: cred.map(|c| c.uid()),
        pid: cred.and_then(|c| c.pid()),
        addr: None,
    };
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    let mut interactive = false;
    let mut line = Vec::new();
    // HAProxy's `stats timeout`: a session that sends nothing for this long is closed (a
    // command that runs long, like `wait`, is not idle).
    let idle = veer.snapshot().spec.admin.session_timeout;
    loop {
        line.clear();
        let mut limited = (&mut read).take(MAX_LINE as u64 + 1);
        let read_line = limited.read_until(b'\n', &mut line);
        let n = if idle.is_zero() {
            read_line.await?
        } else {
            match tokio::time::timeout(idle, read_line).await {
                Ok(n) => n?,
                Err(_) => {
                    tracing::debug!("admin session idle past session_timeout; closing");
                    return Ok(());
                }
            }
        };
        if n == 0 {
            return Ok(());
        }
        if line.len() > MAX_LINE {
            write
                .write_all(format!("Command line too long (limit is {MAX_LINE} bytes).\n\n").as_bytes())
                .await?;
            write.shutdown().await?;
            // Discard the rest of the line (bounded) so that closing does not reset the
            // connection and destroy the answer before the client has read it.
            let discard = async {
                while !line.ends_with(b"\n") {
                    line.clear();
                    let read = (&mut read).take(MAX_LINE as u64).read_until(b'\n', &mut line).await;
                    if read.unwrap_or(0) == 0 {
                        break;
                    }
                }
            };
            let _ = tokio::time::timeout(std::time::Duration::from_secs(2), discard).await;
            return Ok(());
        }
        if !interactive && line == b"handover\n" {
            // A new veer process (`veer run --upgrade`) asks for the listening sockets.
            let stream = read.into_inner().reunite(write).map_err(io::Error::other)?;
            let taken = veer.hand_over(stream).await?;
            tracing::info!(taken, "hand-over to a new process finished");
            return Ok(());
        }
        let text = String::from_utf8_lossy(&line);
        let text = text.trim_end_matches(['\n', '\r']);
        if !interactive && text.trim().is_empty() {
            return Ok(());
        }
        for command in split_commands(text) {
            match execute(veer, &command, &peer).await {
                Reply::Answer(a) => write.write_all(a.text.as_bytes()).await?,
                Reply::Prompt => interactive = !interactive,
                Reply::Quit => return Ok(()),
                Reply::Subscribe => return stream_events(veer, &mut read, &mut write).await,
            }
            write.write_all(if interactive { b"\n> " } else { b"\n" }).await?;
        }
        if !interactive {
            return Ok(());
        }
    }
}

/// Writes one JSON line per event until the client goes away: its EOF (or error) is
/// noticed at once, not at the next event, so a closed subscriber holds no descriptor.
/// Anything else the client sends is ignored.
pub async fn stream_events(
    veer: &Veer,
    input: &mut (impl AsyncRead + Unpin),
    out: &mut (impl AsyncWrite + Unpin),
) -> io::Result<()> {
    let mut events = veer.subscribe();
    // Tells the client the stream is live: every change after this line is reported.
    let hello = serde_json::json!({"event": "subscribed", "generation": veer.snapshot().generation});
    out.write_all(format!("{hello}\n").as_bytes()).await?;
    out.flush().await?;
    let mut discard = [0u8; 512];
    loop {
        let event = tokio::select! {
            event = events.recv() => event,
            read = input.read(&mut discard) => match read {
                Ok(0) | Err(_) => return Ok(()),
                Ok(_) => continue,
            },
        };
        let line = match event {
            Ok(line) => line,
            Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                serde_json::json!({"event": "lagged", "missed": n}).to_string()
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return Ok(()),
        };
        out.write_all(line.as_bytes()).await?;
        out.write_all(b"\n").await?;
        out.flush().await?;
    }
}
