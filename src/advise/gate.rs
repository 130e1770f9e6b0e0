//! The replay check: a breaker proposal replayed over the night (and the nights before),
//! its gain against the current settings, the minimum gain and the confidence.

use crate::config::edit::BreakerKey;
use crate::replay::traffic::OpenSpells;
use crate::replay::{Figures, ReplayPolicy};

use super::evidence::HostEvidence;
use super::plan::BreakerChange;
use super::plan::Confidence;
use super::plan::Held;
use super::plan::Num;
use super::proposal::Background;
use super::proposal::Proposal;
use super::proposal::set_background_proposed;
use super::settings::AdviseSettings;

/// Recorded open spells needed before their median can say the night ran another
/// `reset_timeout_s` ([`ran_other_reset`]).
pub const MIN_OPEN_SPELLS: u64 = 3;

/// Whether the recorded breakers ran a shorter `reset_timeout_s` than `policy`: their
/// median open spell is below nine tenths of it, less a second. A breaker turns
/// half-open no sooner than its reset (at the first call after it), so no traffic
/// pattern makes spells shorter: the night ran other settings than the file the replay
/// reads (an older file, a host entry the file lacks, a crawler that reads another
/// key). Longer spells are no such evidence: a quiet host calls late.
pub fn ran_other_reset(policy: &ReplayPolicy, spells: Option<OpenSpells>) -> Option<OpenSpells> {
    spells.filter(|s| s.count >= MIN_OPEN_SPELLS && s.median_s < 0.9 * policy.reset_timeout_s - 1.0)
}

/// A replay that misses more than this share of the recorded opens does not stand for
/// the host: no breaker change. Between `fidelity_tolerance` and this, the miss is an
/// uncertainty a change's gain must clearly exceed.
pub const MAX_REPLAY_MISS: f64 = 0.5;

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
    /// How long the recorded breakers stayed open before turning half-open; None when
    /// unknown.
    fn recorded_spells(&self, _host: &str) -> Option<OpenSpells> {
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
    /// Retried attempts estimated to have raised (timed out) before one that
    /// answered, in rows that answered (`replay::traffic::estimate_retried_raised`).
    pub retried: u64,
    pub now: Figures,
    pub then: Figures,
}

/// Hysteresis across nights: a proposal that moves a value back the way last night's
/// change moved it (last night 45 -> 90, tonight 90 -> 60) needs new evidence: a replay
/// gain of at least `reversal_min_gain` of the current cost. Without it the value stays
/// and the host is held with both nights' numbers. One that moves it on (tonight 90 ->
/// 160) needs high confidence: no staircase of nightly changes to one setting.
pub(super) fn hold_reversals(
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
/// than the current settings (by the minimum gain, with the confidence asked for, and,
/// where it moves fail_max and reset_timeout_s both, with one move that pays alone:
/// [`moved_alone`]); else all the host's breaker proposals are dropped and the host is
/// held with both costs. A fail_max change names every candidate it was chosen
/// from, with its expected false opens a day and its replayed outcomes.
pub(super) fn replay_gate(
    h: &HostEvidence,
    proposals: Vec<Proposal>,
    r: &dyn ReplayCheck,
    s: &AdviseSettings,
    held: &mut Vec<Held>,
) -> Vec<Proposal> {
    let Some(base) = r.current(&h.host) else {
        return proposals;
    };
    if !proposals.iter().any(|p| gridded(p.key)) {
        return proposals;
    }
    let bg = Background::of(h);
    let grid = Grid::around(&proposals, &base, &bg, s);
    let costs = Costs {
        r,
        host: &h.host,
        s,
    };
    if let Some(spells) = ran_other_reset(&base, r.recorded_spells(&h.host)) {
        held.push(Held {
            host: h.host.clone(),
            reason: format!(
                "the recorded breakers turned half-open a median {:.0} s after opening ({} times), but the settings give reset_timeout_s {}: the night ran other settings than this breakers.yaml; no breaker change until they agree",
                spells.median_s,
                spells.count,
                Num::real(base.reset_timeout_s)
            ),
        });
        return Vec::new();
    }
    let now = r.figures(&h.host, &base);
    let now_n = costs.over_nights(&base, &now);
    let miss = replay_miss(r.recorded_opens(&h.host), now.opens, s);
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
    let candidates = grid.best_per_fail_max(&base, &costs);
    let hl = costs.half_life();
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
    let Some(best) = best else {
        return proposals;
    };
    let both = best.2.weighted(costs.half_life());
    let verdict = judge(&now, &now_n, best, miss, s)
        .and_then(|v| moved_alone(&v.best, both, &base, &costs, &now_n).map(|()| v));
    match verdict {
        Err(reason) => {
            held.push(Held {
                host: h.host.clone(),
                reason,
            });
            // Every breaker change of the host goes: they were proposed together.
            Vec::new()
        }
        Ok(v) => carry(proposals, &v, &now, &candidates, &bg),
    }
}

/// The keys the replay weighs on its grid.
fn gridded(k: BreakerKey) -> bool {
    matches!(
        k,
        BreakerKey::FailMax | BreakerKey::ResetTimeoutS | BreakerKey::SuccessThreshold
    )
}

/// How far the replay of the recorded policy is from the recorded breakers, where more
/// than the tolerance: (recorded opens, share of them missed), an uncertainty on every
/// gain it shows.
fn replay_miss(recorded: Option<u64>, replayed: u64, s: &AdviseSettings) -> Option<(u64, f64)> {
    recorded.and_then(|recorded| {
        let missed = (replayed as f64 - recorded as f64).abs();
        (missed > (s.fidelity_tolerance * recorded as f64).max(1.0))
            .then(|| (recorded, missed / (recorded as f64).max(1.0)))
    })
}

/// Whether a point that moves both fail_max and reset_timeout_s has one move that pays
/// for itself: that one alone (the other at its current value) gains over the current
/// settings, across the nights replayed, at least the minimum gain a change needs
/// (`min_gain_share`, `min_gain_calls`). Where neither does, the gain comes from their
/// interaction alone, which rests on how the replay times both (when a breaker with the
/// other fail_max opens, and how long the other reset keeps it open): Err, the host's
/// hold reason. On the closed loop's flapping host such a point (3/30 -> 4/48, replayed
/// 248 -> 217, each move alone 271 and 252) let in x1.13 the failed attempts the next
/// nights and blocked x1.34 the healthy calls; a raised fail_max lets in more than the
/// replay counts (bench/counterfactual.py). `both`: the point's weighted cost.
fn moved_alone(
    best: &ReplayPolicy,
    both: f64,
    base: &ReplayPolicy,
    costs: &Costs<'_>,
    now_n: &NightCosts,
) -> Result<(), String> {
    if best.fail_max == base.fail_max || best.reset_timeout_s == base.reset_timeout_s {
        return Ok(());
    }
    let hl = costs.half_life();
    let cost = |p: &ReplayPolicy| {
        let n = costs.over_nights(p, &costs.r.figures(costs.host, p));
        n.weighted(hl)
    };
    // Each alone: the other key at its current value, any third as the point has it.
    let fail_alone = ReplayPolicy {
        reset_timeout_s: base.reset_timeout_s,
        ..*best
    };
    let reset_alone = ReplayPolicy {
        fail_max: base.fail_max,
        ..*best
    };
    let now = now_n.weighted(hl);
    let pays = |c: f64| {
        let (gain, a_night) = now_n.saving(c, hl);
        worth_a_change(costs.s, gain, a_night)
    };
    let (fail, reset) = (cost(&fail_alone), cost(&reset_alone));
    if pays(fail) || pays(reset) {
        return Ok(());
    }
    let a_night = |c: f64| format!("{:.0}", c / now_n.weight_sum(hl));
    Err(format!(
        "replay: only fail_max {} and reset_timeout_s {} together are worth a change (cost {} now, {} both): fail_max {} alone costs {}, reset_timeout_s {} alone {}; neither change pays for itself, and a gain from their interaction alone is held",
        best.fail_max,
        Num::real(best.reset_timeout_s),
        a_night(now),
        a_night(both),
        best.fail_max,
        a_night(fail),
        Num::real(best.reset_timeout_s),
        a_night(reset),
    ))
}

/// Whether a saving (its share of the current cost, and the calls a night) is the
/// minimum gain a change needs (`min_gain_share`, `min_gain_calls`).
fn worth_a_change(s: &AdviseSettings, gain: f64, calls_a_night: u64) -> bool {
    gain >= s.min_gain_share && calls_a_night >= s.min_gain_calls
}

/// The points the replay tries, each key's values in replay order.
struct Grid {
    fail_max: Vec<u32>,
    reset_timeout_s: Vec<f64>,
    success_threshold: Vec<u32>,
}

impl Grid {
    fn around(
        proposals: &[Proposal],
        base: &ReplayPolicy,
        bg: &Background<'_>,
        s: &AdviseSettings,
    ) -> Grid {
        let find = |k: BreakerKey| proposals.iter().find(|p| p.key == k).map(|p| p.to);
        let cur_fail = base.fail_max as i64;
        // In replay order: the proposal first, then by distance from it (ties go to the
        // earlier), the lower value first.
        let fail_max: Vec<u32> = match find(BreakerKey::FailMax) {
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
        let reset_timeout_s: Vec<f64> = match find(BreakerKey::ResetTimeoutS) {
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
        let success_threshold: Vec<u32> = match find(BreakerKey::SuccessThreshold) {
            Some(p) => vec![p as u32, base.success_threshold],
            None => vec![base.success_threshold],
        };
        Grid {
            fail_max,
            reset_timeout_s,
            success_threshold,
        }
    }

    /// The best point of each fail_max candidate, in replay order, by its cost over the
    /// nights replayed (tonight alone when the dataset holds no earlier night).
    fn best_per_fail_max(
        &self,
        base: &ReplayPolicy,
        costs: &Costs<'_>,
    ) -> Vec<(ReplayPolicy, Figures, NightCosts)> {
        let hl = costs.half_life();
        let mut candidates = Vec::new();
        for &f in &self.fail_max {
            let mut best: Option<(ReplayPolicy, Figures, NightCosts)> = None;
            for &rt in &self.reset_timeout_s {
                for &st in &self.success_threshold {
                    let p = ReplayPolicy {
                        fail_max: f,
                        reset_timeout_s: rt,
                        success_threshold: st,
                        ..*base
                    };
                    let fig = costs.r.figures(costs.host, &p);
                    let n = costs.over_nights(&p, &fig);
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
        candidates
    }
}

/// A policy's cost on tonight and on each earlier night replayed.
struct Costs<'a> {
    r: &'a dyn ReplayCheck,
    host: &'a str,
    s: &'a AdviseSettings,
}

impl Costs<'_> {
    fn over_nights(&self, p: &ReplayPolicy, tonight: &Figures) -> NightCosts {
        NightCosts {
            tonight: tonight.cost(),
            past: self
                .r
                .past_figures(self.host, p)
                .into_iter()
                .filter(|(k, _)| *k < self.s.evidence_nights)
                .map(|(k, f)| (k, f.cost()))
                .collect(),
        }
    }

    fn half_life(&self) -> f64 {
        self.s.evidence_half_life_nights
    }
}

/// The best point, when it is worth a change, and what the changes' reasons say of it.
struct Verdict {
    best: ReplayPolicy,
    figures: Figures,
    gain: f64,
    nights: usize,
    won: usize,
    confidence: Confidence,
    miss: Option<(u64, f64)>,
    /// The reason's clauses: the replay's miss, the confidence.
    uncertainty: String,
    confident: String,
}

/// Whether the best point is worth a change: it beats the current settings over the
/// nights, by at least the minimum gain, by more than twice the replay's miss, with the
/// confidence asked for. Err: the host's hold reason.
fn judge(
    now: &Figures,
    now_n: &NightCosts,
    (bp, bf, bn): (ReplayPolicy, Figures, NightCosts),
    miss: Option<(u64, f64)>,
    s: &AdviseSettings,
) -> Result<Verdict, String> {
    let hl = s.evidence_half_life_nights;
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
            across(now_n),
            across(&bn)
        )
    } else {
        String::new()
    };
    if bn.weighted(hl) >= now_n.weighted(hl) {
        return Err(format!(
            "replay: the proposed breaker settings do not beat the current ones (cost {} now, {} at best{over})",
            summary(now),
            summary(&bf)
        ));
    }
    // A gain too small to be worth a review is noise: the host is left alone.
    let (gain, saved_a_night) = now_n.saving(bn.weighted(hl), hl);
    if !worth_a_change(s, gain, saved_a_night) {
        return Err(format!(
            "replay: the best gain, {saved_a_night} of {} calls ({:.0}%), is too small to be worth a change (at least {:.0}% and {} calls): cost {} now, {} at best{over}",
            across(now_n),
            gain * 100.0,
            s.min_gain_share * 100.0,
            s.min_gain_calls,
            summary(now),
            summary(&bf)
        ));
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
            return Err(format!(
                "replay: {said}, and the best gain, {:.0}% (cost {} now, {} at best), is not clearly larger (more than twice the miss)",
                gain * 100.0,
                summary(now),
                summary(&bf)
            ));
        }
        uncertainty = format!(
            "; {said}: the gain of {:.0}% is more than twice that",
            gain * 100.0
        );
    }
    let (won, lost) = now_n.won_lost(&bn);
    let confidence = confidence(nights, won, lost);
    if confidence < s.min_confidence {
        return Err(format!(
            "replay: the best change gains {:.0}% over {nights} night{} replayed (it wins {won}), confidence {}: below advise.min_confidence ({})",
            gain * 100.0,
            if nights == 1 { "" } else { "s" },
            confidence.name(),
            s.min_confidence.name()
        ));
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
    Ok(Verdict {
        best: bp,
        figures: bf,
        gain,
        nights,
        won,
        confidence,
        miss,
        uncertainty,
        confident,
    })
}

/// The host's proposals with the best point's values, its candidates (for fail_max) and
/// the replay's evidence.
fn carry(
    proposals: Vec<Proposal>,
    v: &Verdict,
    now: &Figures,
    candidates: &[(ReplayPolicy, Figures, NightCosts)],
    bg: &Background<'_>,
) -> Vec<Proposal> {
    let (bp, bf) = (&v.best, &v.figures);
    let mut out = Vec::new();
    for mut p in proposals {
        if gridded(p.key) {
            let to = match p.key {
                BreakerKey::FailMax => bp.fail_max as i64,
                BreakerKey::ResetTimeoutS => bp.reset_timeout_s as i64,
                _ => bp.success_threshold as i64,
            };
            if to as f64 == p.from {
                continue;
            }
            if to != p.to {
                p.reason
                    .push_str(&format!("; the replay grid prefers {to} to {}", p.to));
                p.to = to;
            }
            if p.key == BreakerKey::FailMax {
                set_background_proposed(&mut p, bg);
                let rows: Vec<(ReplayPolicy, Figures)> =
                    candidates.iter().map(|(p, f, _)| (*p, f.clone())).collect();
                p.reason.push_str(&candidates_text(&rows, bg, bp.fail_max));
            }
            p.reason
                .push_str(&format!("; replay cost {} -> {}", now.cost(), bf.cost()));
            p.reason.push_str(&v.uncertainty);
            p.reason.push_str(&v.confident);
            p.confidence = Some(v.confidence);
            if let Some((_, share)) = v.miss {
                p.evidence
                    .insert("replay_open_miss_share".into(), Num::real(share));
            }
            for (k, n) in [
                ("replay_cost_current", now.cost()),
                ("replay_cost_proposed", bf.cost()),
                ("replay_false_trips_current", now.false_trips),
                ("replay_false_trips_proposed", bf.false_trips),
                ("replay_let_through_current", now.failures_let_through),
                ("replay_let_through_proposed", bf.failures_let_through),
                ("replay_opens_current", now.opens),
                ("replay_opens_proposed", bf.opens),
                ("replay_nights", v.nights as u64),
                ("replay_nights_won", v.won as u64),
            ] {
                p.evidence.insert(k.into(), Num::Int(n as i64));
            }
            p.evidence
                .insert("replay_weighted_gain_share".into(), Num::real(v.gain));
        }
        out.push(p);
    }
    out
}

/// A policy's replayed cost on each night replayed: tonight and the earlier nights that
/// hold the host's traffic (nights before tonight, cost).
#[derive(Debug, Clone)]
pub(super) struct NightCosts {
    pub(super) tonight: u64,
    pub(super) past: Vec<(u32, u64)>,
}

impl NightCosts {
    pub(super) fn weight(k: u32, half_life: f64) -> f64 {
        0.5f64.powf(f64::from(k) / half_life)
    }

    /// The cost summed over the nights, each weighed by half every `half_life` nights
    /// back (tonight weighs 1).
    pub(super) fn weighted(&self, half_life: f64) -> f64 {
        self.tonight as f64
            + self
                .past
                .iter()
                .map(|&(k, c)| Self::weight(k, half_life) * c as f64)
                .sum::<f64>()
    }

    /// What a weighted `cost` saves on these costs: its share of them, and the calls a
    /// night (rounded; none where it saves nothing).
    pub(super) fn saving(&self, cost: f64, half_life: f64) -> (f64, u64) {
        let now = self.weighted(half_life);
        let saved = now - cost;
        (
            saved / now,
            (saved / self.weight_sum(half_life)).round() as u64,
        )
    }

    pub(super) fn weight_sum(&self, half_life: f64) -> f64 {
        1.0 + self
            .past
            .iter()
            .map(|&(k, _)| Self::weight(k, half_life))
            .sum::<f64>()
    }

    pub(super) fn nights(&self) -> usize {
        1 + self.past.len()
    }

    /// Nights on which `other` costs less than this, and more.
    pub(super) fn won_lost(&self, other: &NightCosts) -> (usize, usize) {
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
pub(super) fn confidence(nights: usize, won: usize, lost: usize) -> Confidence {
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
pub(super) fn candidates_text(
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
