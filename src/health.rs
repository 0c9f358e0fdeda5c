//! Active health checks: one loop per checked address, never on a client's request. Each
//! loop checks its address every `interval` (jittered ±10 %) — a TCP connect, or an HTTP
//! `GET` whose status must be in `expect` (over TLS when the backend speaks TLS, on the
//! HTTP/2 session when it speaks HTTP/2) — and records the result in the
//! [`crate::state::CheckState`] atomics of every server at that address with that check,
//! which picks read. `rise` passes bring a DOWN server UP, `fall` failures take it DOWN
//! (HAProxy's `check inter rise fall`); a server coming UP starts its slow-start ramp.
//!
//! [`Checks::reconcile`] is run after every snapshot swap: loops start for addresses that
//! gain checks and stop for those that lose them; an address whose check and backend TLS
//! are unchanged keeps its loop, so a reload resets neither its state nor its counters.
//! Two backends (or two names) for one address with the same check share one loop.
//! Knows the snapshot and how to reach a server, not the control plane (which publishes
//! the transitions it sees in the atomics on the event stream, as for passive health).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use crate::config::{CheckKind, HealthSpec};
use crate::snapshot::{Backend, Server, Snapshot};
use crate::state::CheckResult;

/// What a running loop checks: a change of any of it is another loop.
#[derive(PartialEq, Eq, Hash, Clone)]
struct Key {
    addr: std::net::SocketAddr,
    spec: HealthSpec,
    transport: u64,
}

/// The servers a loop records its results in (with their backends): swapped by every
/// reconcile, read once per check.
type Targets = Arc<ArcSwap<Vec<Target>>>;

/// A server a loop records in, and its backend (for its TLS and slow start).
type Target = (Arc<Server>, Arc<Backend>);

/// The check loops running, by what they check.
#[derive(Default)]
pub struct Checks {
    running: HashMap<Key, (Targets, CancellationToken)>,
    /// Ids of the servers the loops record in.
    checked: HashSet<Arc<str>>,
}

impl Checks {
    /// Makes the running loops match `snap`: every address checked by a backend with
    /// `health` (servers not `disable health`d) has exactly one. `stop`: the process's
    /// shutdown token.
    pub fn reconcile(&mut self, snap: &Snapshot, stop: &CancellationToken) {
        let mut wanted: HashMap<Key, Vec<Target>> = HashMap::new();
        for (bi, b) in snap.backends.iter().enumerate() {
            let Some(spec) = snap.spec.backends.get(bi).and_then(|bs| bs.health.clone()) else {
                continue;
            };
            for s in b.servers().filter(|s| !s.checks_disabled) {
                let key = Key {
                    addr: s.addr,
                    spec: spec.clone(),
                    transport: s.pool_transport,
                };
                wanted.entry(key).or_default().push((s.clone(), b.clone()));
            }
        }
        let mut checked = HashSet::new();
        let mut running = HashMap::new();
        for (key, targets) in wanted {
            for (s, _) in &targets {
                s.state.check.running.store(true, Relaxed);
                checked.insert(s.id.clone());
            }
            match self.running.remove(&key) {
                Some((shared, token)) => {
                    shared.store(Arc::new(targets));
                    running.insert(key, (shared, token));
                }
                None => {
                    let shared: Targets = Arc::new(ArcSwap::from_pointee(targets));
                    let token = stop.child_token();
                    tokio::spawn(run(shared.clone(), key.spec.clone(), token.clone()));
                    running.insert(key, (shared, token));
                }
            }
        }
        for (_, (_, token)) in self.running.drain() {
            token.cancel();
        }
        // Servers that lost their checks count as UP.
        for s in snap
            .servers()
            .filter(|s| self.checked.contains(&s.id) && !checked.contains(&s.id))
        {
            s.state.check.running.store(false, Relaxed);
            s.state.check.force(false);
        }
        self.running = running;
        self.checked = checked;
    }
}

async fn run(targets: Targets, spec: HealthSpec, stop: CancellationToken) {
    loop {
        // ±10 %, so checks of many servers do not fall on the same instant.
        let pause = spec.interval.mul_f64(0.9 + 0.2 * fastrand::f64());
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(pause) => {}
        }
        let now = targets.load_full();
        let Some((server, backend)) = now.first() else { continue };
        let started = Instant::now();
        let (result, code) = match tokio::time::timeout(spec.timeout, check(server, backend, &spec.kind)).await {
            Ok(outcome) => outcome,
            Err(_) => (CheckResult::Timeout, 0),
        };
        if stop.is_cancelled() {
            return;
        }
        let took = started.elapsed();
        for (server, backend) in targets.load().iter() {
            let Some(up) = server.state.check.record(result, code, took, spec.rise, spec.fall) else {
                continue;
            };
            let now = crate::clock::now_ms();
            server.state.last_change.store(now, Relaxed);
            if up {
                backend.state.warm(&server.state, now, backend.slow_start_ms);
            }
            tracing::info!(server = %server.id, up, check = result.as_str(), code, "health check changed the server's state");
        }
    }
}

/// One check; the caller bounds it by the timeout.
async fn check(server: &Server, backend: &Backend, kind: &CheckKind) -> (CheckResult, u16) {
    let (path, host, expect) = match kind {
        CheckKind::Tcp => {
            return match crate::upstream::open(server.addr, backend, None).await {
                Ok(_) => (CheckResult::L4Ok, 0),
                Err(_) => (CheckResult::L4Con, 0),
            };
        }
        CheckKind::Http { path, host, expect } => (path, host, expect),
    };
    let host = host.clone().unwrap_or_else(|| server.addr.to_string());
    if backend.protocol.is_h2() {
        match h2_status(server, backend, path, &host).await {
            Ok(code) => judge(code, expect),
            Err(result) => (result, 0),
        }
    } else {
        match h1_head(server, backend, path, &host).await {
            Ok(head) => classify(&head, expect),
            Err(result) => (result, 0),
        }
    }
}

/// The verdict on the first bytes of an HTTP/1 answer (`HTTP/1.x NNN `): `L7Ok` and the
/// status when it is in `expect`, `L7Sts` when not, `L7Rsp` when the bytes are not a status
/// line (three ASCII digits, nothing looser: `+12` is not a status).
pub fn classify(head: &[u8], expect: &[(u16, u16)]) -> (CheckResult, u16) {
    match head {
        [b'H', b'T', b'T', b'P', b'/', b'1', b'.', v, b' ', d @ .., b' '] if v.is_ascii_digit() && d.len() == 3 => {
            if d.iter().all(u8::is_ascii_digit) {
                let code = d.iter().fold(0u16, |n, b| n * 10 + u16::from(b - b'0'));
                judge(code, expect)
            } else {
                (CheckResult::L7Rsp, 0)
            }
        }
        _ => (CheckResult::L7Rsp, 0),
    }
}

fn judge(code: u16, expect: &[(u16, u16)]) -> (CheckResult, u16) {
    if expect.iter().any(|(lo, hi)| (*lo..=*hi).contains(&code)) {
        (CheckResult::L7Ok, code)
    } else {
        (CheckResult::L7Sts, code)
    }
}

/// `GET path` on a connection of its own; the answer's first 13 bytes.
async fn h1_head(server: &Server, backend: &Backend, path: &str, host: &str) -> Result<[u8; 13], CheckResult> {
    let mut io = crate::upstream::open(server.addr, backend, None)
        .await
        .map_err(|_| CheckResult::L4Con)?;
    let request =
        format!("GET {path} HTTP/1.1\r\nhost: {host}\r\nuser-agent: veer-health-check\r\nconnection: close\r\n\r\n");
    io.send(request.as_bytes()).await.map_err(|_| CheckResult::L7Rsp)?;
    // The status line is all a check needs: "HTTP/1.1 200 ".
    let mut head = [0u8; 13];
    let mut got = 0;
    while got < head.len() {
        match io.read(&mut head[got..]).await {
            Ok(0) | Err(_) => return Err(CheckResult::L7Rsp),
            Ok(n) => got += n,
        }
    }
    let _ = io.shutdown().await;
    Ok(head)
}

/// `GET path` on the server's HTTP/2 session.
async fn h2_status(server: &Server, backend: &Backend, path: &str, host: &str) -> Result<u16, CheckResult> {
    let mut req = http::Request::new(crate::state::pool::no_body());
    *req.uri_mut() = path.parse().map_err(|_| CheckResult::L7Rsp)?;
    let host = http::HeaderValue::from_str(host).map_err(|_| CheckResult::L7Rsp)?;
    req.headers_mut().insert(http::header::HOST, host);
    req.headers_mut().insert(
        http::header::USER_AGENT,
        http::HeaderValue::from_static("veer-health-check"),
    );
    match crate::upstream::send_h2(server, backend, req).await {
        Ok((resp, _)) => Ok(resp.status().as_u16()),
        Err(crate::upstream::SendError::Connect(..)) => Err(CheckResult::L4Con),
        Err(crate::upstream::SendError::Protocol(_)) => Err(CheckResult::L7Rsp),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_line_is_judged_by_expect_and_anything_looser_is_not_http() {
        let two = [(200, 299)];
        assert_eq!(classify(b"HTTP/1.1 204 ", &two), (CheckResult::L7Ok, 204));
        assert_eq!(classify(b"HTTP/1.0 503 ", &two), (CheckResult::L7Sts, 503));
        for bad in [
            &b"HTTP/1.1 +12 "[..],
            b"HTTP/1.1 20 0",
            b"HTTP/2.0 200 ",
            b"HTTP/1.1 200",
            b"SSH-2.0-OpenS",
        ] {
            assert_eq!(
                classify(bad, &two),
                (CheckResult::L7Rsp, 0),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
