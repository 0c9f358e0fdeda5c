//! Invariant: any bytes at the start of a connection get a verdict from the PROXY header
//! parser, never a panic; a complete header's length lies within the input and within
//! `MAX_LEN`; every prefix of a complete header is `Incomplete` or the same verdict; and a
//! header veer builds for any pair of addresses parses back to its source.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use veer::config::ProxyVersion;
use veer::proxy_header::{build, parse, Parsed, MAX_LEN};

pub fn check(data: &[u8]) {
    let whole = parse(data);
    if let Parsed::Header { len, .. } = whole {
        assert!(len <= data.len() && len <= MAX_LEN);
        for cut in [len / 2, len.saturating_sub(1)] {
            match parse(&data[..cut]) {
                Parsed::Incomplete => {}
                early => assert_eq!(early, whole),
            }
        }
    }
    // Addresses from the input, built and parsed back.
    if data.len() >= 36 {
        let port = |i: usize| u16::from_be_bytes([data[i], data[i + 1]]);
        let from = if data[0] & 1 == 0 {
            SocketAddr::new(IpAddr::V4(Ipv4Addr::new(data[1], data[2], data[3], data[4])), port(5))
        } else {
            let mut o = [0u8; 16];
            o.copy_from_slice(&data[1..17]);
            SocketAddr::new(IpAddr::V6(Ipv6Addr::from(o)), port(17))
        };
        let to = SocketAddr::new(
            IpAddr::V4(Ipv4Addr::new(data[19], data[20], data[21], data[22])),
            port(23),
        );
        for v in [ProxyVersion::V1, ProxyVersion::V2] {
            let bytes = build(v, from, to);
            match parse(&bytes) {
                Parsed::Header { len, source: Some(s) } => {
                    assert_eq!(len, bytes.len());
                    assert_eq!(s.port(), from.port());
                }
                other => panic!("{v:?} header for {from} -> {to} parsed as {other:?}"),
            }
        }
    }
}
