//! Incident cooldowns: for each host whose latest incident is still going on at the end
//! of the window, a deadline at its expected recovery, for the shared cooldown store.

use crate::config::BreakerConfig;

use super::HostEvidence;

/// The reason written with every cooldown the advisor pushes.
pub const INCIDENT_REASON: &str = "advisor:incident";

/// A cooldown to push: `until_wall` in epoch seconds.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct CooldownProposal {
    pub host: String,
    pub kind: String,
    pub incident_start_s: f64,
    pub until_wall: f64,
    /// Where the expected recovery came from.
    pub basis: String,
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    Some(v[v.len().div_ceil(2) - 1])
}

/// The expected recovery of every host whose latest incident is ongoing at
/// `window_end_s`: the median Retry-After inside the incident when the host sent one;
/// else the incident's start plus the typical length of the host's ended incidents (of
/// the fleet's ended incidents of that kind when the host has none); else one reset
/// timeout. Always at least one reset timeout from the window end, and capped by the
/// host's `retry_after_cap_s`.
pub fn incident_cooldowns(
    hosts: &[HostEvidence],
    cfg: &BreakerConfig,
    model: &crate::crawler::CrawlerModel,
    window_end_s: f64,
) -> Vec<CooldownProposal> {
    let mut out = Vec::new();
    for h in hosts {
        let Some(latest) = h.incidents.iter().max_by_key(|i| (i.start_us, i.end_us)) else {
            continue;
        };
        if !latest.ongoing {
            continue;
        }
        let policy = model.policy(cfg, &h.host, h.dominant_role());
        let start_s = latest.start_us as f64 / 1e6;
        let elapsed = window_end_s - start_s;
        let ended = |pred: &dyn Fn(&HostEvidence) -> bool| {
            median(
                hosts
                    .iter()
                    .filter(|x| pred(x))
                    .flat_map(|x| &x.incidents)
                    .filter(|i| !i.ongoing && i.kind == latest.kind)
                    .map(|i| i.duration_s)
                    .collect(),
            )
        };
        let (secs, basis) = if let Some(ra) = latest.retry_after_median_s {
            (
                ra,
                format!("median Retry-After {ra:.0} s inside the incident"),
            )
        } else if let Some(l) = ended(&|x| x.host == h.host) {
            (
                (l - elapsed).max(policy.reset_timeout_s),
                format!(
                    "the host's {} incidents last {l:.0} s (median); this one has run {elapsed:.0} s",
                    latest.kind
                ),
            )
        } else if let Some(l) = ended(&|_| true) {
            (
                (l - elapsed).max(policy.reset_timeout_s),
                format!(
                    "the fleet's {} incidents last {l:.0} s (median); this one has run {elapsed:.0} s",
                    latest.kind
                ),
            )
        } else {
            (
                policy.reset_timeout_s,
                "no typical incident length yet: one reset timeout".to_owned(),
            )
        };
        // At least one reset timeout (the breaker would block that long anyway), and
        // never past the host's Retry-After cap, nor past a day whatever the config says.
        let cap = policy
            .retry_after_cap_s
            .min(crate::config::MAX_PLAUSIBLE_SECONDS);
        let capped = secs.max(policy.reset_timeout_s).min(cap);
        let basis = if capped < secs {
            format!("{basis}; capped at {cap:.0} s")
        } else {
            basis
        };
        out.push(CooldownProposal {
            host: h.host.clone(),
            kind: latest.kind.clone(),
            incident_start_s: start_s,
            until_wall: window_end_s + capped,
            basis,
        });
    }
    out
}
