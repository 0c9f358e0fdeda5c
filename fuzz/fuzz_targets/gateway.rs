//! libFuzzer entry of `checks/gateway.rs`, which states the invariant (and which
//! tests/fuzz_corpus.rs replays over fuzz/corpus/gateway/ in every `cargo test`).
#![no_main]

#[path = "../checks/mod.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::gateway::check(data));
