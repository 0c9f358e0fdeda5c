//! `veer demo` with its addresses and paths given (issue 25): free ports for everything, the
//! socket and the editable config in a temp dir, and a busy 127.0.0.1:9001 (the port
//! config/demo.toml names for blue) does not stop it. The demo process is stopped by PID.

mod support;

use support::*;

#[tokio::test]
async fn the_demo_runs_where_it_is_told_even_with_9001_busy() {
    let _busy = std::net::TcpListener::bind("127.0.0.1:9001");
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("admin.sock");
    let demo = Demo::start(&sock);
    let (web, page) = (format!("http://{}/", demo.web), format!("http://{}/", demo.admin));
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
