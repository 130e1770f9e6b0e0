//! A breaker proposal on its way through the rules and the replay check, and the
//! background bursts that bound how low `fail_max` may go.

use crate::config::edit::BreakerKey;
use crate::metrics::stats::nearest_rank;

use super::evidence::HostEvidence;
use super::plan::Confidence;
use super::plan::Evidence;
use super::plan::Num;
use super::settings::AdviseSettings;

/// A proposal for one key of a host (or of one of its roles).
pub(super) struct Proposal {
    pub(super) key: BreakerKey,
    pub(super) role: Option<String>,
    pub(super) from: f64,
    pub(super) to: i64,
    pub(super) reason: String,
    pub(super) evidence: Evidence,
    pub(super) confidence: Option<Confidence>,
}

/// What the background bursts (failure bursts outside every incident, one breaker
/// instance each, counted as the crawler's breaker counts) say of a fail_max: a burst
/// that reaches it opens that instance's breaker while the host is healthy, a false
/// open.
pub(super) struct Background<'a> {
    pub(super) bursts: &'a [u64],
    pub(super) days: f64,
}

impl<'a> Background<'a> {
    pub(super) fn of(h: &'a HostEvidence) -> Self {
        Background {
            bursts: &h.background_bursts,
            days: (h.window_hours / 24.0).max(1.0 / 24.0),
        }
    }

    /// Background bursts that reach `fail_max` (each one false open) in the window.
    pub(super) fn reaching(&self, fail_max: i64) -> usize {
        self.bursts
            .iter()
            .filter(|&&l| l as i64 >= fail_max)
            .count()
    }

    /// Expected false opens per 24 hours at `fail_max`.
    pub(super) fn false_opens_per_day(&self, fail_max: i64) -> f64 {
        self.reaching(fail_max) as f64 / self.days
    }

    /// The lowest fail_max above the bursts' q95 whose expected false opens per day are
    /// within `max_false_trips_per_day` (the upper limit if none is).
    pub(super) fn floor(&self, s: &AdviseSettings) -> i64 {
        let mut low = nearest_rank(self.bursts, 0.95) as i64 + 1;
        while low < s.fail_max[1] && self.false_opens_per_day(low) > s.max_false_trips_per_day {
            low += 1;
        }
        low
    }
}

/// The background figures of a fail_max proposal's value.
pub(super) fn set_background_proposed(p: &mut Proposal, bg: &Background<'_>) {
    p.evidence.insert(
        "background_reaching_proposed".into(),
        Num::Int(bg.reaching(p.to) as i64),
    );
    p.evidence.insert(
        "false_opens_per_day_proposed".into(),
        Num::real(bg.false_opens_per_day(p.to)),
    );
}
