//! Consistent hashing: minimal remapping when a server leaves or returns, shares that follow
//! weights (properties of the pure function), and the same key → same server through veer
//! for HTTP (header key, with round-robin fallback when the key is missing) and TCP
//! (source IP).

mod support;
use std::collections::HashMap;

use proptest::prelude::*;
use support::*;
use veer::balance::hash;

fn nodes(ids: &[u64], weights: &[u32]) -> Vec<(usize, u64, u32)> {
    ids.iter()
        .zip(weights)
        .enumerate()
        .map(|(i, (id, w))| (i, *id, *w))
        .collect()
}

fn assign(keys: &[u64], nodes: &[(usize, u64, u32)]) -> Vec<usize> {
    keys.iter()
        .map(|k| hash::choose(*k, nodes.iter().copied()).unwrap())
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn removing_one_of_ten_remaps_little_and_adding_it_back_restores(
        ids in proptest::collection::hash_set(any::<u64>(), 10),
        removed in 0usize..10,
        seed in any::<u64>(),
    ) {
        let ids: Vec<u64> = ids.into_iter().collect();
        let keys: Vec<u64> = (0..10_000u64).map(|k| hash::key(&(k ^ seed).to_le_bytes())).collect();
        let all = nodes(&ids, &[1; 10]);
        let before = assign(&keys, &all);
        let without: Vec<_> = all.iter().copied().filter(|(i, _, _)| *i != removed).collect();
        let after = assign(&keys, &without);
        let moved = before.iter().zip(&after).filter(|(b, a)| b != a).count();
        // Only the removed server's keys move (~10 %), never more than 15 %.
        prop_assert!(moved <= 1_500, "{} of 10000 keys remapped", moved);
        prop_assert!(before.iter().zip(&after).all(|(b, a)| b == a || *b == removed));
        prop_assert_eq!(assign(&keys, &all), before);
    }

    #[test]
    fn weights_one_to_three_give_shares_within_three_points(ids in proptest::collection::hash_set(any::<u64>(), 2), seed in any::<u64>()) {
        let ids: Vec<u64> = ids.into_iter().collect();
        let n = nodes(&ids, &[1, 3]);
        let keys: Vec<u64> = (0..10_000u64).map(|k| hash::key(&(k ^ seed).to_le_bytes())).collect();
        let heavy = assign(&keys, &n).iter().filter(|i| **i == 1).count() as f64 / 100.0;
        prop_assert!((72.0..=78.0).contains(&heavy), "heavy share {}", heavy);
    }
}

fn config(servers: &[&FakeBackend], hash_key: &str, tcp: bool) -> String {
    let list: Vec<String> = servers
        .iter()
        .map(|s| format!(r#"{{ name = "{}", addr = "{}" }}"#, s.name, s.addr))
        .collect();
    let listener = if tcp {
        "[[listener]]\nname = \"l4\"\nbind = \"127.0.0.1:0\"\nprotocol = \"tcp\"\nbackend = \"b\"\n".to_string()
    } else {
        "[[listener]]\nname = \"web\"\nbind = \"127.0.0.1:0\"\nprotocol = \"http\"\n[[listener.route]]\nbackend = \"b\"\n"
            .to_string()
    };
    format!(
        "{listener}\n[[backend]]\nname = \"b\"\nbalance = \"hash\"\nhash_key = \"{hash_key}\"\nservers = [ {} ]\n",
        list.join(", ")
    )
}

async fn five() -> Vec<FakeBackend> {
    let mut v = Vec::new();
    for i in 0..5 {
        v.push(FakeBackend::start(&format!("s{i}")).await);
    }
    v
}

#[tokio::test]
async fn same_header_key_same_server_and_missing_key_round_robins() {
    let s = five().await;
    let proxy = Proxy::start(&config(&s.iter().collect::<Vec<_>>(), "header:x-user", false)).await;
    let url = proxy.url("web").await;
    let c = client();
    let mut seen: HashMap<String, String> = HashMap::new();
    for round in 0..3 {
        for user in 0..50 {
            let user = format!("user-{user}");
            let a = get(&c, &url, &[("x-user", &user)]).await.unwrap();
            let server = seen.entry(user.clone()).or_insert_with(|| a.server().to_string());
            assert_eq!(a.server(), server, "{user} moved in round {round}");
        }
    }
    let distinct: std::collections::HashSet<_> = seen.values().collect();
    assert!(distinct.len() >= 4, "50 keys landed on {} servers", distinct.len());
    // Without the key: round robin over all five.
    let counts = tally(&c, &url, 50).await;
    assert_eq!(counts.len(), 5, "{counts:?}");
    assert!(counts.values().all(|n| *n == 10), "{counts:?}");
}

#[tokio::test]
async fn tcp_hashes_on_source_ip() {
    let s = five().await;
    let proxy = Proxy::start(&config(&s.iter().collect::<Vec<_>>(), "source_ip", true)).await;
    let addr = proxy.addr("l4").await;
    let mut servers = std::collections::HashSet::new();
    for _ in 0..10 {
        let a = get(&client(), &format!("http://{addr}/"), &[]).await.unwrap();
        servers.insert(a.server().to_string());
    }
    // Every connection comes from 127.0.0.1: one server takes them all.
    assert_eq!(servers.len(), 1, "{servers:?}");
    let expected = hash::choose(
        hash::ip("127.0.0.1".parse().unwrap()),
        s.iter()
            .map(|b| (b.name.clone(), hash::node_id(&format!("b/{}", b.name)), 1)),
    )
    .unwrap();
    assert!(servers.contains(&expected));
}
