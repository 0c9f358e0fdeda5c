//! What HAProxy's tooling reads, produced by veer: the `haproxy` access-log format (HAProxy's
//! `httplog`, read by the haproxy_log_analysis parser and shaped like a line HAProxy 2.6
//! wrote, with the termination state of every way an exchange ends), the syslog sink
//! (RFC 5424 datagrams, read by the syslog_loose parser), and the `show stat` figures
//! beyond counts (bytes, peaks, rates, average times, retries and redispatches).

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Reads from `s` until a whole request head is there; false at EOF or an error.
async fn read_head(s: &mut tokio::net::TcpStream) -> bool {
    let mut buf = vec![0u8; 4096];
    let mut got = Vec::new();
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    true
}

/// A raw backend on a free port: `serve` runs on each connection it accepts, after the
/// first request head has arrived.
async fn raw_backend<F, Fut>(serve: F) -> SocketAddr
where
    F: Fn(tokio::net::TcpStream) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let serve = std::sync::Arc::new(serve);
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let serve = serve.clone();
            tokio::spawn(async move {
                if read_head(&mut s).await {
                    serve(s).await;
                }
            });
        }
    });
    addr
}

/// Answers each connection's first request with `answer`, then (when `hold`) keeps the
/// connection open without another byte.
async fn answering_backend(answer: &'static [u8], hold: bool) -> SocketAddr {
    raw_backend(move |mut s| async move {
        let _ = s.write_all(answer).await;
        if hold {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
    })
    .await
}

/// Answers the first request of each connection and closes the connection when the second
/// arrives, without answering it.
async fn closing_backend() -> SocketAddr {
    raw_backend(|mut s| async move {
        let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").await;
        // The next request: read it and close without a word.
        read_head(&mut s).await;
    })
    .await
}

/// Answers 200 with a 64 MiB body, written for as long as veer takes it.
async fn endless_backend() -> SocketAddr {
    raw_backend(|mut s| async move {
        let _ = s
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 67108864\r\n\r\n")
            .await;
        let chunk = vec![b'x'; 65536];
        for _ in 0..1024 {
            if s.write_all(&chunk).await.is_err() {
                return;
            }
        }
    })
    .await
}

fn log_config(dir: &std::path::Path, sink: &str, format: &str, backends: &[(&str, SocketAddr, &str)]) -> String {
    let mut out = format!(
        "[admin]\nsocket = \"{}\"\n[access_log]\n{sink}\nformat = \"{format}\"\n\
         [[listener]]\nname = \"web\"\nbind = \"127.0.0.1:0\"\nprotocol = \"http\"\n",
        dir.join("admin.sock").display()
    );
    for (name, _, _) in backends {
        out += &format!("  [[listener.route]]\n  path_prefix = \"/{name}\"\n  backend = \"{name}\"\n");
    }
    for (name, addr, extra) in backends {
        out += &format!(
            "[[backend]]\nname = \"{name}\"\n{extra}\nservers = [ {{ name = \"{name}1\", addr = \"{addr}\" }} ]\n"
        );
    }
    out
}

/// The line whose request is `request` (e.g. `GET /ok`).
fn line_of<'a>(lines: &'a [String], request: &str) -> &'a str {
    lines
        .iter()
        .find(|l| l.contains(&format!("\"{request} ")))
        .unwrap_or_else(|| panic!("no line for {request}: {lines:#?}"))
}

/// The fields of an `httplog` line after its `name[pid]: ` tag: client, [date], frontend,
/// backend/server, timers, status, bytes, cookie, cookie, termination state, counts,
/// queues, then the quoted request.
fn fields(line: &str) -> Vec<&str> {
    let rest = line.split_once("]: ").map_or(line, |(_, r)| r);
    rest.splitn(13, ' ').collect()
}

/// A token's shape: digits become 9, letters a, runs collapse (so `0/0/1/12/13` and
/// `0/0/0/1/1` agree, and `--NI` and `----` do not).
fn shape(token: &str) -> String {
    let mut out = String::new();
    for c in token.chars() {
        let k = if c.is_ascii_digit() {
            '9'
        } else if c.is_ascii_alphabetic() {
            'a'
        } else {
            c
        };
        if !out.ends_with(k) || !(k == '9' || k == 'a') {
            out.push(k);
        }
    }
    out
}

/// Each line as the haproxy_log_analysis package (PyPI) parses it; `None` when Python or
/// the package is missing (CI installs both).
fn parse_with_haproxy_log_analysis(lines: &[&str]) -> Option<Vec<serde_json::Value>> {
    let script = r#"
import json, sys
from haproxy.line import parse_line
out = []
for raw in sys.stdin.read().splitlines():
    l = parse_line(raw)
    out.append(None if not l.is_valid else {
        "client_ip": l.client_ip, "frontend": l.frontend_name, "backend": l.backend_name,
        "server": l.server_name, "tq": l.time_wait_request, "tw": l.time_wait_queues,
        "tc": l.time_connect_server, "tr": l.time_wait_response, "tt": l.total_time,
        "status": l.status_code, "bytes": l.bytes_read, "retries": l.retries,
        "method": l.http_request_method, "path": l.http_request_path,
        "protocol": l.http_request_protocol})
print(json.dumps(out))
"#;
    let mut child = std::process::Command::new("python3")
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .ok()?;
    use std::io::Write;
    child.stdin.take()?.write_all(lines.join("\n").as_bytes()).ok()?;
    let out = child.wait_with_output().ok()?;
    if !out.status.success() {
        assert!(
            std::env::var_os("VEER_REQUIRE_TOOLS").is_none(),
            "haproxy_log_analysis is required (CI pip-installs it): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        return None;
    }
    serde_json::from_slice(&out.stdout).ok()
}

/// A line HAProxy 2.6 sent (Debian's 2.6.12, `option httplog`, `cookie SRV insert`, a new
/// client), as its syslog datagram: tests/fixtures/haproxy-2.6/httplog.txt.
fn haproxy_line() -> String {
    let text = std::fs::read_to_string("tests/fixtures/haproxy-2.6/httplog.txt").unwrap();
    text.lines().next().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_lines_parse_as_haproxys_and_say_how_each_exchange_ended() {
    let ok = FakeBackend::start("ok1").await;
    let broken = answering_backend(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly ten.", false).await;
    let stall = answering_backend(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\npart", true).await;
    let big = endless_backend().await;
    let dead = dead_addr().await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let cfg = log_config(
        dir.path(),
        &format!("path = \"{}\"", log.display()),
        "haproxy",
        &[
            ("ok", ok.addr, ""),
            ("sticky", ok.addr, "sticky = { cookie = \"SRV\" }"),
            ("broken", broken, ""),
            ("stall", stall, "read_timeout = \"200ms\""),
            ("big", big, ""),
            ("dead", dead, "retries = 0"),
        ],
    );
    let proxy = Proxy::start_in(dir, &cfg).await;
    let addr = proxy.addr("web").await;
    let url = format!("http://{addr}");
    let c = client();

    assert_eq!(get(&c, &format!("{url}/ok/a?b=1"), &[]).await.unwrap().status, 200);
    let first = get(&c, &format!("{url}/sticky"), &[]).await.unwrap();
    let cookie = first
        .header("set-cookie")
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    get(&c, &format!("{url}/sticky/again"), &[("cookie", &cookie)])
        .await
        .unwrap();
    assert_eq!(get(&c, &format!("{url}/dead"), &[]).await.unwrap().status, 502);
    assert_eq!(get(&c, &format!("{url}/nowhere"), &[]).await.unwrap().status, 404);
    // Body cut by the server, and stalled past read_timeout: the client gets a cut response.
    assert!(get(&c, &format!("{url}/broken"), &[]).await.is_err());
    assert!(get(&c, &format!("{url}/stall"), &[]).await.is_err());
    // The client reads the head of a large body and goes away.
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let mut head = vec![0u8; 1024];
    let n = s.read(&mut head).await.unwrap();
    assert!(head[..n].starts_with(b"HTTP/1.1 200"));
    drop(s);

    let lines = log_lines(&log, 8).await;
    assert_eq!(lines.len(), 8, "{lines:#?}");
    let pid = std::process::id();
    for l in &lines {
        assert!(l.starts_with(&format!("veer[{pid}]: 127.0.0.1:")), "{l}");
    }
    let state = |req: &str| fields(line_of(&lines, req))[9].to_string();
    assert_eq!(state("GET /ok/a?b=1"), "----");
    assert_eq!(state("GET /sticky"), "--NI", "a new client gets the cookie inserted");
    assert_eq!(state("GET /sticky/again"), "--VN", "a returning client is routed by it");
    assert_eq!(state("GET /dead"), "SC--", "no server could be connected");
    assert_eq!(state("GET /nowhere"), "PR--", "veer refused the request");
    assert_eq!(state("GET /broken"), "SD--", "the server broke off in the body");
    assert_eq!(state("GET /stall"), "sD--", "the server stalled past read_timeout");
    assert_eq!(state("GET /big"), "CD--", "the client went away in the body");

    // Who answered, and the timers: a phase not reached is -1.
    let ok_line = fields(line_of(&lines, "GET /ok/a?b=1"));
    assert_eq!(&ok_line[2..4], ["web", "ok/ok1"]);
    let dead_line = fields(line_of(&lines, "GET /dead"));
    // veer's own answer names the backend the route chose, and no server (as HAProxy's).
    assert_eq!(dead_line[3], "dead/<NOSRV>");
    let timers: Vec<&str> = dead_line[4].split('/').collect();
    assert_eq!(
        &timers[1..4],
        ["-1", "-1", "-1"],
        "no queue, connect or response: {dead_line:?}"
    );
    let nowhere = fields(line_of(&lines, "GET /nowhere"));
    assert_eq!(nowhere[3], "web/<NOSRV>");
    // A client abort keeps the status the server sent (HAProxy's `CD` with 200).
    assert_eq!(fields(line_of(&lines, "GET /big"))[5], "200");

    // Shaped like HAProxy's own line, field by field (names aside).
    let theirs = haproxy_line();
    let ours = line_of(&lines, "GET /sticky").to_string();
    let (tf, of) = (fields(&theirs), fields(&ours));
    assert_eq!(tf.len(), of.len(), "{theirs}\n{ours}");
    for i in [0, 1, 4, 5, 6, 7, 8, 9, 10, 11] {
        assert_eq!(shape(tf[i]), shape(of[i]), "field {i}: {theirs}\n{ours}");
    }

    // And read by the parser HAProxy users run on their logs, HAProxy's line too.
    let all: Vec<&str> = std::iter::once(theirs.as_str())
        .chain(lines.iter().map(String::as_str))
        .collect();
    if let Some(parsed) = parse_with_haproxy_log_analysis(&all) {
        assert!(parsed.iter().all(|p| !p.is_null()), "every line parses: {parsed:#?}");
        let ok = &parsed[1 + lines.iter().position(|l| l.contains("\"GET /ok/a?b=1 ")).unwrap()];
        assert_eq!(ok["client_ip"], "127.0.0.1");
        assert_eq!(
            (&ok["frontend"], &ok["backend"], &ok["server"]),
            (&"web".into(), &"ok".into(), &"ok1".into())
        );
        assert_eq!(
            (&ok["status"], &ok["method"], &ok["path"]),
            (&"200".into(), &"GET".into(), &"/ok/a?b=1".into())
        );
        assert_eq!(ok["protocol"], "HTTP/1.1");
        assert_eq!(ok["tw"], 0);
        // The parser keeps Ta (`tt`, which may carry a `+`) and bytes as text.
        let total: i64 = ok["tt"].as_str().unwrap().parse().unwrap();
        assert!(total >= ok["tr"].as_i64().unwrap(), "{ok}");
        // Head and body: at least the 3-byte body and a status line.
        assert!(ok["bytes"].as_str().unwrap().parse::<u64>().unwrap() > 20, "{ok}");
    }
}

/// The same facts as JSON fields.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_lines_carry_the_timers_and_the_termination_state() {
    let ok = FakeBackend::start("ok1").await;
    let broken = answering_backend(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly ten.", false).await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let cfg = log_config(
        dir.path(),
        &format!("path = \"{}\"", log.display()),
        "json",
        &[("ok", ok.addr, ""), ("broken", broken, "")],
    );
    let proxy = Proxy::start_in(dir, &cfg).await;
    let url = proxy.url("web").await;
    let c = client();
    get(&c, &format!("{url}/ok"), &[]).await.unwrap();
    assert!(get(&c, &format!("{url}/broken"), &[]).await.is_err());
    let lines = log_lines(&log, 2).await;
    let v: Vec<serde_json::Value> = lines.iter().map(|l| serde_json::from_str(l).unwrap()).collect();
    let ok = v.iter().find(|l| l["path"] == "/ok").unwrap();
    let broken = v.iter().find(|l| l["path"] == "/broken").unwrap();
    assert_eq!(ok["termination"], "--");
    assert_eq!(broken["termination"], "SD");
    assert_eq!(broken["status"], 200);
    assert_eq!(broken["bytes"], 9, "the body bytes that did reach the client");
    for key in ["request_ms", "queue_ms", "connect_ms", "response_ms", "duration_ms"] {
        assert!(ok[key].as_f64().is_some_and(|v| v >= 0.0), "{key}: {ok}");
    }
    assert_eq!(
        (&ok["retries"], &ok["conns_process"], &ok["conns_listener"]),
        (&0.into(), &1.into(), &1.into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_syslog_sink_gets_rfc5424_datagrams_over_udp_and_unix_sockets() {
    use syslog_loose::{parse_message_with_year_exact, Protocol, SyslogFacility, SyslogSeverity, Variant};
    let ok = FakeBackend::start("ok1").await;
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let unix_dir = tempfile::tempdir().unwrap();
    let unix_path = unix_dir.path().join("log.sock");
    let unix = std::os::unix::net::UnixDatagram::bind(&unix_path).unwrap();
    unix.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let sinks = [
        (
            format!("syslog = \"{}\"", udp.local_addr().unwrap()),
            "haproxy",
            SyslogFacility::LOG_LOCAL0,
        ),
        (
            format!("syslog = \"{}\"\nfacility = \"local3\"", unix_path.display()),
            "json",
            SyslogFacility::LOG_LOCAL3,
        ),
    ];
    for (i, (sink, format, facility)) in sinks.iter().enumerate() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = log_config(dir.path(), sink, format, &[("ok", ok.addr, "")]);
        let proxy = Proxy::start_in(dir, &cfg).await;
        let url = proxy.url("web").await;
        get(&client(), &format!("{url}/ok/{i}"), &[]).await.unwrap();
        let mut buf = vec![0u8; 65536];
        let n = tokio::task::block_in_place(|| {
            if i == 0 {
                udp.recv(&mut buf)
            } else {
                unix.recv(&mut buf)
            }
        })
        .unwrap();
        let datagram = std::str::from_utf8(&buf[..n]).unwrap();
        let m = parse_message_with_year_exact(datagram, |_| 2026, Variant::RFC5424)
            .unwrap_or_else(|e| panic!("{e}: {datagram}"));
        assert_eq!(m.protocol, Protocol::RFC5424(1), "{datagram}");
        assert_eq!(m.facility, Some(*facility), "{datagram}");
        assert_eq!(m.severity, Some(SyslogSeverity::SEV_INFO));
        assert_eq!(m.appname, Some("veer"));
        assert_eq!(m.procid.map(|p| p.to_string()), Some(std::process::id().to_string()));
        assert!(m.timestamp.is_some());
        if *format == "json" {
            let v: serde_json::Value = serde_json::from_str(m.msg).unwrap();
            assert_eq!((&v["path"], &v["status"]), (&"/ok/1".into(), &200.into()));
        } else {
            // The message is HAProxy's line itself; the header carries name and pid.
            assert!(m.msg.starts_with("127.0.0.1:"), "{}", m.msg);
            assert!(m.msg.ends_with("\"GET /ok/0 HTTP/1.1\""), "{}", m.msg);
        }
    }
}

/// `show stat`'s columns by name, for the row of `svname` in proxy `px`.
async fn stat_row(sock: &std::path::Path, px: &str, svname: &str) -> std::collections::HashMap<String, String> {
    let out = admin(sock, "show stat").await;
    let mut lines = out.lines();
    let header: Vec<String> = lines
        .next()
        .unwrap()
        .trim_start_matches("# ")
        .split(',')
        .map(str::to_string)
        .collect();
    let row = lines
        .map(|l| l.split(',').map(str::to_string).collect::<Vec<_>>())
        .find(|r| r.first().map(String::as_str) == Some(px) && r.get(1).map(String::as_str) == Some(svname))
        .unwrap_or_else(|| panic!("no row {px}/{svname}: {out}"));
    header.into_iter().zip(row).collect()
}

fn num(row: &std::collections::HashMap<String, String>, col: &str) -> i64 {
    row[col]
        .parse()
        .unwrap_or_else(|_| panic!("{col} is {:?} in {row:?}", row[col]))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_stat_fills_bytes_peaks_rates_times_retries_and_redispatches() {
    // s1 answers after 60 ms; `dead` refuses connections, so its requests are redispatched.
    let slow = FakeBackend::with_handler("s1", |req| {
        Box::pin(async move {
            tokio::time::sleep(Duration::from_millis(60)).await;
            named_response("s1", &req)
        })
    })
    .await;
    let dead = dead_addr().await;
    // Answers the first request of each connection, keeps it open, and closes it at the
    // second without answering: veer retries that one on a new connection (`wretr`).
    let closer = closing_backend().await;
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("admin.sock");
    let cfg = format!(
        r#"
[admin]
socket = "{}"
[[listener]]
name = "web"
bind = "127.0.0.1:0"
protocol = "http"
  [[listener.route]]
  path_prefix = "/closer"
  backend = "closer"
  [[listener.route]]
  backend = "app"
[[backend]]
name = "app"
retries = 1
servers = [ {{ name = "s1", addr = "{}" }}, {{ name = "dead", addr = "{dead}" }}, {{ name = "idle", addr = "{dead}", weight = 0 }} ]
[[backend]]
name = "closer"
servers = [ {{ name = "c1", addr = "{closer}" }} ]
"#,
        sock.display(),
        slow.addr
    );
    let proxy = Proxy::start_in(dir, &cfg).await;
    let url = proxy.url("web").await;
    let c = client();
    for i in 0..6 {
        let a = get(&c, &format!("{url}/r{i}"), &[]).await.unwrap();
        assert_eq!((a.status, a.server()), (200, "s1"));
    }
    // Three at once: s1 holds each for 60 ms, so it has three at the same time.
    let (c2, c3) = (client(), client());
    let (x, y, z) = (format!("{url}/x"), format!("{url}/y"), format!("{url}/z"));
    let (a, b, d) = tokio::join!(get(&c, &x, &[]), get(&c2, &y, &[]), get(&c3, &z, &[]));
    assert!(a.is_ok() && b.is_ok() && d.is_ok());
    // The closer: the first request opens a connection, the second finds it closing.
    for _ in 0..2 {
        assert_eq!(get(&c, &format!("{url}/closer"), &[]).await.unwrap().status, 200);
    }

    let s1 = stat_row(&sock, "app", "s1").await;
    let dead_row = stat_row(&sock, "app", "dead").await;
    let app = stat_row(&sock, "app", "BACKEND").await;
    // Bytes: request heads up, response heads and bodies down.
    assert!(num(&s1, "bin") > 9 * 40, "{s1:?}");
    assert!(num(&s1, "bout") > 9 * 40, "{s1:?}");
    assert_eq!(num(&app, "bin"), num(&s1, "bin") + num(&dead_row, "bin"));
    assert!(num(&s1, "smax") >= 3, "{s1:?}");
    // The server sleeps 60 ms per answer: response and total times cover it.
    assert!(num(&s1, "rtime") >= 60, "{s1:?}");
    assert!(num(&s1, "ttime") >= num(&s1, "rtime"), "{s1:?}");
    assert_eq!(num(&s1, "qtime"), 0);
    assert!(num(&s1, "ctime") >= 0);
    assert!(num(&app, "rtime") >= 60, "{app:?}");
    // Round robin sent a request to `dead`, which went on to s1 (then `dead` was ejected).
    assert!(num(&dead_row, "wredis") >= 1, "{dead_row:?}");
    assert_eq!(num(&s1, "wredis"), 0);
    assert_eq!(num(&app, "wredis"), num(&dead_row, "wredis"));
    let closer_row = stat_row(&sock, "closer", "c1").await;
    assert!(num(&closer_row, "wretr") >= 1, "{closer_row:?}");

    // Rates are derived once a second; the second after the traffic shows its peak.
    let mut s1 = stat_row(&sock, "app", "s1").await;
    for _ in 0..100 {
        if num(&s1, "rate_max") > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        s1 = stat_row(&sock, "app", "s1").await;
    }
    assert!(num(&s1, "rate_max") >= 1, "{s1:?}");
    assert!(num(&s1, "lastsess") >= 0, "{s1:?}");
    let fe = stat_row(&sock, "web", "FRONTEND").await;
    assert!(num(&fe, "rate_max") >= 1, "{fe:?}");
    // A server that never had a session: no last session (`-1`), no rate.
    let idle = stat_row(&sock, "app", "idle").await;
    assert_eq!(
        (num(&idle, "lastsess"), num(&idle, "rate_max"), num(&idle, "smax")),
        (-1, 0, 0)
    );
}
