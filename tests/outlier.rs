//! Sick servers: outlier detection ejects servers answering 500 (never more than
//! `max_ejected_percent` of a group, for longer each time), a hanging server's requests time
//! out while its checks take it DOWN, a backend killed under load costs no client an error,
//! and a server coming back ramps its share up over `slow_start`.

mod support;
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use support::*;
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn failing_servers_are_ejected_but_never_more_than_max_ejected_percent() {
    let good = answering("good", Arc::new(AtomicU16::new(200))).await;
    let mut bad = Vec::new();
    for i in 0..3 {
        bad.push(answering(&format!("bad{i}"), Arc::new(AtomicU16::new(500))).await);
    }
    let proxy = Proxy::start(&http_config(
        &[
            ("good", good.addr),
            ("bad0", bad[0].addr),
            ("bad1", bad[1].addr),
            ("bad2", bad[2].addr),
        ],
        r#"outlier = { consecutive_5xx = 3, base_ejection = "30s", max_ejected_percent = 50 }"#,
    ))
    .await;
    let url = proxy.url("web").await;
    let c = client();
    for _ in 0..200 {
        get(&c, &url, &[]).await.unwrap();
    }
    let snap = proxy.veer.snapshot();
    let now = veer::clock::now_ms();
    let ejected: Vec<&str> = snap
        .servers()
        .filter(|s| s.state.is_ejected(now))
        .map(|s| &*s.name)
        .collect();
    // Half of four: two of the three failing servers; the good one never.
    assert_eq!(ejected.len(), 2, "ejected: {ejected:?}");
    assert!(!ejected.contains(&"good"));
    let metrics = proxy.veer.render_metrics().await;
    assert!(metrics.contains("veer_server_outlier_ejections_total"), "{metrics}");
    // Traffic now goes to the good server and the one failing server left in.
    let before = good.hits();
    for _ in 0..40 {
        get(&c, &url, &[]).await.unwrap();
    }
    // Round robin hands the ejected servers' turns out evenly: half each.
    assert_eq!(good.hits() - before, 20);
}

#[tokio::test(start_paused = true)]
async fn repeated_ejections_last_longer() {
    let good = answering("good", Arc::new(AtomicU16::new(200))).await;
    let code = Arc::new(AtomicU16::new(500));
    let flaky = answering("flaky", code.clone()).await;
    let proxy = Proxy::start(&http_config(
        &[("good", good.addr), ("flaky", flaky.addr)],
        r#"outlier = { consecutive_5xx = 2, base_ejection = "10s", max_ejection = "35s", max_ejected_percent = 50 }"#,
    ))
    .await;
    let url = proxy.url("web").await;
    let c = client();
    let snap = proxy.veer.snapshot();
    let flaky_state = snap.servers().find(|s| &*s.name == "flaky").unwrap().state.clone();
    let mut lengths = Vec::new();
    for _ in 0..4 {
        while !flaky_state.is_ejected(veer::clock::now_ms()) {
            get(&c, &url, &[]).await.unwrap();
        }
        lengths.push(flaky_state.ejected_until() - veer::clock::now_ms());
        // Sits out its ejection; re-admitted, it fails again.
        tokio::time::sleep(Duration::from_millis(
            flaky_state.ejected_until() - veer::clock::now_ms() + 1,
        ))
        .await;
        assert!(!flaky_state.is_ejected(veer::clock::now_ms()));
    }
    // base × 1, × 2, × 3, then capped at max_ejection.
    assert_eq!(lengths, [10_000, 20_000, 30_000, 35_000]);
    // Healthy again: it serves, and its streak is forgotten.
    code.store(200, Relaxed);
    let tally = tally(&c, &url, 20).await;
    assert_eq!(tally.get("flaky"), Some(&10));
}

#[tokio::test]
async fn a_hanging_server_times_out_and_its_checks_take_it_down() {
    let good = FakeBackend::start("good").await;
    let hang = FakeBackend::with_handler("hang", |_| {
        Box::pin(async {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            hyper::Response::new(Full::new(Bytes::new()))
        })
    })
    .await;
    let proxy = Proxy::start(&http_config(
        &[("good", good.addr), ("hang", hang.addr)],
        r#"timeout = "300ms"
health = { path = "/healthz", interval = "100ms", timeout = "100ms", rise = 2, fall = 2 }"#,
    ))
    .await;
    let url = proxy.url("web").await;
    let c = client();
    let snap = proxy.veer.snapshot();
    let hang_state = snap.servers().find(|s| &*s.name == "hang").unwrap().state.clone();
    let mut timeouts = 0;
    for _ in 0..200 {
        let a = get(&c, &url, &[]).await.unwrap();
        match a.status {
            200 => assert_eq!(a.server(), "good"),
            504 => timeouts += 1,
            other => panic!("unexpected {other}: {a:?}"),
        }
        if hang_state.check.is_down() {
            break;
        }
    }
    assert!(
        hang_state.check.is_down(),
        "the checks never took the hanging server down"
    );
    // DOWN: everything goes to the good server, without delay.
    for _ in 0..20 {
        let a = get(&c, &url, &[]).await.unwrap();
        assert_eq!((a.status, a.server()), (200, "good"));
    }
    let _ = timeouts;
}

/// A backend that can be killed (listener and every connection closed) and started again
/// on the same address.
struct Killable {
    addr: std::net::SocketAddr,
    stop: CancellationToken,
}

async fn killable(name: &'static str, addr: std::net::SocketAddr) -> Killable {
    let listener = loop {
        match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => break l,
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    };
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    let token = stop.clone();
    tokio::spawn(async move {
        loop {
            let stream = tokio::select! {
                _ = token.cancelled() => return,
                r = listener.accept() => match r { Ok((s, _)) => s, Err(_) => continue },
            };
            let token = token.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| async move {
                    Ok::<_, std::convert::Infallible>(named_response(name, &req))
                });
                let builder = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
                let conn = builder.serve_connection(hyper_util::rt::TokioIo::new(stream), svc);
                tokio::select! {
                    _ = conn => {}
                    _ = token.cancelled() => {}
                }
            });
        }
    });
    Killable { addr, stop }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_killed_under_load_costs_no_client_an_error() {
    let a = killable("a", "127.0.0.1:0".parse().unwrap()).await;
    let b = killable("b", "127.0.0.1:0".parse().unwrap()).await;
    let b_addr = b.addr;
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("admin.sock");
    let cfg = format!(
        "[admin]\nsocket = \"{}\"\n{}",
        sock.display(),
        http_config(
            &[("a", a.addr), ("b", b.addr)],
            r#"retry_on = ["connect", "reset"]
eject_time = "200ms"
health = { path = "/healthz", interval = "100ms", timeout = "200ms", rise = 2, fall = 2 }"#,
        )
    );
    let proxy = Proxy::start_in(dir, &cfg).await;
    let url = proxy.url("web").await;
    let stop = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let served = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut load = Vec::new();
    for _ in 0..8 {
        let (url, stop, errors, served) = (url.clone(), stop.clone(), errors.clone(), served.clone());
        load.push(tokio::spawn(async move {
            let c = client();
            while !stop.load(Relaxed) {
                match get(&c, &url, &[]).await {
                    Ok(a) if a.status == 200 => {
                        served.fetch_add(1, Relaxed);
                    }
                    Ok(a) => errors
                        .lock()
                        .unwrap()
                        .push(format!("{} {:?}", a.status, a.header("veer-error"))),
                    Err(e) => errors.lock().unwrap().push(e),
                }
            }
        }));
    }
    let wait_for = |n: usize| {
        let served = served.clone();
        async move {
            let target = served.load(Relaxed) + n;
            while served.load(Relaxed) < target {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };
    wait_for(5_000).await;
    // Killed: in-flight requests break, new connects are refused.
    b.stop.cancel();
    let snap = proxy.veer.snapshot();
    let b_state = snap.servers().find(|s| &*s.name == "b").unwrap().state.clone();
    while !b_state.check.is_down() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    wait_for(10_000).await;
    // Back: UP after `rise` passes.
    let back = killable("b", b_addr).await;
    while b_state.check.is_down() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    wait_for(5_000).await;
    stop.store(true, Relaxed);
    for t in load {
        t.await.unwrap();
    }
    let errors = errors.lock().unwrap();
    assert!(
        errors.is_empty(),
        "{} client errors, e.g. {:?}",
        errors.len(),
        &errors[..errors.len().min(5)]
    );
    assert!(served.load(Relaxed) >= 20_000);
    back.stop.cancel();
    a.stop.cancel();
}

#[tokio::test(start_paused = true)]
async fn a_server_coming_back_ramps_its_share_over_slow_start() {
    let a = FakeBackend::start("a").await;
    let healthy = Arc::new(AtomicU16::new(500));
    let h = healthy.clone();
    let b = FakeBackend::with_handler("b", move |req| {
        let code = if req.uri().path() == "/healthz" {
            h.load(Relaxed)
        } else {
            200
        };
        Box::pin(async move {
            hyper::Response::builder()
                .status(code)
                .header("x-server", "b")
                .body(Full::new(Bytes::new()))
                .unwrap()
        })
    })
    .await;
    let proxy = Proxy::start(&http_config(
        &[("a", a.addr), ("b", b.addr)],
        r#"slow_start = "50s"
health = { path = "/healthz", interval = "1s", timeout = "500ms", rise = 1, fall = 1 }"#,
    ))
    .await;
    let snap = proxy.veer.snapshot();
    let b_state = snap.servers().find(|s| &*s.name == "b").unwrap().state.clone();
    while !b_state.check.is_down() {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Comes back: its share starts at a tenth of its weight and grows to all of it.
    healthy.store(200, Relaxed);
    while b_state.check.is_down() {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let url = proxy.url("web").await;
    let c = client();
    let mut shares = Vec::new();
    for _ in 0..5 {
        let t = tally(&c, &url, 400).await;
        shares.push(*t.get("b").unwrap_or(&0) as f64 / 400.0);
        tokio::time::sleep(Duration::from_secs(10)).await;
    }
    for w in shares.windows(2) {
        assert!(w[1] > w[0], "share not monotone: {shares:?}");
    }
    // ~10 % of weight at first (share ≈ 0.1/1.1), ~50 % near the end (≈ 0.82/1.82).
    assert!(shares[0] < 0.2, "{shares:?}");
    assert!(shares[4] > 0.35, "{shares:?}");
    // Fully warm: an even split.
    let t = tally(&c, &url, 400).await;
    assert_eq!(t.get("b"), Some(&200));
}
