//! The runtime overlay: every change made through the admin plane (server states, weights,
//! addresses, group splits, added and deleted servers), kept on top of the config file.
//!
//! The running spec is always `config ⊕ overlay` (design §2). The overlay is written to
//! `[admin].state_file` atomically (temp file, fsync, rename, fsync of the directory) before
//! a command answers, and re-applied on every reload and restart, so runtime changes survive
//! both — HAProxy loses them on reload (its issue #199). Entries the config no longer has a
//! place for (a removed server, group or backend) are dropped with a log line.
//!
//! Precedence: for each field it sets, the overlay wins over the file. `clear overlay`
//! returns a server or backend (or everything) to what the file says.
//!
//! Deploy state lives here too, so it survives the same way: group metadata set at runtime,
//! each backend's split history (what `rollback` returns to) and its rollout.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::config::{AdminState, ServerSpec, Spec};

/// Runtime changes, keyed by `backend/server` or backend name.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Overlay {
    /// Format version of the state file.
    #[serde(default = "version")]
    pub version: u32,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub servers: BTreeMap<String, ServerChange>,
    /// backend → group → split weight.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub splits: BTreeMap<String, BTreeMap<String, u32>>,
    /// Servers created by `add server`, keyed by `backend/server`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub added: BTreeMap<String, AddedServer>,
    /// Config servers removed by `del server`.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub deleted: BTreeSet<String>,
    /// `backend/group` → metadata set by `set meta` (an empty value removes the key).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub meta: BTreeMap<String, BTreeMap<String, String>>,
    /// backend → the splits that held, oldest first, at most [`HISTORY`].
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub history: BTreeMap<String, Vec<SplitRecord>>,
    /// backend → its rollout: running, paused, or the last one finished (kept to show).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub rollouts: BTreeMap<String, super::rollout_state::Rollout>,
}

/// Splits kept per backend in its history.
pub const HISTORY: usize = 20;

impl Overlay {
    /// What the overlay changes, for a log line: `2 servers, 1 split, 1 added`; `None` when
    /// it changes nothing the file says.
    pub fn summary(&self) -> Option<String> {
        let parts: Vec<String> = [
            (self.servers.len(), "server"),
            (self.splits.len(), "split"),
            (self.added.len(), "added server"),
            (self.deleted.len(), "deleted server"),
            (self.meta.len(), "group metadata"),
        ]
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, what)| format!("{n} {what}{}", if *n > 1 && !what.ends_with('a') { "s" } else { "" }))
        .collect();
        (!parts.is_empty()).then(|| parts.join(", "))
    }
}

/// A split that held, from when, set by whom and how.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SplitRecord {
    pub time: String,
    pub weights: BTreeMap<String, u32>,
    pub who: String,
    pub cause: String,
}

fn version() -> u32 {
    1
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerChange {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<AdminState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub addr: Option<SocketAddr>,
    /// `disable health` / `disable agent` (kept for tools that toggle them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_disabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_disabled: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddedServer {
    pub group: String,
    pub addr: SocketAddr,
    pub weight: u32,
    /// Its server id, kept across reloads and restarts; 0 (older state files) = not yet
    /// numbered.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub id: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// Splits `backend/server` at the first '/'.
pub fn split_id(id: &str) -> Option<(&str, &str)> {
    id.split_once('/')
}

impl Overlay {
    /// Reads a state file; a missing file is an empty overlay.
    pub fn load(path: &Path) -> Result<Overlay, String> {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Overlay {
                version: 1,
                ..Overlay::default()
            }),
            Err(e) => Err(format!("{}: {e}", path.display())),
        }
    }

    /// Writes the state file atomically (mode 0600, temp file, fsync, rename, directory
    /// fsync): a crash leaves either the old or the new file, and on error the old file and
    /// no temp file remain.
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        use std::os::unix::fs::OpenOptionsExt;
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir)?;
        let tmp = dir.join(format!(
            ".{}.tmp",
            path.file_name().and_then(|n| n.to_str()).unwrap_or("state")
        ));
        let write = || -> std::io::Result<()> {
            // The fleet's routing state is nobody else's business: 0600 from the start, not
            // chmod-ed after (a reader could open it in between).
            let _ = std::fs::remove_file(&tmp);
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(&serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?)?;
            f.write_all(b"\n")?;
            f.sync_all()?;
            std::fs::rename(&tmp, path)?;
            std::fs::File::open(dir)?.sync_all()
        };
        let result = write();
        if result.is_err() {
            // The old file stays as it was; no temp file is left behind.
            let _ = std::fs::remove_file(&tmp);
        }
        result
    }

    /// Gives each added server an id: its own, unless it has none yet or a config server
    /// now holds it (the file wins), then the lowest free one — remembered, so it names
    /// the same server after every reload and restart.
    fn number_added(&mut self, spec: &mut Spec) {
        for b in &mut spec.backends {
            let name = b.name.clone();
            let key = |s: &ServerSpec| format!("{name}/{}", s.name);
            let config_ids: std::collections::HashSet<u32> = b
                .servers()
                .filter(|s| !self.added.contains_key(&key(s)))
                .map(|s| s.id)
                .collect();
            for s in b.groups.iter_mut().flat_map(|g| &mut g.servers) {
                if config_ids.contains(&s.id) && self.added.contains_key(&key(s)) {
                    s.id = 0;
                }
            }
            b.number_servers(crate::config::Numbering::LowestFree);
            for s in b.servers() {
                if let Some(added) = self.added.get_mut(&key(s)) {
                    added.id = s.id;
                }
            }
        }
    }

    pub fn server_mut(&mut self, id: &str) -> &mut ServerChange {
        self.servers.entry(id.to_string()).or_default()
    }

    /// `config ⊕ self`. Entries with no place in `config` are removed from `self`; the
    /// returned notes say which and why (for the log).
    pub fn apply(&mut self, config: &Spec) -> (Spec, Vec<String>) {
        let mut spec = config.clone();
        let mut notes = Vec::new();

        self.added.retain(|id, added| {
            let Some((b, s)) = split_id(id) else { return false };
            let Some(backend) = spec.backends.iter_mut().find(|x| x.name == b) else {
                notes.push(format!("added server {id}: backend no longer exists"));
                return false;
            };
            if backend.servers().any(|x| x.name == s) {
                notes.push(format!("added server {id}: the config file now defines it"));
                return false;
            }
            let Some(group) = backend.groups.iter_mut().find(|g| g.name == added.group) else {
                notes.push(format!("added server {id}: group {:?} no longer exists", added.group));
                return false;
            };
            group.servers.push(ServerSpec {
                name: s.to_string(),
                id: added.id,
                addr: added.addr,
                weight: added.weight,
                initial_weight: added.weight,
                state: AdminState::Maint,
                checks_disabled: false,
                maxconn: 0,
                dns: None,
                zone: None,
            });
            true
        });

        self.deleted.retain(|id| {
            let Some((b, s)) = split_id(id) else { return false };
            let removed = spec
                .backends
                .iter_mut()
                .filter(|x| x.name == b)
                .flat_map(|x| &mut x.groups)
                .any(|g| {
                    let before = g.servers.len();
                    g.servers.retain(|x| x.name != s);
                    g.servers.len() != before
                });
            if !removed {
                notes.push(format!("deleted server {id}: the config file no longer defines it"));
            }
            removed
        });
        self.number_added(&mut spec);

        self.servers.retain(|id, change| {
            let server = split_id(id).and_then(|(b, s)| {
                spec.backends
                    .iter_mut()
                    .find(|x| x.name == b)?
                    .groups
                    .iter_mut()
                    .flat_map(|g| &mut g.servers)
                    .find(|x| x.name == s)
            });
            let Some(server) = server else {
                notes.push(format!(
                    "runtime changes of server {id} dropped: the config file no longer defines it"
                ));
                return false;
            };
            if let Some(state) = change.state {
                server.state = state;
            }
            if let Some(off) = change.health_disabled {
                server.checks_disabled = off;
            }
            if let Some(w) = change.weight {
                server.weight = w;
            }
            if let Some(addr) = change.addr {
                server.addr = addr;
            }
            true
        });

        self.splits.retain(|b, groups| {
            let Some(backend) = spec.backends.iter_mut().find(|x| x.name == *b) else {
                notes.push(format!(
                    "split of backend {b} dropped: the config file no longer defines it"
                ));
                return false;
            };
            groups.retain(|g, w| match backend.groups.iter_mut().find(|x| x.name == *g) {
                Some(group) => {
                    group.weight = *w;
                    true
                }
                None => {
                    notes.push(format!(
                        "split weight of group {b}/{g} dropped: the config file no longer defines it"
                    ));
                    false
                }
            });
            !groups.is_empty()
        });

        self.meta.retain(|id, values| {
            let group = split_id(id).and_then(|(b, g)| {
                spec.backends
                    .iter_mut()
                    .find(|x| x.name == b)?
                    .groups
                    .iter_mut()
                    .find(|x| x.name == g)
            });
            let Some(group) = group else {
                notes.push(format!(
                    "metadata of group {id} dropped: the config file no longer defines it"
                ));
                return false;
            };
            for (k, v) in values.iter() {
                if v.is_empty() {
                    group.meta.remove(k);
                } else {
                    group.meta.insert(k.clone(), v.clone());
                }
            }
            true
        });

        self.history.retain(|b, _| spec.backends.iter().any(|x| x.name == *b));
        for (b, rollout) in self.rollouts.iter_mut() {
            let groups = spec
                .backends
                .iter()
                .find(|x| x.name == *b)
                .map(|x| x.groups.iter().map(|g| g.name.clone()).collect::<Vec<_>>());
            if rollout.is_active() && groups.as_ref() != Some(&rollout.groups) {
                let reason = "the config changed the backend's groups";
                notes.push(format!("rollout of backend {b} aborted: {reason}"));
                rollout.finish(super::rollout_state::Phase::Aborted, reason);
            }
        }
        (spec, notes)
    }

    /// Records the split `backend` holds after this change in its history (the split held
    /// before it first, when the history is empty), unless it is the one recorded last.
    pub fn record_split(&mut self, backend: &crate::config::BackendSpec, who: &str, cause: &str) {
        let now: BTreeMap<String, u32> = backend
            .groups
            .iter()
            .map(|g| {
                let w = self.splits.get(&backend.name).and_then(|s| s.get(&g.name)).copied();
                (g.name.clone(), w.unwrap_or(g.weight))
            })
            .collect();
        let history = self.history.entry(backend.name.clone()).or_default();
        if history.is_empty() {
            history.push(SplitRecord {
                time: super::events::now(),
                weights: backend.groups.iter().map(|g| (g.name.clone(), g.weight)).collect(),
                who: "config".into(),
                cause: "before the first recorded change".into(),
            });
        }
        if history.last().map(|r| &r.weights) == Some(&now) {
            return;
        }
        history.push(SplitRecord {
            time: super::events::now(),
            weights: now,
            who: who.to_string(),
            cause: cause.to_string(),
        });
        let excess = history.len().saturating_sub(HISTORY);
        history.drain(..excess);
    }

    /// Sets `backend`'s split to `weights` (groups not named keep theirs) and records it.
    pub fn set_split(
        &mut self,
        backend: &crate::config::BackendSpec,
        weights: impl IntoIterator<Item = (String, u32)>,
        who: &str,
        cause: &str,
    ) {
        self.splits.entry(backend.name.clone()).or_default().extend(weights);
        self.record_split(backend, who, cause);
    }

    /// Forgets runtime changes: all of them, a backend's, or one server's. Returns whether
    /// anything was removed.
    pub fn clear(&mut self, scope: Option<&str>) -> bool {
        let before = self.clone();
        match scope {
            None => {
                *self = Overlay {
                    version: 1,
                    ..Overlay::default()
                }
            }
            Some(target) if target.contains('/') => {
                self.servers.remove(target);
                self.added.remove(target);
                self.deleted.remove(target);
            }
            Some(backend) => {
                let prefix = format!("{backend}/");
                self.servers.retain(|id, _| !id.starts_with(&prefix));
                self.added.retain(|id, _| !id.starts_with(&prefix));
                self.deleted.retain(|id| !id.starts_with(&prefix));
                self.meta.retain(|id, _| !id.starts_with(&prefix));
                self.splits.remove(backend);
            }
        }
        *self != before
    }
}
