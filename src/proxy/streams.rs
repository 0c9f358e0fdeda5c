//! Runs an HTTP/2 connection's streams inside the connection's own task. hyper hands each
//! accepted stream's future to an executor; [`Streams`] keeps them, and [`Driven`] polls them
//! right after the connection, in the same task. Owns nothing but that scheduling: what a
//! stream does is [`super::http`]'s.
//!
//! Why not `tokio::spawn` per stream (hyper-util's `TokioExecutor`): a task per request costs an
//! allocation, a run-queue round trip and a wake-up across tasks for every response (the
//! stream hands its frames to the connection, which lives in another task). Here a batch of
//! responses costs one wake-up of one task, and a connection's streams share one core, as
//! its frames already did.
//! The cost: a stream still running when its connection's future ends (the client went
//! away, or the connection failed) is dropped with it, which cancels its upstream exchange
//! — what the HTTP/1 engine does for a client that is gone.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use futures_util::stream::{FuturesUnordered, StreamExt};

type Stream = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The executor given to hyper's HTTP/2 server for one connection: it keeps the streams
/// hyper starts until [`Driven`] (the connection's own future) adopts them.
#[derive(Clone, Default)]
pub struct Streams {
    // A lock only because hyper requires its executor to be `Send + Sync`: it is taken by
    // the one task that polls the connection, never contended.
    new: Arc<Mutex<Vec<Stream>>>,
}

impl<F> hyper::rt::Executor<F> for Streams
where
    F: Future<Output = ()> + Send + 'static,
{
    fn execute(&self, fut: F) {
        self.new
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Box::pin(fut));
    }
}

/// A connection future and the streams it started, polled together.
pub struct Driven<C> {
    conn: Pin<Box<C>>,
    streams: Streams,
    running: FuturesUnordered<Stream>,
}

impl<C: Future> Driven<C> {
    pub fn new(conn: C, streams: Streams) -> Self {
        Driven {
            conn: Box::pin(conn),
            streams,
            running: FuturesUnordered::new(),
        }
    }

    /// The connection itself (for a graceful shutdown).
    pub fn conn(&mut self) -> Pin<&mut C> {
        self.conn.as_mut()
    }

    /// Polls the streams started since the last poll and every stream woken since.
    fn poll_streams(&mut self, cx: &mut Context<'_>) {
        {
            let mut new = self.streams.new.lock().unwrap_or_else(PoisonError::into_inner);
            for s in new.drain(..) {
                self.running.push(s);
            }
        }
        // `Ready(None)`: no stream left; `Pending`: every runnable stream has been polled
        // (or FuturesUnordered yielded after a round and woke the task to come back).
        while let Poll::Ready(Some(())) = self.running.poll_next_unpin(cx) {}
    }
}

impl<C: Future> Future for Driven<C> {
    type Output = C::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<C::Output> {
        // `Driven` is Unpin: the connection is boxed, and a FuturesUnordered is Unpin.
        let this = self.get_mut();
        let done = this.conn.as_mut().poll(cx);
        if done.is_pending() {
            // The connection may just have accepted streams: run them now, in this turn
            // (nothing else would wake this task for them). A stream that answers wakes the
            // connection, which this task polls next turn to write the frames out.
            this.poll_streams(cx);
        }
        done
    }
}
