//! The scenario suite (issue 27): each scenario drives the mixed load of
//! `support/load.rs` (keep-alive and connection-per-request HTTP/1.1, h2c, 1 MiB uploads,
//! sticky clients, upgraded echo) through a veer process while it is changed the way deploys
//! change it, for at least `VEER_SCENARIO_REQUESTS` requests (default 100,000), and
//! appends a row — requests, failures, p99 against the no-change baseline — to
//! `VEER_SCENARIO_OUT`. They are `#[ignore]`d (minutes each): `loadtest/scenarios.sh` runs
//! them in a release-like build; `cargo test` only compiles them.
#[path = "support/load.rs"]
mod load;
mod support;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use load::{Backend, Load, Report};
use support::{admin, VeerProcess};

fn requests_wanted() -> u64 {
    std::env::var("VEER_SCENARIO_REQUESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000)
}

/// Appends `row` to the results table at `VEER_SCENARIO_OUT`, when set.
fn append_row(row: &str) {
    if let Ok(out) = std::env::var("VEER_SCENARIO_OUT") {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(out)
            .expect("results file");
        writeln!(f, "{row}").expect("results file");
    }
}

/// Appends the scenario's row to `VEER_SCENARIO_OUT` (and prints it), then fails the test
/// on any failed request.
fn report(name: &str, what: &str, r: &Report, took: Duration) {
    let failed = match r.goaway_retries {
        0 => r.failures.to_string(),
        n => format!("{} ({n} h2c sent again after GOAWAY)", r.failures),
    };
    let row = format!(
        "| {name} | {what} | {} | {failed} | {:.1} | {} | {:.0} s |",
        r.requests,
        r.p99_ms,
        r.sticky_moves,
        took.as_secs_f64()
    );
    println!("{row}\n  by kind (answered, failed): {:?}", r.by_kind);
    append_row(&row);
    assert!(r.requests >= requests_wanted(), "only {} requests", r.requests);
    for kind in ["h1-keepalive", "h1-close", "h2c", "upload-1MiB", "sticky", "websocket"] {
        assert!(
            r.by_kind.get(kind).is_some_and(|k| k.0 > 0),
            "no {kind} answered: {:?}",
            r.by_kind
        );
    }
    assert!(
        r.by_kind.values().all(|k| k.0 > 0),
        "a kind of client got no answer: {:?}",
        r.by_kind
    );
    assert_eq!(r.failures, 0, "{name}: {} failed, first: {:#?}", r.failures, r.samples);
}

/// Four backends (blue-1/2, green-1/2), veer in front (a process, release build) on an
/// HTTP listener and an HTTPS one.
struct Bed {
    dir: tempfile::TempDir,
    backends: Vec<Backend>,
    veer: VeerProcess,
    /// Trusts the HTTPS listener's certificate.
    tls: Arc<rustls::ClientConfig>,
}

impl Bed {
    async fn start() -> Bed {
        Self::start_with("").await
    }

    /// With `extra` lines in the backend's section.
    async fn start_with(extra: &str) -> Bed {
        let mut backends = Vec::new();
        for name in ["blue-1", "blue-2", "green-1", "green-2"] {
            backends.push(Backend::start(name).await);
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let ca = support::pki::Ca::new("scenario CA");
        ca.leaf(&["app.example.com"], 1).write(dir.path(), "tls");
        let tls = support::pki::client_config(ca.roots(), &[b"http/1.1"], None);
        std::fs::write(dir.path().join("veer.toml"), Self::config(dir.path(), &backends, extra)).expect("config");
        let veer = Self::process(dir.path(), &[]).await;
        Bed {
            dir,
            backends,
            veer,
            tls,
        }
    }

    fn config(dir: &Path, b: &[Backend], extra: &str) -> String {
        format!(
            r#"[admin]
socket = "{dir}/admin.sock"
state_file = "{dir}/state.json"

[runtime]
shutdown_timeout = "60s"

[[listener]]
name = "web"
bind = "127.0.0.1:0"
protocol = "http"
  [[listener.route]]
  backend = "app"

[[listener]]
name = "tls"
bind = "127.0.0.1:0"
protocol = "http"
  [listener.tls]
  certs = [ {{ cert = "{dir}/tls.pem", key = "{dir}/tls.key" }} ]
  [[listener.route]]
  backend = "app"

[[backend]]
name = "app"
retries = 2
retry_on = ["connect", "gateway-error", "reset"]
sticky = {{ cookie = "SRV" }}
{extra}
groups = [
  {{ name = "blue", weight = 100, servers = [ {{ name = "blue-1", addr = "{}" }}, {{ name = "blue-2", addr = "{}" }} ] }},
  {{ name = "green", weight = 0, servers = [ {{ name = "green-1", addr = "{}" }}, {{ name = "green-2", addr = "{}" }} ] }},
]
"#,
            b[0].addr,
            b[1].addr,
            b[2].addr,
            b[3].addr,
            dir = dir.display()
        )
    }

    async fn process(dir: &Path, extra: &'static [&'static str]) -> VeerProcess {
        let config = dir.join("veer.toml");
        tokio::task::spawn_blocking(move || VeerProcess::start(&config, extra, &["web", "tls"]))
            .await
            .expect("veer started")
    }

    /// Rewrites the config with edit `n` (the backend's connect timeout, so each reload
    /// builds and swaps a new snapshot) and sends SIGHUP.
    fn reload(&self, n: u64) {
        let extra = format!("connect_timeout = \"{}ms\"", 2000 + n);
        let path = self.dir.path().join("veer.toml");
        std::fs::write(path, Self::config(self.dir.path(), &self.backends, &extra)).expect("config");
        self.veer.signal("HUP");
    }

    fn sock(&self) -> PathBuf {
        self.dir.path().join("admin.sock")
    }

    fn load(&self) -> Load {
        let tls = (self.veer.listeners["tls"], self.tls.clone());
        Load::start_tls(self.veer.listeners["web"], "app.example.com", Some(tls))
    }

    async fn admin(&self, line: &str) -> String {
        admin(&self.sock(), line).await
    }
}

/// Runs `change` under load, then keeps the load on until the wanted number of requests.
async fn under_load<F: std::future::Future<Output = String>>(name: &str, bed: &Bed, change: F) {
    let started = Instant::now();
    let load = bed.load();
    load.until(2_000).await;
    let what = change.await;
    load.until(requests_wanted()).await;
    let r = load.finish().await;
    report(name, &what, &r, started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a loadtest scenario: loadtest/scenarios.sh"]
async fn s00_baseline() {
    let bed = Bed::start().await;
    under_load("baseline", &bed, async { "no change".to_string() }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a loadtest scenario: loadtest/scenarios.sh"]
async fn s01_split_flipped_every_second_for_60_s() {
    let bed = Bed::start().await;
    under_load("split-flip", &bed, async {
        for i in 0..60 {
            let line = if i % 2 == 0 {
                "set split app blue=0 green=100"
            } else {
                "set split app blue=100 green=0"
            };
            assert_eq!(bed.admin(line).await, "\n");
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        "`set split` blue/green flipped every 1 s, 60 times".into()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a loadtest scenario: loadtest/scenarios.sh"]
async fn s02_hundred_reloads() {
    let bed = Bed::start().await;
    under_load("reloads", &bed, async {
        for i in 0..100 {
            // Each edit changes the backend (its retry budget), so each reload builds and
            // swaps a new snapshot.
            bed.reload(i);
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let reloads = bed.veer.log().matches("config reloaded").count();
        assert!(reloads >= 90, "only {reloads} reloads logged");
        format!("100 config edits + SIGHUP, 250 ms apart ({reloads} reloads logged)")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a loadtest scenario: loadtest/scenarios.sh"]
async fn s03_drain_and_del_server_under_sticky_load() {
    let bed = Bed::start().await;
    under_load("drain+del", &bed, async {
        assert_eq!(bed.admin("set split app blue=50 green=50").await, "\n");
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(bed.admin("set server app/blue-1 state drain").await, "\n");
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(bed.admin("set server app/blue-1 state maint").await, "\n");
        let waited = bed.admin("wait 30s srv-removable app/blue-1").await;
        assert_eq!(waited.trim(), "", "{waited}");
        assert_eq!(bed.admin("del server app/blue-1").await.trim(), "Server deleted.");
        "split 50/50, blue-1 drained 5 s, maint, `wait srv-removable`, `del server`".into()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a loadtest scenario: loadtest/scenarios.sh"]
async fn s04_ten_binary_upgrades_back_to_back() {
    let mut bed = Bed::start().await;
    let started = Instant::now();
    let load = bed.load();
    load.until(2_000).await;
    for _ in 0..10 {
        let new = Bed::process(bed.dir.path(), &["--upgrade"]).await;
        assert_eq!(new.listeners["web"], bed.veer.listeners["web"]);
        let mut old = std::mem::replace(&mut bed.veer, new);
        let code = tokio::task::spawn_blocking(move || old.wait_exit(Duration::from_secs(90)))
            .await
            .expect("old process");
        assert_eq!(code, Some(0), "the old process drains and exits 0");
    }
    load.until(requests_wanted()).await;
    let r = load.finish().await;
    report(
        "upgrades",
        "10 × `veer run --upgrade`, each after the last old process exited",
        &r,
        started.elapsed(),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a loadtest scenario: loadtest/scenarios.sh"]
async fn s05_admin_storm() {
    let bed = Bed::start().await;
    under_load("admin-storm", &bed, async {
        let lines = [
            "show stat",
            "show servers state app",
            "set weight app/blue-2 50",
            "show split app",
            "set weight app/blue-2 100",
            "show info",
        ];
        let mut sent = 0u64;
        let began = Instant::now();
        // 1,000 commands a second for 20 s, from 10 concurrent sessions.
        while began.elapsed() < Duration::from_secs(20) {
            let tick = Instant::now();
            let mut batch = tokio::task::JoinSet::new();
            for s in 0..10 {
                let sock = bed.sock();
                let line = lines[(sent as usize + s) % lines.len()];
                batch.spawn(async move {
                    for _ in 0..10 {
                        let out = admin(&sock, line).await;
                        assert!(!out.contains("Unknown command"), "{out}");
                    }
                });
            }
            while let Some(r) = batch.join_next().await {
                r.expect("admin session");
            }
            sent += 100;
            tokio::time::sleep(Duration::from_millis(100).saturating_sub(tick.elapsed())).await;
        }
        let rate = sent as f64 / began.elapsed().as_secs_f64();
        format!("{sent} admin commands in 20 s ({rate:.0}/s) while serving")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a loadtest scenario: loadtest/scenarios.sh"]
async fn s06_backend_drained_killed_and_restarted() {
    let mut bed = Bed::start().await;
    let started = Instant::now();
    let load = bed.load();
    load.until(2_000).await;
    // What a deploy script does before killing a server: drain it, so nothing is in flight
    // on it; then kill it, keep it dead for 5 s (veer sends it nothing new), start it again.
    assert_eq!(bed.admin("set server app/blue-1 state drain").await, "\n");
    tokio::time::sleep(Duration::from_secs(2)).await;
    bed.backends[0].kill().await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    bed.backends[0].restart().await;
    assert_eq!(bed.admin("set server app/blue-1 state ready").await, "\n");
    load.until(requests_wanted()).await;
    let r = load.finish().await;
    report(
        "backend-kill",
        "blue-1 drained 2 s, killed (every connection dropped, port closed) 5 s, restarted, ready",
        &r,
        started.elapsed(),
    );
}

/// A server killed while it serves: what was in flight on it is lost unless veer may send
/// it again. Idempotent requests are (`retry_on` connect/reset/gateway-error, another
/// server); a POST whose bytes reached the dead server is not — it may have been acted on —
/// so it fails with 502 `upstream-error`, as in HAProxy and nginx. The scenario checks that
/// every failure is such a POST, and reports them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a loadtest scenario: loadtest/scenarios.sh"]
async fn s06b_backend_killed_while_serving() {
    let mut bed = Bed::start().await;
    let started = Instant::now();
    let load = bed.load();
    load.until(2_000).await;
    for _ in 0..3 {
        bed.backends[1].kill().await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        bed.backends[1].restart().await;
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    load.until(requests_wanted()).await;
    let r = load.finish().await;
    let lost: u64 = r.by_kind.get("upload-1MiB").map_or(0, |k| k.1);
    assert_eq!(
        r.failures, lost,
        "a failure other than an in-flight POST: {:#?}",
        r.samples
    );
    assert!(
        r.samples
            .iter()
            .all(|f| f.contains("502 Bad Gateway Some(\"upstream-error\")")),
        "{:#?}",
        r.samples
    );
    let row = format!(
        "| backend-kill while serving | blue-2 killed 3 times while serving, 3 s dead each, restarted | {} | {lost} (1 MiB POSTs in flight on the killed server: not sent again, by design; every GET was) | {:.1} | {} | {:.0} s |",
        r.requests,
        r.p99_ms,
        r.sticky_moves,
        started.elapsed().as_secs_f64()
    );
    println!("{row}");
    append_row(&row);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a loadtest scenario: loadtest/scenarios.sh"]
async fn s10_veer_kill9_and_restart_keeps_runtime_state() {
    let mut bed = Bed::start().await;
    let load = bed.load();
    load.until(2_000).await;
    for line in [
        "set split app blue=30 green=70",
        "set weight app/green-2 40",
        "set server app/blue-2 state drain",
        "set server app/green-1 state maint",
    ] {
        assert_eq!(bed.admin(line).await, "\n", "{line}");
    }
    let state = |bed: &Bed| {
        let sock = bed.sock();
        async move {
            // The columns that are runtime state (name, address, admin state, weights);
            // counters and timers are not state.
            let servers = admin(&sock, "show servers state app").await;
            let servers: Vec<String> = (servers.lines())
                .filter(|l| !l.starts_with('#') && l.split_whitespace().count() > 8)
                .map(|l| {
                    let f: Vec<&str> = l.split_whitespace().collect();
                    // be_name srv_name srv_addr srv_admin_state srv_uweight srv_iweight
                    [f[1], f[3], f[4], f[6], f[7], f[8]].join(" ")
                })
                .collect();
            // `show split` without its counters (requests, conns: the last two columns).
            let split = admin(&sock, "show split app").await;
            let split: Vec<String> = (split.lines())
                .map(|l| {
                    let f: Vec<&str> = l.split_whitespace().collect();
                    f[..f.len().saturating_sub(2)].join(" ")
                })
                .collect();
            (servers, split)
        }
    };
    let before = state(&bed).await;
    bed.veer.kill9();
    let r = load.finish().await;
    bed.veer = Bed::process(bed.dir.path(), &[]).await;
    let after = state(&bed).await;
    println!("before: {before:#?}\nafter: {after:#?}");
    assert_eq!(before, after, "runtime state after kill -9 and restart");
    let row = format!(
        "| veer kill -9 | split 30/70, a weight, a drain, a maint; `kill -9`; restarted | {} | {} (lost with the process) | — | — | state identical: `show servers state` {} servers, `show split` equal |",
        r.requests,
        r.failures,
        after.0.len()
    );
    println!("{row}");
    append_row(&row);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a loadtest scenario: loadtest/scenarios.sh"]
async fn s07_active_checks_flapping() {
    let bed =
        Bed::start_with(r#"health = { path = "/healthz", interval = "200ms", timeout = "150ms", rise = 1, fall = 1 }"#)
            .await;
    under_load("check-flap", &bed, async {
        // blue-1's checks fail and pass by turns (it keeps serving what it is sent), 60
        // times over 30 s; and green-1's, with green at half the traffic.
        assert_eq!(bed.admin("set split app blue=50 green=50").await, "\n");
        for i in 0..60 {
            let up = i % 2 == 1;
            bed.backends[0].healthy.store(up, std::sync::atomic::Ordering::Relaxed);
            bed.backends[2].healthy.store(!up, std::sync::atomic::Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        bed.backends[0]
            .healthy
            .store(true, std::sync::atomic::Ordering::Relaxed);
        bed.backends[2]
            .healthy
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let changes = bed
            .veer
            .log()
            .matches("health check changed the server's state")
            .count();
        assert!(changes >= 40, "only {changes} state changes logged");
        format!("split 50/50; blue-1's and green-1's checks flip every 500 ms for 30 s ({changes} UP/DOWN changes)")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a loadtest scenario: loadtest/scenarios.sh"]
async fn s09_rollout_rolled_back_automatically() {
    let bed = Bed::start().await;
    under_load("rollout-rollback", &bed, async {
        // The new version answers 100 ms late: its p99 breaches the rollout's limit.
        for b in &bed.backends[2..] {
            b.delay_ms.store(100, std::sync::atomic::Ordering::Relaxed);
        }
        let out = bed
            .admin("rollout start app to green steps 10,25,50,100 pause 2s max-p99 50ms min-requests 200")
            .await;
        assert!(!out.contains("rror"), "{out}");
        let began = Instant::now();
        let state = loop {
            let show = bed.admin("show rollout app").await;
            if show.contains("rolled-back") {
                break show;
            }
            assert!(began.elapsed() < Duration::from_secs(60), "never rolled back: {show}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        let split = bed.admin("show split app").await;
        assert!(split.lines().any(|l| l.starts_with("green") && l.contains(" 0 ")), "{split}");
        let why = state.lines().find(|l| l.contains("rolled-back")).unwrap_or_default().trim().to_string();
        format!(
            "`rollout start app to green steps 10,25,50,100 pause 2s max-p99 50ms`, green 100 ms late: rolled back after {:.1} s ({why})",
            began.elapsed().as_secs_f64()
        )
    })
    .await;
}

/// veer `--gateway` processes against the in-process fake API server, which holds a
/// Gateway and the Services `blue` and `green` (one backend each).
struct K8s {
    fake: support::fake_kube::FakeKube,
    backends: [Backend; 2],
    dir: tempfile::TempDir,
}

impl K8s {
    async fn start() -> K8s {
        use support::fake_kube::{service, FakeKube};
        let backends = [Backend::start("blue").await, Backend::start("green").await];
        let fake = FakeKube::start().await;
        fake.apply_yaml(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {name: veer}\nspec: {controllerName: veer.dev/gateway-controller}\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: web, namespace: default}\nspec:\n  gatewayClassName: veer\n  listeners:\n  - {name: http, protocol: HTTP, port: 0}\n",
        );
        for b in &backends {
            fake.apply_yaml(&service("default", &b.name, &[(b.addr, true, true, false)]));
        }
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(
            dir.path().join("kubeconfig"),
            format!(
                "apiVersion: v1\nkind: Config\nclusters: [{{name: fake, cluster: {{server: \"{}\"}}}}]\nusers: [{{name: fake, user: {{}}}}]\ncontexts: [{{name: fake, context: {{cluster: fake, user: fake}}}}]\ncurrent-context: fake\n",
                fake.url()
            ),
        )
        .expect("kubeconfig");
        K8s { fake, backends, dir }
    }

    /// The HTTPRoute Argo Rollouts patches: blue and green weighted, sticky clients.
    fn route(blue: u32, green: u32) -> String {
        format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: app, namespace: default, annotations: {{veer.dev/sticky-cookie: SRV}}}}\nspec:\n  parentRefs: [{{name: web}}]\n  rules:\n  - backendRefs:\n    - {{name: blue, port: 80, weight: {blue}}}\n    - {{name: green, port: 80, weight: {green}}}\n"
        )
    }

    fn sock(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("admin{i}.sock"))
    }

    /// Instance `i`, serving once it has listed everything.
    async fn veer(&self, i: usize) -> VeerProcess {
        let config = self.dir.path().join(format!("veer{i}.toml"));
        std::fs::write(&config, format!("[admin]\nsocket = \"{}\"\n", self.sock(i).display())).expect("config");
        let kc = self.dir.path().join("kubeconfig").to_string_lossy().into_owned();
        tokio::task::spawn_blocking(move || {
            VeerProcess::start(
                &config,
                &["--gateway", "--kubeconfig", &kc, "--gateway-address", "127.0.0.1"],
                &["default:web:0"],
            )
        })
        .await
        .expect("veer started")
    }

    /// The blue and green weights instance `sock` applies now.
    async fn weights(sock: &Path) -> (Option<u64>, Option<u64>) {
        let split = admin(sock, "show split default:app:0 json").await;
        let v: serde_json::Value = serde_json::from_str(split.trim()).unwrap_or_default();
        let weight = |g: &str| {
            (v["groups"].as_array())
                .and_then(|gs| gs.iter().find(|x| x["name"] == g))
                .and_then(|x| x["weight"].as_u64())
        };
        (weight("blue:80"), weight("green:80"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a loadtest scenario: loadtest/scenarios.sh"]
async fn s11_gateway_weights_stepped_through_three_instances() {
    use support::fake_kube::service;
    let k = K8s::start().await;
    k.fake.apply_yaml(&K8s::route(100, 0));
    let mut fleet = Vec::new();
    for i in 0..3 {
        fleet.push(k.veer(i).await);
    }
    let started = Instant::now();
    let loads: Vec<Load> = fleet
        .iter()
        .map(|v| Load::start(v.listeners["default:web:0"], "app.example.com"))
        .collect();
    while loads.iter().map(Load::count).sum::<u64>() < 2_000 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // What Argo Rollouts does, one step every 2 s; each step polled on every instance.
    let mut slowest = Duration::ZERO;
    for (b, g) in [(90u32, 10u32), (50, 50), (0, 100)] {
        let patched = Instant::now();
        k.fake.apply_yaml(&K8s::route(b, g));
        for i in 0..3 {
            while K8s::weights(&k.sock(i)).await != (Some(u64::from(b)), Some(u64::from(g))) {
                assert!(
                    patched.elapsed() < Duration::from_secs(30),
                    "step {b}/{g} never applied on {i}"
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        slowest = slowest.max(patched.elapsed());
        tokio::time::sleep(Duration::from_secs(2).saturating_sub(patched.elapsed())).await;
    }
    // The stable ReplicaSet goes away: its endpoint terminating (still serving), then gone.
    let blue = &k.backends[0];
    k.fake
        .apply_yaml(&service("default", "blue", &[(blue.addr, false, true, true)]));
    tokio::time::sleep(Duration::from_secs(2)).await;
    k.fake.apply_yaml(&service("default", "blue", &[]));
    let wanted = requests_wanted();
    while loads.iter().map(Load::count).sum::<u64>() < wanted {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut reports = Vec::new();
    for l in loads {
        reports.push(l.finish().await);
    }
    let r = Report::merge(reports);
    report(
        "gateway fleet",
        &format!(
            "3 instances; HTTPRoute weights 100/0 → 90/10 → 50/50 → 0/100 every 2 s (slowest patch → last instance: {} ms), then blue's endpoint terminating, then gone",
            slowest.as_millis()
        ),
        &r,
        started.elapsed(),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a loadtest scenario: loadtest/scenarios.sh"]
async fn s08_kubernetes_api_server_down_for_30_s() {
    let k = K8s::start().await;
    k.fake.apply_yaml(&K8s::route(50, 50));
    let veer = k.veer(0).await;
    let sock = k.sock(0);
    let started = Instant::now();
    let load = Load::start(veer.listeners["default:web:0"], "app.example.com");
    load.until(2_000).await;
    k.fake.stop();
    tokio::time::sleep(Duration::from_secs(30)).await;
    k.fake.restart().await;
    // Caught up: a patch made after the outage reaches veer.
    k.fake.apply_yaml(&K8s::route(0, 100));
    let patched = Instant::now();
    while K8s::weights(&sock).await != (Some(0), Some(100)) {
        assert!(patched.elapsed() < Duration::from_secs(60), "never caught up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let caught_up = patched.elapsed();
    load.until(requests_wanted()).await;
    let r = load.finish().await;
    let log = veer.log();
    let (down, back) = (
        log.matches("Kubernetes API server unreachable").count(),
        log.matches("Kubernetes API server reachable again").count(),
    );
    assert_eq!((down, back), (1, 1), "one line per outage:\n{log}");
    assert!(!log.contains("kube_client"), "kube-client logged its retries:\n{log}");
    report(
        "k8s API down 30 s",
        &format!(
            "fake API server stopped 30 s, restarted with newer resourceVersion (410 Gone); {down} log line down, {back} up; a patch after it applied in {} ms",
            caught_up.as_millis()
        ),
        &r,
        started.elapsed(),
    );
}

/// The soak (issue 27): the mixed load for `VEER_SOAK_MINUTES` (default 30) with a split
/// flip every 10 s and a config reload every 30 s, sampling veer's RSS and open file
/// descriptors every 10 s. After the first fifth (warm-up), neither may grow: the fitted
/// slope over the rest, times its duration, stays under 5 % of the mean RSS (and under 8
/// descriptors). Writes the samples (CSV), a chart (SVG) and a summary (Markdown) to
/// `VEER_SOAK_OUT` (a path prefix; default loadtest/results/<date>-soak).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the soak: loadtest/soak.sh"]
async fn soak() {
    let minutes: u64 = std::env::var("VEER_SOAK_MINUTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    let out = std::env::var("VEER_SOAK_OUT").unwrap_or_else(|_| "loadtest/results/soak".into());
    let bed = Bed::start().await;
    let pid = bed.veer.pid();
    let load = bed.load();
    let began = Instant::now();
    let mut samples: Vec<Sample> = Vec::new();
    let mut tick = 0u64;
    while began.elapsed() < Duration::from_secs(minutes * 60) {
        tokio::time::sleep(Duration::from_secs(10)).await;
        tick += 1;
        let line = if tick.is_multiple_of(2) {
            "set split app blue=100 green=0"
        } else {
            "set split app blue=50 green=50"
        };
        assert_eq!(bed.admin(line).await, "\n");
        if tick.is_multiple_of(3) {
            bed.reload(tick);
        }
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
        let rss = (status.lines())
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .expect("VmRSS");
        let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).expect("proc fd").count() as u64;
        samples.push((began.elapsed().as_secs_f64(), rss, fds, load.count()));
        println!(
            "{:>6.0} s  rss {rss} kB  fds {fds}  requests {}",
            began.elapsed().as_secs_f64(),
            load.count()
        );
    }
    let r = load.finish().await;
    let steady = &samples[samples.len() / 5..];
    let slope = |f: &dyn Fn(&Sample) -> f64| {
        let n = steady.len() as f64;
        let (mx, my) = (
            steady.iter().map(|s| s.0).sum::<f64>() / n,
            steady.iter().map(f).sum::<f64>() / n,
        );
        let cov: f64 = steady.iter().map(|s| (s.0 - mx) * (f(s) - my)).sum();
        let var: f64 = steady.iter().map(|s| (s.0 - mx).powi(2)).sum();
        (cov / var, my)
    };
    let (rss_slope, rss_mean) = slope(&|s| s.1 as f64);
    let (fd_slope, fd_mean) = slope(&|s| s.2 as f64);
    let span = steady.last().map_or(0.0, |s| s.0) - steady.first().map_or(0.0, |s| s.0);
    let rss_growth = rss_slope * span;
    let fd_growth = fd_slope * span;

    let mut csv = String::from("seconds,rss_kb,fds,requests\n");
    for s in &samples {
        csv += &format!("{:.0},{},{},{}\n", s.0, s.1, s.2, s.3);
    }
    std::fs::write(format!("{out}.csv"), csv).expect("csv");
    std::fs::write(format!("{out}.svg"), chart(&samples)).expect("svg");
    let summary = format!(
        "# Soak, {minutes} minutes\n\n`loadtest/soak.sh {minutes}`: the scenario suite's mixed load (keep-alive and per-request HTTP/1.1, h2c, 1 MiB uploads, sticky, upgraded echo) through one veer process, a split flip every 10 s and a config reload every 30 s; veer's RSS and open descriptors sampled every 10 s ([samples]({name}.csv), ![chart]({name}.svg)).\n\n\
         | | |\n|---|---|\n| requests | {} |\n| failed | {} |\n| p99 | {:.1} ms |\n| RSS after warm-up (mean) | {:.1} MB |\n| RSS fitted growth over the last {:.0} min | {:+.0} kB ({:+.2} %) |\n| open descriptors (mean) | {:.1} |\n| descriptors fitted growth | {:+.1} |\n",
        r.requests,
        r.failures,
        r.p99_ms,
        rss_mean / 1024.0,
        span / 60.0,
        rss_growth,
        100.0 * rss_growth / rss_mean,
        fd_mean,
        fd_growth,
        name = std::path::Path::new(&out).file_name().and_then(|n| n.to_str()).unwrap_or("soak"),
    );
    std::fs::write(format!("{out}.md"), &summary).expect("summary");
    println!("{summary}");
    assert_eq!(r.failures, 0, "first failures: {:#?}", r.samples);
    assert!(
        rss_growth.abs() < 0.05 * rss_mean,
        "RSS grew {rss_growth:.0} kB over {span:.0} s"
    );
    assert!(fd_growth.abs() < 8.0, "descriptors grew by {fd_growth:.1}");
}

/// A soak sample: (seconds, RSS kB, open descriptors, requests so far).
type Sample = (f64, u64, u64, u64);

/// RSS (MB, left axis) and open descriptors (right axis) over minutes, as an SVG.
fn chart(samples: &[Sample]) -> String {
    let (w, h, pad) = (800.0, 300.0, 50.0);
    let t_max = samples.last().map_or(1.0, |s| s.0).max(1.0);
    let rss_max = samples.iter().map(|s| s.1).max().unwrap_or(1) as f64 / 1024.0 * 1.2;
    let fd_max = samples.iter().map(|s| s.2).max().unwrap_or(1) as f64 * 1.2;
    let x = |t: f64| pad + (w - 2.0 * pad) * t / t_max;
    let y = |v: f64, max: f64| h - pad - (h - 2.0 * pad) * v / max;
    let line = |f: &dyn Fn(&Sample) -> (f64, f64)| {
        samples
            .iter()
            .map(|s| {
                let (t, v) = f(s);
                format!("{:.1},{:.1}", x(t), v)
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    let rss = line(&|s| (s.0, y(s.1 as f64 / 1024.0, rss_max)));
    let fds = line(&|s| (s.0, y(s.2 as f64, fd_max)));
    format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<line x1="{pad}" y1="{b}" x2="{r}" y2="{b}" stroke="#888"/><line x1="{pad}" y1="{pad}" x2="{pad}" y2="{b}" stroke="#888"/><line x1="{r}" y1="{pad}" x2="{r}" y2="{b}" stroke="#888"/>
<text x="{pad}" y="{t}" >RSS, MB (0–{rss_max:.0})</text><text x="{r}" y="{t}" text-anchor="end" fill="#c40">open fds (0–{fd_max:.0})</text>
<text x="{mid}" y="{xl}" text-anchor="middle">minutes (0–{tm:.0})</text>
<polyline fill="none" stroke="#036" stroke-width="2" points="{rss}"/>
<polyline fill="none" stroke="#c40" stroke-width="2" points="{fds}"/>
</svg>
"##,
        b = h - pad,
        r = w - pad,
        t = pad - 10.0,
        mid = w / 2.0,
        xl = h - 15.0,
        tm = t_max / 60.0,
    )
}
