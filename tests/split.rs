//! Group split and server weights: 100/0 sends everything to blue, 75/25 lands within
//! 22–28 %, server weights 1:2 within ±3 points, and a group whose servers are unreachable
//! stops receiving traffic with no client-visible error.

mod support;
use support::*;

fn config(groups: &str, extra: &str) -> String {
    format!(
        r#"
[[listener]]
name = "web"
bind = "127.0.0.1:0"
protocol = "http"
  [[listener.route]]
  backend = "shop"

[[backend]]
name = "shop"
{extra}
groups = [
{groups}
]
"#
    )
}

#[tokio::test]
async fn blue_100_green_0_sends_everything_to_blue() {
    let (b1, b2, g1) = (
        FakeBackend::start("blue-1").await,
        FakeBackend::start("blue-2").await,
        FakeBackend::start("green-1").await,
    );
    let groups = format!(
        r#"{{ name = "blue", weight = 100, servers = [ {{ name = "blue-1", addr = "{}" }}, {{ name = "blue-2", addr = "{}" }} ] }},
           {{ name = "green", weight = 0, servers = [ {{ name = "green-1", addr = "{}" }} ] }},"#,
        b1.addr, b2.addr, g1.addr
    );
    let proxy = Proxy::start(&config(&groups, "")).await;
    let counts = tally(&client(), &proxy.url("web").await, 400).await;
    assert_eq!(counts.get("green-1"), None, "{counts:?}");
    assert_eq!(counts["blue-1"], 200, "round robin splits evenly: {counts:?}");
    assert_eq!(counts["blue-2"], 200, "{counts:?}");
}

#[tokio::test]
async fn split_75_25_over_4000_requests() {
    let (b, g) = (FakeBackend::start("blue-1").await, FakeBackend::start("green-1").await);
    let groups = format!(
        r#"{{ name = "blue", weight = 75, servers = [ {{ name = "blue-1", addr = "{}" }} ] }},
           {{ name = "green", weight = 25, servers = [ {{ name = "green-1", addr = "{}" }} ] }},"#,
        b.addr, g.addr
    );
    let proxy = Proxy::start(&config(&groups, "")).await;
    let url = proxy.url("web").await;
    // Four concurrent keep-alive clients, 1,000 requests each.
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { tally(&client(), &url, 1000).await })
        })
        .collect();
    let mut green = 0;
    for t in tasks {
        green += t.await.unwrap().get("green-1").copied().unwrap_or(0);
    }
    let share = green as f64 / 4000.0 * 100.0;
    assert!((22.0..=28.0).contains(&share), "green share {share:.1} %");
}

#[tokio::test]
async fn server_weights_1_to_2_within_3_points() {
    let (a, b) = (FakeBackend::start("a").await, FakeBackend::start("b").await);
    for balance in ["round_robin", "random"] {
        let groups = format!(
            r#"{{ name = "g", servers = [ {{ name = "a", addr = "{}", weight = 1 }}, {{ name = "b", addr = "{}", weight = 2 }} ] }},"#,
            a.addr, b.addr
        );
        let proxy = Proxy::start(&config(&groups, &format!("balance = \"{balance}\""))).await;
        let counts = tally(&client(), &proxy.url("web").await, 3000).await;
        let share_b = counts["b"] as f64 / 3000.0 * 100.0;
        assert!(
            (63.67..=69.67).contains(&share_b),
            "{balance}: b share {share_b:.1} % ({counts:?})"
        );
    }
}

#[tokio::test]
async fn least_request_prefers_the_idle_server() {
    use std::sync::Arc;
    // "slow" holds every request until released; "fast" answers at once. Requests are issued
    // one at a time; once one is held by slow, P2C must send every later one to fast.
    let release = Arc::new(tokio::sync::Semaphore::new(0));
    let r = release.clone();
    let slow = FakeBackend::with_handler("slow", move |req| {
        let r = r.clone();
        Box::pin(async move {
            let _ = r.acquire().await;
            named_response("slow", &req)
        })
    })
    .await;
    let fast = FakeBackend::start("fast").await;
    let groups = format!(
        r#"{{ name = "g", servers = [ {{ name = "slow", addr = "{}" }}, {{ name = "fast", addr = "{}" }} ] }},"#,
        slow.addr, fast.addr
    );
    let proxy = Proxy::start(&config(&groups, "balance = \"least_request\"")).await;
    let url = proxy.url("web").await;
    let mut held = Vec::new();
    for _ in 0..20 {
        let before = slow.hits();
        let url = url.clone();
        let mut task = tokio::spawn(async move { get(&client(), &url, &[]).await.unwrap().server().to_string() });
        // Wait until the request either completed (fast) or reached slow.
        loop {
            tokio::select! {
                done = &mut task => { assert_eq!(done.unwrap(), "fast"); break; }
                _ = tokio::time::sleep(std::time::Duration::from_millis(2)) => {
                    if slow.hits() > before { held.push(task); break; }
                }
            }
        }
    }
    assert!(held.len() <= 1, "{} of 20 requests went to the busy server", held.len());
    release.add_permits(100);
    for t in held {
        assert_eq!(t.await.unwrap(), "slow");
    }
}

#[tokio::test]
async fn unreachable_group_gets_no_traffic_and_clients_see_no_error() {
    let blue = FakeBackend::start("blue-1").await;
    let (dead1, dead2) = (dead_addr().await, dead_addr().await);
    let groups = format!(
        r#"{{ name = "blue", weight = 50, servers = [ {{ name = "blue-1", addr = "{}" }} ] }},
           {{ name = "green", weight = 50, servers = [ {{ name = "green-1", addr = "{dead1}" }}, {{ name = "green-2", addr = "{dead2}" }} ] }},"#,
        blue.addr
    );
    let proxy = Proxy::start(&config(&groups, "")).await;
    // Every request succeeds: connect failures are retried on blue.
    let counts = tally(&client(), &proxy.url("web").await, 200).await;
    assert_eq!(counts["blue-1"], 200);
    // Each dead server failed at most once, then was ejected and skipped.
    let snap = proxy.veer.snapshot();
    let green = &snap.backend("shop").unwrap().groups[1];
    for s in &green.servers {
        let fails = s.state.connect_failures.load(std::sync::atomic::Ordering::Relaxed);
        assert!(fails <= 1, "{} failed {fails} times", s.id);
    }
}
