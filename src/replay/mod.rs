//! Policy replay: what a breaker policy would have done on recorded traffic. A faithful
//! breaker state machine (pybreaker semantics plus the crawler's Retry-After cooldown
//! and rolling-window rule) runs over one host's requests in time order, one breaker per
//! instance of the crawler model (per process, or one for the fleet), with cooldowns in
//! the model's scope. Each request goes through the breaker as the crawler sends it: its
//! retried attempts (each admitted by `allow()` and counted), then its final attempt,
//! whose outcome is recorded once more after the retry loop. No I/O.
//!
//! Calls the recorded breaker blocked left no rows. So that a more permissive policy is
//! not credited with calls that never happened, those gaps (the recorded open spans and
//! Retry-After cooldowns, each until a success cleared it where successes do: the
//! requests after it have rows) are filled with synthetic calls by a deterministic rule: at the
//! instance's own call rate, evenly spaced, each failing with the failure rate of the
//! incident the gap lies in (else the host's background rate), a draw hashed from its
//! instance and time; see `fill_gaps`.

pub mod calibrate;
pub mod traffic;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashSet};

use serde::Serialize;

pub use crate::config::Rolling;

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
        // Saturated, not wrapped: a config can say anything (the advisor holds such a
        // host, and its traffic is not replayed).
        let count = |v: i64| v.clamp(1, i64::from(u32::MAX)) as u32;
        ReplayPolicy {
            fail_max: count(p.fail_max),
            reset_timeout_s: p.reset_timeout_s,
            success_threshold: count(p.success_threshold),
            trial_calls: count(p.trial_calls),
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

/// What the breaker recorded for a request's final attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Outcome {
    Failure,
    Success,
    /// Not counted (an exception the crawler does not classify as a failure).
    Uncounted,
}

/// What a row is, whatever the model: the model decides how the breaker counts it
/// ([`ReplayModel::outcome`]), so calibration can try models on the same calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub enum Kind {
    /// A response from the network: `Call::outcome` is its status's.
    #[default]
    Response,
    /// A response served from the HTTP cache.
    CacheHit,
    /// A request that raised (a timeout, a connection error): a row with an error and
    /// no status.
    Exception,
}

/// One request as the crawler made it (one telemetry row), or a synthetic one.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Call {
    pub t_s: f64,
    /// The breaker instance (crawler process) that made it: an index into the host's
    /// instances; 0 under a fleet-wide breaker.
    pub instance: u32,
    /// Earlier attempts that failed and were retried; each went through the breaker.
    pub retried_failures: u32,
    /// Of `retried_failures`, those taken to have raised (a timeout, a connection
    /// error) rather than failed with a status, which the breaker counts only where it
    /// counts exceptions (see `traffic::estimate_retried_raised`).
    pub retried_raised: u32,
    pub outcome: Outcome,
    pub kind: Kind,
    /// Retry-After of a 429/503 final response, seconds.
    pub retry_after_s: Option<f64>,
    /// The final response was a 429 (Too Many Requests): the server's rate limit
    /// refused the request before any work on it. For a retried attempt
    /// (`retry`), that it is taken to have been one (`traffic::spread_retries`).
    pub throttled: bool,
    /// How long the call took: the whole request's time for a row as read; once spread
    /// (`traffic::spread_retries`), a row's share of it (for a row that raised, the
    /// time until its last attempt's timeout fired), a retried attempt's time until its
    /// answer came back (a status) or its timeout fired (raised): `counted_at`.
    pub elapsed_s: f64,
    /// Made up to fill a gap the recorded breaker left (see the module docs).
    pub synthetic: bool,
    /// One outcome the breaker logged itself (`breaker_outcomes`): counted once, no
    /// retries, whatever the model says about rows.
    pub exact: bool,
    /// Counted without asking the breaker (a call in flight is not a half-open probe):
    /// a logged outcome (`exact`) its breaker counted while open, whose request asked
    /// before the open and was answered after; a retried attempt the spread put inside
    /// a recorded open spell of its process, whose request began before the spell
    /// (`traffic::in_flight_in_open_spells`; honoured where each process has its own
    /// breaker).
    pub in_flight: bool,
    /// An earlier attempt of the request whose row is the call with the same `seq`,
    /// placed in time by the row's elapsed time (`traffic::spread_retries`): it failed
    /// with a status (`Kind::Response`) or raised (`Kind::Exception`).
    pub retry: bool,
    /// The call's retried attempts are calls of their own (`retry`), not replayed with
    /// it.
    pub spread: bool,
    /// Recorded order among calls at the same instant (source rank, then row id), so a
    /// replay never depends on the order rows were read in.
    pub seq: u64,
    /// The request's role ([`role_index`]): each has its own half-open probes.
    pub role: u8,
}

// A night's rows become calls (`traffic`): their size is its memory.
const _: () = assert!(std::mem::size_of::<Call>() == 64);

/// Roles with half-open probes of their own: the crawler's three.
pub const ROLES: usize = 3;

/// A role's index in [`Call::role`]: `metadata`, `landing`, `artifact`. Any other is a
/// `metadata` one, as the crawler takes a request without a role
/// (networking.py ~913-919); so is a synthetic call, made up
/// to fill a gap.
pub fn role_index(role: &str) -> u8 {
    match role {
        "landing" => 1,
        "artifact" => 2,
        _ => 0,
    }
}

/// A role's half-open probes in `Breaker::probes` (an index past the three is
/// metadata's, as `role_index` gives none).
fn probe_slot(role: u8) -> usize {
    usize::from(role).min(ROLES - 1)
}

impl Call {
    pub fn failed(&self) -> bool {
        self.outcome == Outcome::Failure
    }

    /// A telemetry row as read (spread or not): not made up, not an outcome a breaker
    /// logged, not a retried attempt placed from a row.
    pub fn is_row(&self) -> bool {
        !self.synthetic && !self.exact && !self.retry
    }

    /// When the breaker counted it: a retried attempt, placed where it was sent
    /// (`traffic::spread_retries`), when its answer came back or its timeout fired,
    /// `elapsed_s` later, and so a spread row's last attempt that raised; any other call
    /// at its time (a row is written when its last attempt ends).
    pub fn counted_at(&self) -> f64 {
        if self.retry || (self.kind == Kind::Exception && self.spread) {
            self.t_s + self.elapsed_s
        } else {
            self.t_s
        }
    }

    /// Failed attempts the crawler sent for this request.
    pub fn failed_attempts(&self) -> u64 {
        u64::from(self.retried_failures) + u64::from(self.failed())
    }
}

/// How the crawler's breakers count, as far as the replay needs it (from
/// `crate::crawler::CrawlerModel`). Calls carry their process and their retried
/// failures whatever the model, so calibration can try other models on the same calls.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ReplayModel {
    /// Times the final outcome is recorded (the crawler: 2).
    pub final_outcome_counted: u32,
    /// The retried attempts go through the breaker (`Call::retried_failures`).
    pub count_retries: bool,
    /// One breaker for all of the host's instances.
    pub fleet_breaker: bool,
    /// One cooldown for all of the host's instances (a shared store).
    pub fleet_cooldowns: bool,
    pub success_clears_cooldown: bool,
    /// A cache hit counts as a success; otherwise it never reaches the breaker.
    pub cache_hit_is_success: bool,
    /// A request that raised counts as a failure.
    pub exceptions_are_failures: bool,
}

impl ReplayModel {
    /// The cooldown an instance waits on: its own, or the fleet's one (index 0).
    pub fn cooldown_slot(&self, instance: usize) -> usize {
        if self.fleet_cooldowns { 0 } else { instance }
    }

    /// Whether the call is counted without asking the breaker (`Call::in_flight`): a
    /// logged outcome always; a retried attempt marked from the recorded open spells of
    /// its process only where each process has its own breaker.
    pub fn in_flight(&self, c: &Call) -> bool {
        c.in_flight && (c.exact || !self.fleet_breaker)
    }

    /// How the breaker counts a call's final attempt under the model; `None` when the
    /// call never reaches the breaker (a cache hit the crawler does not count).
    pub fn outcome(&self, c: &Call) -> Option<Outcome> {
        if c.retry {
            // A retried attempt reaches the breaker where retries count, and then only
            // as what counts: a status, or an exception where exceptions do.
            let counted = c.kind != Kind::Exception || self.exceptions_are_failures;
            return (self.count_retries && counted).then_some(Outcome::Failure);
        }
        match c.kind {
            Kind::Response => Some(c.outcome),
            Kind::CacheHit => self.cache_hit_is_success.then_some(Outcome::Success),
            Kind::Exception if self.exceptions_are_failures => Some(Outcome::Failure),
            Kind::Exception => Some(Outcome::Uncounted),
        }
    }

    /// The call's earlier attempts that the breaker counted as failures: those that
    /// failed with a status, and those that raised where exceptions count.
    pub fn retried_failures(&self, c: &Call) -> u32 {
        if !self.count_retries || c.exact || c.spread || c.kind == Kind::CacheHit {
            return 0;
        }
        let raised = c.retried_raised.min(c.retried_failures);
        let statuses = c.retried_failures - raised;
        if self.exceptions_are_failures {
            statuses + raised
        } else {
            statuses
        }
    }
}

impl Default for ReplayModel {
    fn default() -> Self {
        ReplayModel::from(&crate::crawler::CrawlerModel::default())
    }
}

impl From<&crate::crawler::CrawlerModel> for ReplayModel {
    fn from(m: &crate::crawler::CrawlerModel) -> Self {
        ReplayModel {
            final_outcome_counted: m.final_outcome_counted.max(1),
            count_retries: m.count_retries,
            fleet_breaker: m.breaker_scope == crate::crawler::Scope::Fleet,
            fleet_cooldowns: m.cooldown_scope == crate::crawler::Scope::Fleet,
            success_clears_cooldown: m.success_clears_cooldown,
            cache_hit_is_success: m.cache_hit_is_success,
            exceptions_are_failures: m.exceptions_are_failures,
        }
    }
}

/// A time span, epoch seconds `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Span {
    pub start_s: f64,
    pub end_s: f64,
}

/// A span in which one breaker instance blocked calls.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Gap {
    pub instance: u32,
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
    /// Requests replayed (rows and synthetic calls).
    pub calls: u64,
    pub synthetic_calls: u64,
    /// Attempts the breakers admitted (retries included).
    pub attempts: u64,
    pub opens: u64,
    pub opens_per_hour: f64,
    /// Opens per breaker instance, in instance order.
    pub instance_opens: Vec<u64>,
    pub half_open_trials: u64,
    pub half_open_closed: u64,
    pub half_open_reopened: u64,
    /// Requests blocked (breaker open, cooldown, the role's half-open probes spent) while the host was
    /// healthy: outside every incident.
    pub false_trips: u64,
    /// Requests blocked during incidents (failures spared, and some successes).
    pub blocked_in_incidents: u64,
    /// Failed attempts admitted during incidents.
    pub failures_let_through: u64,
    /// Mean time from an incident's onset to the first open in it (incidents that
    /// opened a breaker).
    pub onset_to_open_s: Option<f64>,
    /// Mean time from an incident's end to the next close.
    pub end_to_close_s: Option<f64>,
    /// closed -> open within three reset timeouts of a close (of the same breaker).
    pub flaps: u64,
    /// Opens outside every incident.
    pub opens_outside_incidents: u64,
    /// Attempts that raised (timeouts, connection errors) sent during incidents by
    /// requests the breakers let through: every attempt of a row of a request that
    /// raised, and the retried attempts estimated to have raised before one that
    /// answered (`traffic::estimate_retried_raised`); and the worker time they held
    /// (each attempt's time until its timeout fired, as spread).
    pub raised_attempts_in_incidents: u64,
    pub raised_seconds_in_incidents: f64,
}

impl Figures {
    /// The objective the advisor minimises: requests lost to false trips plus failed
    /// attempts let through during incidents (each one call the crawler wasted or lost).
    pub fn cost(&self) -> u64 {
        self.false_trips + self.failures_let_through
    }

    /// A request the breaker denied: spared during an incident, a false trip outside.
    fn blocked(&mut self, unhealthy: bool) {
        if unhealthy {
            self.blocked_in_incidents += 1;
        } else {
            self.false_trips += 1;
        }
    }
}

use crate::breaker_state::BreakerState as State;

/// One breaker instance's state.
#[derive(Debug, Clone)]
struct Breaker {
    state: State,
    consecutive: u32,
    open_until: f64,
    ho_successes: u32,
    /// Per role ([`Call::role`]): the half-open probes left, and when the budget was
    /// given (renewed `reset_timeout_s` later, or by the role's success).
    probes: [Option<(u32, f64)>; ROLES],
    /// Failure times of the rolling window.
    window: std::collections::VecDeque<f64>,
    last_close: f64,
    /// When it last left the closed state (an open from closed, not a reopen).
    left_closed: f64,
    opens: u64,
}

impl Breaker {
    fn new() -> Self {
        Breaker {
            state: State::Closed,
            consecutive: 0,
            open_until: f64::NEG_INFINITY,
            ho_successes: 0,
            probes: [None; ROLES],
            window: std::collections::VecDeque::new(),
            last_close: f64::NEG_INFINITY,
            left_closed: f64::NEG_INFINITY,
            opens: 0,
        }
    }
}

/// The replay's running state: the breakers, the cooldowns of their scope, the tallies.
struct Run<'a> {
    policy: &'a ReplayPolicy,
    model: &'a ReplayModel,
    breakers: Vec<Breaker>,
    /// Cooldowns per instance, or one (index 0) for the fleet: when each began and
    /// its deadline.
    cooldown_from: Vec<f64>,
    cooldown_until: Vec<f64>,
    f: Figures,
    opens_at: Vec<f64>,
    closes_at: Vec<f64>,
}

impl Run<'_> {
    /// `allow()`: whether the instance admits an attempt of `role` at `t`. In
    /// half-open each role has `trial_calls` probes, given again `reset_timeout_s`
    /// after they were given (the crawler's `_enforce_half_open_probe_limit`), however
    /// long the probes take to answer. A Retry-After cooldown holds the attempts sent
    /// (`sent`) while it lasts, not one sent before it began and answered during it.
    /// Only the cooldown running (or last set) is kept: a recorded call sent in one
    /// that had ended, or that a success had cleared, went through in fact.
    fn admits(&mut self, i: usize, t: f64, role: u8, sent: f64) -> bool {
        let slot = self.model.cooldown_slot(i);
        if self.cooldown_from[slot] <= sent && sent < self.cooldown_until[slot] {
            return false;
        }
        let reset = self.policy.reset_timeout_s;
        let allowed = self.policy.trial_calls.max(1);
        let b = &mut self.breakers[i];
        // Sent while the breaker was last closed and answered after it opened: the
        // request asked then, and its outcome is counted in the state it meets
        // (pybreaker turns half-open only when a call asks), not as a probe.
        if b.state != State::Closed && b.last_close <= sent && sent < b.left_closed {
            return true;
        }
        if b.state == State::Open {
            if t < b.open_until {
                return false;
            }
            b.state = State::HalfOpen;
            b.ho_successes = 0;
        }
        if b.state == State::HalfOpen {
            let slot = &mut b.probes[probe_slot(role)];
            let (left, given) = slot
                .filter(|(_, given)| t - given <= reset)
                .unwrap_or((allowed, t));
            if left == 0 {
                *slot = Some((0, given));
                return false;
            }
            *slot = Some((left - 1, given));
        }
        true
    }

    /// A cooldown set at `t` until `until`: it begins now, or extends the one running.
    fn cool(&mut self, slot: usize, t: f64, until: f64) {
        if t >= self.cooldown_until[slot] {
            self.cooldown_from[slot] = t;
        }
        self.cooldown_until[slot] = self.cooldown_until[slot].max(until);
    }

    /// A failure counted when its attempt ended (`Call::counted_at`), with the final
    /// outcome's repeats.
    fn record_pending(&mut self, p: Pending) {
        self.record(p.instance, p.at, p.role, true, None, true);
        for _ in 1..p.times {
            self.record(p.instance, p.at, p.role, true, None, false);
        }
    }

    fn open(&mut self, i: usize, t: f64) {
        let b = &mut self.breakers[i];
        if b.state == State::Closed {
            b.left_closed = t;
            if t - b.last_close <= 3.0 * self.policy.reset_timeout_s {
                self.f.flaps += 1;
            }
        }
        b.state = State::Open;
        b.open_until = t + self.policy.reset_timeout_s;
        b.opens += 1;
        self.f.opens += 1;
        self.opens_at.push(t);
    }

    /// `on_failure` / `on_success` of one recorded outcome of `role`; `attempt` for an
    /// attempt (a half-open trial), not for the repeat after the loop. A success gives
    /// the role its half-open probes again.
    fn record(
        &mut self,
        i: usize,
        t: f64,
        role: u8,
        failure: bool,
        ra: Option<f64>,
        attempt: bool,
    ) {
        let slot = self.model.cooldown_slot(i);
        if failure {
            if let Some(ra) = ra {
                self.cool(slot, t, t + ra.min(self.policy.retry_after_cap_s));
            }
            if let Some(r) = self.policy.rolling {
                let b = &mut self.breakers[i];
                b.window.push_back(t);
                while b.window.front().is_some_and(|w| *w <= t - r.window_s) {
                    b.window.pop_front();
                }
                if b.window.len() as u32 >= r.threshold_failures {
                    b.window.clear();
                    self.cool(slot, t, t + r.cooldown_s);
                }
            }
        } else if self.model.success_clears_cooldown {
            self.cooldown_until[slot] = f64::NEG_INFINITY;
        }
        let b = &mut self.breakers[i];
        if !failure {
            b.probes[probe_slot(role)] = None;
        }
        match (b.state, failure) {
            (State::Closed, true) => {
                b.consecutive += 1;
                if b.consecutive >= self.policy.fail_max {
                    self.open(i, t);
                }
            }
            (State::Closed, false) => b.consecutive = 0,
            (State::HalfOpen, true) => {
                if attempt {
                    self.f.half_open_trials += 1;
                }
                self.f.half_open_reopened += 1;
                // Reopening from half-open is not a flap (`open` counts only closed -> open).
                self.open(i, t);
            }
            (State::HalfOpen, false) => {
                if attempt {
                    self.f.half_open_trials += 1;
                }
                b.ho_successes += 1;
                if b.ho_successes >= self.policy.success_threshold {
                    self.f.half_open_closed += 1;
                    b.state = State::Closed;
                    b.consecutive = 0;
                    b.last_close = t;
                    self.closes_at.push(t);
                }
            }
            (State::Open, _) => {}
        }
    }
}

/// A failed attempt sent and counted later (`Call::counted_at`), in the replay's queue.
#[derive(Debug, Clone, Copy)]
struct Pending {
    at: f64,
    seq: u64,
    instance: usize,
    /// Times it is recorded: the attempt, then the final outcome's repeats.
    times: u32,
    role: u8,
}

impl PartialEq for Pending {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == std::cmp::Ordering::Equal
    }
}

impl Eq for Pending {}

impl PartialOrd for Pending {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}

impl Ord for Pending {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        self.at
            .total_cmp(&o.at)
            .then(self.seq.cmp(&o.seq))
            .then(self.instance.cmp(&o.instance))
            .then(self.times.cmp(&o.times))
            .then(self.role.cmp(&o.role))
    }
}

/// Replays `calls` (sorted by time) under `policy` and `model`; `incidents` (sorted)
/// say when the host was unhealthy; `hours` scales `opens_per_hour`.
pub fn replay(
    calls: &[Call],
    policy: &ReplayPolicy,
    model: &ReplayModel,
    incidents: &[Incident],
    hours: f64,
) -> Figures {
    let instances = calls
        .iter()
        .map(|c| c.instance as usize + 1)
        .max()
        .unwrap_or(1);
    let mut run = Run {
        policy,
        model,
        breakers: vec![Breaker::new(); instances],
        cooldown_from: vec![f64::NEG_INFINITY; instances],
        cooldown_until: vec![f64::NEG_INFINITY; instances],
        f: Figures::default(),
        opens_at: Vec::new(),
        closes_at: Vec::new(),
    };
    let mut inc_i = 0usize;
    // Requests whose retried attempt was denied: their later attempts never happened.
    let mut denied: HashSet<u64> = HashSet::new();
    // Requests admitted at their first attempt where retries are not counted: the
    // breaker is asked once for the whole request.
    let mut asked: HashSet<u64> = HashSet::new();
    // Attempts sent and not answered yet (counted when the answer comes back or the
    // timeout fires), the earliest first: each is counted before any call that comes
    // after it.
    let mut pending: BinaryHeap<Reverse<Pending>> = BinaryHeap::new();
    for c in calls {
        while let Some(Reverse(p)) = pending.peek().copied()
            && p.at <= c.t_s
        {
            pending.pop();
            run.record_pending(p);
        }
        if c.retry && denied.contains(&c.seq) || c.spread && denied.remove(&c.seq) {
            continue;
        }
        let outcome = model.outcome(c);
        if outcome.is_none() && !c.retry {
            continue;
        }
        while inc_i < incidents.len() && incidents[inc_i].end_s <= c.t_s {
            inc_i += 1;
        }
        let unhealthy = incidents
            .get(inc_i)
            .is_some_and(|i| i.start_s <= c.t_s && c.t_s < i.end_s);
        let i = if model.fleet_breaker {
            0
        } else {
            c.instance as usize
        };
        if c.retry {
            // One failed attempt of a request, at its own time: it asks the breaker where
            // retries count; where they do not, the request's first attempt asks for the
            // whole request, and only the final outcome is counted.
            let asks = model.count_retries || asked.insert(c.seq);
            if asks && !model.in_flight(c) && !run.admits(i, c.t_s, c.role, c.t_s) {
                asked.remove(&c.seq);
                denied.insert(c.seq);
                run.f.calls += 1;
                run.f.blocked(unhealthy);
                continue;
            }
            run.f.attempts += 1;
            run.f.failures_let_through += u64::from(unhealthy);
            // A retried attempt that raised (before a row that raised, or before one
            // that answered): the time until its timeout fired.
            if unhealthy && c.kind == Kind::Exception {
                run.f.raised_attempts_in_incidents += 1;
                run.f.raised_seconds_in_incidents += c.elapsed_s;
            }
            let at = c.counted_at();
            if at > c.t_s {
                // Sent now, answered or timed out later: counted then.
                if outcome.is_some() {
                    pending.push(Reverse(Pending {
                        at,
                        seq: c.seq,
                        instance: i,
                        times: 1,
                        role: c.role,
                    }));
                }
            } else if outcome.is_some() {
                run.record(i, c.t_s, c.role, true, None, true);
            }
            continue;
        }
        let Some(outcome) = outcome else { continue };
        let admitted = c.spread && asked.remove(&c.seq) || model.in_flight(c);
        run.f.calls += 1;
        run.f.synthetic_calls += u64::from(c.synthetic);
        let t = c.t_s;
        let retried = model.retried_failures(c);
        // The retried attempts, then the final one: each must be admitted; a denied
        // attempt raises, which ends the request (and leaves no row).
        let mut blocked = false;
        // The final attempt of a spread row that raised was sent at `t` and is counted
        // when its timeout fires, with the final outcome's repeats.
        let later = c.counted_at() > t;
        // A request sent once asked the breaker as it began (before the limiter's wait):
        // its elapsed time before its row, at most an attempt's timeouts (a longer one,
        // a long limiter wait or a clock step, is taken as that). A spread row's last
        // attempt is taken at its row's time (its answer's latency is not known).
        let sent = if c.kind == Kind::Response
            && c.retried_failures == 0
            && !c.synthetic
            && c.elapsed_s.is_finite()
        {
            t - c.elapsed_s.clamp(
                0.0,
                crate::crawler::CONNECT_TIMEOUT_S + crate::crawler::READ_TIMEOUT_S,
            )
        } else {
            t
        };
        for a in 0..=retried {
            if !(admitted || run.admits(i, t, c.role, sent)) {
                blocked = true;
                break;
            }
            run.f.attempts += 1;
            let last = a == retried;
            let failure = !last || outcome == Outcome::Failure;
            if failure && unhealthy {
                run.f.failures_let_through += 1;
            }
            if last && later {
                if outcome != Outcome::Uncounted {
                    pending.push(Reverse(Pending {
                        at: c.counted_at(),
                        seq: c.seq,
                        instance: i,
                        times: if c.exact {
                            1
                        } else {
                            model.final_outcome_counted.max(1)
                        },
                        role: c.role,
                    }));
                }
            } else if !last || outcome != Outcome::Uncounted {
                let ra = if last { c.retry_after_s } else { None };
                run.record(i, t, c.role, failure, ra, true);
            }
        }
        if blocked {
            run.f.blocked(unhealthy);
            continue;
        }
        // A request that raised and was let through sent all its attempts, counted or
        // not (an attempt the breaker does not count passes it as the one before did).
        // A spread row's retried attempts were counted as calls of their own (above),
        // each with its own time: the row is its last attempt.
        if unhealthy && c.kind == Kind::Exception && !c.synthetic {
            run.f.raised_attempts_in_incidents += if c.spread {
                1
            } else {
                u64::from(c.retried_failures) + 1
            };
            run.f.raised_seconds_in_incidents += c.elapsed_s;
        }
        // The final outcome, recorded again after the retry loop (with the attempt,
        // when that is counted later).
        if outcome != Outcome::Uncounted && !c.exact && !later {
            for _ in 1..model.final_outcome_counted {
                run.record(
                    i,
                    t,
                    c.role,
                    outcome == Outcome::Failure,
                    c.retry_after_s,
                    false,
                );
            }
        }
    }
    while let Some(Reverse(p)) = pending.pop() {
        run.record_pending(p);
    }
    let Run {
        mut f,
        breakers,
        mut opens_at,
        mut closes_at,
        ..
    } = run;
    f.instance_opens = breakers.iter().map(|b| b.opens).collect();
    f.opens_per_hour = if hours > 0.0 {
        f.opens as f64 / hours
    } else {
        0.0
    };
    opens_at.sort_by(f64::total_cmp);
    closes_at.sort_by(f64::total_cmp);
    // Incidents are sorted and disjoint: the first that ends after an open is the only
    // one that can hold it.
    f.opens_outside_incidents = opens_at
        .iter()
        .filter(|&&t| {
            let i = incidents.partition_point(|i| i.end_s <= t);
            incidents.get(i).is_none_or(|i| t < i.start_s)
        })
        .count() as u64;
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

/// Adds synthetic calls in the `gaps` of one instance (sorted, disjoint spans where its
/// recorded breaker blocked calls): evenly spaced at `rate_per_s`, the first half a
/// spacing into the gap; in a gap's part inside an incident each fails with the
/// incident's rate, elsewhere with the `background` rate, as independent draws: a hash
/// of the call's instance and time, so the fill is deterministic and its failures come
/// in runs as often as the rate gives them. (Spread evenly instead, a rate of 0.7 never
/// gave three failures in a row: a breaker that closed in a gap was never tripped there
/// again, and every longer `reset_timeout_s` was replayed as letting more failures in.)
/// Returns all calls sorted by time.
pub fn fill_gaps(
    recorded: Vec<Call>,
    gaps: &[Gap],
    incidents: &[Incident],
    background: f64,
    rate_per_s: &[f64],
) -> Vec<Call> {
    let mut out = recorded;
    for g in gaps {
        let rate = rate_per_s.get(g.instance as usize).copied().unwrap_or(0.0);
        if rate > 0.0 {
            let step = 1.0 / rate;
            let mut t = g.start_s + step / 2.0;
            while t < g.end_s {
                let r = incidents
                    .iter()
                    .find(|i| i.start_s <= t && t < i.end_s)
                    .map_or(background, |i| i.rate);
                let failure = unit_draw(g.instance, t) < r.clamp(0.0, 1.0);
                out.push(Call {
                    t_s: t,
                    instance: g.instance,
                    retried_failures: 0,
                    retried_raised: 0,
                    outcome: if failure {
                        Outcome::Failure
                    } else {
                        Outcome::Success
                    },
                    kind: Kind::Response,
                    retry_after_s: None,
                    throttled: false,
                    elapsed_s: 0.0,
                    synthetic: true,
                    exact: false,
                    in_flight: false,
                    retry: false,
                    spread: false,
                    seq: u64::MAX,
                    role: 0,
                });
                t += step;
            }
        }
    }
    out.sort_by(|a, b| a.t_s.total_cmp(&b.t_s).then(a.seq.cmp(&b.seq)));
    out
}

/// A draw in [0, 1) from an instance and a time (splitmix64 of both): the same
/// arguments give the same draw on every run and machine.
fn unit_draw(instance: u32, t_s: f64) -> f64 {
    let mut z = t_s
        .to_bits()
        .wrapping_add((u64::from(instance) + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

/// Merges each instance's gaps into sorted disjoint ones (ordered by instance, then
/// time).
pub fn merge_gaps(mut gaps: Vec<Gap>) -> Vec<Gap> {
    gaps.sort_by(|a, b| {
        a.instance
            .cmp(&b.instance)
            .then(a.start_s.total_cmp(&b.start_s))
    });
    let mut out: Vec<Gap> = Vec::new();
    for g in gaps {
        match out.last_mut() {
            Some(l) if l.instance == g.instance && g.start_s <= l.end_s => {
                l.end_s = l.end_s.max(g.end_s)
            }
            _ => out.push(g),
        }
    }
    out
}

/// Merges spans into sorted disjoint ones.
pub fn merge_spans(mut spans: Vec<Span>) -> Vec<Span> {
    // An empty or inverted span holds nothing, and would break the order.
    spans.retain(|s| s.end_s > s.start_s);
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
            instance: 0,
            retried_failures: 0,
            retried_raised: 0,
            outcome: if failure {
                Outcome::Failure
            } else {
                Outcome::Success
            },
            kind: Kind::Response,
            retry_after_s: None,
            throttled: false,
            elapsed_s: 0.0,
            synthetic: false,
            exact: false,
            in_flight: false,
            retry: false,
            spread: false,
            seq: 0,
            role: 0,
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

    /// Plain pybreaker: each row one outcome, counted once, cooldowns per instance.
    fn plain() -> ReplayModel {
        ReplayModel {
            final_outcome_counted: 1,
            count_retries: true,
            fleet_breaker: false,
            fleet_cooldowns: false,
            success_clears_cooldown: false,
            cache_hit_is_success: true,
            exceptions_are_failures: false,
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
        let f = replay(&calls, &policy(), &plain(), &[], 1.0);
        assert_eq!(f.opens, 2);
        assert_eq!(f.half_open_reopened, 1);
        assert_eq!(f.half_open_closed, 1);
        assert_eq!(f.half_open_trials, 3, "12.5 failed, 23 and 24 succeeded");
        assert_eq!(f.false_trips, 2, "5.0 and 20.0 were blocked while healthy");
    }

    #[test]
    fn an_outcome_in_flight_when_the_breaker_opened_is_no_probe() {
        // 3 failures open at 2 (half-open from 12 on). A failure answered at 13 meets
        // the breaker as a call that asks: it is the probe, and reopens. Sent at 1.5
        // (a row's elapsed time) or logged by a breaker that stood open, it asked
        // before the open (or a retried attempt spread into a recorded open spell):
        // counted in the open state, it changes nothing, and the success at 14 is the
        // probe that closes.
        let p = ReplayPolicy {
            success_threshold: 1,
            ..policy()
        };
        let run = |late: Call| {
            let calls = [
                call(0.0, true),
                call(1.0, true),
                call(2.0, true),
                late,
                call(14.0, false),
            ];
            replay(&calls, &p, &plain(), &[], 1.0)
        };
        let asks = run(call(13.0, true));
        assert_eq!((asks.opens, asks.half_open_reopened), (2, 1));
        let mut sent_before = call(13.0, true);
        sent_before.elapsed_s = 11.5;
        let mut logged_open = call(13.0, true);
        logged_open.exact = true;
        logged_open.in_flight = true;
        let mut retried = call(13.0, true);
        retried.retry = true;
        retried.in_flight = true;
        for late in [sent_before, logged_open, retried] {
            let f = run(late);
            assert_eq!(
                (f.opens, f.half_open_reopened, f.half_open_closed),
                (1, 0, 1)
            );
            assert_eq!(f.attempts, 5, "the call in flight was made");
        }
        // After a reopen (the probe at 12.5 failed), a row sent at 5, while the breaker
        // stood open, was not in flight: it is blocked.
        let mut sent_open = call(14.0, true);
        sent_open.elapsed_s = 9.0;
        let calls = [
            call(0.0, true),
            call(1.0, true),
            call(2.0, true),
            call(12.5, true),
            sent_open,
        ];
        let f = replay(&calls, &p, &plain(), &[], 1.0);
        assert_eq!((f.opens, f.attempts), (2, 4));
    }

    #[test]
    fn retry_after_and_rolling_window_block_without_opening() {
        let mut c = call(0.0, true);
        c.retry_after_s = Some(600.0);
        let calls = [c, call(29.0, false), call(31.0, false)];
        let f = replay(&calls, &policy(), &plain(), &[], 1.0);
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
        let f = replay(&calls, &p, &plain(), &[], 1.0);
        assert_eq!((f.opens, f.false_trips), (0, 1), "cooldown 5..65 blocks 30");
    }

    #[test]
    fn retries_and_the_repeated_final_outcome_count_toward_fail_max() {
        let crawler = ReplayModel {
            final_outcome_counted: 2,
            ..plain()
        };
        let p = ReplayPolicy {
            fail_max: 5,
            success_threshold: 1,
            ..policy()
        };
        // One row that failed after 3 retries: 4 attempts + the repeat = 5 failures.
        let mut row = call(0.0, true);
        row.retried_failures = 3;
        let f = replay(&[row], &p, &crawler, &[], 1.0);
        assert_eq!((f.opens, f.attempts), (1, 4));
        // Counted once and without retries, it would take five such rows.
        let mut once = row;
        once.retried_failures = 0;
        let f = replay(&[once; 4], &p, &plain(), &[], 1.0);
        assert_eq!(f.opens, 0);
        // A breaker that opens during the retries denies the rest: the request raised.
        let mut long = call(0.0, true);
        long.retried_failures = 6;
        let incident = [Incident {
            start_s: -1.0,
            end_s: 1.0,
            rate: 1.0,
        }];
        let f = replay(&[long], &p, &crawler, &incident, 1.0);
        assert_eq!((f.opens, f.attempts, f.failures_let_through), (1, 5, 5));
        assert_eq!(f.blocked_in_incidents, 1);
    }

    #[test]
    fn each_process_has_its_own_breaker_and_a_success_clears_the_cooldown() {
        let p = ReplayPolicy {
            fail_max: 2,
            success_threshold: 1,
            ..policy()
        };
        // Two processes alternate failures: each breaker counts its own two and opens;
        // one fleet-wide breaker opens once and blocks the rest.
        let mut calls: Vec<Call> = (0..4).map(|k| call(f64::from(k), true)).collect();
        for (k, c) in calls.iter_mut().enumerate() {
            c.instance = (k % 2) as u32;
        }
        let f = replay(&calls, &p, &plain(), &[], 1.0);
        assert_eq!(
            f.instance_opens,
            vec![1, 1],
            "each saw 2 consecutive failures"
        );
        let fleet_breaker = ReplayModel {
            fleet_breaker: true,
            ..plain()
        };
        assert_eq!(replay(&calls, &p, &fleet_breaker, &[], 1.0).opens, 1);

        // A Retry-After cooldown in a shared store blocks the other process too.
        let mut throttled = call(0.0, true);
        throttled.retry_after_s = Some(20.0);
        let mut other = call(1.0, false);
        other.instance = 1;
        let fleet = ReplayModel {
            fleet_cooldowns: true,
            success_clears_cooldown: true,
            ..plain()
        };
        let f = replay(&[throttled, other, call(3.0, false)], &p, &fleet, &[], 1.0);
        assert_eq!(
            f.false_trips, 2,
            "the shared cooldown blocks both processes"
        );
        let f = replay(
            &[throttled, other, call(3.0, false)],
            &p,
            &plain(),
            &[],
            1.0,
        );
        assert_eq!(
            f.false_trips, 1,
            "a per-process cooldown blocks its own process only"
        );
        // A request sent before the cooldown began and answered during it was not held
        // by it, and its success counts; one sent as it began, or during it, was held.
        // A failure in flight (sent at -1, answered at 5) extends it to 35; it still
        // began at 0, so a request sent at 3 and answered at 25 was held.
        let in_flight = Call {
            elapsed_s: 1.5,
            ..call(1.0, false)
        };
        let sent_during = Call {
            elapsed_s: 0.5,
            ..call(1.0, false)
        };
        let keeps = ReplayModel {
            success_clears_cooldown: false,
            ..plain()
        };
        let f = replay(&[throttled, in_flight], &p, &keeps, &[], 1.0);
        assert_eq!((f.false_trips, f.attempts), (0, 2));
        let f = replay(&[throttled, sent_during], &p, &keeps, &[], 1.0);
        assert_eq!((f.false_trips, f.attempts), (1, 1));
        let sent_as_it_began = Call {
            elapsed_s: 1.0,
            ..call(1.0, false)
        };
        let f = replay(&[throttled, sent_as_it_began], &p, &keeps, &[], 1.0);
        assert_eq!((f.false_trips, f.attempts), (1, 1));
        let extends = Call {
            retry_after_s: Some(30.0),
            elapsed_s: 6.0,
            ..call(5.0, true)
        };
        let sent_before_the_extension = Call {
            elapsed_s: 22.0,
            ..call(25.0, false)
        };
        let f = replay(
            &[throttled, extends, sent_before_the_extension],
            &p,
            &keeps,
            &[],
            1.0,
        );
        assert_eq!((f.false_trips, f.attempts), (1, 2), "{f:?}");
    }

    #[test]
    fn gaps_are_filled_at_the_instance_rate_with_the_incident_share() {
        let incidents = [Incident {
            start_s: 0.0,
            end_s: 100.0,
            rate: 0.5,
        }];
        let gaps = [Gap {
            instance: 1,
            start_s: 10.0,
            end_s: 30.0,
        }];
        let all = fill_gaps(vec![call(5.0, true)], &gaps, &incidents, 0.0, &[0.1, 0.5]);
        let synth: Vec<&Call> = all.iter().filter(|c| c.synthetic).collect();
        assert_eq!(synth.len(), 10, "one call every 2 s over 20 s");
        assert_eq!(synth[0].t_s, 11.0);
        assert!(synth.iter().all(|c| c.instance == 1));
        assert!(all.windows(2).all(|w| w[0].t_s <= w[1].t_s));
        // Deterministic on every machine: each outcome is a splitmix64 draw of the
        // call's process and time (the values from an independent Python rendering of
        // the same hash), here 3 of the 10 under the incident's rate of 0.5.
        assert_eq!(unit_draw(0, 0.0), 0.8833108082136426);
        assert_eq!(unit_draw(1, 11.0), 0.7424603916240234);
        assert_eq!(unit_draw(3, 1_764_074_014.574), 0.3198282412711264);
        let failed: Vec<bool> = synth.iter().map(|c| c.failed()).collect();
        assert_eq!(
            failed,
            [
                false, true, false, false, false, false, false, true, true, false
            ]
        );
        // Over a long gap the failures follow the incident's rate, and come in runs as
        // independent draws do: at 0.7, a run of three or more starts at about a tenth
        // of the calls (0.3 x 0.7^3 of them, 206 of 2,000); spread evenly, never.
        // Outside the incident, the background rate (none).
        let incident = [Incident {
            start_s: 0.0,
            end_s: 2_000.0,
            rate: 0.7,
        }];
        let long = [Gap {
            instance: 0,
            start_s: 0.0,
            end_s: 3_000.0,
        }];
        let all = fill_gaps(Vec::new(), &long, &incident, 0.0, &[1.0]);
        let (inside, outside): (Vec<&Call>, Vec<&Call>) = all.iter().partition(|c| c.t_s < 2_000.0);
        let share = inside.iter().filter(|c| c.failed()).count() as f64 / inside.len() as f64;
        assert!((share - 0.7).abs() < 0.03, "{share}");
        assert!(outside.iter().all(|c| !c.failed()));
        let runs_of_three = inside
            .windows(4)
            .filter(|w| !w[0].failed() && w[1..].iter().all(|c| c.failed()))
            .count();
        assert!((150..=260).contains(&runs_of_three), "{runs_of_three}");
        let merged = merge_gaps(vec![
            Gap {
                instance: 0,
                start_s: 5.0,
                end_s: 9.0,
            },
            Gap {
                instance: 1,
                start_s: 4.0,
                end_s: 6.0,
            },
            Gap {
                instance: 0,
                start_s: 1.0,
                end_s: 6.0,
            },
        ]);
        assert_eq!(merged.len(), 2);
        assert_eq!((merged[0].start_s, merged[0].end_s), (1.0, 9.0));
    }

    #[test]
    fn a_requests_attempts_at_their_own_times_stop_where_the_breaker_denies_one() {
        let p = ReplayPolicy {
            fail_max: 2,
            ..policy()
        };
        let attempt = |t: f64, seq: u64| Call {
            retry: true,
            seq,
            ..call(t, true)
        };
        let last = |t: f64, seq: u64| Call {
            spread: true,
            seq,
            ..call(t, true)
        };
        // Request 1 fails twice and opens the breaker; request 2's first attempt is
        // denied, so its second attempt and its row never happen.
        let calls = [
            attempt(0.0, 1),
            attempt(1.0, 2),
            last(2.0, 1),
            attempt(3.0, 2),
            last(4.0, 2),
        ];
        let incident = [Incident {
            start_s: -1.0,
            end_s: 10.0,
            rate: 1.0,
        }];
        let f = replay(&calls, &p, &plain(), &incident, 1.0);
        assert_eq!(f.opens, 1);
        assert_eq!((f.attempts, f.failures_let_through), (2, 2));
        assert_eq!(f.blocked_in_incidents, 2, "request 1's row and request 2");
        // Where retries do not count, a request asks the breaker once, at its first
        // attempt, and only its final outcome is counted: every attempt is sent, the
        // two rows open the breaker, and a third request is denied at its first attempt
        // (its row never happens).
        let final_only = ReplayModel {
            count_retries: false,
            ..plain()
        };
        let mut more = calls.to_vec();
        more.extend([attempt(5.0, 3), last(6.0, 3)]);
        let f = replay(&more, &p, &final_only, &incident, 1.0);
        assert_eq!((f.opens, f.attempts, f.blocked_in_incidents), (1, 5, 1));
    }

    #[test]
    fn each_attempt_that_raised_in_an_incident_counts_once_with_its_share_of_the_time() {
        // A request that raised after two retried attempts that raised (90 s in all),
        // and a request that answered after one retried attempt estimated to have timed
        // out (30 s): spread as the traffic does, four attempts raised. A retried one
        // lasted until the next attempt was sent, at most a read timeout (30 s each);
        // the row's own attempt its share of the request's time (30 s).
        let raised = Call {
            kind: Kind::Exception,
            outcome: Outcome::Uncounted,
            retried_failures: 2,
            retried_raised: 2,
            elapsed_s: 90.0,
            seq: 1,
            ..call(100.0, false)
        };
        let answered = Call {
            retried_failures: 1,
            retried_raised: 1,
            elapsed_s: 30.0,
            seq: 2,
            ..call(150.0, false)
        };
        let calls = traffic::spread_retries(vec![raised, answered]);
        assert_eq!(calls.len(), 5);
        let incident = [Incident {
            start_s: 0.0,
            end_s: 200.0,
            rate: 1.0,
        }];
        let f = replay(&calls, &policy(), &ReplayModel::default(), &incident, 1.0);
        assert_eq!(f.raised_attempts_in_incidents, 4);
        assert!(
            (f.raised_seconds_in_incidents - 120.0).abs() < 1e-9,
            "{f:?}"
        );
        // Outside every incident, none.
        let f = replay(&calls, &policy(), &ReplayModel::default(), &[], 1.0);
        assert_eq!(f.raised_attempts_in_incidents, 0);
    }

    #[test]
    fn an_attempt_that_failed_with_a_status_is_counted_when_its_answer_came_back() {
        // A request sent at 100 failed, waited and failed again at 110 (its row). The
        // host answers in 0.5 s (a row without retries): its first failure came back at
        // 100.5, after another request's success at 100.3, so the breaker (fail_max 2,
        // the final outcome once) saw success, failure, failure and opened at 110.
        // Counted when sent, the success would have come between the two failures.
        let retried = Call {
            retried_failures: 1,
            elapsed_s: 10.0,
            seq: 1,
            ..call(110.0, true)
        };
        let success = Call {
            elapsed_s: 0.5,
            seq: 2,
            ..call(100.3, false)
        };
        let calls = traffic::spread_retries(vec![success, retried]);
        let p = ReplayPolicy {
            fail_max: 2,
            ..policy()
        };
        let f = replay(&calls, &p, &plain(), &[], 1.0);
        assert_eq!((f.opens, f.attempts), (1, 3));
        // A host that answers at once (no latency known): counted when sent, no open.
        let instant = Call {
            elapsed_s: 0.0,
            ..success
        };
        let calls = traffic::spread_retries(vec![instant, retried]);
        assert_eq!(replay(&calls, &p, &plain(), &[], 1.0).opens, 0);
    }

    #[test]
    fn an_attempt_that_raised_is_counted_when_its_timeout_fires() {
        // Sent at 0, it timed out at 30. Meanwhile a success at 10 and a failure at 20:
        // the breaker (fail_max 2, exceptions counted) saw success, failure, timeout,
        // and opened at 30. Counted when sent, the success would have reset it.
        let timeout = Call {
            kind: Kind::Exception,
            retry: true,
            outcome: Outcome::Failure,
            elapsed_s: 30.0,
            seq: 1,
            ..call(0.0, true)
        };
        let calls = [
            timeout,
            Call {
                seq: 2,
                ..call(10.0, false)
            },
            Call {
                seq: 3,
                ..call(20.0, true)
            },
        ];
        let counting = ReplayModel {
            exceptions_are_failures: true,
            final_outcome_counted: 1,
            ..ReplayModel::default()
        };
        let p = ReplayPolicy {
            fail_max: 2,
            ..policy()
        };
        let f = replay(&calls, &p, &counting, &[], 1.0);
        assert_eq!((f.opens, f.attempts), (1, 3));
        // Where exceptions are not counted, the timeout changes nothing.
        let uncounted = ReplayModel {
            exceptions_are_failures: false,
            ..counting
        };
        let f = replay(&calls, &p, &uncounted, &[], 1.0);
        assert_eq!(f.opens, 0);
        // Still counted when no call comes after it.
        let f = replay(&[timeout, calls[2]], &p, &counting, &[], 1.0);
        assert_eq!(f.opens, 1);
    }

    #[test]
    fn each_role_has_its_half_open_probes_until_the_reset_timeout_or_a_success() {
        // fail_max 1, reset 10 s, one probe per role, three successes to close: the
        // failure at 0 opens until 10.
        let p = ReplayPolicy {
            fail_max: 1,
            success_threshold: 3,
            trial_calls: 1,
            ..policy()
        };
        let with = |t: f64, failure: bool, role: u8| Call {
            role,
            seq: t as u64,
            ..call(t, failure)
        };
        // Half-open at 11: the metadata probe succeeds, which gives metadata its probe
        // again (the crawler's registry), so the metadata call at 12 is a probe too; the
        // landing call has its own. Three successes close.
        let calls = [
            with(0.0, true, 0),
            with(11.0, false, 0),
            with(12.0, false, 0),
            with(12.5, false, 1),
        ];
        let f = replay(&calls, &p, &plain(), &[], 1.0);
        assert_eq!(
            (f.opens, f.half_open_trials, f.half_open_closed, f.attempts),
            (1, 3, 1, 4)
        );
        // Without a success, a role's budget comes back only reset_timeout_s after it
        // was given, however soon its probe answered.
        let raised = |t: f64, role: u8| Call {
            kind: Kind::Exception,
            outcome: Outcome::Uncounted,
            ..with(t, false, role)
        };
        let calls = [
            with(0.0, true, 0),
            raised(11.0, 0),
            raised(12.0, 0),
            raised(12.5, 1),
            raised(15.0, 0),
            raised(21.5, 0),
        ];
        let f = replay(&calls, &p, &plain(), &[], 1.0);
        // 11 takes metadata's probe, 12.5 landing's; 12 and 15 are denied; 21.5 comes
        // more than 10 s after metadata's was given: a new probe.
        assert_eq!(f.attempts, 4, "{f:?}");
    }
}
