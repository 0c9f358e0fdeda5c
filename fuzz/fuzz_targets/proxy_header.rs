//! libFuzzer entry of `checks/proxy_header.rs`, which states the invariant (and which
//! tests/fuzz_corpus.rs replays over fuzz/corpus/proxy_header/ in every `cargo test`).
#![no_main]

#[path = "../checks/mod.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::proxy_header::check(data));
