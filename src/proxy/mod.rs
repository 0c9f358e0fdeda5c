//! The data paths. A listener's accept loop hands each connection to [`spawn`], which looks
//! up in the current snapshot what the listener is (http or tcp) and starts that path on a
//! task of its own. Knows the control plane only through [`Shared`], the narrow handle it
//! is given.

pub mod body;
pub mod buf;
pub mod cookies;
pub mod h1;
pub mod headers;
pub mod http;
pub mod mirror;
pub mod shared;
pub mod splice;
pub mod tcp;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpStream;

use crate::snapshot::ListenerRoutes;
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
    let (is_http, idle) = {
        let snap = shared.snapshot.load();
        let is_http = match snap.listeners.get(listener.as_str()) {
            Some(ListenerRoutes::Http(_)) => true,
            Some(ListenerRoutes::Tcp { .. }) => false,
            None => return, // removed by a reload between accept and here
        };
        let idle = snap
            .spec
            .listeners
            .iter()
            .find(|l| l.name == *listener)
            .map_or(snap.spec.runtime.idle_timeout, |l| l.idle_timeout);
        (is_http, idle)
    };
    // Each path's future is the task's future itself: a wrapper would keep the arguments
    // beside the copies moved into the path, bytes every idle connection would carry.
    if is_http {
        let conn = h1::server::Conn {
            peer,
            listener,
            shared,
            drain,
            open,
            idle,
        };
        tokio::spawn(h1::server::serve(stream, conn));
    } else {
        tokio::spawn(async move {
            let _open = open;
            tcp::serve(stream, peer, &listener, &shared, idle).await
        });
    }
}
