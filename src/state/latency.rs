//! Per-server response-time buckets read in-process (the Prometheus histograms cannot be):
//! what a rollout judges a step's p99 on, from the difference of two readings. Log-linear
//! buckets, four per power of two of microseconds (each at most 25 % wide), so recording is
//! a leading-zero count and one relaxed add.
//!
//! Knows nothing of groups or rollouts; they sum servers' readings.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// 4 buckets per octave from 1 µs to 2^27 µs (≈ 134 s); longer lands in the last.
pub const BUCKETS: usize = 4 * 28;

#[derive(Debug)]
pub struct Latency([AtomicU64; BUCKETS]);

impl Default for Latency {
    fn default() -> Self {
        Latency(std::array::from_fn(|_| AtomicU64::new(0)))
    }
}

/// The bucket of `us` microseconds.
fn bucket(us: u64) -> usize {
    if us < 4 {
        // 0..=3 µs exactly (buckets 4..=7 stay empty).
        return us as usize;
    }
    let octave = 63 - us.leading_zeros() as usize;
    // The two bits below the leading one say which quarter of the octave.
    let quarter = ((us >> (octave - 2)) & 3) as usize;
    (octave * 4 + quarter).min(BUCKETS - 1)
}

/// The largest value bucket `i` holds, in microseconds.
pub fn upper_us(i: usize) -> u64 {
    let (octave, quarter) = (i / 4, (i % 4) as u64);
    match octave {
        0 => i as u64,
        1 => 3,
        // Bucket holds [(4 + q) << (o - 2), (5 + q) << (o - 2)).
        _ => ((5 + quarter) << (octave - 2)) - 1,
    }
}

impl Latency {
    pub fn record(&self, d: Duration) {
        self.0[bucket(d.as_micros() as u64)].fetch_add(1, Relaxed);
    }

    /// The counts now.
    pub fn read(&self) -> Counts {
        Counts(std::array::from_fn(|i| self.0[i].load(Relaxed)))
    }
}

/// A reading of one or several servers' buckets.
#[derive(Debug, Clone, PartialEq)]
pub struct Counts(pub [u64; BUCKETS]);

impl Default for Counts {
    fn default() -> Self {
        Counts([0; BUCKETS])
    }
}

impl Counts {
    pub fn add(&mut self, other: &Counts) {
        for (a, b) in self.0.iter_mut().zip(other.0.iter()) {
            *a += b;
        }
    }

    /// What was recorded since `earlier` (a server recreated meanwhile counts from zero).
    pub fn since(&self, earlier: &Counts) -> Counts {
        Counts(std::array::from_fn(|i| self.0[i].saturating_sub(earlier.0[i])))
    }

    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }

    /// The `q` quantile (0..=1) as its bucket's upper bound; `None` with no samples.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        let total = self.total();
        if total == 0 {
            return None;
        }
        let rank = ((total as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, n) in self.0.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Some(Duration::from_micros(upper_us(i)));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_value_lands_in_a_bucket_whose_bounds_hold_it() {
        let mut lower = 0;
        for i in 0..BUCKETS - 1 {
            assert!(upper_us(i) >= lower, "bucket {i}");
            lower = upper_us(i);
        }
        for us in [
            0u64, 1, 2, 3, 4, 5, 7, 100, 999, 1000, 1001, 4_999, 250_000, 500_000, 10_000_000,
        ] {
            let i = bucket(us);
            assert!(upper_us(i) >= us, "{us} in bucket {i} (≤ {})", upper_us(i));
            assert!(i == 0 || upper_us(i - 1) < us, "{us} belongs lower than {i}");
            // No bucket is more than 25 % wide.
            assert!(upper_us(i) as f64 <= us as f64 * 1.25 + 1.0, "{us}: {}", upper_us(i));
        }
    }

    #[test]
    fn the_quantile_of_a_window_ignores_what_came_before() {
        let l = Latency::default();
        for _ in 0..1000 {
            l.record(Duration::from_millis(400));
        }
        let before = l.read();
        for _ in 0..98 {
            l.record(Duration::from_millis(2));
        }
        for _ in 0..2 {
            l.record(Duration::from_millis(900));
        }
        let window = l.read().since(&before);
        assert_eq!(window.total(), 100);
        let p99 = window.quantile(0.99).unwrap_or_default();
        assert!(
            p99 >= Duration::from_millis(900) && p99 < Duration::from_millis(1125),
            "{p99:?}"
        );
        let p50 = window.quantile(0.5).unwrap_or_default();
        assert!(
            p50 >= Duration::from_millis(2) && p50 < Duration::from_micros(2500),
            "{p50:?}"
        );
        assert_eq!(Counts::default().quantile(0.99), None);
    }
}
