//! DNS-named servers (`addr = "shop.internal:8080"`): looked up when the config loads and
//! again every `resolve_interval`, each address an instance `name#1..n` of the server
//! (HAProxy's server-template idea) with its own state — counters, health, pool.
//!
//! An address keeps its instance number for as long as the name resolves to it, so its
//! state survives other addresses coming and going; a new address takes the lowest free
//! number. A failed lookup keeps the last good answer (and says so in the log); a name
//! never resolved yet has no instances. Lookups run off the hot path: a hosts(5)-format
//! file first when `[runtime] hosts_file` names one (read afresh each time, so tests and
//! operators can change answers), then the system resolver.
//!
//! Knows the spec, not snapshots: the control plane expands the spec before it builds one.

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use crate::config::{DnsName, Spec};

/// How long one lookup may take before the last good answer stands.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Default, Clone)]
pub struct Dns {
    /// Last good answer per name, sorted.
    answers: HashMap<String, Vec<IpAddr>>,
    /// Per `(backend, server)`: the address of each instance number (index + 1); `None`
    /// for a number freed by an address that went away.
    slots: HashMap<(String, String), Vec<Option<SocketAddr>>>,
}

impl Dns {
    /// The host names `spec` asks for.
    pub fn names(spec: &Spec) -> BTreeSet<String> {
        spec.backends
            .iter()
            .flat_map(|b| b.servers())
            .filter_map(|s| s.dns.as_ref().map(|d| d.host.clone()))
            .collect()
    }

    /// The names of `names` never answered yet.
    pub fn unknown(&self, names: &BTreeSet<String>) -> BTreeSet<String> {
        names
            .iter()
            .filter(|n| !self.answers.contains_key(*n))
            .cloned()
            .collect()
    }

    /// Takes in fresh lookups: a failed or empty one keeps the last good answer. Names no
    /// longer in `names` are forgotten. Whether any answer changed.
    pub fn update(&mut self, names: &BTreeSet<String>, looked_up: Vec<(String, std::io::Result<Vec<IpAddr>>)>) -> bool {
        let mut changed = false;
        for (name, result) in looked_up {
            match result {
                Ok(ips) if ips.is_empty() => {
                    tracing::warn!(name, "DNS lookup found no address; keeping the last answer")
                }
                Ok(ips) => {
                    if self.answers.get(&name) != Some(&ips) {
                        tracing::info!(name, addresses = ?ips, "DNS answer changed");
                        self.answers.insert(name, ips);
                        changed = true;
                    }
                }
                Err(e) => tracing::warn!(name, error = %e, "DNS lookup failed; keeping the last answer"),
            }
        }
        self.answers.retain(|n, _| names.contains(n));
        changed
    }

    /// `spec` with every DNS-named server replaced by one instance per address.
    pub fn expand(&mut self, spec: &Spec) -> Spec {
        let mut out = spec.clone();
        let mut live = HashMap::new();
        for b in &mut out.backends {
            // Instances are numbered after the backend's other servers, by slot: an
            // address that stays keeps its id.
            let mut next_id = b.servers().map(|s| s.id).max().unwrap_or(0);
            for g in &mut b.groups {
                let mut servers = Vec::with_capacity(g.servers.len());
                for s in std::mem::take(&mut g.servers) {
                    let Some(DnsName { host, port }) = s.dns.clone() else {
                        servers.push(s);
                        continue;
                    };
                    let addrs: Vec<SocketAddr> = self
                        .answers
                        .get(&host)
                        .map(|ips| ips.iter().map(|ip| SocketAddr::new(*ip, port)).collect())
                        .unwrap_or_default();
                    let id = (b.name.clone(), s.name.clone());
                    let slots = self.slots.remove(&id).unwrap_or_default();
                    let slots = assign(slots, &addrs);
                    for (i, addr) in slots.iter().enumerate() {
                        next_id += 1;
                        if let Some(addr) = addr {
                            let mut instance = s.clone();
                            instance.name = format!("{}#{}", s.name, i + 1);
                            instance.id = next_id;
                            instance.addr = *addr;
                            servers.push(instance);
                        }
                    }
                    live.insert(id, slots);
                }
                g.servers = servers;
            }
        }
        self.slots = live;
        out
    }
}

/// Keeps every address that is still answered in its slot, frees the others, and gives
/// new addresses the lowest free slots.
fn assign(mut slots: Vec<Option<SocketAddr>>, addrs: &[SocketAddr]) -> Vec<Option<SocketAddr>> {
    for slot in &mut slots {
        if slot.is_some_and(|a| !addrs.contains(&a)) {
            *slot = None;
        }
    }
    for a in addrs {
        if slots.contains(&Some(*a)) {
            continue;
        }
        match slots.iter_mut().find(|s| s.is_none()) {
            Some(free) => *free = Some(*a),
            None => slots.push(Some(*a)),
        }
    }
    while slots.last() == Some(&None) {
        slots.pop();
    }
    slots
}

/// Looks up every name (off any lock: the answers go to [`Dns::update`]).
pub async fn lookup_all(
    names: &BTreeSet<String>,
    hosts_file: Option<&Path>,
) -> Vec<(String, std::io::Result<Vec<IpAddr>>)> {
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        out.push((name.clone(), lookup(name, hosts_file).await));
    }
    out
}

/// The addresses of `name`, sorted: from the hosts file if it lists the name, else from
/// the system resolver.
async fn lookup(name: &str, hosts_file: Option<&Path>) -> std::io::Result<Vec<IpAddr>> {
    if let Some(path) = hosts_file {
        let text = tokio::fs::read_to_string(path).await?;
        let found = hosts_lookup(&text, name);
        if !found.is_empty() {
            return Ok(found);
        }
    }
    let answers = tokio::time::timeout(LOOKUP_TIMEOUT, tokio::net::lookup_host((name, 0)))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "DNS lookup timed out"))??;
    let mut ips: Vec<IpAddr> = answers.map(|a| a.ip()).collect();
    ips.sort();
    ips.dedup();
    Ok(ips)
}

/// hosts(5): `address name [aliases…]` per line, `#` comments; every line naming `name`
/// adds its address.
fn hosts_lookup(text: &str, name: &str) -> Vec<IpAddr> {
    let mut ips: Vec<IpAddr> = text
        .lines()
        .filter_map(|line| {
            let line = line.split('#').next()?;
            let mut fields = line.split_whitespace();
            let ip: IpAddr = fields.next()?.parse().ok()?;
            fields.any(|n| n.eq_ignore_ascii_case(name)).then_some(ip)
        })
        .collect();
    ips.sort();
    ips.dedup();
    ips
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    #[test]
    fn addresses_keep_their_slots() {
        let (x, y, z) = (a("10.0.0.1:80"), a("10.0.0.2:80"), a("10.0.0.3:80"));
        let slots = assign(Vec::new(), &[x, y]);
        assert_eq!(slots, [Some(x), Some(y)]);
        // x goes away: y keeps #2, z takes the free #1.
        let slots = assign(slots, &[y]);
        assert_eq!(slots, [None, Some(y)]);
        let slots = assign(slots, &[y, z]);
        assert_eq!(slots, [Some(z), Some(y)]);
    }

    #[test]
    fn hosts_file_lines() {
        let text = "# comment\n10.0.0.2 shop.internal shop\n10.0.0.1\tshop.internal # two\n::1 other\n";
        let ips = hosts_lookup(text, "SHOP.internal");
        let want: Vec<IpAddr> = vec![[10, 0, 0, 1].into(), [10, 0, 0, 2].into()];
        assert_eq!(ips, want);
        assert!(hosts_lookup(text, "none").is_empty());
    }
}
