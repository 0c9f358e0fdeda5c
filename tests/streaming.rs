//! 64 MiB request and response bodies stream through veer without being buffered whole:
//! each side waits for the other to see the first chunk before sending the rest (a proxy
//! that buffered would deadlock here), and the process's RSS grows by less than 16 MiB.
//! Its own test binary, so no other test's allocations blur the RSS reading.

mod support;
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::channel::Channel;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use support::Proxy;
use tokio::sync::Notify;

const TOTAL: usize = 64 << 20;
const CHUNK: usize = 64 << 10;

#[derive(Default)]
struct Signals {
    /// The backend received the first chunk of the upload.
    upload_started: Notify,
    /// The client received the first chunk of the download.
    download_started: Notify,
}

async fn send_body(mut tx: http_body_util::channel::Sender<Bytes, Infallible>, after_first: Option<Arc<Signals>>) {
    let chunk = Bytes::from(vec![b'x'; CHUNK]);
    for i in 0..TOTAL / CHUNK {
        if tx.send_data(chunk.clone()).await.is_err() {
            return;
        }
        if i == 0 {
            if let Some(s) = &after_first {
                s.download_started.notified().await;
            }
        }
    }
}

async fn backend(signals: Arc<Signals>) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let signals = signals.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| {
                    let signals = signals.clone();
                    async move {
                        let (tx, body) = Channel::<Bytes, Infallible>::new(4);
                        if req.uri().path() == "/upload" {
                            let mut body = req.into_body();
                            let mut n = 0usize;
                            while let Some(frame) = body.frame().await {
                                if let Ok(d) = frame.unwrap().into_data() {
                                    if n == 0 {
                                        signals.upload_started.notify_one();
                                    }
                                    n += d.len();
                                }
                            }
                            let mut tx = tx;
                            tokio::spawn(async move { tx.send_data(Bytes::from(n.to_string())).await });
                        } else {
                            tokio::spawn(send_body(tx, Some(signals)));
                        }
                        Ok::<_, Infallible>(Response::new(body))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

/// Samples this process's RSS until stopped; returns the peak growth over the start value.
fn rss_sampler() -> (Arc<AtomicBool>, std::thread::JoinHandle<u64>) {
    fn rss_kib() -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let handle = std::thread::spawn(move || {
        let start = rss_kib();
        let mut peak = start;
        while !s.load(Ordering::Relaxed) {
            peak = peak.max(rss_kib());
            std::thread::sleep(Duration::from_millis(2));
        }
        (peak - start) * 1024
    });
    (stop, handle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_bodies_stream_both_ways_with_bounded_memory() {
    let signals = Arc::new(Signals::default());
    let addr = backend(signals.clone()).await;
    let proxy = Proxy::start(&format!(
        r#"
[[listener]]
name = "web"
bind = "127.0.0.1:0"
protocol = "http"
  [[listener.route]]
  backend = "big"
[[backend]]
name = "big"
servers = [ {{ name = "s", addr = "{addr}" }} ]
"#
    ))
    .await;
    let url = proxy.url("web").await;
    let client = Client::builder(TokioExecutor::new()).build_http::<Channel<Bytes, Infallible>>();
    let (stop, sampler) = rss_sampler();

    // Upload: the rest of the body is only sent once the backend has seen the first chunk.
    let (mut tx, body) = Channel::<Bytes, Infallible>::new(4);
    let s = signals.clone();
    let uploader = tokio::spawn(async move {
        let chunk = Bytes::from(vec![b'u'; CHUNK]);
        tx.send_data(chunk.clone()).await.unwrap();
        s.upload_started.notified().await;
        for _ in 1..TOTAL / CHUNK {
            tx.send_data(chunk.clone()).await.unwrap();
        }
    });
    let req = Request::post(format!("{url}/upload")).body(body).unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(120), client.request(req))
        .await
        .expect("upload deadlocked")
        .unwrap();
    uploader.await.unwrap();
    let answer = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(answer, TOTAL.to_string().as_bytes());

    // Download: the backend sends the rest only once the client has the first chunk.
    let (_no_body_tx, empty) = Channel::<Bytes, Infallible>::new(1);
    drop(_no_body_tx);
    let req = Request::get(format!("{url}/download")).body(empty).unwrap();
    let mut body = client.request(req).await.unwrap().into_body();
    let received = AtomicU64::new(0);
    let download = async {
        while let Some(frame) = body.frame().await {
            if let Ok(d) = frame.unwrap().into_data() {
                if received.fetch_add(d.len() as u64, Ordering::Relaxed) == 0 {
                    signals.download_started.notify_one();
                }
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(120), download)
        .await
        .expect("download deadlocked");
    assert_eq!(received.load(Ordering::Relaxed), TOTAL as u64);

    stop.store(true, Ordering::Relaxed);
    let growth = sampler.join().unwrap();
    eprintln!("RSS growth while streaming: {} KiB", growth >> 10);
    assert!(
        growth < 16 << 20,
        "RSS grew by {} MiB while streaming 2 × 64 MiB",
        growth >> 20
    );
}
