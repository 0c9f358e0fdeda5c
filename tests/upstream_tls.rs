//! TLS to the servers: verified against a private CA with the configured SNI; a server whose
//! certificate does not verify is answered 502 with `veer-error: upstream-tls`; pooled TLS
//! connections are reused.

mod support;
use support::pki::{self, Ca};
use support::*;

fn config(dir: &std::path::Path, server: std::net::SocketAddr, ca: &str) -> String {
    format!(
        r#"
[[listener]]
name = "web"
bind = "127.0.0.1:0"
protocol = "http"
  [[listener.route]]
  backend = "shop"
[[backend]]
name = "shop"
retries = 0
tls = {{ ca = "{}/{ca}", sni = "shop.internal" }}
servers = [ {{ name = "s1", addr = "{server}" }} ]
"#,
        dir.display()
    )
}

#[tokio::test]
async fn verified_with_a_private_ca_and_refused_with_the_wrong_one() {
    let ca = Ca::new("internal CA");
    let other = Ca::new("someone else");
    let server = pki::tls_backend("s1", &ca.leaf(&["shop.internal"], 7)).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca.pem"), &ca.pem).unwrap();
    std::fs::write(dir.path().join("other.pem"), &other.pem).unwrap();
    let path = dir.path().to_path_buf();
    let proxy = Proxy::start_in(dir, &config(&path, server, "ca.pem")).await;
    let client = client();
    for _ in 0..3 {
        let a = get(&client, &format!("{}/", proxy.url("web").await), &[])
            .await
            .unwrap();
        assert_eq!(a.status, 200);
        assert_eq!(a.server(), "s1");
    }
    // Keep-alive upstream: the three requests shared a pooled TLS connection.
    let snap = proxy.veer.snapshot();
    assert_eq!(snap.backend("shop").unwrap().groups[0].servers[0].pool.idle_len(), 1);

    std::fs::write(&proxy.path, config(&path, server, "other.pem")).unwrap();
    proxy.veer.reload().await.unwrap();
    let a = get(&client, &format!("{}/", proxy.url("web").await), &[])
        .await
        .unwrap();
    assert_eq!(a.status, 502);
    assert_eq!(a.header("veer-error"), Some("upstream-tls"));
}
