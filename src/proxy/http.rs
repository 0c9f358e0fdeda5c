//! The HTTP/2 data path (h2c, prior knowledge, and h2 by ALPN): hyper's HTTP/2 server
//! downstream, each request routed by one snapshot, its upstream head written from the
//! fields as they arrived by the HTTP/1 engine's writer, and sent on a pooled upstream
//! connection by the engine's client ([`super::h1::client`]; an HTTP/2 server gets the
//! request those bytes describe), bodies streamed both ways. Must not know the control
//! plane: it is handed a [`Shared`]. HTTP/1 clients are served by veer's own engine
//! ([`super::h1`]), which hands a connection here when it opens with the preface.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::server::conn::http2;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

use super::body::{ClientBody, Upload};
use super::buf::Out;
use super::h1::client::{self, RawBody, SendError};
use super::h1::codec::IpText;
use super::h1::{request, to_h2};
use super::shared::Shared;
use super::streams::{Driven, Streams};
use super::{headers, mirror};
use crate::access_log::{LogHead, PendingLog, Timers, TlsFacts};
use crate::balance::{self, Via};
use crate::clock::now_ms;
use crate::error::ProxyError;
use crate::metrics::ListenerStats;
use crate::snapshot::{Backend, ListenerOpts, ListenerRoutes, Server};
use crate::state::pool::no_body;
use crate::state::Counter;
use crate::stream::ClientIo;
use crate::upstream::{BodyError, RequestEnd, UpstreamBody};

/// The HTTP/2 server for one connection, with explicit limits (design §11: the reset-flood
/// advisories); its streams run in the connection's own task (see [`super::streams`]).
/// HTTP/1 connections never get here: veer's own engine (`super::h1`) serves them.
/// `max_header_list_size`: `[runtime] max_header_size` (HTTP/2 counts decoded field
/// bytes plus 32 per field, close enough to the HTTP/1 head it bounds).
fn builder(streams: Streams, max_header_size: usize) -> http2::Builder<Streams> {
    let mut b = http2::Builder::new(streams);
    b.max_concurrent_streams(256)
        .max_header_list_size(max_header_size.try_into().unwrap_or(u32::MAX))
        .max_pending_accept_reset_streams(Some(64))
        // A proxy passes the server's Date on and makes none up (RFC 9110 §6.6.1 asks it
        // of origin servers), as veer's HTTP/1 engine and HAProxy do.
        .auto_date_header(false);
    b
}

/// Per-connection context captured by the request handler.
struct Conn {
    listener: Arc<String>,
    shared: Arc<Shared>,
    peer: SocketAddr,
    /// HTTP/2 streams open now (requests whose response body is still going).
    streams: AtomicUsize,
    /// `now_ms()` when the last stream closed (or the connection opened).
    idle_since: AtomicU64,
    stats: Arc<ListenerStats>,
    opts: Arc<ListenerOpts>,
    tls: Option<Arc<TlsFacts>>,
    /// The address the client connected to (for a PROXY header sent upstream).
    local: SocketAddr,
    /// `peer`'s address as X-Forwarded-For writes it: formatted once for every stream.
    client: IpText,
}

/// Holds one HTTP/2 stream open in its connection's count, until the response body is
/// dropped (sent, or abandoned by the client).
pub struct OpenStream(Arc<Conn>);

impl OpenStream {
    fn new(conn: &Arc<Conn>) -> Self {
        conn.streams.fetch_add(1, Relaxed);
        OpenStream(conn.clone())
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        if self.0.streams.fetch_sub(1, Relaxed) == 1 {
            self.0.idle_since.store(now_ms(), Relaxed);
        }
    }
}

/// Serves one client connection until it ends, the process stops (cut), or it is told to
/// drain: HTTP/2 then gets GOAWAY and finishes its streams; HTTP/1.1 answers its next
/// response with `Connection: close` (see [`handle`]) — closing an idle keep-alive
/// connection outright would race a request the client may be sending at that moment.
/// A connection that has sent no request, or an HTTP/2 connection with no open stream, is
/// told to go away (GOAWAY) after `idle` (zero = never); idle HTTP/1.1 keep-alives are
/// closed by `header_timeout`.
/// `prefix`: bytes already read from the connection (the HTTP/1 engine read them and saw
/// the HTTP/2 preface); they are served first.
/// `c`: the connection as the HTTP/1 engine was given it (its open-connection guard is
/// the caller's to hold).
pub async fn serve(mut stream: ClientIo, prefix: Vec<u8>, c: &super::h1::conn::Conn) {
    // A connection lives long under HTTP/2: registered with the reactor from the start.
    if stream.register().is_err() {
        return;
    }
    let (peer, shared, drain, idle) = (c.peer, c.shared.clone(), c.drain.clone(), c.opts.idle_timeout);
    let conn = Arc::new(Conn {
        listener: c.listener.clone(),
        shared: shared.clone(),
        peer,
        streams: AtomicUsize::new(0),
        idle_since: AtomicU64::new(now_ms()),
        stats: c.open.listener.clone(),
        opts: c.opts.clone(),
        tls: c.tls.clone(),
        local: stream.local_addr().unwrap_or(peer),
        client: IpText::new(peer.ip()),
    });
    let ctx = conn.clone();
    // Each stream's whole exchange in one allocation: hyper moves a stream's future several
    // times before it first runs (into its stream state, then into the executor), and a
    // pointer moves cheaply where the exchange's state is kilobytes. The box comes first
    // and the future is written into it: `Box::pin(handle(..))` builds it on the stack and
    // copies all of it.
    let svc = service_fn(move |req| Box::into_pin(Box::write(Box::new_uninit(), handle(ctx.clone(), req))));
    // A client that connects and sends nothing never reaches hyper's header timer (the
    // HTTP/1-or-2 detection waits for bytes): bound that wait too.
    // (`peek` waits for a byte or EOF; readiness alone can be reported early.)
    // (A TLS client chose h2 by ALPN in a handshake bounded already.)
    if let (true, ClientIo::Plain(tcp)) = (prefix.is_empty(), &stream) {
        if tokio::time::timeout(shared.header_timeout, tcp.peek(&mut [0u8; 1]))
            .await
            .is_err()
        {
            tracing::debug!(%peer, "client sent nothing; closing");
            return;
        }
    }
    // Where the socket is parked when hyper lets go of it after a GOAWAY (see `linger`).
    let parked = Arc::new(Parked::default());
    let io = Rewind {
        prefix,
        at: 0,
        inner: Some(stream),
        parked: parked.clone(),
    };
    // hyper's HTTP/2 server itself, not hyper-util's version-detecting one: that first reads
    // the version, and a graceful shutdown in that state ends the connection without serving
    // the request already sent (a drain racing a new h2c connection: found by
    // tests/scenarios.rs's upgrade scenario as "stream closed because of a broken pipe" in
    // the client). CONNECT is refused on this path anyway.
    let streams = Streams::default();
    let builder = builder(streams.clone(), shared.head_limits.size);
    let mut connection = Driven::new(builder.serve_connection(TokioIo::new(io), svc), streams);
    let mut told = false;
    // The idle watch ends once the connection is known to be HTTP/1.1 or has been told.
    let mut watch_idle = !idle.is_zero();
    let mut wait = idle;
    // After an idle GOAWAY: when to close a connection whose client never completes the
    // graceful shutdown (h2 waits for the client's PING acknowledgement).
    let mut close_at: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            res = &mut connection => {
                if let Err(e) = res {
                    tracing::debug!(%peer, error = %e, "client connection ended with an error");
                    return;
                }
                drop(connection);
                if let Some(io) = parked.take() {
                    tokio::select! {
                        _ = linger(io) => {}
                        _ = shared.shutdown.cancelled() => {}
                    }
                }
                return;
            }
            _ = drain.cancelled(), if !told => {
                told = true;
                parked.want();
                connection.conn().graceful_shutdown();
            }
            _ = tokio::time::sleep(wait), if watch_idle => {
                let quiet = Duration::from_millis(now_ms().saturating_sub(conn.idle_since.load(Relaxed)));
                if conn.streams.load(Relaxed) > 0 {
                    wait = idle;
                } else if quiet >= idle {
                    tracing::debug!(%peer, "idle connection; GOAWAY");
                    watch_idle = false;
                    parked.want();
                    connection.conn().graceful_shutdown();
                    close_at = Some(tokio::time::Instant::now() + IDLE_CLOSE_GRACE);
                } else {
                    wait = idle - quiet;
                }
            }
            _ = tokio::time::sleep_until(close_at.unwrap_or_else(tokio::time::Instant::now)), if close_at.is_some() => {
                if conn.streams.load(Relaxed) == 0 {
                    tracing::debug!(%peer, "idle connection did not finish its GOAWAY; closing");
                    return;
                }
                // A stream opened as the GOAWAY went out: the graceful shutdown finishes it.
                close_at = None;
            }
            _ = shared.shutdown.cancelled() => return,
        }
    }
}

/// How long an idle connection told GOAWAY has to close by itself before it is closed.
const IDLE_CLOSE_GRACE: Duration = Duration::from_secs(1);

/// The longest a connection is kept reading after its graceful close (see [`linger`]).
const LINGER: Duration = Duration::from_secs(2);

/// The client socket, handed back by [`Rewind`]'s drop once a GOAWAY was sent.
#[derive(Default)]
struct Parked {
    wanted: std::sync::atomic::AtomicBool,
    io: std::sync::Mutex<Option<ClientIo>>,
}

impl Parked {
    /// From now on, the socket is parked here instead of closed when hyper drops it.
    fn want(&self) {
        self.wanted.store(true, Relaxed);
    }

    fn take(&self) -> Option<ClientIo> {
        self.io.lock().ok()?.take()
    }
}

/// After a graceful close (GOAWAY, then hyper's FIN once the last stream finished), reads
/// and discards what the client still sends until it closes too, for at most [`LINGER`].
/// A client may open a stream in the moment before it reads the final GOAWAY; closing the
/// socket with those bytes unread makes the kernel reset the connection, which can discard
/// the GOAWAY still unread in the client's buffer, and the client sees a broken connection
/// instead of the refusal that tells it to retry the stream (RFC 9113 §6.8). nginx's
/// lingering close does the same for HTTP/1.
async fn linger(mut io: ClientIo) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _ = io.shutdown().await;
    // On the heap, and only now: a buffer in this future would sit in every HTTP/2
    // connection's task for the connection's whole life (its future holds this one's
    // state), 4 kB each.
    let mut sink = vec![0u8; 4096];
    let _ = tokio::time::timeout(LINGER, async {
        while matches!(io.read(&mut sink).await, Ok(n) if n > 0) {}
    })
    .await;
}

async fn handle(conn: Arc<Conn>, req: Request<Incoming>) -> Result<Response<StreamBody>, Infallible> {
    let conn = &conn;
    let start = Instant::now();
    let stream = OpenStream::new(conn);
    // The client's X-Request-Id is forwarded as it came; one is made up when it sent none.
    let mut generated = [0u8; 32];
    let sent_id = req.headers().get(&X_REQUEST_ID).map(HeaderValue::as_bytes);
    if sent_id.is_none() {
        headers::hex(&mut generated, &fastrand::u128(..).to_be_bytes());
    }
    let ids = Ids {
        new_request_id: sent_id.is_none().then_some(&generated[..]),
        trace: headers::traceparent(req.headers().get(&TRACEPARENT).map(HeaderValue::as_bytes)),
    };
    let request_id = std::str::from_utf8(sent_id.unwrap_or(&generated)).unwrap_or("-");
    let grpc = req
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    let head = conn.shared.access_log.as_ref().map(|log| {
        let host = request_host(&req).unwrap_or("");
        Arc::new(
            LogHead::new(log, conn.peer, &conn.listener, &req, host, request_id)
                .with_trace(&ids.trace)
                .with_tls(conn.tls.as_ref())
                .with_arrival(
                    Duration::ZERO,
                    conn.shared.current_conns.load(Relaxed),
                    conn.stats.active.load(Relaxed),
                ),
        )
    });
    if conn.opts.redirect_https {
        return Ok(redirect(conn, &req, head.as_deref(), start).map(|body| StreamBody { body, _open: stream }));
    }
    let mut resp = match forward(conn, req, &ids, start, head.clone()).await {
        Ok(resp) => resp,
        Err(e) => {
            tracing::debug!(peer = %conn.peer, side = ?e.side(), error = %e, "synthetic response");
            conn.stats.errors[e.reason_index()].fetch_add(1, Relaxed);
            let resp = if grpc { synthetic_grpc(&e) } else { synthetic(&e) };
            if let Some(head) = head {
                let bytes = resp.body().size_hint().exact().unwrap_or(0);
                head.refused(&e, (0, bytes), start.elapsed(), None);
            }
            resp
        }
    };
    conn.stats.responses[crate::state::status_class(resp.status().as_u16())].fetch_add(1, Relaxed);
    if let Some(v) = &conn.opts.hsts {
        resp.headers_mut()
            .entry(header::STRICT_TRANSPORT_SECURITY)
            .or_insert_with(|| v.clone());
    }
    Ok(resp.map(|body| StreamBody { body, _open: stream }))
}

/// `redirect_https`: 308 to the same URL on https.
fn redirect(conn: &Conn, req: &Request<Incoming>, head: Option<&LogHead>, start: Instant) -> Response<ProxyBody> {
    let host = request_host(req)
        .map(crate::routing::normalize_host)
        .unwrap_or_default();
    let pq = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let location = HeaderValue::from_str(&headers::https_location(&host, pq)).unwrap_or(HeaderValue::from_static("/"));
    conn.stats.responses[crate::state::status_class(308)].fetch_add(1, Relaxed);
    if let Some(head) = head {
        head.answered(308, start.elapsed());
    }
    let mut resp = Response::new(ProxyBody::Synthetic(None));
    *resp.status_mut() = StatusCode::PERMANENT_REDIRECT;
    resp.headers_mut().insert(header::LOCATION, location);
    resp
}

static X_REQUEST_ID: header::HeaderName = header::HeaderName::from_static("x-request-id");
static TRACEPARENT: header::HeaderName = header::HeaderName::from_static("traceparent");

/// What veer adds to every request it forwards: a request id when the client sent none,
/// and the `traceparent` of its hop.
struct Ids<'a> {
    new_request_id: Option<&'a [u8]>,
    trace: headers::TraceParent,
}

/// The host the request is for: the URI authority (HTTP/2, absolute-form) or Host.
fn request_host(req: &Request<Incoming>) -> Option<&str> {
    match req.uri().authority() {
        Some(a) => Some(a.as_str()),
        None => req.headers().get(header::HOST).and_then(|h| h.to_str().ok()),
    }
}

/// The one host a request is routed by and forwarded with (RFC 9112 §3.2, §3.2.2): the
/// request-target's authority when it has one (absolute-form, HTTP/2), else the single
/// Host header. More than one Host, none on HTTP/1.1, or a value that is not
/// `host[:port]` is a bad request.
fn destination(req: &Request<Incoming>) -> Result<Option<&str>, ProxyError> {
    let mut hosts = req.headers().get_all(header::HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err(ProxyError::BadRequest("more than one Host header"));
    }
    if host.is_some_and(|h| !headers::valid_host(h.as_bytes())) {
        return Err(ProxyError::BadRequest("invalid Host header"));
    }
    if let Some(a) = req.uri().authority() {
        if !headers::valid_host(a.as_str().as_bytes()) {
            return Err(ProxyError::BadRequest("invalid request-target authority"));
        }
        return Ok(Some(a.as_str()));
    }
    if host.is_none() && req.version() == Version::HTTP_11 {
        return Err(ProxyError::BadRequest("HTTP/1.1 request without Host"));
    }
    // A valid host is ASCII.
    Ok(host.and_then(|h| h.to_str().ok()))
}

async fn forward(
    conn: &Conn,
    req: Request<Incoming>,
    ids: &Ids<'_>,
    start: Instant,
    head: Option<Arc<LogHead>>,
) -> Result<Response<ProxyBody>, ProxyError> {
    if req.method() == Method::CONNECT {
        return Err(ProxyError::BadRequest("CONNECT is not supported"));
    }
    let sent_host = destination(&req)?.unwrap_or("");
    let host = crate::routing::normalize_host(sent_host);
    let path_and_query = req.uri().path_and_query().map_or("/", |p| p.as_str());
    // Route with exactly one snapshot; keep only the backend for the rest of the exchange.
    let (backend, route, filters, target) = {
        let snap = conn.shared.snapshot.load();
        let Some(ListenerRoutes::Http(table)) = snap.listeners.get(conn.listener.as_str()).map(|l| &l.routes) else {
            return Err(ProxyError::NoRoute);
        };
        let route = table
            .find(&host, req.method().as_str(), path_and_query, req.headers())
            .ok_or(ProxyError::NoRoute)?;
        (
            snap.backends[route.backend].clone(),
            route.name.clone(),
            route.filters.clone(),
            route.new_target(path_and_query),
        )
    };
    if let Some(r) = filters.as_deref().and_then(|f| f.redirect.as_ref()) {
        let location = headers::redirect_location(
            r,
            conn.tls.is_some(),
            sent_host,
            target.as_deref().unwrap_or(path_and_query),
        );
        if let Some(head) = head {
            head.answered(r.status, start.elapsed());
        }
        let mut resp = Response::new(ProxyBody::Synthetic(None));
        *resp.status_mut() = StatusCode::from_u16(r.status).unwrap_or(StatusCode::FOUND);
        resp.headers_mut().insert(
            header::LOCATION,
            HeaderValue::from_str(&location).unwrap_or(HeaderValue::from_static("/")),
        );
        return Ok(resp);
    }
    let max_body = conn.opts.max_body;
    if max_body > 0 && req.body().size_hint().lower() > max_body {
        // The length is known: refused before any server is contacted.
        return Err(ProxyError::BodyTooLarge);
    }
    // A bodiless request (most of them) has no upload to follow.
    let bodiless = req.body().is_end_stream();
    let method = req.method().as_str();
    let h2 = backend.protocol.is_h2();
    // The head upstream, written once from the fields as they arrived by the HTTP/1
    // engine's writer: one set of forwarding rules for both protocols, and no field map
    // edited or copied. An HTTP/1 server gets these bytes (again on a retry); an HTTP/2
    // server, the request they describe.
    let mut out = Out::new();
    let chunked = !bodiless && !h2 && !req.headers().contains_key(header::CONTENT_LENGTH);
    let authority = req.uri().authority().map(|a| a.as_str());
    request::write_upstream_head(
        &mut out.0,
        req.headers(),
        &backend,
        &request::Rewrite {
            method,
            target: target.as_deref().unwrap_or(path_and_query),
            authority,
            host: filters
                .as_deref()
                .and_then(|f| f.rewrite.as_ref())
                .and_then(|w| w.hostname.as_deref()),
            upgrade: false,
            chunked,
            client: conn.client.as_bytes(),
            https: conn.tls.is_some(),
            new_request_id: ids.new_request_id,
            traceparent: &ids.trace,
            edits: filters.as_deref().map(|f| &f.request_headers),
        },
    );
    let affinity = request::affinity(&backend, req.headers(), conn.peer.ip());
    let replayable = bodiless && headers::idempotent(method);
    // A bodiless idempotent request can go to another server after a gateway error or a
    // broken connection (`retry_on`): its head is sent again.
    let resendable = replayable && (backend.retry_on.gateway_error || backend.retry_on.reset);
    let head_request = req.method() == Method::HEAD;
    let mirror = backend.mirror.as_ref().and_then(|_| {
        let permit = mirror::sample(&backend, req.body().size_hint().lower())?;
        let mut copy = request::mirror_copy(method, path_and_query, req.headers(), &backend);
        if let (Some(a), false) = (authority, copy.headers().contains_key(header::HOST)) {
            if let Ok(v) = HeaderValue::from_str(a) {
                copy.headers_mut().insert(header::HOST, v);
            }
        }
        Some((copy, permit))
    });
    let upload = (!bodiless).then(|| Arc::new(Upload::default()));
    // A bodiless request's (ended) body has nothing to count or time: none is kept.
    let body = match &upload {
        None => no_body(),
        Some(u) => ClientBody::new(
            req.into_body(),
            conn.stats.clone(),
            conn.shared.body_timeout,
            Some(u.clone()),
        )
        .with_max(max_body)
        .boxed_unsync(),
    };
    let mut body = Some(mirror::tee(&backend, mirror, body));

    balance::retry::request(&backend);
    let mut tried: Vec<Arc<Server>> = Vec::new();
    let mut last: Option<ProxyError> = None;
    loop {
        // Only a backend with `maxconn` servers has a queue to time.
        let queued_from = backend.limited.then(Instant::now);
        let (server, via, active) = match balance::queue::acquire(&backend, &affinity, &tried, Counter::Requests).await
        {
            Ok(t) => t,
            // After a failed attempt, the client gets that failure rather than "no server".
            Err(ProxyError::NoServer) => return Err(last.unwrap_or(ProxyError::NoServer)),
            Err(e) => return Err(e),
        };
        let queued = queued_from.map_or(Duration::ZERO, |t| t.elapsed());
        // Another attempt with the same head and no body, if this one failed in a way
        // `retry_on` names.
        let retry = |on: bool, tried: &[Arc<Server>]| {
            (on && resendable && balance::retry::allow(&backend, &affinity, tried, &server)).then(no_body)
        };
        // This attempt's; a connect failure hands it back for the next.
        let Some(up_body) = body.take() else {
            return Err(last.unwrap_or(ProxyError::NoServer));
        };
        let sent_at = Instant::now();
        // Pinned here and lent to response_head: the send future (the largest part of this
        // one) is held once, not again as that function's argument.
        let sent = if h2 {
            // Boxed: HTTP/2's send future is kilobytes, and held inline it would make every
            // request's future (copied as it is set up) that much larger.
            let mut send = Box::pin(crate::upstream::send_h2(
                &server,
                &backend,
                to_h2::h2_request(&out.0, up_body)?,
            ));
            response_head(backend.timeout, upload.as_deref(), send.as_mut())
                .await
                .map(|r| match r {
                    Ok((resp, connected)) => Ok((resp.map(Sent::H2), connected)),
                    Err(crate::upstream::SendError::Connect(e, req)) => Err(SendError::Connect(e, req.into_body())),
                    Err(crate::upstream::SendError::Protocol(e)) => {
                        Err(SendError::Failed(ProxyError::UpstreamProtocol(e)))
                    }
                })
        } else {
            let proxied = backend.send_proxy.map(|_| (conn.peer, conn.local));
            let sending = client::Head {
                bytes: &out.0,
                replayable,
                head_request,
                chunked,
            };
            let send = client::send(&server, &backend, conn.shared.head_limits, sending, up_body, proxied);
            tokio::pin!(send);
            response_head(backend.timeout, upload.as_deref(), send.as_mut())
                .await
                .map(|r| r.map(|(resp, connected)| (resp.map(Sent::H1), connected)))
        };
        let sent = match sent {
            Ok(Ok((resp, connected))) if matches!(resp.status().as_u16(), 502..=504) && resendable => {
                match retry(backend.retry_on.gateway_error, &tried) {
                    Some(again) => {
                        // A gateway error another server may not repeat: the answer counts
                        // as this server's, and the request goes elsewhere.
                        let status = resp.status().as_u16();
                        server.state.count_response(status);
                        balance::outlier::response(&backend, &server, status);
                        tried.push(server);
                        last = Some(ProxyError::UpstreamMalformed("gateway error from upstream"));
                        body = Some(again);
                        continue;
                    }
                    None => Ok(Ok((resp, connected))),
                }
            }
            other => other,
        };
        match sent {
            Err(_) => {
                backend.state.timeouts.fetch_add(1, Relaxed);
                balance::outlier::failed(&backend, &server, 504);
                return Err(ProxyError::Timeout);
            }
            Ok(Ok((resp, connected))) => {
                let upstream_duration = sent_at.elapsed();
                server.answered(upstream_duration);
                if let Some(d) = connected {
                    server.metrics.connect.record(d);
                }
                server.state.mark_reachable();
                let timers = Timers::proxied(queued, connected, upstream_duration);
                let log = head.map(|head| {
                    Box::new(PendingLog {
                        head,
                        status: resp.status().as_u16(),
                        upstream: crate::upstream::log_upstream(&backend, &server, route, (via, tried.len()), timers),
                        head_sent: 0,
                    })
                });
                let end = RequestEnd::new(start, &server, timers, log);
                let mut resp = respond(resp, &server, &backend, active, end)?;
                if let Some(f) = filters.as_deref() {
                    f.response_headers.apply(resp.headers_mut());
                }
                // A new (or re-picked) client learns its server; a returning one already knows.
                if via != Via::Sticky {
                    if let Some(cookie) = &server.set_cookie {
                        resp.headers_mut().append(header::SET_COOKIE, cookie.clone());
                    }
                }
                return Ok(resp);
            }
            // Mapped already: the client's body failing is the client's fault (408/400).
            Ok(Err(SendError::Failed(e))) if e.side() == crate::error::Side::Upstream => {
                balance::outlier::failed(&backend, &server, e.status().as_u16());
                let Some(again) = retry(backend.retry_on.reset, &tried) else {
                    return Err(e);
                };
                tried.push(server);
                last = Some(e);
                body = Some(again);
            }
            Ok(Err(SendError::Failed(e))) => return Err(e),
            Ok(Err(SendError::Connect(e, _))) if crate::ratelimit::is_local_resource_error(&e) => {
                // Out of descriptors or ports here: another server would fail the same way,
                // and this one is healthy.
                crate::warn_limited!(crate::ratelimit::Kind::LocalResources, server = %server.id, error = %e,
                    "upstream connect failed for want of local resources; answering 503, no server ejected");
                return Err(ProxyError::LocalResources(e));
            }
            Ok(Err(SendError::Connect(e, returned))) => {
                crate::warn_limited!(crate::ratelimit::Kind::UpstreamConnect, server = %server.id, error = %e, "upstream connect failed; ejecting");
                balance::outlier::connect_failure(&backend, &server);
                if !backend.retry_on.connect || !balance::retry::allow(&backend, &affinity, &tried, &server) {
                    return Err(ProxyError::Connect(e));
                }
                tried.push(server);
                last = Some(ProxyError::Connect(e));
                body = Some(returned);
            }
        }
    }
}

/// Waits for the response head, within `timeout` of the whole request having been sent:
/// while the client is still uploading its body the server is not expected to answer, and
/// `body_timeout` bounds the upload instead (a stall ends the send with the body's error,
/// answered 408). `Err` when the time is up.
async fn response_head<F: std::future::Future>(
    timeout: Duration,
    upload: Option<&Upload>,
    mut send: std::pin::Pin<&mut F>,
) -> Result<F::Output, ()> {
    let Some(upload) = upload else {
        return tokio::time::timeout(timeout, send).await.map_err(|_| ());
    };
    let mut deadline = tokio::time::Instant::now() + timeout;
    loop {
        tokio::select! {
            out = send.as_mut() => return Ok(out),
            _ = tokio::time::sleep_until(deadline) => {}
        }
        let now = tokio::time::Instant::now();
        match upload.sent_for() {
            None => deadline = now + timeout,
            Some(since) if since < timeout => deadline = now + (timeout - since),
            Some(_) => return Err(()),
        }
    }
}

/// An upstream response body: read by veer's HTTP/1 client, or an HTTP/2 stream's.
enum Sent {
    H1(RawBody),
    H2(Incoming),
}

/// Turns the upstream response into the client's, streamed with its connection returned to
/// the pool at the end. A 101 cannot be relayed over HTTP/2 (nothing here asked for one).
fn respond(
    resp: Response<Sent>,
    server: &Arc<Server>,
    backend: &Backend,
    active: crate::state::ActiveGuard,
    end: RequestEnd,
) -> Result<Response<ProxyBody>, ProxyError> {
    server.state.count_response(resp.status().as_u16());
    balance::outlier::response(backend, server, resp.status().as_u16());
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        return Err(ProxyError::UnexpectedUpgrade);
    }
    let (mut parts, body) = resp.into_parts();
    // The body looks after its own connection (back to the pool when it ends); an HTTP/2
    // stream's trailers (gRPC's status) pass through as frames. An HTTP/1 head was read
    // without its hop-by-hop fields already.
    let body = match body {
        Sent::H1(raw) => ProxyBody::Raw(Box::new(UpstreamBody::new(
            raw,
            None,
            active,
            end,
            backend.read_timeout,
        ))),
        Sent::H2(incoming) => {
            headers::strip_hop_by_hop(&mut parts.headers);
            ProxyBody::Upstream(Box::new(UpstreamBody::new(
                incoming,
                None,
                active,
                end,
                backend.read_timeout,
            )))
        }
    };
    Ok(Response::from_parts(parts, body))
}

/// A connection whose first bytes were already read: they are read again first.
struct Rewind {
    prefix: Vec<u8>,
    at: usize,
    /// Always `Some` while hyper holds this; taken only by `drop`.
    inner: Option<ClientIo>,
    parked: Arc<Parked>,
}

impl Rewind {
    /// The socket; gone only once `drop` parked it, so hyper never sees the error.
    fn io(&mut self) -> std::io::Result<Pin<&mut ClientIo>> {
        (self.inner.as_mut().map(Pin::new)).ok_or_else(|| std::io::ErrorKind::NotConnected.into())
    }
}

impl Drop for Rewind {
    fn drop(&mut self) {
        if self.parked.wanted.load(Relaxed) {
            if let Ok(mut slot) = self.parked.io.lock() {
                *slot = self.inner.take();
            }
        }
    }
}

impl tokio::io::AsyncRead for Rewind {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let this = &mut *self;
        if this.at < this.prefix.len() {
            let n = (this.prefix.len() - this.at).min(buf.remaining());
            buf.put_slice(&this.prefix[this.at..this.at + n]);
            this.at += n;
            if this.at == this.prefix.len() {
                this.prefix = Vec::new();
                this.at = 0;
            }
            return std::task::Poll::Ready(Ok(()));
        }
        match this.io() {
            Ok(io) => io.poll_read(cx, buf),
            Err(e) => std::task::Poll::Ready(Err(e)),
        }
    }
}

impl tokio::io::AsyncWrite for Rewind {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        match self.io() {
            Ok(io) => io.poll_write(cx, buf),
            Err(e) => std::task::Poll::Ready(Err(e)),
        }
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.io() {
            Ok(io) => io.poll_flush(cx),
            Err(e) => std::task::Poll::Ready(Err(e)),
        }
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.io() {
            Ok(io) => io.poll_shutdown(cx),
            Err(e) => std::task::Poll::Ready(Err(e)),
        }
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        match self.io() {
            Ok(io) => io.poll_write_vectored(cx, bufs),
            Err(e) => std::task::Poll::Ready(Err(e)),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.as_ref().is_some_and(|io| io.is_write_vectored())
    }
}

/// veer's own answer to a request it could not forward, as an HTTP/2 response (the HTTP/1
/// engine writes the same answer as bytes: [`ProxyError::write_response`]).
fn synthetic(e: &ProxyError) -> Response<ProxyBody> {
    let status = e.status();
    let body = format!("{} {}\n", status.as_u16(), status.canonical_reason().unwrap_or(""));
    let mut resp = Response::new(ProxyBody::synthetic(bytes::Bytes::from(body)));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert("veer-error", HeaderValue::from_static(e.reason()));
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if e.retry_after() {
        // A moment's shortage: clients and browsers retry.
        h.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    resp
}

/// veer's own answer to a gRPC request, in gRPC's shape (as Envoy answers): HTTP 200 with
/// `grpc-status` in a trailers-only response — 4 DEADLINE_EXCEEDED for timeouts, 14
/// UNAVAILABLE for everything else veer can fail with (3 INVALID_ARGUMENT for a bad request).
fn synthetic_grpc(e: &ProxyError) -> Response<ProxyBody> {
    let status = match e {
        ProxyError::Timeout | ProxyError::RequestTimeout => "4",
        ProxyError::BadRequest(_) | ProxyError::HeadersTooLarge => "3",
        ProxyError::BodyTooLarge => "8",
        _ => "14",
    };
    let mut resp = Response::new(ProxyBody::Synthetic(None));
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    h.insert("grpc-status", HeaderValue::from_static(status));
    h.insert("grpc-message", HeaderValue::from_static(e.reason()));
    h.insert("veer-error", HeaderValue::from_static(e.reason()));
    resp
}

/// A response body to the client: streamed from upstream, or a small synthetic one.
/// Boxed: a response is moved half a dozen times between here and hyper's stream (out of
/// `forward`, into the stream's body pipe), and an upstream body is hundreds of bytes.
pub enum ProxyBody {
    Upstream(Box<UpstreamBody>),
    /// Read from an upstream socket by the HTTP/1 engine's client (HTTP/2 requests).
    Raw(Box<UpstreamBody<RawBody>>),
    Synthetic(Option<Bytes>),
}

/// An HTTP/2 stream's response body, holding the stream open in its connection's count
/// (idle connections are those with none) until it is sent or abandoned.
pub struct StreamBody {
    body: ProxyBody,
    _open: OpenStream,
}

impl Body for StreamBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
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
            ProxyBody::Upstream(b) => Pin::new(&mut **b).poll_frame(cx),
            ProxyBody::Raw(b) => Pin::new(&mut **b).poll_frame(cx),
            ProxyBody::Synthetic(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Upstream(b) => b.is_end_stream(),
            ProxyBody::Raw(b) => b.is_end_stream(),
            ProxyBody::Synthetic(b) => b.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Upstream(b) => b.size_hint(),
            ProxyBody::Raw(b) => b.size_hint(),
            ProxyBody::Synthetic(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
        }
    }
}
