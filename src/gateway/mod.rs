//! The Kubernetes Gateway API as a config source: Gateway, HTTPRoute, ReferenceGrant,
//! Service and EndpointSlice objects translated into the same config model the TOML file
//! produces, so everything after it (overlay, snapshot, swap, split, sticky, drain, health,
//! metrics, admin) is one code path.
//!
//! Owns reading manifests ([`objects`]) and translating them ([`translate`]). Knows the
//! config model only: nothing of snapshots, the data plane or the control plane. The
//! objects come from a directory (`--gateway-dir`, Envoy Gateway's standalone mode) or from
//! the API server ([`cluster`], `--gateway`).

pub mod cluster;
pub mod objects;
mod options;
pub mod status;
pub mod translate;

pub use objects::{Origin, Problem};
pub use options::{Options, DEFAULT_CLASS, DEFAULT_CONTROLLER};
pub use translate::Translation;

use crate::config::Spec;

/// Reads and translates the directory. `Err` when it cannot be read at all; objects that
/// cannot be used are the translation's `problems`.
pub fn load(opts: &Options) -> Result<Translation, String> {
    let (objects, mut problems) = match &opts.cluster {
        Some(cluster) => (cluster.objects(), Vec::new()),
        None => objects::read_dir(&opts.dir)?,
    };
    let mut t = translate::translate(&objects, opts);
    problems.append(&mut t.problems);
    problems.sort_by(|a, b| (&a.at.file, a.at.line).cmp(&(&b.at.file, b.at.line)));
    t.problems = problems;
    t.digest = objects.digest;
    Ok(t)
}

/// Adds the translation's listeners and backends to `spec` (the TOML file's, or the
/// defaults). `Err` names what clashes with the file's own listeners, backends or ports.
pub fn merge(spec: &mut Spec, t: Translation) -> Result<(), Vec<String>> {
    let mut clashes = Vec::new();
    for l in &t.listeners {
        if let Some(other) = spec.listeners.iter().find(|o| o.name == l.name || o.bind == l.bind) {
            clashes.push(format!(
                "{}: Gateway listener {} on {} clashes with the config's listener {} on {}",
                l.bind_at, l.name, l.bind, other.name, other.bind
            ));
        }
    }
    for b in &t.backends {
        if spec.backends.iter().any(|o| o.name == b.name) {
            clashes.push(format!(
                "backend {} is defined by the config and by a Gateway route",
                b.name
            ));
        }
    }
    if !clashes.is_empty() {
        return Err(clashes);
    }
    spec.listeners.extend(t.listeners);
    spec.backends.extend(t.backends);
    spec.hash ^= t.digest;
    Ok(())
}
