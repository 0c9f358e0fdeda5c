//! Request cookies on the hot path: find one by name and remove one, scanning the `Cookie`
//! header bytes by hand (no allocation to find; one to rewrite). Values are never trusted:
//! anything malformed simply does not match.
//!
//! Why not the `cookie` crate (which builds veer's `Set-Cookie`): measured side by side
//! (`cargo bench --bench routing -- cookie_find`), its `Cookie::split_parse` takes ≈ 4.7×
//! as long to find the sticky cookie in a typical header (≈ 219 ns against ≈ 47 ns), needs
//! the whole header to be UTF-8 first (one stray byte elsewhere would lose the sticky
//! cookie), and cannot remove a cookie while keeping every other byte as the client sent it.

use http::header::{HeaderMap, HeaderValue, COOKIE};

/// `(name, value)` pairs of the given `Cookie` field values, in order.
fn pairs_in<'h>(values: impl Iterator<Item = &'h [u8]>) -> impl Iterator<Item = (&'h [u8], &'h [u8])> {
    values.flat_map(|v| v.split(|b| *b == b';')).filter_map(|pair| {
        let pair = pair.trim_ascii();
        let eq = pair.iter().position(|b| *b == b'=')?;
        Some((pair[..eq].trim_ascii(), pair[eq + 1..].trim_ascii()))
    })
}

/// The value of the first cookie named `name` in these `Cookie` field values (malformed
/// pairs are skipped).
pub fn find_in<'h>(values: impl Iterator<Item = &'h [u8]>, name: &str) -> Option<&'h [u8]> {
    pairs_in(values)
        .find(|(n, _)| *n == name.as_bytes())
        .map(|(_, v)| strip_quotes(v))
}

fn strip_quotes(v: &[u8]) -> &[u8] {
    match v {
        [b'"', inner @ .., b'"'] => inner,
        _ => v,
    }
}

/// Removes every cookie named `name` from the request and keeps every other byte: the
/// other pairs, valueless cookies and the client's own spacing. Only when the client sent
/// several `Cookie` headers (HTTP/2 does) are they joined, with "; " (RFC 9113 §8.2.3), since
/// an HTTP/1.1 server expects one (RFC 6265 §5.4).
pub fn remove(headers: &mut HeaderMap, name: &str) {
    let mut kept: Vec<u8> = Vec::new();
    for value in headers.get_all(COOKIE) {
        let mark = kept.len();
        if mark > 0 {
            kept.extend_from_slice(b"; ");
        }
        let start = kept.len();
        without(value.as_bytes(), name, &mut kept);
        if kept.len() == start {
            kept.truncate(mark);
        }
    }
    headers.remove(COOKIE);
    if !kept.trim_ascii().is_empty() {
        if let Ok(v) = HeaderValue::from_bytes(&kept) {
            headers.insert(COOKIE, v);
        }
    }
}

/// Appends one `Cookie` field value to `out` without the cookies named `name`, every other
/// byte kept. Appends nothing when nothing is left.
pub fn without(value: &[u8], name: &str, out: &mut Vec<u8>) {
    let mut first = true;
    for segment in value.split(|b| *b == b';') {
        let pair = segment.trim_ascii();
        let cookie_name = pair.split(|b| *b == b'=').next().unwrap_or(pair).trim_ascii();
        if cookie_name == name.as_bytes() && pair.contains(&b'=') {
            continue;
        }
        if first {
            // What followed a removed leading pair's ';' is the new start.
            out.extend_from_slice(segment.trim_ascii_start());
            first = false;
        } else {
            out.push(b';');
            out.extend_from_slice(segment);
        }
    }
}

/// Parses a sticky cookie value: exactly 16 hex digits. Anything else is "no cookie".
pub fn parse_sticky(value: &[u8]) -> Option<u64> {
    if value.len() != 16 || !value.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    u64::from_str_radix(std::str::from_utf8(value).ok()?, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&[u8]]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(COOKIE, HeaderValue::from_bytes(v).unwrap());
        }
        h
    }

    fn find<'h>(h: &'h HeaderMap, name: &str) -> Option<&'h [u8]> {
        find_in(h.get_all(COOKIE).iter().map(HeaderValue::as_bytes), name)
    }

    #[test]
    fn finds_and_removes_across_headers() {
        let mut h = headers(&[b"a=1; VEER_SRV=00000000000000ff", b"b=\"2\"; c=\xff"]);
        assert_eq!(find(&h, "VEER_SRV"), Some(&b"00000000000000ff"[..]));
        assert_eq!(find(&h, "b"), Some(&b"2"[..]));
        assert_eq!(find(&h, "missing"), None);
        remove(&mut h, "VEER_SRV");
        assert_eq!(h.get_all(COOKIE).iter().count(), 1);
        assert_eq!(h[COOKIE].as_bytes(), b"a=1; b=\"2\"; c=\xff");
        remove(&mut h, "a");
        remove(&mut h, "b");
        remove(&mut h, "c");
        assert!(h.get(COOKIE).is_none());
    }

    #[test]
    fn removal_keeps_every_other_byte() {
        for (input, name, expected) in [
            (
                &b"a=1;b=2; flag; VEER_SRV=zzzz; c=\"q\""[..],
                "VEER_SRV",
                Some(&b"a=1;b=2; flag; c=\"q\""[..]),
            ),
            (b"VEER_SRV=00000000000000ff; a=1", "VEER_SRV", Some(b"a=1")),
            (b"a=1;  VEER_SRV=x", "VEER_SRV", Some(b"a=1")),
            (b"VEER_SRV=x", "VEER_SRV", None),
            (b"VEER_SRV", "VEER_SRV", Some(b"VEER_SRV")),
            (b"a=1 ;b = 2", "VEER_SRV", Some(b"a=1 ;b = 2")),
        ] {
            let mut h = headers(&[input]);
            remove(&mut h, name);
            assert_eq!(
                h.get(COOKIE).map(|v| v.as_bytes()),
                expected,
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn sticky_values_must_be_exact() {
        assert_eq!(parse_sticky(b"00000000000000ff"), Some(255));
        for bad in [
            &b""[..],
            b"ff",
            b"00000000000000fg",
            b"+0000000000000ff",
            b"\xff\xfe",
            &[b'a'; 8192],
        ] {
            assert_eq!(parse_sticky(bad), None, "{bad:?}");
        }
    }
}
