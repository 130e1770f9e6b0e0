//! The rate rules: AIMD on the 429 share, the quota found at its own time scale, and
//! the settling of a role's rates after a lowering.

use crate::config::rates::{Rate, RateLimits};
use crate::metrics::stats::{wilson_lower, wilson_upper};

use super::evidence;
use super::evidence::HostEvidence;
use super::plan::Held;
use super::plan::Num;
use super::plan::Plan;
use super::plan::RateChange;
use super::plan::ev;
use super::quota;
use super::quota::Quota;
use super::round3;
use super::settings::AdviseSettings;

/// A role's rates that last night's applied patch lowered are lowered again the next
/// night only while the lower bound of its 429 share stays above twice
/// `aimd.high_429_ratio` (last night's step clearly did not work): below that, a further
/// step is a staircase of nightly changes (the rates' own confidence: they are not
/// replayed), and the rates settle for a night. Raising back is AIMD's own climb and
/// goes on.
pub(super) fn settling(c: &RateChange, last_night: &[RateChange]) -> Option<String> {
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

/// Rule 4: per role with enough calls, a 429 share of attempts (retried ones included)
/// whose Wilson lower bound is above `aimd.high_429_ratio` lowers the rates by
/// `decrease_step_pct` (floor `min_multiplier`); no 429 at all, with an upper bound
/// below the threshold, raises them by `increase_step_pct` (cap `max_multiplier`).
/// Multipliers are relative to the rates first recorded for the host and role; each
/// limit is scaled over its own interval, and a step that rounding eats is held with
/// that reason.
pub(super) fn advise_rates(h: &HostEvidence, rl: &RateLimits, s: &AdviseSettings, plan: &mut Plan) {
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
        // The server's quota comes first. A quota per second first of all: the windows,
        // a minute long, cannot show one. Where its rate cannot go lower than the
        // role's runs, the windows are read as ever.
        let count_head = rl.wait_for(&h.host, &r.role).count_head;
        let second = second_quota(r, current, k);
        if let Some(Quota::Knee {
            ceiling, limiters, ..
        }) = second.as_ref().map(|f| &f.quota)
            && ceiling / limiters.max(&1) < MIN_SECOND_SHARE
        {
            // A limiter per process cannot hold a few a second shared by many: each
            // refuses its own bursts (lost requests), where a 429 is retried.
            plan.held.push(Held {
                host: h.host.clone(),
                reason: format!(
                    "ratelimits.yaml {} rates kept: the server takes at most {ceiling} attempts a second, shared by {limiters} rate limiters; a rate per second under {MIN_SECOND_SHARE} for each would refuse the bursts each sees alone (lost requests, where a 429 is retried): a rate limiter the processes share (backend multiprocess or sqlite) could hold it",
                    r.role
                ),
            });
            continue;
        }
        if let Some(f) = second
            && quota_rates(
                h,
                r,
                &f,
                (current, &base, m_cur, count_head),
                (n, k, lo, hi),
                s,
                a,
                plan,
            )
        {
            continue;
        }
        // Then the role's windows: 429s that do not come from the role's own rate slow
        // nothing down, and a knee below the current rates sets them just under it.
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
pub(super) fn share_evidence(
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

/// How far under the ceiling a window's budget is set: one request, the HEAD requests'
/// spread from window to window (twice the square root of a window's share, as counts
/// spread), and two seconds' traffic at the ceiling's pace, at most 5% of it (a row's
/// time is when its last attempt was estimated to reach the server, not when it did;
/// under a short window that misplaces a share of the rows). A minute's quota of
/// 44 keeps 41; an hour's of 2,589, 2,586; with 10% HEAD requests, 1,398 of 1,554 keep
/// 1,371.
fn quota_margin(ceiling: i64, head_share: f64, window_s: f64) -> f64 {
    let ceiling = ceiling as f64;
    1.0 + 2.0 * (ceiling * head_share).sqrt() + ceiling * (2.0 / window_s.max(1.0)).min(0.05)
}

/// The least share of a quota per second each rate limiter must get before a rate per
/// second is set: under it, a limiter that sees only its own process's calls refuses
/// their bursts (measured: 4 limiters at `1/SECOND` under a fleet's 3 a second lost 9%
/// of the successful requests; 1 at `3/SECOND` gained 1%).
pub const MIN_SECOND_SHARE: i64 = 2;

/// What `current` lets through in one window of `window_s`, per limiter, as the crawler
/// reads the rates (`1/3SECOND` is one a second there): the tightest of them.
fn allowance(current: &[String], window_s: f64) -> f64 {
    current
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
        .fold(f64::INFINITY, f64::min)
}

/// The role's quota per second, where its seconds show one ([`quota::second_cap`]) and
/// it met enough 429s (`attempts_429`, at least [`quota::MIN_SECOND_429S`]) to need
/// one: a cap the role's own limiters allowed no more than (their allowance per second
/// times the limiters, the windows' median) is theirs, not the server's.
fn second_quota(
    r: &evidence::RoleEvidence,
    current: &[String],
    attempts_429: i64,
) -> Option<quota::Found> {
    if attempts_429 < quota::MIN_SECOND_429S {
        return None;
    }
    let seconds = r.per_second?;
    let cap = quota::second_cap(&seconds)?;
    let limiters = quota::median_limiters(r.windows.iter().map(|(_, w)| w));
    ((cap.cap as f64) < allowance(current, 1.0) * limiters as f64)
        .then(|| quota::per_second(cap, seconds.max, limiters))
}

/// Rule 4, from the server's quota (`quota::Quota::Knee`): each limiter's rate over the
/// quota's own window (`N/MINUTE` for 60 s windows) set just under the ceiling the
/// server was seen to take ([`quota_margin`]), shared among the limiters, rounded
/// down. The rate of that unit is lowered, or added when the role has none (a
/// per-second or per-hour rate does not stop a minute's burst). Where HEAD requests skip
/// the limiter (`count_head` false), their share of the attempts comes off the ceiling
/// first. One step a night:
/// never below `1 - max_rate_step` of the busiest window sent, never above the ceiling.
#[allow(clippy::too_many_arguments)]
pub(super) fn quota_rates(
    h: &HostEvidence,
    r: &evidence::RoleEvidence,
    found: &quota::Found,
    (current, base, m_cur, count_head): (&[String], &[String], f64, bool),
    (n, k, lo, hi): (i64, i64, f64, f64),
    s: &AdviseSettings,
    a: &crate::config::rates::Aimd,
    plan: &mut Plan,
) -> bool {
    let Quota::Knee {
        windows,
        throttled,
        ceiling,
        busiest,
        limiters,
    } = found.quota
    else {
        return false;
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
        return false;
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
    let (top, target) = match found.cap {
        // A cap every second held is the quota itself, not the most a throttled window
        // took: a fiftieth off, the HEAD requests' share off, rounded to the nearest
        // request (a quota of a few a second leaves no room to round down), then shared
        // among the limiters, rounded down (never a total over the cap), at least one.
        Some(_) => {
            let share = |b: f64| ((b.round() as i64) / limiters).max(1);
            (
                share(budget),
                share(budget - (0.02 * ceiling as f64).floor()),
            )
        }
        None => (
            (budget / limiters as f64).floor() as i64,
            ((budget - quota_margin(ceiling, head_share, window_s)) / limiters as f64).floor()
                as i64,
        ),
    };
    let target = target.clamp(1, top.max(1));
    let step = ((busiest as f64 / limiters as f64) * (1.0 - s.max_rate_step)).floor() as i64;
    let want = target.max(step).min(top).max(1);
    let at = current
        .iter()
        .position(|x| Rate::parse(x).is_some_and(|x| x.per == 1 && x.unit == unit));
    // What the current rates let through in one of the quota's windows, per limiter.
    let limit_now = allowance(current, window_s);
    if want as f64 >= limit_now * (1.0 - s.rate_band) {
        return false;
    }
    let new_rate = format!("{want}/{unit}");
    let mut to = current.to_vec();
    match at {
        Some(i) => to[i] = new_rate.clone(),
        None => to.push(new_rate.clone()),
    }
    let mut reason = match found.cap {
        Some(c) => format!(
            "the server took at most {ceiling} {} attempts in any second ({} of {} seconds reached {ceiling}, {} went over, where a rate of the same mean without a quota would put {:.0} over) from {limiters} rate limiter{}: {new_rate} per limiter {}, at its quota per second",
            r.role,
            c.at_cap,
            c.busy_seconds,
            c.over_cap,
            c.expected_over,
            if limiters == 1 { "" } else { "s" },
            if at.is_some() { "instead" } else { "added" },
        ),
        None => format!(
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
        ),
    };
    if head_share > 0.0 {
        reason.push_str(&format!(
            " (less the {:.0}% of attempts that are HEAD requests, which skip the limiter but count against the quota{})",
            head_share * 100.0,
            if found.cap.is_some() {
                ", before rounding to the nearest request"
            } else {
                ""
            }
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
    // How clearly the cap or the window was found, where it could be measured.
    if let Some(c) = found.cap {
        evidence.insert("quota_seconds_at_cap".into(), Num::Int(c.at_cap));
        evidence.insert("quota_seconds_over_cap".into(), Num::Int(c.over_cap));
        evidence.insert(
            "quota_seconds_over_cap_expected".into(),
            Num::real(c.expected_over),
        );
    }
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
    true
}

/// Says so in the reason when the step bound or a clamp stopped short of the target.
pub(super) fn with_limit_note(reason: String, target: f64, to: f64, key: &str) -> String {
    if target == to {
        reason
    } else {
        format!("{reason}; {key} moves towards {target} within this run's step and limits")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_margin_under_a_quota_is_the_counts_spread_not_a_share_of_the_quota() {
        let kept = |ceiling: i64, heads: f64, window_s: f64| {
            let budget = ceiling as f64 * (1.0 - heads);
            (budget - quota_margin(ceiling, heads, window_s)).floor() as i64
        };
        assert_eq!(kept(44, 0.0, 60.0), 41);
        assert_eq!(kept(2_589, 0.0, 3_600.0), 2_586);
        assert_eq!(kept(1_554, 0.1, 3_600.0), 1_371);
        // A second's quota keeps 5% of its ceiling and one request under it.
        assert_eq!(kept(10, 0.0, 1.0), 8);
    }
}
