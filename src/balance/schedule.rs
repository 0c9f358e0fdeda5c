//! Smooth weighted round robin, precomputed.
//!
//! nginx's smooth WRR needs a lock per pick to update its running weights. Instead the whole
//! cycle is computed once when the snapshot is built; a pick is then one relaxed atomic
//! increment and an index (Pingora's "build then iter"). The cycle is the same interleaving
//! nginx produces, e.g. weights 5:1:1 give `a a b a c a a`, never bursts.

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

#[derive(Debug, Default)]
pub struct Schedule {
    cycle: Vec<u32>,
    cursor: AtomicUsize,
    /// Turns handed on because their entry could not serve: rotated over the others.
    passed: AtomicUsize,
}

impl Schedule {
    /// The smooth interleaving of indices `0..weights.len()`; zero weights never appear.
    pub fn smooth(weights: &[u32]) -> Self {
        let g = weights.iter().copied().filter(|w| *w > 0).fold(0, gcd);
        if g == 0 {
            return Schedule::default();
        }
        let w: Vec<i64> = weights.iter().map(|x| (x / g) as i64).collect();
        let total: i64 = w.iter().sum();
        let mut current = vec![0i64; w.len()];
        let mut cycle = Vec::with_capacity(total as usize);
        for _ in 0..total {
            let mut best = 0;
            for i in 0..w.len() {
                current[i] += w[i];
                if current[i] > current[best] {
                    best = i;
                }
            }
            current[best] -= total;
            cycle.push(best as u32);
        }
        Schedule {
            cycle,
            cursor: AtomicUsize::new(0),
            passed: AtomicUsize::new(0),
        }
    }

    pub fn len(&self) -> usize {
        self.cycle.len()
    }

    pub fn is_empty(&self) -> bool {
        self.cycle.is_empty()
    }

    /// Advances the cursor; returns the position to start scanning from.
    pub fn next_start(&self) -> usize {
        self.cursor.fetch_add(1, Relaxed)
    }

    /// The position among the entries that can serve that takes a turn whose own entry
    /// cannot: a rotation of its own, so the turns of a server out of service spread evenly
    /// over the rest instead of all going to the entry after it.
    pub fn next_passed(&self, candidates: usize) -> usize {
        self.passed.fetch_add(1, Relaxed) % candidates.max(1)
    }

    /// The entry `offset` steps after `start`, wrapping.
    pub fn at(&self, start: usize, offset: usize) -> usize {
        self.cycle[(start.wrapping_add(offset)) % self.cycle.len()] as usize
    }
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interleaves_like_nginx() {
        let s = Schedule::smooth(&[5, 1, 1]);
        let seq: Vec<usize> = (0..7).map(|i| s.at(0, i)).collect();
        assert_eq!(seq, vec![0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn reduces_and_skips_zero() {
        let s = Schedule::smooth(&[75, 0, 25]);
        assert_eq!(s.len(), 4);
        assert_eq!((0..4).filter(|i| s.at(0, *i) == 2).count(), 1);
        assert!(Schedule::smooth(&[0, 0]).is_empty());
    }
}
