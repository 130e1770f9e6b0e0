//! Where the night is: the end of the analysis window when no `--now` is given. It
//! belongs to the fleet's traffic, not to the latest row: a machine whose clock is off,
//! or one corrupt time, must not move the window away from the night (one row a year
//! ahead would otherwise leave a window holding that row alone).
//!
//! The rule, per source file (one crawler machine) and then over the fleet:
//! - a source's rows fall into segments wherever they pause for more than [`GAP_S`],
//!   each measured in the minutes that hold rows; a segment of fewer than
//!   [`STRAY_MINUTES`], or of under 1% of the source's largest one (over at most a
//!   window), is stray (a clock that jumped for a moment, a stuck clock, corrupt
//!   times), unless it is the largest; the source's traffic is its last segment that is
//!   not stray;
//! - the sources' traffic forms clusters (traffic that overlaps, or pauses for at most
//!   [`GAP_S`], is one cluster). The latest cluster is a clock ahead of the fleet when
//!   it begins more than a window after the cluster before it ends and holds at most
//!   half as many sources as the largest cluster before it (a fleet that paused
//!   restarts whole; machines that kept a wrong clock are a minority): it is set aside,
//!   and the next one is looked at;
//! - the night ends at the last row of the latest cluster kept. Rows after it are set
//!   aside, counted per source, and shown in the report.
//!
//! Data alone cannot tell a clock ahead from a fleet that shrank to half and restarted
//! after a pause longer than the window: such a night is set aside loudly, named in the
//! report, and `--now` sets the window. Every size here is the number of distinct
//! (source, minute) pairs that hold rows, never a span of time: a time of 2100 costs
//! one pair, like any other.

use std::collections::BTreeMap;

use polars::prelude::*;

use super::US_PER_S;

/// A pause longer than this ends a segment of a source's traffic (an hour).
pub const GAP_S: i64 = 3_600;
/// A segment of fewer minutes with rows than this, unless the source's largest, is
/// stray...
pub const STRAY_MINUTES: u64 = 10;
/// ... and so is one of under this share of the source's largest segment (counted over
/// at most one window).
const STRAY_SHARE: f64 = 0.01;

/// The night the data holds.
#[derive(Debug, Clone, PartialEq)]
pub struct Night {
    /// The end of the window (exclusive, epoch µs): one µs after the last row of the
    /// fleet's traffic.
    pub end_us: i64,
    /// Sources with rows after `end_us`, in source order.
    pub set_aside: Vec<SetAside>,
}

/// The rows of one source that lie after the night's end.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SetAside {
    pub source: String,
    pub rows: u64,
    pub first_us: i64,
    pub last_us: i64,
    /// The whole source is ahead of the fleet (its clock), not only a few rows.
    pub clock_ahead: bool,
}

impl SetAside {
    /// Why the rows were set aside, for the report.
    pub fn reason(&self) -> &'static str {
        if self.clock_ahead {
            "clock ahead of the fleet: its traffic begins more than a window after the rest of the fleet's ends, on at most half as many machines"
        } else {
            "stray rows after its traffic, past a pause of more than an hour: a clock that jumped or corrupt times"
        }
    }
}

impl std::fmt::Display for SetAside {
    /// `SOURCE: N row(s) set aside, FIRST .. LAST: WHY`, for the commands' output.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use crate::clock::format_utc;
        write!(
            f,
            "{}: {} row(s) set aside, {} .. {}: {}",
            self.source,
            self.rows,
            format_utc(self.first_us as f64 / 1e6),
            format_utc(self.last_us as f64 / 1e6),
            self.reason()
        )
    }
}

/// The rows set aside as the metadata value (JSON).
pub fn encode(set_aside: &[SetAside]) -> String {
    serde_json::to_string(set_aside).expect("plain data serializes")
}

/// The rows set aside from the metadata value; empty when absent or unreadable.
pub fn decode(value: Option<&str>) -> Vec<SetAside> {
    value
        .and_then(|v| serde_json::from_str(v).ok())
        .unwrap_or_default()
}

/// A run of one source's traffic without a pause longer than [`GAP_S`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Segment {
    first_us: i64,
    last_us: i64,
    /// The distinct minutes that hold its rows: its size (a stuck clock writes many
    /// rows in one minute; a night of traffic fills hundreds).
    minutes: u64,
}

/// A source's segments from the first and last time (µs) of each minute that holds its
/// rows, in minute order.
fn segments(minutes: &[(i64, i64)]) -> Vec<Segment> {
    let mut out: Vec<Segment> = Vec::new();
    for &(first, last) in minutes {
        match out.last_mut() {
            Some(seg) if first - seg.last_us <= GAP_S * US_PER_S => {
                seg.last_us = last;
                seg.minutes += 1;
            }
            _ => out.push(Segment {
                first_us: first,
                last_us: last,
                minutes: 1,
            }),
        }
    }
    out
}

/// A source's traffic: its last segment that is not stray. A segment is measured in
/// minutes, and against the largest one over at most a window (`window_minutes`), so a
/// night after a month of unbroken traffic is no smaller than any other night.
fn current_traffic(segments: &[Segment], window_minutes: u64) -> Segment {
    let largest = segments.iter().map(|s| s.minutes).max().unwrap_or(0);
    let floor = (STRAY_SHARE * largest.min(window_minutes) as f64).max(STRAY_MINUTES as f64);
    let credible = |s: &Segment| s.minutes == largest || s.minutes as f64 >= floor;
    *segments
        .iter()
        .rev()
        .find(|s| credible(s))
        .expect("the largest segment is credible")
}

/// The sources whose traffic is a clock ahead of the fleet (see the module's rule),
/// from each source's traffic; `window_us` is the window's length.
fn ahead_of_fleet<'a>(traffic: &BTreeMap<&'a str, Segment>, window_us: i64) -> Vec<&'a str> {
    // Clusters of overlapping traffic (pauses up to GAP_S), in time order.
    let mut by_start: Vec<(&str, Segment)> = traffic.iter().map(|(s, t)| (*s, *t)).collect();
    by_start.sort_by_key(|(s, t)| (t.first_us, *s));
    let mut clusters: Vec<(i64, i64, Vec<&str>)> = Vec::new();
    for (source, t) in by_start {
        match clusters.last_mut() {
            Some(c) if t.first_us <= c.1.saturating_add(GAP_S * US_PER_S) => {
                c.1 = c.1.max(t.last_us);
                c.2.push(source);
            }
            _ => clusters.push((t.first_us, t.last_us, vec![source])),
        }
    }
    // The latest cluster against the one before it (how far) and the largest of those
    // kept (how many): two machines each with its own wrong clock are two small
    // clusters, both a minority of the fleet.
    let mut ahead = Vec::new();
    while clusters.len() >= 2 {
        let n = clusters.len();
        let (latest, before) = (&clusters[n - 1], &clusters[n - 2]);
        let far = latest.0 > before.1.saturating_add(window_us);
        let fleet = clusters[..n - 1]
            .iter()
            .map(|c| c.2.len())
            .max()
            .unwrap_or(0);
        if !(far && 2 * latest.2.len() <= fleet) {
            break;
        }
        ahead.extend(clusters.pop().expect("two clusters").2);
    }
    ahead.sort_unstable();
    ahead
}

/// Finds the night in `events` (the dataset's `http_events`) for a window of
/// `window_s`; None when it has no rows.
pub fn locate(events: LazyFrame, window_s: i64) -> PolarsResult<Option<Night>> {
    let ts = col("ts").cast(DataType::Int64);
    let per_minute = crate::frame::collect(
        events
            .clone()
            .select([
                col("source"),
                ts.clone().floor_div(lit(60 * US_PER_S)).alias("minute"),
                ts.clone().alias("t"),
            ])
            .group_by([col("source"), col("minute")])
            .agg([col("t").min().alias("first"), col("t").max().alias("last")])
            .sort(["source", "minute"], Default::default()),
    )?;
    let sources = per_minute.column("source")?.str()?;
    let firsts = per_minute.column("first")?.i64()?;
    let lasts = per_minute.column("last")?.i64()?;
    let mut by_source: BTreeMap<&str, Vec<(i64, i64)>> = BTreeMap::new();
    for i in 0..per_minute.height() {
        let (Some(s), Some(f), Some(l)) = (sources.get(i), firsts.get(i), lasts.get(i)) else {
            continue;
        };
        by_source.entry(s).or_default().push((f, l));
    }
    if by_source.is_empty() {
        return Ok(None);
    }
    let traffic: BTreeMap<&str, Segment> = by_source
        .iter()
        .map(|(s, m)| {
            let window_minutes = (window_s / 60).max(1) as u64;
            (*s, current_traffic(&segments(m), window_minutes))
        })
        .collect();
    let ahead = ahead_of_fleet(&traffic, window_s.saturating_mul(US_PER_S));
    let end = traffic
        .iter()
        .filter(|(s, _)| !ahead.contains(s))
        .map(|(_, t)| t.last_us)
        .max()
        .expect("the earliest cluster is never ahead");
    let end_us = end + 1;
    // The usual night has nothing after it: no second pass over the rows then.
    if lasts.max().is_none_or(|l| l < end_us) {
        return Ok(Some(Night {
            end_us,
            set_aside: Vec::new(),
        }));
    }
    let after = crate::frame::collect(
        events
            .filter(col("ts").cast(DataType::Int64).gt_eq(lit(end_us)))
            .group_by([col("source")])
            .agg([
                len().cast(DataType::UInt64).alias("n"),
                col("ts").cast(DataType::Int64).min().alias("first"),
                col("ts").cast(DataType::Int64).max().alias("last"),
            ])
            .sort(["source"], Default::default()),
    )?;
    let (src, n, first, last) = (
        after.column("source")?.str()?,
        after.column("n")?.u64()?,
        after.column("first")?.i64()?,
        after.column("last")?.i64()?,
    );
    let set_aside = (0..after.height())
        .filter_map(|i| {
            let source = src.get(i)?;
            Some(SetAside {
                source: source.to_owned(),
                rows: n.get(i)?,
                first_us: first.get(i)?,
                last_us: last.get(i)?,
                clock_ahead: ahead.contains(&source),
            })
        })
        .collect();
    Ok(Some(Night { end_us, set_aside }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400 * US_PER_S;
    const NIGHT: i64 = 1_764_115_200 * US_PER_S; // 2025-11-26T00:00:00Z

    /// `n` rows of `source` every `step_s` from `start`.
    fn rows(source: &str, start: i64, n: i64, step_s: i64) -> (Vec<String>, Vec<i64>) {
        (
            vec![source.to_owned(); n as usize],
            (0..n).map(|i| start + i * step_s * US_PER_S).collect(),
        )
    }

    fn locate_day(events: LazyFrame) -> PolarsResult<Option<Night>> {
        locate(events, 86_400)
    }

    fn frame(parts: &[(Vec<String>, Vec<i64>)]) -> LazyFrame {
        let sources: Vec<String> = parts.iter().flat_map(|p| p.0.clone()).collect();
        let ts: Vec<i64> = parts.iter().flat_map(|p| p.1.clone()).collect();
        df!("source" => sources, "ts" => ts)
            .unwrap()
            .lazy()
            .with_column(col("ts").cast(DataType::Datetime(TimeUnit::Microseconds, None)))
    }

    #[test]
    fn the_latest_row_ends_a_night_without_outliers() {
        let a = rows("a", NIGHT, 1440, 60);
        let b = rows("b", NIGHT + 30 * US_PER_S, 1440, 60);
        let last = *b.1.last().unwrap();
        let night = locate_day(frame(&[a, b])).unwrap().unwrap();
        assert_eq!(night.end_us, last + 1);
        assert!(night.set_aside.is_empty());
    }

    #[test]
    fn one_row_a_year_ahead_does_not_move_the_window() {
        let a = rows("a", NIGHT, 1440, 60);
        let last = *a.1.last().unwrap();
        let year_ahead = (vec!["a".to_owned()], vec![NIGHT + 365 * DAY]);
        let night = locate_day(frame(&[a, year_ahead])).unwrap().unwrap();
        assert_eq!(night.end_us, last + 1);
        assert_eq!(
            night.set_aside,
            vec![SetAside {
                source: "a".into(),
                rows: 1,
                first_us: NIGHT + 365 * DAY,
                last_us: NIGHT + 365 * DAY,
                clock_ahead: false,
            }]
        );
    }

    #[test]
    fn a_machine_whose_clock_is_a_year_ahead_is_named() {
        let a = rows("a", NIGHT, 1440, 60);
        let b = rows("b", NIGHT, 1440, 60);
        let last = *b.1.last().unwrap();
        let ahead = rows("c", NIGHT + 365 * DAY, 1440, 60);
        let night = locate_day(frame(&[a, b, ahead])).unwrap().unwrap();
        assert_eq!(night.end_us, last + 1);
        assert_eq!(night.set_aside.len(), 1);
        assert!(night.set_aside[0].clock_ahead && night.set_aside[0].rows == 1440);
    }

    #[test]
    fn a_fleet_that_paused_for_a_day_is_tonight_not_an_outlier() {
        // Yesterday's machines stopped; tonight's started after a day's pause.
        let old = rows("a", NIGHT - 2 * DAY, 1440, 60);
        let new = rows("b", NIGHT, 1440, 60);
        let last = *new.1.last().unwrap();
        let night = locate_day(frame(&[old, new])).unwrap().unwrap();
        assert_eq!(night.end_us, last + 1);
        assert!(night.set_aside.is_empty());
    }

    #[test]
    fn a_few_rows_after_the_bulk_within_an_hour_are_traffic() {
        let mut a = rows("a", NIGHT, 1000, 60);
        // A slow tail: the last rows 50 minutes apart.
        let t = *a.1.last().unwrap();
        a.0.extend(["a".to_owned(), "a".to_owned()]);
        a.1.extend([t + 50 * 60 * US_PER_S, t + 100 * 60 * US_PER_S]);
        let night = locate_day(frame(&[a])).unwrap().unwrap();
        assert_eq!(night.end_us, t + 100 * 60 * US_PER_S + 1);
    }

    #[test]
    fn one_bad_row_of_a_small_source_is_stray() {
        // 50 rows tonight and one a year ahead: the bad row is 2% of the source.
        let mut a = rows("a", NIGHT, 50, 600);
        let last = *a.1.last().unwrap();
        a.0.push("a".into());
        a.1.push(NIGHT + 365 * DAY);
        let b = rows("b", NIGHT, 1440, 60);
        let night = locate_day(frame(&[a, b])).unwrap().unwrap();
        assert_eq!(night.end_us, NIGHT + 1439 * 60 * US_PER_S + 1);
        assert!(last < night.end_us);
        assert_eq!(night.set_aside.len(), 1);
        assert!(!night.set_aside[0].clock_ahead);
    }

    #[test]
    fn machines_sharing_a_wrong_clock_are_a_minority_of_the_fleet() {
        // Four machines tonight, two with the same clock two days ahead.
        let mut parts: Vec<_> = ["a", "b", "c", "d"]
            .iter()
            .map(|s| rows(s, NIGHT, 1440, 60))
            .collect();
        let last = *parts[0].1.last().unwrap();
        parts.push(rows("x", NIGHT + 2 * DAY + DAY / 2, 1440, 60));
        parts.push(rows("y", NIGHT + 2 * DAY + DAY / 2, 1440, 60));
        let night = locate_day(frame(&parts)).unwrap().unwrap();
        assert_eq!(night.end_us, last + 1);
        let ahead: Vec<&str> = night
            .set_aside
            .iter()
            .filter(|a| a.clock_ahead)
            .map(|a| a.source.as_str())
            .collect();
        assert_eq!(ahead, ["x", "y"]);
    }

    #[test]
    fn a_long_history_of_nights_ends_tonight() {
        // 200 nights of 8 h each, 16 h pauses between: tonight is 0.5% of the rows.
        let mut a = (Vec::new(), Vec::new());
        for k in 0..200 {
            let (s, t) = rows("a", NIGHT - k * DAY, 480, 60);
            a.0.extend(s);
            a.1.extend(t);
        }
        let night = locate_day(frame(&[a])).unwrap().unwrap();
        assert_eq!(night.end_us, NIGHT + 479 * 60 * US_PER_S + 1);
        assert!(night.set_aside.is_empty());
    }

    #[test]
    fn a_whole_fleet_that_restarts_after_a_long_pause_is_tonight() {
        // Three machines ran a month ago; three (new files) run tonight.
        let mut parts: Vec<_> = ["a", "b", "c"]
            .iter()
            .map(|s| rows(s, NIGHT - 30 * DAY, 1440, 60))
            .collect();
        parts.extend(["d", "e", "f"].iter().map(|s| rows(s, NIGHT, 1440, 60)));
        let last = *parts[5].1.last().unwrap();
        let night = locate_day(frame(&parts)).unwrap().unwrap();
        assert_eq!(night.end_us, last + 1);
        assert!(night.set_aside.is_empty());
    }

    #[test]
    fn two_machines_each_with_its_own_wrong_clock_are_both_set_aside() {
        let mut parts: Vec<_> = ["a", "b", "c"]
            .iter()
            .map(|s| rows(s, NIGHT, 1440, 60))
            .collect();
        let last = *parts[0].1.last().unwrap();
        parts.push(rows("x", NIGHT + 365 * DAY, 600, 60));
        parts.push(rows("y", NIGHT + 730 * DAY, 600, 60));
        let night = locate_day(frame(&parts)).unwrap().unwrap();
        assert_eq!(night.end_us, last + 1);
        assert!(night.set_aside.iter().all(|a| a.clock_ahead) && night.set_aside.len() == 2);
    }

    #[test]
    fn a_stuck_clock_is_stray_and_a_night_after_a_long_run_is_tonight() {
        // A hundred days without a pause, a pause, tonight's eight hours, and 5,000
        // rows stamped in one minute of 2100.
        let mut a = rows("a", NIGHT - 101 * DAY, 100 * 1440, 60);
        let tonight = rows("a", NIGHT, 480, 60);
        let last = *tonight.1.last().unwrap();
        a.0.extend(tonight.0);
        a.1.extend(tonight.1);
        let stuck = 4_102_444_800 * US_PER_S; // 2100-01-01
        a.0.extend(vec!["a".to_owned(); 5000]);
        a.1.extend(vec![stuck; 5000]);
        let night = locate_day(frame(&[a])).unwrap().unwrap();
        assert_eq!(night.end_us, last + 1);
        assert_eq!(night.set_aside[0].rows, 5000);
    }

    #[test]
    fn no_rows_no_night() {
        assert_eq!(locate_day(frame(&[])).unwrap(), None);
    }
}
