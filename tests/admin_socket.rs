//! The admin unix socket, byte for byte: HAProxy's session behaviour (one line, `;`-separated
//! commands, an empty line after each output, EOF; `prompt` keeps the session open), every
//! command's exact output and errors, malformed input that changes nothing, and 100
//! concurrent clients.

mod support;
use std::path::{Path, PathBuf};

use support::*;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

struct Admin {
    proxy: Proxy,
    sock: PathBuf,
    _backends: Vec<FakeBackend>,
}

async fn start() -> Admin {
    let mut backends = Vec::new();
    for n in ["blue-1", "blue-2", "green-1"] {
        backends.push(FakeBackend::start(n).await);
    }
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
  backend = "shop"

[[backend]]
name = "shop"
groups = [
  {{ name = "blue", weight = 100, servers = [
      {{ name = "blue-1", addr = "{}" }},
      {{ name = "blue-2", addr = "{}", weight = 2 }} ] }},
  {{ name = "green", weight = 0, servers = [ {{ name = "green-1", addr = "{}" }} ] }},
]
"#,
        sock.display(),
        dir.path().join("state.json").display(),
        backends[0].addr,
        backends[1].addr,
        backends[2].addr
    );
    let proxy = Proxy::start(&config).await;
    // Keep the temp dir alive with the proxy.
    std::mem::forget(dir);
    Admin {
        proxy,
        sock,
        _backends: backends,
    }
}

/// Sends raw bytes as one session and reads until EOF.
async fn send_raw(sock: &Path, bytes: &[u8]) -> String {
    let mut s = UnixStream::connect(sock).await.unwrap();
    // veer may answer and close before reading everything (an oversized line).
    let _ = s.write_all(bytes).await;
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    String::from_utf8(out).unwrap()
}

async fn cmd(a: &Admin, line: &str) -> String {
    send_raw(&a.sock, format!("{line}\n").as_bytes()).await
}

#[tokio::test]
async fn every_command_answers_exactly() {
    let a = start().await;
    // (command, exact answer) in order; state carries from one to the next.
    let cases: &[(&str, &str)] = &[
        ("get weight shop/blue-2", "2 (initial 2)\n\n"),
        ("get weight shop/#2", "2 (initial 2)\n\n"),
        ("get weight #2/blue-1", "1 (initial 1)\n\n"),
        ("get weight shop", "Require 'backend/server'.\n\n"),
        ("get weight nope/blue-1", "No such backend.\n\n"),
        ("get weight shop/nope", "No such server.\n\n"),
        ("set weight shop/blue-2 10", "\n"),
        ("get weight shop/blue-2", "10 (initial 2)\n\n"),
        ("set weight shop/blue-2 50%", "\n"),
        ("get weight shop/blue-2", "1 (initial 2)\n\n"),
        ("set server shop/blue-2 weight 2", "\n"),
        ("set weight shop/blue-2 abc", "Empty weight string empty or preceded by garbage\n\n"),
        ("set weight shop/blue-2 -1", "Absolute weight can only be between 0 and 256 inclusive.\n\n"),
        ("set weight shop/blue-2 257", "Absolute weight can only be between 0 and 256 inclusive.\n\n"),
        ("set weight shop/blue-2 7x", "Trailing garbage in weight string\n\n"),
        ("set weight shop/blue-2 -3%", "Relative weight must be positive.\n\n"),
        ("set weight shop/blue-2", "Require <weight> or <weight%>.\n\n"),
        ("set server shop/blue-1 state drain", "\n"),
        ("set server shop/blue-1 state up", "'set server <srv> state' expects 'ready', 'drain' and 'maint'.\n\n"),
        ("set server shop/nope state up", "No such server.\n\n"),
        ("set server shop/blue-1 frobnicate", "'set server <srv>' only supports 'agent', 'health', 'state', 'weight', 'addr', 'fqdn', 'check-addr', 'check-port', 'agent-addr', 'agent-port', 'agent-send' and 'ssl'.\n\n"),
        ("set server shop/blue-1 health up", "\n"),
        ("set server shop/blue-1 health sideways", "'set server <srv> health' expects 'up', 'stopping', or 'down'.\n\n"),
        ("set server shop/blue-1 agent up", "\n"),
        ("set server shop/blue-1 addr 127.0.0.2", "IP changed from '127.0.0.1' to '127.0.0.2' by 'stats socket command'\n\n"),
        ("set server shop/blue-1 addr not-an-ip", "Invalid addr 'not-an-ip' by 'stats socket command'\n\n"),
        ("enable server shop/blue-1", "\n"),
        ("disable server shop/blue-1", "\n"),
        ("enable health shop/blue-1", "\n"),
        ("disable health shop/blue-1", "\n"),
        ("enable agent shop/blue-1", "\n"),
        ("disable agent shop/blue-1", "\n"),
        ("shutdown sessions server shop/blue-1", "\n"),
        ("shutdown sessions server shop/nope", "No such server.\n\n"),
        ("del server shop/blue-2", "Only servers in maintenance mode can be deleted.\n\n"),
        ("del server shop/blue-1", "Server deleted.\n\n"),
        ("get weight shop/blue-1", "No such server.\n\n"),
        ("add server shop/blue-1 127.0.0.1:9001", "New server registered.\n\n"),
        ("add server shop/blue-1 127.0.0.1:9001", "Already exists a server with the same name in backend.\n\n"),
        ("add server shop/green-2", "'server' expects <name> and <addr>[:<port>] as arguments.\n\n"),
        ("add server nope/x 127.0.0.1:1", "No such backend.\n\n"),
        ("add server shop", "Require 'backend/server'.\n\n"),
        ("add server shop/green-2 127.0.0.1:9102 frob 1", "unknown keyword 'frob'.\n\n"),
        ("add server shop/green-2 127.0.0.1:9102 group green weight 3", "New server registered.\n\n"),
        ("get weight shop/green-2", "3 (initial 3)\n\n"),
        ("wait 50ms srv-removable shop/blue-2", "Failed. Only servers in maintenance mode can be deleted.\n\n"),
        ("wait 1s srv-removable shop/green-2", "\n"),
        ("wait 10", "\n"),
        ("wait 100ms srv-drained shop/blue-2", "Drained.\n\n"),
        ("wait 100ms group-drained shop/blue", "Drained.\n\n"),
        ("wait 100ms group-drained shop/purple", "No such group 'purple' in backend 'shop'.\n\n"),
        ("set split shop blue=10 green=90", "\n"),
        ("set split shop blue=10 purple=90", "No such group 'purple' in backend 'shop'.\n\n"),
        ("set split shop blue=1001", "Group weight can only be between 0 and 1000 inclusive.\n\n"),
        ("set split shop blue", "Require <group>=<weight>.\n\n"),
        ("set split nope blue=1", "No such backend.\n\n"),
        ("set group shop/green state drain", "\n"),
        ("set group shop/green state sideways", "'set group <grp> state' expects 'ready', 'drain' and 'maint'.\n\n"),
        ("show backend", "# name\nshop\n\n"),
        ("json get weight shop/nope", "{\"ok\":false,\"output\":\"No such server.\\n\"}\n\n"),
        ("json get weight shop/green-2", "{\"ok\":true,\"output\":\"3 (initial 3)\\n\"}\n\n"),
        ("reload", "Config unchanged.\n\n"),
        ("clear overlay shop/green-1", "\n"),
    ];
    for (line, want) in cases {
        assert_eq!(cmd(&a, line).await, *want, "`{line}`");
    }
    // The split and group state took effect in the running snapshot.
    let snap = a.proxy.veer.snapshot();
    let shop = snap.backend("shop").unwrap();
    assert_eq!((shop.groups[0].weight, shop.groups[1].weight), (10, 90));
    // `set group … drain` drained both green servers; `clear overlay shop/green-1` gave
    // green-1 back its config state.
    let states: Vec<(&str, veer::config::AdminState)> =
        shop.groups[1].servers.iter().map(|s| (&*s.name, s.admin)).collect();
    assert_eq!(
        states,
        [
            ("green-1", veer::config::AdminState::Ready),
            ("green-2", veer::config::AdminState::Drain)
        ]
    );
}

#[tokio::test]
async fn show_commands_have_haproxy_shapes() {
    let a = start().await;
    let info = cmd(&a, "show info").await;
    assert!(info.starts_with("Name: veer\nVersion: 2.8.0-veer-"), "{info}");
    assert!(info.contains(&format!("\nPid: {}\n", std::process::id())));
    assert!(info.ends_with("\n\n") && !info.trim_end().contains("\n\n"));

    // One keep-alive client connection, held open: the FRONTEND row counts it.
    let c = client();
    get(&c, &a.proxy.url("web").await, &[]).await.unwrap();
    let stat = cmd(&a, "show stat").await;
    let lines: Vec<&str> = stat.lines().collect();
    let header: Vec<&str> = lines[0]
        .strip_prefix("# ")
        .unwrap()
        .trim_end_matches(',')
        .split(',')
        .collect();
    assert_eq!(header.len(), 88);
    assert_eq!((header[17], header[18]), ("status", "weight"));
    assert_eq!(lines.last(), Some(&""), "output ends with the empty line");
    let rows: Vec<Vec<&str>> = lines[1..lines.len() - 1]
        .iter()
        .map(|l| l.split(',').collect())
        .collect();
    assert!(
        rows.iter().all(|r| r.len() == 89 && r[88].is_empty()),
        "every row ends with ','"
    );
    let names: Vec<(&str, &str)> = rows.iter().map(|r| (r[0], r[1])).collect();
    assert_eq!(
        names,
        [
            ("web", "FRONTEND"),
            ("shop", "blue-1"),
            ("shop", "blue-2"),
            ("shop", "green-1"),
            ("shop", "BACKEND")
        ]
    );
    let blue2 = &rows[2];
    assert_eq!(
        (blue2[17], blue2[18], blue2[4], blue2[2], blue2[32]),
        ("no check", "2", "0", "0", "2")
    );
    assert_eq!(rows[4][17], "UP");
    assert_eq!(
        (rows[0][17], rows[0][4], rows[0][7]),
        ("OPEN", "1", "1"),
        "FRONTEND status, scur, stot"
    );

    let servers = cmd(&a, "show servers state shop").await;
    let lines: Vec<&str> = servers.lines().collect();
    assert_eq!(lines[0], "1");
    assert!(lines[1].starts_with("# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state"));
    let b2: Vec<&str> = lines[3].split(' ').collect();
    assert_eq!(b2.len(), 25);
    assert_eq!(
        (b2[1], b2[3], b2[5], b2[6], b2[7], b2[8]),
        ("shop", "blue-2", "2", "0", "2", "2")
    );
    cmd(&a, "set server shop/blue-2 state drain; disable server shop/blue-1").await;
    let servers = cmd(&a, "show servers state").await;
    let admin: Vec<&str> = servers.lines().skip(2).filter_map(|l| l.split(' ').nth(6)).collect();
    assert_eq!(admin, ["1", "8", "0"]);
    assert_eq!(cmd(&a, "show servers state nope").await, "Can't find backend.\n\n");

    let split = cmd(&a, "show split shop json").await;
    let v: serde_json::Value = serde_json::from_str(split.trim_end()).unwrap();
    assert_eq!(v["groups"][0]["servers"][1]["state"], "drain");
    assert_eq!(v["groups"][0]["weight"], 100);
    let table = cmd(&a, "show split shop").await;
    assert!(table.lines().nth(1).unwrap().starts_with("blue"), "{table}");

    let config = cmd(&a, "show config").await;
    assert!(config.contains(&format!("File: {}\n", a.proxy.path.display())));
    assert!(
        config.contains("\nHash: ") && config.contains("\nLast-reload: none\n"),
        "{config}"
    );
}

#[tokio::test]
async fn session_behaviour_matches_haproxy() {
    let a = start().await;
    // Several commands on one line: each output, each followed by an empty line, then EOF.
    assert_eq!(
        cmd(&a, "show backend; get weight shop/blue-1").await,
        "# name\nshop\n\n1 (initial 1)\n\n"
    );
    // `\;` is a literal semicolon, not a separator.
    assert!(cmd(&a, r"get weight shop/blue-1\;x")
        .await
        .starts_with("No such server."));
    // An empty line closes a non-interactive session with no output.
    assert_eq!(send_raw(&a.sock, b"\n").await, "");

    // Interactive: `prompt`, then commands answered with a prompt after each, until quit.
    let s = UnixStream::connect(&a.sock).await.unwrap();
    let (r, mut w) = s.into_split();
    let mut r = BufReader::new(r);
    w.write_all(b"prompt\n").await.unwrap();
    let mut buf = vec![0u8; 3];
    r.read_exact(&mut buf).await.unwrap();
    assert_eq!(buf, b"\n> ");
    for _ in 0..2 {
        w.write_all(b"get weight shop/blue-2\n").await.unwrap();
        let mut line = String::new();
        r.read_line(&mut line).await.unwrap();
        assert_eq!(line, "2 (initial 2)\n");
        let mut buf = vec![0u8; 3];
        r.read_exact(&mut buf).await.unwrap();
        assert_eq!(buf, b"\n> ");
    }
    w.write_all(b"quit\n").await.unwrap();
    let mut rest = Vec::new();
    r.read_to_end(&mut rest).await.unwrap();
    assert!(rest.is_empty());
}

#[tokio::test]
async fn socat_one_liner() {
    if which("socat").is_none() {
        assert!(
            std::env::var_os("VEER_REQUIRE_TOOLS").is_none(),
            "socat is required (CI installs it)"
        );
        eprintln!("socat not installed: skipping (CI installs it and sets VEER_REQUIRE_TOOLS)");
        return;
    }
    let a = start().await;
    let sock = a.sock.clone();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("sh")
            .arg("-c")
            .arg(format!(
                "echo 'show info; show stat' | socat stdio UNIX-CONNECT:{}",
                sock.display()
            ))
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let (info, stat) = text.split_once("\n\n").unwrap();
    assert!(info.starts_with("Name: veer\n"));
    assert!(stat.starts_with("# pxname,svname,"));
    assert!(stat.ends_with(",\n\n"), "both outputs, each terminated, then EOF");
}

fn which(tool: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(tool))
        .find(|p| p.exists())
}

#[tokio::test]
async fn malformed_input_gets_an_error_and_changes_nothing() {
    let a = start().await;
    let before = (cmd(&a, "show overlay").await, a.proxy.veer.snapshot().generation);
    let huge = format!("set weight shop/blue-1 {}\n", "9".repeat(1 << 20));
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (
            b"\x00\xff\xfe binary\n".to_vec(),
            "Unknown command, but maybe one of the following ones is a better match:\n",
        ),
        (huge.into_bytes(), "Command line too long (limit is 65536 bytes).\n\n"),
        (
            b"frobnicate the server\n".to_vec(),
            "Unknown command, but maybe one of the following ones is a better match:\n",
        ),
        (b"set weight shop/../../etc 1\n".to_vec(), "No such server.\n\n"),
        (
            b"set weight shop/blue-1 abc\n".to_vec(),
            "Empty weight string empty or preceded by garbage\n\n",
        ),
        (
            b"set weight shop/blue-1 -1\n".to_vec(),
            "Absolute weight can only be between 0 and 256 inclusive.\n\n",
        ),
        (
            b"set weight shop/blue-1 257\n".to_vec(),
            "Absolute weight can only be between 0 and 256 inclusive.\n\n",
        ),
        (
            b"set split shop blue=5 green=abc\n".to_vec(),
            "Group weight can only be between 0 and 1000 inclusive.\n\n",
        ),
        (
            b"set server shop/blue-1 state \xff\n".to_vec(),
            "'set server <srv> state' expects 'ready', 'drain' and 'maint'.\n\n",
        ),
    ];
    for (raw, want) in cases {
        let got = send_raw(&a.sock, &raw).await;
        assert!(
            got.starts_with(want),
            "{:?} → {got:?}",
            String::from_utf8_lossy(&raw[..raw.len().min(30)])
        );
    }
    assert_eq!(
        (cmd(&a, "show overlay").await, a.proxy.veer.snapshot().generation),
        before,
        "state changed"
    );
    // The socket still serves.
    assert_eq!(cmd(&a, "get weight shop/blue-1").await, "1 (initial 1)\n\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_concurrent_clients() {
    let a = std::sync::Arc::new(start().await);
    let tasks: Vec<_> = (0..100)
        .map(|i| {
            let a = a.clone();
            tokio::spawn(async move {
                let line = match i % 4 {
                    0 => format!("set weight shop/blue-2 {}", i % 50 + 1),
                    1 => "show stat".to_string(),
                    2 => format!("set split shop blue={} green={}", i, 100 - i),
                    _ => "get weight shop/blue-2; show servers state".to_string(),
                };
                let out = cmd(&a, &line).await;
                assert!(out.ends_with('\n'), "{line}: {out:?}");
                assert!(!out.contains("Unknown command"), "{line}: {out}");
                (i, out)
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    // The final state is exactly what some client wrote last: the overlay, the snapshot and
    // the state file agree.
    let overlay: serde_json::Value = serde_json::from_str(&cmd(&a, "show overlay").await).unwrap();
    let w = overlay["servers"]["shop/blue-2"]["weight"].as_u64().unwrap();
    let (bw, gw) = (
        overlay["splits"]["shop"]["blue"].as_u64().unwrap(),
        overlay["splits"]["shop"]["green"].as_u64().unwrap(),
    );
    assert_eq!(bw + gw, 100);
    let snap = a.proxy.veer.snapshot();
    let shop = snap.backend("shop").unwrap();
    assert_eq!((shop.groups[0].weight as u64, shop.groups[1].weight as u64), (bw, gw));
    assert_eq!(shop.groups[0].servers[1].weight as u64, w);
    let on_disk: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(a.proxy.veer.snapshot().spec.admin.state_file.clone().unwrap()).unwrap(),
    )
    .unwrap();
    assert_eq!(on_disk, overlay);
}

#[tokio::test]
async fn subscribe_streams_one_json_line_per_change() {
    let a = start().await;
    let s = UnixStream::connect(&a.sock).await.unwrap();
    let (r, mut w) = s.into_split();
    let mut r = BufReader::new(r);
    w.write_all(b"subscribe\n").await.unwrap();
    let mut hello = String::new();
    r.read_line(&mut hello).await.unwrap();
    assert!(hello.starts_with("{\"event\":\"subscribed\""), "{hello}");
    cmd(
        &a,
        "set split shop blue=0 green=100; set server shop/blue-1 state drain",
    )
    .await;
    let mut events = Vec::new();
    for _ in 0..2 {
        let mut line = String::new();
        tokio::time::timeout(std::time::Duration::from_secs(10), r.read_line(&mut line))
            .await
            .unwrap()
            .unwrap();
        events.push(serde_json::from_str::<serde_json::Value>(&line).unwrap());
    }
    assert_eq!(events[0]["event"], "split");
    assert_eq!(events[0]["weights"], serde_json::json!({"blue": 0, "green": 100}));
    assert_eq!(events[1]["event"], "server");
    assert_eq!(
        (events[1]["server"].as_str(), events[1]["state"].as_str()),
        (Some("shop/blue-1"), Some("drain"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn veer_ctl_prints_answers_and_exits_non_zero_on_errors() {
    let a = start().await;
    let run = |args: Vec<String>| {
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_veer"))
                .args(args)
                .output()
                .unwrap()
        })
    };
    let sock = a.sock.display().to_string();
    let ok = run(vec![
        "ctl".into(),
        "-s".into(),
        sock.clone(),
        "get".into(),
        "weight".into(),
        "shop/blue-2".into(),
    ])
    .await
    .unwrap();
    assert!(ok.status.success());
    assert_eq!(String::from_utf8_lossy(&ok.stdout), "2 (initial 2)\n");
    let bad = run(vec![
        "ctl".into(),
        "-s".into(),
        sock.clone(),
        "set weight shop/blue-2 257".into(),
    ])
    .await
    .unwrap();
    assert_eq!(bad.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&bad.stderr),
        "Absolute weight can only be between 0 and 256 inclusive.\n"
    );
    let both = run(vec![
        "ctl".into(),
        "-s".into(),
        sock,
        "set split shop blue=1 green=3; show backend".into(),
    ])
    .await
    .unwrap();
    assert!(both.status.success());
    assert_eq!(String::from_utf8_lossy(&both.stdout), "# name\nshop\n");
    assert_eq!(a.proxy.veer.snapshot().backend("shop").unwrap().groups[1].weight, 3);
}

#[tokio::test]
async fn a_second_veer_on_the_same_socket_fails_clearly_and_a_stale_file_is_replaced() {
    let a = start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = |sock: &Path| {
        format!(
            "[admin]\nsocket = \"{}\"\n[[listener]]\nname = \"web\"\nbind = \"127.0.0.1:0\"\nprotocol = \"http\"\n\
             [[listener.route]]\nbackend = \"b\"\n[[backend]]\nname = \"b\"\nservers = [ {{ name = \"s\", addr = \"127.0.0.1:1\" }} ]\n",
            sock.display()
        )
    };
    let path = dir.path().join("second.toml");
    std::fs::write(&path, config(&a.sock)).unwrap();
    let err = veer::Veer::start(&path)
        .await
        .err()
        .expect("a second veer must not steal the socket");
    assert!(err.to_string().contains("is in use by another process"), "{err}");
    assert_eq!(
        cmd(&a, "show backend").await,
        "# name\nshop\n\n",
        "the first veer still answers"
    );

    // A stale socket file (nothing listening) is replaced.
    let stale = dir.path().join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    assert!(stale.exists());
    std::fs::write(&path, config(&stale)).unwrap();
    let second = veer::Veer::start(&path).await.unwrap();
    assert_eq!(send_raw(&stale, b"show backend\n").await, "# name\nb\n\n");
    second.shutdown().await;
}

#[tokio::test]
async fn passive_health_transitions_are_streamed() {
    let alive = FakeBackend::start("alive").await;
    let dead = dead_addr().await;
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("admin.sock");
    let proxy = Proxy::start(&format!(
        "[admin]\nsocket = \"{}\"\n[[listener]]\nname = \"web\"\nbind = \"127.0.0.1:0\"\nprotocol = \"http\"\n\
         [[listener.route]]\nbackend = \"b\"\n[[backend]]\nname = \"b\"\n\
         servers = [ {{ name = \"dead\", addr = \"{dead}\" }}, {{ name = \"alive\", addr = \"{}\" }} ]\n",
        sock.display(),
        alive.addr
    ))
    .await;
    let s = UnixStream::connect(&sock).await.unwrap();
    let (r, mut w) = s.into_split();
    let mut r = BufReader::new(r);
    w.write_all(b"subscribe\n").await.unwrap();
    let mut hello = String::new();
    r.read_line(&mut hello).await.unwrap();
    // Round robin reaches the dead server within two requests; the client never notices.
    for _ in 0..2 {
        assert_eq!(
            get(&client(), &proxy.url("web").await, &[]).await.unwrap().server(),
            "alive"
        );
    }
    let mut line = String::new();
    tokio::time::timeout(std::time::Duration::from_secs(10), r.read_line(&mut line))
        .await
        .unwrap()
        .unwrap();
    let event: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(
        (
            event["event"].as_str(),
            event["server"].as_str(),
            event["health"].as_str()
        ),
        (Some("health"), Some("b/dead"), Some("down"))
    );
}

/// `veer ctl` without a command, fed from a pipe: each line's commands answered in turn,
/// the history written to $HOME/.veer_history, and the exit status the last command's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interactive_ctl_answers_each_line_and_exits_with_the_last_commands_status() {
    let a = start().await;
    let home = tempfile::tempdir().unwrap();
    let run = |input: &'static str| {
        let (sock, home) = (a.sock.clone(), home.path().to_path_buf());
        tokio::task::spawn_blocking(move || {
            use std::io::Write;
            let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_veer"))
                .args(["ctl", "-s"])
                .arg(&sock)
                .env("HOME", &home)
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
            let out = child.wait_with_output().unwrap();
            (
                out.status.code(),
                String::from_utf8_lossy(&out.stdout).into_owned(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        })
    };
    let (code, out, err) = run("show backend\nset weight shop/nope 3\n").await.unwrap();
    assert_eq!(code, Some(1), "the last command failed: {out}{err}");
    assert!(out.contains("# name\nshop\n"), "{out}");
    assert!(err.contains("No such server."), "{err}");
    let (code, out, _) = run("set weight shop/nope 3; get weight shop/blue-1\nquit\nshow backend\n")
        .await
        .unwrap();
    assert_eq!(code, Some(0), "the last command held");
    assert!(out.contains("1 (initial 1)"), "{out}");
    assert!(!out.contains("# name"), "nothing after quit: {out}");
    let history = std::fs::read_to_string(home.path().join(".veer_history")).unwrap_or_default();
    assert!(
        history.contains("show backend") && history.contains("get weight shop/blue-1"),
        "{history}"
    );
}
