//! Rollouts: a metric-gated canary run inside veer (Flagger's loop with no extra moving
//! parts). `rollout start` moves a backend's split to a group step by step; each step is
//! judged on its own window of the groups' counters (requests, errors, response-time
//! buckets); a breach puts the split back where it was; passing the last step drains (or
//! keeps) the groups traffic came from.
//!
//! A rollout is part of the overlay, so it is persisted and survives reloads and restarts: a
//! running one resumes at the step it was on, judged on a fresh window (counters restart
//! with the process); a paused one stays paused. A reload that changes the backend's groups
//! aborts it (`Overlay::apply`). Every transition is one [`Veer::mutate_by`], so the split,
//! the rollout and the history change together or not at all, and each publishes a
//! `rollout` event.
//!
//! Windows and verdicts are in memory only: they change every tick and are not worth a disk
//! write. The state and the judging arithmetic are [`super::rollout_state`]'s. Knows nothing
//! of the admin plane, which parses the commands and prints the views.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use serde_json::json;
use tokio::time::Instant;

use super::overlay::Overlay;
use super::rollout_state::{judge, Action, Phase, Plan, Reading, Rollout, Then, Verdict, Window};
use super::Veer;
use crate::config::{AdminState, BackendSpec, Spec};

/// How often running rollouts are looked at.
const TICK: Duration = Duration::from_millis(100);

/// One group as `show rollout` shows it.
#[derive(Debug, Clone)]
pub struct GroupView {
    pub name: String,
    pub weight: u32,
    pub meta: BTreeMap<String, String>,
    /// The current step's window (zero when no rollout runs).
    pub window: Reading,
}

/// A backend's rollout with its live figures.
#[derive(Debug, Clone)]
pub struct Status {
    pub backend: String,
    pub rollout: Rollout,
    pub groups: Vec<GroupView>,
    pub elapsed: Duration,
    pub verdict: String,
}

/// The event line for a rollout's transition.
pub fn event(backend: &str, r: &Rollout, spec: &Spec, text: &str) -> String {
    let groups = spec
        .backends
        .iter()
        .find(|b| b.name == backend)
        .map(|b| &b.groups[..])
        .unwrap_or(&[]);
    let weights: BTreeMap<&str, u32> = groups.iter().map(|g| (g.name.as_str(), g.weight)).collect();
    let meta = groups.iter().find(|g| g.name == r.to).map(|g| &g.meta);
    json!({
        "time": super::events::now(), "event": "rollout", "backend": backend, "to": r.to,
        "from": r.from_groups(), "phase": r.phase.as_str(), "step": r.step + 1, "steps": r.steps.len(),
        "percent": r.percent(), "weights": weights, "meta": meta.cloned().unwrap_or_default(), "who": r.who,
        "verdict": text,
    })
    .to_string()
}

fn backend<'a>(spec: &'a Spec, name: &str) -> Result<&'a BackendSpec, String> {
    spec.backends
        .iter()
        .find(|b| b.name == name)
        .ok_or_else(|| "No such backend.".to_string())
}

/// Puts `r`'s old groups' servers in drain (the promotion's `then drain`).
fn drain_old(o: &mut Overlay, b: &BackendSpec, r: &Rollout) {
    for g in b.groups.iter().filter(|g| r.from_groups().contains(&g.name.as_str())) {
        for s in &g.servers {
            o.server_mut(&format!("{}/{}", b.name, s.name)).state = Some(AdminState::Drain);
        }
    }
}

/// Moves `r` to 100 % and on to draining or promoted.
fn promote(o: &mut Overlay, b: &BackendSpec, r: &mut Rollout, who: &str, why: &str) {
    r.step = r.steps.len().saturating_sub(1);
    o.set_split(b, r.weights(100), who, &format!("rollout to {} promoted", r.to));
    match r.then {
        Then::Drain if !r.from_groups().is_empty() => {
            drain_old(o, b, r);
            r.phase = Phase::Draining;
            r.reason = Some(format!("{why}; draining {}", r.from_groups().join(", ")));
        }
        _ => r.finish(Phase::Promoted, why),
    }
}

impl Veer {
    /// `rollout start`: checks the plan, applies its first step, and leaves the rest to the
    /// controller. The answer says what was done.
    pub async fn rollout_start(&self, name: &str, plan: Plan, who: &str) -> Result<String, String> {
        let (n, by) = (name.to_string(), who.to_string());
        let snap = self.snapshot();
        let r = self
            .mutate_by(who, move |spec, o| {
                let who = by;
                let name = n;
                let b = backend(spec, &name)?;
                if let Some(running) = o.rollouts.get(&name).filter(|r| r.is_active()) {
                    return Err(format!(
                        "A rollout of backend '{name}' is already {}; abort it first.",
                        running.phase.as_str()
                    ));
                }
                let group = b
                    .groups
                    .iter()
                    .find(|g| g.name == plan.to)
                    .ok_or(format!("No such group '{}' in backend '{name}'.", plan.to))?;
                // Ready servers with weight that are UP: a rollout to nobody is refused.
                let live = snap
                    .backend(&name)
                    .and_then(|lb| lb.groups.iter().find(|g| *g.name == *plan.to));
                let now = crate::clock::now_ms();
                let up = live.is_some_and(|g| g.servers.iter().any(|s| s.usable() && s.state.available(now)));
                if !up {
                    return Err(format!("Group '{}' has no server that is ready and UP.", group.name));
                }
                let steps = &plan.steps;
                if steps.is_empty()
                    || steps.windows(2).any(|w| w[0] >= w[1])
                    || steps.iter().any(|p| !(1..=100).contains(p))
                    || steps.last() != Some(&100)
                {
                    return Err("Steps must be percentages rising to 100, e.g. 10,25,50,100.".into());
                }
                let mut r = Rollout {
                    to: plan.to.clone(),
                    steps: plan.steps.clone(),
                    pause_ms: plan.pause.as_millis() as u64,
                    max_error_rate: plan.max_error_rate,
                    max_p99_ms: plan.max_p99.map(|d| d.as_millis() as u64),
                    min_requests: plan.min_requests,
                    then: plan.then,
                    before: b.groups.iter().map(|g| (g.name.clone(), g.weight)).collect(),
                    groups: b.groups.iter().map(|g| g.name.clone()).collect(),
                    step: 0,
                    phase: Phase::Running,
                    reason: None,
                    started: super::events::now(),
                    who: who.clone(),
                };
                if r.from_groups().is_empty() {
                    return Err(format!(
                        "No other group of backend '{name}' takes traffic: nothing to roll out from."
                    ));
                }
                o.set_split(
                    b,
                    r.weights(r.percent()),
                    &who,
                    &format!("rollout to {} step 1/{}", r.to, r.steps.len()),
                );
                if r.steps.len() == 1 {
                    promote(o, b, &mut r, &who, "single step");
                }
                o.rollouts.insert(name.clone(), r.clone());
                Ok(r)
            })
            .await?;
        let text = format!(
            "Rollout of {name} to {} started: step 1/{} at {}%.",
            r.to,
            r.steps.len(),
            r.percent()
        );
        self.publish_rollout(name, &r, &text);
        Ok(format!("{text}\n"))
    }

    /// `rollout pause|resume|abort|promote <backend>`.
    pub async fn rollout_control(&self, name: &str, action: Action, who: &str) -> Result<String, String> {
        let (n, w) = (name.to_string(), who.to_string());
        let r = self
            .mutate_by(who, move |spec, o| {
                let b = backend(spec, &n)?;
                let r = o
                    .rollouts
                    .get_mut(&n)
                    .filter(|r| r.is_active())
                    .ok_or(format!("No rollout of backend '{n}' is running."))?;
                let mut r = r.clone();
                match action {
                    Action::Pause if r.phase == Phase::Running => r.phase = Phase::Paused,
                    Action::Resume if r.phase == Phase::Paused => r.phase = Phase::Running,
                    Action::Pause | Action::Resume => {
                        return Err(format!("The rollout of backend '{n}' is {}.", r.phase.as_str()))
                    }
                    Action::Abort => {
                        o.set_split(b, r.before.clone(), &w, &format!("rollout to {} aborted", r.to));
                        r.finish(Phase::Aborted, &format!("aborted by {w}"));
                    }
                    Action::Promote if r.phase == Phase::Draining => {
                        return Err(format!("The rollout of backend '{n}' is promoted already (draining)."))
                    }
                    Action::Promote => promote(o, b, &mut r, &w, &format!("promoted by {w}")),
                }
                o.rollouts.insert(n.clone(), r.clone());
                Ok(r)
            })
            .await?;
        let text = format!("Rollout of {name} to {} {}.", r.to, r.phase.as_str());
        self.publish_rollout(name, &r, r.reason.as_deref().unwrap_or(&text));
        Ok(format!("{text}\n"))
    }

    fn publish_rollout(&self, name: &str, r: &Rollout, text: &str) {
        self.publish(event(name, r, &self.snapshot().spec, text));
    }

    /// Rollouts (one backend's, or all) with their current windows.
    pub async fn rollout_status(&self, only: Option<&str>) -> Vec<Status> {
        let overlay = self.overlay().await;
        let snap = self.snapshot();
        let windows = self.windows.0.lock().unwrap_or_else(|p| p.into_inner());
        overlay
            .rollouts
            .iter()
            .filter(|(b, _)| only.is_none_or(|o| o == b.as_str()))
            .map(|(b, r)| {
                let spec = snap.spec.backends.iter().find(|x| x.name == *b);
                let live = snap.backend(b);
                let w = windows.get(b).filter(|w| w.step == r.step && r.is_active());
                let groups = spec
                    .map(|spec| {
                        spec.groups
                            .iter()
                            .map(|g| {
                                let now = live
                                    .and_then(|l| l.groups.iter().find(|x| *x.name == *g.name))
                                    .map(Reading::of)
                                    .unwrap_or_default();
                                let window = match w.and_then(|w| w.base.get(&g.name)) {
                                    Some(base) => now.since(base),
                                    None => Reading::default(),
                                };
                                GroupView {
                                    name: g.name.clone(),
                                    weight: g.weight,
                                    meta: g.meta.clone(),
                                    window,
                                }
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                Status {
                    backend: b.clone(),
                    rollout: r.clone(),
                    groups,
                    elapsed: w.map(|w| w.started.elapsed()).unwrap_or_default(),
                    verdict: w.map(|w| w.verdict.clone()).or(r.reason.clone()).unwrap_or_default(),
                }
            })
            .collect()
    }

    /// The controller: every [`TICK`], judges each running rollout's step, and moves it on,
    /// back, or holds it. Runs until shutdown.
    pub(super) async fn rollouts(self) {
        let mut tick = tokio::time::interval(TICK);
        loop {
            tokio::select! {
                _ = self.shared.shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let overlay = self.overlay().await;
            for (name, r) in &overlay.rollouts {
                match r.phase {
                    Phase::Running => self.step(name, r).await,
                    Phase::Draining => self.drained(name, r).await,
                    _ => {}
                }
            }
            let mut windows = self.windows.0.lock().unwrap_or_else(|p| p.into_inner());
            windows.retain(|b, _| overlay.rollouts.get(b).is_some_and(|r| r.phase == Phase::Running));
        }
    }

    /// One look at a running rollout's step.
    async fn step(&self, name: &str, r: &Rollout) {
        let snap = self.snapshot();
        let Some(live) = snap.backend(name) else { return };
        let readings: BTreeMap<String, Reading> = live
            .groups
            .iter()
            .map(|g| (g.name.to_string(), Reading::of(g)))
            .collect();
        let (new, old, elapsed) = {
            let mut windows = self.windows.0.lock().unwrap_or_else(|p| p.into_inner());
            let w = windows.entry(name.to_string()).or_insert_with(|| Window {
                step: r.step,
                phase: r.phase,
                started: Instant::now(),
                base: readings.clone(),
                verdict: String::new(),
            });
            if w.step != r.step || w.phase != r.phase {
                // A new step, or resumed: a fresh window.
                *w = Window {
                    step: r.step,
                    phase: r.phase,
                    started: Instant::now(),
                    base: readings.clone(),
                    verdict: String::new(),
                };
            }
            let mut new = Reading::default();
            let mut old = Reading::default();
            for (g, now) in &readings {
                let d = now.since(w.base.get(g).unwrap_or(&Reading::default()));
                if *g == r.to {
                    new = d;
                } else if r.from_groups().contains(&g.as_str()) {
                    old.add(&d);
                }
            }
            (new, old, w.started.elapsed())
        };
        let verdict = judge(r, &new, &old, elapsed);
        self.set_verdict(name, verdict.text());
        let (step, phase) = (r.step, r.phase);
        let outcome = match &verdict {
            Verdict::Wait(_) => return,
            Verdict::Hold(text) => {
                // Judged afresh on the next window; said once per window.
                tracing::warn!(backend = name, "rollout: {text}");
                let mut windows = self.windows.0.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(w) = windows.get_mut(name) {
                    w.started = Instant::now();
                    w.base = readings;
                }
                drop(windows);
                self.publish_rollout(name, r, text);
                return;
            }
            Verdict::Pass(text) | Verdict::Breach(text) => text.clone(),
        };
        let breach = matches!(verdict, Verdict::Breach(_));
        let n = name.to_string();
        let changed = self
            .mutate_by("rollout", move |spec, o| {
                let b = backend(spec, &n)?;
                let Some(r) = o.rollouts.get(&n).filter(|r| r.step == step && r.phase == phase) else {
                    return Ok(None); // changed by a command meanwhile
                };
                let mut r = r.clone();
                if breach {
                    o.set_split(
                        b,
                        r.before.clone(),
                        "rollout",
                        &format!("rollout to {} rolled back", r.to),
                    );
                    r.finish(Phase::RolledBack, &outcome);
                } else if r.step + 1 >= r.steps.len() {
                    promote(o, b, &mut r, "rollout", &outcome);
                } else {
                    r.step += 1;
                    let cause = format!("rollout to {} step {}/{}", r.to, r.step + 1, r.steps.len());
                    o.set_split(b, r.weights(r.percent()), "rollout", &cause);
                }
                o.rollouts.insert(n.clone(), r.clone());
                Ok(Some((r, outcome)))
            })
            .await;
        match changed {
            Ok(Some((r, text))) => {
                if breach {
                    tracing::warn!(backend = name, "rollout rolled back: {text}");
                } else {
                    tracing::info!(
                        backend = name,
                        step = r.step + 1,
                        phase = r.phase.as_str(),
                        "rollout: {text}"
                    );
                }
                self.publish_rollout(name, &r, &text);
            }
            Ok(None) => {}
            Err(e) => tracing::error!(backend = name, "rollout: cannot apply the next step: {e}"),
        }
    }

    fn set_verdict(&self, name: &str, text: &str) {
        let mut windows = self.windows.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(w) = windows.get_mut(name) {
            text.clone_into(&mut w.verdict);
        }
    }

    /// A promoted rollout whose old groups drain: promoted once they have no active work.
    async fn drained(&self, name: &str, r: &Rollout) {
        let snap = self.snapshot();
        let Some(live) = snap.backend(name) else { return };
        let from = r.from_groups();
        let busy: usize = live
            .groups
            .iter()
            .filter(|g| from.contains(&&*g.name))
            .flat_map(|g| &g.servers)
            .map(|s| s.state.active_requests.load(Relaxed) + s.state.active_connections.load(Relaxed))
            .sum();
        if busy > 0 {
            return;
        }
        let n = name.to_string();
        let done = self
            .mutate_by("rollout", move |_, o| {
                let Some(r) = o.rollouts.get_mut(&n).filter(|r| r.phase == Phase::Draining) else {
                    return Ok(None);
                };
                let text = format!("promoted; {} drained", r.from_groups().join(", "));
                r.finish(Phase::Promoted, &text);
                Ok(Some((r.clone(), text)))
            })
            .await;
        if let Ok(Some((r, text))) = done {
            tracing::info!(backend = name, "rollout: {text}");
            self.publish_rollout(name, &r, &text);
        }
    }
}
