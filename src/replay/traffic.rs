//! The replay's input: each host's requests per breaker instance, the recorded
//! transitions and the incidents, shaped from lazy frames of the dataset (the pipeline
//! opens the scans) into [`HostTraffic`], with the recorded breaker's gaps filled.

use std::collections::{BTreeMap, HashMap, HashSet};

use polars::prelude::*;
use serde::Serialize;

use crate::breaker_state::BreakerState;
use crate::config::BreakerConfig;
use crate::crawler::{CONNECT_TIMEOUT_S, CrawlerModel, READ_TIMEOUT_S};
use crate::metrics::columns::{floats, micros, strings};

use super::calibrate::{CooldownSign, Field, Fit, RepeatSign, Said, Signs};
use super::{
    Call, Figures, Gap, Incident, Kind, Outcome, ReplayModel, ReplayPolicy, Span, fill_gaps,
    merge_gaps, merge_spans, replay,
};

/// What the recorded breakers did on a host (from its transitions).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Recorded {
    pub opens: u64,
    pub half_open_closed: u64,
    pub half_open_reopened: u64,
    /// Opens per breaker instance, in the host's instance order.
    pub instance_opens: Vec<u64>,
}

/// How long the recorded breakers stayed open before they turned half-open: a breaker
/// turns half-open at the first call after `reset_timeout_s` (pybreaker's `before_call`),
/// so every spell is at least the reset the crawler ran, and on a busy host barely more.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OpenSpells {
    /// Opens followed by their instance's turn to half-open.
    pub count: u64,
    pub median_s: f64,
}

/// The recorded open spells of a host's `transitions` (an open, then its instance's
/// next transition, from open to half-open); None when there are none. A breaker shared
/// by the fleet is one instance: an open another process logs restarts the spell, as
/// it restarts the shared breaker's timer.
pub fn open_spells(
    transitions: &[(u32, f64, Option<BreakerState>, Option<BreakerState>)],
) -> Option<OpenSpells> {
    let spells: Vec<f64> = recorded_opens(transitions)
        .into_iter()
        .filter_map(|o| match o.next {
            // From open (or from a state the record does not name) to half-open.
            Some((t, Some(BreakerState::Open) | None, Some(BreakerState::HalfOpen)))
                if t >= o.at =>
            {
                Some(t - o.at)
            }
            _ => None,
        })
        .collect();
    let count = spells.len() as u64;
    median(spells).map(|median_s| OpenSpells { count, median_s })
}

/// A recorded open of one instance, and that instance's next transition (its time, old
/// and new state), if one came.
struct RecordedOpen {
    instance: u32,
    at: f64,
    next: Option<(f64, Option<BreakerState>, Option<BreakerState>)>,
}

/// Each recorded open of `transitions` (in time order per instance) with its instance's
/// next transition: another open restarts it.
fn recorded_opens(
    transitions: &[(u32, f64, Option<BreakerState>, Option<BreakerState>)],
) -> Vec<RecordedOpen> {
    let mut opened: HashMap<u32, f64> = HashMap::new();
    let mut out = Vec::new();
    for &(instance, t, old, new) in transitions {
        if let Some(at) = opened.remove(&instance) {
            out.push(RecordedOpen {
                instance,
                at,
                next: Some((t, old, new)),
            });
        }
        if new == Some(BreakerState::Open) {
            opened.insert(instance, t);
        }
    }
    out.extend(opened.into_iter().map(|(instance, at)| RecordedOpen {
        instance,
        at,
        next: None,
    }));
    out
}

/// One host's traffic, ready to replay.
#[derive(Debug, Clone)]
pub struct HostTraffic {
    pub host: String,
    /// The breaker instances (`source` and `run_id` joined by U+001F; one empty name for a
    /// fleet-wide breaker), sorted; `Call::instance` indexes this.
    pub instances: Vec<String>,
    /// Recorded calls plus the synthetic calls of the recorded breakers' gaps.
    pub calls: Vec<Call>,
    /// Instances replayed from their logged outcomes.
    pub logged_instances: usize,
    /// Failures the recorded opens prove but no row shows (see [`hidden_failures`]),
    /// in `calls` as synthetic exact failures.
    pub inferred_failures: u64,
    /// The recorded transitions (instance, time, old state, new state), in time order:
    /// calibration infers each candidate model's hidden failures from them.
    pub transitions: Vec<(u32, f64, Option<BreakerState>, Option<BreakerState>)>,
    pub incidents: Vec<Incident>,
    pub recorded: Recorded,
    /// The policy the crawler ran for the host (its busiest role's trial budget).
    pub policy: ReplayPolicy,
    /// What its rows' `breaker_recorded` says.
    pub said: Said,
    /// What its rows show of successes during cooldowns.
    pub cooldowns: CooldownSign,
    /// What the runs its breakers did not open on show of the final outcome's repeat.
    pub repeat: RepeatSign,
}

/// The traffic of every host (or one) over a window.
pub struct Traffic {
    pub hours: f64,
    pub model: ReplayModel,
    pub hosts: Vec<HostTraffic>,
}

/// How well the replay of the recorded policy reproduces one host's recorded breakers.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Fidelity {
    pub host: String,
    pub instances: usize,
    /// Instances replayed from their logged outcomes rather than their rows.
    pub logged_instances: usize,
    pub recorded_opens: u64,
    pub replayed_opens: u64,
    pub recorded_half_open_closed: u64,
    pub replayed_half_open_closed: u64,
    pub recorded_half_open_reopened: u64,
    pub replayed_half_open_reopened: u64,
    /// The largest miss of one instance's opens.
    pub worst_instance_miss: u64,
    /// Failures the recorded opens prove but no row shows, added to the replay.
    pub inferred_failures: u64,
    /// The reset the replay ran, and the median of the recorded open spells beside it
    /// (shorter says the night ran another one: `advise::ran_other_reset`).
    pub reset_timeout_s: f64,
    pub open_spell_median_s: Option<f64>,
}

impl Fidelity {
    /// |replayed - recorded| / recorded opens (0 when both are 0).
    pub fn miss_share(&self) -> f64 {
        let diff = (self.replayed_opens as f64 - self.recorded_opens as f64).abs();
        if self.recorded_opens == 0 {
            if diff == 0.0 { 0.0 } else { 1.0 }
        } else {
            diff / self.recorded_opens as f64
        }
    }
}

impl Traffic {
    pub fn get(&self, host: &str) -> Option<&HostTraffic> {
        self.hosts.iter().find(|h| h.host == host)
    }

    /// What the hosts' calls hold that could show each calibrated field.
    pub fn signs(&self) -> Signs {
        let mut s = Signs::default();
        for t in &self.hosts {
            s.opens += t.recorded.opens;
            s.shared_hosts += u64::from(t.instances.len() > 1);
            let rolling = t.policy.rolling.is_some();
            s.logged += t.calls.iter().filter(|c| c.exact && !c.synthetic).count() as u64;
            // Only hosts whose rows say what their breaker recorded speak for it (a
            // host without a breaker has no cooldown either: its requests begin freely).
            if t.said.filled() {
                s.said += t.said;
                s.cooldowns += t.cooldowns;
            }
            s.repeat += t.repeat;
            for c in t.calls.iter().filter(|c| c.is_row()) {
                match c.kind {
                    Kind::CacheHit => s.cache_hits += 1,
                    Kind::Exception => s.exceptions += 1,
                    Kind::Response => {
                        let failed = c.outcome == Outcome::Failure;
                        s.failed_rows += u64::from(failed);
                        s.cooldown_failures +=
                            u64::from(failed && (c.retry_after_s.is_some() || rolling));
                    }
                }
                s.retried_rows += u64::from(c.retried_failures > 0);
            }
        }
        s
    }

    /// The calibration's fit of `model` on every host: each host's recorded policy
    /// replayed on its calls, with the failures the recorded opens need under `model`
    /// in place of those inferred under the model the traffic was built with.
    pub fn fit(&self, model: &CrawlerModel) -> Fit {
        let rm = ReplayModel::from(model);
        let mut total = Fit::default();
        for t in &self.hosts {
            let hidden = hidden_failures(&t.calls, &t.transitions, t.policy.fail_max, &rm);
            let key = |c: &Call| (c.t_s, c.instance);
            let order = |a: &(f64, u32), b: &(f64, u32)| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1));
            let mut built: Vec<(f64, u32)> = t
                .calls
                .iter()
                .filter(|c| c.synthetic && c.exact)
                .map(key)
                .collect();
            let mut wanted: Vec<(f64, u32)> = hidden.iter().map(key).collect();
            built.sort_by(order);
            wanted.sort_by(order);
            let same = built.len() == wanted.len()
                && built
                    .iter()
                    .zip(&wanted)
                    .all(|(b, w)| b.0 == w.0 && b.1 == w.1);
            let merged: Vec<Call>;
            let calls: &[Call] = if same {
                &t.calls
            } else {
                merged = with_hidden(&t.calls, hidden.clone());
                &merged
            };
            let f = replay(calls, &t.policy, &rm, &t.incidents, self.hours);
            // Per breaker: one process's extra opens do not cancel another's missing ones.
            let open_miss = if rm.fleet_breaker {
                f.opens.abs_diff(t.recorded.opens)
            } else {
                t.recorded
                    .instance_opens
                    .iter()
                    .zip(f.instance_opens.iter().chain(std::iter::repeat(&0)))
                    .map(|(r, p)| r.abs_diff(*p))
                    .sum()
            };
            let inferred = hidden.len() as u64;
            total += Fit {
                open_miss,
                inferred,
                score: open_miss
                    .saturating_mul(u64::from(t.policy.fail_max.max(1)))
                    .saturating_add(inferred),
            };
        }
        total
    }

    /// Replays every host under the policy the crawler ran and compares with what its
    /// breakers recorded, per instance.
    pub fn fidelity(&self) -> Vec<Fidelity> {
        self.hosts
            .iter()
            .map(|t| {
                let f = self.replay(t, &t.policy);
                let worst = t
                    .recorded
                    .instance_opens
                    .iter()
                    .zip(f.instance_opens.iter().chain(std::iter::repeat(&0)))
                    .map(|(r, p)| r.abs_diff(*p))
                    .max()
                    .unwrap_or(0);
                Fidelity {
                    host: t.host.clone(),
                    instances: t.instances.len(),
                    logged_instances: t.logged_instances,
                    recorded_opens: t.recorded.opens,
                    replayed_opens: f.opens,
                    recorded_half_open_closed: t.recorded.half_open_closed,
                    replayed_half_open_closed: f.half_open_closed,
                    recorded_half_open_reopened: t.recorded.half_open_reopened,
                    replayed_half_open_reopened: f.half_open_reopened,
                    worst_instance_miss: worst,
                    inferred_failures: t.inferred_failures,
                    reset_timeout_s: t.policy.reset_timeout_s,
                    open_spell_median_s: open_spells(&t.transitions).map(|s| s.median_s),
                }
            })
            .collect()
    }

    /// Replays one host under `policy`.
    pub fn replay(&self, t: &HostTraffic, policy: &ReplayPolicy) -> Figures {
        replay(&t.calls, policy, &self.model, &t.incidents, self.hours)
    }
}

/// At most this many Retry-After rows are read back for one request's span.
const RETRY_AFTER_LOOKBACK: usize = 64;

/// How far from a request a Retry-After the host sent still says what the request
/// waited on (`estimate_retried_raised`).
const NEAR_RETRY_AFTER_S: f64 = 3600.0;

/// tenacity's longest fallback waits before `retries` retries, in all.
fn backoff_max_s(retries: u32) -> f64 {
    (1..=retries.min(crate::telemetry::schema::MAX_RETRY_COUNT as u32))
        .map(crate::crawler::backoff_cap_s)
        .sum()
}

/// The longest a request with `retries` retries can take in the crawler: every attempt
/// timed out, every wait was tenacity's longest or a Retry-After at its default cap. A
/// longer elapsed time (a clock step, a bug) is not spread over.
fn longest_request_s(retries: u32) -> f64 {
    let attempts = f64::from(retries.min(crate::telemetry::schema::MAX_RETRY_COUNT as u32) + 1);
    attempts * (CONNECT_TIMEOUT_S + READ_TIMEOUT_S)
        + backoff_max_s(retries)
        + (attempts - 1.0) * crate::config::Policy::default().retry_after_cap_s
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mid = v.len() / 2;
    let (_, m, _) = v.select_nth_unstable_by(mid, f64::total_cmp);
    Some(*m)
}

/// A row keeps only its final outcome: whether its retried attempts failed with a
/// status or raised (a timeout, a connection error) it does not say, and a breaker
/// that ignores exceptions counts only the first. Its elapsed time does: it covers the
/// whole request (networking.py ~855, ~1265), and what its attempts' responses and
/// waits do not explain was spent waiting on attempts that timed out. Per response
/// row with retries, the time left after its attempts' latency (the host's median of
/// rows without retries), tenacity's longest waits and the Retry-After the host sent in
/// the request's span is taken as timed-out attempts: none under the connect timeout,
/// else one per started read timeout (the per-attempt time of the host's rows that
/// raised, where it has them), at most its retries. A request that took longer than all
/// its retries timing out, with no Retry-After in its span, waited on Retry-Afters its
/// row does not show (a retried attempt's status is not recorded): as few of the host's
/// as explain the time, each after an attempt that answered; the rest is timeouts. The
/// host's Retry-After is the one it sent nearest the request, within an hour (a server
/// asks for the same wait through an incident), else its rows' median.
///
/// A row without an elapsed time falls back on the host's rows: where they show
/// requests that raised, its retried attempts raised in the share that the host's
/// failed requests of the same hour did (rows that raised against rows that failed
/// with a status; the night's share where the hour has none), spread over the hour's
/// rows in time order so the counts add up. Without such rows, none raised.
/// `calls` are in time order.
pub fn estimate_retried_raised(calls: &mut [Call]) {
    let latency = answer_latency(calls, false);
    let timeout = median(
        calls
            .iter()
            .filter(|c| c.is_row() && c.kind == Kind::Exception && c.elapsed_s > 0.0)
            .map(|c| c.elapsed_s / f64::from(c.retried_failures + 1))
            .collect(),
    )
    .filter(|t| *t >= CONNECT_TIMEOUT_S)
    .unwrap_or(READ_TIMEOUT_S);
    // The Retry-After the host sent, in time order.
    let retry_after: Vec<(f64, f64)> = calls
        .iter()
        .filter(|c| c.is_row() && c.failed())
        .filter_map(|c| c.retry_after_s.map(|ra| (c.t_s, ra)))
        .collect();
    // The Retry-After the host sends: its rows' median.
    let host_retry_after = median(
        retry_after
            .iter()
            .map(|x| x.1)
            .filter(|ra| *ra >= 1.0)
            .collect(),
    );
    for c in calls.iter_mut() {
        if !(c.is_row() && c.kind == Kind::Response && c.retried_failures > 0) {
            continue;
        }
        if c.elapsed_s <= 0.0 {
            continue;
        }
        let k = c.retried_failures;
        let hi = retry_after.partition_point(|(t, _)| *t <= c.t_s);
        let begun = retry_after.partition_point(|(t, _)| *t < c.t_s - c.elapsed_s);
        let lo = begun.max(hi.saturating_sub(RETRY_AFTER_LOOKBACK)).min(hi);
        let near = retry_after[lo..hi].iter().map(|x| x.1).fold(0.0, f64::max);
        let waits = backoff_max_s(k) + near * f64::from(k);
        let mut left = c.elapsed_s - f64::from(k + 1) * latency - waits;
        // The retried attempts that may have raised.
        let mut room = k;
        // More time than all of them timing out explains, and no Retry-After in the
        // span: the request waited on Retry-Afters its rows do not show (a retried
        // attempt's status is not recorded), each after an attempt that answered: as
        // few as explain the time, where some number does. The host's nearest in time
        // (within an hour of the span, before or after it: a server asks for the same
        // wait through an incident; under a second, none) is tried first, then its
        // rows' median.
        let nearest = [begun.checked_sub(1), (hi < retry_after.len()).then_some(hi)]
            .into_iter()
            .flatten()
            .map(|j| retry_after[j])
            .map(|(t, ra)| ((c.t_s - c.elapsed_s - t).max(t - c.t_s), ra))
            .filter(|(d, _)| *d <= NEAR_RETRY_AFTER_S)
            .min_by(|a, b| a.0.total_cmp(&b.0))
            .map(|(_, ra)| ra)
            .filter(|ra| *ra >= 1.0);
        if near <= 0.0
            && left > f64::from(k) * timeout + CONNECT_TIMEOUT_S
            && let Some((ra, m)) = nearest.into_iter().chain(host_retry_after).find_map(|ra| {
                // What the waits leave, tenacity's backoffs they replace given
                // back: within the timeouts left, and not below nothing.
                (1..=k)
                    .find(|m| {
                        let rest = left - f64::from(*m) * ra;
                        rest <= f64::from(k - m) * timeout + CONNECT_TIMEOUT_S
                            && rest + backoff_max_s(k) >= -CONNECT_TIMEOUT_S
                    })
                    .map(|m| (ra, m))
            })
        {
            left -= f64::from(m) * ra;
            room = k - m;
        }
        c.retried_raised = if left < CONNECT_TIMEOUT_S {
            0
        } else {
            ((left / timeout).ceil().min(f64::from(room))) as u32
        };
    }
    by_share(calls);
}

/// How long the host takes to answer an attempt: the median elapsed time of its rows
/// that answered without a retry (one attempt each), 0 without any. `failed`: of those
/// that failed with a status only (an error page can come back faster than the content
/// a success carries), where the host has at least `MIN_FAILED_LATENCIES` of them; else
/// of all.
fn answer_latency(calls: &[Call], failed: bool) -> f64 {
    let single = || {
        calls
            .iter()
            .filter(|c| c.is_row() && c.kind == Kind::Response && c.retried_failures == 0)
            .filter(|c| c.elapsed_s > 0.0)
    };
    if failed {
        let own: Vec<f64> = single()
            .filter(|c| c.failed())
            .map(|c| c.elapsed_s)
            .collect();
        if own.len() >= MIN_FAILED_LATENCIES {
            return median(own).unwrap_or(0.0);
        }
    }
    median(single().map(|c| c.elapsed_s).collect()).unwrap_or(0.0)
}

/// Rows needed before their latency stands for an attempt's: rows that failed without
/// a retry for a failed attempt's (`answer_latency`), rows answered without a retry for
/// a 429's (`throttle_latency`).
const MIN_FAILED_LATENCIES: usize = 20;

/// The share of a host's fastest answers (rows answered without a retry) whose
/// latency bounds a 429's (`throttle_latency`).
const FAST_ANSWER_QUANTILE: f64 = 0.05;

/// How long a 429 takes to come back: the server's rate limit refuses the request
/// before any work on it, so the answer comes back in a round trip, which the host's
/// fastest answers bound: the [`FAST_ANSWER_QUANTILE`] of its rows that answered
/// without a retry; `otherwise` (the failed attempts' latency) with fewer than
/// [`MIN_FAILED_LATENCIES`] of them, where one odd row would set it. The failed rows'
/// latency alone (a 408, a 404) is no measure of it: a 429 is always retried, and an
/// error page can take as long as the content.
fn throttle_latency(calls: &[Call], otherwise: f64) -> f64 {
    let mut v: Vec<f64> = calls
        .iter()
        .filter(|c| c.is_row() && c.kind == Kind::Response && c.retried_failures == 0)
        .map(|c| c.elapsed_s)
        .filter(|e| *e > 0.0)
        .collect();
    if v.len() < MIN_FAILED_LATENCIES {
        return otherwise;
    }
    let k = ((v.len() - 1) as f64 * FAST_ANSWER_QUANTILE).floor() as usize;
    let (_, q, _) = v.select_nth_unstable_by(k, f64::total_cmp);
    *q
}

/// Whether a row's retried attempts were throttled (429). A row that failed with a
/// 429 was throttled at its last attempt, and the attempts before it met the same
/// limit. Another row keeps only its final outcome: its attempts are judged by the
/// host's requests that failed after retries in the same hour (the night's, in an hour
/// without any), throttled where at least half of those ended in a 429.
/// (ended in a 429, failed) per hour, of the rows that failed after retries.
struct Throttles(HourTally);

impl Throttles {
    fn of(calls: &[Call]) -> Throttles {
        let mut out = HourTally::default();
        for c in calls.iter().filter(|c| {
            c.is_row() && c.kind == Kind::Response && c.failed() && c.retried_failures > 0
        }) {
            out.add(c.t_s, (u64::from(c.throttled), 1));
        }
        Throttles(out)
    }

    fn throttled(&self, c: &Call) -> bool {
        if c.kind == Kind::Response && c.failed() {
            return c.throttled;
        }
        let (throttled, failed) = self.0.at(c.t_s);
        failed > 0 && 2 * throttled >= failed
    }
}

/// Two counts per hour of the night, and over the night.
#[derive(Default)]
struct HourTally {
    hours: BTreeMap<i64, (u64, u64)>,
    night: (u64, u64),
}

impl HourTally {
    fn add(&mut self, t: f64, (a, b): (u64, u64)) {
        let e = self.hours.entry(hour_of(t)).or_default();
        *e = (e.0 + a, e.1 + b);
        self.night = (self.night.0 + a, self.night.1 + b);
    }

    /// The counts of `t`'s hour; the night's in an hour without any.
    fn at(&self, t: f64) -> (u64, u64) {
        self.hours.get(&hour_of(t)).copied().unwrap_or(self.night)
    }
}

fn hour_of(t: f64) -> i64 {
    (t / 3600.0).floor() as i64
}

/// The fallback of `estimate_retried_raised` for rows without an elapsed time.
fn by_share(calls: &mut [Call]) {
    // Per hour (raised, failed with a status), and over the night.
    let mut tally = HourTally::default();
    for c in calls.iter().filter(|c| c.is_row()) {
        let add = match c.kind {
            Kind::Exception => (1, 0),
            Kind::Response if c.failed() => (0, 1),
            _ => continue,
        };
        tally.add(c.t_s, add);
    }
    if tally.night.0 == 0 {
        return;
    }
    let mut carry: BTreeMap<i64, f64> = BTreeMap::new();
    for c in calls
        .iter_mut()
        .filter(|c| c.kind == Kind::Response && c.retried_failures > 0)
        .filter(|c| c.is_row() && c.elapsed_s <= 0.0)
    {
        let (raised, statuses) = tally.at(c.t_s);
        let acc = carry.entry(hour_of(c.t_s)).or_default();
        *acc += f64::from(c.retried_failures) * raised as f64 / (raised + statuses) as f64;
        let whole = acc.floor().min(f64::from(c.retried_failures));
        *acc -= whole;
        c.retried_raised = whole as u32;
    }
}

/// Each row's retried attempts as calls of their own, at their times. The crawler
/// writes a row when its request ends, and its `elapsed_ms` is the whole request's:
/// every attempt, every wait (networking.py ~855, ~1265). The first attempt is placed
/// where the request began (the row's time less its elapsed time), the others evenly
/// after it, so a request's failures interleave with the other requests' outcomes as the
/// breaker counted them, instead of arriving back to back. A request that was retried
/// mostly waited (tenacity's backoff, a Retry-After) after an answer that came back at
/// once: a 429 or 503 under a quota takes tens of milliseconds, and its Retry-After
/// cooldown then holds the process's other requests. Spread evenly with the last attempt
/// at the row's time instead, the first failure landed among requests that in fact came
/// after it, and on quota hosts the replay of the documented crawler opened two to seven
/// times as often as its breakers did. Those estimated to have raised come first.
///
/// An attempt that failed with a status is placed where it was sent and counted when
/// its answer came back (`Call::counted_at`, `elapsed_s` later): after the host's
/// latency (its rows' that failed, else all its rows' that answered, without a retry),
/// or, where the request was throttled ([`Throttles`]: its row ended in a 429, or the
/// hour's failed requests mostly did), after a 429's ([`throttle_latency`]: the host's
/// fastest answers); never after the next attempt was sent. On a busy fleet under
/// minute and hour quotas, the failed rows' latency (408s, 40 to 900 ms) counted the
/// 429s (20 to 120 ms) after the successes that in fact came after them, and the replay
/// of the documented crawler opened 18, 18, 10 and 12 times where its breakers opened
/// 13, 10, 4 and 4; now 13, 13, 6 and 8. A breaker that turned half-open as the
/// request began let its first attempt through as a trial, and another role's answer
/// can close it before that attempt's failure is counted. An attempt that raised is
/// placed where it was sent and counted when its timeout fired (`elapsed_s` later): a
/// read timeout at most, and never after the next attempt was sent (the subtraction
/// keeps the two instants equal to the bit). A row that answered is its
/// last attempt, at the row's time. A row of a request that raised is written when its
/// last attempt timed out, so all its attempts took time: they are sent evenly from the
/// request's start, the last one counted at the row. `calls` are in replay order, and so
/// is the result.
pub fn spread_retries(calls: Vec<Call>) -> Vec<Call> {
    // Not twice: a spread row keeps its count of retried attempts.
    let spread = |c: &Call| {
        (c.retried_failures > 0 || c.kind == Kind::Exception)
            && !c.synthetic
            && !c.exact
            && !c.spread
            && !c.retry
            && c.kind != Kind::CacheHit
    };
    if !calls.iter().any(spread) {
        return calls;
    }
    let extra: usize = calls
        .iter()
        .filter(|c| spread(c))
        .map(|c| c.retried_failures as usize)
        .sum();
    // A retried attempt that answered failed with a status: a 429 (throttled), or not.
    let latency = answer_latency(&calls, true);
    let throttle = throttle_latency(&calls, latency);
    let throttles = Throttles::of(&calls);
    let mut out = Vec::with_capacity(calls.len() + extra);
    for c in calls {
        if !spread(&c) {
            out.push(c);
            continue;
        }
        let k = c.retried_failures;
        let raised_row = c.kind == Kind::Exception;
        let span = c.elapsed_s.min(longest_request_s(k));
        let share = span / f64::from(k + 1);
        // The gap between two attempts' sending: a row that answered is its last
        // attempt, at the row's time; a row that raised sent its last one a gap before.
        let step = if raised_row {
            share
        } else {
            span / f64::from(k.max(1))
        };
        let start = c.t_s - span;
        // The last attempt: at the row's time, or a timeout before it where it raised.
        let last = if raised_row {
            c.t_s - step.min(READ_TIMEOUT_S)
        } else {
            c.t_s
        };
        let sent = |j: u32| {
            if j == k {
                last
            } else {
                start + f64::from(j) * step
            }
        };
        // How long an attempt that raised, sent at `j`, ran: until its timeout, or until
        // the next attempt was sent (the row's time for the last one of a row that raised).
        let lasted = |j: u32| {
            let (t, next) = (sent(j), if j == k { c.t_s } else { sent(j + 1) });
            if t + READ_TIMEOUT_S < next && j < k {
                READ_TIMEOUT_S
            } else {
                (next - t).max(0.0)
            }
        };
        let raised = c.retried_raised.min(k);
        let throttled = throttles.throttled(&c);
        let answered_in = if throttled { throttle } else { latency };
        for j in 0..k {
            let (kind, elapsed_s) = if j < raised {
                (Kind::Exception, lasted(j))
            } else {
                // Answered after the host's latency, before the next attempt was sent.
                (
                    Kind::Response,
                    answered_in.min(sent(j + 1) - sent(j)).max(0.0),
                )
            };
            out.push(Call {
                t_s: sent(j),
                retried_failures: 0,
                retried_raised: 0,
                outcome: Outcome::Failure,
                kind,
                retry_after_s: None,
                throttled: throttled && kind == Kind::Response,
                elapsed_s,
                retry: true,
                ..c
            });
        }
        out.push(if raised_row {
            Call {
                t_s: sent(k),
                elapsed_s: lasted(k),
                spread: true,
                ..c
            }
        } else {
            Call {
                elapsed_s: share,
                spread: true,
                ..c
            }
        });
    }
    // A request's attempts before its row at the same instant (no elapsed time).
    out.sort_by(|a, b| {
        a.t_s
            .total_cmp(&b.t_s)
            .then(a.seq.cmp(&b.seq))
            .then(b.retry.cmp(&a.retry))
    });
    out
}

/// Retried attempts the spread put inside a recorded open spell of their process (from
/// its open to its turn to half-open), where each attempt asks the breaker: there it
/// would have been denied, and its request would have raised and left no row; after the
/// reset it would have turned the breaker half-open, which the record says no call did
/// before the spell's end. Such an attempt of a request that began before the spell did
/// not ask there: it was sent before the open (its wait, a Retry-After the row does not
/// hold, came after it), and is counted in the state it meets (`Call::in_flight`), at
/// its time. Found on a 2-machine fleet whose crawler counts timeouts: a request began
/// as its breaker opened and ended 161 s later after a Retry-After; the spread sent its
/// second attempt 80 s in, after the reset, as the half-open probe, and the replay
/// reopened the breaker where the record shows no call until the request's last
/// attempt closed it (19 opens replayed, 15 recorded; now 17). Moved to just before the
/// open instead, such attempts changed the breaker there: the calibration's summed miss
/// rose from 112 to 182, where this takes it to 74. Not the row's own last attempt (at
/// the row's time, its latency unknown): marked too, the summed miss rose to 190, every
/// busy host replayed under its record. The replay honours the mark where each process
/// has its own breaker (where retries do not ask the breaker, only a request's first
/// attempt does, and that one is never marked); the calls are marked whatever the
/// model, as the calibration replays them under each. `steps`: instance, time, old, new
/// state, in time order per instance.
pub fn in_flight_in_open_spells(
    calls: &mut [Call],
    steps: &[(u32, f64, Option<BreakerState>, Option<BreakerState>)],
) {
    // Each open until its instance's next transition, whatever it is (a lost record's
    // too), or the window's end.
    let mut spells: HashMap<u32, Vec<(f64, f64)>> = HashMap::new();
    for o in recorded_opens(steps) {
        let end = o.next.map_or(f64::INFINITY, |(t, _, _)| t);
        spells.entry(o.instance).or_default().push((o.at, end));
    }
    if spells.is_empty() {
        return;
    }
    for v in spells.values_mut() {
        v.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    // Where each request began: its first attempt's time.
    let mut began: HashMap<u64, f64> = HashMap::new();
    for c in calls.iter().filter(|c| c.retry) {
        began
            .entry(c.seq)
            .and_modify(|t| *t = t.min(c.t_s))
            .or_insert(c.t_s);
    }
    for c in calls.iter_mut().filter(|c| c.retry) {
        let Some(v) = spells.get(&c.instance) else {
            continue;
        };
        let k = v.partition_point(|(s, _)| *s <= c.t_s);
        let Some(&(start, end)) = k.checked_sub(1).and_then(|k| v.get(k)) else {
            continue;
        };
        if c.t_s < end && began.get(&c.seq).is_some_and(|b| *b < start) {
            c.in_flight = true;
        }
    }
}

/// `calls` without their inferred failures, with `hidden` instead, in replay order.
fn with_hidden(calls: &[Call], mut hidden: Vec<Call>) -> Vec<Call> {
    let mut out: Vec<Call> = calls
        .iter()
        .filter(|c| !(c.synthetic && c.exact))
        .copied()
        .collect();
    hidden.sort_by(|a, b| a.t_s.total_cmp(&b.t_s).then(a.seq.cmp(&b.seq)));
    out.append(&mut hidden);
    out.sort_by(|a, b| a.t_s.total_cmp(&b.t_s).then(a.seq.cmp(&b.seq)));
    out
}

fn us_to_s(v: i64) -> f64 {
    v as f64 / 1e6
}

/// What `build` reads: the window's classified events (`crate::metrics::classify`), the
/// window's transitions, the incidents table, and the window `[start_us, end_us)`.
pub struct TrafficInput<'a> {
    pub events: LazyFrame,
    pub transitions: LazyFrame,
    /// The window's `breaker_outcomes`: an instance that logged its outcomes is replayed
    /// from them instead of from its rows.
    pub outcomes: LazyFrame,
    pub incidents: &'a DataFrame,
    pub window_us: (i64, i64),
    pub config: &'a BreakerConfig,
    pub model: &'a CrawlerModel,
}

/// One instance's recorded calls (not the synthetic ones: earlier inferences, gap fill,
/// are not what the breaker saw) in the order its breaker counted them
/// (`Call::counted_at`). `calls` are spread ([`spread_retries`]) and in time order: only
/// retried attempts and a spread row's last one that raised are counted after their
/// time, so they alone are sorted and merged back in.
fn counted_in_order(calls: &[Call], instance: u32) -> impl Iterator<Item = &Call> {
    let own = calls
        .iter()
        .filter(move |c| c.instance == instance && !c.synthetic);
    let mut later: Vec<&Call> = own.clone().filter(|c| c.counted_at() > c.t_s).collect();
    later.sort_by(|a, b| a.counted_at().total_cmp(&b.counted_at()));
    let mut now = own.filter(|c| c.counted_at() <= c.t_s).peekable();
    let mut later = later.into_iter().peekable();
    std::iter::from_fn(move || match (now.peek(), later.peek()) {
        (Some(a), Some(b)) if b.counted_at() <= a.counted_at() => later.next(),
        (Some(_), _) => now.next(),
        (None, _) => later.next(),
    })
}

/// The instances replayed from the outcomes their breakers logged (`Call::exact`, not
/// synthetic), of `instances`: their record is complete, and no row stands for them.
fn logged_instances(calls: &[Call], instances: usize) -> Vec<bool> {
    let mut logged = vec![false; instances];
    for c in calls.iter().filter(|c| c.exact && !c.synthetic) {
        logged[c.instance as usize] = true;
    }
    logged
}

/// What one call, as `model` counts it, does to its breaker's run of consecutive
/// failures, the final outcome of a row counted `repeats` times: `Some(n)` adds `n`
/// failures (its counted retried attempts, then its own), `None` ends the run (a
/// success).
fn run_step(model: &ReplayModel, c: &Call, repeats: u32) -> Option<u32> {
    let retried = model.retried_failures(c);
    match model.outcome(c) {
        Some(super::Outcome::Failure) => {
            Some(retried + if c.exact || c.retry { 1 } else { repeats })
        }
        Some(super::Outcome::Success) => None,
        Some(super::Outcome::Uncounted) => Some(retried),
        None => Some(0),
    }
}

/// Failures a breaker counted that no row shows. A recorded open proves that the breaker
/// had just counted `fail_max` consecutive failures, and a reopen from half-open one
/// failed trial; most of them were attempts of requests that raised (denied during their
/// retries) and left no row. Walking each row-based instance's calls as `model` counts
/// them, every open that the visible failures do not explain gets the missing ones, as
/// failures just before it (`transitions`: instance, time, old, new state, in time
/// order). A reopen is explained by a failure counted since the breaker turned
/// half-open, or by a retried attempt counted while it was open whose request was still
/// going when it turned half-open (its time is an estimate: it may have been the
/// trial), not by a row counted while open (an attempt sent before the open that came
/// back after it). `calls` are spread, each retried
/// attempt a call of its own at its own time ([`spread_retries`]). Instances replayed
/// from logged outcomes need none: their record is complete.
pub fn hidden_failures(
    calls: &[Call],
    transitions: &[(u32, f64, Option<BreakerState>, Option<BreakerState>)],
    fail_max: u32,
    model: &ReplayModel,
) -> Vec<Call> {
    let mut out = Vec::new();
    let instances = transitions
        .iter()
        .map(|t| t.0)
        .chain(calls.iter().map(|c| c.instance))
        .max()
        .map_or(0, |m| m as usize + 1);
    let logged = logged_instances(calls, instances);
    for inst in 0..instances as u32 {
        if logged[inst as usize] {
            continue;
        }
        // The recorded calls only: synthetic ones (earlier inferences, gap fill) are not
        // what the breaker saw.
        let mut own = counted_in_order(calls, inst).peekable();
        // When each spread request ended (its row's time), by `seq`.
        let ended: HashMap<u64, f64> = calls
            .iter()
            .filter(|c| c.instance == inst && c.spread && !c.synthetic)
            .map(|c| (c.seq, c.t_s))
            .collect();
        // Failures counted since the last success or transition, and of those the
        // retried attempts' (counted at an estimated time), with when their request
        // ended.
        let mut run = 0u32;
        let mut estimated: Vec<(u32, f64)> = Vec::new();
        for &(_, t, old, new) in transitions.iter().filter(|t| t.0 == inst) {
            // The calls up to the transition, as the breaker counted them.
            while let Some(c) = own.next_if(|c| c.counted_at() <= t) {
                match run_step(model, c, model.final_outcome_counted) {
                    Some(n) => {
                        run = run.saturating_add(n);
                        if c.retry && n > 0 {
                            let end = ended.get(&c.seq).copied().unwrap_or(f64::INFINITY);
                            estimated.push((n, end));
                        }
                    }
                    None => {
                        run = 0;
                        estimated.clear();
                    }
                }
            }
            // Bounded whatever the config says (a held host's fail_max of 10^9 would
            // be 56 GB of calls for one open).
            let missing = match (old, new) {
                (Some(BreakerState::Closed), Some(BreakerState::Open)) => fail_max
                    .min(crate::config::MAX_PLAUSIBLE_FAIL_MAX as u32)
                    .saturating_sub(run),
                (Some(BreakerState::HalfOpen), Some(BreakerState::Open)) => u32::from(run == 0),
                _ => 0,
            };
            for _ in 0..missing {
                out.push(Call {
                    t_s: t,
                    instance: inst,
                    retried_failures: 0,
                    retried_raised: 0,
                    outcome: super::Outcome::Failure,
                    kind: Kind::Response,
                    retry_after_s: None,
                    throttled: false,
                    elapsed_s: 0.0,
                    synthetic: true,
                    exact: true,
                    in_flight: false,
                    retry: false,
                    spread: false,
                    seq: 0,
                    role: 0,
                });
            }
            // A reopen is explained by a failure counted while half-open, not by one
            // the rows show counted while open (an attempt sent before the open that
            // came back after it); a retried attempt's time is an estimate, and it may
            // have been the trial where its request was still going when the breaker
            // turned half-open.
            match new {
                Some(BreakerState::HalfOpen) => {
                    run = estimated
                        .iter()
                        .filter(|(_, end)| *end >= t)
                        .fold(0u32, |a, (n, _)| a.saturating_add(*n));
                    estimated.clear();
                }
                Some(_) => {
                    run = 0;
                    estimated.clear();
                }
                None => {}
            }
        }
    }
    out
}

/// The runs of failures a recorded breaker did not open on that `model` counts past
/// `fail_max`, with the final outcome counted once and twice (the rest as in `model`;
/// see [`RepeatSign`]): per row-based instance with recorded transitions, the failures
/// counted since the last success reach `fail_max` while the recorded breaker is
/// closed, and a success comes before any recorded open, or the open comes later than
/// the failure that reached it. Only runs that reach it at a row's own time under both
/// counts count: a retried attempt's time is an estimate (the repeat that takes a run
/// past `fail_max` comes at its row's time). Also the opens the repeat alone explains:
/// the breaker opened as the run counted twice reached `fail_max`, where counted once it
/// did not. None under a fleet-wide breaker (another process's success resets its
/// count). `calls` are spread and in time order; `transitions` in time order.
pub fn overcounted_runs(
    calls: &[Call],
    transitions: &[(u32, f64, Option<BreakerState>, Option<BreakerState>)],
    fail_max: u32,
    model: &ReplayModel,
) -> RepeatSign {
    /// A run's count under one value of the repeat.
    #[derive(Clone, Copy)]
    struct Count {
        repeats: u32,
        run: u32,
        /// When the run reached `fail_max` with the breaker closed.
        reached: Option<f64>,
        past: u64,
    }
    // An open logged this long after the failure that reached `fail_max` came later.
    const LATE_S: f64 = 1e-3;
    let fail_max = fail_max.clamp(1, crate::config::MAX_PLAUSIBLE_FAIL_MAX as u32);
    let instances = calls.iter().map(|c| c.instance).max().map_or(0, |m| m + 1);
    let logged = logged_instances(calls, instances as usize);
    let mut counts = [1, 2].map(|repeats| Count {
        repeats,
        run: 0,
        reached: None,
        past: 0,
    });
    // A recorded transition at `t`: an open later than a run reached fail_max
    // is one such run; an open or a close starts a new run (true). `estimated`: the run
    // reached fail_max, under either count, at a retried attempt's estimated time, or
    // holds a throttled retried attempt the model counts (a 429, `Call::throttled`) of
    // a request that began before the run did (its last reset). A 429's Retry-After
    // cooldown holds the process's other requests and sets when the request's next
    // attempt goes, so its attempts bunch where the cooldowns end, not where the even
    // spread puts them: that attempt may have been counted before the reset. On a busy
    // fleet under minute and hour quotas, a crawler that repeats the final outcome
    // showed three runs past fail_max only with the repeat, all of such attempts: the
    // sign's minimum.
    let mut opened_by_repeat = 0u64;
    let mut transition = |counts: &mut [Count; 2],
                          estimated: &mut bool,
                          t: f64,
                          new: Option<BreakerState>|
     -> bool {
        let ends = matches!(new, Some(BreakerState::Open | BreakerState::Closed));
        // The open the repeat alone explains: counted twice, the run reached
        // fail_max as the breaker opened; counted once, it did not.
        if new == Some(BreakerState::Open)
            && !*estimated
            && counts[0].reached.is_none()
            && counts[1].reached.is_some_and(|r| t <= r + LATE_S)
        {
            opened_by_repeat += 1;
        }
        for k in counts.iter_mut() {
            if new == Some(BreakerState::Open)
                && !*estimated
                && k.reached.is_some_and(|r| t > r + LATE_S)
            {
                k.past += 1;
            }
            if ends {
                (k.run, k.reached) = (0, None);
            }
        }
        *estimated &= !ends;
        ends
    };
    // A breaker shared by the fleet counts every process's outcomes: one process's
    // rows are no bound on its count.
    let instances = if model.fleet_breaker { 0 } else { instances };
    for inst in (0..instances).filter(|i| !logged[*i as usize]) {
        let mut steps = transitions.iter().filter(|t| t.0 == inst).peekable();
        // The state before the first transition is the one it left (none, when that
        // is not a state the walk reads: the run is not known to be closed).
        let Some(mut state) = steps.peek().map(|t| t.2) else {
            continue;
        };
        let mut estimated = false;
        // When each spread request began (its first attempt's time), and when the run
        // began (the last success or transition that reset it).
        let mut began: HashMap<u64, f64> = HashMap::new();
        for c in calls.iter().filter(|c| c.instance == inst && c.retry) {
            began
                .entry(c.seq)
                .and_modify(|t| *t = t.min(c.t_s))
                .or_insert(c.t_s);
        }
        let mut reset_at = f64::NEG_INFINITY;
        for k in &mut counts {
            (k.run, k.reached) = (0, None);
        }
        for c in counted_in_order(calls, inst) {
            let at = c.counted_at();
            while let Some(&(_, t, _, new)) = steps.next_if(|s| s.1 < at) {
                state = new;
                if transition(&mut counts, &mut estimated, t, new) {
                    reset_at = t;
                }
            }
            // A retried attempt the model counts (a row is counted at its own time).
            if c.throttled
                && c.retry
                && run_step(model, c, 1).is_some_and(|n| n > 0)
                && began.get(&c.seq).is_some_and(|b| *b < reset_at)
            {
                estimated = true;
            }
            let mut success = false;
            for k in &mut counts {
                match run_step(model, c, k.repeats) {
                    Some(n) => k.run = k.run.saturating_add(n),
                    None => {
                        success = true;
                        k.past += u64::from(k.reached.is_some() && !estimated);
                        (k.run, k.reached) = (0, None);
                    }
                }
                if k.reached.is_none() && state == Some(BreakerState::Closed) && k.run >= fail_max {
                    k.reached = Some(at);
                    estimated |= c.retry;
                }
            }
            estimated &= !success;
            if success {
                reset_at = at;
            }
        }
        for &(_, t, _, new) in steps {
            transition(&mut counts, &mut estimated, t, new);
        }
    }
    RepeatSign {
        past_once: counts[0].past,
        past_twice: counts[1].past,
        opened_by_repeat,
    }
}

/// A recorded breaker state as the hidden-failure walk reads it: the canonical
/// spellings the export writes, nothing else.
fn state(s: &str) -> Option<BreakerState> {
    [
        BreakerState::Closed,
        BreakerState::Open,
        BreakerState::HalfOpen,
    ]
    .into_iter()
    .find(|b| b.as_str() == s)
}

/// Builds every host's traffic: the rows the breakers counted, in one pass.
pub fn build(input: TrafficInput<'_>) -> PolarsResult<Traffic> {
    let TrafficInput {
        events,
        transitions,
        outcomes,
        incidents,
        window_us: (w0, w1),
        config,
        model,
    } = input;
    // Calls carry their process whatever the model (a fleet-wide breaker is the replay's
    // reading of them), so calibration can try either scope.
    let per_process = CrawlerModel {
        breaker_scope: crate::crawler::Scope::Process,
        ..model.clone()
    };
    let window_s = (w0 as f64 / 1e6, w1 as f64 / 1e6);
    let hours = (window_s.1 - window_s.0) / 3600.0;
    let (events, transitions, logged) = read_tables(events, transitions, outcomes, &per_process)?;
    // The logged outcomes first: an instance that logged them is replayed from them, and
    // its rows are skipped.
    let mut rows = Rows::default();
    rows.add_logged(&crate::frame::collect(logged)?)?;
    rows.add_events(&events, crate::crawler::Scope::Process)?;
    drop(events);
    let rank = source_ranks(&rows.sources);
    let mut recorded_transitions = transitions_by_host(&transitions)?;
    let mut incident_spans = incidents_by_host(incidents)?;
    let replay_model = ReplayModel::from(model);
    let mut hosts = Vec::new();
    for (host, host_rows) in std::mem::take(&mut rows.hosts) {
        let host_transitions = recorded_transitions.remove(&host).unwrap_or_default();
        let spans = merge_spans(incident_spans.remove(&host).unwrap_or_default());
        let logged = |name: &str| rows.is_logged(&host, name);
        let mut traffic = host_traffic(
            HostInput {
                host: &host,
                rows: host_rows,
                transitions: host_transitions,
                spans,
                rank: &rank,
                window_s,
                config,
                model,
                replay_model: &replay_model,
            },
            logged,
        );
        traffic.host = host;
        hosts.push(traffic);
    }
    Ok(Traffic {
        hours,
        model: replay_model,
        hosts,
    })
}

/// The rows the breakers counted (each becomes a `Call` of 64 bytes and the frame goes;
/// hosts, sources and instances come as codes, `RowKeys`), the recorded transitions per
/// instance in time order, and the logged outcomes (lazy).
fn read_tables(
    events: LazyFrame,
    transitions: LazyFrame,
    outcomes: LazyFrame,
    per_process: &CrawlerModel,
) -> PolarsResult<(DataFrame, DataFrame, LazyFrame)> {
    // Every row a breaker may have counted (all but the denied ones), with what it is:
    // the model decides how each counts (`ReplayModel::outcome`).
    let blocked = col("breaker_recorded").eq(lit("blocked")).fill_null(false);
    let events = crate::frame::collect(
        events.filter(blocked.not()).select([
            col("host"),
            col("role"),
            col("source"),
            col("run_id"),
            col("ts").cast(DataType::Int64).alias("t"),
            col("id").cast(DataType::Int64),
            col("is_failure").cast(DataType::Int64).alias("outcome"),
            col("retried_fail_attempts")
                .cast(DataType::Int64)
                .alias("retried_failures"),
            col("is_net"),
            when(col("is_timeout"))
                .then(lit(2i32))
                .when(col("is_net"))
                .then(lit(0i32))
                .otherwise(lit(1i32))
                .alias("kind"),
            when(col("status").eq(lit(429)).or(col("status").eq(lit(503))))
                .then(col("retry_after_s").cast(DataType::Float64))
                .otherwise(lit(NULL).cast(DataType::Float64))
                .alias("ra"),
            col("elapsed_ms").cast(DataType::Float64).alias("elapsed"),
            col("status")
                .eq(lit(429))
                .fill_null(false)
                .alias("throttled"),
            // What the row says the breaker recorded: 1 success, 2 failure, 0 untouched.
            when(col("breaker_recorded").eq(lit("success")))
                .then(lit(1i32))
                .when(col("breaker_recorded").eq(lit("failure")))
                .then(lit(2i32))
                .when(
                    col("breaker_recorded")
                        .eq(lit("none"))
                        .or(col("breaker_recorded").eq(lit("cache-hit"))),
                )
                .then(lit(0i32))
                .otherwise(lit(NULL).cast(DataType::Int32))
                .alias("said"),
        ]),
    )?;
    let transitions = crate::frame::collect(
        crate::metrics::with_instance(crate::metrics::dedupe_transitions(transitions), per_process)
            .filter(col("scope").eq(lit("host")).or(col("scope").is_null()))
            .select([
                col("host"),
                col("instance"),
                col("ts").cast(DataType::Int64).alias("t"),
                col("old_state"),
                col("new_state"),
                col("reset_timeout_s").cast(DataType::Float64),
                col("source"),
                col("id"),
            ])
            .sort(
                ["host", "instance", "t", "source", "id"],
                SortMultipleOptions::default(),
            ),
    )?;
    let logged = crate::metrics::with_instance(
        outcomes.filter(col("scope").eq(lit("host")).or(col("scope").is_null())),
        per_process,
    )
    .filter(col("outcome").is_not_null())
    .select([
        col("host"),
        col("instance"),
        col("source"),
        col("ts").cast(DataType::Int64).alias("t"),
        col("id").cast(DataType::Int64),
        col("outcome").eq(lit("failure")).alias("failed"),
        col("state")
            .eq(lit(BreakerState::Open.as_str()))
            .fill_null(lit(false))
            .alias("in_flight"),
    ]);
    Ok((events, transitions, logged))
}

/// Sources ranked by name (those of the calls and of the logged outcomes): the tie-break
/// of calls at the same instant. Provisional code 0 is a row without one.
fn source_ranks(sources: &HashMap<String, u64>) -> Vec<u64> {
    let mut by_name: Vec<(&String, u64)> = sources.iter().map(|(s, c)| (s, *c)).collect();
    by_name.sort();
    let mut rank = vec![0u64; sources.len() + 1];
    for (r, (_, code)) in by_name.iter().enumerate() {
        rank[*code as usize] = r as u64;
    }
    rank
}

/// A recorded transition of one instance.
struct Transition {
    instance: String,
    t_s: f64,
    old: Option<BreakerState>,
    new: Option<BreakerState>,
    reset_s: Option<f64>,
}

/// Transitions per host and instance, in time order.
fn transitions_by_host(transitions: &DataFrame) -> PolarsResult<BTreeMap<String, Vec<Transition>>> {
    let mut out: BTreeMap<String, Vec<Transition>> = BTreeMap::new();
    let h = strings(transitions, "host")?;
    let inst = strings(transitions, "instance")?;
    let t = micros(transitions, "t")?;
    let old = strings(transitions, "old_state")?;
    let new = strings(transitions, "new_state")?;
    let reset = floats(transitions, "reset_timeout_s")?;
    for i in 0..transitions.height() {
        out.entry(h[i].clone()).or_default().push(Transition {
            instance: inst[i].clone(),
            t_s: us_to_s(t[i]),
            old: state(&old[i]),
            new: state(&new[i]),
            reset_s: reset[i],
        });
    }
    Ok(out)
}

/// The incidents' spans per host.
fn incidents_by_host(incidents: &DataFrame) -> PolarsResult<BTreeMap<String, Vec<Span>>> {
    let mut out: BTreeMap<String, Vec<Span>> = BTreeMap::new();
    let h = strings(incidents, "host")?;
    let (start, end) = (micros(incidents, "start")?, micros(incidents, "end")?);
    for i in 0..incidents.height() {
        out.entry(h[i].clone()).or_default().push(Span {
            start_s: us_to_s(start[i]),
            end_s: us_to_s(end[i]),
        });
    }
    Ok(out)
}

/// What one host's traffic is built from.
struct HostInput<'a> {
    host: &'a str,
    rows: HostRows,
    transitions: Vec<Transition>,
    /// The host's incidents, merged.
    spans: Vec<Span>,
    rank: &'a [u64],
    window_s: (f64, f64),
    config: &'a BreakerConfig,
    model: &'a CrawlerModel,
    replay_model: &'a ReplayModel,
}

/// One host's traffic: its calls per instance in time order (with the failures the
/// recorded opens prove and the gaps filled), its incidents with their failure rates,
/// and what its recorded breakers did. `logged`: whether an instance logged outcomes.
fn host_traffic(input: HostInput<'_>, logged: impl Fn(&str) -> bool) -> HostTraffic {
    let HostInput {
        host,
        rows: host_rows,
        transitions: host_transitions,
        spans,
        rank,
        window_s: (ws, we),
        config,
        model,
        replay_model,
    } = input;
    let mut instances: Vec<String> = host_rows
        .instances
        .iter()
        .cloned()
        .chain(host_transitions.iter().map(|t| t.instance.clone()))
        .collect();
    instances.sort();
    instances.dedup();
    let index = |name: &str| {
        instances
            .binary_search_by(|n| n.as_str().cmp(name))
            .unwrap_or(0) as u32
    };
    // Provisional codes (first seen) to positions in the sorted instance list.
    let remap: Vec<u32> = host_rows.instances.iter().map(|n| index(n)).collect();
    // The busiest role over network rows (ties: the first by name).
    let busiest = host_rows
        .roles
        .iter()
        .fold(None::<(&str, u64)>, |best, (r, n)| match best {
            Some((_, b)) if b >= *n => best,
            _ => Some((r.as_str(), *n)),
        })
        .map(|(r, _)| r.to_owned());
    let policy = ReplayPolicy::from_config(
        &model.policy(config, host, busiest.as_deref()),
        config.rolling,
    );

    // Each instance's requests where it logged its outcomes (its rows).
    let logged_requests: Vec<Option<u64>> = instances
        .iter()
        .map(|n| host_rows.logged_rows.get(n).copied())
        .collect();
    // The rows' calls, then the logged outcomes', as they were read.
    let host_rows_said = host_rows.said;
    let mut recorded_calls = host_rows.calls;
    recorded_calls.extend(host_rows.logged_calls);
    for c in &mut recorded_calls {
        c.instance = remap[c.instance as usize];
        c.seq = seq(rank[(c.seq >> SEQ_ID_BITS) as usize], c.seq & SEQ_ID_MASK);
    }
    recorded_calls.sort_unstable_by(|a, b| a.t_s.total_cmp(&b.t_s).then(a.seq.cmp(&b.seq)));
    estimate_retried_raised(&mut recorded_calls);
    let cooldowns = cooldown_sign(&recorded_calls, policy.retry_after_cap_s);
    let steps: Vec<(u32, f64, Option<BreakerState>, Option<BreakerState>)> = host_transitions
        .iter()
        .map(|t| (index(&t.instance), t.t_s, t.old, t.new))
        .collect();
    // Each attempt at its own time, as the replay and the calibration's fit count them:
    // the calls the replay gets, but for the gaps' synthetic calls (`fill_gaps` merges
    // those in, and spreads nothing). The rows as rows stay for the incidents' and gaps'
    // rules below.
    let mut spread = spread_retries(recorded_calls.clone());
    in_flight_in_open_spells(&mut spread, &steps);
    let hidden = hidden_failures(&spread, &steps, policy.fail_max, replay_model);
    // The host's own word on cache hits and exceptions, where its rows give one: the
    // runs are counted as its breaker counted them.
    let said_model = ReplayModel {
        cache_hit_is_success: host_rows_said
            .identifies(Field::CacheHitIsSuccess)
            .map_or(replay_model.cache_hit_is_success, |(v, _, _)| v),
        exceptions_are_failures: host_rows_said
            .identifies(Field::ExceptionsAreFailures)
            .map_or(replay_model.exceptions_are_failures, |(v, _, _)| v),
        ..*replay_model
    };
    let repeat = overcounted_runs(&spread, &steps, policy.fail_max, &said_model);
    let inferred = hidden.len() as u64;
    if !hidden.is_empty() {
        spread.extend_from_slice(&hidden);
        recorded_calls.extend(hidden);
        recorded_calls.sort_by(|a, b| a.t_s.total_cmp(&b.t_s).then(a.seq.cmp(&b.seq)));
    }

    let spans = trimmed_to_failures(&spans, &recorded_calls, &steps, policy.reset_timeout_s);
    let trials: Vec<(f64, bool)> = steps
        .iter()
        .filter(|(_, _, old, _)| *old == Some(BreakerState::HalfOpen))
        .filter_map(|(_, t, _, new)| match new {
            Some(BreakerState::Open) => Some((*t, true)),
            Some(BreakerState::Closed) => Some((*t, false)),
            _ => None,
        })
        .collect();
    let (incs, background) =
        incidents_with_rates(&spans, &recorded_calls, &trials, policy.reset_timeout_s);
    let (recorded, gaps) = recorded_breakers(
        &host_transitions,
        &recorded_calls,
        &index,
        instances.len(),
        &policy,
        replay_model,
        we,
    );
    let rates = unblocked_rates(&recorded_calls, &logged_requests, &gaps, (ws, we));
    drop(recorded_calls);
    let calls = fill_gaps(spread, &gaps, &incs, background, &rates);
    let n_logged = instances.iter().filter(|n| logged(n)).count();
    HostTraffic {
        host: String::new(),
        inferred_failures: inferred,
        transitions: steps,
        logged_instances: n_logged,
        instances,
        calls,
        incidents: incs,
        recorded,
        policy,
        said: host_rows_said,
        cooldowns,
        repeat,
    }
}

/// What a host's rows (in time order) show of a success clearing a cooldown
/// ([`CooldownSign`]), per process: the cooldowns its rows' Retry-After set (capped at
/// `cap_s`, overlapping ones joined), the first network success in each, and the
/// requests that began in it (a second's margin at each end: a start is estimated from
/// the row's elapsed time; a row without one is not counted).
fn cooldown_sign(calls: &[Call], cap_s: f64) -> CooldownSign {
    let mut out = CooldownSign::default();
    let rows = |inst: u32| {
        calls
            .iter()
            .filter(move |c| c.instance == inst && c.is_row())
    };
    let instances = calls.iter().map(|c| c.instance).max().map_or(0, |m| m + 1);
    for inst in 0..instances {
        let mut cooldowns: Vec<(f64, f64)> = Vec::new();
        for c in rows(inst).filter(|c| c.failed() && c.kind == Kind::Response) {
            let Some(ra) = c.retry_after_s.filter(|r| *r > 0.0) else {
                continue;
            };
            let until = c.t_s + ra.min(cap_s);
            match cooldowns.last_mut() {
                Some(last) if c.t_s <= last.1 => last.1 = last.1.max(until),
                _ => cooldowns.push((c.t_s, until)),
            }
        }
        if cooldowns.is_empty() {
            continue;
        }
        let successes: Vec<f64> = rows(inst)
            .filter(|c| c.kind == Kind::Response && c.outcome == Outcome::Success)
            .map(|c| c.t_s)
            .collect();
        // An elapsed time longer than a request can take only puts its start earlier.
        let mut starts: Vec<f64> = rows(inst)
            .filter(|c| c.kind != Kind::CacheHit && c.elapsed_s > 0.0)
            .map(|c| c.t_s - c.elapsed_s)
            .collect();
        starts.sort_by(f64::total_cmp);
        for (from, until) in cooldowns {
            let i = successes.partition_point(|t| *t <= from);
            let success = successes.get(i).copied().filter(|t| *t < until);
            out.with_success += u64::from(success.is_some());
            let j = starts.partition_point(|t| *t <= from + 1.0);
            for start in starts[j..].iter().take_while(|t| **t < until - 1.0) {
                if success.is_some_and(|s| s < *start) {
                    out.starts_after_success += 1;
                } else {
                    out.starts_without_success += 1;
                }
            }
        }
    }
    out
}

/// The span of `spans` (sorted, disjoint) that holds `t`.
fn span_at(spans: &[Span], t: f64) -> Option<usize> {
    let i = spans.partition_point(|sp| sp.end_s <= t);
    spans.get(i).is_some_and(|sp| sp.start_s <= t).then_some(i)
}

/// The incidents as the replay weighs them. `detect` finds incidents in buckets, so a
/// span starts up to a bucket before the host failed and ends up to a bucket after it
/// recovered: a call a longer reset timeout blocks in those minutes is a healthy call
/// lost, not a failure spared. Each span is cut to its first and last failure: the
/// rows' (a retried row's first attempt where the request began, its time less its
/// elapsed time when that is no longer than a request can take; its last failed
/// attempt one attempt's share before its row when it then succeeded; a row of a
/// request that raised at its time) and the breakers' opens. A span without any keeps
/// its bounds. Where a breaker kept failing its half-open trials the host failed too,
/// whether or not the rows showed enough to find an incident there ([`open_chains`]):
/// those spans are added, and the result is sorted and disjoint.
fn trimmed_to_failures(
    spans: &[Span],
    recorded_calls: &[Call],
    steps: &[(u32, f64, Option<BreakerState>, Option<BreakerState>)],
    reset_s: f64,
) -> Vec<Span> {
    let mut bounds = vec![(f64::INFINITY, f64::NEG_INFINITY); spans.len()];
    let mut add = |at: f64, first: f64, last: f64| {
        if let Some(j) = span_at(spans, at) {
            bounds[j].0 = bounds[j].0.min(first);
            bounds[j].1 = bounds[j].1.max(last);
        }
    };
    for c in recorded_calls.iter().filter(|c| attempts_failed(c) > 0) {
        let k = c.retried_failures;
        // The first failed attempt where the request began (as `spread_retries` puts
        // it), the last one an attempt's share of the request's time before its row
        // when it then succeeded; an elapsed time longer than a request can take says
        // nothing of when it began.
        let took = Some(c.elapsed_s)
            .filter(|e| (0.0..=longest_request_s(k)).contains(e) && k > 0)
            .unwrap_or(0.0);
        let first = c.t_s - took;
        let last = if c.failed() || c.kind == Kind::Exception {
            c.t_s
        } else {
            c.t_s - took / f64::from(k + 1)
        };
        add(c.t_s, first, last);
    }
    for &(_, t, old, new) in steps {
        if new == Some(BreakerState::Open) && old != Some(BreakerState::Open) {
            add(t, t, t);
        }
    }
    let cut = spans.iter().zip(&bounds).map(|(sp, &(first, last))| {
        if first <= last {
            // An instant gets a millisecond, so that it holds its call.
            Span {
                start_s: first,
                end_s: last + 1e-3,
            }
        } else {
            *sp
        }
    });
    merge_spans(
        open_chains(steps, spans, reset_s)
            .into_iter()
            .chain(cut)
            .collect(),
    )
}

/// Each breaker's runs of failing probes, from its recorded transitions: from an open
/// (closed -> open) to the last half-open trial that failed, and on to halfway to the
/// trial that closed it (the host recovered in between, as far as the night can tell;
/// at most a reset timeout, `reset_s`, after the last failed trial when no call came
/// for a while). The host failed all along (each reopen is a trial that failed),
/// whether or not the rows showed enough to find an incident there. An open whose
/// first trial succeeded counts so only inside an incident `detect` found (`spans`);
/// elsewhere it is an instant, since a burst of background failures looks the same,
/// and the calls it blocked stay false trips.
fn open_chains(
    steps: &[(u32, f64, Option<BreakerState>, Option<BreakerState>)],
    spans: &[Span],
    reset_s: f64,
) -> Vec<Span> {
    let mut open: HashMap<u32, (f64, f64)> = HashMap::new();
    let mut out = Vec::new();
    for &(inst, t, old, new) in steps {
        match (old, new) {
            (Some(BreakerState::HalfOpen), Some(BreakerState::Open)) => {
                if let Some(chain) = open.get_mut(&inst) {
                    chain.1 = t;
                }
            }
            (_, Some(BreakerState::Open)) => {
                if let Some((a, b)) = open.insert(inst, (t, t)) {
                    out.push(Span {
                        start_s: a,
                        end_s: b + 1e-3,
                    });
                }
            }
            (_, Some(BreakerState::Closed)) => {
                if let Some((a, b)) = open.remove(&inst) {
                    let failing = b > a || span_at(spans, a).is_some();
                    let recovered = if failing {
                        ((t - b) / 2.0).clamp(0.0, reset_s.max(0.0))
                    } else {
                        0.0
                    };
                    out.push(Span {
                        start_s: a,
                        end_s: b + recovered + 1e-3,
                    });
                }
            }
            _ => {}
        }
    }
    out.extend(open.into_values().map(|(a, b)| Span {
        start_s: a,
        end_s: b + 1e-3,
    }));
    out
}

/// Failed attempts a row stands for: its retried ones, and its last when it failed or
/// raised.
fn attempts_failed(c: &Call) -> u64 {
    c.failed_attempts() + u64::from(c.kind == Kind::Exception)
}

/// The host's incidents with their failure rates, and the background rate, both per
/// attempt. Incidents of different kinds may overlap: health is their union (`spans`
/// are merged). A span's rate is what the synthetic calls of the recorded breakers'
/// gaps inside it fail at, and the rows inside it say little about those gaps: a
/// breaker opens when the host fails, and the requests it then denies leave no row, so
/// the rows come from the span's healthier minutes. The recorded half-open trials
/// (`trials`: when, and whether it failed) are the night's sample of the host while a
/// breaker was open: where the span has some, its rate is their failure share, with the
/// rows' share of failed attempts as one more trial; without any, the rows' share. A
/// trial belongs to the span that holds it, or to the one that ended at most `reset_s`
/// before it (the trial that closed a run of failed ones, see [`open_chains`]). The
/// background rate is the rows' outside every span.
fn incidents_with_rates(
    spans: &[Span],
    recorded_calls: &[Call],
    trials: &[(f64, bool)],
    reset_s: f64,
) -> (Vec<Incident>, f64) {
    // Per span: failed attempts and attempts of the rows, failed and all trials.
    let mut inside = vec![(0u64, 0u64, 0u64, 0u64); spans.len()];
    let (mut out_k, mut out_n) = (0u64, 0u64);
    for c in recorded_calls {
        let (k, n) = (attempts_failed(c), 1 + u64::from(c.retried_failures));
        match span_at(spans, c.t_s) {
            Some(j) => {
                inside[j].0 += k;
                inside[j].1 += n;
            }
            None => {
                out_k += k;
                out_n += n;
            }
        }
    }
    for &(t, failed) in trials {
        let closed = || {
            let i = spans.partition_point(|sp| sp.end_s <= t);
            i.checked_sub(1)
                .filter(|&j| t - spans[j].end_s <= reset_s.max(0.0))
        };
        if let Some(j) = span_at(spans, t).or_else(closed) {
            inside[j].2 += u64::from(failed);
            inside[j].3 += 1;
        }
    }
    let background = out_k as f64 / out_n.max(1) as f64;
    let incs: Vec<Incident> = spans
        .iter()
        .zip(&inside)
        .map(|(sp, &(k, n, tk, tn))| {
            let rows = if n > 0 {
                k as f64 / n as f64
            } else {
                background
            };
            Incident {
                start_s: sp.start_s,
                end_s: sp.end_s,
                rate: (tk as f64 + rows) / (tn as f64 + 1.0),
            }
        })
        .collect();
    (incs, background)
}

/// What the recorded breakers did, and their gaps: each open span until its reset
/// timeout ran out (the logged one, else the configured one) or the instance's next
/// transition came, and the Retry-After cooldowns honoured (capped), in the cooldown
/// scope of the model (`fleet_cooldowns`: every instance waits) and until a success the
/// breaker counted cleared them where the model's successes do: the crawler sent its
/// requests again from then on, and they have rows (`recorded_calls`, in time order).
fn recorded_breakers(
    host_transitions: &[Transition],
    recorded_calls: &[Call],
    index: &dyn Fn(&str) -> u32,
    instances: usize,
    policy: &ReplayPolicy,
    model: &ReplayModel,
    we: f64,
) -> (Recorded, Vec<Gap>) {
    let fleet_cooldowns = model.fleet_cooldowns;
    let mut recorded = Recorded {
        instance_opens: vec![0; instances],
        ..Recorded::default()
    };
    let mut gaps = Vec::new();
    for (k, tr) in host_transitions.iter().enumerate() {
        let inst = index(&tr.instance);
        if tr.new == Some(BreakerState::Open) {
            recorded.opens += 1;
            recorded.instance_opens[inst as usize] += 1;
            let reset_s = tr.reset_s.unwrap_or(policy.reset_timeout_s);
            let next = host_transitions[k + 1..]
                .iter()
                .find(|n| n.instance == tr.instance)
                .map_or(we, |n| n.t_s);
            gaps.push(Gap {
                instance: inst,
                start_s: tr.t_s,
                end_s: next.min(tr.t_s + reset_s),
            });
        }
        if tr.old == Some(BreakerState::HalfOpen) && tr.new == Some(BreakerState::Closed) {
            recorded.half_open_closed += 1;
        }
        if tr.old == Some(BreakerState::HalfOpen) && tr.new == Some(BreakerState::Open) {
            recorded.half_open_reopened += 1;
        }
    }
    // The successes that cleared a cooldown, per cooldown slot, in time order.
    let slot = |c: &Call| model.cooldown_slot(c.instance as usize);
    let mut clears: Vec<Vec<f64>> = vec![Vec::new(); if fleet_cooldowns { 1 } else { instances }];
    if model.success_clears_cooldown {
        for c in recorded_calls.iter().filter(|c| !c.synthetic) {
            if model.outcome(c) == Some(Outcome::Success)
                && let Some(s) = clears.get_mut(slot(c))
            {
                s.push(c.t_s);
            }
        }
    }
    for c in recorded_calls {
        if let (true, Some(ra)) = (c.failed(), c.retry_after_s) {
            let cleared = clears.get(slot(c)).and_then(|s| {
                let i = s.partition_point(|t| *t <= c.t_s);
                s.get(i).copied()
            });
            let end = (c.t_s + ra.min(policy.retry_after_cap_s))
                .min(we)
                .min(cleared.unwrap_or(f64::INFINITY));
            let blocked: Vec<u32> = if fleet_cooldowns {
                (0..instances as u32).collect()
            } else {
                vec![c.instance]
            };
            gaps.extend(blocked.into_iter().map(|instance| Gap {
                instance,
                start_s: c.t_s,
                end_s: end,
            }));
        }
    }
    (recorded, merge_gaps(gaps))
}

/// Each instance's call rate while it was not blocked, measured over at least a tenth of
/// the window: an instance blocked nearly all day would otherwise get an absurd rate (its
/// few probes over a few seconds) and millions of synthetic calls.
///
/// An instance replayed from its logged outcomes calls at its rows' rate
/// (`logged_requests`, one per instance): its outcomes count each attempt, and the final
/// one again where the crawler repeats it. Counted from them, the sink's flapping host
/// got synthetic calls at twice its rate, each blocked one a false trip, and a
/// `fail_max 3 -> 5` whose replayed saving was mostly those.
fn unblocked_rates(
    recorded_calls: &[Call],
    logged_requests: &[Option<u64>],
    gaps: &[Gap],
    (ws, we): (f64, f64),
) -> Vec<f64> {
    let instances = logged_requests.len();
    let mut counts = vec![0u64; instances];
    for c in recorded_calls {
        counts[c.instance as usize] += 1;
    }
    for (n, r) in counts.iter_mut().zip(logged_requests) {
        if let Some(r) = r {
            *n = *r;
        }
    }
    (0..instances)
        .map(|i| {
            let gap_s: f64 = gaps
                .iter()
                .filter(|g| g.instance as usize == i)
                .map(|g| g.end_s - g.start_s)
                .sum();
            let open_time = ((we - ws) - gap_s).max(0.1 * (we - ws)).max(1.0);
            counts[i] as f64 / open_time
        })
        .collect()
}

/// A call's `seq`: its source's rank above the low bits of its row id.
const SEQ_ID_BITS: u32 = 40;
const SEQ_ID_MASK: u64 = (1 << SEQ_ID_BITS) - 1;

/// The `seq` of a call: `source` (its rank, or provisional code) above the row id's low
/// bits.
fn seq(source: u64, id: u64) -> u64 {
    (source << SEQ_ID_BITS) | (id & SEQ_ID_MASK)
}

/// Every host's calls, from its logged outcomes, then from its rows. Names are
/// interned per host; a call's `seq` holds its source's provisional code until the
/// sources are ranked.
#[derive(Default)]
struct Rows {
    hosts: BTreeMap<String, HostRows>,
    /// Provisional source codes, from 1 in the order first seen (0: a row without one).
    sources: HashMap<String, u64>,
    /// Each host's instances replayed from their logged outcomes.
    logged: HashMap<String, HashSet<String>>,
}

/// One host's calls with provisional instance codes (in the order instances were first
/// seen), and its network calls per role.
#[derive(Default)]
struct HostRows {
    calls: Vec<Call>,
    said: Said,
    logged_calls: Vec<Call>,
    /// Rows of the instances replayed from their logged outcomes, per instance name:
    /// their requests (the outcomes count each attempt, and the final one as often as
    /// the crawler records it), for the gaps' call rate.
    logged_rows: HashMap<String, u64>,
    instances: Vec<String>,
    codes: HashMap<String, u32>,
    roles: BTreeMap<String, u64>,
}

impl HostRows {
    /// The provisional code of an instance, given on first sight.
    fn code(&mut self, name: &str) -> u32 {
        if let Some(c) = self.codes.get(name) {
            return *c;
        }
        let c = self.instances.len() as u32;
        self.instances.push(name.to_owned());
        self.codes.insert(name.to_owned(), c);
        c
    }
}

impl Rows {
    /// Whether an instance of `host` is replayed from its logged outcomes.
    fn is_logged(&self, host: &str, name: &str) -> bool {
        self.logged
            .get(host)
            .is_some_and(|names| names.contains(name))
    }

    fn host(&mut self, host: &str) -> &mut HostRows {
        if !self.hosts.contains_key(host) {
            self.hosts.insert(host.to_owned(), HostRows::default());
        }
        self.hosts.get_mut(host).expect("inserted")
    }

    /// A source's provisional code.
    fn source(&mut self, source: Option<&str>) -> u64 {
        let Some(s) = source else { return 0 };
        if let Some(c) = self.sources.get(s) {
            return *c;
        }
        let c = self.sources.len() as u64 + 1;
        self.sources.insert(s.to_owned(), c);
        c
    }

    /// The window's rows the breakers counted (host, role, source, run_id, t, id,
    /// outcome, retried_failures, is_net, ra, elapsed), breaker instances under `scope`.
    fn add_events(&mut self, df: &DataFrame, scope: crate::crawler::Scope) -> PolarsResult<()> {
        let keys = crate::metrics::RowKeys::of(df)?;
        let instances = keys.breakers(scope);
        // What each instance is called, as `metrics::with_instance` names it.
        let names: Vec<String> = (0..instances.names.len())
            .map(|k| instances.name(k, scope))
            .collect();
        let logged: Vec<bool> = instances
            .names
            .iter()
            .zip(&names)
            .map(|([host, ..], name)| self.is_logged(host, name))
            .collect();
        let sources: Vec<u64> = keys
            .sources
            .values
            .iter()
            .map(|s| self.source(s.as_deref()))
            .collect();
        let t = df.column("t")?.i64()?;
        let id = df.column("id")?.i64()?;
        let outcome = df.column("outcome")?.i64()?;
        let retried = df.column("retried_failures")?.i64()?;
        let net = df.column("is_net")?.bool()?;
        let kind = df.column("kind")?.i32()?;
        let ra = df.column("ra")?.f64()?;
        let el = df.column("elapsed")?.f64()?;
        let said = df.column("said")?.i32()?;
        let throttled = df.column("throttled")?.bool()?;
        let role_of: Vec<u8> = keys
            .roles
            .values
            .iter()
            .map(|r| super::role_index(r.as_deref().unwrap_or("")))
            .collect();
        // Each host's calls and network rows per role, by code; each instance's
        // provisional code in its host (given on first sight, as rows come).
        let mut calls: Vec<Vec<Call>> = vec![Vec::new(); keys.hosts.values.len()];
        let mut roles = vec![vec![0u64; keys.roles.values.len()]; keys.hosts.values.len()];
        let mut says = vec![Said::default(); keys.hosts.values.len()];
        let mut code: Vec<Option<u32>> = vec![None; names.len()];
        let mut logged_rows = vec![0u64; names.len()];
        let columns = t
            .iter()
            .zip(id.iter())
            .zip(outcome.iter())
            .zip(retried.iter())
            .zip(net.iter())
            .zip(kind.iter())
            .zip(ra.iter())
            .zip(el.iter())
            .zip(said.iter())
            .zip(throttled.iter());
        for (i, (((((((((t, id), outcome), retried), net), kind), ra), el), said), throttled)) in
            columns.enumerate()
        {
            let inst = instances.of_row[i] as usize;
            if logged[inst] {
                logged_rows[inst] += 1;
                continue;
            }
            let h = keys.hosts.of_row[i] as usize;
            if net.unwrap_or(false) {
                roles[h][keys.roles.of_row[i] as usize] += 1;
            }
            let say = &mut says[h];
            match (kind, said) {
                (Some(0), s) => {
                    say.responses += 1;
                    say.responses_said += u64::from(matches!(s, Some(1 | 2)));
                }
                (Some(1), s) => {
                    say.cache_rows += 1;
                    say.cache_success += u64::from(s == Some(1));
                    say.cache_untouched += u64::from(s == Some(0));
                }
                (Some(2), s) => {
                    say.exception_rows += 1;
                    say.exceptions_failure += u64::from(s == Some(2));
                    say.exceptions_none += u64::from(s == Some(0));
                }
                _ => {}
            }
            let instance = *code[inst]
                .get_or_insert_with(|| self.host(&instances.names[inst][0]).code(&names[inst]));
            let retried_failures = retried.unwrap_or(0).clamp(0, i64::from(u32::MAX)) as u32;
            calls[h].push(Call {
                t_s: us_to_s(t.unwrap_or(0)),
                instance,
                retried_failures,
                // A request that raised retried the same exception; a response's are
                // estimated once the host's calls are all read.
                retried_raised: if kind == Some(2) { retried_failures } else { 0 },
                outcome: match (kind, outcome) {
                    (Some(0), Some(1)) => Outcome::Failure,
                    (Some(2), _) => Outcome::Uncounted,
                    _ => Outcome::Success,
                },
                kind: match kind {
                    Some(2) => Kind::Exception,
                    Some(1) => Kind::CacheHit,
                    _ => Kind::Response,
                },
                retry_after_s: ra,
                throttled: throttled.unwrap_or(false),
                elapsed_s: el.unwrap_or(0.0).max(0.0) / 1000.0,
                synthetic: false,
                exact: false,
                in_flight: false,
                retry: false,
                spread: false,
                seq: seq(
                    sources[keys.sources.of_row[i] as usize],
                    id.unwrap_or(0) as u64,
                ),
                role: role_of[keys.roles.of_row[i] as usize],
            });
        }
        for (inst, n) in logged_rows.into_iter().enumerate().filter(|(_, n)| *n > 0) {
            *self
                .host(&instances.names[inst][0])
                .logged_rows
                .entry(names[inst].clone())
                .or_default() += n;
        }
        for (h, ((calls, roles), say)) in calls.into_iter().zip(roles).zip(says).enumerate() {
            if calls.is_empty() {
                continue;
            }
            let hr = self.host(&keys.hosts.name(h as u32));
            hr.calls.extend(calls);
            hr.said += say;
            for (r, n) in roles.into_iter().enumerate() {
                match keys.roles.values[r].as_deref() {
                    Some(role) if n > 0 && !role.is_empty() => {
                        *hr.roles.entry(role.to_owned()).or_default() += n;
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    }

    /// The outcomes the breakers logged themselves.
    fn add_logged(&mut self, df: &DataFrame) -> PolarsResult<()> {
        let h = df.column("host")?.str()?;
        let inst = df.column("instance")?.str()?;
        let src = df.column("source")?.str()?;
        let t = df.column("t")?.i64()?;
        let id = df.column("id")?.i64()?;
        let failed = df.column("failed")?.bool()?;
        let in_flight = df.column("in_flight")?.bool()?;
        for i in 0..df.height() {
            let host = h.get(i).unwrap_or_default();
            let name = inst.get(i).unwrap_or_default();
            match self.logged.get_mut(host) {
                Some(names) => {
                    if !names.contains(name) {
                        names.insert(name.to_owned());
                    }
                }
                None => {
                    self.logged
                        .insert(host.to_owned(), HashSet::from([name.to_owned()]));
                }
            }
            let source = self.source(src.get(i));
            let hr = self.host(host);
            let code = hr.code(name);
            hr.logged_calls.push(Call {
                t_s: us_to_s(t.get(i).unwrap_or(0)),
                instance: code,
                retried_failures: 0,
                retried_raised: 0,
                outcome: if failed.get(i).unwrap_or(false) {
                    Outcome::Failure
                } else {
                    Outcome::Success
                },
                kind: Kind::Response,
                retry_after_s: None,
                throttled: false,
                elapsed_s: 0.0,
                synthetic: false,
                exact: true,
                in_flight: in_flight.get(i).unwrap_or(false),
                retry: false,
                spread: false,
                seq: seq(source, id.get(i).unwrap_or(0) as u64),
                role: 0,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::parquet::table_schema;
    use crate::telemetry::schema::{BREAKER_OUTCOMES, BREAKER_TRANSITIONS};

    #[test]
    fn an_open_spell_runs_from_an_open_to_its_instance_turning_half_open() {
        use BreakerState::{Closed, HalfOpen, Open};
        let steps = [
            (0, 100.0, Some(Closed), Some(Open)),
            // Another instance's transitions in between do not end instance 0's spell.
            (1, 110.0, Some(Closed), Some(Open)),
            (1, 150.0, Some(Open), Some(HalfOpen)),
            (0, 131.0, Some(Open), Some(HalfOpen)),
            // A failed trial reopens: a new spell from the reopen.
            (0, 131.5, Some(HalfOpen), Some(Open)),
            (0, 200.0, Some(Open), Some(HalfOpen)),
            (0, 200.2, Some(HalfOpen), Some(Closed)),
            // A half-open without a recorded open before it (the window began open).
            (1, 400.0, Some(Open), Some(HalfOpen)),
            // An open still standing at the window's end.
            (0, 500.0, Some(Closed), Some(Open)),
        ];
        let spells = open_spells(&steps).expect("spells");
        // 31, 40 and 68.5 s: the median is 40.
        assert_eq!(spells.count, 3);
        assert_eq!(spells.median_s, 40.0);
        assert_eq!(open_spells(&steps[..1]), None);
    }

    /// Rows of `http_events`: (source, run, id, status), all at the same instant.
    fn events(rows: &[(&str, &str, i64, i64)]) -> LazyFrame {
        let n = rows.len();
        let ts = Series::new("ts".into(), vec![5_000_000i64; n])
            .cast(&DataType::Datetime(TimeUnit::Microseconds, None))
            .expect("timestamps");
        df!(
            "source" => rows.iter().map(|r| r.0).collect::<Vec<_>>(),
            "run_id" => rows.iter().map(|r| r.1).collect::<Vec<_>>(),
            "id" => rows.iter().map(|r| r.2).collect::<Vec<_>>(),
            "status" => rows.iter().map(|r| r.3).collect::<Vec<_>>(),
            "host" => vec!["h.example"; n],
            "role" => vec!["metadata"; n],
            "method" => vec!["GET"; n],
            "from_cache" => vec![false; n],
            "error" => vec![None::<&str>; n],
            "retry_after_s" => vec![None::<i64>; n],
            "retry_count" => vec![0i64; n],
            "breaker_recorded" => vec![None::<&str>; n],
            "elapsed_ms" => vec![10i64; n],
        )
        .expect("events")
        .lazy()
        .with_column(lit(ts).alias("ts"))
    }

    fn traffic(events: LazyFrame, outcomes: LazyFrame) -> Traffic {
        let config = BreakerConfig::parse(
            "defaults:\n  fail_max: 5\n  reset_timeout_s: 60\n",
            std::path::Path::new("breakers.yaml"),
        )
        .expect("config");
        let model = CrawlerModel::default();
        let incidents = df!(
            "host" => Vec::<&str>::new(),
            "start" => Vec::<i64>::new(),
            "end" => Vec::<i64>::new(),
        )
        .expect("incidents");
        let transitions = DataFrame::empty_with_schema(&table_schema(&BREAKER_TRANSITIONS));
        build(TrafficInput {
            events: crate::metrics::classify(events, &config, &model),
            transitions: transitions.lazy(),
            outcomes,
            incidents: &incidents,
            window_us: (0, 3_600_000_000),
            config: &config,
            model: &model,
        })
        .expect("traffic")
    }

    #[test]
    fn calls_at_one_instant_are_ordered_by_source_name_not_by_the_order_read() {
        // "zeta" is read first; "alpha" sorts first, and so do its calls.
        let outcomes = DataFrame::empty_with_schema(&table_schema(&BREAKER_OUTCOMES)).lazy();
        let t = traffic(
            events(&[
                ("zeta", "r1", 1, 500),
                ("alpha", "r1", 9, 200),
                ("zeta", "r1", 2, 200),
            ]),
            outcomes,
        );
        let host = &t.hosts[0];
        let names: Vec<&str> = host
            .calls
            .iter()
            .map(|c| host.instances[c.instance as usize].as_str())
            .collect();
        assert_eq!(names, ["alpha\u{1f}r1", "zeta\u{1f}r1", "zeta\u{1f}r1"]);
        let ids: Vec<u64> = host.calls.iter().map(|c| c.seq & SEQ_ID_MASK).collect();
        assert_eq!(ids, [9, 1, 2]);
        let ranks: Vec<u64> = host.calls.iter().map(|c| c.seq >> SEQ_ID_BITS).collect();
        assert_eq!(ranks, [0, 1, 1]);
        assert_eq!(host.calls[1].outcome, Outcome::Failure);
    }

    #[test]
    fn an_instance_that_logged_its_outcomes_is_replayed_from_them_not_from_its_rows() {
        let outcomes = df!(
            "source" => ["mid", "mid"],
            "id" => [1i64, 2],
            "host" => ["h.example", "h.example"],
            "run_id" => ["r2", "r2"],
            "scope" => [None::<&str>, None],
            "outcome" => ["failure", "success"],
            "state" => [Some("open"), None::<&str>],
        )
        .expect("outcomes")
        .lazy()
        .with_column(
            lit(5_000_000i64)
                .cast(DataType::Datetime(TimeUnit::Microseconds, None))
                .alias("ts"),
        );
        let t = traffic(
            events(&[("mid", "r2", 7, 500), ("alpha", "r1", 3, 200)]),
            outcomes,
        );
        let host = &t.hosts[0];
        assert_eq!(host.logged_instances, 1);
        let summary: Vec<(&str, bool, Outcome, bool)> = host
            .calls
            .iter()
            .map(|c| {
                (
                    host.instances[c.instance as usize].as_str(),
                    c.exact,
                    c.outcome,
                    c.in_flight,
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                ("alpha\u{1f}r1", false, Outcome::Success, false),
                ("mid\u{1f}r2", true, Outcome::Failure, true),
                ("mid\u{1f}r2", true, Outcome::Success, false),
            ],
            "the failure was logged while the breaker stood open"
        );
    }

    #[test]
    fn retried_attempts_raise_in_the_share_of_the_hour_and_count_only_where_exceptions_do() {
        let call = |t_s: f64, kind: Kind, outcome: Outcome, retried: u32| Call {
            t_s,
            instance: 0,
            retried_failures: retried,
            retried_raised: if kind == Kind::Exception { retried } else { 0 },
            outcome,
            kind,
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
        };
        // Hour 0: one row that raised and one that failed with a status (half raised);
        // two successes after 3 and 1 retried failures share 2 raised attempts (1.5 then
        // 0.5 carried). Hour 1 has no failed row: the night's share (1 of 2).
        let mut calls = vec![
            call(10.0, Kind::Exception, Outcome::Uncounted, 3),
            call(20.0, Kind::Response, Outcome::Failure, 0),
            call(30.0, Kind::Response, Outcome::Success, 3),
            call(40.0, Kind::Response, Outcome::Success, 1),
            call(3700.0, Kind::Response, Outcome::Success, 2),
        ];
        let mut without = calls.clone();
        estimate_retried_raised(&mut calls);
        let raised: Vec<u32> = calls.iter().map(|c| c.retried_raised).collect();
        assert_eq!(raised, [3, 0, 1, 1, 1]);
        // A breaker that ignores exceptions counts the attempts that failed with a
        // status; one that counts them, every retried failure.
        let documented = ReplayModel::default();
        let counting = ReplayModel {
            exceptions_are_failures: true,
            ..documented
        };
        let counted = |m: &ReplayModel| {
            calls
                .iter()
                .map(|c| m.retried_failures(c))
                .collect::<Vec<_>>()
        };
        assert_eq!(counted(&documented), [0, 0, 2, 0, 1]);
        assert_eq!(counted(&counting), [3, 0, 3, 1, 2]);
        // Without a row that raised, no response's retried attempts raised.
        without.remove(0);
        estimate_retried_raised(&mut without);
        assert!(without.iter().all(|c| c.retried_raised == 0));
    }

    fn row(t_s: f64, kind: Kind, retried: u32, elapsed_s: f64) -> Call {
        Call {
            t_s,
            instance: 0,
            retried_failures: retried,
            retried_raised: 0,
            outcome: if kind == Kind::Exception {
                Outcome::Uncounted
            } else {
                Outcome::Success
            },
            kind,
            retry_after_s: None,
            throttled: false,
            elapsed_s,
            synthetic: false,
            exact: false,
            in_flight: false,
            retry: false,
            spread: false,
            seq: t_s as u64,
            role: 0,
        }
    }

    #[test]
    fn the_time_a_request_spent_beyond_its_responses_and_waits_was_spent_timing_out() {
        // Latency 0.2 s (rows without retries); a request that raised after 1 retry in
        // 50 s timed out at 25 s per attempt. tenacity waits at most 1.5 s, then 3 s.
        let mut throttled = row(300.0, Kind::Response, 0, 0.2);
        throttled.outcome = Outcome::Failure;
        throttled.retry_after_s = Some(20.0);
        let mut calls = vec![
            row(0.0, Kind::Response, 0, 0.2),
            row(1.0, Kind::Response, 0, 0.2),
            row(2.0, Kind::Exception, 1, 50.0),
            // 3 attempts' latency, both waits and a timeout (shorter than 25 s): one raised.
            row(100.0, Kind::Response, 2, 0.6 + 4.5 + 20.0),
            // Latency and waits only, or less than a connect timeout more: none.
            row(200.0, Kind::Response, 2, 0.6 + 4.5 + 4.0),
            // More than both retries could have timed out: both, no more.
            row(250.0, Kind::Response, 2, 200.0),
            throttled,
            // The Retry-After sent during the request explains its time: none.
            row(310.0, Kind::Response, 1, 0.4 + 1.5 + 20.0),
            // No elapsed time: the night's share of rows that raised (1 of 2 failed).
            row(400.0, Kind::Response, 2, 0.0),
        ];
        estimate_retried_raised(&mut calls);
        let raised: Vec<u32> = calls.iter().map(|c| c.retried_raised).collect();
        assert_eq!(raised, [0, 0, 0, 1, 0, 2, 0, 0, 1]);
    }

    #[test]
    fn a_request_longer_than_its_timeouts_explain_waited_on_the_hosts_retry_after() {
        // Latency 0.2 s; the host sends Retry-After 130 s (a 503 at 0 s); tenacity waits
        // at most 1.5 s, 3 s and 6 s before three retries; a read timeout is 30 s.
        let mut unavailable = row(0.0, Kind::Response, 0, 0.2);
        unavailable.outcome = Outcome::Failure;
        unavailable.retry_after_s = Some(130.0);
        let base = 0.8 + 10.5;
        let mut calls = vec![
            unavailable,
            row(1.0, Kind::Response, 0, 0.2),
            // Three waits on a Retry-After: none raised.
            row(1000.0, Kind::Response, 3, base + 3.0 * 130.0),
            // Two waits, and a little more: none.
            row(2000.0, Kind::Response, 3, base + 2.0 * 130.0 + 2.0),
            // One wait and two timeouts: two raised.
            row(3000.0, Kind::Response, 3, base + 130.0 + 60.0),
            // Timeouts explain it: three, as before.
            row(4000.0, Kind::Response, 3, base + 85.0),
            // Longer than any number of waits and timeouts explains: all three.
            row(5000.0, Kind::Response, 3, base + 1000.0),
            // Just over three timeouts, and shorter than a wait: three timed out.
            row(6000.0, Kind::Response, 3, base + 97.0),
        ];
        estimate_retried_raised(&mut calls);
        let raised: Vec<u32> = calls.iter().map(|c| c.retried_raised).collect();
        assert_eq!(raised, [0, 0, 0, 0, 2, 3, 3, 3]);
        // A host that sends no Retry-After: the time was spent timing out.
        calls[0].retry_after_s = None;
        for c in &mut calls {
            c.retried_raised = 0;
        }
        estimate_retried_raised(&mut calls);
        assert_eq!(calls[2].retried_raised, 3);
    }

    #[test]
    fn a_request_waited_on_the_retry_after_the_host_sent_nearest_it() {
        // The host asked for 110 s three times early in the night (its median), and for
        // 130 s at 10,000 s. A request of two retries that took 261.6 s (latency 0.2 s,
        // tenacity's waits at most 1.5 s and 3 s) waited twice on 130 s when it began
        // 138 s after that answer: none of its attempts raised. An hour and more away,
        // the median explains no number of waits: timeouts, as before.
        let unavailable = |t: f64, ra: f64| {
            let mut c = row(t, Kind::Response, 0, 0.2);
            c.outcome = Outcome::Failure;
            c.retry_after_s = Some(ra);
            c
        };
        let mut calls = vec![
            unavailable(0.0, 110.0),
            unavailable(10.0, 110.0),
            unavailable(20.0, 110.0),
            unavailable(10_000.0, 130.0),
            row(10_399.6, Kind::Response, 2, 261.6),
            row(14_000.0 + 261.6, Kind::Response, 2, 261.6),
        ];
        estimate_retried_raised(&mut calls);
        let raised: Vec<u32> = calls.iter().map(|c| c.retried_raised).collect();
        assert_eq!(raised, [0, 0, 0, 0, 0, 2]);
    }

    #[test]
    fn an_instance_that_logged_its_outcomes_calls_at_its_rows_rate() {
        // Instance 0 logged 4 outcomes (2 requests, each final outcome counted twice)
        // and wrote 2 rows; instance 1 replays its 3 rows. 100 s, none blocked.
        let mut calls: Vec<Call> = (0..4)
            .map(|k| row(f64::from(k), Kind::Response, 0, 0.0))
            .collect();
        for c in &mut calls {
            c.exact = true;
        }
        for k in 0..3 {
            let mut c = row(f64::from(10 + k), Kind::Response, 0, 0.0);
            c.instance = 1;
            calls.push(c);
        }
        let rates = unblocked_rates(&calls, &[Some(2), None], &[], (0.0, 100.0));
        assert_eq!(rates, [0.02, 0.03]);
    }

    #[test]
    fn retried_attempts_spread_into_a_recorded_open_spell_did_not_ask_there() {
        // Instance 0 opened at 100 and turned half-open at 200. A request that began at
        // 90 and ended at 210 after 2 retries has its second attempt spread to 150,
        // inside the spell. One that began at 96 and ended inside it, at 199, keeps its
        // row's last attempt asking (at the row's time), as do one that began at 120,
        // inside the spell, and every attempt of another instance.
        let mut long = row(210.0, Kind::Response, 2, 120.0);
        long.seq = 1;
        let mut ended_inside = row(199.0, Kind::Response, 1, 103.0);
        ended_inside.seq = 2;
        let mut began_inside = row(195.0, Kind::Response, 1, 75.0);
        began_inside.seq = 3;
        let mut other = row(210.0, Kind::Response, 2, 120.0);
        other.seq = 4;
        other.instance = 1;
        let steps = [
            (
                0,
                100.0,
                Some(BreakerState::Closed),
                Some(BreakerState::Open),
            ),
            (
                0,
                200.0,
                Some(BreakerState::Open),
                Some(BreakerState::HalfOpen),
            ),
        ];
        let mut calls = spread_retries(vec![long, ended_inside, began_inside, other]);
        in_flight_in_open_spells(&mut calls, &steps);
        let flights: Vec<(u64, f64, bool)> = calls
            .iter()
            .filter(|c| c.retry || c.spread)
            .map(|c| (c.seq, c.t_s, c.in_flight))
            .collect();
        assert_eq!(
            flights,
            [
                (1, 90.0, false),
                (4, 90.0, false),
                (2, 96.0, false),
                (3, 120.0, false),
                (1, 150.0, true),
                (4, 150.0, false),
                (3, 195.0, false),
                (2, 199.0, false),
                (1, 210.0, false),
                (4, 210.0, false),
            ]
        );
    }

    #[test]
    fn a_rows_retried_attempts_are_spread_over_its_elapsed_time_before_it() {
        let mut request = row(100.0, Kind::Response, 2, 9.0);
        request.outcome = Outcome::Failure;
        request.retried_raised = 1;
        let calls = spread_retries(vec![row(95.0, Kind::Response, 0, 0.2), request]);
        let seen: Vec<(f64, Kind, bool, bool, f64)> = calls
            .iter()
            .map(|c| (c.t_s, c.kind, c.retry, c.spread, c.elapsed_s))
            .collect();
        assert_eq!(
            seen,
            [
                (91.0, Kind::Exception, true, false, 4.5),
                (95.0, Kind::Response, false, false, 0.2),
                (95.5, Kind::Response, true, false, 0.2),
                (100.0, Kind::Response, false, true, 3.0),
            ]
        );
        assert!(calls.iter().filter(|c| c.retry).all(|c| c.failed()));
        // The attempt that raised lasted until the next one was sent (at most a read
        // timeout): the breaker counted it then, after the row at 95. The one that
        // failed with a status was counted when its answer came back, after the host's
        // latency (the row at 95 answered in 0.2 s without a retry).
        let counted: Vec<f64> = calls.iter().map(Call::counted_at).collect();
        assert_eq!(counted, [95.5, 95.0, 95.7, 100.0]);
        // A latency longer than the wait before the next attempt ends at its sending.
        let mut slow = row(200.0, Kind::Response, 2, 1.0);
        slow.outcome = Outcome::Failure;
        let counted: Vec<(f64, f64)> =
            spread_retries(vec![row(150.0, Kind::Response, 0, 2.0), slow])
                .iter()
                .filter(|c| c.retry)
                .map(|c| (c.t_s, c.counted_at()))
                .collect();
        assert_eq!(counted, [(199.0, 199.5), (199.5, 200.0)]);
        // Spreading twice changes nothing: the spread row keeps its count.
        assert_eq!(spread_retries(calls.clone()), calls);
        // A documented breaker counts the attempt that failed with a status and the
        // final outcome; the request's retries are calls of their own, not repeated.
        let documented = ReplayModel::default();
        assert_eq!(documented.outcome(&calls[0]), None);
        assert_eq!(documented.outcome(&calls[2]), Some(Outcome::Failure));
        assert_eq!(documented.retried_failures(&calls[3]), 0);
        // Without an elapsed time they stay at the row's instant, before it; an elapsed
        // time longer than any request could take is not spread over.
        let mut instant = row(50.0, Kind::Response, 1, 0.0);
        instant.seq = 7;
        let calls = spread_retries(vec![instant, row(50.0, Kind::Response, 0, 0.0)]);
        assert!(calls[0].retry && calls[1].spread && calls.iter().all(|c| c.t_s == 50.0));
        let calls = spread_retries(vec![row(86_400.0, Kind::Response, 1, 86_400.0)]);
        assert_eq!(calls[0].t_s, 86_400.0 - longest_request_s(1));
        // A request that raised at its first attempt: sent a read timeout before its row
        // (or its whole time, if shorter), counted at the row.
        let calls = spread_retries(vec![
            row(200.0, Kind::Exception, 0, 45.0),
            row(300.0, Kind::Exception, 0, 10.0),
        ]);
        let seen: Vec<(f64, f64, bool)> = calls
            .iter()
            .map(|c| (c.t_s, c.counted_at(), c.spread))
            .collect();
        assert_eq!(seen, [(170.0, 200.0, true), (290.0, 300.0, true)]);
        // At epoch times, an attempt that raised is counted exactly when the next one is
        // sent (not an ulp after it), and the last attempt of a request that raised at
        // its row: attempts sent evenly (three attempts in 75 s: 25 s each, under a read
        // timeout).
        for t in [
            1_764_068_352.564_123,
            1_764_095_919.046_768_7,
            1_700_000_000.1,
        ] {
            let mut answered = row(t, Kind::Response, 3, 75.0);
            answered.retried_raised = 3;
            let mut raised = row(t + 1.0, Kind::Exception, 2, 75.0);
            raised.retried_raised = 2;
            let calls = spread_retries(vec![answered, raised]);
            let of = |seq: u64| -> Vec<&Call> { calls.iter().filter(|c| c.seq == seq).collect() };
            let a = of(answered.seq);
            assert_eq!(a.len(), 4);
            for w in a.windows(2) {
                assert_eq!(w[0].counted_at().to_bits(), w[1].t_s.to_bits(), "{w:?}");
            }
            let r = of((t + 1.0) as u64);
            assert_eq!(r.len(), 3);
            for w in r.windows(2) {
                assert_eq!(w[0].counted_at().to_bits(), w[1].t_s.to_bits(), "{w:?}");
            }
            assert_eq!(r[2].counted_at().to_bits(), (t + 1.0).to_bits());
            assert!((r[2].elapsed_s - 25.0).abs() < 1e-6, "{r:?}");
            // Waits longer than a timeout: each is counted a read timeout after it was
            // sent, before the next.
            answered.elapsed_s = 150.0;
            let calls = spread_retries(vec![answered]);
            for w in calls.windows(2) {
                assert_eq!(w[0].counted_at() - w[0].t_s, READ_TIMEOUT_S);
                assert!(w[0].counted_at() < w[1].t_s, "{w:?}");
            }
        }
    }

    #[test]
    fn an_incident_is_weighed_from_its_first_failure_to_its_last_and_where_trials_kept_failing() {
        use BreakerState::{Closed, HalfOpen, Open};
        // `detect` found 0..600 s and 3000..3300 s in one-minute buckets.
        let spans = [
            Span {
                start_s: 0.0,
                end_s: 600.0,
            },
            Span {
                start_s: 3000.0,
                end_s: 3300.0,
            },
        ];
        let mut failed = row(130.0, Kind::Response, 0, 0.5);
        failed.outcome = Outcome::Failure;
        let calls = [
            row(30.0, Kind::Response, 0, 0.5),
            // Two retried attempts failed, then it succeeded: it began at 110 s, and
            // its last failure is taken an attempt's share (3 s of 9) before its row.
            row(119.0, Kind::Response, 2, 9.0),
            failed,
            row(500.0, Kind::Response, 0, 0.5),
            // A healthy row in the second span: no failure to cut it to.
            row(3100.0, Kind::Response, 0, 0.5),
            // An elapsed time longer than a request can take says nothing of when it
            // began: its failure is at its row.
            row(3200.0, Kind::Response, 1, 1e9),
        ];
        let steps = [
            // A breaker opened at 150 s and failed two trials, the last at 210 s.
            (0, 150.0, Some(Closed), Some(Open)),
            (0, 180.0, Some(HalfOpen), Some(Open)),
            (0, 210.0, Some(HalfOpen), Some(Open)),
            (0, 240.0, Some(HalfOpen), Some(Closed)),
            // Another opened at 2000 s, outside both spans, failed a trial and closed:
            // the host failed there though `detect` found nothing.
            (1, 2000.0, Some(Closed), Some(Open)),
            (1, 2030.0, Some(HalfOpen), Some(Open)),
            (1, 2060.0, Some(HalfOpen), Some(Closed)),
            // Outside the spans, a first trial that succeeded: background noise as far
            // as the night can tell, an instant.
            (2, 4000.0, Some(Closed), Some(Open)),
            (2, 4030.0, Some(HalfOpen), Some(Closed)),
            // No call for an hour after a failed trial: it recovered within a reset
            // timeout as far as the replay weighs it.
            (3, 5000.0, Some(Closed), Some(Open)),
            (3, 5060.0, Some(HalfOpen), Some(Open)),
            (3, 8660.0, Some(HalfOpen), Some(Closed)),
        ];
        let got: Vec<(f64, f64)> = trimmed_to_failures(&spans, &calls, &steps, 60.0)
            .iter()
            .map(|sp| {
                (
                    (sp.start_s * 1e3).round() / 1e3,
                    (sp.end_s * 1e3).round() / 1e3,
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                // The first span: rows from 110 s to 130 s, the open at 150 s, and its
                // trials failing until 210 s, recovered halfway to 240 s.
                (110.0, 225.001),
                (2000.0, 2045.001),
                (3200.0, 3200.001),
                (4000.0, 4000.001),
                (5000.0, 5120.001),
            ]
        );
    }

    #[test]
    fn a_cooldown_gap_ends_at_the_first_success_that_cleared_it() {
        // A 503 at 10 s with Retry-After 100 s on process 0; a success of process 0 at
        // 40 s cleared the cooldown (the crawler sent requests again from then on: they
        // have rows), a success of process 1 at 20 s did not touch it. Where successes
        // keep the cooldown, the gap runs until its end.
        let mut failed = row(10.0, Kind::Response, 0, 0.5);
        failed.outcome = Outcome::Failure;
        failed.retry_after_s = Some(100.0);
        let mut other = row(20.0, Kind::Response, 0, 0.5);
        other.instance = 1;
        let calls = [failed, other, row(40.0, Kind::Response, 0, 0.5)];
        let policy = ReplayPolicy {
            fail_max: 3,
            reset_timeout_s: 10.0,
            success_threshold: 1,
            trial_calls: 1,
            retry_after_cap_s: 900.0,
            rolling: None,
        };
        let gaps = |model: ReplayModel| {
            let (_, gaps) = recorded_breakers(&[], &calls, &|_| 0, 2, &policy, &model, 1000.0);
            gaps.iter()
                .map(|g| (g.instance, g.start_s, g.end_s))
                .collect::<Vec<_>>()
        };
        let clears = ReplayModel::default();
        assert_eq!(gaps(clears), [(0, 10.0, 40.0)]);
        let keeps = ReplayModel {
            success_clears_cooldown: false,
            ..clears
        };
        assert_eq!(gaps(keeps), [(0, 10.0, 110.0)]);
        // A fleet-wide cooldown: every process waits, and any process's success clears it.
        let fleet = ReplayModel {
            fleet_cooldowns: true,
            ..clears
        };
        assert_eq!(gaps(fleet), [(0, 10.0, 20.0), (1, 10.0, 20.0)]);
    }

    #[test]
    fn gaps_inside_an_incident_fail_as_its_half_open_trials_did() {
        let spans = [Span {
            start_s: 0.0,
            end_s: 100.0,
        }];
        let mut failed = row(10.0, Kind::Response, 0, 0.5);
        failed.outcome = Outcome::Failure;
        // Nine rows of ten succeeded (the breaker kept the failing minutes out), and
        // one of them had a retried failure: 2 failed attempts of 11. Three trials
        // failed and two succeeded: (3 + 2/11) / (5 + 1).
        let mut calls: Vec<Call> = (0..9)
            .map(|i| row(20.0 + f64::from(i), Kind::Response, 0, 0.5))
            .collect();
        calls[0].retried_failures = 1;
        calls.push(failed);
        // The trial at 130 s closed the breaker after the span (its run of failed trials
        // ends halfway to it): it belongs to the span. The one at 300 s, more than a
        // reset timeout after it, does not.
        let trials = [
            (30.0, true),
            (40.0, true),
            (50.0, true),
            (60.0, false),
            (130.0, false),
            (300.0, true),
        ];
        let (incs, background) = incidents_with_rates(&spans, &calls, &trials, 60.0);
        assert!(
            (incs[0].rate - (3.0 + 2.0 / 11.0) / 6.0).abs() < 1e-12,
            "{incs:?}"
        );
        assert_eq!(background, 0.0);
        // Without trials, the rows' share of failed attempts.
        let (incs, _) = incidents_with_rates(&spans, &calls, &[], 60.0);
        assert!((incs[0].rate - 2.0 / 11.0).abs() < 1e-12, "{incs:?}");
    }

    #[test]
    fn the_failures_an_open_needs_are_counted_on_each_attempt_at_its_own_time() {
        // Before the open at 96: a request's two retried attempts failed at 90 and 95
        // (its row, a success, comes at 100). Spread, they count before the open, so
        // fail_max 3 needs one failure no row shows.
        let mut request = row(100.0, Kind::Response, 2, 10.0);
        request.seq = 1;
        let open = [(
            0,
            96.0,
            Some(BreakerState::Closed),
            Some(BreakerState::Open),
        )];
        let model = ReplayModel::default();
        let spread = spread_retries(vec![request]);
        assert_eq!(hidden_failures(&spread, &open, 3, &model).len(), 1);
        // Counted at the row's time, as the rows alone would have them: three.
        assert_eq!(hidden_failures(&[request], &open, 3, &model).len(), 3);
        // Attempts that raised count where exceptions do, when their timeout fires:
        // sent at 90 and 95 with 5 s each, the second is counted at 100, after the open.
        request.retried_raised = 2;
        let spread = spread_retries(vec![request]);
        let counting = ReplayModel {
            exceptions_are_failures: true,
            ..model
        };
        assert_eq!(hidden_failures(&spread, &open, 3, &counting).len(), 2);
        assert_eq!(hidden_failures(&spread, &open, 3, &model).len(), 3);
    }

    #[test]
    fn a_reopen_is_explained_by_a_failure_counted_while_half_open() {
        // A failure at 99 opened it at 100 (fail_max 1), half-open at 220 (reset 120),
        // reopened at 250. A request that raised wrote its row at 130, counted then
        // (exceptions counted), while the breaker was open: the trial that reopened it
        // at 250 is a failure no row shows.
        use BreakerState::{Closed, HalfOpen, Open};
        let steps = [
            (0, 100.0, Some(Closed), Some(Open)),
            (0, 220.0, Some(Open), Some(HalfOpen)),
            (0, 250.0, Some(HalfOpen), Some(Open)),
        ];
        let counting = ReplayModel {
            exceptions_are_failures: true,
            ..ReplayModel::default()
        };
        let mut failed = row(99.0, Kind::Response, 0, 0.5);
        failed.outcome = Outcome::Failure;
        let mut raised = row(130.0, Kind::Exception, 0, 30.0);
        raised.seq = 1;
        let calls = spread_retries(vec![failed, raised]);
        let hidden = hidden_failures(&calls, &steps, 1, &counting);
        let at: Vec<f64> = hidden.iter().map(|c| c.t_s).collect();
        assert_eq!(at, [250.0]);
        // A retried attempt's time is an estimate: one counted while open (sent at 110,
        // answered 0.5 s later; its row, a success, at 300) may have been the trial.
        let mut retried = row(300.0, Kind::Response, 1, 190.0);
        retried.seq = 2;
        let calls = spread_retries(vec![failed, retried]);
        assert!(calls[1].retry && calls[1].counted_at() < 220.0, "{calls:?}");
        assert!(hidden_failures(&calls, &steps, 1, &counting).is_empty());
        // Unless its request had ended before the breaker turned half-open (its row, a
        // failure, at 200, counted while open too): then it was not the trial.
        let mut ended = row(200.0, Kind::Response, 1, 90.0);
        ended.outcome = Outcome::Failure;
        ended.seq = 2;
        let calls = spread_retries(vec![failed, ended]);
        assert!(calls[1].retry && calls[1].counted_at() > 100.0, "{calls:?}");
        let hidden = hidden_failures(&calls, &steps, 1, &counting);
        let at: Vec<f64> = hidden.iter().map(|c| c.t_s).collect();
        assert_eq!(at, [250.0]);
    }

    /// Process 0's breaker, closed, opening at `t`.
    fn opens_at(t: f64) -> [(u32, f64, Option<BreakerState>, Option<BreakerState>); 1] {
        [(0, t, Some(BreakerState::Closed), Some(BreakerState::Open))]
    }

    #[test]
    fn runs_the_breaker_did_not_open_on_show_whether_the_final_outcome_is_repeated() {
        // fail_max 3. Two failed rows without retries (10 s, 20 s), then a success
        // (30 s): two failures counted once, four twice. The breaker stayed closed, so
        // only the repeat takes that run past fail_max.
        let failed = |t: f64| Call {
            outcome: Outcome::Failure,
            ..row(t, Kind::Response, 0, 0.5)
        };
        let mut calls = vec![
            failed(10.0),
            failed(20.0),
            row(30.0, Kind::Response, 0, 0.5),
        ];
        // Later, three failed rows and the open at the third (a run both counts reach;
        // counted twice it reached fail_max at the second, and the open came later).
        calls.extend([failed(100.0), failed(110.0), failed(120.0)]);
        let steps = opens_at(120.0);
        let model = ReplayModel::default();
        let sign = overcounted_runs(&calls, &steps, 3, &model);
        assert_eq!(
            sign,
            RepeatSign {
                past_once: 0,
                past_twice: 2,
                opened_by_repeat: 0,
            }
        );
        // The open where counting twice reaches fail_max, and counting once does not:
        // that run agrees with the repeat, and is evidence for it.
        let steps = opens_at(110.0);
        assert_eq!(
            overcounted_runs(&calls, &steps, 3, &model),
            RepeatSign {
                past_once: 0,
                past_twice: 1,
                opened_by_repeat: 1,
            }
        );
        // A process without recorded transitions says nothing: its breaker's record is
        // missing, not closed. Nor does a fleet-wide breaker's (another process's
        // success resets its count).
        assert_eq!(
            overcounted_runs(&calls, &[], 3, &model),
            RepeatSign::default()
        );
        let fleet = ReplayModel {
            fleet_breaker: true,
            ..model
        };
        assert_eq!(
            overcounted_runs(&calls, &steps, 3, &fleet),
            RepeatSign::default()
        );
        // A run that reaches fail_max at a retried attempt's estimated time says
        // nothing: a failed row (30 s), then a request whose two retried attempts
        // (spread over 40-50 s) failed and whose row (50 s) succeeded.
        let mut request = row(50.0, Kind::Response, 2, 10.0);
        request.seq = 7;
        let spread = spread_retries(vec![failed(30.0), request]);
        assert_eq!(
            overcounted_runs(&spread, &steps, 3, &model),
            RepeatSign::default()
        );
        // Nor is an open there evidence for the repeat: counted twice, that run reached
        // fail_max at the first retried attempt's answer (40.5 s, the failed row's
        // latency after it was sent), an estimate.
        let at_estimate = opens_at(40.5);
        assert_eq!(
            overcounted_runs(&spread, &at_estimate, 3, &model),
            RepeatSign::default()
        );
        // An open where both counts reach fail_max (1, at the first failure) is no
        // evidence for either.
        let first = opens_at(100.0);
        assert_eq!(
            overcounted_runs(&[failed(100.0)], &first, 1, &model),
            RepeatSign::default()
        );
    }

    #[test]
    fn a_throttled_requests_attempts_are_counted_after_the_hosts_fastest_answers() {
        // Rows answered without a retry in 0.05 to 1.0 s (the fastest 5%: 0.1 s), and
        // 20 failed ones (408s) in 0.6 s each: a failed attempt's latency.
        let mut calls: Vec<Call> = (1..=20)
            .map(|i| row(f64::from(i), Kind::Response, 0, 0.05 * f64::from(i)))
            .collect();
        calls.extend((0..20).map(|i| Call {
            outcome: Outcome::Failure,
            ..row(30.0 + f64::from(i), Kind::Response, 0, 0.6)
        }));
        // Hour 0: a request that ended in a 429 after two retries (100 s, 20 s long),
        // and one that ended in a 503 (200 s): one of the hour's two failed after
        // retries was throttled, so a request that succeeded after a retry (300 s) was
        // taken to be throttled too (at least half).
        let ended = |t: f64, throttled: bool, seq: u64| Call {
            outcome: Outcome::Failure,
            throttled,
            seq,
            ..row(t, Kind::Response, 2, 20.0)
        };
        calls.extend([
            ended(100.0, true, 1000),
            ended(200.0, false, 2000),
            Call {
                seq: 3000,
                ..row(300.0, Kind::Response, 1, 10.0)
            },
        ]);
        // Hour 1: one request that ended in a 503 and none in a 429; one that succeeded
        // after a retry there was not throttled.
        calls.extend([
            ended(3700.0, false, 4000),
            Call {
                seq: 5000,
                ..row(3800.0, Kind::Response, 1, 10.0)
            },
        ]);
        calls.sort_by(|a, b| a.t_s.total_cmp(&b.t_s));
        let spread = spread_retries(calls);
        let attempts = |seq: u64| -> Vec<(f64, bool)> {
            spread
                .iter()
                .filter(|c| c.retry && c.seq == seq)
                .map(|c| (c.elapsed_s, c.throttled))
                .collect()
        };
        let fast = 0.1;
        assert_eq!(attempts(1000), vec![(fast, true); 2]);
        assert_eq!(attempts(2000), vec![(0.6, false); 2]);
        assert_eq!(attempts(3000), vec![(fast, true)]);
        assert_eq!(attempts(4000), vec![(0.6, false); 2]);
        assert_eq!(attempts(5000), vec![(0.6, false)]);
    }

    #[test]
    fn a_throttled_attempt_from_before_a_runs_reset_leaves_the_run_out_of_the_repeats_sign() {
        // fail_max 3, the breaker closed all along. A success at 10 s; a request that
        // began at 5 s (its first attempt placed there, before the success) failed
        // with a 429 twice more and its row failed at 20 s: counted twice, 1 + 1 + 2
        // reach fail_max at the row's own time. A 429's cooldown sets when its
        // attempts went, and the first may have come back after the success: the run
        // is no sign. The same request failing with a 503 is one.
        let steps = opens_at(1000.0);
        let model = ReplayModel::default();
        let sign = |throttled: bool| {
            let request = Call {
                outcome: Outcome::Failure,
                throttled,
                seq: 7,
                ..row(20.0, Kind::Response, 2, 15.0)
            };
            let calls = vec![
                row(10.0, Kind::Response, 0, 0.5),
                request,
                row(30.0, Kind::Response, 0, 0.5),
            ];
            overcounted_runs(&spread_retries(calls), &steps, 3, &model)
        };
        assert_eq!(sign(false).past_twice, 1);
        assert_eq!(sign(true), RepeatSign::default());
        // A crawler that does not count retried attempts: only the rows count, each at
        // its own time, so a 429's row is no reason to doubt the run. A failed row at
        // 15 s and the 429's row at 20 s: 1 + 1 counted once, 2 + 2 twice.
        let rows_only = ReplayModel {
            count_retries: false,
            ..model
        };
        let request = Call {
            outcome: Outcome::Failure,
            throttled: true,
            seq: 7,
            ..row(20.0, Kind::Response, 2, 15.0)
        };
        let calls = vec![
            row(10.0, Kind::Response, 0, 0.5),
            Call {
                outcome: Outcome::Failure,
                ..row(15.0, Kind::Response, 0, 0.5)
            },
            request,
            row(30.0, Kind::Response, 0, 0.5),
        ];
        let sign = overcounted_runs(&spread_retries(calls), &steps, 3, &rows_only);
        assert_eq!(
            sign,
            RepeatSign {
                past_once: 0,
                past_twice: 1,
                opened_by_repeat: 0,
            }
        );
    }

    #[test]
    fn requests_that_began_in_a_cooldown_after_a_success_show_that_it_cleared_it() {
        // A 429 at 100 with Retry-After 60 s: a cooldown until 160 (cap 900). A success
        // at 110 (a request in flight since 98 when the 429 came); a request began at 104.5, before
        // it, and two after it. A row after the cooldown is none of them.
        let mut throttled = row(100.0, Kind::Response, 0, 0.1);
        throttled.outcome = Outcome::Failure;
        throttled.retry_after_s = Some(60.0);
        let calls = [
            throttled,
            row(105.0, Kind::Response, 0, 0.5),
            row(110.0, Kind::Response, 0, 12.0),
            row(120.0, Kind::Response, 0, 0.5),
            row(130.0, Kind::CacheHit, 0, 0.0),
            row(140.0, Kind::Response, 0, 0.5),
            row(200.0, Kind::Response, 0, 0.5),
        ];
        let sign = cooldown_sign(&calls, 900.0);
        assert_eq!(
            (
                sign.with_success,
                sign.starts_after_success,
                sign.starts_without_success
            ),
            (1, 2, 1)
        );
        // Capped by retry_after_cap_s: a 10 s cooldown holds nothing of this.
        let sign = cooldown_sign(&calls, 10.0);
        assert_eq!((sign.with_success, sign.starts_after_success), (1, 0));
        // A row without an elapsed time is no evidence of when it began.
        let mut unknown = calls.to_vec();
        unknown[3].elapsed_s = 0.0;
        assert_eq!(cooldown_sign(&unknown, 900.0).starts_after_success, 1);
        // Enough of them identify the field; their absence does not (an open breaker,
        // a later Retry-After also hold requests back).
        let cleared = CooldownSign {
            with_success: 12,
            starts_after_success: 40,
            starts_without_success: 3,
        };
        assert_eq!(cleared.identifies(), Some((true, 40, 43)));
        let none = CooldownSign {
            starts_after_success: 1,
            starts_without_success: 0,
            ..cleared
        };
        assert_eq!(none.identifies(), None);
        let unclear = CooldownSign {
            starts_after_success: 20,
            starts_without_success: 15,
            ..cleared
        };
        assert_eq!(unclear.identifies(), None);
    }
}
