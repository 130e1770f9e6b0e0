//! The quota a host's server enforces on one role, read from the role's traffic in
//! windows (the metrics' buckets, `aimd.window_s` long by default): the requests the
//! crawler sent against the 429s their attempts got. If the 429s come from the role's
//! own rate, there is a knee: windows up to some count pass, windows above it are
//! throttled. The highest count seen passing and the lowest seen throttled bracket the
//! quota. The count is of requests, not attempts: a 429 brings retries, so counting the
//! attempts would make throttled windows look busier because they were throttled.
//!
//! Pure: no I/O, no clock. Rules (each a golden case in the tests):
//! - no 429 at all: unthrottled;
//! - fewer than `MIN_WINDOWS` windows, or fewer than `MIN_THROTTLED` throttled ones:
//!   too few to decide;
//! - the split of the windows by count that misclassifies the fewest (at or below it: no
//!   429; above: 429) is a knee when at most 10% of the windows below it and at least
//!   half of those above it are throttled, and the share of 429s per request above it is
//!   at least twice the share below (random 429s catch busy windows more often, but not
//!   a larger share of their requests); with fewer than `MIN_THROTTLED` throttled
//!   windows above it, or a knee below `MIN_KNEE_REQUESTS` requests, too few to decide;
//! - otherwise the 429s are unrelated to the rate (they come at every rate).

/// One window of a role's traffic.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Window {
    /// Requests sent (network rows).
    pub requests: i64,
    /// 429s among their attempts, retried ones included.
    pub attempts_429: i64,
    /// Rate limiters running for the role in the window: processes, machines or 1, as
    /// the limiter's backend shares them.
    pub limiters: i64,
}

/// Windows needed before the rule says anything.
pub const MIN_WINDOWS: usize = 30;
/// Throttled windows needed (overall, and above a knee).
pub const MIN_THROTTLED: usize = 5;
/// A knee needs windows this busy: below it, a window holds too few requests for its
/// 429s to say anything about a rate (with a few requests a minute, the busier windows
/// are simply likelier to catch a random 429).
pub const MIN_KNEE_REQUESTS: i64 = 10;

/// What the windows say about the quota.
#[derive(Debug, Clone, PartialEq)]
pub enum Quota {
    Unthrottled {
        windows: usize,
    },
    TooFew {
        windows: usize,
        throttled: usize,
    },
    /// 429s at every rate: `below` and `above` are the throttled shares of the windows
    /// at or below and above the best split `at`.
    Unrelated {
        windows: usize,
        throttled: usize,
        at: i64,
        below: f64,
        above: f64,
    },
    /// 429s begin above a request count per window: `accepted` is the highest count seen
    /// without a 429 at or below the knee (None: every window was throttled, so the
    /// quota is below the lowest rate seen), `limited` the lowest count seen throttled
    /// above it. `limiters` is the median of the windows' limiter counts.
    Knee {
        windows: usize,
        throttled: usize,
        accepted: Option<i64>,
        limited: i64,
        limiters: i64,
    },
}

/// Reads the quota from a role's windows (any order).
pub fn estimate(windows: &[Window]) -> Quota {
    let n = windows.len();
    let throttled = windows.iter().filter(|w| w.attempts_429 > 0).count();
    if throttled == 0 {
        return Quota::Unthrottled { windows: n };
    }
    if n < MIN_WINDOWS || throttled < MIN_THROTTLED {
        return Quota::TooFew {
            windows: n,
            throttled,
        };
    }
    let mut sorted: Vec<&Window> = windows.iter().collect();
    sorted.sort_by_key(|w| w.requests);
    // Split after index i (windows [0, i) at or below): errors = throttled below +
    // unthrottled above. Splits fall between distinct counts only.
    let unthrottled_total = n - throttled;
    let (mut best, mut best_err) = (0usize, unthrottled_total);
    let (mut thr_below, mut ok_below) = (0usize, 0usize);
    for i in 1..=n {
        let w = sorted[i - 1];
        if w.attempts_429 > 0 {
            thr_below += 1;
        } else {
            ok_below += 1;
        }
        if i < n && sorted[i].requests == w.requests {
            continue;
        }
        let err = thr_below + (unthrottled_total - ok_below);
        // Ties: the highest split (the most traffic known to pass).
        if err <= best_err {
            best = i;
            best_err = err;
        }
    }
    let (below, above) = (&sorted[..best], &sorted[best..]);
    let share = |ws: &[&Window]| {
        if ws.is_empty() {
            0.0
        } else {
            ws.iter().filter(|w| w.attempts_429 > 0).count() as f64 / ws.len() as f64
        }
    };
    let thr_above = above.iter().filter(|w| w.attempts_429 > 0).count();
    let (sb, sa) = (share(below), share(above));
    let at = below.last().map_or(0, |w| w.requests);
    // 429s per request, pooled, on either side.
    let per_request = |ws: &[&Window]| {
        let (k, n) = ws.iter().fold((0i64, 0i64), |(k, n), w| {
            (k + w.attempts_429, n + w.requests)
        });
        if n > 0 { k as f64 / n as f64 } else { 0.0 }
    };
    let (rb, ra) = (per_request(below), per_request(above));
    if sb > 0.10 || sa < 0.5 || (rb > 0.0 && ra < 2.0 * rb) {
        return Quota::Unrelated {
            windows: n,
            throttled,
            at,
            below: sb,
            above: sa,
        };
    }
    if thr_above < MIN_THROTTLED || (!below.is_empty() && at < MIN_KNEE_REQUESTS) {
        return Quota::TooFew {
            windows: n,
            throttled,
        };
    }
    let mut procs: Vec<i64> = windows.iter().map(|w| w.limiters.max(1)).collect();
    procs.sort_unstable();
    Quota::Knee {
        windows: n,
        throttled,
        accepted: below
            .iter()
            .filter(|w| w.attempts_429 == 0)
            .map(|w| w.requests)
            .max(),
        limited: above
            .iter()
            .filter(|w| w.attempts_429 > 0)
            .map(|w| w.requests)
            .min()
            .unwrap_or(at + 1),
        limiters: procs[(procs.len() - 1) / 2],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(requests: i64, attempts_429: i64) -> Window {
        Window {
            requests,
            attempts_429,
            limiters: 4,
        }
    }

    #[test]
    fn a_clear_knee_brackets_the_quota() {
        // 60 quiet windows from 20 to 58 attempts, 20 busy ones from 61 to 80 that the
        // server throttled, and one throttled window at 70 beside a passing one.
        let mut ws: Vec<Window> = (0..60).map(|i| w(20 + (i * 38) / 59, 0)).collect();
        ws.extend((0..20).map(|i| w(61 + i, 61 + i - 58)));
        ws.push(w(70, 0));
        match estimate(&ws) {
            Quota::Knee {
                accepted,
                limited,
                limiters,
                ..
            } => assert_eq!((accepted, limited, limiters), (Some(58), 61, 4)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn no_429_at_all_is_unthrottled() {
        let ws: Vec<Window> = (0..100).map(|i| w(10 + i, 0)).collect();
        assert_eq!(estimate(&ws), Quota::Unthrottled { windows: 100 });
    }

    #[test]
    fn throttling_at_every_rate_is_unrelated_to_it() {
        // Every fourth window throttled, whatever its count.
        let ws: Vec<Window> = (0..120)
            .map(|i| w(10 + (i * 7) % 90, i64::from(i % 4 == 0)))
            .collect();
        assert!(
            matches!(estimate(&ws), Quota::Unrelated { .. }),
            "{:?}",
            estimate(&ws)
        );
    }

    #[test]
    fn too_few_windows_decide_nothing() {
        let ws: Vec<Window> = (0..20).map(|i| w(40 + i, i64::from(i > 10))).collect();
        assert!(matches!(estimate(&ws), Quota::TooFew { windows: 20, .. }));
        let mut ws: Vec<Window> = (0..100).map(|i| w(10 + i, 0)).collect();
        ws.extend([w(200, 3), w(210, 3)]);
        assert!(matches!(estimate(&ws), Quota::TooFew { throttled: 2, .. }));
    }

    #[test]
    fn random_429s_on_sparse_traffic_make_no_knee() {
        // 1 to 6 requests a window, each with a 5% chance of a 429: the busier windows
        // catch one more often, but the share per request is the same on both sides.
        let mut state = 7u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let ws: Vec<Window> = (0..2000)
            .map(|_| {
                let n = 1 + (next() % 6) as i64;
                let k = (0..n).filter(|_| next() % 20 == 0).count() as i64;
                w(n, k)
            })
            .collect();
        assert!(
            !matches!(estimate(&ws), Quota::Knee { .. }),
            "{:?}",
            estimate(&ws)
        );
    }

    #[test]
    fn throttled_at_every_window_puts_the_quota_below_the_lowest_rate() {
        let ws: Vec<Window> = (0..40).map(|i| w(50 + i, 5)).collect();
        match estimate(&ws) {
            Quota::Knee {
                accepted, limited, ..
            } => assert_eq!((accepted, limited), (None, 50)),
            other => panic!("{other:?}"),
        }
    }
}
