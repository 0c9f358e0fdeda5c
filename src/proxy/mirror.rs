//! Shadow traffic: a sampled copy of a request goes to a server of the backend's mirror
//! group, fire-and-forget. The copy's body is teed from the primary body as it streams (up
//! to `max_body`; larger bodies are not mirrored), and the copy is sent only once the
//! primary body has been read, so mirroring never delays, changes or fails the primary
//! request. Its response is read and discarded; outcomes are counted on the backend.

use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http::{HeaderValue, Request, Version};
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, SizeHint};
use tokio::sync::{oneshot, OwnedSemaphorePermit};

use crate::balance::pick_in_group;
use crate::clock::now_ms;
use crate::snapshot::{Backend, Mirror};
use crate::upstream::{BoxError, RequestEnd, UpstreamBody, UpstreamRequestBody};

/// Returns the body to send upstream for the primary request; when the request was
/// sampled for mirroring ([`sample`], then its `copy` made), that body also feeds the copy.
pub fn tee(
    backend: &Arc<Backend>,
    sampled: Option<(Request<()>, OwnedSemaphorePermit)>,
    body: UpstreamRequestBody,
) -> UpstreamRequestBody {
    let (Some(mirror), Some((mut copy, permit))) = (&backend.mirror, sampled) else {
        return body;
    };
    *copy.version_mut() = Version::HTTP_11;
    copy.headers_mut().insert("veer-mirror", HeaderValue::from_static("1"));

    let backend = backend.clone();
    if body.is_end_stream() {
        tokio::spawn(send(backend, copy, Bytes::new(), permit));
        return body;
    }
    let (tx, rx) = oneshot::channel();
    tokio::spawn(async move {
        match rx.await {
            Ok(bytes) => send(backend, copy, bytes, permit).await,
            // The primary body was larger than max_body, failed, or was abandoned.
            Err(_) => skipped(&backend),
        }
    });
    TeeBody {
        inner: body,
        copy: BytesMut::new(),
        limit: mirror.max_body,
        done: Some(tx),
    }
    .boxed_unsync()
}

/// Whether this request is mirrored: sampled by `percent`, its body (`body_at_least` bytes
/// or more) within `max_body`, and a mirror slot free. The permit holds the slot.
pub fn sample(backend: &Backend, body_at_least: u64) -> Option<OwnedSemaphorePermit> {
    let mirror = backend.mirror.as_ref()?;
    if mirror.percent < 100 && fastrand::u32(0..100) >= mirror.percent {
        return None;
    }
    let counters = &backend.state;
    let permit = (body_at_least <= mirror.max_body)
        .then(|| counters.mirror_slots.clone().try_acquire_owned().ok())
        .flatten();
    if permit.is_none() {
        counters.mirror_skipped.fetch_add(1, Relaxed);
    }
    permit
}

/// Sends `copy` with `body` to a server of the mirror group, in the background.
pub fn spawn(backend: Arc<Backend>, mut copy: Request<()>, body: Bytes, permit: OwnedSemaphorePermit) {
    copy.headers_mut().insert("veer-mirror", HeaderValue::from_static("1"));
    *copy.version_mut() = Version::HTTP_11;
    tokio::spawn(send(backend, copy, body, permit));
}

/// Counts a sampled request whose copy could not be completed (body over `max_body`,
/// failed or abandoned).
pub fn skipped(backend: &Backend) {
    backend.state.mirror_skipped.fetch_add(1, Relaxed);
}

/// Sends the copy to a server of the mirror group and discards the answer.
async fn send(backend: Arc<Backend>, copy: Request<()>, body: Bytes, _permit: OwnedSemaphorePermit) {
    let counters = &backend.state;
    let Some(Mirror { group, .. }) = backend.mirror else {
        return;
    };
    let now = now_ms();
    let available = |s: &Arc<crate::snapshot::Server>| s.usable() && s.state.available(now);
    let ctx = crate::balance::Ctx::of(&backend, now);
    let Some(server) = pick_in_group(&ctx, &backend.groups[group], None, &available).cloned() else {
        counters.mirror_skipped.fetch_add(1, Relaxed);
        return;
    };
    let req = copy.map(|_| Full::new(body).map_err(|never| match never {}).boxed_unsync());
    let active = server.state.request_guard();
    let exchange = async {
        // HTTP/2 servers get the copy on their multiplexed session; HTTP/1.1 ones on a pooled
        // hyper session (TLS when the backend says so).
        let (resp, conn) = if backend.protocol.is_h2() {
            let (resp, _) = crate::upstream::send_h2(&server, &backend, req).await.ok()?;
            (resp, None)
        } else {
            let (resp, conn, _) = crate::upstream::send(&server.pool, req, &backend).await.ok()?;
            (resp, Some((conn, server.pool.clone())))
        };
        // Mirrored copies stay out of the client-view latency histograms and the access log.
        let end = RequestEnd {
            start: std::time::Instant::now(),
            duration: ::metrics::Histogram::noop(),
            log: None,
            counted: false,
            timers: Default::default(),
            sent: 0,
            head: 0,
        };
        let body = UpstreamBody::new(resp.into_body(), conn, active, end, backend.read_timeout);
        body.collect().await.ok()
    };
    match tokio::time::timeout(backend.timeout, exchange).await {
        Ok(Some(_)) => counters.mirror_ok.fetch_add(1, Relaxed),
        _ => {
            tracing::debug!(server = %server.id, "mirrored request failed");
            counters.mirror_failed.fetch_add(1, Relaxed)
        }
    };
}

/// The primary request body, copying what passes through (up to `limit`) for the mirror.
struct TeeBody {
    inner: UpstreamRequestBody,
    copy: BytesMut,
    limit: u64,
    /// Receives the whole copy when the body ends; dropped (mirror skipped) when over limit.
    done: Option<oneshot::Sender<Bytes>>,
}

impl TeeBody {
    fn finish(&mut self) {
        if let Some(tx) = self.done.take() {
            let _ = tx.send(std::mem::take(&mut self.copy).freeze());
        }
    }
}

impl Body for TeeBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let res = Pin::new(&mut this.inner).poll_frame(cx);
        match &res {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    if this.done.is_some() {
                        if this.copy.len() as u64 + data.len() as u64 > this.limit {
                            this.done = None;
                        } else {
                            this.copy.extend_from_slice(data);
                        }
                    }
                }
                if this.inner.is_end_stream() {
                    this.finish();
                }
            }
            Poll::Ready(None) => this.finish(),
            Poll::Ready(Some(Err(_))) => this.done = None,
            Poll::Pending => {}
        }
        res
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
