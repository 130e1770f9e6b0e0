//! The operator's word: pins (`# breaker-advisor: keep`, `advise.pins`) and reverts of
//! last night's changes, which hold a key for a while and raise the bar after.

use crate::config::pins::{PIN_MARK, Pin, Pins};

use super::Current;
use super::plan::Confidence;
use super::plan::Held;
use super::plan::Num;
use super::plan::Reverted;
use super::settings::AdviseSettings;

/// The changes a person set back that still hold for `host` tonight: those remembered
/// from earlier nights, within `revert_hold_nights` of the night they were seen, and
/// those of the previous patch file whose key the config has at its `from` value again.
pub(super) fn reverts(host: &str, current: &Current<'_>, s: &AdviseSettings) -> Vec<Reverted> {
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
pub(super) const REVERT_MEMORY_HOLDS: i64 = 4;

/// Whole days from `since` to `tonight` (both YYYY-MM-DD); None when either is not a date.
pub(super) fn nights_between(since: &str, tonight: &str) -> Option<i64> {
    let d = |t: &str| chrono::NaiveDate::parse_from_str(t, "%Y-%m-%d").ok();
    Some((d(tonight)? - d(since)?).num_days())
}

/// What the operator said about a host: pins in the settings file and the config files,
/// and changes a person set back.
pub(super) struct OperatorWord<'a> {
    pub(super) host: &'a str,
    pub(super) settings: &'a [Pin],
    pub(super) reverted: &'a [Reverted],
    pub(super) hold_nights: u32,
    /// Tonight (YYYY-MM-DD).
    pub(super) tonight: &'a str,
}

impl OperatorWord<'_> {
    /// Why `change` (of `key`, at the host level or in `role`, in `file`) is not
    /// proposed, if the operator's word holds it.
    pub(super) fn hold(
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

/// Takes the host's changes from `changes[n..]` that the operator's word holds into
/// holds of their own, keeping the others in order.
pub(super) fn hold_by_word<T>(
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
