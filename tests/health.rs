//! Active health checks: an HTTP check takes a server answering 500 DOWN after `fall`
//! failures and back UP after `rise` passes, `show stat` shows HAProxy's status strings and
//! check columns on the way, picks skip the DOWN server, `disable health` stops its checks
//! (it counts as UP), a TCP check notices a dead address, and a server added by a reload
//! starts DOWN until it passes. Real sockets and real (short) intervals; every wait is a
//! bounded poll, never a timing assertion.

mod support;
use std::sync::atomic::{AtomicU16, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use support::*;

/// `show stat` → (status, check_status, check_code) of `backend/server`.
async fn stat(sock: &std::path::Path, backend: &str, server: &str) -> (String, String, String) {
    let out = admin(sock, "show stat").await;
    let mut lines = out.lines();
    let header: Vec<&str> = lines.next().unwrap().trim_start_matches("# ").split(',').collect();
    let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
    for line in lines {
        let f: Vec<&str> = line.split(',').collect();
        if f.len() > 2 && f[0] == backend && f[1] == server {
            return (
                f[col("status")].to_string(),
                f[col("check_status")].to_string(),
                f[col("check_code")].to_string(),
            );
        }
    }
    panic!("no row for {backend}/{server} in\n{out}");
}

/// Polls `show stat` until `want(status)`; returns every distinct status seen on the way.
async fn wait_status(sock: &std::path::Path, server: &str, want: impl Fn(&str) -> bool) -> Vec<String> {
    let mut seen: Vec<String> = Vec::new();
    for _ in 0..1000 {
        let (status, _, _) = stat(sock, "shop", server).await;
        if seen.last() != Some(&status) {
            seen.push(status.clone());
        }
        if want(&status) {
            return seen;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{server} never reached the wanted status; saw {seen:?}");
}

fn config(dir: &std::path::Path, good: std::net::SocketAddr, flaky: std::net::SocketAddr, extra: &str) -> String {
    format!(
        r#"
[admin]
socket = "{}/admin.sock"

[[listener]]
name = "web"
bind = "127.0.0.1:0"
protocol = "http"
  [[listener.route]]
  backend = "shop"

[[backend]]
name = "shop"
health = {{ path = "/healthz", interval = "150ms", timeout = "1s", rise = 2, fall = 3 }}
servers = [ {{ name = "good", addr = "{good}" }}, {{ name = "flaky", addr = "{flaky}" }} {extra} ]
"#,
        dir.display()
    )
}

#[tokio::test]
async fn an_http_check_takes_a_failing_server_down_and_brings_it_back() {
    let good = FakeBackend::start("good").await;
    let code = Arc::new(AtomicU16::new(200));
    let c = code.clone();
    let flaky = FakeBackend::with_handler("flaky", move |req| {
        let status = if req.uri().path() == "/healthz" {
            c.load(Relaxed)
        } else {
            200
        };
        Box::pin(async move {
            hyper::Response::builder()
                .status(status)
                .header("x-server", "flaky")
                .body(Full::new(Bytes::from("flaky")))
                .unwrap()
        })
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let proxy = Proxy::start_in(dir, &config(&path, good.addr, flaky.addr, "")).await;
    let sock = proxy.dir.path().join("admin.sock");

    // Present at start: UP at once, then checked.
    assert_eq!(stat(&sock, "shop", "flaky").await.0, "UP");
    for _ in 0..200 {
        if stat(&sock, "shop", "flaky").await.1 == "L7OK" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        stat(&sock, "shop", "flaky").await,
        ("UP".into(), "L7OK".into(), "200".into())
    );

    // Failing: UP 2/3, UP 1/3, then DOWN (HAProxy's strings).
    code.store(500, Relaxed);
    let seen = wait_status(&sock, "flaky", |s| s == "DOWN").await;
    assert_eq!(seen, ["UP", "UP 2/3", "UP 1/3", "DOWN"], "statuses on the way down");
    let (_, check, check_code) = stat(&sock, "shop", "flaky").await;
    assert_eq!((check.as_str(), check_code.as_str()), ("L7STS", "500"));
    // Picks skip it.
    let client = client();
    let counts = tally(&client, &format!("{}/", proxy.url("web").await), 20).await;
    assert_eq!(counts.get("good"), Some(&20), "{counts:?}");

    // Passing again: DOWN 1/2, then UP.
    code.store(200, Relaxed);
    let seen = wait_status(&sock, "flaky", |s| s == "UP").await;
    assert_eq!(seen, ["DOWN", "DOWN 1/2", "UP"], "statuses on the way up");
    let counts = tally(&client, &format!("{}/", proxy.url("web").await), 20).await;
    assert!(counts.get("flaky").is_some_and(|n| *n > 0), "{counts:?}");

    // `disable health`: no more checks, and a failing server stays UP.
    code.store(500, Relaxed);
    assert_eq!(admin(&sock, "disable health shop/flaky").await.trim(), "");
    let passed_failed = || {
        let s = proxy.veer.snapshot();
        let st = s
            .backend("shop")
            .unwrap()
            .servers()
            .find(|s| &*s.name == "flaky")
            .unwrap()
            .state
            .clone();
        (st.check.passed.load(Relaxed), st.check.failed.load(Relaxed))
    };
    let before = passed_failed();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(passed_failed(), before, "no check ran while disabled");
    assert_eq!(stat(&sock, "shop", "flaky").await.0, "UP");
    // `enable health`: checks again, and it goes DOWN.
    assert_eq!(admin(&sock, "enable health shop/flaky").await.trim(), "");
    wait_status(&sock, "flaky", |s| s == "DOWN").await;

    // `set server … health up` forces the verdict; the failing checks take it down again.
    assert_eq!(admin(&sock, "set server shop/flaky health up").await.trim(), "");
    // UP, or already "UP 2/3" if a check landed in between.
    assert!(stat(&sock, "shop", "flaky").await.0.starts_with("UP"));
    wait_status(&sock, "flaky", |s| s == "DOWN").await;

    let metrics = proxy.veer.render_metrics().await;
    assert!(
        metrics.contains(r#"veer_health_checks_total{backend="shop",group="default",server="flaky",result="fail"}"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"veer_server_up{backend="shop",group="default",server="flaky"} 0"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn tcp_checks_and_servers_added_by_a_reload() {
    let good = FakeBackend::start("good").await;
    let dead = dead_addr().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let tcp_config = |extra: &str| {
        config(&path, good.addr, dead, extra).replace(r#"health = { path = "/healthz","#, r#"health = { tcp = true,"#)
    };
    let proxy = Proxy::start_in(dir, &tcp_config("")).await;
    let sock = proxy.dir.path().join("admin.sock");
    wait_status(&sock, "flaky", |s| s == "DOWN").await;
    assert_eq!(stat(&sock, "shop", "flaky").await.1, "L4CON");
    assert_eq!(stat(&sock, "shop", "good").await.1, "L4OK");

    // A server added by a reload starts DOWN and comes UP once it passes `rise` checks.
    let late = FakeBackend::start("late").await;
    std::fs::write(
        &proxy.path,
        tcp_config(&format!(r#", {{ name = "late", addr = "{}" }}"#, late.addr)),
    )
    .unwrap();
    proxy.veer.reload().await.unwrap();
    assert!(stat(&sock, "shop", "late").await.0.starts_with("DOWN"));
    wait_status(&sock, "late", |s| s == "UP").await;
    // The reload kept the other servers' state: flaky is still DOWN, good still UP.
    assert_eq!(stat(&sock, "shop", "flaky").await.0, "DOWN");
    assert_eq!(stat(&sock, "shop", "good").await.0, "UP");
}

#[tokio::test]
async fn fail_open_decides_what_happens_when_every_server_is_down() {
    let (dead1, dead2) = (dead_addr().await, dead_addr().await);
    for (fail_open, status, reason) in [("true", 502, "connect-failed"), ("false", 503, "no-server")] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        let text = config(&path, dead1, dead2, "")
            .replace(r#"health = { path = "/healthz","#, r#"health = { tcp = true,"#)
            .replace(
                "[[backend]]\nname = \"shop\"",
                &format!("[[backend]]\nname = \"shop\"\nretries = 0\nfail_open = {fail_open}"),
            );
        let proxy = Proxy::start_in(dir, &text).await;
        let sock = proxy.dir.path().join("admin.sock");
        wait_status(&sock, "good", |s| s == "DOWN").await;
        wait_status(&sock, "flaky", |s| s == "DOWN").await;
        let a = get(&client(), &format!("{}/", proxy.url("web").await), &[])
            .await
            .unwrap();
        assert_eq!(
            (a.status, a.header("veer-error")),
            (status, Some(reason)),
            "fail_open = {fail_open}"
        );
    }
}

/// `echo 'show stat' | socat stdio UNIX-CONNECT:…` → the status of `shop/server`, the way
/// Ansible's haproxy module (`wait: yes`) and shell deploy scripts poll it.
fn socat_status(sock: &std::path::Path, server: &str) -> String {
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "echo 'show stat' | socat stdio UNIX-CONNECT:{} | grep '^shop,{server},' | cut -d, -f18",
            sock.display()
        ))
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn socat(sock: &std::path::Path, line: &str) -> String {
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("echo '{line}' | socat stdio UNIX-CONNECT:{}", sock.display()))
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socat_pollers_see_haproxys_statuses_through_disable_and_enable() {
    let have_socat = std::process::Command::new("sh")
        .arg("-c")
        .arg("command -v socat")
        .output()
        .is_ok_and(|o| o.status.success());
    if !have_socat {
        assert!(
            std::env::var_os("VEER_REQUIRE_TOOLS").is_none(),
            "socat is required (CI installs it)"
        );
        eprintln!("socat not installed: skipping");
        return;
    }
    let good = FakeBackend::start("good").await;
    let code = Arc::new(AtomicU16::new(200));
    let c = code.clone();
    let flaky = FakeBackend::with_handler("flaky", move |_| {
        let status = c.load(Relaxed);
        Box::pin(async move {
            hyper::Response::builder()
                .status(status)
                .body(Full::new(Bytes::new()))
                .unwrap()
        })
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    // A server without checks says so.
    let extra = format!(
        r#"]
[[backend]]
name = "plain"
servers = [ {{ name = "p", addr = "{}" }}"#,
        good.addr
    );
    let proxy = Proxy::start_in(dir, &config(&path, good.addr, flaky.addr, &extra)).await;
    let sock = proxy.dir.path().join("admin.sock");
    let s = sock.clone();
    let poll = move |server: &'static str, want: &'static str| {
        let s = s.clone();
        async move {
            tokio::task::spawn_blocking(move || {
                let mut seen: Vec<String> = Vec::new();
                for _ in 0..1000 {
                    let status = socat_status(&s, server);
                    if seen.last() != Some(&status) {
                        seen.push(status.clone());
                    }
                    if status == want {
                        return seen;
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                panic!("{server} never became {want}; saw {seen:?}");
            })
            .await
            .unwrap()
        }
    };
    let plain = tokio::task::spawn_blocking({
        let s = sock.clone();
        move || {
            let out = socat(&s, "show stat");
            out.lines()
                .find(|l| l.starts_with("plain,p,"))
                .map(|l| l.split(',').nth(17).unwrap_or("").to_string())
        }
    })
    .await
    .unwrap();
    assert_eq!(plain.as_deref(), Some("no check"));

    poll("flaky", "UP").await;
    // Maintenance: MAINT whatever the checks say; they keep running meanwhile.
    let s = sock.clone();
    let answer = tokio::task::spawn_blocking(move || socat(&s, "disable server shop/flaky"))
        .await
        .unwrap();
    assert_eq!(answer.trim(), "");
    poll("flaky", "MAINT").await;
    code.store(500, Relaxed);
    let snap = proxy.veer.snapshot();
    let st = snap.servers().find(|s| &*s.name == "flaky").unwrap().state.clone();
    while !st.check.is_down() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(poll("flaky", "MAINT").await, ["MAINT"]);
    // Enabled while its checks fail: DOWN, so a `wait: yes` poller keeps waiting…
    let s = sock.clone();
    tokio::task::spawn_blocking(move || socat(&s, "enable server shop/flaky"))
        .await
        .unwrap();
    assert_eq!(poll("flaky", "DOWN").await, ["DOWN"]);
    // …until the checks pass `rise` times: DOWN 1/2, then UP.
    code.store(200, Relaxed);
    assert_eq!(poll("flaky", "UP").await, ["DOWN", "DOWN 1/2", "UP"]);
}
