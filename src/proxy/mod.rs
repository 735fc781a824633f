//! Reverse proxy: header hygiene, forwarding to the upstream, and the gateway's own HTTP/1.1 client.

pub mod forward;
pub mod headers;
pub mod outgoing;
pub mod upstream;
pub mod wire;
