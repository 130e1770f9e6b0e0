//! The advisor's answer: a plan of breaker, rate and crawler changes, each with its
//! evidence and reason, and the hosts held with theirs.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::config::edit::BreakerKey;

use super::evidence::HostEvidence;

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
    pub(super) fn is_of(&self, role: Option<&str>, key: &str) -> bool {
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

/// How a hold of a host with fewer network calls than `min_calls` begins: such a host
/// costs a row, not a replay, a chart or a change-point search.
pub const TOO_LITTLE_DATA: &str = "too little data";

pub(super) fn ev(pairs: &[(&str, Num)]) -> Evidence {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
}
