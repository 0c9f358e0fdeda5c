//! Picking: a returning client's sticky server, a forced group, or a new choice — a group by
//! split weight, then a server inside it by the backend's algorithm.
//!
//! Everything here reads one snapshot's [`Backend`] plus the servers' atomics; nothing locks.
//! The rules (design §3):
//! - stickiness keeps returning clients where they are: a valid cookie naming a `ready`
//!   server (any weight) is honoured, a `drain`ing one until its drain deadline; `maint`,
//!   down (ejected) or unknown servers are re-picked;
//! - an override names a group, which is used whatever its weight if it has an available
//!   server;
//! - weights decide where new clients go: a group's share is its weight over the weights of
//!   groups that have an available server (`ready`, weight > 0, not ejected);
//! - when no group has one, ejection is ignored ("panic mode", as in Envoy) so a transient
//!   failure of every server does not become a hard outage;
//! - a retry after a connect failure may go to any group with an available server, weight-0
//!   groups included, so the client does not see the failure.

pub mod hash;
pub mod outlier;
pub mod queue;
pub mod retry;
pub mod schedule;

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

pub use schedule::Schedule;

use crate::clock::now_ms;
use crate::config::{AdminState, Balance};
use crate::snapshot::{Backend, Group, Server};
use crate::state::Counter;

impl Server {
    /// Takes new (non-sticky) traffic as far as the admin state and weight go.
    pub fn usable(&self) -> bool {
        self.admin == AdminState::Ready && self.weight > 0
    }

    /// May keep serving a client whose sticky cookie names it.
    pub fn sticky_ok(&self, now: u64) -> bool {
        let admin_ok = match self.admin {
            AdminState::Ready => true,
            AdminState::Drain => self.state.drain_pending(now),
            AdminState::Maint => false,
        };
        admin_ok && self.state.available(now)
    }
}

impl Backend {
    /// Each group's share of new traffic in percent, in group order: its weight over the
    /// weights of the groups with a server that can take traffic (0 for one without).
    pub fn shares(&self, now: u64) -> Vec<f64> {
        let open = |g: &Group| g.servers.iter().any(|s| s.usable() && s.state.available(now));
        let total: u32 = self.groups.iter().filter(|g| open(g)).map(|g| g.weight).sum();
        self.groups
            .iter()
            .map(|g| {
                if total == 0 || !open(g) {
                    0.0
                } else {
                    g.weight as f64 * 100.0 / total as f64
                }
            })
            .collect()
    }
}

/// What one pick needs besides the servers: the algorithm, the time, the slow-start ramp
/// when some server of the backend is in it (0 otherwise: picks then never look).
#[derive(Clone, Copy)]
pub struct Ctx {
    pub balance: Balance,
    pub now: u64,
    slow_ms: u64,
}

impl Ctx {
    pub fn of(b: &Backend, now: u64) -> Self {
        let ramping = b.slow_start_ms > 0 && b.state.warm_until.load(Relaxed) > now;
        Ctx {
            balance: b.balance,
            now,
            slow_ms: if ramping { b.slow_start_ms } else { 0 },
        }
    }

    /// A server's share in per mille of its weight: below 1000 while it ramps up.
    fn ramp(&self, s: &Server) -> u64 {
        if self.slow_ms == 0 {
            return 1000;
        }
        s.state.ramp(self.slow_ms, self.now).unwrap_or(1000)
    }

    /// The weight a server has now (at least 1 while ramping, so it does get traffic).
    fn weight(&self, s: &Server) -> u64 {
        let w = s.weight as u64;
        if self.slow_ms == 0 || w == 0 {
            return w;
        }
        (w * self.ramp(s) / 1000).max(1)
    }

    /// Whether a candidate the cycle offers is taken: always, unless it is ramping up
    /// (then with its ramp's probability, so its share grows linearly).
    fn admit(&self, per_mille: u64) -> bool {
        per_mille >= 1000 || fastrand::u64(0..1000) < per_mille
    }

    /// A group's ramp: its servers' current weights over their full weights.
    fn group_ramp(&self, g: &Group, ok: &impl Fn(&Arc<Server>) -> bool) -> u64 {
        if self.slow_ms == 0 {
            return 1000;
        }
        let (now, full) = g
            .servers
            .iter()
            .filter(|s| ok(s))
            .fold((0, 0), |(n, f), s| (n + self.weight(s), f + s.weight as u64));
        (now * 1000).checked_div(full).unwrap_or(1000)
    }
}

/// What the request says about where it wants to go, extracted once per request.
#[derive(Debug, Default, Clone, Copy)]
pub struct Affinity {
    /// The sticky cookie's server id, when present and well-formed.
    pub sticky: Option<u64>,
    /// Index of the group an override header/cookie names.
    pub group: Option<usize>,
    /// Hash of the backend's `hash_key`, when the request has it.
    pub hash: Option<u64>,
}

/// Why a server was chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// The client's sticky cookie.
    Sticky,
    /// An override naming the server's group.
    Override,
    /// Split and algorithm: a new client.
    Balance,
}

/// Servers already tried for this request; compared by identity.
pub type Tried = [Arc<Server>];

fn not_tried(s: &Arc<Server>, tried: &Tried) -> bool {
    !tried.iter().any(|t| Arc::ptr_eq(t, s))
}

/// Picks the server for a request, or `None` when no server can take it.
pub fn pick<'b>(b: &'b Backend, a: &Affinity, tried: &Tried) -> Option<(&'b Arc<Server>, Via)> {
    pick_for(b, a, tried, Counter::Requests)
}

/// [`pick`], counting `maxconn` slots by `counter` (requests for HTTP, connections for
/// TCP): a full server is not available.
pub fn pick_for<'b>(b: &'b Backend, a: &Affinity, tried: &Tried, counter: Counter) -> Option<(&'b Arc<Server>, Via)> {
    pick_inner(b, a, tried, counter, b.limited)
}

/// Whether anyone could serve the request if `maxconn` slots were free.
fn pick_ignoring_slots<'b>(b: &'b Backend, a: &Affinity, tried: &Tried) -> Option<(&'b Arc<Server>, Via)> {
    pick_inner(b, a, tried, Counter::Requests, false)
}

fn pick_inner<'b>(
    b: &'b Backend,
    a: &Affinity,
    tried: &Tried,
    counter: Counter,
    limited: bool,
) -> Option<(&'b Arc<Server>, Via)> {
    let ctx = Ctx::of(b, now_ms());
    let now = ctx.now;
    let room = |s: &Arc<Server>| !limited || s.state.has_slot(counter, s.maxconn);
    if let (Some(id), Some(sticky)) = (a.sticky, &b.sticky) {
        if let Some(s) = sticky
            .server(id)
            .filter(|s| s.sticky_ok(now) && not_tried(s, tried) && room(s))
        {
            return Some((s, Via::Sticky));
        }
    }
    let available = |s: &Arc<Server>| s.usable() && s.state.available(now) && not_tried(s, tried) && room(s);
    if let Some(g) = a.group.and_then(|i| b.groups.get(i)) {
        if let Some(s) = pick_in_group(&ctx, g, a.hash, &available) {
            return Some((s, Via::Override));
        }
    }
    let new = |s| Some((s, Via::Balance));
    if let Some(s) = pick_with(b, &ctx, a.hash, &available) {
        return new(s);
    }
    if !tried.is_empty() {
        // A retry: any group will do rather than failing the client.
        if let Some(s) = b.groups.iter().find_map(|g| pick_in_group(&ctx, g, a.hash, &available)) {
            return new(s);
        }
    }
    // Panic mode: every candidate is down or ejected; try them anyway (unless the backend
    // says `fail_open = false`: then the client gets 503 `no-server` at once).
    if !b.fail_open {
        return None;
    }
    let usable = |s: &Arc<Server>| s.usable() && not_tried(s, tried) && room(s);
    pick_with(b, &ctx, a.hash, &usable).and_then(new)
}

fn pick_with<'b>(
    b: &'b Backend,
    ctx: &Ctx,
    key: Option<u64>,
    ok: &impl Fn(&Arc<Server>) -> bool,
) -> Option<&'b Arc<Server>> {
    let eligible = |g: &Group| g.weight > 0 && g.servers.iter().any(ok);
    // While a server ramps up, its group's share ramps with it.
    let weight = |g: &Group| (g.weight as u64 * ctx.group_ramp(g, ok) / 1000).max(1) as u32;
    let group = match (b.balance, key) {
        (Balance::Hash, Some(k)) => hash::choose(
            k,
            b.groups
                .iter()
                .filter(|g| eligible(g))
                .map(|g| (g, g.hash_id, weight(g))),
        ),
        _ => pick_group(b, ctx, eligible, ok),
    }?;
    pick_in_group(ctx, group, key, ok)
}

/// The next group of the split cycle if eligible (and, ramping, admitted); otherwise a
/// weighted random choice among eligible groups, which keeps the shares of the remaining
/// groups proportional.
fn pick_group<'b>(
    b: &'b Backend,
    ctx: &Ctx,
    eligible: impl Fn(&Group) -> bool,
    ok: &impl Fn(&Arc<Server>) -> bool,
) -> Option<&'b Group> {
    if b.split.is_empty() {
        return None;
    }
    let first = &b.groups[b.split.at(b.split.next_start(), 0)];
    if eligible(first) && ctx.admit(ctx.group_ramp(first, ok)) {
        return Some(first);
    }
    weighted_random(&b.groups, |g| {
        if eligible(g) {
            g.weight as u64 * ctx.group_ramp(g, ok) / 1000
        } else {
            0
        }
    })
    .or_else(|| eligible(first).then_some(first))
}

fn weighted_random<T>(items: &[T], weight: impl Fn(&T) -> u64) -> Option<&T> {
    let total: u64 = items.iter().map(&weight).sum();
    if total == 0 {
        return None;
    }
    let mut r = fastrand::u64(0..total);
    for item in items {
        let w = weight(item);
        if r < w {
            return Some(item);
        }
        r -= w;
    }
    None
}

/// A server of `g` accepted by `ok`, by the backend's algorithm. `hash` without a key
/// falls back to round robin. A server in its slow-start ramp gets its ramped share.
pub fn pick_in_group<'g>(
    ctx: &Ctx,
    g: &'g Group,
    key: Option<u64>,
    ok: &impl Fn(&Arc<Server>) -> bool,
) -> Option<&'g Arc<Server>> {
    let Some(zones) = g.zones else {
        return pick_among(ctx, g, key, ok);
    };
    // Zone-aware (Envoy's rule, with veer's fleet taken as spread evenly over the zones the
    // servers are in): the local zone's fair share is 1/zones of the healthy capacity. While
    // it holds at least that, every request stays local; below it, the local zone takes
    // what it can (its capacity × zones of the requests) and the rest spills to the other
    // zones in proportion to their capacity; with no local capacity, all spill.
    let (mut local, mut all) = (0u64, 0u64);
    for s in g.servers.iter().filter(|s| ok(s)) {
        let w = ctx.weight(s);
        all += w;
        if s.local {
            local += w;
        }
    }
    let stay = local > 0 && (local * zones >= all || fastrand::u64(0..all) < local * zones);
    let in_zone = |s: &Arc<Server>| ok(s) && s.local == stay;
    pick_among(ctx, g, key, &in_zone).or_else(|| pick_among(ctx, g, key, ok))
}

fn pick_among<'g>(
    ctx: &Ctx,
    g: &'g Group,
    key: Option<u64>,
    ok: &impl Fn(&Arc<Server>) -> bool,
) -> Option<&'g Arc<Server>> {
    match (ctx.balance, key) {
        (Balance::Hash, Some(k)) => hash::choose(
            k,
            g.servers
                .iter()
                .filter(|s| ok(s))
                .map(|s| (s, s.sticky_id, ctx.weight(s) as u32)),
        ),
        (Balance::RoundRobin | Balance::Hash, _) => {
            if g.rr.is_empty() {
                return None;
            }
            let first = &g.servers[g.rr.at(g.rr.next_start(), 0)];
            let first_ok = ok(first);
            // A ramping server takes its turn with its ramp's probability.
            if first_ok && (ctx.slow_ms == 0 || ctx.admit(ctx.ramp(first))) {
                return Some(first);
            }
            // The turn goes to the cycle's other serving entries in rotation (so by weight).
            let serving = || {
                (0..g.rr.len())
                    .map(|i| &g.servers[g.rr.at(0, i)])
                    .filter(|s| !Arc::ptr_eq(s, first) && ok(s))
            };
            match serving().count() {
                0 => first_ok.then_some(first),
                n => serving().nth(g.rr.next_passed(n)),
            }
        }
        (Balance::Random, _) => weighted_random(&g.servers, |s| if ok(s) { ctx.weight(s) } else { 0 }),
        (Balance::LeastRequest, _) => least_request(ctx, g, ok),
    }
}

/// Power of two choices: two distinct random candidates, the one with fewer active requests
/// per unit of (current) weight wins. O(1) in the common case; a scan when the candidates
/// are not ok.
fn least_request<'g>(ctx: &Ctx, g: &'g Group, ok: &impl Fn(&Arc<Server>) -> bool) -> Option<&'g Arc<Server>> {
    let n = g.servers.len();
    let load = |s: &Server| s.state.active_requests.load(Relaxed) as u64;
    // a/wa < b/wb  ⇔  a*wb < b*wa
    let lighter = |a: &'g Arc<Server>, b: &'g Arc<Server>| {
        if load(b) * ctx.weight(a) < load(a) * ctx.weight(b) {
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
