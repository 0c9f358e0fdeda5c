//! Configuration: the TOML file (`model`), its validation with file:line:col diagnostics
//! (`validate`, `diag`), the TLS files it names (`tls`), the typed result every other module consumes (`spec`), and the
//! watcher that turns file changes and SIGHUP into reloads (`watch`).

pub mod diag;
pub mod model;
mod names;
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

/// Parses and validates config text; `path` is only used to name the file in errors.
pub fn parse(path: &Path, source: &str) -> Result<Spec, ConfigErrors> {
    let raw: model::RawConfig = toml::from_str(source).map_err(|e| {
        let span = e.span().unwrap_or(0..0);
        ConfigErrors(vec![Diagnostic::at(
            path,
            source,
            span,
            e.message().trim_end().to_string(),
        )])
    })?;
    let mut spec = validate::validate(path, source, raw).map_err(|mut errors| {
        errors.sort_by_key(|d| (d.line, d.col));
        ConfigErrors(errors)
    })?;
    spec.hash = xxhash_rust::xxh3::xxh3_64(source.as_bytes());
    Ok(spec)
}
