//! Requests that must be refused or forwarded faithfully (hardening, issue 18), with the
//! probes' exact inputs: an absolute-form target is routed and forwarded by the same host
//! (#4); duplicate, missing or malformed Host is 400 (#5); a malformed chunked body is the
//! client's 400, never counted against the server (#10); removing the sticky cookie keeps
//! every other byte of the Cookie header (#18).

mod support;
use std::sync::atomic::Ordering::Relaxed;

use support::*;

const ROUTES: &str = r#"
[[listener]]
name = "web"
bind = "127.0.0.1:0"
protocol = "http"
  [[listener.route]]
  host = "admin.internal"
  backend = "admin"
  [[listener.route]]
  backend = "public"
"#;

async fn setup() -> (Proxy, FakeBackend, FakeBackend) {
    let admin = reading_backend("admin").await;
    let public = reading_backend("public").await;
    let proxy = Proxy::start(&format!(
        "{ROUTES}\n[[backend]]\nname = \"admin\"\nservers = [ {{ name = \"admin-1\", addr = \"{}\" }} ]\n\
         [[backend]]\nname = \"public\"\nsticky = {{ cookie = \"VEER_SRV\" }}\nservers = [ {{ name = \"public-1\", addr = \"{}\" }} ]\n",
        admin.addr, public.addr
    ))
    .await;
    (proxy, admin, public)
}

fn header<'r>(response: &'r str, name: &str) -> Option<&'r str> {
    response.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

#[tokio::test]
async fn absolute_form_is_routed_and_forwarded_by_the_same_host() {
    let (proxy, admin, public) = setup().await;
    let addr = proxy.addr("web").await;
    let resp = raw_exchange(
        addr,
        b"GET http://admin.internal/zz HTTP/1.1\r\nHost: public\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(raw_status(&resp), 200, "{resp}");
    assert_eq!(header(&resp, "x-server"), Some("admin"), "{resp}");
    assert_eq!(header(&resp, "x-echo-host"), Some("admin.internal"), "{resp}");
    assert_eq!((admin.hits(), public.hits()), (1, 0));
}

#[tokio::test]
async fn duplicate_missing_or_malformed_host_is_400() {
    let (proxy, admin, public) = setup().await;
    let addr = proxy.addr("web").await;
    let cases: [&[u8]; 6] = [
        b"GET / HTTP/1.1\r\nHost: a\r\nHost: admin.internal\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: admin.internal\r\nHost: admin.internal\r\n\r\n",
        b"GET / HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a b/c\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a@evil\r\n\r\n",
        b"GET http://a@admin.internal/ HTTP/1.1\r\nHost: admin.internal\r\n\r\n",
    ];
    for request in cases {
        let resp = raw_exchange(addr, request).await;
        let shown = String::from_utf8_lossy(request);
        assert_eq!(raw_status(&resp), 400, "{shown:?} → {resp}");
        assert_eq!(header(&resp, "veer-error"), Some("bad-request"), "{shown:?} → {resp}");
    }
    assert_eq!((admin.hits(), public.hits()), (0, 0));
    // HTTP/1.0 needs no Host.
    let resp = raw_exchange(addr, b"GET / HTTP/1.0\r\n\r\n").await;
    assert_eq!(
        (raw_status(&resp), header(&resp, "x-server")),
        (200, Some("public")),
        "{resp}"
    );
}

#[tokio::test]
async fn malformed_chunked_bodies_are_the_clients_400() {
    let (proxy, _admin, public) = setup().await;
    let addr = proxy.addr("web").await;
    let long_extension = format!("5;{}\r\nhello\r\n0\r\n\r\n", "a".repeat(100_000));
    let bodies: Vec<(&str, String)> = vec![
        ("zz", "zz\r\nhello\r\n0\r\n\r\n".into()),
        ("-5", "-5\r\nhello\r\n0\r\n\r\n".into()),
        ("0x5", "0x5\r\nhello\r\n0\r\n\r\n".into()),
        ("18 hex digits", "fffffffffffffffff5\r\nhello\r\n0\r\n\r\n".into()),
        ("bare LF", "5\nhello\n0\n\n".into()),
        ("100 KB extension", long_extension),
    ];
    for (what, body) in &bodies {
        let request = format!("POST /upload HTTP/1.1\r\nHost: public\r\nTransfer-Encoding: chunked\r\n\r\n{body}");
        let resp = raw_exchange(addr, request.as_bytes()).await;
        assert_eq!(raw_status(&resp), 400, "{what}: {resp}");
        assert_eq!(header(&resp, "veer-error"), Some("bad-request"), "{what}: {resp}");
    }
    let snap = proxy.veer.snapshot();
    let server = snap.backend("public").unwrap().servers().next().unwrap().clone();
    let responses: u64 = server.state.responses.iter().map(|c| c.load(Relaxed)).sum();
    assert_eq!(responses, 0, "the server was blamed for the client's bodies");
    assert_eq!(server.state.connect_failures.load(Relaxed), 0);
    assert!(!server.state.is_ejected(veer::state::now_ms()));
    let stats = proxy.veer.listener_stats().await;
    let web = &stats.iter().find(|(n, _)| n == "web").unwrap().1;
    let reason = |r: &str| web.errors[veer::error::REASONS.iter().position(|x| *x == r).unwrap()].load(Relaxed);
    assert_eq!(reason("bad-request"), bodies.len() as u64);
    assert_eq!(reason("upstream-error"), 0);
    // The server is fine: a good request still goes through.
    let resp = raw_exchange(addr, b"GET / HTTP/1.1\r\nHost: public\r\nConnection: close\r\n\r\n").await;
    assert_eq!(raw_status(&resp), 200, "{resp}");
    assert!(public.hits() >= 1);
}

#[tokio::test]
async fn removing_the_sticky_cookie_keeps_every_other_byte() {
    let (proxy, _admin, _public) = setup().await;
    let c = client();
    let url = format!("{}/", proxy.url("web").await);
    let a = get(
        &c,
        &url,
        &[("host", "public"), ("cookie", "a=1;b=2; flag; VEER_SRV=zzzz; c=\"q\"")],
    )
    .await
    .unwrap();
    assert_eq!(a.status, 200);
    assert_eq!(a.header("x-echo-cookie"), Some("a=1;b=2; flag; c=\"q\""));
    // Only veer's cookie: no Cookie header at all upstream.
    let a = get(&c, &url, &[("host", "public"), ("cookie", "VEER_SRV=zzzz")])
        .await
        .unwrap();
    assert_eq!(a.header("x-echo-cookie"), None);
}
