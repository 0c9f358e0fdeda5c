//! The request head: parsed in place (strictly, [`super::codec`]), validated, routed with
//! one snapshot load, and rewritten for upstream as the bytes that arrived minus hop-by-hop
//! fields plus veer's own; the sticky, hash and override facts it carries; the mirror copy.

use std::sync::Arc;

use super::codec::{self, put_field, Framing, HeadError, IpText};
use super::conn::Conn;
use crate::access_log::LogHead;
use crate::balance::{hash, Affinity};
use crate::config::{HashKey, HeaderEdits, RouteFilters};
use crate::error::ProxyError;
use crate::proxy::buf::Out;
use crate::proxy::cookies;
use crate::proxy::headers::{self, HeaderList};
use crate::proxy::mirror;
use crate::snapshot::{Backend, ListenerRoutes};

/// The request as parsed, routed and rewritten for upstream.
pub(super) struct Request {
    /// Bytes of the head in the client buffer.
    pub(super) head_len: usize,
    pub(super) head: bool,
    /// Idempotent and bodiless: may be sent again on a fresh connection.
    pub(super) replayable: bool,
    /// GET, HEAD, OPTIONS, TRACE, PUT, DELETE: may go to another server after a gateway
    /// error when its whole body is in hand.
    pub(super) idempotent: bool,
    pub(super) http10: bool,
    /// The client keeps the connection open after this exchange.
    pub(super) keep_alive: bool,
    pub(super) body: Framing,
    pub(super) upgrade: bool,
    pub(super) backend: Arc<Backend>,
    pub(super) route: Arc<str>,
    /// The route's Gateway API filters (response header edits apply on the way back).
    pub(super) filters: Option<Arc<RouteFilters>>,
    pub(super) affinity: Affinity,
    /// The head to send upstream.
    pub(super) out: Out,
    pub(super) log: Option<Arc<LogHead>>,
    /// How long the request waited in the backend's queue for its server.
    pub(super) queued: std::time::Duration,
    /// A copy for the mirror group, with its slot.
    pub(super) mirror: Option<(http::Request<()>, tokio::sync::OwnedSemaphorePermit)>,
}

impl Request {
    /// A response head arrived from `server`: counts it (server, listener, upstream latency)
    /// and returns what records the request when its body ends (duration, the server's
    /// figures, access log). `connected`: the connect time of a new connection (`None`: a
    /// kept-alive one); `retries`: servers tried before this one.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn response_started(
        &mut self,
        conn: &Conn,
        server: &crate::snapshot::Server,
        status: u16,
        upstream_duration: std::time::Duration,
        connected: Option<std::time::Duration>,
        (via, retries): (crate::balance::Via, usize),
        start: std::time::Instant,
    ) -> crate::upstream::RequestEnd {
        use crate::access_log::{PendingLog, Timers};
        use std::sync::atomic::Ordering::Relaxed;
        server.answered(upstream_duration);
        server.state.count_response(status);
        crate::balance::outlier::response(&self.backend, server, status);
        conn.open.listener.responses[crate::state::status_class(status)].fetch_add(1, Relaxed);
        let timers = Timers::proxied(self.queued, connected, upstream_duration);
        let log = self.log.take().map(|head| {
            Box::new(PendingLog {
                head,
                status,
                upstream: crate::upstream::log_upstream(
                    &self.backend,
                    server,
                    self.route.clone(),
                    (via, retries),
                    timers,
                ),
                head_sent: 0,
            })
        });
        crate::upstream::RequestEnd::new(start, server, timers, log)
    }
}

/// Why a request is answered by veer itself.
pub(super) struct Refusal {
    pub(super) error: ProxyError,
    pub(super) log: Option<Arc<LogHead>>,
    pub(super) route: Option<Arc<str>>,
    /// The backend the route chose, when it got that far.
    pub(super) backend: Option<Arc<str>>,
    /// Not an error: `redirect_https` (308) or a route's redirect sends the client here.
    pub(super) redirect: Option<(u16, String)>,
}

impl From<ProxyError> for Refusal {
    fn from(error: ProxyError) -> Self {
        Refusal {
            error,
            log: None,
            route: None,
            backend: None,
            redirect: None,
        }
    }
}

/// Parses, validates, routes and rewrites a request head. `Ok(None)`: the head is not
/// complete yet.
/// `began`: when the head's first bytes were read, if it took more than one read.
pub(super) fn prepare(buf: &[u8], conn: &Conn, began: Option<std::time::Instant>) -> Result<Option<Request>, Refusal> {
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
    let host_field = headers.field(b"host");
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

    let request_id = headers.field(b"x-request-id");
    let mut generated_id = [0u8; 32];
    let id: &[u8] = match request_id {
        Some(id) => id,
        None => {
            headers::hex(&mut generated_id, &fastrand::u128(..).to_be_bytes());
            &generated_id
        }
    };
    let trace = headers::traceparent(headers.field(b"traceparent"));
    let log = conn.shared.access_log.as_ref().map(|log| {
        Arc::new(
            LogHead::raw(
                log,
                conn.peer,
                &conn.listener,
                method,
                host_str,
                path_and_query,
                std::str::from_utf8(id).unwrap_or("-"),
            )
            .with_trace(&trace)
            .with_tls(conn.tls.as_ref())
            .with_client(http10, headers.field(b"referer"), headers.field(b"user-agent"))
            .with_arrival(
                began.map_or(std::time::Duration::ZERO, |t| t.elapsed()),
                conn.shared.current_conns.load(std::sync::atomic::Ordering::Relaxed),
                conn.open.listener.active.load(std::sync::atomic::Ordering::Relaxed),
            ),
        )
    });
    if conn.opts.redirect_https {
        return Err(Refusal {
            redirect: Some((308, headers::https_location(&host, path_and_query))),
            log,
            ..ProxyError::NoRoute.into()
        });
    }

    // Route with exactly one snapshot; keep only the backend for the rest of the exchange.
    let (backend, route, filters, target) = {
        let snap = conn.shared.snapshot.load();
        let Some(ListenerRoutes::Http(table)) = snap.listeners.get(conn.listener.as_str()).map(|l| &l.routes) else {
            return Err(Refusal {
                log,
                ..ProxyError::NoRoute.into()
            });
        };
        match table.find(&host, method, path_and_query, &RawHeaders(headers)) {
            Some(route) => (
                snap.backends[route.backend].clone(),
                route.name.clone(),
                route.filters.clone(),
                route.new_target(path_and_query),
            ),
            None => {
                return Err(Refusal {
                    log,
                    ..ProxyError::NoRoute.into()
                })
            }
        }
    };
    if let Some(r) = filters.as_deref().and_then(|f| f.redirect.as_ref()) {
        let target = target.as_deref().unwrap_or(path_and_query);
        return Err(Refusal {
            redirect: Some((
                r.status,
                headers::redirect_location(r, conn.tls.is_some(), host_str, target),
            )),
            log,
            route: Some(route),
            backend: Some(backend.name.clone()),
            ..ProxyError::NoRoute.into()
        });
    }
    let rewrite = filters.as_deref().and_then(|f| f.rewrite.as_ref());
    let affinity = affinity(&backend, headers, conn.peer.ip());
    let upgrade = fields.upgrade;
    let mut out = Out::new();
    write_upstream_head(
        &mut out.0,
        headers,
        &backend,
        &Rewrite {
            method,
            target: target.as_deref().unwrap_or(path_and_query),
            authority,
            host: rewrite.and_then(|w| w.hostname.as_deref()),
            upgrade,
            chunked: false,
            client: IpText::new(conn.peer.ip()).as_bytes(),
            https: conn.tls.is_some(),
            new_request_id: request_id.is_none().then_some(id),
            traceparent: &trace,
            edits: filters.as_deref().map(|f| &f.request_headers),
        },
    );
    let body = codec::request_framing(&fields);
    if let (Framing::Length(n), max) = (body, conn.opts.max_body) {
        // Refused before any server is contacted.
        if max > 0 && n > max {
            return Err(Refusal {
                log,
                route: Some(route),
                backend: Some(backend.name.clone()),
                ..ProxyError::BodyTooLarge.into()
            });
        }
    }
    let mirror = backend.mirror.as_ref().and_then(|_| {
        let at_least = match body {
            Framing::Length(n) => n,
            _ => 0,
        };
        let permit = mirror::sample(&backend, at_least)?;
        Some((mirror_copy(method, path_and_query, headers, &backend), permit))
    });
    let head = method == "HEAD";
    let idempotent = headers::idempotent(method);
    let replayable = idempotent && body == Framing::None;
    Ok(Some(Request {
        head_len,
        head,
        replayable,
        idempotent,
        http10,
        keep_alive: if http10 { fields.keep_alive } else { !fields.close },
        body,
        upgrade,
        backend,
        route,
        filters,
        affinity,
        out,
        log,
        queued: std::time::Duration::ZERO,
        mirror,
    }))
}

/// Splits a request target into (authority, origin-form path and query). Absolute-form
/// (`http://host/path`) gives its authority; `*` (OPTIONS) is kept as is.
pub(super) fn split_target(target: &str) -> Option<(Option<&str>, &str)> {
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

/// Route conditions over the parsed head.
pub(super) struct RawHeaders<'a, 'h>(&'a [httparse::Header<'h>]);

impl crate::routing::Headers for RawHeaders<'_, '_> {
    fn has(&self, name: &http::HeaderName, value: &[u8]) -> bool {
        self.0
            .iter()
            .any(|h| h.name.as_bytes().eq_ignore_ascii_case(name.as_str().as_bytes()) && h.value == value)
    }
}

/// Reads what the request says about its destination (sticky cookie, override, hash key).
/// Nothing is removed here: the forwarded head leaves veer's sticky cookie out.
pub(crate) fn affinity<H: HeaderList + ?Sized>(b: &Backend, headers: &H, client: std::net::IpAddr) -> Affinity {
    let mut a = Affinity::default();
    if let Some(o) = &b.override_ {
        let named = o
            .header
            .as_ref()
            .and_then(|h| headers.field(h.as_str().as_bytes()))
            .or_else(|| o.cookie.as_deref().and_then(|c| cookies::find_in(headers.cookies(), c)));
        // Unknown group names are ignored.
        a.group = named.and_then(|n| b.groups.iter().position(|g| g.name.as_bytes() == n));
    }
    a.hash = match &b.hash_key {
        Some(HashKey::SourceIp) => Some(hash::ip(client)),
        Some(HashKey::Header(h)) => headers.field(h.as_str().as_bytes()).map(hash::key),
        Some(HashKey::Cookie(c)) => cookies::find_in(headers.cookies(), c).map(hash::key),
        None => None,
    };
    if let Some(st) = &b.sticky {
        a.sticky = cookies::find_in(headers.cookies(), &st.cookie).and_then(cookies::parse_sticky);
    }
    a
}

/// True for a field no proxy forwards (RFC 9110 §7.6.1), or one `Connection` names.
pub(super) fn hop_by_hop(name: &[u8], connection: &[&[u8]]) -> bool {
    const FIXED: [&[u8]; 5] = [b"connection", b"keep-alive", b"te", b"trailer", b"upgrade"];
    FIXED.iter().any(|f| name.eq_ignore_ascii_case(f))
        || (name.len() > 6 && name[..6].eq_ignore_ascii_case(b"proxy-"))
        || connection.iter().any(|c| name.eq_ignore_ascii_case(c))
}

/// The tokens of every `Connection` field (beyond the few that are options, not names).
pub(super) fn connection_names<'h, H: HeaderList + ?Sized>(headers: &'h H, into: &mut [&'h [u8]; 8]) -> usize {
    let mut n = 0;
    for (_, value) in headers
        .each()
        .filter(|(name, _)| name.eq_ignore_ascii_case(b"connection"))
    {
        for t in value.split(|b| *b == b',').map(<[u8]>::trim_ascii) {
            if !t.is_empty() && n < into.len() {
                into[n] = t;
                n += 1;
            }
        }
    }
    n
}

/// What veer changes in the head it forwards, beyond leaving hop-by-hop fields out.
pub(crate) struct Rewrite<'a> {
    pub method: &'a str,
    /// Origin-form path and query (a route's rewrite applied).
    pub target: &'a str,
    /// An absolute-form or HTTP/2 authority: forwarded as Host (RFC 9112 §3.2.2).
    pub authority: Option<&'a str>,
    /// A route's URLRewrite hostname: forwarded as Host; X-Forwarded-Host stays the
    /// client's.
    pub host: Option<&'a str>,
    /// The client asked to upgrade (WebSocket): `Upgrade` and `Connection: upgrade` stay.
    pub upgrade: bool,
    /// The body goes up chunked (an HTTP/2 body of unknown length).
    pub chunked: bool,
    /// The client's address ([`IpText`]), appended to X-Forwarded-For.
    pub client: &'a [u8],
    pub https: bool,
    /// Set when the client sent no X-Request-Id.
    pub new_request_id: Option<&'a [u8]>,
    pub traceparent: &'a headers::TraceParent,
    /// A route's RequestHeaderModifier.
    pub edits: Option<&'a HeaderEdits>,
}

/// The head sent upstream: origin-form HTTP/1.1, the client's fields as they arrived minus
/// hop-by-hop ones (an HTTP/1 body's own `Transfer-Encoding: chunked` stays: the body is
/// relayed as it came), Host from the authority or a rewrite, every `Cookie` in one field
/// (HTTP/2 sends them as crumbs, RFC 9113 §8.2.3) without veer's sticky cookie, and
/// X-Forwarded-For/-Proto/-Host, X-Request-Id and traceparent set. Written from the bytes
/// that arrived, for HTTP/1 and HTTP/2 clients alike: no field map is edited or copied.
pub(crate) fn write_upstream_head<H: HeaderList + ?Sized>(
    out: &mut Vec<u8>,
    headers: &H,
    backend: &Backend,
    r: &Rewrite<'_>,
) {
    out.extend_from_slice(r.method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(r.target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let mut named = [&b""[..]; 8];
    let n = connection_names(headers, &mut named);
    let named = &named[..n];
    let sticky = backend.sticky.as_ref().map(|s| s.cookie.as_str());
    let new_host = r.host.or(r.authority);
    let mut forwarded_for = false;
    let mut cookies_written = false;
    let mut host_written = false;
    let mut client_host: Option<&[u8]> = r.authority.map(str::as_bytes);
    let is = |name: &[u8], what: &[u8]| name.eq_ignore_ascii_case(what);
    for (name, value) in headers.each() {
        if is(name, b"upgrade") && r.upgrade {
            put_field(out, name, value);
            continue;
        }
        if r.edits.is_some_and(|e| e.drops(name)) {
            continue;
        }
        if hop_by_hop(name, named)
            || is(name, b"x-forwarded-proto")
            || is(name, b"x-forwarded-host")
            || is(name, b"traceparent")
        {
            // gRPC's `te: trailers` is hop-by-hop, yet an HTTP/2 server needs it: said again.
            let trailers = || {
                value
                    .split(|b| *b == b',')
                    .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"trailers"))
            };
            if is(name, b"te") && backend.protocol.is_h2() && trailers() {
                out.extend_from_slice(b"te: trailers\r\n");
            }
            continue;
        }
        if is(name, b"host") {
            if r.authority.is_none() {
                client_host = Some(value);
            }
            if !host_written {
                host_written = true;
                put_field(out, b"host", new_host.map_or(value, str::as_bytes));
            }
        } else if is(name, b"x-forwarded-for") {
            // The first one, with the client appended; later ones are folded away.
            if !forwarded_for {
                forwarded_for = true;
                out.extend_from_slice(b"x-forwarded-for: ");
                if !value.trim_ascii().is_empty() {
                    out.extend_from_slice(value);
                    out.extend_from_slice(b", ");
                }
                out.extend_from_slice(r.client);
                out.extend_from_slice(b"\r\n");
            }
        } else if is(name, b"cookie") {
            if !cookies_written {
                cookies_written = true;
                write_cookies(out, headers, sticky);
            }
        } else {
            put_field(out, name, value);
        }
    }
    if let (false, Some(h)) = (host_written, new_host) {
        put_field(out, b"host", h.as_bytes());
    }
    if !forwarded_for {
        out.extend_from_slice(b"x-forwarded-for: ");
        out.extend_from_slice(r.client);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(if r.https {
        b"x-forwarded-proto: https\r\n"
    } else {
        b"x-forwarded-proto: http\r\n"
    });
    if let Some(h) = client_host {
        put_field(out, b"x-forwarded-host", h);
    }
    if let Some(id) = r.new_request_id {
        put_field(out, b"x-request-id", id);
    }
    put_field(out, b"traceparent", r.traceparent);
    for (n, v) in r.edits.into_iter().flat_map(HeaderEdits::written) {
        put_field(out, n.as_str().as_bytes(), v.as_bytes());
    }
    if r.upgrade {
        out.extend_from_slice(b"connection: upgrade\r\n");
    }
    if r.chunked {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// Every `Cookie` field's pairs in one field, joined by `; `, veer's sticky cookie left out
/// (nothing written when nothing is left).
fn write_cookies<H: HeaderList + ?Sized>(out: &mut Vec<u8>, headers: &H, sticky: Option<&str>) {
    let start = out.len();
    out.extend_from_slice(b"cookie: ");
    let first = out.len();
    for value in headers.cookies() {
        let mark = out.len();
        if mark > first {
            out.extend_from_slice(b"; ");
        }
        let before = out.len();
        match sticky {
            Some(s) => cookies::without(value, s, out),
            None => out.extend_from_slice(value),
        }
        if out.len() == before {
            out.truncate(mark);
        }
    }
    if out.len() == first {
        out.truncate(start);
    } else {
        out.extend_from_slice(b"\r\n");
    }
}

/// The request line and fields for the mirrored copy (only built for sampled requests).
pub(crate) fn mirror_copy<H: HeaderList + ?Sized>(
    method: &str,
    path_and_query: &str,
    headers: &H,
    backend: &Backend,
) -> http::Request<()> {
    let mut copy = http::Request::new(());
    *copy.method_mut() = http::Method::from_bytes(method.as_bytes()).unwrap_or(http::Method::GET);
    *copy.uri_mut() = path_and_query.parse().unwrap_or_else(|_| http::Uri::from_static("/"));
    let mut named = [&b""[..]; 8];
    let n = connection_names(headers, &mut named);
    for (name, value) in headers.each() {
        if hop_by_hop(name, &named[..n]) || name.eq_ignore_ascii_case(b"transfer-encoding") {
            continue;
        }
        if let (Ok(k), Ok(v)) = (http::HeaderName::from_bytes(name), http::HeaderValue::from_bytes(value)) {
            copy.headers_mut().append(k, v);
        }
    }
    if let Some(st) = &backend.sticky {
        cookies::remove(copy.headers_mut(), &st.cookie);
    }
    copy
}

// === the exchange ===

#[cfg(test)]
mod tests {
    use super::*;

    // The config below is a fixed, valid test fixture that names backend "b": neither
    // `unwrap` can fail unless the parser or snapshot breaks, which is the test failing.
    fn backend() -> Arc<Backend> {
        let spec = crate::config::parse(
            std::path::Path::new("t.toml"),
            "[[listener]]\nname = \"web\"\nbind = \"127.0.0.1:0\"\nprotocol = \"http\"\n  [[listener.route]]\n  backend = \"b\"\n\
             [[backend]]\nname = \"b\"\nsticky = { cookie = \"VEER_SRV\" }\nservers = [ { name = \"s\", addr = \"127.0.0.1:9\" } ]\n",
        )
        .unwrap();
        let (snap, _) = crate::snapshot::Snapshot::build(Arc::new(spec), &mut crate::state::Registry::default(), 1);
        snap.backend("b").unwrap().clone()
    }

    /// The same fields, parsed from an HTTP/1 head or decoded by HTTP/2 into a map, go
    /// upstream as the same bytes: one set of forwarding rules for both protocols.
    #[test]
    fn a_parsed_head_and_a_field_map_are_forwarded_alike() {
        let raw: &[(&str, &str)] = &[
            ("host", "shop.example"),
            ("connection", "x-hop"),
            ("x-hop", "gone"),
            ("keep-alive", "timeout=5"),
            ("proxy-authorization", "secret"),
            ("cookie", "a=1"),
            ("cookie", "VEER_SRV=00000000000000ff; b=2"),
            ("x-forwarded-for", "203.0.113.9"),
            ("x-forwarded-proto", "https"),
            ("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
            ("accept", "*/*"),
        ];
        let parsed: Vec<httparse::Header<'_>> = raw
            .iter()
            .map(|(n, v)| httparse::Header {
                name: n,
                value: v.as_bytes(),
            })
            .collect();
        let mut map = http::HeaderMap::new();
        for (n, v) in raw {
            map.append(*n, http::HeaderValue::from_static(v));
        }
        let backend = backend();
        let trace = *b"00-0af7651916cd43dd8448eb211c80319c-1111111111111111-01";
        let rewrite = Rewrite {
            method: "GET",
            target: "/a?b=c",
            authority: None,
            host: None,
            upgrade: false,
            chunked: false,
            client: b"127.0.0.1",
            https: false,
            new_request_id: Some(b"0123456789abcdef0123456789abcdef"),
            traceparent: &trace,
            edits: None,
        };
        let (mut from_h1, mut from_h2) = (Vec::new(), Vec::new());
        write_upstream_head(&mut from_h1, &parsed[..], &backend, &rewrite);
        write_upstream_head(&mut from_h2, &map, &backend, &rewrite);
        let expected = "GET /a?b=c HTTP/1.1\r\n\
                        host: shop.example\r\n\
                        cookie: a=1; b=2\r\n\
                        x-forwarded-for: 203.0.113.9, 127.0.0.1\r\n\
                        accept: */*\r\n\
                        x-forwarded-proto: http\r\n\
                        x-forwarded-host: shop.example\r\n\
                        x-request-id: 0123456789abcdef0123456789abcdef\r\n\
                        traceparent: 00-0af7651916cd43dd8448eb211c80319c-1111111111111111-01\r\n\r\n";
        assert_eq!(String::from_utf8_lossy(&from_h1), expected);
        assert_eq!(String::from_utf8_lossy(&from_h2), expected);

        // An authority (HTTP/2, absolute-form) becomes Host; a rewrite's hostname replaces
        // it, while X-Forwarded-Host keeps what the client asked for.
        let mut out = Vec::new();
        let rewritten = Rewrite {
            authority: Some("api.example:8443"),
            host: Some("internal.example"),
            ..rewrite
        };
        write_upstream_head(&mut out, &map, &backend, &rewritten);
        let out = String::from_utf8_lossy(&out);
        assert!(out.contains("\r\nhost: internal.example\r\n"), "{out}");
        assert!(out.contains("\r\nx-forwarded-host: api.example:8443\r\n"), "{out}");
        assert_eq!(
            out.matches("host: ").count(),
            2,
            "one Host and one X-Forwarded-Host: {out}"
        );
    }
}
