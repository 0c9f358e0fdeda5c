//! Deploy commands (veer's own): `rollout …` and `show rollout`, `set meta`, `rollback`,
//! `show history`, `show latency`. The rollout's logic is the control plane's
//! ([`crate::control::rollout`]); this module parses the words and prints the views.

use serde_json::json;

use super::answer::Answer;
use super::lookup::backend_index;
use super::wait::parse_delay;
use crate::control::rollout::Status;
use crate::control::rollout_state::{ms, Plan, Then};
use crate::control::Veer;
use crate::snapshot::Snapshot;
use crate::state::latency;

const START_USAGE: &str = "Usage: rollout start <backend> to <group> [steps 10,25,50,100] [pause 30s] \
                           [max-error-rate 1%] [max-p99 500ms] [min-requests 100] [then drain|keep]";

/// The words after `rollout start`.
pub fn parse_plan(args: &[&str]) -> Result<(String, Plan), String> {
    let [backend, "to", group, options @ ..] = args else {
        return Err(START_USAGE.into());
    };
    let mut plan = Plan {
        to: group.to_string(),
        ..Plan::default()
    };
    let mut it = options.chunks(2);
    for pair in &mut it {
        let [key, value] = pair else {
            return Err(START_USAGE.into());
        };
        let bad = |what: &str| format!("Invalid {key} '{value}': expected {what}.");
        match *key {
            "steps" => {
                plan.steps = value
                    .split(',')
                    .map(|p| p.trim_end_matches('%').parse::<u32>())
                    .collect::<Result<_, _>>()
                    .map_err(|_| bad("percentages like 10,25,50,100"))?
            }
            "pause" => plan.pause = parse_delay(value).ok_or_else(|| bad("a duration like 30s"))?,
            "max-error-rate" => {
                plan.max_error_rate = value
                    .trim_end_matches('%')
                    .parse::<f64>()
                    .ok()
                    .filter(|r| (0.0..=100.0).contains(r))
                    .ok_or_else(|| bad("a percentage like 1%"))?
            }
            "max-p99" => plan.max_p99 = Some(parse_delay(value).ok_or_else(|| bad("a duration like 500ms"))?),
            "min-requests" => plan.min_requests = value.parse().map_err(|_| bad("a number"))?,
            "then" => {
                plan.then = match *value {
                    "drain" => Then::Drain,
                    "keep" => Then::Keep,
                    _ => return Err(bad("drain or keep")),
                }
            }
            _ => return Err(format!("Unknown rollout option '{key}'.\n{START_USAGE}")),
        }
    }
    Ok((backend.to_string(), plan))
}

pub async fn rollout_start(veer: &Veer, args: &[&str], who: &str) -> Answer {
    let (backend, plan) = match parse_plan(args) {
        Ok(p) => p,
        Err(e) => return Answer::err(e),
    };
    match veer.rollout_start(&backend, plan, who).await {
        Ok(text) => Answer::ok(text),
        Err(e) => Answer::err(e),
    }
}

/// `k=v k=v`, as every view prints metadata and splits.
fn pairs<V: std::fmt::Display>(map: &std::collections::BTreeMap<String, V>) -> String {
    map.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// One rollout as JSON (what `veer ctl rollout` follows).
pub fn rollout_json(s: &Status) -> serde_json::Value {
    let r = &s.rollout;
    let groups: Vec<_> = s
        .groups
        .iter()
        .map(|g| {
            json!({"name": g.name, "weight": g.weight, "meta": g.meta, "requests": g.window.requests,
                   "errors": g.window.errors, "error_rate": (g.window.error_rate() * 100.0).round() / 100.0,
                   "p99_ms": g.window.p99().map(|d| d.as_secs_f64() * 1000.0)})
        })
        .collect();
    json!({"backend": s.backend, "to": r.to, "from": r.from_groups(), "phase": r.phase.as_str(),
           "step": r.step + 1, "steps": r.steps, "percent": r.percent(), "pause_ms": r.pause_ms,
           "elapsed_ms": s.elapsed.as_millis() as u64, "max_error_rate": r.max_error_rate,
           "max_p99_ms": r.max_p99_ms, "min_requests": r.min_requests, "then": r.then,
           "started": r.started, "who": r.who, "verdict": s.verdict, "reason": r.reason, "groups": groups})
}

/// `show rollout [<backend>] [json]`.
pub async fn show_rollout(veer: &Veer, args: &[&str]) -> Answer {
    let (only, json) = match args {
        [] => (None, false),
        ["json"] => (None, true),
        [b] => (Some(*b), false),
        [b, "json"] => (Some(*b), true),
        _ => return Answer::err("Usage: show rollout [<backend>] [json]"),
    };
    if let Some(b) = only {
        if veer.snapshot().backend(b).is_none() {
            return Answer::err("No such backend.");
        }
    }
    let all = veer.rollout_status(only).await;
    if json {
        let v: Vec<_> = all.iter().map(rollout_json).collect();
        return Answer::ok(format!(
            "{}\n",
            if only.is_some() { json!(v.first()) } else { json!(v) }
        ));
    }
    if all.is_empty() {
        return Answer::ok(match only {
            Some(b) => format!("No rollout for backend '{b}'.\n"),
            None => "No rollouts.\n".to_string(),
        });
    }
    let mut out = String::new();
    for s in &all {
        let r = &s.rollout;
        let split = s
            .groups
            .iter()
            .map(|g| format!("{}={}", g.name, g.weight))
            .collect::<Vec<_>>()
            .join(" ");
        out.push_str(&format!(
            "{}: {} to {}, step {}/{} ({}%), {}s of {}s, split {split}, started {} by {}\n",
            s.backend,
            r.phase.as_str(),
            r.to,
            r.step + 1,
            r.steps.len(),
            r.percent(),
            s.elapsed.as_secs(),
            r.pause_ms / 1000,
            r.started,
            r.who
        ));
        for g in &s.groups {
            out.push_str(&format!(
                "  {:<12} requests {:>8}  errors {:>6.2}%  p99 {:>8}  {}\n",
                g.name,
                g.window.requests,
                g.window.error_rate(),
                ms(g.window.p99()),
                pairs(&g.meta)
            ));
        }
        out.push_str(&format!(
            "  verdict: {}\n",
            if s.verdict.is_empty() { "-" } else { &s.verdict }
        ));
    }
    Answer::ok(out)
}

/// `set meta <backend>/<group> key=value...`.
pub async fn set_meta(veer: &Veer, args: &[&str], who: &str) -> Answer {
    let Some((target, pairs)) = args.split_first().filter(|(_, p)| !p.is_empty()) else {
        return Answer::err("Usage: set meta <backend>/<group> <key>=<value>...");
    };
    let mut values = Vec::new();
    for p in pairs {
        match p.split_once('=') {
            Some((k, v)) if !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') => {
                values.push((k.to_string(), v.to_string()))
            }
            _ => {
                return Answer::err(format!(
                    "Invalid '{p}': expected <key>=<value> (key: letters, digits, _ or -)."
                ))
            }
        }
    }
    let target = target.to_string();
    veer.mutate_by(who, move |spec, o| {
        let (b, g) = target.split_once('/').ok_or("Require 'backend/group'.")?;
        let backend = &spec.backends[backend_index(spec, b).ok_or("No such backend.")?];
        if !backend.groups.iter().any(|x| x.name == g) {
            return Err(format!("No such group '{g}' in backend '{}'.", backend.name));
        }
        o.meta
            .entry(format!("{}/{g}", backend.name))
            .or_default()
            .extend(values);
        Ok(())
    })
    .await
    .into()
}

/// `rollback <backend>`: the split held before the current one. `rollback <backend>
/// key=value`: all traffic to the one group whose metadata has it.
pub async fn rollback(veer: &Veer, args: &[&str], who: &str) -> Answer {
    let (b, by) = match args {
        [b] => (b.to_string(), None),
        [b, kv] => match kv.split_once('=') {
            Some((k, v)) if !k.is_empty() && !v.is_empty() => (b.to_string(), Some((k.to_string(), v.to_string()))),
            _ => return Answer::err("Usage: rollback <backend> [<key>=<value>]"),
        },
        _ => return Answer::err("Usage: rollback <backend> [<key>=<value>]"),
    };
    let w = who.to_string();
    let result = veer
        .mutate_by(who, move |spec, o| {
            let backend = &spec.backends[backend_index(spec, &b).ok_or("No such backend.")?];
            if o.rollouts.get(&backend.name).is_some_and(|r| r.is_active()) {
                return Err(format!(
                    "A rollout of backend '{}' is active; 'rollout abort {}' returns it to where it started.",
                    backend.name, backend.name
                ));
            }
            let (weights, cause) = match &by {
                None => {
                    let history = o.history.get(&backend.name).map(Vec::as_slice).unwrap_or(&[]);
                    let [.., before, _current] = history else {
                        return Err(format!(
                            "No earlier split of backend '{}' to roll back to.",
                            backend.name
                        ));
                    };
                    (
                        before.weights.clone(),
                        format!("rollback to the split of {}", before.time),
                    )
                }
                Some((k, v)) => {
                    let matching: Vec<_> = backend.groups.iter().filter(|g| g.meta.get(k) == Some(v)).collect();
                    let [group] = matching.as_slice() else {
                        return Err(match matching.len() {
                            0 => format!("No group of backend '{}' has {k}={v}.", backend.name),
                            _ => format!("Several groups of backend '{}' have {k}={v}.", backend.name),
                        });
                    };
                    let weights = backend
                        .groups
                        .iter()
                        .map(|g| (g.name.clone(), if g.name == group.name { 1000 } else { 0 }))
                        .collect();
                    (weights, format!("rollback to {k}={v} ({})", group.name))
                }
            };
            let text = pairs(&weights);
            o.set_split(backend, weights, &w, &cause);
            Ok(format!("Rolled back {}: {text}.\n", backend.name))
        })
        .await;
    match result {
        Ok(text) => Answer::ok(text),
        Err(e) => Answer::err(e),
    }
}

/// `show history <backend>`: oldest first, the current split last.
pub async fn show_history(veer: &Veer, b: &str) -> Answer {
    let snap = veer.snapshot();
    let Some(backend) = snap.backend(b) else {
        return Answer::err("No such backend.");
    };
    let overlay = veer.overlay().await;
    let Some(history) = overlay.history.get(&*backend.name).filter(|h| !h.is_empty()) else {
        return Answer::ok(format!("No split changes recorded for backend '{}'.\n", backend.name));
    };
    let mut out = String::new();
    for r in history {
        out.push_str(&format!(
            "{} {} by {} ({})\n",
            r.time,
            pairs(&r.weights),
            r.who,
            r.cause
        ));
    }
    Answer::ok(out)
}

/// `show latency <backend>`: per group, the non-empty response-time buckets since start as
/// `<upper bound µs>:<count>`, ascending; scripts take differences of two readings.
pub fn show_latency(snap: &Snapshot, b: &str) -> Answer {
    let Some(backend) = snap.backend(b) else {
        return Answer::err("No such backend.");
    };
    let mut out = String::new();
    for g in &backend.groups {
        let mut counts = latency::Counts::default();
        for s in &g.servers {
            counts.add(&s.state.latency.read());
        }
        let buckets: Vec<String> = counts
            .0
            .iter()
            .enumerate()
            .filter(|(_, n)| **n > 0)
            .map(|(i, n)| format!("{}:{n}", latency::upper_us(i)))
            .collect();
        out.push_str(&format!("{} {}\n", g.name, buckets.join(" ")).replace(" \n", "\n"));
    }
    Answer::ok(out)
}
