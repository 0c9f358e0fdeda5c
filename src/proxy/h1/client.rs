//! The HTTP/1 engine's client side for HTTP/2 clients' requests: the head as
//! [`super::request::write_upstream_head`] wrote it, the body streamed (chunked when its
//! length is not known), the response head parsed with the same codec into the
//! `http::Response` HTTP/2 sends on (hop-by-hop fields left out), and the response body read
//! from the socket by [`RawBody`], which hands the connection back to the server's pool when
//! the body ends. Same pool, same framing rules as HTTP/1 exchanges; no hyper client task or
//! channel.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, SizeHint};

use super::codec::{self, BodyWalk, Framing, HeadLimits};
use super::request::{connection_names, hop_by_hop};
use crate::error::ProxyError;
use crate::proxy::body::{client_fault, ClientBodyError};
use crate::proxy::buf::Buf;
use crate::snapshot::{Backend, Server};
use crate::stream::UpstreamIo;
use crate::upstream::{self, BodyError, Pool, UpstreamRequestBody};

/// Why a request could not be exchanged.
pub enum SendError {
    /// No connection could be made; nothing was sent and the body is handed back.
    Connect(io::Error, UpstreamRequestBody),
    /// The exchange failed: the error to answer with.
    Failed(ProxyError),
}

/// The request as sent: its head already written for upstream, and what its framing says.
pub struct Head<'a> {
    /// Origin-form HTTP/1.1 head ([`super::request::write_upstream_head`]).
    pub bytes: &'a [u8],
    /// Idempotent and bodiless: sent again on a new connection when a pooled one turns out
    /// to be closed.
    pub replayable: bool,
    /// A HEAD request: the response has no body, whatever it says.
    pub head_request: bool,
    /// The body goes up chunked (the head says so).
    pub chunked: bool,
}

/// Sends the request to `server` on a pooled or new connection; returns the response (its
/// body streams from the socket) and, for a new connection, how long connecting took.
/// `proxied`: with `send_proxy`, the addresses the PROXY header announces (the connection
/// is then neither pooled nor reused).
pub async fn send(
    server: &Server,
    backend: &Backend,
    limits: HeadLimits,
    head: Head<'_>,
    mut body: UpstreamRequestBody,
    proxied: Option<(std::net::SocketAddr, std::net::SocketAddr)>,
) -> Result<(http::Response<RawBody>, Option<Duration>), SendError> {
    let pooled = if backend.send_proxy.is_none() {
        server.pool.take_conn()
    } else {
        None
    };
    let (mut stream, mut reused, mut connected) = match pooled {
        Some(s) => (s, true, None),
        None => {
            let started = Instant::now();
            // Boxed, like the upload below: rare per request, and large futures inline
            // would be copied with this one on every request.
            match Box::pin(upstream::open(server.addr, backend, proxied)).await {
                Ok(s) => (s, false, Some(started.elapsed())),
                Err(e) => return Err(SendError::Connect(e, body)),
            }
        }
    };
    let bodiless = body.is_end_stream();
    let replayable = head.replayable && bodiless;
    let mut resp = Buf::default();
    loop {
        let sent = stream.send(head.bytes).await;
        // A pooled connection the server closed meanwhile: a replayable request goes again on
        // a new one.
        let first = match sent {
            Ok(()) if reused && replayable => resp.read_from(&mut stream, limits.size).await.ok(),
            Ok(()) => Some(1),
            Err(_) => None,
        };
        match first {
            Some(n) if n > 0 => break,
            _ if reused && replayable => {
                resp = Buf::default();
                let started = Instant::now();
                // Only pooled connections are retried: none carries a PROXY header.
                stream = Box::pin(upstream::open(server.addr, backend, None))
                    .await
                    .map_err(|e| SendError::Failed(ProxyError::Connect(e)))?;
                connected = Some(started.elapsed());
                reused = false;
            }
            _ => {
                return Err(SendError::Failed(ProxyError::UpstreamIo(
                    io::ErrorKind::BrokenPipe.into(),
                )))
            }
        }
    }
    if !bodiless {
        Box::pin(upload(&mut stream, &mut body, head.chunked))
            .await
            .map_err(SendError::Failed)?;
    }
    // The response head (interim 1xx heads are dropped: HTTP/2 clients did not ask).
    loop {
        if !resp.is_empty() {
            match parse(resp.unread(), head.head_request, limits).map_err(SendError::Failed)? {
                Some((status, _, len)) if (100..200).contains(&status) => {
                    resp.consume(len);
                    continue;
                }
                Some((_, response, len)) => {
                    resp.consume(len);
                    let (framing, reusable) = response.1;
                    let response = response.0.map(|()| RawBody {
                        stream: Some(stream),
                        buf: resp,
                        walk: BodyWalk::new(framing, true),
                        pool: server.pool.clone(),
                        reusable: reusable && backend.send_proxy.is_none(),
                    });
                    return Ok((response, connected));
                }
                None => {}
            }
        }
        match resp.read_from(&mut stream, limits.size).await {
            Ok(0) => {
                return Err(SendError::Failed(ProxyError::UpstreamIo(
                    io::ErrorKind::UnexpectedEof.into(),
                )))
            }
            Ok(_) => {}
            Err(e) => return Err(SendError::Failed(ProxyError::UpstreamIo(e))),
        }
    }
}

/// Streams the request body up; a failure of the client's body is the client's.
async fn upload(stream: &mut UpstreamIo, body: &mut UpstreamRequestBody, chunked: bool) -> Result<(), ProxyError> {
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| match client_fault(e.as_ref()) {
            Some(ClientBodyError::Timeout) => ProxyError::RequestTimeout,
            Some(ClientBodyError::TooLarge) => ProxyError::BodyTooLarge,
            _ => ProxyError::BadRequest("malformed or incomplete request body"),
        })?;
        let Ok(data) = frame.into_data() else { continue };
        if data.is_empty() {
            continue;
        }
        let written = if chunked {
            let size = format!("{:x}\r\n", data.len());
            let mut w = stream.send(size.as_bytes()).await;
            if w.is_ok() {
                w = stream.send(&data).await;
            }
            if w.is_ok() {
                w = stream.send(b"\r\n").await;
            }
            w
        } else {
            stream.send(&data).await
        };
        written.map_err(ProxyError::UpstreamIo)?;
    }
    if chunked {
        stream.send(b"0\r\n\r\n").await.map_err(ProxyError::UpstreamIo)?;
    }
    Ok(())
}

type Parsed = (http::Response<()>, (Framing, bool));

/// A response head: (status, the response with its fields and (framing, reusable), head
/// length), or `None` when incomplete.
fn parse(buf: &[u8], head_request: bool, limits: HeadLimits) -> Result<Option<(u16, Parsed, usize)>, ProxyError> {
    let mut slots = codec::slots();
    let Some(head) =
        codec::parse_response_head(buf, limits, head_request, &mut slots).map_err(ProxyError::UpstreamMalformed)?
    else {
        return Ok(None);
    };
    let (status, len, framing) = (head.status, head.len, head.framing);
    let mut response = http::Response::new(());
    *response.status_mut() =
        http::StatusCode::from_u16(status).map_err(|_| ProxyError::UpstreamMalformed("bad status"))?;
    // One copy of the head; every value is a slice of it rather than a copy of its own.
    let block = Bytes::copy_from_slice(&buf[..len]);
    let mut named = [&b""[..]; 8];
    let n = connection_names(head.headers, &mut named);
    let fields = response.headers_mut();
    fields.reserve(head.headers.len());
    for h in head.headers.iter() {
        let name = h.name.as_bytes();
        if name.eq_ignore_ascii_case(b"transfer-encoding") || hop_by_hop(name, &named[..n]) {
            continue;
        }
        if let (Ok(k), Ok(v)) = (
            http::HeaderName::from_bytes(name),
            http::HeaderValue::from_maybe_shared(same_bytes(&block, buf, h.value)),
        ) {
            fields.append(k, v);
        }
    }
    let reusable = !head.fields.close && !head.http10 && framing != Framing::Close;
    Ok(Some((status, (response, (framing, reusable)), len)))
}

/// The bytes of `block` (a copy of `buf`) where `part` (a slice of `buf`) lies.
fn same_bytes(block: &Bytes, buf: &[u8], part: &[u8]) -> Bytes {
    let at = (part.as_ptr() as usize).saturating_sub(buf.as_ptr() as usize);
    block.slice(at.min(block.len())..(at + part.len()).min(block.len()))
}

/// A response body read from the upstream socket; the connection returns to the pool when
/// the body ends cleanly.
pub struct RawBody {
    stream: Option<UpstreamIo>,
    buf: Buf,
    walk: BodyWalk,
    pool: Arc<Pool>,
    reusable: bool,
}

impl RawBody {
    fn finish(&mut self) {
        if let Some(stream) = self.stream.take() {
            if self.reusable && self.buf.is_empty() {
                self.pool.put_conn(stream);
            }
        }
        self.buf.release();
    }
}

impl Drop for RawBody {
    fn drop(&mut self) {
        // A body read to its end returns its connection; one dropped early closes it.
        if self.walk.done {
            self.finish();
        }
    }
}

impl Body for RawBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        loop {
            if this.walk.done {
                this.finish();
                return Poll::Ready(None);
            }
            if !this.buf.is_empty() {
                let mut data = Vec::new();
                let (n, _) = this
                    .walk
                    .take(this.buf.unread(), &mut data)
                    .map_err(|e| BodyError::Io(io::Error::new(io::ErrorKind::InvalidData, e)))?;
                this.buf.consume_keep(n);
                if this.walk.done {
                    // hyper stops polling once `is_end_stream` says so: hand the connection
                    // back now, not on a poll that may never come.
                    this.finish();
                }
                if !data.is_empty() {
                    return Poll::Ready(Some(Ok(Frame::data(Bytes::from(data)))));
                }
                continue;
            }
            let Some(stream) = this.stream.as_mut() else {
                return Poll::Ready(None);
            };
            match this.buf.poll_read_from(cx, stream) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(0)) if this.walk.framing() == Framing::Close => {
                    this.walk.done = true;
                }
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Some(Err(BodyError::Io(io::ErrorKind::UnexpectedEof.into()))));
                }
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Some(Err(BodyError::Io(e)))),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.walk.done
    }

    fn size_hint(&self) -> SizeHint {
        match self.walk.framing() {
            Framing::Length(_) => SizeHint::with_exact(self.walk.left),
            Framing::None => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}
