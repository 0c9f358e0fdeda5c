//! Server drain and listener drain (design §4): a draining server finishes its in-flight
//! work while new requests go elsewhere, its idle upstream connections close at once, the
//! admin `wait … srv-drained` returns when the last request completes; long-lived sessions
//! (WebSocket, TCP) keep flowing until the drain deadline and are closed there; a listener
//! removed by a reload lets its in-flight request finish.

mod support;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use support::*;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// A backend whose answers wait for `release` permits.
async fn held_backend(name: &str, release: Arc<tokio::sync::Semaphore>) -> FakeBackend {
    let n = name.to_string();
    FakeBackend::with_handler(name, move |req| {
        let (release, n) = (release.clone(), n.clone());
        Box::pin(async move {
            release.acquire().await.unwrap().forget();
            named_response(&n, &req)
        })
    })
    .await
}

fn config(sock: &Path, servers: &str, extra: &str) -> String {
    format!(
        r#"
[admin]
socket = "{}"
[[listener]]
name = "web"
bind = "127.0.0.1:0"
protocol = "http"
  [[listener.route]]
  backend = "b"
[[listener]]
name = "raw"
bind = "127.0.0.1:0"
protocol = "tcp"
backend = "b"
[[backend]]
name = "b"
{extra}
servers = [ {servers} ]
"#,
        sock.display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn draining_a_server_finishes_in_flight_work_and_wait_returns_after_it() {
    let release = Arc::new(tokio::sync::Semaphore::new(0));
    let slow = held_backend("slow", release.clone()).await;
    let fast = FakeBackend::start("fast").await;
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("admin.sock");
    let servers = format!(
        r#"{{ name = "slow", addr = "{}" }}, {{ name = "fast", addr = "{}" }}"#,
        slow.addr, fast.addr
    );
    let proxy = Proxy::start(&config(&sock, &servers, "")).await;
    let url = proxy.url("web").await;

    // Warm a pooled keep-alive connection to slow, then put one request in flight on it.
    release.add_permits(1);
    while slow.hits() == 0 {
        get(&client(), &url, &[]).await.unwrap();
    }
    let snap = proxy.veer.snapshot();
    let slow_server = snap.backend("b").unwrap().groups[0].servers[0].clone();
    let in_flight = {
        let url = url.clone();
        let before = slow.hits();
        let task = tokio::spawn(async move {
            loop {
                let a = get(&client(), &url, &[]).await.unwrap();
                if a.server() == "slow" {
                    return a;
                }
            }
        });
        while slow.hits() == before {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        task
    };
    assert_eq!(slow_server.state.active_requests.load(Ordering::Relaxed), 1);

    assert_eq!(admin(&sock, "set server b/slow state drain").await, "\n");
    assert_eq!(
        slow_server.pool.idle_len(),
        0,
        "idle upstream connections to a draining server close at once"
    );
    let waiter = {
        let sock = sock.clone();
        tokio::spawn(async move { admin(&sock, "wait 60s srv-drained b/slow").await })
    };
    // New requests go to the other server while the drained one finishes.
    let counts = tally(&client(), &url, 20).await;
    assert_eq!(counts.get("fast"), Some(&20), "{counts:?}");
    assert!(!waiter.is_finished(), "wait returned while a request was in flight");
    assert!(!in_flight.is_finished());

    release.add_permits(1);
    let answer = in_flight.await.unwrap();
    assert_eq!((answer.status, answer.server()), (200, "slow"));
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(30), waiter)
            .await
            .unwrap()
            .unwrap(),
        "Drained.\n\n"
    );
    assert_eq!(slow_server.state.active_requests.load(Ordering::Relaxed), 0);
    assert_eq!(
        slow_server.pool.idle_len(),
        0,
        "a draining server's connection is not pooled again"
    );
}

/// Echo server that also greets, for WebSocket-style upgrades and raw TCP alike.
async fn upgrade_echo_backend() -> std::net::SocketAddr {
    use http_body_util::Empty;
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let svc = service_fn(|mut req: hyper::Request<hyper::body::Incoming>| async move {
                    let up = hyper::upgrade::on(&mut req);
                    tokio::spawn(async move {
                        let mut io = TokioIo::new(up.await.unwrap());
                        let mut buf = [0u8; 1024];
                        while let Ok(n) = io.read(&mut buf).await {
                            if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                    });
                    let mut resp = hyper::Response::new(Empty::<bytes::Bytes>::new());
                    *resp.status_mut() = hyper::StatusCode::SWITCHING_PROTOCOLS;
                    resp.headers_mut().insert("upgrade", "websocket".parse().unwrap());
                    resp.headers_mut().insert("connection", "upgrade".parse().unwrap());
                    Ok::<_, std::convert::Infallible>(resp)
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .with_upgrades()
                    .await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_lived_sessions_flow_until_the_drain_deadline_then_close() {
    let backend = upgrade_echo_backend().await;
    let other = FakeBackend::start("other").await;
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("admin.sock");
    let servers = format!(
        r#"{{ name = "ws", addr = "{backend}" }}, {{ name = "other", addr = "{}", state = "maint" }}"#,
        other.addr
    );
    let proxy = Proxy::start(&config(&sock, &servers, "drain_timeout = \"1s\"")).await;

    // A WebSocket through the http listener and a raw TCP session through the tcp listener.
    let mut ws = BufReader::new(TcpStream::connect(proxy.addr("web").await).await.unwrap());
    ws.get_mut()
        .write_all(b"GET /chat HTTP/1.1\r\nhost: x\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n")
        .await
        .unwrap();
    loop {
        let mut line = String::new();
        ws.read_line(&mut line).await.unwrap();
        if line == "\r\n" {
            break;
        }
    }
    let mut tcp = TcpStream::connect(proxy.addr("raw").await).await.unwrap();
    tcp.write_all(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n")
        .await
        .unwrap();
    let mut tcp = BufReader::new(tcp);
    loop {
        let mut line = String::new();
        tcp.read_line(&mut line).await.unwrap();
        if line == "\r\n" {
            break;
        }
    }

    assert_eq!(
        admin(&sock, "set server b/ws state drain; enable server b/other").await,
        "\n\n"
    );
    // Both keep flowing after the drain started …
    for (name, s) in [("websocket", &mut ws), ("tcp", &mut tcp)] {
        s.get_mut().write_all(b"still here\n").await.unwrap();
        let mut echo = String::new();
        s.read_line(&mut echo).await.unwrap();
        assert_eq!(echo, "still here\n", "{name}");
    }
    // … and new TCP connections go elsewhere (the draining server takes no new clients).
    let fresh = get(&client(), &format!("http://{}/", proxy.addr("raw").await), &[])
        .await
        .unwrap();
    assert_eq!(fresh.server(), "other");
    // At the deadline both are closed.
    for (name, s) in [("websocket", &mut ws), ("tcp", &mut tcp)] {
        let mut rest = Vec::new();
        let closed = tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut rest)).await;
        assert!(closed.is_ok(), "{name} still open long after the drain deadline");
    }
    let snap = proxy.veer.snapshot();
    let ws_server = &snap.backend("b").unwrap().groups[0].servers[0];
    for _ in 0..500 {
        if ws_server.state.active_connections.load(Ordering::Relaxed) == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(ws_server.state.active_connections.load(Ordering::Relaxed), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_listener_lets_its_in_flight_request_finish() {
    let release = Arc::new(tokio::sync::Semaphore::new(0));
    let slow = held_backend("slow", release.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("admin.sock");
    let servers = format!(r#"{{ name = "slow", addr = "{}" }}"#, slow.addr);
    let proxy = Proxy::start(&config(&sock, &servers, "")).await;
    let web = proxy.addr("web").await;
    let in_flight = tokio::spawn(async move { get(&client(), &format!("http://{web}/"), &[]).await });
    while slow.hits() == 0 {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    // Reload without the "web" listener.
    let without = config(&sock, &servers, "").replace(
        "[[listener]]\nname = \"web\"\nbind = \"127.0.0.1:0\"\nprotocol = \"http\"\n  [[listener.route]]\n  backend = \"b\"\n",
        "",
    );
    std::fs::write(&proxy.path, without).unwrap();
    proxy.veer.reload().await.unwrap();
    assert!(proxy.veer.listener_addr("web").await.is_none());
    assert!(
        TcpStream::connect(web).await.is_err(),
        "a removed listener still accepts"
    );
    release.add_permits(1);
    let answer = in_flight.await.unwrap().unwrap();
    assert_eq!((answer.status, answer.server()), (200, "slow"));
    // Its last response asked the client to close (the listener is draining).
    assert_eq!(answer.header("connection"), Some("close"));
}

#[tokio::test]
async fn admin_drain_fails_readiness_but_keeps_serving() {
    let s = FakeBackend::start("s").await;
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("admin.sock");
    let servers = format!(r#"{{ name = "s", addr = "{}" }}"#, s.addr);
    let cfg = config(&sock, &servers, "").replace("[admin]\n", "[admin]\nhttp = \"127.0.0.1:0\"\n");
    let proxy = Proxy::start(&cfg).await;
    let ready = format!("http://{}/ready", proxy.veer.admin_http_addr().unwrap());
    let c = client();
    assert_eq!(get(&c, &ready, &[]).await.unwrap().status, 200);
    let before = get(&c, &proxy.url("web").await, &[]).await.unwrap();
    assert_eq!(before.header("connection"), None);

    assert_eq!(admin(&sock, "drain").await, "\n");
    assert_eq!(get(&c, &ready, &[]).await.unwrap().status, 503);
    let after = get(&c, &proxy.url("web").await, &[]).await.unwrap();
    assert_eq!((after.status, after.header("connection")), (200, Some("close")));
}

/// A backend whose response body sends one chunk and then never ends (a stream).
async fn streaming_backend() -> std::net::SocketAddr {
    use http_body_util::channel::Channel;
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let svc = service_fn(|_req: hyper::Request<hyper::body::Incoming>| async move {
                    let (mut tx, body) = Channel::<bytes::Bytes, std::convert::Infallible>::new(1);
                    tokio::spawn(async move {
                        tx.send_data(bytes::Bytes::from_static(b"event: 1\n")).await.unwrap();
                        std::future::pending::<()>().await;
                        drop(tx);
                    });
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(body))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_sessions_and_the_drain_deadline_cut_streaming_responses() {
    use http_body_util::BodyExt;
    let backend = streaming_backend().await;
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("admin.sock");
    let servers = format!(r#"{{ name = "stream", addr = "{backend}" }}"#);
    let proxy = Proxy::start(&config(&sock, &servers, "drain_timeout = \"1s\"")).await;
    let url = proxy.url("web").await;
    let snap = proxy.veer.snapshot();
    let server = snap.backend("b").unwrap().groups[0].servers[0].clone();

    for (how, command) in [
        ("shutdown sessions", "shutdown sessions server b/stream"),
        ("drain deadline", "set server b/stream state drain"),
    ] {
        let resp = client()
            .request(
                http::Request::get(&url)
                    .body(http_body_util::Full::new(bytes::Bytes::new()))
                    .unwrap(),
            )
            .await
            .unwrap();
        let mut body = resp.into_body();
        let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(&first[..], b"event: 1\n");
        assert_eq!(server.state.active_requests.load(Ordering::Relaxed), 1);
        assert_eq!(admin(&sock, command).await, "\n");
        // The stream ends (with an error: it was cut) instead of hanging forever.
        let end = tokio::time::timeout(Duration::from_secs(20), body.frame()).await;
        assert!(end.is_ok(), "{how}: the streaming response was not cut");
        assert!(!matches!(end.unwrap(), Some(Ok(_))), "{how}: the stream went on");
        for _ in 0..500 {
            if server.state.active_requests.load(Ordering::Relaxed) == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(server.state.active_requests.load(Ordering::Relaxed), 0, "{how}");
    }
}
