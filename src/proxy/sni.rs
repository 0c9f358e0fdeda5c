//! The server name in a TLS ClientHello, read without terminating TLS (SNI passthrough):
//! a small parser over the bytes a client sends first (RFC 8446 §4.1.2, RFC 6066 §3),
//! including a ClientHello fragmented over several records. Pure: bytes in, a verdict out;
//! fuzzed (fuzz/fuzz_targets/sni.rs). Any byte sequence gets an answer, never a panic.

/// The most bytes looked at: a ClientHello is one handshake message of at most this size
/// in practice (post-quantum key shares included), spread over records of ≤ 16 KiB.
pub const MAX_HELLO: usize = 16 * 1024 + 5;

/// What the first bytes of a connection say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hello {
    /// A ClientHello may still complete: read more.
    Incomplete,
    /// Not TLS, or not a ClientHello: routed as a client without a server name.
    NotTls,
    /// A complete ClientHello, with its host name (lowercase) if it sent one.
    ClientHello(Option<String>),
}

/// Reads the ClientHello at the start of `buf`.
pub fn parse(buf: &[u8]) -> Hello {
    // Handshake bytes gathered from consecutive handshake records.
    let mut hs = Vec::new();
    let mut at = 0;
    loop {
        let Some(header) = buf.get(at..at + 5) else {
            return if buf.len() >= MAX_HELLO {
                Hello::NotTls
            } else {
                incomplete_or_not(buf, at)
            };
        };
        if header[0] != 0x16 || header[1] != 0x03 {
            return Hello::NotTls;
        }
        let len = u16::from_be_bytes([header[3], header[4]]) as usize;
        if len == 0 || len > 16 * 1024 + 256 {
            return Hello::NotTls;
        }
        let Some(payload) = buf.get(at + 5..at + 5 + len) else {
            return if buf.len() >= MAX_HELLO {
                Hello::NotTls
            } else {
                Hello::Incomplete
            };
        };
        hs.extend_from_slice(payload);
        at += 5 + len;
        if hs.len() >= 4 {
            if hs[0] != 0x01 {
                return Hello::NotTls;
            }
            let msg_len = u32::from_be_bytes([0, hs[1], hs[2], hs[3]]) as usize;
            if msg_len + 4 > MAX_HELLO {
                return Hello::NotTls;
            }
            if hs.len() >= msg_len + 4 {
                return match server_name(&hs[4..4 + msg_len]) {
                    Some(name) => Hello::ClientHello(name),
                    None => Hello::NotTls,
                };
            }
        }
        if at >= MAX_HELLO {
            return Hello::NotTls;
        }
    }
}

/// Before the first full record header: a TLS client's first byte is 0x16.
fn incomplete_or_not(buf: &[u8], at: usize) -> Hello {
    match buf.get(at) {
        Some(&b) if b != 0x16 => Hello::NotTls,
        _ => match buf.get(at + 1) {
            Some(&b) if b != 0x03 => Hello::NotTls,
            _ => Hello::Incomplete,
        },
    }
}

/// A byte reader that fails softly.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn u8(&mut self) -> Option<usize> {
        self.take(1).map(|b| b[0] as usize)
    }

    fn u16(&mut self) -> Option<usize> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]) as usize)
    }

    /// A vector with a length prefix of `width` bytes.
    fn vec(&mut self, width: usize) -> Option<&'a [u8]> {
        let len = if width == 1 { self.u8()? } else { self.u16()? };
        self.take(len)
    }
}

/// The body of a ClientHello → `Some(name)`; `None` when it is malformed.
fn server_name(body: &[u8]) -> Option<Option<String>> {
    let mut r = Reader(body);
    r.take(2 + 32)?; // legacy_version, random
    r.vec(1)?; // legacy_session_id
    r.vec(2)?; // cipher_suites
    r.vec(1)?; // legacy_compression_methods
    if r.0.is_empty() {
        return Some(None); // no extensions at all (old clients)
    }
    let mut exts = Reader(r.vec(2)?);
    while !exts.0.is_empty() {
        let kind = exts.u16()?;
        let data = exts.vec(2)?;
        if kind != 0 {
            continue;
        }
        let mut list = Reader(Reader(data).vec(2)?);
        while !list.0.is_empty() {
            let name_type = list.u8()?;
            let name = list.vec(2)?;
            if name_type == 0 {
                // A trailing dot (the root) is the same name; nothing but dots is none
                // (found by fuzzing: "." once came out as an empty name).
                let name = std::str::from_utf8(name).ok()?.trim_end_matches('.');
                let valid = !name.is_empty()
                    && name.len() <= 253
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_');
                return valid.then(|| Some(name.to_ascii_lowercase()));
            }
        }
        return Some(None);
    }
    Some(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    /// A ClientHello as rustls writes it, for `name`.
    fn hello(name: &str) -> Result<Vec<u8>, Box<dyn std::error::Error>> {
        let config =
            rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()?
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth();
        let server = rustls_pki_types::ServerName::try_from(name.to_string())?;
        let mut conn = rustls::ClientConnection::new(std::sync::Arc::new(config), server)?;
        let mut out = Vec::new();
        conn.write_tls(&mut out)?;
        Ok(out)
    }

    #[test]
    fn reads_the_name_whole_split_and_fragmented() -> TestResult {
        let bytes = hello("DB.example.com")?;
        assert_eq!(parse(&bytes), Hello::ClientHello(Some("db.example.com".into())));
        for cut in 0..bytes.len() {
            assert_eq!(parse(&bytes[..cut]), Hello::Incomplete, "cut at {cut}");
        }
        // The same handshake message in two records.
        let body = &bytes[5..];
        let (a, b) = body.split_at(40);
        let mut two = Vec::new();
        for part in [a, b] {
            two.extend_from_slice(&[0x16, 0x03, 0x01]);
            two.extend_from_slice(&(part.len() as u16).to_be_bytes());
            two.extend_from_slice(part);
        }
        assert_eq!(parse(&two), Hello::ClientHello(Some("db.example.com".into())));
        Ok(())
    }

    #[test]
    fn other_protocols_and_garbage_are_not_tls() -> TestResult {
        assert_eq!(parse(b"GET / HTTP/1.1\r\n"), Hello::NotTls);
        assert_eq!(parse(b"SSH-2.0-OpenSSH"), Hello::NotTls);
        assert_eq!(parse(&[0x16, 0x03, 0x01, 0x00, 0x05, 0x02, 0, 0, 1, 0]), Hello::NotTls);
        assert_eq!(
            parse(&[0x16, 0x03, 0x01, 0x00, 0x08, 0x01, 0, 0, 4, 0, 0, 0, 0]),
            Hello::NotTls
        );
        assert_eq!(parse(&[0x16]), Hello::Incomplete);
        // Found by the fuzzer: a ClientHello whose server name is "." alone.
        const DOT: &str = "160301004d010000490301000049030300000000000000000000000000000000000067000000000000\
                           000000000213010100001e0000001300110000012e03000e78616d706c652e63496f6d002b0203022b2b2b2b";
        let dot = (0..DOT.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&DOT[i..i + 2], 16))
            .collect::<Result<Vec<u8>, _>>()?;
        assert_eq!(parse(&dot), Hello::NotTls);
        assert_eq!(parse(&[]), Hello::Incomplete);
        Ok(())
    }
}
