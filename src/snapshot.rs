//! The one snapshot: everything routing reads, immutable, behind one `ArcSwap`.
//!
//! A request is routed entirely by one snapshot (design §2): the data paths `load()` it once,
//! resolve their route and backend, and keep an `Arc` of the backend for the rest of the
//! exchange. Snapshots are built off the hot path from a validated [`Spec`]; the per-server
//! atomics come from the [`Registry`] so they survive every rebuild.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderValue;

use crate::balance::hash;
use crate::balance::schedule::Schedule;
use crate::config::{AdminState, BackendSpec, Balance, HashKey, OverrideSpec, Spec, StickySpec};
use crate::routing::RouteTable;
use crate::state::pool::Pool;
use crate::state::{BackendState, PoolKey, Registry, ServerState};

pub struct Snapshot {
    /// Increments with every swap.
    pub generation: u64,
    pub spec: Arc<Spec>,
    pub listeners: HashMap<String, Listener>,
    pub backends: Vec<Arc<Backend>>,
    pub backend_index: HashMap<String, usize>,
}

/// A listener as its connections see it, looked up by name per connection (a reload may
/// even switch a listener between http and tcp, or add TLS, without rebinding).
pub struct Listener {
    pub routes: ListenerRoutes,
    /// Read once per connection (an idle connection keeps only this `Arc`).
    pub opts: Arc<ListenerOpts>,
}

/// What a listener does with a connection.
pub enum ListenerRoutes {
    Http(RouteTable),
    Tcp {
        backend: usize,
    },
    /// tcp listeners routing TLS by the ClientHello's server name, without terminating:
    /// the table's host is the SNI ("" for a client without one, or not speaking TLS).
    Sni(RouteTable),
}

/// A listener's per-connection settings.
pub struct ListenerOpts {
    pub idle_timeout: Duration,
    /// TLS termination: the configuration new handshakes use.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    pub redirect_https: bool,
    pub hsts: Option<HeaderValue>,
    pub accept_proxy: bool,
    /// Largest request body (413 beyond); 0 = no limit.
    pub max_body: u64,
}

pub struct Backend {
    pub name: Arc<str>,
    pub balance: Balance,
    pub groups: Vec<Group>,
    /// Smooth cycle over group indices by split weight.
    pub split: Schedule,
    pub connect_timeout: Duration,
    pub timeout: Duration,
    /// Longest wait for the next bytes of a response body; zero = no limit.
    pub read_timeout: Duration,
    pub retries: u32,
    pub eject_time: Duration,
    pub drain_timeout: Duration,
    pub hash_key: Option<HashKey>,
    pub sticky: Option<Sticky>,
    pub override_: Option<OverrideSpec>,
    pub mirror: Option<Mirror>,
    /// A PROXY protocol header opens every upstream connection (which then serves one
    /// client only).
    pub send_proxy: Option<crate::config::ProxyVersion>,
    /// TLS to the servers.
    pub tls: Option<crate::config::UpstreamTlsSpec>,
    pub protocol: crate::config::UpstreamProtocol,
    /// Every server down or ejected: try them anyway (true) or fail at once.
    pub fail_open: bool,
    pub outlier: Option<crate::config::OutlierSpec>,
    /// Slow start's ramp in ms; 0 = none.
    pub slow_start_ms: u64,
    pub retry_on: crate::config::RetryOn,
    pub retry_budget: Option<u32>,
    pub queue: crate::config::QueueSpec,
    /// Some server has a `maxconn`: requests take slots and may queue.
    pub limited: bool,
    /// Indices of groups whose share is answered 500 (unresolved references).
    pub refused: Vec<usize>,
    /// Some group routes zone-aware (its picks are counted local or cross-zone).
    pub zone_aware: bool,
    /// How long requests waited in the queue.
    pub queue_wait: ::metrics::Histogram,
    /// Counters that outlive snapshots (mirroring).
    pub state: Arc<BackendState>,
}

impl Backend {
    /// Every server, group by group (the order of `show stat` and of `#<id>`).
    pub fn servers(&self) -> impl Iterator<Item = &Arc<Server>> {
        self.groups.iter().flat_map(|g| &g.servers)
    }
}

/// Sticky-cookie settings and the cookie value → server index, built once per snapshot.
pub struct Sticky {
    pub cookie: String,
    servers: HashMap<u64, Arc<Server>>,
}

impl Sticky {
    /// The server a cookie value names, if any.
    pub fn server(&self, id: u64) -> Option<&Arc<Server>> {
        self.servers.get(&id)
    }
}

/// Where and how much traffic is mirrored.
pub struct Mirror {
    /// Index into `Backend::groups`.
    pub group: usize,
    pub percent: u32,
    pub max_body: u64,
}

pub struct Group {
    pub name: Arc<str>,
    /// Rendezvous identity for consistent hashing across groups.
    pub hash_id: u64,
    pub weight: u32,
    pub servers: Vec<Arc<Server>>,
    /// Smooth cycle over server indices by server weight.
    pub rr: Schedule,
    /// Zone-aware routing on and the servers in more than one zone: how many zones.
    pub zones: Option<u64>,
}

pub struct Server {
    pub name: Arc<str>,
    /// `backend/server`, how every tool names it.
    pub id: Arc<str>,
    /// HAProxy's numeric server id ([`ServerSpec::id`](crate::config::ServerSpec::id)).
    pub sid: u32,
    pub group: Arc<str>,
    pub addr: SocketAddr,
    pub weight: u32,
    pub initial_weight: u32,
    pub admin: AdminState,
    pub state: Arc<ServerState>,
    pub pool: Arc<Pool>,
    /// Stable identity: XXH3 of `backend/server`. The sticky cookie's value and the
    /// rendezvous hashing node id.
    pub sticky_id: u64,
    /// The `Set-Cookie` value naming this server, when its backend is sticky.
    pub set_cookie: Option<HeaderValue>,
    pub metrics: crate::metrics::ServerMetrics,
    /// `disable health`: no check loop; the server counts as UP.
    pub checks_disabled: bool,
    /// The backend's TLS settings and protocol as its pool knows them ([`PoolKey::transport`]).
    pub pool_transport: u64,
    /// Most requests (HTTP) or connections (TCP) at once; 0 = no limit.
    pub maxconn: u32,
    /// Zone-aware routing: the server runs in veer's zone.
    pub local: bool,
}

impl Server {
    /// The server's response headers arrived `after` the request was sent.
    pub fn answered(&self, after: std::time::Duration) {
        self.metrics.upstream.record(after);
        self.state.latency.record(after);
    }
}

/// The sticky cookie's value for a server id: 16 lowercase hex digits.
pub fn sticky_value(id: u64) -> String {
    format!("{id:016x}")
}

fn set_cookie(sticky: &StickySpec, id: u64) -> Option<HeaderValue> {
    let mut c = cookie::Cookie::build((sticky.cookie.clone(), sticky_value(id)))
        .path(sticky.path.clone())
        .http_only(sticky.http_only)
        .secure(sticky.secure);
    if let Some(age) = sticky.max_age {
        c = c.max_age(cookie::time::Duration::seconds(age.as_secs() as i64));
    }
    if let Some(same_site) = sticky.same_site {
        c = c.same_site(match same_site {
            crate::config::SameSite::Strict => cookie::SameSite::Strict,
            crate::config::SameSite::Lax => cookie::SameSite::Lax,
            crate::config::SameSite::None => cookie::SameSite::None,
        });
    }
    HeaderValue::from_str(&c.build().to_string()).ok()
}

impl Snapshot {
    /// An empty snapshot: every listener lookup fails. Serves until the first build.
    pub fn empty() -> Self {
        Snapshot {
            generation: 0,
            spec: Arc::new(Spec::default()),
            listeners: HashMap::new(),
            backends: Vec::new(),
            backend_index: HashMap::new(),
        }
    }

    /// Builds from a validated spec. Infallible: validation already rejected what could fail.
    /// Returns the snapshot and the `(backend, server)` ids that were dropped.
    pub fn build(spec: Arc<Spec>, registry: &mut Registry, generation: u64) -> (Self, Vec<(String, String)>) {
        let mut reg = registry.begin();
        let backends: Vec<Arc<Backend>> = spec
            .backends
            .iter()
            .map(|b| {
                let zone = spec.runtime.zone.as_deref().filter(|_| spec.runtime.zone_aware);
                Arc::new(build_backend(b, &mut reg, generation, zone))
            })
            .collect();
        let dropped = reg.finish();
        let backend_index: HashMap<String, usize> = backends
            .iter()
            .enumerate()
            .map(|(i, b)| (b.name.to_string(), i))
            .collect();
        let index = |name: &str| backend_index.get(name).copied().unwrap_or(0);
        let listeners = spec
            .listeners
            .iter()
            .map(|l| {
                let routes = match (&l.backend, l.protocol) {
                    (Some(b), _) => ListenerRoutes::Tcp { backend: index(b) },
                    (None, crate::config::Protocol::Http) => ListenerRoutes::Http(RouteTable::build(&l.routes, index)),
                    (None, crate::config::Protocol::Tcp) => {
                        // The SNI is matched as the host is: exact names, then `*.suffix`.
                        let by_sni: Vec<_> = l
                            .routes
                            .iter()
                            .map(|r| crate::config::RouteSpec {
                                host: r.sni.clone(),
                                ..r.clone()
                            })
                            .collect();
                        ListenerRoutes::Sni(RouteTable::build(&by_sni, index))
                    }
                };
                let opts = Arc::new(ListenerOpts {
                    idle_timeout: l.idle_timeout,
                    tls: l.tls.as_ref().map(|t| t.config.clone()),
                    redirect_https: l.redirect_https,
                    hsts: l.hsts.clone(),
                    accept_proxy: l.accept_proxy,
                    max_body: l.max_body,
                });
                (l.name.clone(), Listener { routes, opts })
            })
            .collect();
        (
            Snapshot {
                generation,
                spec,
                listeners,
                backends,
                backend_index,
            },
            dropped,
        )
    }

    /// Every server of every backend.
    pub fn servers(&self) -> impl Iterator<Item = &Arc<Server>> {
        self.backends.iter().flat_map(|b| b.servers())
    }

    pub fn backend(&self, name: &str) -> Option<&Arc<Backend>> {
        self.backend_index.get(name).map(|i| &self.backends[*i])
    }
}

/// `zone`: veer's own, when zone-aware routing is on.
fn build_backend(
    b: &BackendSpec,
    reg: &mut crate::state::RegistryBuild<'_>,
    generation: u64,
    zone: Option<&str>,
) -> Backend {
    let name: Arc<str> = b.name.as_str().into();
    let backend_state = reg.backend(&b.name);
    let slow_start_ms = b.slow_start.as_millis() as u64;
    let now = crate::clock::now_ms();
    let mut index = 0;
    let groups: Vec<Group> = b
        .groups
        .iter()
        .map(|g| {
            let group: Arc<str> = g.name.as_str().into();
            let servers: Vec<Arc<Server>> = g
                .servers
                .iter()
                // A DNS-named server not expanded into its instances (`name#n`) has no
                // address to serve from.
                .filter(|s| s.dns.is_none() || s.name.contains('#'))
                .map(|s| {
                    let key = PoolKey {
                        addr: s.addr,
                        max_idle: b.pool_max_idle,
                        idle_timeout: b.pool_idle_timeout,
                        // New TLS material, SNI or protocol: connections made with the old go.
                        transport: b.tls.as_ref().map_or(0, |t| {
                            t.fingerprint.0 ^ hash::key(t.sni.as_deref().unwrap_or("").as_bytes()) ^ t.verify as u64
                        }) ^ b.protocol as u64,
                    };
                    let (state, pool, fresh) = reg.get(&b.name, &s.name, key);
                    // With active checks, a server that appears after start (a reload, `add
                    // server`) is DOWN until it passes `rise` checks; those present at
                    // start are UP (HAProxy's behaviour).
                    if fresh && generation > 1 && b.health.is_some() && !s.checks_disabled {
                        state.check.force(true);
                    }
                    state.set_draining(s.state == AdminState::Drain, b.drain_timeout);
                    // Added after start, or ready again after maint or drain: slow start.
                    if state.set_admin(s.state) || (fresh && generation > 1) {
                        backend_state.warm(&state, now, slow_start_ms);
                    }
                    pool.set_reuse(s.state == AdminState::Ready);
                    let id = format!("{}/{}", b.name, s.name);
                    let sticky_id = hash::node_id(&id);
                    let metrics = reg.server_metrics(&b.name, &g.name, &s.name, index);
                    index += 1;
                    Arc::new(Server {
                        metrics,
                        name: s.name.as_str().into(),
                        id: id.into(),
                        sid: s.id,
                        group: group.clone(),
                        addr: s.addr,
                        weight: s.weight,
                        initial_weight: s.initial_weight,
                        admin: s.state,
                        state,
                        pool,
                        sticky_id,
                        set_cookie: b.sticky.as_ref().and_then(|st| set_cookie(st, sticky_id)),
                        checks_disabled: s.checks_disabled,
                        pool_transport: key.transport,
                        maxconn: s.maxconn,
                        local: zone.is_some() && s.zone.as_deref() == zone,
                    })
                })
                .collect();
            let weights: Vec<u32> = servers.iter().map(|s| s.weight).collect();
            // Zone-aware: the zones the group's servers run in (no zone counts as one).
            let zones = zone.map(|_| {
                let mut seen: Vec<Option<&str>> = g.servers.iter().map(|s| s.zone.as_deref()).collect();
                seen.sort();
                seen.dedup();
                seen.len() as u64
            });
            Group {
                hash_id: hash::node_id(&format!("{}\0group\0{}", b.name, g.name)),
                name: group,
                weight: g.weight,
                rr: Schedule::smooth(&weights),
                servers,
                zones: zones.filter(|&n| n > 1),
            }
        })
        .collect();
    let split: Vec<u32> = groups.iter().map(|g| g.weight).collect();
    let sticky = b.sticky.as_ref().map(|st| Sticky {
        cookie: st.cookie.clone(),
        servers: groups
            .iter()
            .flat_map(|g| &g.servers)
            .map(|s| (s.sticky_id, s.clone()))
            .collect(),
    });
    let mirror = b.mirror.as_ref().and_then(|m| {
        let group = groups.iter().position(|g| *g.name == *m.group)?;
        Some(Mirror {
            group,
            percent: m.percent,
            max_body: m.max_body,
        })
    });
    Backend {
        state: backend_state,
        limited: b.servers().any(|s| s.maxconn > 0),
        zone_aware: groups.iter().any(|g| g.zones.is_some()),
        refused: (b.groups.iter().enumerate())
            .filter(|(_, g)| b.refused_groups.contains(&g.name))
            .map(|(i, _)| i)
            .collect(),
        queue_wait: reg.queue_wait(&b.name),
        outlier: b.outlier.clone(),
        slow_start_ms,
        retry_on: b.retry_on,
        retry_budget: b.retry_budget,
        queue: b.queue,
        name,
        balance: b.balance,
        split: Schedule::smooth(&split),
        groups,
        connect_timeout: b.connect_timeout,
        timeout: b.timeout,
        read_timeout: b.read_timeout,
        retries: b.retries,
        eject_time: b.eject_time,
        drain_timeout: b.drain_timeout,
        hash_key: b.hash_key.clone(),
        sticky,
        override_: b.override_.clone(),
        mirror,
        send_proxy: b.send_proxy,
        tls: b.tls.clone(),
        protocol: b.protocol,
        fail_open: b.fail_open,
    }
}
