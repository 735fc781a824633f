//! The gateway's own HTTP/2 server: frames, HPACK, streams and flow control for client
//! connections (RFC 9113), in place of hyper's HTTP/2 server and the h2 crate.

pub mod conn;
pub mod frame;
pub mod hpack;
