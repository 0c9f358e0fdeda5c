//! Every wait is bounded (hardening, issue 18), each with short configured values and
//! generous bounds (no test asserts a duration): a stalled response body cuts the client
//! (`read_timeout`, #6); idle HTTP/2 connections get GOAWAY and idle TCP sessions close
//! (`idle_timeout`, #7) while busy ones stay; a stalled request body is 408 and a slow but
//! steady upload is not the server's timeout (`body_timeout`, #8); pooled upstream
//! connections expire on time (`pool_idle_timeout`, #11).

mod support;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Generous bound on anything expected to happen "soon".
const SOON: Duration = Duration::from_secs(10);

fn http_config(runtime: &str, backend_keys: &str, addr: SocketAddr) -> String {
    format!(
        r#"
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
{backend_keys}
servers = [ {{ name = "s", addr = "{addr}" }} ]
"#
    )
}

/// A backend that answers `Content-Length: 100`, sends 10 bytes of it, and then nothing,
/// keeping the connection open.
async fn stalling_backend() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789")
                    .await
                    .unwrap();
                tokio::time::sleep(Duration::from_secs(600)).await;
                drop(s);
            });
        }
    });
    addr
}

#[tokio::test]
async fn a_stalled_response_body_cuts_the_client_and_is_counted() {
    let proxy = Proxy::start(&http_config("", "read_timeout = \"300ms\"", stalling_backend().await)).await;
    let resp = client()
        .request(
            http::Request::get(proxy.url("web").await)
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body = tokio::time::timeout(SOON, resp.into_body().collect())
        .await
        .expect("the client still waits on a stalled body");
    assert!(body.is_err(), "a cut response must not look complete");
    let snap = proxy.veer.snapshot();
    let server = snap.backend("b").unwrap().servers().next().unwrap().clone();
    assert_eq!(server.state.read_timeouts.load(Relaxed), 1);
    assert_eq!(server.state.active_requests.load(Relaxed), 0);
    let metrics = proxy.veer.render_metrics().await;
    assert!(
        metrics.contains("veer_server_read_timeouts_total{backend=\"b\",group=\"default\",server=\"s\"} 1"),
        "{metrics}"
    );
}

/// Reads HTTP/2 frames until EOF (bounded); returns their types.
async fn frame_types_until_eof(s: &mut TcpStream) -> Vec<u8> {
    let mut bytes = Vec::new();
    tokio::time::timeout(SOON, s.read_to_end(&mut bytes))
        .await
        .expect("the idle HTTP/2 connection was never closed")
        .unwrap();
    let mut types = Vec::new();
    let mut at = 0;
    while at + 9 <= bytes.len() {
        let len = u32::from_be_bytes([0, bytes[at], bytes[at + 1], bytes[at + 2]]) as usize;
        types.push(bytes[at + 3]);
        at += 9 + len;
    }
    types
}

const GOAWAY: u8 = 0x7;

#[tokio::test]
async fn idle_http2_connections_get_goaway_and_close() {
    let backend = FakeBackend::start("s").await;
    let proxy = Proxy::start(&http_config(
        "idle_timeout = \"300ms\"\nheader_timeout = \"60s\"",
        "",
        backend.addr,
    ))
    .await;
    // The probe's connections: the client preface and an empty SETTINGS frame, nothing more.
    let mut s = TcpStream::connect(proxy.addr("web").await).await.unwrap();
    s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .unwrap();
    let types = frame_types_until_eof(&mut s).await;
    assert!(types.contains(&GOAWAY), "no GOAWAY before close: {types:?}");
}

#[tokio::test]
async fn busy_http2_connections_outlive_the_idle_timeout() {
    let backend = FakeBackend::with_handler("slow", |req| {
        Box::pin(async move {
            tokio::time::sleep(Duration::from_millis(900)).await;
            named_response("slow", &req)
        })
    })
    .await;
    let proxy = Proxy::start(&http_config("idle_timeout = \"200ms\"", "", backend.addr)).await;
    let h2 = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http::<Full<Bytes>>();
    let url = proxy.url("web").await;
    // The stream stays open longer than idle_timeout: not idle.
    let resp = h2
        .request(http::Request::get(&url).body(Full::new(Bytes::new())).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.into_body().collect().await.unwrap().to_bytes(), "slow");
}

async fn echo_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn idle_tcp_sessions_close_and_busy_ones_stay() {
    let echo = echo_server().await;
    // The listener's own idle_timeout overrides [runtime]'s.
    let proxy = Proxy::start(&format!(
        r#"
[runtime]
idle_timeout = "1h"

[[listener]]
name = "raw"
bind = "127.0.0.1:0"
protocol = "tcp"
backend = "echo"
idle_timeout = "400ms"

[[backend]]
name = "echo"
servers = [ {{ name = "e", addr = "{echo}" }} ]
"#
    ))
    .await;
    let addr = proxy.addr("raw").await;

    let mut busy = TcpStream::connect(addr).await.unwrap();
    for i in 0..12u8 {
        busy.write_all(&[i]).await.unwrap();
        let mut b = [0u8; 1];
        busy.read_exact(&mut b).await.unwrap();
        assert_eq!(b[0], i);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let mut idle = TcpStream::connect(addr).await.unwrap();
    let mut rest = Vec::new();
    let n = tokio::time::timeout(SOON, idle.read_to_end(&mut rest))
        .await
        .expect("an idle TCP session was never closed");
    assert_eq!(n.unwrap(), 0);
}

#[tokio::test]
async fn a_stalled_request_body_is_408_and_releases_the_upstream() {
    let backend = reading_backend("s").await;
    let proxy = Proxy::start(&http_config("body_timeout = \"300ms\"", "", backend.addr)).await;
    let resp = raw_exchange(
        proxy.addr("web").await,
        b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789",
    )
    .await;
    assert_eq!(raw_status(&resp), 408, "{resp}");
    assert!(
        resp.to_ascii_lowercase().contains("veer-error: request-timeout"),
        "{resp}"
    );
    let snap = proxy.veer.snapshot();
    let server = snap.backend("b").unwrap().servers().next().unwrap().clone();
    assert_eq!(server.state.active_requests.load(Relaxed), 0);
    assert_eq!(server.pool.idle_len(), 0, "a half-sent upstream connection was pooled");
    assert_eq!(backend.hits(), 1);
}

#[tokio::test]
async fn a_slow_but_steady_upload_is_not_a_server_timeout() {
    let backend = reading_backend("s").await;
    // The upload takes longer than the backend's response timeout, but never stalls.
    let proxy = Proxy::start(&http_config(
        "body_timeout = \"2s\"",
        "timeout = \"300ms\"",
        backend.addr,
    ))
    .await;
    let mut s = TcpStream::connect(proxy.addr("web").await).await.unwrap();
    s.write_all(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    for b in b"0123456789" {
        tokio::time::sleep(Duration::from_millis(100)).await;
        s.write_all(&[*b]).await.unwrap();
    }
    let mut resp = String::new();
    tokio::time::timeout(SOON, s.read_to_string(&mut resp))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(raw_status(&resp), 200, "{resp}");
    assert!(resp.to_ascii_lowercase().contains("x-body-len: 10"), "{resp}");
}

/// A backend that counts its open connections.
async fn counting_backend() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let open = Arc::new(AtomicUsize::new(0));
    let o = open.clone();
    tokio::spawn(async move {
        loop {
            let (s, _) = listener.accept().await.unwrap();
            o.fetch_add(1, Relaxed);
            let o = o.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|req| async move {
                    Ok::<_, std::convert::Infallible>(named_response("s", &req))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                    .await;
                o.fetch_sub(1, Relaxed);
            });
        }
    });
    (addr, open)
}

#[tokio::test]
async fn pooled_upstream_connections_expire_on_time() {
    let (addr, open) = counting_backend().await;
    let proxy = Proxy::start(&http_config("", "pool_idle_timeout = \"300ms\"", addr)).await;
    let a = get(&client(), &proxy.url("web").await, &[]).await.unwrap();
    assert_eq!(a.status, 200);
    assert_eq!(open.load(Relaxed), 1);
    let deadline = tokio::time::Instant::now() + SOON;
    while open.load(Relaxed) > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the pooled connection outlived pool_idle_timeout"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A backend that accepts any upgrade (101) and then echoes bytes.
async fn upgrading_echo() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if s.read(&mut byte).await.unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(byte[0]);
                }
                s.write_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
                    .await
                    .unwrap();
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn idle_upgraded_tunnels_close() {
    let proxy = Proxy::start(&http_config("idle_timeout = \"400ms\"", "", upgrading_echo().await)).await;
    let mut s = TcpStream::connect(proxy.addr("web").await).await.unwrap();
    s.write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
        .await
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut byte).await.unwrap(), 1);
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"), "{}", String::from_utf8_lossy(&head));
    // Busy first: bytes keep moving for longer than the idle timeout.
    for i in 0..12u8 {
        s.write_all(&[i]).await.unwrap();
        s.read_exact(&mut byte).await.unwrap();
        assert_eq!(byte[0], i);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Then quiet: the tunnel is closed.
    let mut rest = Vec::new();
    let n = tokio::time::timeout(SOON, s.read_to_end(&mut rest))
        .await
        .expect("an idle tunnel was never closed");
    assert_eq!(n.unwrap(), 0);
    let snap = proxy.veer.snapshot();
    let server = snap.backend("b").unwrap().servers().next().unwrap().clone();
    let deadline = tokio::time::Instant::now() + SOON;
    while server.state.active_connections.load(Relaxed) > 0 {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
