//! The admin HTTP listener and the admin socket's file, over real sockets with veer
//! in-process:
//! - `/live`, `/ready` answer 200, anything else 404;
//! - `GET /haproxy?stats;csv` is byte-for-byte `show stat` without the trailing empty line,
//!   and parses the way HAProxy tools parse it: Python's `csv.DictReader` (Ansible's
//!   haproxy module) sees the 88 documented columns with numeric `scur`/`qcur`, and
//!   `haproxyctl`'s positional reads (0 pxname, 1 svname, 17 status, 18 weight) find the
//!   configured weight and the `no check` → `DRAIN` → `MAINT` transitions;
//! - `POST /command` in text and JSON, error answers as 400, and the bearer token from
//!   `token_file` (no/wrong token → 401 and nothing changes; the right one → 200);
//! - config validation refuses a non-loopback admin listener without a token, at line:col;
//! - the admin socket file is created 0600 by default and honours `socket_mode`.

mod support;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use http_body_util::Full;
use support::admin as socket_cmd;
use support::*;

/// The HAProxy 2.0 static columns, from ../shared/haproxy-runtime-api.md (not from src/, so
/// a change of the emitted header is caught).
const DOC_COLUMNS: &str = "pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,dreq,dresp,ereq,econ,eresp,wretr,wredis,status,weight,act,bck,chkfail,chkdown,lastchg,downtime,qlimit,pid,iid,sid,throttle,lbtot,tracked,type,rate,rate_lim,rate_max,check_status,check_code,check_duration,hrsp_1xx,hrsp_2xx,hrsp_3xx,hrsp_4xx,hrsp_5xx,hrsp_other,hanafail,req_rate,req_rate_max,req_tot,cli_abrt,srv_abrt,comp_in,comp_out,comp_byp,comp_rsp,lastsess,last_chk,last_agt,qtime,ctime,rtime,ttime,agent_status,agent_code,agent_duration,check_desc,agent_desc,check_rise,check_fall,check_health,agent_rise,agent_fall,agent_health,addr,cookie,mode,algo,conn_rate,conn_rate_max,conn_tot,intercepted,dcon,dses,wrew,connect,reuse,cache_lookups,cache_hits";

/// A temp dir for the admin socket (and token file), kept apart from `Proxy`'s own dir
/// because the config has to name these paths before `Proxy::start` writes it.
struct AdminDir {
    dir: tempfile::TempDir,
}

impl AdminDir {
    fn new() -> AdminDir {
        AdminDir {
            dir: tempfile::tempdir().unwrap(),
        }
    }
    fn socket(&self) -> PathBuf {
        self.dir.path().join("admin.sock")
    }
    fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// Three servers: `blue-1` (weight 2) and `blue-2` in group blue (split 100), `green-1` in
/// group green (split 0). `admin` is the `[admin]` table's body.
fn config(s: &[FakeBackend], admin: &str) -> String {
    format!(
        r#"
[admin]
{admin}

[[listener]]
name = "web"
bind = "127.0.0.1:0"
protocol = "http"
  [[listener.route]]
  backend = "shop"

[[backend]]
name = "shop"
groups = [
  {{ name = "blue", weight = 100, servers = [ {{ name = "blue-1", addr = "{}", weight = 2 }}, {{ name = "blue-2", addr = "{}" }} ] }},
  {{ name = "green", weight = 0, servers = [ {{ name = "green-1", addr = "{}" }} ] }},
]
"#,
        s[0].addr, s[1].addr, s[2].addr
    )
}

async fn backends() -> Vec<FakeBackend> {
    let mut s = Vec::new();
    for n in ["blue-1", "blue-2", "green-1"] {
        s.push(FakeBackend::start(n).await);
    }
    s
}

fn toml_path(p: &Path) -> String {
    format!("\"{}\"", p.display())
}

/// `http://<admin http addr>`
fn admin_url(p: &Proxy) -> String {
    format!("http://{}", p.veer.admin_http_addr().expect("admin http is bound"))
}

/// POST /command as a deliberate admin client does (`X-Veer-Admin: 1`; the client names the
/// listener in Host).
async fn post_command(c: &HttpClient, base: &str, body: &str, headers: &[(&str, &str)]) -> Answer {
    let mut b = http::Request::post(format!("{base}/command")).header("x-veer-admin", "1");
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    send(c, b.body(Full::new(Bytes::from(body.to_string()))).unwrap())
        .await
        .unwrap()
}

fn body(a: &Answer) -> &str {
    std::str::from_utf8(&a.body).unwrap()
}

async fn stats_csv(c: &HttpClient, base: &str) -> String {
    let a = get(c, &format!("{base}/haproxy?stats;csv"), &[]).await.unwrap();
    assert_eq!(a.status, 200, "{a:?}");
    body(&a).to_string()
}

/// haproxyctl-style: the fields of the data row for `px`/`sv`, split on ','.
fn row<'a>(csv: &'a str, px: &str, sv: &str) -> Vec<&'a str> {
    let rows: Vec<Vec<&str>> = csv
        .lines()
        .skip(1)
        .map(|l| l.split(',').collect::<Vec<_>>())
        .filter(|f| f[0] == px && f[1] == sv)
        .collect();
    assert_eq!(rows.len(), 1, "expected one row {px}/{sv} in:\n{csv}");
    rows.into_iter().next().unwrap()
}

/// What Ansible's haproxy module does with the CSV: strip "# ", csv.DictReader.
const PY_DICTREADER: &str = r##"
import csv, json, sys
data = sys.stdin.read()
assert data.startswith("# "), repr(data[:20])
reader = csv.DictReader(data[2:].splitlines())
rows = list(reader)
print(json.dumps({"fieldnames": reader.fieldnames, "rows": rows}))
"##;

fn python_dictreader(csv: &str) -> serde_json::Value {
    use std::io::Write;
    let mut child = std::process::Command::new("python3")
        .args(["-c", PY_DICTREADER])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3 is installed");
    child.stdin.take().unwrap().write_all(csv.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_ready_and_unknown_paths() {
    let s = backends().await;
    let p = Proxy::start(&config(&s, r#"http = "127.0.0.1:0""#)).await;
    let base = admin_url(&p);
    let c = client();

    let live = get(&c, &format!("{base}/live"), &[]).await.unwrap();
    assert_eq!(live.status, 200, "{live:?}");
    let ready = get(&c, &format!("{base}/ready"), &[]).await.unwrap();
    assert_eq!(ready.status, 200, "{ready:?}");

    let metrics = get(&c, &format!("{base}/metrics"), &[]).await.unwrap();
    assert_eq!(metrics.status, 200);
    assert!(
        body(&metrics).contains("veer_server_active_requests{backend=\"shop\",group=\"blue\",server=\"blue-1\"} 0"),
        "{}",
        body(&metrics)
    );

    for path in ["/nope", "/command", "/live/x", "/events/x"] {
        let a = get(&c, &format!("{base}{path}"), &[]).await.unwrap();
        assert_eq!(a.status, 404, "GET {path}: {a:?}");
    }
    // The status page (issue 24), at HAProxy's stats address too.
    for path in ["/", "/haproxy", "/haproxy?stats"] {
        let a = get(&c, &format!("{base}{path}"), &[]).await.unwrap();
        assert_eq!(a.status, 200, "GET {path}: {a:?}");
        assert_eq!(a.header("content-type"), Some("text/html; charset=utf-8"), "{path}");
    }
    // An empty command line is a no-op; a wrong method on a known path is 404.
    let a = post_command(&c, &base, "", &[]).await;
    assert_eq!((a.status, body(&a)), (200, ""), "{a:?}");
    let r = send(
        &c,
        http::Request::post(format!("{base}/live"))
            .body(Full::new(Bytes::new()))
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 404, "POST /live: {r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_csv_matches_show_stat_and_parses_like_haproxy_tools() {
    let s = backends().await;
    let d = AdminDir::new();
    let admin = format!("http = \"127.0.0.1:0\"\nsocket = {}", toml_path(&d.socket()));
    let p = Proxy::start(&config(&s, &admin)).await;
    let base = admin_url(&p);
    let c = client();
    // Some traffic first, so counters are not all zero.
    let counts = tally(&c, &format!("{}/", p.url("web").await), 9).await;
    assert_eq!(counts.values().sum::<usize>(), 9);
    assert!(!counts.contains_key("green-1"), "{counts:?}");

    // Same bytes as `show stat`, minus its terminating empty line. `lastchg` counts seconds,
    // so compare a snapshot bracketed by two identical socket answers.
    let mut compared = false;
    for _ in 0..20 {
        let before = socket_cmd(&d.socket(), "show stat").await;
        let http = stats_csv(&c, &base).await;
        let after = socket_cmd(&d.socket(), "show stat").await;
        if before != after {
            continue;
        }
        assert!(
            before.ends_with(",\n\n"),
            "socket answer must end with one empty line: {before:?}"
        );
        assert_eq!(
            http,
            before[..before.len() - 1],
            "HTTP CSV != show stat minus the empty line"
        );
        assert!(!http.ends_with("\n\n"));
        compared = true;
        break;
    }
    assert!(compared, "show stat never stable across two reads");

    let csv = stats_csv(&c, &base).await;
    let header = csv.lines().next().unwrap();
    assert_eq!(header, format!("# {DOC_COLUMNS},"));

    // Python's DictReader, as Ansible reads it.
    let parsed = python_dictreader(&csv);
    let fieldnames: Vec<&str> = parsed["fieldnames"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    let named: Vec<&str> = fieldnames.iter().copied().filter(|f| !f.is_empty()).collect();
    assert_eq!(named.len(), 88, "{fieldnames:?}");
    assert_eq!(named, DOC_COLUMNS.split(',').collect::<Vec<_>>());
    assert!(!named.contains(&"-"));
    // The only unnamed column is the one after the trailing ',' (as in HAProxy).
    assert_eq!(fieldnames.len(), 89, "{fieldnames:?}");
    assert_eq!(fieldnames[88], "");

    let rows = parsed["rows"].as_array().unwrap();
    // 1 FRONTEND + 3 servers + 1 BACKEND.
    assert_eq!(rows.len(), 5, "{rows:?}");
    for r in rows {
        let r = r.as_object().unwrap();
        assert!(!r.contains_key("null"), "row has more fields than the header: {r:?}");
        for name in &named {
            assert!(r[*name].is_string(), "row is missing {name}: {r:?}");
        }
        for name in ["scur", "qcur"] {
            let v = r[name].as_str().unwrap();
            assert!(
                !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()),
                "{name} = {v:?} in {r:?}"
            );
        }
    }
    let find = |px: &str, sv: &str| {
        rows.iter()
            .find(|r| r["pxname"] == px && r["svname"] == sv)
            .unwrap_or_else(|| panic!("no row {px}/{sv}"))
    };
    assert_eq!(find("web", "FRONTEND")["status"], "OPEN");
    assert_eq!(find("web", "FRONTEND")["type"], "0");
    assert_eq!(find("shop", "BACKEND")["status"], "UP");
    assert_eq!(find("shop", "BACKEND")["type"], "1");
    let blue1 = find("shop", "blue-1");
    assert_eq!(blue1["type"], "2");
    assert_eq!(blue1["scur"], "0", "Ansible waits for scur == \"0\"");
    assert_eq!(blue1["weight"], "2");
    assert_eq!(blue1["addr"], s[0].addr.to_string());
    let stot: u64 = blue1["stot"].as_str().unwrap().parse().unwrap();
    let stot2: u64 = find("shop", "blue-2")["stot"].as_str().unwrap().parse().unwrap();
    assert_eq!(stot + stot2, 9, "stot counts the 9 requests");

    // haproxyctl: positional reads.
    for line in csv.lines().skip(1) {
        assert!(line.ends_with(','), "{line}");
        assert_eq!(line.split(',').count(), 89, "{line}");
    }
    let f = row(&csv, "shop", "blue-1");
    // No `health` on this backend: HAProxy's "no check" (the BACKEND row is UP).
    assert_eq!((f[0], f[1], f[17], f[18]), ("shop", "blue-1", "no check", "2"));
    let f = row(&csv, "shop", "blue-2");
    assert_eq!((f[17], f[18]), ("no check", "1"));
    let f = row(&csv, "shop", "green-1");
    assert_eq!((f[17], f[18]), ("no check", "1"));
    assert_eq!(row(&csv, "web", "FRONTEND")[17], "OPEN");

    // Drain, then maintenance, show up in column 17 (and DictReader's `status`).
    let a = post_command(&c, &base, "set server shop/blue-1 state drain", &[]).await;
    assert_eq!((a.status, body(&a)), (200, ""));
    let csv = stats_csv(&c, &base).await;
    let f = row(&csv, "shop", "blue-1");
    assert_eq!((f[0], f[1], f[17], f[18]), ("shop", "blue-1", "DRAIN", "2"));
    assert_eq!(row(&csv, "shop", "blue-2")[17], "no check");
    let parsed = python_dictreader(&csv);
    let drained = parsed["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["pxname"] == "shop" && r["svname"] == "blue-1")
        .unwrap();
    assert!(drained["status"].as_str().unwrap().contains("DRAIN"), "{drained:?}");
    assert_eq!(drained["scur"], "0");

    let out = socket_cmd(&d.socket(), "disable server shop/blue-1").await;
    assert_eq!(out, "\n");
    let csv = stats_csv(&c, &base).await;
    assert_eq!(row(&csv, "shop", "blue-1")[17], "MAINT");
    let out = socket_cmd(&d.socket(), "enable server shop/blue-1").await;
    assert_eq!(out, "\n");
    let csv = stats_csv(&c, &base).await;
    assert_eq!(row(&csv, "shop", "blue-1")[17], "no check");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_command_text_json_and_errors() {
    let s = backends().await;
    let p = Proxy::start(&config(&s, r#"http = "127.0.0.1:0""#)).await;
    let base = admin_url(&p);
    let c = client();

    // Text.
    let a = post_command(&c, &base, "get weight shop/blue-1", &[]).await;
    assert_eq!((a.status, body(&a)), (200, "2 (initial 2)\n"));
    // JSON.
    let a = post_command(&c, &base, "get weight shop/blue-1", &[("accept", "application/json")]).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.header("content-type"), Some("application/json"));
    let v: serde_json::Value = serde_json::from_slice(&a.body).unwrap();
    assert_eq!(v, serde_json::json!({"ok": true, "output": "2 (initial 2)\n"}));

    // Error answers: 400 with HAProxy's exact text.
    let a = post_command(&c, &base, "get weight shop/nope", &[]).await;
    assert_eq!((a.status, body(&a)), (400, "No such server.\n"));
    let a = post_command(&c, &base, "get weight nope/blue-1", &[]).await;
    assert_eq!((a.status, body(&a)), (400, "No such backend.\n"));
    let a = post_command(&c, &base, "get weight shop/nope", &[("accept", "application/json")]).await;
    assert_eq!(a.status, 400);
    let v: serde_json::Value = serde_json::from_slice(&a.body).unwrap();
    assert_eq!(v, serde_json::json!({"ok": false, "output": "No such server.\n"}));
    let a = post_command(&c, &base, "frobnicate", &[]).await;
    assert_eq!(a.status, 400);
    assert!(body(&a).starts_with("Unknown command"), "{}", body(&a));

    // A mutation: prints nothing, and it is applied.
    let a = post_command(&c, &base, "set split shop blue=0 green=100", &[]).await;
    assert_eq!((a.status, body(&a)), (200, ""));
    let snap = p.veer.snapshot();
    let weights: Vec<(String, u32)> = snap
        .backend("shop")
        .unwrap()
        .groups
        .iter()
        .map(|g| (g.name.to_string(), g.weight))
        .collect();
    assert_eq!(weights, [("blue".to_string(), 0), ("green".to_string(), 100)]);
    let counts = tally(&c, &format!("{}/", p.url("web").await), 20).await;
    assert_eq!(counts.get("green-1"), Some(&20), "{counts:?}");

    let a = post_command(&c, &base, "show split shop json", &[]).await;
    assert_eq!(a.status, 200);
    let v: serde_json::Value = serde_json::from_str(body(&a)).unwrap();
    assert_eq!(v["groups"][0]["weight"], 0);
    assert_eq!(v["groups"][1]["weight"], 100);
    assert_eq!(a.header("content-type"), Some("application/json"));
    // Asked for as JSON, the answer is JSON inside, not a string holding JSON.
    let a = post_command(&c, &base, "show split shop json", &[("accept", "application/json")]).await;
    let v: serde_json::Value = serde_json::from_str(body(&a)).unwrap();
    assert_eq!(v["ok"], true);
    assert_eq!(v["output"]["groups"][1]["weight"], 100, "{v}");
    let a = post_command(&c, &base, "show backend", &[("accept", "application/json")]).await;
    let v: serde_json::Value = serde_json::from_str(body(&a)).unwrap();
    assert_eq!(v["output"], "# name\nshop\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_guards_post_command() {
    let s = backends().await;
    let d = AdminDir::new();
    std::fs::write(d.file("token"), "s3cret-token\n").unwrap();
    let admin = format!("http = \"127.0.0.1:0\"\ntoken_file = {}", toml_path(&d.file("token")));
    let p = Proxy::start(&config(&s, &admin)).await;
    let base = admin_url(&p);
    let c = client();
    let split = |p: &Proxy| -> Vec<u32> {
        p.veer
            .snapshot()
            .backend("shop")
            .unwrap()
            .groups
            .iter()
            .map(|g| g.weight)
            .collect()
    };
    assert_eq!(split(&p), [100, 0]);

    let refused: [&[(&str, &str)]; 5] = [
        &[],
        &[("authorization", "Bearer wrong")],
        &[("authorization", "Bearer s3cret-toke")],
        &[("authorization", "Basic s3cret-token")],
        &[("authorization", "s3cret-token")],
    ];
    for headers in refused {
        let a = post_command(&c, &base, "set split shop blue=0 green=100", headers).await;
        assert_eq!(a.status, 401, "{headers:?}: {a:?}");
        assert_eq!(a.header("www-authenticate"), Some("Bearer"));
        assert_eq!(split(&p), [100, 0], "{headers:?} changed the split");
        assert!(p.veer.overlay().await.splits.is_empty());
    }
    // Reads are guarded too, and the read-only endpoints are not.
    let a = post_command(&c, &base, "get weight shop/blue-1", &[]).await;
    assert_eq!(a.status, 401);
    assert_eq!(get(&c, &format!("{base}/live"), &[]).await.unwrap().status, 200);
    assert_eq!(
        get(&c, &format!("{base}/haproxy?stats;csv"), &[]).await.unwrap().status,
        200
    );
    let counts = tally(&c, &format!("{}/", p.url("web").await), 10).await;
    assert!(!counts.contains_key("green-1"), "{counts:?}");

    // The right token (the file's trailing newline is not part of it).
    let auth = [("authorization", "Bearer s3cret-token")];
    let a = post_command(&c, &base, "set split shop blue=0 green=100", &auth).await;
    assert_eq!((a.status, body(&a)), (200, ""));
    assert_eq!(split(&p), [0, 100]);
    let a = post_command(&c, &base, "get weight shop/blue-1", &auth).await;
    assert_eq!((a.status, body(&a)), (200, "2 (initial 2)\n"));
    let counts = tally(&c, &format!("{}/", p.url("web").await), 10).await;
    assert_eq!(counts.get("green-1"), Some(&10), "{counts:?}");
}

#[test]
fn non_loopback_admin_http_needs_a_token() {
    let file = Path::new("/etc/veer/veer.toml");
    let backend = "\n[[backend]]\nname = \"shop\"\nservers = [ { name = \"a\", addr = \"127.0.0.1:9\" } ]\n\
                   [[listener]]\nname = \"t\"\nbind = \"127.0.0.1:0\"\nprotocol = \"tcp\"\nbackend = \"shop\"\n";
    for addr in ["0.0.0.0:9999", "[::]:9999", "192.0.2.10:9999"] {
        let src = format!("# admin\n[admin]\nhttp = \"{addr}\"\n{backend}");
        let errors = match veer::config::parse(file, &src) {
            Ok(_) => panic!("{addr} without token_file was accepted"),
            Err(e) => e,
        };
        let message = errors.to_string();
        assert!(message.contains("loopback"), "{message}");
        assert_eq!(errors.0.len(), 1, "{message}");
        // Points at the value: line 3, column 8 (`http = ` is 7 characters).
        let value_at = src.find(&format!("\"{addr}\"")).unwrap();
        let line = src[..value_at].matches('\n').count() + 1;
        let col = value_at - src[..value_at].rfind('\n').unwrap();
        assert_eq!((line, col), (3, 8));
        assert_eq!((errors.0[0].line, errors.0[0].col), (line, col), "{message}");
        assert!(
            message.starts_with(&format!("/etc/veer/veer.toml:{line}:{col}: ")),
            "{message}"
        );
    }
    // Loopback without a token, and anything with a token, are fine.
    for admin in [
        "http = \"127.0.0.1:9999\"",
        "http = \"[::1]:9999\"",
        "http = \"0.0.0.0:9999\"\ntoken_file = \"/etc/veer/token\"",
    ] {
        let src = format!("[admin]\n{admin}\n{backend}");
        if let Err(e) = veer::config::parse(file, &src) {
            panic!("{admin:?} rejected: {e}");
        }
    }
}

async fn socket_mode_of(admin_extra: &str) -> u32 {
    let s = backends().await;
    let d = AdminDir::new();
    let admin = format!("socket = {}\n{admin_extra}", toml_path(&d.socket()));
    let p = Proxy::start(&config(&s, &admin)).await;
    let meta = std::fs::metadata(d.socket()).unwrap();
    assert!(meta.file_type().is_socket());
    // And it is the live socket.
    assert_eq!(
        socket_cmd(&d.socket(), "get weight shop/blue-1").await,
        "2 (initial 2)\n\n"
    );
    drop(p);
    meta.permissions().mode() & 0o777
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_file_mode_defaults_to_0600() {
    assert_eq!(socket_mode_of("").await, 0o600);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_file_mode_follows_socket_mode() {
    assert_eq!(socket_mode_of("socket_mode = \"0660\"").await, 0o660);
}
