//! A backend's retry budget (Finagle's, linkerd's, Envoy's): retries may be at most a share
//! of the requests of the last ten seconds, plus a small floor per second so a quiet
//! backend can still retry. It stops a sick backend's retries from multiplying its load.
//!
//! Ten one-second buckets of atomics; a bucket is reset by the first request of a new
//! second (a race there loses a count, never blocks).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

const BUCKETS: usize = 10;

#[derive(Debug, Default)]
pub struct RetryBudget {
    /// Per bucket: the second it counts, requests, retries.
    second: [AtomicU64; BUCKETS],
    requests: [AtomicU64; BUCKETS],
    retries: [AtomicU64; BUCKETS],
    /// Retries refused because the budget was spent.
    pub exhausted: AtomicU64,
}

impl RetryBudget {
    fn bucket(&self, now_ms: u64) -> usize {
        let sec = now_ms / 1000;
        let i = (sec % BUCKETS as u64) as usize;
        if self.second[i].load(Relaxed) != sec {
            self.second[i].store(sec, Relaxed);
            self.requests[i].store(0, Relaxed);
            self.retries[i].store(0, Relaxed);
        }
        i
    }

    /// Counts a client request (not its retries).
    pub fn request(&self, now_ms: u64) {
        let i = self.bucket(now_ms);
        self.requests[i].fetch_add(1, Relaxed);
    }

    /// Takes one retry from the budget if there is one left: retries in the window stay
    /// within `percent` of its requests plus `floor` per second of it.
    pub fn try_retry(&self, now_ms: u64, percent: u32, floor: u64) -> bool {
        let current = self.bucket(now_ms);
        let sec = now_ms / 1000;
        let (mut requests, mut retries) = (0, 0);
        for i in 0..BUCKETS {
            if sec.saturating_sub(self.second[i].load(Relaxed)) < BUCKETS as u64 {
                requests += self.requests[i].load(Relaxed);
                retries += self.retries[i].load(Relaxed);
            }
        }
        if retries * 100 >= requests * percent as u64 + floor * BUCKETS as u64 * 100 {
            self.exhausted.fetch_add(1, Relaxed);
            return false;
        }
        self.retries[current].fetch_add(1, Relaxed);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_stay_within_share_plus_floor() {
        let b = RetryBudget::default();
        let now = 1_000_000;
        for _ in 0..1000 {
            b.request(now);
        }
        let granted = (0..1000).filter(|_| b.try_retry(now, 20, 3)).count();
        // 20 % of 1000, plus 3/s over the 10 s window.
        assert_eq!(granted, 230);
        assert_eq!(b.exhausted.load(Relaxed), 770);
    }

    #[test]
    fn the_window_forgets_old_seconds() {
        let b = RetryBudget::default();
        for _ in 0..40 {
            b.request(0);
            let _ = b.try_retry(0, 0, 3);
        }
        assert!(!b.try_retry(500, 0, 3));
        // Eleven seconds later the old retries no longer count.
        assert!(b.try_retry(11_000, 0, 3));
    }
}
