//! The HTTP/1.1 data path: one task per client connection runs every exchange itself —
//! read the head, route with one snapshot load, pick, take an upstream connection it owns
//! for the exchange, write the head, relay the bodies both ways, hand the upstream
//! connection back to the pool. No task, channel or header map per request: heads are parsed
//! in place and written upstream as the bytes that arrived, minus hop-by-hop fields, plus
//! veer's own (X-Forwarded-*, X-Request-Id).
//!
//! This file is the connection loop: idle waits that hold no buffer, the HTTP/2 preface
//! hand-off, one exchange after another. The request head is `request`'s, the upstream
//! side `relay`'s, the client's response head `response`'s. Knows the snapshot, the
//! balancer and the upstream pool; not the control plane.

use std::time::Instant;

use tokio::io::AsyncWriteExt;
use tokio::time::Instant as Deadline;

pub use super::conn::Conn;
use super::conn::{ack_quickly, within, Next};
use super::relay::forward;
use super::request::prepare;
use super::response::refuse;
use crate::error::ProxyError;
use crate::proxy::buf::Buf;
use crate::stream::ClientIo;

/// Serves one HTTP/1.x client connection until it closes, fails, times out or the process
/// stops. A connection whose first bytes are the HTTP/2 preface goes to the HTTP/2 server.
///
/// An `async move` block rather than an `async fn`: an async fn moves its arguments into
/// locals of its own, and the task would carry both copies (120 bytes per connection, and
/// more to move when the task is spawned); the block uses the captured ones in place.
pub fn serve(mut client: ClientIo, conn: Conn) -> impl std::future::Future<Output = ()> + Send {
    // No HTTP/1 method is "PRI": these bytes first mean the HTTP/2 preface.
    const PREFACE: &[u8] = b"PRI ";
    async move {
        let mut inbuf = Buf::default();
        let mut first = true;
        loop {
            // header_timeout: from connecting, or from the end of the previous response.
            let deadline = Deadline::now() + conn.shared.header_timeout;
            // Idle (or a first read too short to tell HTTP/2): wait until bytes are there, then
            // read them without blocking. A buffer is taken only once bytes have arrived, and
            // the task holds no read future: an idle connection's task is this wait alone.
            while inbuf.is_empty()
                || (first && inbuf.unread().len() < PREFACE.len() && PREFACE.starts_with(inbuf.unread()))
            {
                match within(deadline, &conn.shared.shutdown, client.readable()).await {
                    Some(Ok(())) => {}
                    _ => return,
                }
                // Readiness may be stale (the last read did not drain the socket): WouldBlock
                // clears it and the wait starts again.
                match inbuf.try_read_from(&mut client) {
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
            // Boxed: an exchange's state is kilobytes an idle connection should not carry. The
            // box comes first and the future is written into it (`Box::pin(exchange(..))`
            // builds it on the stack and copies all of it).
            let exchanging = Box::into_pin(Box::write(
                Box::new_uninit(),
                exchange(&mut client, &mut inbuf, &conn, deadline),
            ));
            match exchanging.await {
                Next::KeepAlive => continue,
                Next::Close => {
                    let _ = client.shutdown().await;
                    return;
                }
                Next::Abort => return,
            }
        }
    }
}

/// Hands an HTTP/2 (prior knowledge) connection to hyper's server, with the bytes read so
/// far. Boxed by the caller: hyper's connection state is large, and an idle HTTP/1
/// connection's task should not carry its size.
pub async fn http2(client: ClientIo, prefix: Vec<u8>, c: Conn) {
    crate::proxy::http::serve(client, prefix, &c).await;
    drop(c);
}

/// One request/response exchange, from a head (complete or not) in `inbuf`.
pub(super) async fn exchange(client: &mut ClientIo, inbuf: &mut Buf, conn: &Conn, deadline: Deadline) -> Next {
    // Read until a complete head is there. A head that takes more than one read is timed
    // from its first (HAProxy's `TR`); one read costs no clock reading.
    let start;
    let mut began = None;
    let req = loop {
        match prepare(inbuf.unread(), conn, began) {
            Ok(Some(req)) => {
                start = Instant::now();
                break req;
            }
            Ok(None) => {
                if began.is_none() {
                    began = Some(Instant::now());
                    ack_quickly(client);
                }
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
