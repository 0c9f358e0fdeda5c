//! The status page in a real browser (issue 24): Debian's chromium, driven by playwright-core
//! (tests/browser/status.mjs), against veer in-process in front of real blue and green
//! backends. The page shows one row per server with its state word; `set split` and
//! `set server … state drain` over the socket appear on the open page without a reload;
//! actions are refused with 403 without the token and run, clicked, with it, audited like
//! socket commands.
//!
//! Needs node, chromium and `npm ci` in tests/browser (.ci/run does all three); without them
//! the tests skip loudly, or fail under `VEER_REQUIRE_TOOLS`.

mod support;

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use serde_json::{json, Value};
use support::*;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// The playwright driver, one JSON line each way.
struct Browser {
    child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    stdout: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
}

fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

impl Browser {
    /// Starts the driver, or `None` (with a loud note) when a tool is missing and
    /// `VEER_REQUIRE_TOOLS` is not set.
    async fn start() -> Option<Browser> {
        let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
        let missing: Vec<&str> = [
            (!Path::new(&chromium).exists()).then_some("chromium"),
            std::process::Command::new("node")
                .arg("--version")
                .output()
                .is_err()
                .then_some("node"),
            (!browser_dir().join("node_modules/playwright-core").exists())
                .then_some("playwright-core (npm ci in tests/browser)"),
        ]
        .into_iter()
        .flatten()
        .collect();
        if !missing.is_empty() {
            assert!(
                std::env::var_os("VEER_REQUIRE_TOOLS").is_none(),
                "missing {missing:?} with VEER_REQUIRE_TOOLS set"
            );
            eprintln!("SKIPPED: the status page browser test needs {missing:?} (.ci/run installs them)");
            return None;
        }
        let mut child = tokio::process::Command::new("node")
            .arg(browser_dir().join("status.mjs"))
            .current_dir(browser_dir())
            .env("CHROMIUM", chromium)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("node starts");
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        Some(Browser { child, stdin, stdout })
    }

    async fn call(&mut self, cmd: Value) -> Value {
        self.stdin.write_all(format!("{cmd}\n").as_bytes()).await.unwrap();
        let line = tokio::time::timeout(Duration::from_secs(60), self.stdout.next_line())
            .await
            .unwrap_or_else(|_| panic!("the browser did not answer {cmd}"))
            .unwrap()
            .unwrap_or_else(|| panic!("the browser driver exited on {cmd}"));
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"))
    }

    /// `call`, which must succeed.
    async fn ok(&mut self, cmd: Value) -> Value {
        let a = self.call(cmd.clone()).await;
        assert_eq!(a["ok"], true, "{cmd} → {a}");
        a
    }

    async fn quit(mut self) {
        let _ = self.stdin.write_all(b"{\"op\":\"quit\"}\n").await;
        let _ = tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await;
    }
}

/// Every `veer::audit` line this test binary's veers log (one global subscriber).
fn audit_log() -> Arc<Mutex<Vec<u8>>> {
    static LOG: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOG.get_or_init(|| {
        let log = Arc::new(Mutex::new(Vec::new()));
        struct W(Arc<Mutex<Vec<u8>>>);
        impl Write for W {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let l = log.clone();
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("veer::audit=info"))
            .with_ansi(false)
            .with_writer(move || W(l.clone()))
            .try_init();
        log
    })
    .clone()
}

/// veer with backend `shop`: blue (b1, b2) at 1000 and green (g1) at 0, the admin socket,
/// and the admin HTTP listener (`admin_extra` adds e.g. `token_file`).
async fn shop(admin_extra: &str) -> (Proxy, Vec<FakeBackend>, SocketAddr) {
    let (b1, b2, g1) = (
        FakeBackend::start("b1").await,
        FakeBackend::start("b2").await,
        FakeBackend::start("g1").await,
    );
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        r#"
[admin]
socket = "{sock}"
http = "127.0.0.1:0"
{admin_extra}

[[listener]]
name = "web"
bind = "127.0.0.1:0"
protocol = "http"
  [[listener.route]]
  backend = "shop"

[[backend]]
name = "shop"
groups = [
  {{ name = "blue", weight = 1000, meta = {{ version = "1.4.1", build = "196" }}, servers = [
     {{ name = "b1", addr = "{b1}" }}, {{ name = "b2", addr = "{b2}" }} ] }},
  {{ name = "green", weight = 0, meta = {{ version = "1.4.2", build = "197" }}, servers = [ {{ name = "g1", addr = "{g1}" }} ] }},
]
"#,
        sock = dir.path().join("admin.sock").display(),
        b1 = b1.addr,
        b2 = b2.addr,
        g1 = g1.addr,
    );
    let proxy = Proxy::start_in(dir, &config).await;
    let admin = proxy.veer.admin_http_addr().unwrap();
    (proxy, vec![b1, b2, g1], admin)
}

fn sock(p: &Proxy) -> PathBuf {
    p.dir.path().join("admin.sock")
}

fn rows(answer: &Value) -> Vec<(String, String)> {
    answer["dom"]["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["server"].as_str().unwrap().to_string(),
                r["stateWord"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_open_page_shows_every_server_and_follows_split_and_drain_live() {
    let (p, _backends, admin) = shop("").await;
    let Some(mut browser) = Browser::start().await else {
        return;
    };
    let client = client();
    let web = p.url("web").await;
    for _ in 0..20 {
        get(&client, &web, &[]).await.unwrap();
    }
    // HAProxy's stats address serves the page too (its CSV form stays CSV).
    let haproxy = raw_exchange(
        admin,
        b"GET /haproxy?stats HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(haproxy.contains("<title>veer status</title>"), "{haproxy}");
    let csv = raw_exchange(
        admin,
        b"GET /haproxy?stats;csv HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(csv.contains("# pxname,svname,"), "{csv}");

    let opened = browser
        .ok(json!({"op": "open", "url": format!("http://{admin}/")}))
        .await;
    assert_eq!(
        rows(&opened),
        [("shop/b1", "ready"), ("shop/b2", "ready"), ("shop/g1", "ready")].map(|(a, b)| (a.to_string(), b.to_string()))
    );
    assert_eq!(opened["dom"]["shares"], json!({"blue": 100}), "{opened}");
    assert_eq!(opened["dom"]["readonly"], true, "no token_file: read-only");
    assert_eq!(opened["dom"]["buttons"], json!([]), "no action buttons without a token");
    let loaded = opened["dom"]["loaded"].clone();

    assert_eq!(admin_line(&p, "set split shop blue=20 green=80").await, "");
    assert_eq!(admin_line(&p, "set server shop/b1 state drain").await, "");
    let seen = browser
        .ok(
            json!({"op": "wait", "servers": {"shop/b1": "drain", "shop/b2": "ready"},
                   "shares": {"blue": 20, "green": 80}, "timeout_ms": 2000}),
        )
        .await;
    assert_eq!(seen["dom"]["loaded"], loaded, "the page was reloaded: {seen}");
    assert_eq!(seen["navigations"], 1, "{seen}");
    let r = &seen["dom"]["rows"];
    assert_eq!(r[0]["stateWord"], "drain");
    // Drain is told by its word and its colour.
    assert_ne!(r[0]["colour"], r[1]["colour"], "{seen}");
    assert_eq!(seen["dom"]["live"], "on");

    browser.quit().await;

    // A dropped stream reconnects by itself: the page, opened through a relay, sees its
    // connection cut, says so, comes back live on its own and follows changes again.
    let (relay, cut) = relay(admin).await;
    let Some(mut browser) = Browser::start().await else {
        return;
    };
    let opened = browser
        .ok(json!({"op": "open", "url": format!("http://{relay}/")}))
        .await;
    let loaded = opened["dom"]["loaded"].clone();
    cut.notify_waiters();
    browser.ok(json!({"op": "live", "value": "off"})).await;
    browser.ok(json!({"op": "live", "value": "on"})).await;
    assert_eq!(admin_line(&p, "set server shop/b1 state ready").await, "");
    let back = browser
        .ok(json!({"op": "wait", "servers": {"shop/b1": "ready"}, "timeout_ms": 2000}))
        .await;
    assert_eq!(back["dom"]["loaded"], loaded, "{back}");
    assert_eq!(back["navigations"], 1, "{back}");
    browser.quit().await;
}

/// A TCP relay to `to`; notifying the `Notify` cuts every connection open through it.
async fn relay(to: SocketAddr) -> (SocketAddr, Arc<tokio::sync::Notify>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (addr, cut) = (listener.local_addr().unwrap(), Arc::new(tokio::sync::Notify::new()));
    let c = cut.clone();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let cut = c.clone();
            tokio::spawn(async move {
                let Ok(mut server) = tokio::net::TcpStream::connect(to).await else {
                    return;
                };
                tokio::select! {
                    _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                    _ = cut.notified() => {}
                }
            });
        }
    });
    (addr, cut)
}

/// One admin socket line, its answer trimmed.
async fn admin_line(p: &Proxy, line: &str) -> String {
    admin(&sock(p), line).await.trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actions_need_the_token_are_clicked_and_audited_like_socket_commands() {
    let log = audit_log();
    // Without token_file, even the page's own script cannot change anything.
    {
        let (p, _backends, admin) = shop("").await;
        let Some(mut browser) = Browser::start().await else {
            return;
        };
        browser
            .ok(json!({"op": "open", "url": format!("http://{admin}/")}))
            .await;
        let a = browser
            .ok(json!({"op": "fetch", "line": "set server shop/b1 state drain",
                       "headers": {"X-Veer-Admin": "1"}}))
            .await;
        assert_eq!(a["status"], 403, "{a}");
        assert!(a["text"].as_str().unwrap().contains("token_file"), "{a}");
        assert!(admin_line(&p, "show servers state shop")
            .await
            .contains(" b1 127.0.0.1 2 0 "));
        browser.quit().await;
    }

    let token_dir = tempfile::tempdir().unwrap();
    let token_file = token_dir.path().join("token");
    std::fs::write(&token_file, "s3cret-token\n").unwrap();
    let (p, _backends, admin) = shop(&format!("token_file = \"{}\"", token_file.display())).await;
    let Some(mut browser) = Browser::start().await else {
        return;
    };
    let opened = browser
        .ok(json!({"op": "open", "url": format!("http://{admin}/")}))
        .await;
    assert_eq!(opened["dom"]["readonly"], false);
    let drain = "set server shop/b1 state drain";
    assert!(
        opened["dom"]["buttons"].as_array().unwrap().contains(&json!(drain)),
        "{opened}"
    );
    // Clicked without the token, then with a wrong one: 403, nothing changes.
    for token in [None, Some("wrong")] {
        if let Some(t) = token {
            browser.ok(json!({"op": "token", "value": t})).await;
        }
        let a = browser.ok(json!({"op": "click", "action": drain})).await;
        assert_eq!(a["class"], "err", "{a}");
        assert!(a["dom"]["result"].as_str().unwrap().starts_with("403 "), "{a}");
        assert!(admin_line(&p, "show servers state shop")
            .await
            .contains(" b1 127.0.0.1 2 0 "));
    }
    // With it: done, the state changes, the page shows it.
    browser.ok(json!({"op": "token", "value": "s3cret-token"})).await;
    let a = browser.ok(json!({"op": "click", "action": drain})).await;
    assert_eq!(a["class"], "ok", "{a}");
    assert!(admin_line(&p, "show servers state shop")
        .await
        .contains(" b1 127.0.0.1 2 8 "));
    browser
        .ok(json!({"op": "wait", "servers": {"shop/b1": "drain"}, "timeout_ms": 2000}))
        .await;
    // The split editor, then a rollout paused and aborted from its panel.
    let a = browser
        .ok(json!({"op": "split", "backend": "shop", "weights": {"blue": 900, "green": 100}}))
        .await;
    assert_eq!(a["class"], "ok", "{a}");
    assert!(admin_line(&p, "show split shop")
        .await
        .contains("blue            900  90.0%"));
    let started = admin_line(&p, "rollout start shop to green steps 50,100 pause 1h min-requests 1").await;
    assert!(started.starts_with("Rollout of shop to green started"), "{started}");
    let seen = browser
        .ok(json!({"op": "wait", "shares": {"blue": 50, "green": 50}, "timeout_ms": 2000}))
        .await;
    let rollout = &seen["dom"]["rollouts"][0];
    assert_eq!(
        (&rollout["backend"], &rollout["phase"]),
        (&json!("shop"), &json!("running")),
        "{seen}"
    );
    assert!(rollout["text"].as_str().unwrap().contains("step 1/2 (50%)"), "{seen}");
    for (click, phase) in [("rollout pause shop", "paused"), ("rollout abort shop", "aborted")] {
        let a = browser.ok(json!({"op": "click", "action": click})).await;
        assert_eq!(a["class"], "ok", "{a}");
        let shown = admin_line(&p, "show rollout shop").await;
        assert!(shown.starts_with(&format!("shop: {phase}")), "{shown}");
    }
    // The same command over the socket, for comparison: both are in the audit log, the same way.
    assert_eq!(admin_line(&p, "set server shop/b2 state maint").await, "");
    let clicked = browser
        .ok(json!({"op": "click", "action": "set server shop/b2 state ready"}))
        .await;
    assert_eq!(clicked["class"], "ok", "{clicked}");
    let text = String::from_utf8_lossy(&log.lock().unwrap()).into_owned();
    // (The other test's veer audits into the same log: lines are told apart by `via`.)
    let line = |via: &str, command: &str| {
        let (via, command) = (format!("via=\"{via}\""), format!("command=\"{command}\" ok=true"));
        text.lines()
            .find(|l| l.contains(&via) && l.contains(&command))
            .unwrap_or_else(|| panic!("no audit line with {via} {command} in:\n{text}"))
            .to_string()
    };
    let http = line("http", "set server shop/b1 state drain");
    let socket = line("socket", "set server shop/b2 state maint");
    line("http", "set server shop/b2 state ready");
    for l in [&http, &socket] {
        assert!(l.contains("veer::audit") && l.contains("admin command"), "{l}");
    }
    // The refused clicks ran nothing, so they are not in the log as commands.
    let clicked_drains = text
        .lines()
        .filter(|l| l.contains("via=\"http\"") && l.contains("command=\"set server shop/b1 state drain\""))
        .count();
    assert_eq!(clicked_drains, 1, "{text}");
    browser.quit().await;
}
