//! Semantic checks on the parsed file and the conversion to the typed [`Spec`]. Collects every
//! error it finds (not just the first), each anchored to its key in the file.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use toml::Spanned;

use super::diag::Diagnostic;
use super::model::*;
use super::spec::*;

/// Collects diagnostics against one source file.
struct Checker<'a> {
    file: &'a Path,
    source: &'a str,
    errors: Vec<Diagnostic>,
}

impl Checker<'_> {
    fn err(&mut self, span: Range<usize>, msg: impl Into<String>) {
        self.errors.push(Diagnostic::at(self.file, self.source, span, msg));
    }

    fn addr(&mut self, v: &Spanned<String>, what: &str) -> Option<SocketAddr> {
        match v.get_ref().parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                self.err(
                    v.span(),
                    format!(
                        "invalid {what} address {:?}: expected ip:port, e.g. 127.0.0.1:8080",
                        v.get_ref()
                    ),
                );
                None
            }
        }
    }

    fn duration(&mut self, v: &Option<Spanned<String>>, key: &str, default: Duration) -> Duration {
        let Some(v) = v else { return default };
        match humantime::parse_duration(v.get_ref()) {
            Ok(d) => d,
            Err(e) => {
                self.err(
                    v.span(),
                    format!(
                        "invalid duration for `{key}` {:?}: {e} (write e.g. \"500ms\", \"2s\", \"1m\")",
                        v.get_ref()
                    ),
                );
                default
            }
        }
    }

    fn ranged(
        &mut self,
        v: &Option<Spanned<i64>>,
        key: &str,
        range: std::ops::RangeInclusive<i64>,
        default: i64,
    ) -> i64 {
        let Some(v) = v else { return default };
        if range.contains(v.get_ref()) {
            *v.get_ref()
        } else {
            self.err(
                v.span(),
                format!(
                    "{key} {} is out of range: must be between {} and {} inclusive",
                    v.get_ref(),
                    range.start(),
                    range.end()
                ),
            );
            default
        }
    }

    /// A byte size written as a string ("64KiB", "1MiB"), within `range`.
    fn size(
        &mut self,
        v: &Option<Spanned<String>>,
        key: &str,
        range: std::ops::RangeInclusive<u64>,
        default: u64,
    ) -> u64 {
        let Some(v) = v else { return default };
        match v.get_ref().parse::<bytesize::ByteSize>() {
            Ok(size) if range.contains(&size.as_u64()) => size.as_u64(),
            Ok(size) => {
                self.err(
                    v.span(),
                    format!(
                        "{key} {} is out of range: must be between {} and {} bytes inclusive",
                        size.as_u64(),
                        range.start(),
                        range.end()
                    ),
                );
                default
            }
            Err(_) => {
                self.err(
                    v.span(),
                    format!("invalid size {:?}: write e.g. \"64KiB\", \"1MiB\"", v.get_ref()),
                );
                default
            }
        }
    }

    /// A host name pattern: an exact name or `*.suffix`, lowercased.
    fn host_pattern(&mut self, h: &Spanned<String>, key: &str) -> Option<String> {
        let v = h.get_ref().to_ascii_lowercase();
        let valid = match v.strip_prefix("*.") {
            Some(rest) => !rest.is_empty() && !rest.contains('*'),
            None => !v.is_empty() && !v.contains('*'),
        };
        if !valid {
            self.err(
                h.span(),
                format!(
                    "invalid {key} {:?}: write an exact name or \"*.example.com\"",
                    h.get_ref()
                ),
            );
        }
        valid.then_some(v)
    }

    /// A file named in the config: relative paths are relative to the config's directory.
    fn path(&self, v: &Spanned<String>) -> PathBuf {
        let p = Path::new(v.get_ref());
        match self.file.parent() {
            Some(dir) if p.is_relative() => dir.join(p),
            _ => p.to_path_buf(),
        }
    }

    /// Reports a name HAProxy would refuse, and the second and later uses of a name within
    /// one scope (pointing back at the first).
    fn unique(&mut self, seen: &mut HashMap<String, Range<usize>>, name: &Spanned<String>, what: &str, scope: &str) {
        let text = name.get_ref();
        if text.is_empty() {
            self.err(name.span(), format!("{what} name must not be empty"));
        } else if let Some(ch) = super::names::invalid_char(text) {
            self.err(
                name.span(),
                format!(
                    "character {ch:?} is not permitted in {what} name {text:?} (letters, digits, '-', '_', '.' and ':' are)"
                ),
            );
        } else if let Some(first) = seen.get(text) {
            let (line, col) = super::diag::line_col(self.source, first.start);
            self.err(
                name.span(),
                format!("duplicate {what} name {text:?}{scope} (first defined at {line}:{col})"),
            );
        } else {
            seen.insert(text.clone(), name.span());
        }
    }
}

/// Checks `raw` and builds the typed spec, or returns every error found.
pub fn validate(file: &Path, source: &str, raw: RawConfig) -> Result<Spec, Vec<Diagnostic>> {
    let mut c = Checker {
        file,
        source,
        errors: Vec::new(),
    };

    let admin = raw.admin.map(|a| {
        let http = a.http.as_ref().and_then(|h| c.addr(h, "admin http"));
        if let (Some(addr), Some(h), None) = (http, &a.http, &a.token_file) {
            if !addr.ip().is_loopback() {
                c.err(
                    h.span(),
                    format!("admin http {addr} is not a loopback address: set `token_file` to protect it"),
                );
            }
        }
        let socket_mode = match &a.socket_mode {
            None => 0o600,
            Some(m) => match u32::from_str_radix(m.get_ref(), 8) {
                Ok(mode) if mode <= 0o777 => mode,
                _ => {
                    c.err(
                        m.span(),
                        format!(
                            "invalid socket_mode {:?}: write octal permission bits, e.g. \"0660\"",
                            m.get_ref()
                        ),
                    );
                    0o600
                }
            },
        };
        let probe = a.probe.as_ref().and_then(|p| c.addr(p, "admin probe"));
        let session_timeout = c.duration(
            &a.session_timeout,
            "session_timeout",
            AdminSpec::default().session_timeout,
        );
        AdminSpec {
            probe,
            session_timeout,
            socket: a.socket.map(PathBuf::from),
            socket_mode,
            socket_group: a.socket_group.map(|g| g.into_inner()),
            http,
            token_file: a.token_file.map(|t| PathBuf::from(t.into_inner())),
            state_file: a.state_file.map(PathBuf::from),
        }
    });
    let env_zone = || std::env::var("VEER_ZONE").ok().filter(|z| !z.is_empty());
    let runtime = match &raw.runtime {
        None => RuntimeSpec {
            zone: env_zone(),
            ..RuntimeSpec::default()
        },
        Some(r) => RuntimeSpec {
            workers: r
                .workers
                .as_ref()
                .map(|_| c.ranged(&r.workers, "workers", 1..=1024, 1) as usize),
            backlog: c.ranged(&r.backlog, "backlog", 1..=65535, DEFAULT_BACKLOG as i64) as u32,
            accept_grace: c.duration(&r.accept_grace, "accept_grace", RuntimeSpec::default().accept_grace),
            shutdown_timeout: c.duration(
                &r.shutdown_timeout,
                "shutdown_timeout",
                RuntimeSpec::default().shutdown_timeout,
            ),
            header_timeout: c.duration(
                &r.header_timeout,
                "header_timeout",
                RuntimeSpec::default().header_timeout,
            ),
            idle_timeout: c.duration(&r.idle_timeout, "idle_timeout", RuntimeSpec::default().idle_timeout),
            body_timeout: c.duration(&r.body_timeout, "body_timeout", RuntimeSpec::default().body_timeout),
            max_header_size: c.size(
                &r.max_header_size,
                "max_header_size",
                1024..=MAX_HEADER_SIZE_LIMIT as u64,
                DEFAULT_MAX_HEADER_SIZE as u64,
            ) as usize,
            max_headers: c.ranged(
                &r.max_headers,
                "max_headers",
                1..=MAX_HEADERS_LIMIT as i64,
                DEFAULT_MAX_HEADERS as i64,
            ) as usize,
            hosts_file: r.hosts_file.as_ref().map(|f| c.path(f)),
            zone: r.zone.as_ref().map(|z| z.get_ref().clone()).or_else(env_zone),
            zone_aware: r.zone_aware.unwrap_or(false),
        },
    };

    let mut backends = Vec::new();
    let mut backend_names = HashMap::new();
    for b in &raw.backends {
        c.unique(&mut backend_names, &b.name, "backend", "");
        backends.push(backend(&mut c, b));
    }

    let mut listeners = Vec::new();
    let mut listener_names = HashMap::new();
    let mut binds = HashSet::new();
    for l in &raw.listeners {
        c.unique(&mut listener_names, &l.name, "listener", "");
        let bind = c.addr(&l.bind, "bind");
        if let Some(a) = bind {
            if a.port() != 0 && !binds.insert(a) {
                c.err(l.bind.span(), format!("another listener already binds {a}"));
            }
        }
        let mut known_backend = |c: &mut Checker, name: &Spanned<String>| {
            if !backend_names.contains_key(name.get_ref().as_str()) {
                c.err(name.span(), format!("unknown backend {:?}", name.get_ref()));
            }
            name.get_ref().clone()
        };
        let http = *l.protocol.get_ref() == Protocol::Http;
        let routes: Vec<RouteSpec> = l
            .routes
            .iter()
            .enumerate()
            .map(|(i, r)| route(&mut c, l.name.get_ref(), http, i, r, &mut known_backend))
            .collect();
        let backend = if http {
            if l.routes.is_empty() {
                c.err(
                    l.name.span(),
                    format!("http listener {:?} has no [[listener.route]]", l.name.get_ref()),
                );
            }
            if let Some(b) = &l.backend {
                c.err(
                    b.span(),
                    "an http listener routes with [[listener.route]]; `backend` is for tcp listeners",
                );
            }
            None
        } else {
            match (&l.backend, l.routes.first()) {
                (Some(b), None) => Some(known_backend(&mut c, b)),
                (None, Some(_)) => None,
                (Some(b), Some(_)) => {
                    c.err(
                        b.span(),
                        "a tcp listener names either its `backend` or [[listener.route]]s by `sni`, not both",
                    );
                    None
                }
                (None, None) => {
                    c.err(
                        l.name.span(),
                        format!("tcp listener {:?} has no `backend`", l.name.get_ref()),
                    );
                    None
                }
            }
        };
        let tls = l.tls.as_ref().and_then(|t| {
            if !http {
                c.err(
                    t.span(),
                    "TLS termination is for http listeners; a tcp listener passes TLS through (route by `sni`)",
                );
            }
            server_tls(&mut c, t.get_ref())
        });
        let redirect_https = match &l.redirect_https {
            Some(r) if *r.get_ref() && (l.tls.is_some() || !http) => {
                c.err(r.span(), "`redirect_https` is for plain http listeners");
                false
            }
            Some(r) => *r.get_ref(),
            None => false,
        };
        let hsts = l.hsts.as_ref().and_then(|h| {
            if l.tls.is_none() {
                c.err(
                    h.span(),
                    "`hsts` needs a TLS listener (browsers ignore it over plain http)",
                );
            }
            match http::HeaderValue::from_str(h.get_ref()) {
                Ok(v) if !h.get_ref().is_empty() => Some(v),
                _ => {
                    c.err(
                        h.span(),
                        format!("invalid hsts value {:?}: write e.g. \"max-age=31536000\"", h.get_ref()),
                    );
                    None
                }
            }
        });
        let at = Diagnostic::at(c.file, c.source, l.bind.span(), "");
        listeners.push(ListenerSpec {
            name: l.name.get_ref().clone(),
            bind: bind.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0))),
            protocol: *l.protocol.get_ref(),
            routes,
            backend,
            tls,
            redirect_https,
            hsts,
            accept_proxy: l.accept_proxy.unwrap_or(false),
            max_connections: c.ranged(&l.max_connections, "max_connections", 1..=10_000_000, 0) as usize,
            max_body: c.size(&l.max_body, "max_body", 1..=u64::MAX, 0),
            idle_timeout: c.duration(&l.idle_timeout, "idle_timeout", runtime.idle_timeout),
            bind_at: format!("{}:{}:{}", at.file, at.line, at.col),
        });
    }

    let metrics = match &raw.metrics {
        None => MetricsSpec::default(),
        Some(m) => {
            let mut buckets = MetricsSpec::default().buckets;
            if let Some(b) = &m.buckets {
                let parsed: Vec<f64> = b
                    .get_ref()
                    .iter()
                    .filter_map(|d| match humantime::parse_duration(d) {
                        Ok(d) => Some(d.as_secs_f64()),
                        Err(e) => {
                            c.err(b.span(), format!("invalid bucket {d:?}: {e}"));
                            None
                        }
                    })
                    .collect();
                if parsed.is_empty() || parsed.windows(2).any(|w| w[0] >= w[1]) {
                    c.err(b.span(), "buckets must be a non-empty list of ascending durations");
                } else {
                    buckets = parsed;
                }
            }
            MetricsSpec {
                buckets,
                max_servers_per_backend: c.ranged(
                    &m.max_servers_per_backend,
                    "max_servers_per_backend",
                    1..=100_000,
                    50,
                ) as usize,
            }
        }
    };
    let access_log = raw.access_log.as_ref().map(|a| AccessLogSpec {
        sink: log_sink(&mut c, a),
        format: a.format.unwrap_or_default(),
        buffer: c.ranged(&a.buffer, "access_log buffer", 1..=1_000_000, 4096) as usize,
    });
    let notify = raw.notify.iter().map(|n| notify(&mut c, n)).collect();
    if c.errors.is_empty() {
        Ok(Spec {
            metrics,
            access_log,
            notify,
            admin: admin.unwrap_or_default(),
            runtime,
            listeners,
            backends,
            hash: 0,
        })
    } else {
        Err(c.errors)
    }
}

fn route(
    c: &mut Checker,
    listener: &str,
    http: bool,
    index: usize,
    r: &RawRoute,
    known_backend: &mut impl FnMut(&mut Checker, &Spanned<String>) -> String,
) -> RouteSpec {
    let host = r.host.as_ref().and_then(|h| c.host_pattern(h, "host"));
    let sni = r.sni.as_ref().and_then(|h| c.host_pattern(h, "sni"));
    if http {
        if let Some(s) = &r.sni {
            c.err(
                s.span(),
                "`sni` routes are for tcp listeners (TLS passthrough); http routes match `host`",
            );
        }
    } else {
        let l7 = [
            r.host.as_ref().map(|h| h.span()),
            r.path_prefix.as_ref().map(|p| p.span()),
            r.header.as_ref().map(|h| h.name.span()),
        ];
        if let Some(span) = l7.into_iter().flatten().next() {
            c.err(
                span,
                "a tcp listener's routes match `sni` only (host, path and headers are http)",
            );
        }
    }
    let path_prefix = r.path_prefix.as_ref().map(|p| {
        if !p.get_ref().starts_with('/') {
            c.err(p.span(), format!("path_prefix {:?} must start with '/'", p.get_ref()));
        }
        p.get_ref().clone()
    });
    let header = r.header.as_ref().and_then(|h| {
        let name = http::HeaderName::from_bytes(h.name.get_ref().as_bytes());
        let value = http::HeaderValue::from_str(&h.value);
        match (name, value) {
            (Ok(n), Ok(v)) => Some((n, v)),
            _ => {
                c.err(
                    h.name.span(),
                    format!("invalid header match {:?} = {:?}", h.name.get_ref(), h.value),
                );
                None
            }
        }
    });
    RouteSpec {
        name: r.name.clone().unwrap_or_else(|| format!("{listener}#{index}")),
        host,
        path: path_prefix.map(PathMatch::Prefix),
        headers: header.into_iter().collect(),
        sni,
        backend: known_backend(c, &r.backend),
        ..RouteSpec::default()
    }
}

fn backend(c: &mut Checker, b: &RawBackend) -> BackendSpec {
    let scope = format!(" in backend {:?}", b.name.get_ref());
    let mut server_names = HashMap::new();
    let mut server_ids: HashMap<i64, Range<usize>> = HashMap::new();
    let mut server = |c: &mut Checker, s: &RawServer| {
        c.unique(&mut server_names, &s.name, "server", &scope);
        let id = c.ranged(&s.id, "server id", 1..=i32::MAX as i64, 0);
        // 0: no id, or one out of range (already reported).
        if let Some(at) = s.id.as_ref().filter(|_| id != 0) {
            if let Some(first) = server_ids.get(&id) {
                let (line, col) = super::diag::line_col(c.source, first.start);
                c.err(
                    at.span(),
                    format!("server id {id} is already used{scope} (first defined at {line}:{col})"),
                );
            } else {
                server_ids.insert(id, at.span());
            }
        }
        let weight = c.ranged(&s.weight, "server weight", 0..=256, 1) as u32;
        let (addr, dns) = server_addr(c, &s.addr);
        if s.name.get_ref().contains('#') {
            c.err(
                s.name.span(),
                format!(
                    "server name {:?} contains '#': veer names DNS-resolved instances name#1, name#2…",
                    s.name.get_ref()
                ),
            );
        }
        ServerSpec {
            name: s.name.get_ref().clone(),
            id: id as u32,
            addr,
            weight,
            initial_weight: weight,
            state: s.state.unwrap_or_default(),
            checks_disabled: false,
            maxconn: c.ranged(&s.maxconn, "maxconn", 1..=1_000_000, 0) as u32,
            dns,
            zone: s.zone.as_ref().map(|z| z.get_ref().clone()),
        }
    };
    let groups = match (&b.groups, &b.servers) {
        (Some(groups), None) => {
            let mut group_names = HashMap::new();
            let mut out = Vec::new();
            for g in groups.get_ref() {
                c.unique(&mut group_names, &g.name, "group", &scope);
                out.push(GroupSpec {
                    name: g.name.get_ref().clone(),
                    weight: c.ranged(&g.weight, "group weight", 0..=1000, DEFAULT_GROUP_WEIGHT as i64) as u32,
                    meta: g.meta.clone(),
                    servers: g.servers.iter().map(|s| server(c, s)).collect(),
                });
            }
            out
        }
        (None, Some(servers)) => vec![GroupSpec {
            name: DEFAULT_GROUP.to_string(),
            weight: DEFAULT_GROUP_WEIGHT,
            meta: Default::default(),
            servers: servers.iter().map(|s| server(c, s)).collect(),
        }],
        (Some(groups), Some(_)) => {
            c.err(
                groups.span(),
                format!(
                    "backend {:?} sets both `groups` and `servers`: put the servers inside the groups",
                    b.name.get_ref()
                ),
            );
            Vec::new()
        }
        (None, None) => {
            c.err(
                b.name.span(),
                format!("backend {:?} needs `servers` or `groups`", b.name.get_ref()),
            );
            Vec::new()
        }
    };
    let d = BackendSpec::defaults();
    let hash_key = match (&b.hash_key, b.balance) {
        (Some(k), Balance::Hash) => hash_key(c, k),
        (None, Balance::Hash) => {
            c.err(
                b.name.span(),
                format!(
                    "backend {:?} uses balance = \"hash\" but sets no `hash_key`",
                    b.name.get_ref()
                ),
            );
            None
        }
        (Some(k), _) => {
            c.err(k.span(), "`hash_key` needs balance = \"hash\"");
            None
        }
        (None, _) => None,
    };
    let sticky = b.sticky.as_ref().map(|s| {
        let st = s.get_ref();
        if http::HeaderValue::from_str(&format!("{}=x", st.cookie.get_ref())).is_err()
            || !cookie_name_ok(st.cookie.get_ref())
        {
            c.err(
                st.cookie.span(),
                format!("invalid cookie name {:?}", st.cookie.get_ref()),
            );
        }
        StickySpec {
            cookie: st.cookie.get_ref().clone(),
            max_age: st
                .max_age
                .as_ref()
                .map(|_| c.duration(&st.max_age, "max_age", Duration::ZERO)),
            http_only: st.http_only.unwrap_or(true),
            secure: st.secure.unwrap_or(false),
            same_site: st.same_site,
            path: st.path.clone().unwrap_or_else(|| "/".into()),
        }
    });
    let override_ = b.override_.as_ref().map(|o| {
        let ov = o.get_ref();
        if ov.header.is_none() && ov.cookie.is_none() {
            c.err(o.span(), "`override` needs a `header` or a `cookie`");
        }
        let header = ov
            .header
            .as_ref()
            .and_then(|h| match http::HeaderName::from_bytes(h.get_ref().as_bytes()) {
                Ok(n) => Some(n),
                Err(_) => {
                    c.err(h.span(), format!("invalid header name {:?}", h.get_ref()));
                    None
                }
            });
        let cookie = ov.cookie.as_ref().map(|k| {
            if !cookie_name_ok(k.get_ref()) {
                c.err(k.span(), format!("invalid cookie name {:?}", k.get_ref()));
            }
            k.get_ref().clone()
        });
        OverrideSpec { header, cookie }
    });
    let mirror = b.mirror.as_ref().map(|m| {
        let mi = m.get_ref();
        if !groups.iter().any(|g| g.name == *mi.group.get_ref()) {
            c.err(
                mi.group.span(),
                format!(
                    "mirror group {:?} is not a group of backend {:?}",
                    mi.group.get_ref(),
                    b.name.get_ref()
                ),
            );
        }
        let max_body = c.size(&mi.max_body, "max_body", 0..=u64::MAX, 64 * 1024);
        MirrorSpec {
            group: mi.group.get_ref().clone(),
            percent: c.ranged(&mi.percent, "mirror percent", 0..=100, 100) as u32,
            max_body,
        }
    });
    let send_proxy = b.send_proxy.as_ref().and_then(|v| match v.get_ref().as_str() {
        "v1" => Some(ProxyVersion::V1),
        "v2" => Some(ProxyVersion::V2),
        other => {
            c.err(
                v.span(),
                format!("invalid send_proxy {other:?}: write \"v1\" or \"v2\""),
            );
            None
        }
    });
    let protocol = match b.protocol.as_ref().map(|p| (p, p.get_ref().as_str())) {
        None | Some((_, "http1")) => UpstreamProtocol::Http1,
        Some((_, "h2")) => UpstreamProtocol::H2,
        Some((_, "h2c")) => UpstreamProtocol::H2c,
        Some((p, other)) => {
            c.err(
                p.span(),
                format!("invalid protocol {other:?}: write \"http1\", \"h2\" or \"h2c\""),
            );
            UpstreamProtocol::Http1
        }
    };
    match (protocol, &b.tls, &b.protocol) {
        (UpstreamProtocol::H2, None, Some(p)) => c.err(
            p.span(),
            "protocol = \"h2\" is HTTP/2 over TLS: set `tls` (or use \"h2c\")",
        ),
        (UpstreamProtocol::H2c, Some(t), _) => c.err(
            t.span(),
            "protocol = \"h2c\" is HTTP/2 without TLS: drop `tls` (or use \"h2\")",
        ),
        _ => {}
    }
    if let (Some(v), true) = (&b.send_proxy, protocol.is_h2()) {
        c.err(
            v.span(),
            "`send_proxy` needs protocol = \"http1\": an HTTP/2 connection carries many clients, a PROXY header names one",
        );
    }
    let tls = b.tls.as_ref().and_then(|t| upstream_tls(c, t, protocol));
    let health = b.health.as_ref().and_then(|h| health(c, h));
    let outlier = b.outlier.as_ref().map(|o| outlier(c, o.get_ref()));
    let queue = b.queue.as_ref().map_or(d.queue, |q| {
        let q = q.get_ref();
        QueueSpec {
            max: c.ranged(&q.max, "queue max", 0..=10_000_000, d.queue.max as i64) as usize,
            timeout: c.duration(&q.timeout, "queue timeout", d.queue.timeout),
        }
    });
    let mut spec = BackendSpec {
        health,
        outlier,
        slow_start: c.duration(&b.slow_start, "slow_start", d.slow_start),
        retry_on: b.retry_on.as_ref().map_or(d.retry_on, |r| retry_on(c, r.get_ref())),
        retry_budget: b.retry_budget.as_ref().and_then(|r| percent(c, r, "retry_budget")),
        queue,
        resolve_interval: c
            .duration(&b.resolve_interval, "resolve_interval", d.resolve_interval)
            .max(Duration::from_millis(100)),
        fail_open: b.fail_open.unwrap_or(true),
        refused_groups: Vec::new(),
        send_proxy,
        tls,
        protocol,
        name: b.name.get_ref().clone(),
        balance: b.balance,
        groups,
        connect_timeout: c.duration(&b.connect_timeout, "connect_timeout", d.connect_timeout),
        timeout: c.duration(&b.timeout, "timeout", d.timeout),
        read_timeout: c.duration(&b.read_timeout, "read_timeout", d.read_timeout),
        retries: c.ranged(&b.retries, "retries", 0..=10, d.retries as i64) as u32,
        eject_time: c.duration(&b.eject_time, "eject_time", d.eject_time),
        pool_idle_timeout: c.duration(&b.pool_idle_timeout, "pool_idle_timeout", d.pool_idle_timeout),
        pool_max_idle: c.ranged(&b.pool_max_idle, "pool_max_idle", 0..=65536, d.pool_max_idle as i64) as usize,
        drain_timeout: c.duration(&b.drain_timeout, "drain_timeout", d.drain_timeout),
        hash_key,
        sticky,
        override_,
        mirror,
    };
    spec.number_servers(Numbering::FilePosition);
    spec
}

fn hash_key(c: &mut Checker, k: &Spanned<String>) -> Option<HashKey> {
    let v = k.get_ref();
    let parsed = if v == "source_ip" {
        Some(HashKey::SourceIp)
    } else if let Some(h) = v.strip_prefix("header:") {
        http::HeaderName::from_bytes(h.as_bytes()).ok().map(HashKey::Header)
    } else if let Some(name) = v.strip_prefix("cookie:") {
        cookie_name_ok(name).then(|| HashKey::Cookie(name.to_string()))
    } else {
        None
    };
    if parsed.is_none() {
        c.err(
            k.span(),
            format!("invalid hash_key {v:?}: use \"source_ip\", \"header:<name>\" or \"cookie:<name>\""),
        );
    }
    parsed
}

/// RFC 6265 cookie-name: a token.
fn cookie_name_ok(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b))
}

/// `[listener.tls]`: every certificate and key read, parsed and paired; `None` after an
/// error (reported at the key naming the file).
fn server_tls(c: &mut Checker, t: &RawTls) -> Option<ServerTlsSpec> {
    use super::tls;
    let mut reads = tls::Reads::default();
    let mut ok = true;
    let mut certs = Vec::new();
    if t.certs.get_ref().is_empty() {
        c.err(t.certs.span(), "`certs` needs at least one { cert = ..., key = ... }");
        ok = false;
    }
    let allow_expired = t.allow_expired.unwrap_or(false);
    for pair in t.certs.get_ref() {
        let (cert_file, key_file) = (c.path(&pair.cert), c.path(&pair.key));
        let chain = reads.read(&cert_file).and_then(|pem| tls::chain(&cert_file, &pem));
        let chain = match chain {
            Ok(chain) => chain,
            Err(e) => {
                c.err(pair.cert.span(), e);
                ok = false;
                continue;
            }
        };
        let info = match tls::info(&cert_file, &chain[0]) {
            Ok(info) => info,
            Err(e) => {
                c.err(pair.cert.span(), e);
                ok = false;
                continue;
            }
        };
        if info.not_after < tls::now_unix() {
            let msg = format!(
                "{}: the certificate expired at {} (serial {})",
                cert_file.display(),
                humantime::format_rfc3339_seconds(
                    std::time::UNIX_EPOCH + Duration::from_secs(info.not_after.max(0) as u64)
                ),
                info.serial
            );
            if allow_expired {
                tracing::warn!("{msg}; loaded anyway (allow_expired = true)");
            } else {
                c.err(
                    pair.cert.span(),
                    format!("{msg}; renew it, or set allow_expired = true"),
                );
                ok = false;
                continue;
            }
        }
        let key = reads.read(&key_file).and_then(|pem| tls::key(&key_file, &pem));
        let key = match key.and_then(|key| tls::certified(chain, key, &cert_file, &key_file)) {
            Ok(key) => key,
            Err(e) => {
                c.err(pair.key.span(), e);
                ok = false;
                continue;
            }
        };
        certs.push(LoadedCert {
            cert_file,
            key_file,
            key,
            info,
        });
    }
    let min_version = match t.min_version.as_ref().map(|v| (v, v.get_ref().as_str())) {
        None | Some((_, "1.2")) => TlsVersion::V12,
        Some((_, "1.3")) => TlsVersion::V13,
        Some((v, other)) => {
            c.err(
                v.span(),
                format!("invalid min_version {other:?}: write \"1.2\" or \"1.3\""),
            );
            TlsVersion::V12
        }
    };
    let alpn = match &t.alpn {
        None => vec!["h2".to_string(), "http/1.1".to_string()],
        Some(a) => {
            if let Some(bad) = a.get_ref().iter().find(|p| !matches!(p.as_str(), "h2" | "http/1.1")) {
                c.err(
                    a.span(),
                    format!("unsupported ALPN protocol {bad:?}: veer speaks \"h2\" and \"http/1.1\""),
                );
            }
            a.get_ref().clone()
        }
    };
    let client_ca = t.client_ca.as_ref().and_then(|ca| {
        let file = c.path(ca);
        match reads.read(&file).and_then(|pem| tls::roots(&file, &pem)) {
            Ok(roots) => Some(Arc::new(roots)),
            Err(e) => {
                c.err(ca.span(), e);
                ok = false;
                None
            }
        }
    });
    if !ok {
        return None;
    }
    match tls::build::server_config(&certs, min_version, &alpn, client_ca.as_ref()) {
        Ok(config) => Some(ServerTlsSpec {
            certs,
            min_version,
            alpn,
            client_ca,
            fingerprint: reads.fingerprint(),
            files: reads.files,
            config,
        }),
        Err(e) => {
            c.err(t.certs.span(), format!("cannot set up TLS: {e}"));
            None
        }
    }
}

/// A backend's `tls`: the CA bundle (or the web PKI roots), SNI, and a client certificate.
fn upstream_tls(c: &mut Checker, t: &Spanned<RawUpstreamTls>, protocol: UpstreamProtocol) -> Option<UpstreamTlsSpec> {
    use super::tls;
    let raw = t.get_ref();
    let mut reads = tls::Reads::default();
    let mut ok = true;
    let roots = match &raw.ca {
        Some(ca) => {
            let file = c.path(ca);
            match reads.read(&file).and_then(|pem| tls::roots(&file, &pem)) {
                Ok(roots) => roots,
                Err(e) => {
                    c.err(ca.span(), e);
                    ok = false;
                    rustls::RootCertStore::empty()
                }
            }
        }
        None => tls::public_roots(),
    };
    let sni = raw
        .sni
        .as_ref()
        .and_then(|s| match rustls_pki_types::ServerName::try_from(s.get_ref().as_str()) {
            Ok(_) => Some(s.get_ref().to_ascii_lowercase()),
            Err(_) => {
                c.err(s.span(), format!("invalid sni {:?}: write a DNS name", s.get_ref()));
                ok = false;
                None
            }
        });
    let verify = raw.verify.unwrap_or(true);
    if !verify {
        tracing::warn!("a backend's tls sets verify = false: its servers' certificates are not checked");
    }
    let client_cert = match (&raw.cert, &raw.key) {
        (Some(cert), Some(key)) => {
            let (cert_file, key_file) = (c.path(cert), c.path(key));
            let loaded = reads
                .read(&cert_file)
                .and_then(|pem| tls::chain(&cert_file, &pem))
                .and_then(|chain| {
                    let key = reads.read(&key_file).and_then(|pem| tls::key(&key_file, &pem))?;
                    tls::certified(chain, key, &cert_file, &key_file)
                });
            match loaded {
                Ok(k) => Some(k),
                Err(e) => {
                    c.err(cert.span(), e);
                    ok = false;
                    None
                }
            }
        }
        (None, None) => None,
        _ => {
            c.err(t.span(), "a client certificate needs both `cert` and `key`");
            ok = false;
            None
        }
    };
    if !ok {
        return None;
    }
    let roots = Arc::new(roots);
    let alpn: &[&[u8]] = if protocol.is_h2() { &[b"h2"] } else { &[b"http/1.1"] };
    match tls::build::client_config(roots.clone(), verify, client_cert.as_ref(), alpn) {
        Ok(config) => Some(UpstreamTlsSpec {
            roots,
            sni,
            verify,
            client_cert,
            fingerprint: reads.fingerprint(),
            files: reads.files,
            config,
        }),
        Err(e) => {
            c.err(t.span(), format!("cannot set up TLS: {e}"));
            None
        }
    }
}

/// A server's `addr`: `ip:port`, or `host:port` looked up by DNS (its instances get their
/// addresses at load); the placeholder address of a DNS-named server is never connected to.
fn server_addr(c: &mut Checker, v: &Spanned<String>) -> (SocketAddr, Option<DnsName>) {
    let placeholder = SocketAddr::from(([127, 0, 0, 1], 0));
    if let Ok(a) = v.get_ref().parse::<SocketAddr>() {
        return (a, None);
    }
    let named = v.get_ref().rsplit_once(':').and_then(|(host, port)| {
        let port = port.parse::<u16>().ok().filter(|p| *p != 0)?;
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        let host = host.strip_suffix('.').unwrap_or(host);
        let ok = !host.is_empty()
            && host.len() <= 253
            && host.split('.').all(label_ok)
            && !host.bytes().all(|b| b.is_ascii_digit() || b == b'.');
        ok.then(|| DnsName {
            host: host.to_ascii_lowercase(),
            port,
        })
    });
    match named {
        Some(name) => (SocketAddr::new(placeholder.ip(), name.port), Some(name)),
        None => {
            c.err(
                v.span(),
                format!(
                    "invalid server address {:?}: expected ip:port or host:port, e.g. 127.0.0.1:8080 or shop.internal:8080",
                    v.get_ref()
                ),
            );
            (placeholder, None)
        }
    }
}

/// `"20%"` → 20 (0..=100).
fn percent(c: &mut Checker, v: &Spanned<String>, key: &str) -> Option<u32> {
    let n = v
        .get_ref()
        .trim()
        .strip_suffix('%')
        .and_then(|n| n.trim().parse::<u32>().ok())
        .filter(|n| *n <= 100);
    if n.is_none() {
        c.err(
            v.span(),
            format!("invalid {key} {:?}: write a percentage, e.g. \"20%\"", v.get_ref()),
        );
    }
    n
}

/// `[access_log]`'s sink: `syslog` (UDP `ip:port` or a unix socket path, with its
/// `facility`), else `path` (a file, or "stdout", the default).
fn log_sink(c: &mut Checker, a: &RawAccessLog) -> LogSink {
    const FACILITIES: [(&str, u8); 10] = [
        ("user", 1),
        ("daemon", 3),
        ("local0", 16),
        ("local1", 17),
        ("local2", 18),
        ("local3", 19),
        ("local4", 20),
        ("local5", 21),
        ("local6", 22),
        ("local7", 23),
    ];
    let facility = match &a.facility {
        None => 16,
        Some(f) => match FACILITIES.iter().find(|(name, _)| *name == f.get_ref().as_str()) {
            Some((_, n)) => *n,
            None => {
                c.err(
                    f.span(),
                    format!(
                        "invalid facility {:?}: write \"local0\" … \"local7\", \"user\" or \"daemon\"",
                        f.get_ref()
                    ),
                );
                16
            }
        },
    };
    if let (Some(f), None) = (&a.facility, &a.syslog) {
        c.err(
            f.span(),
            "`facility` is for a `syslog` sink: add `syslog = \"127.0.0.1:514\"` or remove it",
        );
    }
    match (&a.syslog, &a.path) {
        (Some(s), Some(_)) => {
            c.err(s.span(), "`syslog` and `path` are two sinks: keep one");
            LogSink::Stdout
        }
        (Some(s), None) => {
            let v = s.get_ref();
            let target = if v.starts_with('/') {
                SyslogTarget::Unix(PathBuf::from(v))
            } else {
                match v.parse::<SocketAddr>() {
                    Ok(addr) => SyslogTarget::Udp(addr),
                    Err(_) => {
                        c.err(
                            s.span(),
                            format!("invalid syslog target {v:?}: write ip:port for UDP (\"127.0.0.1:514\") or a unix socket path (\"/dev/log\")"),
                        );
                        return LogSink::Stdout;
                    }
                }
            };
            LogSink::Syslog { target, facility }
        }
        (None, Some(p)) if p.get_ref() != "stdout" => LogSink::File(PathBuf::from(p.get_ref())),
        (None, _) => LogSink::Stdout,
    }
}

fn retry_on(c: &mut Checker, items: &[Spanned<String>]) -> RetryOn {
    let mut on = RetryOn {
        connect: false,
        gateway_error: false,
        reset: false,
    };
    for i in items {
        match i.get_ref().as_str() {
            "connect" => on.connect = true,
            "gateway-error" => on.gateway_error = true,
            "reset" => on.reset = true,
            other => c.err(
                i.span(),
                format!("invalid retry_on {other:?}: write \"connect\", \"gateway-error\" or \"reset\""),
            ),
        }
    }
    on
}

fn outlier(c: &mut Checker, o: &RawOutlier) -> OutlierSpec {
    let base = c.duration(&o.base_ejection, "base_ejection", Duration::from_secs(30));
    let max = c.duration(&o.max_ejection, "max_ejection", Duration::from_secs(300));
    if max < base {
        if let Some(m) = &o.max_ejection {
            c.err(m.span(), "max_ejection is shorter than base_ejection");
        }
    }
    OutlierSpec {
        consecutive_5xx: c.ranged(&o.consecutive_5xx, "consecutive_5xx", 0..=10_000, 5) as u32,
        consecutive_gateway_failure: c.ranged(
            &o.consecutive_gateway_failure,
            "consecutive_gateway_failure",
            0..=10_000,
            0,
        ) as u32,
        base_ejection: base,
        max_ejection: max.max(base),
        max_ejected_percent: c.ranged(&o.max_ejected_percent, "max_ejected_percent", 0..=100, 10) as u32,
    }
}

/// A backend's `health`: HTTP (`path`, `host`, `expect`) or `tcp = true`, with timing.
fn health(c: &mut Checker, h: &Spanned<RawHealth>) -> Option<HealthSpec> {
    let raw = h.get_ref();
    let kind = match (raw.tcp.unwrap_or(false), &raw.path) {
        (true, Some(p)) => {
            c.err(
                p.span(),
                "a health check is either `tcp = true` or an HTTP `path`, not both",
            );
            return None;
        }
        (true, None) => CheckKind::Tcp,
        (false, None) => {
            c.err(h.span(), "`health` needs a `path` (HTTP check) or `tcp = true`");
            return None;
        }
        (false, Some(p)) => {
            if !p.get_ref().starts_with('/') {
                c.err(p.span(), format!("health path {:?} must start with '/'", p.get_ref()));
            }
            let expect = match &raw.expect {
                None => vec![(200, 299)],
                Some(e) => {
                    let items: Vec<toml::Value> = match e.get_ref() {
                        toml::Value::Array(a) => a.clone(),
                        one => vec![one.clone()],
                    };
                    let ranges: Option<Vec<(u16, u16)>> = items.iter().map(status_range).collect();
                    match ranges {
                        Some(r) if !r.is_empty() => r,
                        _ => {
                            c.err(
                                e.span(),
                                "invalid expect: write \"2xx\", \"200\", \"200-399\" or a list of those",
                            );
                            vec![(200, 299)]
                        }
                    }
                }
            };
            CheckKind::Http {
                path: p.get_ref().clone(),
                host: raw.host.clone(),
                expect,
            }
        }
    };
    let interval = c.duration(&raw.interval, "interval", Duration::from_secs(2));
    let timeout = c.duration(&raw.timeout, "timeout", Duration::from_secs(1));
    if interval.is_zero() {
        if let Some(i) = &raw.interval {
            c.err(i.span(), "health interval must be more than 0s");
        }
    }
    Some(HealthSpec {
        kind,
        interval: interval.max(Duration::from_millis(1)),
        timeout,
        rise: c.ranged(&raw.rise, "rise", 1..=100, 2) as u32,
        fall: c.ranged(&raw.fall, "fall", 1..=100, 3) as u32,
    })
}

/// One `expect` item: "2xx", "200", 200 or "200-399".
fn status_range(v: &toml::Value) -> Option<(u16, u16)> {
    let text = match v {
        toml::Value::Integer(n) => n.to_string(),
        toml::Value::String(s) => s.trim().to_ascii_lowercase(),
        _ => return None,
    };
    let code = |s: &str| s.parse::<u16>().ok().filter(|c| (100..=599).contains(c));
    if let Some(class) = text.strip_suffix("xx") {
        let d = class.parse::<u16>().ok().filter(|d| (1..=5).contains(d))?;
        return Some((d * 100, d * 100 + 99));
    }
    match text.split_once('-') {
        Some((a, b)) => Some((code(a.trim())?, code(b.trim())?)).filter(|(a, b)| a <= b),
        None => code(&text).map(|c| (c, c)),
    }
}

/// One `[[notify]]` webhook.
fn notify(c: &mut Checker, n: &RawNotify) -> NotifySpec {
    let url = match n.url.get_ref().parse::<http::Uri>() {
        Ok(u) if matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some() => u,
        _ => {
            c.err(
                n.url.span(),
                format!(
                    "invalid notify url {:?}: expected http://host[:port]/path or https://…",
                    n.url.get_ref()
                ),
            );
            http::Uri::default()
        }
    };
    let mut events = Vec::new();
    if let Some(list) = &n.events {
        for e in list.get_ref() {
            if NOTIFY_EVENTS.contains(&e.as_str()) {
                events.push(e.clone());
            } else {
                c.err(
                    list.span(),
                    format!(
                        "unknown notify event {e:?}: expected one of {}",
                        NOTIFY_EVENTS.join(", ")
                    ),
                );
            }
        }
    }
    NotifySpec {
        url,
        events,
        format: n.format.unwrap_or_default(),
        timeout: c.duration(&n.timeout, "notify timeout", Duration::from_secs(5)),
        queue: c.ranged(&n.queue, "notify queue", 1..=100_000, 1000) as usize,
        ca: n.ca.as_ref().map(PathBuf::from),
    }
}
