//! The admin plane, hard to misuse (hardening, issue 18): a web page cannot drive the admin
//! HTTP listener (#2); half-sent admin HTTP requests and idle socket sessions are closed,
//! subscribed ones are not (#12); a closed subscriber is noticed at once (#13); the state
//! file is private and a failed write changes nothing (#15); the probe listener serves
//! probes only (#17); `undrain`, and `set group` refusing to leave no group for new clients
//! without `force` (#19); `wait` outcomes that cannot be mistaken (#20).

mod support;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use support::admin as socket_cmd;
use support::*;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};

const SOON: Duration = Duration::from_secs(10);

fn config(dir: &Path, blue: &FakeBackend, green: &FakeBackend, admin: &str) -> String {
    format!(
        r#"
[admin]
socket = "{sock}"
http = "127.0.0.1:0"
probe = "127.0.0.1:0"
state_file = "{state}"
{admin}

[[listener]]
name = "web"
bind = "127.0.0.1:0"
protocol = "http"
  [[listener.route]]
  backend = "app"

[[backend]]
name = "app"
groups = [
  {{ name = "blue", weight = 100, servers = [ {{ name = "blue-1", addr = "{}" }} ] }},
  {{ name = "green", weight = 0, servers = [ {{ name = "green-1", addr = "{}" }} ] }},
]
"#,
        blue.addr,
        green.addr,
        sock = dir.join("admin.sock").display(),
        state = dir.join("state").join("state.json").display(),
    )
}

async fn setup(admin: &str) -> (Proxy, FakeBackend, FakeBackend) {
    let blue = FakeBackend::start("blue-1").await;
    let green = FakeBackend::start("green-1").await;
    let dir = tempfile::tempdir().unwrap();
    let text = config(dir.path(), &blue, &green, admin);
    let path = dir.path().join("veer.toml");
    std::fs::write(&path, text).unwrap();
    let veer = veer::Veer::start(&path).await.unwrap();
    (Proxy { veer, dir, path }, blue, green)
}

fn sock(p: &Proxy) -> std::path::PathBuf {
    p.dir.path().join("admin.sock")
}

/// POST /command with exactly these headers (no Host unless given), raw.
async fn raw_command(addr: std::net::SocketAddr, headers: &[&str], body: &str) -> String {
    let mut request = "POST /command HTTP/1.1\r\nConnection: close\r\n".to_string();
    for h in headers {
        request.push_str(h);
        request.push_str("\r\n");
    }
    request.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    raw_exchange(addr, request.as_bytes()).await
}

fn weights(p: &Proxy) -> Vec<u32> {
    p.veer
        .snapshot()
        .backend("app")
        .unwrap()
        .groups
        .iter()
        .map(|g| g.weight)
        .collect()
}

#[tokio::test]
async fn a_web_page_cannot_drive_the_admin_http_listener() {
    let (p, _b, _g) = setup("").await;
    let addr = p.veer.admin_http_addr().unwrap();
    let own = format!("Host: {addr}");
    // The probe's request: a browser's "simple" cross-origin POST, and DNS rebinding.
    let refused: [(&[&str], u16); 5] = [
        (
            &[
                "Origin: http://evil.example",
                "Host: evil.example",
                "Content-Type: text/plain",
            ],
            403,
        ),
        (&["Host: evil.example", "Content-Type: text/plain"], 403),
        (&[own.as_str(), "Content-Type: text/plain"], 403),
        (&["Host: evil.example", "X-Veer-Admin: 1"], 403),
        (&[own.as_str(), "X-Veer-Admin: 1", "Origin: http://evil.example"], 403),
    ];
    for command in [
        "set split app blue=0 green=100",
        "set server app/blue-1 state maint",
        "drain",
    ] {
        for (headers, status) in &refused {
            let resp = raw_command(addr, headers, command).await;
            assert_eq!(raw_status(&resp), *status, "{command} with {headers:?}: {resp}");
        }
    }
    assert_eq!(weights(&p), [100, 0]);
    assert!(!p.veer.draining());
    let overlay = p.veer.overlay().await;
    assert!(overlay.splits.is_empty() && overlay.servers.is_empty(), "{overlay:?}");

    // Reads stay open on loopback, without the header.
    let resp = raw_command(addr, &["Host: evil.example"], "show split app").await;
    assert_eq!(raw_status(&resp), 200, "{resp}");
    // What a deliberate client sends: the header, and a Host naming the listener.
    for host in [own.clone(), format!("Host: localhost:{}", addr.port())] {
        let resp = raw_command(
            addr,
            &[host.as_str(), "X-Veer-Admin: 1"],
            "set split app blue=90 green=10",
        )
        .await;
        assert_eq!(raw_status(&resp), 200, "{host}: {resp}");
    }
    // Even the listener's own origin is a browser (the status page, issue 24): without
    // token_file it is read-only, so its state-changing commands are 403 too.
    let resp = raw_command(
        addr,
        &[own.as_str(), "X-Veer-Admin: 1", &format!("Origin: http://{addr}")],
        "set split app blue=80 green=20",
    )
    .await;
    assert_eq!(raw_status(&resp), 403, "{resp}");
    assert!(resp.contains("token_file"), "{resp}");
    // Its reads stay open.
    let resp = raw_command(
        addr,
        &[own.as_str(), &format!("Origin: http://{addr}")],
        "show split app",
    )
    .await;
    assert_eq!(raw_status(&resp), 200, "{resp}");
    assert_eq!(weights(&p), [90, 10]);
}

#[tokio::test]
async fn with_a_token_every_command_needs_it_and_foreign_origins_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "t0ken\n").unwrap();
    let (p, _b, _g) = setup(&format!("token_file = \"{}\"", token.display())).await;
    let addr = p.veer.admin_http_addr().unwrap();
    let resp = raw_command(
        addr,
        &["Host: evil.example", "X-Veer-Admin: 1"],
        "set split app blue=0 green=100",
    )
    .await;
    assert_eq!(raw_status(&resp), 401, "{resp}");
    let resp = raw_command(
        addr,
        &["Authorization: Bearer t0ken", "Origin: http://evil.example"],
        "set split app blue=0 green=100",
    )
    .await;
    assert_eq!(raw_status(&resp), 403, "{resp}");
    assert_eq!(weights(&p), [100, 0]);
    let resp = raw_command(addr, &["Authorization: Bearer t0ken"], "set split app blue=0 green=100").await;
    assert_eq!(raw_status(&resp), 200, "{resp}");
    assert_eq!(weights(&p), [0, 100]);
}

#[tokio::test]
async fn the_probe_listener_serves_probes_only() {
    let (p, _b, _g) = setup("").await;
    let base = format!("http://{}", p.veer.probe_addr().unwrap());
    let c = client();
    assert_eq!(get(&c, &format!("{base}/live"), &[]).await.unwrap().status, 200);
    assert_eq!(get(&c, &format!("{base}/ready"), &[]).await.unwrap().status, 200);
    let metrics = get(&c, &format!("{base}/metrics"), &[]).await.unwrap();
    assert_eq!(metrics.status, 200);
    assert!(String::from_utf8_lossy(&metrics.body).contains("veer_build_info"));
    assert_eq!(
        get(&c, &format!("{base}/haproxy?stats;csv"), &[]).await.unwrap().status,
        404
    );
    let resp = raw_command(
        p.veer.probe_addr().unwrap(),
        &[&format!("Host: {}", p.veer.probe_addr().unwrap()), "X-Veer-Admin: 1"],
        "set split app blue=0 green=100",
    )
    .await;
    assert_eq!(raw_status(&resp), 404, "{resp}");
    assert_eq!(weights(&p), [100, 0]);
    // It follows readiness.
    assert_eq!(socket_cmd(&sock(&p), "drain").await, "\n");
    assert_eq!(get(&c, &format!("{base}/ready"), &[]).await.unwrap().status, 503);
}

#[tokio::test]
async fn half_sent_admin_http_requests_and_idle_sessions_are_closed() {
    let (p, _b, _g) = setup("session_timeout = \"300ms\"").await;
    for addr in [p.veer.admin_http_addr().unwrap(), p.veer.probe_addr().unwrap()] {
        for sent in [&b""[..], b"GET /live HTTP/1.1\r\nHo"] {
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            s.write_all(sent).await.unwrap();
            let mut rest = Vec::new();
            let read = tokio::time::timeout(SOON, s.read_to_end(&mut rest)).await;
            assert!(read.is_ok(), "{addr} held a connection that sent {sent:?}");
        }
    }
    // The unix socket: a session that sends nothing, and an interactive one gone quiet.
    let mut idle = tokio::net::UnixStream::connect(sock(&p)).await.unwrap();
    let mut rest = Vec::new();
    assert!(tokio::time::timeout(SOON, idle.read_to_end(&mut rest)).await.is_ok());
    let mut prompt = tokio::net::UnixStream::connect(sock(&p)).await.unwrap();
    prompt.write_all(b"prompt\n").await.unwrap();
    let mut rest = Vec::new();
    assert!(tokio::time::timeout(SOON, prompt.read_to_end(&mut rest)).await.is_ok());
    assert_eq!(String::from_utf8_lossy(&rest), "\n> ");

    // A subscribed session is not idle: it still gets events after the timeout.
    let stream = tokio::net::UnixStream::connect(sock(&p)).await.unwrap();
    let mut events = tokio::io::BufReader::new(stream);
    events.get_mut().write_all(b"subscribe\n").await.unwrap();
    let mut line = String::new();
    events.read_line(&mut line).await.unwrap();
    assert!(line.contains("subscribed"), "{line}");
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert_eq!(socket_cmd(&sock(&p), "set split app blue=50 green=50").await, "\n");
    line.clear();
    tokio::time::timeout(SOON, events.read_line(&mut line))
        .await
        .unwrap()
        .unwrap();
    assert!(line.contains("split"), "{line}");
}

#[tokio::test]
async fn a_closed_subscriber_is_noticed_at_once() {
    let (p, _b, _g) = setup("").await;
    for _ in 0..20 {
        let stream = tokio::net::UnixStream::connect(sock(&p)).await.unwrap();
        let mut s = tokio::io::BufReader::new(stream);
        s.get_mut().write_all(b"subscribe\n").await.unwrap();
        let mut hello = String::new();
        s.read_line(&mut hello).await.unwrap();
        assert!(hello.contains("subscribed"));
    }
    // No event is published meanwhile: only the clients' EOF can free the sessions.
    let deadline = tokio::time::Instant::now() + SOON;
    while p.veer.subscribers() > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} subscribers left",
            p.veer.subscribers()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn the_state_file_is_private_and_a_failed_write_changes_nothing() {
    let (p, _b, _g) = setup("").await;
    assert_eq!(socket_cmd(&sock(&p), "set split app blue=60 green=40").await, "\n");
    let state = p.dir.path().join("state").join("state.json");
    let mode = std::fs::metadata(&state).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "state file mode {mode:o}");
    let saved = std::fs::read(&state).unwrap();

    // The state file can no longer be replaced (a non-empty directory is in its place).
    std::fs::remove_file(&state).unwrap();
    std::fs::create_dir(&state).unwrap();
    std::fs::write(state.join("keep"), saved).unwrap();
    let answer = socket_cmd(&sock(&p), "set split app blue=0 green=100").await;
    assert!(answer.starts_with("Cannot save the change: state file: "), "{answer}");
    assert!(answer.contains("Nothing was changed."), "{answer}");
    assert_eq!(weights(&p), [60, 40]);
    assert_eq!(p.veer.overlay().await.splits["app"]["blue"], 60);
    assert!(state.join("keep").exists());
    let leftovers: Vec<_> = std::fs::read_dir(state.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[tokio::test]
async fn undrain_takes_a_drain_back() {
    let (p, _b, _g) = setup("").await;
    let ready = format!("http://{}/ready", p.veer.probe_addr().unwrap());
    let web = p.url("web").await;
    let c = client();
    assert_eq!(socket_cmd(&sock(&p), "drain").await, "\n");
    assert_eq!(get(&c, &ready, &[]).await.unwrap().status, 503);
    assert_eq!(
        get(&client(), &web, &[]).await.unwrap().header("connection"),
        Some("close")
    );
    assert_eq!(socket_cmd(&sock(&p), "undrain").await, "\n");
    assert_eq!(get(&c, &ready, &[]).await.unwrap().status, 200);
    // New connections are kept alive again.
    assert_eq!(get(&client(), &web, &[]).await.unwrap().header("connection"), None);
    // Twice is harmless.
    assert_eq!(socket_cmd(&sock(&p), "undrain").await, "\n");
}

#[tokio::test]
async fn set_group_refuses_to_leave_no_group_for_new_clients() {
    let (p, _b, _g) = setup("").await;
    // green has weight 0: blue is the only group taking new clients.
    for state in ["drain", "maint"] {
        let answer = socket_cmd(&sock(&p), &format!("set group app/blue state {state}")).await;
        assert_eq!(
            answer,
            "No group of backend 'app' could take new clients after this (they would get 503 no-server); \
             add 'force' to do it anyway.\n\n"
        );
    }
    let snap = p.veer.snapshot();
    assert!(snap
        .backend("app")
        .unwrap()
        .servers()
        .all(|s| s.admin == veer::config::AdminState::Ready));
    assert_eq!(get(&client(), &p.url("web").await, &[]).await.unwrap().status, 200);
    // Fine once green takes traffic; and `force` does it anyway.
    assert_eq!(
        socket_cmd(
            &sock(&p),
            "set split app blue=100 green=100; set group app/blue state drain"
        )
        .await,
        "\n\n"
    );
    assert_eq!(
        socket_cmd(&sock(&p), "set group app/green state maint force").await,
        "\n"
    );
    let a = get(&client(), &p.url("web").await, &[]).await.unwrap();
    assert_eq!((a.status, a.header("veer-error")), (503, Some("no-server")));
}

#[tokio::test]
async fn wait_outcomes_cannot_be_mistaken() {
    let (p, _b, _g) = setup("").await;
    let s = sock(&p);
    assert_eq!(socket_cmd(&s, "json wait 50ms").await, "{\"ok\":true}\n\n");
    assert_eq!(
        socket_cmd(&s, "json wait 100ms group-drained app/blue").await,
        "{\"ok\":true,\"output\":\"Drained.\\n\"}\n\n"
    );
    assert_eq!(
        socket_cmd(&s, "wait 100ms group-drained app/blue").await,
        "Drained.\n\n"
    );
    assert_eq!(
        socket_cmd(&s, "wait 100ms srv-drained app/green-1").await,
        "Drained.\n\n"
    );
    // HAProxy's own form stays silent on success.
    assert_eq!(
        socket_cmd(&s, "disable server app/green-1; wait 1s srv-removable app/green-1").await,
        "\n\n"
    );
    assert_eq!(
        socket_cmd(&s, "json wait 1s srv-removable app/green-1").await,
        "{\"ok\":true}\n\n"
    );

    // Busy: a request in flight on blue-1 makes the wait time out, and says so.
    let release = std::sync::Arc::new(tokio::sync::Semaphore::new(0));
    let r = release.clone();
    let slow = FakeBackend::with_handler("slow", move |req| {
        let r = r.clone();
        Box::pin(async move {
            r.acquire().await.unwrap().forget();
            named_response("slow", &req)
        })
    })
    .await;
    assert_eq!(
        socket_cmd(
            &s,
            &format!(
                "add server app/slow-1 {} group blue; enable server app/slow-1; set weight app/blue-1 0",
                slow.addr
            )
        )
        .await,
        "New server registered.\n\n\n\n"
    );
    let url = p.url("web").await;
    let in_flight = tokio::spawn(async move { get(&client(), &url, &[]).await });
    while slow.hits() == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let answer = socket_cmd(&s, "json wait 100ms group-drained app/blue").await;
    let v: serde_json::Value = serde_json::from_str(answer.trim()).unwrap();
    assert_eq!(v["ok"], false, "{answer}");
    assert_eq!(
        v["output"],
        "Wait delay expired. Still has active connections or requests (1 requests, 0 connections).\n"
    );
    release.add_permits(1);
    assert_eq!(in_flight.await.unwrap().unwrap().status, 200);

    // The HTTP transport answers the same.
    let resp = raw_command(
        p.veer.admin_http_addr().unwrap(),
        &["Host: localhost", "Accept: application/json"],
        "wait 100ms group-drained app/blue",
    )
    .await;
    assert!(resp.ends_with("{\"ok\":true,\"output\":\"Drained.\\n\"}\n"), "{resp}");
}

/// `veer ctl --http` sends what a state-changing command needs, and exits like the socket
/// client: 0, or 1 on an error answer.
#[tokio::test]
async fn veer_ctl_over_http_sends_what_is_needed() {
    let (p, _b, _g) = setup("").await;
    let addr = p.veer.admin_http_addr().unwrap().to_string();
    let ctl = |args: &[&str]| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_veer"));
        cmd.args(["ctl", "--http", &addr]).args(args);
        tokio::task::spawn_blocking(move || cmd.output().unwrap())
    };
    let out = ctl(&["set", "split", "app", "blue=70", "green=30"]).await.unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(weights(&p), [70, 30]);
    let out = ctl(&["get weight app/blue-1; show backend"]).await.unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), "1 (initial 1)\n# name\napp\n");
    let out = ctl(&["set", "split", "app", "purple=1"]).await.unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "No such group 'purple' in backend 'app'.\n"
    );
}
