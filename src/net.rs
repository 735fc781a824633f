//! Small network helpers: CIDR ranges for `trusted_proxies`, and room in a socket's read buffer.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

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
}
