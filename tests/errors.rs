//! Synthetic errors (design §5): 503 when no server is available, 502 when connects fail,
//! 504 when the upstream does not answer in time, 400 for requests veer refuses; each carries
//! `veer-error`, and none disturbs later requests.

mod support;
use std::time::Duration;

use support::*;

fn one_backend(servers: &str, extra: &str) -> String {
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
{extra}
servers = [ {servers} ]
"#
    )
}

#[tokio::test]
async fn no_available_server_is_503() {
    let s = FakeBackend::start("s").await;
    let proxy = Proxy::start(&one_backend(
        &format!(
            r#"{{ name = "s", addr = "{}", state = "maint" }}, {{ name = "t", addr = "{}", weight = 0 }}"#,
            s.addr, s.addr
        ),
        "",
    ))
    .await;
    let a = get(&client(), &proxy.url("web").await, &[]).await.unwrap();
    assert_eq!((a.status, a.header("veer-error")), (503, Some("no-server")));
    assert_eq!(s.hits(), 0);
}

#[tokio::test]
async fn connect_failure_is_502_after_retries() {
    let (d1, d2) = (dead_addr().await, dead_addr().await);
    let proxy = Proxy::start(&one_backend(
        &format!(r#"{{ name = "d1", addr = "{d1}" }}, {{ name = "d2", addr = "{d2}" }}"#),
        "retries = 1",
    ))
    .await;
    let a = get(&client(), &proxy.url("web").await, &[]).await.unwrap();
    assert_eq!((a.status, a.header("veer-error")), (502, Some("connect-failed")));
}

#[tokio::test]
async fn slow_upstream_is_504() {
    let slow = FakeBackend::with_handler("slow", |req| {
        Box::pin(async move {
            tokio::time::sleep(Duration::from_secs(30)).await;
            named_response("slow", &req)
        })
    })
    .await;
    let proxy = Proxy::start(&one_backend(
        &format!(r#"{{ name = "s", addr = "{}" }}"#, slow.addr),
        "timeout = \"200ms\"",
    ))
    .await;
    let a = get(&client(), &proxy.url("web").await, &[]).await.unwrap();
    assert_eq!((a.status, a.header("veer-error")), (504, Some("upstream-timeout")));
}

#[tokio::test]
async fn malformed_requests_get_4xx_and_never_reach_the_server() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = FakeBackend::start("s").await;
    let proxy = Proxy::start(&one_backend(&format!(r#"{{ name = "s", addr = "{}" }}"#, s.addr), "")).await;
    let addr = proxy.addr("web").await;
    let huge_header = format!("GET / HTTP/1.1\r\nhost: a\r\nx-big: {}\r\n\r\n", "a".repeat(100_000));
    let cases: Vec<(Vec<u8>, &[u16])> = vec![
        (b"GARBAGE\r\n\r\n".to_vec(), &[400]),
        (b"GET / HTTP/1.1\r\nbad header line\r\n\r\n".to_vec(), &[400]),
        (b"GET / HTTP/1.1\r\ncontent-length: x\r\n\r\n".to_vec(), &[400]),
        (b"GET /\xff\xfe HTTP/1.1\r\nhost: a\r\n\r\n".to_vec(), &[400]),
        (huge_header.into_bytes(), &[431, 400]),
        (b"CONNECT a:443 HTTP/1.1\r\nhost: a:443\r\n\r\n".to_vec(), &[400]),
    ];
    for (raw, want) in cases {
        let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
        let _ = c.write_all(&raw).await;
        let mut out = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut out)).await;
        let text = String::from_utf8_lossy(&out);
        let status: u16 = text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
        assert!(
            want.contains(&status),
            "{:?} → {text:?}",
            String::from_utf8_lossy(&raw[..raw.len().min(40)])
        );
    }
    assert_eq!(s.hits(), 0);
    // The proxy still serves.
    let a = get(&client(), &proxy.url("web").await, &[]).await.unwrap();
    assert_eq!(a.status, 200);
}

/// An upstream that answers the first request on each connection and then, like a server
/// whose keep-alive timeout fires just as the connection is reused, closes the connection
/// when the next request arrives without answering it.
async fn closes_on_reuse() -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 16 * 1024];
                let mut seen = Vec::new();
                while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    let n = s.read(&mut buf).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    seen.extend_from_slice(&buf[..n]);
                }
                s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    .await
                    .unwrap();
                let _ = s.read(&mut buf).await;
                // Next request arrived: close without answering.
            });
        }
    });
    addr
}

#[tokio::test]
async fn a_reused_connection_closed_by_the_upstream_is_retried_for_safe_requests() {
    let upstream = closes_on_reuse().await;
    let proxy = Proxy::start(&one_backend(&format!(r#"{{ name = "s", addr = "{upstream}" }}"#), "")).await;
    let url = proxy.url("web").await;
    let c = client();
    // First GET opens a connection; the second reuses it, the upstream closes it, and veer
    // repeats the GET on a new connection.
    for _ in 0..3 {
        let a = get(&c, &url, &[]).await.unwrap();
        assert_eq!((a.status, &a.body[..]), (200, &b"ok"[..]), "{a:?}");
    }
    // A request with a body is not repeated: the failure is reported, not hidden.
    let post = http::Request::post(&url)
        .body(http_body_util::Full::new(bytes::Bytes::from("order")))
        .unwrap();
    let a = send(&c, post).await.unwrap();
    assert_eq!((a.status, a.header("veer-error")), (502, Some("upstream-error")));
}

#[tokio::test]
async fn slow_or_silent_clients_and_idle_keep_alives_are_closed_after_header_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = FakeBackend::start("s").await;
    let config = one_backend(&format!(r#"{{ name = "s", addr = "{}" }}"#, s.addr), "")
        .replace("[[listener]]", "[runtime]\nheader_timeout = \"300ms\"\n\n[[listener]]");
    let proxy = Proxy::start(&config).await;
    let addr = proxy.addr("web").await;
    let closed_within = |mut c: tokio::net::TcpStream| async move {
        let mut out = Vec::new();
        tokio::time::timeout(Duration::from_secs(20), c.read_to_end(&mut out))
            .await
            .is_ok()
    };
    // Connects and sends nothing.
    let silent = tokio::net::TcpStream::connect(addr).await.unwrap();
    assert!(closed_within(silent).await, "a silent client is never closed");
    // Sends half a request head, then stalls.
    let mut slow = tokio::net::TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nhost: a\r\n").await.unwrap();
    assert!(closed_within(slow).await, "a slow-loris client is never closed");
    // A keep-alive connection idle after its request.
    let mut idle = tokio::net::TcpStream::connect(addr).await.unwrap();
    idle.write_all(b"GET / HTTP/1.1\r\nhost: a\r\n\r\n").await.unwrap();
    let mut head = [0u8; 12];
    idle.read_exact(&mut head).await.unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");
    assert!(
        closed_within(idle).await,
        "an idle keep-alive connection is never closed"
    );
    assert_eq!(s.hits(), 1);
}
