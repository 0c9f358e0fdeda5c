//! HAProxy's runtime-API output formats, byte for byte where tools parse them
//! (../shared/haproxy-runtime-api.md): `show info`, `show stat` (the 88 HAProxy 2.0 columns),
//! `show servers state`, `show backend`. Everything is read from one snapshot plus the
//! servers' atomics.

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

/// When this version was released, as `show info` says it (HAProxy's `YYYY/MM/DD`).
const RELEASE_DATE: &str = "2026/11/22";

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

/// Type filter bits of `show stat <iid> <type> <sid>`: 1 frontends, 2 backends, 4 servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatFilter {
    pub iid: Option<usize>,
    pub types: u8,
    pub sid: Option<usize>,
}

impl Default for StatFilter {
    fn default() -> Self {
        StatFilter {
            iid: None,
            types: 7,
            sid: None,
        }
    }
}

/// `show stat`: header, then FRONTEND rows per listener, then per backend its servers and its
/// BACKEND row. Every row ends with ','.
pub async fn show_stat(veer: &Veer, filter: StatFilter) -> String {
    let listener_stats = veer.listener_stats().await;
    let snap = veer.snapshot();
    let now = now_ms();
    let mut out = String::from("# ");
    for c in STAT_COLUMNS {
        out.push_str(c);
        out.push(',');
    }
    out.push('\n');
    let want_px = |iid: usize| filter.iid.is_none_or(|i| i == iid);
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
            r.write(&mut out);
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
        for (si, s) in b.servers().enumerate() {
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
            let serving = status.starts_with("UP") || status == "no check";
            if serving && s.weight > 0 {
                weight += s.weight as u64;
                act += 1;
                up = true;
            }
            if filter.types & 4 == 0 || filter.sid.is_some_and(|sid| sid != si + 1) {
                continue;
            }
            let mut r = Row::new(&b.name, &s.name, 2, iid, si + 1);
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
            for (name, v) in HRSP.iter().zip(&responses) {
                r.set(name, v);
            }
            r.set("req_tot", responses.iter().sum::<u64>());
            r.set("addr", s.addr).set("mode", mode);
            if b.sticky.is_some() {
                r.set("cookie", crate::snapshot::sticky_value(s.sticky_id));
            }
            r.write(&mut out);
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
            for (name, v) in HRSP.iter().zip(&hrsp) {
                r.set(name, v);
            }
            r.set("req_tot", hrsp.iter().sum::<u64>())
                .set("mode", mode)
                .set("algo", algo(b));
            r.write(&mut out);
        }
    }
    out
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
        for (si, s) in b.servers().enumerate() {
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
                si + 1,
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
