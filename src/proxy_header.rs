//! The PROXY protocol (HAProxy's, v1 text and v2 binary), parsed and built with the `ppp`
//! crate: [`parse`] tells how long the header at the start of a connection is and which
//! client address it carries; [`build`] writes the header veer sends upstream. Knows bytes
//! and addresses only; reading the socket is the data plane's.

use std::net::SocketAddr;

use crate::config::ProxyVersion;

/// Longest header accepted: v1 is at most 107 bytes; v2 is 16 plus its addresses and TLVs,
/// which real senders (HAProxy, AWS and GCP load balancers) keep well under this.
pub const MAX_LEN: usize = 4096;

/// What the bytes at the start of a connection are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// A valid header may still follow: read more.
    Incomplete,
    /// Not a PROXY header, or a malformed one.
    Invalid(&'static str),
    /// A header of `len` bytes. `source`: the client it names; `None` for `LOCAL`
    /// (a health check by the sender itself) or `UNKNOWN`: the connection's own peer counts.
    Header { len: usize, source: Option<SocketAddr> },
}

/// Parses the header at the start of `buf`.
pub fn parse(buf: &[u8]) -> Parsed {
    use ppp::PartialResult;
    const V2_SIGNATURE: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";
    if buf.is_empty() {
        return Parsed::Incomplete;
    }
    let v2 = V2_SIGNATURE.starts_with(&buf[..buf.len().min(V2_SIGNATURE.len())]);
    if v2 {
        if buf.len() >= 16 {
            let len = 16 + u16::from_be_bytes([buf[14], buf[15]]) as usize;
            if len > MAX_LEN {
                return Parsed::Invalid("PROXY v2 header too long");
            }
        }
        let header = ppp::v2::Header::try_from(buf);
        if header.is_incomplete() {
            return Parsed::Incomplete;
        }
        return match header {
            Ok(h) => {
                let source = match (h.command, h.addresses) {
                    (ppp::v2::Command::Local, _) => None,
                    (_, ppp::v2::Addresses::IPv4(a)) => Some(SocketAddr::from((a.source_address, a.source_port))),
                    (_, ppp::v2::Addresses::IPv6(a)) => Some(SocketAddr::from((a.source_address, a.source_port))),
                    _ => None,
                };
                Parsed::Header { len: h.len(), source }
            }
            Err(_) => Parsed::Invalid("malformed PROXY v2 header"),
        };
    }
    const V1_PREFIX: &[u8] = b"PROXY ";
    if !V1_PREFIX.starts_with(&buf[..buf.len().min(V1_PREFIX.len())]) {
        return Parsed::Invalid("no PROXY header");
    }
    let Some(end) = memchr::memchr(b'\n', buf) else {
        return if buf.len() >= 107 {
            Parsed::Invalid("PROXY v1 header too long")
        } else {
            Parsed::Incomplete
        };
    };
    match ppp::v1::Header::try_from(&buf[..=end]) {
        Ok(h) => {
            let source = match h.addresses {
                ppp::v1::Addresses::Tcp4(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
                ppp::v1::Addresses::Tcp6(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
                ppp::v1::Addresses::Unknown => None,
            };
            Parsed::Header { len: end + 1, source }
        }
        Err(_) => Parsed::Invalid("malformed PROXY v1 header"),
    }
}

/// The header announcing a connection from `from` to `to`. Mixed families (an IPv4 client
/// of an IPv6 listener) are sent as IPv6 with the IPv4 address mapped.
pub fn build(version: ProxyVersion, from: SocketAddr, to: SocketAddr) -> Vec<u8> {
    let (from, to) = match (from, to) {
        (SocketAddr::V4(f), SocketAddr::V6(t)) => {
            (SocketAddr::from((f.ip().to_ipv6_mapped(), f.port())), SocketAddr::V6(t))
        }
        (SocketAddr::V6(f), SocketAddr::V4(t)) => {
            (SocketAddr::V6(f), SocketAddr::from((t.ip().to_ipv6_mapped(), t.port())))
        }
        pair => pair,
    };
    match version {
        ProxyVersion::V1 => ppp::v1::Addresses::from((from, to)).to_string().into_bytes(),
        ProxyVersion::V2 => ppp::v2::Builder::with_addresses(
            ppp::v2::Version::Two | ppp::v2::Command::Proxy,
            ppp::v2::Protocol::Stream,
            (from, to),
        )
        .build()
        .unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_partials() {
        let from = SocketAddr::from(([192, 0, 2, 7], 4242));
        let to = SocketAddr::from(([198, 51, 100, 1], 443));
        for v in [ProxyVersion::V1, ProxyVersion::V2] {
            let mut bytes = build(v, from, to);
            let len = bytes.len();
            bytes.extend_from_slice(b"GET / HTTP/1.1\r\n");
            assert_eq!(
                parse(&bytes),
                Parsed::Header {
                    len,
                    source: Some(from)
                }
            );
            for cut in 1..len {
                assert_eq!(parse(&bytes[..cut]), Parsed::Incomplete, "{v:?} cut at {cut}");
            }
        }
        let v6 = SocketAddr::from((std::net::Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1), 80));
        let mixed = build(ProxyVersion::V1, from, v6);
        assert!(matches!(parse(&mixed), Parsed::Header { source: Some(s), .. } if s.port() == 4242));
        assert!(matches!(parse(b"GET / HTTP/1.1\r\n"), Parsed::Invalid(_)));
        assert!(matches!(parse(b"PROXY TCP4 nonsense\r\n"), Parsed::Invalid(_)));
        assert_eq!(parse(b"PROXY UNKNOWN\r\n"), Parsed::Header { len: 15, source: None });
        assert!(matches!(parse(&[b'P'; 200][..]), Parsed::Invalid(_)));
    }
}
