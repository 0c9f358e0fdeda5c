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
    stream: TcpStream,
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
        // Plain TCP: straight to the L4 path, no first steps to carry.
        tokio::spawn(async move {
            let _open = open;
            let deadline = tokio::time::Instant::now() + shared.header_timeout;
            tcp::serve(stream, peer, &listener, &shared, opts.idle_timeout, deadline).await
        });
        return;
    }
    let first_steps = !http || opts.tls.is_some() || opts.accept_proxy;
    let conn = h1::server::Conn {
        peer,
        listener,
        shared,
        drain,
        open,
        opts,
        tls: None,
    };
    if first_steps {
        tokio::spawn(accept::serve(stream, conn, http));
    } else {
        // Plain HTTP: the path's future is the task's future itself. A wrapper would keep
        // the arguments beside the copies moved into the path, bytes every idle connection
        // would carry.
        tokio::spawn(h1::server::serve(ClientIo::Plain(stream), conn));
    }
}
