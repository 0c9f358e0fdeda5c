//! Whether a failed attempt goes out again, to another server: within the backend's
//! `retries`, within its `retry_budget` (retries at most a share of the last ten seconds'
//! requests plus a floor per second), and only when another server could take it — a retry
//! never goes back to a server that just failed while another is available, and with none
//! the client gets the failure it had.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use super::{pick_ignoring_slots, Affinity, Tried};
use crate::clock::now_ms;
use crate::config::RETRY_BUDGET_FLOOR;
use crate::snapshot::{Backend, Server};

/// Counts a client request against the budget (once per request, not per attempt).
pub fn request(b: &Backend) {
    if b.retry_budget.is_some() {
        b.state.budget.request(now_ms());
    }
}

/// May the request that just failed on `failed` be sent again? Counts the retry if so.
pub fn allow(b: &Backend, a: &Affinity, tried: &Tried, failed: &Arc<Server>) -> bool {
    if tried.len() as u32 >= b.retries {
        return false;
    }
    let mut others = tried.to_vec();
    others.push(failed.clone());
    if pick_ignoring_slots(b, a, &others).is_none() {
        return false;
    }
    if let Some(percent) = b.retry_budget {
        if !b.state.budget.try_retry(now_ms(), percent, RETRY_BUDGET_FLOOR) {
            crate::warn_limited!(crate::ratelimit::Kind::RetryBudget, backend = %b.name,
                "retry budget exhausted: failures go to the client");
            return false;
        }
    }
    b.state.retries.fetch_add(1, Relaxed);
    // It goes to another server: HAProxy's `wredis` of the one that failed.
    failed.state.stats.redispatches.fetch_add(1, Relaxed);
    true
}
