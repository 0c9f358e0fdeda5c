//! Sticky sessions that survive blue/green (design §3): a cookie names the server by a
//! stable hash; it wins over split weights while its server is ready (or draining, until
//! the drain deadline); maintenance or an unknown server re-picks and re-sets it; forged
//! cookies are ignored; veer's cookie never reaches the upstream.

mod support;
use std::collections::{BTreeMap, HashMap};

use support::*;

fn config(blue_weight: u32, green_weight: u32, blue1_state: &str, servers: &[&FakeBackend]) -> String {
    format!(
        r#"
[[listener]]
name = "web"
bind = "127.0.0.1:0"
protocol = "http"
  [[listener.route]]
  backend = "shop"

[[backend]]
name = "shop"
sticky = {{ cookie = "VEER_SRV", max_age = "1h", http_only = true, secure = false, same_site = "Lax" }}
groups = [
  {{ name = "blue", weight = {blue_weight}, servers = [
      {{ name = "blue-1", addr = "{}", state = "{blue1_state}" }},
      {{ name = "blue-2", addr = "{}" }} ] }},
  {{ name = "green", weight = {green_weight}, servers = [
      {{ name = "green-1", addr = "{}" }},
      {{ name = "green-2", addr = "{}" }} ] }},
]
"#,
        servers[0].addr, servers[1].addr, servers[2].addr, servers[3].addr
    )
}

async fn servers() -> Vec<FakeBackend> {
    let mut v = Vec::new();
    for n in ["blue-1", "blue-2", "green-1", "green-2"] {
        v.push(FakeBackend::start(n).await);
    }
    v
}

/// The `VEER_SRV=<value>` pair from a Set-Cookie header, if any.
fn set_cookie(a: &Answer) -> Option<String> {
    let v = a.header("set-cookie")?;
    Some(v.split(';').next()?.trim().to_string())
}

/// One client: sends its cookie (if any) and adopts whatever veer sets.
struct Browser {
    cookie: Option<String>,
}

impl Browser {
    async fn get(&mut self, c: &HttpClient, url: &str) -> Answer {
        let headers: Vec<(&str, &str)> = self.cookie.iter().map(|v| ("cookie", v.as_str())).collect();
        let a = get(c, url, &headers).await.unwrap();
        assert_eq!(a.status, 200, "{a:?}");
        if let Some(new) = set_cookie(&a) {
            self.cookie = Some(new);
        }
        a
    }
}

#[tokio::test]
async fn set_cookie_attributes_and_value() {
    let s = servers().await;
    let proxy = Proxy::start(&config(100, 0, "ready", &s.iter().collect::<Vec<_>>())).await;
    let a = get(&client(), &proxy.url("web").await, &[]).await.unwrap();
    let header = a.header("set-cookie").unwrap();
    // The value is XXH3-64 of "shop/<server>", in hex: the same in every process.
    let expected = format!("{:016x}", xxhash_reference(&format!("shop/{}", a.server())));
    assert!(header.starts_with(&format!("VEER_SRV={expected}")), "{header}");
    for attr in ["HttpOnly", "SameSite=Lax", "Path=/", "Max-Age=3600"] {
        assert!(header.contains(attr), "{attr} missing: {header}");
    }
    assert!(!header.contains("Secure"), "{header}");
}

fn xxhash_reference(s: &str) -> u64 {
    veer::balance::hash::node_id(s)
}

#[tokio::test]
async fn sticky_clients_keep_their_server_and_new_clients_split_50_50() {
    let s = servers().await;
    let proxy = Proxy::start(&config(50, 50, "ready", &s.iter().collect::<Vec<_>>())).await;
    let url = proxy.url("web").await;
    let c = client();
    let mut first_pick: BTreeMap<String, usize> = BTreeMap::new();
    for _ in 0..200 {
        let mut b = Browser { cookie: None };
        let first = b.get(&c, &url).await.server().to_string();
        assert!(b.cookie.is_some(), "new client got no cookie");
        for _ in 1..20 {
            let a = b.get(&c, &url).await;
            assert_eq!(a.server(), first, "sticky client moved");
            assert!(a.header("set-cookie").is_none(), "returning client re-cookied");
            // veer's cookie is not forwarded upstream.
            assert!(a.header("x-echo-cookie").is_none(), "{a:?}");
        }
        *first_pick
            .entry(first[..first.find('-').unwrap()].to_string())
            .or_default() += 1;
    }
    let blue = first_pick.get("blue").copied().unwrap_or(0) as f64 / 2.0;
    assert!(
        (43.0..=57.0).contains(&blue),
        "blue share of new clients {blue} % ({first_pick:?})"
    );
}

#[tokio::test]
async fn blue_green_flip_keeps_sticky_clients_then_maintenance_moves_them() {
    let s = servers().await;
    let refs: Vec<&FakeBackend> = s.iter().collect();
    let proxy = Proxy::start(&config(100, 0, "ready", &refs)).await;
    let url = proxy.url("web").await;
    let c = client();
    let mut browsers: Vec<(Browser, String)> = Vec::new();
    for _ in 0..20 {
        let mut b = Browser { cookie: None };
        let server = b.get(&c, &url).await.server().to_string();
        assert!(server.starts_with("blue"));
        browsers.push((b, server));
    }

    // Flip: green takes every new client; blue clients stay on blue.
    std::fs::write(&proxy.path, config(0, 100, "ready", &refs)).unwrap();
    proxy.veer.reload().await.unwrap();
    for (b, server) in &mut browsers {
        assert_eq!(b.get(&c, &url).await.server(), server);
    }
    for _ in 0..20 {
        let mut fresh = Browser { cookie: None };
        assert!(fresh.get(&c, &url).await.server().starts_with("green"));
    }
    // A cookie for a weight-0 group's server still works with other cookies around it.
    let (b, server) = &browsers[0];
    let mixed = format!("theme=dark; {}; lang=en", b.cookie.as_deref().unwrap());
    let a = get(&c, &url, &[("cookie", &mixed)]).await.unwrap();
    assert_eq!(a.server(), server);
    assert_eq!(a.header("x-echo-cookie"), Some("theme=dark; lang=en"));

    // blue-1 into maintenance: its clients move (to green, the only weighted group) and get
    // a new cookie; blue-2's clients stay.
    std::fs::write(&proxy.path, config(0, 100, "maint", &refs)).unwrap();
    proxy.veer.reload().await.unwrap();
    let before = s[0].hits();
    for (b, server) in &mut browsers {
        let old_cookie = b.cookie.clone();
        let a = b.get(&c, &url).await;
        if server == "blue-1" {
            assert!(a.server().starts_with("green"), "{}", a.server());
            assert!(b.cookie != old_cookie, "no new cookie after maintenance");
            assert_eq!(
                b.get(&c, &url).await.server(),
                a.server(),
                "moved client is sticky again"
            );
        } else {
            assert_eq!(a.server(), server);
        }
    }
    assert_eq!(s[0].hits(), before, "a server in maintenance got traffic");
}

#[tokio::test]
async fn draining_server_keeps_sticky_clients_but_takes_no_new_ones() {
    let s = servers().await;
    let refs: Vec<&FakeBackend> = s.iter().collect();
    let proxy = Proxy::start(&config(100, 0, "ready", &refs)).await;
    let url = proxy.url("web").await;
    let c = client();
    let mut on_blue1 = None;
    while on_blue1.is_none() {
        let mut b = Browser { cookie: None };
        if b.get(&c, &url).await.server() == "blue-1" {
            on_blue1 = Some(b);
        }
    }
    std::fs::write(&proxy.path, config(100, 0, "drain", &refs)).unwrap();
    proxy.veer.reload().await.unwrap();
    let mut b = on_blue1.unwrap();
    for _ in 0..5 {
        assert_eq!(b.get(&c, &url).await.server(), "blue-1");
    }
    for _ in 0..20 {
        let mut fresh = Browser { cookie: None };
        assert_eq!(fresh.get(&c, &url).await.server(), "blue-2");
    }
}

#[tokio::test]
async fn forged_cookies_are_treated_as_absent() {
    let s = servers().await;
    let proxy = Proxy::start(&config(100, 0, "ready", &s.iter().collect::<Vec<_>>())).await;
    let addr = proxy.addr("web").await;
    let unknown_id = format!("VEER_SRV={:016x}", 0xdead_beef_u64);
    let long = format!("VEER_SRV={}", "f".repeat(8192));
    let forged: Vec<Vec<u8>> = vec![
        b"VEER_SRV=".to_vec(),
        b"VEER_SRV=zzzzzzzzzzzzzzzz".to_vec(),
        b"VEER_SRV=\tgarbage\t".to_vec(),
        b"VEER_SRV=\xff\xfe\xfd\xfc\xfb\xfa\xf9\xf8\xf7\xf6\xf5\xf4\xf3\xf2\xf1\xf0".to_vec(),
        b"VEER_SRV=-000000000000001".to_vec(),
        b"VEER_SRV".to_vec(),
        b";;;=;VEER_SRV==".to_vec(),
        unknown_id.into_bytes(),
        long.into_bytes(),
        (0..64)
            .map(|_| fastrand::u8(0x20..0x7f))
            .filter(|b| *b != b';')
            .collect(),
    ];
    let mut hits: HashMap<String, usize> = HashMap::new();
    for cookie in forged {
        // Raw bytes on the wire: clients do send non-UTF-8 cookies.
        let mut req = b"GET / HTTP/1.1\r\nhost: shop\r\nconnection: close\r\ncookie: ".to_vec();
        req.extend_from_slice(&cookie);
        req.extend_from_slice(b"\r\n\r\n");
        let answer = raw_request(addr, &req).await;
        assert!(
            answer.starts_with("HTTP/1.1 200"),
            "{:?} → {answer}",
            String::from_utf8_lossy(&cookie)
        );
        assert!(
            answer.to_ascii_lowercase().contains("set-cookie: veer_srv="),
            "no fresh cookie: {answer}"
        );
        *hits
            .entry(
                answer
                    .lines()
                    .find(|l| l.starts_with("x-server"))
                    .unwrap_or("")
                    .to_string(),
            )
            .or_default() += 1;
    }
    assert!(hits.keys().all(|k| k.contains("blue")), "{hits:?}");
    // Control bytes are not valid in a header at all: the parser refuses them (400), and
    // nothing reaches a server or fails with a 5xx.
    let answer = raw_request(
        addr,
        b"GET / HTTP/1.1\r\nhost: shop\r\ncookie: VEER_SRV=\x01\x02\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
}

async fn raw_request(addr: std::net::SocketAddr, req: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(req).await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    String::from_utf8_lossy(&out).into_owned()
}
