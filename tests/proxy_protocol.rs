//! PROXY protocol: a v1 or v2 header in front of a client connection (`accept_proxy`)
//! makes its source the client everywhere (X-Forwarded-For, the access log); truncated,
//! oversized and garbage headers close the connection and are counted; `send_proxy`
//! opens each upstream connection with a header a backend can parse.

mod support;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn config(dir: &std::path::Path, backend: SocketAddr) -> String {
    format!(
        r#"
[access_log]
path = "{}/access.log"

[[listener]]
name = "edge"
bind = "127.0.0.1:0"
protocol = "http"
accept_proxy = true
  [[listener.route]]
  backend = "web"

[[backend]]
name = "web"
servers = [ {{ name = "w1", addr = "{backend}" }} ]
"#,
        dir.display()
    )
}

fn v2_header(from: SocketAddr, to: SocketAddr) -> Vec<u8> {
    ppp::v2::Builder::with_addresses(
        ppp::v2::Version::Two | ppp::v2::Command::Proxy,
        ppp::v2::Protocol::Stream,
        (from, to),
    )
    .build()
    .unwrap()
}

#[tokio::test]
async fn the_header_source_is_the_client() {
    let web = FakeBackend::start("web").await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let proxy = Proxy::start_in(dir, &config(&path, web.addr)).await;
    let addr = proxy.addr("edge").await;

    let v1 = b"PROXY TCP4 203.0.113.9 10.0.0.1 40001 80\r\nGET /v1 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
    let resp = raw_exchange(addr, v1).await;
    assert_eq!(raw_status(&resp), 200, "{resp}");
    assert!(resp.contains("x-echo-x-forwarded-for: 203.0.113.9\r\n"), "{resp}");

    let from: SocketAddr = "[2001:db8::7]:40002".parse().unwrap();
    let mut v2 = v2_header(from, "[2001:db8::1]:443".parse().unwrap());
    v2.extend_from_slice(b"GET /v2 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
    let resp = raw_exchange(addr, &v2).await;
    assert_eq!(raw_status(&resp), 200, "{resp}");
    assert!(resp.contains("x-echo-x-forwarded-for: 2001:db8::7\r\n"), "{resp}");

    // LOCAL (the sender's own health check): the connection's own address counts.
    let mut local = ppp::v2::Builder::with_addresses(
        ppp::v2::Version::Two | ppp::v2::Command::Local,
        ppp::v2::Protocol::Unspecified,
        ppp::v2::Addresses::Unspecified,
    )
    .build()
    .unwrap();
    local.extend_from_slice(b"GET /local HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
    let resp = raw_exchange(addr, &local).await;
    assert!(resp.contains("x-echo-x-forwarded-for: 127.0.0.1\r\n"), "{resp}");

    // The access log names the client the header carried.
    let log_path = proxy.dir.path().join("access.log");
    let mut log = String::new();
    for _ in 0..200 {
        log = std::fs::read_to_string(&log_path).unwrap_or_default();
        if log.lines().count() >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(log.contains(r#""client":"203.0.113.9:40001""#), "{log}");
    assert!(log.contains(r#""client":"[2001:db8::7]:40002""#), "{log}");
}

#[tokio::test]
async fn bad_headers_close_the_connection_and_are_counted() {
    let web = FakeBackend::start("web").await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let proxy = Proxy::start_in(dir, &config(&path, web.addr)).await;
    let addr = proxy.addr("edge").await;

    let mut oversized = b"PROXY TCP4 ".to_vec();
    oversized.extend(std::iter::repeat_n(b'1', 200));
    let mut v2_too_long = v2_header("192.0.2.1:1".parse().unwrap(), "192.0.2.2:2".parse().unwrap());
    v2_too_long[14..16].copy_from_slice(&u16::MAX.to_be_bytes());
    let cases: [(&str, &[u8]); 5] = [
        ("no header", b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"),
        ("truncated v1", b"PROXY TCP4 203.0.113.9 10.0.0"),
        (
            "garbage v1",
            b"PROXY TCP4 nine ten 1 2\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
        ),
        ("oversized v1", &oversized),
        ("oversized v2", &v2_too_long),
    ];
    for (what, bytes) in cases {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(bytes).await.unwrap();
        // A truncated header then EOF from the client.
        s.shutdown().await.unwrap();
        let mut got = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut got)).await;
        assert!(read.is_ok(), "{what}: the connection stayed open");
        assert!(got.is_empty(), "{what}: answered {:?}", String::from_utf8_lossy(&got));
    }
    assert_eq!(web.hits(), 0);
    let stats = proxy.veer.listener_stats().await;
    assert_eq!(stats[0].1.proxy_protocol_errors.load(Relaxed), 5);
    let metrics = proxy.veer.render_metrics().await;
    assert!(
        metrics.contains("veer_proxy_protocol_errors_total{listener=\"edge\"} 5"),
        "{metrics}"
    );
}

/// A backend that reads a PROXY v2 header (parsed with ppp), then answers one HTTP
/// request with the source it announced.
async fn proxy_reading_backend() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let mut got = Vec::new();
                let mut buf = [0u8; 2048];
                loop {
                    let n = s.read(&mut buf).await.unwrap();
                    if n == 0 {
                        return;
                    }
                    got.extend_from_slice(&buf[..n]);
                    if got.windows(4).any(|w| w == b"\r\n\r\n") {
                        break;
                    }
                }
                let header = ppp::v2::Header::try_from(&got[..]).expect("a PROXY v2 header first");
                let source = match header.addresses {
                    ppp::v2::Addresses::IPv4(a) => format!("{}:{}", a.source_address, a.source_port),
                    other => format!("{other:?}"),
                };
                let rest = String::from_utf8_lossy(&got[header.len()..]).to_string();
                let ok = rest.starts_with("GET /");
                let body = format!("{source} {ok}");
                let _ = s
                    .write_all(format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}", body.len()).as_bytes())
                    .await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn send_proxy_v2_opens_every_upstream_connection() {
    let backend = proxy_reading_backend().await;
    let proxy = Proxy::start(&format!(
        r#"
[[listener]]
name = "web"
bind = "127.0.0.1:0"
protocol = "http"
  [[listener.route]]
  backend = "app"
[[listener]]
name = "db"
bind = "127.0.0.1:0"
protocol = "tcp"
backend = "app"
[[backend]]
name = "app"
send_proxy = "v2"
servers = [ {{ name = "a1", addr = "{backend}" }} ]
"#
    ))
    .await;
    // Two requests on one keep-alive client connection: each upstream connection carries
    // the header (none is pooled and reused for another client).
    let client = client();
    for _ in 0..2 {
        let a = get(&client, &format!("{}/x", proxy.url("web").await), &[])
            .await
            .unwrap();
        assert_eq!(a.status, 200);
        let body = String::from_utf8_lossy(&a.body);
        assert!(body.starts_with("127.0.0.1:") && body.ends_with(" true"), "{body}");
    }
    // The TCP path sends it too.
    let mut s = TcpStream::connect(proxy.addr("db").await).await.unwrap();
    let local = s.local_addr().unwrap();
    s.write_all(b"GET /tcp HTTP/1.1\r\nHost: a\r\n\r\n").await.unwrap();
    let mut got = String::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_string(&mut got)).await;
    assert!(got.ends_with(&format!("{local} true")), "{got}");
}
