use super::*;
use proptest::prelude::*;

/// Scans `body` in the given pieces; returns (bytes consumed, data decoded, done) or the error.
fn scan_pieces(body: &[u8], cuts: &[usize]) -> Result<(usize, Vec<u8>, bool), ChunkError> {
    let mut c = Chunked::new();
    let mut data = Vec::new();
    let mut at = 0;
    let mut consumed = 0;
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (body.len() + 1)).collect();
    points.sort_unstable();
    points.push(body.len());
    for p in points {
        if p < at {
            continue;
        }
        let n = c.scan(&body[at..p], |d| data.extend_from_slice(d))?;
        consumed += n;
        if c.is_done() {
            return Ok((consumed, data, true));
        }
        at = p;
    }
    Ok((consumed, data, c.is_done()))
}

#[test]
fn chunked_bodies() {
    let ok: [(&[u8], &[u8]); 6] = [
        (b"5\r\nhello\r\n0\r\n\r\n", b"hello"),
        (b"5;name=value\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", b"hello world"),
        (b"A\r\n0123456789\r\n0\r\nX-Trailer: 1\r\n\r\n", b"0123456789"),
        (b"5 ;ext\r\nhello\r\n0\r\n\r\n", b"hello"),
        (b"0000000000000005\r\nhello\r\n0\r\n\r\n", b"hello"),
        (b"0\r\n\r\n", b""),
    ];
    for (body, data) in ok {
        let (n, got, done) = scan_pieces(body, &[]).unwrap();
        assert!(done, "{:?}", String::from_utf8_lossy(body));
        assert_eq!((n, got.as_slice()), (body.len(), data));
    }
    let long_ext = format!("5;{}\r\nhello\r\n0\r\n\r\n", "a".repeat(MAX_CHUNK_EXT + 1));
    let bad: Vec<(&[u8], ChunkError)> = vec![
        (b"zz\r\nhello\r\n0\r\n\r\n", ChunkError::Size),
        (b"-5\r\nhello\r\n0\r\n\r\n", ChunkError::Size),
        (b"0x5\r\nhello\r\n0\r\n\r\n", ChunkError::Size),
        (b"fffffffffffffffff5\r\nhello\r\n0\r\n\r\n", ChunkError::Size),
        (b"5\nhello\n0\n\n", ChunkError::Size),
        (b"\r\nhello\r\n", ChunkError::Size),
        (b"5\r\nhelloXX0\r\n\r\n", ChunkError::DataEnd),
        (b"5\r\nhello\n0\r\n\r\n", ChunkError::DataEnd),
        (b"0\r\nX: 1\n\r\n", ChunkError::Trailer),
        (b"0\r\n folded\r\n\r\n", ChunkError::Trailer),
        (long_ext.as_bytes(), ChunkError::Extension),
    ];
    for (body, err) in bad {
        assert_eq!(
            scan_pieces(body, &[]).unwrap_err(),
            err,
            "{:?}",
            String::from_utf8_lossy(body)
        );
    }
    // The next message starts right after the body.
    let mut c = Chunked::new();
    let n = c.scan(b"3\r\nabc\r\n0\r\n\r\nGET / HTTP/1.1\r\n", |_| {}).unwrap();
    assert_eq!(n, 13);
    assert!(c.is_done());
}

fn parse(head: &[u8]) -> Result<Fields, HeadError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match request_parser().parse_request(&mut req, head) {
        Ok(httparse::Status::Complete(_)) if clean_head(head) => fields(req.headers, req.version == Some(0)),
        Ok(httparse::Status::Complete(_)) => Err(HeadError::Malformed),
        Ok(httparse::Status::Partial) => panic!("partial"),
        Err(e) => Err(head_error(e)),
    }
}

#[test]
fn request_heads() {
    let f = parse(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n").unwrap();
    assert_eq!((f.content_length, f.chunked, f.hosts), (Some(5), false, 1));
    assert_eq!(request_framing(&f), Framing::Length(5));
    let f = parse(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n").unwrap();
    assert_eq!(request_framing(&f), Framing::Chunked);
    let f = parse(b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\n").unwrap();
    assert_eq!(f.content_length, Some(5));
    let f =
        parse(b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n\r\n").unwrap();
    assert!(f.upgrade && f.keep_alive && !f.close);
    let f = parse(b"PUT / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n").unwrap();
    assert!(f.expect_continue);
    for (head, err) in [
        (
            &b"GET / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"[..],
            HeadError::BadTransferEncoding,
        ),
        (
            b"GET / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            HeadError::BadContentLength,
        ),
        (
            b"GET / HTTP/1.1\r\nContent-Length: 5, 6\r\n\r\n",
            HeadError::BadContentLength,
        ),
        (
            b"GET / HTTP/1.1\r\nContent-Length: +5\r\n\r\n",
            HeadError::BadContentLength,
        ),
        (
            b"GET / HTTP/1.1\r\nContent-Length: 0x5\r\n\r\n",
            HeadError::BadContentLength,
        ),
        (
            b"GET / HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n",
            HeadError::BadContentLength,
        ),
        (
            b"GET / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
            HeadError::BadTransferEncoding,
        ),
        (
            b"GET / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            HeadError::BadTransferEncoding,
        ),
        (
            b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            HeadError::BadTransferEncoding,
        ),
        (
            b"GET / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
            HeadError::BadTransferEncoding,
        ),
        (b"GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n", HeadError::Malformed),
        (b"GET / HTTP/1.1\r\nHost : a\r\n\r\n", HeadError::Malformed),
        (b"GET / HTTP/1.1\r\nHo st: a\r\n\r\n", HeadError::Malformed),
        (b"GET / HTTP/1.1\r\nHost: a\rb\r\n\r\n", HeadError::Malformed),
        (b"GET / HTTP/1.1\nHost: a\n\n", HeadError::Malformed),
        (b"GET / HTTP/1.1\r\nX: \x01\r\n\r\n", HeadError::Malformed),
    ] {
        assert_eq!(parse(head), Err(err), "{:?}", String::from_utf8_lossy(head));
    }
}

#[test]
fn response_framing_rules() {
    let f = Fields {
        content_length: Some(10),
        ..Fields::default()
    };
    assert_eq!(response_framing(&f, 200, false), Framing::Length(10));
    assert_eq!(response_framing(&f, 200, true), Framing::None);
    assert_eq!(response_framing(&f, 304, false), Framing::None);
    assert_eq!(response_framing(&f, 204, false), Framing::None);
    assert_eq!(response_framing(&Fields::default(), 200, false), Framing::Close);
    let chunked = Fields {
        chunked: true,
        ..Fields::default()
    };
    assert_eq!(response_framing(&chunked, 200, false), Framing::Chunked);
}

/// X-Forwarded-For's client address reads as the standard library writes it.
#[test]
fn client_addresses_are_written_as_std_writes_them() {
    let v4 = [0u8, 1, 9, 10, 99, 100, 199, 255];
    for a in v4 {
        for b in v4 {
            let ip = std::net::IpAddr::from([a, b, 255 - a, 9]);
            assert_eq!(IpText::new(ip).as_bytes(), ip.to_string().as_bytes());
        }
    }
    for v6 in [
        "::1",
        "2001:db8::7",
        "1111:2222:3333:4444:5555:6666:7777:8888",
        "::ffff:255.255.255.255",
        "fe80::1:2:3:4",
    ] {
        // Fixed literals, each a valid IPv6 address.
        let ip: std::net::IpAddr = v6.parse().unwrap();
        assert_eq!(IpText::new(ip).as_bytes(), ip.to_string().as_bytes());
    }
}

proptest! {
    /// A valid chunked body split at arbitrary points scans exactly as the whole does.
    #[test]
    fn split_chunked_bodies_scan_identically(
        chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..300), 0..8),
        ext in proptest::option::of("[a-z]{1,8}(=[a-z0-9]{1,8})?"),
        trailer in proptest::option::of("[A-Za-z-]{1,12}: [ -~]{0,20}"),
        cuts in proptest::collection::vec(any::<usize>(), 0..12),
    ) {
        let mut body = Vec::new();
        let mut data = Vec::new();
        for c in &chunks {
            body.extend_from_slice(format!("{:x}", c.len()).as_bytes());
            if let Some(e) = &ext {
                body.extend_from_slice(format!(";{e}").as_bytes());
            }
            body.extend_from_slice(b"\r\n");
            body.extend_from_slice(c);
            body.extend_from_slice(b"\r\n");
            data.extend_from_slice(c);
        }
        body.extend_from_slice(b"0\r\n");
        if let Some(t) = &trailer {
            body.extend_from_slice(t.as_bytes());
            body.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(b"\r\n");
        let whole = scan_pieces(&body, &[]).unwrap();
        let split = scan_pieces(&body, &cuts).unwrap();
        prop_assert_eq!(&whole, &split);
        prop_assert_eq!((whole.0, whole.1, whole.2), (body.len(), data, true));
    }

    /// A valid request head split at arbitrary points is parsed only once complete, and then
    /// identically to the whole.
    #[test]
    fn split_heads_parse_identically(
        path in "/[a-z0-9/]{0,30}",
        names in proptest::collection::vec("[A-Za-z][A-Za-z0-9-]{0,15}", 0..10),
        cut in any::<usize>(),
    ) {
        let mut head = format!("GET {path} HTTP/1.1\r\nHost: example.com\r\n");
        for (i, n) in names.iter().enumerate() {
            head.push_str(&format!("X-{n}: v{i}\r\n"));
        }
        head.push_str("\r\n");
        let head = head.as_bytes();
        let cut = cut % head.len();
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut headers);
        let partial = request_parser().parse_request(&mut req, &head[..cut]);
        prop_assert!(matches!(partial, Ok(httparse::Status::Partial)), "{partial:?}");
        prop_assert_eq!(parse(head).unwrap().hosts, 1);
    }
}
