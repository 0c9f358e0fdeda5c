//! The proxy's one error type and the one place it becomes a response (design §5).
//!
//! Synthetic responses carry `veer-error: <reason>` so operators can tell veer's errors from
//! the service's own.

use std::io;

use http::StatusCode;

/// Which side an error came from; feeds logs and (later) metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Downstream,
    Upstream,
    Internal,
}

/// Every `veer-error` value.
pub const REASONS: [&str; 14] = [
    "no-route",
    "bad-request",
    "no-server",
    "connect-failed",
    "upstream-error",
    "upstream-timeout",
    "request-timeout",
    "local-resources",
    "upstream-protocol",
    "upstream-tls",
    "queue-full",
    "queue-timeout",
    "body-too-large",
    "invalid-backend",
];

/// A TLS handshake with a server failed (its certificate did not verify, say): carried
/// inside the `io::Error` of a connect, so it is answered `veer-error: upstream-tls`.
#[derive(Debug, thiserror::Error)]
#[error("upstream TLS handshake failed: {0}")]
pub struct TlsFailure(pub io::Error);

/// Whether a connect error is a failed TLS handshake.
pub fn is_tls_failure(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<TlsFailure>())
}

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("no route matches the request")]
    NoRoute,
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    #[error("no available server")]
    NoServer,
    #[error("upstream connect failed: {0}")]
    Connect(io::Error),
    #[error("upstream protocol error: {0}")]
    UpstreamProtocol(#[source] hyper::Error),
    /// The connection to the server broke during the exchange.
    #[error("upstream connection failed: {0}")]
    UpstreamIo(io::Error),
    /// The server's response head could not be parsed, or its framing is ambiguous.
    #[error("unparsable or ambiguous response from upstream: {0}")]
    UpstreamMalformed(&'static str),
    /// The request head is larger than veer accepts.
    #[error("request header fields too large")]
    HeadersTooLarge,
    #[error("upstream answered 101 to a request that did not ask to upgrade")]
    UnexpectedUpgrade,
    #[error("upstream timed out")]
    Timeout,
    /// The client stopped sending its request body for `body_timeout`.
    #[error("the client's request body stalled")]
    RequestTimeout,
    /// This machine ran out of descriptors, buffers or ports: not the server's fault.
    #[error("out of local resources: {0}")]
    LocalResources(io::Error),
    /// Every server is at its `maxconn` and the backend's queue is full.
    #[error("every server is busy and the queue is full")]
    QueueFull,
    /// Waited in the backend's queue past its timeout.
    #[error("waited in the queue past its timeout")]
    QueueTimeout,
    /// The request body is larger than the listener's `max_body`.
    #[error("request body larger than max_body")]
    BodyTooLarge,
    /// The route's share that names a backend that could not be resolved (a Gateway API
    /// backendRef to a missing Service, say): 500, as the spec asks.
    #[error("the route's backend reference could not be resolved")]
    InvalidBackend,
}

/// How an exchange ended, as HAProxy's termination state says it (its log's `%ts`, the
/// first two characters of `----`): who ended it — `-` nobody (it completed), `C` the
/// client, `S` the server, `P` veer refused, `R` veer ran out of a resource, `K` an admin cut
/// or the process's stop, `c`/`s` a client/server timeout — and in which phase: `R` the
/// request, `Q` the queue, `C` connecting, `H` the response head, `D` the body, `-` done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Termination([u8; 2]);

impl Termination {
    pub const COMPLETE: Termination = Termination(*b"--");
    /// The client went away while the response body was sent.
    pub const CLIENT_ABORT: Termination = Termination(*b"CD");
    /// The server broke off (or broke its framing) in the middle of the body.
    pub const SERVER_ABORT: Termination = Termination(*b"SD");
    /// The server sent nothing for `read_timeout` in the middle of the body.
    pub const SERVER_TIMEOUT: Termination = Termination(*b"sD");
    /// `shutdown sessions`, a drain deadline or the process's stop cut the body.
    pub const KILLED: Termination = Termination(*b"KD");

    /// The two characters.
    pub fn as_str(&self) -> &str {
        // Every value is made from ASCII here.
        std::str::from_utf8(&self.0).unwrap_or("--")
    }
}

impl ProxyError {
    /// Where veer's own answer leaves the exchange, in HAProxy's terms: a refused request
    /// is `PR`, no server or a failed connect `SC`, an invalid response `PH`, a server that
    /// broke off before its head `SH`, a response timeout `sH`, a stalled upload `cD`, a
    /// full queue `PQ` and a queue timeout `sQ`, no local resources `RC`.
    pub fn termination(&self) -> Termination {
        Termination(match self {
            ProxyError::NoRoute | ProxyError::BadRequest(_) | ProxyError::HeadersTooLarge => *b"PR",
            ProxyError::BodyTooLarge => *b"PD",
            ProxyError::RequestTimeout => *b"cD",
            ProxyError::NoServer | ProxyError::Connect(_) => *b"SC",
            ProxyError::InvalidBackend => *b"PR",
            ProxyError::LocalResources(_) => *b"RC",
            ProxyError::QueueFull => *b"PQ",
            ProxyError::QueueTimeout => *b"sQ",
            ProxyError::UpstreamProtocol(_) | ProxyError::UpstreamMalformed(_) | ProxyError::UnexpectedUpgrade => {
                *b"PH"
            }
            ProxyError::UpstreamIo(_) => *b"SH",
            ProxyError::Timeout => *b"sH",
        })
    }

    pub fn side(&self) -> Side {
        match self {
            ProxyError::NoRoute
            | ProxyError::BadRequest(_)
            | ProxyError::RequestTimeout
            | ProxyError::HeadersTooLarge
            | ProxyError::BodyTooLarge => Side::Downstream,
            ProxyError::NoServer
            | ProxyError::LocalResources(_)
            | ProxyError::QueueFull
            | ProxyError::QueueTimeout
            | ProxyError::InvalidBackend => Side::Internal,
            ProxyError::Connect(_)
            | ProxyError::UpstreamProtocol(_)
            | ProxyError::UpstreamIo(_)
            | ProxyError::UpstreamMalformed(_)
            | ProxyError::UnexpectedUpgrade
            | ProxyError::Timeout => Side::Upstream,
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::NoRoute => StatusCode::NOT_FOUND,
            ProxyError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ProxyError::NoServer | ProxyError::LocalResources(_) | ProxyError::QueueFull | ProxyError::QueueTimeout => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ProxyError::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            ProxyError::Connect(_)
            | ProxyError::UpstreamProtocol(_)
            | ProxyError::UpstreamIo(_)
            | ProxyError::UpstreamMalformed(_)
            | ProxyError::UnexpectedUpgrade => StatusCode::BAD_GATEWAY,
            ProxyError::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ProxyError::Timeout => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::InvalidBackend => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The `veer-error` header value: stable, machine-readable.
    pub fn reason(&self) -> &'static str {
        REASONS[self.reason_index()]
    }

    /// Index of [`ProxyError::reason`] in [`REASONS`] (for counters kept per reason).
    pub fn reason_index(&self) -> usize {
        match self {
            ProxyError::NoRoute => 0,
            ProxyError::BadRequest(_) | ProxyError::HeadersTooLarge => 1,
            ProxyError::NoServer => 2,
            ProxyError::Connect(e) if is_tls_failure(e) => 9,
            ProxyError::Connect(_) => 3,
            ProxyError::UpstreamProtocol(_) | ProxyError::UpstreamIo(_) | ProxyError::UnexpectedUpgrade => 4,
            ProxyError::Timeout => 5,
            ProxyError::RequestTimeout => 6,
            ProxyError::LocalResources(_) => 7,
            ProxyError::UpstreamMalformed(_) => 8,
            ProxyError::QueueFull => 10,
            ProxyError::QueueTimeout => 11,
            ProxyError::BodyTooLarge => 12,
            ProxyError::InvalidBackend => 13,
        }
    }

    /// A moment's shortage (local resources, a full queue): clients may retry after a
    /// second, and `Retry-After` says so.
    pub fn retry_after(&self) -> bool {
        matches!(
            self,
            ProxyError::LocalResources(_) | ProxyError::QueueFull | ProxyError::QueueTimeout
        )
    }

    /// The synthetic response as HTTP/1.1 bytes (the HTTP/1 engine's form of
    /// the HTTP/2 path's synthetic response), appended to `out`; with `close`, it says
    /// `Connection: close`.
    pub fn write_response(&self, out: &mut Vec<u8>, close: bool) {
        use std::io::Write;
        let status = self.status();
        let reason = status.canonical_reason().unwrap_or("");
        let body_len = 3 + 1 + reason.len() + 1;
        let _ = write!(
            out,
            "HTTP/1.1 {} {reason}\r\nveer-error: {}\r\ncontent-type: text/plain; charset=utf-8\r\n\
             cache-control: no-store\r\ncontent-length: {body_len}\r\n",
            status.as_u16(),
            self.reason()
        );
        if self.retry_after() {
            out.extend_from_slice(b"retry-after: 1\r\n");
        }
        if close {
            out.extend_from_slice(b"connection: close\r\n");
        }
        let _ = write!(out, "\r\n{} {reason}\n", status.as_u16());
    }
}
