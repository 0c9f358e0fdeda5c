//! The data paths. A listener's accept loop hands each connection to [`spawn`], which looks
//! up in the current snapshot what the listener is (http or tcp, TLS, PROXY protocol) and
//! starts that path on a task of its own (through [`accept`] when the connection has first
//! steps: a PROXY header, a TLS handshake, a ClientHello to route by). Knows the control plane only through [`Shared`], the narrow handle it
//! is given.

mod accept;
pub mod body;
pub mod buf;
pub mod cookies;
pub mod h1;
pub mod headers;
pub mod http;
pub mod mirror;
mod peek;
pub mod shared;
pub mod sni;
pub mod splice;
mod streams;
pub mod tcp;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpStream;

use crate::snapshot::ListenerRoutes;
use crate::stream::ClientIo;
pub use shared::{OpenConn, Shared};

/// Starts serving one accepted connection on listener `listener`, on a task of its own.
/// `drain` is the listener's drain token: cancelled when the listener is removed or the
/// process drains.
pub fn spawn(
    stream: std::net::TcpStream,
    peer: SocketAddr,
    listener: Arc<String>,
    shared: Arc<Shared>,
    drain: tokio_util::sync::CancellationToken,
    open: OpenConn,
) {
    let (http, sni, opts) = {
        let snap = shared.snapshot.load();
        let Some(l) = snap.listeners.get(listener.as_str()) else {
            return; // removed by a reload between accept and here
        };
        let http = matches!(l.routes, ListenerRoutes::Http(_));
        (http, matches!(l.routes, ListenerRoutes::Sni(_)), l.opts.clone())
    };
    if !http && !sni && !opts.accept_proxy {
        let Some(stream) = registered(stream) else { return };
        // Plain TCP: straight to the L4 path, no first steps to carry.
        tokio::spawn(async move {
            let _open = open;
            let deadline = tokio::time::Instant::now() + shared.header_timeout;
            tcp::serve(stream, peer, &listener, &shared, opts.idle_timeout, deadline).await
        });
        return;
    }
    let plain_http = http && opts.tls.is_none() && !opts.accept_proxy;
    let conn = h1::server::Conn {
        peer,
        listener,
        shared,
        drain,
        open,
        opts,
        tls: None,
    };
    if plain_http {
        // Not registered with the reactor: the HTTP/1 engine reads the request speculatively
        // and registers the socket only if it has to wait (see `Stream::Fresh`). The path's
        // future is the task's future itself: a wrapper would keep the arguments beside the
        // copies moved into the path, bytes every idle connection would carry.
        tokio::spawn(h1::server::serve(ClientIo::Fresh(Some(stream)), conn));
    } else if let Some(stream) = registered(stream) {
        tokio::spawn(accept::serve(stream, conn, http));
    }
}

/// The accepted socket registered with the reactor, for the paths that wait on it from
/// their first step; `None` (the connection closes) when the reactor refuses it.
fn registered(stream: std::net::TcpStream) -> Option<TcpStream> {
    TcpStream::from_std(stream)
        .map_err(|e| crate::warn_limited!(crate::ratelimit::Kind::Accept, error = %e, "cannot register a connection; closing it"))
        .ok()
}
