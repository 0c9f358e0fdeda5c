//! The admin event stream: one JSON line per change, so deploy tools can watch instead of
//! poll. Changes are found by diffing consecutive snapshots, so every path that changes
//! routing (admin command, reload, restart with a state file) reports the same way.

use std::collections::HashMap;

use serde_json::json;

use crate::snapshot::{Server, Snapshot};

/// The time stamp every event line carries.
pub fn now() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}

/// A passive health transition of a server.
pub fn health(server: &str, up: bool) -> String {
    json!({"time": now(), "event": "health", "server": server, "health": if up { "up" } else { "down" }}).to_string()
}

/// What changed between two snapshots: servers added, removed or changed (state, weight,
/// address) and group splits.
pub fn diff(old: &Snapshot, new: &Snapshot, who: &str) -> Vec<String> {
    let mut out = Vec::new();
    let servers = |snap: &Snapshot| -> HashMap<String, std::sync::Arc<Server>> {
        snap.servers().map(|s| (s.id.to_string(), s.clone())).collect()
    };
    let (before, after) = (servers(old), servers(new));
    for (id, s) in &after {
        let describe = |event: &str| {
            json!({"time": now(), "event": event, "server": id, "group": &*s.group, "state": s.admin.as_str(),
                   "weight": s.weight, "addr": s.addr.to_string(), "who": who})
            .to_string()
        };
        match before.get(id) {
            None => out.push(describe("server_added")),
            Some(o) if o.admin != s.admin || o.weight != s.weight || o.addr != s.addr => out.push(describe("server")),
            Some(_) => {}
        }
    }
    for id in before.keys().filter(|id| !after.contains_key(*id)) {
        out.push(json!({"time": now(), "event": "server_removed", "server": id}).to_string());
    }
    for b in &new.backends {
        let weights: serde_json::Map<String, serde_json::Value> =
            b.groups.iter().map(|g| (g.name.to_string(), json!(g.weight))).collect();
        let changed = match old.backend(&b.name) {
            Some(ob) => {
                ob.groups
                    .iter()
                    .map(|g| (g.name.to_string(), json!(g.weight)))
                    .collect::<serde_json::Map<_, _>>()
                    != weights
            }
            None => true,
        };
        if changed {
            // Who deployed what: each group's metadata travels with the split.
            let meta: serde_json::Map<String, serde_json::Value> = new
                .spec
                .backends
                .iter()
                .find(|x| *x.name == *b.name)
                .map(|x| x.groups.iter().map(|g| (g.name.clone(), json!(g.meta))).collect())
                .unwrap_or_default();
            out.push(
                json!({"time": now(), "event": "split", "backend": &*b.name, "weights": weights, "meta": meta, "who": who})
                    .to_string(),
            );
        }
    }
    out.sort();
    out
}
