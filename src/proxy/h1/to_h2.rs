//! An HTTP/1 client's exchange with an HTTP/2 backend (`protocol = "h2"` / `"h2c"`): the
//! rewritten request head becomes an `http::Request` on the server's multiplexed session,
//! the body (decoded from its HTTP/1 framing) streams up through a channel while the
//! response is awaited, and the response is written back as HTTP/1.1 — with its length
//! when the server gave one, chunked otherwise (trailers as chunked trailers).

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Body;
use tokio::time::Instant as Deadline;

use super::codec::{self, put_field, put_u64, BodyWalk, Framing};
use super::conn::{ack_quickly, cut_short, finish, within, Conn, Failure, Next};
use super::request::{hop_by_hop, Request};
use crate::balance::Via;
use crate::error::{ProxyError, Termination};
use crate::proxy::buf::{self, Buf, Out};
use crate::snapshot::Server;
use crate::stream::ClientIo;
use crate::upstream::{self, BoxError, UpstreamRequestBody};

/// The head veer rewrote for upstream (`req.out`), as an `http::Request` for HTTP/2:
/// connection-specific fields dropped (RFC 9113 §8.2.2), `te` kept only as `trailers`.
pub(crate) fn h2_request(
    head: &[u8],
    body: UpstreamRequestBody,
) -> Result<http::Request<UpstreamRequestBody>, ProxyError> {
    let mut slots = [httparse::EMPTY_HEADER; crate::config::MAX_HEADERS_LIMIT + 8];
    let mut parsed = httparse::Request::new(&mut slots);
    let bad = || ProxyError::BadRequest("request head not expressible in HTTP/2");
    match parsed.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        _ => return Err(bad()),
    }
    let mut req = http::Request::new(body);
    *req.method_mut() = http::Method::from_bytes(parsed.method.unwrap_or("GET").as_bytes()).map_err(|_| bad())?;
    *req.uri_mut() = parsed.path.unwrap_or("/").parse().map_err(|_| bad())?;
    for h in parsed.headers.iter() {
        let name = h.name.as_bytes();
        if name.eq_ignore_ascii_case(b"transfer-encoding") || hop_by_hop(name, &[]) {
            if name.eq_ignore_ascii_case(b"te") && h.value.eq_ignore_ascii_case(b"trailers") {
                req.headers_mut()
                    .append(http::header::TE, http::HeaderValue::from_static("trailers"));
            }
            continue;
        }
        let (Ok(k), Ok(v)) = (
            http::HeaderName::from_bytes(name),
            http::HeaderValue::from_bytes(h.value),
        ) else {
            return Err(bad());
        };
        req.headers_mut().append(k, v);
    }
    Ok(req)
}

/// Streams the request body from the client into `tx` (decoded), within `body_timeout`
/// per read. Ends the channel when the body is complete; aborts it on a client failure.
async fn pump(
    client: &mut ClientIo,
    inbuf: &mut Buf,
    conn: &Conn,
    framing: Framing,
    mut tx: http_body_util::channel::Sender<Bytes, BoxError>,
) -> Result<(), ProxyError> {
    let mut walk = BodyWalk::new(framing, true);
    let mut waited = false;
    loop {
        if !inbuf.is_empty() {
            let mut pieces: Vec<Bytes> = Vec::new();
            let (n, _) = walk
                .advance_with(inbuf.unread(), |d| pieces.push(Bytes::copy_from_slice(d)))
                .map_err(|_| ProxyError::BadRequest("malformed request body"))?;
            inbuf.consume(n);
            conn.open.listener.request_bytes.fetch_add(n as u64, Relaxed);
            for piece in pieces {
                // The server stopped reading (it answered, or reset the stream): the
                // rest of the body is not needed, and the connection cannot be reused.
                if tx.send_data(piece).await.is_err() {
                    return Ok(());
                }
            }
        }
        if walk.done {
            return Ok(());
        }
        if !std::mem::replace(&mut waited, true) {
            ack_quickly(client);
        }
        let timeout = conn.shared.body_timeout;
        let deadline = Deadline::now()
            + if timeout.is_zero() {
                Duration::from_secs(86400 * 365)
            } else {
                timeout
            };
        match within(deadline, &conn.shared.shutdown, inbuf.read_from(client, buf::SIZE)).await {
            Some(Ok(0)) | Some(Err(_)) => {
                tx.abort("incomplete request body".into());
                return Err(ProxyError::BadRequest("incomplete request body"));
            }
            Some(Ok(_)) => {}
            None => {
                tx.abort("request body timed out".into());
                return Err(ProxyError::RequestTimeout);
            }
        }
    }
}

/// One exchange with an HTTP/2 server. `Failure::Answer` only while nothing was written.
#[allow(clippy::too_many_arguments)]
pub(super) async fn exchange(
    client: &mut ClientIo,
    inbuf: &mut Buf,
    conn: &Conn,
    req: &mut Request,
    server: &Arc<Server>,
    start: Instant,
    active: crate::state::ActiveGuard,
    via: Via,
) -> Result<Next, Failure> {
    let backend = req.backend.clone();
    let (tx, body) = if req.body == Framing::None {
        (None, crate::state::pool::no_body())
    } else {
        let (tx, body) = http_body_util::channel::Channel::<Bytes, BoxError>::new(4);
        (Some(tx), body.boxed_unsync())
    };
    let request = h2_request(&req.out.0, body).map_err(Failure::Answer)?;
    let sent_at = Instant::now();
    let send = async {
        match tokio::time::timeout(backend.timeout, upstream::send_h2(server, &backend, request)).await {
            Err(_) => {
                backend.state.timeouts.fetch_add(1, Relaxed);
                Err(ProxyError::Timeout)
            }
            Ok(Ok(sent)) => Ok(sent),
            Ok(Err(upstream::SendError::Connect(e, _))) => Err(ProxyError::Connect(e)),
            Ok(Err(upstream::SendError::Protocol(e))) => Err(ProxyError::UpstreamProtocol(e)),
        }
    };
    let (sent, pumped) = match tx {
        Some(tx) => tokio::join!(send, pump(client, inbuf, conn, req.body, tx)),
        None => (send.await, Ok(())),
    };
    let upload_complete = pumped.is_ok();
    let (resp, connected) = match (sent, pumped) {
        (_, Err(e)) => return Err(Failure::Answer(e)),
        (Err(ProxyError::Connect(e)), _) => {
            crate::balance::outlier::connect_failure(&backend, server);
            return Err(Failure::Answer(ProxyError::Connect(e)));
        }
        (Err(e), _) => return Err(Failure::Answer(e)),
        (Ok(r), _) => r,
    };
    if let Some(d) = connected {
        server.metrics.connect.record(d);
        server.state.mark_reachable();
    }
    let status = resp.status().as_u16();
    let mut end = req.response_started(conn, server, status, sent_at.elapsed(), connected, (via, 0), start);

    // The client's head: length when known, else chunked (HTTP/1.0: until close).
    let (parts, mut body) = resp.into_parts();
    let bodiless = req.head || status == 204 || status == 304 || (100..200).contains(&status);
    let length = body.size_hint().exact().filter(|_| !bodiless);
    let chunked = !bodiless && length.is_none() && !req.http10;
    let close = !req.keep_alive
        || !upload_complete
        || conn.drain.is_cancelled()
        || (!bodiless && length.is_none() && req.http10);
    let mut out = Out::new();
    out.0.extend_from_slice(b"HTTP/1.1 ");
    put_u64(&mut out.0, status as u64);
    out.0.push(b' ');
    out.0
        .extend_from_slice(parts.status.canonical_reason().unwrap_or("").as_bytes());
    out.0.extend_from_slice(b"\r\n");
    let mut hsts = conn.opts.hsts.as_ref();
    for (k, v) in &parts.headers {
        if hop_by_hop(k.as_str().as_bytes(), &[]) || k == http::header::CONTENT_LENGTH {
            continue;
        }
        if k == http::header::STRICT_TRANSPORT_SECURITY {
            hsts = None;
        }
        put_field(&mut out.0, k.as_str().as_bytes(), v.as_bytes());
    }
    if let (Some(c), false) = (&server.set_cookie, via == Via::Sticky) {
        put_field(&mut out.0, b"set-cookie", c.as_bytes());
    }
    if let Some(v) = hsts {
        put_field(&mut out.0, b"strict-transport-security", v.as_bytes());
    }
    match (length, chunked) {
        (Some(n), _) => {
            out.0.extend_from_slice(b"content-length: ");
            put_u64(&mut out.0, n);
            out.0.extend_from_slice(b"\r\n");
        }
        (None, true) => out.0.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        (None, false) if req.head && parts.headers.contains_key(http::header::CONTENT_LENGTH) => {
            // A HEAD answer keeps the length the GET would have.
            if let Some(v) = parts.headers.get(http::header::CONTENT_LENGTH) {
                put_field(&mut out.0, b"content-length", v.as_bytes());
            }
        }
        (None, false) => {}
    }
    if close {
        out.0.extend_from_slice(b"connection: close\r\n");
    }
    out.0.extend_from_slice(b"\r\n");
    if let Some(log) = end.log.as_mut() {
        log.head_sent = out.0.len() as u64;
    }
    if client.send(&out.0).await.is_err() {
        return cut_short(server, &mut end, 0, Termination::CLIENT_ABORT);
    }

    let relayed = if bodiless {
        Ok(0)
    } else {
        relay_body(client, conn, server, &mut body, chunked, backend.read_timeout).await
    };
    let bytes = match relayed {
        Ok(n) => n,
        Err((n, ended)) => {
            return cut_short(server, &mut end, n, ended);
        }
    };
    finish(server, &mut end, bytes, Termination::COMPLETE);
    drop(active);
    Ok(if close { Next::Close } else { Next::KeepAlive })
}

/// The response body to the client (chunked when `chunked`, HTTP/2 trailers as chunked
/// trailers). `Ok`: body bytes sent; `Err`: the bytes sent before the body broke (the
/// client connection is then cut: its response is incomplete), and how it broke.
async fn relay_body(
    client: &mut ClientIo,
    conn: &Conn,
    server: &Server,
    body: &mut hyper::body::Incoming,
    mut chunked: bool,
    read_timeout: Duration,
) -> Result<u64, (u64, Termination)> {
    let mut bytes = 0u64;
    let cut = server.state.sessions();
    let read_timeout = if read_timeout.is_zero() {
        Duration::from_secs(86400 * 365)
    } else {
        read_timeout
    };
    let mut out = Out::new();
    loop {
        let deadline = Deadline::now() + read_timeout;
        let frame = tokio::select! {
            _ = cut.cancelled() => Err(Termination::KILLED),
            f = within(deadline, &conn.shared.shutdown, body.frame()) => match f {
                Some(f) => Ok(f),
                None if conn.shared.shutdown.is_cancelled() => Err(Termination::KILLED),
                None => {
                    server.state.read_timeouts.fetch_add(1, Relaxed);
                    Err(Termination::SERVER_TIMEOUT)
                }
            },
        };
        out.0.clear();
        let frame = frame.map_err(|ended| (bytes, ended))?;
        match frame {
            None if body.is_end_stream() => break,
            None | Some(Err(_)) => return Err((bytes, Termination::SERVER_ABORT)),
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    bytes += data.len() as u64;
                    if chunked {
                        codec::put_hex(&mut out.0, data.len() as u64);
                        out.0.extend_from_slice(b"\r\n");
                        out.0.extend_from_slice(data);
                        out.0.extend_from_slice(b"\r\n");
                    } else {
                        out.0.extend_from_slice(data);
                    }
                } else if let (Some(trailers), true) = (frame.trailers_ref(), chunked) {
                    out.0.extend_from_slice(b"0\r\n");
                    for (k, v) in trailers {
                        put_field(&mut out.0, k.as_str().as_bytes(), v.as_bytes());
                    }
                    out.0.extend_from_slice(b"\r\n");
                    chunked = false; // the last chunk is written
                }
                if !out.0.is_empty() && client.send(&out.0).await.is_err() {
                    return Err((bytes, Termination::CLIENT_ABORT));
                }
            }
        }
    }
    if chunked && client.send(b"0\r\n\r\n").await.is_err() {
        return Err((bytes, Termination::CLIENT_ABORT));
    }
    Ok(bytes)
}
