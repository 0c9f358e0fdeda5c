//! Mixed constant load for the scenario suite (tests/scenarios.rs, run by
//! loadtest/scenarios.sh): keep-alive and connection-per-request HTTP/1.1, h2c, HTTPS, 1 MiB
//! uploads, sticky clients and upgraded (WebSocket) echo connections, each client counting
//! its answers, failures and latencies; and the backend they talk to, which can be killed
//! (every connection dropped, the port closed) and started again on the same address.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

/// The upload size.
pub const UPLOAD: usize = 1 << 20;
/// Upgraded echo: messages per connection before it is closed and opened again.
const ECHOES_PER_CONNECTION: usize = 50;
/// No answer within this long is a failure (a hang).
const PATIENCE: Duration = Duration::from_secs(30);

/// What one client saw.
#[derive(Default)]
struct Tally {
    ok: u64,
    failed: Vec<String>,
    micros: Vec<u32>,
    /// Sticky clients: answers from another server than their cookie named while that
    /// server was still configured (counted, not failed: a drain or removal moves them).
    moved: u64,
    /// HTTP/2 requests refused by a GOAWAY and sent again (see [`Client::http`]).
    retried: u64,
}

impl Tally {
    fn record(&mut self, started: Instant, outcome: Result<(), String>) {
        match outcome {
            Ok(()) => {
                self.ok += 1;
                self.micros
                    .push(u32::try_from(started.elapsed().as_micros()).unwrap_or(u32::MAX));
            }
            Err(e) => self.failed.push(e),
        }
    }
}

/// The whole load's figures.
#[derive(Debug, Default)]
pub struct Report {
    pub requests: u64,
    pub failures: u64,
    pub p99_ms: f64,
    /// kind → (answered, failed).
    pub by_kind: BTreeMap<&'static str, (u64, u64)>,
    /// The first few failures, verbatim.
    pub samples: Vec<String>,
    pub sticky_moves: u64,
    /// h2c requests a GOAWAY refused (never processed) that the client sent again.
    pub goaway_retries: u64,
}

impl Report {
    /// Several loads' figures as one (the p99 is the worst of theirs).
    pub fn merge(reports: Vec<Report>) -> Report {
        let mut all = Report::default();
        for r in reports {
            all.requests += r.requests;
            all.failures += r.failures;
            all.p99_ms = all.p99_ms.max(r.p99_ms);
            for (kind, (ok, failed)) in r.by_kind {
                let e = all.by_kind.entry(kind).or_default();
                e.0 += ok;
                e.1 += failed;
            }
            all.samples.extend(r.samples);
            all.sticky_moves += r.sticky_moves;
            all.goaway_retries += r.goaway_retries;
        }
        all
    }
}

/// Clients of every kind against one listener, until [`Load::finish`].
pub struct Load {
    stop: Arc<AtomicBool>,
    count: Arc<AtomicU64>,
    tasks: Vec<(&'static str, JoinHandle<Tally>)>,
}

/// Clients per kind.
const MIX: [(&str, usize); 6] = [
    ("h1-keepalive", 4),
    ("h1-close", 2),
    ("h2c", 2),
    ("upload-1MiB", 1),
    ("sticky", 2),
    ("websocket", 1),
];

/// An HTTPS listener to load too: its address and a client configuration trusting it.
pub type Tls = (SocketAddr, Arc<rustls::ClientConfig>);

/// HTTPS clients (when a TLS listener is given).
const TLS_CLIENTS: usize = 2;
/// HTTPS requests per connection before a new one (and a new handshake).
const TLS_REQUESTS_PER_CONNECTION: usize = 100;

impl Load {
    /// Starts the clients against `addr` with `Host: host`.
    pub fn start(addr: SocketAddr, host: &str) -> Load {
        Self::start_tls(addr, host, None)
    }

    /// [`Load::start`], plus HTTPS clients against `tls`.
    pub fn start_tls(addr: SocketAddr, host: &str, tls: Option<Tls>) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let count = Arc::new(AtomicU64::new(0));
        let mut tasks = Vec::new();
        for (kind, n) in MIX {
            for _ in 0..n {
                let c = Client {
                    addr,
                    host: host.to_string(),
                    stop: stop.clone(),
                    count: count.clone(),
                };
                let task = match kind {
                    "h1-keepalive" => tokio::spawn(c.http(false, false, false)),
                    "h1-close" => tokio::spawn(c.close()),
                    "h2c" => tokio::spawn(c.http(true, false, false)),
                    "upload-1MiB" => tokio::spawn(c.http(false, true, false)),
                    "sticky" => tokio::spawn(c.http(false, false, true)),
                    _ => tokio::spawn(c.echo()),
                };
                tasks.push((kind, task));
            }
        }
        for _ in 0..tls.as_ref().map_or(0, |_| TLS_CLIENTS) {
            let c = Client {
                addr,
                host: host.to_string(),
                stop: stop.clone(),
                count: count.clone(),
            };
            let tls = tls.clone().expect("checked");
            tasks.push(("https", tokio::spawn(c.https(tls))));
        }
        Load { stop, count, tasks }
    }

    /// Requests answered or failed so far.
    pub fn count(&self) -> u64 {
        self.count.load(Relaxed)
    }

    /// Waits until at least `n` requests were made.
    pub async fn until(&self, n: u64) {
        while self.count() < n {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops the clients (each finishes its request) and sums what they saw.
    pub async fn finish(self) -> Report {
        self.stop.store(true, Relaxed);
        let mut report = Report::default();
        let mut micros = Vec::new();
        for (kind, task) in self.tasks {
            let t = match task.await {
                Ok(t) => t,
                Err(e) => Tally {
                    failed: vec![format!("{kind} client panicked: {e}")],
                    ..Tally::default()
                },
            };
            let e = report.by_kind.entry(kind).or_default();
            e.0 += t.ok;
            e.1 += t.failed.len() as u64;
            report.requests += t.ok + t.failed.len() as u64;
            report.failures += t.failed.len() as u64;
            report.sticky_moves += t.moved;
            report.goaway_retries += t.retried;
            report
                .samples
                .extend(t.failed.into_iter().take(5).map(|f| format!("{kind}: {f}")));
            micros.extend(t.micros);
        }
        micros.sort_unstable();
        if !micros.is_empty() {
            let i = (micros.len() * 99 / 100).min(micros.len() - 1);
            report.p99_ms = f64::from(micros[i]) / 1000.0;
        }
        report
    }
}

/// `f`, or the error "`what`" when it takes longer than [`PATIENCE`] (a hang).
async fn within<T>(what: &str, f: impl std::future::Future<Output = Result<T, String>>) -> Result<T, String> {
    tokio::time::timeout(PATIENCE, f)
        .await
        .unwrap_or_else(|_| Err(what.to_string()))
}

struct Client {
    addr: SocketAddr,
    host: String,
    stop: Arc<AtomicBool>,
    count: Arc<AtomicU64>,
}

impl Client {
    fn running(&self) -> bool {
        !self.stop.load(Relaxed)
    }

    /// One request made: counted for [`Load::until`] and recorded in `t`.
    fn done(&self, t: &mut Tally, started: Instant, outcome: Result<(), String>) {
        self.count.fetch_add(1, Relaxed);
        t.record(started, outcome);
    }

    /// Keep-alive requests through hyper's pooled client (HTTP/1.1 or h2c): GETs, or 1 MiB
    /// POSTs the backend must read whole, or GETs that keep the sticky cookie.
    ///
    /// A request refused by the server's GOAWAY (`NO_ERROR`: the connection is closing
    /// gracefully, the stream was never processed) is sent again once, as RFC 9113 §8.7
    /// allows and browsers, Envoy and gRPC do; hyper's pooled client does not on its own
    /// when the GOAWAY lands between taking a connection from its pool and sending. Counted
    /// as `retried`, not hidden.
    async fn http(self, h2c: bool, upload: bool, sticky: bool) -> Tally {
        let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
            .http2_only(h2c)
            .pool_idle_timeout(Duration::from_secs(30))
            .build_http::<Full<Bytes>>();
        let payload = Bytes::from(vec![b'x'; UPLOAD]);
        let mut t = Tally::default();
        let mut cookie: Option<(String, String)> = None;
        while self.running() {
            let started = Instant::now();
            let mut b = Request::builder()
                .method(if upload { "POST" } else { "GET" })
                .uri(format!("http://{}/", self.addr))
                .header("host", &self.host);
            if let Some((c, _)) = &cookie {
                b = b.header("cookie", c.as_str());
            }
            let body = if upload {
                Full::new(payload.clone())
            } else {
                Full::new(Bytes::new())
            };
            let req = b.body(body).expect("request");
            let again = if h2c { Some(req.clone()) } else { None };
            let send = |req: Request<Full<Bytes>>| {
                let client = client.clone();
                async move {
                    tokio::time::timeout(PATIENCE, client.request(req))
                        .await
                        .map_err(|_| "no answer within 30 s".to_string())?
                        .map_err(|e| format!("{e:?}"))
                }
            };
            let outcome = async {
                let resp = match (send(req).await, again) {
                    (Err(e), Some(again)) if e.contains("GoAway(") && e.contains("NO_ERROR") => {
                        t.retried += 1;
                        send(again).await?
                    }
                    (result, _) => result?,
                };
                let (parts, body) = resp.into_parts();
                let body = tokio::time::timeout(PATIENCE, body.collect())
                    .await
                    .map_err(|_| "body stalled".to_string())?
                    .map_err(|e| format!("body: {e}"))?;
                drop(body);
                if parts.status != 200 {
                    let reason = parts.headers.get("veer-error").and_then(|v| v.to_str().ok());
                    return Err(format!("status {} {reason:?}", parts.status));
                }
                let header = |n: &str| parts.headers.get(n).and_then(|v| v.to_str().ok()).map(str::to_string);
                if upload && header("x-body-len").as_deref() != Some(&UPLOAD.to_string()) {
                    return Err(format!("upload arrived with {:?} bytes", header("x-body-len")));
                }
                Ok((header("x-server").unwrap_or_default(), header("set-cookie")))
            }
            .await;
            let outcome = outcome.map(|(server, set)| {
                if let Some((_, first)) = &cookie {
                    if *first != server {
                        t.moved += 1;
                    }
                }
                if sticky {
                    if let Some(set) = set {
                        let c = set.split(';').next().unwrap_or_default().to_string();
                        cookie = Some((c, server));
                    }
                }
            });
            self.done(&mut t, started, outcome);
        }
        t
    }

    /// Keep-alive HTTPS: a TLS connection (a full handshake), [`TLS_REQUESTS_PER_CONNECTION`]
    /// GETs on it through hyper's HTTP/1.1 client, then the next connection.
    async fn https(self, (addr, config): Tls) -> Tally {
        let mut t = Tally::default();
        while self.running() {
            let started = Instant::now();
            let opened = async {
                let stream = crate::support::pki::connect(addr, &self.host, config.clone())
                    .await
                    .map_err(|e| format!("TLS connect: {e}"))?;
                let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                    .await
                    .map_err(|e| format!("handshake: {e}"))?;
                tokio::spawn(conn);
                Ok::<_, String>(sender)
            };
            let mut sender = match within("TLS: no handshake within 30 s", opened).await {
                Ok(s) => s,
                Err(e) => {
                    self.done(&mut t, started, Err(e));
                    continue;
                }
            };
            for _ in 0..TLS_REQUESTS_PER_CONNECTION {
                if !self.running() {
                    break;
                }
                let started = Instant::now();
                let req = Request::get("/")
                    .header("host", &self.host)
                    .body(Full::new(Bytes::new()))
                    .expect("request");
                let outcome = async {
                    let resp = sender.send_request(req).await.map_err(|e| format!("{e:?}"))?;
                    let status = resp.status();
                    resp.into_body().collect().await.map_err(|e| format!("body: {e}"))?;
                    if status == 200 {
                        Ok(())
                    } else {
                        Err(format!("status {status}"))
                    }
                };
                let outcome = within("no answer within 30 s", outcome).await;
                let failed = outcome.is_err();
                self.done(&mut t, started, outcome);
                if failed || sender.is_closed() {
                    break;
                }
            }
        }
        t
    }

    /// A new connection with `request` written on it.
    async fn open(&self, request: &str) -> Result<TcpStream, String> {
        let mut s = TcpStream::connect(self.addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        s.write_all(request.as_bytes())
            .await
            .map_err(|e| format!("write: {e}"))?;
        Ok(s)
    }

    /// A new connection per request, `Connection: close`, read to the end.
    async fn close(self) -> Tally {
        let mut t = Tally::default();
        let request = format!("GET / HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n", self.host);
        while self.running() {
            let started = Instant::now();
            let outcome = async {
                let mut s = self.open(&request).await?;
                let mut out = Vec::new();
                s.read_to_end(&mut out).await.map_err(|e| format!("read: {e}"))?;
                let head = String::from_utf8_lossy(&out[..out.len().min(64)]).into_owned();
                if head.starts_with("HTTP/1.1 200") {
                    Ok(())
                } else {
                    Err(format!("answer {head:?}"))
                }
            };
            let outcome = within("no answer within 30 s", outcome).await;
            self.done(&mut t, started, outcome);
        }
        t
    }

    /// Upgraded connections (`Upgrade: websocket`): each message sent must come back.
    async fn echo(self) -> Tally {
        let mut t = Tally::default();
        let request = format!(
            "GET /ws HTTP/1.1\r\nHost: {}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
            self.host
        );
        'connections: while self.running() {
            let started = Instant::now();
            let opened = async {
                let mut s = self.open(&request).await?;
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    match s.read(&mut byte).await {
                        Ok(1) => head.push(byte[0]),
                        _ => return Err(format!("upgrade head cut: {:?}", String::from_utf8_lossy(&head))),
                    }
                }
                if head.starts_with(b"HTTP/1.1 101") {
                    Ok(s)
                } else {
                    Err(format!("upgrade answered {:?}", String::from_utf8_lossy(&head)))
                }
            };
            let mut s = match within("upgrade: no answer within 30 s", opened).await {
                Ok(s) => s,
                Err(e) => {
                    self.done(&mut t, started, Err(e));
                    continue;
                }
            };
            for i in 0..ECHOES_PER_CONNECTION {
                if !self.running() {
                    break 'connections;
                }
                let started = Instant::now();
                let message = format!("message {i:08}\n");
                let outcome = async {
                    s.write_all(message.as_bytes())
                        .await
                        .map_err(|e| format!("echo write: {e}"))?;
                    let mut back = vec![0u8; message.len()];
                    s.read_exact(&mut back).await.map_err(|e| format!("echo read: {e}"))?;
                    if back == message.as_bytes() {
                        Ok(())
                    } else {
                        Err("echo garbled".to_string())
                    }
                };
                let outcome = within("echo: no answer within 30 s", outcome).await;
                let failed = outcome.is_err();
                self.done(&mut t, started, outcome);
                if failed {
                    continue 'connections;
                }
            }
            let _ = s.shutdown().await;
        }
        t
    }
}

/// A backend for the mix: GET answers its name, POST reads the whole body and answers its
/// length, an `Upgrade` request gets 101 and then every byte echoed, `/healthz` answers 200
/// or 503 as [`Backend::healthy`] says. [`Backend::kill`] drops every connection at once
/// and closes the port, as a `kill -9` would.
pub struct Backend {
    pub name: String,
    pub addr: SocketAddr,
    tasks: Option<JoinSet<()>>,
    /// What `/healthz` answers: 200 when true, else 503 (requests are served either way).
    pub healthy: Arc<AtomicBool>,
    /// Milliseconds every answer (but `/healthz`) waits first.
    pub delay_ms: Arc<AtomicU64>,
}

#[derive(Clone)]
struct Knobs {
    name: String,
    healthy: Arc<AtomicBool>,
    delay_ms: Arc<AtomicU64>,
}

impl Backend {
    pub async fn start(name: &str) -> Backend {
        Self::start_on(name, "127.0.0.1:0".parse().expect("address")).await
    }

    async fn start_on(name: &str, addr: SocketAddr) -> Backend {
        let knobs = Knobs {
            name: name.to_string(),
            healthy: Arc::new(AtomicBool::new(true)),
            delay_ms: Arc::new(AtomicU64::new(0)),
        };
        Self::serve(addr, knobs).await
    }

    async fn serve(addr: SocketAddr, knobs: Knobs) -> Backend {
        let listener = TcpListener::bind(addr).await.expect("backend bind");
        let addr = listener.local_addr().expect("backend address");
        let mut tasks = JoinSet::new();
        let n = knobs.clone();
        // The connections live in the accept task's own JoinSet: aborting the accept task
        // drops that set, which aborts (and closes) every connection.
        tasks.spawn(async move {
            let mut conns = JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let n = n.clone();
                conns.spawn(async move {
                    let svc = service_fn(move |req| answer(n.clone(), req));
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                        .await;
                });
                while conns.try_join_next().is_some() {}
            }
        });
        Backend {
            name: knobs.name,
            addr,
            tasks: Some(tasks),
            healthy: knobs.healthy,
            delay_ms: knobs.delay_ms,
        }
    }

    /// Every connection dropped, the port closed.
    pub async fn kill(&mut self) {
        if let Some(mut tasks) = self.tasks.take() {
            tasks.abort_all();
            while tasks.join_next().await.is_some() {}
        }
    }

    /// Listening again on the same address (with the same knobs).
    pub async fn restart(&mut self) {
        self.kill().await;
        let knobs = Knobs {
            name: self.name.clone(),
            healthy: self.healthy.clone(),
            delay_ms: self.delay_ms.clone(),
        };
        *self = Self::serve(self.addr, knobs).await;
    }
}

async fn answer(knobs: Knobs, mut req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let name = knobs.name;
    let r = Response::builder().header("x-server", name.as_str());
    if req.uri().path() == "/healthz" {
        let status = if knobs.healthy.load(Relaxed) { 200 } else { 503 };
        return Ok(r.status(status).body(Full::new(Bytes::new())).expect("health"));
    }
    let delay = knobs.delay_ms.load(Relaxed);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    if req.headers().contains_key(http::header::UPGRADE) {
        let upgrade = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            if let Ok(up) = upgrade.await {
                let mut io = TokioIo::new(up);
                let (mut rd, mut wr) = tokio::io::split(&mut io);
                let _ = tokio::io::copy(&mut rd, &mut wr).await;
            }
        });
        return Ok(r
            .status(101)
            .header("connection", "upgrade")
            .header("upgrade", "websocket")
            .body(Full::new(Bytes::new()))
            .expect("101"));
    }
    let len = match req.into_body().collect().await {
        Ok(b) => b.to_bytes().len(),
        Err(_) => 0,
    };
    Ok(r.header("x-body-len", len)
        .body(Full::new(Bytes::from(name)))
        .expect("200"))
}
