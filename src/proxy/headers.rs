//! Header rewriting between client and server: hop-by-hop stripping (RFC 9110 §7.6.1; hyper
//! does not do it for a proxy), the fields a request arrived with ([`HeaderList`]) and
//! veer's own ids.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// A request's fields however they arrived: parsed in place from an HTTP/1 head, or decoded
/// into a map by HTTP/2. What veer reads from them and the head it forwards upstream are
/// decided once, over this, for both.
pub trait HeaderList {
    /// Every field, in order, as (name, value) bytes.
    fn each(&self) -> impl Iterator<Item = (&[u8], &[u8])>;

    /// The value of the first field named `name` (lowercase).
    fn field(&self, name: &[u8]) -> Option<&[u8]> {
        self.each().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v)
    }

    /// The values of every `Cookie` field.
    fn cookies(&self) -> impl Iterator<Item = &[u8]> {
        self.each()
            .filter(|(n, _)| n.eq_ignore_ascii_case(b"cookie"))
            .map(|(_, v)| v)
    }
}

impl HeaderList for [httparse::Header<'_>] {
    fn each(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.iter().map(|h| (h.name.as_bytes(), h.value))
    }
}

impl HeaderList for HeaderMap {
    fn each(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.iter().map(|(n, v)| (n.as_str().as_bytes(), v.as_bytes()))
    }

    // The map's own lookup: a hash, not a walk (its names are lowercase already).
    fn field(&self, name: &[u8]) -> Option<&[u8]> {
        std::str::from_utf8(name)
            .ok()
            .and_then(|n| self.get(n))
            .map(HeaderValue::as_bytes)
    }

    fn cookies(&self) -> impl Iterator<Item = &[u8]> {
        self.get_all(header::COOKIE).iter().map(HeaderValue::as_bytes)
    }
}

/// Methods whose request may be sent again (RFC 9110 §9.2.2): after a broken connection or
/// a gateway error, to another server.
pub fn idempotent(method: &str) -> bool {
    matches!(method, "GET" | "HEAD" | "OPTIONS" | "TRACE" | "PUT" | "DELETE")
}

const HOP_BY_HOP: [HeaderName; 5] = [
    header::CONNECTION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");

/// Removes hop-by-hop headers: the fixed list, `Proxy-*`, and every header named in
/// `Connection` (the HTTP/2 path; the HTTP/1 engine filters the raw head itself).
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    if headers.contains_key(header::CONNECTION) {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
    headers.remove(&KEEP_ALIVE);
    if headers.keys().any(is_proxy_header) {
        let proxy: Vec<HeaderName> = headers.keys().filter(|k| is_proxy_header(k)).cloned().collect();
        for name in proxy {
            headers.remove(name);
        }
    }
}

fn is_proxy_header(name: &HeaderName) -> bool {
    name.as_str().starts_with("proxy-")
}

/// True for a valid `host[:port]` (RFC 9110 §7.2, RFC 3986 §3.2.2): a reg-name
/// (unreserved, pct-encoded and sub-delims characters), an IPv4 address or a bracketed IPv6
/// literal, optionally followed by `:` and digits. An empty value is valid (a target URI
/// without authority). Rejects what smuggles a different host past routing: spaces, `/`,
/// `@` (userinfo), a second `:`.
pub fn valid_host(value: &[u8]) -> bool {
    let (host, port) = match value.first() {
        Some(b'[') => match value.iter().position(|b| *b == b']') {
            Some(end) => {
                let literal = &value[1..end];
                if literal.is_empty() || !literal.iter().all(|b| b.is_ascii_hexdigit() || b".:".contains(b)) {
                    return false;
                }
                (&value[..=end], &value[end + 1..])
            }
            None => return false,
        },
        _ => match value.iter().position(|b| *b == b':') {
            Some(colon) => (&value[..colon], &value[colon..]),
            None => (value, &value[value.len()..]),
        },
    };
    let port_ok = match port {
        [] => true,
        [b':', digits @ ..] => digits.len() <= 5 && digits.iter().all(u8::is_ascii_digit),
        _ => false,
    };
    let reg_name = host.first() == Some(&b'[') || host.iter().all(|b| REG_NAME[usize::from(*b)]);
    port_ok && reg_name
}

/// The bytes of a reg-name: unreserved, `%` (pct-encoded) and sub-delims. A table: every
/// request's host is checked byte by byte.
static REG_NAME: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = c.is_ascii_alphanumeric();
        b += 1;
    }
    let others = b"-._~%!$&'()*+,;=";
    let mut i = 0;
    while i < others.len() {
        t[others[i] as usize] = true;
        i += 1;
    }
    t
};

/// Where `redirect_https` sends a request: `https://host/path?query`, the host without its
/// port (the TLS listener is on the default port).
pub fn https_location(host: &str, path_and_query: &str) -> String {
    let mut s = String::with_capacity(8 + host.len() + path_and_query.len());
    s.push_str("https://");
    s.push_str(host);
    s.push_str(if path_and_query.starts_with('/') {
        path_and_query
    } else {
        "/"
    });
    s
}

/// Where a route's `RequestRedirect` sends the client: each part the filter leaves out is
/// the request's own (`host` as the client sent it, with its port). The port is the
/// filter's, else the new scheme's well-known one, else the one the client used; it is
/// left out of the URL when it is the scheme's default.
pub fn redirect_location(r: &crate::config::Redirect, https: bool, host: &str, target: &str) -> String {
    let scheme = r.scheme.as_deref().unwrap_or(if https { "https" } else { "http" });
    let (name, sent_port) = match host.rsplit_once(':') {
        // `[::1]:8080` has its port after the bracket; `[::1]` none.
        Some((h, p)) if !p.contains(']') => (h, p.parse::<u16>().ok()),
        _ => (host, None),
    };
    let name = r.hostname.as_deref().unwrap_or(name);
    let port = r.port.or(if r.scheme.is_some() { None } else { sent_port });
    let default = if scheme.eq_ignore_ascii_case("https") { 443 } else { 80 };
    let mut s = format!("{scheme}://{name}");
    if let Some(p) = port.filter(|p| *p != default) {
        s.push(':');
        s.push_str(&p.to_string());
    }
    s.push_str(if target.starts_with('/') { target } else { "/" });
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Redirect;

    #[test]
    fn redirect_locations_keep_what_the_filter_leaves_out() {
        let r = |scheme: Option<&str>, hostname: Option<&str>, port: Option<u16>| Redirect {
            scheme: scheme.map(Into::into),
            hostname: hostname.map(Into::into),
            port,
            path: None,
            status: 302,
        };
        // Nothing given: the same URL (the port the client used kept).
        assert_eq!(
            redirect_location(&r(None, None, None), false, "a.com:8080", "/x?q"),
            "http://a.com:8080/x?q"
        );
        // A new scheme: its well-known port, left out of the URL.
        assert_eq!(
            redirect_location(&r(Some("https"), None, None), false, "a.com:8080", "/x"),
            "https://a.com/x"
        );
        assert_eq!(
            redirect_location(&r(None, Some("b.org"), Some(8443)), true, "a.com", "/"),
            "https://b.org:8443/"
        );
        assert_eq!(
            redirect_location(&r(Some("http"), None, Some(80)), true, "[::1]:9000", "/"),
            "http://[::1]/"
        );
        assert_eq!(
            redirect_location(&r(None, None, None), true, "[::1]", "/"),
            "https://[::1]/"
        );
    }

    #[test]
    fn strips_listed_and_fixed_headers() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("keep-alive, x-secret"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("proxy-authorization", HeaderValue::from_static("x"));
        h.insert(header::TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert("x-keep", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert!(h.contains_key("x-keep"));
    }

    #[test]
    fn hosts() {
        for ok in [
            &b""[..],
            b"example.com",
            b"example.com:8080",
            b"127.0.0.1:80",
            b"[::1]:8080",
            b"[2001:db8::1]",
            b"xn--bcher-kva.example",
        ] {
            assert!(valid_host(ok), "{:?}", String::from_utf8_lossy(ok));
        }
        for bad in [
            &b"a b/c"[..],
            b"a@evil",
            b"a/b",
            b"a:b",
            b"a:80:80",
            b"a:123456",
            b"[::1",
            b"[zz]",
            b"[]",
            b"[::1]x",
            b"a\tb",
        ] {
            assert!(!valid_host(bad), "{:?}", String::from_utf8_lossy(bad));
        }
    }
}

/// Lowercase hex of `bytes` into `out` (two digits per byte, as many as `out` holds): on
/// the path of every request (request ids, trace ids), so no shift of a u128 per digit.
pub fn hex(out: &mut [u8], bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for (pair, b) in out.chunks_exact_mut(2).zip(bytes) {
        pair[0] = HEX[(b >> 4) as usize];
        pair[1] = HEX[(b & 0xf) as usize];
    }
}

/// A W3C `traceparent` value: `00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>`.
pub type TraceParent = [u8; 55];

/// The `traceparent` to send upstream: the client's trace id and flags kept with a new
/// parent id (veer's hop), or a new sampled trace when the client sent none or an invalid
/// one. Its trace id (`[3..35]`) goes in the access log.
pub fn traceparent(incoming: Option<&[u8]>) -> TraceParent {
    let mut out: TraceParent = *b"00-00000000000000000000000000000000-0000000000000000-01";
    match incoming.map(<[u8]>::trim_ascii).filter(|v| valid_traceparent(v)) {
        Some(v) => {
            out[3..35].copy_from_slice(&v[3..35]);
            out[53..55].copy_from_slice(&v[53..55]);
        }
        None => hex(&mut out[3..35], &fastrand::u128(1..).to_be_bytes()),
    }
    hex(&mut out[36..52], &fastrand::u64(1..).to_be_bytes());
    out
}

/// Version 00 (or a later one, read as 00), lowercase hex, neither id all zeros.
fn valid_traceparent(v: &[u8]) -> bool {
    let lower_hex = |b: &[u8]| b.iter().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c));
    (v.len() == 55 || (v.len() > 55 && v[55] == b'-' && v[..2] != *b"00"))
        && v[2] == b'-'
        && v[35] == b'-'
        && v[52] == b'-'
        && lower_hex(&v[..2])
        && v[..2] != *b"ff"
        && lower_hex(&v[3..35])
        && v[3..35].iter().any(|c| *c != b'0')
        && lower_hex(&v[36..52])
        && v[36..52].iter().any(|c| *c != b'0')
        && lower_hex(&v[53..55])
}

#[cfg(test)]
mod trace_tests {
    use super::*;

    #[test]
    fn a_trace_is_kept_with_a_new_parent_and_started_when_missing_or_invalid() {
        let incoming = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";
        let out = traceparent(Some(incoming));
        assert_eq!(&out[..36], &incoming[..36]);
        assert_ne!(&out[36..52], &incoming[36..52]);
        assert_eq!(&out[52..], b"-00");
        assert!(valid_traceparent(&out));
        for bad in [
            &b"00-00000000000000000000000000000000-00f067aa0ba902b7-01"[..],
            b"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            b"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            b"garbage",
        ] {
            let fresh = traceparent(Some(bad));
            assert!(valid_traceparent(&fresh));
            assert_ne!(&fresh[3..35], bad.get(3..35).unwrap_or(b""));
        }
        let new = traceparent(None);
        assert!(valid_traceparent(&new) && new.ends_with(b"-01"));
    }
}
