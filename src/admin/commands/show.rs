//! Read-only views of veer's own: `show split` (table and JSON), `show config`, `show
//! overlay`, `show ssl cert` (HAProxy's command name; one line per certificate). HAProxy's `show` formats are in [`crate::admin::haproxy`].

use std::sync::atomic::Ordering::Relaxed;

use serde_json::json;

use super::answer::Answer;
use super::lookup::backend_index;
use crate::clock::now_ms;
use crate::control::{ReloadOutcome, Veer};
use crate::snapshot::{Server, Snapshot};

pub fn show_split(snap: &Snapshot, b: &str, rest: &[&str]) -> Answer {
    let Some(bi) = backend_index(&snap.spec, b) else {
        return Answer::err("No such backend.");
    };
    let backend = &snap.backends[bi];
    let spec = &snap.spec.backends[bi];
    let now = now_ms();
    let shares = backend.shares(now);
    let share = |g: &crate::snapshot::Group| {
        let i = backend.groups.iter().position(|x| std::ptr::eq(x, g));
        i.and_then(|i| shares.get(i).copied()).unwrap_or(0.0)
    };
    let health = |s: &Server| if s.state.available(now) { "up" } else { "down" };
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
                    let meta = spec.groups.iter().find(|x| *x.name == *g.name).map(|x| &x.meta);
                    json!({"name": &*g.name, "weight": g.weight, "share": (share(g) * 10.0).round() / 10.0,
                           "meta": meta, "servers": servers})
                })
                .collect();
            let mut out = json!({"backend": &*backend.name, "balance": spec.balance.as_str(), "groups": groups});
            if backend.zone_aware {
                out["zone_picks"] = json!({"zone": snap.spec.runtime.zone, "local": backend.state.local_picks.load(Relaxed),
                                           "cross_zone": backend.state.cross_zone_picks.load(Relaxed)});
            }
            Answer::ok(format!("{out}\n"))
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
            if backend.zone_aware {
                out.push_str(&format!(
                    "zone {}: {} local picks, {} cross-zone\n",
                    snap.spec.runtime.zone.as_deref().unwrap_or(""),
                    backend.state.local_picks.load(Relaxed),
                    backend.state.cross_zone_picks.load(Relaxed)
                ));
            }
            // Deployment metadata under the table, one line per group that has some.
            for g in spec.groups.iter().filter(|g| !g.meta.is_empty()) {
                let meta: Vec<String> = g.meta.iter().map(|(k, v)| format!("{k}={v}")).collect();
                out.push_str(&format!("meta {}: {}\n", g.name, meta.join(" ")));
            }
            Answer::ok(out)
        }
        _ => Answer::err("Usage: show split <backend> [json]"),
    }
}

pub async fn show_config(veer: &Veer) -> Answer {
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

/// `show overlay`: the runtime changes on top of the config file, as pretty JSON.
pub async fn show_overlay(veer: &Veer) -> Answer {
    Answer::ok(
        serde_json::to_string_pretty(&veer.overlay().await)
            .map(|s| s + "\n")
            .unwrap_or_default(),
    )
}

/// `show ssl cert`: one line per loaded certificate — listener, file, SANs, not-after,
/// serial. `show ssl cert <file>`: that certificate in HAProxy's detail form.
pub fn show_ssl_cert(snap: &Snapshot, file: Option<&str>) -> Answer {
    let time = |t: i64| {
        humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_secs(t.max(0) as u64))
            .to_string()
    };
    let certs = snap
        .spec
        .listeners
        .iter()
        .filter_map(|l| l.tls.as_ref().map(|t| (l, t)))
        .flat_map(|(l, t)| t.certs.iter().map(move |c| (l, c)));
    match file {
        None => {
            let mut out = String::from("# listener file sans not_after serial\n");
            for (l, c) in certs {
                out.push_str(&format!(
                    "{} {} {} {} {}\n",
                    l.name,
                    c.cert_file.display(),
                    c.info.sans.join(","),
                    time(c.info.not_after),
                    c.info.serial
                ));
            }
            Answer::ok(out)
        }
        Some(file) => {
            let Some((l, c)) = certs.into_iter().find(|(_, c)| c.cert_file.to_str() == Some(file)) else {
                return Answer::err("Can't display the certificate: Not found or the certificate is a bundle!");
            };
            let now = crate::config::tls::now_unix();
            Answer::ok(format!(
                "Filename: {}\nStatus: Used\nListener: {}\nSerial: {}\nnotBefore: {}\nnotAfter: {}\n\
                 Subject Alternative Name: {}\nSubject: {}\nIssuer: {}\nKey: {}\nExpired: {}\n",
                c.cert_file.display(),
                l.name,
                c.info.serial.replace(':', ""),
                time(c.info.not_before),
                time(c.info.not_after),
                c.info
                    .sans
                    .iter()
                    .map(|s| format!("DNS:{s}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                c.info.subject,
                c.info.issuer,
                c.key_file.display(),
                if c.info.not_after < now { "yes" } else { "no" },
            ))
        }
    }
}
