//! The HTTP/1 codec's hot path: parsing a typical request head (httparse, the strict
//! byte check, framing facts), a response head, and walking a chunked body. Run with
//! `cargo bench --bench h1`; compare with callgrind for instruction counts.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use veer::proxy::h1::codec::{self, Chunked, MAX_HEADERS};

const REQUEST: &[u8] = b"GET /api/v1/orders?page=2 HTTP/1.1\r\n\
Host: shop.example.com\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36\r\n\
Accept: application/json, text/plain, */*\r\n\
Accept-Encoding: gzip, deflate, br\r\n\
Accept-Language: en-US,en;q=0.9\r\n\
Cookie: session=0123456789abcdef; VEER_SRV=00000000000000ff; theme=dark\r\n\
X-Request-Id: 6f1c2d3e4b5a69788796a5b4c3d2e1f0\r\n\
Connection: keep-alive\r\n\r\n";

const RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\n\
Server: nginx/1.22.1\r\n\
Date: Tue, 01 Dec 2026 20:00:00 GMT\r\n\
Content-Type: application/json\r\n\
Content-Length: 13\r\n\
Connection: keep-alive\r\n\
Cache-Control: no-store\r\n\r\n";

fn heads(c: &mut Criterion) {
    c.bench_function("parse typical request head", |b| {
        b.iter(|| {
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut req = httparse::Request::new(&mut headers);
            let n = match codec::request_parser().parse_request(&mut req, black_box(REQUEST)) {
                Ok(httparse::Status::Complete(n)) => n,
                _ => unreachable!(),
            };
            assert!(codec::clean_head(&REQUEST[..n]));
            black_box(codec::fields(req.headers, false).ok())
        })
    });
    c.bench_function("parse typical response head", |b| {
        b.iter(|| {
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut resp = httparse::Response::new(&mut headers);
            let n = match codec::response_parser().parse_response(&mut resp, black_box(RESPONSE)) {
                Ok(httparse::Status::Complete(n)) => n,
                _ => unreachable!(),
            };
            assert!(codec::clean_head(&RESPONSE[..n]));
            black_box(codec::fields(resp.headers, false).ok())
        })
    });
    let mut body = Vec::new();
    for _ in 0..16 {
        body.extend_from_slice(b"400\r\n");
        body.extend_from_slice(&[b'x'; 1024]);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(b"0\r\n\r\n");
    c.bench_function("walk a 16 KiB chunked body (16 chunks)", |b| {
        b.iter(|| {
            let mut c = Chunked::new();
            let n = c.scan(black_box(&body), |d| {
                black_box(d);
            });
            assert!(c.is_done());
            black_box(n)
        })
    });
}

criterion_group!(benches, heads);
criterion_main!(benches);
