//! Dark launch: an override header or cookie reaches a group at weight 0, unknown names are
//! ignored. Mirroring: sampled copies reach the mirror group, and a mirror target that never
//! answers neither fails nor slows the primary requests; its failures are counted.

mod support;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use support::*;

fn config(blue: &FakeBackend, green: &FakeBackend, extra: &str) -> String {
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
timeout = "300ms"
{extra}
groups = [
  {{ name = "blue", weight = 100, servers = [ {{ name = "blue-1", addr = "{}" }} ] }},
  {{ name = "green", weight = 0, servers = [ {{ name = "green-1", addr = "{}" }} ] }},
]
"#,
        blue.addr, green.addr
    )
}

#[tokio::test]
async fn override_header_and_cookie_reach_a_weight_0_group() {
    let (blue, green) = (FakeBackend::start("blue-1").await, FakeBackend::start("green-1").await);
    let proxy = Proxy::start(&config(
        &blue,
        &green,
        r#"override = { header = "x-veer-group", cookie = "veer_group" }"#,
    ))
    .await;
    let url = proxy.url("web").await;
    let c = client();
    for _ in 0..5 {
        assert_eq!(
            get(&c, &url, &[("x-veer-group", "green")]).await.unwrap().server(),
            "green-1"
        );
        assert_eq!(
            get(&c, &url, &[("cookie", "a=1; veer_group=green")])
                .await
                .unwrap()
                .server(),
            "green-1"
        );
        assert_eq!(
            get(&c, &url, &[("x-veer-group", "purple")]).await.unwrap().server(),
            "blue-1"
        );
        assert_eq!(get(&c, &url, &[("x-veer-group", "")]).await.unwrap().server(), "blue-1");
        assert_eq!(get(&c, &url, &[]).await.unwrap().server(), "blue-1");
    }
}

#[tokio::test]
async fn override_is_off_unless_configured() {
    let (blue, green) = (FakeBackend::start("blue-1").await, FakeBackend::start("green-1").await);
    let proxy = Proxy::start(&config(&blue, &green, "")).await;
    let a = get(&client(), &proxy.url("web").await, &[("x-veer-group", "green")])
        .await
        .unwrap();
    assert_eq!(a.server(), "blue-1");
}

#[tokio::test]
async fn mirrored_copies_reach_the_mirror_group_with_their_body() {
    let blue = FakeBackend::start("blue-1").await;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(String, String, bytes::Bytes)>();
    let green = FakeBackend::with_handler("green-1", move |req| {
        let tx = tx.clone();
        Box::pin(async move {
            use http_body_util::BodyExt;
            let mirror = req
                .headers()
                .get("veer-mirror")
                .map(|v| v.to_str().unwrap().to_string())
                .unwrap_or_default();
            let path = req.uri().to_string();
            let body = req.into_body().collect().await.unwrap().to_bytes();
            tx.send((path, mirror, body)).unwrap();
            http::Response::new(http_body_util::Full::new(bytes::Bytes::from("ignored")))
        })
    })
    .await;
    let proxy = Proxy::start(&config(
        &blue,
        &green,
        r#"mirror = { group = "green", percent = 100, max_body = "1KiB" }"#,
    ))
    .await;
    let url = proxy.url("web").await;
    let c = client();
    let post = |body: &'static [u8]| {
        http::Request::post(format!("{url}/orders?x=1"))
            .body(http_body_util::Full::new(bytes::Bytes::from_static(body)))
            .unwrap()
    };
    let a = send(&c, post(b"small order")).await.unwrap();
    assert_eq!((a.status, a.server()), (200, "blue-1"));
    let (path, mirror, body) = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (path.as_str(), mirror.as_str(), &body[..]),
        ("/orders?x=1", "1", &b"small order"[..])
    );

    // Over max_body: the primary goes through, no copy is made.
    let big: &'static [u8] = Box::leak(vec![b'x'; 4096].into_boxed_slice());
    assert_eq!(send(&c, post(big)).await.unwrap().server(), "blue-1");
    let snap = proxy.veer.snapshot();
    let state = &snap.backend("shop").unwrap().state;
    for _ in 0..500 {
        if state.mirror_skipped.load(Ordering::Relaxed) == 1 && state.mirror_ok.load(Ordering::Relaxed) == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(state.mirror_ok.load(Ordering::Relaxed), 1);
    assert_eq!(state.mirror_skipped.load(Ordering::Relaxed), 1);
    assert!(rx.try_recv().is_err(), "the oversized request was mirrored");
    assert_eq!(green.hits(), 1);
}

/// p99 of `n` sequential GETs, in microseconds.
async fn p99(c: &HttpClient, url: &str, n: usize) -> u128 {
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let a = get(c, url, &[]).await.unwrap();
        assert_eq!((a.status, a.server()), (200, "blue-1"));
        times.push(t.elapsed().as_micros());
    }
    times.sort_unstable();
    times[n * 99 / 100]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_mirror_target_never_hurts_the_primary() {
    let blue = FakeBackend::start("blue-1").await;
    // Accepts connections, never answers.
    let hang = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hang_addr = hang.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = hang.accept().await {
            held.push(s);
        }
    });
    let green = FakeBackend {
        name: "green-1".into(),
        addr: hang_addr,
        hits: Default::default(),
    };
    let off = Proxy::start(&config(&blue, &green, "")).await;
    let on = Proxy::start(&config(&blue, &green, r#"mirror = { group = "green", percent = 100 }"#)).await;
    let c = client();
    let (url_off, url_on) = (off.url("web").await, on.url("web").await);
    p99(&c, &url_off, 50).await; // warm up
    let baseline = p99(&c, &url_off, 300).await;
    let mirrored = p99(&c, &url_on, 300).await;
    // Generous bound: the point is that the primary never waits for the 300 ms mirror timeout.
    assert!(
        mirrored < baseline * 5 + 50_000,
        "p99 with mirroring {mirrored} µs vs {baseline} µs without"
    );

    let snap = on.veer.snapshot();
    let state = &snap.backend("shop").unwrap().state;
    for _ in 0..1000 {
        if state.mirror_failed.load(Ordering::Relaxed) + state.mirror_skipped.load(Ordering::Relaxed) >= 300 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        state.mirror_failed.load(Ordering::Relaxed) > 0,
        "mirror failures not counted"
    );
    assert_eq!(state.mirror_ok.load(Ordering::Relaxed), 0);
    assert_eq!(
        state.mirror_failed.load(Ordering::Relaxed) + state.mirror_skipped.load(Ordering::Relaxed),
        300
    );
}
