//! The L4 data path: choose the backend (the listener's one, or by the TLS ClientHello's
//! server name for SNI passthrough, read without consuming it), pick a server, connect
//! under the backend's timeout (with a PROXY header if it wants one), then copy bytes both
//! ways with correct half-close until the session ends or idles out. A failed connect
//! ejects the server and tries the next one once before giving up on the client; a connect
//! that failed for want of local resources (descriptors, ports) blames no server.

use std::net::SocketAddr;

use std::time::Duration;

use tokio::net::TcpStream;

use tokio::time::Instant;

use super::peek;
use super::sni::{self, Hello};
use super::splice::{splice, Ended};
use crate::stream::ClientIo;

use super::shared::Shared;
use crate::balance::{self, hash, Affinity};
use crate::config::HashKey;
use crate::snapshot::ListenerRoutes;
use crate::state::Counter;

/// `deadline`: by when a ClientHello to route by must have arrived (`header_timeout`).
pub async fn serve(
    client: TcpStream,
    peer: SocketAddr,
    listener: &str,
    shared: &Shared,
    idle: Duration,
    deadline: Instant,
) {
    let by_sni = {
        let snap = shared.snapshot.load();
        matches!(
            snap.listeners.get(listener).map(|l| &l.routes),
            Some(ListenerRoutes::Sni(_))
        )
    };
    let name = if by_sni {
        let hello = peek::until(&client, deadline, sni::MAX_HELLO, |b| match sni::parse(b) {
            Hello::Incomplete => None,
            Hello::NotTls => Some(None),
            Hello::ClientHello(name) => Some(name),
        });
        match hello.await {
            Ok(name) => name,
            Err(why) => {
                tracing::debug!(%peer, listener, ?why, "no ClientHello to route by; closing");
                return;
            }
        }
    } else {
        None
    };
    let backend = {
        let snap = shared.snapshot.load();
        let index = match snap.listeners.get(listener).map(|l| &l.routes) {
            Some(ListenerRoutes::Tcp { backend }) => Some(*backend),
            Some(ListenerRoutes::Sni(table)) => table
                .find(name.as_deref().unwrap_or(""), "", "/", &http::HeaderMap::new())
                .map(|r| r.backend),
            _ => None,
        };
        let Some(index) = index else {
            tracing::debug!(%peer, listener, sni = name.as_deref(), "no route for the server name; closing");
            return;
        };
        snap.backends[index].clone()
    };
    // Only the client address is known at L4: `hash` on anything else falls back to
    // round robin.
    let affinity = Affinity {
        hash: matches!(backend.hash_key, Some(HashKey::SourceIp)).then(|| hash::ip(peer.ip())),
        ..Affinity::default()
    };
    // A backend with `tls` gets the bytes over TLS (TLS origination); otherwise both sides
    // are plain sockets and the splice holds no buffer while idle.
    let mut client = ClientIo::Plain(client);
    let mut tried = Vec::with_capacity(2);
    while tried.len() < 2 {
        let (server, _, guard) = match balance::queue::acquire(&backend, &affinity, &tried, Counter::Connections).await
        {
            Ok(t) => t,
            Err(crate::error::ProxyError::NoServer) => break,
            Err(e) => {
                crate::warn_limited!(crate::ratelimit::Kind::Queue, %peer, backend = %backend.name, error = %e, "every server at maxconn; closing the client");
                return;
            }
        };
        let proxied = backend.send_proxy.map(|_| (peer, client.local_addr().unwrap_or(peer)));
        // Boxed: the connect state (a TLS handshake's, for a TLS backend) is not carried
        // through the session.
        match Box::pin(crate::upstream::open(server.addr, &backend, proxied)).await {
            Ok(mut upstream) => {
                server.state.mark_reachable();
                let cut = server.state.sessions();
                tokio::select! {
                    ended = splice(&mut client, &mut upstream, idle) => match ended {
                        Ended::Idle => tracing::debug!(%peer, server = %server.id, "tcp session idle; closed"),
                        Ended::Done(up, down) => server.state.stats.add_bytes(up, down),
                        other => tracing::debug!(%peer, server = %server.id, ?other, "tcp session ended"),
                    },
                    _ = cut.cancelled() => tracing::info!(%peer, server = %server.id, "session cut by shutdown sessions"),
                    _ = shared.shutdown.cancelled() => tracing::info!(%peer, server = %server.id, "session cut by process stop"),
                }
                drop(guard);
                return;
            }
            Err(e) if crate::ratelimit::is_local_resource_error(&e) => {
                crate::warn_limited!(crate::ratelimit::Kind::LocalResources, %peer, server = %server.id, error = %e,
                    "tcp connect failed for want of local resources; closing the client, the server keeps its health");
                return;
            }
            Err(e) => {
                crate::warn_limited!(crate::ratelimit::Kind::TcpConnect, %peer, server = %server.id, error = %e, "tcp connect failed")
            }
        }
        drop(guard);
        balance::outlier::connect_failure(&backend, &server);
        tried.push(server);
    }
    tracing::warn!(%peer, backend = %backend.name, "no server reachable; closing client");
}
