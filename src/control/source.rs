//! Where the running config comes from: the TOML file, a directory of Gateway API
//! manifests (`--gateway-dir`), or both — the file's `[admin]`, `[runtime]`, listeners and
//! backends plus the Gateways'. Read into one [`Spec`], so start and reload are the same
//! procedure (config ⊕ overlay → snapshot → swap) whatever the source.

use std::path::{Path, PathBuf};

use crate::config::{self, ConfigErrors, Diagnostic, Spec};
use crate::gateway;

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Source {
    /// The TOML file; without one, every setting is its default.
    pub file: Option<PathBuf>,
    pub gateway: Option<gateway::Options>,
    /// `--zone-aware`: on whatever the file says.
    pub zone_aware: bool,
}

impl<P: Into<PathBuf>> From<P> for Source {
    fn from(file: P) -> Self {
        Source {
            file: Some(file.into()),
            ..Source::default()
        }
    }
}

impl Source {
    /// Reads and validates everything the source names. Gateway objects veer cannot use
    /// are logged and left out (the rest applies); a source that yields no listener at all
    /// is refused, as an empty file is.
    pub fn load(&self) -> Result<Spec, ConfigErrors> {
        let mut spec = self.load_sources()?;
        spec.runtime.zone_aware |= self.zone_aware;
        Ok(spec)
    }

    fn load_sources(&self) -> Result<Spec, ConfigErrors> {
        let Some(opts) = &self.gateway else {
            return match &self.file {
                Some(file) => config::load(file),
                None => Ok(Spec::default()),
            };
        };
        let mut spec = match &self.file {
            Some(file) => config::load_base(file)?,
            None => Spec::default(),
        };
        let opts = gateway::Options {
            idle_timeout: spec.runtime.idle_timeout,
            ..opts.clone()
        };
        let whole = |message: String| Diagnostic::whole_file(&opts.dir, message);
        let t = gateway::load(&opts).map_err(|e| ConfigErrors(vec![whole(e)]))?;
        for p in &t.problems {
            tracing::warn!(reason = p.reason, "Gateway API, left out: {p}");
        }
        let status = t.status.clone();
        gateway::merge(&mut spec, t).map_err(|clashes| ConfigErrors(clashes.into_iter().map(whole).collect()))?;
        if spec.listeners.is_empty() {
            return Err(ConfigErrors(vec![whole(format!(
                "no listener: no Gateway of class {:?} with a usable listener in {} (an empty source is refused)",
                opts.class,
                opts.dir.display()
            ))]));
        }
        // What the objects' status will say (written by the Lease holder of a fleet).
        if let Some(cluster) = &opts.cluster {
            cluster.publish(status, &opts.controller);
        }
        Ok(spec)
    }

    /// What a reload reads, for logs and `show info`: the file, else the directory.
    pub fn path(&self) -> &Path {
        match (&self.file, &self.gateway) {
            (Some(f), _) => f,
            (None, Some(g)) => &g.dir,
            (None, None) => Path::new(""),
        }
    }
}
