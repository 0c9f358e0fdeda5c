//! Invariants of the HTTP/1 codec on any bytes: parsing a request or response head and
//! reading its framing never panics; a chunked body scanned in two pieces (split at any
//! point) gives exactly what scanning it whole gives — same bytes consumed, same data,
//! same verdict — so a body can never be read differently depending on how TCP cut it.

use veer::proxy::h1::codec::{self, Chunked, MAX_HEADERS};

fn scan(parts: &[&[u8]]) -> (Result<usize, codec::ChunkError>, Vec<u8>, bool) {
    let mut c = Chunked::new();
    let mut data = Vec::new();
    let mut consumed = 0;
    for part in parts {
        match c.scan(part, |d| data.extend_from_slice(d)) {
            Ok(n) => {
                consumed += n;
                if c.is_done() {
                    break;
                }
            }
            Err(e) => return (Err(e), data, false),
        }
    }
    (Ok(consumed), data, c.is_done())
}

pub fn check(input: &[u8]) {
    let Some((&cut, data)) = input.split_first() else {
        return;
    };

    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    if let Ok(httparse::Status::Complete(n)) = codec::request_parser().parse_request(&mut req, data) {
        let _ = codec::clean_head(&data[..n]);
        if let Ok(f) = codec::fields(req.headers, req.version == Some(0)) {
            let _ = codec::request_framing(&f);
        }
    }
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    if let Ok(httparse::Status::Complete(_)) = codec::response_parser().parse_response(&mut resp, data) {
        if let Ok(f) = codec::fields(resp.headers, false) {
            let _ = codec::response_framing(&f, resp.code.unwrap_or(0), false);
        }
    }

    let at = (cut as usize * data.len()) / 255;
    let whole = scan(&[data]);
    let split = scan(&[&data[..at], &data[at..]]);
    // An error found in the first piece is found whole too, at the same point.
    assert_eq!(whole.0.is_ok(), split.0.is_ok(), "{whole:?} vs {split:?}");
    if whole.0.is_ok() {
        assert_eq!(whole, split);
    }
}
