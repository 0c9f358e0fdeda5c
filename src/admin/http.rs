//! The admin HTTP listener (loopback by default): `/live`, `/ready`, the stats CSV at
//! `/haproxy?stats;csv` (what zero-downtime-deploy scripts poll), `/metrics`, and
//! `POST /command` running the same dispatcher as the socket. A bearer token from
//! `[admin].token_file` guards `/command` when configured.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use super::commands::{execute, Answer, Peer, Reply};
use super::haproxy::{self, StatFilter};
use super::socket::{split_commands, MAX_LINE};
use crate::runtime::Veer;

struct Ctx {
    veer: Veer,
    token: Option<String>,
}

pub async fn serve(listener: TcpListener, veer: Veer, token: Option<String>) {
    let ctx = Arc::new(Ctx { veer, token });
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
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

fn text(status: StatusCode, body: impl Into<Bytes>, content_type: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, header::HeaderValue::from_static(content_type));
    r
}

async fn handle(ctx: &Ctx, req: Request<Incoming>, peer: SocketAddr) -> Response<Full<Bytes>> {
    const PLAIN: &str = "text/plain; charset=utf-8";
    let veer = &ctx.veer;
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/live") => text(StatusCode::OK, "ok\n", PLAIN),
        (&Method::GET, "/ready") => {
            if veer.snapshot().generation > 0 && !veer.draining() {
                text(StatusCode::OK, "ready\n", PLAIN)
            } else {
                text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n", PLAIN)
            }
        }
        (&Method::GET, "/haproxy") if req.uri().query().is_some_and(|q| q.split(';').any(|p| p == "csv")) => text(
            StatusCode::OK,
            haproxy::show_stat(veer, StatFilter::default()).await,
            "text/plain; charset=utf-8",
        ),
        (&Method::GET, "/metrics") => text(
            StatusCode::OK,
            veer.render_metrics().await,
            "text/plain; version=0.0.4; charset=utf-8",
        ),
        (&Method::POST, "/command") => command(ctx, req, peer).await,
        _ => text(StatusCode::NOT_FOUND, "not found\n", PLAIN),
    }
}

async fn command(ctx: &Ctx, req: Request<Incoming>, peer: SocketAddr) -> Response<Full<Bytes>> {
    const PLAIN: &str = "text/plain; charset=utf-8";
    if let Some(token) = &ctx.token {
        let given = req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        if given.and_then(|v| v.strip_prefix("Bearer ")) != Some(token.as_str()) {
            let mut r = text(
                StatusCode::UNAUTHORIZED,
                "Unauthorized: a valid bearer token is required.\n",
                PLAIN,
            );
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
            return r;
        }
    }
    let json = req
        .headers()
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
    let who = Peer {
        via: "http",
        uid: None,
        pid: None,
        addr: Some(peer),
    };
    let mut answers = Vec::new();
    for part in split_commands(line) {
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
        text(
            status,
            answers.iter().map(|a| a.text.clone()).collect::<Vec<_>>().join("\n"),
            PLAIN,
        )
    }
}
