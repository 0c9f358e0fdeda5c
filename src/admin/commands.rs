//! The one command parser and dispatcher behind every admin transport (unix socket, HTTP
//! `/command`, `veer ctl`). HAProxy's verbs keep HAProxy's exact answers
//! (../shared/haproxy-runtime-api.md); veer's own verbs cover what HAProxy cannot do: an
//! atomic split, group-wide states, waiting for drained, reload, the event stream.
//!
//! Every mutation goes through [`Veer::mutate`]: validated against the running spec, written
//! to the state file, then swapped in as one snapshot. A command that fails changes nothing.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use serde_json::json;

use super::haproxy::{self, StatFilter};
use crate::clock::now_ms;
use crate::config::{AdminState, ServerSpec, Spec};
use crate::control::overlay::{AddedServer, Overlay};
use crate::control::{ReloadOutcome, Veer};
use crate::snapshot::{Server, Snapshot};

/// What a command printed, and whether it is an error (for `veer ctl`'s exit code and JSON).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub ok: bool,
    /// Lines, each ending in '\n'; never an empty line (the transport adds the terminator).
    pub text: String,
}

impl Answer {
    pub fn ok(text: impl Into<String>) -> Answer {
        Answer {
            ok: true,
            text: text.into(),
        }
    }

    /// Success that prints nothing (HAProxy's convention for mutations).
    pub fn done() -> Answer {
        Answer::ok("")
    }

    pub fn err(text: impl Into<String>) -> Answer {
        let mut text = text.into();
        if !text.ends_with('\n') {
            text.push('\n');
        }
        Answer { ok: false, text }
    }

    /// `{"ok":…,"output":…}` on one line; a success that prints nothing is `{"ok":true}`,
    /// so a client that gave up early (and read nothing) can never mistake that for success.
    pub fn to_json(&self) -> String {
        if self.ok && self.text.is_empty() {
            return json!({"ok": true}).to_string();
        }
        json!({"ok": self.ok, "output": self.text}).to_string()
    }
}

/// What the transport does after a command.
#[derive(Debug)]
pub enum Reply {
    Answer(Answer),
    /// Switch the session to interactive mode.
    Prompt,
    /// Close the session.
    Quit,
    /// Stream events until the client goes away.
    Subscribe,
}

/// Who sent a command, for the audit log.
#[derive(Debug, Clone)]
pub struct Peer {
    pub via: &'static str,
    pub uid: Option<u32>,
    pub pid: Option<i32>,
    pub addr: Option<SocketAddr>,
}

const HELP: &str = "\
help                                     : this list
prompt                                   : toggle interactive mode with prompt
quit                                     : disconnect
show info                                : report information about the running process
show stat [<iid> <type> <sid>]           : report counters for each proxy and server (CSV)
show servers state [<backend>]           : dump volatile server information
show backend                             : list backends
get weight <bk>/<srv>                    : report a server's current weight
set weight <bk>/<srv> <weight>[%]        : change a server's weight
set server <bk>/<srv> state|weight|addr|health|agent <value>... : change a server's state, weight or address
enable|disable server <bk>/<srv>         : put a server in service / in maintenance
enable|disable health|agent <bk>/<srv>   : toggle checks
shutdown sessions server <bk>/<srv>      : close a server's connections now
add server <bk>/<srv> <addr>:<port> [weight <w>] [group <g>] : add a server (starts in maintenance)
del server <bk>/<srv>                    : delete a server in maintenance without connections
wait <delay> [srv-removable <bk>/<srv>]  : wait until a server can be deleted, or for <delay>
set split <bk> <group>=<weight>...       : set group split weights atomically (veer)
set group <bk>/<group> state ready|drain|maint [force] : set every server of a group at once (veer)
show split <bk> [json]                   : a backend's groups and servers (veer)
wait <delay> srv-drained <bk>/<srv>      : wait until a server has no active work; says Drained. (veer)
wait <delay> group-drained <bk>/<group>  : wait until a group has no active work; says Drained. (veer)
reload                                   : reload the config file (veer)
drain                                    : start draining the process: /ready fails, connections close (veer)
undrain                                  : stop draining (not after SIGTERM): /ready passes again (veer)
show config                              : running config hash, load time, last reload (veer)
show overlay                             : runtime changes on top of the config file, JSON (veer)
clear overlay [<bk>[/<srv>]]             : drop runtime changes (veer)
subscribe                                : stream one JSON line per state change (veer)
json <command>                           : answer one command as {\"ok\":…,\"output\":…} (veer)
";

/// True for commands that change state (audited with the peer's credentials).
fn mutates(words: &[&str]) -> bool {
    matches!(
        words,
        ["set", ..]
            | ["enable", ..]
            | ["disable", ..]
            | ["shutdown", ..]
            | ["add", ..]
            | ["del", ..]
            | ["reload"]
            | ["clear", ..]
            | ["drain"]
            | ["undrain"]
    )
}

/// True for a command that changes nothing (`show …`, `get …`, `help`, `wait …`), with or
/// without a `json` prefix: what the HTTP admin listener lets through unauthenticated.
pub fn is_read_only(command: &str) -> bool {
    let mut words: Vec<&str> = command.split_whitespace().collect();
    while words.first() == Some(&"json") {
        words.remove(0);
    }
    !mutates(&words)
}

/// Runs one command (one `;`-separated part of a line).
pub async fn execute(veer: &Veer, command: &str, peer: &Peer) -> Reply {
    let words: Vec<&str> = command.split_whitespace().collect();
    match words.as_slice() {
        ["prompt"] => return Reply::Prompt,
        ["quit"] => return Reply::Quit,
        ["subscribe"] => return Reply::Subscribe,
        ["json", rest @ ..] => {
            let inner = Box::pin(execute(veer, &rest.join(" "), peer)).await;
            return match inner {
                Reply::Answer(a) => Reply::Answer(Answer {
                    ok: a.ok,
                    text: format!("{}\n", a.to_json()),
                }),
                other => other,
            };
        }
        _ => {}
    }
    let answer = dispatch(veer, &words).await;
    let name = if answer.text.starts_with("Unknown command") {
        "unknown".to_string()
    } else {
        // The verb, and its object where it has one: bounded label values.
        let two = matches!(
            words.first(),
            Some(&("set" | "show" | "get" | "enable" | "disable" | "add" | "del" | "shutdown" | "clear"))
        );
        words
            .iter()
            .take(if two { 2 } else { 1 })
            .copied()
            .collect::<Vec<_>>()
            .join(" ")
    };
    let result = if answer.ok { "ok" } else { "error" };
    veer.metrics
        .counter(
            crate::metrics::names::ADMIN_COMMANDS,
            &[("command", name), ("result", result.to_string())],
        )
        .increment(1);
    if mutates(&words) {
        tracing::info!(
            target: "veer::audit",
            via = peer.via,
            uid = ?peer.uid,
            pid = ?peer.pid,
            addr = ?peer.addr,
            command,
            ok = answer.ok,
            answer = answer.text.trim_end(),
            "admin command"
        );
    }
    Reply::Answer(answer)
}

async fn dispatch(veer: &Veer, words: &[&str]) -> Answer {
    match words {
        [] => Answer::done(),
        ["help"] => Answer::ok(HELP),
        ["show", "info"] => Answer::ok(haproxy::show_info(veer)),
        ["show", "stat", rest @ ..] => match stat_filter(rest) {
            Some(f) => Answer::ok(haproxy::show_stat(veer, f).await),
            None => Answer::err("Usage: show stat [<iid> <type> <sid>]"),
        },
        ["show", "servers", "state"] => Answer::ok(haproxy::show_servers_state(&veer.snapshot(), None)),
        ["show", "servers", "state", b] => {
            let snap = veer.snapshot();
            match backend_index(&snap.spec, b) {
                Some(i) => Answer::ok(haproxy::show_servers_state(&snap, Some(&snap.backends[i]))),
                None => Answer::err("Can't find backend."),
            }
        }
        ["show", "backend"] => Answer::ok(haproxy::show_backend(&veer.snapshot())),
        ["show", "split", b, rest @ ..] => show_split(&veer.snapshot(), b, rest),
        ["show", "config"] => show_config(veer).await,
        ["show", "overlay"] => Answer::ok(
            serde_json::to_string_pretty(&veer.overlay().await)
                .map(|s| s + "\n")
                .unwrap_or_default(),
        ),
        ["get", "weight", rest @ ..] => {
            let snap = veer.snapshot();
            match locate(&snap.spec, rest.first().copied()) {
                Ok(at) => Answer::ok(format!("{} (initial {})\n", at.server.weight, at.server.initial_weight)),
                Err(e) => Answer::err(e),
            }
        }
        ["set", "weight", target, w] => set_weight(veer, Some(target), Some(w)).await,
        ["set", "weight", rest @ ..] => set_weight(veer, rest.first().copied(), None).await,
        ["set", "server", rest @ ..] => set_server(veer, rest).await,
        ["enable", "server", rest @ ..] => set_state(veer, rest.first().copied(), AdminState::Ready).await,
        ["disable", "server", rest @ ..] => set_state(veer, rest.first().copied(), AdminState::Maint).await,
        [verb @ ("enable" | "disable"), kind @ ("health" | "agent"), rest @ ..] => {
            let off = *verb == "disable";
            let health = *kind == "health";
            mutate_server(veer, rest.first().copied(), move |o, at| {
                let change = o.server_mut(&at.id);
                if health {
                    change.health_disabled = off.then_some(true);
                } else {
                    change.agent_disabled = off.then_some(true);
                }
                Ok(())
            })
            .await
        }
        ["shutdown", "sessions", "server", rest @ ..] => {
            let snap = veer.snapshot();
            match locate(&snap.spec, rest.first().copied()).and_then(|at| live_server(&snap, &at.id)) {
                Ok(server) => {
                    server.state.shutdown_sessions();
                    server.pool.close_idle();
                    Answer::done()
                }
                Err(e) => Answer::err(e),
            }
        }
        ["add", "server", rest @ ..] => add_server(veer, rest).await,
        ["del", "server", rest @ ..] => del_server(veer, rest.first().copied()).await,
        ["wait", rest @ ..] => wait(veer, rest).await,
        ["set", "split", rest @ ..] => set_split(veer, rest).await,
        ["set", "group", target, "state", state] => set_group_state(veer, target, state, false).await,
        ["set", "group", target, "state", state, "force"] => set_group_state(veer, target, state, true).await,
        ["drain"] => {
            // What SIGTERM starts, without stopping: for a Kubernetes preStop hook, so the
            // endpoint is removed while veer still serves; SIGTERM then finishes the job.
            veer.start_draining();
            Answer::done()
        }
        ["undrain"] => match veer.undrain().await {
            Ok(_) => Answer::done(),
            Err(e) => Answer::err(e),
        },
        ["reload"] => match veer.reload().await {
            Ok(ReloadOutcome::Applied { generation }) => Answer::ok(format!("Reloaded: generation {generation}.\n")),
            Ok(ReloadOutcome::Unchanged) => Answer::ok("Config unchanged.\n"),
            Err(e) => Answer::err(format!("Reload failed:\n{e}")),
        },
        ["clear", "overlay", rest @ ..] if rest.len() <= 1 => {
            let scope = rest.first().map(|s| s.to_string());
            match veer.mutate(move |_, o| Ok(o.clear(scope.as_deref()))).await {
                Ok(_) => Answer::done(),
                Err(e) => Answer::err(e),
            }
        }
        _ => Answer::err(format!(
            "Unknown command, but maybe one of the following ones is a better match:\n{HELP}"
        )),
    }
}

// === lookups ===

/// A server found by `<backend>/<server>` (names or `#<id>`).
struct Located<'s> {
    id: String,
    server: &'s ServerSpec,
}

/// Backend by name or `#<iid>` (the `iid` of `show stat`: listeners come first).
fn backend_index(spec: &Spec, name: &str) -> Option<usize> {
    match name.strip_prefix('#') {
        Some(n) => n
            .parse::<usize>()
            .ok()?
            .checked_sub(spec.listeners.len() + 1)
            .filter(|i| *i < spec.backends.len()),
        None => spec.backends.iter().position(|b| b.name == name),
    }
}

fn locate<'s>(spec: &'s Spec, arg: Option<&str>) -> Result<Located<'s>, &'static str> {
    let (b, s) = arg.and_then(|a| a.split_once('/')).ok_or("Require 'backend/server'.")?;
    let backend = &spec.backends[backend_index(spec, b).ok_or("No such backend.")?];
    let mut servers = backend.servers();
    let server = match s.strip_prefix('#') {
        Some(n) => n
            .parse::<usize>()
            .ok()
            .and_then(|n| n.checked_sub(1))
            .and_then(|i| servers.nth(i)),
        None => servers.find(|x| x.name == s),
    }
    .ok_or("No such server.")?;
    Ok(Located {
        id: format!("{}/{}", backend.name, server.name),
        server,
    })
}

/// The snapshot's server for an id (for its live counters).
fn live_server(snap: &Snapshot, id: &str) -> Result<std::sync::Arc<Server>, &'static str> {
    snap.servers().find(|s| &*s.id == id).cloned().ok_or("No such server.")
}

fn active(s: &Server) -> usize {
    s.state.active_requests.load(Relaxed) + s.state.active_connections.load(Relaxed)
}

// === server changes ===

/// Locates the server in the running spec, then edits the overlay for it.
async fn mutate_server(
    veer: &Veer,
    target: Option<&str>,
    change: impl FnOnce(&mut Overlay, &Located) -> Result<(), String>,
) -> Answer {
    let target = target.map(str::to_owned);
    veer.mutate(move |spec, overlay| change(overlay, &locate(spec, target.as_deref())?))
        .await
        .into()
}

impl From<Result<(), String>> for Answer {
    fn from(r: Result<(), String>) -> Answer {
        match r {
            Ok(()) => Answer::done(),
            Err(e) => Answer::err(e),
        }
    }
}

async fn set_state(veer: &Veer, target: Option<&str>, state: AdminState) -> Answer {
    mutate_server(veer, target, move |o, at| {
        o.server_mut(&at.id).state = Some(state);
        Ok(())
    })
    .await
}

/// HAProxy's weight parser: `<n>` absolute (0..=256) or `<n>%` of the initial weight,
/// with its exact error strings.
fn parse_weight(input: Option<&str>, initial: u32) -> Result<u32, &'static str> {
    let input = input.unwrap_or("");
    if input.is_empty() {
        return Err("Require <weight> or <weight%>.");
    }
    let sign_len = input.starts_with(['-', '+']) as usize;
    let digits = input[sign_len..].bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return Err("Empty weight string empty or preceded by garbage");
    }
    let (number, rest) = input.split_at(sign_len + digits);
    // strtol saturates; so does this.
    let w: i64 = number
        .parse()
        .unwrap_or(if number.starts_with('-') { i64::MIN } else { i64::MAX });
    if rest == "%" {
        if w < 0 {
            return Err("Relative weight must be positive.");
        }
        return Ok((initial as i64 * w.min(25_600) / 100).min(256) as u32);
    }
    if !(0..=256).contains(&w) {
        return Err("Absolute weight can only be between 0 and 256 inclusive.");
    }
    if !rest.is_empty() {
        return Err("Trailing garbage in weight string");
    }
    Ok(w as u32)
}

async fn set_weight(veer: &Veer, target: Option<&str>, weight: Option<&str>) -> Answer {
    let weight = weight.map(str::to_owned);
    let target = target.map(str::to_owned);
    let result = veer
        .mutate(move |spec, o| {
            let at = locate(spec, target.as_deref())?;
            let w = parse_weight(weight.as_deref(), at.server.initial_weight)?;
            o.server_mut(&at.id).weight = Some(w);
            Ok(())
        })
        .await;
    result.into()
}

async fn set_server(veer: &Veer, args: &[&str]) -> Answer {
    const USAGE: &str = "'set server <srv>' only supports 'agent', 'health', 'state', 'weight', 'addr', 'fqdn', \
                         'check-addr', 'check-port', 'agent-addr', 'agent-port', 'agent-send' and 'ssl'.";
    let target = args.first().copied();
    match args.get(1..).unwrap_or(&[]) {
        ["state", rest @ ..] => {
            let Some(state) = (match rest {
                [s] => AdminState::parse(s),
                _ => None,
            }) else {
                // The server is looked up first, as HAProxy does.
                if let Err(e) = locate(&veer.snapshot().spec, target) {
                    return Answer::err(e);
                }
                return Answer::err("'set server <srv> state' expects 'ready', 'drain' and 'maint'.");
            };
            set_state(veer, target, state).await
        }
        ["weight", w] => set_weight(veer, target, Some(w)).await,
        ["weight"] => set_weight(veer, target, None).await,
        ["addr", rest @ ..] => {
            let parsed = parse_addr_change(rest);
            mutate_server(veer, target, move |o, at| {
                let (ip, port) = parsed?;
                // Without `port`, the server keeps its port.
                o.server_mut(&at.id).addr = Some(SocketAddr::new(ip, port.unwrap_or(at.server.addr.port())));
                Ok(())
            })
            .await
        }
        ["health", rest @ ..] => match rest {
            ["up" | "down" | "stopping"] => mutate_server(veer, target, |_, _| Ok(())).await,
            _ => Answer::err("'set server <srv> health' expects 'up', 'stopping', or 'down'."),
        },
        ["agent", ..] => mutate_server(veer, target, |_, _| Ok(())).await,
        _ => match locate(&veer.snapshot().spec, target) {
            Err(e) => Answer::err(e),
            Ok(_) => Answer::err(USAGE),
        },
    }
}

/// `addr <ip> [port <port>]`.
fn parse_addr_change(rest: &[&str]) -> Result<(IpAddr, Option<u16>), String> {
    let ip: IpAddr = match rest.first() {
        Some(ip) => ip
            .parse()
            .map_err(|_| "Could not understand IP address format.".to_string())?,
        None => return Err("Require <addr>.".into()),
    };
    match rest.get(1..).unwrap_or(&[]) {
        [] => Ok((ip, None)),
        ["port", p] => match p.parse::<u16>() {
            Ok(p) if p > 0 => Ok((ip, Some(p))),
            _ => Err("Could not understand port.".into()),
        },
        _ => Err("'set server <srv> addr' expects <addr> [port <port>].".into()),
    }
}

async fn add_server(veer: &Veer, args: &[&str]) -> Answer {
    let Some(target) = args.first().copied() else {
        return Answer::err("Require 'backend/server'.");
    };
    let Some((b, s)) = target.split_once('/') else {
        return Answer::err("Require 'backend/server'.");
    };
    let (b, s) = (b.to_string(), s.to_string());
    let rest: Vec<String> = args[1..].iter().map(|x| x.to_string()).collect();
    let result = veer
        .mutate(move |spec, o| {
            let bi = backend_index(spec, &b).ok_or("No such backend.")?;
            let backend = &spec.backends[bi];
            let Some(addr) = rest.first() else {
                return Err("'server' expects <name> and <addr>[:<port>] as arguments.".into());
            };
            if backend.servers().any(|x| x.name == s) {
                return Err("Already exists a server with the same name in backend.".into());
            }
            if s.is_empty() || s.starts_with('#') || s.contains(['/', ';', '=']) {
                return Err(format!("Invalid server name '{s}'."));
            }
            let addr: SocketAddr = addr
                .parse()
                .map_err(|_| format!("Invalid address '{addr}': expected <ip>:<port>."))?;
            let (mut weight, mut group) = (1, backend.groups.first().map(|g| g.name.clone()));
            let mut kw = rest[1..].iter();
            while let Some(k) = kw.next() {
                match (k.as_str(), kw.next()) {
                    ("weight", Some(w)) => weight = parse_weight(Some(w), 1)?,
                    ("group", Some(g)) => {
                        if !backend.groups.iter().any(|x| x.name == *g) {
                            return Err(format!("No such group '{g}' in backend '{}'.", backend.name));
                        }
                        group = Some(g.clone());
                    }
                    (k @ ("weight" | "group"), None) => return Err(format!("'{k}' expects an argument.")),
                    (k, _) => return Err(format!("unknown keyword '{k}'.")),
                }
            }
            let group = group.ok_or("No such group.")?;
            let id = format!("{}/{s}", backend.name);
            if o.deleted.remove(&id) {
                // A config server deleted earlier comes back: it keeps its config group.
                let change = o.server_mut(&id);
                change.state = Some(AdminState::Maint);
                change.weight = Some(weight);
                change.addr = Some(addr);
            } else {
                o.servers.remove(&id);
                o.added.insert(id, AddedServer { group, addr, weight });
            }
            Ok(())
        })
        .await;
    match result {
        Ok(()) => Answer::ok("New server registered.\n"),
        Err(e) => Answer::err(e),
    }
}

async fn del_server(veer: &Veer, target: Option<&str>) -> Answer {
    let snap = veer.snapshot();
    let target = target.map(str::to_owned);
    let result = veer
        .mutate(move |spec, o| {
            let at = locate(spec, target.as_deref())?;
            if at.server.state != AdminState::Maint {
                return Err("Only servers in maintenance mode can be deleted.".into());
            }
            if live_server(&snap, &at.id).is_ok_and(|s| active(&s) > 0) {
                return Err("Server still has connections attached to it, cannot remove it.".into());
            }
            o.servers.remove(&at.id);
            if o.added.remove(&at.id).is_none() {
                o.deleted.insert(at.id);
            }
            Ok(())
        })
        .await;
    match result {
        Ok(()) => Answer::ok("Server deleted.\n"),
        Err(e) => Answer::err(e),
    }
}

// === waiting ===

/// `<n>` milliseconds, or a duration like `500ms`, `30s`.
fn parse_delay(s: &str) -> Option<Duration> {
    match s.parse::<u64>() {
        Ok(ms) => Some(Duration::from_millis(ms)),
        Err(_) => humantime::parse_duration(s).ok(),
    }
}

async fn wait(veer: &Veer, args: &[&str]) -> Answer {
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

fn group_servers(snap: &Snapshot, target: &str) -> Result<Vec<std::sync::Arc<Server>>, String> {
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

// === groups and splits ===

async fn set_split(veer: &Veer, args: &[&str]) -> Answer {
    let Some((b, pairs)) = args.split_first() else {
        return Answer::err("Usage: set split <backend> <group>=<weight>...");
    };
    let (b, pairs) = (b.to_string(), pairs.iter().map(|p| p.to_string()).collect::<Vec<_>>());
    let result = veer
        .mutate(move |spec, o| {
            let backend = &spec.backends[backend_index(spec, &b).ok_or("No such backend.")?];
            if pairs.is_empty() {
                return Err("Require <group>=<weight>.".into());
            }
            let mut weights = Vec::new();
            for pair in &pairs {
                let (g, w) = pair.split_once('=').ok_or("Require <group>=<weight>.")?;
                if !backend.groups.iter().any(|x| x.name == g) {
                    return Err(format!("No such group '{g}' in backend '{}'.", backend.name));
                }
                let w = w
                    .parse::<u32>()
                    .ok()
                    .filter(|w| *w <= 1000)
                    .ok_or("Group weight can only be between 0 and 1000 inclusive.")?;
                weights.push((g.to_string(), w));
            }
            // Validated as a whole before anything changes: all or nothing.
            let split = o.splits.entry(backend.name.clone()).or_default();
            split.extend(weights);
            Ok(())
        })
        .await;
    result.into()
}

async fn set_group_state(veer: &Veer, target: &str, state: &str, force: bool) -> Answer {
    let Some(state) = AdminState::parse(state) else {
        return Answer::err("'set group <grp> state' expects 'ready', 'drain' and 'maint'.");
    };
    let target = target.to_string();
    let result = veer
        .mutate(move |spec, o| {
            let (b, g) = target.split_once('/').ok_or("Require 'backend/group'.")?;
            let backend = &spec.backends[backend_index(spec, b).ok_or("No such backend.")?];
            let group = backend
                .groups
                .iter()
                .find(|x| x.name == g)
                .ok_or(format!("No such group '{g}' in backend '{}'.", backend.name))?;
            // A group that can take new clients: split weight above zero and a ready server
            // with weight. Refuse to leave none (everyone would get 503 no-server) unless told.
            let can_take = |x: &crate::config::GroupSpec| {
                x.weight > 0
                    && x.servers.iter().any(|s| {
                        let after = if x.name == g { state } else { s.state };
                        after == AdminState::Ready && s.weight > 0
                    })
            };
            let any_left = backend.groups.iter().any(can_take);
            if !any_left && !force {
                return Err(format!(
                    "No group of backend '{}' could take new clients after this (they would get 503 no-server); \
                     add 'force' to do it anyway.",
                    backend.name
                ));
            }
            for s in &group.servers {
                o.server_mut(&format!("{}/{}", backend.name, s.name)).state = Some(state);
            }
            Ok(())
        })
        .await;
    result.into()
}

fn show_split(snap: &Snapshot, b: &str, rest: &[&str]) -> Answer {
    let Some(bi) = backend_index(&snap.spec, b) else {
        return Answer::err("No such backend.");
    };
    let backend = &snap.backends[bi];
    let spec = &snap.spec.backends[bi];
    let now = now_ms();
    let total: u32 = backend
        .groups
        .iter()
        .filter(|g| g.servers.iter().any(|s| s.usable() && !s.state.is_ejected(now)))
        .map(|g| g.weight)
        .sum();
    let share = |g: &crate::snapshot::Group| {
        let available = g.servers.iter().any(|s| s.usable() && !s.state.is_ejected(now));
        if total == 0 || !available {
            0.0
        } else {
            g.weight as f64 * 100.0 / total as f64
        }
    };
    let health = |s: &Server| if s.state.is_ejected(now) { "down" } else { "up" };
    let state = |s: &Server| s.admin.as_str();
    match rest {
        ["json"] => {
            let groups: Vec<_> = backend
                .groups
                .iter()
                .map(|g| {
                    let servers: Vec<_> = g
                        .servers
                        .iter()
                        .map(|s| {
                            json!({"name": &*s.name, "addr": s.addr.to_string(), "state": state(s), "health": health(s),
                                   "weight": s.weight, "active_requests": s.state.active_requests.load(Relaxed),
                                   "active_connections": s.state.active_connections.load(Relaxed)})
                        })
                        .collect();
                    json!({"name": &*g.name, "weight": g.weight, "share": (share(g) * 10.0).round() / 10.0, "servers": servers})
                })
                .collect();
            Answer::ok(format!(
                "{}\n",
                json!({"backend": &*backend.name, "balance": spec.balance.as_str(), "groups": groups})
            ))
        }
        [] => {
            let mut out = format!(
                "{:<12} {:>6} {:>6}  {:<16} {:<6} {:<6} {:>6} {:>8} {:>8}\n",
                "group", "weight", "share", "server", "state", "health", "weight", "requests", "conns"
            );
            for g in &backend.groups {
                for (i, s) in g.servers.iter().enumerate() {
                    let (name, weight, sh) = if i == 0 {
                        (g.name.to_string(), g.weight.to_string(), format!("{:.1}%", share(g)))
                    } else {
                        (String::new(), String::new(), String::new())
                    };
                    out.push_str(&format!(
                        "{name:<12} {weight:>6} {sh:>6}  {:<16} {:<6} {:<6} {:>6} {:>8} {:>8}\n",
                        &*s.name,
                        state(s),
                        health(s),
                        s.weight,
                        s.state.active_requests.load(Relaxed),
                        s.state.active_connections.load(Relaxed)
                    ));
                }
                if g.servers.is_empty() {
                    out.push_str(&format!(
                        "{:<12} {:>6} {:>6}  (no servers)\n",
                        &*g.name,
                        g.weight,
                        format!("{:.1}%", share(g))
                    ));
                }
            }
            Answer::ok(out)
        }
        _ => Answer::err("Usage: show split <backend> [json]"),
    }
}

async fn show_config(veer: &Veer) -> Answer {
    let snap = veer.snapshot();
    let loaded = humantime::format_rfc3339_seconds(veer.loaded_at().await);
    let last = match veer.last_reload() {
        None => "none".to_string(),
        Some(r) => {
            let at = humantime::format_rfc3339_seconds(r.at);
            match r.result {
                Ok(ReloadOutcome::Applied { generation }) => format!("applied (generation {generation}) at {at}"),
                Ok(ReloadOutcome::Unchanged) => format!("unchanged at {at}"),
                Err(e) => format!("failed at {at}: {}", e.lines().collect::<Vec<_>>().join(" | ")),
            }
        }
    };
    Answer::ok(format!(
        "File: {}\nHash: {:016x}\nGeneration: {}\nLoaded: {loaded}\nLast-reload: {last}\n",
        veer.config_path().display(),
        snap.spec.hash,
        snap.generation
    ))
}

fn stat_filter(args: &[&str]) -> Option<StatFilter> {
    match args {
        [] => Some(StatFilter::default()),
        [iid, kind, sid] => {
            let id = |s: &str| -> Option<Option<usize>> {
                let n: i64 = s.parse().ok()?;
                Some((n > 0).then_some(n as usize))
            };
            let types: i64 = kind.parse().ok()?;
            Some(StatFilter {
                iid: id(iid)?,
                types: if types < 0 { 7 } else { types as u8 },
                sid: id(sid)?,
            })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::parse_weight;

    #[test]
    fn weights_parse_like_haproxy() {
        assert_eq!(parse_weight(Some("10"), 1), Ok(10));
        assert_eq!(parse_weight(Some("50%"), 4), Ok(2));
        assert_eq!(parse_weight(Some("1000%"), 100), Ok(256));
        assert_eq!(
            parse_weight(Some("abc"), 1),
            Err("Empty weight string empty or preceded by garbage")
        );
        assert_eq!(
            parse_weight(Some("-1"), 1),
            Err("Absolute weight can only be between 0 and 256 inclusive.")
        );
        assert_eq!(
            parse_weight(Some("257"), 1),
            Err("Absolute weight can only be between 0 and 256 inclusive.")
        );
        assert_eq!(
            parse_weight(Some("99999999999999999999"), 1),
            Err("Absolute weight can only be between 0 and 256 inclusive.")
        );
        assert_eq!(parse_weight(Some("12x"), 1), Err("Trailing garbage in weight string"));
        assert_eq!(parse_weight(Some("-5%"), 1), Err("Relative weight must be positive."));
        assert_eq!(parse_weight(None, 1), Err("Require <weight> or <weight%>."));
    }
}
