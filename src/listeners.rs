//! Listening sockets and their accept loops, reconciled on every reload.
//!
//! A reload first *plans*: listeners that keep their name and bind address keep their socket;
//! a listener renamed at an unchanged address takes over the old socket; only new addresses
//! are bound. Binding happens before anything is swapped, so a bind failure rejects the whole
//! reload and nothing changes (README: "reloads are all or nothing"). Removed listeners stop
//! accepting; their open connections run on.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::unix::AsyncFd;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::ListenerSpec;
use crate::metrics::ListenerStats;
use crate::proxy::Shared;

/// Creates a listening socket with SO_REUSEADDR and the configured backlog.
pub fn bind(addr: SocketAddr, backlog: u32) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.set_tcp_nodelay(true)?;
    socket.bind(&addr.into())?;
    socket.listen(backlog.min(i32::MAX as u32) as i32)?;
    TcpListener::from_std(socket.into())
}

/// An HTTP listener's connections delay the ACK of a request until the response carries it,
/// as HAProxy's do (`TCP_QUICKACK` off on its HTTP listeners; accepted connections inherit
/// it): one packet less per request on both ends. Where veer then waits for more of a
/// request (a head in pieces, a body), it turns quick ACKs back on for that connection
/// ([`crate::proxy::h1`]), so a client holding its next bytes until they are acknowledged
/// (Nagle) is not kept waiting. Other listeners acknowledge at once (the kernel's default).
fn delay_acks(l: &TcpListener, http: bool) {
    // Only a matter of packets: a kernel that refuses leaves the default.
    let _ = socket2::SockRef::from(l).set_tcp_quickack(!http);
}

struct Running {
    /// The address as configured (port 0 stays 0), to recognise an unchanged listener.
    configured: SocketAddr,
    local: SocketAddr,
    /// The listener's name as the accept loop sees it; swapped on a rename.
    name: Arc<ArcSwap<String>>,
    stop: CancellationToken,
    /// Tells this listener's connections to finish up (Connection: close, GOAWAY). A child
    /// of the process's drain token; replaced by `undrain`, so the accept loop reads it per
    /// connection.
    drain: Arc<ArcSwap<CancellationToken>>,
    /// A duplicate of the socket, for handing it to a new process in an upgrade.
    fd: std::os::fd::OwnedFd,
    stats: Arc<ListenerStats>,
    task: tokio::task::JoinHandle<()>,
}

/// The listeners currently accepting, by name.
#[derive(Default)]
pub struct ListenerSet {
    running: HashMap<String, Running>,
}

/// What a reload will do to the listeners; holds the newly bound sockets until applied.
pub struct Plan {
    /// (old name, new name) of sockets that stay.
    keep: Vec<(String, String)>,
    bind: Vec<(String, SocketAddr, TcpListener)>,
    /// Each listener's `max_connections`, by (new) name.
    limits: Vec<(String, usize)>,
}

/// A listener that could not be bound.
#[derive(Debug, thiserror::Error)]
#[error("{at}: listener {name:?} cannot bind {addr}: {source}")]
pub struct BindError {
    /// Where the listener's `bind` is written: `file:line:col`.
    pub at: String,
    pub name: String,
    pub addr: SocketAddr,
    #[source]
    pub source: io::Error,
}

impl ListenerSet {
    pub fn local_addr(&self, name: &str) -> Option<SocketAddr> {
        self.running.get(name).map(|r| r.local)
    }

    /// Binds what `specs` need that is not already open. Changes nothing on error.
    /// `inherited` holds sockets received in a binary upgrade: a listener whose name and
    /// configured address match takes its socket instead of binding.
    pub fn plan(
        &self,
        specs: &[ListenerSpec],
        backlog: u32,
        inherited: &mut HashMap<String, (SocketAddr, std::net::TcpListener)>,
    ) -> Result<Plan, BindError> {
        let mut plan = Plan {
            keep: Vec::new(),
            bind: Vec::new(),
            limits: specs.iter().map(|s| (s.name.clone(), s.max_connections)).collect(),
        };
        let mut taken: Vec<&str> = Vec::new();
        for spec in specs {
            let same = self.running.get(&spec.name).filter(|r| r.configured == spec.bind);
            let reuse = same.map(|_| spec.name.as_str()).or_else(|| {
                // A rename at a fixed address keeps the socket: no window where it is closed.
                (spec.bind.port() != 0)
                    .then(|| {
                        self.running.iter().find(|(n, r)| {
                            r.configured == spec.bind
                                && !taken.contains(&n.as_str())
                                && !specs.iter().any(|s| s.name == **n && s.bind == r.configured)
                        })
                    })
                    .flatten()
                    .map(|(n, _)| n.as_str())
            });
            match reuse {
                Some(old) => {
                    taken.push(old);
                    plan.keep.push((old.to_string(), spec.name.clone()));
                }
                None => {
                    let err = |source| BindError {
                        at: spec.bind_at.clone(),
                        name: spec.name.clone(),
                        addr: spec.bind,
                        source,
                    };
                    let l = match inherited.remove(&spec.name) {
                        Some((configured, l)) if configured == spec.bind => {
                            l.set_nonblocking(true).map_err(err)?;
                            TcpListener::from_std(l).map_err(err)?
                        }
                        _ => bind(spec.bind, backlog).map_err(err)?,
                    };
                    delay_acks(&l, spec.protocol == crate::config::Protocol::Http);
                    plan.bind.push((spec.name.clone(), spec.bind, l));
                }
            }
        }
        Ok(plan)
    }

    /// Starts the new accept loops, renames kept ones, stops the rest; returns once the
    /// removed sockets are closed. Call after the snapshot that knows the new listeners has
    /// been swapped in.
    pub async fn apply(&mut self, plan: Plan, shared: &Arc<Shared>) {
        let mut old = std::mem::take(&mut self.running);
        for (from, to) in plan.keep {
            if let Some(r) = old.remove(&from) {
                if from != to {
                    tracing::info!(from = %from, to = %to, "listener renamed");
                    r.name.store(Arc::new(to.clone()));
                }
                self.running.insert(to, r);
            }
        }
        for (name, configured, listener) in plan.bind {
            let local = listener.local_addr().unwrap_or(configured);
            let stop = shared.shutdown.child_token();
            let drain = Arc::new(ArcSwap::from_pointee(shared.drain.load().child_token()));
            let name_cell = Arc::new(ArcSwap::from_pointee(name.clone()));
            tracing::info!(listener = %name, addr = %local, "listening");
            let fd = match crate::lifecycle::keep(&listener) {
                Ok(fd) => fd,
                Err(e) => {
                    tracing::error!(listener = %name, error = %e, "cannot duplicate the socket; not serving it");
                    continue;
                }
            };
            let stats = Arc::new(ListenerStats::default());
            let task = tokio::spawn(accept_loop(
                listener,
                name_cell.clone(),
                shared.clone(),
                stop.clone(),
                drain.clone(),
                stats.clone(),
            ));
            self.running.insert(
                name,
                Running {
                    configured,
                    local,
                    name: name_cell,
                    stop,
                    drain,
                    fd,
                    stats,
                    task,
                },
            );
        }
        for (name, limit) in plan.limits {
            if let Some(r) = self.running.get(&name) {
                r.stats
                    .max_connections
                    .store(limit, std::sync::atomic::Ordering::Relaxed);
            }
        }
        for (name, r) in old {
            tracing::info!(listener = %name, addr = %r.local, "listener removed; no longer accepting");
            r.close().await;
        }
    }

    /// Counters of every listener, for `/metrics`.
    pub fn stats(&self) -> Vec<(String, Arc<ListenerStats>)> {
        self.running.iter().map(|(n, r)| (n.clone(), r.stats.clone())).collect()
    }

    /// (name, configured address, socket) of every listener, for a hand-over.
    pub fn sockets(&self) -> Vec<(String, SocketAddr, std::os::fd::BorrowedFd<'_>)> {
        use std::os::fd::AsFd;
        self.running
            .iter()
            .map(|(n, r)| (n.clone(), r.configured, r.fd.as_fd()))
            .collect()
    }

    /// After `undrain`: listeners hand new connections a fresh drain token, a child of the
    /// process's new one (connections told to close before keep their verdict).
    pub fn renew_drain(&self, shared: &Shared) {
        for r in self.running.values() {
            r.drain.store(Arc::new(shared.drain.load().child_token()));
        }
    }

    /// How many listeners are accepting.
    pub fn len(&self) -> usize {
        self.running.len()
    }

    pub fn is_empty(&self) -> bool {
        self.running.is_empty()
    }

    /// Stops every accept loop and closes the sockets.
    pub async fn close_all(&mut self) {
        for (_, r) in self.running.drain() {
            r.close().await;
        }
    }
}

impl Running {
    /// Stops accepting and closes the socket; the listener's open connections are told to
    /// finish up and run on (a removed listener drains rather than cuts).
    async fn close(self) {
        self.stop.cancel();
        self.drain.load().cancel();
        let _ = self.task.await;
    }
}

/// Accepts one connection: non-blocking, close-on-exec, not registered with the reactor.
async fn accept(listener: &AsyncFd<std::net::TcpListener>) -> io::Result<(std::net::TcpStream, SocketAddr)> {
    use rustix::net::{acceptfrom_with, SocketFlags};
    loop {
        let mut ready = listener.readable().await?;
        match ready.try_io(|l| {
            Ok(acceptfrom_with(
                l.get_ref(),
                SocketFlags::NONBLOCK | SocketFlags::CLOEXEC,
            )?)
        }) {
            Ok(Ok((fd, Some(addr)))) => {
                let peer = SocketAddr::try_from(addr).map_err(|_| io::Error::from(io::ErrorKind::InvalidData))?;
                return Ok((fd.into(), peer));
            }
            // No address: not a TCP peer (cannot happen on a TCP listener); the socket closes.
            Ok(Ok((_, None))) => return Err(io::ErrorKind::InvalidData.into()),
            Ok(Err(e)) => return Err(e),
            // Nothing left to accept: readiness cleared, wait again.
            Err(_would_block) => {}
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    name: Arc<ArcSwap<String>>,
    shared: Arc<Shared>,
    stop: CancellationToken,
    drain: Arc<ArcSwap<CancellationToken>>,
    stats: Arc<ListenerStats>,
) {
    // tokio's `accept` registers every connection with the reactor; veer accepts itself so
    // that a plain HTTP connection is registered only once it has to wait (see
    // `crate::stream::Stream::Fresh`).
    // (`AsyncFd::with_interest` is deprecated because a generic `T` could close or swap
    // its descriptor while registered; this one owns its listener, which stays open until
    // the `AsyncFd` is dropped. The replacement is `unsafe`, which this crate forbids.)
    #[allow(deprecated)]
    let watched = listener
        .into_std()
        .and_then(|l| AsyncFd::with_interest(l, tokio::io::Interest::READABLE));
    let listener = match watched {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "cannot watch the listening socket; not serving it");
            return;
        }
    };
    loop {
        // At `max_connections`: stop accepting (clients wait in the backlog) until one of
        // this listener's connections closes. No polling: the closing connection wakes us.
        loop {
            use std::sync::atomic::Ordering::Relaxed;
            let limit = stats.max_connections.load(Relaxed);
            if limit == 0 || stats.active.load(Relaxed) < limit {
                break;
            }
            // At the limit: register for the wake-up, then look again (a connection may have
            // closed in between), then wait.
            let released = stats.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            if stats.active.load(Relaxed) < limit {
                break;
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = released => {}
            }
        }
        let accepted = tokio::select! {
            _ = stop.cancelled() => return,
            r = accept(&listener) => r,
        };
        match accepted {
            Ok((stream, peer)) => {
                // TCP_NODELAY is inherited from the listening socket (see `bind`).
                let open = crate::proxy::OpenConn::new(&shared, &stats);
                crate::proxy::spawn(
                    stream,
                    peer,
                    name.load_full(),
                    shared.clone(),
                    (**drain.load()).clone(),
                    open,
                );
            }
            Err(e) => {
                // Out of descriptors or memory: the connection waits in the backlog, so
                // back off (as HAProxy pauses its listeners) instead of spinning and
                // flooding the log; other errors (the client reset first) retry at once.
                let local = crate::ratelimit::is_local_resource_error(&e);
                crate::warn_limited!(crate::ratelimit::Kind::Accept, error = %e, "accept failed");
                if local {
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            }
        }
    }
}
