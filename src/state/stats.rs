//! The per-server figures `show stat` reports beyond counts, as HAProxy keeps them: bytes
//! both ways (`bin`/`bout`), the most requests at once (`smax`), retries and redispatches
//! (`wretr`/`wredis`), the session rate (`rate`/`rate_max`, `lastsess`) and the moving
//! averages of queue, connect, response and total times over the last 1,024 requests
//! (`qtime`/`ctime`/`rtime`/`ttime`, HAProxy's `swrate`).
//!
//! The data path writes them with relaxed atomics once per request; the rate is derived
//! once a second off the data path ([`crate::metrics::Rate`]). Knows no snapshot or admin
//! code.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

use crate::access_log::Timers;

/// HAProxy's `TIME_STATS_SAMPLES`: the averages cover the last 1,024 requests.
pub const SAMPLES: u64 = 1024;

/// A moving average of milliseconds over the last [`SAMPLES`] values: HAProxy's sliding
/// window rate (`swrate`: each new value pushes out an average one), and until the window
/// is full the plain sum, so a young server's average is exact (HAProxy's own is biased low
/// then).
#[derive(Debug, Default)]
pub struct Average(AtomicU64);

impl Average {
    /// Adds one value; `n` is how many samples there are now (this one included).
    pub fn add(&self, value: Duration, n: u64) {
        // A load and a store, not a compare-and-swap loop: two workers finishing requests
        // to one server at the same instant may lose one sample, which a moving average of
        // a thousand does not notice, and the data path keeps one plain write.
        let sum = self.0.load(Relaxed);
        // Whole milliseconds without u128 arithmetic (Duration::as_millis), on the data path.
        let ms = value.as_secs().min(u32::MAX as u64) * 1000 + value.subsec_millis() as u64;
        let kept = if n <= SAMPLES { sum } else { sum - sum.div_ceil(SAMPLES) };
        self.0.store(kept + ms, Relaxed);
    }

    /// The average in milliseconds (rounded), with `n` samples so far.
    pub fn get(&self, n: u64) -> u64 {
        let n = n.clamp(1, SAMPLES);
        (self.0.load(Relaxed) + n / 2) / n
    }
}

/// See the module documentation.
#[derive(Debug, Default)]
pub struct Stats {
    /// Bytes sent to the server: request heads and bodies as written (`bin`).
    pub bytes_in: AtomicU64,
    /// Bytes received from the server: response heads and bodies (`bout`).
    pub bytes_out: AtomicU64,
    /// The most requests or connections the server had at once (`smax`).
    pub max_active: AtomicUsize,
    /// Attempts that failed and were tried again on the same server (`wretr`).
    pub retries: AtomicU64,
    /// Requests that failed here and went to another server (`wredis`).
    pub redispatches: AtomicU64,
    /// Requests whose times were averaged: the averages' sample count.
    pub timed: AtomicU64,
    /// Responses the server broke off (or stalled past `read_timeout`) after they had
    /// started: the client's connection was cut (`srv_abrt`).
    pub server_aborts: AtomicU64,
    /// Responses cut because the client went away mid-body (`cli_abrt`).
    pub client_aborts: AtomicU64,
    pub queue: Average,
    pub connect: Average,
    pub response: Average,
    pub total: Average,
    /// Requests (or connections) per second, ticked by the control plane's housekeeping.
    pub rate: crate::metrics::Rate,
}

impl Stats {
    /// Notes `active` requests at once (after one more started).
    pub fn saw_active(&self, active: usize) {
        // Read first: the maximum rarely moves, and a load keeps the line shared.
        if active > self.max_active.load(Relaxed) {
            self.max_active.fetch_max(active, Relaxed);
        }
    }

    /// Counts how a finished request ended when it was cut mid-body: by the server
    /// (`SD`, `sD`) or by the client (`CD`). HAProxy counts aborts in other phases too;
    /// veer's own answers before a response started are `failures` (`eresp`).
    pub fn ended(&self, ended: crate::error::Termination) {
        match ended.as_str().as_bytes() {
            [b'S' | b's', b'D'] => self.server_aborts.fetch_add(1, Relaxed),
            [b'C', b'D'] => self.client_aborts.fetch_add(1, Relaxed),
            _ => return,
        };
    }

    /// Records a finished request: its bytes both ways and its times (a phase it never
    /// reached counts as zero, as HAProxy's averages count it).
    pub fn finished(&self, sent: u64, received: u64, timers: &Timers, total: Duration) {
        self.add_bytes(sent, received);
        let n = self.timed.fetch_add(1, Relaxed) + 1;
        self.queue.add(timers.queue.unwrap_or_default(), n);
        self.connect.add(timers.connect.unwrap_or_default(), n);
        self.response.add(timers.response.unwrap_or_default(), n);
        self.total.add(total, n);
    }

    /// Counts bytes sent to and received from the server.
    pub fn add_bytes(&self, sent: u64, received: u64) {
        self.bytes_in.fetch_add(sent, Relaxed);
        self.bytes_out.fetch_add(received, Relaxed);
    }

    /// The averages in milliseconds: queue, connect, response, total.
    pub fn averages(&self) -> [u64; 4] {
        let n = self.timed.load(Relaxed);
        [&self.queue, &self.connect, &self.response, &self.total].map(|a| a.get(n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_average_follows_the_last_thousand_samples() {
        let a = Average::default();
        for n in 1..=10 {
            a.add(Duration::from_millis(100), n);
        }
        // A young window is exact.
        assert_eq!(a.get(10), 100);
        for n in 11..=5000 {
            a.add(Duration::from_millis(10), n);
        }
        // 4,990 samples of 10 ms later the 100s are forgotten.
        assert_eq!(a.get(5000), 10);
    }

    #[test]
    fn tick_derives_the_rate_and_its_maximum() {
        let r = crate::metrics::Rate::default();
        r.tick(500, 1000);
        assert_eq!(r.read(1000), (0, 0, None), "sessions before the first tick are no rate");
        r.tick(530, 2000);
        r.tick(540, 3000);
        r.tick(540, 4000);
        assert_eq!(r.read(6500), (0, 30, Some(3)));
    }
}
