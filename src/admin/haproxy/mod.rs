//! HAProxy's runtime-API output formats, byte for byte where tools parse them
//! (../shared/haproxy-runtime-api.md): `show info`, `show stat` (the 88 HAProxy 2.0 columns),
//! `show servers state`, `show backend`. Everything is read from one snapshot plus the
//! servers' atomics.

pub mod fields;

use std::fmt::Write;
use std::sync::atomic::Ordering::Relaxed;

use crate::clock::now_ms;
use crate::config::{AdminState, Balance, Protocol};
use crate::control::Veer;
use crate::snapshot::{Backend, Server, Snapshot};

/// `show info` announces this version so tools that gate features on HAProxy's version
/// (Ansible skips `state=drain` below 1.5) treat veer as a modern HAProxy.
pub const HAPROXY_COMPAT_VERSION: &str = "2.8.0";

pub fn version() -> String {
    format!("{HAPROXY_COMPAT_VERSION}-veer-{}", env!("CARGO_PKG_VERSION"))
}

/// `show info`: HAProxy 2.6's 69 fields in its order (tests/fixtures/haproxy-2.6/
/// show_info.txt), with veer's values where it has them and `0` where the field has no
/// meaning here (pools, pipes, compression, peers, SSL rate limits); then veer's own
/// `Generation`. `Name` and `Version` say veer (the version in HAProxy's numbering, see
/// [`HAPROXY_COMPAT_VERSION`]).
pub async fn show_info(veer: &Veer) -> String {
    let uptime = veer.started().elapsed().map(|d| d.as_secs()).unwrap_or(0);
    let started = veer
        .started()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let shared = &veer.shared;
    let snap = veer.snapshot();
    let threads = std::env::var("TOKIO_WORKER_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .or(snap.spec.runtime.workers)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let listeners = veer.listener_stats().await;
    let sum = |f: &dyn Fn(&crate::metrics::ListenerStats) -> u64| listeners.iter().map(|(_, l)| f(l)).sum::<u64>();
    let requests = sum(&|l| l.responses.iter().map(|c| c.load(Relaxed)).sum());
    let tls_ok = crate::metrics::TLS_RESULTS.iter().position(|r| *r == "ok");
    let tls = sum(&|l| tls_ok.map_or(0, |i| l.tls_handshakes[i].load(Relaxed)));
    let bytes_out: u64 = snap.servers().map(|s| s.state.response_bytes.load(Relaxed)).sum();
    let nofile = rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .current
        .unwrap_or(0);
    let maxconn = match snap.spec.listeners.iter().map(|l| l.max_connections).sum::<usize>() {
        0 => nofile,
        n => n as u64,
    };
    let (tasks, queue) = tokio::runtime::Handle::try_current().map_or((0, 0), |h| {
        let m = h.metrics();
        (m.num_alive_tasks(), m.global_queue_depth())
    });
    let node = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let current = shared.current_conns.load(Relaxed);
    let stopping = shared.stopping.is_cancelled() || veer.draining();
    let version = version();
    let uptime_text = format!(
        "{}d {}h{:02}m{:02}s",
        uptime / 86400,
        uptime / 3600 % 24,
        uptime / 60 % 60,
        uptime % 60
    );
    let fields: [(&str, String); 70] = [
        ("Name", "veer".into()),
        ("Version", version.clone()),
        ("Release_date", RELEASE_DATE.into()),
        ("Nbthread", threads.to_string()),
        ("Nbproc", "1".into()),
        ("Process_num", "1".into()),
        ("Pid", std::process::id().to_string()),
        ("Uptime", uptime_text),
        ("Uptime_sec", uptime.to_string()),
        ("Memmax_MB", "0".into()),
        ("PoolAlloc_MB", "0".into()),
        ("PoolUsed_MB", "0".into()),
        ("PoolFailed", "0".into()),
        ("Ulimit-n", nofile.to_string()),
        ("Maxsock", nofile.to_string()),
        ("Maxconn", maxconn.to_string()),
        ("Hard_maxconn", maxconn.to_string()),
        ("CurrConns", current.to_string()),
        ("CumConns", shared.total_conns.load(Relaxed).to_string()),
        ("CumReq", requests.to_string()),
        ("MaxSslConns", "0".into()),
        ("CurrSslConns", "0".into()),
        ("CumSslConns", tls.to_string()),
        ("Maxpipes", "0".into()),
        ("PipesUsed", "0".into()),
        ("PipesFree", "0".into()),
        ("ConnRate", "0".into()),
        ("ConnRateLimit", "0".into()),
        ("MaxConnRate", "0".into()),
        ("SessRate", "0".into()),
        ("SessRateLimit", "0".into()),
        ("MaxSessRate", "0".into()),
        ("SslRate", "0".into()),
        ("SslRateLimit", "0".into()),
        ("MaxSslRate", "0".into()),
        ("SslFrontendKeyRate", "0".into()),
        ("SslFrontendMaxKeyRate", "0".into()),
        ("SslFrontendSessionReuse_pct", "0".into()),
        ("SslBackendKeyRate", "0".into()),
        ("SslBackendMaxKeyRate", "0".into()),
        ("SslCacheLookups", "0".into()),
        ("SslCacheMisses", "0".into()),
        ("CompressBpsIn", "0".into()),
        ("CompressBpsOut", "0".into()),
        ("CompressBpsRateLim", "0".into()),
        ("Tasks", tasks.to_string()),
        ("Run_queue", queue.to_string()),
        // Not measured: empty rather than a made-up 100.
        ("Idle_pct", String::new()),
        ("node", node.trim().to_string()),
        ("Stopping", u8::from(stopping).to_string()),
        ("Jobs", (current + listeners.len()).to_string()),
        ("Unstoppable Jobs", "0".into()),
        ("Listeners", listeners.len().to_string()),
        ("ActivePeers", "0".into()),
        ("ConnectedPeers", "0".into()),
        (
            "DroppedLogs",
            shared.access_log.as_ref().map_or(0, |l| l.dropped()).to_string(),
        ),
        ("BusyPolling", "0".into()),
        ("FailedResolutions", "0".into()),
        ("TotalBytesOut", bytes_out.to_string()),
        // Sic: HAProxy's own spelling, which tools match.
        ("TotalSplicdedBytesOut", "0".into()),
        ("BytesOutRate", "0".into()),
        ("DebugCommandsIssued", "0".into()),
        ("CumRecvLogs", "0".into()),
        ("Build info", version),
        ("Memmax_bytes", "0".into()),
        ("PoolAlloc_bytes", "0".into()),
        ("PoolUsed_bytes", "0".into()),
        ("Start_time_sec", started.to_string()),
        ("Tainted", "0".into()),
        ("Generation", snap.generation.to_string()),
    ];
    fields.iter().map(|(k, v)| format!("{k}: {v}\n")).collect()
}

/// When this binary was built, as `show info` says it (HAProxy's `YYYY/MM/DD`; build.rs,
/// `SOURCE_DATE_EPOCH` for a reproducible build).
const RELEASE_DATE: &str = env!("VEER_BUILD_DATE");

/// The HAProxy 2.0 static columns, in order.
pub const STAT_COLUMNS: [&str; 88] = [
    "pxname",
    "svname",
    "qcur",
    "qmax",
    "scur",
    "smax",
    "slim",
    "stot",
    "bin",
    "bout",
    "dreq",
    "dresp",
    "ereq",
    "econ",
    "eresp",
    "wretr",
    "wredis",
    "status",
    "weight",
    "act",
    "bck",
    "chkfail",
    "chkdown",
    "lastchg",
    "downtime",
    "qlimit",
    "pid",
    "iid",
    "sid",
    "throttle",
    "lbtot",
    "tracked",
    "type",
    "rate",
    "rate_lim",
    "rate_max",
    "check_status",
    "check_code",
    "check_duration",
    "hrsp_1xx",
    "hrsp_2xx",
    "hrsp_3xx",
    "hrsp_4xx",
    "hrsp_5xx",
    "hrsp_other",
    "hanafail",
    "req_rate",
    "req_rate_max",
    "req_tot",
    "cli_abrt",
    "srv_abrt",
    "comp_in",
    "comp_out",
    "comp_byp",
    "comp_rsp",
    "lastsess",
    "last_chk",
    "last_agt",
    "qtime",
    "ctime",
    "rtime",
    "ttime",
    "agent_status",
    "agent_code",
    "agent_duration",
    "check_desc",
    "agent_desc",
    "check_rise",
    "check_fall",
    "check_health",
    "agent_rise",
    "agent_fall",
    "agent_health",
    "addr",
    "cookie",
    "mode",
    "algo",
    "conn_rate",
    "conn_rate_max",
    "conn_tot",
    "intercepted",
    "dcon",
    "dses",
    "wrew",
    "connect",
    "reuse",
    "cache_lookups",
    "cache_hits",
];

/// The per-class response columns, in [`crate::state::STATUS_CLASSES`] order.
const HRSP: [&str; 6] = ["hrsp_1xx", "hrsp_2xx", "hrsp_3xx", "hrsp_4xx", "hrsp_5xx", "hrsp_other"];

fn col(name: &str) -> usize {
    STAT_COLUMNS.iter().position(|c| *c == name).unwrap_or(0)
}

/// One CSV row under construction; unset fields stay empty.
struct Row([String; 88]);

impl Row {
    fn new(pxname: &str, svname: &str, kind: u8, iid: usize, sid: usize) -> Row {
        let mut r = Row(std::array::from_fn(|_| String::new()));
        r.set("pxname", pxname)
            .set("svname", svname)
            .set("type", kind)
            .set("pid", 1)
            .set("iid", iid)
            .set("sid", sid);
        r.set("qcur", 0).set("qmax", 0);
        r
    }

    fn set(&mut self, name: &str, v: impl ToString) -> &mut Row {
        self.0[col(name)] = v.to_string();
        self
    }

    fn write(&self, out: &mut String) {
        for field in &self.0 {
            if field.contains(',') || field.contains('"') {
                let _ = write!(out, "\"{}\",", field.replace('"', "\"\""));
            } else {
                let _ = write!(out, "{field},");
            }
        }
        out.push('\n');
    }
}

/// The server's `status` column, as HAProxy writes it: `MAINT`, `DRAIN`, `DOWN`, `UP`, and
/// while checks move a server `UP 2/3` (going down: `fall` minus the failures so far, of
/// `fall`) or `DOWN 1/2` (going up: passes so far, of `rise`); `no check` for a server of a
/// backend without `health` (`disable health` shows `UP`, as its checks are only paused).
pub fn server_status(
    s: &Server,
    health: Option<&crate::config::HealthSpec>,
    now: u64,
) -> std::borrow::Cow<'static, str> {
    use std::borrow::Cow;
    match s.admin {
        AdminState::Maint => Cow::Borrowed("MAINT"),
        AdminState::Drain => Cow::Borrowed("DRAIN"),
        AdminState::Ready => health_status(s, health, now),
    }
}

/// The health half of [`server_status`], whatever the admin state: `DOWN` while ejected by
/// passive health, else what the checks say (`UP`, `DOWN`, `UP 2/3`, `DOWN 1/2`, `no check`).
pub fn health_status(
    s: &Server,
    health: Option<&crate::config::HealthSpec>,
    now: u64,
) -> std::borrow::Cow<'static, str> {
    use std::borrow::Cow;
    let check = &s.state.check;
    let moving = check.streak();
    if s.state.is_ejected(now) {
        return Cow::Borrowed("DOWN");
    }
    match health.filter(|_| check.running.load(Relaxed)) {
        Some(h) if check.is_down() && moving > 0 => Cow::Owned(format!("DOWN {moving}/{}", h.rise)),
        Some(_) if check.is_down() => Cow::Borrowed("DOWN"),
        Some(h) if moving > 0 => Cow::Owned(format!("UP {}/{}", h.fall - moving, h.fall)),
        _ if health.is_none() => Cow::Borrowed("no check"),
        _ => Cow::Borrowed("UP"),
    }
}

/// A server's (or a backend's) `show stat` figures beyond counts (see
/// [`crate::state::stats`]).
#[derive(Default)]
struct Figures {
    bin: u64,
    bout: u64,
    wretr: u64,
    wredis: u64,
    /// veer's own 502/504 for the server (nothing from it reached the client).
    eresp: u64,
    srv_abrt: u64,
    cli_abrt: u64,
    rate: u64,
    /// `None` for a backend: its peak is not the sum of its servers' peaks.
    rate_max: Option<u64>,
    /// Seconds since the last session; `None`: none yet (HAProxy's `-1`).
    lastsess: Option<u64>,
    /// qtime, ctime, rtime, ttime in ms, and over how many requests (at most 1,024).
    times: [u64; 4],
    samples: u64,
}

impl Figures {
    fn of(server: &crate::state::ServerState, now: u64) -> Figures {
        let st = &server.stats;
        let (rate, rate_max, lastsess) = st.rate.read(now);
        Figures {
            eresp: server.failures.load(Relaxed),
            srv_abrt: st.server_aborts.load(Relaxed),
            cli_abrt: st.client_aborts.load(Relaxed),
            bin: st.bytes_in.load(Relaxed),
            bout: st.bytes_out.load(Relaxed),
            wretr: st.retries.load(Relaxed),
            wredis: st.redispatches.load(Relaxed),
            rate,
            rate_max: Some(rate_max),
            lastsess,
            times: st.averages(),
            samples: st.timed.load(Relaxed).min(crate::state::stats::SAMPLES),
        }
    }

    /// A backend's figures from its servers': bytes, retries, redispatches and the rate add
    /// up; the last session is the latest of any; the times are the servers' averages
    /// weighted by how many requests each holds.
    fn sum(servers: &[Figures]) -> Figures {
        let mut all = Figures::default();
        for f in servers {
            all.bin += f.bin;
            all.bout += f.bout;
            all.wretr += f.wretr;
            all.wredis += f.wredis;
            all.eresp += f.eresp;
            all.srv_abrt += f.srv_abrt;
            all.cli_abrt += f.cli_abrt;
            all.rate += f.rate;
            all.lastsess = match (all.lastsess, f.lastsess) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            for (t, v) in all.times.iter_mut().zip(f.times) {
                *t += v * f.samples;
            }
            all.samples += f.samples;
        }
        all.times = all.times.map(|t| t.checked_div(all.samples).unwrap_or(0));
        all
    }

    fn write(&self, r: &mut Row) {
        r.set("bin", self.bin)
            .set("bout", self.bout)
            .set("wretr", self.wretr)
            .set("wredis", self.wredis)
            .set("eresp", self.eresp)
            .set("srv_abrt", self.srv_abrt)
            .set("cli_abrt", self.cli_abrt)
            .set("rate", self.rate)
            .set("lastsess", self.lastsess.map_or(-1, |s| s as i64));
        if let Some(max) = self.rate_max {
            r.set("rate_max", max);
        }
        for (name, v) in ["qtime", "ctime", "rtime", "ttime"].iter().zip(self.times) {
            r.set(name, v);
        }
    }
}

fn algo(b: &Backend) -> &'static str {
    match b.balance {
        Balance::RoundRobin => "roundrobin",
        Balance::LeastRequest => "leastconn",
        Balance::Random => "random",
        Balance::Hash => "hash",
    }
}

fn mode(snap: &Snapshot, backend: &str) -> &'static str {
    let tcp = snap
        .spec
        .listeners
        .iter()
        .any(|l| l.protocol == Protocol::Tcp && l.backend.as_deref() == Some(backend));
    if tcp {
        "tcp"
    } else {
        "http"
    }
}

/// `show stat [{<iid>|<proxy>} <type> <sid>] [typed|json] [desc] [up|no-maint]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatFilter {
    /// One proxy (listener or backend), by `iid` or name; `None`: all.
    pub proxy: Option<ProxyRef>,
    /// Bits: 1 frontends, 2 backends, 4 servers.
    pub types: u8,
    pub sid: Option<usize>,
    pub format: StatFormat,
    /// `typed` lines end with the field's description.
    pub desc: bool,
    /// Only servers that are UP (`up`), or all but those in maintenance (`no-maint`).
    pub only: Only,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProxyRef {
    Id(usize),
    Name(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatFormat {
    Csv,
    Typed,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Only {
    All,
    Up,
    NoMaint,
}

impl Default for StatFilter {
    fn default() -> Self {
        StatFilter {
            proxy: None,
            types: 7,
            sid: None,
            format: StatFormat::Csv,
            desc: false,
            only: Only::All,
        }
    }
}

/// One `show stat` row and where it belongs.
struct Stat {
    /// 0 frontend, 1 backend, 2 server (the `type` column).
    kind: u8,
    iid: usize,
    sid: usize,
    row: Row,
}

/// `show stat`: FRONTEND rows per listener, then per backend its servers and its BACKEND
/// row; as CSV (header, every row ending with ','), HAProxy's `typed` lines or its JSON.
/// `Err` is the answer for a proxy name that names nothing.
pub async fn show_stat(veer: &Veer, filter: &StatFilter) -> Result<String, &'static str> {
    let listener_stats = veer.listener_stats().await;
    let snap = veer.snapshot();
    let now = now_ms();
    let iids: Option<Vec<usize>> = match &filter.proxy {
        None => None,
        Some(ProxyRef::Id(i)) => Some(vec![*i]),
        Some(ProxyRef::Name(n)) => {
            let listeners = snap.spec.listeners.iter().map(|l| l.name.as_str());
            let backends = snap.backends.iter().map(|b| &*b.name);
            let found: Vec<usize> = listeners
                .chain(backends)
                .enumerate()
                .filter(|(_, name)| name == n)
                .map(|(i, _)| i + 1)
                .collect();
            if found.is_empty() {
                return Err("No such proxy.");
            }
            Some(found)
        }
    };
    let want_px = |iid: usize| iids.as_ref().is_none_or(|i| i.contains(&iid));
    let mut rows = Vec::new();
    if filter.types & 1 != 0 {
        for (i, l) in snap.spec.listeners.iter().enumerate() {
            let iid = i + 1;
            if !want_px(iid) {
                continue;
            }
            let mut r = Row::new(&l.name, "FRONTEND", 0, iid, 0);
            let stats = listener_stats.iter().find(|(n, _)| *n == l.name).map(|(_, s)| s);
            let (scur, stot) = stats.map_or((0, 0), |s| (s.active.load(Relaxed) as u64, s.total.load(Relaxed)));
            r.set("scur", scur).set("stot", stot).set("status", "OPEN");
            r.set("mode", if l.protocol == Protocol::Tcp { "tcp" } else { "http" });
            if let Some(s) = stats {
                let (rate, rate_max, _) = s.rate.read(now);
                r.set("rate", rate).set("rate_max", rate_max);
            }
            // Every response the listener sent (veer's own errors included), by class.
            // (`bin`/`bout` stay empty: the listener counts no bytes; servers do.)
            if let Some(s) = stats {
                if l.protocol != Protocol::Tcp {
                    let responses: Vec<u64> = s.responses.iter().map(|c| c.load(Relaxed)).collect();
                    for (name, v) in HRSP.iter().zip(&responses) {
                        r.set(name, v);
                    }
                    r.set("req_tot", responses.iter().sum::<u64>());
                }
            }
            rows.push(Stat {
                kind: 0,
                iid,
                sid: 0,
                row: r,
            });
        }
    }
    for (bi, b) in snap.backends.iter().enumerate() {
        let iid = snap.spec.listeners.len() + bi + 1;
        if !want_px(iid) {
            continue;
        }
        let mode = mode(&snap, &b.name);
        let health = snap
            .spec
            .backends
            .iter()
            .find(|bs| *bs.name == *b.name)
            .and_then(|bs| bs.health.as_ref());
        let (mut scur, mut stot, mut weight, mut act, mut up) = (0u64, 0u64, 0u64, 0u64, false);
        let mut hrsp = [0u64; 6];
        let mut figures_all: Vec<Figures> = Vec::new();
        for s in b.servers() {
            let st = &s.state;
            let cur = (st.active_requests.load(Relaxed) + st.active_connections.load(Relaxed)) as u64;
            let total = st.total.load(Relaxed);
            let status = server_status(s, health, now);
            let responses: Vec<u64> = st.responses.iter().map(|c| c.load(Relaxed)).collect();
            scur += cur;
            stot += total;
            for (h, r) in hrsp.iter_mut().zip(&responses) {
                *h += r;
            }
            figures_all.push(Figures::of(st, now));
            let serving = status.starts_with("UP") || status == "no check";
            if serving && s.weight > 0 {
                weight += s.weight as u64;
                act += 1;
                up = true;
            }
            let shown = match filter.only {
                Only::All => true,
                Only::Up => serving,
                Only::NoMaint => s.admin != AdminState::Maint,
            };
            if filter.types & 4 == 0 || filter.sid.is_some_and(|sid| sid != s.sid as usize) || !shown {
                continue;
            }
            let mut r = Row::new(&b.name, &s.name, 2, iid, s.sid as usize);
            r.set("scur", cur)
                .set("stot", total)
                .set("status", status)
                .set("weight", s.weight);
            if s.maxconn > 0 {
                r.set("slim", s.maxconn);
            }
            r.set("act", 1).set("bck", 0);
            let check = &st.check;
            if let (Some(h), true) = (health, check.running.load(Relaxed)) {
                let last = check.last();
                r.set("chkfail", check.failed.load(Relaxed))
                    .set("chkdown", 0)
                    .set("check_status", last.as_str())
                    .set("check_rise", h.rise)
                    .set("check_fall", h.fall)
                    .set("check_duration", check.last_duration_ms.load(Relaxed));
                let code = check.last_code.load(Relaxed);
                if code != 0 {
                    r.set("check_code", code);
                }
                if check.last_at.load(Relaxed) != 0 {
                    r.set("last_chk", last.as_str());
                }
            } else {
                r.set("chkfail", 0).set("chkdown", 0);
            }
            r.set("lastchg", now.saturating_sub(st.last_change.load(Relaxed)) / 1000)
                .set("downtime", 0);
            r.set("lbtot", total).set("econ", st.connect_failures.load(Relaxed));
            if let Some(figures) = figures_all.last() {
                figures.write(&mut r);
            }
            r.set("smax", st.stats.max_active.load(Relaxed));
            for (name, v) in HRSP.iter().zip(&responses) {
                r.set(name, v);
            }
            r.set("req_tot", responses.iter().sum::<u64>());
            r.set("addr", s.addr).set("mode", mode);
            if b.sticky.is_some() {
                r.set("cookie", crate::snapshot::sticky_value(s.sticky_id));
            }
            rows.push(Stat {
                kind: 2,
                iid,
                sid: s.sid as usize,
                row: r,
            });
        }
        if filter.types & 2 != 0 {
            let mut r = Row::new(&b.name, "BACKEND", 1, iid, 0);
            r.set("scur", scur)
                .set("stot", stot)
                .set("status", if up { "UP" } else { "DOWN" });
            // One queue per backend: its rows carry it (servers' own queues stay 0).
            r.set("qcur", b.state.queue.len())
                .set("qmax", b.state.queue.max_seen.load(Relaxed));
            if b.limited {
                r.set("qlimit", b.queue.max);
            }
            r.set("weight", weight).set("act", act).set("bck", 0).set("lbtot", stot);
            Figures::sum(&figures_all).write(&mut r);
            for (name, v) in HRSP.iter().zip(&hrsp) {
                r.set(name, v);
            }
            r.set("req_tot", hrsp.iter().sum::<u64>())
                .set("mode", mode)
                .set("algo", algo(b));
            rows.push(Stat {
                kind: 1,
                iid,
                sid: 0,
                row: r,
            });
        }
    }
    Ok(match filter.format {
        StatFormat::Csv => csv(&rows),
        StatFormat::Typed => typed(&rows, filter.desc),
        StatFormat::Json => json(&rows),
    })
}

fn csv(stats: &[Stat]) -> String {
    let mut out = String::from("# ");
    for c in STAT_COLUMNS {
        out.push_str(c);
        out.push(',');
    }
    out.push('\n');
    for s in stats {
        s.row.write(&mut out);
    }
    out
}

/// The non-empty fields of a row with their HAProxy description.
fn filled(s: &Stat) -> impl Iterator<Item = (usize, &str, &'static fields::Field)> {
    s.row
        .0
        .iter()
        .zip(fields::FIELDS.iter())
        .enumerate()
        .filter(|(_, (v, _))| !v.is_empty())
        .map(|(pos, (v, f))| (pos, v.as_str(), f))
}

const OBJECTS: [(char, &str); 3] = [('F', "Frontend"), ('B', "Backend"), ('S', "Server")];

/// `show stat typed [desc]`: `F.2.0.4.scur.1:MGP:u32:0` per non-empty field.
fn typed(stats: &[Stat], desc: bool) -> String {
    let mut out = String::new();
    for s in stats {
        let k = usize::from(s.kind);
        for (pos, value, f) in filled(s) {
            let _ = write!(
                out,
                "{}.{}.{}.{pos}.{}.1:{}:{}:{value}",
                OBJECTS[k].0, s.iid, s.sid, f.name, f.tags[k], f.kind
            );
            if desc {
                let _ = write!(out, ":\"{}\"", f.desc);
            }
            out.push('\n');
        }
    }
    out
}

/// `show stat json`: an array per row of HAProxy's field objects, keys in its order.
fn json(stats: &[Stat]) -> String {
    fn tag(letter: char, words: &[(char, &'static str)]) -> &'static str {
        words.iter().find(|(c, _)| *c == letter).map_or("", |(_, w)| w)
    }
    const ORIGIN: [(char, &str); 5] = [
        ('M', "Metric"),
        ('S', "Status"),
        ('K', "Key"),
        ('C', "Config"),
        ('P', "Product"),
    ];
    const NATURE: [(char, &str); 11] = [
        ('G', "Gauge"),
        ('L', "Limit"),
        ('M', "Max"),
        ('R', "Rate"),
        ('C', "Counter"),
        ('D', "Duration"),
        ('A', "Age"),
        ('T', "Time"),
        ('N', "Name"),
        ('O', "Output"),
        ('a', "Avg"),
    ];
    const SCOPE: [(char, &str); 4] = [('P', "Process"), ('S', "Service"), ('s', "System"), ('C', "Cluster")];
    let rows: Vec<String> = stats
        .iter()
        .map(|s| {
            let k = usize::from(s.kind);
            let items: Vec<String> = filled(s)
                .map(|(pos, value, f)| {
                    let mut t = f.tags[k].chars();
                    let (o, n, sc) = (
                        t.next().unwrap_or(' '),
                        t.next().unwrap_or(' '),
                        t.next().unwrap_or(' '),
                    );
                    let value = match f.kind {
                        "str" => serde_json::Value::from(value).to_string(),
                        // A number, as HAProxy writes it; anything else quoted.
                        _ if value.parse::<i64>().is_ok() => value.to_string(),
                        _ => serde_json::Value::from(value).to_string(),
                    };
                    format!(
                        "{{\"objType\":\"{}\",\"proxyId\":{},\"id\":{},\"field\":{{\"pos\":{pos},\"name\":\"{}\"}},\
                         \"processNum\":1,\"tags\":{{\"origin\":\"{}\",\"nature\":\"{}\",\"scope\":\"{}\"}},\
                         \"value\":{{\"type\":\"{}\",\"value\":{value}}}}}",
                        OBJECTS[k].1,
                        s.iid,
                        s.sid,
                        f.name,
                        tag(o, &ORIGIN),
                        tag(n, &NATURE),
                        tag(sc, &SCOPE),
                        f.kind
                    )
                })
                .collect();
            format!("[{}]", items.join(","))
        })
        .collect();
    format!("[{}]\n", rows.join(","))
}

/// `show servers state [<backend>]`.
pub fn show_servers_state(snap: &Snapshot, only: Option<&Backend>) -> String {
    let now = now_ms();
    let mut out = String::from(
        "1\n# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight \
         srv_time_since_last_change srv_check_status srv_check_result srv_check_health srv_check_state \
         srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord srv_use_ssl srv_check_port \
         srv_check_addr srv_agent_addr srv_agent_port\n",
    );
    for (bi, b) in snap.backends.iter().enumerate() {
        if only.is_some_and(|o| !std::ptr::eq(o, &**b)) {
            continue;
        }
        for s in b.servers() {
            let op = if s.state.available(now) { 2 } else { 0 };
            let admin = match s.admin {
                AdminState::Ready => 0,
                AdminState::Maint => 0x01,
                AdminState::Drain => 0x08,
            };
            let since = now.saturating_sub(s.state.last_change.load(Relaxed)) / 1000;
            let _ = writeln!(
                out,
                "{} {} {} {} {} {op} {admin} {} {} {since} 1 0 0 0 0 0 0 - {} - 0 0 - - 0",
                snap.spec.listeners.len() + bi + 1,
                b.name,
                s.sid,
                s.name,
                s.addr.ip(),
                s.weight,
                s.initial_weight,
                s.addr.port()
            );
        }
    }
    out
}

/// `show backend`.
pub fn show_backend(snap: &Snapshot) -> String {
    let mut out = String::from("# name\n");
    for b in &snap.backends {
        out.push_str(&b.name);
        out.push('\n');
    }
    out
}
