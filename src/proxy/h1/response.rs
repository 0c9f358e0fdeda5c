//! What the client is sent: the upstream response head parsed and rewritten for the client
//! (framing, `Connection`, the sticky cookie), and veer's own error responses.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use super::codec::{self, put_field, put_u64, Fields, Framing, HeadLimits};
use super::conn::{Conn, Next};
use super::request::{connection_names, hop_by_hop, Refusal};
use crate::error::ProxyError;
use crate::proxy::buf::Out;
use crate::stream::ClientIo;

/// Writes veer's own answer and closes (after a refused request the connection's state is
/// unknown: a smuggling attempt, a CONNECT client already tunnelling).
pub(super) async fn refuse(client: &mut ClientIo, conn: &Conn, r: Refusal, start: Instant) -> Next {
    if let Some((status, location)) = &r.redirect {
        return redirect(client, conn, *status, location, r.log.as_deref(), start).await;
    }
    let log = r
        .log
        .as_deref()
        .map(|l| (l, r.route.as_deref().zip(r.backend.as_deref())));
    let _ = write_error(client, conn, &r.error, true, log, start).await;
    Next::Close
}

/// `redirect_https` (308 to the same URL on https) or a route's redirect, then close (the
/// client moves elsewhere; a body it may be sending is not read).
async fn redirect(
    client: &mut ClientIo,
    conn: &Conn,
    status: u16,
    location: &str,
    log: Option<&crate::access_log::LogHead>,
    start: Instant,
) -> Next {
    conn.open.listener.responses[crate::state::status_class(status)].fetch_add(1, Relaxed);
    let mut out = Out::new();
    out.0.extend_from_slice(b"HTTP/1.1 ");
    put_u64(&mut out.0, u64::from(status));
    out.0.push(b' ');
    let reason = http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Redirect");
    out.0.extend_from_slice(reason.as_bytes());
    out.0.extend_from_slice(b"\r\n");
    put_field(&mut out.0, b"location", location.as_bytes());
    out.0
        .extend_from_slice(b"content-length: 0\r\nconnection: close\r\n\r\n");
    if let Some(log) = log {
        log.answered(status, start.elapsed());
    }
    let _ = client.send(&out.0).await;
    Next::Close
}

/// veer's own error response: counted, logged (with the route, when known), written with
/// `Connection: close` when `close`. `false` when the client is gone.
pub(super) async fn write_error(
    client: &mut ClientIo,
    conn: &Conn,
    e: &ProxyError,
    close: bool,
    log: Option<(&crate::access_log::LogHead, Option<(&str, &str)>)>,
    start: Instant,
) -> bool {
    tracing::debug!(peer = %conn.peer, side = ?e.side(), error = %e, "synthetic response");
    conn.open.listener.errors[e.reason_index()].fetch_add(1, Relaxed);
    conn.open.listener.responses[crate::state::status_class(e.status().as_u16())].fetch_add(1, Relaxed);
    let mut out = Out::new();
    e.write_response(&mut out.0, close);
    if let Some((log, routed)) = log {
        let body = body_len(e);
        log.refused(e, (out.0.len() as u64 - body, body), start.elapsed(), routed);
    }
    client.send(&out.0).await.is_ok()
}

pub(super) fn body_len(e: &ProxyError) -> u64 {
    let s = e.status();
    (3 + 1 + s.canonical_reason().unwrap_or("").len() + 1) as u64
}

/// The parsed response head, with what the relay decided from it.
pub(super) struct Response {
    pub(super) status: u16,
    pub(super) head_len: usize,
    pub(super) fields: Fields,
    pub(super) http10: bool,
    pub(super) framing: Framing,
    /// Chunks decoded for an HTTP/1.0 client.
    pub(super) decode: bool,
    /// The client connection closes after this response.
    pub(super) client_close: bool,
}

/// What shapes the client's response head besides the server's.
pub(super) struct ClientView<'a> {
    pub(super) limits: HeadLimits,
    pub(super) http10: bool,
    pub(super) keep_alive: bool,
    pub(super) head_request: bool,
    /// The whole request body went up (else the connection cannot be reused).
    pub(super) upload_done: bool,
    pub(super) draining: bool,
    pub(super) set_cookie: Option<&'a http::HeaderValue>,
    /// `hsts` of a TLS listener: added unless the server sent its own.
    pub(super) hsts: Option<&'a http::HeaderValue>,
    /// The route's response header edits.
    pub(super) edits: Option<&'a crate::config::HeaderEdits>,
}

/// Parses a response head from `buf`. For a final (or 101) response it also writes the
/// client's head into `out`, in the same pass over the fields; interim 1xx heads are left
/// for the caller to pass on as they are.
pub(super) fn parse_response(
    buf: &[u8],
    view: &ClientView<'_>,
    out: &mut Vec<u8>,
) -> Result<Option<Response>, ProxyError> {
    let mut slots = codec::slots();
    let Some(head) = codec::parse_response_head(buf, view.limits, view.head_request, &mut slots)
        .map_err(ProxyError::UpstreamMalformed)?
    else {
        return Ok(None);
    };
    let (status, head_len, fields, http10, framing) = (head.status, head.len, head.fields, head.http10, head.framing);
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
        write_client_head(out, head.reason, head.headers, &resp, view);
    }
    Ok(Some(resp))
}

/// The client's response head: the server's status and fields minus hop-by-hop ones, plus
/// veer's (sticky cookie, connection handling).
pub(super) fn write_client_head(
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
    let mut hsts = view.hsts;
    for h in headers {
        let name = h.name.as_bytes();
        let keep = (upgrade && name.eq_ignore_ascii_case(b"upgrade"))
            || !(hop_by_hop(name, &named[..n])
                || (resp.decode && name.eq_ignore_ascii_case(b"transfer-encoding"))
                || view.edits.is_some_and(|e| e.drops(name)));
        if keep {
            put_field(out, name, h.value);
        }
        if hsts.is_some() && name.eq_ignore_ascii_case(b"strict-transport-security") {
            hsts = None;
        }
    }
    if let Some(v) = hsts {
        put_field(out, b"strict-transport-security", v.as_bytes());
    }
    if let Some(c) = view.set_cookie {
        put_field(out, b"set-cookie", c.as_bytes());
    }
    for (n, v) in view.edits.into_iter().flat_map(crate::config::HeaderEdits::written) {
        put_field(out, n.as_str().as_bytes(), v.as_bytes());
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
