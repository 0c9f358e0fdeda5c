//! Running out of file descriptors is this machine's problem, not the servers' (hardening,
//! issue 18): an upstream connect that fails with EMFILE answers 503 `local-resources`,
//! ejects no server and fails over to none (#9); accept failures at the limit back off and
//! log at most one line per second, with the count of the suppressed ones (#14).
//!
//! One test in its own process: it lowers this process's descriptor limit, which veer
//! (started in-process) shares.

mod support;
use std::io::Write;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Log lines, captured from every thread.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn lines(&self, containing: &str) -> Vec<String> {
        String::from_utf8_lossy(&self.0.lock().unwrap())
            .lines()
            .filter(|l| l.contains(containing))
            .map(str::to_owned)
            .collect()
    }
}

/// The descriptors open in this process.
fn open_fds() -> std::collections::BTreeSet<u64> {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}

/// Waits until no descriptor has opened or closed for 200 ms: the first request's upstream
/// connection (not pooled) closes on both ends after its response, and a descriptor freed
/// after the table is filled would let the next connect succeed toward a backend that then
/// cannot accept it.
async fn settled_fds() -> std::collections::BTreeSet<u64> {
    let mut last = open_fds();
    let mut quiet = 0;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = open_fds();
        quiet = if now == last { quiet + 1 } else { 0 };
        last = now;
        if quiet == 4 {
            break;
        }
    }
    last
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_descriptors_blames_no_server_and_floods_no_log() {
    let log = Captured::default();
    let writer = log.clone();
    tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::WARN)
        .init();

    let (s1, s2) = (FakeBackend::start("s1").await, FakeBackend::start("s2").await);
    // No pooled upstream connections: every request connects.
    let proxy = Proxy::start(&format!(
        r#"
[[listener]]
name = "web"
bind = "127.0.0.1:0"
protocol = "http"
  [[listener.route]]
  backend = "b"

[[backend]]
name = "b"
pool_max_idle = 0
servers = [ {{ name = "s1", addr = "{}" }}, {{ name = "s2", addr = "{}" }} ]
"#,
        s1.addr, s2.addr
    ))
    .await;
    let addr = proxy.addr("web").await;
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    let mut buf = vec![0u8; 64 * 1024];
    conn.write_all(request).await.unwrap();
    let n = conn.read(&mut buf).await.unwrap();
    assert_eq!(raw_status(&String::from_utf8_lossy(&buf[..n])), 200);
    // Sockets for later connects, made while descriptors are still available.
    let waiting: Vec<socket2::Socket> = (0..5)
        .map(|_| socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap())
        .collect();

    // Exhaust the descriptor table: lower the limit to what is open, fill the holes.
    let highest = settled_fds().await.into_iter().max().unwrap();
    let saved = getrlimit(Resource::Nofile);
    setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(highest + 1),
            maximum: saved.maximum,
        },
    )
    .unwrap();
    let mut filler = Vec::new();
    while let Ok(f) = std::fs::File::open("/dev/null") {
        filler.push(f);
    }
    // Anything that closed while filling leaves a hole: fill it too (the table is full, so
    // /proc/self/fd cannot be read now; wait instead).
    tokio::time::sleep(Duration::from_millis(200)).await;
    while let Ok(f) = std::fs::File::open("/dev/null") {
        filler.push(f);
    }

    conn.write_all(request).await.unwrap();
    let n = conn.read(&mut buf).await.unwrap();
    let answer = String::from_utf8_lossy(&buf[..n]).to_ascii_lowercase();

    // Connections veer cannot accept (EMFILE), for a while.
    for s in &waiting {
        let _ = s.connect(&addr.into());
    }
    let started = std::time::Instant::now();
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let window = started.elapsed();

    drop(filler);
    setrlimit(Resource::Nofile, saved).unwrap();
    drop(waiting);

    assert_eq!(raw_status(&answer), 503, "{answer}");
    assert!(answer.contains("veer-error: local-resources"), "{answer}");
    assert!(answer.contains("retry-after: 1"), "{answer}");
    let snap = proxy.veer.snapshot();
    let backend = snap.backend("b").unwrap();
    for s in backend.servers() {
        assert_eq!(s.state.connect_failures.load(Relaxed), 0, "{} was blamed", s.id);
        assert!(!s.state.is_ejected(veer::state::now_ms()), "{} was ejected", s.id);
    }
    assert_eq!(backend.state.retries.load(Relaxed), 0, "failed over to another server");
    let stats = proxy.veer.listener_stats().await;
    let web = &stats.iter().find(|(n, _)| n == "web").unwrap().1;
    let local = veer::error::REASONS
        .iter()
        .position(|r| *r == "local-resources")
        .unwrap();
    assert_eq!(web.errors[local].load(Relaxed), 1);

    // At most one line per second of the window (plus the first), and the later ones say how
    // many were suppressed.
    let lines = log.lines("accept failed");
    assert!(!lines.is_empty(), "no accept failure was logged");
    assert!(
        lines.len() as u64 <= window.as_secs() + 1,
        "{} lines in {window:?}:\n{}",
        lines.len(),
        lines.join("\n")
    );
    let suppressed: u64 = lines
        .iter()
        .filter_map(|l| {
            l.split("suppressed=")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum();
    assert!(suppressed > 0, "{}", lines.join("\n"));
    // And the loop backs off (100 ms) rather than spinning.
    let attempts = suppressed + lines.len() as u64;
    assert!(
        attempts <= window.as_millis() as u64 / 100 + 5,
        "{attempts} accept attempts in {window:?}"
    );
}
