//! Deploys end to end (issue 23): `veer ctl rollout` under load, a failing canary rolled
//! back, a backend-wide failure not blamed on it, a restart mid-rollout, metadata and
//! `rollback build=…`, webhooks in order (and a hanging one that slows nothing), the
//! scripts/zdd.sh reference script under dash and bash, and W3C trace context.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Response;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A webhook receiver: every POSTed body, in arrival order.
async fn receiver() -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let got = Arc::new(Mutex::new(Vec::new()));
    let g = got.clone();
    let b = FakeBackend::with_handler("hook", move |req| {
        let g = g.clone();
        Box::pin(async move {
            let body = req
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            g.lock().unwrap().push(String::from_utf8_lossy(&body).into_owned());
            Response::new(Full::new(Bytes::new()))
        })
    })
    .await;
    (b.addr, got)
}

/// backend `shop` with groups blue (weight 1000) and green (0), one server each, the admin
/// socket and state file in `dir`, and `extra` appended (e.g. `[[notify]]`).
fn config(dir: &Path, blue: SocketAddr, green: SocketAddr, extra: &str) -> String {
    format!(
        r#"
[admin]
socket = "{sock}"
state_file = "{state}"

[[listener]]
name = "web"
bind = "127.0.0.1:0"
protocol = "http"
  [[listener.route]]
  backend = "shop"

[[backend]]
name = "shop"
groups = [
  {{ name = "blue", weight = 1000, meta = {{ version = "1.4.1", build = "196" }}, servers = [ {{ name = "b1", addr = "{blue}" }} ] }},
  {{ name = "green", weight = 0, meta = {{ version = "1.4.2", commit = "9f3c2e1", build = "197", deployed_by = "jenkins" }}, servers = [ {{ name = "g1", addr = "{green}" }} ] }},
]
{extra}
"#,
        sock = dir.join("admin.sock").display(),
        state = dir.join("state.json").display(),
    )
}

/// A backend answering 500 on every `1 in n` requests (n = 0: never), with `x-server`.
async fn flaky(name: &str, every: Arc<AtomicUsize>) -> FakeBackend {
    let (n, seen) = (name.to_string(), Arc::new(AtomicUsize::new(0)));
    FakeBackend::with_handler(name, move |_| {
        let (n, k) = (n.clone(), every.load(Relaxed));
        let i = seen.fetch_add(1, Relaxed);
        Box::pin(async move {
            let status = if k > 0 && i % k == 0 { 500 } else { 200 };
            Response::builder()
                .status(status)
                .header("x-server", n)
                .body(Full::new(Bytes::new()))
                .unwrap()
        })
    })
    .await
}

/// veer (admin socket and state file in its temp dir) in front of backend `shop`: a blue
/// and a green server answering 500 on 1 in `blue_every` / `green_every` requests (0: never).
/// Keep `proxy` bound (`proxy: _proxy`): dropping it stops veer and removes the temp dir.
struct Shop {
    proxy: Proxy,
    sock: std::path::PathBuf,
    addr: SocketAddr,
    blue: FakeBackend,
    green: FakeBackend,
}

async fn shop(blue_every: usize, green_every: usize, extra: &str) -> Shop {
    let blue = flaky("blue", Arc::new(AtomicUsize::new(blue_every))).await;
    let green = flaky("green", Arc::new(AtomicUsize::new(green_every))).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), blue.addr, green.addr, extra);
    let sock = dir.path().join("admin.sock");
    let proxy = Proxy::start_in(dir, &cfg).await;
    let addr = proxy.addr("web").await;
    Shop {
        proxy,
        sock,
        addr,
        blue,
        green,
    }
}

/// Load until `stop`: `keep_alive` clients on pooled connections and `close` clients with a
/// connection per request. Returns (requests, failures by status or error).
fn load(
    url: String,
    addr: SocketAddr,
    keep_alive: usize,
    close: usize,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<(usize, Vec<String>)> {
    tokio::spawn(async move {
        let mut tasks = Vec::new();
        for _ in 0..keep_alive {
            let (url, stop) = (url.clone(), stop.clone());
            tasks.push(tokio::spawn(async move {
                let c = client();
                let (mut n, mut bad) = (0, Vec::new());
                while !stop.load(Relaxed) {
                    match get(&c, &url, &[]).await {
                        Ok(a) if a.status == 200 => {}
                        Ok(a) => bad.push(format!("{} from {}", a.status, a.server())),
                        Err(e) => bad.push(e),
                    }
                    n += 1;
                }
                (n, bad)
            }));
        }
        for _ in 0..close {
            let stop = stop.clone();
            tasks.push(tokio::spawn(async move {
                let (mut n, mut bad) = (0, Vec::new());
                while !stop.load(Relaxed) {
                    let answer = raw_exchange(addr, b"GET / HTTP/1.1\r\nHost: shop\r\nConnection: close\r\n\r\n").await;
                    if raw_status(&answer) != 200 {
                        bad.push(answer.lines().next().unwrap_or("nothing").to_string());
                    }
                    n += 1;
                }
                (n, bad)
            }));
        }
        let mut total = (0, Vec::new());
        for t in tasks {
            let (n, bad) = t.await.unwrap();
            total.0 += n;
            total.1.extend(bad);
        }
        total
    })
}

fn ctl(sock: &Path, args: &[&str]) -> tokio::process::Command {
    let mut c = tokio::process::Command::new(env!("CARGO_BIN_EXE_veer"));
    c.arg("ctl").arg("--socket").arg(sock).args(args);
    c.kill_on_drop(true);
    c
}

fn events_of(got: &Mutex<Vec<String>>, kind: &str) -> Vec<serde_json::Value> {
    got.lock()
        .unwrap()
        .iter()
        .filter_map(|b| serde_json::from_str::<serde_json::Value>(b).ok())
        .filter(|e| e["event"] == kind)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_under_load_fails_no_request_and_drains_blue() {
    let (hook, got) = receiver().await;
    let extra = format!("[[notify]]\nurl = \"http://{hook}/hook\"\nevents = [\"rollout\"]\n");
    let Shop {
        proxy: _proxy,
        sock,
        addr,
        blue,
        green,
    } = shop(0, 0, &extra).await;

    let stop = Arc::new(AtomicBool::new(false));
    let traffic = load(format!("http://{addr}/"), addr, 4, 2, stop.clone());
    let out = ctl(
        &sock,
        &[
            "rollout",
            "shop",
            "--to",
            "green",
            "--steps",
            "10,25,50,100",
            "--pause",
            "1s",
            "--max-error-rate",
            "1%",
            "--min-requests",
            "20",
            "--no-tty",
        ],
    )
    .output()
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for step in ["step 1/4 10%", "step 2/4 25%", "step 3/4 50%", "step 4/4 100%"] {
        assert!(stdout.contains(step), "no {step:?} in:\n{stdout}");
    }
    assert!(stdout.contains("rollout of shop promoted"), "{stdout}");
    // At least 50k requests in all, the rollout included.
    while blue.hits() + green.hits() < 50_000 {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, Relaxed);
    let (n, failed) = traffic.await.unwrap();
    assert!(n >= 50_000, "{n} requests");
    assert!(
        failed.is_empty(),
        "{} of {n} failed: {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );

    let split = admin(&sock, "show split shop json").await;
    let v: serde_json::Value = serde_json::from_str(&split).unwrap();
    assert_eq!(v["groups"][0]["weight"], 0, "{split}");
    assert_eq!(v["groups"][1]["weight"], 1000, "{split}");
    assert_eq!(v["groups"][0]["servers"][0]["state"], "drain", "{split}");
    assert_eq!(v["groups"][0]["servers"][0]["active_requests"], 0, "{split}");
    assert!(admin(&sock, "show rollout shop")
        .await
        .contains("shop: promoted to green"));

    // Every event of the rollout reached the webhook, in order.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while events_of(&got, "rollout").last().map(|e| e["phase"].clone()) != Some("promoted".into()) {
        assert!(tokio::time::Instant::now() < deadline, "{:?}", got.lock().unwrap());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let seen: Vec<String> = events_of(&got, "rollout")
        .iter()
        .map(|e| format!("{} {}", e["phase"].as_str().unwrap_or(""), e["percent"]))
        .collect();
    assert_eq!(
        seen,
        [
            "running 10",
            "running 25",
            "running 50",
            "running 100",
            "draining 100",
            "promoted 100"
        ],
        "{seen:?}"
    );
    let last = events_of(&got, "rollout").pop().unwrap();
    assert_eq!(last["meta"]["build"], "197");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_canary_is_rolled_back_and_blue_serves_cleanly() {
    let (hook, got) = receiver().await;
    let extra = format!("[[notify]]\nurl = \"http://{hook}/\"\nformat = \"slack\"\nevents = [\"rollout\"]\n");
    let Shop {
        proxy: _proxy,
        sock,
        addr,
        ..
    } = shop(0, 5, &extra).await;
    let mut events = tokio::net::UnixStream::connect(&sock).await.unwrap();
    events.write_all(b"subscribe\n").await.unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let traffic = load(format!("http://{addr}/"), addr, 3, 0, stop.clone());
    let out = ctl(
        &sock,
        &[
            "rollout",
            "shop",
            "--to",
            "green",
            "--pause",
            "1s",
            "--max-error-rate",
            "1",
            "--min-requests",
            "50",
            "--no-tty",
        ],
    )
    .output()
    .await
    .unwrap();
    stop.store(true, Relaxed);
    let _ = traffic.await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{stdout}");
    assert!(stdout.contains("rolled-back"), "{stdout}");
    assert!(!stdout.contains("step 2/4"), "went past the first step:\n{stdout}");
    let show = admin(&sock, "show rollout shop").await;
    assert!(
        show.contains("rolled-back") && show.contains("verdict: green error rate "),
        "{show}"
    );
    assert!(show.contains("% > 1% at step 1/4 (10%)"), "{show}");

    let split: serde_json::Value = serde_json::from_str(&admin(&sock, "show split shop json").await).unwrap();
    assert_eq!(
        (
            split["groups"][0]["weight"].clone(),
            split["groups"][1]["weight"].clone()
        ),
        (1000.into(), 0.into())
    );
    // After the rollback: blue only, and no 5xx.
    let c = client();
    let counts = tally(&c, &format!("http://{addr}/"), 200).await;
    assert_eq!(counts.get("blue"), Some(&200), "{counts:?}");

    // The event stream and the Slack webhook both say rolled-back, with the reason.
    let mut seen = String::new();
    let mut buf = vec![0u8; 64 * 1024];
    while !seen.contains("rolled-back") {
        let n = tokio::time::timeout(Duration::from_secs(10), events.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    let line = seen.lines().find(|l| l.contains("rolled-back")).unwrap();
    assert!(line.contains("error rate"), "{line}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let texts: Vec<String> = got.lock().unwrap().clone();
        if let Some(t) = texts.iter().find(|t| t.contains("rolled-back")) {
            let v: serde_json::Value = serde_json::from_str(t).unwrap();
            let text = v["text"].as_str().unwrap();
            assert!(
                text.contains("rollout of shop to green") && text.contains("build=197"),
                "{text}"
            );
            assert!(
                text.contains("deployed_by=jenkins") && text.contains("error rate"),
                "{text}"
            );
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{texts:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_wide_failure_is_not_blamed_on_the_canary() {
    let Shop {
        proxy: _proxy,
        sock,
        addr,
        ..
    } = shop(5, 5, "").await;
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = load(format!("http://{addr}/"), addr, 3, 0, stop.clone());
    let started = admin(
        &sock,
        "rollout start shop to green steps 50,100 pause 500ms min-requests 30",
    )
    .await;
    assert!(
        started.starts_with("Rollout of shop to green started: step 1/2 at 50%."),
        "{started}"
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let show = loop {
        let show = admin(&sock, "show rollout shop").await;
        if show.contains("backend-wide failure") {
            break show;
        }
        assert!(tokio::time::Instant::now() < deadline, "{show}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    stop.store(true, Relaxed);
    let _ = traffic.await;
    assert!(show.contains("shop: running to green, step 1/2 (50%)"), "{show}");
    assert!(show.contains("not the canary's"), "{show}");
    // Held, not rolled back; then aborted by hand, back to where it started.
    assert_eq!(
        admin(&sock, "rollout abort shop").await,
        "Rollout of shop to green aborted.\n\n"
    );
    let split: serde_json::Value = serde_json::from_str(&admin(&sock, "show split shop json").await).unwrap();
    assert_eq!(split["groups"][0]["weight"], 1000);
    assert_eq!(
        admin(&sock, "rollout abort shop").await,
        "No rollout of backend 'shop' is running.\n\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_veer_resumes_the_rollout_at_its_step_with_its_split() {
    let never = Arc::new(AtomicUsize::new(0));
    let (blue, green) = (flaky("blue", never.clone()).await, flaky("green", never).await);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("veer.toml");
    std::fs::write(&path, config(dir.path(), blue.addr, green.addr, "")).unwrap();
    let sock = dir.path().join("admin.sock");
    let mut first = VeerProcess::start(&path, &[], &["web"]);
    let started = admin(&sock, "rollout start shop to green steps 10,50,100 pause 1h").await;
    assert!(started.contains("step 1/3 at 10%"), "{started}");
    admin(&sock, "rollout pause shop").await;
    admin(&sock, "rollout resume shop").await;
    first.kill9();

    let second = VeerProcess::start(&path, &[], &["web"]);
    let show = admin(&sock, "show rollout shop").await;
    assert!(show.contains("shop: running to green, step 1/3 (10%)"), "{show}");
    assert!(show.contains("split blue=900 green=100"), "{show}");
    let c = client();
    let counts = tally(&c, &format!("http://{}/", second.listeners["web"]), 100).await;
    assert_eq!(counts.get("green"), Some(&10), "{counts:?}");
    // Promoted by hand: all to green, blue drained.
    assert_eq!(
        admin(&sock, "rollout promote shop").await,
        "Rollout of shop to green draining.\n\n"
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !admin(&sock, "show rollout shop").await.contains("promoted to green") {
        assert!(std::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_history_and_rollback_to_a_build() {
    let Shop { proxy, sock, addr, .. } = shop(0, 0, "").await;
    let url = format!("http://{addr}");

    assert_eq!(
        admin(&sock, "set meta shop/blue deployed_by=alice version=").await,
        "\n"
    );
    let split = admin(&sock, "show split shop").await;
    assert!(split.contains("meta blue: build=196 deployed_by=alice\n"), "{split}");
    assert!(
        split.contains("meta green: build=197 commit=9f3c2e1 deployed_by=jenkins version=1.4.2\n"),
        "{split}"
    );
    assert_eq!(
        admin(&sock, "set meta shop/red a=b").await,
        "No such group 'red' in backend 'shop'.\n\n"
    );
    let metrics = proxy.veer.render_metrics().await;
    assert!(
        metrics.contains(
            r#"veer_group_info{backend="shop",group="green",version="1.4.2",commit="9f3c2e1",build="197"} 1"#
        ),
        "{metrics}"
    );

    admin(&sock, "set split shop blue=500 green=500").await;
    admin(&sock, "set split shop blue=0 green=1000").await;
    let history = admin(&sock, "show history shop").await;
    let lines: Vec<&str> = history.lines().filter(|l| !l.is_empty()).collect();
    assert_eq!(lines.len(), 3, "{history}");
    assert!(lines[0].contains("blue=1000 green=0 by config"), "{history}");
    assert!(
        lines[1].contains("blue=500 green=500 by uid ") && lines[1].contains("(set split)"),
        "{history}"
    );
    assert!(lines[2].contains("blue=0 green=1000 by uid "), "{history}");

    assert_eq!(
        admin(&sock, "rollback shop").await,
        "Rolled back shop: blue=500 green=500.\n\n"
    );
    assert_eq!(
        admin(&sock, "rollback shop build=196").await,
        "Rolled back shop: blue=1000 green=0.\n\n"
    );
    assert_eq!(
        admin(&sock, "rollback shop build=197").await,
        "Rolled back shop: blue=0 green=1000.\n\n"
    );
    assert_eq!(
        admin(&sock, "rollback shop build=1").await,
        "No group of backend 'shop' has build=1.\n\n"
    );
    let c = client();
    assert_eq!(tally(&c, &format!("{url}/"), 20).await.get("green"), Some(&20));
    let history = admin(&sock, "show history shop").await;
    assert!(history.contains("(rollback to build=197 (green))"), "{history}");
    // Persisted: the state file has the metadata and the history.
    let state = std::fs::read_to_string(proxy.dir.path().join("state.json")).unwrap();
    assert!(
        state.contains("\"deployed_by\": \"alice\"") && state.contains("rollback to build=197"),
        "{state}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_webhook_delays_no_admin_command() {
    // Accepts and never answers.
    let hang = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hang_addr = hang.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = hang.accept().await {
            held.push(s);
        }
    });
    let extra = format!("[[notify]]\nurl = \"http://{hang_addr}/\"\ntimeout = \"1h\"\nqueue = 4\n");
    let Shop { proxy, sock, .. } = shop(0, 0, &extra).await;
    // 100 changes, each one published to a receiver that never answers: every one is
    // answered all the same (a blocked publisher would stop at the first), the queue
    // overflows and is counted.
    for i in 0..100 {
        let w = (i % 2) * 1000;
        let answer = tokio::time::timeout(
            Duration::from_secs(5),
            admin(&sock, &format!("set split shop blue={w} green={}", 1000 - w)),
        )
        .await
        .unwrap_or_else(|_| panic!("set split {i} did not answer"));
        assert_eq!(answer, "\n");
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let metrics = proxy.veer.render_metrics().await;
        let dropped = metrics
            .lines()
            .find(|l| l.starts_with("veer_notify_dropped_total"))
            .and_then(|l| l.split_whitespace().last()?.parse::<f64>().ok())
            .unwrap_or(0.0);
        if dropped >= 90.0 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "dropped {dropped}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_context_is_propagated_with_a_new_parent_and_logged() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    let backend = FakeBackend::with_handler("app", move |req| {
        let tp = req
            .headers()
            .get("traceparent")
            .map(|v| v.to_str().unwrap_or("").to_string());
        s.lock().unwrap().push(tp.unwrap_or_default());
        Box::pin(async { Response::new(Full::new(Bytes::new())) })
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let cfg = format!(
        "[access_log]\npath = \"{}\"\nformat = \"json\"\n{}",
        log.display(),
        http_config(&[("s1", backend.addr)], "")
    );
    let proxy = Proxy::start_in(dir, &cfg).await;
    let given = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let valid = |tp: &str| {
        let parts: Vec<&str> = tp.split('-').collect();
        parts.len() == 4
            && parts[0] == "00"
            && parts[1].len() == 32
            && parts[2].len() == 16
            && parts[1]
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
            && parts[1] != "0".repeat(32)
            && parts[2] != "0".repeat(16)
    };
    // HTTP/1.1 (veer's own engine) and h2c (hyper's path), without and with a traceparent.
    let addr = proxy.addr("web").await;
    raw_exchange(addr, b"GET /a HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
    let with = format!("GET /b HTTP/1.1\r\nHost: x\r\ntraceparent: {given}\r\nConnection: close\r\n\r\n");
    raw_exchange(addr, with.as_bytes()).await;
    let h2 = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http::<Full<Bytes>>();
    let h2url = proxy.url("web").await;
    let _ = send(
        &h2,
        http::Request::get(format!("{h2url}/c"))
            .body(Full::new(Bytes::new()))
            .unwrap(),
    )
    .await
    .unwrap();
    let req = http::Request::get(format!("{h2url}/d"))
        .header("traceparent", given)
        .body(Full::new(Bytes::new()))
        .unwrap();
    let _ = send(&h2, req).await.unwrap();

    let got = seen.lock().unwrap().clone();
    assert_eq!(got.len(), 4, "{got:?}");
    for (i, tp) in got.iter().enumerate() {
        assert!(valid(tp), "request {i}: {tp:?}");
    }
    for new in [&got[0], &got[2]] {
        assert!(!new.contains("4bf92f3577b34da6a3ce929d0e0e4736"), "{new}");
    }
    for kept in [&got[1], &got[3]] {
        assert!(kept.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"), "{kept}");
        assert_ne!(&kept[36..52], "00f067aa0ba902b7", "the parent id is veer's own");
        assert!(kept.ends_with("-01"), "sampled flag kept: {kept}");
    }
    // The access log carries each request's trace id.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.lines().count() >= 4 {
            for tp in &got {
                assert!(
                    text.contains(&format!("\"trace_id\":\"{}\"", &tp[3..35])),
                    "{tp} not in\n{text}"
                );
            }
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{text}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs scripts/zdd.sh with `shell` against a real veer under load; returns (exit code,
/// stdout+stderr, the admin socket).
async fn zdd(shell: &str, green_every: usize) -> (Option<i32>, String, Proxy) {
    let Shop { proxy, sock, addr, .. } = shop(0, green_every, "").await;
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = load(format!("http://{addr}/"), addr, 3, 0, stop.clone());
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/zdd.sh");
    let out = tokio::process::Command::new(shell)
        .arg(script)
        .args(["--socket"])
        .arg(&sock)
        .args([
            "--backend",
            "shop",
            "--from",
            "blue",
            "--to",
            "green",
            "--steps",
            "20,100",
            "--pause",
            "1",
        ])
        .args(["--max-error-rate", "1", "--max-p99-ms", "2000", "--drain-timeout", "10"])
        .kill_on_drop(true)
        .output()
        .await
        .unwrap();
    stop.store(true, Relaxed);
    let (_, failed) = traffic.await.unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if green_every == 0 {
        assert!(failed.is_empty(), "{failed:?}\n{text}");
    }
    (out.status.code(), text, proxy)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zdd_script_deploys_and_rolls_back_under_dash_and_bash() {
    for shell in ["dash", "bash"] {
        if std::process::Command::new(shell)
            .arg("-c")
            .arg("true")
            .status()
            .is_err()
            || std::process::Command::new("socat").arg("-V").output().is_err()
        {
            assert!(
                std::env::var_os("VEER_REQUIRE_TOOLS").is_none(),
                "{shell} and socat are required"
            );
            eprintln!("skipped: {shell} or socat missing");
            continue;
        }
        let (code, text, proxy) = zdd(shell, 0).await;
        assert_eq!(code, Some(0), "{shell}:\n{text}");
        assert!(
            text.contains("step 1/2: blue=800 green=200") && text.contains("step 2/2: blue=0 green=1000"),
            "{text}"
        );
        assert!(
            text.contains("deployed: green takes all traffic of shop, blue drained"),
            "{text}"
        );
        let split: serde_json::Value =
            serde_json::from_str(&admin(&proxy.dir.path().join("admin.sock"), "show split shop json").await).unwrap();
        assert_eq!(split["groups"][0]["servers"][0]["state"], "drain");

        let (code, text, proxy) = zdd(shell, 5).await;
        assert_eq!(code, Some(2), "{shell}:\n{text}");
        let rate: f64 = text
            .split("rolled back at step 1/2: green 5xx rate ")
            .nth(1)
            .and_then(|r| r.split('%').next()?.parse().ok())
            .unwrap_or_else(|| panic!("{text}"));
        assert!((15.0..=25.0).contains(&rate), "{text}");
        let split: serde_json::Value =
            serde_json::from_str(&admin(&proxy.dir.path().join("admin.sock"), "show split shop json").await).unwrap();
        assert_eq!(split["groups"][0]["weight"], 1000, "{shell}");
        assert_eq!(split["groups"][1]["weight"], 0, "{shell}");
    }
    let help = std::process::Command::new("sh")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/zdd.sh"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&help.stdout).contains("Exit codes:"));
}
