//! The admin grammar: one line (one `;`-separated part) → a typed [`Command`]. No state is
//! read here; what a command names is looked up when it runs. Anything that is not a
//! command is [`Command::Unknown`], answered with the help text as HAProxy does.

use crate::admin::haproxy::StatFilter;
use crate::config::AdminState;

/// One admin command, as typed.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// An empty line: answered with nothing.
    Empty,
    Help,
    Prompt,
    Quit,
    Subscribe,
    /// `json <command>`: the inner command's answer as one JSON line.
    Json(String),
    ShowInfo,
    /// `None`: arguments `show stat` does not take.
    ShowStat(Option<StatFilter>),
    ShowServersState(Option<String>),
    ShowBackend,
    ShowSplit {
        backend: String,
        args: Vec<String>,
    },
    ShowConfig,
    ShowOverlay,
    /// `show ssl cert [<file>]`.
    ShowSslCert(Option<String>),
    GetWeight(Option<String>),
    SetWeight {
        target: Option<String>,
        weight: Option<String>,
    },
    SetServer {
        target: Option<String>,
        args: Vec<String>,
    },
    /// `enable server` / `disable server`.
    SetState {
        target: Option<String>,
        state: AdminState,
    },
    /// `enable|disable health|agent`.
    ToggleCheck {
        target: Option<String>,
        health: bool,
        off: bool,
    },
    ShutdownSessions(Option<String>),
    AddServer(Vec<String>),
    DelServer(Option<String>),
    Wait(Vec<String>),
    SetSplit(Vec<String>),
    SetGroupState {
        target: String,
        state: String,
        force: bool,
    },
    Drain,
    Undrain,
    Reload,
    /// `preview reload [<file>]`: what reloading the file would change.
    PreviewReload(Option<String>),
    ClearOverlay(Option<String>),
    /// `rollout start <backend> to <group> [options]`.
    RolloutStart(Vec<String>),
    /// `rollout pause|resume|abort|promote <backend>`.
    RolloutControl {
        backend: String,
        action: crate::control::rollout_state::Action,
    },
    /// `show rollout [<backend>] [json]`.
    ShowRollout(Vec<String>),
    /// `set meta <backend>/<group> key=value...`.
    SetMeta(Vec<String>),
    /// `rollback <backend> [key=value]`.
    Rollback(Vec<String>),
    ShowHistory(String),
    /// `show latency <backend>`: per-group response-time buckets.
    ShowLatency(String),
    Unknown,
}

fn owned(words: &[&str]) -> Vec<String> {
    words.iter().map(|w| w.to_string()).collect()
}

fn first(words: &[&str]) -> Option<String> {
    words.first().map(|w| w.to_string())
}

/// Parses one command's words.
pub fn parse(words: &[&str]) -> Command {
    use Command::*;
    match words {
        [] => Empty,
        ["help"] => Help,
        ["prompt"] => Prompt,
        ["quit"] => Quit,
        ["subscribe"] => Subscribe,
        ["json", rest @ ..] => Json(rest.join(" ")),
        ["show", "info"] => ShowInfo,
        ["show", "stat", rest @ ..] => ShowStat(stat_filter(rest)),
        ["show", "servers", "state"] => ShowServersState(None),
        ["show", "servers", "state", b] => ShowServersState(Some(b.to_string())),
        ["show", "backend"] => ShowBackend,
        ["show", "split", b, rest @ ..] => ShowSplit {
            backend: b.to_string(),
            args: owned(rest),
        },
        ["show", "config"] => ShowConfig,
        ["show", "ssl", "cert"] => ShowSslCert(None),
        ["show", "ssl", "cert", file] => ShowSslCert(Some(file.to_string())),
        ["show", "overlay"] => ShowOverlay,
        ["get", "weight", rest @ ..] => GetWeight(first(rest)),
        ["set", "weight", target, w] => SetWeight {
            target: Some(target.to_string()),
            weight: Some(w.to_string()),
        },
        ["set", "weight", rest @ ..] => SetWeight {
            target: first(rest),
            weight: None,
        },
        ["set", "server", rest @ ..] => SetServer {
            target: first(rest),
            args: owned(rest.get(1..).unwrap_or(&[])),
        },
        ["enable", "server", rest @ ..] => SetState {
            target: first(rest),
            state: AdminState::Ready,
        },
        ["disable", "server", rest @ ..] => SetState {
            target: first(rest),
            state: AdminState::Maint,
        },
        [verb @ ("enable" | "disable"), kind @ ("health" | "agent"), rest @ ..] => ToggleCheck {
            target: first(rest),
            health: *kind == "health",
            off: *verb == "disable",
        },
        ["shutdown", "sessions", "server", rest @ ..] => ShutdownSessions(first(rest)),
        ["add", "server", rest @ ..] => AddServer(owned(rest)),
        ["del", "server", rest @ ..] => DelServer(first(rest)),
        ["wait", rest @ ..] => Wait(owned(rest)),
        ["set", "split", rest @ ..] => SetSplit(owned(rest)),
        ["set", "group", target, "state", state] => SetGroupState {
            target: target.to_string(),
            state: state.to_string(),
            force: false,
        },
        ["set", "group", target, "state", state, "force"] => SetGroupState {
            target: target.to_string(),
            state: state.to_string(),
            force: true,
        },
        ["drain"] => Drain,
        ["undrain"] => Undrain,
        ["reload"] => Reload,
        ["preview", "reload"] => PreviewReload(None),
        ["preview", "reload", file] => PreviewReload(Some(file.to_string())),
        ["clear", "overlay", rest @ ..] if rest.len() <= 1 => ClearOverlay(first(rest)),
        ["rollout", "start", rest @ ..] => RolloutStart(owned(rest)),
        ["rollout", action @ ("pause" | "resume" | "abort" | "promote"), b] => {
            use crate::control::rollout_state::Action;
            RolloutControl {
                backend: b.to_string(),
                action: match *action {
                    "pause" => Action::Pause,
                    "resume" => Action::Resume,
                    "abort" => Action::Abort,
                    _ => Action::Promote,
                },
            }
        }
        ["show", "rollout", rest @ ..] => ShowRollout(owned(rest)),
        ["set", "meta", rest @ ..] => SetMeta(owned(rest)),
        ["rollback", rest @ ..] => Rollback(owned(rest)),
        ["show", "history", b] => ShowHistory(b.to_string()),
        ["show", "latency", b] => ShowLatency(b.to_string()),
        _ => Unknown,
    }
}

/// `[{<iid>|<proxy>} <type> <sid>] [typed|json] [desc] [up|no-maint]`; `None` for anything
/// else (HAProxy ignores what it does not understand; veer says how to ask).
fn stat_filter(args: &[&str]) -> Option<StatFilter> {
    use crate::admin::haproxy::{Only, ProxyRef, StatFormat};
    let mut f = StatFilter::default();
    let id = |s: &str| -> Option<Option<usize>> {
        let n: i64 = s.parse().ok()?;
        Some((n > 0).then_some(n as usize))
    };
    let mut rest = args;
    if let [px, kind, sid, more @ ..] = args {
        if let (Ok(types), Some(sid)) = (kind.parse::<i64>(), id(sid)) {
            f.proxy = match id(px) {
                Some(i) => i.map(ProxyRef::Id),
                None => Some(ProxyRef::Name(px.to_string())),
            };
            f.types = if types < 0 { 7 } else { types as u8 };
            f.sid = sid;
            rest = more;
        }
    }
    for word in rest {
        match *word {
            "typed" if f.format == StatFormat::Csv => f.format = StatFormat::Typed,
            "json" if f.format == StatFormat::Csv => f.format = StatFormat::Json,
            "desc" => f.desc = true,
            "up" if f.only == Only::All => f.only = Only::Up,
            "no-maint" if f.only == Only::All => f.only = Only::NoMaint,
            _ => return None,
        }
    }
    Some(f)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::haproxy::{Only, ProxyRef, StatFormat};

    fn p(line: &str) -> Command {
        parse(&line.split_whitespace().collect::<Vec<_>>())
    }

    fn s(v: &str) -> Option<String> {
        Some(v.to_string())
    }

    /// Every line of `help`, and HAProxy's forms of them, parse to the command they name.
    #[test]
    fn every_help_line_and_haproxy_form_parses() {
        use Command::*;
        let table: Vec<(&str, Command)> = vec![
            ("", Empty),
            ("help", Help),
            ("prompt", Prompt),
            ("quit", Quit),
            ("show info", ShowInfo),
            ("show stat", ShowStat(Some(StatFilter::default()))),
            (
                "show stat -1 4 -1",
                ShowStat(Some(StatFilter {
                    proxy: None,
                    types: 4,
                    sid: None,
                    ..StatFilter::default()
                })),
            ),
            (
                "show stat 3 -1 2",
                ShowStat(Some(StatFilter {
                    proxy: Some(ProxyRef::Id(3)),
                    types: 7,
                    sid: Some(2),
                    ..StatFilter::default()
                })),
            ),
            (
                "show stat shop 4 -1 typed desc no-maint",
                ShowStat(Some(StatFilter {
                    proxy: Some(ProxyRef::Name("shop".into())),
                    types: 4,
                    format: StatFormat::Typed,
                    desc: true,
                    only: Only::NoMaint,
                    ..StatFilter::default()
                })),
            ),
            (
                "show stat json up",
                ShowStat(Some(StatFilter {
                    format: StatFormat::Json,
                    only: Only::Up,
                    ..StatFilter::default()
                })),
            ),
            ("show stat 1", ShowStat(None)),
            ("show stat a 1 x", ShowStat(None)),
            ("show stat typed json", ShowStat(None)),
            ("show stat up no-maint", ShowStat(None)),
            ("show servers state", ShowServersState(None)),
            ("show servers state shop", ShowServersState(s("shop"))),
            ("show backend", ShowBackend),
            ("get weight shop/b1", GetWeight(s("shop/b1"))),
            ("get weight", GetWeight(None)),
            (
                "set weight shop/b1 50%",
                SetWeight {
                    target: s("shop/b1"),
                    weight: s("50%"),
                },
            ),
            (
                "set weight shop/b1",
                SetWeight {
                    target: s("shop/b1"),
                    weight: None,
                },
            ),
            (
                "set server shop/b1 state drain",
                SetServer {
                    target: s("shop/b1"),
                    args: vec!["state".into(), "drain".into()],
                },
            ),
            (
                "set server shop/b1 addr 10.0.0.1 port 80",
                SetServer {
                    target: s("shop/b1"),
                    args: vec!["addr".into(), "10.0.0.1".into(), "port".into(), "80".into()],
                },
            ),
            (
                "set server",
                SetServer {
                    target: None,
                    args: vec![],
                },
            ),
            (
                "enable server shop/b1",
                SetState {
                    target: s("shop/b1"),
                    state: AdminState::Ready,
                },
            ),
            (
                "disable server shop/b1",
                SetState {
                    target: s("shop/b1"),
                    state: AdminState::Maint,
                },
            ),
            (
                "enable health shop/b1",
                ToggleCheck {
                    target: s("shop/b1"),
                    health: true,
                    off: false,
                },
            ),
            (
                "disable agent shop/b1",
                ToggleCheck {
                    target: s("shop/b1"),
                    health: false,
                    off: true,
                },
            ),
            ("shutdown sessions server shop/b1", ShutdownSessions(s("shop/b1"))),
            (
                "add server shop/g1 10.0.0.9:80 weight 5 group green",
                AddServer(vec![
                    "shop/g1".into(),
                    "10.0.0.9:80".into(),
                    "weight".into(),
                    "5".into(),
                    "group".into(),
                    "green".into(),
                ]),
            ),
            ("del server shop/g1", DelServer(s("shop/g1"))),
            (
                "wait 5s srv-removable shop/b1",
                Wait(vec!["5s".into(), "srv-removable".into(), "shop/b1".into()]),
            ),
            (
                "wait 5s srv-drained shop/b1",
                Wait(vec!["5s".into(), "srv-drained".into(), "shop/b1".into()]),
            ),
            (
                "wait 5s group-drained shop/blue",
                Wait(vec!["5s".into(), "group-drained".into(), "shop/blue".into()]),
            ),
            (
                "set split shop blue=0 green=100",
                SetSplit(vec!["shop".into(), "blue=0".into(), "green=100".into()]),
            ),
            (
                "set group shop/blue state drain",
                SetGroupState {
                    target: "shop/blue".into(),
                    state: "drain".into(),
                    force: false,
                },
            ),
            (
                "set group shop/blue state maint force",
                SetGroupState {
                    target: "shop/blue".into(),
                    state: "maint".into(),
                    force: true,
                },
            ),
            (
                "show split shop",
                ShowSplit {
                    backend: "shop".into(),
                    args: vec![],
                },
            ),
            (
                "show split shop json",
                ShowSplit {
                    backend: "shop".into(),
                    args: vec!["json".into()],
                },
            ),
            ("reload", Reload),
            ("preview reload", PreviewReload(None)),
            (
                "preview reload /etc/veer/next.toml",
                PreviewReload(s("/etc/veer/next.toml")),
            ),
            ("drain", Drain),
            ("undrain", Undrain),
            ("show config", ShowConfig),
            ("show ssl cert", ShowSslCert(None)),
            ("show ssl cert /etc/veer/shop.pem", ShowSslCert(s("/etc/veer/shop.pem"))),
            ("show overlay", ShowOverlay),
            ("clear overlay", ClearOverlay(None)),
            ("clear overlay shop/b1", ClearOverlay(s("shop/b1"))),
            ("clear overlay a b", Unknown),
            ("subscribe", Subscribe),
            ("json show split shop", Json("show split shop".into())),
            ("show", Unknown),
            ("set group shop/blue", Unknown),
            ("frobnicate", Unknown),
        ];
        for (line, want) in table {
            assert_eq!(p(line), want, "{line:?}");
        }
    }

    /// The table above covers the help text: every command word of every help line.
    #[test]
    fn the_help_lists_nothing_the_parser_does_not_know() {
        for line in super::super::HELP.lines() {
            let usage = line.split_once(" : ").map_or(line, |(usage, _)| usage).trim();
            // The first alternative of each `a|b` and the first of `[...]` / `<...>`-free words.
            let words: Vec<&str> = usage
                .split_whitespace()
                .take_while(|w| !w.starts_with('<') && !w.starts_with('['))
                .map(|w| w.split_once('|').map_or(w, |(first, _)| first))
                .collect();
            let mut words = words;
            // Placeholders the grammar needs filled: a plausible argument each.
            match words.as_slice() {
                ["set", "server"] => words.extend(["shop/b1", "state", "ready"]),
                ["set", "group"] => words = vec!["set", "group", "shop/blue", "state", "ready"],
                ["show", "split" | "history" | "latency"] | ["rollout", "pause"] => words.push("shop"),
                ["json"] => words.push("help"),
                _ => {}
            }
            assert_ne!(parse(&words), Command::Unknown, "help line {line:?} → {words:?}");
        }
    }
}
