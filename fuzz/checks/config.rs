//! Invariant: any bytes given as a config file produce either a Spec or diagnostics whose
//! line/column lie inside the file — never a panic.

pub fn check(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Err(errors) = veer::config::parse(std::path::Path::new("fuzz.toml"), text) {
            let lines = text.lines().count().max(1);
            for d in &errors.0 {
                assert!(d.line >= 1 && d.line <= lines + 1, "{d}");
                let _ = d.render();
            }
        }
    }
}
