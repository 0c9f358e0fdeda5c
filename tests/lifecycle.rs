//! The process lifecycle with the real binary: SIGTERM drains (in-flight requests complete,
//! readiness fails at once, the listener closes after the accept grace, exit 0), and a hot
//! binary upgrade (`veer run --upgrade`) under a client loop mixing keep-alive and new
//! connections fails no request, keeps the runtime state, and the old process exits.

mod support;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use support::*;

fn config(dir: &Path, backends: &[&FakeBackend], runtime: &str) -> String {
    let servers: Vec<String> = backends
        .iter()
        .map(|b| format!(r#"{{ name = "{}", addr = "{}" }}"#, b.name, b.addr))
        .collect();
    format!(
        r#"
[admin]
socket = "{}"
http = "127.0.0.1:0"
state_file = "{}"
[runtime]
{runtime}
[[listener]]
name = "web"
bind = "127.0.0.1:0"
protocol = "http"
  [[listener.route]]
  backend = "b"
[[backend]]
name = "b"
groups = [
  {{ name = "blue", weight = 100, servers = [ {} ] }},
  {{ name = "green", weight = 0, servers = [ {} ] }},
]
"#,
        dir.join("admin.sock").display(),
        dir.join("state.json").display(),
        servers[0],
        servers[1..].join(", ")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_50_slow_requests_finish_then_exits_0() {
    let release = Arc::new(tokio::sync::Semaphore::new(0));
    let r = release.clone();
    let slow = FakeBackend::with_handler("blue-1", move |req| {
        let r = r.clone();
        Box::pin(async move {
            r.acquire().await.unwrap().forget();
            named_response("blue-1", &req)
        })
    })
    .await;
    let green = FakeBackend::start("green-1").await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("veer.toml");
    std::fs::write(
        &path,
        config(
            dir.path(),
            &[&slow, &green],
            "accept_grace = \"500ms\"\nshutdown_timeout = \"60s\"",
        ),
    )
    .unwrap();
    let mut veer = VeerProcess::start(&path, &[], &["web"]);
    let web = veer.listeners["web"];
    let admin_http = loop {
        // The admin HTTP address is logged as "admin http listening addr=…".
        if let Some(a) = veer.log().lines().find_map(|l| {
            l.contains("admin http listening")
                .then(|| l.split("addr=").nth(1))
                .flatten()
        }) {
            break a.trim().parse::<std::net::SocketAddr>().unwrap();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(
        get(&client(), &format!("http://{admin_http}/ready"), &[])
            .await
            .unwrap()
            .status,
        200
    );

    let requests: Vec<_> = (0..50)
        .map(|_| tokio::spawn(async move { get(&client(), &format!("http://{web}/"), &[]).await }))
        .collect();
    while slow.hits() < 50 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    veer.signal("TERM");
    // Readiness fails at once, while the 50 requests are still held.
    let mut ready = 200;
    for _ in 0..500 {
        ready = get(&client(), &format!("http://{admin_http}/ready"), &[])
            .await
            .map(|a| a.status)
            .unwrap_or(0);
        if ready == 503 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(ready, 503);
    // After the accept grace the listener is closed: new connections are refused.
    let mut refused = false;
    for _ in 0..1000 {
        if tokio::net::TcpStream::connect(web).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(refused, "the listener still accepts after the grace period");
    release.add_permits(50);
    for r in requests {
        let a = r.await.unwrap().unwrap();
        assert_eq!((a.status, a.server()), (200, "blue-1"));
        assert_eq!(
            a.header("connection"),
            Some("close"),
            "draining responses ask the client to close"
        );
    }
    let code = tokio::task::spawn_blocking(move || veer.wait_exit(Duration::from_secs(60)))
        .await
        .unwrap();
    assert_eq!(code, Some(0));
    // A clean exit leaves no admin socket behind (an upgrade keeps it: see below).
    assert!(
        !dir.path().join("admin.sock").exists(),
        "the admin socket outlived veer"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_upgrade_under_load_fails_no_request_and_keeps_state() {
    let (blue, green) = (FakeBackend::start("blue-1").await, FakeBackend::start("green-1").await);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("veer.toml");
    let sock = dir.path().join("admin.sock");
    std::fs::write(&path, config(dir.path(), &[&blue, &green], "")).unwrap();
    let mut old = VeerProcess::start(&path, &[], &["web"]);
    let url = format!("http://{}/", old.listeners["web"]);
    assert_eq!(admin(&sock, "set split b blue=50 green=50").await, "\n");

    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..4)
        .map(|i| {
            let (url, stop) = (url.clone(), stop.clone());
            tokio::spawn(async move {
                // Two keep-alive clients, two that open a connection per request.
                let c = if i % 2 == 0 {
                    client()
                } else {
                    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                        .pool_max_idle_per_host(0)
                        .build_http()
                };
                let (mut ok, mut failures) = (0usize, Vec::new());
                while !stop.load(Ordering::Relaxed) {
                    match get(&c, &url, &[]).await {
                        Ok(a) if a.status == 200 => ok += 1,
                        other => failures.push(format!("{other:?}")),
                    }
                }
                (ok, failures)
            })
        })
        .collect();
    while blue.hits() + green.hits() < 500 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let new = VeerProcess::start(&path, &["--upgrade"], &["web"]);
    assert_eq!(
        new.listeners["web"], old.listeners["web"],
        "the new process serves the same socket"
    );
    let code = tokio::task::spawn_blocking(move || old.wait_exit(Duration::from_secs(60)))
        .await
        .unwrap();
    assert_eq!(code, Some(0), "the old process drains and exits cleanly");
    let after = blue.hits() + green.hits();
    while blue.hits() + green.hits() < after + 500 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let (mut ok, mut failures) = (0, Vec::new());
    for c in clients {
        let (o, f) = c.await.unwrap();
        ok += o;
        failures.extend(f);
    }
    assert!(
        failures.is_empty(),
        "{} of {} requests failed across the hand-over: {:?}",
        failures.len(),
        ok + failures.len(),
        &failures[..failures.len().min(3)]
    );
    // The new process answers the admin socket with the same runtime state.
    assert!(sock.exists(), "admin socket gone; new process log:\n{}", new.log());
    let info = admin(&sock, "show info").await;
    assert!(info.contains(&format!("\nPid: {}\n", new.pid())), "{info}");
    let split: serde_json::Value = serde_json::from_str(admin(&sock, "show split b json").await.trim()).unwrap();
    assert_eq!(
        (
            split["groups"][0]["weight"].as_u64(),
            split["groups"][1]["weight"].as_u64()
        ),
        (Some(50), Some(50))
    );
}
