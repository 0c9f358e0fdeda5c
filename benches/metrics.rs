//! The per-request cost of observability on the hot path: the histogram records a proxied
//! request makes (client view, upstream response; connect only on new connections), the
//! response-class counter, X-Request-Id generation, the rollout's latency bucket and the
//! traceparent. Run with `cargo bench --bench metrics`.

use std::hint::black_box;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use veer::config::MetricsSpec;
use veer::metrics::Metrics;
use veer::state::ServerState;

fn bench(c: &mut Criterion) {
    let metrics = Metrics::new(&MetricsSpec::default());
    let server = metrics.server("shop", "blue", "blue-1");
    let state = ServerState::default();
    let mut g = c.benchmark_group("metrics_per_request");
    g.bench_function("two_histograms_and_status_counter", |b| {
        b.iter(|| {
            let start = Instant::now();
            server.upstream.record(black_box(Duration::from_micros(420)));
            state.count_response(black_box(200));
            state.response_bytes.fetch_add(black_box(13), Relaxed);
            server.request.record(start.elapsed());
        })
    });
    g.bench_function("request_id", |b| b.iter(|| format!("{:032x}", fastrand::u128(..))));
    // What issue 23 added per request: the in-process response-time bucket a rollout judges
    // p99 on, and the W3C traceparent (a new one, and one continuing the client's trace).
    g.bench_function("latency_bucket", |b| {
        b.iter(|| state.latency.record(black_box(Duration::from_micros(420))))
    });
    g.bench_function("traceparent_new", |b| {
        b.iter(|| veer::proxy::headers::traceparent(black_box(None)))
    });
    let given = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    g.bench_function("traceparent_continued", |b| {
        b.iter(|| veer::proxy::headers::traceparent(black_box(Some(&given[..]))))
    });
    // Histograms buffer samples until upkeep; keep memory flat during the run.
    g.bench_function("upkeep_after_1000_samples", |b| {
        b.iter(|| {
            for _ in 0..1000 {
                server.request.record(0.001);
            }
            metrics.upkeep();
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
