//! The access log: one line per request (JSON or Apache "combined"), written by a dedicated
//! thread. The data path never waits for it: lines go through a bounded queue, and when the
//! sink stalls (a full disk, a pipe nobody reads) new lines are dropped and counted
//! (`veer_access_log_dropped_total`) rather than slowing traffic down.

use std::io::{self, BufWriter, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::config::{AccessLogSpec, LogFormat};

pub struct AccessLog {
    tx: SyncSender<String>,
    format: LogFormat,
    dropped: AtomicU64,
}

/// One finished request.
pub struct Entry<'a> {
    pub time: SystemTime,
    pub client: SocketAddr,
    pub method: &'a str,
    pub host: &'a str,
    pub path: &'a str,
    pub status: u16,
    /// Response body bytes sent to the client.
    pub bytes: u64,
    pub duration: Duration,
    pub upstream_duration: Option<Duration>,
    pub listener: &'a str,
    pub route: &'a str,
    pub backend: &'a str,
    pub group: &'a str,
    pub server: &'a str,
    pub veer_error: Option<&'a str>,
    pub request_id: &'a str,
    /// The W3C trace id sent upstream.
    pub trace_id: &'a str,
    pub tls: Option<&'a TlsFacts>,
    /// `HTTP/1.0`, `HTTP/1.1`, `HTTP/2.0`: what the client spoke.
    pub protocol: &'a str,
    pub referer: &'a str,
    pub user_agent: &'a str,
}

impl AccessLog {
    /// Opens the sink (stdout or a file, appended) and starts its writer thread.
    pub fn open(spec: &AccessLogSpec) -> io::Result<Arc<AccessLog>> {
        let sink: Box<dyn Write + Send> = match &spec.path {
            None => Box::new(io::stdout()),
            Some(path) => Box::new(std::fs::OpenOptions::new().create(true).append(true).open(path)?),
        };
        let (tx, rx) = sync_channel::<String>(spec.buffer);
        std::thread::Builder::new()
            .name("veer-access-log".into())
            .spawn(move || {
                let mut out = BufWriter::new(sink);
                while let Ok(line) = rx.recv() {
                    let mut ok = out.write_all(line.as_bytes()).is_ok();
                    // Write whatever is already queued, then flush once.
                    while let Ok(line) = rx.try_recv() {
                        ok &= out.write_all(line.as_bytes()).is_ok();
                    }
                    if !ok || out.flush().is_err() {
                        // A broken sink: keep draining so senders never block.
                        continue;
                    }
                }
            })?;
        Ok(Arc::new(AccessLog {
            tx,
            format: spec.format,
            dropped: AtomicU64::new(0),
        }))
    }

    /// Lines dropped because the sink could not keep up.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Relaxed)
    }

    /// Queues the line for `e`; never blocks.
    pub fn log(&self, e: &Entry<'_>) {
        let line = match self.format {
            LogFormat::Json => json(e),
            LogFormat::Combined => combined(e),
        };
        match self.tx.try_send(line) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Relaxed);
            }
        }
    }
}

fn json(e: &Entry<'_>) -> String {
    let mut line = serde_json::json!({
        "time": humantime::format_rfc3339_millis(e.time).to_string(),
        "client": e.client.to_string(),
        "method": e.method,
        "host": e.host,
        "path": e.path,
        "status": e.status,
        "bytes": e.bytes,
        "duration_ms": e.duration.as_secs_f64() * 1000.0,
        "upstream_duration_ms": e.upstream_duration.map(|d| d.as_secs_f64() * 1000.0),
        "listener": e.listener,
        "route": e.route,
        "backend": e.backend,
        "group": e.group,
        "server": e.server,
        "veer_error": e.veer_error,
        "request_id": e.request_id,
        "trace_id": e.trace_id,
        "tls_version": e.tls.map(|t| t.version),
        "tls_cipher": e.tls.map(|t| t.cipher),
        "sni": e.tls.and_then(|t| t.sni.as_deref()),
        "alpn": e.tls.map(|t| t.alpn),
        "protocol": e.protocol,
        "referer": e.referer,
        "user_agent": e.user_agent,
    })
    .to_string();
    line.push('\n');
    line
}

/// Apache/NCSA combined, exactly (`%h %l %u %t "%r" %>s %b "%{Referer}i" "%{User-agent}i"`),
/// so GoAccess, awstats and every combined-log regex read it; veer's own fields are in the
/// JSON format. Quotes and backslashes inside quoted fields are escaped as Apache does.
fn combined(e: &Entry<'_>) -> String {
    let quoted = |v: &str| {
        if v.is_empty() {
            "-".to_string()
        } else {
            v.replace('\\', "\\\\").replace('"', "\\\"")
        }
    };
    let bytes = if e.bytes == 0 {
        "-".to_string()
    } else {
        e.bytes.to_string()
    };
    format!(
        "{} - - [{}] \"{} {} {}\" {} {bytes} \"{}\" \"{}\"\n",
        e.client.ip(),
        clf_time(e.time),
        e.method,
        quoted(e.path),
        e.protocol,
        e.status,
        quoted(e.referer),
        quoted(e.user_agent),
    )
}

/// Common Log Format time, in UTC: `22/Nov/2026:19:32:43 +0000`.
fn clf_time(t: SystemTime) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    // 2026-11-22T19:32:43Z
    let iso = humantime::format_rfc3339_seconds(t).to_string();
    let month = iso
        .get(5..7)
        .and_then(|m| m.parse::<usize>().ok())
        .and_then(|m| MONTHS.get(m.wrapping_sub(1)))
        .unwrap_or(&"Jan");
    format!(
        "{}/{month}/{}:{} +0000",
        iso.get(8..10).unwrap_or("01"),
        iso.get(..4).unwrap_or("1970"),
        iso.get(11..19).unwrap_or("00:00:00")
    )
}

/// What a TLS client connection negotiated, for its requests' log lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFacts {
    /// "TLSv1.2", "TLSv1.3".
    pub version: &'static str,
    /// IANA name, e.g. "TLS13_AES_128_GCM_SHA256".
    pub cipher: &'static str,
    /// The server name the client asked for.
    pub sni: Option<Box<str>>,
    /// "h2", "http/1.1" or "none".
    pub alpn: &'static str,
}

// === request lines ===

/// What the access log needs from the request, captured before it is forwarded.
pub struct LogHead {
    log: Arc<AccessLog>,
    time: SystemTime,
    client: SocketAddr,
    method: http::Method,
    host: String,
    path: String,
    request_id: String,
    trace_id: String,
    listener: Arc<String>,
    tls: Option<Arc<TlsFacts>>,
    protocol: &'static str,
    referer: String,
    user_agent: String,
}

/// Where a proxied request went, for its access-log line.
pub struct Upstream {
    pub route: Arc<str>,
    pub backend: Arc<str>,
    pub group: Arc<str>,
    pub server: Arc<str>,
    pub upstream_duration: Duration,
}

impl LogHead {
    /// Captures the request line; `host` as the client sent it.
    pub fn new<B>(
        log: &Arc<AccessLog>,
        client: SocketAddr,
        listener: &Arc<String>,
        req: &http::Request<B>,
        host: &str,
        request_id: &http::HeaderValue,
    ) -> Self {
        LogHead {
            log: log.clone(),
            time: SystemTime::now(),
            client,
            method: req.method().clone(),
            host: host.to_string(),
            path: req.uri().path_and_query().map_or("/", |p| p.as_str()).to_string(),
            request_id: request_id.to_str().unwrap_or("-").to_string(),
            trace_id: "-".to_string(),
            listener: listener.clone(),
            tls: None,
            protocol: match req.version() {
                http::Version::HTTP_10 => "HTTP/1.0",
                http::Version::HTTP_2 => "HTTP/2.0",
                http::Version::HTTP_3 => "HTTP/3.0",
                _ => "HTTP/1.1",
            },
            referer: text(req.headers().get(http::header::REFERER).map(|v| v.as_bytes())),
            user_agent: text(req.headers().get(http::header::USER_AGENT).map(|v| v.as_bytes())),
        }
    }

    /// Captures a request line from its raw parts (the HTTP/1 engine's parsed head).
    pub fn raw(
        log: &Arc<AccessLog>,
        client: SocketAddr,
        listener: &Arc<String>,
        method: &str,
        host: &str,
        path: &str,
        request_id: &str,
    ) -> Self {
        LogHead {
            log: log.clone(),
            time: SystemTime::now(),
            client,
            method: http::Method::from_bytes(method.as_bytes()).unwrap_or(http::Method::GET),
            host: host.to_string(),
            path: path.to_string(),
            request_id: request_id.to_string(),
            trace_id: "-".to_string(),
            listener: listener.clone(),
            tls: None,
            protocol: "HTTP/1.1",
            referer: String::new(),
            user_agent: String::new(),
        }
    }

    /// What the HTTP/1 client said besides the request line: its version and the
    /// `Referer` and `User-Agent` the combined format logs.
    pub fn with_client(mut self, http10: bool, referer: Option<&[u8]>, user_agent: Option<&[u8]>) -> Self {
        self.protocol = if http10 { "HTTP/1.0" } else { "HTTP/1.1" };
        self.referer = text(referer);
        self.user_agent = text(user_agent);
        self
    }

    /// The trace id the request went upstream with.
    pub fn with_trace(mut self, traceparent: &[u8]) -> Self {
        if let Some(id) = traceparent.get(3..35).and_then(|id| std::str::from_utf8(id).ok()) {
            id.clone_into(&mut self.trace_id);
        }
        self
    }

    /// The TLS facts of the request's connection.
    pub fn with_tls(mut self, tls: Option<&Arc<TlsFacts>>) -> Self {
        self.tls = tls.cloned();
        self
    }

    pub fn log(
        &self,
        status: u16,
        bytes: u64,
        duration: Duration,
        to: Option<&Upstream>,
        error: Option<&str>,
        route: Option<&str>,
    ) {
        self.log.log(&Entry {
            time: self.time,
            client: self.client,
            method: self.method.as_str(),
            host: &self.host,
            path: &self.path,
            status,
            bytes,
            duration,
            upstream_duration: to.map(|u| u.upstream_duration),
            listener: &self.listener,
            route: to.map(|u| &*u.route).or(route).unwrap_or("-"),
            backend: to.map_or("-", |u| &u.backend),
            group: to.map_or("-", |u| &u.group),
            server: to.map_or("-", |u| &u.server),
            veer_error: error,
            request_id: &self.request_id,
            trace_id: &self.trace_id,
            tls: self.tls.as_deref(),
            protocol: self.protocol,
            referer: &self.referer,
            user_agent: &self.user_agent,
        });
    }
}

/// A header value for the log: lossy UTF-8, control characters replaced (a log line is
/// one line whatever the client sends).
fn text(v: Option<&[u8]>) -> String {
    v.map(|v| String::from_utf8_lossy(v).replace(|c: char| c.is_control(), "?"))
        .unwrap_or_default()
}

/// A proxied request's access-log line, completed when its response body ends.
pub struct PendingLog {
    pub head: Arc<LogHead>,
    pub status: u16,
    pub upstream: Upstream,
}

impl PendingLog {
    pub fn finish(self, bytes: u64, duration: Duration) {
        self.head
            .log(self.status, bytes, duration, Some(&self.upstream), None, None);
    }
}
