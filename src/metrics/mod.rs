//! Stage 2, analyze: per-host metrics over a time window of the exported dataset, with
//! Polars. Takes lazy frames of `http_events` and `breaker_transitions` and the
//! breakers.yaml model; gives the tables the later stages read. Reads through the lazy
//! scans it is given and writes only its host groups' scratch files, removed after
//! (the pipeline writes the outputs).
//!
//! Definitions (documented in TABLES.md, "Metrics tables"):
//! - network call: a row with `from_cache` not true; cached rows count in
//!   `calls_total` and `cache_hits` only.
//! - breaker failure: a network call whose status is in the host's failure statuses, or
//!   with no status and an `error` (a timeout or connection error, counted in `timeouts`).
//!   Neutral statuses, and every other status, are successes for the breaker.
//! - burst: a maximal run of consecutive breaker failures among a host's network calls
//!   in (ts, source, id) order; quantiles of burst lengths are nearest-rank (the value
//!   at rank ceil(q * n) of the sorted lengths: exact, no interpolation).

pub mod columns;
pub mod night;
pub mod stats;

mod bursts;
mod classify;
mod keys;
mod rates;
mod summary;
mod timeseries;
mod transitions;

pub use bursts::*;
pub use classify::*;
pub use keys::*;
use rates::*;
pub use summary::*;
pub use timeseries::*;
pub use transitions::*;

use std::collections::BTreeSet;

use polars::prelude::*;

use crate::config::BreakerConfig;
use crate::crawler::CrawlerModel;
use crate::frame::collect;
use crate::layout::Table;

pub const US_PER_S: i64 = 1_000_000;

/// The `http_events` columns the metrics read.
pub const EVENT_COLUMNS: [&str; 16] = [
    "host",
    "role",
    "method",
    "ts",
    "source",
    "run_id",
    "id",
    "status",
    "from_cache",
    "error",
    "retry_after_s",
    "retry_count",
    "breaker_state",
    "breaker_recorded",
    "elapsed_ms",
    "rate_delay_ms",
];

/// Settings of one analysis.
#[derive(Debug, Clone)]
pub struct AnalyzeOptions {
    /// Length of the window, ending at `now`.
    pub window_s: i64,
    /// End of the window (epoch µs); default: where the fleet's traffic ends
    /// ([`night::locate`]).
    pub now_us: Option<i64>,
    /// Time-series bucket.
    pub bucket_s: i64,
    /// EWMA half-life, in buckets.
    pub half_life_buckets: f64,
    /// How far apart (s) an open -> half_open -> open cycle still counts as one flap.
    pub flap_horizon_s: f64,
    /// Open -> closed -> open within this many reset timeouts counts as ping-pong.
    pub pingpong_reset_timeouts: f64,
    /// Length of the trailing baseline before the window, for "worse than usual".
    pub baseline_s: Option<i64>,
    /// What the crawler's breakers count (breaker instances, retries, classification).
    pub crawler: CrawlerModel,
    /// The most rows of the window one group of hosts holds in memory (see
    /// [`crate::groups`]); `u64::MAX`: every host at once.
    pub group_rows: u64,
    /// When the fleet's data begins (epoch µs; the export manifest's first call of every
    /// host, which every shard counts alike): the baseline is covered from there. None:
    /// from the first call in the frames' baseline.
    pub data_start_us: Option<i64>,
    /// Only these hosts' rows (the earlier nights of the advice's multi-night evidence,
    /// for the hosts it replays); None: every host.
    pub hosts: Option<Vec<String>>,
    /// Hosts with fewer rows in the window than this get no time series (and so no
    /// change-point search): too little data to act on (`run` passes
    /// `advise.min_calls`); 0: every host has one.
    pub min_series_calls: i64,
}

impl Default for AnalyzeOptions {
    fn default() -> Self {
        AnalyzeOptions {
            window_s: 24 * 3600,
            now_us: None,
            bucket_s: 60,
            half_life_buckets: 10.0,
            flap_horizon_s: 300.0,
            pingpong_reset_timeouts: 3.0,
            baseline_s: None,
            crawler: CrawlerModel::default(),
            group_rows: crate::groups::rows_for_budget(crate::groups::DEFAULT_BUDGET),
            data_start_us: None,
            hosts: None,
            min_series_calls: 0,
        }
    }
}

/// The analysed window, `[start_us, end_us)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub start_us: i64,
    pub end_us: i64,
}

impl Window {
    /// `start .. end` in UTC, for the stage summaries.
    pub fn utc(&self) -> String {
        use crate::clock::format_utc;
        format!(
            "{} .. {}",
            format_utc(self.start_us as f64 / 1e6),
            format_utc(self.end_us as f64 / 1e6)
        )
    }

    pub fn hours(&self) -> f64 {
        (self.end_us - self.start_us) as f64 / 3.6e9
    }

    /// The rows of a dataset table inside the window. The `date` predicate lets the
    /// scan skip whole hive partitions before reading any file.
    pub fn select(&self, lf: LazyFrame) -> LazyFrame {
        self.times(self.days(lf))
    }

    /// The dates (days from the Unix epoch) the window touches.
    pub fn day_range(&self) -> std::ops::RangeInclusive<i32> {
        let first_day = self.start_us.div_euclid(86_400 * US_PER_S) as i32;
        let last_day = (self.end_us - 1).div_euclid(86_400 * US_PER_S) as i32;
        first_day..=last_day
    }

    /// The rows of the hive partitions (dates) the window touches.
    pub fn days(&self, lf: LazyFrame) -> LazyFrame {
        let (first_day, last_day) = self.day_range().into_inner();
        lf.filter(
            col("date")
                .gt_eq(lit(first_day).cast(DataType::Date))
                .and(col("date").lt_eq(lit(last_day).cast(DataType::Date))),
        )
    }

    /// The rows whose `ts` is inside the window.
    pub fn times(&self, lf: LazyFrame) -> LazyFrame {
        lf.filter(
            col("ts")
                .gt_eq(ts_lit(self.start_us))
                .and(col("ts").lt(ts_lit(self.end_us))),
        )
    }
}

/// Everything `analyze` computes.
#[derive(Debug, Clone)]
pub struct Metrics {
    pub window: Window,
    pub host_summary: DataFrame,
    pub host_role_summary: DataFrame,
    pub bursts: DataFrame,
    pub host_timeseries: DataFrame,
    /// Attempts and 429 attempts per host, role and bucket (`rate_windows.parquet`):
    /// what the advisor reads the server's quota from.
    pub rate_windows: DataFrame,
}

fn count_where(cond: Expr, name: &str) -> Expr {
    cond.cast(DataType::UInt32)
        .sum()
        .cast(DataType::Int64)
        .alias(name)
}

/// A left join that keeps the left rows in their order: the window expressions after
/// it (`shift` over a host's transitions) depend on that order, and Polars does not
/// keep it by default.
fn left_join() -> JoinArgs {
    let mut args = JoinArgs::new(JoinType::Left);
    args.maintain_order = MaintainOrderJoin::Left;
    args
}

fn ts_lit(us: i64) -> Expr {
    lit(us).cast(DataType::Datetime(TimeUnit::Microseconds, None))
}

fn list_lit(values: impl IntoIterator<Item = i64>) -> Expr {
    let s = Series::new("v".into(), values.into_iter().collect::<Vec<i64>>());
    lit(s).implode(false)
}

/// The earliest event time in the frame.
fn first_event_us(events: LazyFrame) -> PolarsResult<Option<i64>> {
    let df = events
        .select([col("ts").min().cast(DataType::Int64).alias("t")])
        .collect_streaming()?;
    Ok(df.column("t")?.i64()?.get(0))
}

/// Computes every metrics table for the window that ends at `opts.now_us` (or where the
/// fleet's traffic ends) and spans `opts.window_s`, held in memory: [`analyze_each`]'s groups
/// concatenated.
pub fn analyze(
    events: LazyFrame,
    transitions: LazyFrame,
    outcomes: LazyFrame,
    config: &BreakerConfig,
    opts: &AnalyzeOptions,
) -> PolarsResult<Metrics> {
    let mut all: Option<Metrics> = None;
    analyze_each(
        events,
        transitions,
        outcomes,
        config,
        opts,
        |part| -> PolarsResult<()> {
            match &mut all {
                None => all = Some(part),
                Some(m) => m.append(&part)?,
            }
            Ok(())
        },
    )?;
    let mut all = all.expect("at least one group");
    all.rechunk();
    Ok(all)
}

/// Computes the metrics tables of the window (see [`analyze`]) a group of hosts at a
/// time: groups of at most `opts.group_rows` rows of the window (see
/// [`crate::groups`]), each given to `each` (at least one, in host order) before the next
/// is read. The groups' tables, concatenated, are the same whatever the grouping.
pub fn analyze_each<E: From<PolarsError>>(
    events: LazyFrame,
    transitions: LazyFrame,
    outcomes: LazyFrame,
    config: &BreakerConfig,
    opts: &AnalyzeOptions,
    mut each: impl FnMut(Metrics) -> Result<(), E>,
) -> Result<(), E> {
    use crate::groups;
    let clock = std::time::Instant::now();
    let lap = |step: &str| {
        tracing::debug!(step, elapsed_s = clock.elapsed().as_secs_f64(), "analyze");
    };
    let end_us = match opts.now_us {
        Some(n) => n,
        // Where the fleet's traffic ends (see `night`), not the latest row.
        None => night::locate(events.clone(), opts.window_s)?.map_or(0, |n| n.end_us),
    };
    let window = Window {
        start_us: end_us - opts.window_s * US_PER_S,
        end_us,
    };
    let baseline = match opts.baseline_s {
        Some(b) => collect(baseline(
            events.clone(),
            transitions.clone(),
            config,
            &opts.crawler,
            Window {
                start_us: window.start_us - b * US_PER_S,
                end_us: window.start_us,
            },
            opts.data_start_us,
        )?)?,
        None => DataFrame::empty_with_schema(&Schema::from_iter([Field::new(
            "host".into(),
            DataType::String,
        )])),
    };
    lap("baseline");
    let events = window.select(events).select(EVENT_COLUMNS.map(col));
    let outcomes = window.select(outcomes);
    let transitions = window.select(transitions);
    // A host weighs its rows and its time series' buckets (every host with enough rows
    // has them all).
    let buckets = (opts.window_s / opts.bucket_s.max(1)).max(0) as u64;
    let rows = groups::host_counts(events.clone())?;
    let series: Option<BTreeSet<String>> = (opts.min_series_calls > 0).then(|| {
        rows.iter()
            .filter(|(_, n)| i64::try_from(*n).unwrap_or(i64::MAX) >= opts.min_series_calls)
            .map(|(h, _)| h.clone())
            .collect()
    });
    let counts: Vec<(String, u64)> = rows
        .into_iter()
        .map(|(h, n)| {
            let with_series = series.as_ref().is_none_or(|s| s.contains(&h));
            let weight = n + if with_series { buckets } else { 0 };
            (h, weight)
        })
        .collect();
    let hosts = HostFrames {
        config,
        window,
        baseline: &baseline,
        opts,
        series: series.as_ref(),
    };
    let groups = groups::plan(&counts, opts.group_rows);
    lap("host counts");
    // Each group reads its own rows from the scans (a host range the Parquet reader
    // filters while it decodes), so no group holds another's. The pages the stages
    // before freed (the export's batches) go back before the first.
    groups::release_free_memory();
    for k in 0..groups.len().max(1) {
        let only = groups::in_group(&groups, k);
        let part = hosts.analyze(
            events.clone().filter(only.clone()),
            transitions.clone().filter(only.clone()),
            outcomes.clone().filter(only),
        )?;
        each(part)?;
        groups::release_free_memory();
        lap("group");
    }
    Ok(())
}

impl Metrics {
    /// The tables, as the run folder names them ([`Table::ANALYZED`]'s order).
    pub fn tables(&self) -> [(Table, &DataFrame); 5] {
        [
            (Table::HostSummary, &self.host_summary),
            (Table::HostRoleSummary, &self.host_role_summary),
            (Table::Bursts, &self.bursts),
            (Table::HostTimeseries, &self.host_timeseries),
            (Table::RateWindows, &self.rate_windows),
        ]
    }

    fn tables_mut(&mut self) -> [&mut DataFrame; 5] {
        [
            &mut self.host_summary,
            &mut self.host_role_summary,
            &mut self.bursts,
            &mut self.host_timeseries,
            &mut self.rate_windows,
        ]
    }

    /// Appends another group's tables (hosts after this one's).
    fn append(&mut self, other: &Metrics) -> PolarsResult<()> {
        for (df, (_, more)) in self.tables_mut().into_iter().zip(other.tables()) {
            df.vstack_mut(more)?;
        }
        Ok(())
    }

    fn rechunk(&mut self) {
        for df in self.tables_mut() {
            df.rechunk_mut();
        }
    }
}

/// What every group of hosts is computed with: the window, and the baseline (computed
/// once, over every host, in bounded memory: it only counts).
struct HostFrames<'a> {
    config: &'a BreakerConfig,
    window: Window,
    baseline: &'a DataFrame,
    opts: &'a AnalyzeOptions,
    /// The hosts that get a time series (`AnalyzeOptions::min_series_calls`); None: all.
    series: Option<&'a BTreeSet<String>>,
}

impl HostFrames<'_> {
    /// Every table for the hosts of `events` (the window's rows, `EVENT_COLUMNS`), with
    /// their transitions and logged outcomes in the window. The rows are read once,
    /// classified and held: every table reads them (the group's size, not the window's,
    /// bounds what this holds; see crate::groups).
    fn analyze(
        &self,
        events: LazyFrame,
        transitions: LazyFrame,
        outcomes: LazyFrame,
    ) -> PolarsResult<Metrics> {
        let HostFrames {
            config,
            window,
            opts,
            ..
        } = *self;
        let clock = std::time::Instant::now();
        // The scan is read and classified in one streaming pass (the raw rows are never
        // held beside the classified ones); the keys code the classified rows' strings.
        let rows = classified(events, config, &opts.crawler)?;
        let keys = RowKeys::of(&rows)?;
        tracing::debug!(
            rows = rows.height(),
            elapsed_s = clock.elapsed().as_secs_f64(),
            "analyze: rows read and classified"
        );
        let hosts: Vec<String> = (0..keys.hosts.values.len() as u32)
            .map(|h| keys.hosts.name(h))
            .collect();
        let policies = policy_frame(config, &opts.crawler, &hosts)?;
        // The tables computed in plain Rust (bursts, rate windows) run beside the Polars
        // ones.
        let logged = outcomes.clone();
        std::thread::scope(|s| {
            let bursts = s.spawn(|| -> PolarsResult<(DataFrame, DataFrame)> {
                let bursts = prefer_logged_bursts(
                    burst_table(&rows, &keys, opts)?,
                    logged_bursts(logged, opts)?,
                )?;
                let stats = burst_stats(&bursts, &hosts)?;
                Ok((bursts, stats))
            });
            let rate_windows = s.spawn(|| rate_windows(&rows, &keys, window, opts));
            let events = rows.clone().lazy();
            let role_counts = role_counts(events.clone())?;
            let open_failures = open_evidence(transitions.clone(), &policies, window, opts);
            let host_timeseries = match self.series {
                None => timeseries(events.clone(), open_failures, &hosts, window, opts)?,
                Some(series) => {
                    let with: Vec<String> = hosts
                        .iter()
                        .filter(|h| series.contains(*h))
                        .cloned()
                        .collect();
                    timeseries(
                        events.clone().filter(crate::groups::among(&with)),
                        open_failures.filter(crate::groups::among(&with)),
                        &with,
                        window,
                        opts,
                    )?
                }
            };
            let host_role_summary = role_counts
                .clone()
                .lazy()
                .with_columns(ratio_columns())
                .with_columns(attempt_ratio_columns())
                .sort(["host", "role"], SortMultipleOptions::default())
                .collect_streaming()?;
            let transition_stats = transition_stats(transitions, &policies, opts)?;
            let (bursts, burst_stats) = bursts.join().expect("the bursts do not panic")?;
            let (rate_windows, per_second) = rate_windows
                .join()
                .expect("the rate windows do not panic")?;
            // The seconds' counts of the roles that met a 429 (null for the others).
            let host_role_summary = host_role_summary
                .lazy()
                .join(
                    per_second.lazy(),
                    [col("host"), col("role")],
                    [col("host"), col("role")],
                    left_join(),
                )
                .collect()?;
            let host_summary = self.host_summary(HostTables {
                events,
                role_counts: &role_counts,
                outcomes,
                policies: &policies,
                burst_stats,
                transition_stats,
            })?;
            tracing::debug!(elapsed_s = clock.elapsed().as_secs_f64(), "analyze: tables");
            Ok(Metrics {
                window,
                host_summary,
                host_role_summary,
                bursts,
                host_timeseries,
                rate_windows,
            })
        })
    }

    /// `host_summary`: the counts (summed over roles), Retry-After, attempts, logged
    /// outcomes, settings, bursts, transitions and baseline of each host.
    fn host_summary(&self, t: HostTables) -> PolarsResult<DataFrame> {
        let HostTables {
            events,
            role_counts,
            outcomes,
            policies,
            burst_stats,
            transition_stats,
        } = t;
        let has_retry_after = col("is_net")
            .and(col("status").is_in(list_lit([429, 503]), false))
            .and(col("retry_after_s").is_not_null());
        let retry_after = col("retry_after_s");
        let retry_after_aggs = [
            retry_after
                .clone()
                .count()
                .cast(DataType::Int64)
                .alias("retry_after_samples"),
            retry_after
                .clone()
                .cast(DataType::Float64)
                .median()
                .alias("retry_after_median_s"),
            retry_after
                .clone()
                .cast(DataType::Float64)
                .quantile(lit(0.9), QuantileMethod::Nearest)
                .alias("retry_after_p90_s"),
            retry_after
                .max()
                .cast(DataType::Int64)
                .alias("retry_after_max_s"),
            count_where(
                col("retry_after_s")
                    .cast(DataType::Float64)
                    .gt(col("retry_after_cap_s")),
                "retry_after_above_cap",
            ),
        ];
        let left = left_join;
        let on_host =
            |lf: LazyFrame, other: LazyFrame| lf.join(other, [col("host")], [col("host")], left());
        // The responses that carried Retry-After (a few of the rows), with their cap.
        let retry_after_by_host = on_host(events.filter(has_retry_after), policies.clone().lazy())
            .group_by([col("host")])
            .agg(retry_after_aggs);
        let logged_by_host = outcomes
            .filter(col("scope").is_null().or(col("scope").eq(lit("host"))))
            .group_by([col("host")])
            .agg([
                count_where(
                    col("outcome").eq(lit("failure")).fill_null(false),
                    "breaker_failures_logged",
                ),
                count_where(col("outcome").is_not_null(), "breaker_outcomes_logged"),
            ]);
        // A host's counts and attempts are their sums over its roles.
        let attempt_names = attempt_aggs().len();
        let count_names: Vec<&str> = role_counts
            .get_column_names()
            .into_iter()
            .map(|n| n.as_str())
            .filter(|n| !["host", "role"].contains(n))
            .collect();
        let (counts, attempts) = count_names.split_at(count_names.len() - attempt_names);
        let summed = |names: &[&str]| {
            role_counts
                .clone()
                .lazy()
                .group_by([col("host")])
                .agg(names.iter().map(|n| sum_as(n, n)).collect::<Vec<_>>())
        };
        let joined = [
            retry_after_by_host,
            summed(attempts),
            logged_by_host,
            policies.clone().lazy(),
            burst_stats.lazy(),
            transition_stats.lazy(),
            self.baseline.clone().lazy(),
        ]
        .into_iter()
        .fold(summed(counts), on_host);
        let host_summary = joined
            // A host without Retry-After has none of it (its median stays NULL).
            .with_columns(
                ["retry_after_samples", "retry_after_above_cap"]
                    .map(|c| col(c).fill_null(lit(0i64))),
            )
            .with_columns(ratio_columns())
            .with_columns(attempt_ratio_columns())
            .with_columns([
                (col("retry_after_above_cap").cast(DataType::Float64)
                    / col("retry_after_samples").cast(DataType::Float64))
                .alias("retry_after_above_cap_share"),
                // Times the reciprocal, as Polars divides a column by a scalar: one
                // host's row (a group of one) gives the same bits as many.
                (col("opens").fill_null(lit(0i64)).cast(DataType::Float64)
                    * lit(1.0 / self.window.hours()))
                .alias("opens_per_hour"),
            ])
            .sort(["host"], SortMultipleOptions::default())
            .collect_streaming()?;
        fill_zero_counts(host_summary)
    }
}

/// What `host_summary` joins, besides the window's baseline.
struct HostTables<'a> {
    events: LazyFrame,
    role_counts: &'a DataFrame,
    outcomes: LazyFrame,
    policies: &'a DataFrame,
    burst_stats: DataFrame,
    transition_stats: DataFrame,
}

trait CollectStreaming {
    fn collect_streaming(self) -> PolarsResult<DataFrame>;
}

impl CollectStreaming for LazyFrame {
    fn collect_streaming(self) -> PolarsResult<DataFrame> {
        crate::frame::collect(self)
    }
}
