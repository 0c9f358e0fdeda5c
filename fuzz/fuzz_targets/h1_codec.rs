//! libFuzzer entry of `checks/h1_codec.rs`, which states the invariant (and which
//! tests/fuzz_corpus.rs replays over fuzz/corpus/h1_codec/ in every `cargo test`).
#![no_main]

#[path = "../checks/mod.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::h1_codec::check(data));
