//! veer's own HTTP/1.1 engine (design §12): the codec (heads, framing, chunked bodies),
//! buffers held only while a connection is busy, and the connection loop that runs every
//! exchange in the client's own task. HTTP/2 stays on hyper (see [`super::http`]).
pub mod client;
pub mod codec;
pub mod conn;
mod relay;
pub(super) mod request;
mod response;
pub mod server;
pub(super) mod to_h2;
