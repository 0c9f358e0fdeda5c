//! `veer demo` with its addresses and paths given (issue 25): free ports for everything, the
//! socket and the editable config in a temp dir, and a busy 127.0.0.1:9001 (the port
//! config/demo.toml names for blue) does not stop it. The demo process is stopped by PID.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use support::*;

#[tokio::test]
async fn the_demo_runs_where_it_is_told_even_with_9001_busy() {
    let _busy = std::net::TcpListener::bind("127.0.0.1:9001");
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("admin.sock");
    let mut child = Command::new(env!("CARGO_BIN_EXE_veer"))
        .args([
            "demo",
            "--listen",
            "127.0.0.1:0",
            "--admin-http",
            "127.0.0.1:0",
            "--socket",
        ])
        .arg(&sock)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    struct Stop(std::process::Child);
    impl Drop for Stop {
        fn drop(&mut self) {
            let _ = Command::new("kill").arg(self.0.id().to_string()).status();
            let _ = self.0.wait();
        }
    }
    let stdout = child.stdout.take().unwrap();
    let _stop = Stop(child);
    // The printed addresses: the status page, and the curl loop's.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let (mut page, mut web) = (None, None);
    while page.is_none() || web.is_none() {
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the demo prints its addresses");
        if let Some(url) = line.split("in a browser (the split, every server, live): ").nth(1) {
            page = Some(url.trim().to_string());
        }
        if let Some(rest) = line.trim().strip_prefix("for i in $(seq 10); do curl -s ") {
            web = rest
                .split_whitespace()
                .next()
                .map(|u| u.trim_end_matches(';').to_string());
        }
    }
    let (page, web) = (page.unwrap(), web.unwrap());
    assert!(!web.contains(":8080") && !page.contains(":9901"), "{web} {page}");
    let client = client();
    let a = get(&client, &web, &[]).await.unwrap();
    assert_eq!(a.status, 200);
    let text = String::from_utf8_lossy(&a.body).into_owned();
    assert!(
        text.contains("hello from the blue version") || text.contains("hello from the green version"),
        "{text}"
    );
    let p = get(&client, &page, &[]).await.unwrap();
    assert_eq!(p.status, 200);
    // The socket and the editable config are where it was told.
    assert!(admin(&sock, "show split app").await.contains("blue"));
    assert!(dir.path().join("demo.toml").exists());
}
