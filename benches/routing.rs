//! Hot-path micro benchmarks: route matching in a 10,000-route table (host + path), picking
//! a group and a server, a returning client's sticky pick (cookie scan + lookup) and a
//! consistent-hash pick. Run with `cargo bench --bench routing`.

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use http::HeaderMap;
use veer::balance::Affinity;
use veer::config::{PathMatch, RouteSpec};
use veer::proxy::headers::HeaderList;
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
                path: Some(PathMatch::Prefix(format!("/api/v{p}/"))),
                backend: "b".into(),
                ..RouteSpec::default()
            });
        }
    }
    routes.push(RouteSpec {
        name: "wild".into(),
        host: Some("*.example.org".into()),
        backend: "b".into(),
        ..RouteSpec::default()
    });
    routes.push(RouteSpec {
        name: "fallback".into(),
        host: None,
        backend: "b".into(),
        ..RouteSpec::default()
    });
    routes
}

fn bench_routing(c: &mut Criterion) {
    let table = RouteTable::build(&ten_thousand_routes(), |_| 0);
    let headers = HeaderMap::new();
    let mut g = c.benchmark_group("route_10k");
    g.bench_function("exact_host_last_path", |b| {
        b.iter(|| {
            table.find(
                black_box("svc777.example.com"),
                "GET",
                black_box("/api/v9/users/1"),
                &headers,
            )
        })
    });
    g.bench_function("wildcard_host", |b| {
        b.iter(|| table.find(black_box("a.b.example.org"), "GET", black_box("/x"), &headers))
    });
    g.bench_function("no_host_match_fallback", |b| {
        b.iter(|| table.find(black_box("unknown.example.net"), "GET", black_box("/x"), &headers))
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
        let none = Affinity::default();
        g.bench_function(balance, |b| {
            b.iter(|| veer::balance::pick(black_box(&backend), &none, &[]).map(|(s, _)| s.weight))
        });
    }
    g.finish();
}

/// The pick with the health machinery on: slow start and outlier detection configured (the
/// pick reads one more atomic, the response hook two), then with a server mid-ramp (the
/// ramp's weights are read). Compare with `pick/round_robin`.
fn bench_pick_health(c: &mut Criterion) {
    let mut g = c.benchmark_group("pick_health");
    let cfg = backend_config("round_robin").replace(
        "balance = \"round_robin\"",
        "balance = \"round_robin\"\nslow_start = \"30s\"\noutlier = { consecutive_5xx = 5, consecutive_gateway_failure = 3 }",
    );
    let spec = veer::config::parse(Path::new("bench.toml"), &cfg).unwrap();
    let (snap, _) = Snapshot::build(Arc::new(spec), &mut Registry::default(), 1);
    let backend = snap.backend("shop").unwrap().clone();
    let none = Affinity::default();
    g.bench_function("round_robin_slow_start_outlier", |b| {
        b.iter(|| {
            let (s, _) = veer::balance::pick(black_box(&backend), &none, &[]).unwrap();
            veer::balance::outlier::response(&backend, s, 200);
            s.weight
        })
    });
    let ramping = &backend.groups[0].servers[1];
    backend.state.warm(&ramping.state, veer::clock::now_ms(), 3_600_000);
    g.bench_function("round_robin_one_server_ramping", |b| {
        b.iter(|| {
            let (s, _) = veer::balance::pick(black_box(&backend), &none, &[]).unwrap();
            veer::balance::outlier::response(&backend, s, 200);
            s.weight
        })
    });
    g.finish();
}

/// A returning client: find veer's cookie among others, parse it, pick its server.
fn bench_sticky_and_hash(c: &mut Criterion) {
    let spec = veer::config::parse(
        Path::new("bench.toml"),
        &backend_config("round_robin").replace("balance = \"round_robin\"", "sticky = { cookie = \"VEER_SRV\" }"),
    )
    .unwrap();
    let (snap, _) = Snapshot::build(Arc::new(spec), &mut Registry::default(), 1);
    let backend = snap.backend("shop").unwrap().clone();
    let target = &backend.groups[0].servers[2];
    let mut headers = HeaderMap::new();
    let cookie = format!(
        "_ga=GA1.2.1234567890.1234567890; theme=dark; VEER_SRV={:016x}; lang=en-GB",
        target.sticky_id
    );
    headers.insert(http::header::COOKIE, cookie.parse().unwrap());
    let mut g = c.benchmark_group("affinity");
    g.bench_function("sticky_cookie_scan_and_pick", |b| {
        b.iter(|| {
            let id = veer::proxy::cookies::find_in(black_box(&headers).cookies(), "VEER_SRV")
                .and_then(veer::proxy::cookies::parse_sticky);
            let a = Affinity {
                sticky: id,
                ..Affinity::default()
            };
            veer::balance::pick(&backend, &a, &[]).map(|(s, _)| s.weight)
        })
    });

    let spec = veer::config::parse(
        Path::new("bench.toml"),
        &backend_config("hash").replace("balance = \"hash\"", "balance = \"hash\"\nhash_key = \"header:x-user\""),
    )
    .unwrap();
    let (snap, _) = Snapshot::build(Arc::new(spec), &mut Registry::default(), 1);
    let backend = snap.backend("shop").unwrap().clone();
    g.bench_function("hash_header_key_and_pick", |b| {
        b.iter(|| {
            let a = Affinity {
                hash: Some(veer::balance::hash::key(black_box(b"user-1234567"))),
                ..Affinity::default()
            };
            veer::balance::pick(&backend, &a, &[]).map(|(s, _)| s.weight)
        })
    });
    g.finish();
}

/// The request Cookie scan alone: veer's byte scanner against the `cookie` crate's parser
/// (`Cookie::split_parse`, which needs the header as UTF-8 first), on a typical header. The
/// issue asked for the crate; this measures what it would cost on the hot path.
fn bench_cookie_scan(c: &mut Criterion) {
    let header = "_ga=GA1.2.1234567890.1234567890; theme=dark; VEER_SRV=00000000000000ff; lang=en-GB";
    let mut g = c.benchmark_group("cookie_find");
    g.bench_function("veer_byte_scan", |b| {
        b.iter(|| {
            veer::proxy::cookies::find_in(std::iter::once(black_box(header.as_bytes())), "VEER_SRV").map(|v| v.len())
        })
    });
    g.bench_function("cookie_crate_split_parse", |b| {
        b.iter(|| {
            std::str::from_utf8(black_box(header.as_bytes()))
                .ok()
                .and_then(|h| {
                    cookie::Cookie::split_parse(h)
                        .filter_map(Result::ok)
                        .find(|c| c.name() == "VEER_SRV")
                })
                .map(|c| c.value().len())
        })
    });
    g.finish();
}

criterion_group!(
    benches,
    bench_routing,
    bench_pick,
    bench_pick_health,
    bench_sticky_and_hash,
    bench_cookie_scan
);
criterion_main!(benches);
