//! The breaker rules: `fail_max` from the bursts, `reset_timeout_s` from the incidents
//! and Retry-After, `trial_calls` from the half-open outcomes, and the rule for
//! failures the crawler raises without counting.

use crate::config::edit::BreakerKey;
use crate::config::{BreakerConfig, Policy};
use crate::crawler::CrawlerModel;
use crate::metrics::stats::{nearest_rank, wilson_lower};

use super::Current;
use super::evidence::HostEvidence;
use super::gate::RaisedCounted;
use super::gate::ReplayCheck;
use super::gate::hold_reversals;
use super::gate::replay_gate;
use super::plan::BreakerChange;
use super::plan::CrawlerChange;
use super::plan::Evidence;
use super::plan::Held;
use super::plan::Num;
use super::plan::Plan;
use super::plan::ev;
use super::proposal::{Background, Proposal, set_background_proposed};
use super::rates::with_limit_note;
use super::settings::AdviseSettings;
use super::word::OperatorWord;

/// Requests that raised as breaker failures, a crawler change: where the night shows
/// attempts that raised (rows of requests that raised, or retried attempts that timed
/// out before one that answered) and counting them would keep attempts out of the
/// host's incidents without blocking as many healthy calls, the replayed benefit goes
/// to "needs a crawler change", when the attempts kept out less the healthy calls lost
/// are a gain worth a change (`min_gain_calls`, and `min_gain_share` of those attempts).
/// Without rows of requests that raised, the reason says what the missing rows hide:
/// the requests whose every attempt raised.
pub(super) fn raised_rule(
    h: &HostEvidence,
    r: &dyn ReplayCheck,
    s: &AdviseSettings,
    plan: &mut Plan,
) {
    let Some(base) = r.current(&h.host) else {
        return;
    };
    let Some(RaisedCounted {
        rows,
        retried,
        now,
        then,
    }) = r.raised_counted(&h.host, &base)
    else {
        return;
    };
    let kept = now
        .raised_attempts_in_incidents
        .saturating_sub(then.raised_attempts_in_incidents);
    let lost = then.false_trips.saturating_sub(now.false_trips);
    let gain = kept.saturating_sub(lost);
    let worth =
        (s.min_gain_share * now.raised_attempts_in_incidents as f64).max(s.min_gain_calls as f64);
    if gain == 0 || (gain as f64) < worth {
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
            "{}, which no breaker counts: counted as failures, the replay keeps {kept} of the {} attempts that raised in incidents ({:.1} of {:.1} worker hours) out of them, with {} opens outside incidents instead of {} and {} healthy calls blocked instead of {}{}",
            raised_evidence(rows, retried),
            now.raised_attempts_in_incidents,
            hours(now.raised_seconds_in_incidents - then.raised_seconds_in_incidents),
            hours(now.raised_seconds_in_incidents),
            then.opens_outside_incidents,
            now.opens_outside_incidents,
            then.false_trips,
            now.false_trips,
            if rows == 0 {
                "; the crawler writes no row for a request that raised (its row is written after the retry loop, networking.py ~1278), so the requests whose every attempt timed out, and the worker time they held, are not in this count"
            } else {
                ""
            },
        ),
        ignored_by: crate::crawler::UNCOUNTED_EXCEPTIONS.to_owned(),
        evidence: ev(&[
            ("raised_rows", Num::Int(rows as i64)),
            ("raised_retried_attempts", Num::Int(retried as i64)),
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

/// What the night shows of attempts that raised, in words.
fn raised_evidence(rows: u64, retried: u64) -> String {
    let rows_text = format!("{rows} rows of requests that raised (timeouts, connection errors)");
    let retried_text =
        format!("{retried} retried attempts estimated to have timed out before one that answered");
    match (rows, retried) {
        (0, _) => retried_text,
        (_, 0) => rows_text,
        _ => format!("{rows_text} and {retried_text}"),
    }
}

pub(super) fn advise_breaker(
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
        raised_rule(h, r, s, plan);
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

/// Rule 2: `fail_max` above the background bursts (so noise does not trip the
/// breaker: `Background::floor`) and at most the typical burst inside incidents (so an
/// outage trips it). Noise that trips the breaker more often than the budget raises it
/// even when the outages' bursts are short (the replay weighs the two); otherwise no
/// change when no value does both. No incidents: only ever raised, when noise trips
/// it. The replay check then chooses among the candidates between the current value
/// and this one, weighing the false opens against the failures let in.
pub(super) fn fail_max_rule(
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

/// Rules 1 and 5: `reset_timeout_s` from the median Retry-After (capped by the host's
/// `retry_after_cap_s`), else from the median length of ended incidents; flapping raises
/// it by `flap_reset_factor`. Only for hosts whose breaker opened or that had incidents.
pub(super) fn reset_rule(
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
pub(super) fn half_open_rule(
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
