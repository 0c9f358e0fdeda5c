//! Weighted rendezvous (highest random weight) hashing with a fixed seed.
//!
//! Every candidate scores `weight / -ln(u)` where `u ∈ (0,1)` is a hash of (key, node); the
//! highest score wins. Removing a node remaps only the keys it held, adding it back restores
//! them, and shares follow weights. Hashes are XXH3 with fixed seeds, so every process,
//! machine and veer version maps a key to the same node. O(n) per pick, which for the
//! handful of servers in a group beats Maglev's table rebuilds on every snapshot.

use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};

/// Hash of a request's key bytes (IP octets, a header value, a cookie value).
pub fn key(bytes: &[u8]) -> u64 {
    xxh3_64(bytes)
}

/// Hash of a client address (its octets), for `hash_key = "source_ip"`.
pub fn ip(ip: std::net::IpAddr) -> u64 {
    match ip {
        std::net::IpAddr::V4(v4) => key(&v4.octets()),
        std::net::IpAddr::V6(v6) => key(&v6.octets()),
    }
}

/// Stable identity of a node (server id `backend/server`, or a group).
pub fn node_id(name: &str) -> u64 {
    xxh3_64(name.as_bytes())
}

/// The node's score for `key`; weight 0 never wins.
pub fn score(key: u64, node: u64, weight: u32) -> f64 {
    if weight == 0 {
        return f64::NEG_INFINITY;
    }
    let h = xxh3_64_with_seed(&key.to_le_bytes(), node);
    // 53 random bits → u strictly inside (0, 1).
    let u = ((h >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    weight as f64 / -u.ln()
}

/// The item with the highest score among `(item, node id, weight)`; `None` if all weigh 0.
pub fn choose<T>(key: u64, items: impl IntoIterator<Item = (T, u64, u32)>) -> Option<T> {
    let mut best: Option<(T, f64)> = None;
    for (item, node, weight) in items {
        let s = score(key, node, weight);
        if s > f64::NEG_INFINITY && best.as_ref().is_none_or(|(_, b)| s > *b) {
            best = Some((item, s));
        }
    }
    best.map(|(item, _)| item)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Golden values: these must never change, or every deployed cookie and hash mapping
    /// would move on upgrade.
    #[test]
    fn hashes_are_stable_across_versions() {
        // xxhash.xxh3_64_intdigest(b"shop/blue-1") in Python's reference binding.
        assert_eq!(
            node_id("shop/blue-1"),
            0x52a8_23ba_3bf9_122b_u64,
            "{:#x}",
            node_id("shop/blue-1")
        );
        let nodes = [
            ("a", node_id("b/a"), 1),
            ("b", node_id("b/b"), 1),
            ("c", node_id("b/c"), 1),
        ];
        let picks: Vec<&str> = (0..6u64)
            .map(|k| choose(key(&k.to_le_bytes()), nodes).unwrap())
            .collect();
        assert_eq!(picks, GOLDEN_PICKS, "{picks:?}");
    }

    const GOLDEN_PICKS: [&str; 6] = ["b", "b", "b", "a", "c", "c"];
}
