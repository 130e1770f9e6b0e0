//! Synthetic crawler telemetry with ground truth, deterministic from a seed.
//!
//! Each host follows a regime (healthy noise, chronic low-level errors, rate limiting
//! with Retry-After, 5xx outages, flapping, timeouts) laid out as incident windows; a
//! Poisson stream of calls goes through a pybreaker-like [`breaker::Breaker`] per host, so
//! an open breaker leaves gaps exactly as the real crawler does. Writes the telemetry
//! SQLite in either real variant and `ground_truth.json` (incidents, policy, exact burst
//! statistics) that later stages are scored against.

pub mod breaker;
mod sqlite;

use std::path::PathBuf;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Exp};
use serde::Serialize;

use crate::config::DEFAULT_FAILURE_STATUSES;
use crate::metrics::stats::BurstStats;
use breaker::{Admission, Breaker, BreakerPolicy, State, Transition};

/// Which real telemetry variant to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Variant {
    /// The crawler's declared schema: `ts REAL`, `breaker_state`, `breaker_transitions`.
    Schema,
    /// Its SQLite sink: ISO `timestamp TEXT`, `breaker_host_state`, transitions as
    /// `breaker_events` JSON payloads with pybreaker reprs, some columns missing.
    Sink,
}

#[derive(Debug, Clone)]
pub struct SimOptions {
    pub out: PathBuf,
    pub hours: f64,
    pub hosts: usize,
    /// Mean calls per second per host.
    pub rps: f64,
    pub seed: u64,
    pub variant: Variant,
    /// Start of the simulated period, epoch seconds (UTC).
    pub start_s: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum IncidentKind {
    RateLimit,
    Outage,
    Timeouts,
    Flapping,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Severe,
    Mild,
}

/// One unhealthy window of a host, in ground truth.
#[derive(Debug, Clone, Serialize)]
pub struct Incident {
    pub start_s: f64,
    pub end_s: f64,
    pub kind: IncidentKind,
    pub level: Level,
    /// Probability that a network call fails during the incident.
    pub failure_prob: f64,
    /// Retry-After the server sends on 429/503 during the incident.
    pub retry_after_s: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Regime {
    Healthy,
    Chronic,
    RateLimited,
    Outages,
    Flapping,
    Timeouts,
}

const REGIMES: [Regime; 6] = [
    Regime::Healthy,
    Regime::RateLimited,
    Regime::Outages,
    Regime::Flapping,
    Regime::Timeouts,
    Regime::Chronic,
];

const KNOWN_HOSTS: [&str; 12] = [
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

/// Ground truth for one host.
#[derive(Debug, Clone, Serialize)]
pub struct HostTruth {
    pub host: String,
    pub regime: Regime,
    pub policy: BreakerPolicy,
    pub incidents: Vec<Incident>,
    pub rows: u64,
    pub network_rows: u64,
    pub cache_hits: u64,
    pub failures: u64,
    pub blocked_calls: u64,
    pub opens: u64,
    pub half_open_successes: u64,
    pub half_open_failures: u64,
    /// Bursts over network rows in (ts, id) order; a burst is a maximal run of
    /// consecutive breaker failures.
    pub bursts: BurstStats,
    #[serde(skip)]
    burst_lengths: Vec<u64>,
    #[serde(skip)]
    current_run: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct GroundTruth {
    pub seed: u64,
    pub variant: Variant,
    pub start_s: i64,
    pub end_s: i64,
    pub rps_per_host: f64,
    pub failure_statuses: [i64; 6],
    pub quantile_method: &'static str,
    pub hosts: Vec<HostTruth>,
}

/// One simulated telemetry row.
#[derive(Debug, Clone)]
pub struct Event {
    pub ts_us: i64,
    pub host_idx: usize,
    pub role: &'static str,
    pub method: &'static str,
    pub status: Option<i64>,
    pub url_hash: u64,
    pub from_cache: bool,
    pub retry_after_s: Option<i64>,
    pub rate_delay_ms: i64,
    pub breaker_state: Option<State>,
    pub breaker_recorded: &'static str,
    pub elapsed_ms: i64,
    pub error: Option<&'static str>,
}

/// A transition tagged with its host.
#[derive(Debug, Clone)]
pub struct HostTransition {
    pub host_idx: usize,
    pub transition: Transition,
    pub reset_timeout_s: f64,
}

struct HostSim {
    name: String,
    rng: ChaCha8Rng,
    breaker: Breaker,
    incidents: Vec<Incident>,
    base_failure: f64,
    next_call_s: f64,
    truth: HostTruth,
}

fn policy_for(regime: Regime) -> BreakerPolicy {
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
fn incidents_for(regime: Regime, rng: &mut ChaCha8Rng, start: f64, end: f64) -> Vec<Incident> {
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

const NEUTRAL: [i64; 5] = [404, 404, 403, 410, 451];

impl HostSim {
    fn new(idx: usize, opts: &SimOptions) -> Self {
        let mut rng =
            ChaCha8Rng::seed_from_u64(opts.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ idx as u64);
        let regime = REGIMES[idx % REGIMES.len()];
        let name = KNOWN_HOSTS
            .get(idx)
            .map_or_else(|| format!("host-{idx:03}.example"), |h| (*h).to_owned());
        let start = opts.start_s as f64;
        let end = start + opts.hours * 3600.0;
        let incidents = incidents_for(regime, &mut rng, start, end);
        let base_failure = match regime {
            Regime::Chronic => 0.03,
            _ => 0.004,
        };
        let policy = policy_for(regime);
        let first = start + Exp::new(opts.rps).expect("rps > 0").sample(&mut rng);
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
                blocked_calls: 0,
                opens: 0,
                half_open_successes: 0,
                half_open_failures: 0,
                bursts: BurstStats::default(),
                burst_lengths: Vec::new(),
                current_run: 0,
            },
            name,
            rng,
            breaker: Breaker::new(policy),
            incidents,
            base_failure,
            next_call_s: first,
        }
    }

    fn incident_at(&self, t: f64) -> Option<&Incident> {
        self.incidents
            .iter()
            .find(|i| i.start_s <= t && t < i.end_s)
    }

    /// Simulates calls up to `until_s`, appending rows and transitions.
    fn run_until(
        &mut self,
        idx: usize,
        until_s: f64,
        rps: f64,
        events: &mut Vec<Event>,
        transitions: &mut Vec<HostTransition>,
    ) {
        let gap = Exp::new(rps).expect("rps > 0");
        let mut tr = Vec::new();
        while self.next_call_s < until_s {
            // Quantise to microseconds so both variants store the time exactly.
            let t = (self.next_call_s * 1e6).round() / 1e6;
            self.next_call_s += gap.sample(&mut self.rng);
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
            let mut ev = Event {
                ts_us: (t * 1e6).round() as i64,
                host_idx: idx,
                role,
                method,
                status: Some(200),
                url_hash,
                from_cache: false,
                retry_after_s: None,
                rate_delay_ms: 0,
                breaker_state: None,
                breaker_recorded: "none",
                elapsed_ms: 0,
                error: None,
            };
            if r.random_bool(0.08) {
                // Served from the HTTP cache: no network, no breaker.
                ev.from_cache = true;
                ev.elapsed_ms = r.random_range(0..3);
                self.truth.cache_hits += 1;
                self.truth.rows += 1;
                events.push(ev);
                continue;
            }
            let state = match self.breaker.admit(t, &mut tr) {
                Admission::Blocked => {
                    self.truth.blocked_calls += 1;
                    continue;
                }
                Admission::Allowed(s) => s,
            };
            let incident = self.incident_at(t).cloned();
            let p_fail = incident
                .as_ref()
                .map_or(self.base_failure, |i| i.failure_prob);
            let r = &mut self.rng;
            let fails = r.random_bool(p_fail);
            ev.rate_delay_ms = if r.random_bool(0.2) {
                r.random_range(1..200)
            } else {
                0
            };
            ev.elapsed_ms = r.random_range(40..900);
            if fails {
                match incident.as_ref().map(|i| i.kind) {
                    Some(IncidentKind::RateLimit) => {
                        ev.status = Some(429);
                        ev.retry_after_s = incident.as_ref().and_then(|i| i.retry_after_s);
                    }
                    Some(IncidentKind::Timeouts) => {
                        ev.status = None;
                        ev.error = Some("ReadTimeout");
                        ev.elapsed_ms = 30_000;
                    }
                    Some(IncidentKind::Outage | IncidentKind::Flapping) => {
                        ev.status = Some([503, 503, 500, 502, 504][r.random_range(0..5)]);
                        if ev.status == Some(503) {
                            ev.retry_after_s = incident.as_ref().and_then(|i| i.retry_after_s);
                        }
                    }
                    None => match r.random_range(0..10) {
                        0..=3 => ev.status = Some(500),
                        4..=5 => ev.status = Some(502),
                        6 => ev.status = Some(504),
                        7 => ev.status = Some(408),
                        _ => {
                            ev.status = None;
                            ev.error = Some(if r.random_bool(0.5) {
                                "ConnectTimeout"
                            } else {
                                "ReadTimeout"
                            });
                            ev.elapsed_ms = 10_000;
                        }
                    },
                }
            } else if r.random_bool(0.03) {
                ev.status = Some(NEUTRAL[r.random_range(0..NEUTRAL.len())]);
            } else if r.random_bool(0.05) {
                ev.status = Some(304);
            }
            ev.breaker_state = Some(state);
            ev.breaker_recorded = if fails { "failure" } else { "success" };
            let before = tr.len();
            self.breaker
                .record(t, fails, ev.retry_after_s.map(|s| s as f64), &mut tr);
            if state == State::HalfOpen {
                if fails {
                    self.truth.half_open_failures += 1;
                } else {
                    self.truth.half_open_successes += 1;
                }
            }
            self.truth.opens += tr[before..].iter().filter(|x| x.to == State::Open).count() as u64;
            self.truth.rows += 1;
            self.truth.network_rows += 1;
            if fails {
                self.truth.failures += 1;
                self.truth.current_run += 1;
            } else if self.truth.current_run > 0 {
                self.truth.burst_lengths.push(self.truth.current_run);
                self.truth.current_run = 0;
            }
            events.push(ev);
        }
        for x in tr.drain(..) {
            transitions.push(HostTransition {
                host_idx: idx,
                transition: x,
                reset_timeout_s: self.breaker.policy.reset_timeout_s,
            });
        }
    }

    fn finish(mut self) -> HostTruth {
        if self.truth.current_run > 0 {
            self.truth.burst_lengths.push(self.truth.current_run);
        }
        let mut lengths = std::mem::take(&mut self.truth.burst_lengths);
        lengths.sort_unstable();
        self.truth.bursts = BurstStats::from_sorted(&lengths);
        self.truth
    }
}

/// Summary of a simulation run.
#[derive(Debug, Clone, Serialize)]
pub struct SimSummary {
    pub telemetry: PathBuf,
    pub ground_truth: PathBuf,
    pub rows: u64,
    pub transitions: u64,
    pub hosts: usize,
}

/// Writes `DIR/telemetry.sqlite` and `DIR/ground_truth.json`.
pub fn simulate(opts: &SimOptions) -> anyhow::Result<SimSummary> {
    anyhow::ensure!(opts.hosts > 0, "--hosts must be at least 1");
    anyhow::ensure!(
        opts.rps > 0.0 && opts.rps.is_finite(),
        "--rps must be positive"
    );
    anyhow::ensure!(
        opts.hours > 0.0 && opts.hours.is_finite(),
        "--hours must be positive"
    );
    std::fs::create_dir_all(&opts.out)?;
    let db_path = opts.out.join("telemetry.sqlite");
    let mut sims: Vec<HostSim> = (0..opts.hosts).map(|i| HostSim::new(i, opts)).collect();
    let names: Vec<String> = sims.iter().map(|s| s.name.clone()).collect();
    let mut writer = sqlite::Writer::create(&db_path, opts.variant, opts.seed, &names)?;

    let start = opts.start_s as f64;
    let end = start + opts.hours * 3600.0;
    // Simulate in ten-minute chunks so memory stays small at any scale.
    let chunk_s = 600.0;
    let mut t = start;
    let mut rows = 0u64;
    let mut n_transitions = 0u64;
    while t < end {
        let until = (t + chunk_s).min(end);
        let mut events = Vec::new();
        let mut transitions = Vec::new();
        for (idx, sim) in sims.iter_mut().enumerate() {
            sim.run_until(idx, until, opts.rps, &mut events, &mut transitions);
        }
        events.sort_by_key(|e| (e.ts_us, e.host_idx));
        transitions.sort_by(|a, b| {
            a.transition
                .at_s
                .total_cmp(&b.transition.at_s)
                .then(a.host_idx.cmp(&b.host_idx))
        });
        writer.write_chunk(&events, &transitions)?;
        rows += events.len() as u64;
        n_transitions += transitions.len() as u64;
        t = until;
    }
    writer.finish()?;

    let truth = GroundTruth {
        seed: opts.seed,
        variant: opts.variant,
        start_s: opts.start_s,
        end_s: end.round() as i64,
        rps_per_host: opts.rps,
        failure_statuses: DEFAULT_FAILURE_STATUSES,
        quantile_method: "nearest-rank: the value at rank ceil(q * n) of the sorted burst lengths",
        hosts: sims.into_iter().map(HostSim::finish).collect(),
    };
    let truth_path = opts.out.join("ground_truth.json");
    let mut text = serde_json::to_string_pretty(&truth)?;
    text.push('\n');
    crate::telemetry::manifest::write_atomic(&truth_path, text.as_bytes())?;
    Ok(SimSummary {
        telemetry: db_path,
        ground_truth: truth_path,
        rows,
        transitions: n_transitions,
        hosts: names.len(),
    })
}

/// Default start of a simulation: 2025-11-25T00:00:00Z.
pub const DEFAULT_START_S: i64 = 1_764_028_800;
