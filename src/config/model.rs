//! The TOML file as written: serde structs mirroring the documented keys, with spans kept on
//! every value a later check may need to point at. Unknown keys are rejected here
//! (`deny_unknown_fields`), so a typo never passes silently. Nothing in this module interprets
//! values; `validate` turns this model into the typed [`super::Spec`].

use serde::Deserialize;
use toml::Spanned;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub admin: Option<RawAdmin>,
    pub runtime: Option<RawRuntime>,
    pub metrics: Option<RawMetrics>,
    pub access_log: Option<RawAccessLog>,
    #[serde(default, rename = "listener")]
    pub listeners: Vec<RawListener>,
    #[serde(default, rename = "backend")]
    pub backends: Vec<RawBackend>,
    #[serde(default, rename = "notify")]
    pub notify: Vec<RawNotify>,
}

/// A webhook receiving events (`[[notify]]`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNotify {
    pub url: Spanned<String>,
    /// Event kinds: split, drain, rollout, reload, health, server.
    pub events: Option<Spanned<Vec<String>>>,
    pub format: Option<NotifyFormat>,
    /// Each POST's limit, e.g. "5s".
    pub timeout: Option<Spanned<String>>,
    /// Events held for a slow receiver before new ones are dropped (and counted).
    pub queue: Option<Spanned<i64>>,
    /// PEM CA bundle trusted for an https receiver, besides the system's roots.
    pub ca: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum NotifyFormat {
    #[default]
    Json,
    Slack,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    pub socket: Option<String>,
    /// Octal permission bits of the socket file, e.g. "0660".
    pub socket_mode: Option<Spanned<String>>,
    /// Group (name or numeric gid) to own the socket file.
    pub socket_group: Option<Spanned<String>>,
    pub http: Option<Spanned<String>>,
    /// File holding the bearer token required for POST /command.
    pub token_file: Option<Spanned<String>>,
    pub state_file: Option<String>,
    /// Read-only probe listener (`/live`, `/ready`, `/metrics`), e.g. "0.0.0.0:9902".
    pub probe: Option<Spanned<String>>,
    /// Idle admin socket sessions (not subscribed) and admin HTTP header reads are closed
    /// after this long (HAProxy's `stats timeout`).
    pub session_timeout: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRuntime {
    pub workers: Option<Spanned<i64>>,
    pub backlog: Option<Spanned<i64>>,
    pub accept_grace: Option<Spanned<String>>,
    pub shutdown_timeout: Option<Spanned<String>>,
    pub header_timeout: Option<Spanned<String>>,
    pub idle_timeout: Option<Spanned<String>>,
    pub body_timeout: Option<Spanned<String>>,
    /// Longest request or response head, e.g. "64KiB".
    pub max_header_size: Option<Spanned<String>>,
    /// Most header fields in one head.
    pub max_headers: Option<Spanned<i64>>,
    /// A hosts(5)-format file DNS-named servers are looked up in before the system resolver.
    pub hosts_file: Option<Spanned<String>>,
    /// The zone veer runs in (default `$VEER_ZONE`, e.g. the node's
    /// `topology.kubernetes.io/zone` given by the downward API).
    pub zone: Option<Spanned<String>>,
    /// Prefer servers of veer's zone inside each group.
    pub zone_aware: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMetrics {
    /// Histogram bucket bounds as durations, ascending.
    pub buckets: Option<Spanned<Vec<String>>>,
    pub max_servers_per_backend: Option<Spanned<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAccessLog {
    /// "stdout" or a file path; stdout when neither it nor `syslog` is given.
    pub path: Option<Spanned<String>>,
    /// A syslog collector instead: "ip:port" (UDP) or a unix socket path ("/dev/log").
    pub syslog: Option<Spanned<String>>,
    /// The syslog facility: "local0" … "local7", "user", "daemon" (default "local0").
    pub facility: Option<Spanned<String>>,
    pub format: Option<LogFormat>,
    /// Lines buffered before new ones are dropped (and counted).
    pub buffer: Option<Spanned<i64>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Json,
    Combined,
    /// HAProxy's `httplog` line.
    Haproxy,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Http,
    Tcp,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListener {
    pub name: Spanned<String>,
    pub bind: Spanned<String>,
    pub protocol: Spanned<Protocol>,
    #[serde(default, rename = "route")]
    pub routes: Vec<RawRoute>,
    pub backend: Option<Spanned<String>>,
    /// Overrides `[runtime] idle_timeout` for this listener.
    pub idle_timeout: Option<Spanned<String>>,
    /// TLS termination (http listeners).
    pub tls: Option<Spanned<RawTls>>,
    /// Plain http listeners: answer every request with 308 to the same URL on https.
    pub redirect_https: Option<Spanned<bool>>,
    /// TLS listeners: the `Strict-Transport-Security` value added to every response.
    pub hsts: Option<Spanned<String>>,
    /// Every connection starts with a PROXY protocol v1 or v2 header (HAProxy's name).
    pub accept_proxy: Option<bool>,
    /// Most client connections open at once; beyond, accepting pauses (HAProxy's maxconn).
    pub max_connections: Option<Spanned<i64>>,
    /// Largest request body, e.g. "10MiB"; larger ones get 413.
    pub max_body: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    pub certs: Spanned<Vec<RawCertPair>>,
    /// "1.2" or "1.3".
    pub min_version: Option<Spanned<String>>,
    /// ALPN protocols offered, in preference order; default ["h2", "http/1.1"].
    pub alpn: Option<Spanned<Vec<String>>>,
    /// PEM CA bundle: clients must present a certificate it signed (mTLS).
    pub client_ca: Option<Spanned<String>>,
    /// An expired certificate loads with a warning instead of failing the config.
    pub allow_expired: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCertPair {
    /// PEM certificate chain, leaf first.
    pub cert: Spanned<String>,
    /// PEM private key (PKCS#8, RSA or SEC1).
    pub key: Spanned<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    pub name: Option<String>,
    /// tcp listeners: the TLS ClientHello's server name, exact or "*.suffix".
    pub sni: Option<Spanned<String>>,
    pub host: Option<Spanned<String>>,
    pub path_prefix: Option<Spanned<String>>,
    pub header: Option<RawHeaderMatch>,
    pub backend: Spanned<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHeaderMatch {
    pub name: Spanned<String>,
    pub value: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Balance {
    #[default]
    RoundRobin,
    LeastRequest,
    Random,
    /// Consistent (rendezvous) hashing on `hash_key`.
    Hash,
}

impl Balance {
    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Balance::RoundRobin => "round_robin",
            Balance::LeastRequest => "least_request",
            Balance::Random => "random",
            Balance::Hash => "hash",
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBackend {
    pub name: Spanned<String>,
    #[serde(default)]
    pub balance: Balance,
    pub groups: Option<Spanned<Vec<RawGroup>>>,
    pub servers: Option<Vec<RawServer>>,
    pub connect_timeout: Option<Spanned<String>>,
    pub timeout: Option<Spanned<String>>,
    pub read_timeout: Option<Spanned<String>>,
    pub retries: Option<Spanned<i64>>,
    pub eject_time: Option<Spanned<String>>,
    pub pool_idle_timeout: Option<Spanned<String>>,
    pub pool_max_idle: Option<Spanned<i64>>,
    pub drain_timeout: Option<Spanned<String>>,
    pub hash_key: Option<Spanned<String>>,
    pub sticky: Option<Spanned<RawSticky>>,
    #[serde(rename = "override")]
    pub override_: Option<Spanned<RawOverride>>,
    pub mirror: Option<Spanned<RawMirror>>,
    /// "v1" or "v2": a PROXY protocol header on every upstream connection.
    pub send_proxy: Option<Spanned<String>>,
    /// TLS to the servers.
    pub tls: Option<Spanned<RawUpstreamTls>>,
    /// "http1" (default), "h2" (over TLS, by ALPN) or "h2c".
    pub protocol: Option<Spanned<String>>,
    /// Active health checks of every server.
    pub health: Option<Spanned<RawHealth>>,
    /// When every server is down or ejected: try them anyway (true, default) or answer 503.
    pub fail_open: Option<bool>,
    /// Passive health: servers answering errors are ejected for a while (Envoy's outlier
    /// detection).
    pub outlier: Option<Spanned<RawOutlier>>,
    /// A server coming back ramps its weight from 10 % to 100 % over this long.
    pub slow_start: Option<Spanned<String>>,
    /// What is retried on another server: "connect", "gateway-error", "reset".
    pub retry_on: Option<Spanned<Vec<Spanned<String>>>>,
    /// Retries allowed as a share of requests, e.g. "20%".
    pub retry_budget: Option<Spanned<String>>,
    /// Requests waiting for a server below its `maxconn`.
    pub queue: Option<Spanned<RawQueue>>,
    /// How often DNS-named servers are looked up again.
    pub resolve_interval: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOutlier {
    pub consecutive_5xx: Option<Spanned<i64>>,
    pub consecutive_gateway_failure: Option<Spanned<i64>>,
    pub base_ejection: Option<Spanned<String>>,
    pub max_ejection: Option<Spanned<String>>,
    pub max_ejected_percent: Option<Spanned<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawQueue {
    pub max: Option<Spanned<i64>>,
    pub timeout: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHealth {
    /// HTTP checks: `GET <path>`.
    pub path: Option<Spanned<String>>,
    /// The Host the check sends (default: the server's address).
    pub host: Option<String>,
    /// "2xx", "200", "200-399", or a list of those.
    pub expect: Option<Spanned<toml::Value>>,
    /// A TCP connect is the check.
    pub tcp: Option<bool>,
    pub interval: Option<Spanned<String>>,
    pub timeout: Option<Spanned<String>>,
    pub rise: Option<Spanned<i64>>,
    pub fall: Option<Spanned<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstreamTls {
    /// PEM CA bundle the servers' certificates are verified against; absent: webpki roots.
    pub ca: Option<Spanned<String>>,
    /// The server name sent (SNI) and verified; absent: the server's IP address.
    pub sni: Option<Spanned<String>>,
    /// Verify the server's certificate (default true).
    pub verify: Option<bool>,
    /// A client certificate for servers that require one.
    pub cert: Option<Spanned<String>>,
    pub key: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSticky {
    pub cookie: Spanned<String>,
    pub max_age: Option<Spanned<String>>,
    pub http_only: Option<bool>,
    pub secure: Option<bool>,
    pub same_site: Option<SameSite>,
    pub path: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum SameSite {
    Strict,
    Lax,
    None,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOverride {
    pub header: Option<Spanned<String>>,
    pub cookie: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMirror {
    pub group: Spanned<String>,
    pub percent: Option<Spanned<i64>>,
    pub max_body: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGroup {
    pub name: Spanned<String>,
    pub weight: Option<Spanned<i64>>,
    /// Deployment metadata: version, commit, build, deployed_by, or any other key.
    #[serde(default)]
    pub meta: std::collections::BTreeMap<String, String>,
    pub servers: Vec<RawServer>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum AdminState {
    #[default]
    Ready,
    Drain,
    Maint,
}

impl AdminState {
    pub const ALL: [AdminState; 3] = [AdminState::Ready, AdminState::Drain, AdminState::Maint];

    /// The config and admin-command spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            AdminState::Ready => "ready",
            AdminState::Drain => "drain",
            AdminState::Maint => "maint",
        }
    }

    /// Parses the spelling of [`AdminState::as_str`].
    pub fn parse(s: &str) -> Option<AdminState> {
        AdminState::ALL.into_iter().find(|a| a.as_str() == s)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    pub name: Spanned<String>,
    pub addr: Spanned<String>,
    pub weight: Option<Spanned<i64>>,
    pub state: Option<AdminState>,
    /// Most requests (HTTP) or connections (TCP) at once; beyond, the backend's queue.
    pub maxconn: Option<Spanned<i64>>,
    /// HAProxy's `id`: the server's number in `show stat` and `#<id>`; default: the lowest
    /// number not taken, in file order.
    pub id: Option<Spanned<i64>>,
    /// The zone the server runs in (zone-aware routing).
    pub zone: Option<Spanned<String>>,
}
