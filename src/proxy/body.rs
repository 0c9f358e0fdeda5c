//! The client's request body on its way upstream: counted, bounded in how long it may
//! stall (`[runtime] body_timeout`), and with its failures marked as the client's.
//!
//! When the body fails, the upstream exchange fails with it; [`client_fault`] finds this
//! module's error in that failure's source chain, so the proxy answers 408 or 400 and counts
//! a client error instead of blaming (and counting against) the server.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};

use crate::clock::now_ms;
use crate::metrics::ListenerStats;
use crate::upstream::BoxError;

/// Why the client's body stopped.
#[derive(Debug, thiserror::Error)]
pub enum ClientBodyError {
    /// No byte arrived for `body_timeout`.
    #[error("the client sent no request body bytes for body_timeout")]
    Timeout,
    /// The client sent a malformed body (bad chunked framing) or went away mid-body.
    #[error("malformed or incomplete request body: {0}")]
    Malformed(#[source] hyper::Error),
    /// The body grew past the listener's `max_body`.
    #[error("request body larger than max_body")]
    TooLarge,
}

/// The client's side of a failed upstream exchange, if it was the client's body that
/// failed.
pub fn client_fault<'e>(e: &'e (dyn std::error::Error + 'static)) -> Option<&'e ClientBodyError> {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        if let Some(found) = c.downcast_ref::<ClientBodyError>() {
            return Some(found);
        }
        cause = c.source();
    }
    None
}

/// How far the client's upload is, for the response-head timeout (which starts when the
/// request is fully sent).
#[derive(Debug, Default)]
pub struct Upload {
    /// `now_ms()` when the body ended (or failed); 0 while it is still coming.
    done_at: AtomicU64,
}

impl Upload {
    /// How long ago the body was fully read; `None` while it is still coming.
    pub fn sent_for(&self) -> Option<Duration> {
        match self.done_at.load(Relaxed) {
            0 => None,
            at => Some(Duration::from_millis(now_ms().saturating_sub(at))),
        }
    }

    fn finish(&self) {
        let _ = self.done_at.compare_exchange(0, now_ms(), Relaxed, Relaxed);
    }
}

/// The request body as read from the client.
pub struct ClientBody {
    inner: Incoming,
    stats: Arc<ListenerStats>,
    upload: Option<Arc<Upload>>,
    /// Zero = no limit.
    timeout: Duration,
    /// Armed on the first wait for the client, reset by every frame.
    stall: Option<Pin<Box<tokio::time::Sleep>>>,
    /// The listener's `max_body` (0: none) and the bytes read so far.
    max: u64,
    read: u64,
}

impl ClientBody {
    pub fn new(inner: Incoming, stats: Arc<ListenerStats>, timeout: Duration, upload: Option<Arc<Upload>>) -> Self {
        ClientBody {
            inner,
            stats,
            upload,
            timeout,
            stall: None,
            max: 0,
            read: 0,
        }
    }

    /// Fails the body once it grows past `max` bytes (0: no limit).
    pub fn with_max(mut self, max: u64) -> Self {
        self.max = max;
        self
    }
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let res = Pin::new(&mut this.inner).poll_frame(cx);
        if let (Some(upload), Poll::Ready(_)) = (&this.upload, &res) {
            if !matches!(res, Poll::Ready(Some(Ok(_)))) || this.inner.is_end_stream() {
                upload.finish();
            }
        }
        match res {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.stats.request_bytes.fetch_add(data.len() as u64, Relaxed);
                    this.read += data.len() as u64;
                    if this.max > 0 && this.read > this.max {
                        return Poll::Ready(Some(Err(Box::new(ClientBodyError::TooLarge))));
                    }
                }
                if let Some(stall) = this.stall.as_mut() {
                    stall.as_mut().reset(tokio::time::Instant::now() + this.timeout);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(Box::new(ClientBodyError::Malformed(e))))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                if !this.timeout.is_zero() {
                    let timeout = this.timeout;
                    let stall = this.stall.get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                    if stall.as_mut().poll(cx).is_ready() {
                        return Poll::Ready(Some(Err(Box::new(ClientBodyError::Timeout))));
                    }
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
