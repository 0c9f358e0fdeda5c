//! Group commands (veer's own): `set split` (every group weight of a backend at once, all or
//! nothing) and `set group … state` (every server of a group, refusing to leave a backend
//! with no group that could take new clients unless forced).

use super::answer::Answer;
use super::lookup::backend_index;
use crate::config::AdminState;
use crate::control::Veer;

pub async fn set_split(veer: &Veer, args: &[&str], who: &str) -> Answer {
    let Some((b, pairs)) = args.split_first() else {
        return Answer::err("Usage: set split <backend> <group>=<weight>...");
    };
    let (b, pairs) = (b.to_string(), pairs.iter().map(|p| p.to_string()).collect::<Vec<_>>());
    let result = veer
        .mutate_by(who, move |spec, o| {
            let backend = &spec.backends[backend_index(spec, &b).ok_or("No such backend.")?];
            if let Some(r) = o.rollouts.get(&backend.name).filter(|r| {
                use crate::control::rollout_state::Phase;
                matches!(r.phase, Phase::Running | Phase::Paused)
            }) {
                return Err(format!(
                    "A rollout of backend '{}' is {}; abort or promote it first.",
                    backend.name,
                    r.phase.as_str()
                ));
            }
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
            o.set_split(backend, weights, who, "set split");
            Ok(())
        })
        .await;
    result.into()
}

pub async fn set_group_state(veer: &Veer, target: &str, state: &str, force: bool) -> Answer {
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
