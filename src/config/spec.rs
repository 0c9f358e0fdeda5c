//! The validated, typed configuration: what a snapshot is built from. Every value here has
//! passed `validate`; defaults are filled in, so consumers never re-check or re-default.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub use super::model::{AdminState, Balance, LogFormat, Protocol, SameSite};
pub use super::tls::{CertInfo, Fingerprint, LoadedCert, ServerTlsSpec, TlsVersion, UpstreamTlsSpec};

/// Backends without `groups` get one group of this name.
pub const DEFAULT_GROUP: &str = "default";
pub const DEFAULT_GROUP_WEIGHT: u32 = 100;
pub const DEFAULT_BACKLOG: u32 = 1024;

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Spec {
    pub admin: AdminSpec,
    pub runtime: RuntimeSpec,
    pub metrics: MetricsSpec,
    pub access_log: Option<AccessLogSpec>,
    pub listeners: Vec<ListenerSpec>,
    pub backends: Vec<BackendSpec>,
    pub notify: Vec<NotifySpec>,
    /// XXH3 of the file's bytes: identifies the running config.
    pub hash: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AdminSpec {
    pub socket: Option<PathBuf>,
    /// Permission bits of the socket file; default 0o600.
    pub socket_mode: u32,
    pub socket_group: Option<String>,
    pub http: Option<SocketAddr>,
    pub token_file: Option<PathBuf>,
    pub state_file: Option<PathBuf>,
    /// The read-only probe listener: `/live`, `/ready`, `/metrics`, no commands.
    pub probe: Option<SocketAddr>,
    /// Idle admin socket sessions (not subscribed) are closed after this long; also the
    /// admin HTTP listeners' header timeout (HAProxy's `stats timeout`).
    pub session_timeout: Duration,
}

impl Default for AdminSpec {
    fn default() -> Self {
        AdminSpec {
            socket: None,
            socket_mode: 0o600,
            socket_group: None,
            http: None,
            token_file: None,
            state_file: None,
            probe: None,
            session_timeout: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct RuntimeSpec {
    /// Worker threads; `None` = all cores. `TOKIO_WORKER_THREADS` wins over both.
    pub workers: Option<usize>,
    /// listen(2) backlog for every listener.
    pub backlog: u32,
    /// After SIGTERM, listeners keep accepting this long (so load balancers and Kubernetes
    /// endpoints can stop sending) before they close.
    pub accept_grace: Duration,
    /// After SIGTERM, in-flight work gets this long to finish before it is cut.
    pub shutdown_timeout: Duration,
    /// A client must send a request's complete headers within this long, from connecting
    /// or from the end of its previous request (HAProxy's `timeout http-request` and
    /// `timeout http-keep-alive`): slow-loris clients and idle keep-alives are closed.
    pub header_timeout: Duration,
    /// A connection with nothing in flight is closed after this long: an HTTP/2 connection
    /// with no open stream gets GOAWAY, a TCP connection or upgraded tunnel that carried no
    /// byte either way is closed. Listeners may override it.
    pub idle_timeout: Duration,
    /// The longest wait for the next bytes of a request body (HAProxy's `timeout client`
    /// while a body is uploaded): then 408 if no response has started, else the
    /// connection is cut.
    pub body_timeout: Duration,
    /// Longest request head accepted (431 beyond) and longest response head (502 beyond),
    /// in bytes (HAProxy's `tune.bufsize` bounds the same, Envoy's
    /// `max_request_headers_kb`).
    pub max_header_size: usize,
    /// Most header fields in one request head (431 beyond) or response head (502 beyond)
    /// (HAProxy's `tune.http.maxhdr`, Envoy's `max_headers_count`).
    pub max_headers: usize,
    /// A hosts(5)-format file read (again at every lookup) before the system resolver.
    pub hosts_file: Option<PathBuf>,
    /// The zone veer runs in.
    pub zone: Option<String>,
    /// Inside each group, prefer servers of `zone` while it holds its share of the group's
    /// healthy capacity (Envoy's zone-aware routing); off by default.
    pub zone_aware: bool,
}

pub const DEFAULT_MAX_HEADER_SIZE: usize = 64 * 1024;
/// Upper bound for `max_header_size`: a head is held whole in memory while it is parsed.
pub const MAX_HEADER_SIZE_LIMIT: usize = 1024 * 1024;
pub const DEFAULT_MAX_HEADERS: usize = 100;
/// Upper bound for `max_headers`: the parser's field slots live on the stack.
pub const MAX_HEADERS_LIMIT: usize = 256;

impl Default for RuntimeSpec {
    fn default() -> Self {
        RuntimeSpec {
            workers: None,
            backlog: DEFAULT_BACKLOG,
            accept_grace: Duration::ZERO,
            shutdown_timeout: Duration::from_secs(30),
            header_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(300),
            body_timeout: Duration::from_secs(60),
            max_header_size: DEFAULT_MAX_HEADER_SIZE,
            max_headers: DEFAULT_MAX_HEADERS,
            hosts_file: None,
            zone: None,
            zone_aware: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct MetricsSpec {
    /// Histogram bucket upper bounds, in seconds.
    pub buckets: Vec<f64>,
    /// Beyond this many servers in a backend, per-server series fold into `server="other"`.
    pub max_servers_per_backend: usize,
}

/// 100 µs … 10 s: a proxy's latencies.
pub const DEFAULT_BUCKETS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

impl Default for MetricsSpec {
    fn default() -> Self {
        MetricsSpec {
            buckets: DEFAULT_BUCKETS.to_vec(),
            max_servers_per_backend: 50,
        }
    }
}

/// A webhook receiving events.
#[derive(Debug, Clone, PartialEq)]
pub struct NotifySpec {
    pub url: http::Uri,
    /// Event kinds sent; empty = all.
    pub events: Vec<String>,
    pub format: super::model::NotifyFormat,
    pub timeout: Duration,
    pub queue: usize,
    pub ca: Option<PathBuf>,
}

/// The event kinds `[[notify]] events` may name.
pub const NOTIFY_EVENTS: [&str; 6] = ["split", "drain", "rollout", "reload", "health", "server"];

#[derive(Debug, Clone, PartialEq)]
pub struct AccessLogSpec {
    pub sink: LogSink,
    pub format: LogFormat,
    pub buffer: usize,
}

/// Where access-log lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogSink {
    Stdout,
    /// Appended to.
    File(PathBuf),
    /// RFC 5424 datagrams; `facility` is the syslog facility's number (local0 = 16).
    Syslog {
        target: SyslogTarget,
        facility: u8,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyslogTarget {
    Udp(SocketAddr),
    Unix(PathBuf),
}

#[derive(Debug, Clone, PartialEq)]
pub struct ListenerSpec {
    pub name: String,
    pub bind: SocketAddr,
    pub protocol: Protocol,
    /// Evaluated in order, first match wins: http listeners by host, path and header; tcp
    /// listeners by the TLS ClientHello's server name (`sni`).
    pub routes: Vec<RouteSpec>,
    /// tcp listeners without routes: the backend every connection goes to.
    pub backend: Option<String>,
    /// TLS termination (http listeners).
    pub tls: Option<ServerTlsSpec>,
    /// Plain http listeners: every request is answered 308 to the same URL on https.
    pub redirect_https: bool,
    /// TLS listeners: `Strict-Transport-Security` added to responses that lack one.
    pub hsts: Option<http::HeaderValue>,
    /// Connections start with a PROXY protocol v1/v2 header, whose source address becomes
    /// the client's.
    pub accept_proxy: bool,
    /// Most client connections open at once (0: no limit); at the limit the listener stops
    /// accepting (new clients wait in the backlog) until one closes.
    pub max_connections: usize,
    /// Largest request body accepted (413 beyond); 0 = no limit.
    pub max_body: u64,
    /// `idle_timeout` for this listener (its own key, or `[runtime]`'s).
    pub idle_timeout: Duration,
    /// Where `bind` is written (`file:line:col`), for errors found after validation
    /// (a bind conflict).
    pub bind_at: String,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct RouteSpec {
    /// `name` from the file, or `<listener>#<index>`.
    pub name: String,
    /// Lowercase; either exact or `*.suffix`.
    pub host: Option<String>,
    pub path: Option<PathMatch>,
    /// Every one present with exactly this value.
    pub headers: Vec<(http::HeaderName, http::HeaderValue)>,
    /// Query parameters whose first occurrence has exactly this value (Gateway API).
    pub query: Vec<(String, String)>,
    pub method: Option<http::Method>,
    /// What the route does besides choosing a backend (Gateway API filters).
    pub filters: Option<std::sync::Arc<RouteFilters>>,
    /// tcp listeners: lowercase, exact or `*.suffix`; `None` also matches non-TLS clients.
    pub sni: Option<String>,
    pub backend: String,
}

/// What a matched route does to the exchange (HTTPRoute `filters`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RouteFilters {
    /// Applied to the head sent upstream.
    pub request_headers: HeaderEdits,
    /// Applied to the response head sent to the client.
    pub response_headers: HeaderEdits,
    /// veer answers with a redirect; nothing goes upstream.
    pub redirect: Option<Redirect>,
    /// What goes upstream instead of the client's host and path.
    pub rewrite: Option<Rewrite>,
}

/// Header fields set (replacing any of that name), added, and removed.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct HeaderEdits {
    pub set: Vec<(http::HeaderName, http::HeaderValue)>,
    pub add: Vec<(http::HeaderName, http::HeaderValue)>,
    pub remove: Vec<http::HeaderName>,
}

impl HeaderEdits {
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.add.is_empty() && self.remove.is_empty()
    }

    /// Whether a field of this name is dropped from what arrived (set replaces it).
    pub fn drops(&self, name: &[u8]) -> bool {
        let is = |n: &http::HeaderName| n.as_str().as_bytes().eq_ignore_ascii_case(name);
        self.set.iter().any(|(n, _)| is(n)) || self.remove.iter().any(is)
    }

    /// The fields to write after the kept ones: every `set`, then every `add`.
    pub fn written(&self) -> impl Iterator<Item = &(http::HeaderName, http::HeaderValue)> {
        self.set.iter().chain(&self.add)
    }

    /// Applies the edits to a header map (the HTTP/2 path).
    pub fn apply(&self, headers: &mut http::HeaderMap) {
        for n in &self.remove {
            headers.remove(n);
        }
        for (n, v) in &self.set {
            headers.insert(n, v.clone());
        }
        for (n, v) in &self.add {
            headers.append(n, v.clone());
        }
    }
}

/// HTTPRoute `RequestRedirect`: each part not given is the request's own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redirect {
    pub scheme: Option<String>,
    pub hostname: Option<String>,
    pub port: Option<u16>,
    pub path: Option<PathRewrite>,
    /// 301, 302, 303, 307 or 308.
    pub status: u16,
}

/// HTTPRoute `URLRewrite`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rewrite {
    pub hostname: Option<String>,
    pub path: Option<PathRewrite>,
}

/// A new path for a redirect or rewrite.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathRewrite {
    /// The whole path (the query is kept).
    Full(String),
    /// The part the route's path prefix matched is replaced.
    Prefix(String),
}

impl PathRewrite {
    /// The new origin-form target for `path_and_query`, which `matched` (the route's path
    /// match, if any) matched.
    pub fn apply(&self, matched: Option<&PathMatch>, path_and_query: &str) -> String {
        let (path, query) = match path_and_query.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (path_and_query, None),
        };
        let mut out = match self {
            PathRewrite::Full(p) => p.clone(),
            PathRewrite::Prefix(new) => {
                let old = match matched {
                    Some(PathMatch::Prefix(p) | PathMatch::Segments(p) | PathMatch::Exact(p)) => p.as_str(),
                    None => "/",
                };
                let old = if old == "/" { "" } else { old.trim_end_matches('/') };
                let rest = path.strip_prefix(old).unwrap_or(path);
                let new = new.trim_end_matches('/');
                let mut s = String::with_capacity(new.len() + rest.len() + 1);
                s.push_str(new);
                if !rest.is_empty() && !rest.starts_with('/') {
                    s.push('/');
                }
                s.push_str(rest);
                s
            }
        };
        if out.is_empty() {
            out.push('/');
        }
        if let Some(q) = query {
            out.push('?');
            out.push_str(q);
        }
        out
    }
}

/// How a route matches the request's path (without its query).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathMatch {
    /// Starts with these bytes (the file's `path_prefix`, HAProxy's `path_beg`).
    Prefix(String),
    /// Starts with these path elements (Gateway API `PathPrefix`: `/a` matches `/a/b`,
    /// not `/ab`).
    Segments(String),
    /// Exactly this path.
    Exact(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct BackendSpec {
    pub name: String,
    pub balance: Balance,
    pub groups: Vec<GroupSpec>,
    /// Limit on establishing an upstream TCP connection.
    pub connect_timeout: Duration,
    /// Limit on waiting for the upstream's response headers (504 after it).
    pub timeout: Duration,
    /// The longest wait for the next bytes of a response body (HAProxy's `timeout
    /// server`): then the client connection is cut and the event counted per server.
    pub read_timeout: Duration,
    /// Extra attempts on other servers after a connect failure.
    pub retries: u32,
    /// How long a server that refused a connection is skipped (passive health).
    pub eject_time: Duration,
    pub pool_idle_timeout: Duration,
    pub pool_max_idle: usize,
    /// How long a draining server keeps its sticky clients (and, with the lifecycle work,
    /// its long-lived connections).
    pub drain_timeout: Duration,
    /// What `balance = "hash"` hashes; `None` for the other algorithms.
    pub hash_key: Option<HashKey>,
    pub sticky: Option<StickySpec>,
    pub override_: Option<OverrideSpec>,
    pub mirror: Option<MirrorSpec>,
    /// A PROXY protocol header sent first on every upstream connection.
    pub send_proxy: Option<ProxyVersion>,
    /// TLS to the servers.
    pub tls: Option<UpstreamTlsSpec>,
    /// What the servers speak.
    pub protocol: UpstreamProtocol,
    /// Active health checks.
    pub health: Option<HealthSpec>,
    /// When every server is DOWN or ejected, try them anyway (panic mode) rather than
    /// answer 503 `no-server`.
    pub fail_open: bool,
    /// Passive health from responses; `None`: only connect failures eject.
    pub outlier: Option<OutlierSpec>,
    /// Weight ramp of a server coming back; zero = none.
    pub slow_start: Duration,
    pub retry_on: RetryOn,
    /// Retries allowed as a percentage of the backend's requests over the last 10 s (plus
    /// [`RETRY_BUDGET_FLOOR`] per second); `None` = only `retries` bounds them.
    pub retry_budget: Option<u32>,
    /// Where requests wait for a server under its `maxconn`.
    pub queue: QueueSpec,
    /// How often DNS-named servers are looked up again.
    pub resolve_interval: Duration,
    /// Groups standing for references that could not be resolved (a Gateway API
    /// backendRef to a missing Service): their share of requests is answered 500.
    pub refused_groups: Vec<String>,
}

/// Retries per second a retry budget always allows (linkerd's and Finagle's floor).
pub const RETRY_BUDGET_FLOOR: u64 = 3;
/// Largest request body kept for replaying it on another server after a gateway error.
pub const RETRY_BODY_MAX: usize = 64 * 1024;

/// Envoy's outlier detection: consecutive errors eject a server, for longer each time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutlierSpec {
    /// 5xx responses (and gateway failures) in a row that eject; 0 = off.
    pub consecutive_5xx: u32,
    /// 502, 503, 504, resets and timeouts in a row that eject; 0 = off.
    pub consecutive_gateway_failure: u32,
    /// The first ejection's length; the n-th lasts n times as long, up to `max_ejection`.
    pub base_ejection: Duration,
    pub max_ejection: Duration,
    /// Most of a group ejected at once (one server always may be).
    pub max_ejected_percent: u32,
}

/// Which failures are retried on another server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryOn {
    /// The connection could not be opened (nothing was sent).
    pub connect: bool,
    /// 502, 503 or 504 from the server: idempotent requests with a small, buffered body.
    pub gateway_error: bool,
    /// The connection broke before the response head: idempotent requests as above.
    pub reset: bool,
}

impl Default for RetryOn {
    fn default() -> Self {
        RetryOn {
            connect: true,
            gateway_error: false,
            reset: false,
        }
    }
}

/// Requests over every server's `maxconn` wait here, first come first served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueSpec {
    pub max: usize,
    pub timeout: Duration,
}

impl Default for QueueSpec {
    fn default() -> Self {
        QueueSpec {
            max: 1000,
            timeout: Duration::from_secs(5),
        }
    }
}

/// A backend's active health check (HAProxy's `check inter rise fall`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HealthSpec {
    pub kind: CheckKind,
    /// Between checks, jittered ±10 %.
    pub interval: Duration,
    /// A check not answered within this fails.
    pub timeout: Duration,
    /// Consecutive passes that bring a DOWN server UP.
    pub rise: u32,
    /// Consecutive failures that take an UP server DOWN.
    pub fall: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum CheckKind {
    /// Connecting is enough.
    Tcp,
    /// `GET path` with `host`; a status in one of `expect`'s ranges passes.
    Http {
        path: String,
        host: Option<String>,
        expect: Vec<(u16, u16)>,
    },
}

impl Spec {
    /// Every TLS file the config read (certificates, keys, CA bundles): watched with the
    /// config, so a renewed certificate reloads.
    pub fn tls_files(&self) -> Vec<std::path::PathBuf> {
        let listeners = self
            .listeners
            .iter()
            .filter_map(|l| l.tls.as_ref())
            .flat_map(|t| &t.files);
        let backends = self
            .backends
            .iter()
            .filter_map(|b| b.tls.as_ref())
            .flat_map(|t| &t.files);
        listeners.chain(backends).cloned().collect()
    }
}

/// PROXY protocol version (HAProxy's `send-proxy` / `send-proxy-v2`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyVersion {
    V1,
    V2,
}

/// A backend's protocol to its servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UpstreamProtocol {
    #[default]
    Http1,
    /// HTTP/2 over TLS (ALPN `h2`).
    H2,
    /// HTTP/2 over plain TCP, prior knowledge.
    H2c,
}

impl UpstreamProtocol {
    pub fn is_h2(self) -> bool {
        matches!(self, UpstreamProtocol::H2 | UpstreamProtocol::H2c)
    }
}

/// The request property consistent hashing uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashKey {
    SourceIp,
    Header(http::HeaderName),
    Cookie(String),
}

/// Sticky sessions by cookie; the value names the server by a stable hash.
#[derive(Debug, Clone, PartialEq)]
pub struct StickySpec {
    pub cookie: String,
    pub max_age: Option<Duration>,
    pub http_only: bool,
    pub secure: bool,
    pub same_site: Option<SameSite>,
    pub path: String,
}

/// Dark-launch / A-B override: a header or cookie naming a group forces it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverrideSpec {
    pub header: Option<http::HeaderName>,
    pub cookie: Option<String>,
}

/// Shadow traffic: a sampled copy of requests goes to a server of `group`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirrorSpec {
    pub group: String,
    /// 0..=100 percent of requests.
    pub percent: u32,
    /// Requests with a larger body are not mirrored.
    pub max_body: u64,
}

/// How [`BackendSpec::number_servers`] picks an id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Numbering {
    /// The file's servers: the lowest free id from the server's position on.
    FilePosition,
    /// `add server`: the lowest free id.
    LowestFree,
}

impl BackendSpec {
    /// Every server, group by group.
    pub fn servers(&self) -> impl Iterator<Item = &ServerSpec> {
        self.groups.iter().flat_map(|g| &g.servers)
    }

    /// Numbers the servers without an id (0) or with one an earlier server holds, in group
    /// order, as HAProxy does: a server of the file takes the lowest free id from its
    /// position on (server 3 of the file is `#3` unless that is taken), an added one the
    /// lowest free id. Servers with their own id keep it, so deleting or adding a server
    /// renumbers no other.
    pub fn number_servers(&mut self, rule: Numbering) {
        let mut used = std::collections::HashSet::new();
        let servers = self.groups.iter_mut().flat_map(|g| &mut g.servers).enumerate();
        let unnumbered: Vec<_> = servers.filter(|(_, s)| s.id == 0 || !used.insert(s.id)).collect();
        let mut next = 1;
        for (position, s) in unnumbered {
            if rule == Numbering::FilePosition {
                next = next.max(position as u32 + 1);
            }
            while used.contains(&next) {
                next += 1;
            }
            s.id = next;
            used.insert(next);
        }
    }

    /// A backend with every tunable at its documented default and no groups.
    pub fn defaults() -> Self {
        BackendSpec {
            name: String::new(),
            balance: Balance::RoundRobin,
            groups: Vec::new(),
            connect_timeout: Duration::from_secs(2),
            timeout: Duration::from_secs(30),
            read_timeout: Duration::from_secs(60),
            retries: 2,
            eject_time: Duration::from_secs(10),
            pool_idle_timeout: Duration::from_secs(60),
            pool_max_idle: 256,
            drain_timeout: Duration::from_secs(300),
            hash_key: None,
            sticky: None,
            override_: None,
            mirror: None,
            send_proxy: None,
            tls: None,
            protocol: UpstreamProtocol::Http1,
            health: None,
            fail_open: true,
            outlier: None,
            slow_start: Duration::ZERO,
            retry_on: RetryOn::default(),
            retry_budget: None,
            queue: QueueSpec::default(),
            resolve_interval: Duration::from_secs(10),
            refused_groups: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct GroupSpec {
    pub name: String,
    /// Split weight, 0..=1000.
    pub weight: u32,
    /// Deployment metadata (`version`, `commit`, `build`, `deployed_by`, …).
    pub meta: std::collections::BTreeMap<String, String>,
    pub servers: Vec<ServerSpec>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ServerSpec {
    pub name: String,
    /// HAProxy's server id (`sid` in `show stat`, `#<id>` in commands), unique in its
    /// backend and kept when other servers are deleted or added; 0 until numbered
    /// ([`BackendSpec::number_servers`]).
    pub id: u32,
    pub addr: SocketAddr,
    /// 0..=256; 0 takes no new traffic.
    pub weight: u32,
    /// The weight the server started with (config, or `add server`): `N%` is relative to it.
    pub initial_weight: u32,
    pub state: AdminState,
    /// `disable health` (admin): the backend's checks skip this server, which counts as UP.
    pub checks_disabled: bool,
    /// Most requests (HTTP) or connections (TCP) at once; 0 = no limit.
    pub maxconn: u32,
    /// Set on a DNS-named server before lookup: the name its instances (`name#1..n`) are
    /// resolved from; instances carry the name they came from and their looked-up `addr`.
    pub dns: Option<DnsName>,
    /// The zone the server runs in (zone-aware routing).
    pub zone: Option<String>,
}

/// A server's `addr` given as `host:port`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DnsName {
    pub host: String,
    pub port: u16,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Gateway API's ReplacePrefixMatch and ReplaceFullPath examples.
    #[test]
    fn path_rewrites_follow_the_gateway_api_examples() {
        let prefix = |matched: &str, new: &str, path: &str| {
            PathRewrite::Prefix(new.into()).apply(Some(&PathMatch::Segments(matched.into())), path)
        };
        assert_eq!(prefix("/foo", "/xyz", "/foo"), "/xyz");
        assert_eq!(prefix("/foo", "/xyz", "/foo/bar"), "/xyz/bar");
        assert_eq!(prefix("/foo", "/xyz", "/foo/"), "/xyz/");
        assert_eq!(prefix("/foo/", "/xyz", "/foo/bar"), "/xyz/bar");
        assert_eq!(prefix("/foo", "/xyz/", "/foo/bar"), "/xyz/bar");
        assert_eq!(prefix("/foo", "/", "/foo"), "/");
        assert_eq!(prefix("/foo", "/", "/foo/bar"), "/bar");
        assert_eq!(prefix("/", "/xyz", "/bar"), "/xyz/bar");
        assert_eq!(prefix("/foo", "/xyz", "/foo/bar?q=1&r=2"), "/xyz/bar?q=1&r=2");
        let full = PathRewrite::Full("/other".into());
        assert_eq!(full.apply(None, "/any/thing?q=1"), "/other?q=1");
    }
}
