//! `GET /events` (issue 24) read by a raw client: well-formed server-sent events (`retry:`,
//! `event:`, `data:` lines, every data a JSON object), the picture every second and at once
//! after a change, each admin event as it happens; and 100 connected clients plus one that
//! hangs up at once leave no task, subscriber or memory behind once they go, counted with a
//! counting allocator (this binary holds this one test so nothing else allocates meanwhile).

mod support;

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicIsize, Ordering::Relaxed};
use std::time::Duration;

use serde_json::Value;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Bytes allocated and not yet freed, process-wide.
static LIVE: AtomicIsize = AtomicIsize::new(0);

struct Counting;

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new: usize) -> *mut u8 {
        LIVE.fetch_add(new as isize - layout.size() as isize, Relaxed);
        unsafe { System.realloc(ptr, layout, new) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// A raw `/events` reader: HTTP/1.1 by hand, chunked framing undone, events split on the
/// blank line.
struct Events {
    stream: TcpStream,
    /// Undecoded bytes (chunk framing included).
    raw: Vec<u8>,
    /// Decoded event-stream text not yet split into events.
    text: String,
}

impl Events {
    async fn open(admin: SocketAddr) -> Events {
        let mut stream = TcpStream::connect(admin).await.unwrap();
        stream
            .write_all(b"GET /events HTTP/1.1\r\nHost: localhost\r\nAccept: text/event-stream\r\n\r\n")
            .await
            .unwrap();
        let mut e = Events {
            stream,
            raw: Vec::new(),
            text: String::new(),
        };
        let head = loop {
            if let Some(i) = e.raw.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8(e.raw[..i].to_vec()).unwrap();
                e.raw.drain(..i + 4);
                break head;
            }
            e.fill().await;
        };
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        let lower = head.to_ascii_lowercase();
        assert!(lower.contains("content-type: text/event-stream"), "{head}");
        assert!(lower.contains("transfer-encoding: chunked"), "{head}");
        assert!(lower.contains("cache-control: no-store"), "{head}");
        e
    }

    async fn fill(&mut self) {
        let mut buf = [0u8; 16 * 1024];
        let n = tokio::time::timeout(Duration::from_secs(10), self.stream.read(&mut buf))
            .await
            .expect("no event within 10 s")
            .unwrap();
        assert!(n > 0, "the stream ended");
        self.raw.extend_from_slice(&buf[..n]);
    }

    /// The next event's lines, as (field, value).
    async fn next(&mut self) -> Vec<(String, String)> {
        loop {
            if let Some(i) = self.text.find("\n\n") {
                let frame: String = self.text.drain(..i + 2).take(i).collect();
                return frame
                    .lines()
                    .map(|l| {
                        let (field, value) = l.split_once(": ").unwrap_or_else(|| panic!("not a field line: {l:?}"));
                        assert!(["retry", "event", "data"].contains(&field), "{l:?}");
                        (field.to_string(), value.to_string())
                    })
                    .collect();
            }
            // One chunk: size line, data, CRLF.
            match self.raw.windows(2).position(|w| w == b"\r\n") {
                Some(i) => {
                    let size = usize::from_str_radix(std::str::from_utf8(&self.raw[..i]).unwrap(), 16).unwrap();
                    if self.raw.len() < i + 2 + size + 2 {
                        self.fill().await;
                        continue;
                    }
                    assert!(size > 0, "the stream ended");
                    let data = self.raw[i + 2..i + 2 + size].to_vec();
                    assert_eq!(&self.raw[i + 2 + size..i + 4 + size], b"\r\n");
                    self.raw.drain(..i + 4 + size);
                    self.text.push_str(std::str::from_utf8(&data).unwrap());
                }
                None => self.fill().await,
            }
        }
    }

    /// The next event as (kind, JSON data); every event has exactly one of each.
    async fn event(&mut self) -> (String, Value) {
        let lines = self.next().await;
        let field = |name: &str| {
            let all: Vec<&String> = lines.iter().filter(|(f, _)| f == name).map(|(_, v)| v).collect();
            assert_eq!(all.len(), 1, "{name} in {lines:?}");
            all[0].clone()
        };
        let data: Value = serde_json::from_str(&field("data")).unwrap_or_else(|e| panic!("{e}: {lines:?}"));
        assert!(data.is_object(), "{data}");
        (field("event"), data)
    }

    /// Events until one of `kind`.
    async fn until(&mut self, kind: &str) -> Value {
        loop {
            let (k, data) = self.event().await;
            if k == kind {
                return data;
            }
        }
    }
}

fn server_state(picture: &Value, id: &str) -> String {
    picture["backends"][0]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["servers"].as_array().unwrap())
        .find(|s| s["id"] == id)
        .map(|s| s["state"].as_str().unwrap().to_string())
        .unwrap_or_else(|| panic!("{id} not in {picture}"))
}

async fn settle<T: PartialEq + std::fmt::Debug>(what: &str, want: T, now: impl Fn() -> T) {
    for _ in 0..200 {
        if now() == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what}: {:?}, not {want:?}", now());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_are_well_formed_sse_and_clients_leave_nothing_behind() {
    let (blue, green) = (FakeBackend::start("b1").await, FakeBackend::start("g1").await);
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("admin.sock");
    let mut config = http_config(&[("b1", blue.addr), ("g1", green.addr)], "");
    config.insert_str(
        0,
        &format!("[admin]\nsocket = \"{}\"\nhttp = \"127.0.0.1:0\"\n", sock.display()),
    );
    let p = Proxy::start_in(dir, &config).await;
    let admin_addr = p.veer.admin_http_addr().unwrap();

    // Well-formed: `retry:` first, then `subscribed`, then pictures and events.
    let mut e = Events::open(admin_addr).await;
    let first = e.next().await;
    assert_eq!(first[0], ("retry".to_string(), "1000".to_string()), "{first:?}");
    assert_eq!(first[1].1, "subscribed", "{first:?}");
    let picture = e.until("snapshot").await;
    assert_eq!(server_state(&picture, "app/b1"), "ready");
    assert!(
        picture["version"].is_string() && picture["listeners"][0]["name"] == "web",
        "{picture}"
    );
    assert_eq!(admin(&sock, "set server app/b1 state drain").await.trim(), "");
    let event = e.until("server").await;
    assert_eq!(
        (&event["event"], &event["server"], &event["state"]),
        (&Value::from("server"), &Value::from("app/b1"), &Value::from("drain")),
        "{event}"
    );
    // A picture after the event has it (rebuilt at once; the second one only if a tick's
    // picture, built a moment before the change, was still on its way).
    let mut states = Vec::new();
    for _ in 0..2 {
        states.push(server_state(&e.until("snapshot").await, "app/b1"));
        if states.last().is_some_and(|s| s == "drain") {
            break;
        }
    }
    assert_eq!(states.last().map(String::as_str), Some("drain"), "{states:?}");
    // And they keep coming while nothing changes.
    e.until("snapshot").await;
    drop(e);

    // 100 clients and one that hangs up at once; a round first, so what grows once (the
    // runtime's task slab, buffers kept for reuse) has grown before the count starts.
    let veer = &p.veer;
    let tasks = || tokio::runtime::Handle::current().metrics().num_alive_tasks();
    let mut base = None;
    for round in 0..2 {
        settle("subscribers before", 0, || veer.subscribers()).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let (tasks0, live0) = (tasks(), LIVE.load(Relaxed));
        let mut clients = Vec::new();
        for _ in 0..100 {
            let mut c = Events::open(admin_addr).await;
            c.until("snapshot").await;
            clients.push(c);
        }
        let mut gone = TcpStream::connect(admin_addr).await.unwrap();
        gone.write_all(b"GET /events HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .await
            .unwrap();
        drop(gone);
        assert!(veer.subscribers() >= 100, "{}", veer.subscribers());
        assert!(
            tasks() >= tasks0 + 100,
            "{} tasks with 100 clients, {tasks0} before",
            tasks()
        );
        drop(clients);
        settle("subscribers after", 0, || veer.subscribers()).await;
        settle("tasks after", tasks0, tasks).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let grown = LIVE.load(Relaxed) - live0;
        eprintln!("round {round}: {grown} bytes more live than before 100 clients came and went");
        if round == 1 {
            base = Some(grown);
        }
    }
    // A client that left anything behind (a receiver, a buffered picture, a task) would
    // leave 100 of them: ≥ 100 × 1 KiB.
    let grown = base.unwrap();
    assert!(grown < 32 * 1024, "{grown} bytes still live after 100 clients left");
}
