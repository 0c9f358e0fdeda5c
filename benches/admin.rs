//! A webhook receiver that hangs must not slow the admin plane (issue 23): `set split`
//! answered by a running veer with no `[[notify]]`, and with one whose receiver accepts and
//! never answers (queue 4, so it overflows within the first iterations). The two should be
//! the same within noise. Run with `cargo bench --bench admin`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use veer::admin::commands::{execute, Peer, Reply};

const CONFIG: &str = r#"
[[listener]]
name = "web"
bind = "127.0.0.1:0"
protocol = "http"
  [[listener.route]]
  backend = "shop"

[[backend]]
name = "shop"
groups = [
  { name = "blue", weight = 1000, servers = [ { name = "b1", addr = "127.0.0.1:9" } ] },
  { name = "green", weight = 0, servers = [ { name = "g1", addr = "127.0.0.1:9" } ] },
]
"#;

fn bench(c: &mut Criterion) {
    let Ok(rt) = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    else {
        return;
    };
    let Ok(dir) = tempfile::tempdir() else { return };
    // Accepts and never answers.
    let hang = rt.block_on(async {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.ok()?;
        let addr = l.local_addr().ok()?;
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = l.accept().await {
                held.push(s);
            }
        });
        Some(addr)
    });
    let Some(hang) = hang else { return };
    let peer = Peer {
        via: "bench",
        uid: None,
        pid: None,
        addr: None,
    };
    let mut g = c.benchmark_group("set_split");
    for (name, extra) in [
        ("no_receiver", String::new()),
        (
            "hanging_receiver",
            format!("[[notify]]\nurl = \"http://{hang}/\"\ntimeout = \"1h\"\nqueue = 4\n"),
        ),
    ] {
        let path = dir.path().join(format!("{name}.toml"));
        if std::fs::write(&path, format!("{CONFIG}{extra}")).is_err() {
            return;
        }
        let Ok(veer) = rt.block_on(veer::Veer::start(&path)) else {
            return;
        };
        let mut flip = false;
        g.bench_function(name, |b| {
            b.iter(|| {
                flip = !flip;
                let line = if flip {
                    "set split shop blue=0 green=1000"
                } else {
                    "set split shop blue=1000 green=0"
                };
                let reply = rt.block_on(execute(&veer, black_box(line), &peer));
                assert!(matches!(reply, Reply::Answer(ref a) if a.ok));
            })
        });
        rt.block_on(veer.shutdown());
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
