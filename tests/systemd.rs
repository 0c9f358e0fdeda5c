//! systemd's notify protocol (issue 25), read off a real datagram socket as systemd would
//! (`NOTIFY_SOCKET`): `READY=1` with `MAINPID` at start; on every reload `RELOADING=1` with
//! `MONOTONIC_USEC`, then `READY=1` with a `STATUS` saying what happened — also when the
//! reload is refused; `STOPPING=1` on SIGTERM. The unit file reloads through `veer ctl
//! reload`, so `systemctl reload` fails when the reload does.

mod support;

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

use support::*;

fn next(sock: &UnixDatagram) -> String {
    let mut buf = [0u8; 4096];
    let n = sock.recv(&mut buf).expect("a notification within 30 s");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[test]
fn ready_reloading_ready_and_stopping_reach_systemd() {
    let dir = tempfile::tempdir().unwrap();
    let notify = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&notify).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let config = dir.path().join("veer.toml");
    let text = |weight: u32| {
        format!(
            "[admin]\nsocket = \"{}\"\n\n[[listener]]\nname = \"web\"\nbind = \"127.0.0.1:0\"\nprotocol = \"http\"\n  \
             [[listener.route]]\n  backend = \"app\"\n\n[[backend]]\nname = \"app\"\nservers = [ {{ name = \"a\", addr = \"127.0.0.1:9\", weight = {weight} }} ]\n",
            dir.path().join("admin.sock").display()
        )
    };
    std::fs::write(&config, text(1)).unwrap();
    let mut veer = VeerProcess::start_env(&config, &[], &["web"], &[("NOTIFY_SOCKET", notify.as_os_str())]);
    let ready = next(&sock);
    assert!(
        ready.contains("READY=1") && ready.contains(&format!("MAINPID={}", veer.pid())),
        "{ready}"
    );

    // A reload: RELOADING=1 with the monotonic clock, then READY=1 and the new generation.
    std::fs::write(&config, text(2)).unwrap();
    veer.signal("HUP");
    // (The file watcher may reload too: each reload is a RELOADING=1 … READY=1 pair.)
    let mut seen = Vec::new();
    while !seen.iter().any(|m: &String| m.contains("STATUS=config generation 2")) {
        assert!(seen.len() < 10, "{seen:?}");
        seen.push(next(&sock));
    }
    let reloading = seen
        .iter()
        .find(|m| m.contains("RELOADING=1"))
        .unwrap_or_else(|| panic!("{seen:?}"));
    let usec: u64 = reloading
        .lines()
        .find_map(|l| l.strip_prefix("MONOTONIC_USEC="))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{reloading}"));
    assert!(usec > 0);
    assert!(seen.last().unwrap().contains("READY=1"), "{seen:?}");

    // A refused reload still ends the reload, and says it failed.
    std::fs::write(&config, "[[listener]]\nname = 3\n").unwrap();
    veer.signal("HUP");
    let mut seen = Vec::new();
    while !seen
        .iter()
        .any(|m: &String| m.contains("STATUS=reload failed, previous config serving:"))
    {
        assert!(seen.len() < 10, "{seen:?}");
        seen.push(next(&sock));
    }
    assert!(seen.last().unwrap().contains("READY=1"), "{seen:?}");

    veer.signal("TERM");
    let mut stop = String::new();
    while !stop.contains("STOPPING=1") {
        stop = next(&sock);
    }
    assert_eq!(veer.wait_exit(Duration::from_secs(30)), Some(0));
}

#[test]
fn sigusr2_upgrades_to_a_child_that_becomes_the_main_process() {
    let dir = tempfile::tempdir().unwrap();
    let notify = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&notify).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let backend = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let config = dir.path().join("veer.toml");
    std::fs::write(
        &config,
        format!(
            "[admin]\nsocket = \"{}\"\n\n[[listener]]\nname = \"tcp\"\nbind = \"127.0.0.1:0\"\nprotocol = \"tcp\"\nbackend = \"app\"\n\n\
             [[backend]]\nname = \"app\"\nservers = [ {{ name = \"a\", addr = \"{}\" }} ]\n",
            dir.path().join("admin.sock").display(),
            backend.local_addr().unwrap()
        ),
    )
    .unwrap();
    let mut old = VeerProcess::start_env(&config, &[], &["tcp"], &[("NOTIFY_SOCKET", notify.as_os_str())]);
    let addr = old.listeners["tcp"];
    assert!(next(&sock).contains(&format!("MAINPID={}", old.pid())));
    old.signal("USR2");
    // The child announces itself; the old process drains and exits 0.
    let mut new_pid = None;
    for _ in 0..10 {
        let m = next(&sock);
        if let Some(pid) = m.lines().find_map(|l| l.strip_prefix("MAINPID=")) {
            if pid != old.pid().to_string() {
                new_pid = pid.parse::<i32>().ok();
                break;
            }
        }
    }
    let new_pid = new_pid.expect("the new process said MAINPID");
    struct Kill(i32);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = std::process::Command::new("kill").arg(self.0.to_string()).status();
        }
    }
    let _stop_new = Kill(new_pid);
    assert_eq!(old.wait_exit(Duration::from_secs(30)), Some(0));
    // The listening socket moved: the same address still accepts and proxies.
    let mut client = std::net::TcpStream::connect(addr).unwrap();
    let (mut upstream, _) = backend.accept().unwrap();
    use std::io::{Read, Write};
    client.write_all(b"ping").unwrap();
    let mut buf = [0u8; 4];
    upstream.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"ping");
}
