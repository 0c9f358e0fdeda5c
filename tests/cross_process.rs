//! Two veer processes started from the same config agree: a sticky cookie set by one routes
//! to the same server through the other, a hash key maps to the same server in both, and a
//! restart changes nothing. Runs the real binary.

mod support;
use support::*;

fn config(s: &[FakeBackend]) -> String {
    format!(
        r#"
[[listener]]
name = "web"
bind = "127.0.0.1:0"
protocol = "http"
  [[listener.route]]
  path_prefix = "/hash"
  backend = "hashed"
  [[listener.route]]
  backend = "shop"

[[backend]]
name = "shop"
sticky = {{ cookie = "VEER_SRV" }}
groups = [
  {{ name = "blue", weight = 50, servers = [ {{ name = "blue-1", addr = "{}" }}, {{ name = "blue-2", addr = "{}" }} ] }},
  {{ name = "green", weight = 50, servers = [ {{ name = "green-1", addr = "{}" }} ] }},
]

[[backend]]
name = "hashed"
balance = "hash"
hash_key = "header:x-user"
servers = [ {{ name = "blue-1", addr = "{}" }}, {{ name = "blue-2", addr = "{}" }}, {{ name = "green-1", addr = "{}" }} ]
"#,
        s[0].addr, s[1].addr, s[2].addr, s[0].addr, s[1].addr, s[2].addr
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_agree_on_cookies_and_hashes_across_restarts() {
    let mut s = Vec::new();
    for n in ["blue-1", "blue-2", "green-1"] {
        s.push(FakeBackend::start(n).await);
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("veer.toml");
    std::fs::write(&path, config(&s)).unwrap();
    let a = VeerProcess::start(&path, &[], &["web"]);
    let mut b = VeerProcess::start(&path, &[], &["web"]);
    let c = client();

    let mut cookies = Vec::new();
    for _ in 0..30 {
        let first = get(&c, &format!("http://{}/", a.listeners["web"]), &[]).await.unwrap();
        let cookie = first
            .header("set-cookie")
            .unwrap()
            .split(';')
            .next()
            .unwrap()
            .to_string();
        let through_b = get(&c, &format!("http://{}/", b.listeners["web"]), &[("cookie", &cookie)])
            .await
            .unwrap();
        assert_eq!(through_b.server(), first.server(), "{cookie}");
        assert!(through_b.header("set-cookie").is_none());
        cookies.push((cookie, first.server().to_string()));
    }
    let mut hashed = Vec::new();
    for user in 0..30 {
        let user = format!("u{user}");
        let via_a = get(&c, &format!("http://{}/hash", a.listeners["web"]), &[("x-user", &user)])
            .await
            .unwrap();
        let via_b = get(&c, &format!("http://{}/hash", b.listeners["web"]), &[("x-user", &user)])
            .await
            .unwrap();
        assert_eq!(via_a.server(), via_b.server(), "{user}");
        hashed.push((user, via_a.server().to_string()));
    }

    // Restart b: same answers.
    drop(std::mem::replace(&mut b, VeerProcess::start(&path, &[], &["web"])));
    for (cookie, server) in &cookies {
        let a = get(&c, &format!("http://{}/", b.listeners["web"]), &[("cookie", cookie)])
            .await
            .unwrap();
        assert_eq!(a.server(), server);
    }
    for (user, server) in &hashed {
        let a = get(&c, &format!("http://{}/hash", b.listeners["web"]), &[("x-user", user)])
            .await
            .unwrap();
        assert_eq!(a.server(), server);
    }
}
