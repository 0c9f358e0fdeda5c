//! Keep-alive connections to one server address, carried across snapshots with the
//! server's state (a reload keeps them). Holds connections; opening them and exchanging on
//! them is the data path's ([`crate::upstream`], [`crate::proxy`]).

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::task::Context;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use hyper::client::conn::http1;
use tokio::time::Instant;

use crate::stream::UpstreamIo;

/// Pool settings that, when changed by a reload, require a fresh pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolKey {
    pub addr: SocketAddr,
    pub max_idle: usize,
    pub idle_timeout: Duration,
    /// Identifies the backend's TLS settings and protocol (0: plain HTTP/1.1):
    /// connections are reused per (server, TLS material, SNI, protocol).
    pub transport: u64,
}

/// Any error a request body may fail with (the client's body: malformed, timed out).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The body type sent upstream: the client's streamed body, or a synthetic one.
pub type UpstreamRequestBody = UnsyncBoxBody<Bytes, BoxError>;

/// An empty request body (a bodiless request, a retry's); boxing it allocates nothing.
pub fn no_body() -> UpstreamRequestBody {
    use http_body_util::BodyExt;
    http_body_util::Empty::new()
        .map_err(|never| match never {})
        .boxed_unsync()
}
/// A hyper client session on one upstream connection (mirroring).
pub type Sender = http1::SendRequest<UpstreamRequestBody>;
/// A multiplexed HTTP/2 session to a server (`protocol = "h2"` or `"h2c"`): cloned by
/// every request; hyper queues streams beyond the limit the server announces.
pub type H2Sender = hyper::client::conn::http2::SendRequest<UpstreamRequestBody>;

struct Idle {
    tx: Sender,
    since: Instant,
}

/// Keep-alive connections to one server address: hyper client sessions (the HTTP/2 path
/// and mirroring) and raw sockets (the HTTP/1 engine, which owns its upstream connection
/// for the exchange).
pub struct Pool {
    key: PoolKey,
    idle: Mutex<VecDeque<Idle>>,
    /// Raw idle connections, most recently used last.
    conns: Mutex<Vec<(UpstreamIo, Instant)>>,
    /// Off while the server drains or is in maintenance: connections are not kept.
    reuse: std::sync::atomic::AtomicBool,
    /// The server's HTTP/2 session, when its backend speaks HTTP/2. Opening one is
    /// serialized, so a burst of first requests opens one connection, not one each.
    pub h2: tokio::sync::Mutex<Option<H2Sender>>,
}

impl Pool {
    pub fn new(key: PoolKey) -> Self {
        Pool {
            key,
            idle: Mutex::new(VecDeque::new()),
            conns: Mutex::new(Vec::new()),
            reuse: std::sync::atomic::AtomicBool::new(true),
            h2: tokio::sync::Mutex::new(None),
        }
    }

    /// Idle connections currently held.
    pub fn idle_len(&self) -> usize {
        self.idle.lock().map_or(0, |q| q.len()) + self.conns.lock().map_or(0, |c| c.len())
    }

    /// Whether finished exchanges keep their connection. Turning it off closes the idle
    /// connections at once (a draining server should see its keep-alive connections go).
    pub fn set_reuse(&self, reuse: bool) {
        let was = self.reuse.swap(reuse, std::sync::atomic::Ordering::Relaxed);
        if was && !reuse {
            self.close_idle();
        }
    }

    /// Drops every idle connection (closing it); in-flight exchanges are untouched (an
    /// HTTP/2 session is dropped from the pool: its open streams finish, new ones go on a
    /// new session).
    pub fn close_idle(&self) {
        if let Ok(mut h2) = self.h2.try_lock() {
            h2.take();
        }
        if let Ok(mut q) = self.idle.lock() {
            q.clear();
        }
        if let Ok(mut c) = self.conns.lock() {
            c.clear();
        }
    }

    /// Closes the idle connections that have been idle for `pool_idle_timeout` (called
    /// periodically, so an unused pool does not hold them forever).
    pub fn expire_idle(&self) {
        if let Ok(mut q) = self.idle.lock() {
            // Oldest first: stop at the first one still young.
            while q
                .front()
                .is_some_and(|i| i.tx.is_closed() || i.since.elapsed() >= self.key.idle_timeout)
            {
                q.pop_front();
            }
        }
        if let Ok(mut c) = self.conns.lock() {
            c.retain(|(_, since)| since.elapsed() < self.key.idle_timeout);
        }
    }

    /// The most recently used idle raw connection that is neither expired nor closed by the
    /// server. A pooled socket is not polled; if its readiness says readable, the server
    /// closed it (or sent something it should not have): it is dropped.
    pub fn take_conn(&self) -> Option<UpstreamIo> {
        loop {
            let (mut stream, since) = self.conns.lock().ok()?.pop()?;
            if since.elapsed() >= self.key.idle_timeout {
                continue;
            }
            let mut cx = Context::from_waker(std::task::Waker::noop());
            if stream.poll_read_ready(&mut cx).is_ready() {
                // Readiness may be left over from the last read: ask the socket (a TLS
                // session reads what arrived — a session ticket, say — and finds no data).
                match stream.try_read(&mut [0u8; 1]) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    _ => continue,
                }
            }
            return Some(stream);
        }
    }

    /// Returns a raw connection whose exchange finished cleanly.
    pub fn put_conn(&self, stream: UpstreamIo) {
        let reuse = self.reuse.load(std::sync::atomic::Ordering::Relaxed);
        if self.key.max_idle == 0 || !reuse {
            return;
        }
        if let Ok(mut c) = self.conns.lock() {
            if c.len() >= self.key.max_idle {
                c.remove(0);
            }
            c.push((stream, Instant::now()));
        }
    }

    /// The server's address.
    pub fn addr(&self) -> SocketAddr {
        self.key.addr
    }

    /// Most recently used idle connection that is neither closed nor expired.
    pub fn checkout(&self) -> Option<Sender> {
        let mut q = self.idle.lock().ok()?;
        while let Some(idle) = q.pop_back() {
            if !idle.tx.is_closed() && idle.since.elapsed() < self.key.idle_timeout {
                return Some(idle.tx);
            }
        }
        None
    }

    pub fn checkin(&self, tx: Sender) {
        let reuse = self.reuse.load(std::sync::atomic::Ordering::Relaxed);
        if tx.is_closed() || self.key.max_idle == 0 || !reuse {
            return;
        }
        if let Ok(mut q) = self.idle.lock() {
            if q.len() >= self.key.max_idle {
                q.pop_front();
            }
            q.push_back(Idle {
                tx,
                since: Instant::now(),
            });
        }
    }
}
