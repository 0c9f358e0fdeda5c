//! veer's own HTTP/1.1 engine: the codec (heads, framing, chunked bodies) and buffers.
pub mod codec;
