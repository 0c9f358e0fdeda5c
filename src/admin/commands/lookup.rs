//! Finding what a command names in the running spec or snapshot: backends by name or
//! `#<iid>`, servers as `<backend>/<server>` (names or `#<id>`, the stable server id), with
//! HAProxy's error strings; and the one way a command edits a server's overlay entry.

use std::sync::atomic::Ordering::Relaxed;

use super::answer::Answer;
use crate::config::{ServerSpec, Spec};
use crate::control::overlay::Overlay;
use crate::control::Veer;
use crate::snapshot::{Server, Snapshot};

/// A server found by `<backend>/<server>` (names or `#<id>`).
pub struct Located<'s> {
    pub id: String,
    pub server: &'s ServerSpec,
}

/// Backend by name or `#<iid>` (the `iid` of `show stat`: listeners come first).
pub fn backend_index(spec: &Spec, name: &str) -> Option<usize> {
    match name.strip_prefix('#') {
        Some(n) => n
            .parse::<usize>()
            .ok()?
            .checked_sub(spec.listeners.len() + 1)
            .filter(|i| *i < spec.backends.len()),
        None => spec.backends.iter().position(|b| b.name == name),
    }
}

pub fn locate<'s>(spec: &'s Spec, arg: Option<&str>) -> Result<Located<'s>, &'static str> {
    let (b, s) = arg.and_then(|a| a.split_once('/')).ok_or("Require 'backend/server'.")?;
    let backend = &spec.backends[backend_index(spec, b).ok_or("No such backend.")?];
    let mut servers = backend.servers();
    let server = match s.strip_prefix('#') {
        Some(n) => n.parse::<u32>().ok().and_then(|n| servers.find(|x| x.id == n)),
        None => servers.find(|x| x.name == s),
    }
    .ok_or("No such server.")?;
    Ok(Located {
        id: format!("{}/{}", backend.name, server.name),
        server,
    })
}

/// The snapshot's server for an id (for its live counters).
pub fn live_server(snap: &Snapshot, id: &str) -> Result<std::sync::Arc<Server>, &'static str> {
    snap.servers().find(|s| &*s.id == id).cloned().ok_or("No such server.")
}

pub fn active(s: &Server) -> usize {
    s.state.active_requests.load(Relaxed) + s.state.active_connections.load(Relaxed)
}

/// Locates the server in the running spec, then edits the overlay for it.
pub async fn mutate_server(
    veer: &Veer,
    target: Option<&str>,
    change: impl FnOnce(&mut Overlay, &Located) -> Result<(), String>,
) -> Answer {
    let target = target.map(str::to_owned);
    veer.mutate(move |spec, overlay| change(overlay, &locate(spec, target.as_deref())?))
        .await
        .into()
}
