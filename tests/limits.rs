//! Listener `max_connections`: at the limit veer stops accepting — clients beyond it wait in
//! the backlog, unanswered, and are served as soon as a connection closes; the listener never
//! holds more than the limit.

mod support;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn request(s: &mut TcpStream) -> Option<String> {
    s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").await.ok()?;
    let mut buf = vec![0u8; 4096];
    let n = s.read(&mut buf).await.ok()?;
    Some(String::from_utf8_lossy(&buf[..n]).to_string())
}

/// The tests here run one at a time: the first measures the process's CPU while idle.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// CPU time this process used so far (user + system), in clock ticks (1/100 s).
fn cpu_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    // The fields after the command name (which is in parentheses): utime is 14th, stime 15th.
    let rest = stat.rsplit_once(')').unwrap().1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

fn config(max_connections: usize, server: std::net::SocketAddr) -> String {
    http_config(&[("a", server)], "").replace(
        "protocol = \"http\"",
        &format!("protocol = \"http\"\nmax_connections = {max_connections}"),
    )
}

#[tokio::test]
async fn at_max_connections_new_clients_wait_until_one_closes() {
    let _serial = SERIAL.lock().await;
    let web = FakeBackend::start("web").await;
    let proxy = Proxy::start(&config(3, web.addr)).await;
    let addr = proxy.addr("web").await;
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        assert!(request(&mut s).await.unwrap().starts_with("HTTP/1.1 200"));
        held.push(s);
    }
    // The fourth connects (the kernel's backlog) but is not accepted, so not answered.
    let mut waiting = TcpStream::connect(addr).await.unwrap();
    waiting.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").await.unwrap();
    let mut buf = vec![0u8; 4096];
    // At the limit the accept loop waits for a connection to close; it does not poll. A
    // loop that polled would spend most of the wait on the CPU.
    let before = cpu_ticks();
    let early = tokio::time::timeout(Duration::from_millis(500), waiting.read(&mut buf)).await;
    let spent = cpu_ticks() - before;
    assert!(early.is_err(), "answered beyond max_connections");
    assert!(
        spent <= 5,
        "{spent} ticks of CPU in 500 ms at the limit: the accept loop is busy"
    );
    let stats = proxy.veer.listener_stats().await;
    assert_eq!(stats[0].1.active.load(Relaxed), 3);

    // One closes: the waiting client is accepted and answered.
    drop(held.pop());
    let n = tokio::time::timeout(Duration::from_secs(10), waiting.read(&mut buf))
        .await
        .expect("served once a slot freed")
        .unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    assert!(stats[0].1.active.load(Relaxed) <= 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hundred_clients_against_a_limit_of_a_hundred() {
    let _serial = SERIAL.lock().await;
    let web = FakeBackend::start("web").await;
    let proxy = Proxy::start(&config(100, web.addr)).await;
    let addr = proxy.addr("web").await;
    let stats = proxy.veer.listener_stats().await[0].1.clone();
    // 300 clients connect at once and each holds its connection for a while after its answer.
    let most = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let watch = {
        let (stats, most) = (stats.clone(), most.clone());
        tokio::spawn(async move {
            loop {
                most.fetch_max(stats.active.load(Relaxed), Relaxed);
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
    };
    let mut clients = Vec::new();
    for _ in 0..300 {
        clients.push(tokio::spawn(async move {
            let mut s = TcpStream::connect(addr).await.unwrap();
            let answer = request(&mut s).await.unwrap_or_default();
            tokio::time::sleep(Duration::from_millis(50)).await;
            answer
        }));
    }
    let mut served = 0;
    for c in clients {
        if c.await.unwrap().starts_with("HTTP/1.1 200") {
            served += 1;
        }
    }
    watch.abort();
    assert_eq!(served, 300, "every client is served in the end");
    assert!(most.load(Relaxed) <= 100, "{} open at once", most.load(Relaxed));
    assert!(stats.total.load(Relaxed) >= 300);
}
