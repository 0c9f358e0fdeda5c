//! Runtime changes persisted in `[admin].state_file`:
//! - in-process: a split and server states set through the admin socket survive a reload of
//!   a rewritten config file (an unrelated change), and traffic keeps following them;
//! - a server removed from the config file loses its overlay entry, in `show overlay` and in
//!   the state file on disk (and comes back with the file's state if re-added);
//! - the real binary, killed with SIGKILL, comes back with the same split and server states
//!   and routes by them;
//! - a corrupt state file stops `Veer::start` (and `veer run`) with an error naming the file,
//!   instead of starting with empty state.

mod support;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::admin as socket_cmd;
use support::*;
use veer::Veer;

/// Where the admin socket and the state file live.
struct StateDir {
    dir: tempfile::TempDir,
}

impl StateDir {
    fn new() -> StateDir {
        StateDir {
            dir: tempfile::tempdir().unwrap(),
        }
    }
    fn socket(&self) -> PathBuf {
        self.dir.path().join("admin.sock")
    }
    fn state(&self) -> PathBuf {
        self.dir.path().join("state.json")
    }
    fn config_path(&self) -> PathBuf {
        self.dir.path().join("veer.toml")
    }
    /// The state file as JSON.
    fn state_json(&self) -> serde_json::Value {
        let text = std::fs::read_to_string(self.state()).expect("state file exists");
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("state file is not JSON ({e}): {text}"))
    }
}

/// `shop`: group blue (blue-1, blue-2; split 100), group green (green-1, and green-2 when
/// `with_green2`; split 0). `timeout` is the unrelated knob a reload changes.
fn config(d: &StateDir, s: &[FakeBackend], timeout: &str, with_green2: bool) -> String {
    let green2 = if with_green2 {
        format!(", {{ name = \"green-2\", addr = \"{}\" }}", s[3].addr)
    } else {
        String::new()
    };
    format!(
        r#"
[admin]
socket = "{}"
state_file = "{}"

[[listener]]
name = "web"
bind = "127.0.0.1:0"
protocol = "http"
  [[listener.route]]
  backend = "shop"

[[backend]]
name = "shop"
timeout = "{timeout}"
groups = [
  {{ name = "blue", weight = 100, servers = [ {{ name = "blue-1", addr = "{}" }}, {{ name = "blue-2", addr = "{}" }} ] }},
  {{ name = "green", weight = 0, servers = [ {{ name = "green-1", addr = "{}" }}{green2} ] }},
]
"#,
        d.socket().display(),
        d.state().display(),
        s[0].addr,
        s[1].addr,
        s[2].addr,
    )
}

async fn backends() -> Vec<FakeBackend> {
    let mut s = Vec::new();
    for n in ["blue-1", "blue-2", "green-1", "green-2"] {
        s.push(FakeBackend::start(n).await);
    }
    s
}

/// The changes every test makes: all traffic to green, green-2 in maintenance, blue-1
/// draining. Three mutations → three empty lines and nothing else.
const CHANGES: &str =
    "set split shop blue=0 green=100; set server shop/green-2 state maint; set server shop/blue-1 state drain";

/// `show split shop json`, reduced to (group, weight, [(server, state)]).
type Split = Vec<(String, u64, Vec<(String, String)>)>;

async fn split_of(socket: &Path) -> Split {
    let out = admin(socket, "show split shop json").await;
    let json = out
        .strip_suffix("\n\n")
        .unwrap_or_else(|| panic!("no terminating empty line: {out:?}"));
    let v: serde_json::Value = serde_json::from_str(json).unwrap();
    v["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            let servers = g["servers"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| {
                    (
                        s["name"].as_str().unwrap().to_string(),
                        s["state"].as_str().unwrap().to_string(),
                    )
                })
                .collect();
            (
                g["name"].as_str().unwrap().to_string(),
                g["weight"].as_u64().unwrap(),
                servers,
            )
        })
        .collect()
}

fn changed_split() -> Split {
    let s = |n: &str, st: &str| (n.to_string(), st.to_string());
    vec![
        ("blue".into(), 0, vec![s("blue-1", "drain"), s("blue-2", "ready")]),
        ("green".into(), 100, vec![s("green-1", "ready"), s("green-2", "maint")]),
    ]
}

/// `show servers state shop`: server name → (srv_admin_state, srv_uweight).
async fn servers_state(socket: &Path) -> Vec<(String, String)> {
    let out = admin(socket, "show servers state shop").await;
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("1"), "{out}");
    assert!(
        lines.next().unwrap().starts_with("# be_id be_name srv_id srv_name"),
        "{out}"
    );
    lines
        .take_while(|l| !l.is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            (f[3].to_string(), f[6].to_string())
        })
        .collect()
}

fn changed_servers_state() -> Vec<(String, String)> {
    // srv_admin_state: 0x08 forced drain, 0x01 forced maintenance.
    [("blue-1", "8"), ("blue-2", "0"), ("green-1", "0"), ("green-2", "1")]
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlay_survives_a_reload_with_an_unrelated_change() {
    let s = backends().await;
    let d = StateDir::new();
    let p = Proxy::start(&config(&d, &s, "10s", true)).await;
    let url = format!("{}/", p.url("web").await);
    let c = client();
    let counts = tally(&c, &url, 20).await;
    assert_eq!(counts.keys().collect::<Vec<_>>(), ["blue-1", "blue-2"], "{counts:?}");

    assert_eq!(socket_cmd(&d.socket(), CHANGES).await, "\n\n\n");
    assert_eq!(split_of(&d.socket()).await, changed_split());
    let state = d.state_json();
    assert_eq!(state["splits"]["shop"], serde_json::json!({"blue": 0, "green": 100}));
    assert_eq!(state["servers"]["shop/green-2"]["state"], "maint");
    assert_eq!(state["servers"]["shop/blue-1"]["state"], "drain");
    let counts = tally(&c, &url, 100).await;
    assert_eq!(counts.get("green-1"), Some(&100), "{counts:?}");

    // Rewrite the file with an unrelated change and reload.
    let before = p.veer.snapshot().generation;
    std::fs::write(&p.path, config(&d, &s, "20s", true)).unwrap();
    match p.veer.reload().await {
        Ok(veer::ReloadOutcome::Applied { generation }) => assert!(generation > before),
        Ok(other) => panic!("the rewritten config was not applied: {other:?}"),
        Err(e) => panic!("reload failed: {e}"),
    }
    let snap = p.veer.snapshot();
    let shop = snap.backend("shop").unwrap();
    assert_eq!(shop.timeout, Duration::from_secs(20), "the file's change is applied");
    let weights: Vec<(&str, u32)> = shop.groups.iter().map(|g| (&*g.name, g.weight)).collect();
    assert_eq!(weights, [("blue", 0), ("green", 100)], "the split is still applied");

    assert_eq!(split_of(&d.socket()).await, changed_split());
    assert_eq!(servers_state(&d.socket()).await, changed_servers_state());
    let counts = tally(&c, &url, 100).await;
    assert_eq!(counts.get("green-1"), Some(&100), "{counts:?}");
    assert_eq!(d.state_json(), state, "the reload left the state file as it was");

    // The socket's `reload` of an unchanged file keeps it all too.
    assert_eq!(socket_cmd(&d.socket(), "reload").await, "Config unchanged.\n\n");
    assert_eq!(split_of(&d.socket()).await, changed_split());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_a_server_from_the_config_drops_its_overlay_entry() {
    let s = backends().await;
    let d = StateDir::new();
    let p = Proxy::start(&config(&d, &s, "10s", true)).await;
    assert_eq!(socket_cmd(&d.socket(), CHANGES).await, "\n\n\n");
    let overlay = p.veer.overlay().await;
    assert!(overlay.servers.contains_key("shop/green-2"), "{overlay:?}");

    // green-2 leaves the file.
    std::fs::write(&p.path, config(&d, &s, "10s", false)).unwrap();
    let outcome = p.veer.reload().await.map_err(|e| e.to_string());
    assert!(
        matches!(outcome, Ok(veer::ReloadOutcome::Applied { .. })),
        "{outcome:?}"
    );

    let shown = socket_cmd(&d.socket(), "show overlay").await;
    let shown: serde_json::Value = serde_json::from_str(shown.strip_suffix("\n\n").unwrap()).unwrap();
    let servers = shown["servers"].as_object().unwrap();
    assert!(!servers.contains_key("shop/green-2"), "show overlay: {shown}");
    assert_eq!(shown["servers"]["shop/blue-1"]["state"], "drain", "{shown}");
    assert_eq!(shown["splits"]["shop"], serde_json::json!({"blue": 0, "green": 100}));

    let on_disk = d.state_json();
    assert!(
        on_disk["servers"].get("shop/green-2").is_none(),
        "state file still has it: {on_disk}"
    );
    assert_eq!(on_disk["servers"]["shop/blue-1"]["state"], "drain", "{on_disk}");
    assert_eq!(on_disk["splits"]["shop"], serde_json::json!({"blue": 0, "green": 100}));
    assert_eq!(
        socket_cmd(&d.socket(), "get weight shop/green-2").await,
        "No such server.\n\n"
    );

    // Re-added to the file, it comes back as the file says (ready), not in maintenance.
    std::fs::write(&p.path, config(&d, &s, "10s", true)).unwrap();
    let outcome = p.veer.reload().await.map_err(|e| e.to_string());
    assert!(
        matches!(outcome, Ok(veer::ReloadOutcome::Applied { .. })),
        "{outcome:?}"
    );
    let split = split_of(&d.socket()).await;
    assert_eq!(split[1].2[1], ("green-2".to_string(), "ready".to_string()), "{split:?}");
    let c = client();
    let counts = tally(&c, &format!("{}/", p.url("web").await), 40).await;
    assert_eq!(counts.get("green-1"), Some(&20), "{counts:?}");
    assert_eq!(counts.get("green-2"), Some(&20), "{counts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_binary_keeps_runtime_state_across_sigkill() {
    let s = backends().await;
    let d = StateDir::new();
    std::fs::write(d.config_path(), config(&d, &s, "10s", true)).unwrap();
    let c = client();

    let mut first = VeerProcess::start(&d.config_path(), &[], &["web"]);
    first.wait_for_log("admin socket listening");
    let counts = tally(&c, &format!("http://{}/", first.listeners["web"]), 20).await;
    assert_eq!(counts.keys().collect::<Vec<_>>(), ["blue-1", "blue-2"], "{counts:?}");
    assert_eq!(socket_cmd(&d.socket(), CHANGES).await, "\n\n\n");
    assert_eq!(socket_cmd(&d.socket(), "set weight shop/green-1 3").await, "\n");
    assert_eq!(split_of(&d.socket()).await, changed_split());
    let counts = tally(&c, &format!("http://{}/", first.listeners["web"]), 50).await;
    assert_eq!(counts.get("green-1"), Some(&50), "{counts:?}");
    let persisted = std::fs::read_to_string(d.state()).unwrap();
    first.kill9();
    assert_eq!(
        std::fs::read_to_string(d.state()).unwrap(),
        persisted,
        "no clean shutdown wrote anything after the kill"
    );

    // Same config, new process (its listener on a new port, the stale socket file replaced).
    let second = VeerProcess::start(&d.config_path(), &[], &["web"]);
    second.wait_for_log("admin socket listening");
    assert_eq!(split_of(&d.socket()).await, changed_split());
    assert_eq!(servers_state(&d.socket()).await, changed_servers_state());
    assert_eq!(
        socket_cmd(&d.socket(), "get weight shop/green-1; get weight shop/green-2").await,
        "3 (initial 1)\n\n1 (initial 1)\n\n"
    );
    let counts = tally(&c, &format!("http://{}/", second.listeners["web"]), 100).await;
    assert_eq!(counts.get("green-1"), Some(&100), "{counts:?}");
    drop(first);
    drop(second);
}

fn corrupt_setup(s: &[FakeBackend]) -> StateDir {
    let d = StateDir::new();
    std::fs::write(d.config_path(), config(&d, s, "10s", true)).unwrap();
    std::fs::write(d.state(), "{not json").unwrap();
    d
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_state_file_stops_start() {
    let s = backends().await;
    let d = corrupt_setup(&s);
    let error = match Veer::start(d.config_path()).await {
        Ok(v) => panic!(
            "veer started on a corrupt state file with overlay {:?}",
            v.overlay().await
        ),
        Err(e) => e.to_string(),
    };
    let state = d.state().display().to_string();
    assert!(error.contains(&state), "error does not name {state}: {error}");
    assert_eq!(
        std::fs::read_to_string(d.state()).unwrap(),
        "{not json",
        "the corrupt file must be left for the operator"
    );
    assert!(!d.socket().exists(), "the admin socket must not be bound");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_state_file_stops_the_binary() {
    let s = backends().await;
    let d = corrupt_setup(&s);
    let mut child = Command::new(env!("CARGO_BIN_EXE_veer"))
        .args(["run", "-c"])
        .arg(d.config_path())
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut out = String::new();
        let _ = std::io::Read::read_to_string(&mut BufReader::new(stderr), &mut out);
        out
    });
    // Killed on drop if it never exits.
    struct Reap(Child);
    impl Drop for Reap {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut child = Reap(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "veer kept running on a corrupt state file");
        std::thread::sleep(Duration::from_millis(20));
    };
    let stderr = reader.join().unwrap();
    assert!(!status.success(), "{status:?}\n{stderr}");
    let state = d.state().display().to_string();
    assert!(stderr.contains(&state), "stderr does not name {state}:\n{stderr}");
}

/// `veer check --diff` (issue 25): what reloading a candidate file would change in the running
/// veer — with the overlay applied as a reload applies it — and nothing changes meanwhile;
/// `preview reload` itself answers only on the socket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_diff_previews_a_reload_against_the_running_veer() {
    let (blue, green) = (FakeBackend::start("b1").await, FakeBackend::start("g1").await);
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("admin.sock");
    let file = |blue_weight: u32, extra_server: bool, extra_listener: bool| {
        format!(
            r#"
[admin]
socket = "{sock}"
http = "127.0.0.1:0"

[[listener]]
name = "web"
bind = "127.0.0.1:0"
protocol = "http"
  [[listener.route]]
  backend = "shop"
{listener}
[[backend]]
name = "shop"
groups = [
  {{ name = "blue", weight = {blue_weight}, servers = [ {{ name = "b1", addr = "{b}" }} ] }},
  {{ name = "green", weight = 0, servers = [ {{ name = "g1", addr = "{g}" }}{more} ] }},
]
"#,
            sock = sock.display(),
            b = blue.addr,
            g = green.addr,
            listener = if extra_listener {
                "[[listener]]\nname = \"api\"\nbind = \"127.0.0.1:0\"\nprotocol = \"tcp\"\nbackend = \"shop\"\n"
            } else {
                ""
            },
            more = if extra_server {
                ", { name = \"g2\", addr = \"127.0.0.1:9\", weight = 3 }"
            } else {
                ""
            },
        )
    };
    let p = Proxy::start_in(dir, &file(100, false, false)).await;
    assert_eq!(admin(&sock, "set weight shop/b1 7").await, "\n");
    let generation = p.veer.snapshot().generation;
    let candidate = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(candidate.path(), file(50, true, true)).unwrap();
    let run = |args: Vec<std::ffi::OsString>| {
        tokio::task::spawn_blocking(move || {
            let out = std::process::Command::new(env!("CARGO_BIN_EXE_veer"))
                .args(args)
                .output()
                .unwrap();
            (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned())
        })
    };
    let args = |path: &std::path::Path| -> Vec<std::ffi::OsString> {
        vec![
            "check".into(),
            "-c".into(),
            path.into(),
            "--diff".into(),
            "-s".into(),
            sock.clone().into(),
        ]
    };
    let (code, out) = run(args(candidate.path())).await.unwrap();
    assert_eq!(code, Some(0), "{out}");
    for line in [
        "+ listener api 127.0.0.1:0 tcp",
        "~ group shop/blue weight 100 -> 50",
        "+ server shop/g2 127.0.0.1:9 weight 3",
    ] {
        assert!(out.lines().any(|l| l == line), "{line:?} missing in\n{out}");
    }
    // The runtime weight of b1 wins over the file on reload: no change shown for it.
    assert!(!out.contains("shop/b1"), "{out}");
    // Nothing changed meanwhile.
    assert_eq!(p.veer.snapshot().generation, generation);
    // The running file itself: no changes.
    let (code, out) = run(args(&p.path)).await.unwrap();
    assert_eq!(code, Some(0));
    assert!(out.contains("No changes: reloading"), "{out}");
    // A file a reload would refuse: its errors, exit 64 before asking veer.
    std::fs::write(candidate.path(), "[[listener]]\nname = 3\n").unwrap();
    let (code, _) = run(args(candidate.path())).await.unwrap();
    assert_eq!(code, Some(64));
    // Over HTTP it is refused: it reads files of the caller's choosing.
    let http = format!("http://{}/command", p.veer.admin_http_addr().unwrap());
    let a = send(
        &client(),
        http::Request::post(http)
            .header("x-veer-admin", "1")
            .body(http_body_util::Full::new(bytes::Bytes::from("preview reload")))
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&a.body),
        "This command is only available on the admin socket.\n"
    );
}
