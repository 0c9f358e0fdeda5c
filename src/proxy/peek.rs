//! Looking at a connection's first bytes without consuming them (a PROXY header's length,
//! a ClientHello's server name), bounded in size and time.

use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::Instant;

/// Why the first bytes gave no verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unfinished {
    /// `deadline` passed with the bytes still incomplete.
    Timeout,
    /// The client closed (or reset) first.
    Closed,
}

/// Peeks at up to `max` bytes until `judge` gives a verdict on them. A client that sends its
/// first bytes in pieces is peeked at again as they arrive (peeking does not consume, so the
/// socket stays readable: the retries back off instead of spinning).
pub async fn until<T>(
    stream: &TcpStream,
    deadline: Instant,
    max: usize,
    mut judge: impl FnMut(&[u8]) -> Option<T>,
) -> Result<T, Unfinished> {
    let mut buf = vec![0u8; max];
    let mut seen = 0;
    let mut pause = Duration::from_millis(1);
    loop {
        let n = match tokio::time::timeout_at(deadline, stream.peek(&mut buf)).await {
            Err(_) => return Err(Unfinished::Timeout),
            Ok(Err(_)) | Ok(Ok(0)) => return Err(Unfinished::Closed),
            Ok(Ok(n)) => n,
        };
        if let Some(verdict) = judge(&buf[..n]) {
            return Ok(verdict);
        }
        if n == seen {
            // Peeking shows the same bytes after the client's EOF; readiness tells it.
            if let Ok(Ok(ready)) = tokio::time::timeout_at(deadline, stream.ready(tokio::io::Interest::READABLE)).await
            {
                if ready.is_read_closed() {
                    return Err(Unfinished::Closed);
                }
            }
            if tokio::time::timeout_at(deadline, tokio::time::sleep(pause))
                .await
                .is_err()
            {
                return Err(Unfinished::Timeout);
            }
            pause = (pause * 2).min(Duration::from_millis(50));
        }
        seen = n;
    }
}
