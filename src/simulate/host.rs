//! One simulated host: its regime, incidents, quotas and traffic wave, and its
//! requests through each machine's breaker and rate limiter as the crawler sends them
//! (attempts, retries, cache hits, the rows they leave).

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Exp};

use crate::config::DEFAULT_FAILURE_STATUSES;
use crate::crawler::Scope;
use crate::metrics::stats::BurstStats;

use super::breaker::{Admission, Breaker, BreakerPolicy, State, Transition};
use super::limits::{Acquired, Limiter, QuotaCounter, ServerQuota};
use super::options::SimOptions;
use super::options::Variant;
use super::truth::Event;
use super::truth::HostTransition;
use super::truth::HostTruth;
use super::truth::Incident;
use super::truth::IncidentKind;
use super::truth::InstanceTruth;
use super::truth::Level;
use super::truth::Outcome;
use super::truth::OutcomeEvent;
use super::truth::RateEvent;
use super::truth::Regime;

pub(super) const REGIMES: [Regime; 6] = [
    Regime::Healthy,
    Regime::RateLimited,
    Regime::Outages,
    Regime::Flapping,
    Regime::Timeouts,
    Regime::Chronic,
];

pub(super) const KNOWN_HOSTS: [&str; 12] = [
    "api.crossref.org",
    "export.arxiv.org",
    "api.openalex.org",
    "api.semanticscholar.org",
    "unpaywall.org",
    "archive.org",
    "zenodo.org",
    "europepmc.org",
    "xn--mnchen-3ya.example",
    "doi.org",
    "www.ncbi.nlm.nih.gov",
    "api.unpaywall.org",
];

/// What a stretch of simulated time wrote, for every machine.
#[derive(Debug, Default)]
pub(super) struct Chunk {
    pub(super) events: Vec<Event>,
    pub(super) transitions: Vec<HostTransition>,
    pub(super) outcomes: Vec<OutcomeEvent>,
    pub(super) rate_events: Vec<RateEvent>,
}

/// A request's next attempt, waiting for tenacity's wait to pass.
#[derive(Debug, Clone)]
pub(super) struct Attempt {
    pub(super) t: f64,
    /// Scheduling order: the tie-break of attempts at the same instant.
    pub(super) seq: u64,
    pub(super) machine: usize,
    /// Attempts already made.
    pub(super) made: u32,
    pub(super) role: &'static str,
    pub(super) method: &'static str,
    pub(super) url_hash: u64,
    pub(super) rate_delay_ms: i64,
    /// Admitted by the breaker and given a limiter slot: sent at `t` without asking
    /// either again.
    pub(super) sent: Option<State>,
    /// When the request began (its first attempt, before any wait): the crawler's
    /// `elapsed_ms` runs from here to the row (networking.py ~855, ~1265).
    pub(super) started: f64,
    /// The server's answer to an attempt sent earlier: the breaker counts it at `t`, the
    /// end of the response, as `on_failure` / `on_success` run after the call returns.
    pub(super) answer: Option<Answer>,
}

/// The server's answer to one attempt, drawn when it was sent.
#[derive(Debug, Clone, Copy)]
pub(super) struct Answer {
    /// The breaker state the attempt was admitted in.
    state: State,
    status: Option<i64>,
    retry_after_s: Option<i64>,
    error: Option<&'static str>,
}

impl PartialEq for Attempt {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == Ordering::Equal
    }
}

impl Eq for Attempt {}

impl PartialOrd for Attempt {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}

impl Ord for Attempt {
    /// Reversed, so the heap pops the earliest attempt first.
    fn cmp(&self, o: &Self) -> Ordering {
        o.t.total_cmp(&self.t).then(o.seq.cmp(&self.seq))
    }
}

/// Statuses tenacity retries (the crawler's `DEFAULT_RETRYABLE_STATUSES`).
pub(super) const RETRYABLE: [i64; 5] = [429, 500, 502, 503, 504];

pub(super) struct HostSim {
    pub(super) name: String,
    pub(super) rng: ChaCha8Rng,
    /// One breaker per machine.
    pub(super) breakers: Vec<Breaker>,
    /// Cooldown deadlines per machine, or one for the fleet.
    pub(super) cooldown_until: Vec<f64>,
    pub(super) fleet_cooldowns: bool,
    pub(super) machines: usize,
    pub(super) max_retries: u32,
    pub(super) incidents: Vec<Incident>,
    pub(super) base_failure: f64,
    pub(super) next_call_s: f64,
    pub(super) pending: BinaryHeap<Attempt>,
    pub(super) seq: u64,
    /// How the crawler's breakers count (`SimOptions::crawler`).
    pub(super) crawler: crate::crawler::CrawlerModel,
    pub(super) exception_rows: bool,
    /// Log every recorded outcome (the sink variant's listener events).
    pub(super) log_outcomes: bool,
    pub(super) outcomes: Vec<OutcomeEvent>,
    /// The crawler's limiters per slot (machine, or one for the fleet) and role.
    pub(super) limiters: Vec<[Option<Limiter>; 3]>,
    pub(super) fleet_limiters: bool,
    pub(super) rate_events: Vec<RateEvent>,
    /// The server's quota counters per role.
    pub(super) quotas: [Option<QuotaCounter>; 3],
    /// A load that rises and falls (quota hosts): the phase of its wave.
    pub(super) wave_phase: Option<f64>,
    pub(super) idx: usize,
    pub(super) truth: HostTruth,
}

pub(super) fn policy_for(regime: Regime) -> BreakerPolicy {
    // Settings as an operator would have left them; data-samples/breakers.yaml says the same.
    match regime {
        Regime::Healthy | Regime::Chronic => BreakerPolicy::default(),
        Regime::RateLimited => BreakerPolicy {
            fail_max: 6,
            reset_timeout_s: 90.0,
            retry_after_cap_s: 600.0,
            ..BreakerPolicy::default()
        },
        Regime::Outages => BreakerPolicy {
            fail_max: 4,
            reset_timeout_s: 45.0,
            success_threshold: 1,
            ..BreakerPolicy::default()
        },
        Regime::Flapping => BreakerPolicy {
            fail_max: 3,
            reset_timeout_s: 30.0,
            ..BreakerPolicy::default()
        },
        Regime::Timeouts => BreakerPolicy {
            fail_max: 5,
            reset_timeout_s: 120.0,
            ..BreakerPolicy::default()
        },
    }
}

/// Lays out a host's incidents over `[start, end)`.
pub(super) fn incidents_for(
    regime: Regime,
    rng: &mut ChaCha8Rng,
    start: f64,
    end: f64,
) -> Vec<Incident> {
    let span = end - start;
    let mut out = Vec::new();
    let place = |rng: &mut ChaCha8Rng, count: usize, min_min: f64, max_min: f64| {
        // Spread incidents over equal slices so they never overlap.
        let slice = span / count as f64;
        (0..count)
            .filter_map(|i| {
                let len = rng.random_range(min_min..=max_min) * 60.0;
                if len >= slice * 0.8 {
                    return None;
                }
                let s = start + i as f64 * slice + rng.random_range(0.0..(slice - len));
                Some((s, s + len))
            })
            .collect::<Vec<_>>()
    };
    match regime {
        Regime::Healthy | Regime::Chronic => {}
        Regime::RateLimited => {
            let n = rng.random_range(2..=4);
            for (i, (s, e)) in place(rng, n, 10.0, 60.0).into_iter().enumerate() {
                let severe = i % 2 == 0;
                out.push(Incident {
                    start_s: s,
                    end_s: e,
                    kind: IncidentKind::RateLimit,
                    level: if severe { Level::Severe } else { Level::Mild },
                    failure_prob: if severe { 0.4 } else { 0.08 },
                    retry_after_s: Some(rng.random_range(3..=12) * 10),
                });
            }
        }
        Regime::Outages => {
            let n = rng.random_range(1..=3);
            for (i, (s, e)) in place(rng, n, 10.0, 90.0).into_iter().enumerate() {
                let severe = i % 2 == 0;
                out.push(Incident {
                    start_s: s,
                    end_s: e,
                    kind: IncidentKind::Outage,
                    level: if severe { Level::Severe } else { Level::Mild },
                    failure_prob: if severe { 0.9 } else { 0.15 },
                    retry_after_s: severe.then(|| rng.random_range(6..=18) * 10),
                });
            }
        }
        Regime::Flapping => {
            // One or two stormy hours of short outages separated by short recoveries.
            let n = rng.random_range(1..=2);
            for (s, e) in place(rng, n, 60.0, 90.0) {
                let mut t = s;
                while t < e {
                    let len = rng.random_range(1.0..5.0) * 60.0;
                    out.push(Incident {
                        start_s: t,
                        end_s: (t + len).min(e),
                        kind: IncidentKind::Flapping,
                        level: Level::Severe,
                        failure_prob: 0.7,
                        retry_after_s: None,
                    });
                    t += len + rng.random_range(5.0..15.0) * 60.0;
                }
            }
        }
        Regime::Timeouts => {
            let n = rng.random_range(1..=2);
            for (s, e) in place(rng, n, 15.0, 60.0) {
                out.push(Incident {
                    start_s: s,
                    end_s: e,
                    kind: IncidentKind::Timeouts,
                    level: Level::Severe,
                    failure_prob: 0.5,
                    retry_after_s: None,
                });
            }
        }
    }
    out
}

pub(super) const NEUTRAL: [i64; 5] = [404, 404, 403, 410, 451];

/// The roles the simulated crawler sends, in `limiters` / `quotas` order.
pub(super) const ROLES: [&str; 3] = ["metadata", "landing", "artifact"];

pub(super) fn role_idx(role: &str) -> usize {
    ROLES.iter().position(|r| *r == role).unwrap_or(0)
}

/// The load of a quota host swings between half and one and a half times its mean
/// over this period, so the night shows rates below and above the quota.
pub(super) const WAVE_PERIOD_S: f64 = 4.0 * 3600.0;

pub(super) const WAVE_PEAK: f64 = 1.5;

pub(super) fn wave(phase: f64, t: f64) -> f64 {
    1.0 + 0.5 * (std::f64::consts::TAU * t / WAVE_PERIOD_S + phase).sin()
}

/// The rate calls are drawn at, as a multiple of the mean: the wave's peak for a host
/// whose load rises and falls (its calls are then thinned), else the mean.
pub(super) fn peak(wave_phase: Option<f64>) -> f64 {
    if wave_phase.is_some() { WAVE_PEAK } else { 1.0 }
}

/// A quota host's quotas: per `window_s`, 80% of the mean requests its metadata and
/// landing roles send (artifacts come from a CDN without one).
pub(super) fn quotas_for(regime: Regime, rps: f64, window_s: f64) -> Vec<ServerQuota> {
    if !matches!(regime, Regime::Chronic | Regime::Timeouts) {
        return Vec::new();
    }
    // Half the calls are metadata and three in ten landing; 8% are cache hits.
    [("metadata", 0.5), ("landing", 0.3)]
        .into_iter()
        .map(|(role, share)| ServerQuota {
            role,
            limit: ((0.8 * rps * window_s * share * 0.92).round() as u64).max(3),
            window_s,
        })
        .collect()
}

/// The window of host `idx`'s quota: the quota hosts (two in each round of
/// `REGIMES`) take `windows` in turn.
pub(super) fn quota_window(idx: usize, regime: Regime, windows: &[f64]) -> f64 {
    let rank = 2 * (idx / REGIMES.len()) + usize::from(regime == Regime::Chronic);
    windows
        .get(rank % windows.len().max(1))
        .copied()
        .filter(|w| w.is_finite() && *w > 0.0)
        .unwrap_or(60.0)
}

impl HostSim {
    pub(super) fn new(idx: usize, opts: &SimOptions) -> Self {
        // Behaviour follows the host's index; noise and incident times follow the seed
        // and the night.
        let night = u64::from(opts.night.max(1) - 1).wrapping_mul(0xD1B5_4A32_D192_ED03);
        let mut rng = ChaCha8Rng::seed_from_u64(
            opts.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ idx as u64 ^ night,
        );
        let regime = REGIMES[idx % REGIMES.len()];
        let name = KNOWN_HOSTS
            .get(idx)
            .map_or_else(|| format!("host-{idx:03}.example"), |h| (*h).to_owned());
        let start = opts.night_start_s() as f64;
        let end = start + opts.hours * 3600.0;
        let incidents = incidents_for(regime, &mut rng, start, end);
        let base_failure = match regime {
            Regime::Chronic => 0.03,
            _ => 0.004,
        };
        let policy = match &opts.config {
            Some(cfg) => {
                // The same conversion the replay makes of what the crawler runs.
                let p = crate::replay::ReplayPolicy::from_config(
                    &crate::crawler::CrawlerModel::default().policy(cfg, &name, None),
                    None,
                );
                BreakerPolicy {
                    fail_max: p.fail_max,
                    reset_timeout_s: p.reset_timeout_s,
                    success_threshold: p.success_threshold,
                    trial_calls: p.trial_calls,
                    retry_after_cap_s: p.retry_after_cap_s,
                }
            }
            None => policy_for(regime),
        };
        let quotas = if opts.quotas {
            quotas_for(
                regime,
                opts.rps,
                quota_window(idx, regime, &opts.quota_windows),
            )
        } else {
            Vec::new()
        };
        let wave_phase = (!quotas.is_empty()).then(|| rng.random_range(0.0..std::f64::consts::TAU));
        let first = start
            + Exp::new(opts.rps * peak(wave_phase))
                .expect("rps > 0")
                .sample(&mut rng);
        let machines = opts.machines.max(1);
        let fleet_cooldowns = opts.cooldowns == Scope::Fleet;
        let fleet_limiters = opts
            .ratelimits
            .as_ref()
            .is_some_and(|rl| rl.limiter_column().is_none());
        let limiters = match &opts.ratelimits {
            None => Vec::new(),
            Some(rl) => {
                let one: [Option<Limiter>; 3] = std::array::from_fn(|i| {
                    let wait = rl.wait_for(&name, ROLES[i]);
                    rl.rates_for(&name, ROLES[i]).and_then(|rates| {
                        Limiter::new(rates, 1.0, wait.max_delay_ms, wait.count_head)
                    })
                });
                vec![one; if fleet_limiters { 1 } else { machines }]
            }
        };
        let mut quota_counters: [Option<QuotaCounter>; 3] = [None, None, None];
        for q in &quotas {
            quota_counters[role_idx(q.role)] = Some(QuotaCounter::new(q));
        }
        HostSim {
            truth: HostTruth {
                host: name.clone(),
                regime,
                policy,
                incidents: incidents.clone(),
                rows: 0,
                network_rows: 0,
                cache_hits: 0,
                failures: 0,
                attempts: 0,
                attempts_429: 0,
                blocked_calls: 0,
                raised: 0,
                opens: 0,
                half_open_successes: 0,
                half_open_failures: 0,
                quotas,
                outcome: Outcome::default(),
                bursts: BurstStats::default(),
                instances: (0..machines)
                    .map(|m| InstanceTruth::new(m, opts.run_id(m)))
                    .collect(),
            },
            name,
            rng,
            breakers: vec![Breaker::new(policy); machines],
            cooldown_until: vec![f64::NEG_INFINITY; if fleet_cooldowns { 1 } else { machines }],
            fleet_cooldowns,
            machines,
            max_retries: opts.max_retries,
            incidents,
            base_failure,
            next_call_s: first,
            pending: BinaryHeap::new(),
            seq: 0,
            crawler: opts.crawler.clone(),
            exception_rows: opts.exception_rows,
            log_outcomes: opts.variant == Variant::Sink,
            outcomes: Vec::new(),
            limiters,
            fleet_limiters,
            rate_events: Vec::new(),
            quotas: quota_counters,
            wave_phase,
            idx,
        }
    }

    pub(super) fn incident_at(&self, t: f64) -> Option<&Incident> {
        self.incidents
            .iter()
            .find(|i| i.start_s <= t && t < i.end_s)
    }

    pub(super) fn cooldown_slot(&self, machine: usize) -> usize {
        if self.fleet_cooldowns { 0 } else { machine }
    }

    /// `allow()`: the cooldown, then the machine's breaker.
    pub(super) fn admit(
        &mut self,
        machine: usize,
        t: f64,
        role: &str,
        tr: &mut Vec<Transition>,
    ) -> Option<State> {
        if t < self.cooldown_until[self.cooldown_slot(machine)] {
            return None;
        }
        let before = tr.len();
        let admitted = match self.breakers[machine].admit(t, role_idx(role), tr) {
            Admission::Blocked => None,
            Admission::Allowed(s) => Some(s),
        };
        self.tag(machine, before, tr);
        admitted
    }

    /// `on_failure` / `on_success`: the breaker counts the outcome; a 429/503 failure
    /// with Retry-After sets the cooldown (capped); a success clears it.
    pub(super) fn record(
        &mut self,
        machine: usize,
        t: f64,
        role: &str,
        failure: bool,
        retry_after_s: Option<f64>,
        tr: &mut Vec<Transition>,
    ) {
        let slot = self.cooldown_slot(machine);
        if failure {
            if let Some(ra) = retry_after_s {
                let cap = self.breakers[machine].policy.retry_after_cap_s;
                self.cooldown_until[slot] = self.cooldown_until[slot].max(t + ra.min(cap));
            }
        } else if self.crawler.success_clears_cooldown {
            self.cooldown_until[slot] = f64::NEG_INFINITY;
        }
        let before = tr.len();
        let state_before = self.breakers[machine].state();
        self.breakers[machine].record(t, role_idx(role), failure, None, tr);
        self.tag(machine, before, tr);
        self.truth.instances[machine].outcome(failure);
        if self.log_outcomes {
            let b = &self.breakers[machine];
            self.outcomes.push(OutcomeEvent {
                ts_us: (t * 1e6).round() as i64,
                host_idx: self.idx,
                machine,
                failure,
                state: if failure { state_before } else { b.state() },
                // pybreaker increments before notifying and does not reset on a trip.
                fail_counter: if failure { b.fail_counter().max(1) } else { 0 },
            });
        }
    }

    /// Counts the opens among the transitions a machine's breaker just made.
    pub(super) fn tag(&mut self, machine: usize, before: usize, tr: &[Transition]) {
        let opens = tr[before..].iter().filter(|x| x.to == State::Open).count() as u64;
        let outside = tr[before..]
            .iter()
            .filter(|x| x.to == State::Open && self.incident_at(x.at_s).is_none())
            .count() as u64;
        self.truth.opens += opens;
        self.truth.outcome.opens_outside_incidents += outside;
        self.truth.instances[machine].opens += opens;
    }

    /// A call denied by a breaker or a cooldown.
    pub(super) fn blocked(&mut self, t: f64) {
        self.truth.blocked_calls += 1;
        if self.incident_at(t).is_none() {
            self.truth.outcome.blocked_outside_incidents += 1;
        }
    }

    /// The limiter of an attempt's role in its process (or the fleet's).
    pub(super) fn limiter(
        &mut self,
        machine: usize,
        role: &str,
        method: &str,
    ) -> Option<&mut Limiter> {
        let slot = if self.fleet_limiters { 0 } else { machine };
        self.limiters
            .get_mut(slot)
            .and_then(|l| l[role_idx(role)].as_mut())
            .filter(|l| method != "HEAD" || l.count_head)
    }

    /// Simulates requests and their attempts up to `until_s`, appending rows and
    /// transitions.
    pub(super) fn run_until(&mut self, idx: usize, until_s: f64, rps: f64, out: &mut Chunk) {
        let Chunk {
            events,
            transitions,
            outcomes,
            rate_events,
        } = out;
        let gap = Exp::new(rps * peak(self.wave_phase)).expect("rps > 0");
        let mut tr: Vec<(usize, Transition)> = Vec::new();
        loop {
            let retry_next = self.pending.peek().map(|a| a.t);
            let new_next = self.next_call_s;
            let attempt = match retry_next {
                Some(rt) if rt <= new_next && rt < until_s => self.pending.pop(),
                _ if new_next < until_s => {
                    // Quantise to microseconds so both variants store the time exactly.
                    let t = (new_next * 1e6).round() / 1e6;
                    self.next_call_s += gap.sample(&mut self.rng);
                    if let Some(phase) = self.wave_phase {
                        // Thinning: a call at the peak rate is made with the wave's share.
                        if !self.rng.random_bool(wave(phase, t) / WAVE_PEAK) {
                            continue;
                        }
                    }
                    let limited = !self.limiters.is_empty();
                    let r = &mut self.rng;
                    let role = match r.random_range(0..10) {
                        0..=4 => "metadata",
                        5..=7 => "landing",
                        _ => "artifact",
                    };
                    let method = if role == "landing" && r.random_bool(0.1) {
                        "HEAD"
                    } else {
                        "GET"
                    };
                    let url_hash = r.random::<u64>();
                    let machine = r.random_range(0..self.machines);
                    let drawn = if r.random_bool(0.2) {
                        r.random_range(1..200)
                    } else {
                        0
                    };
                    // Under --ratelimits the wait is the limiter's (none for a call
                    // that skips it); the draw is kept so the noise stays the same.
                    let rate_delay_ms = if limited { 0 } else { drawn };
                    if r.random_bool(0.08) {
                        self.cache_hit(idx, t, machine, role, method, url_hash, events, &mut tr);
                        continue;
                    }
                    self.seq += 1;
                    Some(Attempt {
                        t,
                        seq: self.seq,
                        machine,
                        made: 0,
                        role,
                        method,
                        url_hash,
                        rate_delay_ms,
                        sent: None,
                        started: t,
                        answer: None,
                    })
                }
                _ => None,
            };
            let Some(a) = attempt else { break };
            self.attempt(idx, a, events, &mut tr);
        }
        for (machine, x) in tr.drain(..) {
            transitions.push(HostTransition {
                host_idx: idx,
                machine,
                transition: x,
                reset_timeout_s: self.breakers[machine].policy.reset_timeout_s,
            });
        }
        outcomes.append(&mut self.outcomes);
        rate_events.append(&mut self.rate_events);
    }

    /// A response from the HTTP cache: `allow()` runs before the client finds it in
    /// the cache, and the update after the retry loop records one success.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn cache_hit(
        &mut self,
        idx: usize,
        t: f64,
        machine: usize,
        role: &'static str,
        method: &'static str,
        url_hash: u64,
        events: &mut Vec<Event>,
        tr: &mut Vec<(usize, Transition)>,
    ) {
        let mut local = Vec::new();
        // A crawler that does not count cache hits never asks its breaker either.
        let counted = self.crawler.cache_hit_is_success;
        let state = if counted {
            let Some(state) = self.admit(machine, t, role, &mut local) else {
                self.blocked(t);
                tr.extend(local.into_iter().map(|x| (machine, x)));
                return;
            };
            self.record(machine, t, role, false, None, &mut local);
            state
        } else {
            self.breakers[machine].state()
        };
        self.truth.outcome.successes += 1;
        tr.extend(local.into_iter().map(|x| (machine, x)));
        let elapsed_ms = self.rng.random_range(0..3);
        self.truth.cache_hits += 1;
        self.truth.rows += 1;
        events.push(Event {
            ts_us: (t * 1e6).round() as i64,
            host_idx: idx,
            machine,
            retry_count: 0,
            role,
            method,
            status: Some(200),
            url_hash,
            from_cache: true,
            retry_after_s: None,
            rate_delay_ms: 0,
            breaker_state: Some(state),
            breaker_recorded: if counted { "success" } else { "none" },
            elapsed_ms,
            error: None,
        });
    }

    /// One attempt of a request: admitted or denied and sent (its answer comes back
    /// after its latency), or an answer that came back and is counted; then a retry is
    /// scheduled after tenacity's wait, or the request ends with its row.
    pub(super) fn attempt(
        &mut self,
        idx: usize,
        a: Attempt,
        events: &mut Vec<Event>,
        tr: &mut Vec<(usize, Transition)>,
    ) {
        match a.answer {
            Some(answer) => self.answered(idx, a, answer, events, tr),
            None => self.send(a, tr),
        }
    }

    /// Asks the breaker and the limiter, then sends the attempt: the server answers it
    /// at once, and the answer is counted when the response ends.
    fn send(&mut self, mut a: Attempt, tr: &mut Vec<(usize, Transition)>) {
        let (t, m) = (a.t, a.machine);
        let mut local = Vec::new();
        let asks = a.made == 0 || self.crawler.count_retries;
        let state = match a.sent {
            Some(state) => state,
            None => {
                // A crawler whose retries are not counted asks its breaker once per
                // request.
                let admitted = if asks {
                    self.admit(m, t, a.role, &mut local)
                } else {
                    Some(self.breakers[m].state())
                };
                let Some(state) = admitted else {
                    tr.extend(local.into_iter().map(|x| (m, x)));
                    // Denied: `BreakerOpenError` is not retried and leaves no row.
                    self.blocked(t);
                    if a.made > 0 {
                        self.truth.raised += 1;
                    }
                    return;
                };
                // The transport's limiter, after the breaker let the attempt through.
                let idx_host = self.idx;
                if let Some(limiter) = self.limiter(m, a.role, a.method) {
                    let max_delay_ms = (limiter.max_delay_s() * 1000.0).round() as i64;
                    let got = limiter.acquire(t);
                    let (refused, wait) = match got {
                        Acquired::After(w) => (false, w),
                        Acquired::Refused(w) => (true, w),
                    };
                    self.rate_events.push(RateEvent {
                        ts_us: ((t + wait) * 1e6).round() as i64,
                        host_idx: idx_host,
                        machine: m,
                        role: a.role,
                        refused,
                        delay_ms: (wait * 1000.0).round() as i64,
                        max_delay_ms,
                    });
                    tr.extend(local.drain(..).map(|x| (m, x)));
                    if refused {
                        // `RateLimitExceeded`: not retried, not counted, no row.
                        self.truth.outcome.limiter_refusals += 1;
                        self.truth.raised += 1;
                        return;
                    }
                    if wait > 0.0 {
                        // Sent when the slot frees, in time order with the others.
                        self.seq += 1;
                        self.pending.push(Attempt {
                            t: ((t + wait) * 1e6).round() / 1e6,
                            seq: self.seq,
                            rate_delay_ms: (wait * 1000.0).round() as i64,
                            sent: Some(state),
                            ..a
                        });
                        return;
                    }
                    a.rate_delay_ms = 0;
                }
                state
            }
        };
        tr.extend(local.into_iter().map(|x| (m, x)));
        let incident = self.incident_at(t).cloned();
        let p_fail = incident
            .as_ref()
            .map_or(self.base_failure, |i| i.failure_prob);
        // The server's quota comes before anything else it answers.
        let over_quota = match self.quotas[role_idx(a.role)].as_mut() {
            Some(q) => q.request(t).err(),
            None => None,
        };
        let r = &mut self.rng;
        let fails = r.random_bool(p_fail);
        let mut status = Some(200);
        let mut retry_after_s = None;
        let mut error = None;
        let mut elapsed_ms = r.random_range(40..900);
        if let Some(ra) = over_quota {
            status = Some(429);
            retry_after_s = Some(ra);
            elapsed_ms = r.random_range(20..120);
        } else if fails {
            match incident.as_ref().map(|i| i.kind) {
                Some(IncidentKind::RateLimit) => {
                    status = Some(429);
                    retry_after_s = incident.as_ref().and_then(|i| i.retry_after_s);
                }
                Some(IncidentKind::Timeouts) => {
                    status = None;
                    error = Some("ReadTimeout");
                    // The crawler's read timeout (crate::crawler::READ_TIMEOUT_S); a
                    // literal keeps the draws' integer type.
                    elapsed_ms = 30_000;
                }
                Some(IncidentKind::Outage | IncidentKind::Flapping) => {
                    status = Some([503, 503, 500, 502, 504][r.random_range(0..5)]);
                    if status == Some(503) {
                        retry_after_s = incident.as_ref().and_then(|i| i.retry_after_s);
                    }
                }
                None => match r.random_range(0..10) {
                    0..=3 => status = Some(500),
                    4..=5 => status = Some(502),
                    6 => status = Some(504),
                    7 => status = Some(408),
                    _ => {
                        status = None;
                        error = Some(if r.random_bool(0.5) {
                            "ConnectTimeout"
                        } else {
                            "ReadTimeout"
                        });
                        elapsed_ms = 10_000;
                    }
                },
            }
        } else if r.random_bool(0.03) {
            status = Some(NEUTRAL[r.random_range(0..NEUTRAL.len())]);
        } else if r.random_bool(0.05) {
            status = Some(304);
        }
        self.truth.attempts += 1;
        self.truth.attempts_429 += u64::from(status == Some(429));
        let failure = status.is_some_and(|s| DEFAULT_FAILURE_STATUSES.contains(&s));
        // A quota's 429 is the crawler's own doing, not the incident's.
        let failed = (failure || status.is_none()) && over_quota.is_none();
        if let Some(i) = incident.as_ref().filter(|_| failed) {
            let o = &mut self.truth.outcome;
            o.failed_attempts_in_incidents += 1;
            o.timeouts_in_incidents += u64::from(status.is_none());
            o.failed_in_severe_incidents += u64::from(failure && i.level == Level::Severe);
        }
        self.seq += 1;
        self.pending.push(Attempt {
            t: ((t + elapsed_ms as f64 / 1000.0) * 1e6).round() / 1e6,
            seq: self.seq,
            answer: Some(Answer {
                state,
                status,
                retry_after_s,
                error,
            }),
            ..a
        });
    }

    /// An attempt's response ended at `a.t`: the breaker counts it, and the request
    /// retries after tenacity's wait or ends with its row.
    fn answered(
        &mut self,
        idx: usize,
        a: Attempt,
        answer: Answer,
        events: &mut Vec<Event>,
        tr: &mut Vec<(usize, Transition)>,
    ) {
        let (t, m) = (a.t, a.machine);
        let Answer {
            state,
            status,
            retry_after_s,
            error,
        } = answer;
        let mut local = Vec::new();
        let made = a.made + 1;
        let failure = status.is_some_and(|s| DEFAULT_FAILURE_STATUSES.contains(&s));
        let retryable = status.is_none_or(|s| RETRYABLE.contains(&s));
        let ra = retry_after_s.map(|s| s as f64);
        // An exception is a breaker failure only when the crawler passes exception
        // types; a status is counted either way. Without counted retries, only the
        // request's last attempt is.
        let counts = status.is_some() || self.crawler.exceptions_are_failures;
        let breaker_failure = failure || status.is_none();
        let will_retry = retryable && made <= self.max_retries;
        if counts && (self.crawler.count_retries || !will_retry) {
            self.record(m, t, a.role, breaker_failure, ra, &mut local);
            if state == State::HalfOpen {
                if breaker_failure {
                    self.truth.half_open_failures += 1;
                } else {
                    self.truth.half_open_successes += 1;
                }
            }
        }
        if will_retry {
            // tenacity: Retry-After for 429/503 when sent, else a random exponential
            // wait (multiplier 0.75, at most 60 s).
            let wait = match ra.filter(|_| matches!(status, Some(429 | 503))) {
                Some(ra) => ra,
                None => self
                    .rng
                    .random_range(0.0..crate::crawler::backoff_cap_s(made)),
            };
            self.seq += 1;
            self.pending.push(Attempt {
                t: ((t + wait) * 1e6).round() / 1e6,
                seq: self.seq,
                made,
                sent: None,
                answer: None,
                ..a
            });
            tr.extend(local.into_iter().map(|x| (m, x)));
            return;
        }
        if status.is_none() && !self.exception_rows {
            // Out of retries on an exception: the request raised, no row.
            self.truth.raised += 1;
            tr.extend(local.into_iter().map(|x| (m, x)));
            return;
        }
        // The final outcome, recorded once more after the retry loop.
        if counts {
            for _ in 1..self.crawler.final_outcome_counted.max(1) {
                self.record(m, t, a.role, breaker_failure, ra, &mut local);
            }
        }
        tr.extend(local.into_iter().map(|x| (m, x)));
        self.truth.rows += 1;
        self.truth.network_rows += 1;
        self.truth.failures += u64::from(failure);
        self.truth.outcome.successes += u64::from(status.is_some_and(|s| (200..400).contains(&s)));
        events.push(Event {
            // The row is written when the request ends, its elapsed time the whole
            // request's: every attempt, wait and limiter delay.
            ts_us: (t * 1e6).round() as i64,
            host_idx: idx,
            machine: m,
            retry_count: i64::from(made - 1),
            role: a.role,
            method: a.method,
            status,
            url_hash: a.url_hash,
            from_cache: false,
            retry_after_s,
            rate_delay_ms: a.rate_delay_ms,
            breaker_state: Some(state),
            breaker_recorded: match (counts, breaker_failure) {
                (false, _) => "none",
                (true, true) => "failure",
                (true, false) => "success",
            },
            elapsed_ms: ((t - a.started) * 1000.0).round() as i64,
            error,
        });
    }

    pub(super) fn finish(mut self) -> HostTruth {
        let mut all: Vec<u64> = self
            .truth
            .instances
            .iter_mut()
            .flat_map(InstanceTruth::finish)
            .collect();
        all.sort_unstable();
        self.truth.bursts = BurstStats::from_sorted(&all);
        self.truth
    }
}
