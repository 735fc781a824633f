//! Small network helpers: CIDR ranges for `trusted_proxies`, room in a socket's read buffer, and
//! the kernel's watch on a client that went away.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::time::Duration;

/// An IPv4 or IPv6 network in CIDR notation; a bare address is a /32 or /128.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Whether `ip` lies in this network. IPv4-mapped IPv6 peers are compared as IPv4.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || {
            format!("`{s}` is not an address or CIDR range such as \"10.0.0.0/8\" or \"::1/128\"")
        };
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = a.trim().parse().map_err(|_| bad())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            None => max,
            Some(p) => p.trim().parse::<u8>().map_err(|_| bad())?,
        };
        if prefix > max {
            return Err(bad());
        }
        Ok(Cidr { addr, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// Makes room in `buf` (a read buffer of `size` bytes) before a socket read. With nothing left
/// in it, the read goes to the front of its allocation again (if nothing else holds part of it):
/// a connection's next request or answer lands in the same few cache lines as the last one,
/// where walking on through the buffer would touch fresh ones with every exchange (with hundreds
/// of connections, that is a cache miss per line). Otherwise, when under 1 KiB is left,
/// `size` more bytes are reserved.
pub fn make_room(buf: &mut bytes::BytesMut, size: usize) {
    if (buf.is_empty() && buf.capacity() < size) || buf.capacity() - buf.len() < 1024 {
        buf.reserve(size);
    }
}

/// A client connection silent this long gets TCP keep-alive probes.
pub const PEER_PROBE_AFTER: Duration = Duration::from_secs(30);
/// Time between two unanswered probes.
pub const PEER_PROBE_EVERY: Duration = Duration::from_secs(10);
/// Unanswered probes after which the kernel drops the connection.
pub const PEER_PROBES: u32 = 3;
/// Data sent to a client and not acknowledged for this long ends the connection: the probes'
/// whole span, so a peer is given up on after the same time whether or not data was in flight.
pub const PEER_GONE_AFTER: Duration = Duration::from_secs(60);

/// Lets the kernel notice a client that vanished (powered off, network gone: nothing closes
/// the connection). Idle connections are probed ([`PEER_PROBE_AFTER`], then every
/// [`PEER_PROBE_EVERY`], [`PEER_PROBES`] times) and data left unacknowledged for
/// [`PEER_GONE_AFTER`] ends the connection; its next read or write then fails and the
/// connection, with every request on it, is dropped. This covers what the phase timers do not:
/// a request in progress (an HTTP/1 answer being sent, an HTTP/2 stream open) on a dead peer.
/// Costs nothing per request (HTTP/2 keep-alive pings did the same for HTTP/2 alone, with a
/// timer reset on every frame).
pub fn watch_peer(stream: &tokio::net::TcpStream) -> std::io::Result<()> {
    let s = socket2::SockRef::from(stream);
    s.set_tcp_keepalive(
        &socket2::TcpKeepalive::new()
            .with_time(PEER_PROBE_AFTER)
            .with_interval(PEER_PROBE_EVERY)
            .with_retries(PEER_PROBES),
    )?;
    s.set_tcp_user_timeout(Some(PEER_GONE_AFTER))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v4_and_v6_ranges() {
        let c: Cidr = "10.1.0.0/16".parse().unwrap();
        assert!(c.contains("10.1.200.3".parse().unwrap()));
        assert!(!c.contains("10.2.0.1".parse().unwrap()));
        assert!(c.contains("::ffff:10.1.0.9".parse().unwrap()));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("1.2.3.4".parse().unwrap()));
        let one: Cidr = "::1".parse().unwrap();
        assert!(one.contains("::1".parse().unwrap()));
        assert!(!one.contains("127.0.0.1".parse().unwrap()));
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("nope".parse::<Cidr>().is_err());
    }

    #[test]
    fn an_emptied_read_buffer_is_read_into_from_its_front_again() {
        let mut buf = bytes::BytesMut::with_capacity(8192);
        let front = buf.as_ptr() as usize;
        for round in 0..200 {
            make_room(&mut buf, 8192);
            assert_eq!(
                buf.as_ptr() as usize,
                front,
                "round {round}: not at the front"
            );
            buf.extend_from_slice(&[b'x'; 100]);
            // A request's bytes, shared while it is handled, then dropped.
            let taken = buf.split_to(100).freeze();
            drop(taken);
        }
        // Leftover bytes stay where they are; a part still held elsewhere is not overwritten.
        buf.extend_from_slice(b"abc");
        let held = buf.split_to(2).freeze();
        make_room(&mut buf, 8192);
        assert_eq!(&buf[..], b"c");
        let _ = buf.split_to(1);
        make_room(&mut buf, 8192);
        assert_eq!(&held[..], b"ab");
        assert!(buf.capacity() >= 1024);
    }

    /// The options are really set on a connected socket, as the kernel reads them back.
    #[tokio::test]
    async fn a_watched_connection_has_probes_and_a_user_timeout() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = tokio::net::TcpStream::connect(l.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = l.accept().await.unwrap();
        let before = socket2::SockRef::from(&server);
        assert!(!before.keepalive().unwrap(), "off before");
        watch_peer(&server).unwrap();
        let s = socket2::SockRef::from(&server);
        assert!(s.keepalive().unwrap());
        assert_eq!(s.tcp_keepalive_time().unwrap(), PEER_PROBE_AFTER);
        assert_eq!(s.tcp_keepalive_interval().unwrap(), PEER_PROBE_EVERY);
        assert_eq!(s.tcp_keepalive_retries().unwrap(), PEER_PROBES);
        assert_eq!(s.tcp_user_timeout().unwrap(), Some(PEER_GONE_AFTER));
        assert_eq!(
            PEER_GONE_AFTER,
            PEER_PROBE_AFTER + PEER_PROBE_EVERY * PEER_PROBES,
            "data in flight or not, a peer is given up on after the same time"
        );
        drop(client);
    }
}
