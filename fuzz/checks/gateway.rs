//! Invariant of the Gateway API translation on any text (multi-document YAML, as a
//! `--gateway-dir` file or the API server would hold): objects are read or refused with a
//! problem whose line lies inside the text, the translation gives a config model or
//! refusals, and adding it to an empty config gives a config or a list of clashes — never a
//! panic. Every problem names a reason and a message.

use std::path::Path;

use veer::gateway::objects::{read_text, Objects};
use veer::gateway::{translate, Options};

pub fn check(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let mut objects = Objects::default();
    let mut problems = Vec::new();
    read_text(Path::new("fuzz.yaml"), text, &mut objects, &mut problems);
    let lines = text.lines().count().max(1);
    for p in &problems {
        assert!(
            p.at.line >= 1 && p.at.line <= lines + 1,
            "line {} of {lines}: {}",
            p.at.line,
            p.message
        );
    }
    let mut opts = Options::new("fuzz");
    opts.experimental = data.len().is_multiple_of(2);
    let t = translate::translate(&objects, &opts);
    for p in &t.problems {
        assert!(!p.reason.is_empty() && !p.message.is_empty(), "{:?}", p.message);
    }
    let mut spec = veer::config::Spec::default();
    let _ = veer::gateway::merge(&mut spec, t);
}
