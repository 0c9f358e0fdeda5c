//! WebSocket (and any `Upgrade`) passes through and then splices bytes both ways; HTTP/2
//! prior-knowledge (h2c) clients work end to end, multiplexed on one connection.

mod support;
use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use support::*;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

fn one_backend(addr: std::net::SocketAddr) -> String {
    format!(
        r#"
[[listener]]
name = "web"
bind = "127.0.0.1:0"
protocol = "http"
  [[listener.route]]
  backend = "b"
[[backend]]
name = "b"
servers = [ {{ name = "s", addr = "{addr}" }} ]
"#
    )
}

/// A backend that upgrades every request: it greets, then echoes what it reads.
async fn upgrading_backend() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let svc = service_fn(|mut req: Request<Incoming>| async move {
                    let key = req.headers().get("sec-websocket-key").cloned();
                    let upgraded = hyper::upgrade::on(&mut req);
                    tokio::spawn(async move {
                        let mut io = TokioIo::new(upgraded.await.unwrap());
                        io.write_all(b"hello from upstream\n").await.unwrap();
                        let mut buf = [0u8; 1024];
                        loop {
                            let n = io.read(&mut buf).await.unwrap_or(0);
                            if n == 0 {
                                break;
                            }
                            io.write_all(&buf[..n]).await.unwrap();
                        }
                    });
                    let mut resp = Response::new(Empty::<Bytes>::new());
                    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
                    resp.headers_mut().insert("upgrade", "websocket".parse().unwrap());
                    resp.headers_mut().insert("connection", "upgrade".parse().unwrap());
                    if let Some(k) = key {
                        resp.headers_mut().insert("sec-websocket-accept", k);
                    }
                    Ok::<_, Infallible>(resp)
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

#[tokio::test]
async fn websocket_handshake_then_bytes_flow_both_ways() {
    let proxy = Proxy::start(&one_backend(upgrading_backend().await)).await;
    let addr = proxy.addr("web").await;
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut stream = BufReader::new(stream);
    stream
        .get_mut()
        .write_all(
            b"GET /chat HTTP/1.1\r\nHost: ws.example\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
              Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        )
        .await
        .unwrap();
    let mut head = Vec::new();
    loop {
        let mut line = String::new();
        stream.read_line(&mut line).await.unwrap();
        if line == "\r\n" || line.is_empty() {
            break;
        }
        head.push(line.trim_end().to_ascii_lowercase());
    }
    assert_eq!(head[0], "http/1.1 101 switching protocols", "{head:?}");
    assert!(head.contains(&"upgrade: websocket".to_string()), "{head:?}");
    assert!(head.contains(&"connection: upgrade".to_string()), "{head:?}");
    assert!(
        head.contains(&"sec-websocket-accept: dghlihnhbxbszsbub25jzq==".to_string()),
        "{head:?}"
    );

    let mut greeting = String::new();
    stream.read_line(&mut greeting).await.unwrap();
    assert_eq!(greeting, "hello from upstream\n");
    for msg in ["ping 1\n", "a longer message\n"] {
        stream.get_mut().write_all(msg.as_bytes()).await.unwrap();
        let mut echoed = String::new();
        stream.read_line(&mut echoed).await.unwrap();
        assert_eq!(echoed, msg);
    }
    // The tunnel counts as an active connection on the server while open.
    let snap = proxy.veer.snapshot();
    let state = &snap.backend("b").unwrap().groups[0].servers[0].state;
    assert_eq!(state.active_connections.load(std::sync::atomic::Ordering::Relaxed), 1);
}

#[tokio::test]
async fn http2_prior_knowledge_end_to_end() {
    let backend = FakeBackend::start("s").await;
    let proxy = Proxy::start(&one_backend(backend.addr)).await;
    let url = proxy.url("web").await;
    let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http::<Full<Bytes>>();
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let (client, url) = (client.clone(), url.clone());
            tokio::spawn(async move {
                let req = Request::post(format!("{url}/h2/{i}"))
                    .body(Full::new(Bytes::from("payload")))
                    .unwrap();
                let resp = client.request(req).await.unwrap();
                assert_eq!(resp.version(), http::Version::HTTP_2);
                let (parts, body) = resp.into_parts();
                assert_eq!(parts.status, 200);
                assert_eq!(parts.headers["x-server"], "s");
                // The upstream (HTTP/1.1) request is origin-form with a Host from :authority.
                assert_eq!(parts.headers["x-echo-path"], format!("/h2/{i}"));
                assert_eq!(parts.headers["x-echo-host"], url.trim_start_matches("http://"));
                body.collect().await.unwrap().to_bytes()
            })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap(), "s");
    }
    assert_eq!(backend.hits(), 20);
}

/// A new h2c connection that arrives while veer drains (a binary upgrade's old process, a
/// pod being stopped) is served and then told GOAWAY, never closed unserved: the graceful
/// shutdown must not meet the connection before HTTP/2 has started on it. (Before, hyper's
/// version detection took the shutdown as "close now" whenever it came first — about one
/// connection in two here; the scenario suite saw it as broken pipes during upgrades.)
#[tokio::test]
async fn an_h2c_connection_opened_while_draining_is_served_then_told_to_go_away() {
    let backend = FakeBackend::start("s").await;
    let proxy = Proxy::start(&one_backend(backend.addr)).await;
    let url = proxy.url("web").await;
    proxy.veer.start_draining();
    for i in 0..20 {
        // A client of its own each time: a fresh connection per request.
        let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
            .http2_only(true)
            .build_http::<Full<Bytes>>();
        let req = Request::get(format!("{url}/late/{i}"))
            .body(Full::new(Bytes::new()))
            .unwrap();
        let resp = client
            .request(req)
            .await
            .unwrap_or_else(|e| panic!("connection {i}: {e:?}"));
        assert_eq!(resp.status(), 200, "connection {i}");
        assert_eq!(resp.into_body().collect().await.unwrap().to_bytes(), "s");
    }
    assert_eq!(backend.hits(), 20);
}

/// HTTP/2 requests go upstream through the HTTP/1 engine's pool: one after another, they
/// reuse one upstream connection (a body that hyper stops polling at its end still hands its
/// connection back).
#[tokio::test]
async fn http2_requests_reuse_pooled_upstream_connections() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let a = accepted.clone();
    tokio::spawn(async move {
        loop {
            let (s, _) = listener.accept().await.unwrap();
            a.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tokio::spawn(async move {
                let svc = service_fn(|req| async move { Ok::<_, Infallible>(named_response("s", &req)) });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    let proxy = Proxy::start(&one_backend(addr)).await;
    let url = proxy.url("web").await;
    let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http::<Full<Bytes>>();
    for i in 0..10 {
        let req = Request::get(format!("{url}/seq/{i}"))
            .body(Full::new(Bytes::new()))
            .unwrap();
        let resp = client.request(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.into_body().collect().await.unwrap().to_bytes(), "s");
    }
    assert_eq!(
        accepted.load(std::sync::atomic::Ordering::Relaxed),
        1,
        "upstream connections were not reused"
    );
}

/// A backend that records each request head as it arrived (raw bytes) and answers with
/// hop-by-hop fields of its own beside an ordinary one.
async fn recording_backend() -> (std::net::SocketAddr, tokio::sync::mpsc::UnboundedReceiver<String>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                        continue;
                    };
                    let head: Vec<u8> = buf.drain(..end + 4).collect();
                    let _ = tx.send(String::from_utf8_lossy(&head).into_owned());
                    let answer = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive, x-hop\r\n\
                                  X-Hop: secret\r\nKeep-Alive: timeout=5\r\nProxy-Agent: up\r\nX-Kept: yes\r\n\r\nok";
                    if s.write_all(answer.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, rx)
}

/// An HTTP/2 request goes upstream as the HTTP/1 engine writes heads: origin-form, Host
/// from `:authority`, the cookie crumbs HTTP/2 splits cookies into joined in one `Cookie`
/// field (RFC 9113 §8.2.3) without veer's sticky cookie, the client's X-Request-Id kept (one
/// made up only when it sent none), X-Forwarded-* and a new traceparent hop; and the
/// server's hop-by-hop fields (fixed ones and those its `Connection` names) do not reach
/// the client.
#[tokio::test]
async fn an_http2_request_goes_upstream_as_one_http1_head_with_veers_fields() {
    let (addr, mut heads) = recording_backend().await;
    let config = one_backend(addr).replace("servers = [", "sticky = { cookie = \"VEER_SRV\" }\nservers = [");
    let proxy = Proxy::start(&config).await;
    let url = proxy.url("web").await;
    let authority = url.trim_start_matches("http://").to_string();
    let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http::<Full<Bytes>>();

    let trace = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let req = Request::get(format!("{url}/a?b=c"))
        .header("cookie", "a=1")
        .header("cookie", "VEER_SRV=0123456789abcdef; b=2")
        .header("x-request-id", "from-client")
        .header("x-forwarded-for", "203.0.113.9")
        .header("traceparent", trace)
        .header("x-custom", "kept")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = client.request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-kept"], "yes");
    for hop in ["x-hop", "keep-alive", "proxy-agent", "connection"] {
        assert!(!resp.headers().contains_key(hop), "{hop} reached the client: {resp:?}");
    }
    assert_eq!(resp.into_body().collect().await.unwrap().to_bytes(), "ok");

    let head = heads.recv().await.unwrap();
    let lines: Vec<&str> = head.trim_end().split("\r\n").collect();
    assert_eq!(lines[0], "GET /a?b=c HTTP/1.1", "{head}");
    let fields: Vec<(String, &str)> = lines[1..]
        .iter()
        .map(|l| {
            let (n, v) = l.split_once(": ").unwrap();
            (n.to_ascii_lowercase(), v)
        })
        .collect();
    let all = |name: &str| {
        fields
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| *v)
            .collect::<Vec<_>>()
    };
    assert_eq!(all("host"), [authority.as_str()], "{head}");
    assert_eq!(all("cookie"), ["a=1; b=2"], "{head}");
    assert_eq!(all("x-request-id"), ["from-client"], "{head}");
    assert_eq!(all("x-forwarded-for"), ["203.0.113.9, 127.0.0.1"], "{head}");
    assert_eq!(all("x-forwarded-proto"), ["http"], "{head}");
    assert_eq!(all("x-forwarded-host"), [authority.as_str()], "{head}");
    assert_eq!(all("x-custom"), ["kept"], "{head}");
    let parent = all("traceparent");
    assert_eq!(parent.len(), 1, "{head}");
    assert_eq!(parent[0][..36], trace[..36], "the trace id is kept: {head}");
    assert_ne!(parent[0], trace, "veer's hop has a parent id of its own: {head}");

    // No X-Request-Id from the client: one is made up, 32 hex digits.
    let resp = client
        .request(Request::get(format!("{url}/b")).body(Full::new(Bytes::new())).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let head = heads.recv().await.unwrap();
    let id = head
        .split("\r\n")
        .find_map(|l| l.strip_prefix("x-request-id: "))
        .unwrap_or_else(|| panic!("no request id made up: {head}"));
    assert!(id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()), "{head}");
    assert!(
        !head.to_ascii_lowercase().contains("\r\ncookie:"),
        "no cookie field when none was sent: {head}"
    );
}

/// A backend that reads request heads and holds each one unanswered until `n` have
/// arrived, then answers them all; `closed` counts connections the proxy closed on it
/// while it held their request.
async fn gathering_backend(
    n: usize,
) -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
    use std::sync::Arc;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (arrived, closed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let gate = Arc::new(tokio::sync::Notify::new());
    let (a, c) = (arrived.clone(), closed.clone());
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let (arrived, closed, gate) = (a.clone(), c.clone(), gate.clone());
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(k) => buf.extend_from_slice(&chunk[..k]),
                    }
                }
                let open = gate.notified();
                tokio::pin!(open);
                open.as_mut().enable();
                if arrived.fetch_add(1, SeqCst) + 1 == n {
                    gate.notify_waiters();
                }
                tokio::select! {
                    _ = open => {
                        let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").await;
                    }
                    // The proxy gave up on the request: its connection closes.
                    r = s.read(&mut chunk) => {
                        if matches!(r, Ok(0) | Err(_)) {
                            closed.fetch_add(1, SeqCst);
                        }
                    }
                }
            });
        }
    });
    (addr, arrived, closed)
}

/// One HTTP/2 connection's own client, on a socket of its own.
async fn h2_connection(
    url: &str,
) -> (
    hyper::client::conn::http2::SendRequest<Empty<Bytes>>,
    tokio::task::JoinHandle<()>,
) {
    let tcp = tokio::net::TcpStream::connect(url.trim_start_matches("http://"))
        .await
        .unwrap();
    let (send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
        .await
        .unwrap();
    (
        send,
        tokio::spawn(async move {
            let _ = conn.await;
        }),
    )
}

/// The streams of one HTTP/2 connection are served side by side (veer runs them inside the
/// connection's task, not one after another): a backend that answers nothing until all
/// eight requests of the connection reached it gets all eight, and every one is answered.
#[tokio::test]
async fn the_streams_of_one_connection_are_served_side_by_side() {
    let (addr, arrived, _) = gathering_backend(8).await;
    let proxy = Proxy::start(&one_backend(addr)).await;
    let url = proxy.url("web").await;
    let (send, _conn) = h2_connection(&url).await;
    let requests = (0..8).map(|i| {
        let mut send = send.clone();
        let req = Request::get(format!("{url}/together/{i}")).body(Empty::new()).unwrap();
        async move {
            let resp = send.send_request(req).await.unwrap();
            assert_eq!(resp.status(), 200);
            resp.into_body().collect().await.unwrap().to_bytes()
        }
    });
    // A failure detector only: served one at a time, the first request would wait forever.
    let bodies = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        futures_util::future::join_all(requests),
    )
    .await
    .expect("the streams were not served side by side");
    assert!(bodies.iter().all(|b| b == "ok"));
    assert_eq!(arrived.load(std::sync::atomic::Ordering::SeqCst), 8);
}

/// A stream still waiting for its server when the client's connection goes away is given
/// up: veer closes that upstream connection rather than keep waiting for an answer nobody
/// will read.
#[tokio::test]
async fn a_stream_whose_client_connection_went_away_is_given_up_upstream() {
    use std::sync::atomic::Ordering::SeqCst;
    // Never enough requests to open the gate: each is held until veer gives it up.
    let (addr, arrived, closed) = gathering_backend(usize::MAX).await;
    let proxy = Proxy::start(&one_backend(addr)).await;
    let url = proxy.url("web").await;
    let (mut send, conn) = h2_connection(&url).await;
    let pending: Vec<_> = (0..3)
        .map(|i| {
            let req = Request::get(format!("{url}/abandoned/{i}")).body(Empty::new()).unwrap();
            tokio::spawn(send.send_request(req))
        })
        .collect();
    while arrived.load(SeqCst) < 3 {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    // The client goes away: its connection task and socket are dropped.
    conn.abort();
    drop(send);
    for p in pending {
        p.abort();
    }
    let given_up = async {
        while closed.load(SeqCst) < 3 {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(30), given_up)
        .await
        .expect("veer kept waiting upstream for a client that was gone");
}
