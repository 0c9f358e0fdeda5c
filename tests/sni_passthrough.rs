//! SNI passthrough: a tcp listener routes TLS by the ClientHello's server name without
//! terminating it (the client's handshake is with the backend itself), and a client that
//! does not speak TLS falls to the route without `sni`.

mod support;
use std::time::Duration;

use support::pki::{self, Ca};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn routes_by_server_name_and_plain_tcp_falls_back() {
    let ca = Ca::new("passthrough CA");
    let db_cert = ca.leaf(&["db.example.com"], 1);
    let svc_cert = ca.leaf(&["*.svc.example.com"], 2);
    let db = pki::tls_backend("db", &db_cert).await;
    let svc = pki::tls_backend("svc", &svc_cert).await;
    let fallback = FakeBackend::start("fallback").await;
    let proxy = Proxy::start(&format!(
        r#"
[[listener]]
name = "tls-in"
bind = "127.0.0.1:0"
protocol = "tcp"
  [[listener.route]]
  sni = "db.example.com"
  backend = "pg-tls"
  [[listener.route]]
  sni = "*.svc.example.com"
  backend = "svc"
  [[listener.route]]
  backend = "fallback"

[[backend]]
name = "pg-tls"
servers = [ {{ name = "db1", addr = "{db}" }} ]
[[backend]]
name = "svc"
servers = [ {{ name = "s1", addr = "{svc}" }} ]
[[backend]]
name = "fallback"
servers = [ {{ name = "f1", addr = "{}" }} ]
"#,
        fallback.addr
    ))
    .await;
    let addr = proxy.addr("tls-in").await;
    let config = pki::client_config(ca.roots(), &[b"http/1.1"], None);

    for (name, want_cert, want_body) in [
        ("db.example.com", &db_cert, "db"),
        ("api.svc.example.com", &svc_cert, "svc"),
    ] {
        let mut s = pki::connect(addr, name, config.clone()).await.unwrap();
        // The certificate is the backend's own: veer did not terminate.
        assert_eq!(pki::peer_cert(&s), want_cert.der, "{name}");
        let resp = pki::get(&mut s, name, "/").await.unwrap();
        assert!(
            resp.starts_with("HTTP/1.1 200") && resp.ends_with(want_body),
            "{name}: {resp}"
        );
    }

    // Not TLS: the route without `sni`.
    let resp = raw_exchange(addr, b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").await;
    assert_eq!(raw_status(&resp), 200, "{resp}");
    assert!(resp.ends_with("fallback"), "{resp}");

    // A ClientHello that arrives in pieces is still routed.
    let mut hello = Vec::new();
    {
        let server = rustls_pki_types::ServerName::try_from("db.example.com").unwrap();
        let mut c = rustls::ClientConnection::new(config.clone(), server).unwrap();
        c.write_tls(&mut hello).unwrap();
    }
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    for piece in hello.chunks(100) {
        s.write_all(piece).await.unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // The backend answers the ClientHello with its ServerHello (a TLS handshake record).
    let mut first = [0u8; 1];
    tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut first))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first[0], 0x16);
}
