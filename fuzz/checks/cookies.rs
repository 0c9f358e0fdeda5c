//! Invariant: any bytes in Cookie headers are either a well-formed sticky id (exactly 16 hex
//! digits that round-trip) or "no cookie"; finding and removing cookies never panics, and
//! after `remove` the cookie is gone while the header stays a valid header value.

use http::header::{HeaderMap, HeaderValue, COOKIE};
use veer::proxy::cookies;
use veer::proxy::headers::HeaderList;

pub fn check(data: &[u8]) {
    let mut headers = HeaderMap::new();
    for part in data.split(|b| *b == b'\n') {
        if let Ok(v) = HeaderValue::from_bytes(part) {
            headers.append(COOKIE, v);
        }
    }
    if let Some(v) = cookies::find_in(headers.cookies(), "VEER_SRV") {
        if let Some(id) = cookies::parse_sticky(v) {
            assert_eq!(format!("{id:016x}"), String::from_utf8_lossy(v).to_ascii_lowercase());
        }
    }
    cookies::remove(&mut headers, "VEER_SRV");
    assert!(cookies::find_in(headers.cookies(), "VEER_SRV").is_none());
}
