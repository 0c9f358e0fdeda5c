//! Zone-aware routing (Envoy's rule): inside a group, requests stay in veer's zone while it
//! holds its share of the group's healthy capacity, spill the excess to other zones in
//! proportion when it holds less, and all go elsewhere when it holds none. Two zones × two
//! servers, real requests; servers taken out and back through the admin socket.

mod support;

use support::{admin, client, tally, FakeBackend, Proxy};

/// veer in zone `a`, zone-aware; a1, a2 in zone a, b1, b2 in zone b.
async fn two_zones(zone_aware: &str) -> (Proxy, Vec<FakeBackend>) {
    let mut servers = Vec::new();
    for name in ["a1", "a2", "b1", "b2"] {
        servers.push(FakeBackend::start(name).await);
    }
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("admin.sock");
    let list: Vec<String> = servers
        .iter()
        .map(|s| {
            format!(
                "{{ name = \"{}\", addr = \"{}\", zone = \"{}\" }}",
                s.name,
                s.addr,
                &s.name[..1]
            )
        })
        .collect();
    let config = format!(
        "[admin]\nsocket = \"{}\"\n[runtime]\nzone = \"a\"\n{zone_aware}\n\n[[listener]]\nname = \"web\"\nbind = \"127.0.0.1:0\"\nprotocol = \"http\"\n  [[listener.route]]\n  backend = \"app\"\n\n[[backend]]\nname = \"app\"\nservers = [ {} ]\n",
        sock.display(),
        list.join(", ")
    );
    (Proxy::start_in(dir, &config).await, servers)
}

fn local_share(counts: &std::collections::BTreeMap<String, usize>) -> f64 {
    let total: usize = counts.values().sum();
    let local: usize = counts.iter().filter(|(k, _)| k.starts_with('a')).map(|(_, v)| v).sum();
    local as f64 / total as f64
}

#[tokio::test]
async fn requests_stay_local_spill_by_the_rule_and_come_back() {
    let (proxy, _servers) = two_zones("zone_aware = true").await;
    let url = proxy.url("web").await;
    let sock = proxy.dir.path().join("admin.sock");
    let c = client();

    // All healthy: the local zone holds half the capacity, its fair share (1/2 zones).
    let all = tally(&c, &url, 1000).await;
    assert!(local_share(&all) >= 0.95, "{all:?}");

    // One local server out: local capacity 1/3 < 1/2; the local zone takes
    // capacity × zones = 1/3 × 2 = 2/3 of the requests, the rest spills.
    assert_eq!(admin(&sock, "set server app/a1 state maint").await, "\n");
    let one = tally(&c, &url, 3000).await;
    let expected = (1.0 / 3.0) * 2.0;
    assert!(
        (local_share(&one) - expected).abs() <= 0.05,
        "{one:?}: local {} vs {expected}",
        local_share(&one)
    );
    assert_eq!(one.get("a1"), None);

    // Both local servers out: everything goes to the other zone.
    assert_eq!(admin(&sock, "set server app/a2 state maint").await, "\n");
    let none = tally(&c, &url, 500).await;
    assert_eq!(local_share(&none), 0.0, "{none:?}");

    // Back.
    assert_eq!(admin(&sock, "set server app/a1 state ready").await, "\n");
    assert_eq!(admin(&sock, "set server app/a2 state ready").await, "\n");
    let back = tally(&c, &url, 1000).await;
    assert!(local_share(&back) >= 0.95, "{back:?}");

    // The picks are counted: show split and the metric.
    let split = admin(&sock, "show split app").await;
    assert!(split.contains("zone a: "), "{split}");
    let metrics = proxy.veer.render_metrics().await;
    let local: f64 = metrics
        .lines()
        .find(|l| l.starts_with("veer_backend_zone_picks_total{") && l.contains("locality=\"local\""))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    assert!(local >= 3000.0, "{metrics}");
    proxy.veer.shutdown().await;
}

#[tokio::test]
async fn off_by_default_zones_are_ignored() {
    let (proxy, _servers) = two_zones("").await;
    let url = proxy.url("web").await;
    let counts = tally(&client(), &url, 1000).await;
    let share = local_share(&counts);
    assert!((share - 0.5).abs() <= 0.05, "{counts:?}");
    let split = admin(&proxy.dir.path().join("admin.sock"), "show split app").await;
    assert!(!split.contains("zone a"), "{split}");
    proxy.veer.shutdown().await;
}
