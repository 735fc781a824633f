//! Reverse proxy: header hygiene and forwarding to the upstream.

pub mod forward;
pub mod headers;
pub mod upstream;
