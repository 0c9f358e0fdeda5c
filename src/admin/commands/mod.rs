//! The one command parser and dispatcher behind every admin transport (unix socket, HTTP
//! `/command`, `veer ctl`). HAProxy's verbs keep HAProxy's exact answers
//! (../shared/haproxy-runtime-api.md); veer's own verbs cover what HAProxy cannot do: an
//! atomic split, group-wide states, waiting for drained, reload, the event stream.
//!
//! A line is parsed into a typed [`Command`] (`parse`), then run by its family: `server`
//! (states, weights, addresses, add/del), `split` (groups), `wait`, `show` (veer's own
//! views; HAProxy's formats are `admin::haproxy`'s). Every mutation goes through
//! [`Veer::mutate`]: validated against the running spec, written to the state file, then
//! swapped in as one snapshot. A command that fails changes nothing.

mod answer;
mod deploy;
mod lookup;
mod parse;
mod server;
mod show;
mod split;
mod wait;

pub use answer::{Answer, Peer, Reply};
pub use deploy::rollout_json;
pub use parse::{parse, Command};

use super::haproxy;
use crate::control::{ReloadOutcome, Veer};

const HELP: &str = "\
help                                     : this list
prompt                                   : toggle interactive mode with prompt
quit                                     : disconnect
show info                                : report information about the running process
show stat [{<iid>|<proxy>} <type> <sid>] [typed|json] [desc] [up|no-maint] : report counters for each proxy and server
show servers state [<backend>]           : dump volatile server information
show backend                             : list backends
get weight <bk>/<srv>                    : report a server's current weight
set weight <bk>/<srv> <weight>[%]        : change a server's weight
set server <bk>/<srv> state|weight|addr|health|agent <value>... : change a server's state, weight or address
enable|disable server <bk>/<srv>         : put a server in service / in maintenance
enable|disable health|agent <bk>/<srv>   : toggle checks
shutdown sessions server <bk>/<srv>      : close a server's connections now
add server <bk>/<srv> <addr>:<port> [weight <w>] [group <g>] [id <n>] : add a server (starts in maintenance)
del server <bk>/<srv>                    : delete a server in maintenance without connections
wait <delay> [srv-removable <bk>/<srv>]  : wait until a server can be deleted, or for <delay>
set split <bk> <group>=<weight>...       : set group split weights atomically (veer)
set group <bk>/<group> state ready|drain|maint [force] : set every server of a group at once (veer)
show split <bk> [json]                   : a backend's groups and servers (veer)
wait <delay> srv-drained <bk>/<srv>      : wait until a server has no active work; says Drained. (veer)
wait <delay> group-drained <bk>/<group>  : wait until a group has no active work; says Drained. (veer)
reload                                   : reload the config file (veer)
preview reload [<file>]                  : what reloading the file (default: the running one) would change; socket only (veer)
drain                                    : start draining the process: /ready fails, connections close (veer)
undrain                                  : stop draining (not after SIGTERM): /ready passes again (veer)
show config                              : running config hash, load time, last reload (veer)
show ssl cert [<file>]                   : loaded certificates (one line each), or one in detail
show overlay                             : runtime changes on top of the config file, JSON (veer)
clear overlay [<bk>[/<srv>]]             : drop runtime changes (veer)
rollout start <bk> to <group> [steps 10,25,50,100] [pause 30s] [max-error-rate 1%] [max-p99 500ms] [min-requests 100] [then drain|keep] : metric-gated rollout (veer)
rollout pause|resume|abort|promote <bk>  : control a rollout (veer)
show rollout [<bk>] [json]               : rollouts with the current step's figures (veer)
set meta <bk>/<group> <key>=<value>...   : set deployment metadata of a group; empty value removes (veer)
rollback <bk> [<key>=<value>]            : back to the split before the current one, or all to the group whose metadata matches (veer)
show history <bk>                        : the last splits of a backend, with time and who (veer)
show latency <bk>                        : per-group response-time buckets, cumulative (veer)
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
            // Reads a file of the caller's choosing: privileged and audited like a change.
            | ["preview", ..]
            | ["clear", ..]
            | ["rollout", ..]
            | ["rollback", ..]
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
    let answer = match parse(&words) {
        Command::Prompt => return Reply::Prompt,
        Command::Quit => return Reply::Quit,
        Command::Subscribe => return Reply::Subscribe,
        Command::Json(inner) => {
            let inner = Box::pin(execute(veer, &inner, peer)).await;
            return match inner {
                Reply::Answer(a) => Reply::Answer(Answer {
                    ok: a.ok,
                    text: format!("{}\n", a.to_json()),
                }),
                other => other,
            };
        }
        command => run(veer, command, peer).await,
    };
    let name = if answer.text.starts_with("Unknown command") {
        "unknown".to_string()
    } else {
        // The verb, and its object where it has one: bounded label values.
        let two = matches!(
            words.first(),
            Some(&("set" | "show" | "get" | "enable" | "disable" | "add" | "del" | "shutdown" | "clear" | "rollout"))
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

/// Runs a parsed command (the transport-level ones, `prompt`, `quit`, `subscribe` and
/// `json`, are [`execute`]'s).
async fn run(veer: &Veer, command: Command, peer: &Peer) -> Answer {
    use Command::*;
    match command {
        Empty => Answer::done(),
        Help => Answer::ok(HELP),
        ShowInfo => Answer::ok(haproxy::show_info(veer).await),
        ShowStat(Some(f)) => match haproxy::show_stat(veer, &f).await {
            Ok(text) => Answer::ok(text),
            Err(e) => Answer::err(e),
        },
        ShowStat(None) => {
            Answer::err("Usage: show stat [{<iid>|<proxy>} <type> <sid>] [typed|json] [desc] [up|no-maint]")
        }
        ShowServersState(None) => Answer::ok(haproxy::show_servers_state(&veer.snapshot(), None)),
        ShowServersState(Some(b)) => {
            let snap = veer.snapshot();
            match lookup::backend_index(&snap.spec, &b) {
                Some(i) => Answer::ok(haproxy::show_servers_state(&snap, Some(&snap.backends[i]))),
                None => Answer::err("Can't find backend."),
            }
        }
        ShowBackend => Answer::ok(haproxy::show_backend(&veer.snapshot())),
        ShowSplit { backend, args } => show::show_split(&veer.snapshot(), &backend, &words(&args)),
        ShowConfig => show::show_config(veer).await,
        ShowOverlay => show::show_overlay(veer).await,
        ShowSslCert(file) => show::show_ssl_cert(&veer.snapshot(), file.as_deref()),
        GetWeight(target) => server::get_weight(veer, target.as_deref()),
        SetWeight { target, weight } => server::set_weight(veer, target.as_deref(), weight.as_deref()).await,
        SetServer { target, args } => {
            let mut all = vec![target.as_deref().unwrap_or("")];
            all.extend(words(&args));
            server::set_server(veer, if target.is_some() { &all } else { &[] }).await
        }
        SetState { target, state } => server::set_state(veer, target.as_deref(), state).await,
        ToggleCheck { target, health, off } => server::toggle_check(veer, target.as_deref(), health, off).await,
        ShutdownSessions(target) => server::shutdown_sessions(veer, target.as_deref()),
        AddServer(args) => server::add_server(veer, &words(&args)).await,
        DelServer(target) => server::del_server(veer, target.as_deref()).await,
        Wait(args) => wait::wait(veer, &words(&args)).await,
        SetSplit(args) => split::set_split(veer, &words(&args), &peer.who()).await,
        RolloutStart(args) => deploy::rollout_start(veer, &words(&args), &peer.who()).await,
        RolloutControl { backend, action } => match veer.rollout_control(&backend, action, &peer.who()).await {
            Ok(text) => Answer::ok(text),
            Err(e) => Answer::err(e),
        },
        ShowRollout(args) => deploy::show_rollout(veer, &words(&args)).await,
        SetMeta(args) => deploy::set_meta(veer, &words(&args), &peer.who()).await,
        Rollback(args) => deploy::rollback(veer, &words(&args), &peer.who()).await,
        ShowHistory(b) => deploy::show_history(veer, &b).await,
        ShowLatency(b) => deploy::show_latency(&veer.snapshot(), &b),
        SetGroupState { target, state, force } => split::set_group_state(veer, &target, &state, force).await,
        Drain => {
            // What SIGTERM starts, without stopping: for a Kubernetes preStop hook, so the
            // endpoint is removed while veer still serves; SIGTERM then finishes the job.
            veer.start_draining();
            Answer::done()
        }
        Undrain => match veer.undrain().await {
            Ok(_) => Answer::done(),
            Err(e) => Answer::err(e),
        },
        // It reads any file veer can: only over the socket, whose permissions decide.
        PreviewReload(_) if peer.via != "socket" => Answer::err("This command is only available on the admin socket."),
        PreviewReload(file) => match veer.preview_reload(file.as_deref().map(std::path::Path::new)).await {
            Ok(text) => Answer::ok(text),
            Err(e) => Answer::err(e),
        },
        Reload => match veer.reload().await {
            Ok(ReloadOutcome::Applied { generation }) => Answer::ok(format!("Reloaded: generation {generation}.\n")),
            Ok(ReloadOutcome::Unchanged) => Answer::ok("Config unchanged.\n"),
            Err(e) => Answer::err(format!("Reload failed:\n{e}")),
        },
        ClearOverlay(scope) => match veer.mutate(move |_, o| Ok(o.clear(scope.as_deref()))).await {
            Ok(_) => Answer::done(),
            Err(e) => Answer::err(e),
        },
        Prompt | Quit | Subscribe | Json(_) | Unknown => Answer::err(format!(
            "Unknown command, but maybe one of the following ones is a better match:\n{HELP}"
        )),
    }
}

fn words(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}
