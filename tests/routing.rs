//! Routing by host (exact and wildcard), path prefix and header; first match wins; no match
//! is a 404 carrying `veer-error`. Also checks the request veer forwards (hop-by-hop headers
//! stripped, X-Forwarded-* set) and the synthetic error responses.

mod support;
use support::*;

async fn setup() -> (Proxy, Vec<FakeBackend>) {
    let mut backends = Vec::new();
    for name in ["exact", "wild", "api", "beta", "fallback"] {
        backends.push(FakeBackend::start(name).await);
    }
    let b = |i: usize| backends[i].addr;
    let config = format!(
        r#"
[[listener]]
name = "web"
bind = "127.0.0.1:0"
protocol = "http"

  [[listener.route]]
  host = "shop.example.com"
  backend = "exact"

  [[listener.route]]
  host = "*.example.com"
  path_prefix = "/api"
  backend = "api"

  [[listener.route]]
  host = "*.example.com"
  backend = "wild"

  [[listener.route]]
  header = {{ name = "x-beta", value = "1" }}
  backend = "beta"

  [[listener.route]]
  path_prefix = "/static"
  backend = "fallback"

[[backend]]
name = "exact"
servers = [ {{ name = "s", addr = "{}" }} ]
[[backend]]
name = "wild"
servers = [ {{ name = "s", addr = "{}" }} ]
[[backend]]
name = "api"
servers = [ {{ name = "s", addr = "{}" }} ]
[[backend]]
name = "beta"
servers = [ {{ name = "s", addr = "{}" }} ]
[[backend]]
name = "fallback"
servers = [ {{ name = "s", addr = "{}" }} ]
"#,
        b(0),
        b(1),
        b(2),
        b(3),
        b(4)
    );
    (Proxy::start(&config).await, backends)
}

#[tokio::test]
async fn routes_by_host_path_and_header_first_match_wins() {
    let (proxy, _backends) = setup().await;
    let url = proxy.url("web").await;
    let c = client();
    type Case<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)], &'a str);
    let cases: &[Case] = &[
        // exact host wins even for /api because it comes first
        ("shop.example.com", "/api/x", &[], "exact"),
        ("SHOP.example.com:8080", "/", &[], "exact"),
        ("a.example.com", "/api/v1", &[], "api"),
        ("a.example.com", "/other", &[], "wild"),
        ("deep.sub.example.com", "/", &[], "wild"),
        // "example.com" itself is not matched by "*.example.com"
        ("example.com", "/static/app.js", &[], "fallback"),
        ("other.org", "/", &[("x-beta", "1")], "beta"),
        ("a.example.com", "/", &[("x-beta", "1")], "wild"),
    ];
    for (host, path, headers, want) in cases {
        let mut h = vec![("host", *host)];
        h.extend_from_slice(headers);
        let a = get(&c, &format!("{url}{path}"), &h).await.unwrap();
        assert_eq!(a.status, 200, "{host}{path}: {a:?}");
        assert_eq!(a.server(), *want, "{host}{path} {headers:?}");
    }
}

#[tokio::test]
async fn no_match_is_404_with_veer_error() {
    let (proxy, _backends) = setup().await;
    let url = proxy.url("web").await;
    let c = client();
    for (host, headers) in [("other.org", vec![]), ("example.com", vec![("x-beta", "2")])] {
        let mut h = vec![("host", host)];
        h.extend(headers);
        let a = get(&c, &format!("{url}/nothing"), &h).await.unwrap();
        assert_eq!(a.status, 404);
        assert_eq!(a.header("veer-error"), Some("no-route"));
    }
}

#[tokio::test]
async fn forwards_with_hop_by_hop_stripped_and_forwarded_headers() {
    let (proxy, _backends) = setup().await;
    let url = proxy.url("web").await;
    let a = get(
        &client(),
        &format!("{url}/static/x?q=1"),
        &[
            ("host", "Other.org"),
            ("connection", "x-private"),
            ("x-private", "secret"),
            ("keep-alive", "timeout=5"),
            ("proxy-authorization", "Basic Zm9v"),
            ("te", "trailers"),
            ("x-forwarded-for", "10.1.2.3"),
            ("x-custom", "kept"),
        ],
    )
    .await
    .unwrap();
    assert_eq!(a.status, 200);
    assert_eq!(a.server(), "fallback");
    for gone in [
        "x-echo-x-private",
        "x-echo-keep-alive",
        "x-echo-proxy-authorization",
        "x-echo-te",
    ] {
        assert!(a.header(gone).is_none(), "{gone} was forwarded: {a:?}");
    }
    assert_eq!(a.header("x-echo-x-custom"), Some("kept"));
    assert_eq!(a.header("x-echo-x-forwarded-for"), Some("10.1.2.3, 127.0.0.1"));
    assert_eq!(a.header("x-echo-x-forwarded-proto"), Some("http"));
    assert_eq!(a.header("x-echo-x-forwarded-host"), Some("Other.org"));
    assert_eq!(a.header("x-echo-host"), Some("Other.org"));
    assert_eq!(a.header("x-echo-path"), Some("/static/x?q=1"));
}
