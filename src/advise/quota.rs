//! The quota a host's server enforces on one role, read from the role's traffic in
//! windows (the metrics' buckets, `aimd.window_s` long by default): per window, the
//! attempts the server took (answered with anything but 429, retried attempts
//! included) against the 429s it sent.
//!
//! A server that counts a role's requests against a quota takes at most so many per
//! window and throttles the rest, so if the 429s come from the role's own rate, the
//! throttled windows are the busy ones and the 429 share rises with the load. Their
//! counts do not make a clean knee: the quota slides while the windows are fixed (a
//! window is throttled early when the one before filled the quota), and every 429
//! starts a Retry-After cooldown whose blocked calls leave no row, so a throttled
//! window can look quiet. What holds is the ceiling: the most the server took in a
//! window in which it also throttled is at most its quota, and close to it.
//!
//! Pure: no I/O, no clock. Rules (each a golden case in the tests):
//! - no 429 at all: unthrottled;
//! - fewer than `MIN_WINDOWS` windows, or fewer than `MIN_THROTTLED` throttled ones:
//!   too few to decide;
//! - nearly every window throttled (90%): the quota is below every rate seen, and the
//!   ceiling is the quota;
//! - otherwise, of the windows ranked by attempts taken, at least half of the busiest
//!   quarter must be throttled and their share of 429s per attempt must be at least
//!   1.5 times the quietest half's (random 429s catch busy windows more often, but not a
//!   larger share of their attempts; cooldowns raise the quiet windows' share, as they
//!   hold back the calls that would have passed): then the 429s come from the rate and the ceiling
//!   reads the quota; with fewer than `MIN_THROTTLED` throttled windows in the busiest
//!   quarter, or a ceiling below `MIN_KNEE_REQUESTS`, too few to decide;
//! - otherwise the 429s are unrelated to the rate (they come at every rate).

/// One window of a role's traffic.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Window {
    /// Attempts the server took: answered with anything but 429, retried ones
    /// included.
    pub accepted: i64,
    /// 429s among the attempts, retried ones included.
    pub attempts_429: i64,
    /// Attempts of HEAD requests (any answer).
    pub head: i64,
    /// Rate limiters running for the role in the window: processes, machines or 1, as
    /// the limiter's backend shares them.
    pub limiters: i64,
}

impl Window {
    /// The server answered at least one attempt with 429.
    pub fn throttled(&self) -> bool {
        self.attempts_429 > 0
    }
}

/// Windows needed before the rule says anything.
pub const MIN_WINDOWS: usize = 30;
/// Throttled windows needed (overall, and among the busiest quarter).
pub const MIN_THROTTLED: usize = 5;
/// A quota needs windows this busy: below it, a window holds too few requests for its
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
    /// 429s at every rate: `busy` and `quiet` are the throttled shares of the busiest
    /// quarter and the quietest half of the windows.
    Unrelated {
        windows: usize,
        throttled: usize,
        busy: f64,
        quiet: f64,
    },
    /// 429s come from the role's rate: `ceiling` is the most attempts the server took in
    /// a throttled window (its quota, or just under), `busiest` the most attempts sent
    /// in any window, `limiters` the median of the windows' limiter counts.
    Knee {
        windows: usize,
        throttled: usize,
        ceiling: i64,
        busiest: i64,
        limiters: i64,
    },
}

/// Reads the quota from a role's windows (any order).
pub fn estimate(windows: &[Window]) -> Quota {
    let n = windows.len();
    let thr = |ws: &[&Window]| ws.iter().filter(|w| w.throttled()).count();
    let throttled = windows.iter().filter(|w| w.throttled()).count();
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
    sorted.sort_by_key(|w| (w.accepted, w.attempts_429));
    let quiet = &sorted[..n / 2];
    let busy = &sorted[n - n.div_ceil(4)..];
    let share = |ws: &[&Window]| thr(ws) as f64 / ws.len() as f64;
    // 429s per attempt, pooled.
    let per_attempt = |ws: &[&Window]| {
        let (k, a) = ws.iter().fold((0i64, 0i64), |(k, a), w| {
            (k + w.attempts_429, a + w.accepted + w.attempts_429)
        });
        if a > 0 { k as f64 / a as f64 } else { 0.0 }
    };
    let everywhere = throttled as f64 >= 0.9 * n as f64;
    let (sb, sq) = (share(busy), share(quiet));
    let (rb, rq) = (per_attempt(busy), per_attempt(quiet));
    if !everywhere && (sb < 0.5 || (rq > 0.0 && rb < 1.5 * rq)) {
        return Quota::Unrelated {
            windows: n,
            throttled,
            busy: sb,
            quiet: sq,
        };
    }
    let ceiling = sorted
        .iter()
        .filter(|w| w.throttled())
        .map(|w| w.accepted)
        .max()
        .unwrap_or(0);
    if thr(busy) < MIN_THROTTLED.min(busy.len()) || ceiling < MIN_KNEE_REQUESTS {
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
        ceiling,
        busiest: windows
            .iter()
            .map(|w| w.accepted + w.attempts_429)
            .max()
            .unwrap_or(0),
        limiters: procs[(procs.len() - 1) / 2],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(accepted: i64, attempts_429: i64) -> Window {
        Window {
            accepted,
            attempts_429,
            head: 0,
            limiters: 4,
        }
    }

    #[test]
    fn a_clear_knee_reads_the_ceiling() {
        // A quota of 60 a window: 60 quiet windows from 20 to 58 attempts pass, 25 busy
        // ones are held at 52 to 60 taken with the rest refused (the quota slides, so a
        // throttled window may take a little less), and one quiet window at 30 caught a
        // 429 at the edge of a busy one.
        let mut ws: Vec<Window> = (0..60).map(|i| w(20 + (i * 38) / 59, 0)).collect();
        ws.extend((0..25).map(|i| w(52 + i % 9, 3 + i)));
        ws.push(w(30, 1));
        match estimate(&ws) {
            Quota::Knee {
                ceiling,
                busiest,
                limiters,
                ..
            } => assert_eq!((ceiling, busiest, limiters), (60, 58 + 27, 4)),
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
        // Cooldowns make some throttled windows quiet: the ceiling still reads 44.
        let ws: Vec<Window> = (0..40).map(|i| w(20 + (i * 24) / 39, 9 - i % 7)).collect();
        match estimate(&ws) {
            Quota::Knee { ceiling, .. } => assert_eq!(ceiling, 44),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn episodes_that_throttle_quiet_windows_are_unrelated() {
        // A server incident throttles a tenth of the windows, and takes fewer of their
        // attempts: the busy windows are not the throttled ones.
        let mut ws: Vec<Window> = (0..200).map(|i| w(30 + i % 40, 0)).collect();
        ws.extend((0..20).map(|i| w(5 + i, 8)));
        assert!(
            matches!(estimate(&ws), Quota::Unrelated { .. }),
            "{:?}",
            estimate(&ws)
        );
    }
}
