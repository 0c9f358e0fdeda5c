//! Passive health: what servers answer decides whether they keep getting traffic (Envoy's
//! outlier detection). A run of 5xx responses (`consecutive_5xx`) or of gateway failures
//! (`consecutive_gateway_failure`: 502, 503, 504, and veer's own timeouts and broken
//! connections) ejects a server; each repeated ejection lasts longer (`base_ejection` × n,
//! up to `max_ejection`), and no more than `max_ejected_percent` of a group is ejected at
//! once (one server always may be). Connect failures eject at once, for `eject_time` — with
//! `outlier` set, growing the same way.
//!
//! Called by the data paths after every response; without `outlier` it returns at once,
//! and with it a healthy response costs two atomic loads.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use crate::clock::now_ms;
use crate::snapshot::{Backend, Server};

/// A response with `status` came from `s` — or veer answered `status` because the exchange
/// with `s` failed without one (a timeout: 504, a broken connection: 502), which counts as
/// the server's gateway failure.
pub fn response(b: &Backend, s: &Server, status: u16) {
    let Some(o) = &b.outlier else { return };
    let st = &s.state.outlier;
    if status < 500 {
        // Loads first: a healthy server's counters stay in a shared cache line.
        if st.consecutive_5xx.load(Relaxed) != 0 {
            st.consecutive_5xx.store(0, Relaxed);
        }
        if st.consecutive_gateway.load(Relaxed) != 0 {
            st.consecutive_gateway.store(0, Relaxed);
        }
        return;
    }
    let n5 = st.consecutive_5xx.fetch_add(1, Relaxed) + 1;
    let gateway = matches!(status, 502..=504);
    let ng = if gateway {
        st.consecutive_gateway.fetch_add(1, Relaxed) + 1
    } else {
        st.consecutive_gateway.store(0, Relaxed);
        0
    };
    let tripped = (o.consecutive_5xx > 0 && n5 >= o.consecutive_5xx)
        || (o.consecutive_gateway_failure > 0 && ng >= o.consecutive_gateway_failure);
    if !tripped {
        return;
    }
    st.consecutive_5xx.store(0, Relaxed);
    st.consecutive_gateway.store(0, Relaxed);
    if let Some(for_) = eject(b, s, o.base_ejection, o.max_ejection, Some(o.max_ejected_percent)) {
        s.state.outlier.ejected_total.fetch_add(1, Relaxed);
        tracing::warn!(server = %s.id, status, ejected_for = ?for_, "consecutive error responses: server ejected");
    }
}

/// veer answered `status` (502, 504) because the exchange with `s` failed without a
/// response: counted as the server's failure (rollouts judge on it) and passed to
/// [`response`].
pub fn failed(b: &Backend, s: &Server, status: u16) {
    s.state.failures.fetch_add(1, Relaxed);
    response(b, s, status);
}

/// A connect to `s` failed: it is ejected at once.
pub fn connect_failure(b: &Backend, s: &Server) {
    s.state.connect_failures.fetch_add(1, Relaxed);
    match &b.outlier {
        None => {
            let until = now_ms() + b.eject_time.as_millis() as u64;
            s.state.eject_until(until);
            b.state.warm(&s.state, until, b.slow_start_ms);
        }
        Some(o) => {
            let _ = eject(b, s, b.eject_time, o.max_ejection.max(b.eject_time), None);
        }
    }
}

/// Ejects `s` for `base` × (its ejections in a row), at most `max`; with `cap`, only if
/// fewer than that percentage of its group is ejected already. The length ejected for.
fn eject(b: &Backend, s: &Server, base: Duration, max: Duration, cap: Option<u32>) -> Option<Duration> {
    let now = now_ms();
    if let Some(percent) = cap {
        let group = b.groups.iter().find(|g| g.name == s.group)?;
        let ejected = group
            .servers
            .iter()
            .filter(|x| x.state.is_ejected(now) && x.id != s.id)
            .count();
        let allowed = (group.servers.len() * percent as usize / 100).max(1);
        if ejected >= allowed {
            return None;
        }
    }
    let st = &s.state;
    // A long healthy spell (as long as the longest ejection) forgets earlier ejections.
    let last_end = st.ejected_until();
    if last_end != 0 && now > last_end + max.as_millis() as u64 {
        st.outlier.ejections.store(0, Relaxed);
    }
    if st.is_ejected(now) {
        return None;
    }
    let n = st.outlier.ejections.fetch_add(1, Relaxed) + 1;
    let for_ = base.saturating_mul(n).min(max);
    let until = now + for_.as_millis() as u64;
    st.eject_until(until);
    // Back from ejection, a server ramps up again like any server coming back.
    b.state.warm(st, until, b.slow_start_ms);
    Some(for_)
}
