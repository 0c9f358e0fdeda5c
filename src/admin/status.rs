//! The status page (issue 24): the page itself (`status.html`, embedded), the one JSON
//! picture it draws — listeners, backends, each group's share and metadata, every server's
//! state, health, load, rates and p50/p99, rollouts, the last reload — and the
//! server-sent-events stream (`GET /events`) that carries the picture and the admin events
//! to every open page.
//!
//! One task ([`Feed::run`]) builds the picture for all pages together: once a second while
//! at least one page is open, at once when a page opens or an event arrives (a burst of
//! them coalesced, at most ten pictures a second), never while none is (so an unwatched
//! veer pays nothing). Rates and percentiles are differences of
//! consecutive readings of the servers' counters, which only that task keeps.
//!
//! Read-only: this module changes nothing. The page's actions are `POST /command`, the
//! socket's executor and audit log (see `http`); it must not grow its own.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::{json, Value};
use tokio::sync::{broadcast, watch, Notify};

use super::commands::rollout_json;
use super::haproxy;
use crate::clock::now_ms;
use crate::control::rollout_state::Reading;
use crate::control::{ReloadOutcome, Veer};

/// The page: HTML, CSS and script in one file, no CDN, no build step.
pub const PAGE: &str = include_str!("status.html");

/// How often open pages get a fresh picture.
pub const PERIOD: Duration = Duration::from_secs(1);

/// Pictures are at least this far apart, however many changes arrive.
const GAP: Duration = Duration::from_millis(100);

/// p50/p99 are over the responses of about this long (a canary at 1 % of a small service
/// answers few requests a second).
const WINDOW: Duration = Duration::from_secs(10);

/// A picture and when it was built (`None`: never).
type Picture = (Option<Instant>, Arc<str>);

/// The shared picture and who is watching it.
pub struct Feed {
    latest: watch::Sender<Picture>,
    wake: Notify,
    /// Whether the page may offer actions (`[admin] token_file` is set).
    actions: bool,
}

impl Feed {
    pub fn new(actions: bool) -> Arc<Feed> {
        Arc::new(Feed {
            latest: watch::Sender::new((None, Arc::from(""))),
            wake: Notify::new(),
            actions,
        })
    }

    /// A receiver of pictures whose first `changed()` is at once: the latest picture when
    /// it is less than a period old (other pages are watching), else a fresh one built
    /// for it.
    pub fn watch(&self) -> watch::Receiver<Picture> {
        let mut rx = self.latest.subscribe();
        if rx.borrow().0.is_some_and(|at| at.elapsed() < PERIOD) {
            rx.mark_changed();
        } else {
            self.wake.notify_one();
        }
        rx
    }

    /// Open pages (event streams and `/status.json` readers waiting).
    pub fn pages(&self) -> usize {
        self.latest.receiver_count()
    }

    /// The current picture, freshly built.
    pub async fn current(&self) -> Arc<str> {
        let mut rx = self.watch();
        match tokio::time::timeout(Duration::from_secs(5), rx.changed()).await {
            Ok(Ok(())) => rx.borrow_and_update().1.clone(),
            _ => rx.borrow().1.clone(),
        }
    }

    /// Builds pictures until shutdown or hand-over.
    pub async fn run(self: Arc<Self>, veer: Veer) {
        let (mut history, mut last) = (History::default(), None);
        loop {
            let watched = self.pages() > 0;
            tokio::select! {
                _ = veer.shared.shutdown.cancelled() => return,
                _ = veer.handed_over() => return,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(PERIOD), if watched => {}
            }
            if self.pages() == 0 {
                continue;
            }
            // A burst of changes (a script draining 100 servers) coalesces: one picture per
            // GAP at most, with every change of the burst in the last one.
            if let Some(wait) = last.map(|l: Instant| GAP.saturating_sub(l.elapsed())) {
                tokio::time::sleep(wait).await;
            }
            last = Some(Instant::now());
            let picture = picture(&veer, &mut history, self.actions).await;
            self.latest
                .send_replace((Some(Instant::now()), Arc::from(picture.to_string())));
        }
    }
}

/// Every server's counters at one moment.
struct Sample {
    at: Instant,
    /// By server id; the state's address tells a recreated server (counters from zero).
    servers: HashMap<Arc<str>, (usize, Reading)>,
}

impl Sample {
    fn take(snap: &crate::snapshot::Snapshot) -> Sample {
        let servers = snap
            .servers()
            .map(|s| {
                (
                    s.id.clone(),
                    (Arc::as_ptr(&s.state) as usize, Reading::of_server(&s.state)),
                )
            })
            .collect();
        Sample {
            at: Instant::now(),
            servers,
        }
    }
}

/// Readings of the last [`WINDOW`], oldest first, at most two a second (pictures built
/// for a burst of events are not kept).
#[derive(Default)]
struct History(VecDeque<Sample>);

impl History {
    /// Keeps `now` unless the last kept reading is recent; drops what left the window, and
    /// everything after a pause (no page open): rates over minutes would mislead.
    fn keep(&mut self, now: Sample) {
        let age = |s: &Sample| now.at.duration_since(s.at);
        if self.0.back().is_some_and(|last| age(last) > PERIOD * 3) {
            self.0.clear();
        }
        if self.0.back().is_some_and(|last| age(last) < PERIOD / 2) {
            return;
        }
        while self.0.front().is_some_and(|s| age(s) > WINDOW) {
            self.0.pop_front();
        }
        self.0.push_back(now);
    }

    /// One server's figures in `now`: its reading, what changed over about the last second
    /// (and over how many seconds), and over the window.
    fn figures<'a>(&self, now: &'a Sample, id: &str) -> Option<Figures<'a>> {
        let (ptr, reading) = now.servers.get(id)?;
        fn same<'s>(s: &'s Sample, id: &str, ptr: usize) -> Option<&'s Reading> {
            s.servers.get(id).filter(|(p, _)| *p == ptr).map(|(_, r)| r)
        }
        let same = |s| same(s, id, *ptr);
        let older = |s: &&Sample| s.at < now.at;
        let second = (self.0.iter().rev().filter(older))
            .find(|s| now.at.duration_since(s.at) >= PERIOD * 9 / 10)
            .or_else(|| self.0.iter().find(older));
        let rate = second.and_then(|s| Some((reading.since(same(s)?), now.at.duration_since(s.at).as_secs_f64())));
        let window = self.0.iter().filter(older).find_map(same).map(|r| reading.since(r));
        Some(Figures { reading, rate, window })
    }
}

struct Figures<'a> {
    reading: &'a Reading,
    rate: Option<(Reading, f64)>,
    window: Option<Reading>,
}

fn ms(d: Option<Duration>) -> Value {
    d.map_or(Value::Null, |d| json!(d.as_secs_f64() * 1000.0))
}

fn per_second(n: u64, secs: f64) -> f64 {
    (n as f64 / secs * 10.0).round() / 10.0
}

/// The whole picture, as the page and `/status.json` get it.
async fn picture(veer: &Veer, history: &mut History, actions: bool) -> Value {
    let snap = veer.snapshot();
    let now = now_ms();
    let sample = Sample::take(&snap);
    let stats = veer.listener_stats().await;
    let mut listeners = Vec::new();
    for l in &snap.spec.listeners {
        let st = stats.iter().find(|(n, _)| *n == l.name).map(|(_, s)| s);
        let mut backends: Vec<&str> = l.routes.iter().map(|r| r.backend.as_str()).collect();
        backends.extend(l.backend.as_deref());
        backends.dedup();
        listeners.push(json!({
            "name": l.name,
            "bind": veer.listener_addr(&l.name).await.unwrap_or(l.bind).to_string(),
            "protocol": format!("{:?}", l.protocol).to_lowercase(),
            "tls": l.tls.is_some(),
            "active": st.map_or(0, |s| s.active.load(Relaxed)),
            "total": st.map_or(0, |s| s.total.load(Relaxed)),
            "backends": backends,
        }));
    }
    let rollouts = veer.rollout_status(None).await;
    let mut backends = Vec::new();
    for (b, spec) in snap.backends.iter().zip(&snap.spec.backends) {
        let health = spec.health.as_ref();
        let shares = b.shares(now);
        let groups: Vec<Value> = b
            .groups
            .iter()
            .zip(&shares)
            .map(|(g, share)| {
                let meta = spec.groups.iter().find(|x| *x.name == *g.name).map(|x| &x.meta);
                let servers: Vec<Value> = g
                    .servers
                    .iter()
                    .map(|s| server(s, health, now, history.figures(&sample, &s.id)))
                    .collect();
                json!({"name": &*g.name, "weight": g.weight, "share": (share * 10.0).round() / 10.0,
                       "meta": meta, "servers": servers})
            })
            .collect();
        let rollout = rollouts.iter().find(|r| r.backend == *b.name).map(rollout_json);
        backends.push(json!({
            "name": &*b.name,
            "balance": spec.balance.as_str(),
            "checks": health.is_some(),
            "queue": b.state.queue.len(),
            "groups": groups,
            "rollout": rollout,
        }));
    }
    history.keep(sample);
    let reload = veer.last_reload().map(|r| {
        let (ok, text) = match r.result {
            Ok(ReloadOutcome::Applied { generation }) => (true, format!("applied (generation {generation})")),
            Ok(ReloadOutcome::Unchanged) => (true, "unchanged".to_string()),
            Err(e) => (false, e),
        };
        json!({"at": humantime::format_rfc3339_seconds(r.at).to_string(), "ok": ok, "text": text})
    });
    let shared = &veer.shared;
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "pid": std::process::id(),
        "time": crate::control::events::now(),
        "uptime_s": veer.started().elapsed().map_or(0, |d| d.as_secs()),
        "generation": snap.generation,
        "ready": veer.ready().await,
        "connections": {"current": shared.current_conns.load(Relaxed), "total": shared.total_conns.load(Relaxed)},
        "reload": reload,
        "actions": actions,
        "listeners": listeners,
        "backends": backends,
    })
}

/// One server's row.
fn server(
    s: &crate::snapshot::Server,
    health: Option<&crate::config::HealthSpec>,
    now: u64,
    figures: Option<Figures<'_>>,
) -> Value {
    let st = &s.state;
    let (total, rate, window) = match figures {
        Some(f) => (f.reading.requests, f.rate, f.window),
        None => (0, None, None),
    };
    let check = &st.check;
    let check = (health.is_some() && check.running.load(Relaxed) && check.last_at.load(Relaxed) != 0).then(|| {
        json!({"status": check.last().as_str(), "code": check.last_code.load(Relaxed),
               "duration_ms": check.last_duration_ms.load(Relaxed)})
    });
    let deadline = st.drain_deadline();
    let drain = (s.admin == crate::config::AdminState::Drain && deadline != 0)
        .then(|| json!({"remaining_ms": deadline.saturating_sub(now)}));
    json!({
        "name": &*s.name,
        "id": &*s.id,
        "addr": s.addr.to_string(),
        "state": s.admin.as_str(),
        "health": haproxy::health_status(s, health, now),
        "check": check,
        "weight": s.weight,
        "active_requests": st.active_requests.load(Relaxed),
        "active_connections": st.active_connections.load(Relaxed),
        "requests": total,
        "sessions": st.total.load(Relaxed),
        "requests_per_s": rate.as_ref().map(|(r, secs)| per_second(r.requests, *secs)),
        "errors_per_s": rate.as_ref().map(|(r, secs)| per_second(r.errors, *secs)),
        "p50_ms": ms(window.as_ref().and_then(|w| w.latency.quantile(0.5))),
        "p99_ms": ms(window.as_ref().and_then(|w| w.latency.quantile(0.99))),
        "drain": drain,
    })
}

/// One server-sent event: `event: <kind>`, then the JSON on one `data:` line (JSON from
/// serde has no raw newlines).
fn frame(kind: &str, data: &str) -> Bytes {
    Bytes::from(format!("event: {kind}\ndata: {data}\n\n"))
}

/// The `event` field of an admin event line (`server`, `split`, `reload`, …).
fn kind(line: &str) -> String {
    serde_json::from_str::<Value>(line)
        .ok()
        .and_then(|v| v.get("event").and_then(Value::as_str).map(str::to_string))
        .filter(|k| k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
        .unwrap_or_else(|| "event".to_string())
}

/// What one `/events` connection holds; dropped (receivers and all) when hyper drops the
/// body, i.e. when the client goes away.
struct Stream {
    veer: Veer,
    feed: Arc<Feed>,
    events: broadcast::Receiver<String>,
    pictures: watch::Receiver<Picture>,
    hello: bool,
}

/// The `/events` body: `retry: 1000` (EventSource reconnects after a second), a
/// `snapshot` event with the picture whenever it is rebuilt, and every admin event as it
/// happens (`event: server`, `split`, `rollout`, `reload`, `health`, …, data as
/// `subscribe` prints it). Ends at shutdown or hand-over, so the page reconnects to
/// whichever process serves next.
pub fn events(veer: Veer, feed: Arc<Feed>) -> impl futures_util::Stream<Item = Bytes> + Send {
    let stream = Stream {
        events: veer.subscribe(),
        pictures: feed.watch(),
        veer,
        feed,
        hello: true,
    };
    futures_util::stream::unfold(stream, |mut st| async move {
        if std::mem::take(&mut st.hello) {
            let hello = json!({"event": "subscribed", "generation": st.veer.snapshot().generation});
            return Some((
                Bytes::from(format!("retry: 1000\nevent: subscribed\ndata: {hello}\n\n")),
                st,
            ));
        }
        let next = tokio::select! {
            _ = st.veer.shared.shutdown.cancelled() => return None,
            _ = st.veer.handed_over() => return None,
            event = st.events.recv() => {
                let frame = match event {
                    Ok(line) => frame(&kind(&line), &line),
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        frame("lagged", &json!({"event": "lagged", "missed": n}).to_string())
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                };
                // Every page sees the change in the figures too, not a second later.
                st.feed.wake.notify_one();
                frame
            }
            changed = st.pictures.changed() => {
                if changed.is_err() {
                    return None;
                }
                let picture = st.pictures.borrow_and_update().1.clone();
                frame("snapshot", &picture)
            }
        };
        Some((next, st))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(at: Instant, ptr: usize, requests: u64, errors: u64) -> Sample {
        let reading = Reading {
            requests,
            errors,
            ..Reading::default()
        };
        Sample {
            at,
            servers: HashMap::from([(Arc::from("b/s"), (ptr, reading))]),
        }
    }

    #[test]
    fn rates_are_over_the_last_second_and_the_window_over_what_is_kept() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut h = History::default();
        for (ms, requests) in [(0, 100), (1000, 150), (1200, 160), (2000, 250)] {
            h.keep(sample(at(ms), 1, requests, 0));
        }
        // 1200 came too soon after 1000 to be kept.
        assert_eq!(h.0.len(), 3);
        let now = sample(at(2500), 1, 300, 5);
        let f = h.figures(&now, "b/s").unwrap_or_else(|| panic!("figures"));
        // The newest kept reading at least 0.9 s older is the one at 1000: 150 in 1.5 s.
        let (rate, secs) = f.rate.unwrap_or_else(|| panic!("rate"));
        assert_eq!((rate.requests, rate.errors, secs), (150, 5, 1.5));
        assert_eq!(f.window.map(|w| w.requests), Some(200));
        assert!(h.figures(&now, "b/other").is_none());
        // A recreated server (another state) has no rate until it has a history.
        let recreated = sample(at(2500), 2, 3, 0);
        let f = h.figures(&recreated, "b/s").unwrap_or_else(|| panic!("figures"));
        assert!(f.rate.is_none() && f.window.is_none());
        // After a pause with no page open, the old readings are forgotten.
        h.keep(sample(at(10_000), 1, 900, 0));
        assert_eq!(h.0.len(), 1);
        // Readings older than the window go.
        for s in 11..=22 {
            h.keep(sample(at(s * 1000), 1, 900, 0));
        }
        assert!(h.0.front().is_some_and(|s| at(22_000).duration_since(s.at) <= WINDOW));
    }
}
