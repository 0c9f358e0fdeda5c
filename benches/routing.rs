//! Hot-path micro benchmarks: route matching in a 10,000-route table (host + path), and
//! picking a group and a server. Run with `cargo bench --bench routing`.

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use http::HeaderMap;
use veer::config::RouteSpec;
use veer::routing::RouteTable;
use veer::snapshot::Snapshot;
use veer::state::Registry;

/// 1,000 hosts × 10 path prefixes, plus wildcards and a host-less fallback at the end.
fn ten_thousand_routes() -> Vec<RouteSpec> {
    let mut routes = Vec::new();
    for h in 0..1000 {
        for p in 0..10 {
            routes.push(RouteSpec {
                name: format!("r{h}-{p}"),
                host: Some(format!("svc{h}.example.com")),
                path_prefix: Some(format!("/api/v{p}/")),
                header: None,
                backend: "b".into(),
            });
        }
    }
    routes.push(RouteSpec {
        name: "wild".into(),
        host: Some("*.example.org".into()),
        path_prefix: None,
        header: None,
        backend: "b".into(),
    });
    routes.push(RouteSpec {
        name: "fallback".into(),
        host: None,
        path_prefix: None,
        header: None,
        backend: "b".into(),
    });
    routes
}

fn bench_routing(c: &mut Criterion) {
    let table = RouteTable::build(&ten_thousand_routes(), |_| 0);
    let headers = HeaderMap::new();
    let mut g = c.benchmark_group("route_10k");
    g.bench_function("exact_host_last_path", |b| {
        b.iter(|| table.find(black_box("svc777.example.com"), black_box("/api/v9/users/1"), &headers))
    });
    g.bench_function("wildcard_host", |b| {
        b.iter(|| table.find(black_box("a.b.example.org"), black_box("/x"), &headers))
    });
    g.bench_function("no_host_match_fallback", |b| {
        b.iter(|| table.find(black_box("unknown.example.net"), black_box("/x"), &headers))
    });
    g.finish();
}

fn backend_config(balance: &str) -> String {
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
balance = "{balance}"
groups = [
  {{ name = "blue", weight = 90, servers = [
     {{ name = "b1", addr = "127.0.0.1:9001" }}, {{ name = "b2", addr = "127.0.0.1:9002", weight = 2 }},
     {{ name = "b3", addr = "127.0.0.1:9003" }}, {{ name = "b4", addr = "127.0.0.1:9004" }} ] }},
  {{ name = "green", weight = 10, servers = [ {{ name = "g1", addr = "127.0.0.1:9101" }} ] }},
]
"#
    )
}

fn bench_pick(c: &mut Criterion) {
    let mut g = c.benchmark_group("pick");
    for balance in ["round_robin", "least_request", "random"] {
        let spec = veer::config::parse(Path::new("bench.toml"), &backend_config(balance)).unwrap();
        let (snap, _) = Snapshot::build(Arc::new(spec), &mut Registry::default(), 1);
        let backend = snap.backend("shop").unwrap().clone();
        g.bench_function(balance, |b| {
            b.iter(|| veer::balance::pick(black_box(&backend), &[]).map(|s| s.weight))
        });
    }
    g.finish();
}

criterion_group!(benches, bench_routing, bench_pick);
criterion_main!(benches);
