//! Upstream connections: [`open`] connects within the backend's timeout, sends the PROXY
//! header when asked, and does the TLS handshake when the backend speaks TLS; HTTP/2
//! backends get one multiplexed session per server ([`h2_session`], [`send_h2`]); mirrored
//! copies go through a hyper HTTP/1.1 client session on a per-server keep-alive pool.
//!
//! Hand-written rather than hyper-util's legacy client because the proxy needs what that
//! client hides: a connect failure must hand the request back untouched so it can be retried
//! on another server, the pool must be per server (so draining can close a server's idle
//! connections), and a stale pooled connection must be detected without losing the request
//! (`try_send_request` returns it when it was never written).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;

pub use crate::state::pool::{BoxError, H2Sender, Pool, Sender, UpstreamRequestBody};
use crate::state::ActiveGuard;

/// Why an upstream exchange failed.
#[derive(Debug)]
pub enum SendError {
    /// No connection could be made; the request was not sent and is handed back.
    Connect(io::Error, Box<Request<UpstreamRequestBody>>),
    /// The connection broke after the request was (at least partly) written.
    Protocol(hyper::Error),
}

/// Sends `req` on a pooled connection, or a new one. Returns the response, the
/// connection (which goes back to the pool when the response body ends, see
/// [`UpstreamBody`]) and, for a new connection, how long connecting took.
pub async fn send(
    pool: &Arc<Pool>,
    mut req: Request<UpstreamRequestBody>,
    backend: &crate::snapshot::Backend,
) -> Result<(Response<Incoming>, Sender, Option<Duration>), SendError> {
    while let Some(mut tx) = pool.checkout() {
        // A pooled connection finishes its previous exchange before it is ready.
        if tx.ready().await.is_err() {
            continue;
        }
        // The upstream may close an idle keep-alive connection just as it is reused (its
        // keep-alive timeout racing ours). A request that is safe to repeat and has no
        // body is then sent again on a new connection instead of failing the client.
        let again = replayable(&req).then(|| head_copy(&req));
        match tx.try_send_request(req).await {
            Ok(resp) => return Ok((resp, tx, None)),
            Err(mut e) => match (e.take_message(), again) {
                // Never written (the server closed the idle connection): try another.
                (Some(r), _) => req = r,
                (None, Some(copy)) => {
                    tracing::debug!(addr = %pool.addr(), error = %e.into_error(), "reused connection failed; retrying");
                    req = copy;
                    break;
                }
                (None, None) => return Err(SendError::Protocol(e.into_error())),
            },
        }
    }
    let connecting = Instant::now();
    let mut tx = match connect(pool.addr(), backend).await {
        Ok(tx) => tx,
        Err(e) => return Err(SendError::Connect(e, Box::new(req))),
    };
    let connected = connecting.elapsed();
    match tx.try_send_request(req).await {
        Ok(resp) => Ok((resp, tx, Some(connected))),
        Err(mut e) => match e.take_message() {
            Some(r) => Err(SendError::Connect(io::Error::other(e.into_error()), Box::new(r))),
            None => Err(SendError::Protocol(e.into_error())),
        },
    }
}

/// Sends `req` on the server's HTTP/2 session (`protocol = "h2"` / `"h2c"`): the request
/// becomes absolute-form (`:scheme`, `:authority` from its Host), streams are multiplexed
/// on one connection. A request the pooled session never took (it had just closed) goes on
/// a new session.
pub async fn send_h2(
    server: &crate::snapshot::Server,
    backend: &crate::snapshot::Backend,
    mut req: Request<UpstreamRequestBody>,
) -> Result<(Response<Incoming>, Option<Duration>), SendError> {
    let scheme = if backend.tls.is_some() { "https" } else { "http" };
    let authority = req
        .headers_mut()
        .remove(http::header::HOST)
        .and_then(|h| h.to_str().ok().map(str::to_string))
        .unwrap_or_else(|| server.addr.to_string());
    let pq = req.uri().path_and_query().map_or("/", |p| p.as_str()).to_string();
    match http::Uri::builder()
        .scheme(scheme)
        .authority(authority)
        .path_and_query(pq)
        .build()
    {
        Ok(uri) => *req.uri_mut() = uri,
        Err(e) => {
            return Err(SendError::Connect(
                io::Error::new(io::ErrorKind::InvalidInput, e),
                Box::new(req),
            ))
        }
    }
    *req.version_mut() = http::Version::HTTP_2;
    let mut retried = false;
    loop {
        let (mut tx, connected) = match h2_session(server.addr, &server.pool, backend).await {
            Ok(s) => s,
            Err(e) => return Err(SendError::Connect(e, Box::new(req))),
        };
        match tx.try_send_request(req).await {
            Ok(resp) => return Ok((resp, connected)),
            Err(mut e) => match e.take_message() {
                Some(r) if !retried => {
                    server.pool.h2.lock().await.take();
                    retried = true;
                    req = r;
                }
                Some(r) => return Err(SendError::Connect(io::Error::other(e.into_error()), Box::new(r))),
                None => return Err(SendError::Protocol(e.into_error())),
            },
        }
    }
}

/// Idempotent (RFC 9110 §9.2.2) and bodiless: sending it twice is harmless.
fn replayable(req: &Request<UpstreamRequestBody>) -> bool {
    use http::Method;
    matches!(
        *req.method(),
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    ) && req.body().is_end_stream()
}

/// The request line and headers of `req`, with an empty body.
fn head_copy(req: &Request<UpstreamRequestBody>) -> Request<UpstreamRequestBody> {
    let mut copy = Request::new(crate::state::pool::no_body());
    *copy.method_mut() = req.method().clone();
    *copy.uri_mut() = req.uri().clone();
    *copy.version_mut() = req.version();
    *copy.headers_mut() = req.headers().clone();
    copy
}

/// Opens a connection to `addr` for `backend`, within its connect timeout: TCP, then the
/// PROXY header when the backend sends one (`client`: the client's address and the
/// address it connected to), then the TLS handshake when the backend speaks TLS.
pub async fn open(
    addr: SocketAddr,
    backend: &crate::snapshot::Backend,
    client: Option<(SocketAddr, SocketAddr)>,
) -> io::Result<crate::stream::UpstreamIo> {
    use crate::stream::Stream;
    use tokio::io::AsyncWriteExt;
    let opening = async {
        let mut tcp = TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        if let (Some(version), Some((from, to))) = (backend.send_proxy, client) {
            tcp.write_all(&crate::proxy_header::build(version, from, to)).await?;
        }
        let Some(tls) = &backend.tls else {
            return Ok(Stream::Plain(tcp));
        };
        let name = match &tls.sni {
            Some(sni) => rustls_pki_types::ServerName::try_from(sni.clone())
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?,
            None => rustls_pki_types::ServerName::IpAddress(addr.ip().into()),
        };
        let session = tokio_rustls::TlsConnector::from(tls.config.clone())
            .connect(name, tcp)
            .await
            .map_err(|e| io::Error::other(crate::error::TlsFailure(e)))?;
        Ok(Stream::Tls(Box::new(session)))
    };
    tokio::time::timeout(backend.connect_timeout, opening)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))?
}

/// The server's HTTP/2 session (`protocol = "h2"` or `"h2c"`): the pooled one while it is
/// open, else a new connection (its connect time returned). The session's connection runs
/// on a task of its own until it ends.
pub async fn h2_session(
    addr: SocketAddr,
    pool: &Pool,
    backend: &crate::snapshot::Backend,
) -> io::Result<(H2Sender, Option<Duration>)> {
    let mut slot = pool.h2.lock().await;
    if let Some(tx) = slot.as_ref().filter(|tx| !tx.is_closed()) {
        return Ok((tx.clone(), None));
    }
    let started = std::time::Instant::now();
    let io = open(addr, backend, None).await?;
    let mut builder = hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new());
    // Keep idle sessions alive through NATs and notice dead servers.
    builder
        .timer(hyper_util::rt::TokioTimer::new())
        .keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(10))
        .adaptive_window(true);
    let (tx, conn) = builder.handshake(TokioIo::new(io)).await.map_err(io::Error::other)?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(%addr, error = %e, "upstream HTTP/2 connection ended");
        }
    });
    *slot = Some(tx.clone());
    Ok((tx, Some(started.elapsed())))
}

/// Opens a connection (TLS when the backend says so) and an HTTP/1.1 client session on it.
async fn connect(addr: SocketAddr, backend: &crate::snapshot::Backend) -> io::Result<Sender> {
    let stream = open(addr, backend, None).await?;
    let (tx, conn) = http1::Builder::new()
        .handshake(TokioIo::new(stream))
        .await
        .map_err(io::Error::other)?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(%addr, error = %e, "upstream connection ended");
        }
    });
    Ok(tx)
}

/// An upstream response body on its way to the client. While it streams it holds the
/// server's active-request count and counts its bytes; when it ends cleanly it returns its
/// connection to the pool. Dropped early (client gone), the connection is closed instead,
/// since a half-read response cannot be reused. Either way the request's duration is
/// recorded and its access-log line written.
pub struct UpstreamBody<B: Body = Incoming> {
    body: B,
    conn: Option<(Sender, Arc<Pool>)>,
    done: bool,
    bytes: u64,
    end: RequestEnd,
    active: ActiveGuard,
    /// Longest wait for the next frame; zero = none.
    read_timeout: Duration,
    /// Armed on the first wait for the server, reset by every frame.
    stall: Option<Pin<Box<tokio::time::Sleep>>>,
    /// The server's session token as the response started: cancelled by `shutdown
    /// sessions` or the drain deadline.
    sessions: Arc<tokio_util::sync::CancellationToken>,
    /// Waits on `sessions`; created on the body's first wait, so quick responses never pay.
    cut: Option<Pin<Box<tokio_util::sync::WaitForCancellationFutureOwned>>>,
    /// Why the body stopped early, when it was this side's doing (a read timeout, a cut, a
    /// broken server); dropped early otherwise, the client went away.
    failed: Option<crate::error::Termination>,
}

/// What to record when a proxied response finishes.
pub struct RequestEnd {
    pub start: std::time::Instant,
    pub duration: ::metrics::Histogram,
    /// The access-log line to complete, when logging is on.
    pub log: Option<Box<crate::access_log::PendingLog>>,
    /// Whether the request adds to its server's `show stat` figures (mirrored copies do
    /// not); false too once recorded.
    pub counted: bool,
    /// Queue, connect and response-head times, for the server's averages.
    pub timers: crate::access_log::Timers,
    /// Bytes written to the server, and the response head's bytes read from it.
    pub sent: u64,
    pub head: u64,
}

/// Where a proxied request went, for its access-log line: names, times, and HAProxy's
/// counts and persistence flags as the response starts.
pub fn log_upstream(
    backend: &crate::snapshot::Backend,
    server: &crate::snapshot::Server,
    route: Arc<str>,
    (via, retries): (crate::balance::Via, usize),
    timers: crate::access_log::Timers,
) -> crate::access_log::Upstream {
    use std::sync::atomic::Ordering::Relaxed;
    let returning = via == crate::balance::Via::Sticky;
    crate::access_log::Upstream {
        route,
        backend: backend.name.clone(),
        group: server.group.clone(),
        server: server.name.clone(),
        timers,
        // Less this request itself.
        counts: crate::access_log::Counts {
            backend: (backend.servers().map(|s| s.state.active_requests.load(Relaxed) as u64))
                .sum::<u64>()
                .saturating_sub(1),
            server: (server.state.active_requests.load(Relaxed) as u64).saturating_sub(1),
            retries: retries as u64,
            backend_queue: backend.state.queue.len() as u64,
            ..Default::default()
        },
        // HAProxy's `cookie … insert`: a returning client's valid cookie and nothing
        // inserted (`VN`), or none and ours inserted (`NI`).
        persist: match (backend.sticky.is_some(), returning) {
            (false, _) => *b"--",
            (true, true) => *b"VN",
            (true, false) => [b'N', if server.set_cookie.is_some() { b'I' } else { b'N' }],
        },
    }
}

impl RequestEnd {
    /// What to record for a response from `server` to a request that started at `start`.
    pub fn new(
        start: std::time::Instant,
        server: &crate::snapshot::Server,
        timers: crate::access_log::Timers,
        log: Option<Box<crate::access_log::PendingLog>>,
    ) -> Self {
        RequestEnd {
            start,
            duration: server.metrics.request.clone(),
            log,
            counted: true,
            timers,
            sent: 0,
            head: 0,
        }
    }

    /// Records the finished request to `server`, which ended as `ended` after `bytes` of
    /// its body: its duration, the server's figures and its access-log line. Once; later
    /// calls do nothing.
    pub fn record(&mut self, server: &crate::state::ServerState, bytes: u64, ended: crate::error::Termination) {
        if !std::mem::take(&mut self.counted) {
            return;
        }
        let elapsed = self.start.elapsed();
        self.duration.record(elapsed);
        server
            .stats
            .finished(self.sent, self.head + bytes, &self.timers, elapsed);
        server.stats.ended(ended);
        if let Some(log) = self.log.take() {
            log.finish(bytes, elapsed, ended);
        }
    }
}

impl<B: Body> UpstreamBody<B> {
    /// `conn` is `None` when the body itself looks after its connection (the HTTP/1
    /// engine's raw response body).
    pub fn new(
        body: B,
        conn: Option<(Sender, Arc<Pool>)>,
        active: ActiveGuard,
        end: RequestEnd,
        read_timeout: Duration,
    ) -> Self {
        UpstreamBody {
            body,
            conn,
            done: false,
            bytes: 0,
            end,
            read_timeout,
            stall: None,
            sessions: active.state().sessions(),
            active,
            cut: None,
            failed: None,
        }
    }
}

/// Why a response body stopped early.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error(transparent)]
    Upstream(#[from] hyper::Error),
    /// The upstream connection failed or broke its framing.
    #[error("upstream response body: {0}")]
    Io(#[from] io::Error),
    /// `shutdown sessions`, or the server's drain deadline.
    #[error("response cut: the server's sessions were shut down")]
    Cut,
    /// The server sent no byte of the body for `read_timeout`.
    #[error("response cut: the server sent nothing for read_timeout")]
    ReadTimeout,
}

impl<B> Body for UpstreamBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BodyError>,
{
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        let res = Pin::new(&mut this.body).poll_frame(cx);
        match &res {
            Poll::Ready(None) => this.done = true,
            Poll::Ready(Some(Ok(frame))) => {
                this.bytes += frame.data_ref().map_or(0, |d| d.len() as u64);
                if let Some(stall) = this.stall.as_mut() {
                    stall.as_mut().reset(Instant::now() + this.read_timeout);
                }
            }
            Poll::Ready(Some(Err(_))) => {}
            // Only a response that waits on its server (a stream, a long poll, a stalled
            // server) can outlive a cut or stall, so only then are the server's session
            // token and the read timer armed.
            Poll::Pending => {
                let cut = this
                    .cut
                    .get_or_insert_with(|| Box::pin((*this.sessions).clone().cancelled_owned()));
                if cut.as_mut().poll(cx).is_ready() {
                    this.failed = Some(crate::error::Termination::KILLED);
                    return Poll::Ready(Some(Err(BodyError::Cut)));
                }
                if !this.read_timeout.is_zero() {
                    let timeout = this.read_timeout;
                    let stall = this.stall.get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                    if stall.as_mut().poll(cx).is_ready() {
                        let state = this.active.state();
                        state.read_timeouts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        crate::warn_limited!(
                            crate::ratelimit::Kind::ReadTimeout,
                            addr = %this.conn.as_ref().map_or_else(String::new, |(_, p)| p.addr().to_string()),
                            "response body stalled past read_timeout; cutting the client connection"
                        );
                        this.failed = Some(crate::error::Termination::SERVER_TIMEOUT);
                        return Poll::Ready(Some(Err(BodyError::ReadTimeout)));
                    }
                }
            }
        }
        let res = res.map(|f| f.map(|r| r.map_err(Into::into)));
        if let Poll::Ready(Some(Err(_))) = &res {
            this.failed = Some(crate::error::Termination::SERVER_ABORT);
        }
        res
    }

    fn is_end_stream(&self) -> bool {
        self.done || self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl<B: Body> Drop for UpstreamBody<B> {
    fn drop(&mut self) {
        let complete = self.done || self.body.is_end_stream();
        if complete {
            if let Some((tx, pool)) = self.conn.take() {
                pool.checkin(tx);
            }
        }
        self.active
            .state()
            .response_bytes
            .fetch_add(self.bytes, std::sync::atomic::Ordering::Relaxed);
        let ended = match self.failed {
            _ if complete => crate::error::Termination::COMPLETE,
            Some(why) => why,
            None => crate::error::Termination::CLIENT_ABORT,
        };
        self.end.record(self.active.state(), self.bytes, ended);
    }
}
