//! The runtime API against HAProxy 2.6 itself (issue 25): the answers veer claims to give
//! in HAProxy's format are compared with what Debian's haproxy answered to the same
//! commands, captured in tests/fixtures/haproxy-2.6/ (its README says how), and — when
//! haproxy is installed (CI installs it) — with a haproxy started here side by side.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use support::*;

fn fixture(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/haproxy-2.6")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The fixture's setup: frontend `web`, backend `app` with servers a (127.0.0.1:19001) and
/// b (127.0.0.1:19002), nothing listening behind them.
async fn veer_like_the_fixture() -> (Proxy, PathBuf) {
    veer_like(r#"{ name = "a", addr = "127.0.0.1:19001" }, { name = "b", addr = "127.0.0.1:19002" }"#).await
}

/// A fixture's setup with backend `app`'s `servers` (TOML, inside the brackets), its admin
/// socket and state file in the temp dir.
async fn veer_like(servers: &str) -> (Proxy, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("admin.sock");
    let config = format!(
        r#"
[admin]
socket = "{}"
state_file = "{}"

[[listener]]
name = "web"
bind = "127.0.0.1:0"
protocol = "http"
  [[listener.route]]
  backend = "app"

[[backend]]
name = "app"
servers = [ {servers} ]
"#,
        sock.display(),
        dir.path().join("state.json").display()
    );
    (Proxy::start_in(dir, &config).await, sock)
}

/// A haproxy 2.x started on the fixture's config (its admin socket moved into a temp dir),
/// stopped by PID when dropped; `None` when haproxy is not installed and
/// `VEER_REQUIRE_TOOLS` is not set.
struct Haproxy {
    child: std::process::Child,
    sock: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Haproxy {
    async fn start() -> Option<Haproxy> {
        Haproxy::start_with("haproxy.cfg").await
    }

    /// haproxy on the fixture config `cfg`.
    async fn start_with(cfg: &str) -> Option<Haproxy> {
        if std::process::Command::new("haproxy").arg("-v").output().is_err() {
            assert!(
                std::env::var_os("VEER_REQUIRE_TOOLS").is_none(),
                "haproxy missing with VEER_REQUIRE_TOOLS set"
            );
            eprintln!("SKIPPED: haproxy not installed (CI installs it): comparing with the fixtures only");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("haproxy.sock");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let cfg = fixture(cfg)
            .replace("/tmp/hap/admin.sock", &sock.display().to_string())
            .replace("127.0.0.1:18080", &format!("127.0.0.1:{port}"));
        let cfg_path = dir.path().join("haproxy.cfg");
        std::fs::write(&cfg_path, cfg).unwrap();
        let child = std::process::Command::new("haproxy")
            .arg("-db")
            .arg("-f")
            .arg(&cfg_path)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("haproxy starts");
        let h = Haproxy { child, sock, _dir: dir };
        for _ in 0..100 {
            if tokio::net::UnixStream::connect(&h.sock).await.is_ok() {
                return Some(h);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("haproxy did not open its socket");
    }
}

/// A fixture of exchanges: each command on a line after `> `, then its answer.
fn exchanges(text: &str) -> Vec<(&str, String)> {
    let mut out: Vec<(&str, String)> = Vec::new();
    for line in text.split_inclusive('\n') {
        match (line.strip_prefix("> "), out.last_mut()) {
            (Some(command), _) => out.push((command.trim_end_matches('\n'), String::new())),
            (None, Some((_, answer))) => answer.push_str(line),
            (None, None) => panic!("a fixture starts with its first command: {line:?}"),
        }
    }
    out
}

/// The keys of `Key: value` lines, in order.
fn keys(info: &str) -> Vec<String> {
    info.lines()
        .filter_map(|l| l.split_once(": ").map(|(k, _)| k.to_string()))
        .collect()
}

#[tokio::test]
async fn show_info_has_haproxys_fields_in_haproxys_order() {
    let (p, sock) = veer_like_the_fixture().await;
    let info = admin(&sock, "show info").await;
    let mut want = keys(&fixture("show_info.txt"));
    assert_eq!(want.len(), 69);
    if let Some(h) = Haproxy::start().await {
        let live = keys(&admin(&h.sock, "show info").await);
        assert_eq!(live, want, "the fixture is what haproxy says");
    }
    want.push("Generation".to_string());
    assert_eq!(keys(&info), want, "{info}");
    // What veer knows, it says.
    let value = |k: &str| {
        info.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}: ")))
            .unwrap_or_else(|| panic!("{k} in {info}"))
            .to_string()
    };
    assert_eq!(value("Name"), "veer");
    assert!(value("Version").starts_with("2.8.0-veer-"), "Ansible needs >= 1.5");
    assert_eq!(value("Pid"), std::process::id().to_string());
    assert_eq!(value("Listeners"), "1");
    assert!(value("Ulimit-n").parse::<u64>().unwrap() > 0);
    assert!(value("Tasks").parse::<u64>().unwrap() > 0);
    assert_eq!(value("Stopping"), "0");
    // The build's date, in HAProxy's form (2026/12/02).
    let date = value("Release_date");
    let parts: Vec<&str> = date.split('/').collect();
    assert!(
        parts.len() == 3 && parts.iter().all(|p| p.bytes().all(|b| b.is_ascii_digit())) && parts[0].len() == 4,
        "{date}"
    );
    let started: u64 = value("Start_time_sec").parse().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(started <= now && started + 600 > now, "{started} vs {now}");
    // Requests are counted.
    let client = client();
    let _ = get(&client, &p.url("web").await, &[]).await;
    assert_eq!(value_of(&admin(&sock, "show info").await, "CumReq"), "1");
}

fn value_of(info: &str, key: &str) -> String {
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}: ")))
        .unwrap_or_default()
        .to_string()
}

#[tokio::test]
async fn set_server_addr_answers_as_haproxy_does() {
    let (_p, sock) = veer_like_the_fixture().await;
    let fixture = fixture("set_server_addr.txt");
    let h = Haproxy::start().await;
    for (command, want) in exchanges(&fixture) {
        let got = admin(&sock, command).await;
        assert_eq!(got, want, "{command}");
        if let Some(h) = &h {
            assert_eq!(admin(&h.sock, command).await, want, "haproxy: {command}");
        }
    }
    // The address changed, and only what HAProxy would have changed.
    let state = admin(&sock, "show servers state app").await;
    assert!(state.contains(" b 127.0.0.3 "), "{state}");
    assert!(state.contains(" 19002 "), "{state}");
    // A port veer cannot take changes nothing (HAProxy would apply the address first).
    let bad = admin(&sock, "set server app/b addr 127.0.0.9 port 70000").await;
    assert_eq!(
        bad,
        "problem converting port '70000' to an int by 'stats socket command'\n\n"
    );
    assert!(admin(&sock, "show servers state app").await.contains(" b 127.0.0.3 "));
}

/// `typed` lines as (object, position, name) → (tags, type).
fn typed_fields(text: &str) -> std::collections::BTreeMap<(String, String, String), (String, String)> {
    text.lines()
        .filter_map(|l| {
            let (head, rest) = l.split_once(':')?;
            let p: Vec<&str> = head.split('.').collect();
            let mut r = rest.splitn(3, ':');
            Some((
                (p.first()?.to_string(), p.get(3)?.to_string(), p.get(4)?.to_string()),
                (r.next()?.to_string(), r.next()?.to_string()),
            ))
        })
        .collect()
}

#[tokio::test]
async fn show_stat_typed_json_filters_and_up_read_as_haproxys() {
    let (_p, sock) = veer_like_the_fixture().await;
    let h = Haproxy::start().await;
    // The servers of backend `app` by name, typed: every field both emit has the same
    // position, tags and type.
    let ours = typed_fields(&admin(&sock, "show stat app 4 -1 typed").await);
    let theirs = match &h {
        Some(h) => admin(&h.sock, "show stat app 4 -1 typed").await,
        None => fixture("show_stat_app_4_-1_typed.txt"),
    };
    let theirs = typed_fields(&theirs);
    let common: Vec<_> = ours.keys().filter(|k| theirs.contains_key(*k)).collect();
    assert!(common.len() >= 26, "{} fields in common", common.len());
    for k in common {
        assert_eq!(ours[k], theirs[k], "{k:?}");
    }
    assert!(ours.keys().all(|(obj, _, _)| obj == "S"), "servers only");
    // `desc` appends the text.
    let desc = admin(&sock, "show stat 2 4 1 typed desc").await;
    assert!(
        desc.lines().any(|l| l == "S.2.1.1.svname.1:KNS:str:a:\"Server name\""),
        "{desc}"
    );
    // JSON: HAProxy's object shape, keys in its order.
    let json = admin(&sock, "show stat json").await;
    let parsed: serde_json::Value = serde_json::from_str(json.trim()).unwrap_or_else(|e| panic!("{e}: {json}"));
    let rows = parsed.as_array().unwrap();
    assert_eq!(rows.len(), 4, "FRONTEND, a, b, BACKEND");
    let first = json.find("[{").map(|i| &json[i + 1..]).unwrap();
    let first = &first[..first.find("}}").unwrap() + 2];
    let haproxy_json = fixture("show_stat_json.txt");
    let theirs_first = haproxy_json.find("[{").map(|i| &haproxy_json[i + 1..]).unwrap();
    let theirs_first = &theirs_first[..theirs_first.find("}}").unwrap() + 2];
    let shape = |o: &str| o.replace(|c: char| c.is_ascii_digit(), "");
    // Same keys in the same order; only the proxy id differs (veer numbers listeners from 1).
    assert_eq!(
        shape(first).replace("\"web\"", "V"),
        shape(theirs_first).replace("\"web\"", "V"),
        "{first}\n{theirs_first}"
    );
    assert_eq!(rows[1][1]["value"]["value"], "a");
    // A proxy name that names nothing, as HAProxy says it.
    assert_eq!(admin(&sock, "show stat nosuch 4 -1").await, "No such proxy.\n\n");
    if let Some(h) = &h {
        assert_eq!(admin(&h.sock, "show stat nosuch 4 -1").await, "No such proxy.\n\n");
    }
    // `up` leaves out a server in maintenance, `no-maint` too; a DOWN one only `up` does.
    assert_eq!(admin(&sock, "set server app/b state maint").await, "\n");
    for form in ["show stat up", "show stat no-maint"] {
        let out = admin(&sock, form).await;
        let servers: Vec<&str> = out.lines().filter_map(|l| l.strip_prefix("app,")).collect();
        assert_eq!(servers.len(), 2, "{form}: a and BACKEND\n{out}");
        assert!(servers[0].starts_with("a,"), "{form}: {out}");
    }
    let out = admin(&sock, "show stat -1 4 -1").await;
    assert_eq!(out.lines().filter(|l| l.starts_with("app,")).count(), 2, "{out}");
}

#[tokio::test]
async fn add_server_refuses_the_names_haproxy_refuses() {
    let (_p, sock) = veer_like_the_fixture().await;
    let h = Haproxy::start().await;
    for (command, want) in exchanges(&fixture("add_server_names.txt")) {
        assert_eq!(admin(&sock, command).await, want, "{command}");
        if let Some(h) = &h {
            assert_eq!(admin(&h.sock, command).await, want, "haproxy: {command}");
        }
    }
}

/// The FRONTEND row counts what the listener answered: requests by class and in all.
#[tokio::test]
async fn show_stat_fills_the_frontend_request_columns() {
    let backend = FakeBackend::start("a").await;
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("admin.sock");
    let mut config = http_config(&[("a", backend.addr)], "");
    config.insert_str(0, &format!("[admin]\nsocket = \"{}\"\n", sock.display()));
    let p = Proxy::start_in(dir, &config).await;
    let c = client();
    let url = p.url("web").await;
    for path in ["/", "/x", "/y"] {
        get(&c, &format!("{url}{path}"), &[]).await.unwrap();
    }
    let csv = admin(&sock, "show stat").await;
    let header: Vec<&str> = csv
        .lines()
        .next()
        .unwrap()
        .trim_start_matches("# ")
        .split(',')
        .collect();
    let col = |row: &str, name: &str| -> String {
        let i = header.iter().position(|h| *h == name).unwrap();
        row.split(',').nth(i).unwrap_or("").to_string()
    };
    let frontend = csv.lines().find(|l| l.starts_with("web,FRONTEND,")).unwrap();
    assert_eq!(col(frontend, "req_tot"), "3", "{csv}");
    assert_eq!(col(frontend, "hrsp_2xx"), "3", "{csv}");
    assert_eq!(col(frontend, "hrsp_5xx"), "0", "{csv}");
}

/// HAProxy's answer without where the id's holder is defined (` at haproxy.cfg:13`, ` at
/// (null):0`): veer does not say it. And without the empty line HAProxy omits after
/// `Server deleted.` (veer ends every answer with one, as prompt-mode clients need).
fn comparable(answer: &str) -> String {
    let answer = match (answer.find(" already used at "), answer.find(" ('server ")) {
        (Some(a), Some(b)) => format!("{} already used{}", &answer[..a], &answer[b..]),
        _ => answer.to_string(),
    };
    answer.trim_end_matches('\n').to_string()
}

/// (srv_id, srv_name) of each `show servers state` line, sorted.
fn server_ids(state: &str) -> Vec<(u32, String)> {
    let mut ids: Vec<(u32, String)> = state
        .lines()
        .skip(2)
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            Some((f.get(2)?.parse().ok()?, f.get(3)?.to_string()))
        })
        .collect();
    ids.sort();
    ids
}

/// Server ids are HAProxy's: `id` in the config, the lowest free one otherwise and for
/// `add server`; `del server` renumbers nobody; `#<id>` keeps naming the same server;
/// and they survive a reload and a restart (the overlay remembers added servers' ids).
#[tokio::test]
async fn server_ids_stay_with_their_servers_as_haproxys_do() {
    let (p, sock) = veer_like(
        r#"{ name = "a", addr = "127.0.0.1:19001" }, { name = "b", addr = "127.0.0.1:19002", id = 5 },
            { name = "c", addr = "127.0.0.1:19003" }"#,
    )
    .await;
    let config = std::fs::read_to_string(&p.path).unwrap();
    let h = Haproxy::start_with("haproxy-ids.cfg").await;
    let want_ids = server_ids(&fixture("servers_state_ids.txt"));
    assert_eq!(
        want_ids,
        [(1, "f"), (2, "d"), (3, "c"), (5, "b"), (9, "e")].map(|(i, n)| (i, n.to_string()))
    );
    for (command, want) in exchanges(&fixture("server_ids.txt")) {
        assert_eq!(comparable(&admin(&sock, command).await), comparable(&want), "{command}");
        if let Some(h) = &h {
            let got = admin(&h.sock, command).await;
            assert_eq!(comparable(&got), comparable(&want), "haproxy: {command}");
        }
    }
    assert_eq!(server_ids(&admin(&sock, "show servers state app").await), want_ids);
    if let Some(h) = &h {
        assert_eq!(server_ids(&admin(&h.sock, "show servers state app").await), want_ids);
    }
    // `#5` named b: b drains, and `show stat -1 4 5` is b's row, as HAProxy's.
    let row = |csv: &str| {
        csv.lines()
            .nth(1)
            .map(|l| l.split(',').take(2).collect::<Vec<_>>().join(","))
    };
    let stat = admin(&sock, "show stat -1 4 5").await;
    assert_eq!(row(&stat), row(&fixture("show_stat_-1_4_5.txt")), "{stat}");
    assert!(stat.contains(",DRAIN,"), "{stat}");

    // A reload and a restart keep every id (f keeps a's old 1; d and e theirs).
    assert_eq!(admin(&sock, "reload").await, "Config unchanged.\n\n");
    let edited = config.replace("name = \"app\"", "name = \"app\"\ntimeout = \"9s\"");
    std::fs::write(&p.path, &edited).unwrap();
    assert!(admin(&sock, "reload").await.starts_with("Reloaded"));
    assert_eq!(server_ids(&admin(&sock, "show servers state app").await), want_ids);
    p.veer.shutdown().await;
    for _ in 0..100 {
        if tokio::net::UnixStream::connect(&sock).await.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let restarted = veer::Veer::start(&p.path).await.unwrap();
    assert_eq!(server_ids(&admin(&sock, "show servers state app").await), want_ids);
    // A config that now gives an added server's id to one of its own wins; the added
    // server moves to the lowest free id and keeps that one.
    std::fs::write(
        &p.path,
        edited.replace("\"127.0.0.1:19003\" }", "\"127.0.0.1:19003\", id = 9 }"),
    )
    .unwrap();
    assert!(admin(&sock, "reload").await.starts_with("Reloaded"));
    let ids = server_ids(&admin(&sock, "show servers state app").await);
    assert_eq!(
        ids,
        [(1, "f"), (2, "d"), (3, "e"), (5, "b"), (9, "c")].map(|(i, n)| (i, n.to_string()))
    );
    // A second id the config gives twice is refused with both places.
    std::fs::write(
        &p.path,
        edited.replace("\"127.0.0.1:19003\" }", "\"127.0.0.1:19003\", id = 5 }"),
    )
    .unwrap();
    let refused = admin(&sock, "reload").await;
    assert!(
        refused.contains("server id 5 is already used in backend \"app\" (first defined at"),
        "{refused}"
    );
    assert_eq!(server_ids(&admin(&sock, "show servers state app").await), ids);
    restarted.shutdown().await;
}
