//! gRPC through veer: HTTP/2 clients to HTTP/2 servers (`protocol = "h2c"`, and `"h2"` over
//! TLS by ALPN) with unary and server-streaming calls, `te: trailers` passed on, the
//! `grpc-status` trailers intact, and veer's own errors gRPC-shaped (HTTP 200 with
//! `grpc-status: 14`). The test server speaks gRPC's framing on hyper's HTTP/2 server.

mod support;
use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use support::pki::{self, Ca};
use support::*;
use tokio::net::TcpListener;

/// One gRPC message frame: uncompressed flag, big-endian length, payload.
fn frame(msg: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(5 + msg.len());
    b.extend_from_slice(&[0]);
    b.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    b.extend_from_slice(msg);
    b.freeze()
}

/// The messages in a gRPC body.
fn messages(mut body: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    while body.len() >= 5 {
        let len = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
        out.push(String::from_utf8_lossy(&body[5..5 + len]).to_string());
        body = &body[5 + len..];
    }
    out
}

/// A response body of frames given up front (data, then trailers).
struct Frames(std::collections::VecDeque<Frame<Bytes>>);

impl hyper::body::Body for Frames {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        std::task::Poll::Ready(self.0.pop_front().map(Ok))
    }
}

/// `/test.Echo/Unary` echoes its message; `/test.Echo/Stream` answers three; both end with
/// `grpc-status: 0` trailers and say in `x-te` what `te` they received.
async fn grpc_call(req: Request<Incoming>) -> Response<Frames> {
    let path = req.uri().path().to_string();
    let te = req.headers().get("te").cloned();
    let body = req.into_body().collect().await.unwrap().to_bytes();
    let got = messages(&body);
    let mut frames = std::collections::VecDeque::new();
    if path == "/test.Echo/Unary" {
        frames.push_back(Frame::data(frame(format!("echo {}", got[0]).as_bytes())));
    } else {
        for i in 0..3 {
            frames.push_back(Frame::data(frame(format!("part {i} of {}", got[0]).as_bytes())));
        }
    }
    let mut trailers = http::HeaderMap::new();
    trailers.insert("grpc-status", "0".parse().unwrap());
    trailers.insert("grpc-message", "done".parse().unwrap());
    frames.push_back(Frame::trailers(trailers));
    let mut resp = Response::new(Frames(frames));
    resp.headers_mut()
        .insert("content-type", "application/grpc".parse().unwrap());
    if let Some(te) = te {
        resp.headers_mut().insert("x-te", te);
    }
    resp
}

/// A gRPC server over HTTP/2: prior knowledge, or TLS (ALPN h2) with `leaf`.
async fn grpc_server(leaf: Option<&pki::Leaf>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = leaf.map(|l| tokio_rustls::TlsAcceptor::from(l.server_config(&[b"h2"])));
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|req| async move { Ok::<_, Infallible>(grpc_call(req).await) });
                let http2 = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
                let _ = match acceptor {
                    Some(a) => match a.accept(tcp).await {
                        Ok(tls) => http2.serve_connection(TokioIo::new(tls), svc).await,
                        Err(_) => return,
                    },
                    None => http2.serve_connection(TokioIo::new(tcp), svc).await,
                };
            });
        }
    });
    addr
}

/// A gRPC call from an HTTP/2 (prior knowledge) client: (status, headers, messages, trailers).
async fn call(
    addr: SocketAddr,
    method: &str,
    msg: &str,
) -> (u16, http::HeaderMap, Vec<String>, Option<http::HeaderMap>) {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = Request::post(format!("http://grpc.test/test.Echo/{method}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Full::new(frame(msg.as_bytes())))
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let collected = resp.into_body().collect().await.unwrap();
    let trailers = collected.trailers().cloned();
    (status, headers, messages(&collected.to_bytes()), trailers)
}

fn config(backends: &str) -> String {
    format!(
        r#"
[[listener]]
name = "grpc"
bind = "127.0.0.1:0"
protocol = "http"
  [[listener.route]]
  path_prefix = "/test.Echo/"
  header = {{ name = "x-backend", value = "tls" }}
  backend = "echo-tls"
  [[listener.route]]
  path_prefix = "/test.Echo/"
  backend = "echo"
{backends}
"#
    )
}

#[tokio::test]
async fn unary_and_streaming_calls_keep_their_trailers() {
    let ca = Ca::new("grpc CA");
    let plain = grpc_server(None).await;
    let tls = grpc_server(Some(&ca.leaf(&["echo.internal"], 3))).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca.pem"), &ca.pem).unwrap();
    let backends = format!(
        r#"
[[backend]]
name = "echo"
protocol = "h2c"
servers = [ {{ name = "e1", addr = "{plain}" }} ]
[[backend]]
name = "echo-tls"
protocol = "h2"
tls = {{ ca = "{}/ca.pem", sni = "echo.internal" }}
servers = [ {{ name = "t1", addr = "{tls}" }} ]
"#,
        dir.path().display()
    );
    let proxy = Proxy::start_in(dir, &config(&backends)).await;
    let addr = proxy.addr("grpc").await;

    let (status, headers, msgs, trailers) = call(addr, "Unary", "hi").await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "application/grpc");
    assert_eq!(headers["x-te"], "trailers", "te: trailers reaches the server");
    assert_eq!(msgs, ["echo hi"]);
    let trailers = trailers.expect("grpc-status trailers");
    assert_eq!(trailers["grpc-status"], "0");
    assert_eq!(trailers["grpc-message"], "done");

    let (_, _, msgs, trailers) = call(addr, "Stream", "s").await;
    assert_eq!(msgs, ["part 0 of s", "part 1 of s", "part 2 of s"]);
    assert_eq!(trailers.unwrap()["grpc-status"], "0");

    // Several calls share one multiplexed upstream connection.
    for i in 0..5 {
        assert_eq!(call(addr, "Unary", &i.to_string()).await.2, [format!("echo {i}")]);
    }
    let snap = proxy.veer.snapshot();
    let server = &snap.backend("echo").unwrap().groups[0].servers[0];
    assert_eq!(
        server.state.responses[veer::state::status_class(200)].load(std::sync::atomic::Ordering::Relaxed),
        7
    );
    assert!(server.pool.h2.lock().await.is_some());

    // Over TLS (ALPN h2, verified with the private CA).
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = Request::post("http://grpc.test/test.Echo/Unary")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("x-backend", "tls")
        .body(Full::new(frame(b"secure")))
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let collected = resp.into_body().collect().await.unwrap();
    assert_eq!(collected.trailers().unwrap()["grpc-status"], "0");
    assert_eq!(messages(&collected.to_bytes()), ["echo secure"]);
}

#[tokio::test]
async fn a_dead_server_is_grpc_status_unavailable() {
    let dead = dead_addr().await;
    let backends = format!(
        r#"
[[backend]]
name = "echo"
protocol = "h2c"
retries = 0
servers = [ {{ name = "e1", addr = "{dead}" }} ]
[[backend]]
name = "echo-tls"
protocol = "h2c"
servers = [ {{ name = "t1", addr = "{dead}" }} ]
"#
    );
    let proxy = Proxy::start(&config(&backends)).await;
    let (status, headers, msgs, _) = call(proxy.addr("grpc").await, "Unary", "hi").await;
    assert_eq!(status, 200, "gRPC errors ride on HTTP 200");
    assert_eq!(headers["grpc-status"], "14");
    assert_eq!(headers["content-type"], "application/grpc");
    assert_eq!(headers["veer-error"], "connect-failed");
    assert!(msgs.is_empty());
}

#[tokio::test]
async fn an_http1_client_reaches_an_http2_server() {
    let plain = grpc_server(None).await;
    let backends = format!(
        r#"
[[backend]]
name = "echo"
protocol = "h2c"
servers = [ {{ name = "e1", addr = "{plain}" }} ]
[[backend]]
name = "echo-tls"
protocol = "h2c"
servers = [ {{ name = "t1", addr = "{plain}" }} ]
"#
    );
    let proxy = Proxy::start(&config(&backends)).await;
    let addr = proxy.addr("grpc").await;
    let msg = frame(b"one");
    // A body with a length; the response (no length over HTTP/2) comes chunked, its
    // trailers as chunked trailers.
    let mut req = format!(
        "POST /test.Echo/Unary HTTP/1.1\r\nHost: grpc.test\r\nTE: trailers\r\nContent-Type: application/grpc\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        msg.len()
    )
    .into_bytes();
    req.extend_from_slice(&msg);
    let resp = raw_exchange(addr, &req).await;
    assert_eq!(raw_status(&resp), 200, "{resp}");
    let lower = resp.to_ascii_lowercase();
    assert!(lower.contains("transfer-encoding: chunked"), "{resp}");
    assert!(lower.contains("x-te: trailers"), "{resp}");
    assert!(resp.contains("echo one"), "{resp}");
    assert!(
        lower.contains("\r\n0\r\ngrpc-status: 0\r\ngrpc-message: done\r\n\r\n"),
        "{resp}"
    );

    // A chunked request body, decoded on its way up.
    let mut req = b"POST /test.Echo/Stream HTTP/1.1\r\nHost: grpc.test\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n".to_vec();
    let body = frame(b"two");
    req.extend_from_slice(format!("{:x}\r\n", 3).as_bytes());
    req.extend_from_slice(&body[..3]);
    req.extend_from_slice(format!("\r\n{:x}\r\n", body.len() - 3).as_bytes());
    req.extend_from_slice(&body[3..]);
    req.extend_from_slice(b"\r\n0\r\n\r\n");
    let resp = raw_exchange(addr, &req).await;
    assert_eq!(raw_status(&resp), 200, "{resp}");
    assert!(resp.contains("part 2 of two"), "{resp}");
}
