//! The data paths. A listener's accept loop hands each connection to [`serve`], which looks
//! up in the current snapshot what the listener is (http or tcp) and runs that path.

pub mod body;
pub mod buf;
pub mod cookies;
pub mod h1;
pub mod headers;
pub mod http;
pub mod mirror;
pub mod splice;
pub mod tcp;

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::Arc;
use std::task::{Context, Poll};

use arc_swap::ArcSwap;
use hyper_util::rt::TokioExecutor;
use hyper_util::server::conn::auto;
use tokio_util::sync::CancellationToken;

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use tokio::net::TcpStream;

use crate::metrics::ListenerStats;
use crate::snapshot::{ListenerRoutes, Snapshot};
use crate::upstream::{BodyError, UpstreamBody};

/// What every data-path task shares: the data plane's narrow handle on the running
/// process (the snapshot it routes by, drain and stop signals, counters), built by the
/// runtime; the data path knows nothing else of the control plane.
pub struct Shared {
    pub snapshot: ArcSwap<Snapshot>,
    pub http: auto::Builder<TokioExecutor>,
    /// `[runtime] header_timeout`, read at start (the HTTP builder carries it too).
    pub header_timeout: std::time::Duration,
    /// Cancelled when the process stops: every session still open is cut. Parent of every
    /// listener's accept token.
    pub shutdown: CancellationToken,
    /// Cancelled when the process starts draining (SIGTERM, upgrade, admin `drain`):
    /// `/ready` fails, HTTP/1.1 responses carry `Connection: close`, HTTP/2 connections get
    /// GOAWAY. Parent of every listener's drain token. Replaced by a fresh token on
    /// `undrain` (which a stopping process refuses).
    pub drain: ArcSwap<CancellationToken>,
    /// Cancelled once the process is stopping (SIGTERM, upgrade hand-over): a drain that
    /// can no longer be undone.
    pub stopping: CancellationToken,
    /// `[runtime] body_timeout`, read at start.
    pub body_timeout: std::time::Duration,
    /// `[runtime] max_header_size` and `max_headers`, read at start.
    pub head_limits: h1::codec::HeadLimits,
    /// Client connections open now, and accepted since start (for `show info`).
    pub current_conns: AtomicUsize,
    pub total_conns: AtomicU64,
    /// Set from `[access_log]` at start.
    pub access_log: Option<Arc<crate::access_log::AccessLog>>,
}

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
    let kind = {
        let snap = shared.snapshot.load();
        let is_http = match snap.listeners.get(listener.as_str()) {
            Some(ListenerRoutes::Http(_)) => Some(true),
            Some(ListenerRoutes::Tcp { .. }) => Some(false),
            None => None, // removed by a reload between accept and here
        };
        let idle = snap
            .spec
            .listeners
            .iter()
            .find(|l| l.name == *listener)
            .map_or(snap.spec.runtime.idle_timeout, |l| l.idle_timeout);
        is_http.map(|h| (h, idle))
    };
    // Each path's future is the task's future itself: a wrapper would keep the arguments
    // beside the copies moved into the path, bytes every idle connection would carry.
    match kind {
        Some((true, idle)) => {
            let fut = h1::server::serve(
                stream,
                h1::server::Conn {
                    peer,
                    listener,
                    shared,
                    drain,
                    open,
                    idle,
                },
            );
            tokio::spawn(fut);
        }
        Some((false, idle)) => {
            tokio::spawn(async move {
                let _open = open;
                tcp::serve(stream, peer, &listener, &shared, idle).await
            });
        }
        None => {}
    }
}

/// Counts an open client connection until it ends, however it ends. Created in the accept
/// loop, before the connection's task is spawned, so a drain never misses a connection that
/// was accepted but not yet served.
pub struct OpenConn {
    shared: Arc<Shared>,
    pub listener: Arc<ListenerStats>,
}

impl OpenConn {
    pub fn new(shared: &Arc<Shared>, listener: &Arc<ListenerStats>) -> Self {
        use std::sync::atomic::Ordering::Relaxed;
        shared.total_conns.fetch_add(1, Relaxed);
        shared.current_conns.fetch_add(1, Relaxed);
        listener.total.fetch_add(1, Relaxed);
        listener.active.fetch_add(1, Relaxed);
        OpenConn {
            shared: shared.clone(),
            listener: listener.clone(),
        }
    }
}

impl Drop for OpenConn {
    fn drop(&mut self) {
        use std::sync::atomic::Ordering::Relaxed;
        self.shared.current_conns.fetch_sub(1, Relaxed);
        self.listener.active.fetch_sub(1, Relaxed);
    }
}

/// A response body to the client: streamed from upstream, or a small synthetic one.
pub enum ProxyBody {
    Upstream(UpstreamBody),
    /// Read from an upstream socket by the HTTP/1 engine's client (HTTP/2 requests).
    Raw(UpstreamBody<h1::client::RawBody>),
    Synthetic(Option<Bytes>),
    /// An HTTP/2 stream's body, holding the stream open in its connection's count (idle
    /// connections are those with none).
    Stream(Box<ProxyBody>, http::OpenStream),
}

impl ProxyBody {
    pub fn synthetic(b: Bytes) -> Self {
        ProxyBody::Synthetic(Some(b))
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match self.get_mut() {
            ProxyBody::Upstream(b) => Pin::new(b).poll_frame(cx),
            ProxyBody::Raw(b) => Pin::new(b).poll_frame(cx),
            ProxyBody::Synthetic(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            ProxyBody::Stream(b, _) => Pin::new(b.as_mut()).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Upstream(b) => b.is_end_stream(),
            ProxyBody::Raw(b) => b.is_end_stream(),
            ProxyBody::Synthetic(b) => b.is_none(),
            ProxyBody::Stream(b, _) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Upstream(b) => b.size_hint(),
            ProxyBody::Raw(b) => b.size_hint(),
            ProxyBody::Synthetic(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            ProxyBody::Stream(b, _) => b.size_hint(),
        }
    }
}
