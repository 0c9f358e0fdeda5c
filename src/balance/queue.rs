//! Taking a server under `maxconn`: a pick among servers with a free slot, or a place in
//! the backend's queue (HAProxy's `maxconn` + `timeout queue`).
//!
//! A backend without `maxconn` servers takes the plain path: pick and count. With them, a
//! request takes a slot atomically (so a server never has more than `maxconn`) and, when
//! every server that could serve it is full — or others already wait, so the order is
//! kept — joins the FIFO queue. A freed slot wakes the first waiter, which picks again (by
//! the backend's algorithm, so waiters spread fairly over the group's servers); a waiter
//! that then finds nothing free keeps its turn at the front. Past the queue's `max` or
//! `timeout`, the answer is 503 with `Retry-After`.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Instant;

use super::{pick_for, Affinity, Tried, Via};
use crate::error::ProxyError;
use crate::snapshot::{Backend, Server};
use crate::state::{ActiveGuard, Counter};

/// A server and the slot (or count) taken on it.
pub type Taken = (Arc<Server>, Via, ActiveGuard);

/// Takes a server: at once, or after waiting in the queue for a slot. The wait is boxed: the
/// overload path's state stays out of every caller's future.
pub async fn acquire(b: &Backend, a: &Affinity, tried: &Tried, counter: Counter) -> Result<Taken, ProxyError> {
    if !b.refused.is_empty() && refused_turn(b) {
        return Err(ProxyError::InvalidBackend);
    }
    let taken = match take(b, a, tried, counter) {
        Now::Taken(t) => Ok(t),
        Now::NoServer => Err(ProxyError::NoServer),
        Now::Queue => Box::pin(wait(b, a, tried, counter)).await,
    };
    if let (true, Ok((s, ..))) = (b.zone_aware, &taken) {
        let picks = if s.local {
            &b.state.local_picks
        } else {
            &b.state.cross_zone_picks
        };
        picks.fetch_add(1, Relaxed);
    }
    taken
}

/// Whether this request falls in the share of the backend's refused groups (by the
/// groups' weights, as the split would have sent it there).
fn refused_turn(b: &Backend) -> bool {
    let total: u64 = b.groups.iter().map(|g| u64::from(g.weight)).sum();
    let refused: u64 = b
        .refused
        .iter()
        .filter_map(|&i| b.groups.get(i))
        .map(|g| u64::from(g.weight))
        .sum();
    refused > 0 && fastrand::u64(0..total) < refused
}

/// What a pick without waiting found.
enum Now {
    Taken(Taken),
    /// Nobody can serve the request.
    NoServer,
    /// Servers are full (or others wait first): [`wait`] for a slot.
    Queue,
}

/// Picks and counts at once; never waits.
fn take(b: &Backend, a: &Affinity, tried: &Tried, counter: Counter) -> Now {
    if !b.limited {
        return match pick_for(b, a, tried, counter) {
            Some((s, via)) => Now::Taken((s.clone(), via, s.state.guard(counter))),
            None => Now::NoServer,
        };
    }
    if !b.state.queue.is_empty() {
        return Now::Queue;
    }
    match try_slot(b, a, tried, counter) {
        Some(t) => Now::Taken(t),
        None if could_serve(b, a, tried) => Now::Queue,
        None => Now::NoServer,
    }
}

/// Waits in the backend's queue for a slot, at most the queue's timeout.
async fn wait(b: &Backend, a: &Affinity, tried: &Tried, counter: Counter) -> Result<Taken, ProxyError> {
    let queue = &b.state.queue;
    let since = Instant::now();
    let deadline = tokio::time::Instant::now() + b.queue.timeout;
    let mut front = false;
    loop {
        // A slot and the queue are looked at in one step against releases (see Queue::locked).
        let ticket = queue.locked(|q| {
            if q.is_empty() || front {
                if let Some(t) = try_slot(b, a, tried, counter) {
                    return Ok(Err(t));
                }
            }
            if !front && q.len() >= b.queue.max {
                return Err(ProxyError::QueueFull);
            }
            Ok(Ok(q.join(front)))
        });
        let ticket = match ticket {
            Err(e) => {
                queue.full.fetch_add(1, Relaxed);
                return Err(e);
            }
            Ok(Err(taken)) => {
                b.queue_wait.record(since.elapsed());
                return Ok(taken);
            }
            Ok(Ok(ticket)) => ticket,
        };
        let mut place = Place {
            b,
            id: ticket.id,
            done: false,
        };
        let woken = tokio::time::timeout_at(deadline, ticket.woken).await;
        place.done = true;
        match woken {
            Ok(Ok(())) => {}
            // Woken by no one: the queue went away (cannot happen while `b` lives).
            Ok(Err(_)) => return Err(ProxyError::QueueTimeout),
            Err(_) => {
                if !queue.leave(ticket.id) {
                    // Woken just as the time ran out: the turn goes to the next waiter.
                    queue.wake_one();
                }
                queue.timed_out.fetch_add(1, Relaxed);
                return Err(ProxyError::QueueTimeout);
            }
        }
        if !could_serve(b, a, tried) {
            queue.wake_one();
            return Err(ProxyError::NoServer);
        }
        front = true;
    }
}

/// A waiter's place; a waiter dropped while waiting (its client went away) leaves the
/// queue, and passes on a turn it had been given.
struct Place<'b> {
    b: &'b Backend,
    id: u64,
    done: bool,
}

impl Drop for Place<'_> {
    fn drop(&mut self) {
        if !self.done && !self.b.state.queue.leave(self.id) {
            self.b.state.queue.wake_one();
        }
    }
}

/// A server with a free slot, the slot taken (a race lost to another request counts as
/// full: one more pick, then the queue).
fn try_slot(b: &Backend, a: &Affinity, tried: &Tried, counter: Counter) -> Option<Taken> {
    for _ in 0..2 {
        let (s, via) = pick_for(b, a, tried, counter)?;
        if let Some(g) = s.state.try_slot(counter, s.maxconn, &b.state) {
            return Some((s.clone(), via, g));
        }
    }
    None
}

/// Whether some server could serve the request once it has a free slot.
fn could_serve(b: &Backend, a: &Affinity, tried: &Tried) -> bool {
    super::pick_ignoring_slots(b, a, tried).is_some()
}
