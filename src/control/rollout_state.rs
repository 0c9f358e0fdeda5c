//! A rollout's persisted state ([`Rollout`], part of the overlay), its plan, and how a step
//! is judged ([`judge`]) from the groups' [`Reading`]s: pure data and arithmetic, no I/O. The
//! controller that moves rollouts along is [`super::rollout`]'s.
//!
//! Knows the snapshot's groups and the servers' counters; nothing of the control lock, the
//! admin plane or time beyond the windows' start instants.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::state::latency::Counts;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    Running,
    Paused,
    /// Promoted; the groups traffic came from are draining.
    Draining,
    Promoted,
    RolledBack,
    Aborted,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Running => "running",
            Phase::Paused => "paused",
            Phase::Draining => "draining",
            Phase::Promoted => "promoted",
            Phase::RolledBack => "rolled-back",
            Phase::Aborted => "aborted",
        }
    }
}

/// What happens to the groups traffic came from once the last step passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Then {
    #[default]
    Drain,
    Keep,
}

/// What `rollout start` asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub to: String,
    /// Percentages of traffic to `to`, rising, ending at 100.
    pub steps: Vec<u32>,
    pub pause: Duration,
    /// Percent of the step's requests.
    pub max_error_rate: f64,
    pub max_p99: Option<Duration>,
    pub min_requests: u64,
    pub then: Then,
}

impl Default for Plan {
    fn default() -> Self {
        Plan {
            to: String::new(),
            steps: vec![10, 25, 50, 100],
            pause: Duration::from_secs(30),
            max_error_rate: 1.0,
            max_p99: None,
            min_requests: 100,
            then: Then::Drain,
        }
    }
}

/// A backend's rollout as persisted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rollout {
    pub to: String,
    pub steps: Vec<u32>,
    pub pause_ms: u64,
    pub max_error_rate: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_p99_ms: Option<u64>,
    pub min_requests: u64,
    pub then: Then,
    /// The split when it started: what a rollback or abort returns to.
    pub before: BTreeMap<String, u32>,
    /// The backend's groups when it started; a config that changes them aborts it.
    pub groups: Vec<String>,
    /// Index into `steps`.
    pub step: usize,
    pub phase: Phase,
    /// Why it ended (rolled back, aborted) or how (promoted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub started: String,
    pub who: String,
}

impl Rollout {
    pub fn is_active(&self) -> bool {
        matches!(self.phase, Phase::Running | Phase::Paused | Phase::Draining)
    }

    pub fn finish(&mut self, phase: Phase, reason: &str) {
        self.phase = phase;
        self.reason = Some(reason.to_string());
    }

    /// The current step's share of traffic for `to`, in percent.
    pub fn percent(&self) -> u32 {
        self.steps.get(self.step).or(self.steps.last()).copied().unwrap_or(100)
    }

    /// The groups traffic comes from: those with weight before it started, but `to`.
    pub fn from_groups(&self) -> Vec<&str> {
        self.before
            .iter()
            .filter(|(g, w)| **w > 0 && **g != self.to)
            .map(|(g, _)| g.as_str())
            .collect()
    }

    /// The split (weights 0..=1000) giving `to` `percent` % and the others the rest, shared
    /// as they shared it before.
    pub fn weights(&self, percent: u32) -> BTreeMap<String, u32> {
        let others: u64 = self.from_groups().iter().map(|g| self.before[*g] as u64).sum();
        let rest = (100 - percent.min(100)) as u64 * 10;
        self.before
            .iter()
            .map(|(g, w)| {
                let w = if *g == self.to {
                    percent.min(100) * 10
                } else if others == 0 || *w == 0 {
                    0
                } else {
                    (*w as u64 * rest / others) as u32
                };
                (g.clone(), w)
            })
            .collect()
    }

    fn pause(&self) -> Duration {
        Duration::from_millis(self.pause_ms)
    }
}

/// What a group did: counted from its servers' live counters.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Reading {
    /// Responses plus veer's own failures (timeouts, broken connections, failed connects).
    pub requests: u64,
    /// 5xx responses plus those failures.
    pub errors: u64,
    pub latency: Counts,
}

impl Reading {
    pub fn of(group: &crate::snapshot::Group) -> Reading {
        let mut r = Reading::default();
        for s in &group.servers {
            r.add(&Reading::of_server(&s.state));
        }
        r
    }

    pub fn of_server(st: &crate::state::ServerState) -> Reading {
        let failures = st.failures.load(Relaxed) + st.connect_failures.load(Relaxed);
        Reading {
            requests: st.responses.iter().map(|c| c.load(Relaxed)).sum::<u64>() + failures,
            errors: st.responses[4].load(Relaxed) + failures,
            latency: st.latency.read(),
        }
    }

    pub fn since(&self, earlier: &Reading) -> Reading {
        Reading {
            requests: self.requests.saturating_sub(earlier.requests),
            errors: self.errors.saturating_sub(earlier.errors),
            latency: self.latency.since(&earlier.latency),
        }
    }

    pub fn add(&mut self, other: &Reading) {
        self.requests += other.requests;
        self.errors += other.errors;
        self.latency.add(&other.latency);
    }

    /// Errors in percent of requests (0 with none).
    pub fn error_rate(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            self.errors as f64 * 100.0 / self.requests as f64
        }
    }

    pub fn p99(&self) -> Option<Duration> {
        self.latency.quantile(0.99)
    }
}

/// A step's judgement.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Still observing (or too little traffic: the step is extended).
    Wait(String),
    /// The step passed.
    Pass(String),
    /// The new group breached a threshold the old one kept: roll back.
    Breach(String),
    /// Both sides breach: a backend-wide failure, not the canary's; the step is held.
    Hold(String),
}

impl Verdict {
    pub fn text(&self) -> &str {
        match self {
            Verdict::Wait(t) | Verdict::Pass(t) | Verdict::Breach(t) | Verdict::Hold(t) => t,
        }
    }
}

pub fn ms(d: Option<Duration>) -> String {
    d.map_or("-".into(), |d| format!("{}ms", d.as_millis()))
}

/// Judges a step: `new` is the target group's window, `old` the other groups' together.
pub fn judge(r: &Rollout, new: &Reading, old: &Reading, elapsed: Duration) -> Verdict {
    let pause = r.pause();
    if elapsed < pause {
        return Verdict::Wait(format!("observing: {}s of {}s", elapsed.as_secs(), pause.as_secs()));
    }
    if new.requests < r.min_requests {
        return Verdict::Wait(format!(
            "too little traffic: {} of {} requests to {}; step extended",
            new.requests, r.min_requests, r.to
        ));
    }
    let max_p99 = r.max_p99_ms.map(Duration::from_millis);
    let slow = |x: &Reading| matches!((max_p99, x.p99()), (Some(m), Some(p)) if p > m);
    let failing = |x: &Reading| x.error_rate() > r.max_error_rate;
    let (new_fails, new_slow) = (failing(new), slow(new));
    let from = r.from_groups().join("+");
    let figures = format!(
        "{} {:.2}% errors p99 {}, {} {:.2}% errors p99 {}",
        r.to,
        new.error_rate(),
        ms(new.p99()),
        if from.is_empty() { "others" } else { &from },
        old.error_rate(),
        ms(old.p99())
    );
    if !new_fails && !new_slow {
        return Verdict::Pass(format!("passed: {figures}"));
    }
    // The old side has traffic and breaches the same thresholds: the whole backend is sick.
    let old_breaches = old.requests > 0 && (!new_fails || failing(old)) && (!new_slow || slow(old));
    if old_breaches {
        return Verdict::Hold(format!("backend-wide failure, not the canary's ({figures}); step held"));
    }
    let what = match (new_fails, new_slow) {
        (true, _) => format!("error rate {:.2}% > {}%", new.error_rate(), r.max_error_rate),
        _ => format!("p99 {} > {}", ms(new.p99()), ms(max_p99)),
    };
    Verdict::Breach(format!(
        "{} {what} at step {}/{} ({}%): {figures}",
        r.to,
        r.step + 1,
        r.steps.len(),
        r.percent()
    ))
}

/// A step's window, in memory.
pub(super) struct Window {
    pub step: usize,
    pub phase: Phase,
    pub started: Instant,
    pub base: BTreeMap<String, Reading>,
    pub verdict: String,
}

/// The windows of running rollouts, by backend.
#[derive(Default)]
pub struct Windows(pub(super) std::sync::Mutex<HashMap<String, Window>>);

/// The control actions on a rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Pause,
    Resume,
    Abort,
    Promote,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rollout() -> Rollout {
        Rollout {
            to: "green".into(),
            steps: vec![10, 25, 50, 100],
            pause_ms: 1000,
            max_error_rate: 1.0,
            max_p99_ms: Some(500),
            min_requests: 100,
            then: Then::Drain,
            before: [("blue".to_string(), 100), ("green".to_string(), 0)].into(),
            groups: vec!["blue".into(), "green".into()],
            step: 0,
            phase: Phase::Running,
            reason: None,
            started: String::new(),
            who: "test".into(),
        }
    }

    fn reading(requests: u64, errors: u64, ms: u64) -> Reading {
        let l = crate::state::latency::Latency::default();
        for _ in 0..requests {
            l.record(Duration::from_millis(ms));
        }
        Reading {
            requests,
            errors,
            latency: l.read(),
        }
    }

    #[test]
    fn weights_give_the_target_its_step_and_the_rest_as_before() {
        let r = rollout();
        assert_eq!(r.weights(10), [("blue".into(), 900), ("green".into(), 100)].into());
        assert_eq!(r.weights(100), [("blue".into(), 0), ("green".into(), 1000)].into());
        let mut three = rollout();
        three.before = [("a".to_string(), 300), ("b".to_string(), 100), ("green".to_string(), 0)].into();
        assert_eq!(
            three.weights(50),
            [("a".into(), 375), ("b".into(), 125), ("green".into(), 500)].into()
        );
    }

    #[test]
    fn a_step_waits_for_its_pause_and_for_enough_traffic() {
        let r = rollout();
        let ok = reading(500, 0, 5);
        assert!(matches!(
            judge(&r, &ok, &ok, Duration::from_millis(500)),
            Verdict::Wait(_)
        ));
        let few = reading(50, 0, 5);
        match judge(&r, &few, &ok, Duration::from_secs(2)) {
            Verdict::Wait(t) => assert!(t.contains("50 of 100"), "{t}"),
            v => panic!("{v:?}"),
        }
        assert!(matches!(judge(&r, &ok, &ok, Duration::from_secs(2)), Verdict::Pass(_)));
    }

    #[test]
    fn the_canary_is_blamed_only_for_what_the_old_group_does_not_do() {
        let r = rollout();
        let healthy = reading(1000, 0, 5);
        let failing = reading(1000, 200, 5);
        match judge(&r, &failing, &healthy, Duration::from_secs(2)) {
            Verdict::Breach(t) => assert!(t.contains("error rate 20.00% > 1%"), "{t}"),
            v => panic!("{v:?}"),
        }
        match judge(&r, &failing, &failing, Duration::from_secs(2)) {
            Verdict::Hold(t) => assert!(t.contains("backend-wide"), "{t}"),
            v => panic!("{v:?}"),
        }
        let slow = reading(1000, 0, 800);
        match judge(&r, &slow, &healthy, Duration::from_secs(2)) {
            Verdict::Breach(t) => assert!(t.contains("p99"), "{t}"),
            v => panic!("{v:?}"),
        }
        // At 100 % the old groups get nothing: only the thresholds count.
        assert!(matches!(
            judge(&r, &failing, &Reading::default(), Duration::from_secs(2)),
            Verdict::Breach(_)
        ));
    }
}
