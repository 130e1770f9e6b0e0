//! Stage 4, advise: from per-host evidence (metrics, incidents) and the current
//! breakers.yaml / ratelimits.yaml, propose bounded, explained changes. No I/O.
//!
//! Every rule has a sample gate, a target computed from the evidence, a hysteresis band
//! (no change while the current value is inside the band the evidence supports) and a
//! bounded step per run; every value is clamped to the safety limits. Each change keeps
//! the numbers it came from, with their sample sizes.

pub mod cooldowns;
pub mod evidence;
pub mod quota;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::config::anchors::Shared;
use crate::config::edit::BreakerKey;
use crate::config::pins::{PIN_MARK, Pin, Pins};
use crate::config::rates::{Rate, RateLimits};
use crate::config::{BreakerConfig, Policy};
use crate::crawler::CrawlerModel;
use crate::metrics::stats::{nearest_rank, wilson_lower, wilson_upper};
use crate::replay::{Figures, ReplayPolicy};
use quota::Quota;

pub use evidence::{HostEvidence, IncidentEvidence, RoleEvidence};

/// The most nights the replay check weighs: each earlier night is analysed again for the
/// hosts it replays, so the setting bounds that work.
pub const MAX_EVIDENCE_NIGHTS: u32 = 90;

/// The advisor's limits, gates and bands (the `advise:` section of the settings file).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdviseSettings {
    /// No advice at all for a host with fewer network calls in the window.
    pub min_calls: i64,
    /// No rate advice for a host's role with fewer network calls.
    pub min_role_calls: i64,
    /// fail_max needs this many bursts outside incidents...
    pub min_background_bursts: usize,
    /// ...and uses the incidents' bursts only when there are this many.
    pub min_incident_bursts: usize,
    /// Background bursts allowed to reach fail_max (false trips) per 24 hours.
    pub max_false_trips_per_day: f64,
    /// reset_timeout_s from Retry-After needs this many headers.
    pub min_retry_after_samples: i64,
    /// reset_timeout_s from incident durations needs this many ended incidents.
    pub min_incidents: usize,
    /// Half-open rule: trial calls needed to tighten, and to relax back to 1.
    pub min_half_open_trials: i64,
    pub min_half_open_trials_relax: i64,
    /// Tighten when the Wilson lower bound of the trial failure share is above this.
    pub half_open_failure_share: f64,
    /// Relax when the Wilson lower bound of the trial success share is above this.
    pub half_open_success_share: f64,
    /// Ping-pong flaps (closed -> open soon after closing) that count as flapping.
    pub min_flaps: i64,
    /// Flapping raises reset_timeout_s by this factor.
    pub flap_reset_factor: f64,
    pub fail_max: [i64; 2],
    pub reset_timeout_s: [f64; 2],
    pub success_threshold: [i64; 2],
    pub trial_calls: [i64; 2],
    /// Largest fail_max move per run.
    pub max_fail_max_step: i64,
    /// Largest reset_timeout_s move per run, as a factor (2: at most doubled or halved).
    pub max_reset_factor: f64,
    /// No reset_timeout_s change smaller than this share of the current value.
    pub reset_band: f64,
    /// Largest rate multiplier move per run (0.25: within +-25%).
    pub max_rate_step: f64,
    /// No rate change smaller than this share of the current multiplier.
    pub rate_band: f64,
    /// A host whose replay of the recorded policy misses its recorded opens by more than
    /// this share (and by more than one open) gets a breaker change only when the
    /// replayed gain is more than twice the miss, and none past `MAX_REPLAY_MISS`.
    pub fidelity_tolerance: f64,
    /// Hysteresis across nights: a breaker value that moved last night moves back only
    /// when the replay gains at least this share of its current cost (new evidence).
    pub reversal_min_gain: f64,
    /// A breaker change must gain at least this share of the replayed cost...
    pub min_gain_share: f64,
    /// ...and at least this many calls (failed calls let into incidents plus healthy
    /// calls blocked); a smaller gain is noise, not worth a review: the host is left
    /// alone with its numbers.
    pub min_gain_calls: u64,
    /// Values, roles and hosts the operator holds from the settings file (beside the
    /// `# breaker-advisor: keep` comments in the config files themselves).
    pub pins: Vec<Pin>,
    /// A change a person set back (the previous patch moved A -> B, the config says A
    /// again) is not proposed again for this many nights.
    pub revert_hold_nights: u32,
    /// The replay check weighs this many nights (tonight and the ones before it that
    /// the dataset holds)...
    pub evidence_nights: u32,
    /// ...each night's cost weighed by half every this many nights back.
    pub evidence_half_life_nights: f64,
    /// A replayed breaker change below this confidence is left alone (`low`: every
    /// change that wins; `medium` or `high` wait for the nights to agree, at the price
    /// of advice on a first night).
    pub min_confidence: Confidence,
}

impl Default for AdviseSettings {
    fn default() -> Self {
        AdviseSettings {
            min_calls: 1000,
            min_role_calls: 500,
            min_background_bursts: 20,
            min_incident_bursts: 3,
            max_false_trips_per_day: 1.0,
            min_retry_after_samples: 20,
            min_incidents: 3,
            min_half_open_trials: 10,
            min_half_open_trials_relax: 30,
            half_open_failure_share: 0.5,
            half_open_success_share: 0.9,
            min_flaps: 3,
            flap_reset_factor: 1.5,
            fail_max: [2, 10],
            reset_timeout_s: [15.0, 600.0],
            success_threshold: [1, 3],
            trial_calls: [1, 3],
            max_fail_max_step: 2,
            max_reset_factor: 2.0,
            reset_band: 0.2,
            max_rate_step: 0.25,
            rate_band: 0.01,
            fidelity_tolerance: 0.10,
            reversal_min_gain: 0.25,
            min_gain_share: 0.10,
            min_gain_calls: 5,
            pins: Vec::new(),
            revert_hold_nights: 7,
            evidence_nights: 7,
            evidence_half_life_nights: 1.0,
            min_confidence: Confidence::Low,
        }
    }
}

impl AdviseSettings {
    /// Rejects settings that would let the advisor write what the crawler refuses.
    pub fn validate(&self) -> Result<(), String> {
        let ok = self.fail_max[0] >= 1
            && self.fail_max[0] <= self.fail_max[1]
            && self.reset_timeout_s[0] > 0.0
            && self.reset_timeout_s[0] <= self.reset_timeout_s[1]
            && self.success_threshold[0] >= 1
            && self.success_threshold[0] <= self.success_threshold[1]
            && self.trial_calls[0] >= 1
            && self.trial_calls[0] <= self.trial_calls[1]
            && self.max_fail_max_step >= 1
            && self.max_reset_factor > 1.0
            && (0.0..1.0).contains(&self.max_rate_step)
            && self.reset_band >= 0.0
            && self.rate_band >= 0.0
            && self.flap_reset_factor > 1.0
            && self.max_false_trips_per_day >= 0.0
            && self.fidelity_tolerance >= 0.0
            && self.reversal_min_gain >= 0.0
            && (0.0..1.0).contains(&self.min_gain_share)
            && (1..=MAX_EVIDENCE_NIGHTS).contains(&self.evidence_nights)
            && self.evidence_half_life_nights > 0.0;
        if let Some(p) = self.pins.iter().find(|p| {
            crate::hostname::normalize_host(&p.host).is_err()
                || p.key.as_deref().is_some_and(|k| {
                    k != "rates"
                        && BreakerKey::from_spelling(k)
                            .is_none_or(|b| b == BreakerKey::FailureExceptions)
                })
        }) {
            return Err(format!(
                "advise settings: pin {:?}: the host must be a host name and the key one of fail_max, reset_timeout_s, retry_after_cap_s, success_threshold, trial_calls, rates",
                p
            ));
        }
        if ok {
            Ok(())
        } else {
            Err(
                "advise settings: limits must be [low, high] with low >= 1 (reset > 0), \
                 steps and factors above 1, max_rate_step and min_gain_share in [0, 1), bands >= 0, \
                 evidence_nights in 1..=90, evidence_half_life_nights > 0"
                    .into(),
            )
        }
    }
}

/// An evidence value: an integer count or a (rounded) measurement.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Num {
    Int(i64),
    Float(f64),
}

impl Num {
    /// A measurement rounded to 4 significant digits (stable text, no float noise);
    /// integral values become integers.
    pub fn real(x: f64) -> Num {
        if !x.is_finite() {
            return Num::Float(x);
        }
        if x == x.trunc() && x.abs() < 1e15 {
            return Num::Int(x as i64);
        }
        let digits = 4 - 1 - x.abs().log10().floor() as i32;
        let scale = 10f64.powi(digits.max(0));
        Num::Float((x * scale).round() / scale)
    }

    pub fn as_f64(self) -> f64 {
        match self {
            Num::Int(i) => i as f64,
            Num::Float(f) => f,
        }
    }
}

impl std::fmt::Display for Num {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Num::Int(i) => write!(f, "{i}"),
            Num::Float(x) => write!(f, "{x}"),
        }
    }
}

/// The numbers a change came from, by name.
pub type Evidence = BTreeMap<String, Num>;

/// A proposed breakers.yaml change: `role` None is the host level.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakerChange {
    pub host: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    pub key: BreakerKey,
    pub from: Num,
    pub to: i64,
    pub reason: String,
    pub evidence: Evidence,
    /// How far the replayed gain holds across the nights replayed (none: not replayed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confidence: Option<Confidence>,
}

/// A proposed ratelimits.yaml change of one host's role rates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateChange {
    pub host: String,
    pub role: String,
    pub from: Vec<String>,
    pub to: Vec<String>,
    /// Multipliers relative to `base`, the rates first recorded for this host and role.
    pub multiplier_from: Num,
    pub multiplier_to: Num,
    pub base: Vec<String>,
    pub reason: String,
    pub evidence: Evidence,
}

impl RateChange {
    /// Whether the change moves the multiplier (a rate set from the server's quota
    /// leaves it as it was, and is shown without one).
    pub fn moves_multiplier(&self) -> bool {
        self.multiplier_from != self.multiplier_to
    }
}

/// A change that would help but that the crawler ignores (under the crawler model): it
/// goes to the report's "needs a crawler change" section, never into breakers.yaml.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CrawlerChange {
    pub host: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    pub key: BreakerKey,
    pub from: Num,
    pub to: i64,
    pub reason: String,
    /// The crawler code that ignores the setting.
    pub ignored_by: String,
    pub evidence: Evidence,
}

impl CrawlerChange {
    /// The change as a reader says it: `failure_exceptions` from none to timeouts.
    pub fn values(&self) -> (String, String) {
        match self.key {
            BreakerKey::FailureExceptions => ("none".into(), "timeouts, connection errors".into()),
            _ => (self.from.to_string(), self.to.to_string()),
        }
    }
}

/// How far a breaker change's replayed gain holds across the nights replayed: high
/// when it wins on at least three nights, three in four of them, and loses on none;
/// medium when it wins on more nights than it loses; low on one night's evidence or
/// mixed nights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Confidence {
    Low,
    Medium,
    High,
}

impl Confidence {
    pub fn name(self) -> &'static str {
        match self {
            Confidence::Low => "low",
            Confidence::Medium => "medium",
            Confidence::High => "high",
        }
    }
}

/// A host the advisor looked at and left alone, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Held {
    pub host: String,
    pub reason: String,
}

impl Held {
    /// Held for fewer network calls than `min_calls` (`TOO_LITTLE_DATA`): a host that
    /// costs a row, not a line of its own in the report or the plan printout.
    pub fn is_too_little_data(&self) -> bool {
        self.reason.starts_with(TOO_LITTLE_DATA)
    }
}

/// Rates first recorded per host and role (the reference of the multipliers).
pub type RateBaselines = BTreeMap<String, BTreeMap<String, Vec<String>>>;

/// The advice for one run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    pub breakers: Vec<BreakerChange>,
    /// Proposals for settings the crawler ignores.
    pub crawler_changes: Vec<CrawlerChange>,
    pub rates: Vec<RateChange>,
    pub held: Vec<Held>,
    /// The baselines to carry into the next run (earlier ones plus any recorded now).
    pub baselines: RateBaselines,
    /// Changes a person set back, held for `revert_hold_nights` (carried to the next
    /// run).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reverted: Vec<Reverted>,
}

impl Reverted {
    /// Whether this is the revert of `key` at the host level (`role` None) or in `role`.
    fn is_of(&self, role: Option<&str>, key: &str) -> bool {
        self.role.as_deref() == role && self.key == key
    }
}

/// A change the tool made that a person set back: the previous patch file moved `key`
/// from `from` to `to`, and the config said `from` again on the night `since`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reverted {
    pub host: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// A breakers.yaml key, or `rates` (ratelimits.yaml).
    pub key: String,
    pub from: String,
    pub to: String,
    /// The night the revert was first seen (YYYY-MM-DD, the window's end).
    pub since: String,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.breakers.is_empty() && self.rates.is_empty()
    }

    /// Replaces the entries of `hosts` with `other`'s (the same hosts advised again),
    /// keeping every list in the order of `order` (the evidence's host order).
    pub fn replace_hosts(
        &mut self,
        other: Plan,
        hosts: &std::collections::BTreeSet<String>,
        order: &[HostEvidence],
    ) {
        let rank: BTreeMap<&str, usize> = order
            .iter()
            .enumerate()
            .map(|(i, h)| (h.host.as_str(), i))
            .collect();
        let at = |h: &str| rank.get(h).copied().unwrap_or(usize::MAX);
        fn merge<T>(
            mine: &mut Vec<T>,
            theirs: Vec<T>,
            host: impl Fn(&T) -> &str,
            keep: impl Fn(&str) -> bool,
            at: impl Fn(&str) -> usize,
        ) {
            mine.retain(|x| keep(host(x)));
            mine.extend(theirs);
            mine.sort_by_key(|x| at(host(x)));
        }
        let keep = |h: &str| !hosts.contains(h);
        merge(&mut self.breakers, other.breakers, |c| &c.host, keep, at);
        merge(
            &mut self.crawler_changes,
            other.crawler_changes,
            |c| &c.host,
            keep,
            at,
        );
        merge(&mut self.rates, other.rates, |c| &c.host, keep, at);
        merge(&mut self.held, other.held, |c| &c.host, keep, at);
        merge(&mut self.reverted, other.reverted, |c| &c.host, keep, at);
    }

    /// Appends the plan `advise` made for `hosts`, which come after this plan's hosts:
    /// the plan of a fleet is the plans of its groups of hosts, in order.
    pub fn append(&mut self, other: Plan, hosts: &[HostEvidence]) {
        self.breakers.extend(other.breakers);
        self.crawler_changes.extend(other.crawler_changes);
        self.rates.extend(other.rates);
        self.held.extend(other.held);
        self.reverted.extend(other.reverted);
        let mut baselines = other.baselines;
        if self.baselines.is_empty() {
            std::mem::swap(&mut self.baselines, &mut baselines);
            return;
        }
        for h in hosts {
            if let Some(b) = baselines.remove(&h.host) {
                self.baselines.insert(h.host.clone(), b);
            }
        }
    }
}

/// A replay that misses more than this share of the recorded opens does not stand for
/// the host: no breaker change. Between `fidelity_tolerance` and this, the miss is an
/// uncertainty a change's gain must clearly exceed.
pub const MAX_REPLAY_MISS: f64 = 0.5;

/// How a hold of a host with fewer network calls than `min_calls` begins: such a host
/// costs a row, not a replay, a chart or a change-point search.
pub const TOO_LITTLE_DATA: &str = "too little data";

/// Replays a host's traffic under a policy (the pipeline implements it over the
/// dataset; tests over made-up calls).
pub trait ReplayCheck {
    /// The host's current policy as the replay runs it; None: no traffic to replay.
    fn current(&self, host: &str) -> Option<ReplayPolicy>;
    fn figures(&self, host: &str, policy: &ReplayPolicy) -> Figures;
    /// The host's earlier nights under `policy`, each with how many nights before
    /// tonight it is (1: last night), newest first; only nights that hold the host's
    /// traffic. Empty: tonight is all the evidence.
    fn past_figures(&self, _host: &str, _policy: &ReplayPolicy) -> Vec<(u32, Figures)> {
        Vec::new()
    }
    /// The opens the recorded breakers made, to check the replay against; None when
    /// unknown.
    fn recorded_opens(&self, _host: &str) -> Option<u64> {
        None
    }
    /// The host's night under `policy` as the crawler counts now and as it would if
    /// requests that raised (timeouts, connection errors) were breaker failures, with
    /// the rows of such requests; None when the night has none or they count already.
    fn raised_counted(&self, _host: &str, _policy: &ReplayPolicy) -> Option<RaisedCounted> {
        None
    }
}

/// A host's night replayed as if the crawler counted requests that raised.
#[derive(Debug, Clone, PartialEq)]
pub struct RaisedCounted {
    /// Rows of requests that raised.
    pub rows: u64,
    pub now: Figures,
    pub then: Figures,
}

/// What the advisor reads besides the evidence.
pub struct Current<'a> {
    pub breakers: &'a BreakerConfig,
    /// What the crawler counts and honours: the current values are what it runs.
    pub model: &'a CrawlerModel,
    pub ratelimits: Option<&'a RateLimits>,
    /// Baselines from the previous patch file.
    pub baselines: &'a RateBaselines,
    /// When given, breaker proposals must beat the current settings in a replay.
    pub replay: Option<&'a dyn ReplayCheck>,
    /// What the previous patch file (last night's) says.
    pub previous: Previous<'a>,
}

/// The advisor's memory of earlier nights: the previous patch file's changes (for
/// hysteresis, and to see a change a person set back) and the reverts it remembers, with
/// tonight's date.
#[derive(Debug, Clone, Copy, Default)]
pub struct Previous<'a> {
    pub breakers: &'a [BreakerChange],
    /// The previous patch was applied to breakers.yaml (its run wrote it, or the file
    /// changed since the patch was made from it): only then is a value back at a
    /// change's `from` a person's revert rather than a patch never applied.
    pub breakers_applied: bool,
    pub rates: &'a [RateChange],
    /// The same for ratelimits.yaml.
    pub rates_applied: bool,
    pub reverted: &'a [Reverted],
    /// Tonight (YYYY-MM-DD, the window's end); empty: no memory of reverts is kept.
    pub tonight: &'a str,
}

/// Proposes changes for every host with evidence, in host order.
pub fn advise(hosts: &[HostEvidence], current: &Current<'_>, s: &AdviseSettings) -> Plan {
    let mut plan = Plan {
        baselines: current.baselines.clone(),
        ..Plan::default()
    };
    for h in hosts {
        if h.calls_net < s.min_calls {
            plan.held.push(Held {
                host: h.host.clone(),
                reason: format!(
                    "{TOO_LITTLE_DATA}: {} network calls in {:.0} h (minimum {})",
                    h.calls_net, h.window_hours, s.min_calls
                ),
            });
            continue;
        }
        let reverted = reverts(&h.host, current, s);
        let word = OperatorWord {
            host: &h.host,
            settings: &s.pins,
            reverted: &reverted,
            hold_nights: s.revert_hold_nights,
            tonight: current.previous.tonight,
        };
        let n = plan.breakers.len();
        // No proposal is computed from values the crawler rejects or no breaker means.
        if let Some(why) = current.breakers.unusable.reason(&h.host) {
            plan.held.push(unusable_hold(&h.host, "breakers.yaml", why));
        } else {
            advise_breaker(h, current, s, &word, &mut plan);
        }
        hold_by_word(&mut plan.breakers, n, &mut plan.held, &h.host, |c| {
            let change = format!("{} {} -> {}", c.key.name(), c.from, c.to);
            let pins = &current.breakers.pins;
            let at = (c.role.as_deref(), c.key.name());
            word.hold(pins, "breakers.yaml", at, &change, c.confidence)
        });
        if let Some(sh) = current.breakers.shared.get(&h.host) {
            let held: Vec<String> = plan
                .breakers
                .drain(n..)
                .map(|c| format!("{} {} -> {}", c.key.name(), c.from, c.to))
                .collect();
            hold_shared(&mut plan.held, &h.host, "breakers.yaml", &held, sh);
        }
        if let Some(rl) = current.ratelimits {
            let n = plan.rates.len();
            match rl.unusable.reason(&h.host) {
                Some(why) => plan
                    .held
                    .push(unusable_hold(&h.host, "ratelimits.yaml", why)),
                None => advise_rates(h, rl, s, &mut plan),
            }
            let last_night = current.previous.rates;
            hold_by_word(&mut plan.rates, n, &mut plan.held, &h.host, |c| {
                settling(c, last_night)
            });
            hold_by_word(&mut plan.rates, n, &mut plan.held, &h.host, |c| {
                let change = format!(
                    "{} rates {} -> {}",
                    c.role,
                    c.from.join(", "),
                    c.to.join(", ")
                );
                let at = (Some(c.role.as_str()), "rates");
                word.hold(&rl.pins, "ratelimits.yaml", at, &change, None)
            });
            if let Some(sh) = rl.shared.get(&h.host) {
                let held: Vec<String> = plan
                    .rates
                    .drain(n..)
                    .map(|c| format!("{} {} -> {}", c.role, c.from.join(", "), c.to.join(", ")))
                    .collect();
                hold_shared(&mut plan.held, &h.host, "ratelimits.yaml", &held, sh);
            }
        }
        // A change that goes through tonight after its hold weighed the person's no:
        // its revert is forgotten.
        let through = |r: &Reverted| {
            plan.breakers
                .iter()
                .any(|c| c.host == r.host && r.is_of(c.role.as_deref(), c.key.name()))
                || plan
                    .rates
                    .iter()
                    .any(|c| c.host == r.host && r.is_of(Some(&c.role), "rates"))
        };
        let kept: Vec<Reverted> = reverted.into_iter().filter(|r| !through(r)).collect();
        plan.reverted.extend(kept);
    }
    plan
}

/// The changes a person set back that still hold for `host` tonight: those remembered
/// from earlier nights, within `revert_hold_nights` of the night they were seen, and
/// those of the previous patch file whose key the config has at its `from` value again.
fn reverts(host: &str, current: &Current<'_>, s: &AdviseSettings) -> Vec<Reverted> {
    let prev = &current.previous;
    if prev.tonight.is_empty() || s.revert_hold_nights == 0 {
        return Vec::new();
    }
    let mut out: Vec<Reverted> = prev
        .reverted
        .iter()
        .filter(|r| r.host == host)
        .filter(|r| {
            nights_between(&r.since, prev.tonight).is_some_and(|n| {
                (0..i64::from(s.revert_hold_nights) * REVERT_MEMORY_HOLDS).contains(&n)
            })
        })
        .cloned()
        .collect();
    let mut seen = |role: Option<&str>, key: &str, from: String, to: String| {
        if !out.iter().any(|r| r.is_of(role, key)) {
            out.push(Reverted {
                host: host.to_owned(),
                role: role.map(str::to_owned),
                key: key.to_owned(),
                from,
                to,
                since: prev.tonight.to_owned(),
            });
        }
    };
    for c in prev
        .breakers
        .iter()
        .filter(|c| prev.breakers_applied && c.host == host)
    {
        let says = current
            .breakers
            .policy(host, c.role.as_deref())
            .value(c.key);
        if says.is_some_and(|v| Num::real(v) == c.from && v != c.to as f64) {
            seen(
                c.role.as_deref(),
                c.key.name(),
                c.from.to_string(),
                c.to.to_string(),
            );
        }
    }
    if let Some(rl) = current.ratelimits.filter(|_| prev.rates_applied) {
        for c in prev
            .rates
            .iter()
            .filter(|c| c.host == host && c.from != c.to)
        {
            if rl.rates_for(host, &c.role) == Some(&c.from) {
                seen(Some(&c.role), "rates", c.from.join(", "), c.to.join(", "));
            }
        }
    }
    out
}

/// A revert is remembered this many holds long: after its hold, a change of that key is
/// proposed again only with high confidence (then it is forgotten, the person's no
/// having been weighed), and after this the key is free again.
const REVERT_MEMORY_HOLDS: i64 = 4;

/// Whole days from `since` to `tonight` (both YYYY-MM-DD); None when either is not a date.
fn nights_between(since: &str, tonight: &str) -> Option<i64> {
    let d = |t: &str| chrono::NaiveDate::parse_from_str(t, "%Y-%m-%d").ok();
    Some((d(tonight)? - d(since)?).num_days())
}

/// What the operator said about a host: pins in the settings file and the config files,
/// and changes a person set back.
struct OperatorWord<'a> {
    host: &'a str,
    settings: &'a [Pin],
    reverted: &'a [Reverted],
    hold_nights: u32,
    /// Tonight (YYYY-MM-DD).
    tonight: &'a str,
}

impl OperatorWord<'_> {
    /// Why `change` (of `key`, at the host level or in `role`, in `file`) is not
    /// proposed, if the operator's word holds it.
    fn hold(
        &self,
        pins: &Pins,
        file: &str,
        (role, key): (Option<&str>, &str),
        change: &str,
        confidence: Option<Confidence>,
    ) -> Option<String> {
        if let Some(p) = pins.find(self.host, role, key) {
            return Some(format!(
                "pinned: {change} not proposed (`# {PIN_MARK}` at {file} line {}, {})",
                p.line, p.path
            ));
        }
        if self.settings.iter().any(|p| p.holds(self.host, role, key)) {
            return Some(format!(
                "pinned: {change} not proposed (advise.pins in breaker-advisor.yaml)"
            ));
        }
        let r = self.reverted.iter().find(|r| r.is_of(role, key))?;
        let until = chrono::NaiveDate::parse_from_str(&r.since, "%Y-%m-%d")
            .ok()
            .and_then(|d| d.checked_add_days(chrono::Days::new(u64::from(self.hold_nights))))
            .map(|d| d.format("%Y-%m-%d").to_string());
        let said = format!(
            "reverted by a person on {}: {key} was set back from {} to {}",
            r.since, r.to, r.from
        );
        match until.filter(|u| u.as_str() > self.tonight) {
            Some(u) => Some(format!(
                "{said}; {change} is not proposed again before {u} (advise.revert_hold_nights: {})",
                self.hold_nights
            )),
            // The hold is over: back only with high confidence (a rate, which is not
            // replayed, on its own evidence).
            None => match confidence {
                Some(c) if c != Confidence::High => Some(format!(
                    "{said}; after the hold, {change} comes back only with high confidence across the nights replayed, and it has {}",
                    c.name()
                )),
                _ => None,
            },
        }
    }
}

/// A role's rates that last night's applied patch lowered are lowered again the next
/// night only while the lower bound of its 429 share stays above twice
/// `aimd.high_429_ratio` (last night's step clearly did not work): below that, a further
/// step is a staircase of nightly changes (the rates' own confidence: they are not
/// replayed), and the rates settle for a night. Raising back is AIMD's own climb and
/// goes on.
fn settling(c: &RateChange, last_night: &[RateChange]) -> Option<String> {
    // Lower: some unit's rate falls, or a unit is added (a new limit).
    let lowers = |from: &[String], to: &[String]| {
        let parsed = |rates: &[String]| -> Vec<Rate> {
            rates.iter().filter_map(|r| Rate::parse(r)).collect()
        };
        let (from, to) = (parsed(from), parsed(to));
        to.iter().any(|t| {
            from.iter()
                .find(|f| f.unit == t.unit && f.per == t.per)
                .is_none_or(|f| t.per_second() < f.per_second())
        })
    };
    let last = last_night.iter().find(|l| {
        l.host == c.host && l.role == c.role && l.to == c.from && lowers(&l.from, &l.to)
    })?;
    let lowers = lowers(&c.from, &c.to);
    let v = |k: &str| c.evidence.get(k).map(|n| n.as_f64());
    let (lo, high) = (v("e429_lo95")?, v("high_429_ratio")?);
    (lowers && lo <= 2.0 * high).then(|| {
        format!(
            "{} rates moved {} -> {} last night and their 429s are not clearly above the threshold ({:.1}% lower bound, not above twice {:.1}%): left to settle a night, not lowered again to {}",
            c.role,
            last.from.join(", "),
            last.to.join(", "),
            lo * 100.0,
            high * 100.0,
            c.to.join(", ")
        )
    })
}

/// Takes the host's changes from `changes[n..]` that the operator's word holds into
/// holds of their own, keeping the others in order.
fn hold_by_word<T>(
    changes: &mut Vec<T>,
    n: usize,
    held: &mut Vec<Held>,
    host: &str,
    why: impl Fn(&T) -> Option<String>,
) {
    let mut kept = Vec::new();
    for c in changes.drain(n..) {
        match why(&c) {
            Some(reason) => held.push(Held {
                host: host.to_owned(),
                reason,
            }),
            None => kept.push(c),
        }
    }
    changes.extend(kept);
}

/// The hold of a host whose entry in `file` the advisor cannot start from.
fn unusable_hold(host: &str, file: &str, why: &str) -> Held {
    Held {
        host: host.to_owned(),
        reason: format!("{file} left alone: {why}; fix the value by hand"),
    }
}

/// Holds the changes proposed for a host whose values `file` shares through YAML
/// anchors (see `config::anchors`), naming what would have changed.
fn hold_shared(held: &mut Vec<Held>, host: &str, file: &str, changes: &[String], sh: &Shared) {
    if changes.is_empty() {
        return;
    }
    held.push(Held {
        host: host.to_owned(),
        reason: format!(
            "{file} left alone (would set {}): {}",
            changes.join("; "),
            sh.describe()
        ),
    });
}

fn ev(pairs: &[(&str, Num)]) -> Evidence {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
}

/// A proposal for one key of a host (or of one of its roles).
struct Proposal {
    key: BreakerKey,
    role: Option<String>,
    from: f64,
    to: i64,
    reason: String,
    evidence: Evidence,
    confidence: Option<Confidence>,
}

/// Requests that raised as breaker failures, a crawler change: where the night has
/// rows of them and counting them would keep attempts out of the host's incidents
/// without blocking as many healthy calls, the replayed benefit goes to "needs a
/// crawler change".
fn raised_rule(h: &HostEvidence, r: &dyn ReplayCheck, plan: &mut Plan) {
    let Some(base) = r.current(&h.host) else {
        return;
    };
    let Some(RaisedCounted { rows, now, then }) = r.raised_counted(&h.host, &base) else {
        return;
    };
    let kept = now
        .raised_attempts_in_incidents
        .saturating_sub(then.raised_attempts_in_incidents);
    let lost = then.false_trips.saturating_sub(now.false_trips);
    if kept == 0 || lost >= kept {
        return;
    }
    let hours = |s: f64| s / 3600.0;
    plan.crawler_changes.push(CrawlerChange {
        host: h.host.clone(),
        role: None,
        key: BreakerKey::FailureExceptions,
        // In the patch file: 0, no exception type counted; 1, timeouts and connection
        // errors (`CrawlerChange::values` says so in words).
        from: Num::Int(0),
        to: 1,
        reason: format!(
            "{rows} rows of requests that raised (timeouts, connection errors), which no breaker counts: counted as failures, the replay keeps {kept} of their {} attempts ({:.1} of {:.1} worker hours) out of incidents, with {} opens outside incidents instead of {} and {} healthy calls blocked instead of {}",
            now.raised_attempts_in_incidents,
            hours(now.raised_seconds_in_incidents - then.raised_seconds_in_incidents),
            hours(now.raised_seconds_in_incidents),
            then.opens_outside_incidents,
            now.opens_outside_incidents,
            then.false_trips,
            now.false_trips,
        ),
        ignored_by: crate::crawler::UNCOUNTED_EXCEPTIONS.to_owned(),
        evidence: ev(&[
            ("raised_rows", Num::Int(rows as i64)),
            (
                "raised_attempts_in_incidents_now",
                Num::Int(now.raised_attempts_in_incidents as i64),
            ),
            (
                "raised_attempts_in_incidents_if_counted",
                Num::Int(then.raised_attempts_in_incidents as i64),
            ),
            (
                "raised_seconds_in_incidents_now",
                Num::real(now.raised_seconds_in_incidents),
            ),
            (
                "raised_seconds_in_incidents_if_counted",
                Num::real(then.raised_seconds_in_incidents),
            ),
            (
                "opens_outside_incidents_now",
                Num::Int(now.opens_outside_incidents as i64),
            ),
            (
                "opens_outside_incidents_if_counted",
                Num::Int(then.opens_outside_incidents as i64),
            ),
            ("false_trips_now", Num::Int(now.false_trips as i64)),
            ("false_trips_if_counted", Num::Int(then.false_trips as i64)),
        ]),
    });
}

fn advise_breaker(
    h: &HostEvidence,
    current: &Current<'_>,
    s: &AdviseSettings,
    word: &OperatorWord<'_>,
    plan: &mut Plan,
) {
    let cfg = current.breakers;
    let model = current.model;
    let role = h.dominant_role();
    let cur = model.policy(cfg, &h.host, role);
    let mut proposals = Vec::new();
    let fail_max = fail_max_rule(h, &cur, s, &mut plan.held);
    proposals.extend(fail_max);
    let flapping = h.pingpong_flaps >= s.min_flaps;
    let reset = reset_rule(h, &cur, flapping, s);
    let reset_at_cap = flapping && cur.reset_timeout_s >= s.reset_timeout_s[1];
    proposals.extend(reset);
    proposals.extend(half_open_rule(h, cfg, model, reset_at_cap, s));
    // Settings the crawler ignores are not written; their replayed benefit goes to the
    // report instead.
    let (ignored, mut proposals): (Vec<Proposal>, Vec<Proposal>) = proposals
        .into_iter()
        .partition(|p| model.ignores(p.key).is_some());
    // Lowering an ignored success_threshold to 1, which the crawler already runs, is no
    // change at all.
    for mut p in ignored.into_iter().filter(|p| p.to > 1) {
        if let Some(r) = current.replay
            && let Some(base) = r.current(&h.host)
        {
            let mut with = base;
            if p.key == BreakerKey::SuccessThreshold {
                with.success_threshold = p.to.max(1) as u32;
            }
            let (now, then) = (r.figures(&h.host, &base), r.figures(&h.host, &with));
            p.reason.push_str(&format!(
                "; replayed as if honoured: cost {} -> {}",
                now.cost(),
                then.cost()
            ));
            p.evidence
                .insert("replay_cost_current".into(), Num::Int(now.cost() as i64));
            p.evidence.insert(
                "replay_cost_if_honoured".into(),
                Num::Int(then.cost() as i64),
            );
        }
        plan.crawler_changes.push(CrawlerChange {
            host: h.host.clone(),
            role: p.role,
            key: p.key,
            from: Num::real(p.from),
            to: p.to,
            reason: p.reason,
            ignored_by: model.ignores(p.key).unwrap_or_default().to_owned(),
            evidence: p.evidence,
        });
    }
    // What a pin or a recent revert holds leaves the grid before the replay, which then
    // keeps it at its current value: the other keys' changes are judged without it.
    proposals.retain(|p| {
        let change = format!("{} {} -> {}", p.key.name(), Num::real(p.from), p.to);
        let at = (p.role.as_deref(), p.key.name());
        match word.hold(&current.breakers.pins, "breakers.yaml", at, &change, None) {
            Some(reason) => {
                plan.held.push(Held {
                    host: h.host.clone(),
                    reason,
                });
                false
            }
            None => true,
        }
    });
    if let Some(r) = current.replay {
        raised_rule(h, r, plan);
        proposals = replay_gate(h, proposals, r, s, &mut plan.held);
    }
    let proposals = hold_reversals(h, proposals, current.previous.breakers, s, &mut plan.held);

    for mut p in proposals {
        // The host-level value applies to every role except where the host's own role
        // entry sets the key and the crawler honours it there: those were set by hand
        // for that role, and the evidence is per host, so they are left alone (and named
        // in the reason).
        if p.role.is_none()
            && model.honours_role_breaker_settings
            && let Some(hc) = cfg.hosts.get(&h.host)
        {
            for (r, o) in &hc.roles {
                if let Some(v) = o.get(p.key) {
                    p.reason.push_str(&format!(
                        "; roles.{r} keeps its own {} ({})",
                        p.key.name(),
                        Num::real(v)
                    ));
                }
            }
        }
        plan.breakers.push(BreakerChange {
            host: h.host.clone(),
            role: p.role,
            key: p.key,
            from: Num::real(p.from),
            to: p.to,
            reason: p.reason,
            evidence: p.evidence,
            confidence: p.confidence,
        });
    }
}

/// Hysteresis across nights: a proposal that moves a value back the way last night's
/// change moved it (last night 45 -> 90, tonight 90 -> 60) needs new evidence: a replay
/// gain of at least `reversal_min_gain` of the current cost. Without it the value stays
/// and the host is held with both nights' numbers. One that moves it on (tonight 90 ->
/// 160) needs high confidence: no staircase of nightly changes to one setting.
fn hold_reversals(
    h: &HostEvidence,
    proposals: Vec<Proposal>,
    previous: &[BreakerChange],
    s: &AdviseSettings,
    held: &mut Vec<Held>,
) -> Vec<Proposal> {
    let mut out = Vec::new();
    for p in proposals {
        let last = previous
            .iter()
            .find(|c| c.host == h.host && c.role == p.role && c.key == p.key);
        let Some(last) = last else {
            out.push(p);
            continue;
        };
        let (was, now) = (last.to as f64 - last.from.as_f64(), p.to as f64 - p.from);
        // Only a move from the value last night's change set (the patch was applied).
        if p.from != last.to as f64 {
            out.push(p);
            continue;
        }
        // Onward, the next night again: a staircase of nightly changes, unless the
        // replay of every night says so. (Without a replay there is no confidence.)
        if was * now >= 0.0 {
            match p.confidence {
                Some(c) if c != Confidence::High => held.push(Held {
                    host: h.host.clone(),
                    reason: format!(
                        "{} moved {} -> {} last night; moving it on to {} the next night needs high confidence across the nights replayed, and it has {}",
                        p.key.name(),
                        last.from,
                        last.to,
                        p.to,
                        c.name()
                    ),
                }),
                _ => out.push(p),
            }
            continue;
        }
        let cost = |k: &str| p.evidence.get(k).map(|v| v.as_f64());
        let gain = match (cost("replay_cost_current"), cost("replay_cost_proposed")) {
            (Some(c), Some(n)) if c > 0.0 => (c - n) / c,
            _ => 0.0,
        };
        if gain >= s.reversal_min_gain {
            let mut p = p;
            p.reason.push_str(&format!(
                "; moves back from last night's {} -> {} on new evidence (replay gain {:.0}%)",
                last.from,
                last.to,
                gain * 100.0
            ));
            out.push(p);
        } else {
            held.push(Held {
                host: h.host.clone(),
                reason: format!(
                    "{} moved {} -> {} last night; moving it back to {} needs new evidence: the replay gains {:.0}% (at least {:.0}%)",
                    p.key.name(),
                    last.from,
                    last.to,
                    p.to,
                    gain * 100.0,
                    s.reversal_min_gain * 100.0
                ),
            });
        }
    }
    out
}

/// The replay check: the heuristic proposal and a grid around it are replayed on the
/// window's traffic. fail_max: every value from the current one through the proposal and
/// one beyond, within the clamps and one step, never lowered to a value that background
/// bursts reach more often than `max_false_trips_per_day` (`Background::floor`);
/// reset_timeout_s x0.8 / x1.25; success_threshold current or proposed. The objective is
/// `Figures::cost`: calls blocked while the host was healthy plus failed calls let
/// through during incidents. The best grid point (ties: the heuristic's reset_timeout_s
/// and success_threshold, which the evidence chose when the replay cannot tell, then
/// the fail_max nearest the heuristic proposal) replaces the proposal if it costs less
/// than the current settings; else all the host's breaker proposals are dropped and the
/// host is held with both costs. A fail_max change names every candidate it was chosen
/// from, with its expected false opens a day and its replayed outcomes.
fn replay_gate(
    h: &HostEvidence,
    proposals: Vec<Proposal>,
    r: &dyn ReplayCheck,
    s: &AdviseSettings,
    held: &mut Vec<Held>,
) -> Vec<Proposal> {
    let gridded = |k: BreakerKey| {
        matches!(
            k,
            BreakerKey::FailMax | BreakerKey::ResetTimeoutS | BreakerKey::SuccessThreshold
        )
    };
    let Some(base) = r.current(&h.host) else {
        return proposals;
    };
    if !proposals.iter().any(|p| gridded(p.key)) {
        return proposals;
    }
    let bg = Background::of(h);
    let find = |k: BreakerKey| proposals.iter().find(|p| p.key == k).map(|p| p.to);
    let cur_fail = base.fail_max as i64;
    // In replay order: the proposal first, then by distance from it (ties go to the
    // earlier), the lower value first.
    let fail_opts: Vec<u32> = match find(BreakerKey::FailMax) {
        Some(p) => {
            let floor = bg.floor(s);
            let (lo, hi) = if p > cur_fail {
                (cur_fail, p + 1)
            } else {
                (p - 1, cur_fail)
            };
            let mut v: Vec<i64> = (lo..=hi)
                .filter(|v| (s.fail_max[0]..=s.fail_max[1]).contains(v))
                .filter(|v| (v - cur_fail).abs() <= s.max_fail_max_step)
                .filter(|v| *v >= cur_fail || *v >= floor)
                .collect();
            v.sort_by_key(|v| ((v - p).abs(), *v));
            if v.is_empty() {
                v.push(p);
            }
            v.into_iter().map(|v| v as u32).collect()
        }
        None => vec![base.fail_max],
    };
    let cur_reset = base.reset_timeout_s;
    let reset_opts: Vec<f64> = match find(BreakerKey::ResetTimeoutS) {
        Some(p) => {
            let p = p as f64;
            // Within the limits and the step, and never past the host's Retry-After cap
            // (as the rule's own proposal).
            let hi = s.reset_timeout_s[1]
                .min(cur_reset * s.max_reset_factor)
                .min(base.retry_after_cap_s)
                .max(1.0);
            let lo = s.reset_timeout_s[0]
                .max(cur_reset / s.max_reset_factor)
                .min(hi);
            let mut v: Vec<f64> = [p, (p * 0.8).round(), (p * 1.25).round()]
                .into_iter()
                .map(|x| x.clamp(lo, hi).round())
                // Points inside the hysteresis band are not changes.
                .filter(|x| (x - cur_reset).abs() > s.reset_band * cur_reset)
                .collect();
            v.dedup();
            if v.is_empty() {
                v.push(cur_reset);
            }
            v
        }
        None => vec![cur_reset],
    };
    let st_opts: Vec<u32> = match find(BreakerKey::SuccessThreshold) {
        Some(p) => vec![p as u32, base.success_threshold],
        None => vec![base.success_threshold],
    };
    let now = r.figures(&h.host, &base);
    let over_nights = |p: &ReplayPolicy, tonight: &Figures| NightCosts {
        tonight: tonight.cost(),
        past: r
            .past_figures(&h.host, p)
            .into_iter()
            .filter(|(k, _)| *k < s.evidence_nights)
            .map(|(k, f)| (k, f.cost()))
            .collect(),
    };
    let hl = s.evidence_half_life_nights;
    let now_n = over_nights(&base, &now);
    // How far the replay is from the recorded breakers, where more than the tolerance:
    // an uncertainty on every gain it shows (recorded opens, share of them missed).
    let miss = r.recorded_opens(&h.host).and_then(|recorded| {
        let missed = (now.opens as f64 - recorded as f64).abs();
        (missed > (s.fidelity_tolerance * recorded as f64).max(1.0))
            .then(|| (recorded, missed / (recorded as f64).max(1.0)))
    });
    if let Some((recorded, share)) = miss
        && share > MAX_REPLAY_MISS
    {
        held.push(Held {
            host: h.host.clone(),
            reason: format!(
                "the replay does not reproduce the recorded breakers: {recorded} opens recorded, {} replayed under the crawler model (more than {:.0}% apart); no breaker change until it does",
                now.opens,
                MAX_REPLAY_MISS * 100.0
            ),
        });
        return Vec::new();
    }
    // The best point of each fail_max candidate, in replay order, by its cost over the
    // nights replayed (tonight alone when the dataset holds no earlier night).
    let mut candidates: Vec<(ReplayPolicy, Figures, NightCosts)> = Vec::new();
    for &f in &fail_opts {
        let mut best: Option<(ReplayPolicy, Figures, NightCosts)> = None;
        for &rt in &reset_opts {
            for &st in &st_opts {
                let p = ReplayPolicy {
                    fail_max: f,
                    reset_timeout_s: rt,
                    success_threshold: st,
                    ..base
                };
                let fig = r.figures(&h.host, &p);
                let n = over_nights(&p, &fig);
                if best
                    .as_ref()
                    .is_none_or(|(_, _, b)| n.weighted(hl) < b.weighted(hl))
                {
                    best = Some((p, fig, n));
                }
            }
        }
        candidates.extend(best);
    }
    let best = candidates
        .iter()
        .fold(
            None::<&(ReplayPolicy, Figures, NightCosts)>,
            |b, c| match b {
                Some(b) if b.2.weighted(hl) <= c.2.weighted(hl) => Some(b),
                _ => Some(c),
            },
        )
        .cloned();
    let Some((bp, bf, bn)) = best else {
        return proposals;
    };
    let summary = |f: &Figures| {
        format!(
            "{} (false trips {}, failures let through {}, opens {})",
            f.cost(),
            f.false_trips,
            f.failures_let_through,
            f.opens
        )
    };
    let nights = now_n.nights();
    let across = |n: &NightCosts| format!("{:.0}", n.weighted(hl) / now_n.weight_sum(hl));
    let over = if nights > 1 {
        format!(
            "; over the {nights} nights replayed, weighted (half-life {hl} night{}), {} now and {} at best a night",
            if hl == 1.0 { "" } else { "s" },
            across(&now_n),
            across(&bn)
        )
    } else {
        String::new()
    };
    if bn.weighted(hl) >= now_n.weighted(hl) {
        held.push(Held {
            host: h.host.clone(),
            reason: format!(
                "replay: the proposed breaker settings do not beat the current ones (cost {} now, {} at best{over})",
                summary(&now),
                summary(&bf)
            ),
        });
        // Every breaker change of the host goes: they were proposed together.
        return Vec::new();
    }
    // A gain too small to be worth a review is noise: the host is left alone.
    let saved = now_n.weighted(hl) - bn.weighted(hl);
    let gain = saved / now_n.weighted(hl);
    let saved_a_night = (saved / now_n.weight_sum(hl)).round() as u64;
    if gain < s.min_gain_share || saved_a_night < s.min_gain_calls {
        held.push(Held {
            host: h.host.clone(),
            reason: format!(
                "replay: the best gain, {saved_a_night} of {} calls ({:.0}%), is too small to be worth a change (at least {:.0}% and {} calls): cost {} now, {} at best{over}",
                across(&now_n),
                gain * 100.0,
                s.min_gain_share * 100.0,
                s.min_gain_calls,
                summary(&now),
                summary(&bf)
            ),
        });
        return Vec::new();
    }
    // A replay that misses the recorded opens by x% carries a change only when its gain
    // is clearly larger: more than twice the miss.
    let mut uncertainty = String::new();
    if let Some((recorded, share)) = miss {
        let said = format!(
            "the replay misses the recorded opens by {:.0}% ({recorded} recorded, {} replayed)",
            share * 100.0,
            now.opens
        );
        if gain <= 2.0 * share {
            held.push(Held {
                host: h.host.clone(),
                reason: format!(
                    "replay: {said}, and the best gain, {:.0}% (cost {} now, {} at best), is not clearly larger (more than twice the miss)",
                    gain * 100.0,
                    summary(&now),
                    summary(&bf)
                ),
            });
            return Vec::new();
        }
        uncertainty = format!(
            "; {said}: the gain of {:.0}% is more than twice that",
            gain * 100.0
        );
    }
    let (won, lost) = now_n.won_lost(&bn);
    let confidence = confidence(nights, won, lost);
    if confidence < s.min_confidence {
        held.push(Held {
            host: h.host.clone(),
            reason: format!(
                "replay: the best change gains {:.0}% over {nights} night{} replayed (it wins {won}), confidence {}: below advise.min_confidence ({})",
                gain * 100.0,
                if nights == 1 { "" } else { "s" },
                confidence.name(),
                s.min_confidence.name()
            ),
        });
        return Vec::new();
    }
    let confident = format!(
        "; confidence {}: {}",
        confidence.name(),
        if nights == 1 {
            "one night replayed".to_owned()
        } else {
            format!(
                "it wins {won} of the {nights} nights replayed{}, a weighted gain of {:.0}%",
                if lost > 0 {
                    format!(" (loses {lost})")
                } else {
                    String::new()
                },
                gain * 100.0
            )
        }
    );
    let mut out = Vec::new();
    for mut p in proposals {
        if gridded(p.key) {
            let v = match p.key {
                BreakerKey::FailMax => bp.fail_max as i64,
                BreakerKey::ResetTimeoutS => bp.reset_timeout_s as i64,
                _ => bp.success_threshold as i64,
            };
            if v as f64 == p.from {
                continue;
            }
            if v != p.to {
                p.reason
                    .push_str(&format!("; the replay grid prefers {v} to {}", p.to));
                p.to = v;
            }
            if p.key == BreakerKey::FailMax {
                set_background_proposed(&mut p, &bg);
                let rows: Vec<(ReplayPolicy, Figures)> =
                    candidates.iter().map(|(p, f, _)| (*p, f.clone())).collect();
                p.reason.push_str(&candidates_text(&rows, &bg, bp.fail_max));
            }
            p.reason
                .push_str(&format!("; replay cost {} -> {}", now.cost(), bf.cost()));
            p.reason.push_str(&uncertainty);
            p.reason.push_str(&confident);
            p.confidence = Some(confidence);
            if let Some((_, share)) = miss {
                p.evidence
                    .insert("replay_open_miss_share".into(), Num::real(share));
            }
            for (k, v) in [
                ("replay_cost_current", now.cost()),
                ("replay_cost_proposed", bf.cost()),
                ("replay_false_trips_current", now.false_trips),
                ("replay_false_trips_proposed", bf.false_trips),
                ("replay_let_through_current", now.failures_let_through),
                ("replay_let_through_proposed", bf.failures_let_through),
                ("replay_opens_current", now.opens),
                ("replay_opens_proposed", bf.opens),
                ("replay_nights", nights as u64),
                ("replay_nights_won", won as u64),
            ] {
                p.evidence.insert(k.into(), Num::Int(v as i64));
            }
            p.evidence
                .insert("replay_weighted_gain_share".into(), Num::real(gain));
        }
        out.push(p);
    }
    out
}

/// A policy's replayed cost on each night replayed: tonight and the earlier nights that
/// hold the host's traffic (nights before tonight, cost).
#[derive(Debug, Clone)]
struct NightCosts {
    tonight: u64,
    past: Vec<(u32, u64)>,
}

impl NightCosts {
    fn weight(k: u32, half_life: f64) -> f64 {
        0.5f64.powf(f64::from(k) / half_life)
    }

    /// The cost summed over the nights, each weighed by half every `half_life` nights
    /// back (tonight weighs 1).
    fn weighted(&self, half_life: f64) -> f64 {
        self.tonight as f64
            + self
                .past
                .iter()
                .map(|&(k, c)| Self::weight(k, half_life) * c as f64)
                .sum::<f64>()
    }

    fn weight_sum(&self, half_life: f64) -> f64 {
        1.0 + self
            .past
            .iter()
            .map(|&(k, _)| Self::weight(k, half_life))
            .sum::<f64>()
    }

    fn nights(&self) -> usize {
        1 + self.past.len()
    }

    /// Nights on which `other` costs less than this, and more.
    fn won_lost(&self, other: &NightCosts) -> (usize, usize) {
        let mut pairs = vec![(self.tonight, other.tonight)];
        for (k, c) in &self.past {
            if let Some((_, o)) = other.past.iter().find(|(j, _)| j == k) {
                pairs.push((*c, *o));
            }
        }
        (
            pairs.iter().filter(|(a, b)| b < a).count(),
            pairs.iter().filter(|(a, b)| b > a).count(),
        )
    }
}

/// High: it wins on at least three nights, three in four of the nights replayed, and
/// loses on none; medium: it wins on more nights than it loses and on at least half of
/// them; low: one night, or mixed nights. (The weighted gain is above the minimum
/// whatever the confidence: below it there is no change.)
fn confidence(nights: usize, won: usize, lost: usize) -> Confidence {
    if won >= 3 && 4 * won >= 3 * nights && lost == 0 {
        Confidence::High
    } else if nights >= 2 && won > lost && 2 * won >= nights {
        Confidence::Medium
    } else {
        Confidence::Low
    }
}

/// "; fail_max candidates (false opens a day expected from the background bursts,
/// replayed failures let into incidents, healthy calls blocked): 4: 2.5, 31, 40; ...;
/// the replay chooses 5", in value order.
fn candidates_text(
    candidates: &[(ReplayPolicy, Figures)],
    bg: &Background<'_>,
    chosen: u32,
) -> String {
    let mut rows: Vec<&(ReplayPolicy, Figures)> = candidates.iter().collect();
    rows.sort_by_key(|(p, _)| p.fail_max);
    let cells: Vec<String> = rows
        .iter()
        .map(|(p, f)| {
            format!(
                "{}: {}, {}, {}",
                p.fail_max,
                Num::real(bg.false_opens_per_day(i64::from(p.fail_max))),
                f.failures_let_through,
                f.false_trips
            )
        })
        .collect();
    format!(
        "; fail_max candidates (false opens a day expected from the background bursts, replayed failures let into incidents, healthy calls blocked): {}; the replay chooses {chosen}",
        cells.join("; ")
    )
}

/// What the background bursts (failure bursts outside every incident, one breaker
/// instance each, counted as the crawler's breaker counts) say of a fail_max: a burst
/// that reaches it opens that instance's breaker while the host is healthy, a false
/// open.
struct Background<'a> {
    bursts: &'a [u64],
    days: f64,
}

impl<'a> Background<'a> {
    fn of(h: &'a HostEvidence) -> Self {
        Background {
            bursts: &h.background_bursts,
            days: (h.window_hours / 24.0).max(1.0 / 24.0),
        }
    }

    /// Background bursts that reach `fail_max` (each one false open) in the window.
    fn reaching(&self, fail_max: i64) -> usize {
        self.bursts
            .iter()
            .filter(|&&l| l as i64 >= fail_max)
            .count()
    }

    /// Expected false opens per 24 hours at `fail_max`.
    fn false_opens_per_day(&self, fail_max: i64) -> f64 {
        self.reaching(fail_max) as f64 / self.days
    }

    /// The lowest fail_max above the bursts' q95 whose expected false opens per day are
    /// within `max_false_trips_per_day` (the upper limit if none is).
    fn floor(&self, s: &AdviseSettings) -> i64 {
        let mut low = nearest_rank(self.bursts, 0.95) as i64 + 1;
        while low < s.fail_max[1] && self.false_opens_per_day(low) > s.max_false_trips_per_day {
            low += 1;
        }
        low
    }
}

/// Rule 2: `fail_max` above the background bursts (so noise does not trip the
/// breaker: `Background::floor`) and at most the typical burst inside incidents (so an
/// outage trips it). Noise that trips the breaker more often than the budget raises it
/// even when the outages' bursts are short (the replay weighs the two); otherwise no
/// change when no value does both. No incidents: only ever raised, when noise trips
/// it. The replay check then chooses among the candidates between the current value
/// and this one, weighing the false opens against the failures let in.
fn fail_max_rule(
    h: &HostEvidence,
    cur: &Policy,
    s: &AdviseSettings,
    held: &mut Vec<Held>,
) -> Option<Proposal> {
    let bg = Background::of(h);
    if bg.bursts.len() < s.min_background_bursts {
        return None;
    }
    let q95 = nearest_rank(bg.bursts, 0.95) as i64;
    let low = bg.floor(s);
    let incident = (h.incident_bursts.len() >= s.min_incident_bursts)
        .then(|| failure_weighted_median(&h.incident_bursts) as i64);
    let current = cur.fail_max;
    let mut evidence = ev(&[
        ("background_bursts", Num::Int(bg.bursts.len() as i64)),
        ("background_q95", Num::Int(q95)),
        (
            "background_reaching_current",
            Num::Int(bg.reaching(current) as i64),
        ),
        (
            "false_opens_per_day_current",
            Num::real(bg.false_opens_per_day(current)),
        ),
        ("window_hours", Num::real(h.window_hours)),
    ]);
    if let Some(u) = incident {
        evidence.insert(
            "incident_bursts".into(),
            Num::Int(h.incident_bursts.len() as i64),
        );
        evidence.insert("incident_failures_burst_median".into(), Num::Int(u));
    }
    let (target, reason) = match incident {
        _ if current < low => (
            low,
            format!(
                "background failure bursts trip the breaker: {} of {} bursts outside incidents reach {current} (q95 {q95}){}",
                bg.reaching(current),
                bg.bursts.len(),
                match incident {
                    Some(u) if u < low => format!(
                        "; half the failures inside incidents come in bursts of {u} or more, which a fail_max of {low} lets through"
                    ),
                    _ => String::new(),
                }
            ),
        ),
        Some(u) if low > u => {
            held.push(Held {
                host: h.host.clone(),
                reason: format!(
                    "fail_max left at {current}: sparing background noise needs at least {low} (q95 {q95} of {} bursts outside incidents, at most {} a day reaching it), above {u}, the burst length that half the failures inside incidents reach; no value separates noise from outages",
                    bg.bursts.len(),
                    s.max_false_trips_per_day
                ),
            });
            return None;
        }
        Some(u) if current > u => (
            u.max(low),
            format!(
                "outages trip it late: half the failures inside incidents come in bursts of {u} or more, below fail_max {current}; background q95 is {q95}"
            ),
        ),
        _ => return None,
    };
    let step = s.max_fail_max_step;
    let to = target
        .clamp(current - step, current + step)
        .clamp(s.fail_max[0], s.fail_max[1]);
    if to == current {
        return None;
    }
    let reason = with_limit_note(reason, target as f64, to as f64, "fail_max");
    let mut p = Proposal {
        key: BreakerKey::FailMax,
        role: None,
        from: current as f64,
        to,
        reason,
        evidence,
        confidence: None,
    };
    set_background_proposed(&mut p, &bg);
    Some(p)
}

/// The background figures of a fail_max proposal's value.
fn set_background_proposed(p: &mut Proposal, bg: &Background<'_>) {
    p.evidence.insert(
        "background_reaching_proposed".into(),
        Num::Int(bg.reaching(p.to) as i64),
    );
    p.evidence.insert(
        "false_opens_per_day_proposed".into(),
        Num::real(bg.false_opens_per_day(p.to)),
    );
}

/// Rules 1 and 5: `reset_timeout_s` from the median Retry-After (capped by the host's
/// `retry_after_cap_s`), else from the median length of ended incidents; flapping raises
/// it by `flap_reset_factor`. Only for hosts whose breaker opened or that had incidents.
fn reset_rule(
    h: &HostEvidence,
    cur: &Policy,
    flapping: bool,
    s: &AdviseSettings,
) -> Option<Proposal> {
    if h.opens == 0 && h.incidents.is_empty() {
        return None;
    }
    let current = cur.reset_timeout_s;
    let mut evidence = Evidence::new();
    let mut reasons = Vec::new();
    let mut target: Option<f64> = None;
    if h.retry_after_samples >= s.min_retry_after_samples
        && let Some(median) = h.retry_after_median_s
    {
        let t = median.min(cur.retry_after_cap_s);
        evidence.insert("retry_after_median_s".into(), Num::real(median));
        evidence.insert(
            "retry_after_samples".into(),
            Num::Int(h.retry_after_samples),
        );
        evidence.insert("retry_after_cap_s".into(), Num::real(cur.retry_after_cap_s));
        reasons.push(if median > cur.retry_after_cap_s {
            format!(
                "the host asks for {median:.0} s (median Retry-After), capped at {:.0} s",
                cur.retry_after_cap_s
            )
        } else {
            format!("the host asks for {median:.0} s (median Retry-After)")
        });
        target = Some(t);
    } else {
        let mut ended: Vec<f64> = h
            .incidents
            .iter()
            .filter(|i| !i.ongoing)
            .map(|i| i.duration_s)
            .collect();
        if ended.len() >= s.min_incidents {
            ended.sort_by(f64::total_cmp);
            let median = ended[ended.len().div_ceil(2) - 1];
            evidence.insert("incident_duration_median_s".into(), Num::real(median));
            evidence.insert("incidents".into(), Num::Int(ended.len() as i64));
            reasons.push(format!(
                "incidents last {median:.0} s (median of {})",
                ended.len()
            ));
            target = Some(median);
        }
    }
    if flapping {
        let t = current * s.flap_reset_factor;
        evidence.insert("pingpong_flaps".into(), Num::Int(h.pingpong_flaps));
        evidence.insert("opens".into(), Num::Int(h.opens));
        reasons.push(format!(
            "the breaker flaps: {} times it reopened soon after closing",
            h.pingpong_flaps
        ));
        target = Some(target.map_or(t, |x| x.max(t)));
    }
    let target = target?;
    // Never past the longest Retry-After the crawler honours: the breaker would stay
    // open after every cooldown the server asked for had ended.
    let to = target
        .clamp(current / s.max_reset_factor, current * s.max_reset_factor)
        .clamp(s.reset_timeout_s[0], s.reset_timeout_s[1])
        .min(cur.retry_after_cap_s)
        .round()
        .max(1.0);
    if (to - current).abs() <= s.reset_band * current {
        return None;
    }
    Some(Proposal {
        key: BreakerKey::ResetTimeoutS,
        role: None,
        from: current,
        to: to as i64,
        reason: with_limit_note(reasons.join("; "), target.round(), to, "reset_timeout_s"),
        evidence,
        confidence: None,
    })
}

/// Rule 3 (and rule 5 at the reset cap): many failed half-open trials -> two successes
/// to close and one probe at a time; long runs of successful trials -> back to one
/// success. Written at the host's metadata role when it has metadata traffic.
fn half_open_rule(
    h: &HostEvidence,
    cfg: &BreakerConfig,
    model: &CrawlerModel,
    flapping_at_reset_cap: bool,
    s: &AdviseSettings,
) -> Vec<Proposal> {
    let role = h
        .roles
        .iter()
        .any(|r| r.role == "metadata" && r.calls_net > 0)
        .then(|| "metadata".to_owned());
    // What the file says (the threshold the crawler would run if it honoured it), with
    // the trial budget the crawler does run.
    let mut cur = cfg.policy(&h.host, role.as_deref());
    cur.trial_calls = model.policy(cfg, &h.host, role.as_deref()).trial_calls;
    let (n, k_fail) = (h.half_open_trials, h.half_open_trial_failures);
    let fail_lo = wilson_lower(k_fail as f64, n as f64);
    let ok_lo = wilson_lower((n - k_fail) as f64, n as f64);
    let evidence = ev(&[
        ("half_open_trials", Num::Int(n)),
        ("half_open_trial_failures", Num::Int(k_fail)),
        ("failure_share_lo95", Num::real(fail_lo)),
    ]);
    let mut out = Vec::new();
    let tighten = n >= s.min_half_open_trials && fail_lo > s.half_open_failure_share;
    if tighten || flapping_at_reset_cap {
        let reason = if tighten {
            format!(
                "{k_fail} of {n} half-open trials failed (lower bound {:.0}%): require two successes, one probe at a time",
                fail_lo * 100.0
            )
        } else {
            "the breaker flaps with reset_timeout_s at its limit: require one more success to close"
                .into()
        };
        let want = if tighten {
            2
        } else {
            cur.success_threshold + 1
        };
        let to = want.clamp(s.success_threshold[0], s.success_threshold[1]);
        if to > cur.success_threshold {
            out.push(Proposal {
                key: BreakerKey::SuccessThreshold,
                role: role.clone(),
                from: cur.success_threshold as f64,
                to,
                reason: reason.clone(),
                evidence: evidence.clone(),
                confidence: None,
            });
        }
        let trial = 1.clamp(s.trial_calls[0], s.trial_calls[1]);
        if tighten && cur.trial_calls != trial {
            out.push(Proposal {
                key: BreakerKey::TrialCalls,
                role: role.clone(),
                from: cur.trial_calls as f64,
                to: trial,
                reason,
                evidence: evidence.clone(),
                confidence: None,
            });
        }
    } else if cur.success_threshold > s.success_threshold[0]
        && n >= s.min_half_open_trials_relax
        && ok_lo > s.half_open_success_share
    {
        let mut evidence = evidence;
        evidence.insert("success_share_lo95".into(), Num::real(ok_lo));
        out.push(Proposal {
            key: BreakerKey::SuccessThreshold,
            role,
            from: cur.success_threshold as f64,
            to: (cur.success_threshold - 1).max(s.success_threshold[0]),
            reason: format!(
                "{} of {n} half-open trials succeeded (lower bound {:.0}%): one success closes the breaker again",
                n - k_fail,
                ok_lo * 100.0
            ),
            evidence,
            confidence: None,
        });
    }
    out
}

/// Rule 4: per role with enough calls, a 429 share of attempts (retried ones included)
/// whose Wilson lower bound is above `aimd.high_429_ratio` lowers the rates by
/// `decrease_step_pct` (floor `min_multiplier`); no 429 at all, with an upper bound
/// below the threshold, raises them by `increase_step_pct` (cap `max_multiplier`).
/// Multipliers are relative to the rates first recorded for the host and role; each
/// limit is scaled over its own interval, and a step that rounding eats is held with
/// that reason.
fn advise_rates(h: &HostEvidence, rl: &RateLimits, s: &AdviseSettings, plan: &mut Plan) {
    let a = &rl.aimd;
    for r in &h.roles {
        if r.calls_net < s.min_role_calls {
            continue;
        }
        let Some(current) = rl.rates_for(&h.host, &r.role) else {
            continue;
        };
        let recorded = plan
            .baselines
            .get(&h.host)
            .and_then(|m| m.get(&r.role))
            .filter(|b| b.len() == current.len() && b.iter().all(|x| Rate::parse(x).is_some()));
        let base: Vec<String> = recorded.cloned().unwrap_or_else(|| current.clone());
        let (Some(b0), Some(c0)) = (
            base.first().and_then(|x| Rate::parse(x)),
            current.first().and_then(|x| Rate::parse(x)),
        ) else {
            continue;
        };
        let m_cur = round3(c0.per_second() / b0.per_second());
        // What the server saw: every attempt, retried ones included (429s that the
        // retries hid still count against the host's quota).
        let (n, k) = r.attempt_counts();
        let lo = wilson_lower(k as f64, n as f64);
        let hi = wilson_upper(k as f64, n as f64);
        // The server's quota, read from the role's windows, comes first: 429s that do
        // not come from the role's own rate slow nothing down, and a knee below the
        // current rates sets them just under it.
        let found = (!r.windows.is_empty()).then(|| quota::find(&r.windows, r.window_s));
        match found.as_ref().map(|f| (f, &f.quota)) {
            Some((
                f,
                Quota::Unrelated {
                    windows,
                    throttled,
                    busy,
                    quiet,
                },
            )) => {
                // Said only where the share of 429s alone would have slowed the role down.
                if lo > a.high_429_ratio {
                    plan.held.push(Held {
                        host: h.host.clone(),
                        reason: format!(
                            "ratelimits.yaml {} rates kept: 429s come at every rate ({throttled} of {windows} windows of {} s throttled: {:.0}% of the busiest quarter, {:.0}% of the quietest half), not from the host's own rate",
                            r.role,
                            f.window_s,
                            busy * 100.0,
                            quiet * 100.0
                        ),
                    });
                }
                continue;
            }
            Some((f, Quota::Knee { .. })) => {
                let count_head = rl.wait_for(&h.host, &r.role).count_head;
                quota_rates(
                    h,
                    r,
                    f,
                    (current, &base, m_cur, count_head),
                    (n, k, lo, hi),
                    s,
                    a,
                    plan,
                );
                continue;
            }
            _ => {}
        }
        let (wanted, reason) = if lo > a.high_429_ratio && m_cur <= a.min_multiplier {
            // Already at the floor: nothing lower to propose.
            continue;
        } else if lo > a.high_429_ratio {
            (
                (m_cur * (1.0 - a.decrease_step_pct / 100.0)).max(a.min_multiplier),
                format!(
                    "{k} of {n} {} attempts got 429 ({:.1}%, lower bound {:.1}% > {:.1}%; {} of {} requests after retries): slow down",
                    r.role,
                    100.0 * k as f64 / n as f64,
                    lo * 100.0,
                    a.high_429_ratio * 100.0,
                    r.e429,
                    r.calls_net
                ),
            )
        } else if k == 0 && hi < a.high_429_ratio && m_cur < a.max_multiplier {
            // Never raised while any attempt still gets 429.
            (
                (m_cur * (1.0 + a.increase_step_pct / 100.0)).min(a.max_multiplier),
                format!(
                    "no 429 in {n} {} attempts (upper bound {:.1}% < {:.1}%): speed back up",
                    r.role,
                    hi * 100.0,
                    a.high_429_ratio * 100.0
                ),
            )
        } else {
            continue;
        };
        let m_new = round3(wanted.clamp(
            m_cur * (1.0 - s.max_rate_step),
            m_cur * (1.0 + s.max_rate_step),
        ));
        if (m_new - m_cur).abs() <= s.rate_band * m_cur {
            continue;
        }
        let to: Vec<String> = base
            .iter()
            .filter_map(|x| Rate::parse(x))
            .map(|x| x.scaled(m_new).to_string())
            .collect();
        let reason = with_limit_note(reason, round3(wanted), m_new, "the multiplier");
        if &to == current {
            // Rounding each limit over its own interval ate the step.
            plan.held.push(Held {
                host: h.host.clone(),
                reason: format!(
                    "ratelimits.yaml {} rates stay {}: {reason}, but x{} rounds back to the same limits",
                    r.role,
                    current.join(", "),
                    Num::real(m_new)
                ),
            });
            continue;
        }
        plan.baselines
            .entry(h.host.clone())
            .or_default()
            .entry(r.role.clone())
            .or_insert_with(|| base.clone());
        plan.rates.push(RateChange {
            host: h.host.clone(),
            role: r.role.clone(),
            from: current.clone(),
            to,
            multiplier_from: Num::real(m_cur),
            multiplier_to: Num::real(m_new),
            base,
            reason,
            evidence: ev(&share_evidence(r, (n, k, lo, hi), a)),
        });
    }
}

/// The evidence every rates change carries: the role's calls and 429s, and the share
/// of its attempts that got one with its bounds, against the threshold.
fn share_evidence(
    r: &evidence::RoleEvidence,
    (n, k, lo, hi): (i64, i64, f64, f64),
    a: &crate::config::rates::Aimd,
) -> [(&'static str, Num); 7] {
    [
        ("calls", Num::Int(r.calls_net)),
        ("e429", Num::Int(r.e429)),
        ("attempts", Num::Int(n)),
        ("attempts_429", Num::Int(k)),
        ("e429_lo95", Num::real(lo)),
        ("e429_hi95", Num::real(hi)),
        ("high_429_ratio", Num::real(a.high_429_ratio)),
    ]
}

/// Rule 4, from the server's quota (`quota::Quota::Knee`): each limiter's rate over the
/// quota's own window (`N/MINUTE` for 60 s windows) set just under the ceiling the
/// server was seen to take, shared among the limiters, rounded down. The rate of that
/// unit is lowered, or added when the role has none (a per-second or per-hour rate does
/// not stop a minute's burst). Where HEAD requests skip the limiter (`count_head`
/// false), their share of the attempts comes off the ceiling first. One step a night:
/// never below `1 - max_rate_step` of the busiest window sent, never above the ceiling.
#[allow(clippy::too_many_arguments)]
fn quota_rates(
    h: &HostEvidence,
    r: &evidence::RoleEvidence,
    found: &quota::Found,
    (current, base, m_cur, count_head): (&[String], &[String], f64, bool),
    (n, k, lo, hi): (i64, i64, f64, f64),
    s: &AdviseSettings,
    a: &crate::config::rates::Aimd,
    plan: &mut Plan,
) {
    let Quota::Knee {
        windows,
        throttled,
        ceiling,
        busiest,
        limiters,
    } = found.quota
    else {
        return;
    };
    let window_s = found.window_s;
    let Some(unit) = crate::config::rates::unit_of(window_s) else {
        plan.held.push(Held {
            host: h.host.clone(),
            reason: format!(
                "ratelimits.yaml {} rates kept: the server throttles at ~{ceiling} attempts per {} s window, which no rate unit expresses",
                r.role, window_s
            ),
        });
        return;
    };
    let limiters = limiters.max(1);
    // HEAD requests skip the limiter unless `count_head`, but the server counts them:
    // the limiter gets the ceiling less their share.
    let (heads, sent) = r.windows.iter().fold((0i64, 0i64), |(h, a), (_, w)| {
        (h + w.head, a + w.accepted + w.attempts_429)
    });
    let head_share = if count_head || sent == 0 {
        0.0
    } else {
        heads as f64 / sent as f64
    };
    let budget = ceiling as f64 * (1.0 - head_share);
    let top = (budget / limiters as f64).floor() as i64;
    let target = ((0.95 * budget / limiters as f64).floor() as i64).clamp(1, top.max(1));
    let step = ((busiest as f64 / limiters as f64) * (1.0 - s.max_rate_step)).floor() as i64;
    let want = target.max(step).min(top).max(1);
    let at = current
        .iter()
        .position(|x| Rate::parse(x).is_some_and(|x| x.per == 1 && x.unit == unit));
    // What the current rates let through in one window, per limiter, as the crawler
    // reads them (`1/3SECOND` is one a second there): the tightest of them.
    let limit_now = current
        .iter()
        .filter_map(|x| crate::config::rates::crawler_reading(x))
        .map(|(limit, interval_s)| {
            if interval_s <= window_s {
                (limit as f64 * window_s / interval_s).ceil()
            } else {
                // A coarser rate's whole limit may pass in one of our windows.
                limit as f64
            }
        })
        .fold(f64::INFINITY, f64::min);
    if want as f64 >= limit_now * (1.0 - s.rate_band) {
        return;
    }
    let new_rate = format!("{want}/{unit}");
    let mut to = current.to_vec();
    match at {
        Some(i) => to[i] = new_rate.clone(),
        None => to.push(new_rate.clone()),
    }
    let mut reason = format!(
        "the server took at most {ceiling} {} attempts in a throttled {} ({throttled} of {windows} windows throttled, the busiest sent {busiest}) from {limiters} rate limiter{}: {new_rate} per limiter {}, just under its quota; {} (share of throttled windows at the ceiling, per window length: {})",
        r.role,
        unit.to_ascii_lowercase(),
        if limiters == 1 { "" } else { "s" },
        if at.is_some() { "instead" } else { "added" },
        if found.clear() {
            format!(
                "its 429s follow the count over the last {}",
                unit.to_ascii_lowercase()
            )
        } else {
            format!(
                "no window length showed a ceiling clearly, so it is read per {}",
                unit.to_ascii_lowercase()
            )
        },
        found.describe(),
    );
    if head_share > 0.0 {
        reason.push_str(&format!(
            " (less the {:.0}% of attempts that are HEAD requests, which skip the limiter but count against the quota)",
            head_share * 100.0
        ));
    }
    if want > target {
        reason.push_str(&format!(
            "; moves towards {target}/{unit} within this run's step"
        ));
    }
    // The rates set from the quota become the multiplier's reference: the share rule
    // scales them from here, so "speed back up" never lifts them over the quota.
    plan.baselines
        .entry(h.host.clone())
        .or_default()
        .insert(r.role.clone(), to.clone());
    let mut evidence = ev(&[
        &share_evidence(r, (n, k, lo, hi), a)[..],
        &[
            ("quota_window_s", Num::real(window_s)),
            ("quota_ceiling", Num::Int(ceiling)),
            ("quota_busiest", Num::Int(busiest)),
            ("quota_windows", Num::Int(windows as i64)),
            ("quota_windows_throttled", Num::Int(throttled as i64)),
            ("quota_limiters", Num::Int(limiters)),
            ("quota_head_share", Num::real(head_share)),
        ],
    ]
    .concat());
    // How clearly the window was found, where it could be measured.
    for x in &found.scales {
        if let Some(v) = x.separation {
            let name = crate::config::rates::unit_of(x.window_s).unwrap_or("WINDOW");
            evidence.insert(
                format!("quota_separation_{}", name.to_ascii_lowercase()),
                Num::real(v),
            );
        }
    }
    plan.rates.push(RateChange {
        host: h.host.clone(),
        role: r.role.clone(),
        from: current.to_vec(),
        to,
        multiplier_from: Num::real(m_cur),
        multiplier_to: Num::real(m_cur),
        base: base.to_vec(),
        reason,
        evidence,
    });
}

/// Says so in the reason when the step bound or a clamp stopped short of the target.
fn with_limit_note(reason: String, target: f64, to: f64, key: &str) -> String {
    if target == to {
        reason
    } else {
        format!("{reason}; {key} moves towards {target} within this run's step and limits")
    }
}

/// The burst length at which half of all the failures in `sorted` bursts are reached
/// (the median over failures of the length of the burst each belongs to): "half the
/// failures come in bursts at least this long". Unlike the median burst, many short
/// bursts in a partial outage do not hide the long ones that hold most failures.
pub fn failure_weighted_median(sorted: &[u64]) -> u64 {
    let total: u64 = sorted.iter().sum();
    let mut seen = 0;
    for &l in sorted {
        seen += l;
        if 2 * seen >= total {
            return l;
        }
    }
    0
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate_change(from: &[&str], to: &[&str], lo: f64) -> RateChange {
        let v = |x: &[&str]| x.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        RateChange {
            host: "a.example".into(),
            role: "metadata".into(),
            from: v(from),
            to: v(to),
            multiplier_from: Num::Int(1),
            multiplier_to: Num::Int(1),
            base: v(from),
            reason: String::new(),
            evidence: ev(&[
                ("e429_lo95", Num::real(lo)),
                ("high_429_ratio", Num::real(0.05)),
            ]),
        }
    }

    #[test]
    fn rates_lowered_last_night_settle_once_429s_are_under_the_threshold() {
        let last = [rate_change(
            &["10/SECOND"],
            &["10/SECOND", "23/MINUTE"],
            0.2,
        )];
        // Lowered again with 429s under the threshold: a staircase, held.
        let again = rate_change(
            &["10/SECOND", "23/MINUTE"],
            &["10/SECOND", "22/MINUTE"],
            0.01,
        );
        let why = settling(&again, &last).expect("held");
        assert!(
            why.contains("moved 10/SECOND -> 10/SECOND, 23/MINUTE last night")
                && why.contains("1.0% lower bound, not above twice 5.0%"),
            "{why}"
        );
        // Between the threshold and twice it: not clearly failing, held too.
        let some = rate_change(
            &["10/SECOND", "23/MINUTE"],
            &["10/SECOND", "20/MINUTE"],
            0.08,
        );
        assert!(settling(&some, &last).is_some());
        // Clearly above: last night's step was not enough, it goes on.
        let more = rate_change(
            &["10/SECOND", "23/MINUTE"],
            &["10/SECOND", "20/MINUTE"],
            0.12,
        );
        assert!(settling(&more, &last).is_none());
        // Raising back is AIMD's climb; and a role last night did not move is free.
        let up = rate_change(
            &["10/SECOND", "23/MINUTE"],
            &["10/SECOND", "24/MINUTE"],
            0.0,
        );
        assert!(settling(&up, &last).is_none());
        // Last night raised them (AIMD's climb): a cut tonight backs off, not held.
        let raised = [rate_change(
            &["10/SECOND", "22/MINUTE"],
            &["10/SECOND", "23/MINUTE"],
            0.0,
        )];
        assert!(settling(&again, &raised).is_none());
        assert!(settling(&again, &[]).is_none());
    }

    #[test]
    fn failure_weighted_median_follows_the_failures() {
        // 18 single failures, then long bursts holding most failures.
        let mut v = vec![1; 18];
        v.extend([2, 2, 2, 2, 3, 3, 5, 5, 9, 9, 21, 24]);
        assert_eq!(nearest_rank(&v, 0.5), 1);
        assert_eq!(failure_weighted_median(&v), 9);
        assert_eq!(failure_weighted_median(&[4]), 4);
        assert_eq!(failure_weighted_median(&[]), 0);
    }

    #[test]
    fn num_rounds_to_four_significant_digits() {
        assert_eq!(Num::real(120.0), Num::Int(120));
        assert_eq!(Num::real(0.012345678), Num::Float(0.01235));
        assert_eq!(Num::real(1234.5678), Num::Float(1235.0));
        assert_eq!(Num::real(0.5).to_string(), "0.5");
    }

    #[test]
    fn default_settings_are_valid_and_bad_ones_are_refused() {
        assert!(AdviseSettings::default().validate().is_ok());
        let bad = AdviseSettings {
            fail_max: [0, 10],
            ..AdviseSettings::default()
        };
        assert!(bad.validate().is_err());
    }
}
