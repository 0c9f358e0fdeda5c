//! The per-request cost of observability on the hot path: the histogram records a proxied
//! request makes (client view, upstream response; connect only on new connections), the
//! response-class counter, and X-Request-Id generation. Run with `cargo bench --bench metrics`.

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
