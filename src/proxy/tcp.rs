//! The L4 data path: pick a server, connect under the backend's timeout, then copy bytes
//! both ways with correct half-close until the session ends or idles out. A failed connect
//! ejects the server and tries the next one once before giving up on the client; a connect
//! that failed for want of local resources (descriptors, ports) blames no server.

use std::net::SocketAddr;

use std::time::Duration;

use tokio::net::TcpStream;

use super::splice::{splice_tcp, Ended};

use super::shared::Shared;
use crate::balance::{self, hash, Affinity};
use crate::config::HashKey;
use crate::snapshot::ListenerRoutes;

pub async fn serve(client: TcpStream, peer: SocketAddr, listener: &str, shared: &Shared, idle: Duration) {
    let backend = {
        let snap = shared.snapshot.load();
        match snap.listeners.get(listener) {
            Some(ListenerRoutes::Tcp { backend }) => snap.backends[*backend].clone(),
            _ => return,
        }
    };
    // Only the client address is known at L4: `hash` on anything else falls back to
    // round robin.
    let affinity = Affinity {
        hash: matches!(backend.hash_key, Some(HashKey::SourceIp)).then(|| hash::ip(peer.ip())),
        ..Affinity::default()
    };
    let mut tried = Vec::with_capacity(2);
    while tried.len() < 2 {
        let Some(server) = balance::pick(&backend, &affinity, &tried).map(|(s, _)| s.clone()) else {
            break;
        };
        let guard = server.state.connection_guard();
        match tokio::time::timeout(backend.connect_timeout, TcpStream::connect(server.addr)).await {
            Ok(Ok(upstream)) => {
                server.state.mark_reachable();
                let _ = upstream.set_nodelay(true);
                let cut = server.state.sessions();
                tokio::select! {
                    ended = splice_tcp(&client, &upstream, idle) => match ended {
                        Ended::Idle => tracing::debug!(%peer, server = %server.id, "tcp session idle; closed"),
                        other => tracing::debug!(%peer, server = %server.id, ?other, "tcp session ended"),
                    },
                    _ = cut.cancelled() => tracing::info!(%peer, server = %server.id, "session cut by shutdown sessions"),
                    _ = shared.shutdown.cancelled() => tracing::info!(%peer, server = %server.id, "session cut by process stop"),
                }
                drop(guard);
                return;
            }
            Ok(Err(e)) if crate::ratelimit::is_local_resource_error(&e) => {
                crate::warn_limited!(crate::ratelimit::Kind::LocalResources, %peer, server = %server.id, error = %e,
                    "tcp connect failed for want of local resources; closing the client, the server keeps its health");
                return;
            }
            Ok(Err(e)) => {
                crate::warn_limited!(crate::ratelimit::Kind::TcpConnect, %peer, server = %server.id, error = %e, "tcp connect failed")
            }
            Err(_) => {
                crate::warn_limited!(crate::ratelimit::Kind::TcpConnect, %peer, server = %server.id, "tcp connect timed out")
            }
        }
        server.state.eject(backend.eject_time);
        tried.push(server);
    }
    tracing::warn!(%peer, backend = %backend.name, "no server reachable; closing client");
}
