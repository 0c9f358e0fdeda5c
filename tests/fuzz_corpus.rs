//! Replays every committed fuzz input (fuzz/corpus/<target>/, including every crash a
//! campaign ever found) through the same check its libFuzzer target calls
//! (fuzz/checks/<target>.rs), so `cargo test` guards the corpus without cargo-fuzz or a
//! nightly toolchain. A campaign: fuzz/run.sh.
#[path = "../fuzz/checks/mod.rs"]
mod checks;

use std::path::{Path, PathBuf};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn corpus(target: &str) -> Vec<PathBuf> {
    let dir = root().join("fuzz/corpus").join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

fn replay(target: &str) {
    let (_, check) = checks::TARGETS
        .iter()
        .find(|(name, _)| *name == target)
        .unwrap_or_else(|| panic!("no check named {target}"));
    let files = corpus(target);
    assert!(files.len() >= 5, "fuzz/corpus/{target}/ has {} inputs", files.len());
    for file in files {
        let data = std::fs::read(&file).unwrap();
        // A panic names the input it came from.
        let result = std::panic::catch_unwind(|| check(&data));
        assert!(result.is_ok(), "{} broke its invariant", file.display());
    }
}

#[test]
fn every_target_has_a_corpus_a_libfuzzer_entry_and_a_bin() {
    let manifest = std::fs::read_to_string(root().join("fuzz/Cargo.toml")).unwrap();
    assert!(checks::TARGETS.len() >= 8);
    for (name, _) in checks::TARGETS {
        let entry = root().join(format!("fuzz/fuzz_targets/{name}.rs"));
        let text = std::fs::read_to_string(&entry).unwrap_or_else(|e| panic!("{}: {e}", entry.display()));
        assert!(
            text.contains(&format!("checks::{name}::check(data)")),
            "{}",
            entry.display()
        );
        assert!(
            manifest.contains(&format!("name = \"{name}\"")),
            "fuzz/Cargo.toml has no [[bin]] {name}"
        );
        assert!(!corpus(name).is_empty());
    }
}

#[test]
fn admin_corpus() {
    replay("admin");
}

#[test]
fn config_corpus() {
    replay("config");
}

#[test]
fn cookies_corpus() {
    replay("cookies");
}

#[test]
fn gateway_corpus() {
    replay("gateway");
}

#[test]
fn h1_codec_corpus() {
    replay("h1_codec");
}

#[test]
fn health_corpus() {
    replay("health");
}

#[test]
fn proxy_header_corpus() {
    replay("proxy_header");
}

#[test]
fn sni_corpus() {
    replay("sni");
}
