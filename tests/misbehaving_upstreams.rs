//! Upstreams that misbehave (issue 27), each with its defined outcome: nothing reached the
//! client yet → a 502 (or 504) with its `veer-error` reason and the connection kept; the
//! response already started → the client's connection is cut (never a response that looks
//! complete); no wait past the backend's `timeout`/`read_timeout`; and the server's error
//! counters (`show stat` `eresp`/`srv_abrt`, the outlier detector's) see it. Conflicting
//! framing (CL+TE, two CLs), a head over the limit, non-HTTP and an unasked 101 are in
//! tests/smuggling.rs's table.

mod support;
use std::net::SocketAddr;
use std::time::Duration;

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What the scripted upstream does after reading a request head.
#[derive(Clone, Debug)]
enum Step {
    Write(&'static [u8]),
    /// Each byte, then a pause of this many milliseconds.
    Drip(&'static [u8], u64),
    /// Close with a reset (SO_LINGER 0).
    Reset,
    /// Shut down writing, then read until the proxy closes.
    HalfClose,
}

/// An upstream that answers every request head with `steps` (then closes, unless a step
/// says otherwise).
async fn scripted(steps: Vec<Step>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let steps = steps.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                for step in steps {
                    match step {
                        Step::Write(bytes) => {
                            if stream.write_all(bytes).await.is_err() {
                                return;
                            }
                        }
                        Step::Drip(bytes, ms) => {
                            for b in bytes {
                                if stream.write_all(&[*b]).await.is_err() {
                                    return;
                                }
                                tokio::time::sleep(Duration::from_millis(ms)).await;
                            }
                        }
                        Step::Reset => {
                            let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
                            return;
                        }
                        Step::HalfClose => {
                            let _ = stream.shutdown().await;
                            while matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {}
                            return;
                        }
                    }
                }
            });
        }
    });
    addr
}

fn config(dir: &std::path::Path, addr: SocketAddr) -> String {
    format!(
        r#"
[admin]
socket = "{}/admin.sock"

[[listener]]
name = "web"
bind = "127.0.0.1:0"
protocol = "http"
  [[listener.route]]
  backend = "b"

[[backend]]
name = "b"
retries = 0
timeout = "1s"
read_timeout = "500ms"
outlier = {{ consecutive_gateway_failure = 1 }}
servers = [ {{ name = "s", addr = "{addr}" }} ]
"#,
        dir.display()
    )
}

/// Sends `request` on a new connection; everything read until the proxy closes, and
/// whether it closed (false: still open after the bound).
async fn exchange(addr: SocketAddr, request: &[u8]) -> (String, bool) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .is_ok();
    (String::from_utf8_lossy(&out).into_owned(), closed)
}

fn header<'r>(response: &'r str, name: &str) -> Option<&'r str> {
    response.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// The server's `show stat` column `column`, as text.
async fn column(sock: &std::path::Path, column: &str) -> String {
    let csv = admin(sock, "show stat").await;
    let mut lines = csv.lines();
    let names: Vec<&str> = lines.next().unwrap().trim_start_matches("# ").split(',').collect();
    let i = names.iter().position(|n| *n == column).unwrap();
    let row = lines.find(|l| l.starts_with("b,s,")).unwrap();
    row.split(',').nth(i).unwrap().to_string()
}

async fn stat(sock: &std::path::Path, name: &str) -> u64 {
    column(sock, name).await.parse().unwrap_or(0)
}

async fn server_status(sock: &std::path::Path) -> String {
    column(sock, "status").await
}

const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";

#[tokio::test]
async fn each_misbehaviour_has_its_outcome() {
    use Step::*;
    // (what, script, expected: Ok(status, reason) when nothing had reached the client,
    // Err(prefix) when the response had started and the connection must be cut after it).
    type Expected = Result<(u16, &'static str), &'static str>;
    let cases: Vec<(&str, Vec<Step>, Expected)> = vec![
        ("HTTP/0.9 reply (a body, no head)", vec![Write(b"<html>hello</html>")], Ok((502, "upstream-protocol"))),
        ("reset mid-head", vec![Write(b"HTTP/1.1 200 OK\r\nConte"), Reset], Ok((502, "upstream-error"))),
        ("closed before any byte", vec![], Ok((502, "upstream-error"))),
        ("half-close before answering", vec![HalfClose], Ok((502, "upstream-error"))),
        ("head at one byte per 300 ms", vec![Drip(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", 300)], Ok((504, "upstream-timeout"))),
        ("100 Continue twice, unasked, then the answer", vec![Write(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")], Ok((200, ""))),
        ("body shorter than its Content-Length", vec![Write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")], Err("abc")),
        ("reset mid-body", vec![Write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"), Reset], Err("abc")),
        ("body at one byte per second", vec![Write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n"), Drip(b"abcdefghij", 1000)], Err("a")),
        ("chunked body cut", vec![Write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n")], Err("3\r\nabc\r\n")),
    ];
    for (what, steps, expected) in cases {
        let upstream = scripted(steps).await;
        let dir = tempfile::tempdir().unwrap();
        let proxy = Proxy::start(&config(dir.path(), upstream)).await;
        let sock = dir.path().join("admin.sock");
        let addr = proxy.addr("web").await;
        match expected {
            Ok((status, reason)) => {
                // Nothing had reached the client: a whole answer, then (asked to close) the end.
                let (resp, closed) = exchange(addr, b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").await;
                assert!(closed, "{what}: never answered: {resp:?}");
                let last = resp.rfind("HTTP/1.1 ").map_or(&resp[..], |i| &resp[i..]);
                assert_eq!(raw_status(last), status, "{what}: {resp:?}");
                if status == 200 {
                    assert!(last.ends_with("\r\n\r\nok"), "{what}: {resp:?}");
                } else {
                    assert_eq!(header(last, "veer-error"), Some(reason), "{what}: {resp:?}");
                    assert!(stat(&sock, "eresp").await >= 1, "{what}: not counted in eresp");
                    // The outlier detector saw a gateway failure: with
                    // `consecutive_gateway_failure = 1` that ejects the server.
                    assert_eq!(server_status(&sock).await, "DOWN", "{what}: not ejected");
                }
            }
            Err(started) => {
                // The response had started: the client connection (keep-alive) is cut after
                // what was relayed, so the client cannot take it for a whole response.
                let (resp, closed) = exchange(addr, GET).await;
                assert!(closed, "{what}: the connection was not cut: {resp:?}");
                assert!(resp.starts_with("HTTP/1.1 200 OK\r\n"), "{what}: {resp:?}");
                assert!(resp.ends_with(&format!("\r\n\r\n{started}")), "{what}: {resp:?}");
                assert!(stat(&sock, "srv_abrt").await >= 1, "{what}: not counted in srv_abrt");
            }
        }
    }
}

/// A body longer than its Content-Length: the client gets exactly the declared bytes, and
/// the surplus is never read as the next response — the upstream connection is not used
/// again, so a second request on the same client connection gets a whole, fresh answer.
#[tokio::test]
async fn a_body_longer_than_its_content_length_is_cut_to_it_and_the_connection_not_reused() {
    let upstream = scripted(vec![Step::Write(
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabcHTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nevil",
    )])
    .await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(&config(dir.path(), upstream)).await;
    let addr = proxy.addr("web").await;
    let (resp, closed) = exchange(
        addr,
        b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(closed, "{resp:?}");
    assert_eq!(resp.matches("HTTP/1.1 200 OK\r\n").count(), 2, "{resp:?}");
    assert_eq!(resp.matches("\r\n\r\nabc").count(), 2, "{resp:?}");
    assert!(!resp.contains("evil"), "the surplus was taken for a response: {resp:?}");
}
