//! HTTP/1.1 message heads and body framing (RFC 9112), strict by construction: this code
//! owns request-smuggling safety, so every ambiguity is an error, never a guess.
//!
//! Heads are parsed with `httparse` (zero-copy, borrowing the read buffer) in sync code;
//! what a message's framing is follows RFC 9112 §6. [`Chunked`] walks a chunked body
//! incrementally, across reads, validating every size line and CRLF while the bytes are
//! relayed as they arrived (or decoded, for an HTTP/1.0 peer). Knows nothing of routing,
//! sockets or veer's state.

/// Field slots a parse can use at most (`[runtime] max_headers` is at most this).
pub const MAX_HEADERS: usize = crate::config::MAX_HEADERS_LIMIT;
/// Longest chunk extension accepted on one size line.
pub const MAX_CHUNK_EXT: usize = 4096;
/// Longest trailer section accepted after the last chunk.
pub const MAX_TRAILERS: usize = 16 * 1024;

/// Why a head was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadError {
    /// Not valid HTTP/1.x: bad request line, header name or value bytes, obs-fold,
    /// whitespace before a colon, bare CR…
    Malformed,
    /// More header fields than the limit.
    TooManyHeaders,
    /// `Content-Length` not a number, or several that differ.
    BadContentLength,
    /// `Transfer-Encoding` other than exactly `chunked`, on HTTP/1.0, or together with
    /// `Content-Length`.
    BadTransferEncoding,
}

impl HeadError {
    pub fn reason(self) -> &'static str {
        match self {
            HeadError::Malformed => "malformed message head",
            HeadError::TooManyHeaders => "too many header fields",
            HeadError::BadContentLength => "invalid or conflicting Content-Length",
            HeadError::BadTransferEncoding => "unsupported or conflicting Transfer-Encoding",
        }
    }
}

/// How large a head may be: `[runtime] max_header_size` and `max_headers`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadLimits {
    /// Bytes, request line or status line included.
    pub size: usize,
    /// Header fields (at most [`MAX_HEADERS`]).
    pub fields: usize,
}

impl HeadLimits {
    pub fn new(size: usize, fields: usize) -> Self {
        HeadLimits {
            size,
            fields: fields.min(MAX_HEADERS),
        }
    }
}

impl Default for HeadLimits {
    fn default() -> Self {
        HeadLimits::new(
            crate::config::DEFAULT_MAX_HEADER_SIZE,
            crate::config::DEFAULT_MAX_HEADERS,
        )
    }
}

/// Uninitialised field slots for one parse: unused slots cost nothing (no zeroing), so the
/// array can be as large as the largest limit.
pub type Slots<'b> = [std::mem::MaybeUninit<httparse::Header<'b>>; MAX_HEADERS];

pub const fn slots<'b>() -> Slots<'b> {
    [const { std::mem::MaybeUninit::uninit() }; MAX_HEADERS]
}

/// How a message's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body (or an empty one).
    None,
    Length(u64),
    Chunked,
    /// Until the server closes the connection (responses only).
    Close,
}

/// What the rest of the exchange needs to know about a head's header fields.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Fields {
    pub content_length: Option<u64>,
    pub chunked: bool,
    /// `Connection: close`.
    pub close: bool,
    /// `Connection: keep-alive` (matters for HTTP/1.0).
    pub keep_alive: bool,
    /// `Connection: upgrade` together with an `Upgrade` field.
    pub upgrade: bool,
    /// `Expect: 100-continue`.
    pub expect_continue: bool,
    /// How many `Host` fields.
    pub hosts: u8,
}

/// Scans the header fields for framing and connection facts, refusing what RFC 9112 says
/// a recipient must not guess at.
pub fn fields(headers: &[httparse::Header<'_>], http10: bool) -> Result<Fields, HeadError> {
    let mut f = Fields::default();
    let mut has_upgrade_field = false;
    let mut connection_upgrade = false;
    let mut te_seen = false;
    for h in headers {
        let name = h.name.as_bytes();
        if name.eq_ignore_ascii_case(b"content-length") {
            for part in h.value.split(|b| *b == b',') {
                let n = parse_length(part.trim_ascii()).ok_or(HeadError::BadContentLength)?;
                if f.content_length.is_some_and(|prev| prev != n) {
                    return Err(HeadError::BadContentLength);
                }
                f.content_length = Some(n);
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            // Only one coding is relayed: exactly `chunked`, once.
            if te_seen || !h.value.trim_ascii().eq_ignore_ascii_case(b"chunked") {
                return Err(HeadError::BadTransferEncoding);
            }
            te_seen = true;
            f.chunked = true;
        } else if name.eq_ignore_ascii_case(b"connection") {
            for token in h.value.split(|b| *b == b',').map(<[u8]>::trim_ascii) {
                if token.eq_ignore_ascii_case(b"close") {
                    f.close = true;
                } else if token.eq_ignore_ascii_case(b"keep-alive") {
                    f.keep_alive = true;
                } else if token.eq_ignore_ascii_case(b"upgrade") {
                    connection_upgrade = true;
                }
            }
        } else if name.eq_ignore_ascii_case(b"upgrade") {
            has_upgrade_field = true;
        } else if name.eq_ignore_ascii_case(b"expect") {
            f.expect_continue |= h.value.trim_ascii().eq_ignore_ascii_case(b"100-continue");
        } else if name.eq_ignore_ascii_case(b"host") {
            f.hosts = f.hosts.saturating_add(1);
        }
    }
    if f.chunked && (f.content_length.is_some() || http10) {
        return Err(HeadError::BadTransferEncoding);
    }
    f.upgrade = has_upgrade_field && connection_upgrade && !http10;
    Ok(f)
}

/// 1*DIGIT, no sign, no overflow.
fn parse_length(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// A request's body framing (RFC 9112 §6.3: no Content-Length and no chunked = no body).
pub fn request_framing(f: &Fields) -> Framing {
    if f.chunked {
        Framing::Chunked
    } else {
        match f.content_length {
            Some(0) | None => Framing::None,
            Some(n) => Framing::Length(n),
        }
    }
}

/// A response's body framing, given the request's method and the status.
pub fn response_framing(f: &Fields, status: u16, head_request: bool) -> Framing {
    if head_request || (100..200).contains(&status) || status == 204 || status == 304 {
        return Framing::None;
    }
    if f.chunked {
        Framing::Chunked
    } else {
        match f.content_length {
            Some(0) => Framing::None,
            Some(n) => Framing::Length(n),
            None => Framing::Close,
        }
    }
}

/// The parser settings for requests: nothing lenient.
pub fn request_parser() -> httparse::ParserConfig {
    httparse::ParserConfig::default()
}

/// Responses: servers in the wild send a few harmless oddities (a missing reason phrase is
/// fine for httparse already); obs-fold and spaces before the colon stay errors.
pub fn response_parser() -> httparse::ParserConfig {
    httparse::ParserConfig::default()
}

/// A response head parsed and checked: what both HTTP/1 client paths (the engine's own
/// exchange and HTTP/2 requests sent upstream) need of it.
pub struct ResponseHead<'h, 'b> {
    pub status: u16,
    pub reason: &'b str,
    pub http10: bool,
    /// Bytes of the head in the buffer.
    pub len: usize,
    pub headers: &'h [httparse::Header<'b>],
    pub fields: Fields,
    pub framing: Framing,
}

/// Parses a response head from `buf` within `limits` (the field slots are the caller's, so
/// the fields can borrow them). `Ok(None)`: incomplete; `Err`: the reason it cannot be
/// relayed (answered 502 `upstream-protocol`).
pub fn parse_response_head<'h, 'b>(
    buf: &'b [u8],
    limits: HeadLimits,
    head_request: bool,
    slots: &'h mut Slots<'b>,
) -> Result<Option<ResponseHead<'h, 'b>>, &'static str> {
    let mut parsed = httparse::Response::new(&mut []);
    let len = match response_parser().parse_response_with_uninit_headers(&mut parsed, buf, &mut slots[..limits.fields])
    {
        Ok(httparse::Status::Complete(n)) if n <= limits.size => n,
        Ok(httparse::Status::Partial) if buf.len() < limits.size => return Ok(None),
        Ok(_) => return Err("response head too large"),
        Err(_) => return Err("malformed response head"),
    };
    if !clean_head(&buf[..len]) {
        return Err("malformed response head");
    }
    let (status, reason, http10) = (
        parsed.code.unwrap_or(0),
        parsed.reason.unwrap_or(""),
        parsed.version == Some(0),
    );
    let headers: &'h [httparse::Header<'b>] = parsed.headers;
    let fields = fields(headers, false).map_err(HeadError::reason)?;
    Ok(Some(ResponseHead {
        status,
        reason,
        http10,
        len,
        headers,
        fields,
        framing: response_framing(&fields, status, head_request),
    }))
}

/// Maps httparse's error to ours.
pub fn head_error(e: httparse::Error) -> HeadError {
    match e {
        httparse::Error::TooManyHeaders => HeadError::TooManyHeaders,
        _ => HeadError::Malformed,
    }
}

/// Rejects bare CR, bare LF and NUL anywhere in a head (httparse tolerates bare LF line
/// endings).
pub fn clean_head(head: &[u8]) -> bool {
    // Jump from line end to line end: only NUL, CR and LF need a look.
    let mut i = 0;
    while let Some(off) = memchr::memchr3(0, b'\r', b'\n', &head[i..]) {
        let at = i + off;
        if head[at] != b'\r' || head.get(at + 1) != Some(&b'\n') {
            return false;
        }
        i = at + 2;
    }
    true
}

// === chunked bodies ===

/// Why a chunked body was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    #[error("invalid chunk size")]
    Size,
    #[error("chunk extension too long")]
    Extension,
    #[error("missing CRLF after chunk data")]
    DataEnd,
    #[error("malformed or oversized trailer section")]
    Trailer,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading hex digits; `digits` so far.
    Size {
        digits: u8,
    },
    /// Whitespace after the size, before `;` or CR.
    SizeSpace,
    /// Inside `;ext`, `len` bytes so far.
    Ext {
        len: usize,
    },
    /// Saw CR of the size line.
    SizeLf,
    Data,
    DataCr,
    DataLf,
    /// In the trailer section (after the last chunk): at a line start.
    TrailerStart,
    /// In a trailer line.
    TrailerLine,
    /// CR of a trailer line (`empty`: the line was empty, so this ends the body).
    TrailerLf {
        empty: bool,
    },
    Done,
}

/// An incremental, validating walk over a chunked body.
#[derive(Debug, Clone)]
pub struct Chunked {
    state: State,
    /// Size of the current chunk, then bytes of it left.
    size: u64,
    trailer_bytes: usize,
}

impl Default for Chunked {
    fn default() -> Self {
        Self::new()
    }
}

impl Chunked {
    pub fn new() -> Self {
        Chunked {
            state: State::Size { digits: 0 },
            size: 0,
            trailer_bytes: 0,
        }
    }

    /// True once the last chunk and the trailer section have been seen.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Walks `input` up to the end of the body; returns how many bytes belong to it (the
    /// rest is the next message). `data` receives the chunk data, for decoding.
    pub fn scan(&mut self, input: &[u8], mut data: impl FnMut(&[u8])) -> Result<usize, ChunkError> {
        let mut i = 0;
        while i < input.len() {
            let b = input[i];
            match self.state {
                State::Done => return Ok(i),
                State::Data => {
                    let take = (self.size.min((input.len() - i) as u64)) as usize;
                    data(&input[i..i + take]);
                    self.size -= take as u64;
                    i += take;
                    if self.size == 0 {
                        self.state = State::DataCr;
                    }
                    continue;
                }
                State::Size { digits } => match hex(b) {
                    Some(v) => {
                        if digits >= 16 {
                            return Err(ChunkError::Size);
                        }
                        self.size = self.size << 4 | v as u64;
                        self.state = State::Size { digits: digits + 1 };
                    }
                    None if digits == 0 => return Err(ChunkError::Size),
                    None => match b {
                        b' ' | b'\t' => self.state = State::SizeSpace,
                        b';' => self.state = State::Ext { len: 0 },
                        b'\r' => self.state = State::SizeLf,
                        _ => return Err(ChunkError::Size),
                    },
                },
                State::SizeSpace => match b {
                    b' ' | b'\t' => {}
                    b';' => self.state = State::Ext { len: 0 },
                    b'\r' => self.state = State::SizeLf,
                    _ => return Err(ChunkError::Size),
                },
                State::Ext { len } => match b {
                    b'\r' => self.state = State::SizeLf,
                    b'\n' | 0 => return Err(ChunkError::Extension),
                    _ if len >= MAX_CHUNK_EXT => return Err(ChunkError::Extension),
                    _ => self.state = State::Ext { len: len + 1 },
                },
                State::SizeLf => {
                    if b != b'\n' {
                        return Err(ChunkError::Size);
                    }
                    self.state = if self.size == 0 {
                        State::TrailerStart
                    } else {
                        State::Data
                    };
                }
                State::DataCr => {
                    if b != b'\r' {
                        return Err(ChunkError::DataEnd);
                    }
                    self.state = State::DataLf;
                }
                State::DataLf => {
                    if b != b'\n' {
                        return Err(ChunkError::DataEnd);
                    }
                    self.size = 0;
                    self.state = State::Size { digits: 0 };
                }
                State::TrailerStart => {
                    self.count_trailer()?;
                    self.state = match b {
                        b'\r' => State::TrailerLf { empty: true },
                        b'\n' | b' ' | b'\t' | 0 => return Err(ChunkError::Trailer),
                        _ => State::TrailerLine,
                    };
                }
                State::TrailerLine => {
                    self.count_trailer()?;
                    match b {
                        b'\r' => self.state = State::TrailerLf { empty: false },
                        b'\n' | 0 => return Err(ChunkError::Trailer),
                        _ => {}
                    }
                }
                State::TrailerLf { empty } => {
                    if b != b'\n' {
                        return Err(ChunkError::Trailer);
                    }
                    self.state = if empty { State::Done } else { State::TrailerStart };
                }
            }
            i += 1;
        }
        Ok(i)
    }

    fn count_trailer(&mut self) -> Result<(), ChunkError> {
        self.trailer_bytes += 1;
        if self.trailer_bytes > MAX_TRAILERS {
            return Err(ChunkError::Trailer);
        }
        Ok(())
    }
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// A response body's progress through its framing: how much of each read belongs to it,
/// relayed as it came ([`BodyWalk::advance`]) or copied out, decoded for an HTTP/1.0 peer
/// ([`BodyWalk::take`]).
pub struct BodyWalk {
    framing: Framing,
    /// Bytes left (Length).
    pub left: u64,
    chunked: Chunked,
    /// Decode chunks for an HTTP/1.0 client.
    decode: bool,
    pub done: bool,
}

impl BodyWalk {
    /// How the body is delimited.
    pub fn framing(&self) -> Framing {
        self.framing
    }

    pub fn new(framing: Framing, decode: bool) -> Self {
        BodyWalk {
            framing,
            left: if let Framing::Length(n) = framing { n } else { 0 },
            chunked: Chunked::new(),
            decode,
            done: framing == Framing::None,
        }
    }

    /// Walks the body's part of `bytes` without copying it: returns (bytes consumed, body
    /// bytes for the client), to be relayed as they are.
    pub fn advance(&mut self, bytes: &[u8]) -> Result<(usize, u64), ChunkError> {
        self.advance_with(bytes, |_| {})
    }

    /// [`BodyWalk::advance`], also handing every piece of body data (decoded from its
    /// chunks) to `data`.
    pub fn advance_with(&mut self, bytes: &[u8], mut data: impl FnMut(&[u8])) -> Result<(usize, u64), ChunkError> {
        match self.framing {
            Framing::None => {
                self.done = true;
                Ok((0, 0))
            }
            Framing::Length(_) => {
                let n = (self.left.min(bytes.len() as u64)) as usize;
                data(&bytes[..n]);
                self.left -= n as u64;
                self.done = self.left == 0;
                Ok((n, n as u64))
            }
            Framing::Close => {
                data(bytes);
                Ok((bytes.len(), bytes.len() as u64))
            }
            Framing::Chunked => {
                let mut len = 0u64;
                let n = self.chunked.scan(bytes, |d| {
                    len += d.len() as u64;
                    data(d);
                })?;
                self.done = self.chunked.is_done();
                Ok((n, len))
            }
        }
    }

    /// Moves the body's part of `bytes` into `out` (decoded, for an HTTP/1.0 client);
    /// returns (bytes consumed, body bytes for the client).
    pub fn take(&mut self, bytes: &[u8], out: &mut Vec<u8>) -> Result<(usize, u64), ChunkError> {
        if self.decode {
            return self.advance_with(bytes, |d| out.extend_from_slice(d));
        }
        let (n, data) = self.advance(bytes)?;
        out.extend_from_slice(&bytes[..n]);
        Ok((n, data))
    }
}

pub fn put_field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Decimal digits without going through `fmt`.
pub fn put_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// Lowercase hex digits (a chunk size).
pub fn put_hex(out: &mut Vec<u8>, n: u64) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digits = (64 - n.max(1).leading_zeros()).div_ceil(4);
    for i in (0..digits).rev() {
        out.push(HEX[((n >> (4 * i)) & 0xf) as usize]);
    }
}

/// A client address as X-Forwarded-For writes it (IPv4 without `fmt`), formatted into
/// the value itself: an HTTP/2 connection formats its client once for all its streams.
#[derive(Clone, Copy)]
pub struct IpText {
    /// The longest text form of an IPv6 address is 45 bytes.
    bytes: [u8; 45],
    len: u8,
}

impl IpText {
    pub fn new(ip: std::net::IpAddr) -> Self {
        let mut t = IpText { bytes: [0; 45], len: 0 };
        let len = match ip {
            std::net::IpAddr::V4(v4) => {
                let mut at = 0;
                for (i, octet) in v4.octets().into_iter().enumerate() {
                    if i > 0 {
                        t.bytes[at] = b'.';
                        at += 1;
                    }
                    // No leading zeros: the hundreds and tens only where there are some.
                    let digits = [octet / 100, octet / 10 % 10, octet % 10];
                    let first = if octet >= 100 {
                        0
                    } else if octet >= 10 {
                        1
                    } else {
                        2
                    };
                    for d in &digits[first..] {
                        t.bytes[at] = b'0' + d;
                        at += 1;
                    }
                }
                at
            }
            std::net::IpAddr::V6(v6) => {
                use std::io::Write as _;
                let mut left = &mut t.bytes[..];
                let _ = write!(left, "{v6}");
                45 - left.len()
            }
        };
        t.len = len as u8;
        t
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

#[cfg(test)]
mod tests;
