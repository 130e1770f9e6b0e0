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

mod breaker;
mod gate;
mod plan;
mod proposal;
mod rates;
mod settings;
mod word;

pub use breaker::*;
pub use gate::*;
pub use plan::*;
use rates::*;
pub use settings::*;
use word::*;

use crate::config::BreakerConfig;
use crate::config::anchors::Shared;
use crate::config::rates::RateLimits;
use crate::crawler::CrawlerModel;

pub use evidence::{HostEvidence, IncidentEvidence, RoleEvidence};

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

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::stats::nearest_rank;

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
