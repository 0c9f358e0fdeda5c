//! A connection as the HTTP paths see it ([`Stream`]): plain TCP or a TLS session over it,
//! on the client side ([`ClientIo`], terminated here) or the server side ([`UpstreamIo`]),
//! with the operations veer's idle waits need beyond reading and writing — wait for
//! readability holding no buffer, read without blocking — and [`Stream::send`], a write that
//! leaves nothing buffered in the TLS session. Plain TCP stays a bare `TcpStream` (one enum
//! tag of overhead); a TLS session is boxed, so a plain idle connection does not carry it.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use tokio::io::AsyncWriteExt;

/// A client connection: TLS terminated by veer, or plain.
pub type ClientIo = Stream<tokio_rustls::server::TlsStream<TcpStream>>;
/// An upstream connection: TLS to the server, or plain.
pub type UpstreamIo = Stream<tokio_rustls::client::TlsStream<TcpStream>>;

pub enum Stream<T> {
    Plain(TcpStream),
    Tls(Box<T>),
}

/// What [`Stream`] needs of a TLS session: its socket, and whether it has bytes buffered.
pub trait Session: AsyncRead + AsyncWrite + Unpin {
    fn tcp(&self) -> &TcpStream;
    /// rustls wants socket bytes: nothing decrypted is waiting to be read.
    fn wants_read(&self) -> bool;
}

impl Session for tokio_rustls::server::TlsStream<TcpStream> {
    fn tcp(&self) -> &TcpStream {
        self.get_ref().0
    }
    fn wants_read(&self) -> bool {
        self.get_ref().1.wants_read()
    }
}

impl Session for tokio_rustls::client::TlsStream<TcpStream> {
    fn tcp(&self) -> &TcpStream {
        self.get_ref().0
    }
    fn wants_read(&self) -> bool {
        self.get_ref().1.wants_read()
    }
}

impl<T: Session> Stream<T> {
    /// The TCP socket underneath.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(s) => s,
            Stream::Tls(t) => t.tcp(),
        }
    }

    pub fn is_tls(&self) -> bool {
        matches!(self, Stream::Tls(_))
    }

    /// Writes all of `bytes` and, for TLS, every record they made: nothing stays in the
    /// session's buffer waiting for a next write that may never come.
    pub async fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.write_all(bytes).await?;
        if self.is_tls() {
            self.flush().await?;
        }
        Ok(())
    }

    /// Ready when a read would not wait: the socket has bytes, or (TLS) decrypted bytes
    /// or a close notification are already buffered — rustls then stops asking for
    /// socket reads, and waiting on the socket would stall on bytes already here.
    pub fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self {
            Stream::Plain(s) => s.poll_read_ready(cx),
            Stream::Tls(t) if !t.wants_read() => Poll::Ready(Ok(())),
            Stream::Tls(t) => t.tcp().poll_read_ready(cx),
        }
    }

    /// Waits until a read would not wait, holding no buffer: the future is one reference
    /// (an idle connection's task is parked in it).
    pub fn readable(&self) -> impl std::future::Future<Output = io::Result<()>> + '_ {
        std::future::poll_fn(move |cx| self.poll_read_ready(cx))
    }

    /// Reads what is there into `buf` without waiting (see [`Stream::try_read_buf`]).
    pub fn try_read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.try_read(buf),
            Stream::Tls(t) => {
                let mut cx = Context::from_waker(std::task::Waker::noop());
                let mut rb = ReadBuf::new(buf);
                match Pin::new(&mut **t).poll_read(&mut cx, &mut rb) {
                    Poll::Ready(Ok(())) => Ok(rb.filled().len()),
                    Poll::Ready(Err(e)) => Err(e),
                    Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
                }
            }
        }
    }

    /// Reads what is there without waiting: `WouldBlock` when nothing is (and then the
    /// next [`Stream::poll_read_ready`] waits for the socket again).
    pub fn try_read_buf(&mut self, buf: &mut Vec<u8>) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.try_read_buf(buf),
            Stream::Tls(t) => {
                // One poll with a waker that is never woken: the socket's readiness is
                // consumed (or found missing) exactly as `try_read` would, and a real
                // wait goes through `poll_read_ready` afterwards.
                let mut cx = Context::from_waker(std::task::Waker::noop());
                match tokio_util::io::poll_read_buf(Pin::new(&mut **t), &mut cx, buf) {
                    Poll::Ready(r) => r,
                    Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
                }
            }
        }
    }
}

impl<T: Session> AsyncRead for Stream<T> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(t) => Pin::new(&mut **t).poll_read(cx, buf),
        }
    }
}

impl<T: Session> AsyncWrite for Stream<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(t) => Pin::new(&mut **t).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(t) => Pin::new(&mut **t).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(t) => Pin::new(&mut **t).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(t) => Pin::new(&mut **t).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(t) => t.is_write_vectored(),
        }
    }
}
