//! Notifications: every event the admin stream carries, POSTed to the `[[notify]]` webhooks
//! that want its kind — as the event's JSON line, or as Slack's `{"text": …}`.
//!
//! One worker per receiver with a bounded queue: the event loop only hands lines over
//! (`try_send`), so a receiver that hangs or is gone fills its own queue and has new lines
//! dropped (counted), and never slows the control plane, which publishes without waiting,
//! or the data plane, which knows nothing of this. Each POST has the receiver's `timeout`
//! and is retried with backoff; failures are counted and logged.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::sync::{broadcast, mpsc};

use super::Veer;
use crate::config::{NotifyFormat, NotifySpec};
use crate::metrics::names;

/// Attempts per event (the first and its retries), backing off from [`BACKOFF`].
const ATTEMPTS: u32 = 4;
const BACKOFF: Duration = Duration::from_millis(500);

/// The `[[notify]] events` kinds an event line belongs to.
pub fn kinds(event: &Value) -> Vec<&'static str> {
    match event["event"].as_str() {
        Some("split") => vec!["split"],
        Some("rollout") => vec!["rollout"],
        Some("reload") => vec!["reload"],
        Some("health") => vec!["health"],
        Some("server" | "server_added" | "server_removed") if event["state"] == "drain" => vec!["server", "drain"],
        Some("server" | "server_added" | "server_removed") => vec!["server"],
        _ => vec![],
    }
}

fn pairs(v: &Value) -> String {
    v.as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().map_or_else(|| v.to_string(), str::to_string)))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default()
}

/// Slack's message text for an event: what happened, to which backend and groups, the
/// deployment metadata, and who did it.
pub fn slack_text(e: &Value) -> String {
    let who = e["who"].as_str().map(|w| format!(" by {w}")).unwrap_or_default();
    match e["event"].as_str().unwrap_or("") {
        "split" => {
            let meta: Vec<String> = e["meta"]
                .as_object()
                .into_iter()
                .flatten()
                .filter(|(_, m)| m.as_object().is_some_and(|m| !m.is_empty()))
                .map(|(g, m)| format!("{g}: {}", pairs(m)))
                .collect();
            let meta = if meta.is_empty() {
                String::new()
            } else {
                format!(" ({})", meta.join("; "))
            };
            format!(
                "veer: backend {} split {}{meta}{who}",
                e["backend"].as_str().unwrap_or(""),
                pairs(&e["weights"])
            )
        }
        "rollout" => format!(
            "veer: rollout of {} to {} ({}) {}, step {}/{} at {}%: {}{who}",
            e["backend"].as_str().unwrap_or(""),
            e["to"].as_str().unwrap_or(""),
            pairs(&e["meta"]),
            e["phase"].as_str().unwrap_or(""),
            e["step"],
            e["steps"],
            e["percent"],
            e["verdict"].as_str().unwrap_or("")
        ),
        "reload" => format!(
            "veer: config reload {}{}",
            e["result"].as_str().unwrap_or(""),
            e["error"].as_str().map(|x| format!(": {x}")).unwrap_or_default()
        ),
        "health" => format!(
            "veer: server {} is {}",
            e["server"].as_str().unwrap_or(""),
            e["health"].as_str().unwrap_or("")
        ),
        other => format!(
            "veer: {other} {} state {} weight {}{who}",
            e["server"].as_str().unwrap_or(""),
            e["state"].as_str().unwrap_or("-"),
            e["weight"]
        ),
    }
}

/// A receiver's worker: its queue and what it needs to POST.
struct Receiver {
    spec: NotifySpec,
    /// For an https receiver; an error (a bad `ca`) fails every POST with it.
    tls: Option<Result<tokio_rustls::TlsConnector, String>>,
    metrics: Arc<crate::metrics::Metrics>,
}

impl Veer {
    /// Hands every event to the receivers that want it until shutdown. Receivers follow the
    /// running config: a reload that adds or changes one starts its worker, one that removes
    /// it ends it (its queue is dropped).
    pub(super) async fn notifier(self) {
        let mut events = self.subscribe();
        let mut workers: HashMap<String, mpsc::Sender<String>> = HashMap::new();
        loop {
            let line = tokio::select! {
                _ = self.shared.shutdown.cancelled() => return,
                line = events.recv() => match line {
                    Ok(line) => line,
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        self.metrics.counter(names::NOTIFY_DROPPED, &[]).increment(n);
                        continue;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                },
            };
            let spec = self.snapshot().spec.clone();
            workers.retain(|key, _| spec.notify.iter().any(|n| format!("{n:?}") == *key));
            if spec.notify.is_empty() {
                continue;
            }
            let Ok(event) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            let kinds = kinds(&event);
            for n in &spec.notify {
                if !n.events.is_empty() && !kinds.iter().any(|k| n.events.iter().any(|e| e == k)) {
                    continue;
                }
                let tx = workers
                    .entry(format!("{n:?}"))
                    .or_insert_with(|| self.start_receiver(n.clone()));
                let body = match n.format {
                    NotifyFormat::Json => line.clone(),
                    NotifyFormat::Slack => serde_json::json!({"text": slack_text(&event)}).to_string(),
                };
                if tx.try_send(body).is_err() {
                    self.metrics.counter(names::NOTIFY_DROPPED, &[]).increment(1);
                }
            }
        }
    }

    fn start_receiver(&self, spec: NotifySpec) -> mpsc::Sender<String> {
        let (tx, mut rx) = mpsc::channel::<String>(spec.queue);
        let tls = (spec.url.scheme_str() == Some("https")).then(|| tls_connector(spec.ca.as_deref()));
        let r = Receiver {
            spec,
            tls,
            metrics: self.metrics.clone(),
        };
        let shutdown = self.shared.shutdown.clone();
        tokio::spawn(async move {
            loop {
                let body = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    body = rx.recv() => match body { Some(b) => b, None => return },
                };
                r.deliver(&body).await;
            }
        });
        tx
    }
}

/// The system's roots (rustls-native-certs), the web PKI's when there are none, and the
/// receiver's own `ca`.
fn tls_connector(ca: Option<&std::path::Path>) -> Result<tokio_rustls::TlsConnector, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    if roots.is_empty() {
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    }
    if let Some(path) = ca {
        roots.roots.extend(crate::config::tls::load_roots(path)?.roots);
    }
    crate::config::tls::build::client_config(Arc::new(roots), true, None, &[b"http/1.1"])
        .map(tokio_rustls::TlsConnector::from)
        .map_err(|e| e.to_string())
}

impl Receiver {
    /// POSTs one event, retrying with backoff; counts the outcome.
    async fn deliver(&self, body: &str) {
        let mut wait = BACKOFF;
        let mut last = String::new();
        for attempt in 0..ATTEMPTS {
            match tokio::time::timeout(self.spec.timeout, self.post(body)).await {
                Ok(Ok(status)) if (200..300).contains(&status) => {
                    self.count("sent");
                    return;
                }
                Ok(Ok(status)) => last = format!("HTTP {status}"),
                Ok(Err(e)) => last = e,
                Err(_) => last = format!("no answer within {:?}", self.spec.timeout),
            }
            if attempt + 1 < ATTEMPTS {
                tokio::time::sleep(wait).await;
                wait *= 2;
            }
        }
        self.count("failed");
        tracing::warn!(url = %self.spec.url, "notify: event not delivered after {ATTEMPTS} attempts: {last}");
    }

    fn count(&self, result: &'static str) {
        self.metrics
            .counter(names::NOTIFY, &[("result", result.to_string())])
            .increment(1);
    }

    async fn post(&self, body: &str) -> Result<u16, String> {
        let url = &self.spec.url;
        let host = url.host().ok_or("no host")?;
        let https = self.tls.is_some();
        let port = url.port_u16().unwrap_or(if https { 443 } else { 80 });
        let tcp = tokio::net::TcpStream::connect((host.trim_matches(['[', ']']), port))
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let _ = tcp.set_nodelay(true);
        let authority = url.authority().map_or(host.to_string(), |a| a.to_string());
        let path = url.path_and_query().map_or("/", |p| p.as_str());
        let request = http::Request::post(path)
            .header(http::header::HOST, &authority)
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::USER_AGENT, concat!("veer/", env!("CARGO_PKG_VERSION")))
            .body(Full::new(bytes::Bytes::from(body.to_string())))
            .map_err(|e| e.to_string())?;
        match &self.tls {
            Some(tls) => {
                let tls = tls.as_ref().map_err(Clone::clone)?;
                let name = rustls_pki_types::ServerName::try_from(host.trim_matches(['[', ']']).to_string())
                    .map_err(|e| format!("server name: {e}"))?;
                let stream = tls.connect(name, tcp).await.map_err(|e| format!("TLS: {e}"))?;
                send(TokioIo::new(stream), request).await
            }
            None => send(TokioIo::new(tcp), request).await,
        }
    }
}

async fn send<IO>(io: IO, request: http::Request<Full<bytes::Bytes>>) -> Result<u16, String>
where
    IO: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let response = sender.send_request(request).await.map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    // Read the answer to its end so the receiver sees a clean exchange.
    let _ = response.into_body().collect().await;
    Ok(status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_have_their_kinds_and_slack_text_names_who_and_what() {
        let split: Value = serde_json::from_str(
            r#"{"event":"split","backend":"shop","weights":{"blue":900,"green":100},
                "meta":{"blue":{},"green":{"build":"197","deployed_by":"jenkins"}},"who":"uid 0 (root)"}"#,
        )
        .unwrap_or_default();
        assert_eq!(kinds(&split), vec!["split"]);
        let text = slack_text(&split);
        assert_eq!(
            text,
            "veer: backend shop split blue=900 green=100 (green: build=197 deployed_by=jenkins) by uid 0 (root)"
        );
        let drain: Value =
            serde_json::from_str(r#"{"event":"server","server":"shop/b1","state":"drain"}"#).unwrap_or_default();
        assert_eq!(kinds(&drain), vec!["server", "drain"]);
    }
}
