//! `wait`: HAProxy's `wait <delay> [srv-removable <bk>/<srv>]` and veer's `srv-drained` and
//! `group-drained`, polling the live counters until the condition holds or the delay ends.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use super::answer::Answer;
use super::lookup::{active, backend_index, live_server, locate};
use crate::config::AdminState;
use crate::control::Veer;
use crate::snapshot::{Server, Snapshot};

/// `<n>` milliseconds, or a duration like `500ms`, `30s`.
pub fn parse_delay(s: &str) -> Option<Duration> {
    match s.parse::<u64>() {
        Ok(ms) => Some(Duration::from_millis(ms)),
        Err(_) => humantime::parse_duration(s).ok(),
    }
}

pub async fn wait(veer: &Veer, args: &[&str]) -> Answer {
    let Some(delay) = args.first().and_then(|d| parse_delay(d)) else {
        return Answer::err("Usage: wait <delay> [srv-removable|srv-drained <bk>/<srv> | group-drained <bk>/<group>]");
    };
    let deadline = tokio::time::Instant::now() + delay;
    let condition = args.get(1..).unwrap_or(&[]).to_vec();
    loop {
        let snap = veer.snapshot();
        let check = match condition.as_slice() {
            [] => Ok(false),
            ["srv-removable", target] => match locate(&snap.spec, Some(target)) {
                Err(e) => return Answer::err(e),
                Ok(at) if at.server.state != AdminState::Maint => {
                    return Answer::err("Failed. Only servers in maintenance mode can be deleted.")
                }
                Ok(at) => live_server(&snap, &at.id)
                    .map(|s| active(&s) == 0)
                    .map_err(|_| "Wait delay expired. Server still has connections attached to it, cannot remove it."),
            },
            ["srv-drained", target] => match locate(&snap.spec, Some(target)) {
                Err(e) => return Answer::err(e),
                Ok(at) => Ok(live_server(&snap, &at.id).map_or(true, |s| active(&s) == 0)),
            },
            ["group-drained", target] => match group_servers(&snap, target) {
                Err(e) => return Answer::err(e),
                Ok(servers) => Ok(servers.iter().all(|s| active(s) == 0)),
            },
            _ => {
                return Answer::err(
                    "Usage: wait <delay> [srv-removable|srv-drained <bk>/<srv> | group-drained <bk>/<group>]",
                )
            }
        };
        // HAProxy's forms stay silent on success (tools rely on it); veer's own say so, so
        // that a client which gave up early (empty output) is never read as success.
        let veers_own = matches!(condition.first(), Some(&("srv-drained" | "group-drained")));
        match check {
            Ok(true) if veers_own => return Answer::ok("Drained.\n"),
            Ok(true) => return Answer::done(),
            Err(e) => return Answer::err(e),
            Ok(false) => {}
        }
        if tokio::time::Instant::now() >= deadline {
            return match condition.first() {
                None => Answer::done(),
                Some(&"srv-removable") => {
                    Answer::err("Wait delay expired. Server still has connections attached to it, cannot remove it.")
                }
                Some(_) => {
                    let servers = match condition.as_slice() {
                        ["srv-drained", target] => locate(&snap.spec, Some(target))
                            .and_then(|at| live_server(&snap, &at.id))
                            .map(|s| vec![s])
                            .unwrap_or_default(),
                        [_, target] => group_servers(&snap, target).unwrap_or_default(),
                        _ => Vec::new(),
                    };
                    let requests: usize = servers.iter().map(|s| s.state.active_requests.load(Relaxed)).sum();
                    let conns: usize = servers.iter().map(|s| s.state.active_connections.load(Relaxed)).sum();
                    Answer::err(format!(
                        "Wait delay expired. Still has active connections or requests ({requests} requests, {conns} connections)."
                    ))
                }
            };
        }
        tokio::time::sleep(Duration::from_millis(10).min(deadline - tokio::time::Instant::now())).await;
    }
}

pub fn group_servers(snap: &Snapshot, target: &str) -> Result<Vec<std::sync::Arc<Server>>, String> {
    let (b, g) = target.split_once('/').ok_or("Require 'backend/group'.")?;
    let bi = backend_index(&snap.spec, b).ok_or("No such backend.")?;
    let backend = &snap.backends[bi];
    let group = backend
        .groups
        .iter()
        .find(|x| &*x.name == g)
        .ok_or(format!("No such group '{g}' in backend '{b}'."))?;
    Ok(group.servers.clone())
}
