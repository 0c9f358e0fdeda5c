//! `set split` under load: with clients running, switching a backend from 100/0 to 0/100
//! through the admin socket fails no request, every response comes from one of the two
//! groups, and every request sent after the command returned goes to the new group.

mod support;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_switch_is_atomic_under_load() {
    let (blue, green) = (FakeBackend::start("blue-1").await, FakeBackend::start("green-1").await);
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("admin.sock");
    let proxy = Proxy::start(&format!(
        r#"
[admin]
socket = "{}"
[[listener]]
name = "web"
bind = "127.0.0.1:0"
protocol = "http"
  [[listener.route]]
  backend = "shop"
[[backend]]
name = "shop"
groups = [
  {{ name = "blue", weight = 100, servers = [ {{ name = "blue-1", addr = "{}" }} ] }},
  {{ name = "green", weight = 0, servers = [ {{ name = "green-1", addr = "{}" }} ] }},
]
"#,
        sock.display(),
        blue.addr,
        green.addr
    ))
    .await;
    let url = proxy.url("web").await;
    let switched = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (url, switched, stop) = (url.clone(), switched.clone(), stop.clone());
            tokio::spawn(async move {
                let c = client();
                let (mut before, mut after, mut failures) = (Vec::new(), Vec::new(), Vec::new());
                while !stop.load(Ordering::SeqCst) {
                    let sent_after_switch = switched.load(Ordering::SeqCst);
                    match get(&c, &url, &[]).await {
                        Ok(a) if a.status == 200 => {
                            if sent_after_switch { &mut after } else { &mut before }.push(a.server().to_string())
                        }
                        other => failures.push(format!("{other:?}")),
                    }
                }
                (before, after, failures)
            })
        })
        .collect();
    while blue.hits() < 500 {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    assert_eq!(admin(&sock, "set split shop blue=0 green=100").await, "\n");
    switched.store(true, Ordering::SeqCst);
    while green.hits() < 500 {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    stop.store(true, Ordering::SeqCst);
    let (mut before, mut after, mut failures) = (Vec::new(), Vec::new(), Vec::new());
    for c in clients {
        let (b, a, f) = c.await.unwrap();
        before.extend(b);
        after.extend(a);
        failures.extend(f);
    }
    assert!(
        failures.is_empty(),
        "{} failed requests: {:?}",
        failures.len(),
        &failures[..failures.len().min(3)]
    );
    assert!(before.iter().chain(&after).all(|s| s == "blue-1" || s == "green-1"));
    assert!(
        before.len() >= 500 && after.len() >= 400,
        "{} before, {} after",
        before.len(),
        after.len()
    );
    let stray = after.iter().filter(|s| *s != "green-1").count();
    assert_eq!(
        stray, 0,
        "{stray} requests sent after `set split` returned reached blue"
    );
}
