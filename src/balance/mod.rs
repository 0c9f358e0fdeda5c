//! Picking: a group by split weight, then a server inside it by the backend's algorithm.
//!
//! Everything here reads one snapshot's [`Backend`] plus the servers' atomics; nothing locks.
//! The rules (design §3):
//! - a group's share is its weight over the weights of groups that have an available server;
//! - an available server is `ready`, has weight > 0 and is not ejected after a connect
//!   failure; when no group has one, ejection is ignored ("panic mode", as in Envoy) so a
//!   transient failure of every server does not become a hard outage;
//! - a retry after a connect failure may go to any group with an available server, weight-0
//!   groups included, so the client does not see the failure.

mod schedule;

use std::sync::Arc;

pub use schedule::Schedule;

use crate::config::{AdminState, Balance};
use crate::snapshot::{Backend, Group, Server};
use crate::state::now_ms;

impl Server {
    /// Takes new (non-sticky) traffic as far as the admin state and weight go.
    pub fn usable(&self) -> bool {
        self.admin == AdminState::Ready && self.weight > 0
    }
}

/// Servers already tried for this request; compared by identity.
pub type Tried = [Arc<Server>];

fn not_tried(s: &Arc<Server>, tried: &Tried) -> bool {
    !tried.iter().any(|t| Arc::ptr_eq(t, s))
}

/// Picks the server for a new request, or `None` when no server can take it.
pub fn pick<'b>(b: &'b Backend, tried: &Tried) -> Option<&'b Arc<Server>> {
    let now = now_ms();
    let available = |s: &Arc<Server>| s.usable() && !s.state.is_ejected(now) && not_tried(s, tried);
    if let Some(s) = pick_with(b, &available) {
        return Some(s);
    }
    if !tried.is_empty() {
        // A retry: any group will do rather than failing the client.
        if let Some(s) = b.groups.iter().find_map(|g| pick_in_group(b.balance, g, &available)) {
            return Some(s);
        }
    }
    // Panic mode: every candidate is ejected; try them anyway.
    let usable = |s: &Arc<Server>| s.usable() && not_tried(s, tried);
    pick_with(b, &usable)
}

fn pick_with<'b>(b: &'b Backend, ok: &impl Fn(&Arc<Server>) -> bool) -> Option<&'b Arc<Server>> {
    let group = pick_group(b, |g| g.weight > 0 && g.servers.iter().any(ok))?;
    pick_in_group(b.balance, group, ok)
}

/// The next group of the split cycle if eligible; otherwise a weighted random choice among
/// eligible groups, which keeps the shares of the remaining groups proportional.
fn pick_group(b: &Backend, eligible: impl Fn(&Group) -> bool) -> Option<&Group> {
    if b.split.is_empty() {
        return None;
    }
    let first = &b.groups[b.split.at(b.split.next_start(), 0)];
    if eligible(first) {
        return Some(first);
    }
    weighted_random(&b.groups, |g| if eligible(g) { g.weight } else { 0 })
}

fn weighted_random<T>(items: &[T], weight: impl Fn(&T) -> u32) -> Option<&T> {
    let total: u64 = items.iter().map(|i| weight(i) as u64).sum();
    if total == 0 {
        return None;
    }
    let mut r = fastrand::u64(0..total);
    for item in items {
        let w = weight(item) as u64;
        if r < w {
            return Some(item);
        }
        r -= w;
    }
    None
}

/// A server of `g` accepted by `ok`, by the backend's algorithm.
pub fn pick_in_group<'g>(
    balance: Balance,
    g: &'g Group,
    ok: &impl Fn(&Arc<Server>) -> bool,
) -> Option<&'g Arc<Server>> {
    match balance {
        Balance::RoundRobin => {
            if g.rr.is_empty() {
                return None;
            }
            let start = g.rr.next_start();
            (0..g.rr.len()).map(|i| &g.servers[g.rr.at(start, i)]).find(|s| ok(s))
        }
        Balance::Random => weighted_random(&g.servers, |s| if ok(s) { s.weight } else { 0 }),
        Balance::LeastRequest => least_request(g, ok),
    }
}

/// Power of two choices: two distinct random candidates, the one with fewer active requests
/// per unit of weight wins. O(1) in the common case; a scan when the candidates are not ok.
fn least_request<'g>(g: &'g Group, ok: &impl Fn(&Arc<Server>) -> bool) -> Option<&'g Arc<Server>> {
    let n = g.servers.len();
    let load = |s: &Server| s.state.active_requests.load(std::sync::atomic::Ordering::Relaxed) as u64;
    // a/wa < b/wb  ⇔  a*wb < b*wa
    let lighter = |a: &'g Arc<Server>, b: &'g Arc<Server>| {
        if load(b) * (a.weight as u64) < load(a) * (b.weight as u64) {
            b
        } else {
            a
        }
    };
    if n == 0 {
        return None;
    }
    let i = fastrand::usize(0..n);
    let j = if n > 1 {
        (i + 1 + fastrand::usize(0..n - 1)) % n
    } else {
        i
    };
    match (ok(&g.servers[i]), ok(&g.servers[j])) {
        (true, true) => Some(lighter(&g.servers[i], &g.servers[j])),
        (true, false) => Some(&g.servers[i]),
        (false, true) => Some(&g.servers[j]),
        (false, false) => g.servers.iter().filter(|s| ok(s)).reduce(lighter),
    }
}
