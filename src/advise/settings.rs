//! The advisor's settings (`advise:` in breaker-advisor.yaml): the rules' thresholds,
//! steps and bounds, the evidence of several nights, pins and reverts.

use serde::{Deserialize, Serialize};

use crate::config::edit::BreakerKey;
use crate::config::pins::Pin;

use super::plan::Confidence;

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
