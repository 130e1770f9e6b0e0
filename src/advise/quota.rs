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
//! A quota counts over its own window (a second, a minute, an hour, a day), which need
//! not be the metrics' buckets: [`find`] rolls the buckets up into a count over the
//! last window of each length the crawler's rate strings can express, and keeps the
//! length at whose ceiling the throttled windows sit (see [`separation`]) before reading the
//! ceiling with [`estimate`].
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
    /// 429s in the window's last bucket: a window counted back from a bucket is
    /// throttled when that bucket was. Equal to `attempts_429` for a one-bucket window.
    pub ending_429: i64,
}

impl Window {
    /// One bucket's counts as a window.
    pub fn bucket(accepted: i64, attempts_429: i64, head: i64, limiters: i64) -> Self {
        Window {
            accepted,
            attempts_429,
            head,
            limiters,
            ending_429: attempts_429,
        }
    }

    /// The server answered at least one attempt with 429 at the window's end.
    pub fn throttled(&self) -> bool {
        self.ending_429 > 0
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
    Quota::Knee {
        windows: n,
        throttled,
        ceiling,
        busiest: windows
            .iter()
            .map(|w| w.accepted + w.attempts_429)
            .max()
            .unwrap_or(0),
        limiters: median_limiters(windows),
    }
}

/// The median of the windows' limiter counts (at least 1 each; 1 without windows).
pub fn median_limiters<'a>(windows: impl IntoIterator<Item = &'a Window>) -> i64 {
    let mut limiters: Vec<i64> = windows.into_iter().map(|w| w.limiters.max(1)).collect();
    limiters.sort_unstable();
    limiters
        .get(limiters.len().saturating_sub(1) / 2)
        .copied()
        .unwrap_or(1)
}

/// What the server took per second on a role that met a 429
/// (`metrics::rates::per_second`): the seconds with an attempt taken, their mean and
/// most, and the seconds' cap (the smallest count at most 3% of the seconds reaching it
/// exceed) with the seconds reaching it and those over it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SecondCounts {
    pub busy_seconds: i64,
    pub mean: f64,
    pub max: i64,
    pub cap: Option<i64>,
    pub at_cap: i64,
    pub over_cap: i64,
}

/// A quota per second, read from the seconds' cap ([`second_cap`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SecondCap {
    pub cap: i64,
    pub busy_seconds: i64,
    pub at_cap: i64,
    pub over_cap: i64,
    /// The seconds over the cap an uncapped rate of the same mean would have.
    pub expected_over: f64,
}

/// Attempts answered 429 a role needs before its seconds are read for a quota.
pub const MIN_SECOND_429S: i64 = 5;

/// Seconds over the cap an uncapped rate must be expected to have before their
/// absence says anything (fewer: the cap is a sample's top).
pub const MIN_EXPECTED_OVER: f64 = 20.0;

/// How many times fewer seconds over the cap than an uncapped rate would have name a
/// quota per second.
pub const CAP_SHORTFALL: f64 = 5.0;

/// The quota per second the seconds' counts show, if any. A quota per second holds
/// every second at or under it; an uncapped rate of the same mean spreads its seconds
/// over a tail. The rate is taken as Poisson, fitted to the busy seconds' mean (a count
/// with its zeros left out); real traffic comes in bursts, whose tail is heavier, so the
/// test errs towards no cap. The cap stands when the seconds over it are at most a
/// [`CAP_SHORTFALL`]th of what that rate would put there, and it would put at least
/// [`MIN_EXPECTED_OVER`].
pub fn second_cap(s: &SecondCounts) -> Option<SecondCap> {
    use statrs::distribution::{DiscreteCDF, Poisson};
    let cap = s.cap.filter(|c| *c >= 1)?;
    // The busy seconds' mean m of a zero-truncated Poisson(l): m = l / (1 - e^-l),
    // increasing in l, with l < m.
    let m = s.mean;
    if !(m.is_finite() && m > 1.0 + 1e-9) {
        return None;
    }
    let (mut lo, mut hi) = (0.0f64, m);
    for _ in 0..100 {
        let l = (lo + hi) / 2.0;
        if l / -(-l).exp_m1() < m {
            lo = l;
        } else {
            hi = l;
        }
    }
    let rate = Poisson::new((lo + hi) / 2.0).ok()?;
    let cap_u = u64::try_from(cap).ok()?;
    let (reaching, over) = (rate.sf(cap_u - 1), rate.sf(cap_u));
    if reaching.is_nan() || reaching <= 0.0 {
        return None;
    }
    let expected_over = s.at_cap as f64 * over / reaching;
    (expected_over >= MIN_EXPECTED_OVER && s.over_cap as f64 * CAP_SHORTFALL <= expected_over)
        .then_some(SecondCap {
            cap,
            busy_seconds: s.busy_seconds,
            at_cap: s.at_cap,
            over_cap: s.over_cap,
            expected_over,
        })
}

/// The least [`separation`] that names a quota's window.
pub const MIN_SEPARATION: f64 = 0.3;

/// The counts over one window length.
#[derive(Debug, Clone, PartialEq)]
pub struct Scale {
    pub window_s: f64,
    /// [`separation`] of its counts; None with too few throttled windows.
    pub separation: Option<f64>,
}

/// The quota read at the window length that explains the 429s.
#[derive(Debug, Clone, PartialEq)]
pub struct Found {
    /// The window the quota counts over, seconds.
    pub window_s: f64,
    pub quota: Quota,
    /// Every length tried, shortest first.
    pub scales: Vec<Scale>,
    /// The quota per second, where the seconds' cap showed it (the ceiling is then the
    /// cap every second held).
    pub cap: Option<SecondCap>,
}

impl Found {
    /// The throttled windows sat at a ceiling at the chosen length; false when no
    /// length showed one and the buckets' own length was read.
    pub fn clear(&self) -> bool {
        self.scales.iter().any(|s| {
            s.window_s == self.window_s && s.separation.is_some_and(|v| v >= MIN_SEPARATION)
        })
    }

    /// "hour 0.97 (minute 0.31, day 0.62)": how clearly the window was found.
    pub fn describe(&self) -> String {
        let name = |w: f64| {
            crate::config::rates::unit_of(w)
                .map_or_else(|| format!("{w} s"), str::to_ascii_lowercase)
        };
        let score = |s: &Scale| match s.separation {
            Some(v) => format!("{} {v:.2}", name(s.window_s)),
            None => format!("{} -", name(s.window_s)),
        };
        let chosen = self.scales.iter().find(|s| s.window_s == self.window_s);
        let others: Vec<String> = self
            .scales
            .iter()
            .filter(|s| s.window_s != self.window_s)
            .map(score)
            .collect();
        match (chosen, others.is_empty()) {
            (Some(c), true) => score(c),
            (Some(c), false) => format!("{} ({})", score(c), others.join(", ")),
            (None, _) => others.join(", "),
        }
    }
}

/// The windows counted back `k` buckets from each bucket of `buckets` (sorted by
/// bucket number, one entry per bucket with traffic): the attempts taken and the 429s
/// over the last `k` buckets, throttled when the bucket itself was. Only whole windows:
/// a bucket less than `k` after the first one would count a window the data covers in
/// part (the traffic before it is not in the data), so it gives none.
pub fn rolled(buckets: &[(i64, Window)], k: i64) -> Vec<Window> {
    let Some(&(start, _)) = buckets.first() else {
        return Vec::new();
    };
    let clamp = |x: i128| x.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64;
    let mut out = Vec::new();
    let (mut accepted, mut refused, mut head) = (0i128, 0i128, 0i128);
    let mut first = 0usize;
    for &(b, w) in buckets {
        accepted += i128::from(w.accepted);
        refused += i128::from(w.attempts_429);
        head += i128::from(w.head);
        while first < buckets.len() && buckets[first].0 <= b.saturating_sub(k) {
            let old = buckets[first].1;
            accepted -= i128::from(old.accepted);
            refused -= i128::from(old.attempts_429);
            head -= i128::from(old.head);
            first += 1;
        }
        if b.saturating_sub(start) >= k.saturating_sub(1) {
            out.push(Window {
                accepted: clamp(accepted),
                attempts_429: clamp(refused),
                head: clamp(head),
                limiters: w.limiters,
                ending_429: w.attempts_429,
            });
        }
    }
    out
}

/// A window is at the ceiling when it took at least this share of it.
pub const AT_CEILING: f64 = 0.9;

/// The ceiling is the most that this share of the throttled windows took.
pub const CEILING_REACHED: f64 = 0.01;

/// How clearly the throttled windows sit at a ceiling: the share of them that took at
/// least [`AT_CEILING`] of the ceiling. A server holds a window's count at its quota and
/// throttles the rest, so over the quota's own length most throttled windows are full;
/// over a shorter length a throttled window took whatever the longer count left (few
/// are full), and over a longer one the full windows are diluted. The ceiling is the
/// most that [`CEILING_REACHED`] of them took, where that is within [`AT_CEILING`] of
/// the most any took (else the most any took): a row's attempts are placed in a window
/// by an estimate of when they reached the server, and a few windows a little over the
/// quota would set the bar above the full ones. None with fewer than [`MIN_THROTTLED`]
/// throttled windows.
pub fn separation(windows: &[Window]) -> Option<f64> {
    let mut throttled: Vec<i64> = windows
        .iter()
        .filter(|w| w.throttled())
        .map(|w| w.accepted)
        .collect();
    if throttled.len() < MIN_THROTTLED {
        return None;
    }
    throttled.sort_unstable_by(|a, b| b.cmp(a));
    // The few over it are noise only where they are a little over it: a window's count
    // moves by the attempts placed at its edges, not by multiples.
    let (most, reached) = (
        throttled[0],
        throttled[(CEILING_REACHED * throttled.len() as f64) as usize],
    );
    let ceiling = if reached as f64 >= AT_CEILING * most as f64 {
        reached
    } else {
        most
    };
    let full = throttled
        .iter()
        .filter(|&&a| a as f64 >= AT_CEILING * ceiling as f64)
        .count();
    Some(full as f64 / throttled.len() as f64)
}

/// Reads the quota of a role from its buckets of `bucket_s` seconds (sorted by bucket
/// number): at each window length a rate string can express that is a whole number of
/// buckets, the counts over the last window; the shortest length whose throttled
/// windows sit at its ceiling ([`separation`] at least [`MIN_SEPARATION`]) is the
/// quota's (a quota per minute fills the hours too, so a longer length is taken only
/// where the shorter ones show no ceiling), and [`estimate`] reads it there. Without
/// one, the buckets' own length.
pub fn find(buckets: &[(i64, Window)], bucket_s: f64) -> Found {
    // Each length's windows (a bucket's own for a length of one bucket), kept for the
    // estimate at the chosen one.
    let mut scales: Vec<(Scale, Vec<Window>)> = Vec::new();
    if bucket_s >= 1.0 {
        for (_, window_s) in crate::config::rates::UNITS {
            let k = window_s / bucket_s;
            if k >= 1.0 && k.fract() == 0.0 {
                let windows = rolled(buckets, k as i64);
                let separation = separation(&windows);
                scales.push((
                    Scale {
                        window_s,
                        separation,
                    },
                    windows,
                ));
            }
        }
    }
    let chosen = scales
        .iter()
        .position(|(s, _)| s.separation.is_some_and(|v| v >= MIN_SEPARATION))
        .or_else(|| scales.iter().position(|(s, _)| s.window_s == bucket_s));
    let (window_s, quota) = match chosen {
        Some(i) => (scales[i].0.window_s, estimate(&scales[i].1)),
        None => {
            let own: Vec<Window> = buckets.iter().map(|&(_, w)| w).collect();
            (bucket_s, estimate(&own))
        }
    };
    Found {
        window_s,
        quota,
        scales: scales.into_iter().map(|(s, _)| s).collect(),
        cap: None,
    }
}

/// The quota per second `cap` names, as found: the cap every second held, from
/// `limiters` limiters (the role's windows' median).
pub fn per_second(cap: SecondCap, max: i64, limiters: i64) -> Found {
    Found {
        window_s: 1.0,
        quota: Quota::Knee {
            windows: usize::try_from(cap.busy_seconds).unwrap_or(0),
            throttled: usize::try_from(cap.at_cap).unwrap_or(0),
            ceiling: cap.cap,
            busiest: max.max(cap.cap),
            limiters,
        },
        scales: Vec::new(),
        cap: Some(cap),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(accepted: i64, attempts_429: i64) -> Window {
        Window::bucket(accepted, attempts_429, 0, 4)
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

    /// Three days of one-minute buckets under a demand that swings between half and
    /// one and a half times `mean` over four hours, against a server that takes at most
    /// `quota` attempts in any `k` buckets and refuses the rest with 429.
    fn day_under(quota: i64, k: usize, mean: f64) -> Vec<(i64, Window)> {
        let mut accepted: Vec<i64> = Vec::new();
        let mut out = Vec::new();
        for b in 0..3 * 1440usize {
            let phase = std::f64::consts::TAU * b as f64 / 240.0;
            let demand = (mean * (1.0 + 0.5 * phase.sin())).round() as i64;
            let taken: i64 = accepted[b.saturating_sub(k - 1)..].iter().sum();
            let a = demand.min((quota - taken).max(0));
            accepted.push(a);
            out.push((b as i64, Window::bucket(a, demand - a, 0, 1)));
        }
        out
    }

    #[test]
    fn the_quota_is_read_at_its_own_window() {
        let mean = 50.0;
        for (window_s, k) in [(60.0, 1usize), (3600.0, 60), (86_400.0, 1440)] {
            let quota = (0.8 * mean * k as f64) as i64;
            let found = find(&day_under(quota, k, mean), 60.0);
            assert_eq!(found.window_s, window_s, "{}", found.describe());
            match found.quota {
                Quota::Knee { ceiling, .. } => assert_eq!(ceiling, quota, "{window_s}"),
                // A day's quota that stays full holds every day's count at the quota,
                // throttled or not: no knee to read the ceiling from, so nothing is
                // slowed down (a gap: the rates rule acts on knees only).
                Quota::Unrelated { .. } if k == 1440 => {}
                ref other => panic!("{window_s}: {other:?}"),
            }
            // Every length a minute's buckets make is tried: minute, hour and day.
            assert_eq!(found.scales.len(), 3);
            let own = found
                .scales
                .iter()
                .find(|s| s.window_s == window_s)
                .unwrap();
            assert!(own.separation.unwrap() > 0.5, "{}", found.describe());
        }
        // One day of data holds one whole day's window: too few to say anything there.
        let one_day = &day_under(57_600, 1440, mean)[..1440];
        let day = find(one_day, 60.0).scales[2].clone();
        assert_eq!((day.window_s, day.separation), (86_400.0, None));
    }

    #[test]
    fn a_count_over_a_shorter_window_does_not_explain_the_quota() {
        // An hour's quota: once it has filled, a throttled minute takes what expired an
        // hour before, whatever the minute's load, so few throttled minutes are full,
        // while every throttled hour is.
        let found = find(&day_under(2400, 60, 50.0), 60.0);
        let score = |w: f64| {
            found
                .scales
                .iter()
                .find(|s| s.window_s == w)
                .and_then(|s| s.separation)
                .unwrap()
        };
        assert!(score(60.0) < MIN_SEPARATION, "{}", found.describe());
        assert!(score(3600.0) > 0.9, "{}", found.describe());
        assert_eq!(
            found.describe(),
            format!(
                "hour {:.2} (minute {:.2}, day {:.2})",
                score(3600.0),
                score(60.0),
                score(86_400.0)
            )
        );
    }

    #[test]
    fn a_cap_every_second_held_against_the_tail_of_a_rate_of_its_mean() {
        let capped = SecondCounts {
            busy_seconds: 50_000,
            mean: 1.5,
            max: 4,
            cap: Some(3),
            at_cap: 5_200,
            over_cap: 35,
        };
        // A zero-truncated Poisson of mean 1.5 has a rate of about 0.87; of its seconds
        // at 3 or more, about a fifth go over 3: a thousand of the 5,200.
        let c = second_cap(&capped).expect("a cap");
        assert_eq!(c.cap, 3);
        assert!((900.0..1300.0).contains(&c.expected_over), "{c:?}");
        // As many over it as the rate would put there: no cap.
        let spread = SecondCounts {
            over_cap: 1_000,
            ..capped
        };
        assert_eq!(second_cap(&spread), None);
        // The top of a small sample: the rate would put fewer than 20 over it.
        let top = SecondCounts {
            at_cap: 50,
            over_cap: 0,
            cap: Some(6),
            ..capped
        };
        assert_eq!(second_cap(&top), None);
        // One attempt a busy second, or no cap: nothing to read.
        for s in [
            SecondCounts {
                mean: 1.0,
                ..capped
            },
            SecondCounts {
                cap: None,
                ..capped
            },
        ] {
            assert_eq!(second_cap(&s), None, "{s:?}");
        }
    }

    #[test]
    fn rolled_windows_count_back_from_each_bucket() {
        let b = |n: i64, a: i64, k: i64| (n, Window::bucket(a, k, 1, 2));
        // Buckets 0, 1, 2, 5 and 6 (3 and 4 had no traffic), three buckets back: bucket
        // 2 gives the first whole window.
        let ws = rolled(
            &[b(0, 10, 0), b(1, 5, 1), b(2, 3, 0), b(5, 7, 0), b(6, 1, 2)],
            3,
        );
        let got: Vec<(i64, i64, i64, i64)> = ws
            .iter()
            .map(|w| (w.accepted, w.attempts_429, w.ending_429, w.head))
            .collect();
        assert_eq!(got, [(18, 1, 0, 3), (7, 0, 0, 1), (8, 2, 2, 2)]);
        assert!(ws[2].throttled() && !ws[1].throttled());
        assert!(rolled(&[], 3).is_empty());
    }

    #[test]
    fn separation_is_the_share_of_throttled_windows_at_the_ceiling() {
        // Ceiling 10: throttled 10, 9 and 9 are at it (at least 9), 4 and 2 are not;
        // unthrottled windows do not count.
        let ws = [
            w(10, 1),
            w(9, 2),
            w(9, 1),
            w(4, 1),
            w(2, 3),
            w(20, 0),
            w(1, 0),
        ];
        assert_eq!(separation(&ws), Some(0.6));
        assert_eq!(separation(&ws[..4]), None, "too few throttled windows");
        assert_eq!(separation(&[w(5, 0), w(6, 0)]), None);
    }

    #[test]
    fn a_few_windows_a_little_over_the_quota_do_not_set_the_ceiling() {
        // 300 throttled windows: 100 took the quota, 44, 100 took 40 (the quota slides:
        // the window before took some of it), 98 took 30, and 2 took 46 (attempts
        // placed by an estimate of when they reached the server). The ceiling is 44,
        // the most 1% of them took and within a tenth of 46: the 200 at 40 and 44 are
        // at it (at least 39.6). With 46, the 100 at 40 would fall short of 41.4.
        let mut ws: Vec<Window> = (0..100).map(|_| w(44, 1)).collect();
        ws.extend((0..100).map(|_| w(40, 1)));
        ws.extend((0..98).map(|_| w(30, 1)));
        ws.extend((0..2).map(|_| w(46, 1)));
        assert_eq!(separation(&ws), Some(202.0 / 300.0));
        // Where the most any took is far over the rest, it is the ceiling: most
        // throttled windows took nothing (a day's quota, full), a few took a lot.
        let mut day: Vec<Window> = (0..300).map(|_| w(0, 1)).collect();
        day.extend((0..3).map(|_| w(75, 1)));
        assert_eq!(separation(&day), Some(3.0 / 303.0));
    }
}
