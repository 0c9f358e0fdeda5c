//! A connection's first steps before its path: the PROXY protocol header (`accept_proxy`;
//! its source address becomes the client's), then the TLS handshake on TLS listeners, each
//! within `header_timeout` and counted when it fails. Then the path: HTTP/2 when ALPN chose
//! it, else the HTTP/1 engine; tcp listeners go to the L4 path (which reads the ClientHello
//! itself when it routes by SNI).

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::h1::server::{self as h1, Conn};
use super::peek::{self, Unfinished};
use crate::access_log::TlsFacts;
use crate::metrics::{ListenerStats, TLS_ALPNS, TLS_RESULTS, TLS_VERSIONS};
use crate::proxy_header::{self, Parsed};
use crate::stream::ClientIo;

pub(super) async fn serve(mut stream: TcpStream, mut conn: Conn, http: bool) {
    let deadline = Instant::now() + conn.shared.header_timeout;
    if conn.opts.accept_proxy {
        match read_proxy_header(&mut stream, deadline).await {
            Ok(Some(source)) => conn.peer = source,
            // LOCAL or UNKNOWN: the sender speaks for itself (a health check).
            Ok(None) => {}
            Err(why) => {
                conn.open.listener.proxy_protocol_errors.fetch_add(1, Relaxed);
                crate::warn_limited!(crate::ratelimit::Kind::ProxyProtocol, peer = %conn.peer, listener = %conn.listener,
                    "PROXY protocol header {why}; closing the connection");
                return;
            }
        }
    }
    if !http {
        let (peer, idle) = (conn.peer, conn.opts.idle_timeout);
        return Box::pin(super::tcp::serve(
            stream,
            peer,
            &conn.listener,
            &conn.shared,
            idle,
            deadline,
        ))
        .await;
    }
    let Some(config) = conn.opts.tls.clone() else {
        return Box::pin(h1::serve(ClientIo::Plain(stream), conn)).await;
    };
    let stats = conn.open.listener.clone();
    // Boxed: the handshake's state (a whole rustls session) is needed only until it ends.
    let accepting = Box::pin(tokio_rustls::TlsAcceptor::from(config).accept(stream));
    let handshake = tokio::time::timeout_at(deadline, accepting)
        .await
        .map_err(|_| "timeout")
        .and_then(|r| r.map_err(|e| failure(&e)));
    let session = match handshake {
        Ok(session) => session,
        Err(result) => {
            count(&stats, result);
            crate::warn_limited!(crate::ratelimit::Kind::TlsHandshake, peer = %conn.peer, listener = %conn.listener,
                reason = result, "TLS handshake failed");
            return;
        }
    };
    let facts = facts(session.get_ref().1);
    count(&stats, "ok");
    let v = TLS_VERSIONS.iter().position(|v| *v == facts.version).unwrap_or(0);
    let a = TLS_ALPNS
        .iter()
        .position(|a| *a == facts.alpn)
        .unwrap_or(TLS_ALPNS.len() - 1);
    stats.tls_negotiated[v * TLS_ALPNS.len() + a].fetch_add(1, Relaxed);
    let h2 = facts.alpn == "h2";
    conn.tls = Some(Arc::new(facts));
    let client = ClientIo::Tls(Box::new(session));
    if h2 {
        Box::pin(h1::http2(client, Vec::new(), conn)).await
    } else {
        Box::pin(h1::serve(client, conn)).await
    }
}

/// Reads exactly the PROXY header (what follows is the client's own protocol). `Ok(None)`:
/// a LOCAL or UNKNOWN header.
async fn read_proxy_header(
    stream: &mut TcpStream,
    deadline: Instant,
) -> Result<Option<std::net::SocketAddr>, &'static str> {
    let parsed = peek::until(
        stream,
        deadline,
        proxy_header::MAX_LEN,
        |bytes| match proxy_header::parse(bytes) {
            Parsed::Incomplete if bytes.len() >= proxy_header::MAX_LEN => Some(Parsed::Invalid("too long")),
            Parsed::Incomplete => None,
            verdict => Some(verdict),
        },
    );
    match parsed.await {
        Ok(Parsed::Header { len, source }) => {
            let mut header = vec![0u8; len];
            match tokio::time::timeout_at(deadline, stream.read_exact(&mut header)).await {
                Ok(Ok(_)) => Ok(source),
                _ => Err("cut short"),
            }
        }
        Ok(Parsed::Invalid(why)) => Err(why),
        Ok(Parsed::Incomplete) => Err("incomplete"),
        Err(Unfinished::Timeout) => Err("not complete within header_timeout"),
        Err(Unfinished::Closed) => Err("missing or truncated (the client closed)"),
    }
}

/// The `result` label of a failed handshake.
fn failure(e: &std::io::Error) -> &'static str {
    let Some(tls) = e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) else {
        return "closed";
    };
    match tls {
        rustls::Error::NoCertificatesPresented => "no_client_cert",
        rustls::Error::InvalidCertificate(_) => "bad_client_cert",
        rustls::Error::PeerIncompatible(_) | rustls::Error::NoApplicationProtocol => "incompatible",
        _ => "protocol",
    }
}

fn count(stats: &ListenerStats, result: &str) {
    if let Some(i) = TLS_RESULTS.iter().position(|r| *r == result) {
        stats.tls_handshakes[i].fetch_add(1, Relaxed);
    }
}

/// What a finished handshake negotiated.
fn facts(session: &rustls::ServerConnection) -> TlsFacts {
    TlsFacts {
        version: match session.protocol_version() {
            Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2",
            _ => "TLSv1.3",
        },
        cipher: session
            .negotiated_cipher_suite()
            .and_then(|c| c.suite().as_str())
            .unwrap_or("unknown"),
        sni: session.server_name().map(Into::into),
        alpn: match session.alpn_protocol() {
            Some(b"h2") => "h2",
            Some(b"http/1.1") => "http/1.1",
            _ => "none",
        },
    }
}
