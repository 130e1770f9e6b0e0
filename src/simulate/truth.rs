//! The simulator's ground truth (`ground_truth.json`): each host's regime, incidents and
//! policy, each breaker instance's opens and burst statistics, and the rows the
//! telemetry files are written from.

use serde::Serialize;

use crate::crawler::Scope;
use crate::metrics::stats::BurstStats;

use super::breaker::{BreakerPolicy, State, Transition};
use super::limits::ServerQuota;
use super::options::Variant;

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

/// Ground truth for one breaker instance: one host's breaker on one machine.
#[derive(Debug, Clone, Serialize)]
pub struct InstanceTruth {
    pub machine: usize,
    pub run_id: String,
    pub opens: u64,
    /// Failures this breaker recorded (retried attempts and repeated final outcomes
    /// included).
    pub failures_counted: u64,
    /// Maximal runs of consecutive failures this breaker recorded.
    pub bursts: BurstStats,
    #[serde(skip)]
    burst_lengths: Vec<u64>,
    #[serde(skip)]
    current_run: u64,
}

impl InstanceTruth {
    pub(super) fn new(machine: usize, run_id: String) -> Self {
        InstanceTruth {
            machine,
            run_id,
            opens: 0,
            failures_counted: 0,
            bursts: BurstStats::default(),
            burst_lengths: Vec::new(),
            current_run: 0,
        }
    }

    pub(super) fn outcome(&mut self, failure: bool) {
        if failure {
            self.failures_counted += 1;
            self.current_run += 1;
        } else if self.current_run > 0 {
            self.burst_lengths.push(self.current_run);
            self.current_run = 0;
        }
    }

    pub(super) fn finish(&mut self) -> Vec<u64> {
        if self.current_run > 0 {
            self.burst_lengths.push(self.current_run);
            self.current_run = 0;
        }
        let mut lengths = std::mem::take(&mut self.burst_lengths);
        lengths.sort_unstable();
        self.bursts = BurstStats::from_sorted(&lengths);
        lengths
    }
}

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
    /// Rows whose final outcome was a breaker failure.
    pub failures: u64,
    /// Attempts sent (retries included), and those answered 429.
    pub attempts: u64,
    pub attempts_429: u64,
    /// Requests denied by a breaker or a cooldown (no row).
    pub blocked_calls: u64,
    /// Requests that raised after being admitted (denied on a retry, or out of retries
    /// on a timeout): no row.
    pub raised: u64,
    pub opens: u64,
    pub half_open_successes: u64,
    pub half_open_failures: u64,
    /// The server's quotas (none for most hosts).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub quotas: Vec<ServerQuota>,
    /// The night's outcome, as the operator counts it.
    pub outcome: Outcome,
    /// Bursts of all the host's breakers together (each counted by its own breaker).
    pub bursts: BurstStats,
    /// Per breaker instance, in machine order.
    pub instances: Vec<InstanceTruth>,
}

/// What a night cost and achieved, for the closed-loop benchmark: an incident is a
/// window of ground truth, so a quota's throttling, which is the crawler's own doing,
/// is outside every incident.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Outcome {
    /// Breaker opens whose time is in no incident.
    pub opens_outside_incidents: u64,
    /// Attempts sent during an incident that failed (a failure status or a timeout):
    /// the failures the breakers let through.
    pub failed_attempts_in_incidents: u64,
    /// Of those, the timeouts: the crawler's breakers never count one (no exception
    /// types are passed), so no breaker setting keeps them out.
    pub timeouts_in_incidents: u64,
    /// Of those, the failure statuses in severe incidents (the outages and floods a
    /// breaker is for; a mild incident's calls mostly succeed).
    pub failed_in_severe_incidents: u64,
    /// Calls a breaker or a cooldown denied outside every incident: lost healthy work.
    pub blocked_outside_incidents: u64,
    /// Attempts the crawler's limiter refused after `max_delay_ms` (the request
    /// raised; no row).
    pub limiter_refusals: u64,
    /// Requests whose final response succeeded (2xx or 3xx, cache hits included).
    pub successes: u64,
}

pub(super) fn is_first_night(n: &u32) -> bool {
    *n <= 1
}

#[derive(Debug, Clone, Serialize)]
pub struct GroundTruth {
    pub seed: u64,
    pub variant: Variant,
    pub machines: usize,
    pub cooldowns: Scope,
    pub max_retries: u32,
    /// Night of a series (`--night`); omitted for the first.
    #[serde(skip_serializing_if = "is_first_night")]
    pub night: u32,
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
    pub machine: usize,
    /// Attempts before the final one.
    pub retry_count: i64,
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

/// One outcome a breaker recorded, as the crawler's listener logs it
/// (`breaker_failure` / `breaker_success` in `breaker_events`; sink variant only).
#[derive(Debug, Clone)]
pub struct OutcomeEvent {
    pub ts_us: i64,
    pub host_idx: usize,
    pub machine: usize,
    pub failure: bool,
    /// The state the listener saw: before a trip on failure, after a close on success.
    pub state: State,
    pub fail_counter: u32,
}

/// One `rate_events` row: a limiter's acquire (with its wait) or refusal.
#[derive(Debug, Clone)]
pub struct RateEvent {
    pub ts_us: i64,
    pub host_idx: usize,
    pub machine: usize,
    pub role: &'static str,
    pub refused: bool,
    pub delay_ms: i64,
    pub max_delay_ms: i64,
}

/// A transition tagged with its host and machine.
#[derive(Debug, Clone)]
pub struct HostTransition {
    pub host_idx: usize,
    pub machine: usize,
    pub transition: Transition,
    pub reset_timeout_s: f64,
}
