//! Where the night is: the end of the analysis window when no `--now` is given. It
//! belongs to the fleet's traffic, not to the latest row: a machine whose clock is off,
//! or one corrupt time, must not move the window away from the night (one row a year
//! ahead would otherwise leave a window holding that row alone).
//!
//! The rule, per source file (one crawler machine) and then over the fleet:
//! - a source's traffic ends at its own last row that is reached from its bulk (the
//!   99th percentile of its rows' times) without a gap longer than [`GAP_S`]: rows
//!   past such a gap are a clock that jumped, or corrupt times;
//! - a source whose median row lies more than [`AHEAD_S`] past the end of every other
//!   source's traffic has its clock ahead of the fleet (a fleet that paused is a gap
//!   of hours or days, not of a week) and does not set the end;
//! - the night ends at the latest end of the other sources. Rows after it are set aside,
//!   counted per source, and shown in the report.
//!
//! Every size here is the number of distinct (source, minute) pairs that hold rows,
//! never a span of time: a time of 2100 costs one pair, like any other.

use std::collections::BTreeMap;

use polars::prelude::*;

use super::US_PER_S;

/// A gap in a source's traffic longer than this, after its bulk, ends its traffic.
pub const GAP_S: i64 = 3_600;
/// A source whose median row is this far past every other source's end is ahead of
/// the fleet (a week).
pub const AHEAD_S: i64 = 7 * 86_400;
/// The share of a source's rows at or before the point its traffic is walked from.
const BULK_SHARE: f64 = 0.99;

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
            "clock ahead of the fleet by more than a week: its rows do not set the window"
        } else {
            "after its traffic, past a gap of more than an hour: a clock that jumped or corrupt times"
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

/// The metrics tables' metadata key (under `breaker_advisor.`) of the rows set aside.
pub const SET_ASIDE_KEY: &str = "set_aside";

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

/// One source's rows per minute, in minute order.
struct Minutes {
    /// (minute, rows, latest time in µs).
    buckets: Vec<(i64, u64, i64)>,
}

impl Minutes {
    fn rows(&self) -> u64 {
        self.buckets.iter().map(|b| b.1).sum()
    }

    /// The bucket holding the row of rank `ceil(share * rows)`.
    fn at_share(&self, share: f64) -> usize {
        let want = ((self.rows() as f64 * share).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, b) in self.buckets.iter().enumerate() {
            seen += b.1;
            if seen >= want {
                return i;
            }
        }
        self.buckets.len() - 1
    }

    /// The last row reached from the bulk without a gap longer than [`GAP_S`].
    fn traffic_end_us(&self) -> i64 {
        let gap_minutes = GAP_S / 60;
        let mut k = self.at_share(BULK_SHARE);
        while k + 1 < self.buckets.len() && self.buckets[k + 1].0 - self.buckets[k].0 <= gap_minutes
        {
            k += 1;
        }
        self.buckets[k].2
    }

    fn median_us(&self) -> i64 {
        self.buckets[self.at_share(0.5)].0 * 60 * US_PER_S
    }
}

/// Finds the night in `events` (the dataset's `http_events`); None when it has no rows.
pub fn locate(events: LazyFrame) -> PolarsResult<Option<Night>> {
    let ts = col("ts").cast(DataType::Int64);
    let per_minute = super::collect(
        events
            .clone()
            .select([
                col("source"),
                ts.clone().floor_div(lit(60 * US_PER_S)).alias("minute"),
                ts.clone().alias("t"),
            ])
            .group_by([col("source"), col("minute")])
            .agg([len().alias("n"), col("t").max().alias("last")])
            .sort(["source", "minute"], Default::default()),
    )?;
    let sources = per_minute.column("source")?.str()?;
    let minutes = per_minute.column("minute")?.i64()?;
    let counts = per_minute.column("n")?.cast(&DataType::UInt64)?;
    let counts = counts.u64()?;
    let lasts = per_minute.column("last")?.i64()?;
    let mut by_source: BTreeMap<&str, Minutes> = BTreeMap::new();
    for i in 0..per_minute.height() {
        let (Some(s), Some(m), Some(n), Some(l)) =
            (sources.get(i), minutes.get(i), counts.get(i), lasts.get(i))
        else {
            continue;
        };
        by_source
            .entry(s)
            .or_insert_with(|| Minutes {
                buckets: Vec::new(),
            })
            .buckets
            .push((m, n, l));
    }
    if by_source.is_empty() {
        return Ok(None);
    }
    let ends: BTreeMap<&str, i64> = by_source
        .iter()
        .map(|(s, m)| (*s, m.traffic_end_us()))
        .collect();
    let ahead: Vec<&str> = by_source
        .iter()
        .filter(|(s, m)| {
            let others = ends.iter().filter(|(o, _)| *o != *s).map(|(_, e)| *e).max();
            others.is_some_and(|e| m.median_us() > e.saturating_add(AHEAD_S * US_PER_S))
        })
        .map(|(s, _)| *s)
        .collect();
    let end = ends
        .iter()
        .filter(|(s, _)| !ahead.contains(s))
        .map(|(_, e)| *e)
        // Every source ahead of every other (two sources a week apart): trust none
        // more than another, and keep the latest as before.
        .max()
        .unwrap_or_else(|| ends.values().copied().max().expect("a source"));
    let end_us = end + 1;
    let after = super::collect(
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
        let night = locate(frame(&[a, b])).unwrap().unwrap();
        assert_eq!(night.end_us, last + 1);
        assert!(night.set_aside.is_empty());
    }

    #[test]
    fn one_row_a_year_ahead_does_not_move_the_window() {
        let a = rows("a", NIGHT, 1440, 60);
        let last = *a.1.last().unwrap();
        let year_ahead = (vec!["a".to_owned()], vec![NIGHT + 365 * DAY]);
        let night = locate(frame(&[a, year_ahead])).unwrap().unwrap();
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
        let night = locate(frame(&[a, b, ahead])).unwrap().unwrap();
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
        let night = locate(frame(&[old, new])).unwrap().unwrap();
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
        let night = locate(frame(&[a])).unwrap().unwrap();
        assert_eq!(night.end_us, t + 100 * 60 * US_PER_S + 1);
    }

    #[test]
    fn no_rows_no_night() {
        assert_eq!(locate(frame(&[])).unwrap(), None);
    }
}
