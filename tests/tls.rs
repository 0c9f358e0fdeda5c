//! TLS termination: the certificate chosen by SNI (exact names, a wildcard, the default),
//! HTTP/1.1 and HTTP/2 by ALPN, mTLS, hot certificate files (renewed: new handshakes see
//! the new one while open connections carry on; garbage: the old one stays), what a bad
//! certificate does to a config, `show ssl cert`, the metrics, HSTS and X-Forwarded-Proto,
//! and `redirect_https`. Certificates are made in the test (rcgen).

mod support;
use std::time::Duration;

use support::pki::{self, Ca};
use support::*;

fn tls_config(dir: &std::path::Path, backend: std::net::SocketAddr, extra_tls: &str) -> String {
    format!(
        r#"
[admin]
socket = "{0}/admin.sock"

[access_log]
path = "{0}/access.log"

[[listener]]
name = "https"
bind = "127.0.0.1:0"
protocol = "http"
hsts = "max-age=31536000"
  [listener.tls]
  certs = [ {{ cert = "default.pem", key = "default.key" }},
            {{ cert = "shop.pem", key = "shop.key" }},
            {{ cert = "wild.pem", key = "wild.key" }} ]
  {extra_tls}
  [[listener.route]]
  backend = "web"

[[backend]]
name = "web"
servers = [ {{ name = "w1", addr = "{backend}" }} ]
"#,
        dir.display()
    )
}

struct Certs {
    ca: Ca,
    default: pki::Leaf,
    shop: pki::Leaf,
    wild: pki::Leaf,
}

fn write_certs(dir: &std::path::Path) -> Certs {
    let ca = Ca::new("veer test CA");
    let certs = Certs {
        default: ca.leaf(&["default.example.net"], 10),
        shop: ca.leaf(&["shop.example.com", "www.shop.example.com"], 11),
        wild: ca.leaf(&["*.example.com"], 12),
        ca,
    };
    certs.default.write(dir, "default");
    certs.shop.write(dir, "shop");
    certs.wild.write(dir, "wild");
    certs
}

#[tokio::test]
async fn each_server_name_gets_its_certificate_over_http1_and_h2() {
    let web = FakeBackend::start("web").await;
    let dir = tempfile::tempdir().unwrap();
    let certs = write_certs(dir.path());
    let path = dir.path().to_path_buf();
    let proxy = Proxy::start_in(dir, &tls_config(&path, web.addr, "")).await;
    let addr = proxy.addr("https").await;
    let h1 = pki::client_config(certs.ca.roots(), &[b"http/1.1"], None);

    for (sni, want) in [
        ("shop.example.com", &certs.shop),
        ("WWW.shop.example.com", &certs.shop),
        ("api.example.com", &certs.wild),
        ("a.b.example.com", &certs.default),
        ("other.example.org", &certs.default),
    ] {
        // Names the chosen certificate does not cover fail verification on the client; the
        // certificate seen is what matters here, so accept it for the check.
        let mut config = (*pki::client_config(certs.ca.roots(), &[b"http/1.1"], None)).clone();
        config
            .dangerous()
            .set_certificate_verifier(std::sync::Arc::new(AcceptAny));
        let s = pki::connect(addr, sni, std::sync::Arc::new(config)).await.unwrap();
        assert_eq!(pki::peer_cert(&s), want.der, "SNI {sni}");
    }
    // No SNI at all: the first certificate.
    let mut config = (*h1).clone();
    config.enable_sni = false;
    config
        .dangerous()
        .set_certificate_verifier(std::sync::Arc::new(AcceptAny));
    let s = pki::connect(addr, "default.example.net", std::sync::Arc::new(config))
        .await
        .unwrap();
    assert_eq!(pki::peer_cert(&s), certs.default.der);

    // HTTP/1.1 by ALPN, verified: the backend hears https, the client gets HSTS.
    let mut s = pki::connect(addr, "shop.example.com", h1.clone()).await.unwrap();
    assert_eq!(s.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    for _ in 0..3 {
        let resp = pki::get(&mut s, "shop.example.com", "/").await.unwrap();
        assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
        assert!(resp.contains("x-echo-x-forwarded-proto: https"), "{resp}");
        assert!(resp.contains("strict-transport-security: max-age=31536000"), "{resp}");
    }

    // HTTP/2 by ALPN.
    let h2 = pki::client_config(certs.ca.roots(), &[b"h2", b"http/1.1"], None);
    let s = pki::connect(addr, "shop.example.com", h2).await.unwrap();
    assert_eq!(s.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), hyper_util::rt::TokioIo::new(s))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = hyper::Request::get("https://shop.example.com/h2")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), hyper::Version::HTTP_2);
    assert_eq!(resp.headers()["x-echo-x-forwarded-proto"], "https");
    assert_eq!(resp.headers()["strict-transport-security"], "max-age=31536000");

    // What operators see: `show ssl cert` and the metrics.
    let shown = admin(&proxy.dir.path().join("admin.sock"), "show ssl cert").await;
    let lines: Vec<&str> = shown.lines().filter(|l| !l.is_empty()).collect();
    assert_eq!(lines[0], "# listener file sans not_after serial");
    assert_eq!(lines.len(), 4, "{shown}");
    assert!(
        lines[2].starts_with("https ")
            && lines[2].contains("shop.pem shop.example.com,www.shop.example.com 4096-01-01T00:00:00Z 0B"),
        "{shown}"
    );
    let detail = admin(
        &proxy.dir.path().join("admin.sock"),
        &format!("show ssl cert {}", proxy.dir.path().join("wild.pem").display()),
    )
    .await;
    assert!(
        detail.contains("Subject Alternative Name: DNS:*.example.com"),
        "{detail}"
    );
    assert!(detail.contains("Serial: 0C"), "{detail}");
    let metrics = proxy.veer.render_metrics().await;
    assert!(
        metrics.contains("veer_tls_cert_not_after_seconds{listener=\"https\",cert=\""),
        "{metrics}"
    );
    assert!(
        metrics.contains("veer_tls_handshakes_total{listener=\"https\",result=\"ok\"} 8"),
        "{metrics}"
    );
    assert!(
        metrics.contains("veer_tls_negotiated_total{listener=\"https\",version=\"TLSv1.3\",alpn=\"h2\"} 1"),
        "{metrics}"
    );
    // The access log carries what each request's connection negotiated.
    let mut log = String::new();
    for _ in 0..200 {
        log = std::fs::read_to_string(proxy.dir.path().join("access.log")).unwrap_or_default();
        if log.lines().count() >= 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        log.contains(r#""alpn":"http/1.1""#) && log.contains(r#""alpn":"h2""#),
        "{log}"
    );
    assert!(log.contains(r#""sni":"shop.example.com""#), "{log}");
    assert!(
        log.contains(r#""tls_version":"TLSv1.3""#) && log.contains(r#""tls_cipher":"TLS13_"#),
        "{log}"
    );
}

#[tokio::test]
async fn mtls_refuses_a_client_without_a_certificate() {
    let web = FakeBackend::start("web").await;
    let dir = tempfile::tempdir().unwrap();
    let certs = write_certs(dir.path());
    std::fs::write(dir.path().join("ca.pem"), &certs.ca.pem).unwrap();
    let path = dir.path().to_path_buf();
    let proxy = Proxy::start_in(dir, &tls_config(&path, web.addr, r#"client_ca = "ca.pem""#)).await;
    let addr = proxy.addr("https").await;

    // TLS 1.3: the client finishes its side first; the server's refusal arrives as an
    // alert on the first read, and no request reaches the backend.
    let bare = pki::client_config(certs.ca.roots(), &[b"http/1.1"], None);
    let refused = match pki::connect(addr, "shop.example.com", bare).await {
        Err(_) => true,
        Ok(mut s) => pki::get(&mut s, "shop.example.com", "/").await.is_err(),
    };
    assert!(refused);
    assert_eq!(web.hits(), 0);

    let client_cert = certs.ca.leaf(&["client.example.com"], 99);
    let with_cert = pki::client_config(certs.ca.roots(), &[b"http/1.1"], Some(&client_cert));
    let mut s = pki::connect(addr, "shop.example.com", with_cert).await.unwrap();
    let resp = pki::get(&mut s, "shop.example.com", "/").await.unwrap();
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    let metrics = proxy.veer.render_metrics().await;
    assert!(metrics.contains("result=\"no_client_cert\"} 1"), "{metrics}");
}

#[tokio::test]
async fn renewed_certificates_serve_new_handshakes_and_garbage_keeps_the_old() {
    let web = FakeBackend::start("web").await;
    let dir = tempfile::tempdir().unwrap();
    let certs = write_certs(dir.path());
    let path = dir.path().to_path_buf();
    let proxy = Proxy::start_in(dir, &tls_config(&path, web.addr, "")).await;
    proxy.veer.spawn_watcher().unwrap();
    let addr = proxy.addr("https").await;
    let roots = certs.ca.roots();
    let config = pki::client_config(roots.clone(), &[b"http/1.1"], None);

    let mut old = pki::connect(addr, "shop.example.com", config.clone()).await.unwrap();
    assert_eq!(pki::peer_cert(&old), certs.shop.der);
    assert!(pki::get(&mut old, "shop.example.com", "/")
        .await
        .unwrap()
        .starts_with("HTTP/1.1 200"));

    // Renewed the way cert-manager or certbot do it: new files in place.
    let renewed = certs.ca.leaf(&["shop.example.com", "www.shop.example.com"], 21);
    renewed.write(proxy.dir.path(), "shop");
    let mut seen = false;
    for _ in 0..200 {
        assert!(pki::get(&mut old, "shop.example.com", "/")
            .await
            .unwrap()
            .starts_with("HTTP/1.1 200"));
        let fresh = pki::connect(addr, "shop.example.com", config.clone()).await.unwrap();
        if pki::peer_cert(&fresh) == renewed.der {
            seen = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(seen, "a new handshake never saw the renewed certificate");
    // The connection opened before keeps its session and keeps working.
    assert_eq!(pki::peer_cert(&old), certs.shop.der);
    assert!(pki::get(&mut old, "shop.example.com", "/")
        .await
        .unwrap()
        .starts_with("HTTP/1.1 200"));

    // A broken write: the reload is refused and the renewed certificate stays.
    let failed_before = proxy.veer.stats.failed.load(std::sync::atomic::Ordering::Relaxed);
    std::fs::write(
        proxy.dir.path().join("shop.pem"),
        "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    for _ in 0..200 {
        if proxy.veer.stats.failed.load(std::sync::atomic::Ordering::Relaxed) > failed_before {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(proxy.veer.stats.failed.load(std::sync::atomic::Ordering::Relaxed) > failed_before);
    let report = proxy.veer.last_reload().unwrap().result.unwrap_err();
    assert!(report.contains("shop.pem"), "{report}");
    let fresh = pki::connect(addr, "shop.example.com", config.clone()).await.unwrap();
    assert_eq!(pki::peer_cert(&fresh), renewed.der);

    // `veer check` names the file and exits 64.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_veer"))
        .args(["check", "-c"])
        .arg(&proxy.path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("shop.pem: not a PEM certificate chain"), "{stderr}");
}

#[test]
fn a_bad_certificate_is_a_config_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let certs = write_certs(dir.path());
    let path = dir.path().join("veer.toml");
    let config = tls_config(dir.path(), "127.0.0.1:9".parse().unwrap(), "");
    std::fs::write(&path, &config).unwrap();
    assert!(veer::config::load(&path).is_ok());

    // A key that is not the certificate's.
    std::fs::write(dir.path().join("shop.key"), &certs.wild.key_pem).unwrap();
    let e = veer::config::load(&path).unwrap_err().to_string();
    assert!(
        e.contains("shop.key: the private key does not match the certificate in"),
        "{e}"
    );
    assert!(e.contains("veer.toml:15:"), "{e}");
    certs.shop.write(dir.path(), "shop");

    // An expired certificate: an error, unless allow_expired.
    certs
        .ca
        .expired_leaf(&["shop.example.com"], 5)
        .write(dir.path(), "shop");
    let e = veer::config::load(&path).unwrap_err().to_string();
    assert!(
        e.contains("shop.pem: the certificate expired at 2021-01-01T00:00:00Z"),
        "{e}"
    );
    std::fs::write(
        &path,
        tls_config(dir.path(), "127.0.0.1:9".parse().unwrap(), "allow_expired = true"),
    )
    .unwrap();
    assert!(veer::config::load(&path).is_ok());

    // A missing file.
    std::fs::remove_file(dir.path().join("wild.key")).unwrap();
    let e = veer::config::load(&path).unwrap_err().to_string();
    assert!(e.contains("wild.key: cannot read"), "{e}");
}

#[tokio::test]
async fn redirect_https_answers_308_to_the_same_url() {
    let web = FakeBackend::start("web").await;
    let proxy = Proxy::start(&format!(
        r#"
[[listener]]
name = "http"
bind = "127.0.0.1:0"
protocol = "http"
redirect_https = true
  [[listener.route]]
  backend = "web"
[[backend]]
name = "web"
servers = [ {{ name = "w1", addr = "{}" }} ]
"#,
        web.addr
    ))
    .await;
    let resp = raw_exchange(
        proxy.addr("http").await,
        b"GET /cart?item=7 HTTP/1.1\r\nHost: Shop.Example.com:8080\r\n\r\n",
    )
    .await;
    assert_eq!(raw_status(&resp), 308, "{resp}");
    assert!(
        resp.to_ascii_lowercase()
            .contains("location: https://shop.example.com/cart?item=7"),
        "{resp}"
    );
    assert_eq!(web.hits(), 0);
}

/// A verifier that accepts any certificate (to look at which one was chosen).
#[derive(Debug)]
struct AcceptAny;

impl rustls::client::danger::ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _: &rustls_pki_types::CertificateDer<'_>,
        _: &[rustls_pki_types::CertificateDer<'_>],
        _: &rustls_pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &rustls_pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &rustls_pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        pki::provider().signature_verification_algorithms.supported_schemes()
    }
}
