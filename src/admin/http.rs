//! The admin HTTP listener (loopback by default): `/live`, `/ready`, the stats CSV at
//! `/haproxy?stats;csv` (what zero-downtime-deploy scripts poll), `/metrics`, the status
//! page at `/` (and `/haproxy?stats`) with its `/events` stream and `/status.json`
//! (`status`), and `POST /command` running the same dispatcher as the socket, guarded
//! against web pages (see [`command`]). The probe listener is the same server with only
//! `/live`, `/ready` and `/metrics`. Both close connections that do not send their headers
//! within `[admin] session_timeout`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, Limited, StreamBody};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use super::commands::{execute, is_read_only, Answer, Peer, Reply};
use super::haproxy::{self, StatFilter};
use super::socket::{split_commands, MAX_LINE};
use super::status::{self, Feed};
use crate::control::Veer;

/// What an HTTP admin listener serves.
pub enum Role {
    /// `[admin] http`: everything, with `POST /command` guarded (see [`command`]).
    Admin { token: Option<String> },
    /// `[admin] probe`: `/live`, `/ready` and `/metrics` only, so it may face the pod
    /// network without a token.
    Probe,
}

/// Every admin HTTP answer: a whole body, or the `/events` stream.
type Body = UnsyncBoxBody<Bytes, Infallible>;

struct Ctx {
    veer: Veer,
    role: Role,
    /// The status page's pictures (admin role only).
    feed: Option<Arc<Feed>>,
    /// This listener's own address: the only Host (besides `localhost`) a mutating
    /// command may name.
    local: SocketAddr,
}

pub async fn serve(listener: TcpListener, veer: Veer, role: Role) {
    let Ok(local) = listener.local_addr() else { return };
    let header_timeout = veer.snapshot().spec.admin.session_timeout;
    let feed = match &role {
        Role::Admin { token } => {
            let feed = Feed::new(token.is_some());
            tokio::spawn(feed.clone().run(veer.clone()));
            Some(feed)
        }
        Role::Probe => None,
    };
    let ctx = Arc::new(Ctx {
        veer,
        role,
        local,
        feed,
    });
    loop {
        let (stream, peer) = tokio::select! {
            _ = ctx.veer.shared.shutdown.cancelled() => return,
            _ = ctx.veer.handed_over() => return,
            accepted = listener.accept() => match accepted {
                Ok(x) => x,
                Err(_) => {
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let ctx = ctx.clone();
                async move { Ok::<_, Infallible>(handle(&ctx, req, peer).await) }
            });
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder.timer(hyper_util::rt::TokioTimer::new());
            if !header_timeout.is_zero() {
                // Half-sent requests (and idle keep-alives) do not hold the listener.
                builder.header_read_timeout(header_timeout);
            }
            // A client that connects and sends nothing is not reached by the header timer.
            if !header_timeout.is_zero()
                && tokio::time::timeout(header_timeout, stream.peek(&mut [0u8; 1]))
                    .await
                    .is_err()
            {
                return;
            }
            let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
        });
    }
}

fn text(status: StatusCode, body: impl Into<Bytes>, content_type: &'static str) -> Response<Body> {
    let mut r = Response::new(Full::new(body.into()).boxed_unsync());
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, header::HeaderValue::from_static(content_type));
    r
}

async fn handle(ctx: &Ctx, req: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
    const PLAIN: &str = "text/plain; charset=utf-8";
    let veer = &ctx.veer;
    let probe = matches!(ctx.role, Role::Probe);
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/live") => text(StatusCode::OK, "ok\n", PLAIN),
        (&Method::GET, "/ready") => {
            if veer.ready().await {
                text(StatusCode::OK, "ready\n", PLAIN)
            } else {
                text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n", PLAIN)
            }
        }
        (&Method::GET, "/metrics") => text(
            StatusCode::OK,
            veer.render_metrics().await,
            "text/plain; version=0.0.4; charset=utf-8",
        ),
        _ if probe => text(
            StatusCode::NOT_FOUND,
            "not found (probe listener: /live, /ready, /metrics)\n",
            PLAIN,
        ),
        (&Method::GET, "/haproxy") if req.uri().query().is_some_and(|q| q.split(';').any(|p| p == "csv")) => text(
            StatusCode::OK,
            haproxy::show_stat(veer, &StatFilter::default())
                .await
                .unwrap_or_default(),
            "text/plain; charset=utf-8",
        ),
        (&Method::POST, "/command") => command(ctx, req, peer).await,
        (&Method::GET, "/" | "/haproxy" | "/events" | "/status.json") => page(ctx, &req).await,
        _ => text(StatusCode::NOT_FOUND, "not found\n", PLAIN),
    }
}

/// The status page and what it reads. Without a token the listener is loopback-only, and
/// a Host that names neither it nor `localhost` is refused: that is DNS rebinding, a
/// foreign page reading the picture as if same-origin.
async fn page(ctx: &Ctx, req: &Request<Incoming>) -> Response<Body> {
    let (Role::Admin { token }, Some(feed)) = (&ctx.role, &ctx.feed) else {
        return text(StatusCode::NOT_FOUND, "not found\n", "text/plain; charset=utf-8");
    };
    let host = req.headers().get(header::HOST).and_then(|h| h.to_str().ok());
    if token.is_none() && !host.is_some_and(|h| own_name(h, ctx.local)) {
        return text(
            StatusCode::FORBIDDEN,
            "Forbidden: the status page answers to Host localhost or this listener's address.\n",
            "text/plain; charset=utf-8",
        );
    }
    let mut r = match req.uri().path() {
        "/events" => {
            let frames = status::events(ctx.veer.clone(), feed.clone());
            let body = StreamBody::new(futures_util::StreamExt::map(frames, |b| {
                Ok::<_, Infallible>(hyper::body::Frame::data(b))
            }));
            let mut r = Response::new(BodyExt::boxed_unsync(body));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("text/event-stream"),
            );
            r
        }
        "/status.json" => text(StatusCode::OK, feed.current().await.to_string(), "application/json"),
        _ => {
            let mut r = text(StatusCode::OK, status::PAGE, "text/html; charset=utf-8");
            // Inline script and style only, talking to this listener only; never framed
            // (the actions must not be clickjacked).
            r.headers_mut().insert(
                header::CONTENT_SECURITY_POLICY,
                header::HeaderValue::from_static(
                    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
                     connect-src 'self'; img-src data:; frame-ancestors 'none'; form-action 'none'",
                ),
            );
            r.headers_mut()
                .insert(header::X_FRAME_OPTIONS, header::HeaderValue::from_static("DENY"));
            r
        }
    };
    let headers = r.headers_mut();
    headers.insert(header::CACHE_CONTROL, header::HeaderValue::from_static("no-store"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        header::HeaderValue::from_static("nosniff"),
    );
    r
}

/// `POST /command`. A web page can make a browser send a "simple" cross-origin POST (and
/// DNS rebinding can make it look same-origin), so state-changing commands need what a page
/// cannot send: the bearer token when `token_file` is set; otherwise the `X-Veer-Admin`
/// header (a non-simple request, whose preflight veer never grants) and a Host naming this
/// listener or `localhost`. A foreign `Origin` is refused outright. Without a token,
/// read-only commands (`show …`, `get …`, `help`, `wait …`) stay open (the listener is
/// loopback-only then); with one, every command needs it.
///
/// A state-changing command from a browser (it sends `Origin`, or `Sec-Fetch-Mode`) —
/// the status page's actions — needs the token in every case, and is refused with 403
/// without it: the page is read-only unless `token_file` is set.
async fn command(ctx: &Ctx, req: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
    const PLAIN: &str = "text/plain; charset=utf-8";
    let Role::Admin { token } = &ctx.role else {
        return text(StatusCode::NOT_FOUND, "not found\n", PLAIN);
    };
    let headers = req.headers();
    if let Some(origin) = headers.get(header::ORIGIN) {
        let own = origin
            .to_str()
            .ok()
            .and_then(|o| o.strip_prefix("http://").or_else(|| o.strip_prefix("https://")))
            .is_some_and(|h| own_host(h, ctx.local));
        if !own {
            return text(
                StatusCode::FORBIDDEN,
                "Forbidden: cross-origin requests to the admin listener are refused.\n",
                PLAIN,
            );
        }
    }
    let browser = headers.contains_key(header::ORIGIN) || headers.contains_key("sec-fetch-mode");
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let authorized = token.as_deref().is_some_and(|t| bearer == Some(t));
    let marked = headers.contains_key(ADMIN_HEADER)
        && headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .is_some_and(|h| own_host(h, ctx.local));
    let json = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/json"));
    let body = match Limited::new(req.into_body(), MAX_LINE).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return text(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("Command line too long (limit is {MAX_LINE} bytes).\n"),
                PLAIN,
            )
        }
    };
    let line = String::from_utf8_lossy(&body);
    let line = line.lines().next().unwrap_or("");
    let parts = split_commands(line);
    let mutating = parts.iter().any(|p| !is_read_only(p));
    let unauthorized = || {
        let mut r = text(
            StatusCode::UNAUTHORIZED,
            "Unauthorized: a valid bearer token is required.\n",
            PLAIN,
        );
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
        r
    };
    match token {
        _ if browser && mutating && !authorized => {
            return text(
                StatusCode::FORBIDDEN,
                if token.is_some() {
                    "Forbidden: actions need the admin token.\n"
                } else {
                    "Forbidden: actions from a browser need [admin] token_file; without it the status page is read-only.\n"
                },
                PLAIN,
            )
        }
        Some(_) if !authorized => return unauthorized(),
        None if mutating && !marked => {
            return text(
                StatusCode::FORBIDDEN,
                "Forbidden: state-changing commands over HTTP need the header 'X-Veer-Admin: 1' \
                 and a Host naming this listener or localhost (veer ctl --http sends both).\n",
                PLAIN,
            )
        }
        _ => {}
    }
    let who = Peer {
        via: "http",
        uid: None,
        pid: None,
        addr: Some(peer),
    };
    let mut answers = Vec::new();
    for part in parts {
        answers.push(match execute(&ctx.veer, &part, &who).await {
            Reply::Answer(a) => a,
            _ => Answer::err("This command is only available on the admin socket."),
        });
    }
    let ok = answers.iter().all(|a| a.ok);
    let status = if ok { StatusCode::OK } else { StatusCode::BAD_REQUEST };
    if json {
        let body = match answers.as_slice() {
            [one] => one.to_json(),
            many => serde_json::json!({"ok": ok, "results": many.iter().map(|a| serde_json::json!({"ok": a.ok, "output": a.text})).collect::<Vec<_>>()}).to_string(),
        };
        text(status, body + "\n", "application/json")
    } else {
        // `show split … json` and the like say what they are.
        let is_json = matches!(answers.as_slice(), [one] if one.as_json().is_some());
        let body = answers.iter().map(|a| a.text.clone()).collect::<Vec<_>>().join("\n");
        text(status, body, if is_json { "application/json" } else { PLAIN })
    }
}

/// The header that marks a deliberate admin request (browsers cannot send it cross-origin
/// without a preflight, which veer never answers).
pub const ADMIN_HEADER: &str = "x-veer-admin";

/// `host` (a Host header, or an Origin without its scheme) as name and port.
fn host_port(host: &str) -> (&str, Option<&str>) {
    match host.rsplit_once(':') {
        Some((n, p)) if !n.ends_with(':') && p.bytes().all(|b| b.is_ascii_digit()) && !p.is_empty() => (n, Some(p)),
        _ => (host, None),
    }
}

/// True when `host` names `local`: `localhost` or the listener's IP, with the listener's
/// port or none.
fn own_host(host: &str, local: SocketAddr) -> bool {
    let (_, port) = host_port(host);
    own_name(host, local) && port.is_none_or(|p| p.parse::<u16>().ok() == Some(local.port()))
}

/// True when `host`'s name (any port: a tunnel may forward another) is `localhost` or the
/// listener's IP.
fn own_name(host: &str, local: SocketAddr) -> bool {
    let (name, _) = host_port(host);
    let ip = name.trim_start_matches('[').trim_end_matches(']');
    name.eq_ignore_ascii_case("localhost") || ip.parse::<std::net::IpAddr>().ok() == Some(local.ip())
}

#[cfg(test)]
mod tests {
    use super::own_host;

    #[test]
    fn own_hosts() {
        let local = "127.0.0.1:9901".parse().unwrap();
        for ok in ["127.0.0.1:9901", "127.0.0.1", "localhost:9901", "LOCALHOST"] {
            assert!(own_host(ok, local), "{ok}");
        }
        for bad in [
            "evil.example",
            "127.0.0.1:80",
            "localhost:1",
            "127.0.0.2:9901",
            "",
            "evil.example:9901",
        ] {
            assert!(!own_host(bad, local), "{bad}");
        }
        let v6 = "[::1]:9901".parse().unwrap();
        assert!(own_host("[::1]:9901", v6));
        assert!(!own_host("[::2]:9901", v6));
    }
}
