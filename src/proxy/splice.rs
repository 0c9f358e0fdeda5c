//! Byte-for-byte copying between two connections (TCP sessions, upgraded tunnels) with
//! correct half-close, closed when no byte has moved either way for `idle_timeout`.
//! Between two TCP sockets ([`splice_tcp`]) a buffer is held only while bytes are in
//! flight, so an idle session costs no buffer memory.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use tokio::net::TcpStream;

use super::buf;

use crate::clock::now_ms;

/// How a splice ended.
#[derive(Debug)]
pub enum Ended {
    /// Both sides finished: bytes client→server, server→client.
    Done(u64, u64),
    /// One side failed.
    Failed(io::Error),
    /// Nothing moved for the idle timeout.
    Idle,
}

/// Copies both ways between two TCP sockets until both sides are done, one fails, or
/// nothing moves for `idle` (zero = never idle out). Each direction waits for readiness,
/// then reads into a pooled buffer that goes back as soon as its bytes are written. A direction that reads EOF
/// shuts down the other socket's write side; the other direction carries on.
pub async fn splice_tcp(a: &TcpStream, b: &TcpStream, idle: Duration) -> Ended {
    let last = AtomicU64::new(now_ms());
    let both = async { tokio::try_join!(pipe(a, b, &last), pipe(b, a, &last)) };
    tokio::pin!(both);
    let mut wait = if idle.is_zero() { Duration::MAX } else { idle };
    loop {
        tokio::select! {
            res = both.as_mut() => return match res {
                Ok((up, down)) => Ended::Done(up, down),
                Err(e) => Ended::Failed(e),
            },
            _ = tokio::time::sleep(wait), if !idle.is_zero() => {
                let quiet = Duration::from_millis(now_ms().saturating_sub(last.load(Relaxed)));
                if quiet >= idle {
                    return Ended::Idle;
                }
                wait = idle - quiet;
            }
        }
    }
}

/// One direction: `from` → `to` until EOF (then `to`'s write side is shut down).
async fn pipe(from: &TcpStream, to: &TcpStream, last: &AtomicU64) -> io::Result<u64> {
    let mut total = 0u64;
    loop {
        from.readable().await?;
        let mut chunk = buf::take_one();
        let read = from.try_read_buf(&mut chunk);
        let result = match read {
            Ok(0) => {
                buf::give_back(chunk);
                // Half-close: the peer sees our EOF; the other direction keeps flowing.
                return match rustix::net::shutdown(to, rustix::net::Shutdown::Write) {
                    Ok(()) => Ok(total),
                    Err(e) if e == rustix::io::Errno::NOTCONN => Ok(total),
                    Err(e) => Err(e.into()),
                };
            }
            Ok(n) => {
                last.store(now_ms(), Relaxed);
                total += n as u64;
                write_all(to, &chunk).await
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
            Err(e) => Err(e),
        };
        buf::give_back(chunk);
        result?;
    }
}

async fn write_all(to: &TcpStream, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        to.writable().await?;
        match to.try_write(bytes) {
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
