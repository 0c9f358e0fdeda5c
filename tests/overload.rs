//! Overload: server `maxconn` with the backend's FIFO queue (503 + Retry-After when full or
//! past its timeout), listener `max_body` (413 before any server is contacted, or when a
//! chunked body grows past it), gateway-error retries and the retry budget that bounds
//! them. Real sockets; counts are read from the test backends themselves.

mod support;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A backend that holds every request for `hold`, counting how many it holds at once (and
/// the most ever), and recording the order requests arrive in by their `x-seq` header.
struct Counting {
    backend: FakeBackend,
    now: Arc<AtomicUsize>,
    most: Arc<AtomicUsize>,
    order: Arc<Mutex<Vec<usize>>>,
}

async fn counting(hold: Duration) -> Counting {
    let now = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let order = Arc::new(Mutex::new(Vec::new()));
    let (n, m, o) = (now.clone(), most.clone(), order.clone());
    let backend = FakeBackend::with_handler("slow", move |req| {
        let (n, m, o) = (n.clone(), m.clone(), o.clone());
        Box::pin(async move {
            let at = n.fetch_add(1, Relaxed) + 1;
            m.fetch_max(at, Relaxed);
            if let Some(seq) = req.headers().get("x-seq").and_then(|v| v.to_str().ok()?.parse().ok()) {
                o.lock().unwrap().push(seq);
            }
            tokio::time::sleep(hold).await;
            n.fetch_sub(1, Relaxed);
            hyper::Response::new(Full::new(Bytes::from("done")))
        })
    })
    .await;
    Counting {
        backend,
        now,
        most,
        order,
    }
}

fn config(server: std::net::SocketAddr, backend_extra: &str, server_extra: &str, listener_extra: &str) -> String {
    format!(
        r#"
[[listener]]
name = "web"
bind = "127.0.0.1:0"
protocol = "http"
{listener_extra}
  [[listener.route]]
  backend = "app"
[[backend]]
name = "app"
{backend_extra}
servers = [ {{ name = "a", addr = "{server}" {server_extra} }} ]
"#
    )
}

#[tokio::test]
async fn maxconn_holds_and_the_queue_serves_in_arrival_order() {
    let slow = counting(Duration::from_millis(300)).await;
    let proxy = Proxy::start(&config(slow.backend.addr, "", ", maxconn = 2", "")).await;
    let url = proxy.url("web").await;
    let mut tasks = Vec::new();
    for seq in 0..10usize {
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            // A client (connection) per request, as concurrent users are.
            let c = client();
            get(&c, &url, &[("x-seq", &seq.to_string())]).await
        }));
        // Arrival order at veer: 30 ms apart.
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    for t in tasks {
        let a = t.await.unwrap().unwrap();
        assert_eq!(a.status, 200, "{a:?}");
    }
    assert!(
        slow.most.load(Relaxed) <= 2,
        "the server saw {} at once",
        slow.most.load(Relaxed)
    );
    assert_eq!(slow.most.load(Relaxed), 2);
    assert_eq!(
        *slow.order.lock().unwrap(),
        (0..10).collect::<Vec<_>>(),
        "served out of order"
    );
    assert_eq!(slow.now.load(Relaxed), 0);
    let snap = proxy.veer.snapshot();
    let state = &snap.backend("app").unwrap().state;
    assert!(
        state.queue.max_seen.load(Relaxed) >= 6,
        "qmax {}",
        state.queue.max_seen.load(Relaxed)
    );
    assert_eq!(state.queue.len(), 0);
}

#[tokio::test]
async fn a_full_queue_and_a_queue_timeout_answer_503_with_retry_after() {
    let slow = counting(Duration::from_secs(3)).await;
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("admin.sock");
    let cfg = format!(
        "[admin]\nsocket = \"{}\"\n{}",
        sock.display(),
        config(
            slow.backend.addr,
            r#"queue = { max = 1, timeout = "400ms" }"#,
            ", maxconn = 1",
            ""
        )
    );
    let proxy = Proxy::start_in(dir, &cfg).await;
    let url = proxy.url("web").await;
    let holder = {
        let url = url.clone();
        tokio::spawn(async move { get(&client(), &url, &[]).await })
    };
    while slow.now.load(Relaxed) == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let queued = {
        let url = url.clone();
        tokio::spawn(async move { get(&client(), &url, &[]).await })
    };
    let snap = proxy.veer.snapshot();
    let backend = snap.backend("app").unwrap().clone();
    while backend.state.queue.is_empty() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // qcur/qmax/qlimit in show stat's BACKEND row.
    let stat = admin(&sock, "show stat").await;
    let header: Vec<&str> = stat
        .lines()
        .next()
        .unwrap()
        .trim_start_matches("# ")
        .split(',')
        .collect();
    let col = |n: &str| header.iter().position(|h| *h == n).unwrap();
    let row: Vec<&str> = stat
        .lines()
        .find(|l| l.starts_with("app,BACKEND,"))
        .unwrap()
        .split(',')
        .collect();
    assert_eq!(
        (row[col("qcur")], row[col("qmax")], row[col("qlimit")]),
        ("1", "1", "1")
    );
    let server_row: Vec<&str> = stat
        .lines()
        .find(|l| l.starts_with("app,a,"))
        .unwrap()
        .split(',')
        .collect();
    assert_eq!(server_row[col("slim")], "1");

    // The queue holds one: the next is turned away at once.
    let full = get(&client(), &url, &[]).await.unwrap();
    assert_eq!(full.status, 503);
    assert_eq!(full.header("veer-error"), Some("queue-full"));
    assert_eq!(full.header("retry-after"), Some("1"));
    // The queued one gives up after the queue's timeout.
    let timed_out = queued.await.unwrap().unwrap();
    assert_eq!(timed_out.status, 503);
    assert_eq!(timed_out.header("veer-error"), Some("queue-timeout"));
    assert_eq!(timed_out.header("retry-after"), Some("1"));
    assert_eq!(holder.await.unwrap().unwrap().status, 200);
    assert_eq!(slow.backend.hits(), 1, "only the holder reached the server");
    assert_eq!(backend.state.queue.full.load(Relaxed), 1);
    assert_eq!(backend.state.queue.timed_out.load(Relaxed), 1);
    let metrics = proxy.veer.render_metrics().await;
    assert!(metrics.contains(r#"veer_backend_queue_rejected_total{backend="app",reason="timeout"} 1"#));
}

#[tokio::test]
async fn max_body_refuses_large_uploads_with_413() {
    let web = FakeBackend::start("web").await;
    let proxy = Proxy::start(&config(web.addr, "", "", r#"max_body = "1KiB""#)).await;
    let addr = proxy.addr("web").await;
    let c = client();
    let url = proxy.url("web").await;

    // Known length: refused before any server is contacted.
    let big = hyper::Request::post(&url)
        .body(Full::new(Bytes::from(vec![b'x'; 2048])))
        .unwrap();
    let a = send(&c, big).await.unwrap();
    assert_eq!(a.status, 413);
    assert_eq!(a.header("veer-error"), Some("body-too-large"));
    assert_eq!(web.hits(), 0);
    // Within the limit: forwarded.
    let small = hyper::Request::post(&url)
        .body(Full::new(Bytes::from(vec![b'x'; 1024])))
        .unwrap();
    assert_eq!(send(&c, small).await.unwrap().status, 200);
    assert_eq!(web.hits(), 1);

    // Chunked: the upload is cut (and answered 413) once it grows past the limit.
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
        .await
        .unwrap();
    let chunk = format!("400\r\n{}\r\n", "y".repeat(1024));
    s.write_all(chunk.as_bytes()).await.unwrap();
    s.write_all(chunk.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    assert!(text.contains("veer-error: body-too-large"), "{text}");
}

/// A backend answering `status` to everything, counting attempts.
async fn always(name: &str, status: u16) -> FakeBackend {
    answering(name, Arc::new(std::sync::atomic::AtomicU16::new(status))).await
}

#[tokio::test]
async fn a_gateway_error_goes_to_the_other_server() {
    let bad = always("bad", 503).await;
    let good = always("good", 200).await;
    let proxy = Proxy::start(&http_config(
        &[("a", bad.addr), ("b", good.addr)],
        r#"retry_on = ["gateway-error"]"#,
    ))
    .await;
    let url = proxy.url("web").await;
    let c = client();
    for _ in 0..20 {
        let a = get(&c, &url, &[]).await.unwrap();
        assert_eq!((a.status, a.server()), (200, "good"));
    }
    assert!(bad.hits() >= 5, "round robin sent some to the bad server first");
    // A POST is not idempotent: its 503 passes through.
    let post = || hyper::Request::post(&url).body(Full::new(Bytes::from("x"))).unwrap();
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(send(&c, post()).await.unwrap().status);
    }
    assert!(statuses.contains(&503), "{statuses:?}");
}

#[tokio::test]
async fn the_retry_budget_bounds_retries_to_an_always_503_backend() {
    let a = always("a", 503).await;
    let b = always("b", 503).await;
    let proxy = Proxy::start(&http_config(
        &[("a", a.addr), ("b", b.addr)],
        r#"retry_on = ["gateway-error"]
retry_budget = "20%""#,
    ))
    .await;
    let url = proxy.url("web").await;
    let c = client();
    let requests = 300;
    for _ in 0..requests {
        assert_eq!(get(&c, &url, &[]).await.unwrap().status, 503);
    }
    let attempts = a.hits() + b.hits();
    // 20 % of the requests plus the floor of 3/s over the 10 s window.
    let bound = requests + requests / 5 + 30;
    assert!(
        attempts <= bound,
        "{attempts} upstream attempts for {requests} requests"
    );
    assert!(attempts > requests, "no retry was made at all");
    let snap = proxy.veer.snapshot();
    let exhausted = snap.backend("app").unwrap().state.budget.exhausted.load(Relaxed);
    assert!(exhausted > 0);
    let metrics = proxy.veer.render_metrics().await;
    assert!(metrics.contains(&format!(
        "veer_backend_retry_budget_exhausted_total{{backend=\"app\"}} {exhausted}"
    )));
}
