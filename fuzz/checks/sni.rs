//! Invariant: any bytes at the start of a connection get a verdict from the ClientHello
//! parser, never a panic; the verdict only moves forward as bytes arrive (a prefix that
//! is `Incomplete` never contradicts the whole: once a verdict is reached, a longer input
//! with the same start reaches the same one); a server name, when found, is lowercase
//! DNS-name characters of at most 253 bytes.

use veer::proxy::sni::{parse, Hello};

pub fn check(data: &[u8]) {
    let whole = parse(data);
    if let Hello::ClientHello(Some(name)) = &whole {
        assert!(!name.is_empty() && name.len() <= 253);
        assert!(name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-._".contains(&b)));
    }
    // Every prefix is either still incomplete or already has the whole's verdict.
    for cut in [data.len() / 3, data.len() / 2, data.len().saturating_sub(1)] {
        match parse(&data[..cut]) {
            Hello::Incomplete => {}
            early => assert_eq!(early, whole, "prefix of {cut} bytes decided differently"),
        }
    }
}
