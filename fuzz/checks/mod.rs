//! The fuzz targets' invariants, one module each, as plain functions of the input bytes:
//! the libFuzzer entries in fuzz_targets/ call them, and tests/fuzz_corpus.rs replays every
//! file of fuzz/corpus/<target>/ through the same function in `cargo test`.
#![allow(dead_code)]

pub mod admin;
pub mod config;
pub mod cookies;
pub mod gateway;
pub mod h1_codec;
pub mod health;
pub mod proxy_header;
pub mod sni;

/// A target's check: panics when the input breaks the invariant.
pub type Check = fn(&[u8]);

/// Every target: (name = its corpus directory and its fuzz_targets/ file, check).
pub const TARGETS: [(&str, Check); 8] = [
    ("admin", admin::check),
    ("config", config::check),
    ("cookies", cookies::check),
    ("gateway", gateway::check),
    ("h1_codec", h1_codec::check),
    ("health", health::check),
    ("proxy_header", proxy_header::check),
    ("sni", sni::check),
];
