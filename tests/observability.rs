//! Observability: Prometheus counters and histograms that equal the traffic exactly, 5xx
//! in the 5xx class, the cardinality guard, `promtool check metrics`, and the access log
//! (one JSON line per request with every field; a stalled sink drops and counts lines while
//! proxying carries on).

mod support;
use std::time::Duration;

use support::*;

fn config(dir: &std::path::Path, servers: &[&FakeBackend], extra: &str) -> String {
    let list: Vec<String> = servers
        .iter()
        .map(|b| format!(r#"{{ name = "{}", addr = "{}" }}"#, b.name, b.addr))
        .collect();
    format!(
        r#"
[admin]
http = "127.0.0.1:0"
socket = "{}"
{extra}
[[listener]]
name = "web"
bind = "127.0.0.1:0"
protocol = "http"
  [[listener.route]]
  name = "all"
  path_prefix = "/"
  backend = "obs"
[[backend]]
name = "obs"
servers = [ {} ]
"#,
        dir.join("admin.sock").display(),
        list.join(", ")
    )
}

async fn scrape(proxy: &Proxy) -> String {
    let url = format!("http://{}/metrics", proxy.veer.admin_http_addr().unwrap());
    String::from_utf8(get(&client(), &url, &[]).await.unwrap().body.to_vec()).unwrap()
}

/// The value of the series whose line starts with `series ` (name plus labels).
fn value(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.trim().parse().ok()))
}

#[tokio::test]
async fn counters_and_histograms_count_every_request_exactly() {
    let ok = FakeBackend::start("s1").await;
    let failing = FakeBackend::with_handler("s2", |_req| {
        Box::pin(async {
            let mut r = http::Response::new(http_body_util::Full::new(bytes::Bytes::from("boom")));
            *r.status_mut() = http::StatusCode::INTERNAL_SERVER_ERROR;
            r
        })
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(&config(dir.path(), &[&ok, &failing], "")).await;
    let url = proxy.url("web").await;
    let c = client();
    for _ in 0..40 {
        get(&c, &url, &[]).await.unwrap();
    }
    // Round robin: 20 each. Histogram samples land when each response body ends.
    let labels = |s: &str| format!("backend=\"obs\",group=\"default\",server=\"{s}\"");
    let mut m = String::new();
    for _ in 0..200 {
        m = scrape(&proxy).await;
        if value(&m, &format!("veer_request_duration_seconds_count{{{}}}", labels("s2"))) == Some(20.0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        value(&m, &format!("veer_requests_total{{{},code=\"2xx\"}}", labels("s1"))),
        Some(20.0),
        "{m}"
    );
    assert_eq!(
        value(&m, &format!("veer_requests_total{{{},code=\"5xx\"}}", labels("s2"))),
        Some(20.0)
    );
    assert_eq!(
        value(&m, &format!("veer_requests_total{{{},code=\"2xx\"}}", labels("s2"))),
        Some(0.0)
    );
    for s in ["s1", "s2"] {
        assert_eq!(
            value(&m, &format!("veer_request_duration_seconds_count{{{}}}", labels(s))),
            Some(20.0),
            "{s}"
        );
        assert_eq!(
            value(
                &m,
                &format!("veer_upstream_response_duration_seconds_count{{{}}}", labels(s))
            ),
            Some(20.0)
        );
        assert_eq!(
            value(
                &m,
                &format!("veer_request_duration_seconds_bucket{{{},le=\"+Inf\"}}", labels(s))
            ),
            Some(20.0)
        );
    }
    // One keep-alive client: one upstream connection per server.
    assert_eq!(
        value(
            &m,
            &format!("veer_upstream_connect_duration_seconds_count{{{}}}", labels("s1"))
        ),
        Some(1.0)
    );
    assert_eq!(
        value(&m, "veer_group_weight{backend=\"obs\",group=\"default\"}"),
        Some(100.0)
    );
    assert_eq!(
        value(
            &m,
            &format!("veer_server_admin_state{{{},state=\"ready\"}}", labels("s1"))
        ),
        Some(1.0)
    );
    assert_eq!(
        value(&m, "veer_listener_connections_total{listener=\"web\"}"),
        Some(1.0)
    );
    assert!(
        m.contains("le=\"0.0001\"") && m.contains("le=\"10\""),
        "buckets from 100µs to 10s"
    );
    // Response bytes: 20 bodies of "boom".
    assert_eq!(
        value(&m, &format!("veer_server_response_bytes_total{{{}}}", labels("s2"))),
        Some(80.0)
    );
    // Per listener, veer's own errors included: with every server in maintenance, 503.
    assert_eq!(
        value(&m, "veer_listener_responses_total{listener=\"web\",code=\"2xx\"}"),
        Some(20.0),
        "{m}"
    );
    let sock = dir.path().join("admin.sock");
    assert_eq!(
        admin(&sock, "disable server obs/s1; disable server obs/s2").await,
        "\n\n"
    );
    let a = get(&c, &url, &[]).await.unwrap();
    assert_eq!((a.status, a.header("veer-error")), (503, Some("no-server")));
    let m = scrape(&proxy).await;
    assert_eq!(
        value(&m, "veer_listener_responses_total{listener=\"web\",code=\"5xx\"}"),
        Some(21.0),
        "{m}"
    );
    assert_eq!(
        value(&m, "veer_proxy_errors_total{listener=\"web\",reason=\"no-server\"}"),
        Some(1.0),
        "{m}"
    );
    assert_eq!(
        value(&m, "veer_proxy_errors_total{listener=\"web\",reason=\"no-route\"}"),
        Some(0.0)
    );
}

#[tokio::test]
async fn per_server_series_fold_above_the_cardinality_limit() {
    let mut servers = Vec::new();
    for i in 0..4 {
        servers.push(FakeBackend::start(&format!("s{i}")).await);
    }
    let dir = tempfile::tempdir().unwrap();
    let refs: Vec<&FakeBackend> = servers.iter().collect();
    let proxy = Proxy::start(&config(dir.path(), &refs, "[metrics]\nmax_servers_per_backend = 2")).await;
    let c = client();
    let url = proxy.url("web").await;
    for _ in 0..8 {
        get(&c, &url, &[]).await.unwrap();
    }
    let m = scrape(&proxy).await;
    assert!(m.contains("server=\"s0\"") && m.contains("server=\"s1\""));
    assert!(!m.contains("server=\"s2\"") && !m.contains("server=\"s3\""), "{m}");
    let other = "backend=\"obs\",group=\"default\",server=\"other\"";
    assert_eq!(
        value(&m, &format!("veer_requests_total{{{other},code=\"2xx\"}}")),
        Some(4.0),
        "{m}"
    );
}

/// A deleted server's series go: its histograms and its last counter values (the
/// recorder would keep them forever); the others stay.
#[tokio::test]
async fn a_deleted_servers_series_leave_the_page() {
    let (s1, s2) = (FakeBackend::start("s1").await, FakeBackend::start("s2").await);
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(&config(dir.path(), &[&s1, &s2], "")).await;
    let c = client();
    let url = proxy.url("web").await;
    for _ in 0..10 {
        get(&c, &url, &[]).await.unwrap();
    }
    let series = |m: &str, server: &str| {
        m.lines()
            .filter(|l| !l.starts_with('#') && l.contains(&format!("server=\"{server}\"")))
            .count()
    };
    let before = scrape(&proxy).await;
    assert!(series(&before, "s2") > 20, "{before}");
    assert!(before.contains("veer_request_duration_seconds_bucket{backend=\"obs\",group=\"default\",server=\"s2\""));
    let sock = dir.path().join("admin.sock");
    assert_eq!(
        admin(&sock, "set server obs/s2 state maint; del server obs/s2").await,
        "\nServer deleted.\n\n"
    );
    let after = scrape(&proxy).await;
    assert_eq!(series(&after, "s2"), 0, "{after}");
    assert_eq!(series(&after, "s1"), series(&before, "s1"), "{after}");
    let s1_count = "veer_request_duration_seconds_count{backend=\"obs\",group=\"default\",server=\"s1\"}";
    assert_eq!(value(&after, s1_count), Some(5.0), "{after}");
    assert!(
        after.contains("veer_listener_connections_total"),
        "series without a server stay"
    );
}

#[tokio::test]
async fn promtool_accepts_the_exposition() {
    let promtool = std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join("promtool"))
            .find(|p| p.exists())
    });
    let Some(promtool) = promtool else {
        assert!(
            std::env::var_os("VEER_REQUIRE_TOOLS").is_none(),
            "promtool is required (CI installs prometheus)"
        );
        eprintln!("promtool not installed: skipping (CI installs it and sets VEER_REQUIRE_TOOLS)");
        return;
    };
    let (a, b) = (FakeBackend::start("a").await, FakeBackend::start("b").await);
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(&config(dir.path(), &[&a, &b], "")).await;
    let c = client();
    let url = proxy.url("web").await;
    for path in ["/", "/x", "/y?z=1"] {
        get(&c, &format!("{url}{path}"), &[]).await.unwrap();
    }
    let m = scrape(&proxy).await;
    // The process, as every Prometheus client library exposes it.
    for name in [
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_max_fds",
    ] {
        let value = m
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or_else(|| panic!("{name} missing in\n{m}"));
        assert!(value > 0.0 || name == "process_cpu_seconds_total", "{name} = {value}");
    }
    let out = tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut child = std::process::Command::new(promtool)
            .args(["check", "metrics"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(m.as_bytes()).unwrap();
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn access_log_writes_one_json_line_per_request() {
    let s = FakeBackend::start("s1").await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let extra = format!("[access_log]\npath = \"{}\"\nformat = \"json\"", log.display());
    let proxy = Proxy::start(&config(dir.path(), &[&s], &extra)).await;
    let c = client();
    let url = proxy.url("web").await;
    let mine = get(&c, &format!("{url}/given?q=1"), &[("x-request-id", "abc-123")])
        .await
        .unwrap();
    assert_eq!(
        mine.header("x-echo-x-request-id"),
        Some("abc-123"),
        "the client's id is forwarded"
    );
    let generated = get(&c, &format!("{url}/gen"), &[]).await.unwrap();
    let generated_id = generated
        .header("x-echo-x-request-id")
        .expect("an id is generated")
        .to_string();
    assert_eq!(generated_id.len(), 32);
    let other = get(&c, &format!("{url}/x"), &[("host", "other.example")])
        .await
        .unwrap();
    assert_eq!(other.status, 200);

    let lines = log_lines(&log, 3).await;
    assert_eq!(lines.len(), 3, "{lines:?}");
    let first: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
    for field in [
        "time",
        "client",
        "method",
        "host",
        "path",
        "status",
        "bytes",
        "duration_ms",
        "upstream_duration_ms",
        "listener",
        "route",
        "backend",
        "group",
        "server",
        "veer_error",
        "request_id",
    ] {
        assert!(first.get(field).is_some(), "{field} missing in {first}");
    }
    assert_eq!(first["method"], "GET");
    assert_eq!(first["path"], "/given?q=1");
    assert_eq!(first["status"], 200);
    assert_eq!(first["bytes"], 2);
    assert_eq!(
        (first["listener"].as_str(), first["route"].as_str()),
        (Some("web"), Some("all"))
    );
    assert_eq!(
        (
            first["backend"].as_str(),
            first["group"].as_str(),
            first["server"].as_str()
        ),
        (Some("obs"), Some("default"), Some("s1"))
    );
    assert_eq!(first["request_id"], "abc-123");
    assert!(first["veer_error"].is_null());
    let second: serde_json::Value = serde_json::from_str(&lines[1]).unwrap();
    assert_eq!(second["request_id"].as_str(), Some(generated_id.as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_access_log_drops_lines_and_proxying_continues() {
    let s = FakeBackend::start("s1").await;
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("stalled.pipe");
    assert!(std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    // A reader that opens the pipe and never reads it: the pipe fills and the writer stalls.
    let reader_path = fifo.clone();
    let (opened_tx, opened_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let f = std::fs::File::open(reader_path).unwrap();
        opened_tx.send(()).unwrap();
        std::thread::sleep(Duration::from_secs(600));
        drop(f);
    });
    let extra = format!("[access_log]\npath = \"{}\"\nbuffer = 16", fifo.display());
    let proxy = Proxy::start(&config(dir.path(), &[&s], &extra)).await;
    opened_rx.recv_timeout(Duration::from_secs(10)).unwrap();
    let c = client();
    let url = proxy.url("web").await;
    let long_path = format!("{url}/{}", "p".repeat(1000));
    for _ in 0..400 {
        let a = get(&c, &long_path, &[]).await.unwrap();
        assert_eq!(a.status, 200);
    }
    let m = scrape(&proxy).await;
    let dropped = value(&m, "veer_access_log_dropped_total").unwrap();
    assert!(dropped > 0.0, "no line counted as dropped:\n{m}");
}

#[test]
fn dashboard_queries_are_valid_promql_over_exported_names() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/grafana-dashboard.json");
    let dash: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let exprs: Vec<String> = dash["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().unwrap().iter())
        .map(|t| {
            t["expr"]
                .as_str()
                .unwrap()
                .replace("$__rate_interval", "1m")
                .replace("$backend", ".*")
        })
        .collect();
    assert!(exprs.len() >= 8);
    // Every metric a panel uses is one veer exports.
    let exported =
        std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/metrics.rs")).unwrap();
    for e in &exprs {
        for name in e
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| w.starts_with("veer_"))
        {
            let base = name.trim_end_matches("_bucket");
            assert!(
                exported.contains(&format!("\"{base}\"")),
                "{name} is not exported ({e})"
            );
        }
    }
    let Some(promtool) = std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join("promtool"))
            .find(|p| p.exists())
    }) else {
        assert!(
            std::env::var_os("VEER_REQUIRE_TOOLS").is_none(),
            "promtool is required (CI installs prometheus)"
        );
        return;
    };
    let rules: Vec<String> = exprs
        .iter()
        .enumerate()
        .map(|(i, e)| {
            format!(
                "      - record: veer:dashboard_{i}\n        expr: '{}'\n",
                e.replace('\'', "''")
            )
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("rules.yml");
    std::fs::write(
        &file,
        format!("groups:\n  - name: dashboard\n    rules:\n{}", rules.concat()),
    )
    .unwrap();
    let out = std::process::Command::new(promtool)
        .args(["check", "rules"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The `combined` format is Apache/NCSA combined exactly: the combined-log regex GoAccess and
/// awstats use reads every line (the client's protocol as spoken, CLF time, Referer and
/// User-Agent with quotes escaped), and the JSON format carries the same facts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_combined_log_is_real_combined_and_json_has_the_same_facts() {
    let s = FakeBackend::start("s1").await;
    for format in ["combined", "json"] {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("access.log");
        let extra = format!("[access_log]\npath = \"{}\"\nformat = \"{format}\"", log.display());
        let proxy = Proxy::start(&config(dir.path(), &[&s], &extra)).await;
        let addr = proxy.addr("web").await;
        let url = format!("http://{addr}");
        let c = client();
        get(
            &c,
            &format!("{url}/a?b=1"),
            &[
                ("referer", "https://shop.example/cart"),
                ("user-agent", "curl/8.0 \"quoted\""),
            ],
        )
        .await
        .unwrap();
        raw_exchange(addr, b"GET /old HTTP/1.0\r\nHost: x\r\n\r\n").await;
        let h2 = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .http2_only(true)
            .build_http::<http_body_util::Full<bytes::Bytes>>();
        get(&h2, &format!("{url}/two"), &[]).await.unwrap();
        let mut lines = log_lines(&log, 3).await;
        assert_eq!(lines.len(), 3, "{lines:?}");
        // A line is written as its response ends, which the client may see first: lines of
        // back-to-back requests can come in either order.
        lines.sort_by_key(|l| ["/a?b=1", "/old", "/two"].iter().position(|p| l.contains(p)));
        if format == "json" {
            let v: Vec<serde_json::Value> = lines.iter().map(|l| serde_json::from_str(l).unwrap()).collect();
            assert_eq!(v[0]["referer"], "https://shop.example/cart");
            assert_eq!(v[0]["user_agent"], "curl/8.0 \"quoted\"");
            let protocols: Vec<&str> = v.iter().map(|l| l["protocol"].as_str().unwrap()).collect();
            assert_eq!(protocols, ["HTTP/1.1", "HTTP/1.0", "HTTP/2.0"]);
            continue;
        }
        // GoAccess's and awstats' combined pattern, anchored at both ends.
        let parsed = python_regex(
            r#"^(\S+) (\S+) (\S+) \[(\d{2}/[A-Z][a-z]{2}/\d{4}:\d{2}:\d{2}:\d{2} [+-]\d{4})\] "(\S+) (.*?) (HTTP/\d\.\d)" (\d{3}) (\d+|-) "((?:[^"\\]|\\.)*)" "((?:[^"\\]|\\.)*)"$"#,
            &lines.join("\n"),
        );
        let rows = parsed.as_array().unwrap();
        assert_eq!(rows.len(), 3, "every line matches: {lines:?} → {parsed}");
        assert_eq!(rows[0][0], "127.0.0.1");
        assert_eq!(
            (&rows[0][4], &rows[0][5], &rows[0][6]),
            (&"GET".into(), &"/a?b=1".into(), &"HTTP/1.1".into())
        );
        assert_eq!((&rows[0][7], &rows[0][8]), (&"200".into(), &"2".into()));
        assert_eq!(rows[0][9], "https://shop.example/cart");
        assert_eq!(rows[0][10], "curl/8.0 \\\"quoted\\\"");
        assert_eq!(rows[1][6], "HTTP/1.0");
        assert_eq!(
            (&rows[2][6], &rows[2][9], &rows[2][10]),
            (&"HTTP/2.0".into(), &"-".into(), &"-".into())
        );
    }
}

/// The groups of `pattern` for every line of `text` that matches it, by Python's `re`.
fn python_regex(pattern: &str, text: &str) -> serde_json::Value {
    use std::io::Write;
    let script = "import json, re, sys\np = re.compile(sys.argv[1])\nprint(json.dumps([list(m.groups()) for m in (p.match(l) for l in sys.stdin.read().splitlines()) if m]))";
    let mut child = std::process::Command::new("python3")
        .args(["-c", script, pattern])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 is installed");
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    serde_json::from_slice(&out.stdout).unwrap()
}
