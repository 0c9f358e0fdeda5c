//! What every exchange on one HTTP/1 client connection shares ([`Conn`]), how an exchange
//! ends ([`Next`]) or fails ([`Failure`]), and the one deadline-or-stop wrapper every wait
//! goes through.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::time::Instant as Deadline;
use tokio_util::sync::CancellationToken;

use crate::access_log::TlsFacts;
use crate::proxy::shared::{OpenConn, Shared};
use crate::snapshot::ListenerOpts;

/// Read size for large bodies. Measured (1 MiB responses, 4 interleaved rounds, proxy CPU
/// per request): 32 KiB used ~0.7x the CPU of 64 KiB and less than 16 or 128 KiB; the
/// copy in and out of the kernel stays in cache.
pub(super) const BULK: usize = 32 * 1024;

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
    /// The listener's settings as the connection started (idle timeout for upgraded
    /// tunnels, HSTS, the https redirect).
    pub opts: Arc<ListenerOpts>,
    /// What the TLS handshake negotiated; `None` for a plain connection.
    pub tls: Option<Arc<TlsFacts>>,
}

pub(super) enum Next {
    KeepAlive,
    /// Close after what was written.
    Close,
    /// Drop the connection now (stop, timeout, broken).
    Abort,
}

/// How an exchange with a server failed.
pub(super) enum Failure {
    /// Answer with this error (nothing of the response was written yet).
    Answer(crate::error::ProxyError),
    /// Something was written already, or the client is gone: drop the connection.
    Abort,
    /// The server failed before anything reached the client, and the request (all of it in
    /// `Request::out`) may go to another server: the retry is granted already. The error
    /// is the answer should no server be left to take it.
    Retry(crate::error::ProxyError),
}

/// Records a finished response: the server's byte count, the request's duration and log.
pub(super) fn finish(
    server: &crate::snapshot::Server,
    end: &mut crate::upstream::RequestEnd,
    bytes: u64,
    ended: crate::error::Termination,
) {
    server
        .state
        .response_bytes
        .fetch_add(bytes, std::sync::atomic::Ordering::Relaxed);
    end.record(&server.state, bytes, ended);
}

/// veer waits for more of the client's request (the rest of a head, a body): its bytes are
/// acknowledged at once again, so a client that holds them until its last ones are
/// acknowledged (Nagle) is not delayed (see [`crate::listeners`]: HTTP listeners delay ACKs).
pub(super) fn ack_quickly(client: &crate::stream::ClientIo) {
    client.set_quickack(true);
}

/// A response that broke off after it started (`why` says how): records what was sent,
/// and the client connection is dropped (it cannot take a partial answer for a whole).
pub(super) fn cut_short(
    server: &crate::snapshot::Server,
    end: &mut crate::upstream::RequestEnd,
    bytes: u64,
    why: crate::error::Termination,
) -> Result<Next, Failure> {
    finish(server, end, bytes, why);
    Err(Failure::Abort)
}

/// Awaits `f` unless `deadline` passes or `stop` is cancelled first.
pub(super) fn within<F: std::future::Future>(deadline: Deadline, stop: &CancellationToken, f: F) -> Within<'_, F> {
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
    pub(super) struct Within<'a, F> {
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
