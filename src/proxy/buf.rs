//! Read buffers that exist only while a connection is busy: taken from a per-thread pool when
//! bytes are about to arrive, given back as soon as every byte has been consumed. An idle
//! keep-alive connection holds none.

use std::cell::RefCell;
use std::io;

use tokio::io::AsyncReadExt;

/// Capacity of a pooled buffer: any ordinary head and a good slice of body in one read.
pub const SIZE: usize = 16 * 1024;
/// Read buffers kept per thread (beyond that they are freed): enough for the exchanges a
/// worker has in flight at once, a bounded 4 MiB at most.
const KEEP: usize = 256;
/// Output buffers (rewritten heads) start this small and are kept up to [`OUT_MAX`].
const OUT_SIZE: usize = 1024;
const OUT_MAX: usize = 64 * 1024;

thread_local! {
    static POOL: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
    static OUT_POOL: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

fn take() -> Vec<u8> {
    POOL.with(|p| p.borrow_mut().pop())
        .unwrap_or_else(|| Vec::with_capacity(SIZE))
}

fn give(b: Vec<u8>) {
    // Grown ones (a large head) are not kept: the pool holds ordinary buffers only.
    if b.capacity() == SIZE {
        keep(&POOL, b);
    }
}

fn keep(pool: &'static std::thread::LocalKey<RefCell<Vec<Vec<u8>>>>, mut b: Vec<u8>) {
    b.clear();
    pool.with(|p| {
        let mut p = p.borrow_mut();
        if p.len() < KEEP {
            p.push(b);
        }
    });
}

/// Bytes read from a socket and not yet consumed: `data[pos..]`.
#[derive(Default)]
pub struct Buf {
    data: Vec<u8>,
    pos: usize,
}

impl Buf {
    /// The bytes not consumed yet.
    pub fn unread(&self) -> &[u8] {
        &self.data[self.pos..]
    }

    pub fn is_empty(&self) -> bool {
        self.pos == self.data.len()
    }

    /// Marks `n` bytes as used; an emptied buffer goes back to the pool.
    pub fn consume(&mut self, n: usize) {
        self.pos = (self.pos + n).min(self.data.len());
        if self.is_empty() {
            self.release();
        }
    }

    /// Marks `n` bytes as used, keeping the memory even when emptied (a body relay reads
    /// into it again at once).
    pub fn consume_keep(&mut self, n: usize) {
        self.pos = (self.pos + n).min(self.data.len());
        if self.is_empty() {
            self.pos = 0;
            self.data.clear();
        }
    }

    /// Reads with at least `want` bytes of room (for large bodies: fewer, larger reads).
    pub async fn read_bulk(
        &mut self,
        stream: &mut (impl tokio::io::AsyncRead + Unpin),
        want: usize,
    ) -> io::Result<usize> {
        if self.data.capacity() == 0 && want <= SIZE {
            self.data = take();
        }
        if self.data.capacity() - self.data.len() < want {
            self.data.reserve(want);
        }
        stream.read_buf(&mut self.data).await
    }

    /// [`Buf::read_from`] for a poll-based caller (a response body polled by hyper).
    pub fn poll_read_from(
        &mut self,
        cx: &mut std::task::Context<'_>,
        stream: &mut (impl tokio::io::AsyncRead + Unpin),
    ) -> std::task::Poll<io::Result<usize>> {
        if self.data.capacity() == 0 {
            self.data = take();
        }
        if self.data.len() == self.data.capacity() {
            if self.pos > 0 {
                self.data.drain(..self.pos);
                self.pos = 0;
            } else {
                self.data.reserve(SIZE);
            }
        }
        tokio_util::io::poll_read_buf(std::pin::Pin::new(stream), cx, &mut self.data)
    }

    /// A non-blocking [`Buf::read_from`] (one ordinary buffer's room): `WouldBlock` when the
    /// socket has nothing, and then no buffer is kept.
    pub fn try_read_from<T: crate::stream::Session>(
        &mut self,
        stream: &mut crate::stream::Stream<T>,
    ) -> io::Result<usize> {
        if self.data.capacity() == 0 {
            self.data = take();
        }
        if self.pos > 0 && self.data.len() == self.data.capacity() {
            self.data.drain(..self.pos);
            self.pos = 0;
        }
        let r = stream.try_read_buf(&mut self.data);
        if self.is_empty() {
            self.release();
        }
        r
    }

    /// Gives the memory back (the unread bytes are dropped).
    pub fn release(&mut self) {
        self.pos = 0;
        give(std::mem::take(&mut self.data));
    }

    /// Reads what the socket has, appending to the unread bytes; grows up to `limit` bytes
    /// of unread data. `Ok(0)` is EOF (or a full buffer at `limit`, which the caller checks
    /// with [`Buf::unread`]).
    pub async fn read_from(
        &mut self,
        stream: &mut (impl tokio::io::AsyncRead + Unpin),
        limit: usize,
    ) -> io::Result<usize> {
        if self.data.capacity() == 0 {
            self.data = take();
        }
        if self.pos > 0 && self.data.len() == self.data.capacity() {
            // Make room at the front rather than grow.
            self.data.drain(..self.pos);
            self.pos = 0;
        }
        let unread = self.data.len() - self.pos;
        if unread >= limit {
            return Ok(0);
        }
        if self.data.len() == self.data.capacity() {
            self.data.reserve((limit - unread).min(self.data.capacity().max(SIZE)));
        }
        stream.read_buf(&mut self.data).await
    }
}

impl Drop for Buf {
    fn drop(&mut self) {
        if self.data.capacity() > 0 {
            self.release();
        }
    }
}

/// A pooled output buffer, returned on drop.
pub struct Out(pub Vec<u8>);

impl Out {
    pub fn new() -> Self {
        Out(OUT_POOL
            .with(|p| p.borrow_mut().pop())
            .unwrap_or_else(|| Vec::with_capacity(OUT_SIZE)))
    }
}

impl Default for Out {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Out {
    fn drop(&mut self) {
        let b = std::mem::take(&mut self.0);
        if b.capacity() <= OUT_MAX {
            keep(&OUT_POOL, b);
        }
    }
}

/// A read buffer from the pool (empty, [`SIZE`] capacity), for code that reads with
/// `try_read_buf`; give it back with [`give_back`].
pub fn take_one() -> Vec<u8> {
    take()
}

/// Returns a buffer from [`take_one`] to the pool.
pub fn give_back(b: Vec<u8>) {
    give(b)
}
