//! The upstream side of one exchange: pick a server, take (or open) a connection this task
//! owns, write the head, relay the request body while watching for the response, relay the
//! response body, and hand the connection back to the pool when both ends were clean.
//! Retries a replayable request once on a fresh connection when a pooled one was closed
//! under it.

use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::time::Instant as Deadline;

use super::codec::{BodyWalk, Framing};
use super::conn::{ack_quickly, cut_short, finish, within, Conn, Failure, Next, BULK};
use super::request::Request;
use super::response::{parse_response, write_error, ClientView};
use crate::balance::{self, Via};
use crate::error::{ProxyError, Termination};
use crate::proxy::buf::{self, Buf, Out};
use crate::proxy::mirror;
use crate::proxy::splice::{splice, Ended};
use crate::snapshot::{Backend, Server};
use crate::state::Counter;
use crate::stream::{ClientIo, UpstreamIo};
use crate::upstream;

/// An upstream connection this task owns for the exchange.
pub(super) struct UpConn {
    pub(super) stream: UpstreamIo,
    /// Taken from the pool (may have been closed by the server meanwhile).
    pub(super) reused: bool,
    pub(super) connected: Option<Duration>,
}

pub(super) async fn forward(
    client: &mut ClientIo,
    inbuf: &mut Buf,
    conn: &Conn,
    mut req: Request,
    start: Instant,
) -> Next {
    let backend = req.backend.clone();
    balance::retry::request(&backend);
    let mut tried: Vec<Arc<Server>> = Vec::new();
    // After a failed attempt: what the client gets if no other server can take the request.
    let mut last: Option<ProxyError> = None;
    loop {
        // Only a backend with `maxconn` servers has a queue to time.
        let queued_from = backend.limited.then(Instant::now);
        let (server, via, active) =
            match balance::queue::acquire(&backend, &req.affinity, &tried, Counter::Requests).await {
                Ok(t) => {
                    req.queued = queued_from.map_or(Duration::ZERO, |t| t.elapsed());
                    t
                }
                Err(ProxyError::NoServer) => {
                    return answer(client, conn, &req, last.unwrap_or(ProxyError::NoServer), start).await
                }
                Err(e) => return answer(client, conn, &req, e, start).await,
            };
        if backend.protocol.is_h2() {
            // Not retried on another server: the body may be part-sent already. Boxed: the
            // HTTP/2 bridge's state would otherwise enlarge every HTTP/1 exchange.
            let exchange = Box::pin(super::to_h2::exchange(
                client, inbuf, conn, &mut req, &server, start, active, via,
            ));
            return settle(exchange.await, client, conn, &req, &server, start).await;
        }
        let up = match upstream_conn(&server, &backend, proxied(client, conn, &backend)).await {
            Ok(up) => up,
            Err(e) if crate::ratelimit::is_local_resource_error(&e) => {
                crate::warn_limited!(crate::ratelimit::Kind::LocalResources, server = %server.id, error = %e,
                    "upstream connect failed for want of local resources; answering 503, no server ejected");
                return answer(client, conn, &req, ProxyError::LocalResources(e), start).await;
            }
            Err(e) => {
                crate::warn_limited!(crate::ratelimit::Kind::UpstreamConnect, server = %server.id, error = %e, "upstream connect failed; ejecting");
                balance::outlier::connect_failure(&backend, &server);
                let e = ProxyError::Connect(e);
                if !backend.retry_on.connect || !balance::retry::allow(&backend, &req.affinity, &tried, &server) {
                    return answer(client, conn, &req, e, start).await;
                }
                tried.push(server);
                last = Some(e);
                continue;
            }
        };
        if up.connected.is_some() {
            server.state.mark_reachable();
        }
        let done = exchange_with(client, inbuf, conn, &mut req, &server, up, start, active, via, &tried).await;
        match done {
            Err(Failure::Retry(e)) => {
                tracing::debug!(server = %server.id, error = %e, "retrying on another server");
                // A gateway error or a broken connection: the server's failure all the same.
                balance::outlier::failed(&backend, &server, e.status().as_u16());
                tried.push(server);
                last = Some(e);
            }
            done => return settle(done, client, conn, &req, &server, start).await,
        }
    }
}

/// The end of an exchange: the next step for the connection, or veer's answer — which,
/// when the server failed (timed out, broke off, answered nonsense), also counts against
/// it for outlier detection.
async fn settle(
    done: Result<Next, Failure>,
    client: &mut ClientIo,
    conn: &Conn,
    req: &Request,
    server: &Server,
    start: Instant,
) -> Next {
    match done {
        Ok(next) => next,
        Err(Failure::Answer(e)) | Err(Failure::Retry(e)) => {
            if e.side() == crate::error::Side::Upstream {
                balance::outlier::failed(&req.backend, server, e.status().as_u16());
            }
            answer(client, conn, req, e, start).await
        }
        Err(Failure::Abort) => Next::Abort,
    }
}

/// With `send_proxy`: the (client, local) addresses the PROXY header announces.
pub(super) fn proxied(client: &ClientIo, conn: &Conn, backend: &Backend) -> Option<(SocketAddr, SocketAddr)> {
    backend
        .send_proxy
        .map(|_| (conn.peer, client.local_addr().unwrap_or(conn.peer)))
}

/// A pooled connection, or a new one. A connection that opened with a PROXY header names
/// one client: it is neither taken from nor given to the pool.
pub(super) async fn upstream_conn(
    server: &Server,
    backend: &Backend,
    proxied: Option<(SocketAddr, SocketAddr)>,
) -> std::io::Result<UpConn> {
    let pooled = if backend.send_proxy.is_none() {
        server.pool.take_conn()
    } else {
        None
    };
    match pooled {
        Some(stream) => Ok(UpConn {
            stream,
            reused: true,
            connected: None,
        }),
        None => reconnect(server, backend, proxied).await,
    }
}

/// veer's own answer to a request it could not forward; keeps the connection only when
/// the request was fully read and the client keeps it.
pub(super) async fn answer(client: &mut ClientIo, conn: &Conn, req: &Request, e: ProxyError, start: Instant) -> Next {
    let close = !req.keep_alive
        || req.body != Framing::None
        || conn.drain.is_cancelled()
        || matches!(e, ProxyError::BadRequest(_) | ProxyError::RequestTimeout);
    let log = req.log.as_deref().map(|l| (l, Some((&*req.route, &*req.backend.name))));
    if !write_error(client, conn, &e, close, log, start).await {
        return Next::Abort;
    }
    if close {
        Next::Close
    } else {
        Next::KeepAlive
    }
}

/// Request body progress while uploading, with a copy for the mirror when sampled.
pub(super) struct Upload {
    pub(super) walk: BodyWalk,
    /// Copied for the mirror (decoded), up to its limit; `None` once over it.
    pub(super) copy: Option<Vec<u8>>,
    pub(super) copy_limit: u64,
    /// The listener's `max_body` (0: none), and the body bytes taken so far.
    max_body: u64,
    sent: u64,
}

impl Upload {
    fn new(framing: Framing, mirror_limit: Option<u64>, max_body: u64) -> Self {
        Upload {
            walk: BodyWalk::new(framing, false),
            copy: mirror_limit.map(|_| Vec::new()),
            copy_limit: mirror_limit.unwrap_or(0),
            max_body,
            sent: 0,
        }
    }

    /// How many of `bytes` belong to the body (the rest is the next request). A body
    /// growing past the listener's `max_body` (chunked: its length was not known) ends the
    /// upload with 413, and the upstream request is abandoned.
    fn take(&mut self, bytes: &[u8]) -> Result<usize, ProxyError> {
        let (copy, limit) = (&mut self.copy, self.copy_limit);
        let (n, decoded) = self
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
        self.sent += decoded;
        if self.max_body > 0 && self.sent > self.max_body {
            return Err(ProxyError::BodyTooLarge);
        }
        Ok(n)
    }

    /// The whole body went up.
    fn done(&self) -> bool {
        self.walk.done
    }
}

#[allow(clippy::too_many_arguments)]
pub(super) async fn exchange_with(
    client: &mut ClientIo,
    inbuf: &mut Buf,
    conn: &Conn,
    req: &mut Request,
    server: &Arc<Server>,
    mut up: UpConn,
    start: Instant,
    active: crate::state::ActiveGuard,
    via: Via,
    tried: &[Arc<Server>],
) -> Result<Next, Failure> {
    let backend = req.backend.clone();
    let stop = &conn.shared.shutdown;
    let sent_at = Instant::now();
    let mirror_limit = req.mirror.as_ref().and(backend.mirror.as_ref().map(|m| m.max_body));
    let mut upload = Upload::new(req.body, mirror_limit, conn.opts.max_body);

    // Head, and the body bytes that came with it, in one write.
    let head_len = req.out.0.len();
    if !upload.done() {
        let n = upload.take(inbuf.unread()).map_err(Failure::Answer)?;
        req.out.0.extend_from_slice(&inbuf.unread()[..n]);
        inbuf.consume(n);
        if !upload.done() {
            ack_quickly(client);
        }
    }
    // The whole request is in `req.out` and small: another server may get it after a
    // gateway error or a broken connection (when `retry_on` says so).
    let resendable = req.idempotent && upload.done() && req.out.0.len() - head_len <= crate::config::RETRY_BODY_MAX;
    // Bytes written to the server, for `show stat`'s `bin`.
    let mut sent_up = 0u64;
    // The failure `e` of this attempt: another attempt elsewhere, if `on` (a `retry_on`
    // kind) and the retry rules allow it, else the answer.
    let retry = |req: &mut Request, on: bool, e: ProxyError| -> Failure {
        if !(resendable && on && balance::retry::allow(&backend, &req.affinity, tried, server)) {
            return Failure::Answer(e);
        }
        // The body went into `out`: nothing of it is left to read from the client.
        req.body = Framing::None;
        if req.mirror.take().is_some() {
            mirror::skipped(&backend);
        }
        Failure::Retry(e)
    };
    let mut resp_buf = Buf::default();
    // A reused connection the server closed meanwhile fails on write or with EOF before
    // any byte of a response: a replayable request is sent again on a new connection.
    loop {
        let written = up.stream.send(&req.out.0).await;
        let fresh_retry = |up: &UpConn| up.reused && req.replayable;
        if let Err(e) = written {
            if fresh_retry(&up) {
                // Only pooled connections are retried: none carries a PROXY header.
                up = reopen(req, server, &backend, &retry).await?;
                continue;
            }
            return Err(retry(req, backend.retry_on.reset, ProxyError::UpstreamIo(e)));
        }
        sent_up += req.out.0.len() as u64;
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
                // Only pooled connections are retried: none carries a PROXY header.
                up = reopen(req, server, &backend, &retry).await?;
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
                hsts: conn.opts.hsts.as_ref(),
                edits: req.filters.as_deref().map(|f| &f.response_headers),
            };
            match parse_response(resp_buf.unread(), &view, &mut out.0) {
                Err(e) => return Err(Failure::Answer(e)),
                Ok(Some(r)) if (100..200).contains(&r.status) && r.status != 101 => {
                    // Interim responses (100 Continue, 103) pass to HTTP/1.1 clients.
                    if !req.http10 && client.send(&resp_buf.unread()[..r.head_len]).await.is_err() {
                        return Err(Failure::Abort);
                    }
                    resp_buf.consume(r.head_len);
                    continue;
                }
                Ok(Some(r)) if matches!(r.status, 502..=504) && upload.done() => {
                    // A gateway error another server may not repeat: if allowed, the
                    // request goes elsewhere (the answer still counts as this server's).
                    let e = ProxyError::UpstreamMalformed("gateway error from upstream");
                    match retry(req, backend.retry_on.gateway_error, e) {
                        retried @ Failure::Retry(_) => {
                            server.state.count_response(r.status);
                            server.answered(sent_at.elapsed());
                            return Err(retried);
                        }
                        _ => break r,
                    }
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
                Some(Ok(0)) if resp_buf.is_empty() => {
                    let e = ProxyError::UpstreamIo(std::io::ErrorKind::UnexpectedEof.into());
                    return Err(retry(req, backend.retry_on.reset, e));
                }
                Some(Ok(0)) => {
                    return Err(Failure::Answer(ProxyError::UpstreamMalformed(
                        "incomplete response head",
                    )))
                }
                Some(Ok(_)) => continue,
                Some(Err(e)) if resp_buf.is_empty() => {
                    return Err(retry(req, backend.retry_on.reset, ProxyError::UpstreamIo(e)));
                }
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
                let sent = up.stream.send(&inbuf.unread()[..n]).await;
                inbuf.consume(n);
                if let Err(e) = sent {
                    return Err(Failure::Answer(ProxyError::UpstreamIo(e)));
                }
                sent_up += n as u64;
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

    let mut end = req.response_started(
        conn,
        server,
        resp.status,
        sent_at.elapsed(),
        up.connected,
        (via, tried.len()),
        start,
    );
    end.sent = sent_up;
    end.head = resp.head_len as u64;

    if resp.status == 101 {
        if !req.upgrade {
            return Err(Failure::Answer(ProxyError::UnexpectedUpgrade));
        }
        resp_buf.consume(resp.head_len);
        out.0.extend_from_slice(resp_buf.unread());
        resp_buf.release();
        end.record(&server.state, 0, Termination::COMPLETE);
        if client.send(&out.0).await.is_err() {
            return Err(Failure::Abort);
        }
        drop(out);
        if !inbuf.is_empty() {
            if up.stream.send(inbuf.unread()).await.is_err() {
                return Err(Failure::Abort);
            }
            inbuf.release();
        }
        // A tunnel's bytes are acknowledged as they come (HTTP listeners delay ACKs).
        ack_quickly(client);
        let _tunnel = server.state.connection_guard();
        let _active = active;
        let cut = server.state.sessions();
        tokio::select! {
            ended = splice(client, &mut up.stream, conn.opts.idle_timeout) => match ended {
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

    if let Some(log) = end.log.as_mut() {
        log.head_sent = out.0.len() as u64;
    }
    // The body: what came with the head goes in the same write.
    let mut body = BodyWalk::new(framing, decode);
    let mut bytes: u64 = 0;
    if !body.done {
        let Ok((n, sent)) = body.take(resp_buf.unread(), &mut out.0) else {
            return cut_short(server, &mut end, bytes, Termination::SERVER_ABORT);
        };
        bytes += sent;
        resp_buf.consume(n);
    }
    if client.send(&out.0).await.is_err() {
        return cut_short(server, &mut end, bytes, Termination::CLIENT_ABORT);
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
                _ = stop.cancelled() => Err(Termination::KILLED),
                _ = cut.cancelled() => Err(Termination::KILLED),
                r = resp_buf.read_bulk(&mut up.stream, want) => Ok(r),
                _ = tokio::time::sleep_until(deadline) => {
                    server.state.read_timeouts.fetch_add(1, Relaxed);
                    crate::warn_limited!(crate::ratelimit::Kind::ReadTimeout, server = %server.id,
                        "response body stalled past read_timeout; cutting the client connection");
                    Err(Termination::SERVER_TIMEOUT)
                }
            };
            match read {
                Ok(Ok(0)) if framing == Framing::Close => break,
                Ok(Ok(n)) if n > 0 => {}
                broken => {
                    // The server broke off, stalled or was cut: the client cannot get the
                    // rest, and must not take what it got for the whole.
                    return cut_short(
                        server,
                        &mut end,
                        bytes,
                        broken.err().unwrap_or(Termination::SERVER_ABORT),
                    );
                }
            }
        }
        // Relayed from the read buffer itself (decoded chunks for HTTP/1.0 go through `out`).
        let written = if decode {
            let Ok((n, sent)) = body.take(resp_buf.unread(), &mut out.0) else {
                return cut_short(server, &mut end, bytes, Termination::SERVER_ABORT);
            };
            bytes += sent;
            resp_buf.consume_keep(n);
            out.0.is_empty() || client.send(&out.0).await.is_ok()
        } else {
            let Ok((n, sent)) = body.advance(resp_buf.unread()) else {
                return cut_short(server, &mut end, bytes, Termination::SERVER_ABORT);
            };
            bytes += sent;
            let ok = client.send(&resp_buf.unread()[..n]).await.is_ok();
            resp_buf.consume_keep(n);
            ok
        };
        if !written {
            return cut_short(server, &mut end, bytes, Termination::CLIENT_ABORT);
        }
    }
    drop(out);
    finish(server, &mut end, bytes, Termination::COMPLETE);
    drop(active);
    if upstream_keeps && framing != Framing::Close && resp_buf.is_empty() && backend.send_proxy.is_none() {
        server.pool.put_conn(up.stream);
    }
    Ok(if client_close { Next::Close } else { Next::KeepAlive })
}

/// A new connection for a request whose pooled one the server had closed; when `server`
/// cannot be reached now, the request goes to another (`retry_on` "connect") or fails.
async fn reopen(
    req: &mut Request,
    server: &Server,
    backend: &Backend,
    retry: &impl Fn(&mut Request, bool, ProxyError) -> Failure,
) -> Result<UpConn, Failure> {
    // The same server again on a fresh connection: HAProxy's `wretr`.
    server.state.stats.retries.fetch_add(1, Relaxed);
    reconnect(server, backend, None).await.map_err(|e| {
        crate::warn_limited!(crate::ratelimit::Kind::UpstreamConnect, server = %server.id, error = %e, "upstream connect failed; ejecting");
        balance::outlier::connect_failure(backend, server);
        retry(req, backend.retry_on.connect, ProxyError::Connect(e))
    })
}

/// A new connection to `server` (its connect time recorded).
pub(super) async fn reconnect(
    server: &Server,
    backend: &Backend,
    proxied: Option<(SocketAddr, SocketAddr)>,
) -> std::io::Result<UpConn> {
    let connecting = Instant::now();
    // Boxed: connecting (a TLS handshake's state included) is rarer than reusing, and its
    // state would otherwise be carried by every exchange.
    let stream = Box::pin(upstream::open(server.addr, backend, proxied)).await?;
    let connected = connecting.elapsed();
    server.metrics.connect.record(connected);
    Ok(UpConn {
        stream,
        reused: false,
        connected: Some(connected),
    })
}
