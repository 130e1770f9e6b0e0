//! Policy replay: what a breaker policy would have done on recorded traffic. A faithful
//! breaker state machine (pybreaker semantics plus the crawler's Retry-After cooldown
//! and rolling-window rule) runs over one host's network calls in time order. No I/O.
//!
//! Calls the recorded breaker blocked left no rows. So that a more permissive policy is
//! not credited with calls that never happened, those gaps (the recorded open spans and
//! Retry-After cooldowns) are filled with synthetic calls by a deterministic rule: at the
//! host's own call rate, evenly spaced, each a failure or a success so that their running
//! share follows the failure rate of the incident the gap lies in (else the host's
//! background rate); see `fill_gaps`.

use serde::Serialize;

/// The crawler's rolling-window rule (`advanced.rolling`): `threshold_failures` failures
/// within `window_s` put the host in a `cooldown_s` cooldown.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Rolling {
    pub threshold_failures: u32,
    pub window_s: f64,
    pub cooldown_s: f64,
}

/// The breaker settings a replay runs under.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ReplayPolicy {
    pub fail_max: u32,
    pub reset_timeout_s: f64,
    pub success_threshold: u32,
    pub trial_calls: u32,
    pub retry_after_cap_s: f64,
    pub rolling: Option<Rolling>,
}

impl ReplayPolicy {
    pub fn from_config(p: &crate::config::Policy, rolling: Option<Rolling>) -> Self {
        ReplayPolicy {
            fail_max: p.fail_max.max(1) as u32,
            reset_timeout_s: p.reset_timeout_s,
            success_threshold: p.success_threshold.max(1) as u32,
            trial_calls: p.trial_calls.max(1) as u32,
            retry_after_cap_s: p.retry_after_cap_s,
            rolling,
        }
    }

    /// Applies `key=value,key=value` overrides (fail_max, reset_timeout_s,
    /// success_threshold, trial_calls, retry_after_cap_s).
    pub fn with_overrides(mut self, spec: &str) -> Result<Self, String> {
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| format!("{part:?}: expected key=value"))?;
            let num: f64 = v
                .trim()
                .parse()
                .ok()
                .filter(|x: &f64| x.is_finite() && *x > 0.0)
                .ok_or_else(|| format!("{part:?}: the value must be a positive number"))?;
            let int = || -> Result<u32, String> {
                (num.fract() == 0.0 && num >= 1.0)
                    .then_some(num as u32)
                    .ok_or_else(|| format!("{part:?}: the value must be a whole number >= 1"))
            };
            match k.trim() {
                "fail_max" => self.fail_max = int()?,
                "reset_timeout_s" | "reset" => self.reset_timeout_s = num,
                "success_threshold" => self.success_threshold = int()?,
                "trial_calls" => self.trial_calls = int()?,
                "retry_after_cap_s" | "retry_after_cap" => self.retry_after_cap_s = num,
                other => {
                    return Err(format!(
                        "unknown policy key {other:?} (fail_max, reset_timeout_s, success_threshold, trial_calls, retry_after_cap_s)"
                    ));
                }
            }
        }
        Ok(self)
    }
}

/// One network call.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Call {
    pub t_s: f64,
    pub failure: bool,
    /// Retry-After of a 429/503 response, seconds.
    pub retry_after_s: Option<f64>,
    /// How long the call took; a half-open trial occupies its slot that long.
    pub elapsed_s: f64,
    /// Made up to fill a gap the recorded breaker left (see the module docs).
    pub synthetic: bool,
    /// Recorded order among calls at the same instant (source rank, then row id), so a
    /// replay never depends on the order rows were read in.
    pub seq: u64,
}

/// A time span, epoch seconds `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Span {
    pub start_s: f64,
    pub end_s: f64,
}

/// An incident of the host: its span and failure rate.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Incident {
    pub start_s: f64,
    pub end_s: f64,
    pub rate: f64,
}

/// What a policy did on a host's traffic.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Figures {
    pub calls: u64,
    pub synthetic_calls: u64,
    pub opens: u64,
    pub opens_per_hour: f64,
    pub half_open_trials: u64,
    pub half_open_closed: u64,
    pub half_open_reopened: u64,
    /// Calls blocked (breaker open, cooldown, half-open slots full) while the host was
    /// healthy: outside every incident.
    pub false_trips: u64,
    /// Calls blocked during incidents (failures spared, and some successes).
    pub blocked_in_incidents: u64,
    /// Failed calls admitted during incidents.
    pub failures_let_through: u64,
    /// Mean time from an incident's onset to the first open in it (incidents that
    /// opened the breaker).
    pub onset_to_open_s: Option<f64>,
    /// Mean time from an incident's end to the next close.
    pub end_to_close_s: Option<f64>,
    /// closed -> open within three reset timeouts of a close.
    pub flaps: u64,
}

impl Figures {
    /// The objective the advisor minimises: calls lost to false trips plus failures
    /// let through during incidents (each one call the crawler wasted or lost).
    pub fn cost(&self) -> u64 {
        self.false_trips + self.failures_let_through
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed,
    Open,
    HalfOpen,
}

/// Replays `calls` (sorted by time) under `policy`; `incidents` (sorted) say when the
/// host was unhealthy; `hours` scales `opens_per_hour`.
pub fn replay(
    calls: &[Call],
    policy: &ReplayPolicy,
    incidents: &[Incident],
    hours: f64,
) -> Figures {
    let mut f = Figures::default();
    let mut state = State::Closed;
    let mut consecutive = 0u32;
    let mut open_until = f64::NEG_INFINITY;
    let mut cooldown_until = f64::NEG_INFINITY;
    let mut ho_successes = 0u32;
    let mut in_flight: Vec<f64> = Vec::new(); // end times of half-open trials
    let mut window: std::collections::VecDeque<f64> = std::collections::VecDeque::new();
    let mut last_close = f64::NEG_INFINITY;
    let mut opens_at: Vec<f64> = Vec::new();
    let mut closes_at: Vec<f64> = Vec::new();
    let mut inc_i = 0usize;

    let open = |t: f64,
                state: &mut State,
                open_until: &mut f64,
                f: &mut Figures,
                last_close: f64,
                opens_at: &mut Vec<f64>| {
        if *state == State::Closed && t - last_close <= 3.0 * policy.reset_timeout_s {
            f.flaps += 1;
        }
        *state = State::Open;
        *open_until = t + policy.reset_timeout_s;
        f.opens += 1;
        opens_at.push(t);
    };

    for c in calls {
        f.calls += 1;
        f.synthetic_calls += u64::from(c.synthetic);
        while inc_i < incidents.len() && incidents[inc_i].end_s <= c.t_s {
            inc_i += 1;
        }
        let unhealthy = incidents
            .get(inc_i)
            .is_some_and(|i| i.start_s <= c.t_s && c.t_s < i.end_s);
        // Admission.
        let mut blocked = c.t_s < cooldown_until;
        if !blocked && state == State::Open {
            if c.t_s < open_until {
                blocked = true;
            } else {
                state = State::HalfOpen;
                ho_successes = 0;
                in_flight.clear();
            }
        }
        if !blocked && state == State::HalfOpen {
            in_flight.retain(|end| *end > c.t_s);
            if in_flight.len() as u32 >= policy.trial_calls {
                blocked = true;
            }
        }
        if blocked {
            if unhealthy {
                f.blocked_in_incidents += 1;
            } else {
                f.false_trips += 1;
            }
            continue;
        }
        if c.failure && unhealthy {
            f.failures_let_through += 1;
        }
        // Outcome.
        if c.failure {
            if let Some(ra) = c.retry_after_s {
                cooldown_until = cooldown_until.max(c.t_s + ra.min(policy.retry_after_cap_s));
            }
            if let Some(r) = policy.rolling {
                window.push_back(c.t_s);
                while window.front().is_some_and(|t| *t <= c.t_s - r.window_s) {
                    window.pop_front();
                }
                if window.len() as u32 >= r.threshold_failures {
                    cooldown_until = cooldown_until.max(c.t_s + r.cooldown_s);
                    window.clear();
                }
            }
        }
        match (state, c.failure) {
            (State::Closed, true) => {
                consecutive += 1;
                if consecutive >= policy.fail_max {
                    open(
                        c.t_s,
                        &mut state,
                        &mut open_until,
                        &mut f,
                        last_close,
                        &mut opens_at,
                    );
                }
            }
            (State::Closed, false) => consecutive = 0,
            (State::HalfOpen, true) => {
                f.half_open_trials += 1;
                f.half_open_reopened += 1;
                // Reopening from half-open is not a flap (`open` counts only closed -> open).
                open(
                    c.t_s,
                    &mut state,
                    &mut open_until,
                    &mut f,
                    last_close,
                    &mut opens_at,
                );
            }
            (State::HalfOpen, false) => {
                f.half_open_trials += 1;
                in_flight.push(c.t_s + c.elapsed_s);
                ho_successes += 1;
                if ho_successes >= policy.success_threshold {
                    f.half_open_closed += 1;
                    state = State::Closed;
                    consecutive = 0;
                    last_close = c.t_s;
                    closes_at.push(c.t_s);
                }
            }
            (State::Open, _) => {}
        }
    }
    f.opens_per_hour = if hours > 0.0 {
        f.opens as f64 / hours
    } else {
        0.0
    };
    let mean = |v: Vec<f64>| (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64);
    f.onset_to_open_s = mean(
        incidents
            .iter()
            .filter_map(|i| {
                opens_at
                    .iter()
                    .find(|t| **t >= i.start_s && **t < i.end_s)
                    .map(|t| t - i.start_s)
            })
            .collect(),
    );
    f.end_to_close_s = mean(
        incidents
            .iter()
            .filter(|i| opens_at.iter().any(|t| *t >= i.start_s && *t < i.end_s))
            .filter_map(|i| {
                closes_at
                    .iter()
                    .find(|t| **t >= i.end_s)
                    .map(|t| t - i.end_s)
            })
            .collect(),
    );
    f
}

/// Adds synthetic calls in the `gaps` (sorted, disjoint spans where the recorded breaker
/// blocked calls): evenly spaced at `rate_per_s`, the first half a spacing into the
/// gap; in a gap's part inside an incident each is a failure so that the running share
/// of failures follows the incident's rate, elsewhere the `background` rate (a running
/// sum, starting at one half, emits a failure each time it passes a whole number).
/// Returns all calls sorted by time. Deterministic.
pub fn fill_gaps(
    recorded: Vec<Call>,
    gaps: &[Span],
    incidents: &[Incident],
    background: f64,
    rate_per_s: f64,
) -> Vec<Call> {
    let mut out = recorded;
    if rate_per_s > 0.0 {
        let step = 1.0 / rate_per_s;
        let mut acc = 0.5;
        for g in gaps {
            let mut t = g.start_s + step / 2.0;
            while t < g.end_s {
                let r = incidents
                    .iter()
                    .find(|i| i.start_s <= t && t < i.end_s)
                    .map_or(background, |i| i.rate);
                acc += r.clamp(0.0, 1.0);
                let failure = acc >= 1.0;
                if failure {
                    acc -= 1.0;
                }
                out.push(Call {
                    t_s: t,
                    failure,
                    retry_after_s: None,
                    elapsed_s: 0.0,
                    synthetic: true,
                    seq: u64::MAX,
                });
                t += step;
            }
        }
    }
    out.sort_by(|a, b| a.t_s.total_cmp(&b.t_s).then(a.seq.cmp(&b.seq)));
    out
}

/// Merges spans into sorted disjoint ones.
pub fn merge_spans(mut spans: Vec<Span>) -> Vec<Span> {
    spans.sort_by(|a, b| a.start_s.total_cmp(&b.start_s));
    let mut out: Vec<Span> = Vec::new();
    for s in spans {
        match out.last_mut() {
            Some(l) if s.start_s <= l.end_s => l.end_s = l.end_s.max(s.end_s),
            _ => out.push(s),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(t: f64, failure: bool) -> Call {
        Call {
            t_s: t,
            failure,
            retry_after_s: None,
            elapsed_s: 0.0,
            synthetic: false,
            seq: 0,
        }
    }

    fn policy() -> ReplayPolicy {
        ReplayPolicy {
            fail_max: 3,
            reset_timeout_s: 10.0,
            success_threshold: 2,
            trial_calls: 1,
            retry_after_cap_s: 30.0,
            rolling: None,
        }
    }

    #[test]
    fn opens_half_opens_and_closes_like_pybreaker() {
        // 3 failures open; blocked until 12; a failed trial reopens; two successes close.
        let calls: Vec<Call> = [
            (0.0, true),
            (1.0, true),
            (2.0, true),
            (5.0, false),
            (12.5, true),
            (20.0, false),
            (23.0, false),
            (24.0, false),
            (25.0, false),
        ]
        .iter()
        .map(|(t, f)| call(*t, *f))
        .collect();
        let f = replay(&calls, &policy(), &[], 1.0);
        assert_eq!(f.opens, 2);
        assert_eq!(f.half_open_reopened, 1);
        assert_eq!(f.half_open_closed, 1);
        assert_eq!(f.half_open_trials, 3, "12.5 failed, 23 and 24 succeeded");
        assert_eq!(f.false_trips, 2, "5.0 and 20.0 were blocked while healthy");
    }

    #[test]
    fn retry_after_and_rolling_window_block_without_opening() {
        let mut c = call(0.0, true);
        c.retry_after_s = Some(600.0);
        let calls = [c, call(29.0, false), call(31.0, false)];
        let f = replay(&calls, &policy(), &[], 1.0);
        assert_eq!((f.opens, f.false_trips), (0, 1), "capped at 30 s");
        let p = ReplayPolicy {
            fail_max: 10,
            rolling: Some(Rolling {
                threshold_failures: 2,
                window_s: 10.0,
                cooldown_s: 60.0,
            }),
            ..policy()
        };
        let calls = [
            call(0.0, true),
            call(1.0, false),
            call(5.0, true),
            call(30.0, true),
            call(70.0, false),
        ];
        let f = replay(&calls, &p, &[], 1.0);
        assert_eq!((f.opens, f.false_trips), (0, 1), "cooldown 5..65 blocks 30");
    }

    #[test]
    fn gaps_are_filled_at_the_host_rate_with_the_incident_share() {
        let incidents = [Incident {
            start_s: 0.0,
            end_s: 100.0,
            rate: 0.5,
        }];
        let gaps = [Span {
            start_s: 10.0,
            end_s: 30.0,
        }];
        let all = fill_gaps(vec![call(5.0, true)], &gaps, &incidents, 0.0, 0.5);
        let synth: Vec<&Call> = all.iter().filter(|c| c.synthetic).collect();
        assert_eq!(synth.len(), 10, "one call every 2 s over 20 s");
        assert_eq!(synth[0].t_s, 11.0);
        assert_eq!(synth.iter().filter(|c| c.failure).count(), 5);
        assert!(all.windows(2).all(|w| w[0].t_s <= w[1].t_s));
    }
}
