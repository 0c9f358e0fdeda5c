//! `preview reload [<file>]` (what `veer check --diff` asks): what reloading a config file
//! would change, as one line per difference between the running spec and the one a reload
//! would install (the file with the overlay applied, exactly as a reload does). Changes
//! nothing.

use std::collections::BTreeMap;
use std::path::Path;

use super::{Source, Veer};
use crate::config::Spec;

impl Veer {
    /// The differences a reload of `file` (default: the running config file) would make,
    /// or the errors that would make it refuse the file.
    pub async fn preview_reload(&self, file: Option<&Path>) -> Result<String, String> {
        let path = file.unwrap_or(self.config_path());
        // Another file stands in for the running one; the Gateway objects stay.
        let source = match file {
            Some(file) => Source {
                file: Some(file.to_path_buf()),
                ..(*self.source).clone()
            },
            None => (*self.source).clone(),
        };
        let loaded = source.load();
        let config = loaded.map_err(|e| format!("A reload would refuse {}:\n{e}", path.display()))?;
        let next = {
            let control = self.control.lock().await;
            // On copies: DNS instance numbers and the overlay stay as they are.
            let expanded = control.dns.clone().expand(&config);
            control.overlay.clone().apply(&expanded).0
        };
        let lines = diff(&self.snapshot().spec, &next);
        if lines.is_empty() {
            return Ok(format!(
                "No changes: reloading {} would change nothing.\n",
                path.display()
            ));
        }
        Ok(lines.iter().map(|l| format!("{l}\n")).collect())
    }
}

/// `+ …` added, `- …` removed, `~ … a -> b` changed: listeners, backends, groups, servers.
pub fn diff(now: &Spec, next: &Spec) -> Vec<String> {
    let mut out = Vec::new();
    let by_name = |s: &Spec| {
        s.listeners
            .iter()
            .map(|l| (l.name.clone(), l.clone()))
            .collect::<BTreeMap<_, _>>()
    };
    let (a, b) = (by_name(now), by_name(next));
    for (name, l) in &b {
        match a.get(name) {
            None => out.push(format!(
                "+ listener {name} {} {}",
                l.bind,
                format!("{:?}", l.protocol).to_lowercase()
            )),
            Some(o) if o.bind != l.bind => out.push(format!("~ listener {name} bind {} -> {}", o.bind, l.bind)),
            Some(o) if o != l => out.push(format!("~ listener {name} (routes or settings)")),
            Some(_) => {}
        }
    }
    out.extend(
        a.keys()
            .filter(|n| !b.contains_key(*n))
            .map(|n| format!("- listener {n}")),
    );

    let backends = |s: &Spec| {
        s.backends
            .iter()
            .map(|b| (b.name.clone(), b.clone()))
            .collect::<BTreeMap<_, _>>()
    };
    let (a, b) = (backends(now), backends(next));
    for (name, nb) in &b {
        let Some(ob) = a.get(name) else {
            let servers = nb.servers().count();
            out.push(format!(
                "+ backend {name} ({} groups, {servers} servers)",
                nb.groups.len()
            ));
            continue;
        };
        let before = out.len();
        for g in &nb.groups {
            match ob.groups.iter().find(|x| x.name == g.name) {
                None => out.push(format!("+ group {name}/{} weight {}", g.name, g.weight)),
                Some(o) if o.weight != g.weight => {
                    out.push(format!("~ group {name}/{} weight {} -> {}", g.name, o.weight, g.weight))
                }
                Some(_) => {}
            }
        }
        for g in ob.groups.iter().filter(|o| !nb.groups.iter().any(|g| g.name == o.name)) {
            out.push(format!("- group {name}/{}", g.name));
        }
        for s in nb.servers() {
            let id = format!("{name}/{}", s.name);
            match ob.servers().find(|o| o.name == s.name) {
                None => out.push(format!("+ server {id} {} weight {}", s.addr, s.weight)),
                Some(o) => {
                    let mut changes = Vec::new();
                    if o.addr != s.addr {
                        changes.push(format!("addr {} -> {}", o.addr, s.addr));
                    }
                    if o.weight != s.weight {
                        changes.push(format!("weight {} -> {}", o.weight, s.weight));
                    }
                    if o.state != s.state {
                        changes.push(format!("state {} -> {}", o.state.as_str(), s.state.as_str()));
                    }
                    if !changes.is_empty() {
                        out.push(format!("~ server {id} {}", changes.join(", ")));
                    }
                }
            }
        }
        for o in ob.servers().filter(|o| !nb.servers().any(|s| s.name == o.name)) {
            out.push(format!("- server {name}/{}", o.name));
        }
        if out.len() == before && ob != nb {
            out.push(format!("~ backend {name} (settings)"));
        }
    }
    out.extend(
        a.keys()
            .filter(|n| !b.contains_key(*n))
            .map(|n| format!("- backend {n}")),
    );
    out
}
