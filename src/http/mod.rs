//! HTTP layer: routing between `/.auth/` and protected traffic, synthetic responses, pages, connection facts.

pub mod access;
pub mod extract;
pub mod pages;
pub mod response;
pub mod router;

use std::net::{IpAddr, SocketAddr};

use http::HeaderMap;

use crate::config::{is_trusted, Config};

/// Facts about the connection a request arrived on.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    pub tls: bool,
    /// The connection worker (thread) serving it; picks that worker's upstream client.
    pub worker: usize,
    /// This connection's own upstream connection, reused request after request.
    pub upstream: std::sync::Arc<crate::proxy::upstream::UpstreamSlot>,
}

/// The client's IP: the peer, or, when the peer is a trusted proxy, the nearest untrusted
/// address in `X-Forwarded-For` (read right to left).
pub fn client_ip(cfg: &Config, conn: &ConnInfo, headers: &HeaderMap) -> IpAddr {
    let peer = conn.peer.ip().to_canonical();
    if !is_trusted(&cfg.trusted_proxies, peer) {
        return peer;
    }
    let hops: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|s| s.trim().parse::<IpAddr>().ok())
        .collect();
    for ip in hops.iter().rev() {
        if !is_trusted(&cfg.trusted_proxies, *ip) {
            return ip.to_canonical();
        }
    }
    hops.first().copied().unwrap_or(peer)
}
