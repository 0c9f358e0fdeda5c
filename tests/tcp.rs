//! The L4 path: bytes echo both ways, half-close keeps the other direction flowing, a dead
//! server is skipped (the client never notices), and active connections are counted.

mod support;
use std::sync::atomic::Ordering;

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Echoes everything; after the client's EOF writes "bye" and closes.
async fn echo_server() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                loop {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => s.write_all(&buf[..n]).await.unwrap(),
                    }
                }
                let _ = s.write_all(b"bye").await;
            });
        }
    });
    addr
}

fn tcp_config(servers: &str) -> String {
    format!(
        r#"
[[listener]]
name = "db"
bind = "127.0.0.1:0"
protocol = "tcp"
backend = "pg"
[[backend]]
name = "pg"
servers = [ {servers} ]
"#
    )
}

#[tokio::test]
async fn echoes_both_ways_and_half_close_works() {
    let echo = echo_server().await;
    let proxy = Proxy::start(&tcp_config(&format!(r#"{{ name = "pg-1", addr = "{echo}" }}"#))).await;
    let mut c = TcpStream::connect(proxy.addr("db").await).await.unwrap();
    c.write_all(b"hello").await.unwrap();
    let mut buf = [0u8; 5];
    c.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"hello");

    let snap = proxy.veer.snapshot();
    let state = snap.backend("pg").unwrap().groups[0].servers[0].state.clone();
    assert_eq!(state.active_connections.load(Ordering::Relaxed), 1);

    // Half-close: our write side ends, the server still answers on the other direction.
    c.write_all(b"last").await.unwrap();
    c.shutdown().await.unwrap();
    let mut rest = Vec::new();
    c.read_to_end(&mut rest).await.unwrap();
    assert_eq!(rest, b"lastbye");
    drop(c);
    // The session ends once both directions are done.
    for _ in 0..500 {
        if state.active_connections.load(Ordering::Relaxed) == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    assert_eq!(state.active_connections.load(Ordering::Relaxed), 0);
}

#[tokio::test]
async fn a_dead_server_is_skipped() {
    let echo = echo_server().await;
    let dead = dead_addr().await;
    let proxy = Proxy::start(&tcp_config(&format!(
        r#"{{ name = "dead", addr = "{dead}" }}, {{ name = "alive", addr = "{echo}" }}"#
    )))
    .await;
    let addr = proxy.addr("db").await;
    for i in 0..10 {
        let mut c = TcpStream::connect(addr).await.unwrap();
        let msg = format!("msg {i}");
        c.write_all(msg.as_bytes()).await.unwrap();
        let mut buf = vec![0u8; msg.len()];
        c.read_exact(&mut buf).await.unwrap();
        assert_eq!(buf, msg.as_bytes());
    }
    let snap = proxy.veer.snapshot();
    let dead_state = &snap.backend("pg").unwrap().groups[0].servers[0].state;
    assert_eq!(
        dead_state.connect_failures.load(Ordering::Relaxed),
        1,
        "ejected after the first failure"
    );
}
