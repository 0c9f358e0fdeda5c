//! Rate-limited warnings for the data path, and the one test for "this failure is ours".
//!
//! At the descriptor limit every accept and every connect fails the same way, hundreds of
//! times a second; one line per second per kind, carrying how many were suppressed since the
//! last one, says the same without flooding the log (and the disk it writes to). Knows
//! nothing of veer beyond the clock in [`crate::clock::now_ms`].

use std::io;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// The repeated warnings that are limited, one budget each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Accept,
    UpstreamConnect,
    LocalResources,
    TcpConnect,
    ReadTimeout,
    ProxyProtocol,
    TlsHandshake,
    RetryBudget,
    Queue,
}

const KINDS: usize = 9;
/// One line per kind per this many milliseconds.
pub const WINDOW_MS: u64 = 1000;

/// Per-kind budgets: the time of the last line written and the lines suppressed since.
pub struct Limiter {
    last: [AtomicU64; KINDS],
    suppressed: [AtomicU64; KINDS],
}

impl Limiter {
    pub const fn new() -> Self {
        Limiter {
            last: [const { AtomicU64::new(0) }; KINDS],
            suppressed: [const { AtomicU64::new(0) }; KINDS],
        }
    }

    /// At `now_ms` (never 0): `Some(suppressed)` when a line of `kind` may be written, with
    /// the number of lines suppressed since the previous one; `None` to stay quiet.
    pub fn admit(&self, kind: Kind, now_ms: u64) -> Option<u64> {
        let i = kind as usize;
        let last = self.last[i].load(Relaxed);
        if last != 0 && now_ms < last + WINDOW_MS {
            self.suppressed[i].fetch_add(1, Relaxed);
            return None;
        }
        // One writer per window even when many threads arrive at once.
        match self.last[i].compare_exchange(last, now_ms, Relaxed, Relaxed) {
            Ok(_) => Some(self.suppressed[i].swap(0, Relaxed)),
            Err(_) => {
                self.suppressed[i].fetch_add(1, Relaxed);
                None
            }
        }
    }
}

impl Default for Limiter {
    fn default() -> Self {
        Self::new()
    }
}

/// The process's limiter, used by [`crate::warn_limited!`].
pub static LIMITER: Limiter = Limiter::new();

/// `Some(suppressed)` when a warning of `kind` may be logged now.
pub fn admit(kind: Kind) -> Option<u64> {
    LIMITER.admit(kind, crate::clock::now_ms())
}

/// `tracing::warn!` at most once per second per [`Kind`], with a `suppressed` count field.
#[macro_export]
macro_rules! warn_limited {
    ($kind:expr, $($arg:tt)+) => {
        if let Some(suppressed) = $crate::ratelimit::admit($kind) {
            tracing::warn!(suppressed, $($arg)+);
        }
    };
}

/// True when an I/O error is this machine running out of something (descriptors, buffer
/// memory, local ports) rather than the peer failing: such a failure says nothing about the
/// server, so it must never eject one or fail over to another.
pub fn is_local_resource_error(e: &io::Error) -> bool {
    use rustix::io::Errno;
    let local = [
        Errno::MFILE,
        Errno::NFILE,
        Errno::NOBUFS,
        Errno::NOMEM,
        Errno::ADDRNOTAVAIL,
    ];
    e.raw_os_error()
        .is_some_and(|code| local.iter().any(|l| l.raw_os_error() == code))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_window_with_the_suppressed_count() {
        let l = Limiter::new();
        assert_eq!(l.admit(Kind::Accept, 1), Some(0));
        for t in 2..100 {
            assert_eq!(l.admit(Kind::Accept, t), None);
        }
        // Another kind has its own budget.
        assert_eq!(l.admit(Kind::TcpConnect, 50), Some(0));
        assert_eq!(l.admit(Kind::Accept, 1 + WINDOW_MS - 1), None);
        assert_eq!(l.admit(Kind::Accept, 1 + WINDOW_MS), Some(99));
        assert_eq!(l.admit(Kind::Accept, 2 + WINDOW_MS), None);
        assert_eq!(l.admit(Kind::Accept, 5 * WINDOW_MS), Some(1));
    }

    #[test]
    fn local_resource_errors() {
        use rustix::io::Errno;
        for e in [Errno::MFILE, Errno::NFILE, Errno::NOBUFS, Errno::ADDRNOTAVAIL] {
            assert!(is_local_resource_error(&io::Error::from_raw_os_error(e.raw_os_error())));
        }
        for e in [Errno::CONNREFUSED, Errno::TIMEDOUT, Errno::HOSTUNREACH] {
            assert!(!is_local_resource_error(&io::Error::from_raw_os_error(
                e.raw_os_error()
            )));
        }
        assert!(!is_local_resource_error(&io::Error::other("x")));
    }
}
