//! A connection as the HTTP paths see it ([`Stream`]): plain TCP or a TLS session over it,
//! on the client side ([`ClientIo`], terminated here) or the server side ([`UpstreamIo`]),
//! with the operations veer's idle waits need beyond reading and writing — wait for
//! readability holding no buffer, read without blocking — and [`Stream::send`], a write that
//! leaves nothing buffered in the TLS session. Plain TCP stays a bare `TcpStream` (one enum
//! tag of overhead); a TLS session is boxed, so a plain idle connection does not carry it.
//!
//! A plain client connection starts [`Stream::Fresh`]: accepted but not registered with the
//! reactor. It is read and written directly while the socket is ready, and registered only
//! the first time an operation would block (HAProxy's speculative I/O). A client that sends
//! its request with the connection and closes after the response — connection per request —
//! is never registered: two `epoll_ctl` calls (add and delete) and the reactor's bookkeeping
//! less per connection.
//!
//! A read that does not fill the room it was given emptied the socket, which is then marked
//! not ready at once, so the next read waits for the reactor instead of making a `recvfrom`
//! that can only fail with EAGAIN. tokio's `poll_read` does this; its `try_read` family does
//! not, so the non-blocking reads here go through [`read_draining`] (a keep-alive request's
//! read made one `recvfrom` more per request without it).

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
    /// Plain, not registered with the reactor yet (see the module's note); `None` once a
    /// registration failed and took the socket with it (every operation then fails).
    Fresh(Option<std::net::TcpStream>),
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

fn gone() -> io::Error {
    io::ErrorKind::NotConnected.into()
}

impl<T: Session> Stream<T> {
    /// The socket underneath, for socket options and addresses.
    fn sock(&self) -> io::Result<socket2::SockRef<'_>> {
        match self {
            Stream::Fresh(Some(s)) => Ok(s.into()),
            Stream::Fresh(None) => Err(gone()),
            Stream::Plain(s) => Ok(s.into()),
            Stream::Tls(t) => Ok(t.tcp().into()),
        }
    }

    /// The local address the client connected to.
    pub fn local_addr(&self) -> io::Result<std::net::SocketAddr> {
        self.sock()?
            .local_addr()?
            .as_socket()
            .ok_or_else(|| io::ErrorKind::Unsupported.into())
    }

    /// Turns quick ACKs on or off (see [`crate::listeners`]); a refusal leaves the default.
    pub fn set_quickack(&self, on: bool) {
        if let Ok(s) = self.sock() {
            let _ = s.set_tcp_quickack(on);
        }
    }

    /// Registers a fresh socket with the reactor; the first readiness it then reports comes
    /// from the registration itself (epoll reports a ready socket when it is added), so
    /// nothing that arrived before is missed.
    pub fn register(&mut self) -> io::Result<()> {
        if let Stream::Fresh(s) = self {
            let s = s.take().ok_or_else(gone)?;
            *self = Stream::Plain(TcpStream::from_std(s)?);
        }
        Ok(())
    }

    /// A fresh socket's operation, done directly. `None` when the stream is not fresh, or
    /// when the operation would block: the socket is then registered and the caller goes
    /// the registered way (which waits for the reactor's word before trying again).
    fn direct<R>(&mut self, op: impl FnOnce(&std::net::TcpStream) -> io::Result<R>) -> Option<io::Result<R>> {
        let Stream::Fresh(s) = self else { return None };
        let Some(s) = s else { return Some(Err(gone())) };
        match op(s) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.register().err().map(Err),
            r => Some(r),
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
    /// A fresh socket is taken to be ready: the read that follows is the speculative one,
    /// and registers the socket if it finds nothing.
    pub fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self {
            Stream::Fresh(_) => Poll::Ready(Ok(())),
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
        if let Some(r) = self.direct(|s| std::io::Read::read(&mut &*s, buf)) {
            return r;
        }
        match self {
            Stream::Fresh(_) => Err(io::ErrorKind::WouldBlock.into()),
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
        let spare = |s: &std::net::TcpStream| {
            rustix::net::recv(
                s,
                rustix::buffer::spare_capacity(&mut *buf),
                rustix::net::RecvFlags::empty(),
            )
            .map(|(n, _)| n)
            .map_err(io::Error::from)
        };
        if let Some(r) = self.direct(spare) {
            return r;
        }
        match self {
            Stream::Fresh(_) => Err(io::ErrorKind::WouldBlock.into()),
            Stream::Plain(s) => read_draining(s, buf),
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

/// Reads what a registered socket has into `buf`'s spare room without waiting
/// (`WouldBlock` when it has nothing). A read that leaves room in `buf` emptied the socket's
/// receive queue (Linux's TCP copies until the queue is empty or the room is full), so the
/// socket's readiness is cleared there and then, as a `WouldBlock` would clear it: the next
/// read waits for the reactor's word instead of finding nothing (HAProxy's rule). Nothing is
/// missed: bytes that arrive after the read raise a new event, tokio never clears a
/// readiness newer than the one the read started from, nor the read-closed state (a FIN
/// already seen stays seen).
pub fn read_draining(s: &TcpStream, buf: &mut impl bytes::BufMut) -> io::Result<usize> {
    // The room one read can fill (a full Vec grows here rather than read as EOF).
    let room = buf.chunk_mut().len();
    let mut got = 0;
    let read = s.try_io(tokio::io::Interest::READABLE, || {
        got = s.try_read_buf(buf)?;
        // `WouldBlock` is what makes this `try_io` clear the readiness it started from;
        // the bytes are kept.
        if got > 0 && got < room {
            Err(io::ErrorKind::WouldBlock.into())
        } else {
            Ok(got)
        }
    });
    match read {
        Err(e) if e.kind() == io::ErrorKind::WouldBlock && got > 0 => Ok(got),
        r => r,
    }
}

impl<T: Session> AsyncRead for Stream<T> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        // A read that may wait (the rest of a head, a body): registered from here on, and
        // tokio reads into the buffer's uninitialised room as std cannot.
        this.register()?;
        match this {
            Stream::Fresh(_) => Poll::Ready(Err(gone())),
            // tokio's own read already clears readiness after a short read (see `read_draining`).
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(t) => Pin::new(&mut **t).poll_read(cx, buf),
        }
    }
}

impl<T: Session> AsyncWrite for Stream<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Some(r) = this.direct(|s| std::io::Write::write(&mut &*s, buf)) {
            return Poll::Ready(r);
        }
        match this {
            Stream::Fresh(_) => Poll::Ready(Err(gone())),
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(t) => Pin::new(&mut **t).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Fresh(_) => Poll::Ready(Ok(())),
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(t) => Pin::new(&mut **t).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Fresh(Some(s)) => Poll::Ready(s.shutdown(std::net::Shutdown::Write)),
            Stream::Fresh(None) => Poll::Ready(Err(gone())),
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(t) => Pin::new(&mut **t).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Some(r) = this.direct(|s| std::io::Write::write_vectored(&mut &*s, bufs)) {
            return Poll::Ready(r);
        }
        match this {
            Stream::Fresh(_) => Poll::Ready(Err(gone())),
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(t) => Pin::new(&mut **t).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Fresh(_) => true,
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(t) => t.is_write_vectored(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    /// A client connected over loopback, and the server's side as accepted (still blocking).
    async fn connected() -> io::Result<(std::net::TcpStream, TcpStream)> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        let client = TcpStream::connect(listener.local_addr()?).await?;
        let (accepted, _) = listener.accept()?;
        Ok((accepted, client))
    }

    /// The server's side made fresh: non-blocking, not registered with the reactor.
    fn fresh(accepted: std::net::TcpStream) -> io::Result<ClientIo> {
        accepted.set_nonblocking(true)?;
        Ok(Stream::Fresh(Some(accepted)))
    }

    /// The server's side registered with the reactor.
    fn registered(accepted: std::net::TcpStream) -> io::Result<ClientIo> {
        accepted.set_nonblocking(true)?;
        Ok(Stream::Plain(TcpStream::from_std(accepted)?))
    }

    /// Whether the socket counts as readable right now (one poll, no waiting).
    fn ready_now(s: &ClientIo) -> bool {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        matches!(s.poll_read_ready(&mut cx), Poll::Ready(Ok(())))
    }

    #[tokio::test]
    async fn a_read_that_empties_the_socket_clears_its_readiness_and_later_bytes_still_arrive() -> io::Result<()> {
        // The engine's speculative read of a keep-alive connection's next request.
        let (accepted, mut client) = connected().await?;
        let mut server = registered(accepted)?;
        client.write_all(b"hello").await?;
        server.readable().await?;
        let mut buf = Vec::with_capacity(64);
        assert_eq!(server.try_read_buf(&mut buf)?, 5);
        // Five bytes into 64 bytes of room: the socket is empty, and says so without
        // another read (tokio's `try_read_buf` would still call it ready, and the next read
        // would be a recvfrom failing with EAGAIN).
        assert!(!ready_now(&server), "readiness cleared by the short read");
        // Bytes sent afterwards wake the reader as before.
        client.write_all(b" again").await?;
        server.readable().await?;
        assert_eq!(server.try_read_buf(&mut buf)?, 6);
        assert_eq!(&buf[..], b"hello again");
        Ok(())
    }

    #[tokio::test]
    async fn reads_through_async_read_clear_readiness_the_same_way() -> io::Result<()> {
        // The engine's waiting reads and hyper's (HTTP/2, the bodies it polls) go through
        // `AsyncRead`, where tokio applies the same rule.
        let (accepted, mut client) = connected().await?;
        let mut server = registered(accepted)?;
        client.write_all(b"frame").await?;
        let mut buf = [0u8; 64];
        assert_eq!(server.read(&mut buf).await?, 5);
        assert!(!ready_now(&server), "readiness cleared by the short read");
        client.write_all(b"next").await?;
        assert_eq!(server.read(&mut buf).await?, 4);
        assert_eq!(&buf[..4], b"next");
        Ok(())
    }

    #[tokio::test]
    async fn a_read_that_fills_its_room_leaves_the_socket_ready() -> io::Result<()> {
        let (accepted, mut client) = connected().await?;
        let mut server = registered(accepted)?;
        client.write_all(&[7u8; 100]).await?;
        server.readable().await?;
        // Exactly 64 bytes of room: the socket may hold more (it does), so it stays ready
        // and the rest is read without waiting for the reactor.
        let mut buf = Vec::with_capacity(64);
        let room = buf.capacity();
        assert_eq!(server.try_read_buf(&mut buf)?, room);
        assert!(ready_now(&server), "a full read does not clear readiness");
        let mut rest = Vec::with_capacity(4096);
        while rest.len() < 100 - room {
            server.read_buf(&mut rest).await?;
        }
        assert_eq!(rest.len(), 100 - room);
        Ok(())
    }

    #[tokio::test]
    async fn an_eof_behind_the_last_bytes_is_not_lost_when_their_read_clears_readiness() -> io::Result<()> {
        let (accepted, mut client) = connected().await?;
        let mut server = registered(accepted)?;
        client.write_all(b"last words").await?;
        client.shutdown().await?;
        // Over loopback the FIN is queued behind the bytes before this wait returns: the
        // reactor reports both in one event, and the short read below clears readiness
        // with the close already known.
        server.readable().await?;
        let mut buf = Vec::with_capacity(64);
        assert_eq!(server.try_read_buf(&mut buf)?, 10);
        // The short read emptied the socket but EOF is still reported, without waiting
        // for an event that will never come again (a guard, not a timing assertion).
        let eof = tokio::time::timeout(std::time::Duration::from_secs(10), server.read_buf(&mut buf)).await;
        assert_eq!(
            eof.map_err(|_| "read hung").and_then(|r| r.map_err(|_| "read failed")),
            Ok(0)
        );
        Ok(())
    }

    #[tokio::test]
    async fn a_fresh_socket_with_nothing_to_read_is_registered_and_then_waits_for_bytes() -> io::Result<()> {
        let (accepted, mut client) = connected().await?;
        let mut server = fresh(accepted)?;
        let mut buf = Vec::with_capacity(64);
        // Nothing sent yet: the speculative read finds nothing and registers the socket.
        let r = server.try_read_buf(&mut buf);
        assert_eq!(r.map_err(|e| e.kind()), Err(io::ErrorKind::WouldBlock));
        assert!(
            matches!(server, Stream::Plain(_)),
            "registered after a read that would block"
        );
        // Registered: the wait sees bytes that arrive afterwards.
        client.write_all(b"GET / HTTP/1.1\r\n").await?;
        server.readable().await?;
        assert_eq!(server.try_read_buf(&mut buf)?, 16);
        assert_eq!(&buf[..], b"GET / HTTP/1.1\r\n");
        Ok(())
    }

    #[tokio::test]
    async fn a_fresh_socket_reads_and_writes_what_it_can_without_registering() -> io::Result<()> {
        let (accepted, mut client) = connected().await?;
        client.write_all(b"hello").await?;
        // Blocking still: wait until the bytes are there, as the request is when a client
        // sends it with its connection.
        accepted.peek(&mut [0u8; 1])?;
        let mut server = fresh(accepted)?;
        let mut buf = Vec::with_capacity(64);
        assert_eq!(server.try_read_buf(&mut buf)?, 5);
        assert_eq!(&buf[..], b"hello");
        // Written and shut down directly too: the peer sees the bytes, then EOF.
        server.send(b"bye").await?;
        server.shutdown().await?;
        assert!(
            matches!(server, Stream::Fresh(Some(_))),
            "nothing waited, nothing registered"
        );
        let mut got = Vec::new();
        client.read_to_end(&mut got).await?;
        assert_eq!(got, b"bye");
        Ok(())
    }

    #[tokio::test]
    async fn a_fresh_socket_whose_peer_reads_slowly_registers_and_writes_everything() -> io::Result<()> {
        let (accepted, mut client) = connected().await?;
        let mut server = fresh(accepted)?;
        // Far more than the socket buffers hold: the direct writes fill them, the one that
        // would block registers the socket, and the rest waits for the reader.
        let body = vec![7u8; 16 << 20];
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            client.read_to_end(&mut got).await.map(|_| got)
        });
        server.write_all(&body).await?;
        assert!(
            matches!(server, Stream::Plain(_)),
            "registered once a write would block"
        );
        server.shutdown().await?;
        let got = reader.await.map_err(io::Error::other)??;
        assert_eq!(got.len(), body.len());
        assert!(got == body);
        Ok(())
    }
}
