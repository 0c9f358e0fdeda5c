//! The HTTP/1.1 data path: one task per client connection runs every exchange itself —
//! read the head, route with one snapshot load, pick, take an upstream connection it owns
//! for the exchange, write the head, relay the bodies both ways, hand the upstream
//! connection back to the pool. No task, channel or header map per request: heads are parsed
//! in place and written upstream as the bytes that arrived, minus hop-by-hop fields, plus
//! veer's own (X-Forwarded-*, X-Request-Id).
//!
//! Knows the snapshot, the balancer and the upstream pool; not the control plane.

use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::Instant as Deadline;
use tokio_util::sync::CancellationToken;

use super::codec::{self, BodyWalk, Fields, Framing, HeadError, HeadLimits};
use crate::access_log::{LogHead, PendingLog, Upstream};
use crate::balance::{self, hash, Affinity, Via};
use crate::config::HashKey;
use crate::error::ProxyError;
use crate::proxy::buf::{self, Buf, Out};
use crate::proxy::shared::{OpenConn, Shared};
use crate::proxy::splice::{splice_tcp, Ended};
use crate::proxy::{cookies, headers, mirror};
use crate::snapshot::{Backend, ListenerRoutes, Server};
use crate::upstream::{self, RequestEnd};

/// Read size for large bodies.
const BULK: usize = 64 * 1024;

/// What every exchange on one client connection shares.
pub struct Conn {
    pub peer: SocketAddr,
    pub listener: Arc<String>,
    pub shared: Arc<Shared>,
    /// Cancelled when the listener is removed or the process drains: the next response
    /// says `Connection: close`.
    pub drain: CancellationToken,
    /// Counts the connection open until the task ends; its listener's counters.
    pub open: OpenConn,
    /// For upgraded tunnels.
    pub idle: Duration,
}

/// Serves one HTTP/1.x client connection until it closes, fails, times out or the process
/// stops. A connection whose first bytes are the HTTP/2 preface goes to the HTTP/2 server.
pub async fn serve(mut client: TcpStream, conn: Conn) {
    // No HTTP/1 method is "PRI": these bytes first mean the HTTP/2 preface.
    const PREFACE: &[u8] = b"PRI ";
    let mut inbuf = Buf::default();
    let mut first = true;
    loop {
        // header_timeout: from connecting, or from the end of the previous response.
        let deadline = Deadline::now() + conn.shared.header_timeout;
        // Idle (or a first read too short to tell HTTP/2): wait until bytes are there, then
        // read them without blocking. A buffer is taken only once bytes have arrived, and
        // the task holds no read future: an idle connection's task is this wait alone.
        while inbuf.is_empty() || (first && inbuf.unread().len() < PREFACE.len() && PREFACE.starts_with(inbuf.unread()))
        {
            match within(deadline, &conn.shared.shutdown, buf::readable(&client)).await {
                Some(Ok(())) => {}
                _ => return,
            }
            // Readiness may be stale (the last read did not drain the socket): WouldBlock
            // clears it and the wait starts again.
            match inbuf.try_read_from(&client) {
                Ok(0) if inbuf.is_empty() => return,
                // EOF within the first bytes: the exchange answers the partial head.
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => return,
            }
        }
        if first {
            first = false;
            if inbuf.unread().starts_with(PREFACE) {
                return Box::pin(http2(client, inbuf.unread().to_vec(), conn)).await;
            }
        }
        match Box::pin(exchange(&mut client, &mut inbuf, &conn, deadline)).await {
            Next::KeepAlive => continue,
            Next::Close => {
                let _ = client.shutdown().await;
                return;
            }
            Next::Abort => return,
        }
    }
}

/// Hands an HTTP/2 (prior knowledge) connection to hyper's server, with the bytes read so
/// far. Boxed by the caller: hyper's connection state is large, and an idle HTTP/1
/// connection's task should not carry its size.
async fn http2(client: TcpStream, prefix: Vec<u8>, c: Conn) {
    let stats = c.open.listener.clone();
    crate::proxy::http::serve(client, prefix, c.peer, c.listener, c.shared, c.drain, stats, c.idle).await;
    drop(c.open);
}

enum Next {
    KeepAlive,
    /// Close after what was written.
    Close,
    /// Drop the connection now (stop, timeout, broken).
    Abort,
}

/// Awaits `f` unless `deadline` passes or `stop` is cancelled first.
fn within<F: std::future::Future>(deadline: Deadline, stop: &CancellationToken, f: F) -> Within<'_, F> {
    Within {
        f,
        sleep: tokio::time::sleep_until(deadline),
        stop: stop.cancelled(),
    }
}

pin_project_lite::pin_project! {
    /// The future of [`within`]. Written out rather than a `select!` in an async fn, which
    /// keeps its arguments beside the select's own copies: an idle connection's task is
    /// mostly this future, and it should hold each part once.
    struct Within<'a, F> {
        #[pin]
        f: F,
        #[pin]
        sleep: tokio::time::Sleep,
        #[pin]
        stop: tokio_util::sync::WaitForCancellationFuture<'a>,
    }
}

impl<F: std::future::Future> std::future::Future for Within<'_, F> {
    type Output = Option<F::Output>;

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Self::Output> {
        use std::task::Poll;
        let this = self.project();
        if let Poll::Ready(out) = this.f.poll(cx) {
            return Poll::Ready(Some(out));
        }
        if this.sleep.poll(cx).is_ready() || this.stop.poll(cx).is_ready() {
            return Poll::Ready(None);
        }
        Poll::Pending
    }
}

/// The request as parsed, routed and rewritten for upstream.
struct Request {
    /// Bytes of the head in the client buffer.
    head_len: usize,
    head: bool,
    /// Idempotent and bodiless: may be sent again on a fresh connection.
    replayable: bool,
    http10: bool,
    /// The client keeps the connection open after this exchange.
    keep_alive: bool,
    body: Framing,
    upgrade: bool,
    backend: Arc<Backend>,
    route: Arc<str>,
    affinity: Affinity,
    /// The head to send upstream.
    out: Out,
    log: Option<Arc<LogHead>>,
    /// A copy for the mirror group, with its slot.
    mirror: Option<(http::Request<()>, tokio::sync::OwnedSemaphorePermit)>,
}

/// Why a request is answered by veer itself.
struct Refusal {
    error: ProxyError,
    log: Option<Arc<LogHead>>,
    route: Option<Arc<str>>,
}

impl From<ProxyError> for Refusal {
    fn from(error: ProxyError) -> Self {
        Refusal {
            error,
            log: None,
            route: None,
        }
    }
}

/// One request/response exchange, from a head (complete or not) in `inbuf`.
async fn exchange(client: &mut TcpStream, inbuf: &mut Buf, conn: &Conn, deadline: Deadline) -> Next {
    // Read until a complete head is there.
    let start;
    let req = loop {
        match prepare(inbuf.unread(), conn) {
            Ok(Some(req)) => {
                start = Instant::now();
                break req;
            }
            Ok(None) => {
                if inbuf.unread().len() >= conn.shared.head_limits.size {
                    return refuse(client, conn, ProxyError::HeadersTooLarge.into(), Instant::now()).await;
                }
                match within(
                    deadline,
                    &conn.shared.shutdown,
                    inbuf.read_from(client, conn.shared.head_limits.size),
                )
                .await
                {
                    Some(Ok(0)) => {
                        return if inbuf.is_empty() {
                            Next::Abort
                        } else {
                            // Half a head, then EOF.
                            refuse(
                                client,
                                conn,
                                ProxyError::BadRequest("incomplete request head").into(),
                                Instant::now(),
                            )
                            .await
                        };
                    }
                    Some(Ok(_)) => {}
                    Some(Err(_)) | None => return Next::Abort,
                }
            }
            Err(refusal) => {
                return refuse(client, conn, refusal, Instant::now()).await;
            }
        }
    };
    inbuf.consume(req.head_len);
    forward(client, inbuf, conn, req, start).await
}

/// Writes veer's own answer and closes (after a refused request the connection's state is
/// unknown: a smuggling attempt, a CONNECT client already tunnelling).
async fn refuse(client: &mut TcpStream, conn: &Conn, r: Refusal, start: Instant) -> Next {
    let e = r.error;
    tracing::debug!(peer = %conn.peer, side = ?e.side(), error = %e, "synthetic response");
    conn.open.listener.errors[e.reason_index()].fetch_add(1, Relaxed);
    conn.open.listener.responses[crate::state::status_class(e.status().as_u16())].fetch_add(1, Relaxed);
    let mut out = Out::new();
    e.write_response(&mut out.0, true);
    if let Some(log) = r.log {
        log.log(
            e.status().as_u16(),
            body_len(&e),
            start.elapsed(),
            None,
            Some(e.reason()),
            r.route.as_deref(),
        );
    }
    let _ = client.write_all(&out.0).await;
    Next::Close
}

fn body_len(e: &ProxyError) -> u64 {
    let s = e.status();
    (3 + 1 + s.canonical_reason().unwrap_or("").len() + 1) as u64
}

/// Parses, validates, routes and rewrites a request head. `Ok(None)`: the head is not
/// complete yet.
fn prepare(buf: &[u8], conn: &Conn) -> Result<Option<Request>, Refusal> {
    let limits = conn.shared.head_limits;
    let mut slots = codec::slots();
    let mut parsed = httparse::Request::new(&mut []);
    let head_len = match codec::request_parser().parse_request_with_uninit_headers(
        &mut parsed,
        buf,
        &mut slots[..limits.fields],
    ) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => {
            return Err(match codec::head_error(e) {
                HeadError::TooManyHeaders => ProxyError::HeadersTooLarge,
                _ => ProxyError::BadRequest("malformed request head"),
            }
            .into())
        }
    };
    if head_len > limits.size {
        return Err(ProxyError::HeadersTooLarge.into());
    }
    let head = &buf[..head_len];
    if !codec::clean_head(head.trim_ascii_start()) {
        return Err(ProxyError::BadRequest("malformed request head").into());
    }
    let method = parsed.method.unwrap_or("");
    let target = parsed.path.unwrap_or("");
    let http10 = parsed.version == Some(0);
    let fields = codec::fields(parsed.headers, http10).map_err(|e| ProxyError::BadRequest(e.reason()))?;
    let headers: &[httparse::Header<'_>] = parsed.headers;
    if method == "CONNECT" {
        return Err(ProxyError::BadRequest("CONNECT is not supported").into());
    }
    if !target.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
        return Err(ProxyError::BadRequest("invalid request target").into());
    }
    let (authority, path_and_query) = split_target(target).ok_or(ProxyError::BadRequest("invalid request target"))?;

    // The one host routed by and forwarded with (RFC 9112 §3.2).
    if fields.hosts > 1 {
        return Err(ProxyError::BadRequest("more than one Host header").into());
    }
    let host_field = field(headers, b"host");
    if host_field.is_some_and(|h| !headers::valid_host(h)) {
        return Err(ProxyError::BadRequest("invalid Host header").into());
    }
    if let Some(a) = authority {
        if !headers::valid_host(a.as_bytes()) {
            return Err(ProxyError::BadRequest("invalid request-target authority").into());
        }
    } else if host_field.is_none() && !http10 {
        return Err(ProxyError::BadRequest("HTTP/1.1 request without Host").into());
    }
    let host_raw: &[u8] = authority.map(str::as_bytes).or(host_field).unwrap_or(b"");
    let host_str = std::str::from_utf8(host_raw).unwrap_or("");
    let host = crate::routing::normalize_host(host_str);
    let path = path_and_query.split('?').next().unwrap_or("/");

    let request_id = field(headers, b"x-request-id");
    let mut generated_id = [0u8; 32];
    let id: &[u8] = match request_id {
        Some(id) => id,
        None => {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            let n = fastrand::u128(..);
            for (i, d) in generated_id.iter_mut().enumerate() {
                *d = HEX[((n >> (124 - 4 * i)) & 0xf) as usize];
            }
            &generated_id
        }
    };
    let log = conn.shared.access_log.as_ref().map(|log| {
        Arc::new(LogHead::raw(
            log,
            conn.peer,
            &conn.listener,
            method,
            host_str,
            path_and_query,
            std::str::from_utf8(id).unwrap_or("-"),
        ))
    });

    // Route with exactly one snapshot; keep only the backend for the rest of the exchange.
    let (backend, route) = {
        let snap = conn.shared.snapshot.load();
        let Some(ListenerRoutes::Http(table)) = snap.listeners.get(conn.listener.as_str()) else {
            return Err(Refusal {
                error: ProxyError::NoRoute,
                log,
                route: None,
            });
        };
        match table.find(&host, path, &RawHeaders(headers)) {
            Some(route) => (snap.backends[route.backend].clone(), route.name.clone()),
            None => {
                return Err(Refusal {
                    error: ProxyError::NoRoute,
                    log,
                    route: None,
                })
            }
        }
    };
    let affinity = affinity(&backend, headers, conn.peer.ip());
    let upgrade = fields.upgrade;
    let mut out = Out::new();
    write_upstream_head(
        &mut out.0,
        method,
        path_and_query,
        authority,
        headers,
        &fields,
        &backend,
        conn.peer.ip(),
        request_id.is_none().then_some(id),
    );
    let body = codec::request_framing(&fields);
    let mirror = backend.mirror.as_ref().and_then(|_| {
        let at_least = match body {
            Framing::Length(n) => n,
            _ => 0,
        };
        let permit = mirror::sample(&backend, at_least)?;
        Some((mirror_copy(method, path_and_query, headers, &backend), permit))
    });
    let head = method == "HEAD";
    let replayable = matches!(method, "GET" | "HEAD" | "OPTIONS" | "TRACE" | "PUT" | "DELETE") && body == Framing::None;
    Ok(Some(Request {
        head_len,
        head,
        replayable,
        http10,
        keep_alive: if http10 { fields.keep_alive } else { !fields.close },
        body,
        upgrade,
        backend,
        route,
        affinity,
        out,
        log,
        mirror,
    }))
}

/// Splits a request target into (authority, origin-form path and query). Absolute-form
/// (`http://host/path`) gives its authority; `*` (OPTIONS) is kept as is.
fn split_target(target: &str) -> Option<(Option<&str>, &str)> {
    if target.starts_with('/') || target == "*" {
        return Some((None, target));
    }
    let lower = |p: &str| target.len() >= p.len() && target[..p.len()].eq_ignore_ascii_case(p);
    let rest = if lower("http://") {
        &target[7..]
    } else if lower("https://") {
        &target[8..]
    } else {
        return None;
    };
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    if authority.is_empty() {
        return None;
    }
    Some((Some(authority), if path.is_empty() { "/" } else { path }))
}

/// The value of the first field named `name` (lowercase).
fn field<'h>(headers: &[httparse::Header<'h>], name: &[u8]) -> Option<&'h [u8]> {
    headers
        .iter()
        .find(|h| h.name.as_bytes().eq_ignore_ascii_case(name))
        .map(|h| h.value)
}

/// Route conditions over the parsed head.
struct RawHeaders<'a, 'h>(&'a [httparse::Header<'h>]);

impl crate::routing::Headers for RawHeaders<'_, '_> {
    fn has(&self, name: &http::HeaderName, value: &[u8]) -> bool {
        self.0
            .iter()
            .any(|h| h.name.as_bytes().eq_ignore_ascii_case(name.as_str().as_bytes()) && h.value == value)
    }
}

fn cookie_values<'a, 'h>(headers: &'a [httparse::Header<'h>]) -> impl Iterator<Item = &'h [u8]> + 'a {
    headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("cookie"))
        .map(|h| h.value)
}

/// Reads what the request says about its destination (sticky cookie, override, hash key).
fn affinity(b: &Backend, headers: &[httparse::Header<'_>], client: std::net::IpAddr) -> Affinity {
    let mut a = Affinity::default();
    if let Some(o) = &b.override_ {
        let named = o
            .header
            .as_ref()
            .and_then(|h| field(headers, h.as_str().as_bytes()))
            .or_else(|| {
                o.cookie
                    .as_deref()
                    .and_then(|c| cookies::find_in(cookie_values(headers), c))
            });
        a.group = named.and_then(|n| b.groups.iter().position(|g| g.name.as_bytes() == n));
    }
    a.hash = match &b.hash_key {
        Some(HashKey::SourceIp) => Some(hash::ip(client)),
        Some(HashKey::Header(h)) => field(headers, h.as_str().as_bytes()).map(hash::key),
        Some(HashKey::Cookie(c)) => cookies::find_in(cookie_values(headers), c).map(hash::key),
        None => None,
    };
    if let Some(st) = &b.sticky {
        a.sticky = cookies::find_in(cookie_values(headers), &st.cookie).and_then(cookies::parse_sticky);
    }
    a
}

/// True for a field no proxy forwards (RFC 9110 §7.6.1), or one `Connection` names.
fn hop_by_hop(name: &[u8], connection: &[&[u8]]) -> bool {
    const FIXED: [&[u8]; 5] = [b"connection", b"keep-alive", b"te", b"trailer", b"upgrade"];
    FIXED.iter().any(|f| name.eq_ignore_ascii_case(f))
        || (name.len() > 6 && name[..6].eq_ignore_ascii_case(b"proxy-"))
        || connection.iter().any(|c| name.eq_ignore_ascii_case(c))
}

/// The tokens of every `Connection` field (beyond the few that are options, not names).
fn connection_names<'h>(headers: &[httparse::Header<'h>], into: &mut [&'h [u8]; 8]) -> usize {
    let mut n = 0;
    for h in headers.iter().filter(|h| h.name.eq_ignore_ascii_case("connection")) {
        for t in h.value.split(|b| *b == b',').map(<[u8]>::trim_ascii) {
            if !t.is_empty() && n < into.len() {
                into[n] = t;
                n += 1;
            }
        }
    }
    n
}

fn put_field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// The head sent upstream: origin-form HTTP/1.1, the client's fields as they arrived minus
/// hop-by-hop ones (the body's own `Transfer-Encoding: chunked` stays: the body is relayed
/// as it came), Host from an absolute-form target, veer's sticky cookie removed, and
/// X-Forwarded-For/-Proto/-Host and X-Request-Id set.
#[allow(clippy::too_many_arguments)]
fn write_upstream_head(
    out: &mut Vec<u8>,
    method: &str,
    path_and_query: &str,
    authority: Option<&str>,
    headers: &[httparse::Header<'_>],
    fields: &Fields,
    backend: &Backend,
    client: std::net::IpAddr,
    new_request_id: Option<&[u8]>,
) {
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(path_and_query.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let mut named = [&b""[..]; 8];
    let n = connection_names(headers, &mut named);
    let named = &named[..n];
    let sticky = backend.sticky.as_ref().map(|s| s.cookie.as_str());
    let mut forwarded_for = false;
    let mut host_value: Option<&[u8]> = authority.map(str::as_bytes);
    let is = |name: &[u8], what: &[u8]| name.eq_ignore_ascii_case(what);
    for h in headers {
        let name = h.name.as_bytes();
        if is(name, b"upgrade") && fields.upgrade {
            put_field(out, name, h.value);
            continue;
        }
        if hop_by_hop(name, named) || is(name, b"x-forwarded-proto") || is(name, b"x-forwarded-host") {
            continue;
        }
        if is(name, b"host") {
            match authority {
                Some(a) => put_field(out, b"host", a.as_bytes()),
                None => {
                    host_value = Some(h.value);
                    put_field(out, name, h.value);
                }
            }
        } else if is(name, b"x-forwarded-for") {
            // The first one, with the client appended; later ones are folded away.
            if !forwarded_for {
                forwarded_for = true;
                out.extend_from_slice(b"x-forwarded-for: ");
                if !h.value.trim_ascii().is_empty() {
                    out.extend_from_slice(h.value);
                    out.extend_from_slice(b", ");
                }
                put_ip(out, client);
                out.extend_from_slice(b"\r\n");
            }
        } else if let Some(sticky) =
            sticky.filter(|s| is(name, b"cookie") && cookies::find_in(std::iter::once(h.value), s).is_some())
        {
            let start = out.len();
            out.extend_from_slice(b"cookie: ");
            let before = out.len();
            cookies::without(h.value, sticky, out);
            if out.len() == before {
                out.truncate(start);
            } else {
                out.extend_from_slice(b"\r\n");
            }
        } else {
            put_field(out, name, h.value);
        }
    }
    if authority.is_some() && !headers.iter().any(|h| h.name.eq_ignore_ascii_case("host")) {
        put_field(out, b"host", authority.unwrap_or("").as_bytes());
    }
    if !forwarded_for {
        out.extend_from_slice(b"x-forwarded-for: ");
        put_ip(out, client);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"x-forwarded-proto: http\r\n");
    if let Some(h) = host_value {
        put_field(out, b"x-forwarded-host", h);
    }
    if let Some(id) = new_request_id {
        put_field(out, b"x-request-id", id);
    }
    if fields.upgrade {
        out.extend_from_slice(b"connection: upgrade\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// The request line and fields for the mirrored copy (only built for sampled requests).
fn mirror_copy(
    method: &str,
    path_and_query: &str,
    headers: &[httparse::Header<'_>],
    backend: &Backend,
) -> http::Request<()> {
    let mut copy = http::Request::new(());
    *copy.method_mut() = http::Method::from_bytes(method.as_bytes()).unwrap_or(http::Method::GET);
    *copy.uri_mut() = path_and_query.parse().unwrap_or_else(|_| http::Uri::from_static("/"));
    let mut named = [&b""[..]; 8];
    let n = connection_names(headers, &mut named);
    for h in headers {
        let name = h.name.as_bytes();
        if hop_by_hop(name, &named[..n]) || name.eq_ignore_ascii_case(b"transfer-encoding") {
            continue;
        }
        if let (Ok(k), Ok(v)) = (
            http::HeaderName::from_bytes(name),
            http::HeaderValue::from_bytes(h.value),
        ) {
            copy.headers_mut().append(k, v);
        }
    }
    if let Some(st) = &backend.sticky {
        cookies::remove(copy.headers_mut(), &st.cookie);
    }
    copy
}

// === the exchange ===

/// An upstream connection this task owns for the exchange.
struct UpConn {
    stream: TcpStream,
    /// Taken from the pool (may have been closed by the server meanwhile).
    reused: bool,
    connected: Option<Duration>,
}

enum Failure {
    /// Answer with this error (nothing of the response was written yet).
    Answer(ProxyError),
    /// Something was written already, or the client is gone: drop the connection.
    Abort,
}

async fn forward(client: &mut TcpStream, inbuf: &mut Buf, conn: &Conn, mut req: Request, start: Instant) -> Next {
    let backend = req.backend.clone();
    let mut tried: Vec<Arc<Server>> = Vec::new();
    loop {
        let Some((server, via)) = balance::pick(&backend, &req.affinity, &tried).map(|(s, v)| (s.clone(), v)) else {
            return answer(client, conn, &req, ProxyError::NoServer, start).await;
        };
        let active = server.state.request_guard();
        let up = match upstream_conn(&server, &backend).await {
            Ok(up) => up,
            Err(e) if crate::ratelimit::is_local_resource_error(&e) => {
                crate::warn_limited!(crate::ratelimit::Kind::LocalResources, server = %server.id, error = %e,
                    "upstream connect failed for want of local resources; answering 503, no server ejected");
                return answer(client, conn, &req, ProxyError::LocalResources(e), start).await;
            }
            Err(e) => {
                crate::warn_limited!(crate::ratelimit::Kind::UpstreamConnect, server = %server.id, error = %e, "upstream connect failed; ejecting");
                server.state.eject(backend.eject_time);
                if tried.len() as u32 >= backend.retries {
                    return answer(client, conn, &req, ProxyError::Connect(e), start).await;
                }
                tried.push(server);
                backend.state.retries.fetch_add(1, Relaxed);
                continue;
            }
        };
        if up.connected.is_some() {
            server.state.mark_reachable();
        }
        return match exchange_with(client, inbuf, conn, &mut req, &server, up, start, active, via).await {
            Ok(next) => next,
            Err(Failure::Answer(e)) => answer(client, conn, &req, e, start).await,
            Err(Failure::Abort) => Next::Abort,
        };
    }
}

/// A pooled connection, or a new one.
async fn upstream_conn(server: &Server, backend: &Backend) -> std::io::Result<UpConn> {
    match server.pool.take_conn() {
        Some(stream) => Ok(UpConn {
            stream,
            reused: true,
            connected: None,
        }),
        None => reconnect(server, backend).await,
    }
}

/// veer's own answer to a request it could not forward; keeps the connection only when
/// the request was fully read and the client keeps it.
async fn answer(client: &mut TcpStream, conn: &Conn, req: &Request, e: ProxyError, start: Instant) -> Next {
    let close = !req.keep_alive
        || req.body != Framing::None
        || conn.drain.is_cancelled()
        || matches!(e, ProxyError::BadRequest(_) | ProxyError::RequestTimeout);
    tracing::debug!(peer = %conn.peer, side = ?e.side(), error = %e, "synthetic response");
    conn.open.listener.errors[e.reason_index()].fetch_add(1, Relaxed);
    conn.open.listener.responses[crate::state::status_class(e.status().as_u16())].fetch_add(1, Relaxed);
    let mut out = Out::new();
    e.write_response(&mut out.0, close);
    if let Some(log) = &req.log {
        log.log(
            e.status().as_u16(),
            body_len(&e),
            start.elapsed(),
            None,
            Some(e.reason()),
            Some(&req.route),
        );
    }
    if client.write_all(&out.0).await.is_err() {
        return Next::Abort;
    }
    if close {
        Next::Close
    } else {
        Next::KeepAlive
    }
}

/// The parsed response head, with what the relay decided from it.
struct Response {
    status: u16,
    head_len: usize,
    fields: Fields,
    http10: bool,
    framing: Framing,
    /// Chunks decoded for an HTTP/1.0 client.
    decode: bool,
    /// The client connection closes after this response.
    client_close: bool,
}

/// What shapes the client's response head besides the server's.
struct ClientView<'a> {
    limits: HeadLimits,
    http10: bool,
    keep_alive: bool,
    head_request: bool,
    /// The whole request body went up (else the connection cannot be reused).
    upload_done: bool,
    draining: bool,
    set_cookie: Option<&'a http::HeaderValue>,
}

/// Parses a response head from `buf`. For a final (or 101) response it also writes the
/// client's head into `out`, in the same pass over the fields; interim 1xx heads are left
/// for the caller to pass on as they are.
fn parse_response(buf: &[u8], view: &ClientView<'_>, out: &mut Vec<u8>) -> Result<Option<Response>, ProxyError> {
    let mut slots = codec::slots();
    let mut parsed = httparse::Response::new(&mut []);
    let head_len = match codec::response_parser().parse_response_with_uninit_headers(
        &mut parsed,
        buf,
        &mut slots[..view.limits.fields],
    ) {
        Ok(httparse::Status::Complete(n)) if n > view.limits.size => {
            return Err(ProxyError::UpstreamMalformed("response head too large"))
        }
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() >= view.limits.size => {
            return Err(ProxyError::UpstreamMalformed("response head too large"))
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(ProxyError::UpstreamMalformed("malformed response head")),
    };
    if !codec::clean_head(&buf[..head_len]) {
        return Err(ProxyError::UpstreamMalformed("malformed response head"));
    }
    let http10 = parsed.version == Some(0);
    let fields = codec::fields(parsed.headers, false).map_err(|e| ProxyError::UpstreamMalformed(e.reason()))?;
    let status = parsed.code.unwrap_or(0);
    let framing = codec::response_framing(&fields, status, view.head_request);
    let decode = framing == Framing::Chunked && view.http10;
    let client_close = !view.keep_alive || !view.upload_done || view.draining || framing == Framing::Close || decode;
    let resp = Response {
        status,
        head_len,
        fields,
        http10,
        framing,
        decode,
        client_close,
    };
    if !(100..200).contains(&status) || status == 101 {
        write_client_head(out, parsed.reason.unwrap_or(""), parsed.headers, &resp, view);
    }
    Ok(Some(resp))
}

/// The client's response head: the server's status and fields minus hop-by-hop ones, plus
/// veer's (sticky cookie, connection handling).
fn write_client_head(
    out: &mut Vec<u8>,
    reason: &str,
    headers: &[httparse::Header<'_>],
    resp: &Response,
    view: &ClientView<'_>,
) {
    out.extend_from_slice(b"HTTP/1.1 ");
    put_u64(out, resp.status as u64);
    out.push(b' ');
    out.extend_from_slice(reason.as_bytes());
    out.extend_from_slice(b"\r\n");
    let mut named = [&b""[..]; 8];
    let n = connection_names(headers, &mut named);
    let upgrade = resp.status == 101;
    for h in headers {
        let name = h.name.as_bytes();
        let keep = (upgrade && name.eq_ignore_ascii_case(b"upgrade"))
            || !(hop_by_hop(name, &named[..n]) || (resp.decode && name.eq_ignore_ascii_case(b"transfer-encoding")));
        if keep {
            put_field(out, name, h.value);
        }
    }
    if let Some(c) = view.set_cookie {
        put_field(out, b"set-cookie", c.as_bytes());
    }
    if upgrade {
        out.extend_from_slice(b"connection: upgrade\r\n");
    } else if resp.client_close {
        out.extend_from_slice(b"connection: close\r\n");
    } else if view.http10 {
        out.extend_from_slice(b"connection: keep-alive\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// Decimal digits without going through `fmt`.
fn put_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// A client address for X-Forwarded-For (IPv4 without `fmt`).
fn put_ip(out: &mut Vec<u8>, ip: std::net::IpAddr) {
    match ip {
        std::net::IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                put_u64(out, *octet as u64);
            }
        }
        std::net::IpAddr::V6(v6) => {
            let _ = write!(out, "{v6}");
        }
    }
}

/// Request body progress while uploading, with a copy for the mirror when sampled.
struct Upload {
    walk: BodyWalk,
    /// Copied for the mirror (decoded), up to its limit; `None` once over it.
    copy: Option<Vec<u8>>,
    copy_limit: u64,
}

impl Upload {
    fn new(framing: Framing, mirror_limit: Option<u64>) -> Self {
        Upload {
            walk: BodyWalk::new(framing, false),
            copy: mirror_limit.map(|_| Vec::new()),
            copy_limit: mirror_limit.unwrap_or(0),
        }
    }

    /// How many of `bytes` belong to the body (the rest is the next request).
    fn take(&mut self, bytes: &[u8]) -> Result<usize, ProxyError> {
        let (copy, limit) = (&mut self.copy, self.copy_limit);
        let (n, _) = self
            .walk
            .advance_with(bytes, |d| {
                if copy.as_ref().is_some_and(|c| (c.len() + d.len()) as u64 > limit) {
                    *copy = None;
                }
                if let Some(c) = copy.as_mut() {
                    c.extend_from_slice(d);
                }
            })
            .map_err(|_| ProxyError::BadRequest("malformed request body"))?;
        Ok(n)
    }

    /// The whole body went up.
    fn done(&self) -> bool {
        self.walk.done
    }
}

#[allow(clippy::too_many_arguments)]
async fn exchange_with(
    client: &mut TcpStream,
    inbuf: &mut Buf,
    conn: &Conn,
    req: &mut Request,
    server: &Arc<Server>,
    mut up: UpConn,
    start: Instant,
    active: crate::state::ActiveGuard,
    via: Via,
) -> Result<Next, Failure> {
    let backend = req.backend.clone();
    let stop = &conn.shared.shutdown;
    let sent_at = Instant::now();
    let mirror_limit = req.mirror.as_ref().and(backend.mirror.as_ref().map(|m| m.max_body));
    let mut upload = Upload::new(req.body, mirror_limit);

    // Head, and the body bytes that came with it, in one write.
    if !upload.done() {
        let n = upload.take(inbuf.unread()).map_err(Failure::Answer)?;
        req.out.0.extend_from_slice(&inbuf.unread()[..n]);
        inbuf.consume(n);
    }
    let mut resp_buf = Buf::default();
    // A reused connection the server closed meanwhile fails on write or with EOF before
    // any byte of a response: a replayable request is sent again on a new connection.
    loop {
        let written = up.stream.write_all(&req.out.0).await;
        let fresh_retry = |up: &UpConn| up.reused && req.replayable;
        if let Err(e) = written {
            if fresh_retry(&up) {
                up = reconnect(server, &backend)
                    .await
                    .map_err(|e| Failure::Answer(ProxyError::Connect(e)))?;
                continue;
            }
            return Err(Failure::Answer(ProxyError::UpstreamIo(e)));
        }
        if !upload.done() || !fresh_retry(&up) {
            break;
        }
        // Bodiless and replayable on a reused connection: wait for the first response byte
        // here, where a retry is still possible.
        let head_deadline = Deadline::now() + backend.timeout;
        match within(
            head_deadline,
            stop,
            resp_buf.read_from(&mut up.stream, conn.shared.head_limits.size),
        )
        .await
        {
            Some(Ok(n)) if n > 0 => break,
            Some(_) => {
                tracing::debug!(server = %server.id, "reused connection closed by the server; retrying");
                resp_buf = Buf::default();
                up = reconnect(server, &backend)
                    .await
                    .map_err(|e| Failure::Answer(ProxyError::Connect(e)))?;
            }
            None if stop.is_cancelled() => return Err(Failure::Abort),
            None => {
                backend.state.timeouts.fetch_add(1, Relaxed);
                return Err(Failure::Answer(ProxyError::Timeout));
            }
        }
    }

    // The rest of the body, while watching for the response (100 Continue, or an early
    // final answer).
    let body_timeout = conn.shared.body_timeout;
    let set_cookie = if via != Via::Sticky {
        server.set_cookie.as_ref()
    } else {
        None
    };
    let mut out = Out::new();
    let mut head_deadline = upload.done().then(|| Deadline::now() + backend.timeout);
    let resp = loop {
        if !resp_buf.is_empty() {
            let view = ClientView {
                limits: conn.shared.head_limits,
                http10: req.http10,
                keep_alive: req.keep_alive,
                head_request: req.head,
                upload_done: upload.done(),
                draining: conn.drain.is_cancelled(),
                set_cookie,
            };
            match parse_response(resp_buf.unread(), &view, &mut out.0) {
                Err(e) => return Err(Failure::Answer(e)),
                Ok(Some(r)) if (100..200).contains(&r.status) && r.status != 101 => {
                    // Interim responses (100 Continue, 103) pass to HTTP/1.1 clients.
                    if !req.http10 && client.write_all(&resp_buf.unread()[..r.head_len]).await.is_err() {
                        return Err(Failure::Abort);
                    }
                    resp_buf.consume(r.head_len);
                    continue;
                }
                Ok(Some(r)) => break r,
                Ok(None) => {}
            }
        }
        if upload.done() {
            let deadline = *head_deadline.get_or_insert_with(|| Deadline::now() + backend.timeout);
            match within(
                deadline,
                stop,
                resp_buf.read_from(&mut up.stream, conn.shared.head_limits.size),
            )
            .await
            {
                Some(Ok(0)) => {
                    return Err(Failure::Answer(if resp_buf.is_empty() {
                        ProxyError::UpstreamIo(std::io::ErrorKind::UnexpectedEof.into())
                    } else {
                        ProxyError::UpstreamMalformed("incomplete response head")
                    }))
                }
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(Failure::Answer(ProxyError::UpstreamIo(e))),
                None if stop.is_cancelled() => return Err(Failure::Abort),
                None => {
                    backend.state.timeouts.fetch_add(1, Relaxed);
                    return Err(Failure::Answer(ProxyError::Timeout));
                }
            }
        }
        // Uploading: bytes from the client go up; bytes from the server are the response.
        let client_deadline = if body_timeout.is_zero() {
            Deadline::now() + Duration::from_secs(86400 * 365)
        } else {
            Deadline::now() + body_timeout
        };
        enum Event {
            Client(std::io::Result<usize>),
            Server(std::io::Result<usize>),
            Stalled,
            Stop,
        }
        let event = tokio::select! {
            biased;
            _ = stop.cancelled() => Event::Stop,
            r = resp_buf.read_from(&mut up.stream, conn.shared.head_limits.size) => Event::Server(r),
            r = inbuf.read_from(client, buf::SIZE) => Event::Client(r),
            _ = tokio::time::sleep_until(client_deadline) => Event::Stalled,
        };
        match event {
            Event::Stop => return Err(Failure::Abort),
            Event::Stalled => return Err(Failure::Answer(ProxyError::RequestTimeout)),
            Event::Server(Ok(0)) | Event::Server(Err(_)) => {
                return Err(Failure::Answer(ProxyError::UpstreamIo(
                    std::io::ErrorKind::UnexpectedEof.into(),
                )))
            }
            Event::Server(Ok(_)) => {
                // Parsed at the top; an early final answer ends the upload (the client
                // connection then closes: its body was not all read).
            }
            Event::Client(Ok(0)) | Event::Client(Err(_)) => {
                return Err(Failure::Answer(ProxyError::BadRequest("incomplete request body")));
            }
            Event::Client(Ok(_)) => {
                let n = upload.take(inbuf.unread()).map_err(Failure::Answer)?;
                let sent = up.stream.write_all(&inbuf.unread()[..n]).await;
                inbuf.consume(n);
                if let Err(e) = sent {
                    return Err(Failure::Answer(ProxyError::UpstreamIo(e)));
                }
            }
        }
    };
    let upload_complete = upload.done();
    if let Some((copy, permit)) = req.mirror.take() {
        match upload.copy.take() {
            Some(body) if upload_complete => mirror::spawn(backend.clone(), copy, bytes::Bytes::from(body), permit),
            _ => mirror::skipped(&backend),
        }
    }

    let upstream_duration = sent_at.elapsed();
    server.metrics.upstream.record(upstream_duration);
    server.state.count_response(resp.status);
    let log = req.log.take().map(|head| {
        Box::new(PendingLog {
            head,
            status: resp.status,
            upstream: Upstream {
                route: req.route.clone(),
                backend: backend.name.clone(),
                group: server.group.clone(),
                server: server.name.clone(),
                upstream_duration,
            },
        })
    });
    let mut end = RequestEnd {
        start,
        duration: server.metrics.request.clone(),
        log,
    };
    conn.open.listener.responses[crate::state::status_class(resp.status)].fetch_add(1, Relaxed);

    if resp.status == 101 {
        if !req.upgrade {
            return Err(Failure::Answer(ProxyError::UnexpectedUpgrade));
        }
        resp_buf.consume(resp.head_len);
        out.0.extend_from_slice(resp_buf.unread());
        resp_buf.release();
        end.record(0);
        if client.write_all(&out.0).await.is_err() {
            return Err(Failure::Abort);
        }
        drop(out);
        if !inbuf.is_empty() {
            if up.stream.write_all(inbuf.unread()).await.is_err() {
                return Err(Failure::Abort);
            }
            inbuf.release();
        }
        let _tunnel = server.state.connection_guard();
        let _active = active;
        let cut = server.state.sessions();
        tokio::select! {
            ended = splice_tcp(client, &up.stream, conn.idle) => match ended {
                Ended::Idle => tracing::debug!(server = %server.id, "upgraded tunnel idle; closed"),
                other => tracing::debug!(server = %server.id, ?other, "upgraded tunnel ended"),
            },
            _ = cut.cancelled() => tracing::info!(server = %server.id, "tunnel cut by shutdown sessions"),
            _ = stop.cancelled() => tracing::info!(server = %server.id, "tunnel cut by process stop"),
        }
        return Ok(Next::Abort);
    }

    let (framing, decode, client_close) = (resp.framing, resp.decode, resp.client_close);
    resp_buf.consume(resp.head_len);
    let upstream_keeps = !resp.fields.close && !resp.http10 && upload_complete;

    // The body: what came with the head goes in the same write.
    let mut body = BodyWalk::new(framing, decode);
    let mut bytes: u64 = 0;
    if !body.done {
        let (n, sent) = body.take(resp_buf.unread(), &mut out.0).map_err(|_| Failure::Abort)?;
        bytes += sent;
        resp_buf.consume(n);
    }
    if client.write_all(&out.0).await.is_err() {
        finish(server, &mut end, bytes);
        return Err(Failure::Abort);
    }
    let read_timeout = backend.read_timeout;
    let cut = server.state.sessions();
    while !body.done {
        out.0.clear();
        if resp_buf.is_empty() {
            // A large body is read in large pieces, into a buffer kept for the whole body.
            let bulk = match framing {
                Framing::Length(_) => body.left > buf::SIZE as u64,
                _ => true,
            };
            let want = if bulk { BULK } else { buf::SIZE };
            let deadline = if read_timeout.is_zero() {
                Deadline::now() + Duration::from_secs(86400 * 365)
            } else {
                Deadline::now() + read_timeout
            };
            let read = tokio::select! {
                biased;
                _ = stop.cancelled() => None,
                _ = cut.cancelled() => None,
                r = resp_buf.read_bulk(&mut up.stream, want) => Some(r),
                _ = tokio::time::sleep_until(deadline) => {
                    server.state.read_timeouts.fetch_add(1, Relaxed);
                    crate::warn_limited!(crate::ratelimit::Kind::ReadTimeout, server = %server.id,
                        "response body stalled past read_timeout; cutting the client connection");
                    None
                }
            };
            match read {
                Some(Ok(0)) if framing == Framing::Close => break,
                Some(Ok(n)) if n > 0 => {}
                _ => {
                    // The server broke off, stalled or was cut: the client cannot get the
                    // rest, and must not take what it got for the whole.
                    finish(server, &mut end, bytes);
                    return Err(Failure::Abort);
                }
            }
        }
        // Relayed from the read buffer itself (decoded chunks for HTTP/1.0 go through `out`).
        let written = if decode {
            let (n, sent) = body.take(resp_buf.unread(), &mut out.0).map_err(|_| Failure::Abort)?;
            bytes += sent;
            resp_buf.consume_keep(n);
            out.0.is_empty() || client.write_all(&out.0).await.is_ok()
        } else {
            let (n, sent) = body.advance(resp_buf.unread()).map_err(|_| Failure::Abort)?;
            bytes += sent;
            let ok = client.write_all(&resp_buf.unread()[..n]).await.is_ok();
            resp_buf.consume_keep(n);
            ok
        };
        if !written {
            finish(server, &mut end, bytes);
            return Err(Failure::Abort);
        }
    }
    drop(out);
    finish(server, &mut end, bytes);
    drop(active);
    if upstream_keeps && framing != Framing::Close && resp_buf.is_empty() {
        server.pool.put_conn(up.stream);
    }
    Ok(if client_close { Next::Close } else { Next::KeepAlive })
}

fn finish(server: &Server, end: &mut RequestEnd, bytes: u64) {
    server.state.response_bytes.fetch_add(bytes, Relaxed);
    end.record(bytes);
}

/// A new connection to `server` (its connect time recorded).
async fn reconnect(server: &Server, backend: &Backend) -> std::io::Result<UpConn> {
    let connecting = Instant::now();
    let stream = upstream::connect_tcp(server.addr, backend.connect_timeout).await?;
    let connected = connecting.elapsed();
    server.metrics.connect.record(connected);
    Ok(UpConn {
        stream,
        reused: false,
        connected: Some(connected),
    })
}
