//! Byte-for-byte copying between two connections (TCP sessions, upgraded tunnels) with
//! correct half-close, closed when no byte has moved either way for `idle_timeout`.
//! Between two TCP sockets ([`splice_tcp`]) a buffer is held only while bytes are in
//! flight, so an idle session costs no buffer memory; when either side is TLS ([`splice`])
//! tokio's `copy_bidirectional` moves the bytes, with the same idle rule.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::buf;

use crate::clock::now_ms;
use crate::stream::{Session, Stream};

/// How a splice ended.
#[derive(Debug)]
pub enum Ended {
    /// Both sides finished: bytes client→server, server→client.
    Done(u64, u64),
    /// One side failed.
    Failed(io::Error),
    /// Nothing moved for the idle timeout.
    Idle,
}

/// Copies both ways between two connections, plain or TLS (see [`splice_tcp`]).
pub async fn splice<A: Session, B: Session>(a: &mut Stream<A>, b: &mut Stream<B>, idle: Duration) -> Ended {
    // Both sides are waited on from here: a client connection still fresh (an Upgrade on
    // its first request) is registered first.
    if let Err(e) = a.register().and_then(|()| b.register()) {
        return Ended::Failed(e);
    }
    match (a, b) {
        (Stream::Plain(a), Stream::Plain(b)) => splice_tcp(a, b, idle).await,
        // Boxed: a plain session should not carry the TLS copy's state.
        (a, b) => Box::pin(splice_io(a, b, idle)).await,
    }
}

/// [`splice`] when either side is TLS: tokio's `copy_bidirectional`, stamped for the idle rule.
async fn splice_io<A: Session, B: Session>(a: &mut Stream<A>, b: &mut Stream<B>, idle: Duration) -> Ended {
    let last = AtomicU64::new(now_ms());
    let mut a = Stamped { io: a, last: &last };
    let mut b = Stamped { io: b, last: &last };
    let copy = async {
        match tokio::io::copy_bidirectional(&mut a, &mut b).await {
            Ok((up, down)) => Ended::Done(up, down),
            Err(e) => Ended::Failed(e),
        }
    };
    until_idle(copy, &last, idle).await
}

/// A stream that stamps `last` whenever bytes are read from it.
struct Stamped<'a, S> {
    io: &'a mut S,
    last: &'a AtomicU64,
}

impl<S: AsyncRead + Unpin> AsyncRead for Stamped<'_, S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut *this.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.last.store(now_ms(), Relaxed);
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Stamped<'_, S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.get_mut().io).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.get_mut().io).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.get_mut().io).poll_shutdown(cx)
    }
}

pin_project_lite::pin_project! {
    /// Runs `work` until it ends or nothing has moved (per `last`) for `idle` (zero: never).
    /// A future written out rather than an async fn with `select!`: an async fn would hold
    /// `work` twice (its argument, and the pinned copy), and an idle session's task is
    /// mostly this future.
    struct UntilIdle<'a, F> {
        #[pin]
        work: F,
        #[pin]
        sleep: tokio::time::Sleep,
        last: &'a AtomicU64,
        idle: Duration,
    }
}

fn until_idle<F: std::future::Future<Output = Ended>>(work: F, last: &AtomicU64, idle: Duration) -> UntilIdle<'_, F> {
    let first = if idle.is_zero() {
        Duration::from_secs(86400 * 365)
    } else {
        idle
    };
    UntilIdle {
        work,
        sleep: tokio::time::sleep(first),
        last,
        idle,
    }
}

impl<F: std::future::Future<Output = Ended>> std::future::Future for UntilIdle<'_, F> {
    type Output = Ended;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Ended> {
        let mut this = self.project();
        if let Poll::Ready(ended) = this.work.poll(cx) {
            return Poll::Ready(ended);
        }
        while !this.idle.is_zero() && this.sleep.as_mut().poll(cx).is_ready() {
            let quiet = Duration::from_millis(now_ms().saturating_sub(this.last.load(Relaxed)));
            if quiet >= *this.idle {
                return Poll::Ready(Ended::Idle);
            }
            let next = tokio::time::Instant::now() + (*this.idle - quiet);
            this.sleep.as_mut().reset(next);
        }
        Poll::Pending
    }
}

/// Copies both ways between two TCP sockets until both sides are done, one fails, or
/// nothing moves for `idle` (zero = never idle out). Each direction waits for readiness,
/// then reads into a pooled buffer that goes back as soon as its bytes are written. A direction that reads EOF
/// shuts down the other socket's write side; the other direction carries on.
pub async fn splice_tcp(a: &TcpStream, b: &TcpStream, idle: Duration) -> Ended {
    let last = AtomicU64::new(now_ms());
    let both = async {
        match tokio::try_join!(pipe(a, b, &last), pipe(b, a, &last)) {
            Ok((up, down)) => Ended::Done(up, down),
            Err(e) => Ended::Failed(e),
        }
    };
    until_idle(both, &last, idle).await
}

/// One direction: `from` → `to` until EOF (then `to`'s write side is shut down).
async fn pipe(from: &TcpStream, to: &TcpStream, last: &AtomicU64) -> io::Result<u64> {
    let mut total = 0u64;
    loop {
        from.readable().await?;
        let mut chunk = buf::take_one();
        let read = crate::stream::read_draining(from, &mut chunk);
        let result = match read {
            Ok(0) => {
                buf::give_back(chunk);
                // Half-close: the peer sees our EOF; the other direction keeps flowing.
                return match rustix::net::shutdown(to, rustix::net::Shutdown::Write) {
                    Ok(()) => Ok(total),
                    Err(e) if e == rustix::io::Errno::NOTCONN => Ok(total),
                    Err(e) => Err(e.into()),
                };
            }
            Ok(n) => {
                last.store(now_ms(), Relaxed);
                total += n as u64;
                write_all(to, &chunk).await
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
            Err(e) => Err(e),
        };
        buf::give_back(chunk);
        result?;
    }
}

async fn write_all(to: &TcpStream, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        to.writable().await?;
        match to.try_write(bytes) {
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
