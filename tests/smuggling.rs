//! Request smuggling and response splitting, as a table (issue 19): veer's HTTP/1 engine
//! owns framing now, so every ambiguity must be refused — the client gets its status and a
//! closed connection, and not one byte reaches the server (checked on a raw upstream socket).
//! Responses the engine cannot parse, or whose framing conflicts, are 502
//! `upstream-protocol`.

mod support;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A raw upstream: records every byte it receives; answers each head with `answer`.
async fn raw_upstream(answer: Vec<u8>) -> (SocketAddr, Arc<Mutex<Vec<u8>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    tokio::spawn(async move {
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            let (s, answer) = (s.clone(), answer.clone());
            tokio::spawn(async move {
                let mut buf = [0u8; 16 * 1024];
                let mut mine = Vec::new();
                loop {
                    let n = match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    s.lock().unwrap().extend_from_slice(&buf[..n]);
                    mine.extend_from_slice(&buf[..n]);
                    if mine.windows(4).any(|w| w == b"\r\n\r\n") {
                        mine.clear();
                        if stream.write_all(&answer).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    (addr, seen)
}

fn config(addr: SocketAddr) -> String {
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
retries = 0
servers = [ {{ name = "s", addr = "{addr}" }} ]
"#
    )
}

fn header<'r>(response: &'r str, name: &str) -> Option<&'r str> {
    response.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

#[tokio::test]
async fn ambiguous_requests_are_refused_and_nothing_reaches_the_server() {
    let (upstream, seen) = raw_upstream(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok".to_vec()).await;
    let proxy = Proxy::start(&config(upstream)).await;
    let addr = proxy.addr("web").await;
    let big = format!("GET / HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n", "a".repeat(70_000));
    let many = format!(
        "GET / HTTP/1.1\r\nHost: a\r\n{}\r\n",
        (0..150).map(|i| format!("X-{i}: v\r\n")).collect::<String>()
    );
    let ext = format!(
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;{}\r\nhello\r\n0\r\n\r\n",
        "e".repeat(100_000)
    );
    let post = |headers: &str, body: &str| format!("POST / HTTP/1.1\r\nHost: a\r\n{headers}\r\n{body}");
    let chunked = |body: &str| post("Transfer-Encoding: chunked\r\n", body);
    let vectors: Vec<(&str, String, u16)> = vec![
        (
            "CL then TE",
            post("Content-Length: 5\r\nTransfer-Encoding: chunked\r\n", "0\r\n\r\n"),
            400,
        ),
        (
            "TE then CL",
            post("Transfer-Encoding: chunked\r\nContent-Length: 5\r\n", "0\r\n\r\n"),
            400,
        ),
        (
            "two differing CL",
            post("Content-Length: 5\r\nContent-Length: 6\r\n", "hello"),
            400,
        ),
        ("CL list 5, 6", post("Content-Length: 5, 6\r\n", "hello"), 400),
        ("CL abc", post("Content-Length: abc\r\n", "hello"), 400),
        ("CL +5", post("Content-Length: +5\r\n", "hello"), 400),
        ("CL -1", post("Content-Length: -1\r\n", "hello"), 400),
        ("CL 1 0", post("Content-Length: 1 0\r\n", "hello"), 400),
        ("CL 0x5", post("Content-Length: 0x5\r\n", "hello"), 400),
        (
            "CL overflow",
            post("Content-Length: 99999999999999999999999\r\n", "hello"),
            400,
        ),
        ("TE gzip", post("Transfer-Encoding: gzip\r\n", "hello"), 400),
        (
            "TE chunked, gzip",
            post("Transfer-Encoding: chunked, gzip\r\n", "0\r\n\r\n"),
            400,
        ),
        (
            "TE gzip, chunked",
            post("Transfer-Encoding: gzip, chunked\r\n", "0\r\n\r\n"),
            400,
        ),
        (
            "two TE fields",
            post(
                "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
                "0\r\n\r\n",
            ),
            400,
        ),
        ("TE xchunked", post("Transfer-Encoding: xchunked\r\n", "0\r\n\r\n"), 400),
        (
            "TE on HTTP/1.0",
            "POST / HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".into(),
            400,
        ),
        (
            "obs-fold",
            "GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n folded\r\n\r\n".into(),
            400,
        ),
        ("space before colon", post("Content-Length : 5\r\n", "hello"), 400),
        ("tab before colon", "GET / HTTP/1.1\r\nHost\t: a\r\n\r\n".into(), 400),
        (
            "bad name byte",
            "GET / HTTP/1.1\r\nHost: a\r\nX(y): 1\r\n\r\n".into(),
            400,
        ),
        (
            "control byte in value",
            "GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\x012\r\n\r\n".into(),
            400,
        ),
        (
            "bare CR in value",
            "GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r2\r\n\r\n".into(),
            400,
        ),
        ("bare LF lines", "GET / HTTP/1.1\nHost: a\n\n".into(), 400),
        (
            "NUL in value",
            "GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\x002\r\n\r\n".into(),
            400,
        ),
        ("chunk size zz", chunked("zz\r\nhello\r\n0\r\n\r\n"), 400),
        ("chunk size -5", chunked("-5\r\nhello\r\n0\r\n\r\n"), 400),
        ("chunk size 0x5", chunked("0x5\r\nhello\r\n0\r\n\r\n"), 400),
        (
            "chunk size overflow",
            chunked("fffffffffffffffff5\r\nhello\r\n0\r\n\r\n"),
            400,
        ),
        ("no CRLF after chunk data", chunked("5\r\nhelloXX0\r\n\r\n"), 400),
        ("bare LF chunk lines", chunked("5\nhello\n0\n\n"), 400),
        ("100 KB chunk extension", ext, 400),
        (
            "two Host fields",
            "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n".into(),
            400,
        ),
        ("HTTP/1.1 without Host", "GET / HTTP/1.1\r\n\r\n".into(), 400),
        (
            "Host with userinfo",
            "GET / HTTP/1.1\r\nHost: a@evil\r\n\r\n".into(),
            400,
        ),
        (
            "absolute-form userinfo",
            "GET http://a@b/ HTTP/1.1\r\nHost: b\r\n\r\n".into(),
            400,
        ),
        (
            "double space request line",
            "GET  / HTTP/1.1\r\nHost: a\r\n\r\n".into(),
            400,
        ),
        ("unknown version", "GET / HTTP/1.2\r\nHost: a\r\n\r\n".into(), 400),
        (
            "target not origin-form",
            "GET foo HTTP/1.1\r\nHost: a\r\n\r\n".into(),
            400,
        ),
        ("CONNECT", "CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n".into(), 400),
        ("head over 64 KiB", big, 431),
        ("150 header fields", many, 431),
    ];
    assert!(vectors.len() >= 30);
    for (what, request, status) in &vectors {
        let resp = raw_exchange(addr, request.as_bytes()).await;
        assert_eq!(raw_status(&resp), *status, "{what}: {resp}");
        assert!(
            matches!(header(&resp, "veer-error"), Some("bad-request")),
            "{what}: {resp}"
        );
        assert_eq!(header(&resp, "connection"), Some("close"), "{what}: {resp}");
        tokio::time::sleep(Duration::from_millis(20)).await;
        let got = std::mem::take(&mut *seen.lock().unwrap());
        assert!(
            got.is_empty(),
            "{what}: the server received {:?}",
            String::from_utf8_lossy(&got)
        );
    }
    // Still serving, and an honest request does reach the server.
    let resp = raw_exchange(addr, b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").await;
    assert_eq!(raw_status(&resp), 200, "{resp}");
    assert!(!seen.lock().unwrap().is_empty());
}

#[tokio::test]
async fn responses_that_cannot_be_framed_are_502_upstream_protocol() {
    let big = format!(
        "HTTP/1.1 200 OK\r\nX-Big: {}\r\ncontent-length: 0\r\n\r\n",
        "a".repeat(70_000)
    );
    let vectors: Vec<(&str, String, &str)> = vec![
        (
            "CL with TE",
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".into(),
            "upstream-protocol",
        ),
        (
            "differing CL",
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok".into(),
            "upstream-protocol",
        ),
        (
            "CL abc",
            "HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\nok".into(),
            "upstream-protocol",
        ),
        (
            "TE gzip",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nok".into(),
            "upstream-protocol",
        ),
        (
            "bad status",
            "HTTP/1.1 2OO OK\r\nContent-Length: 2\r\n\r\nok".into(),
            "upstream-protocol",
        ),
        ("not HTTP", "SSH-2.0-OpenSSH_9.2\r\n\r\n".into(), "upstream-protocol"),
        (
            "obs-fold",
            "HTTP/1.1 200 OK\r\nX-A: 1\r\n folded\r\nContent-Length: 2\r\n\r\nok".into(),
            "upstream-protocol",
        ),
        (
            "space before colon",
            "HTTP/1.1 200 OK\r\nContent-Length : 2\r\n\r\nok".into(),
            "upstream-protocol",
        ),
        (
            "bare LF",
            "HTTP/1.1 200 OK\nContent-Length: 2\n\nok".into(),
            "upstream-protocol",
        ),
        (
            "NUL",
            "HTTP/1.1 200 OK\r\nX-A: a\x00b\r\nContent-Length: 2\r\n\r\nok".into(),
            "upstream-protocol",
        ),
        ("head over 64 KiB", big, "upstream-protocol"),
        (
            "101 unasked",
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: upgrade\r\n\r\n".into(),
            "upstream-error",
        ),
    ];
    for (what, answer, reason) in vectors {
        let (upstream, _) = raw_upstream(answer.into_bytes()).await;
        let proxy = Proxy::start(&config(upstream)).await;
        let resp = raw_exchange(
            proxy.addr("web").await,
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert_eq!(raw_status(&resp), 502, "{what}: {resp}");
        assert_eq!(header(&resp, "veer-error"), Some(reason), "{what}: {resp}");
    }
}

/// Valid framings the engine must carry faithfully: chunked both ways with trailers and
/// extensions (relayed as they came), pipelined requests answered in order, HEAD and 304
/// without a body, close-delimited responses, 100-continue.
#[tokio::test]
async fn valid_framings_pass_through() {
    let (upstream, seen) = raw_upstream(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n0\r\nX-T: 1\r\n\r\n".to_vec(),
    )
    .await;
    let proxy = Proxy::start(&config(upstream)).await;
    let addr = proxy.addr("web").await;
    let req =
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n4;e=1\r\nwiki\r\n0\r\nX-Trailer: 1\r\n\r\n\
                GET /second HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
    let resp = raw_exchange(addr, req).await;
    assert_eq!(resp.matches("HTTP/1.1 200 OK").count(), 2, "{resp}");
    assert_eq!(resp.matches("3;x=y\r\nabc\r\n0\r\nX-T: 1\r\n\r\n").count(), 2, "{resp}");
    let got = String::from_utf8_lossy(&seen.lock().unwrap()).into_owned();
    assert!(
        got.contains("transfer-encoding: chunked\r\n") || got.contains("Transfer-Encoding: chunked\r\n"),
        "{got}"
    );
    assert!(
        got.contains("\r\n\r\n4;e=1\r\nwiki\r\n0\r\nX-Trailer: 1\r\n\r\n"),
        "{got}"
    );
    let second = got
        .find("GET /second HTTP/1.1")
        .expect("the pipelined request was forwarded");
    assert!(second > got.find("wiki").unwrap());

    // An HTTP/1.0 client gets the chunked body decoded, and the connection closed.
    let resp = raw_exchange(addr, b"GET / HTTP/1.0\r\n\r\n").await;
    assert!(resp.ends_with("\r\n\r\nabc"), "{resp:?}");
    assert!(!resp.to_ascii_lowercase().contains("transfer-encoding"), "{resp}");

    // HEAD: no body, whatever Content-Length says; the next pipelined answer follows.
    let named = FakeBackend::start("named").await;
    let proxy = Proxy::start(&config(named.addr)).await;
    let addr = proxy.addr("web").await;
    let resp = raw_exchange(
        addr,
        b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(resp.matches("HTTP/1.1 200 OK").count(), 2, "{resp}");
    assert_eq!(resp.matches("content-length: 5").count(), 2, "{resp}");
    assert!(resp.ends_with("\r\n\r\nnamed"), "{resp:?}");

    // Close-delimited: relayed until the server closes, then the client is closed too.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut buf = [0u8; 4096];
        let _ = s.read(&mut buf).await;
        s.write_all(b"HTTP/1.1 200 OK\r\n\r\nuntil close").await.unwrap();
    });
    let proxy = Proxy::start(&config(upstream)).await;
    let resp = raw_exchange(proxy.addr("web").await, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").await;
    assert!(resp.ends_with("\r\n\r\nuntil close"), "{resp:?}");
    assert_eq!(header(&resp, "connection"), Some("close"), "{resp}");
}

#[tokio::test]
async fn expect_100_continue_is_relayed() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut head = Vec::new();
        let mut b = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            s.read_exact(&mut b).await.unwrap();
            head.push(b[0]);
        }
        s.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await.unwrap();
        let mut body = [0u8; 5];
        s.read_exact(&mut body).await.unwrap();
        assert_eq!(&body, b"hello");
        s.write_all(b"HTTP/1.1 201 Created\r\ncontent-length: 0\r\n\r\n")
            .await
            .unwrap();
    });
    let proxy = Proxy::start(&config(upstream)).await;
    let mut c = tokio::net::TcpStream::connect(proxy.addr("web").await).await.unwrap();
    c.write_all(
        b"PUT /x HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 5\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    // The client sends its body only after the 100.
    let mut got = Vec::new();
    let mut b = [0u8; 1];
    while !got.ends_with(b"\r\n\r\n") {
        c.read_exact(&mut b).await.unwrap();
        got.push(b[0]);
    }
    assert!(
        got.starts_with(b"HTTP/1.1 100 Continue"),
        "{:?}",
        String::from_utf8_lossy(&got)
    );
    c.write_all(b"hello").await.unwrap();
    let mut rest = String::new();
    c.read_to_string(&mut rest).await.unwrap();
    assert!(rest.starts_with("HTTP/1.1 201 Created"), "{rest}");
}

/// `[runtime] max_header_size` and `max_headers` bound both sides: a request head over
/// either is 431 and never reaches the server, a response head over either is 502; a
/// raised field limit lets through what the default (100) refuses.
#[tokio::test]
async fn configured_head_limits_bound_requests_and_responses() {
    let fields = |n: usize| (0..n).map(|i| format!("X-{i}: v\r\n")).collect::<String>();
    let limited = |addr| {
        format!(
            "[runtime]\nmax_header_size = \"2KiB\"\nmax_headers = 8\n{}",
            config(addr)
        )
    };

    let (upstream, seen) = raw_upstream(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok".to_vec()).await;
    let proxy = Proxy::start(&limited(upstream)).await;
    let addr = proxy.addr("web").await;
    let over_size = format!("GET / HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n", "a".repeat(2100));
    let over_count = format!("GET / HTTP/1.1\r\nHost: a\r\n{}\r\n", fields(8));
    for (what, req) in [("2 KiB + 100 B", over_size), ("9 fields", over_count)] {
        let resp = raw_exchange(addr, req.as_bytes()).await;
        assert_eq!(raw_status(&resp), 431, "{what}: {resp}");
    }
    assert!(seen.lock().unwrap().is_empty(), "a refused head reached the server");
    // Just inside both limits: 8 fields, under 2 KiB.
    let ok = format!("GET / HTTP/1.1\r\nHost: a\r\n{}Connection: close\r\n\r\n", fields(6));
    assert_eq!(raw_status(&raw_exchange(addr, ok.as_bytes()).await), 200);

    for (what, answer) in [
        (
            "response over 2 KiB",
            format!(
                "HTTP/1.1 200 OK\r\nX-Big: {}\r\ncontent-length: 0\r\n\r\n",
                "a".repeat(2100)
            ),
        ),
        (
            "response with 9 fields",
            format!("HTTP/1.1 200 OK\r\n{}content-length: 0\r\n\r\n", fields(8)),
        ),
    ] {
        let (upstream, _) = raw_upstream(answer.into_bytes()).await;
        let proxy = Proxy::start(&limited(upstream)).await;
        let resp = raw_exchange(
            proxy.addr("web").await,
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert_eq!(raw_status(&resp), 502, "{what}: {resp}");
        assert_eq!(header(&resp, "veer-error"), Some("upstream-protocol"), "{what}: {resp}");
    }

    // 150 fields: refused by default, served with max_headers = 200.
    let (upstream, _) = raw_upstream(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok".to_vec()).await;
    let many = format!("GET / HTTP/1.1\r\nHost: a\r\n{}Connection: close\r\n\r\n", fields(150));
    let default = Proxy::start(&config(upstream)).await;
    assert_eq!(
        raw_status(&raw_exchange(default.addr("web").await, many.as_bytes()).await),
        431
    );
    let raised = Proxy::start(&format!("[runtime]\nmax_headers = 200\n{}", config(upstream))).await;
    assert_eq!(
        raw_status(&raw_exchange(raised.addr("web").await, many.as_bytes()).await),
        200
    );
}
