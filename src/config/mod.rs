//! Configuration: the TOML file (`model`), its validation with file:line:col diagnostics
//! (`validate`, `diag`), the TLS files it names (`tls`), the typed result every other module consumes (`spec`), and the
//! watcher that turns file changes and SIGHUP into reloads (`watch`).

pub mod diag;
pub mod model;
mod names;
mod recover;
pub use names::invalid_char;
pub mod spec;
pub mod tls;
mod validate;
pub mod watch;

use std::path::Path;

pub use diag::{ConfigErrors, Diagnostic};
pub use model::NotifyFormat;
pub use spec::*;

/// Reads, parses and validates a config file.
pub fn load(path: &Path) -> Result<Spec, ConfigErrors> {
    let source = std::fs::read_to_string(path)
        .map_err(|e| ConfigErrors(vec![Diagnostic::whole_file(path, format!("cannot read config: {e}"))]))?;
    parse(path, &source)
}

/// [`load`] for a file another source adds listeners to (the Gateway API's): it may have
/// none of its own.
pub fn load_base(path: &Path) -> Result<Spec, ConfigErrors> {
    let source = std::fs::read_to_string(path)
        .map_err(|e| ConfigErrors(vec![Diagnostic::whole_file(path, format!("cannot read config: {e}"))]))?;
    parse_base(path, &source)
}

/// Parses and validates config text; `path` is only used to name the file in errors. Every
/// error is reported: values of the wrong type too, each in plain words (see `recover`).
pub fn parse(path: &Path, source: &str) -> Result<Spec, ConfigErrors> {
    let spec = parse_base(path, source);
    // An empty or truncated file (a config tool that truncates before it writes) must not
    // take every listener down; HAProxy refuses to start without one too.
    let empty = Diagnostic::whole_file(
        path,
        "no [[listener]]: a config needs at least one listener (an empty or truncated file is refused)",
    );
    match spec {
        Ok(s) if s.listeners.is_empty() => Err(ConfigErrors(vec![empty])),
        Err(mut e) if source.trim().is_empty() || !source.contains("[[listener]]") => {
            e.0.push(empty);
            Err(sorted(e.0))
        }
        other => other,
    }
}

/// [`parse`] without the rule that a config has a listener.
pub fn parse_base(path: &Path, source: &str) -> Result<Spec, ConfigErrors> {
    let mut copy = recover::Patched::new(source);
    let mut errors = Vec::new();
    let raw = loop {
        match toml::from_str::<model::RawConfig>(&copy.text) {
            Ok(raw) => break Some(raw),
            Err(e) => {
                let span = e.span().unwrap_or(0..0);
                let key = recover::key_before(&copy.text, span.start);
                let message = recover::plain(e.message(), key);
                errors.push(Diagnostic::at(path, source, copy.original(span.clone()), message));
                if !copy.patch(span, e.message()) {
                    break None;
                }
            }
        }
    };
    let checked = raw.map(|raw| validate::validate(path, &copy.text, raw));
    let mut spec = match checked {
        Some(Ok(spec)) if errors.is_empty() => spec,
        Some(Ok(_)) | None => return Err(sorted(errors)),
        Some(Err(found)) => {
            // Validation saw the copy: its findings at a placeholder are not the file's.
            for d in found {
                let span = d.span.clone().unwrap_or(0..0);
                let original = copy.original(span);
                if !copy.at_patch(&original) {
                    errors.push(Diagnostic::at(path, source, original, d.message));
                }
            }
            return Err(sorted(errors));
        }
    };
    spec.hash = xxhash_rust::xxh3::xxh3_64(source.as_bytes());
    Ok(spec)
}

fn sorted(mut errors: Vec<Diagnostic>) -> ConfigErrors {
    errors.sort_by_key(|d| (d.line, d.col));
    ConfigErrors(errors)
}
