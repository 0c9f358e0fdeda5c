//! The waiting room of a backend whose servers have a `maxconn`: requests (or TCP
//! connections) that found every server full wait here in arrival order and are woken one
//! by one as slots free (HAProxy's backend queue).
//!
//! Only the overload path touches the lock: a request that finds a free slot and nobody
//! waiting never takes it (one atomic load of [`Queue::len`]). Knows nothing of picking:
//! `balance::queue` decides who may take a slot, this only keeps the order.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Mutex;

use tokio::sync::oneshot;

#[derive(Debug, Default)]
pub struct Queue {
    waiters: Mutex<VecDeque<(u64, oneshot::Sender<()>)>>,
    /// Waiters now (`qcur`), and the most ever (`qmax`).
    len: AtomicUsize,
    pub max_seen: AtomicUsize,
    next_id: AtomicU64,
    /// Requests turned away: the queue was full, or they waited past its timeout.
    pub full: AtomicU64,
    pub timed_out: AtomicU64,
}

/// A place in the queue: woken when it is its turn.
pub struct Ticket {
    pub id: u64,
    pub woken: oneshot::Receiver<()>,
}

impl Queue {
    pub fn len(&self) -> usize {
        self.len.load(Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Runs `f` with the queue locked: taking a slot and joining the queue must be one step
    /// against a release (which frees its slot before it locks to wake the next waiter), or
    /// a waiter could join just after the last release and sleep until its timeout.
    pub fn locked<T>(&self, f: impl FnOnce(&mut Joiner<'_>) -> T) -> T {
        let mut waiters = self.waiters.lock().unwrap_or_else(|p| p.into_inner());
        let mut j = Joiner {
            queue: self,
            waiters: &mut waiters,
        };
        f(&mut j)
    }

    /// A slot freed: wakes the first waiter still waiting.
    pub fn wake_one(&self) {
        if self.is_empty() {
            return;
        }
        let mut waiters = self.waiters.lock().unwrap_or_else(|p| p.into_inner());
        while let Some((_, tx)) = waiters.pop_front() {
            self.len.fetch_sub(1, Relaxed);
            if tx.send(()).is_ok() {
                return;
            }
        }
    }

    /// Takes `id` out of the queue (it gave up); false when it had already been woken, so
    /// the caller passes its turn on.
    pub fn leave(&self, id: u64) -> bool {
        let mut waiters = self.waiters.lock().unwrap_or_else(|p| p.into_inner());
        match waiters.iter().position(|(i, _)| *i == id) {
            Some(at) => {
                waiters.remove(at);
                self.len.fetch_sub(1, Relaxed);
                true
            }
            None => false,
        }
    }
}

/// The queue, locked.
pub struct Joiner<'q> {
    queue: &'q Queue,
    waiters: &'q mut VecDeque<(u64, oneshot::Sender<()>)>,
}

impl Joiner<'_> {
    pub fn len(&self) -> usize {
        self.waiters.len()
    }

    pub fn is_empty(&self) -> bool {
        self.waiters.is_empty()
    }

    /// Joins at the back (a new arrival) or the front (a woken waiter that lost its slot
    /// keeps its turn).
    pub fn join(&mut self, front: bool) -> Ticket {
        let id = self.queue.next_id.fetch_add(1, Relaxed);
        let (tx, rx) = oneshot::channel();
        if front {
            self.waiters.push_front((id, tx));
        } else {
            self.waiters.push_back((id, tx));
        }
        let len = self.queue.len.fetch_add(1, Relaxed) + 1;
        self.queue.max_seen.fetch_max(len, Relaxed);
        Ticket { id, woken: rx }
    }
}
