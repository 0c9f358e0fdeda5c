//! DNS-named servers: a name resolving to two addresses is two server instances (`app#1`,
//! `app#2`), and a changed answer adds and removes instances — the address that stays keeps
//! its instance and its state — without failing a request. Answers come from the hosts file
//! veer is told to read first (`[runtime] hosts_file`), so the test controls them.

mod support;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use support::*;

async fn instances(proxy: &Proxy) -> Vec<(String, SocketAddr)> {
    proxy
        .veer
        .snapshot()
        .servers()
        .map(|s| (s.name.to_string(), s.addr))
        .collect()
}

/// Instance names with their server ids (`sid`, `#<id>`).
fn ids(proxy: &Proxy) -> Vec<(String, u32)> {
    proxy
        .veer
        .snapshot()
        .servers()
        .map(|s| (s.name.to_string(), s.sid))
        .collect()
}

#[tokio::test]
async fn a_name_with_two_addresses_is_two_servers_and_follows_its_answers() {
    // One port on two loopback addresses: the name's two answers.
    let first = FakeBackend::start_on("127.0.0.1:0".parse().unwrap(), "one").await.addr;
    let port = first.port();
    let second = FakeBackend::start_on(SocketAddr::from(([127, 0, 0, 2], port)), "two")
        .await
        .addr;
    let dir = tempfile::tempdir().unwrap();
    let hosts = dir.path().join("hosts");
    std::fs::write(&hosts, "127.0.0.1 shop.test\n127.0.0.2 shop.test\n").unwrap();
    let cfg = format!(
        r#"
[runtime]
hosts_file = "{}"
[[listener]]
name = "web"
bind = "127.0.0.1:0"
protocol = "http"
  [[listener.route]]
  backend = "shop"
[[backend]]
name = "shop"
resolve_interval = "100ms"
servers = [ {{ name = "app", addr = "shop.test:{port}" }} ]
"#,
        hosts.display()
    );
    let proxy = Proxy::start_in(dir, &cfg).await;
    assert_eq!(
        instances(&proxy).await,
        [("app#1".to_string(), first), ("app#2".to_string(), second)]
    );
    // Numbered after the backend's servers (the name itself is #1), by slot.
    assert_eq!(ids(&proxy), [("app#1".to_string(), 2), ("app#2".to_string(), 3)]);
    let url = proxy.url("web").await;
    let c = client();
    let t = tally(&c, &url, 20).await;
    assert_eq!((t.get("one"), t.get("two")), (Some(&10), Some(&10)));

    // Requests keep flowing while the answers change.
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let (url, stop) = (url.clone(), stop.clone());
        tokio::spawn(async move {
            let c = client();
            let mut failures = Vec::new();
            let mut n = 0;
            while !stop.load(Relaxed) {
                match get(&c, &url, &[]).await {
                    Ok(a) if a.status == 200 => n += 1,
                    other => failures.push(format!("{other:?}")),
                }
            }
            (n, failures)
        })
    };
    let snap = proxy.veer.snapshot();
    let kept = snap.servers().find(|s| &*s.name == "app#2").unwrap().state.clone();
    let served_before = kept.total.load(Relaxed);

    // The first address goes away: app#1 is removed, app#2 stays app#2 with its counters.
    std::fs::write(&hosts, "127.0.0.2 shop.test\n").unwrap();
    while instances(&proxy).await.len() != 1 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(instances(&proxy).await, [("app#2".to_string(), second)]);
    assert_eq!(ids(&proxy), [("app#2".to_string(), 3)], "the id stays with the address");
    let snap = proxy.veer.snapshot();
    let now = snap.servers().next().unwrap().state.clone();
    assert!(Arc::ptr_eq(&now, &kept), "the remaining address kept its state");
    assert!(now.total.load(Relaxed) >= served_before);

    // It comes back: the free instance number again.
    std::fs::write(&hosts, "127.0.0.2 shop.test\n127.0.0.1 shop.test\n").unwrap();
    while instances(&proxy).await.len() != 2 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        instances(&proxy).await,
        [("app#1".to_string(), first), ("app#2".to_string(), second)]
    );
    // A failed lookup (the file is unreadable) keeps the last answer.
    std::fs::remove_file(&hosts).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(instances(&proxy).await.len(), 2);

    stop.store(true, Relaxed);
    let (n, failures) = load.await.unwrap();
    assert!(failures.is_empty(), "{failures:?}");
    assert!(n > 0);
}

#[tokio::test]
async fn a_bad_server_address_names_the_forms_it_takes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("veer.toml");
    std::fs::write(
        &path,
        r#"
[[listener]]
name = "web"
bind = "127.0.0.1:0"
protocol = "http"
  [[listener.route]]
  backend = "shop"
[[backend]]
name = "shop"
servers = [ { name = "app", addr = "bad name:80" }, { name = "x#1", addr = "127.0.0.1:1" } ]
"#,
    )
    .unwrap();
    let e = veer::config::load(&path).unwrap_err().to_string();
    assert!(e.contains("expected ip:port or host:port"), "{e}");
    assert!(e.contains("contains '#'"), "{e}");
    assert!(e.contains("veer.toml:10:36:"), "{e}");
}
