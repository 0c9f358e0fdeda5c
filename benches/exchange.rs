//! One whole HTTP/1.1 keep-alive exchange through veer, in process: a client on a kept-alive
//! connection sends a GET, veer parses, routes, picks and forwards it over its pooled
//! upstream connection to a minimal backend, and the 13-byte answer comes back to the
//! client. The anchor is the same exchange straight to the backend: the difference is what
//! veer adds. Loopback sockets rather than in-memory streams, since veer's data path is
//! written for TCP sockets (the kernel's share is in both figures). Everything runs on one
//! current-thread runtime, as veer's loadtest does with one worker. Run with
//! `cargo bench --bench exchange`; callgrind gives the repeatable instruction counts.

use std::net::SocketAddr;

use criterion::{criterion_group, criterion_main, Criterion};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const REQUEST: &[u8] =
    b"GET /api/orders?page=2 HTTP/1.1\r\nHost: shop.example.com\r\nUser-Agent: bench\r\nAccept: */*\r\n\r\n";
const RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\nhello, world\n";

/// A backend that answers every request on every connection with [`RESPONSE`].
async fn backend() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            s.set_nodelay(true).unwrap();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let mut have = 0;
                loop {
                    match s.read(&mut buf[have..]).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => have += n,
                    }
                    // One answer per complete head (no bodies in this bench).
                    while let Some(end) = buf[..have].windows(4).position(|w| w == b"\r\n\r\n") {
                        if s.write_all(RESPONSE).await.is_err() {
                            return;
                        }
                        buf.copy_within(end + 4..have, 0);
                        have -= end + 4;
                    }
                }
            });
        }
    });
    addr
}

/// Sends one request on `s` and reads its whole response (its length is known).
async fn exchange(s: &mut TcpStream, buf: &mut [u8]) {
    s.write_all(REQUEST).await.unwrap();
    let mut got = 0;
    while got < RESPONSE.len() {
        let n = s.read(&mut buf[got..]).await.unwrap();
        assert!(n > 0, "connection closed");
        got += n;
    }
}

fn bench_exchange(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (direct, through, _veer) = rt.block_on(async {
        let backend = backend().await;
        let path = dir.path().join("veer.toml");
        std::fs::write(
            &path,
            format!(
                "[[listener]]\nname = \"web\"\nbind = \"127.0.0.1:0\"\nprotocol = \"http\"\n  [[listener.route]]\n  backend = \"app\"\n\
                 [[backend]]\nname = \"app\"\nservers = [ {{ name = \"a\", addr = \"{backend}\" }} ]\n"
            ),
        )
        .unwrap();
        let veer = veer::Veer::start(&path).await.unwrap();
        let addr = veer.listener_addr("web").await.unwrap();
        let connect = |a: SocketAddr| async move {
            let s = TcpStream::connect(a).await.unwrap();
            s.set_nodelay(true).unwrap();
            s
        };
        (connect(backend).await, connect(addr).await, veer)
    });
    let mut buf = vec![0u8; 4096];
    let mut g = c.benchmark_group("exchange");
    let mut direct = direct;
    g.bench_function("keep-alive GET, straight to the backend (anchor)", |b| {
        b.iter(|| rt.block_on(exchange(&mut direct, &mut buf)))
    });
    let mut through = through;
    g.bench_function("keep-alive GET through veer", |b| {
        b.iter(|| rt.block_on(exchange(&mut through, &mut buf)))
    });
    g.finish();
}

criterion_group!(benches, bench_exchange);
criterion_main!(benches);
