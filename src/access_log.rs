//! The access log: one line per request (JSON, Apache "combined" or HAProxy's `httplog`),
//! written to stdout, a file or syslog (RFC 5424 over UDP or a unix socket) by a dedicated
//! thread. The data path never waits for it: lines go through a bounded queue, and when the
//! sink stalls (a full disk, a pipe nobody reads) new lines are dropped and counted
//! (`veer_access_log_dropped_total`) rather than slowing traffic down. Knows the error type
//! (for termination states) and nothing else of veer.

use std::io::{self, BufWriter, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::config::{AccessLogSpec, LogFormat, LogSink};
use crate::error::{ProxyError, Termination};

pub struct AccessLog {
    tx: SyncSender<String>,
    format: LogFormat,
    /// Lines dropped: queue full, or the syslog socket refused them.
    dropped: Arc<AtomicU64>,
    /// RFC 5424 header fields: `<PRI>1 ` and ` HOSTNAME veer PID - - `.
    syslog: Option<(String, String)>,
    /// `veer[PID]: `, HAProxy's first field, before each `haproxy` line in a file.
    tag: String,
}

/// HAProxy's timers of one request (its log's `%TR/%Tw/%Tc/%Tr`; `%Ta` is the duration).
/// `None` for a phase the request never reached (HAProxy's `-1`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Timers {
    /// Receiving the request head, when it took more than one read (`TR`).
    pub request: Duration,
    /// Waiting in the backend's queue (`Tw`).
    pub queue: Option<Duration>,
    /// Connecting to the server (`Tc`): zero for a kept-alive connection.
    pub connect: Option<Duration>,
    /// From the request sent to the response head (`Tr`).
    pub response: Option<Duration>,
}

impl Timers {
    /// A proxied request's: its queue wait, its connect time (`None`: a kept-alive
    /// connection, 0), and the wait for the response head. `request` is the head's own.
    pub fn proxied(queued: Duration, connected: Option<Duration>, response: Duration) -> Timers {
        Timers {
            request: Duration::ZERO,
            queue: Some(queued),
            connect: Some(connected.unwrap_or_default()),
            response: Some(response),
        }
    }
}

/// Concurrent connections and requests as HAProxy logs them (`%ac/%fc/%bc/%sc/%rc
/// %sq/%bq`): the connections include the request's own; the backend's and server's
/// requests are the others still active (HAProxy counts them when it logs, after the
/// request is done).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Client connections open in the process, and on the listener.
    pub process: u64,
    pub listener: u64,
    /// Requests active on the backend and on the server.
    pub backend: u64,
    pub server: u64,
    /// Attempts on other servers before this one.
    pub retries: u64,
    /// Requests waiting in the backend's queue.
    pub backend_queue: u64,
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
    /// The response head's bytes, where known (HAProxy's `%B` counts them too).
    pub head_bytes: u64,
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
    pub timers: Timers,
    /// How the exchange ended: HAProxy's termination state.
    pub ended: Termination,
    /// HAProxy's persistence flags, the last two characters of its `----`: the client's
    /// sticky cookie (`V` routed by it, `N` none that named a server, `-` not sticky) and
    /// ours (`I` inserted, `N` not, `-` not sticky).
    pub persist: [u8; 2],
    pub counts: Counts,
}

impl AccessLog {
    /// Opens the sink (stdout, a file appended, or a syslog socket) and starts its writer
    /// thread.
    pub fn open(spec: &AccessLogSpec) -> io::Result<Arc<AccessLog>> {
        let (tx, rx) = sync_channel::<String>(spec.buffer);
        let dropped = Arc::new(AtomicU64::new(0));
        let pid = std::process::id();
        let mut syslog = None;
        let writer: Box<dyn FnOnce(std::sync::mpsc::Receiver<String>) + Send> = match &spec.sink {
            LogSink::Stdout => Box::new(move |rx| write_lines(io::stdout(), &rx)),
            LogSink::File(path) => {
                let file = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
                Box::new(move |rx| write_lines(file, &rx))
            }
            LogSink::Syslog { target, facility } => {
                let socket = Datagrams::connect(target)?;
                let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
                let host = host.trim();
                // Severity 6, informational, as HAProxy's request logs.
                syslog = Some((
                    format!("<{}>1 ", facility * 8 + 6),
                    format!(" {} veer {pid} - - ", if host.is_empty() { "-" } else { host }),
                ));
                let dropped = dropped.clone();
                Box::new(move |rx| {
                    // One datagram per line. A collector that is not there (refused, no
                    // socket file) loses lines, counted; it never blocks the data path.
                    while let Ok(line) = rx.recv() {
                        if socket.send(line.as_bytes()).is_err() {
                            dropped.fetch_add(1, Relaxed);
                        }
                    }
                })
            }
        };
        std::thread::Builder::new()
            .name("veer-access-log".into())
            .spawn(move || writer(rx))?;
        Ok(Arc::new(AccessLog {
            tx,
            format: spec.format,
            dropped,
            syslog,
            tag: format!("veer[{pid}]: "),
        }))
    }

    /// Lines dropped: the sink could not keep up, or a syslog collector refused them.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Relaxed)
    }

    /// Queues the line for `e`; never blocks.
    pub fn log(&self, e: &Entry<'_>) {
        let message = match self.format {
            LogFormat::Json => json(e),
            LogFormat::Combined => combined(e),
            LogFormat::Haproxy => haproxy(e),
        };
        let line = match &self.syslog {
            // RFC 5424: `<134>1 2026-12-07T11:20:00.123Z host veer 1234 - - message`.
            Some((pri, rest)) => format!("{pri}{}{rest}{message}", humantime::format_rfc3339_millis(e.time)),
            // In a file each `haproxy` line starts as HAProxy's own does after syslog,
            // `veer[PID]: ` (its documented first field, which its parsers expect).
            None if self.format == LogFormat::Haproxy => format!("{}{message}\n", self.tag),
            None => message + "\n",
        };
        match self.tx.try_send(line) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Relaxed);
            }
        }
    }
}

/// Writes queued lines to `sink`, flushing once the queue is empty.
fn write_lines(sink: impl Write, rx: &std::sync::mpsc::Receiver<String>) {
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
}

/// A connected datagram socket to a syslog collector: UDP (`ip:port`) or a unix socket
/// (`/dev/log`).
enum Datagrams {
    Udp(std::net::UdpSocket),
    Unix(std::os::unix::net::UnixDatagram),
}

impl Datagrams {
    fn connect(target: &crate::config::SyslogTarget) -> io::Result<Datagrams> {
        use crate::config::SyslogTarget;
        Ok(match target {
            SyslogTarget::Udp(addr) => {
                let local: SocketAddr = if addr.is_ipv4() {
                    ([0, 0, 0, 0], 0).into()
                } else {
                    (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
                };
                let socket = std::net::UdpSocket::bind(local)?;
                socket.connect(addr)?;
                Datagrams::Udp(socket)
            }
            SyslogTarget::Unix(path) => {
                let socket = std::os::unix::net::UnixDatagram::unbound()?;
                // Not connected yet is fine: a collector started later is found on send.
                let _ = socket.connect(path);
                Datagrams::Unix(socket)
            }
        })
    }

    fn send(&self, bytes: &[u8]) -> io::Result<usize> {
        match self {
            Datagrams::Udp(s) => s.send(bytes),
            Datagrams::Unix(s) => s.send(bytes),
        }
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn json(e: &Entry<'_>) -> String {
    serde_json::json!({
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
        "termination": e.ended.as_str(),
        "request_ms": ms(e.timers.request),
        "queue_ms": e.timers.queue.map(ms),
        "connect_ms": e.timers.connect.map(ms),
        "response_ms": e.timers.response.map(ms),
        "retries": e.counts.retries,
        "conns_process": e.counts.process,
        "conns_listener": e.counts.listener,
        "active_backend": e.counts.backend,
        "active_server": e.counts.server,
        "queue_backend": e.counts.backend_queue,
    })
    .to_string()
}

/// Apache/NCSA combined, exactly (`%h %l %u %t "%r" %>s %b "%{Referer}i" "%{User-agent}i"`),
/// so GoAccess, awstats and every combined-log regex read it; veer's own fields are in the
/// JSON format. Quotes and backslashes inside quoted fields are escaped as Apache does.
fn combined(e: &Entry<'_>) -> String {
    let bytes = if e.bytes == 0 {
        "-".to_string()
    } else {
        e.bytes.to_string()
    };
    format!(
        "{} - - [{}] \"{} {} {}\" {} {bytes} \"{}\" \"{}\"",
        e.client.ip(),
        clf_time(e.time, false),
        e.method,
        quoted(e.path),
        e.protocol,
        e.status,
        quoted(e.referer),
        quoted(e.user_agent),
    )
}

/// A value inside a quoted field: `-` when empty, quotes and backslashes escaped as Apache
/// does.
fn quoted(v: &str) -> String {
    if v.is_empty() {
        "-".to_string()
    } else {
        v.replace('\\', "\\\\").replace('"', "\\\"")
    }
}

/// HAProxy's `httplog` format (its documented default, `option httplog`):
/// `%ci:%cp [%tr] %ft %b/%s %TR/%Tw/%Tc/%Tr/%Ta %ST %B %CC %CS %tsc %ac/%fc/%bc/%sc/%rc
/// %sq/%bq %{+Q}r`. No cookie is captured (`- -`); `~` after the listener marks TLS; a
/// request no server took names the listener as backend and `<NOSRV>`; `-1` is a phase
/// not reached. Times are UTC; `%B` counts the head only where veer wrote it itself (the
/// HTTP/1 path), else the body.
fn haproxy(e: &Entry<'_>) -> String {
    let ms = |d: Option<Duration>| d.map_or(-1, |d| d.as_millis() as i64);
    let (backend, server) = match (e.backend, e.server) {
        ("-", _) => (e.listener, "<NOSRV>"),
        (b, "-") => (b, "<NOSRV>"),
        (b, s) => (b, s),
    };
    let c = &e.counts;
    format!(
        "{}:{} [{}] {}{} {backend}/{server} {}/{}/{}/{}/{} {} {} - - {}{}{} {}/{}/{}/{}/{} 0/{} \"{} {} {}\"",
        e.client.ip(),
        e.client.port(),
        clf_time(e.time, true),
        e.listener,
        if e.tls.is_some() { "~" } else { "" },
        e.timers.request.as_millis(),
        ms(e.timers.queue),
        ms(e.timers.connect),
        ms(e.timers.response),
        e.duration.as_millis(),
        e.status,
        e.bytes + e.head_bytes,
        e.ended.as_str(),
        e.persist[0] as char,
        e.persist[1] as char,
        c.process,
        c.listener,
        c.backend,
        c.server,
        c.retries,
        c.backend_queue,
        e.method,
        quoted(e.path),
        e.protocol,
    )
}

/// Common Log Format time, in UTC: `22/Nov/2026:19:32:43 +0000`; HAProxy's form with
/// `millis`: `22/Nov/2026:19:32:43.123`.
fn clf_time(t: SystemTime, millis: bool) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    // 2026-11-22T19:32:43.123Z
    let iso = humantime::format_rfc3339_millis(t).to_string();
    let month = iso
        .get(5..7)
        .and_then(|m| m.parse::<usize>().ok())
        .and_then(|m| MONTHS.get(m.wrapping_sub(1)))
        .unwrap_or(&"Jan");
    let day = iso.get(8..10).unwrap_or("01");
    let year = iso.get(..4).unwrap_or("1970");
    if millis {
        format!("{day}/{month}/{year}:{}", iso.get(11..23).unwrap_or("00:00:00.000"))
    } else {
        format!("{day}/{month}/{year}:{} +0000", iso.get(11..19).unwrap_or("00:00:00"))
    }
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
    /// `TR`: how long the head took to arrive.
    received: Duration,
    /// Client connections open in the process and on the listener as the request came.
    conns: (u64, u64),
}

/// Where a proxied request went, for its access-log line.
pub struct Upstream {
    pub route: Arc<str>,
    pub backend: Arc<str>,
    pub group: Arc<str>,
    pub server: Arc<str>,
    /// Queue, connect and response-head times (`request` is the head's own).
    pub timers: Timers,
    /// Backend, server, retry and queue counts (the connection counts are the head's).
    pub counts: Counts,
    /// See [`Entry::persist`].
    pub persist: [u8; 2],
}

impl LogHead {
    /// Captures the request line; `host` as the client sent it.
    pub fn new<B>(
        log: &Arc<AccessLog>,
        client: SocketAddr,
        listener: &Arc<String>,
        req: &http::Request<B>,
        host: &str,
        request_id: &str,
    ) -> Self {
        LogHead {
            log: log.clone(),
            time: SystemTime::now(),
            client,
            method: req.method().clone(),
            host: host.to_string(),
            path: req.uri().path_and_query().map_or("/", |p| p.as_str()).to_string(),
            request_id: request_id.to_string(),
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
            received: Duration::ZERO,
            conns: (0, 0),
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
            received: Duration::ZERO,
            conns: (0, 0),
        }
    }

    /// How long the head took to arrive (`TR`), and the client connections open in the
    /// process and on the listener.
    pub fn with_arrival(mut self, received: Duration, process: usize, listener: usize) -> Self {
        self.received = received;
        self.conns = (process as u64, listener as u64);
        self
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

    /// veer answered the request itself with an error: `(head, body)` bytes; `routed`: the
    /// route and backend it had chosen, if any.
    pub fn refused(&self, e: &ProxyError, (head, body): (u64, u64), duration: Duration, routed: Option<(&str, &str)>) {
        self.write(
            e.status().as_u16(),
            (head, body),
            duration,
            None,
            Some(e),
            routed,
            Termination::COMPLETE,
        );
    }

    /// veer answered the request itself, not with an error (a redirect).
    pub fn answered(&self, status: u16, duration: Duration) {
        self.write(status, (0, 0), duration, None, None, None, Termination::COMPLETE);
    }

    #[allow(clippy::too_many_arguments)]
    fn write(
        &self,
        status: u16,
        (head_bytes, bytes): (u64, u64),
        duration: Duration,
        to: Option<&Upstream>,
        error: Option<&ProxyError>,
        routed: Option<(&str, &str)>,
        ended: Termination,
    ) {
        let (process, listener) = self.conns;
        let mut timers = to.map(|u| u.timers).unwrap_or_default();
        timers.request = self.received;
        let mut counts = to.map(|u| u.counts).unwrap_or_default();
        counts.process = process;
        counts.listener = listener;
        self.log.log(&Entry {
            time: self.time,
            client: self.client,
            method: self.method.as_str(),
            host: &self.host,
            path: &self.path,
            status,
            bytes,
            head_bytes,
            duration,
            upstream_duration: timers.response,
            listener: &self.listener,
            route: to.map(|u| &*u.route).or(routed.map(|r| r.0)).unwrap_or("-"),
            backend: to.map(|u| &*u.backend).or(routed.map(|r| r.1)).unwrap_or("-"),
            group: to.map_or("-", |u| &u.group),
            server: to.map_or("-", |u| &u.server),
            veer_error: error.map(|e| e.reason()),
            request_id: &self.request_id,
            trace_id: &self.trace_id,
            tls: self.tls.as_deref(),
            protocol: self.protocol,
            referer: &self.referer,
            user_agent: &self.user_agent,
            timers,
            ended: error.map_or(ended, |e| e.termination()),
            persist: to.map_or(*b"--", |u| u.persist),
            counts,
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
    /// The response head's bytes as written to the client, where known.
    pub head_sent: u64,
}

impl PendingLog {
    /// The response ended as `ended` says, after `bytes` of its body.
    pub fn finish(self, bytes: u64, duration: Duration, ended: Termination) {
        self.head.write(
            self.status,
            (self.head_sent, bytes),
            duration,
            Some(&self.upstream),
            None,
            None,
            ended,
        );
    }
}
