//! Test support: veer started in-process on 127.0.0.1:0, fake backends on real sockets, and
//! a keep-alive HTTP client.
#![allow(dead_code)]

pub mod fake_kube;
pub mod pki;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use veer::Veer;

/// A running veer with its config file in a temp dir.
pub struct Proxy {
    pub veer: Veer,
    pub dir: tempfile::TempDir,
    pub path: PathBuf,
}

impl Proxy {
    /// Writes `config` to a fresh temp dir and starts veer on it.
    pub async fn start(config: &str) -> Proxy {
        Self::start_in(tempfile::tempdir().unwrap(), config).await
    }

    /// Starts veer on `config` written into `dir` (which may hold the files it names).
    pub async fn start_in(dir: tempfile::TempDir, config: &str) -> Proxy {
        let path = dir.path().join("veer.toml");
        std::fs::write(&path, config).unwrap();
        let veer = Veer::start(&path)
            .await
            .unwrap_or_else(|e| panic!("veer failed to start: {e}"));
        Proxy { veer, dir, path }
    }

    pub async fn addr(&self, listener: &str) -> SocketAddr {
        self.veer.listener_addr(listener).await.expect("listener bound")
    }

    /// `http://<addr of listener>`
    pub async fn url(&self, listener: &str) -> String {
        format!("http://{}", self.addr(listener).await)
    }
}

/// A fake HTTP backend: answers with its name in `x-server` and the body `name`, counts hits.
#[derive(Clone)]
pub struct FakeBackend {
    pub name: String,
    pub addr: SocketAddr,
    pub hits: Arc<AtomicUsize>,
}

pub type Handler = Arc<dyn Fn(Request<Incoming>) -> futures_like::BoxFuture<Response<Full<Bytes>>> + Send + Sync>;

pub mod futures_like {
    pub type BoxFuture<T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send>>;
}

impl FakeBackend {
    /// A backend that answers 200 with its name.
    pub async fn start(name: &str) -> FakeBackend {
        let n = name.to_string();
        Self::with_handler(name, move |req| {
            let n = n.clone();
            Box::pin(async move { named_response(&n, &req) })
        })
        .await
    }

    /// A backend whose responses come from `handler`.
    pub async fn with_handler(
        name: &str,
        handler: impl Fn(Request<Incoming>) -> futures_like::BoxFuture<Response<Full<Bytes>>> + Send + Sync + 'static,
    ) -> FakeBackend {
        Self::with_handler_on("127.0.0.1:0".parse().unwrap(), name, handler).await
    }

    /// [`FakeBackend::start`] bound to `addr` (another loopback address, a given port).
    pub async fn start_on(addr: SocketAddr, name: &str) -> FakeBackend {
        let n = name.to_string();
        Self::with_handler_on(addr, name, move |req| {
            let n = n.clone();
            Box::pin(async move { named_response(&n, &req) })
        })
        .await
    }

    /// [`FakeBackend::with_handler`] bound to `addr`.
    pub async fn with_handler_on(
        addr: SocketAddr,
        name: &str,
        handler: impl Fn(Request<Incoming>) -> futures_like::BoxFuture<Response<Full<Bytes>>> + Send + Sync + 'static,
    ) -> FakeBackend {
        let listener = TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let handler: Handler = Arc::new(handler);
        let h = hits.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let handler = handler.clone();
                let h = h.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| {
                        h.fetch_add(1, Ordering::Relaxed);
                        let fut = handler(req);
                        async move { Ok::<_, Infallible>(fut.await) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        FakeBackend {
            name: name.to_string(),
            addr,
            hits,
        }
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::Relaxed)
    }
}

/// 200 with `x-server: name`, echoing a few request facts as headers for assertions.
pub fn named_response(name: &str, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let mut b = Response::builder().header("x-server", name);
    for (k, v) in req.headers() {
        b = b.header(format!("x-echo-{}", k.as_str()), v.clone());
    }
    b.header("x-echo-path", req.uri().to_string())
        .body(Full::new(Bytes::from(name.to_string())))
        .unwrap()
}

/// A backend answering whatever status `status` holds at the time, with `x-server: name`.
pub async fn answering(name: &str, status: Arc<std::sync::atomic::AtomicU16>) -> FakeBackend {
    let n = name.to_string();
    FakeBackend::with_handler(name, move |_| {
        let (n, code) = (n.clone(), status.load(Ordering::Relaxed));
        Box::pin(async move {
            Response::builder()
                .status(code)
                .header("x-server", n)
                .body(Full::new(Bytes::new()))
                .unwrap()
        })
    })
    .await
}

/// A config with one http listener `web` routing everything to backend `app` (with
/// `backend_extra` keys) of `servers` (name, address).
pub fn http_config(servers: &[(&str, SocketAddr)], backend_extra: &str) -> String {
    let list: Vec<String> = servers
        .iter()
        .map(|(n, a)| format!("{{ name = \"{n}\", addr = \"{a}\" }}"))
        .collect();
    format!(
        r#"
[[listener]]
name = "web"
bind = "127.0.0.1:0"
protocol = "http"
  [[listener.route]]
  backend = "app"
[[backend]]
name = "app"
{backend_extra}
servers = [ {} ]
"#,
        list.join(", ")
    )
}

/// An address on which nothing listens (bound, never listening, kept for the process's life).
pub async fn dead_addr() -> SocketAddr {
    // Bound but never listening: a connection is refused at once, and no other socket of
    // the test process (a backend or a proxy listener of a test running alongside) can
    // take the port, as it could once a listener bound here were dropped. The socket is
    // kept open for the process's life on purpose.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = socket.local_addr().unwrap();
    std::mem::forget(socket);
    addr
}

pub type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

/// A keep-alive HTTP/1.1 client.
pub fn client() -> HttpClient {
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .build_http()
}

/// The parts of a response tests look at.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Answer {
    pub fn server(&self) -> &str {
        self.headers.get("x-server").and_then(|v| v.to_str().ok()).unwrap_or("")
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// GET `url` with extra headers.
pub async fn get(client: &HttpClient, url: &str, headers: &[(&str, &str)]) -> Result<Answer, String> {
    let mut b = Request::get(url);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    send(client, b.body(Full::new(Bytes::new())).unwrap()).await
}

pub async fn send(client: &HttpClient, req: Request<Full<Bytes>>) -> Result<Answer, String> {
    let resp = client.request(req).await.map_err(|e| format!("{e:?}"))?;
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
    Ok(Answer {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body,
    })
}

/// Counts answers per `x-server` over `n` GETs to `url`; panics on any non-200.
pub async fn tally(client: &HttpClient, url: &str, n: usize) -> std::collections::BTreeMap<String, usize> {
    let mut counts = std::collections::BTreeMap::new();
    for _ in 0..n {
        let a = get(client, url, &[]).await.unwrap();
        assert_eq!(a.status, 200, "unexpected answer {a:?}");
        *counts.entry(a.server().to_string()).or_insert(0) += 1;
    }
    counts
}

/// One line to an admin socket; everything it writes until EOF. Waits (bounded) for the
/// socket to accept, since veer binds it right after its listeners.
pub async fn admin(sock: &std::path::Path, line: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let talk = async {
        // The file appears at bind(2), a moment before listen(2): until then a connect is
        // refused. Retry both.
        let mut s = loop {
            match tokio::net::UnixStream::connect(sock).await {
                Ok(s) => break s,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
                    ) =>
                {
                    tokio::time::sleep(Duration::from_millis(10)).await
                }
                Err(e) => panic!("admin socket {}: {e}", sock.display()),
            }
        };
        s.write_all(format!("{line}\n").as_bytes()).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    };
    tokio::time::timeout(Duration::from_secs(30), talk)
        .await
        .unwrap_or_else(|_| panic!("admin socket {} did not answer {line:?}", sock.display()))
}

/// A `veer run` child process, killed (by PID) when dropped unless it already exited.
pub struct VeerProcess {
    pub child: std::process::Child,
    /// Every "listening listener=<name> addr=<addr>" the process logged.
    pub listeners: std::collections::HashMap<String, SocketAddr>,
    log: Arc<std::sync::Mutex<Vec<String>>>,
}

impl VeerProcess {
    /// Starts `veer run -c <config> <extra…>` and waits until `listeners` are logged.
    pub fn start(config: &std::path::Path, extra: &[&str], listeners: &[&str]) -> VeerProcess {
        Self::start_env(config, extra, listeners, &[])
    }

    /// [`VeerProcess::start`] with extra environment variables.
    pub fn start_env(
        config: &std::path::Path,
        extra: &[&str],
        listeners: &[&str],
        env: &[(&str, &std::ffi::OsStr)],
    ) -> VeerProcess {
        use std::io::BufRead;
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_veer"))
            .args(["run", "-c"])
            .arg(config)
            .args(extra)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = std::io::BufReader::new(child.stderr.take().unwrap());
        let log = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let l = log.clone();
        std::thread::spawn(move || {
            for line in stderr.lines().map_while(Result::ok) {
                if let (Some(name), Some(addr)) = (
                    line.split("listener=").nth(1).and_then(|s| s.split_whitespace().next()),
                    line.split("addr=").nth(1).and_then(|s| s.split_whitespace().next()),
                ) {
                    if line.contains("listening") {
                        let _ = tx.send((name.to_string(), addr.parse::<SocketAddr>().unwrap()));
                    }
                }
                l.lock().unwrap().push(line);
            }
        });
        let mut found = std::collections::HashMap::new();
        while listeners.iter().any(|n| !found.contains_key(*n)) {
            match rx.recv_timeout(Duration::from_secs(30)) {
                Ok((name, addr)) => {
                    found.insert(name, addr);
                }
                Err(_) => panic!(
                    "veer never logged its listeners; log:\n{}",
                    log.lock().unwrap().join("\n")
                ),
            }
        }
        VeerProcess {
            child,
            listeners: found,
            log,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal by name ("TERM", "INT", "HUP") with kill(1).
    pub fn signal(&self, name: &str) {
        let ok = std::process::Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .unwrap();
        assert!(ok.success());
    }

    /// Waits (bounded) for the process to exit; returns its exit code.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let deadline = std::time::Instant::now() + limit;
        while std::time::Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("veer did not exit; log:\n{}", self.log());
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Waits (bounded) until a log line contains `text`; returns that line.
    pub fn wait_for_log(&self, text: &str) -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(line) = self.log.lock().unwrap().iter().find(|l| l.contains(text)) {
                return line.clone();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no log line with {text:?}; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGKILL, and reap.
    pub fn kill9(&mut self) {
        use std::os::unix::process::ExitStatusExt;
        self.child.kill().unwrap();
        let status = self.child.wait().unwrap();
        assert_eq!(status.signal(), Some(9), "{status:?}");
    }
}

impl Drop for VeerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends raw bytes on a new connection and reads until the peer closes (bounded): for
/// requests no well-behaved client library would send.
pub async fn raw_exchange(addr: SocketAddr, bytes: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let talk = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(bytes).await.unwrap();
        let mut out = Vec::new();
        // A reset after the answer (unread request bytes) still leaves the answer read.
        let mut buf = [0u8; 16 * 1024];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    };
    tokio::time::timeout(Duration::from_secs(30), talk)
        .await
        .expect("the raw exchange did not end")
}

/// The status code of a raw HTTP/1.1 response ("HTTP/1.1 400 …" → 400); 0 for none.
pub fn raw_status(response: &str) -> u16 {
    response
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// A backend that reads the whole request body before answering 200 with its name (so a
/// broken request body fails the exchange, as with most real servers).
pub async fn reading_backend(name: &str) -> FakeBackend {
    let n = name.to_string();
    FakeBackend::with_handler(name, move |req| {
        let n = n.clone();
        Box::pin(async move {
            let (parts, body) = req.into_parts();
            let got = body.collect().await.map(|b| b.to_bytes().len()).unwrap_or(0);
            let echo = Request::from_parts(parts, ());
            let mut resp = Response::builder()
                .header("x-server", n.as_str())
                .header("x-body-len", got);
            for (k, v) in echo.headers() {
                resp = resp.header(format!("x-echo-{}", k.as_str()), v.clone());
            }
            resp.body(Full::new(Bytes::from(n))).unwrap()
        })
    })
    .await
}

/// A `veer demo` child on free ports with its admin socket (and editable config) at
/// `socket`'s directory; stopped by PID when dropped.
pub struct Demo {
    child: std::process::Child,
    /// `ip:port` of the proxy's HTTP listener, as the demo prints it.
    pub web: String,
    /// `ip:port` of the admin HTTP listener (the status page).
    pub admin: String,
}

impl Demo {
    pub fn start(socket: &std::path::Path) -> Demo {
        use std::io::BufRead;
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_veer"))
            .args([
                "demo",
                "--listen",
                "127.0.0.1:0",
                "--admin-http",
                "127.0.0.1:0",
                "--socket",
            ])
            .arg(socket)
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let (mut admin, mut web) = (None, None);
        while admin.is_none() || web.is_none() {
            let line = rx
                .recv_timeout(Duration::from_secs(60))
                .expect("the demo prints its addresses");
            if let Some(url) = line.split("live): http://").nth(1) {
                admin = Some(url.trim().trim_end_matches('/').to_string());
            }
            if let Some(rest) = line.trim().strip_prefix("for i in $(seq 10); do curl -s http://") {
                web = rest.split('/').next().map(str::to_string);
            }
        }
        Demo {
            child,
            web: web.unwrap_or_default(),
            admin: admin.unwrap_or_default(),
        }
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

/// The lines of the log file `log` once it has at least `n` (waits a bounded while: lines
/// are written off the data path).
pub async fn log_lines(log: &std::path::Path, n: usize) -> Vec<String> {
    let mut lines = Vec::new();
    for _ in 0..500 {
        lines = std::fs::read_to_string(log)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect();
        if lines.len() >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    lines
}
