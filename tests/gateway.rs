//! The Gateway API source in standalone mode (`--gateway-dir`): manifests in a directory,
//! translated into listeners and backends, and real requests through veer to real
//! backends. Each test writes its own manifests; ports are ephemeral (a Gateway listener on
//! port 0, which the spec's CRD would refuse and veer takes as "any free port").

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use support::fake_kube::service;
use support::{client, FakeBackend};
use veer::config::AdminState;
use veer::gateway::cluster::ClusterOptions;
use veer::gateway::Options;
use veer::{Source, Veer};

const CLASS_AND_GATEWAY: &str = r#"apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata:
  name: veer
spec:
  controllerName: veer.dev/gateway-controller
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: web
  namespace: default
spec:
  gatewayClassName: veer
  listeners:
  - name: http
    protocol: HTTP
    port: 0
    hostname: "*.example.com"
    allowedRoutes:
      namespaces:
        from: All
"#;

fn ready(b: &FakeBackend) -> (SocketAddr, bool, bool, bool) {
    (b.addr, true, true, false)
}

fn options(dir: &Path) -> Options {
    Options {
        address: "127.0.0.1".parse().unwrap(),
        ..Options::new(dir)
    }
}

async fn start(dir: &Path) -> Veer {
    Veer::start(Source {
        gateway: Some(options(dir)),
        ..Source::default()
    })
    .await
    .unwrap_or_else(|e| panic!("veer failed to start: {e}"))
}

/// The one listener the Gateway `web` makes.
async fn url(veer: &Veer) -> String {
    format!(
        "http://{}",
        veer.listener_addr("default:web:0").await.expect("listener bound")
    )
}

/// GET `path` with `Host: host`: the `x-server` answering, or the status when not 200.
async fn who(
    c: &support::HttpClient,
    base: &str,
    method: &str,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> String {
    let mut b = http::Request::builder()
        .method(method)
        .uri(format!("{base}{path}"))
        .header("host", host);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let a = support::send(c, b.body(http_body_util::Full::new(bytes::Bytes::new())).unwrap())
        .await
        .unwrap();
    if a.status == 200 {
        a.server().to_string()
    } else {
        a.status.to_string()
    }
}

#[tokio::test]
async fn routes_by_hostname_path_method_header_and_query_in_the_specs_precedence() {
    let names = ["exact", "prefix", "post", "canary", "query", "rest", "wild"];
    let mut backends = Vec::new();
    for n in names {
        backends.push(FakeBackend::start(n).await);
    }
    let mut yaml = CLASS_AND_GATEWAY.to_string();
    for b in &backends {
        yaml += &service("default", &b.name, &[ready(b)]);
    }
    // Written in an order the precedence must undo: the catch-all first.
    yaml += r#"---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: shop
  namespace: default
spec:
  parentRefs:
  - name: web
  hostnames: ["shop.example.com"]
  rules:
  - backendRefs: [{name: rest, port: 80}]
  - matches:
    - path: {type: PathPrefix, value: /v1}
    backendRefs: [{name: prefix, port: 80}]
  - matches:
    - path: {type: Exact, value: /v1}
    backendRefs: [{name: exact, port: 80}]
  - matches:
    - method: POST
    backendRefs: [{name: post, port: 80}]
  - matches:
    - headers: [{name: x-env, value: canary}]
    backendRefs: [{name: canary, port: 80}]
  - matches:
    - queryParams: [{name: v, value: "2"}]
    backendRefs: [{name: query, port: 80}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: everything-else
  namespace: default
spec:
  parentRefs:
  - name: web
  rules:
  - backendRefs: [{name: wild, port: 80}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: elsewhere
  namespace: default
spec:
  parentRefs:
  - name: web
  hostnames: ["shop.example.org"]
  rules:
  - backendRefs: [{name: rest, port: 80}]
"#;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("all.yaml"), &yaml).unwrap();

    let t = veer::gateway::load(&options(dir.path())).unwrap();
    let reasons: Vec<(&str, &str)> = t.problems.iter().map(|p| (p.at.name.as_str(), p.reason)).collect();
    assert_eq!(
        reasons,
        [("elsewhere", "NoMatchingListenerHostname")],
        "{:?}",
        t.problems
    );

    let veer = start(dir.path()).await;
    let base = url(&veer).await;
    let c = client();
    let shop = "shop.example.com";
    assert_eq!(who(&c, &base, "GET", shop, "/v1", &[]).await, "exact");
    assert_eq!(who(&c, &base, "GET", shop, "/v1/items", &[]).await, "prefix");
    assert_eq!(
        who(&c, &base, "GET", shop, "/v1x", &[]).await,
        "rest",
        "PathPrefix matches whole elements"
    );
    assert_eq!(who(&c, &base, "POST", shop, "/cart", &[]).await, "post");
    assert_eq!(
        who(&c, &base, "GET", shop, "/cart", &[("x-env", "canary")]).await,
        "canary"
    );
    assert_eq!(who(&c, &base, "GET", shop, "/cart?v=2", &[]).await, "query");
    assert_eq!(who(&c, &base, "GET", shop, "/cart?v=3", &[]).await, "rest");
    // Any other host of the listener's wildcard falls to the host-less route.
    assert_eq!(who(&c, &base, "GET", "api.example.com", "/v1", &[]).await, "wild");
    // A host outside the listener's hostname matches nothing: veer's no-route answer.
    assert_eq!(who(&c, &base, "GET", "shop.example.org", "/", &[]).await, "404");
    veer.shutdown().await;
}

#[tokio::test]
async fn backend_ref_weights_split_requests_and_zero_gets_none() {
    let (a, b, z) = (
        FakeBackend::start("a").await,
        FakeBackend::start("b").await,
        FakeBackend::start("z").await,
    );
    let mut yaml = CLASS_AND_GATEWAY.to_string();
    for s in [&a, &b, &z] {
        yaml += &service("default", &s.name, &[ready(s)]);
    }
    yaml += r#"---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: app
spec:
  parentRefs: [{name: web}]
  rules:
  - backendRefs:
    - {name: a, port: 80, weight: 70}
    - {name: b, port: 80, weight: 30}
    - {name: z, port: 80, weight: 0}
"#;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("app.yaml"), &yaml).unwrap();
    let veer = start(dir.path()).await;
    let base = url(&veer).await;
    let c = client();
    let mut counts = std::collections::BTreeMap::new();
    for _ in 0..2000 {
        *counts
            .entry(who(&c, &base, "GET", "app.example.com", "/", &[]).await)
            .or_insert(0) += 1;
    }
    let share = |n: &str| counts.get(n).copied().unwrap_or(0) as f64 / 2000.0;
    assert!((share("a") - 0.70).abs() <= 0.05, "{counts:?}");
    assert!((share("b") - 0.30).abs() <= 0.05, "{counts:?}");
    assert_eq!(share("z"), 0.0, "{counts:?}");
    // The groups are the refs, named by Service and port: `set split` and metrics see them.
    let snap = veer.snapshot();
    let backend = snap.spec.backends.iter().find(|x| x.name == "default:app:0").unwrap();
    let groups: Vec<(&str, u32)> = backend.groups.iter().map(|g| (g.name.as_str(), g.weight)).collect();
    assert_eq!(groups, [("a:80", 70), ("b:80", 30), ("z:80", 0)]);
    veer.shutdown().await;
}

#[tokio::test]
async fn cross_namespace_backend_ref_needs_a_reference_grant() {
    let other = FakeBackend::start("other").await;
    let mut yaml = CLASS_AND_GATEWAY.to_string();
    yaml += &service("backends", "other", &[ready(&other)]);
    yaml += r#"---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: app
  namespace: apps
spec:
  parentRefs: [{name: web, namespace: default}]
  rules:
  - backendRefs: [{name: other, namespace: backends, port: 80}]
"#;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("app.yaml"), &yaml).unwrap();
    let t = veer::gateway::load(&options(dir.path())).unwrap();
    assert_eq!(t.problems.len(), 1, "{:?}", t.problems);
    assert_eq!(t.problems[0].reason, "RefNotPermitted");
    assert_eq!(
        (t.problems[0].at.kind.as_str(), t.problems[0].at.namespace.as_str()),
        ("HTTPRoute", "apps")
    );

    let veer = start(dir.path()).await;
    let base = url(&veer).await;
    let c = client();
    // The refused ref keeps its share, answered 500 as the spec says: nothing leaks.
    assert_eq!(who(&c, &base, "GET", "x.example.com", "/", &[]).await, "500");
    assert_eq!(other.hits(), 0);

    std::fs::write(
        dir.path().join("grant.yaml"),
        r#"apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata:
  name: apps-may-use-services
  namespace: backends
spec:
  from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: apps}]
  to: [{group: "", kind: Service}]
"#,
    )
    .unwrap();
    veer.reload().await.unwrap();
    assert_eq!(who(&c, &base, "GET", "x.example.com", "/", &[]).await, "other");
    veer.shutdown().await;
}

#[tokio::test]
async fn endpoint_conditions_become_server_states() {
    let addr = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
    let mut yaml = CLASS_AND_GATEWAY.to_string();
    yaml += &service(
        "default",
        "app",
        &[
            (addr(7001), true, true, false),
            (addr(7002), false, true, true),
            (addr(7003), false, false, true),
            (addr(7004), false, false, false),
        ],
    );
    yaml += "---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: app}\nspec:\n  parentRefs: [{name: web}]\n  rules:\n  - backendRefs: [{name: app, port: 80}]\n";
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("app.yaml"), &yaml).unwrap();
    let t = veer::gateway::load(&options(dir.path())).unwrap();
    assert!(t.problems.is_empty(), "{:?}", t.problems);
    let states: Vec<(String, AdminState)> = t.backends[0].servers().map(|s| (s.name.clone(), s.state)).collect();
    assert_eq!(
        states,
        [
            ("127.0.0.1:7001".to_string(), AdminState::Ready),
            ("127.0.0.1:7002".to_string(), AdminState::Drain),
            ("127.0.0.1:7003".to_string(), AdminState::Maint),
            ("127.0.0.1:7004".to_string(), AdminState::Maint),
        ]
    );
}

#[tokio::test]
async fn an_edited_route_applies_without_a_failed_request() {
    let (blue, green) = (FakeBackend::start("blue").await, FakeBackend::start("green").await);
    let mut base_yaml = CLASS_AND_GATEWAY.to_string();
    base_yaml += &service("default", "blue", &[ready(&blue)]);
    base_yaml += &service("default", "green", &[ready(&green)]);
    let route = |blue: u32, green: u32| {
        format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: app}}\nspec:\n  parentRefs: [{{name: web}}]\n  rules:\n  - backendRefs:\n    - {{name: blue, port: 80, weight: {blue}}}\n    - {{name: green, port: 80, weight: {green}}}\n"
        )
    };
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("base.yaml"), &base_yaml).unwrap();
    std::fs::write(dir.path().join("route.yaml"), route(100, 0)).unwrap();
    let veer = start(dir.path()).await;
    veer.spawn_watcher().unwrap();
    let base = url(&veer).await;

    let load = {
        let base = base.clone();
        tokio::spawn(async move {
            let c = client();
            let (mut ok, mut failed, mut green_seen) = (0, Vec::new(), 0);
            while green_seen < 200 {
                match who(&c, &base, "GET", "app.example.com", "/", &[]).await.as_str() {
                    "blue" => ok += 1,
                    "green" => {
                        ok += 1;
                        green_seen += 1
                    }
                    other => failed.push(other.to_string()),
                }
            }
            (ok, failed)
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    // As an editor or `kubectl`-like tool writes: a new file renamed over the old one.
    let tmp = dir.path().join(".route.yaml.tmp");
    std::fs::write(&tmp, route(0, 100)).unwrap();
    std::fs::rename(&tmp, dir.path().join("route.yaml")).unwrap();
    let (ok, failed) = tokio::time::timeout(Duration::from_secs(20), load)
        .await
        .expect("the edit was applied")
        .unwrap();
    assert!(failed.is_empty(), "failed requests: {failed:?}");
    assert!(ok >= 200);
    assert!(blue.hits() > 0 && green.hits() >= 200);
    veer.shutdown().await;
}

#[test]
fn check_names_file_line_kind_and_name_of_a_broken_object_and_exits_64() {
    let dir = tempfile::tempdir().unwrap();
    let good = format!(
        "{CLASS_AND_GATEWAY}{}---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: app}}\nspec:\n  parentRefs: [{{name: web}}]\n  rules:\n  - backendRefs: [{{name: app, port: 80}}]\n",
        service("default", "app", &[("127.0.0.1:7001".parse().unwrap(), true, true, false)])
    );
    std::fs::write(dir.path().join("a.yaml"), &good).unwrap();
    let check = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_veer"))
            .args(["check", "--gateway-dir"])
            .arg(dir.path())
            .output()
            .unwrap()
    };
    let out = check();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok (1 listeners, 1 backends, 1 routes)"));

    // Line 7 of b.yaml: `rules` is not a list.
    let broken = "# a route with a typo\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata:\n  name: broken\nspec:\n  rules: oops\n";
    std::fs::write(dir.path().join("b.yaml"), broken).unwrap();
    let out = check();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    let expected = format!("{}:7: HTTPRoute default/broken:", dir.path().join("b.yaml").display());
    assert!(stderr.contains(&expected), "{stderr}");
    assert!(stderr.contains("1 error(s)"), "{stderr}");
}

#[test]
fn equal_matches_go_to_the_oldest_route_then_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let route = |name: &str, created: &str| {
        format!(
            "---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: {name}, creationTimestamp: \"{created}\"}}\nspec:\n  parentRefs: [{{name: web}}]\n  rules:\n  - matches: [{{path: {{type: PathPrefix, value: /api}}}}]\n"
        )
    };
    let yaml = format!(
        "{CLASS_AND_GATEWAY}{}{}{}",
        route("a-newer", "2026-01-01T00:00:00Z"),
        route("b-older", "2020-01-01T00:00:00Z"),
        route("c-older", "2020-01-01T00:00:00Z")
    );
    std::fs::write(dir.path().join("routes.yaml"), yaml).unwrap();
    let t = veer::gateway::load(&options(dir.path())).unwrap();
    let order: Vec<&str> = t.listeners[0].routes.iter().map(|r| r.backend.as_str()).collect();
    assert_eq!(order, ["default:b-older:0", "default:c-older:0", "default:a-newer:0"]);
}

/// The example shipped in config/ stays valid.
#[test]
fn the_standalone_example_checks_clean() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/kubernetes/gateway/standalone");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_veer"))
        .args(["check", "--gateway-dir"])
        .arg(&dir)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok (1 listeners, 1 backends, 2 routes)"));
}

/// A backend answering with what it received: `x-seen-path`, `x-seen-host` and each
/// request header as `x-seen-<name>`; it also sends `x-drop: 1` for the response filter.
async fn echo(name: &str) -> FakeBackend {
    let n = name.to_string();
    FakeBackend::with_handler(name, move |req| {
        let n = n.clone();
        Box::pin(async move {
            let mut resp = http::Response::builder()
                .header("x-server", n.as_str())
                .header("x-seen-path", req.uri().to_string())
                .header("x-seen-version", format!("{:?}", req.version()))
                .header("x-drop", "1");
            for (k, v) in req.headers() {
                resp = resp.header(format!("x-seen-{k}"), v.clone());
            }
            resp.body(http_body_util::Full::new(bytes::Bytes::from(n))).unwrap()
        })
    })
    .await
}

#[tokio::test]
async fn filters_edit_headers_redirect_rewrite_and_mirror_over_http1_and_h2c() {
    let (app, shadow) = (echo("app").await, FakeBackend::start("shadow").await);
    // A listener for any host: the h2c client sends the address as its authority.
    let mut yaml = CLASS_AND_GATEWAY.replace("    hostname: \"*.example.com\"\n", "");
    yaml += &service("default", "app", &[ready(&app)]);
    yaml += &service("default", "shadow", &[ready(&shadow)]);
    yaml += r#"---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: f}
spec:
  parentRefs: [{name: web}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /hdr}}]
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier:
        set: [{name: x-a, value: "1"}]
        add: [{name: x-b, value: "2"}]
        remove: [x-c]
    - type: ResponseHeaderModifier
      responseHeaderModifier:
        set: [{name: x-resp, value: "yes"}]
        remove: [x-drop]
    backendRefs: [{name: app, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /old}}]
    filters:
    - type: RequestRedirect
      requestRedirect:
        scheme: https
        hostname: new.example.com
        statusCode: 301
        path: {type: ReplacePrefixMatch, replacePrefixMatch: /new}
  - matches: [{path: {type: PathPrefix, value: /api}}]
    filters:
    - type: URLRewrite
      urlRewrite:
        hostname: internal.example.com
        path: {type: ReplacePrefixMatch, replacePrefixMatch: /v2}
    backendRefs: [{name: app, port: 80}]
  - matches: [{path: {type: Exact, value: /shadowed}}]
    filters:
    - type: RequestMirror
      requestMirror:
        backendRef: {name: shadow, port: 80}
    backendRefs: [{name: app, port: 80}]
"#;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("f.yaml"), &yaml).unwrap();
    let t = veer::gateway::load(&options(dir.path())).unwrap();
    assert!(t.problems.is_empty(), "{:?}", t.problems);
    let veer = start(dir.path()).await;
    let base = url(&veer).await;
    let h1 = client();
    let h2 = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http::<http_body_util::Full<bytes::Bytes>>();
    for (proto, c) in [("http/1.1", &h1), ("h2c", &h2)] {
        let req = |path: &str, headers: &[(&str, &str)]| {
            let mut b = http::Request::get(format!("{base}{path}"));
            if proto == "http/1.1" {
                b = b.header("host", "shop.example.com:8080");
            }
            for (k, v) in headers {
                b = b.header(*k, *v);
            }
            b.body(http_body_util::Full::new(bytes::Bytes::new())).unwrap()
        };
        let a = support::send(c, req("/hdr", &[("x-a", "0"), ("x-c", "gone"), ("x-b", "1")]))
            .await
            .unwrap();
        assert_eq!(a.status, 200, "{proto}: {a:?}");
        assert_eq!(a.header("x-seen-x-a"), Some("1"), "{proto}: set replaces");
        let bs: Vec<&str> = a
            .headers
            .get_all("x-seen-x-b")
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect();
        assert_eq!(bs, ["1", "2"], "{proto}: add appends");
        assert_eq!(a.header("x-seen-x-c"), None, "{proto}: remove");
        assert_eq!(a.header("x-resp"), Some("yes"), "{proto}");
        assert_eq!(a.header("x-drop"), None, "{proto}");

        let a = support::send(c, req("/old/thing?q=1", &[])).await.unwrap();
        assert_eq!(a.status, 301, "{proto}: {a:?}");
        assert_eq!(
            a.header("location"),
            Some("https://new.example.com/new/thing?q=1"),
            "{proto}"
        );

        let a = support::send(c, req("/api/items?x=1", &[])).await.unwrap();
        assert_eq!(a.status, 200, "{proto}: {a:?}");
        assert_eq!(a.header("x-seen-path"), Some("/v2/items?x=1"), "{proto}");
        assert_eq!(a.header("x-seen-host"), Some("internal.example.com"), "{proto}");
        // The server still learns which host the client asked for (as Envoy and nginx do).
        let asked = if proto == "h2c" {
            base.trim_start_matches("http://")
        } else {
            "shop.example.com:8080"
        };
        assert_eq!(a.header("x-seen-x-forwarded-host"), Some(asked), "{proto}");

        let before = shadow.hits();
        let a = support::send(c, req("/shadowed", &[])).await.unwrap();
        assert_eq!(a.server(), "app", "{proto}: the client gets the primary's answer");
        let mut waited = 0;
        while shadow.hits() == before && waited < 100 {
            tokio::time::sleep(Duration::from_millis(20)).await;
            waited += 1;
        }
        assert_eq!(shadow.hits(), before + 1, "{proto}: one mirrored copy");
    }
    veer.shutdown().await;
}

// === --gateway: the same objects from an API server (a fake one on loopback) ===

/// veer on the fake API server's objects, following their changes.
async fn start_on_cluster(fake: &support::fake_kube::FakeKube) -> Veer {
    start_on_cluster_as(fake, ClusterOptions::default()).await.0
}

/// [`start_on_cluster`] with these options (an identity, a Lease length).
async fn start_on_cluster_as(
    fake: &support::fake_kube::FakeKube,
    opts: ClusterOptions,
) -> (Veer, Arc<veer::gateway::cluster::Cluster>) {
    let cluster = veer::gateway::cluster::Cluster::connect(&ClusterOptions {
        server: Some(fake.url()),
        ..opts
    })
    .await
    .unwrap();
    let veer = Veer::start(Source {
        gateway: Some(Options {
            cluster: Some(cluster.clone()),
            ..options(Path::new("kubernetes"))
        }),
        ..Source::default()
    })
    .await
    .unwrap_or_else(|e| panic!("veer failed to start: {e}"));
    veer.spawn_watcher().unwrap();
    (veer, cluster)
}

fn blue_green_route(blue: u32, green: u32) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: app, namespace: default, annotations: {{veer.dev/sticky-cookie: SRV}}}}\nspec:\n  parentRefs: [{{name: web}}]\n  rules:\n  - backendRefs:\n    - {{name: blue, port: 80, weight: {blue}}}\n    - {{name: green, port: 80, weight: {green}}}\n"
    )
}

/// Requests until `until` answers came from `server`: (answers per server, failures).
async fn load_until(
    base: String,
    server: &'static str,
    until: usize,
) -> (std::collections::BTreeMap<String, usize>, Vec<String>) {
    let c = client();
    let (mut seen, mut failed) = (std::collections::BTreeMap::new(), Vec::new());
    while seen.get(server).copied().unwrap_or(0) < until {
        let who = who(&c, &base, "GET", "app.example.com", "/", &[]).await;
        if who == "blue" || who == "green" {
            *seen.entry(who).or_insert(0) += 1;
        } else {
            failed.push(who);
        }
    }
    (seen, failed)
}

#[tokio::test]
async fn cluster_objects_are_served_and_a_weight_patch_applies_without_a_failed_request() {
    let (blue, green) = (FakeBackend::start("blue").await, FakeBackend::start("green").await);
    let fake = support::fake_kube::FakeKube::start().await;
    fake.apply_yaml(CLASS_AND_GATEWAY);
    fake.apply_yaml(&service("default", "blue", &[ready(&blue)]));
    fake.apply_yaml(&service("default", "green", &[ready(&green)]));
    fake.apply_yaml(&blue_green_route(100, 0));
    let veer = start_on_cluster(&fake).await;
    let base = url(&veer).await;
    let (seen, failed) = load_until(base.clone(), "blue", 50).await;
    assert!(failed.is_empty() && !seen.contains_key("green"), "{seen:?} {failed:?}");

    // What Argo Rollouts does: patch the weights; every request still succeeds.
    let load = tokio::spawn(load_until(base, "green", 200));
    tokio::time::sleep(Duration::from_millis(100)).await;
    fake.apply_yaml(&blue_green_route(0, 100));
    let (seen, failed) = tokio::time::timeout(Duration::from_secs(20), load)
        .await
        .unwrap()
        .unwrap();
    assert!(failed.is_empty(), "failed requests: {failed:?}");
    assert!(seen["green"] >= 200);
    // The watch was used, not a poll: the kinds were listed once and then watched.
    let requests = fake.requests();
    assert!(
        requests
            .iter()
            .any(|r| r == "/apis/gateway.networking.k8s.io/v1/httproutes?watch"),
        "{requests:?}"
    );
    veer.shutdown().await;
}

#[tokio::test]
async fn namespaces_limit_what_is_watched_and_secrets_are_read_only_where_certificates_live() {
    let (blue, green) = (FakeBackend::start("blue").await, FakeBackend::start("green").await);
    let fake = support::fake_kube::FakeKube::start().await;
    fake.apply_yaml(CLASS_AND_GATEWAY);
    fake.apply_yaml(&service("default", "blue", &[ready(&blue)]));
    fake.apply_yaml(&blue_green_route(100, 0));
    // A team outside the watched namespaces: its route (allowed by `from: All`) and its
    // Service are not veer's to see.
    fake.apply_yaml(&service("other", "green", &[ready(&green)]));
    fake.apply_yaml("apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: other, namespace: other}\nspec:\n  parentRefs: [{name: web, namespace: default}]\n  rules:\n  - matches: [{path: {type: PathPrefix, value: /other}}]\n    backendRefs: [{name: green, port: 80}]\n");
    let (veer, _cluster) = start_on_cluster_as(
        &fake,
        ClusterOptions {
            namespaces: vec!["default".into()],
            certificate_namespaces: vec!["certs".into()],
            ..ClusterOptions::default()
        },
    )
    .await;
    let base = url(&veer).await;
    let c = client();
    assert_eq!(who(&c, &base, "GET", "app.example.com", "/", &[]).await, "blue");
    // Seen, the other team's longer prefix would take /other to green.
    assert_eq!(who(&c, &base, "GET", "app.example.com", "/other", &[]).await, "blue");

    // Only namespaced collections were asked for (RBAC can be Roles in those namespaces),
    // and Secrets only where certificates live.
    let requests = fake.requests();
    for r in &requests {
        let path = r.trim_end_matches("?watch");
        if path.contains("/gatewayclasses") || path.contains("/leases") || path.ends_with("/status") {
            continue;
        }
        assert!(
            path.contains("/namespaces/default/") || path == "/api/v1/namespaces/certs/secrets",
            "a request outside the watched namespaces: {r} (all: {requests:?})"
        );
    }
    for watched in [
        "/apis/gateway.networking.k8s.io/v1/namespaces/default/httproutes?watch",
        "/api/v1/namespaces/default/services?watch",
        "/api/v1/namespaces/certs/secrets?watch",
    ] {
        assert!(
            requests.iter().any(|r| r == watched),
            "{watched} not watched: {requests:?}"
        );
    }

    // A change inside a watched namespace still applies through its namespaced watch.
    fake.apply_yaml(&service("default", "green", &[ready(&green)]));
    fake.apply_yaml(&blue_green_route(0, 100));
    let (seen, failed) = tokio::time::timeout(Duration::from_secs(20), load_until(base, "green", 20))
        .await
        .unwrap();
    assert!(failed.is_empty(), "failed requests: {failed:?} {seen:?}");
    veer.shutdown().await;
}

/// Everything this test binary logs (installed once; tests run in one process).
fn captured_logs() -> Arc<std::sync::Mutex<Vec<u8>>> {
    static LOGS: std::sync::OnceLock<Arc<std::sync::Mutex<Vec<u8>>>> = std::sync::OnceLock::new();
    LOGS.get_or_init(|| {
        let buf = Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = buf.clone();
        let _ = tracing_subscriber::fmt()
            .with_env_filter("veer=info")
            .with_writer(move || Sink(sink.clone()))
            .try_init();
        buf
    })
    .clone()
}

struct Sink(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Sink {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn an_api_server_outage_keeps_the_last_state_serving_and_veer_catches_up_after() {
    let logs = captured_logs();
    let (blue, green) = (FakeBackend::start("blue").await, FakeBackend::start("green").await);
    let fake = support::fake_kube::FakeKube::start().await;
    fake.apply_yaml(CLASS_AND_GATEWAY);
    fake.apply_yaml(&service("default", "blue", &[ready(&blue)]));
    fake.apply_yaml(&service("default", "green", &[ready(&green)]));
    fake.apply_yaml(&blue_green_route(100, 0));
    let veer = start_on_cluster(&fake).await;
    let base = url(&veer).await;

    fake.stop();
    // Down for a few seconds (past the grace before an outage is logged, so a blip or a
    // straggling failure logs nothing): the last state keeps serving.
    let (seen, failed) = load_until(base.clone(), "blue", 300).await;
    assert!(failed.is_empty() && !seen.contains_key("green"), "{seen:?} {failed:?}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (seen, failed) = load_until(base.clone(), "blue", 100).await;
    assert!(failed.is_empty() && !seen.contains_key("green"), "{seen:?} {failed:?}");
    // Changed while veer could not see it; back with its history compacted (410 Gone for
    // veer's last version: it must list again).
    fake.apply_yaml(&blue_green_route(0, 100));
    let load = tokio::spawn(load_until(base, "green", 100));
    fake.restart().await;
    let (seen, failed) = tokio::time::timeout(Duration::from_secs(30), load)
        .await
        .unwrap()
        .unwrap();
    assert!(failed.is_empty(), "failed requests: {failed:?}");
    assert!(seen["green"] >= 100, "{seen:?}");
    let lists = fake
        .requests()
        .iter()
        .filter(|r| *r == "/apis/gateway.networking.k8s.io/v1/httproutes")
        .count();
    assert!(lists >= 2, "listed again after the restart: {:?}", fake.requests());
    // Six watchers retried many times: one line when it went, one when it came back.
    let text = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
    assert_eq!(text.matches("API server unreachable").count(), 1, "{text}");
    assert_eq!(text.matches("API server reachable again").count(), 1, "{text}");
    veer.shutdown().await;
}

/// Three `veer run --gateway` processes on one fake API server, under constant load
/// through all three (keep-alive and a new connection per request), while the test does
/// what Argo Rollouts does: weights 100/0 → 90/10 → 50/50 → 0/100, a step every 2 s, then
/// the stable endpoints go terminating and disappear. Zero failed requests; each
/// instance's split follows each step; the time from each patch to the last instance
/// applying it is printed (the figure, not an assertion: wall-clock).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_of_three_follows_a_canary_rollout_without_a_failed_request() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
    let (blue, green) = (FakeBackend::start("blue").await, FakeBackend::start("green").await);
    let fake = support::fake_kube::FakeKube::start().await;
    fake.apply_yaml(CLASS_AND_GATEWAY);
    fake.apply_yaml(&service("default", "blue", &[ready(&blue)]));
    fake.apply_yaml(&service("default", "green", &[ready(&green)]));
    fake.apply_yaml(&blue_green_route(100, 0));
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters: [{{name: fake, cluster: {{server: \"{}\"}}}}]\nusers: [{{name: fake, user: {{}}}}]\ncontexts: [{{name: fake, context: {{cluster: fake, user: fake}}}}]\ncurrent-context: fake\n",
            fake.url()
        ),
    )
    .unwrap();
    let mut fleet = Vec::new();
    for i in 0..3 {
        let config = dir.path().join(format!("veer{i}.toml"));
        let sock = dir.path().join(format!("veer{i}.sock"));
        std::fs::write(&config, format!("[admin]\nsocket = \"{}\"\n", sock.display())).unwrap();
        let kc = kubeconfig.clone();
        let p = tokio::task::spawn_blocking(move || {
            let args = [
                "--gateway",
                "--kubeconfig",
                kc.to_str().unwrap(),
                "--gateway-address",
                "127.0.0.1",
            ];
            support::VeerProcess::start(&config, &args, &["default:web:0"])
        })
        .await
        .unwrap();
        fleet.push((p.listeners["default:web:0"], sock, p));
    }

    // The load: per instance one keep-alive client and one new connection per request;
    // every answer recorded as (instance, when, who).
    let stop = Arc::new(AtomicBool::new(false));
    let total = Arc::new(AtomicUsize::new(0));
    let answers = Arc::new(std::sync::Mutex::new(Vec::<(usize, std::time::Instant, String)>::new()));
    // Sticky clients (one per instance): they keep the cookie of their first answer, and
    // must stay on that server through every weight step for as long as it is there.
    let sticky_answers = Arc::new(std::sync::Mutex::new(Vec::<(usize, std::time::Instant, String)>::new()));
    let mut load = Vec::new();
    for (i, (addr, ..)) in fleet.iter().enumerate() {
        let (stop, total, answers, addr) = (stop.clone(), total.clone(), sticky_answers.clone(), *addr);
        load.push(tokio::spawn(async move {
            let c = client();
            let mut cookie: Option<String> = None;
            let mut failed = Vec::new();
            while !stop.load(Relaxed) {
                let mut b = http::Request::get(format!("http://{addr}/")).header("host", "app.example.com");
                if let Some(v) = &cookie {
                    b = b.header("cookie", v.as_str());
                }
                let a = support::send(&c, b.body(http_body_util::Full::new(bytes::Bytes::new())).unwrap()).await;
                total.fetch_add(1, Relaxed);
                match a {
                    Ok(a) if a.status == 200 => {
                        if let Some(set) = a.header("set-cookie") {
                            cookie = set.split(';').next().map(str::to_string);
                        }
                        answers
                            .lock()
                            .unwrap()
                            .push((i, std::time::Instant::now(), a.server().to_string()));
                    }
                    other => failed.push(format!("{other:?}")),
                }
            }
            failed
        }));
    }
    for (i, (addr, ..)) in fleet.iter().enumerate() {
        for keep_alive in [true, false] {
            let (stop, total, answers, addr) = (stop.clone(), total.clone(), answers.clone(), *addr);
            load.push(tokio::spawn(async move {
                let c = client();
                let base = format!("http://{addr}");
                let mut failed = Vec::new();
                while !stop.load(Relaxed) {
                    let who = if keep_alive {
                        who(&c, &base, "GET", "app.example.com", "/", &[]).await
                    } else {
                        let r = support::raw_exchange(
                            addr,
                            b"GET / HTTP/1.1\r\nHost: app.example.com\r\nConnection: close\r\n\r\n",
                        )
                        .await;
                        match (
                            support::raw_status(&r),
                            r.lines().find_map(|l| l.strip_prefix("x-server: ")),
                        ) {
                            (200, Some(s)) => s.trim().to_string(),
                            (status, _) => status.to_string(),
                        }
                    };
                    total.fetch_add(1, Relaxed);
                    if who == "blue" || who == "green" {
                        answers.lock().unwrap().push((i, std::time::Instant::now(), who));
                    } else {
                        failed.push(who);
                    }
                }
                failed
            }));
        }
    }

    // The rollout: each step patched, then every instance polled until it shows it.
    let weights = |sock: &Path| {
        let sock = sock.to_path_buf();
        async move {
            let out = support::admin(&sock, "show split default:app:0 json").await;
            let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
            let w = |g: &str| {
                v["groups"]
                    .as_array()
                    .and_then(|gs| gs.iter().find(|x| x["name"] == g))
                    .map(|x| x["weight"].as_u64().unwrap_or(0))
            };
            (w("blue:80"), w("green:80"))
        }
    };
    let mut steps = Vec::new();
    for (b, g) in [(100u32, 0u32), (90, 10), (50, 50), (0, 100)] {
        let patched = std::time::Instant::now();
        fake.apply_yaml(&blue_green_route(b, g));
        let mut applied = Vec::new();
        for (_, sock, _) in &fleet {
            while weights(sock).await != (Some(u64::from(b)), Some(u64::from(g))) {
                tokio::time::sleep(Duration::from_millis(5)).await;
                assert!(
                    patched.elapsed() < Duration::from_secs(30),
                    "step {b}/{g} never applied"
                );
            }
            applied.push(patched.elapsed());
        }
        let last = applied.iter().max().copied().unwrap();
        steps.push((b, g, patched + last, last));
        tokio::time::sleep(Duration::from_secs(2).saturating_sub(last)).await;
    }
    // The stable ReplicaSet goes away: its endpoint terminating (still serving), then gone.
    fake.apply_yaml(&service("default", "blue", &[(blue.addr, false, true, true)]));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let gone = std::time::Instant::now();
    fake.delete("EndpointSlice", "default", "blue-0");
    while total.load(Relaxed) < 50_000 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, Relaxed);
    let mut failed = Vec::new();
    for l in load {
        failed.extend(l.await.unwrap());
    }
    assert!(
        failed.is_empty(),
        "{} failed requests: {:?}",
        failed.len(),
        &failed[..failed.len().min(20)]
    );

    // Sticky clients stayed on blue (where 100/0 put them) through 90/10, 50/50, 0/100 and
    // blue's drain; only once its endpoint was gone did they move.
    let sticky = sticky_answers.lock().unwrap();
    for i in 0..3 {
        let before: Vec<&String> = sticky
            .iter()
            .filter(|(x, at, _)| *x == i && *at < gone)
            .map(|(.., w)| w)
            .collect();
        assert!(before.len() >= 50, "sticky client {i}: {} answers", before.len());
        assert!(
            before.iter().all(|w| *w == "blue"),
            "sticky client {i} left blue while it was there"
        );
        let after = sticky
            .iter()
            .filter(|(x, at, _)| *x == i && *at > gone + Duration::from_secs(1));
        assert!(
            after.map(|(.., w)| w).all(|w| w == "green"),
            "sticky client {i} after blue went away"
        );
    }
    drop(sticky);
    // Each instance's observed split in each step's window (from the last instance's
    // apply to the next patch) follows the step.
    let answers = answers.lock().unwrap();
    for (n, (b, g, from, _)) in steps.iter().enumerate() {
        let until = steps.get(n + 1).map(|s| s.2 - s.3);
        for i in 0..3 {
            let window: Vec<&String> = answers
                .iter()
                .filter(|(x, at, _)| *x == i && at > from && until.is_none_or(|u| *at < u))
                .map(|(_, _, who)| who)
                .collect();
            let green_share = window.iter().filter(|w| **w == "green").count() as f64 / window.len().max(1) as f64;
            let expected = f64::from(*g) / f64::from(b + g);
            assert!(
                window.len() >= 50,
                "instance {i} step {b}/{g}: only {} answers",
                window.len()
            );
            assert!(
                (green_share - expected).abs() <= 0.08,
                "instance {i} step {b}/{g}: green {green_share:.3} of {}",
                window.len()
            );
        }
    }
    println!(
        "fleet: {} requests, 0 failed; patch → last of 3 instances applied: {}",
        total.load(Relaxed),
        steps
            .iter()
            .map(|(b, g, _, d)| format!("{b}/{g} {} ms", d.as_millis()))
            .collect::<Vec<_>>()
            .join(", ")
    );
}

/// The condition `kind` of a status `conditions` list: (status, reason).
fn condition(conditions: &serde_json::Value, kind: &str) -> Option<(String, String)> {
    conditions.as_array()?.iter().find(|c| c["type"] == kind).map(|c| {
        (
            c["status"].as_str().unwrap_or("").to_string(),
            c["reason"].as_str().unwrap_or("").to_string(),
        )
    })
}

/// Polls (bounded) until `check` holds for the object's status.
async fn wait_status(
    fake: &support::fake_kube::FakeKube,
    kind: &str,
    name: &str,
    check: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let ns = if kind == "GatewayClass" { "" } else { "default" };
    for _ in 0..600 {
        if let Some(o) = fake.object(kind, ns, name) {
            if check(&o["status"]) {
                return o["status"].clone();
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "{kind} {name}: status never matched; last: {:?}",
        fake.object(kind, ns, name).map(|o| o["status"].clone())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_lease_holder_writes_status_and_another_takes_over_when_it_dies() {
    let app = FakeBackend::start("app").await;
    let fake = support::fake_kube::FakeKube::start().await;
    fake.apply_yaml(CLASS_AND_GATEWAY);
    fake.apply_yaml(&service("default", "app", &[ready(&app)]));
    fake.apply_yaml("apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: app, namespace: default}\nspec:\n  parentRefs: [{name: web}]\n  hostnames: [app.example.com]\n  rules:\n  - backendRefs: [{name: app, port: 80}]\n");
    fake.apply_yaml("apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: late, namespace: default}\nspec:\n  parentRefs: [{name: web}]\n  hostnames: [late.example.com]\n  rules:\n  - backendRefs: [{name: late, port: 80}]\n");
    let mut fleet = Vec::new();
    for i in 0..3 {
        let opts = ClusterOptions {
            identity: Some(format!("veer-{i}")),
            lease_duration: Duration::from_secs(2),
            ..Default::default()
        };
        fleet.push(start_on_cluster_as(&fake, opts).await);
    }

    let parent = |s: &serde_json::Value, kind: &str| condition(&s["parents"][0]["conditions"], kind);
    let app_status = wait_status(&fake, "HTTPRoute", "app", |s| parent(s, "Accepted").is_some()).await;
    assert_eq!(
        parent(&app_status, "Accepted"),
        Some(("True".into(), "Accepted".into()))
    );
    assert_eq!(
        parent(&app_status, "ResolvedRefs"),
        Some(("True".into(), "ResolvedRefs".into()))
    );
    assert_eq!(
        app_status["parents"][0]["controllerName"],
        "veer.dev/gateway-controller"
    );
    let late = wait_status(&fake, "HTTPRoute", "late", |s| parent(s, "ResolvedRefs").is_some()).await;
    assert_eq!(
        parent(&late, "ResolvedRefs"),
        Some(("False".into(), "BackendNotFound".into()))
    );
    let gw = wait_status(&fake, "Gateway", "web", |s| s["listeners"][0]["attachedRoutes"] == 2).await;
    assert_eq!(
        condition(&gw["conditions"], "Programmed"),
        Some(("True".into(), "Programmed".into()))
    );
    let class = wait_status(&fake, "GatewayClass", "veer", |s| !s.is_null()).await;
    assert_eq!(
        condition(&class["conditions"], "Accepted"),
        Some(("True".into(), "Accepted".into()))
    );

    // Three instances serve; one wrote.
    let writers: std::collections::BTreeSet<String> = fake.status_writes().into_iter().map(|(_, who)| who).collect();
    assert_eq!(writers.len(), 1, "{:?}", fake.status_writes());
    let leader = writers.into_iter().next().unwrap();

    // The writer dies (its Lease is left to expire); a change that needs new status is
    // written by another instance.
    let (veer, cluster) = fleet.remove(leader.trim_start_matches("veer-").parse::<usize>().unwrap());
    cluster.close();
    veer.shutdown().await;
    let died = std::time::Instant::now();
    let late_backend = FakeBackend::start("late").await;
    fake.apply_yaml(&service("default", "late", &[ready(&late_backend)]));
    wait_status(&fake, "HTTPRoute", "late", |s| {
        parent(s, "ResolvedRefs") == Some(("True".into(), "ResolvedRefs".into()))
    })
    .await;
    let after: Vec<(String, String)> = fake
        .status_writes()
        .into_iter()
        .filter(|(o, _)| o == "HTTPRoute/default/late")
        .collect();
    let (_, new_writer) = after.last().unwrap();
    assert_ne!(*new_writer, leader);
    println!(
        "status writer {leader} died; {new_writer} wrote within {:?} (Lease 2 s)",
        died.elapsed()
    );
    for (veer, cluster) in fleet {
        cluster.close();
        veer.shutdown().await;
    }
}

#[tokio::test]
async fn a_missing_service_fails_its_share_with_500_and_leaves_other_rules_alone() {
    let ok = FakeBackend::start("ok").await;
    let mut yaml = CLASS_AND_GATEWAY.to_string();
    yaml += &service("default", "ok", &[ready(&ok)]);
    yaml += r#"---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: app}
spec:
  parentRefs: [{name: web}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /gone}}]
    backendRefs: [{name: missing, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /half}}]
    backendRefs: [{name: ok, port: 80, weight: 50}, {name: missing, port: 80, weight: 50}]
  - backendRefs: [{name: ok, port: 80}]
"#;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("app.yaml"), &yaml).unwrap();
    let t = veer::gateway::load(&options(dir.path())).unwrap();
    assert!(
        t.problems.iter().all(|p| p.reason == "BackendNotFound"),
        "{:?}",
        t.problems
    );
    let route = &t.status.routes[0].parents[0];
    assert_eq!(route.accepted, Ok(()));
    assert_eq!(route.resolved.as_ref().map_err(|e| e.0), Err("BackendNotFound"));

    let veer = start(dir.path()).await;
    let base = url(&veer).await;
    let c = client();
    let a = support::get(&c, &format!("{base}/gone"), &[("host", "a.example.com")])
        .await
        .unwrap();
    assert_eq!((a.status, a.header("veer-error")), (500, Some("invalid-backend")));
    assert_eq!(who(&c, &base, "GET", "a.example.com", "/other", &[]).await, "ok");
    let mut failed = 0;
    for _ in 0..1000 {
        match who(&c, &base, "GET", "a.example.com", "/half", &[]).await.as_str() {
            "ok" => {}
            "500" => failed += 1,
            other => panic!("unexpected {other}"),
        }
    }
    assert!(
        (400..=600).contains(&failed),
        "{failed} of 1000 failed; the missing ref's share is 50 %"
    );
    veer.shutdown().await;
}

/// The rollout recipes in config/kubernetes/gateway/ are what veer reads: each with the
/// GatewayClass, checked by veer's own translator (the Argo Rollouts and Flagger kinds are
/// not veer's and are skipped).
#[test]
fn the_rollout_recipes_check_clean() {
    let recipes = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/kubernetes/gateway");
    for (recipe, routes) in [("argo-rollouts.yaml", "1 routes"), ("flagger.yaml", "0 routes")] {
        let dir = tempfile::tempdir().unwrap();
        for f in ["veer.yaml", recipe] {
            std::fs::copy(recipes.join(f), dir.path().join(f)).unwrap();
        }
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_veer"))
            .args(["check", "--gateway-dir"])
            .arg(dir.path())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{recipe}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains(routes), "{recipe}: {stdout}");
    }
}

/// A TLS Secret as a manifest writes it (`stringData`).
fn tls_secret(name: &str, leaf: &support::pki::Leaf) -> String {
    let indent = |pem: &str| pem.lines().map(|l| format!("    {l}\n")).collect::<String>();
    format!(
        "---\napiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: default}}\ntype: kubernetes.io/tls\nstringData:\n  tls.crt: |\n{}  tls.key: |\n{}",
        indent(&leaf.cert_pem),
        indent(&leaf.key_pem)
    )
}

#[tokio::test]
async fn an_https_listener_terminates_tls_with_the_secret_it_names() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = FakeBackend::start("app").await;
    let ca = support::pki::Ca::new("gateway test CA");
    let leaf = ca.leaf(&["shop.example.com"], 7);
    let mut yaml = r#"apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: veer}
spec: {controllerName: veer.dev/gateway-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: web, namespace: default}
spec:
  gatewayClassName: veer
  listeners:
  - name: https
    protocol: HTTPS
    port: 0
    hostname: shop.example.com
    tls:
      certificateRefs: [{name: shop-tls}]
  - name: broken
    protocol: HTTPS
    port: 0
    hostname: other.example.com
    tls:
      certificateRefs: [{name: missing-tls}]
"#
    .to_string();
    yaml += &tls_secret("shop-tls", &leaf);
    yaml += &service("default", "app", &[ready(&app)]);
    yaml += "---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: shop}\nspec:\n  parentRefs: [{name: web}]\n  rules:\n  - backendRefs: [{name: app, port: 80}]\n";
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("tls.yaml"), &yaml).unwrap();
    let t = veer::gateway::load(&options(dir.path())).unwrap();
    let reasons: Vec<&str> = t.problems.iter().map(|p| p.reason).collect();
    assert_eq!(reasons, ["InvalidCertificateRef"], "{:?}", t.problems);
    assert!(t.listeners[0].tls.is_some());

    let veer = start(dir.path()).await;
    let addr = veer.listener_addr("default:web:0").await.unwrap();
    let config = support::pki::client_config(ca.roots(), &[b"http/1.1"], None);
    let mut tls = support::pki::connect(addr, "shop.example.com", config).await.unwrap();
    tls.write_all(b"GET / HTTP/1.1\r\nHost: shop.example.com\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    tls.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("x-server: app"), "{answer}");

    // A renewed Secret: the next handshake presents the new certificate.
    let renewed = ca.leaf(&["shop.example.com"], 8);
    std::fs::write(
        dir.path().join("tls.yaml"),
        yaml.replace(&tls_secret("shop-tls", &leaf), &tls_secret("shop-tls", &renewed)),
    )
    .unwrap();
    veer.reload().await.unwrap();
    let config = support::pki::client_config(ca.roots(), &[b"http/1.1"], None);
    let tls = support::pki::connect(addr, "shop.example.com", config).await.unwrap();
    assert_eq!(support::pki::peer_cert(&tls), renewed.der);
    veer.shutdown().await;
}

#[tokio::test]
async fn a_grpc_route_matches_service_and_method_and_speaks_h2c_upstream() {
    let (cart, catalog, rest) = (
        echo("cart-add").await,
        FakeBackend::start("catalog").await,
        FakeBackend::start("rest").await,
    );
    let mut yaml = CLASS_AND_GATEWAY.replace("    hostname: \"*.example.com\"\n", "");
    for b in [&cart, &catalog, &rest] {
        yaml += &service("default", &b.name, &[ready(b)]);
    }
    yaml += r#"---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: shop}
spec:
  parentRefs: [{name: web}]
  rules:
  - matches: [{method: {service: shop.Cart, method: Add}}]
    backendRefs: [{name: cart-add, port: 80}]
  - matches: [{method: {service: shop.Catalog}}]
    backendRefs: [{name: catalog, port: 80}]
  - backendRefs: [{name: rest, port: 80}]
"#;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("grpc.yaml"), &yaml).unwrap();
    let t = veer::gateway::load(&options(dir.path())).unwrap();
    assert!(t.problems.is_empty(), "{:?}", t.problems);
    assert_eq!(t.status.routes[0].kind, "GRPCRoute");
    assert!(t
        .backends
        .iter()
        .all(|b| b.protocol == veer::config::UpstreamProtocol::H2c && b.name.starts_with("grpc:")));

    let veer = start(dir.path()).await;
    let base = url(&veer).await;
    let h2 = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http::<http_body_util::Full<bytes::Bytes>>();
    let call = |path: &str| {
        http::Request::post(format!("{base}{path}"))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(http_body_util::Full::new(bytes::Bytes::from_static(b"\0\0\0\0\0")))
            .unwrap()
    };
    let a = support::send(&h2, call("/shop.Cart/Add")).await.unwrap();
    assert_eq!(a.server(), "cart-add", "{a:?}");
    // The server was spoken to in HTTP/2 (h2c), `te: trailers` passed on.
    assert_eq!(a.header("x-seen-version"), Some("HTTP/2.0"), "{a:?}");
    assert_eq!(a.header("x-seen-te"), Some("trailers"), "{a:?}");
    assert_eq!(
        support::send(&h2, call("/shop.Cart/Remove")).await.unwrap().server(),
        "rest"
    );
    assert_eq!(
        support::send(&h2, call("/shop.Catalog/List")).await.unwrap().server(),
        "catalog"
    );
    veer.shutdown().await;
}

#[tokio::test]
async fn a_tls_passthrough_listener_relays_by_server_name_with_tls_routes() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let ca = support::pki::Ca::new("passthrough CA");
    let (leaf_a, leaf_b) = (ca.leaf(&["a.example.com"], 1), ca.leaf(&["b.example.com"], 2));
    let (a, b) = (
        support::pki::tls_backend("tls-a", &leaf_a).await,
        support::pki::tls_backend("tls-b", &leaf_b).await,
    );
    let mut yaml = r#"apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: veer}
spec: {controllerName: veer.dev/gateway-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: web, namespace: default}
spec:
  gatewayClassName: veer
  listeners:
  - name: tls
    protocol: TLS
    port: 0
    tls: {mode: Passthrough}
"#
    .to_string();
    yaml += &service("default", "tls-a", &[(a, true, true, false)]);
    yaml += &service("default", "tls-b", &[(b, true, true, false)]);
    for (name, host) in [("tls-a", "a.example.com"), ("tls-b", "b.example.com")] {
        yaml += &format!(
            "---\napiVersion: gateway.networking.k8s.io/v1\nkind: TLSRoute\nmetadata: {{name: {name}}}\nspec:\n  parentRefs: [{{name: web}}]\n  hostnames: [{host}]\n  rules:\n  - backendRefs: [{{name: {name}, port: 80}}]\n"
        );
    }
    // An HTTPRoute cannot attach to a TLS listener.
    yaml += "---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: web-only}\nspec:\n  parentRefs: [{name: web}]\n  rules:\n  - backendRefs: [{name: tls-a, port: 80}]\n";
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("tls.yaml"), &yaml).unwrap();
    let t = veer::gateway::load(&options(dir.path())).unwrap();
    let reasons: Vec<(&str, &str)> = t.problems.iter().map(|p| (p.at.name.as_str(), p.reason)).collect();
    assert_eq!(reasons, [("web-only", "NotAllowedByListeners")], "{:?}", t.problems);

    let veer = start(dir.path()).await;
    let addr = veer.listener_addr("default:web:0").await.unwrap();
    for (host, server) in [("a.example.com", "tls-a"), ("b.example.com", "tls-b")] {
        // The client's TLS reaches the server itself: the certificate is the server's.
        let config = support::pki::client_config(ca.roots(), &[b"http/1.1"], None);
        let mut tls = support::pki::connect(addr, host, config).await.unwrap();
        tls.write_all(format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut answer = String::new();
        tls.read_to_string(&mut answer).await.unwrap();
        assert!(answer.contains(&format!("x-server: {server}")), "{host}: {answer}");
    }
    veer.shutdown().await;
}

#[tokio::test]
async fn tcp_routes_need_the_experimental_channel_and_then_relay_connections() {
    let app = FakeBackend::start("tcp-app").await;
    let mut yaml = r#"apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: veer}
spec: {controllerName: veer.dev/gateway-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: db, namespace: default}
spec:
  gatewayClassName: veer
  listeners:
  - {name: tcp, protocol: TCP, port: 0}
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TCPRoute
metadata: {name: app}
spec:
  parentRefs: [{name: db}]
  rules:
  - backendRefs: [{name: tcp-app, port: 80}]
"#
    .to_string();
    yaml += &service("default", "tcp-app", &[ready(&app)]);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("tcp.yaml"), &yaml).unwrap();
    let standard = veer::gateway::load(&options(dir.path())).unwrap();
    let reasons: Vec<&str> = standard.problems.iter().map(|p| p.reason).collect();
    assert_eq!(
        reasons,
        ["UnsupportedProtocol", "UnsupportedValue"],
        "{:?}",
        standard.problems
    );

    let experimental = Options {
        experimental: true,
        ..options(dir.path())
    };
    let t = veer::gateway::load(&experimental).unwrap();
    assert!(t.problems.is_empty(), "{:?}", t.problems);
    let veer = Veer::start(Source {
        gateway: Some(experimental),
        ..Source::default()
    })
    .await
    .unwrap();
    let addr = veer.listener_addr("default:db:0").await.unwrap();
    // The bytes go through untouched: the backend answers the HTTP it is sent.
    let answer = support::raw_exchange(addr, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
    assert_eq!(support::raw_status(&answer), 200, "{answer}");
    assert!(answer.contains("x-server: tcp-app"), "{answer}");
    veer.shutdown().await;
}

/// `.ci/run`'s check of the custom kinds is strict: the manifests pass it, and a misspelt
/// field (dropped silently by an API server without strict validation) fails it.
#[test]
fn the_vendored_crd_schemas_pass_the_manifests_and_refuse_a_misspelt_field() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let validate = |file: &Path| {
        std::process::Command::new("python3")
            .arg(root.join("config/kubernetes/schemas/validate.py"))
            .arg(file)
            .output()
    };
    let recipe = root.join("config/kubernetes/gateway/argo-rollouts.yaml");
    let out = validate(&recipe).expect("python3");
    if String::from_utf8_lossy(&out.stderr).contains("ModuleNotFoundError") {
        assert!(
            std::env::var_os("VEER_REQUIRE_TOOLS").is_none(),
            "python3 jsonschema/yaml missing with VEER_REQUIRE_TOOLS set"
        );
        eprintln!("SKIPPED: python3 jsonschema or yaml not installed (CI installs them)");
        return;
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("3 custom resources checked"), "{stdout}");

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    let text = std::fs::read_to_string(&recipe).unwrap();
    std::fs::write(&bad, text.replacen("weight: 100", "wieght: 100", 1)).unwrap();
    let out = validate(&bad).unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("HTTPRoute shop: spec.rules.0.backendRefs.0: Additional properties are not allowed ('wieght' was unexpected)"),
        "{stdout}"
    );
}
