//! The process's millisecond clock for the atomics that remember when something happened
//! (ejection ends, drain deadlines, idle stamps, rate limits). A leaf: knows nothing of
//! veer.

use std::sync::OnceLock;

/// Milliseconds since the first call, on tokio's clock (so paused-time tests control it).
pub fn now_ms() -> u64 {
    static BASE: OnceLock<tokio::time::Instant> = OnceLock::new();
    let base = *BASE.get_or_init(tokio::time::Instant::now);
    // +1 so that 0 can mean "never" in the atomics that hold these.
    tokio::time::Instant::now().saturating_duration_since(base).as_millis() as u64 + 1
}
