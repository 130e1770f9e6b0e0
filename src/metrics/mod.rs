//! Stage 2, analyze: per-host metrics over a time window of the exported dataset, with
//! Polars. Takes lazy frames of `http_events` and `breaker_transitions` and the
//! breakers.yaml model; gives the tables the later stages read. Reads through the lazy
//! scans it is given and writes only its host groups' scratch files, removed after
//! (the pipeline writes the outputs).
//!
//! Definitions (documented in ARCHITECTURE.md, "Metrics tables"):
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

use std::collections::{BTreeMap, BTreeSet};

use polars::prelude::*;

use crate::config::BreakerConfig;
use crate::crawler::{CrawlerModel, Scope};

pub const US_PER_S: i64 = 1_000_000;

/// The `http_events` columns the metrics read.
pub const EVENT_COLUMNS: [&str; 14] = [
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

/// `status in <the host's list>`, with per-host classification overrides when the
/// crawler model honours them.
fn status_in(
    config: &BreakerConfig,
    model: &CrawlerModel,
    pick: fn(&crate::config::Classify) -> &std::collections::BTreeSet<i64>,
) -> Expr {
    let status = col("status");
    let mut expr = status
        .clone()
        .is_in(list_lit(pick(&config.classify).iter().copied()), false);
    if model.per_host_classify {
        for (host, hc) in &config.hosts {
            if let Some(c) = &hc.classify {
                expr = when(col("host").eq(lit(host.as_str())))
                    .then(
                        status
                            .clone()
                            .is_in(list_lit(pick(c).iter().copied()), false),
                    )
                    .otherwise(expr);
            }
        }
    }
    expr.fill_null(false)
}

/// Adds the per-row classification columns, as the crawler model counts:
/// - `is_net`: the row touched the network (not from the HTTP cache, not `blocked`);
/// - `is_timeout`: a network row with no status and an error (a request that raised);
/// - `is_failure`: the final outcome is a breaker failure (a failure status; an
///   exception only when the model counts exceptions);
/// - `is_neutral`: a neutral status;
/// - `outcome`: 1 failure, 0 success, NULL not counted (an exception the breaker does not
///   count, a blocked row; a cache hit counts as one success when the model says so);
/// - `attempts`: `retry_count + 1` for a network row, else 0;
/// - `retried_failures`: the earlier attempts the breaker counted as failures: their
///   status is the row's final status when that is retryable (the retries ran out), else
///   the host's most frequent retryable final status in the same UTC hour, else in the
///   whole data (the estimate of what was retried away), counted when it is a failure
///   status; a request that raised retried the same exception, so its earlier attempts
///   count only where exceptions do;
/// - `retried_fail_attempts`: those failed retried attempts whatever the model counts
///   (the replay's calls carry them, so calibration can try other models);
/// - `retried_status`: that estimated status of the retried attempts (NULL without
///   retries, for a request that raised, or when the host had no retryable final status
///   to estimate it from);
/// - `attempts_429`, `attempts_5xx`: attempts with that status, retried ones included;
/// - `breaker_failures`: failures the breaker recorded for the row (the retried ones and
///   the final one, counted `final_outcome_counted` times).
pub fn classify(events: LazyFrame, config: &BreakerConfig, model: &CrawlerModel) -> LazyFrame {
    let blocked = col("breaker_recorded").eq(lit("blocked")).fill_null(false);
    let net = col("from_cache")
        .fill_null(false)
        .not()
        .and(blocked.clone().not());
    let exception = col("status").is_null().and(col("error").is_not_null());
    let fail_status = status_in(config, model, |c| &c.failure_statuses);
    let failure = if model.exceptions_are_failures {
        fail_status.clone().or(exception.clone())
    } else {
        fail_status.clone()
    };
    let retryable = |e: Expr| {
        e.is_in(list_lit(model.retry_statuses.iter().copied()), false)
            .fill_null(false)
    };
    // The most frequent retryable final status (ties: the smallest) of the host in the
    // same hour, else over the whole data.
    let hour = (col("ts").cast(DataType::Int64) / lit(3_600 * US_PER_S)).alias("retry_hour");
    let retried_finals = events
        .clone()
        .filter(net.clone().and(retryable(col("status"))))
        .with_column(hour.clone());
    let mode_of_status = |name: &str| {
        col("status")
            .mode(true)
            .sort(SortOptions::default())
            .first()
            .alias(name)
    };
    let retry_status = retried_finals
        .clone()
        .group_by([col("host")])
        .agg([mode_of_status("host_retry_status")]);
    let retry_status_hour = retried_finals
        .group_by([col("host"), col("retry_hour")])
        .agg([mode_of_status("hour_retry_status")]);
    let failure_list = list_lit(config.classify.failure_statuses.iter().copied());
    let all_retry_fail = model
        .retry_statuses
        .iter()
        .all(|s| config.classify.failure_statuses.contains(s));
    // Bounded as the export bounds it (a dataset exported before the bound may hold any
    // count): each retried attempt is a call in the replay.
    let retried = when(net.clone())
        .then(
            col("retry_count")
                .fill_null(lit(0i64))
                .clip(lit(0i64), lit(crate::telemetry::schema::MAX_RETRY_COUNT)),
        )
        .otherwise(lit(0i64));
    // A request that raised retried the same exception: its retried attempts have no
    // status to estimate.
    let retried_status = when(exception.clone())
        .then(lit(NULL).cast(DataType::Int64))
        .when(retryable(col("status")))
        .then(col("status"))
        .otherwise(col("estimated_retry_status"));
    let retried_fail = retried_status
        .clone()
        .is_in(failure_list, false)
        .fill_null(lit(all_retry_fail));
    // The retried attempts that failed, whatever the model counts.
    let retried_fail_attempts = when(exception.clone().or(retried_fail))
        .then(retried.clone())
        .otherwise(lit(0i64));
    let retried_failures = match (model.count_retries, model.exceptions_are_failures) {
        (false, _) => lit(0i64),
        (true, true) => retried_fail_attempts.clone(),
        (true, false) => when(exception.clone())
            .then(lit(0i64))
            .otherwise(retried_fail_attempts.clone()),
    };
    let final_failure = net.clone().and(failure.clone());
    let outcome = when(blocked)
        .then(lit(NULL).cast(DataType::Int32))
        .when(net.clone().not())
        .then(if model.cache_hit_is_success {
            lit(0i32)
        } else {
            lit(NULL).cast(DataType::Int32)
        })
        .when(failure)
        .then(lit(1i32))
        .when(exception.clone().and(lit(!model.exceptions_are_failures)))
        .then(lit(NULL).cast(DataType::Int32))
        .otherwise(lit(0i32));
    let with_status = |code: Expr, status: Expr| {
        when(net.clone().and(code.clone()))
            .then(lit(1i64))
            .otherwise(lit(0i64))
            + when(status).then(retried.clone()).otherwise(lit(0i64))
    };
    // The estimate of each row, joined on the two key columns alone (a join gathers
    // every column it carries) and set beside the rows.
    let estimated = events
        .clone()
        .select([col("host"), hour])
        .join(retry_status, [col("host")], [col("host")], left_join())
        .join(
            retry_status_hour,
            [col("host"), col("retry_hour")],
            [col("host"), col("retry_hour")],
            left_join(),
        )
        .select([col("hour_retry_status")
            .fill_null(col("host_retry_status"))
            .alias("estimated_retry_status")]);
    concat_lf_horizontal([events, estimated], HConcatOptions::default())
        .expect("frames of one height")
        .with_columns([
            net.clone().alias("is_net"),
            net.clone().and(exception).alias("is_timeout"),
            final_failure.clone().alias("is_failure"),
            net.clone()
                .and(status_in(config, model, |c| &c.neutral_statuses))
                .alias("is_neutral"),
            outcome.alias("outcome"),
            (retried.clone() + net.clone().cast(DataType::Int64)).alias("attempts"),
            retried_failures.clone().alias("retried_failures"),
            retried_fail_attempts.alias("retried_fail_attempts"),
            when(retried.clone().gt(lit(0i64)))
                .then(retried_status.clone())
                .otherwise(lit(NULL).cast(DataType::Int64))
                .alias("retried_status"),
            with_status(
                col("status").eq(lit(429)).fill_null(false),
                retried_status.clone().eq(lit(429)).fill_null(false),
            )
            .alias("attempts_429"),
            with_status(
                col("status")
                    .gt_eq(lit(500))
                    .and(col("status").lt(lit(600)))
                    .fill_null(false),
                retried_status
                    .clone()
                    .gt_eq(lit(500))
                    .and(retried_status.lt(lit(600)))
                    .fill_null(false),
            )
            .alias("attempts_5xx"),
            (retried_failures
                + when(final_failure)
                    .then(lit(i64::from(model.final_outcome_counted)))
                    .otherwise(lit(0i64)))
            .alias("breaker_failures"),
        ])
        .drop(cols(["estimated_retry_status"]))
}

/// Rows read into memory (a group's, once), classified, without the columns only the
/// classification reads (`from_cache`, `error`, `retry_count`, `breaker_recorded`): on
/// the streaming engine, which evaluates it a morsel at a time (the in-memory engine held
/// several full-length temporaries of every new column at once).
pub fn classified(
    rows: LazyFrame,
    config: &BreakerConfig,
    model: &CrawlerModel,
) -> PolarsResult<DataFrame> {
    collect(classify(rows, config, model).drop(cols([
        "from_cache",
        "error",
        "retry_count",
        "breaker_recorded",
    ])))
}

/// The earliest event time in the frame.
fn first_event_us(events: LazyFrame) -> PolarsResult<Option<i64>> {
    let df = events
        .select([col("ts").min().cast(DataType::Int64).alias("t")])
        .collect_streaming()?;
    Ok(df.column("t")?.i64()?.get(0))
}

fn count_where(cond: Expr, name: &str) -> Expr {
    cond.cast(DataType::UInt32)
        .sum()
        .cast(DataType::Int64)
        .alias(name)
}

/// The set-based counts, in SQL files that also run unchanged in DuckDB (queries/).
pub const HOST_COUNTS_SQL: &str = include_str!("../../queries/host_counts.sql");
pub const HOST_ROLE_COUNTS_SQL: &str = include_str!("../../queries/host_role_counts.sql");

/// Runs one of the queries/ files over the classified window as the table `events`.
pub fn run_sql(events: LazyFrame, sql: &str) -> PolarsResult<LazyFrame> {
    let mut ctx = polars::sql::SQLContext::new();
    ctx.register("events", events);
    ctx.execute(sql)
}

/// Wilson score interval (95%) for `k` of `n`, as expressions: ratio, low, high.
fn wilson(k: &str, n: &str, name: &str) -> Vec<Expr> {
    let z2 = lit(stats::Z95 * stats::Z95);
    let n_f = col(n).cast(DataType::Float64);
    let p = col(k).cast(DataType::Float64) / n_f.clone();
    let denom = lit(1.0) + z2.clone() / n_f.clone();
    let center = (p.clone() + z2.clone() / (lit(2.0) * n_f.clone())) / denom.clone();
    let half = lit(stats::Z95)
        * (p.clone() * (lit(1.0) - p.clone()) / n_f.clone()
            + z2 / (lit(4.0) * n_f.clone() * n_f.clone()))
        .sqrt()
        / denom;
    let valid = col(n).gt(lit(0));
    vec![
        when(valid.clone())
            .then(p)
            .otherwise(lit(NULL))
            .alias(format!("{name}_ratio")),
        // Exactly 0 / 1 at the edges, where the formula leaves float noise (1e-19).
        when(valid.clone().not())
            .then(lit(NULL))
            .when(col(k).eq(lit(0)))
            .then(lit(0.0))
            .otherwise(center.clone() - half.clone())
            .alias(format!("{name}_lo")),
        when(valid.not())
            .then(lit(NULL))
            .when(col(k).eq(col(n)))
            .then(lit(1.0))
            .otherwise(center + half)
            .alias(format!("{name}_hi")),
    ]
}

fn ratio_columns() -> Vec<Expr> {
    let mut v = Vec::new();
    for k in ["e429", "e5xx", "e503", "timeouts", "neutral", "failures"] {
        v.extend(wilson(k, "calls_net", k));
    }
    v
}

/// Counts per attempt (a retried 429 is still a 429 the host sent) and the failures the
/// breakers recorded; see [`classify`].
fn attempt_aggs() -> Vec<Expr> {
    [
        "attempts",
        "attempts_429",
        "attempts_5xx",
        "breaker_failures",
    ]
    .map(|c| sum_as(c, c))
    .into()
}

/// The sum of an integer column as Int64, named `name`.
fn sum_as(column: &str, name: &str) -> Expr {
    col(column).sum().cast(DataType::Int64).alias(name)
}

/// `<k>_attempt_ratio` with Wilson bounds, over `attempts`.
fn attempt_ratio_columns() -> Vec<Expr> {
    let mut v = wilson("attempts_429", "attempts", "e429_attempt");
    v.extend(wilson("attempts_5xx", "attempts", "e5xx_attempt"));
    v
}

/// Per-host breaker settings, as the crawler model resolves them, as a frame to join on.
fn policy_frame(
    config: &BreakerConfig,
    model: &CrawlerModel,
    hosts: &[String],
) -> PolarsResult<DataFrame> {
    let policies: Vec<_> = hosts
        .iter()
        .map(|h| model.policy(config, h, None))
        .collect();
    df!(
        "host" => hosts,
        "fail_max" => policies.iter().map(|p| p.fail_max).collect::<Vec<_>>(),
        "reset_timeout_s" => policies.iter().map(|p| p.reset_timeout_s).collect::<Vec<_>>(),
        "retry_after_cap_s" => policies.iter().map(|p| p.retry_after_cap_s).collect::<Vec<_>>(),
    )
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
    /// The tables, with the names of their files (`NAME.parquet`).
    pub fn tables(&self) -> [(&'static str, &DataFrame); 5] {
        [
            ("host_summary", &self.host_summary),
            ("host_role_summary", &self.host_role_summary),
            ("bursts", &self.bursts),
            ("host_timeseries", &self.host_timeseries),
            ("rate_windows", &self.rate_windows),
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
                rate_windows: rate_windows
                    .join()
                    .expect("the rate windows do not panic")?,
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

/// The counts per host and role (queries/host_role_counts.sql) and their attempts.
fn role_counts(events: LazyFrame) -> PolarsResult<DataFrame> {
    let attempts_by_role = events
        .clone()
        .group_by([col("host"), col("role")])
        .agg(attempt_aggs());
    collect(run_sql(events, HOST_ROLE_COUNTS_SQL)?.join(
        attempts_by_role,
        [col("host"), col("role")],
        [col("host"), col("role")],
        left_join(),
    ))
}

/// The first and last bucket of each host, role and rate limiter.
type Spans = PlHashMap<(u32, u32, u32), (usize, usize)>;

/// Per host, role and bucket with network calls: `requests` (network rows: the load the
/// crawler offered), `attempts` (retried ones included), `attempts_429`,
/// `attempts_head` (those of HEAD requests, which skip the crawler's limiter unless
/// `count_head`, while a server's quota counts them), and the rate
/// limiters running then: `processes` (crawler processes, source and run id, whose calls to the
/// host and role span the bucket: one limiter each under the `memory` backend) and
/// `machines` (the same by source: one each under `multiprocess` / `sqlite`). Buckets
/// without calls are left out.
fn rate_windows(
    rows: &DataFrame,
    keys: &RowKeys,
    window: Window,
    opts: &AnalyzeOptions,
) -> PolarsResult<DataFrame> {
    let bucket_us = opts.bucket_s * US_PER_S;
    // The network rows' buckets (-1: not a network row, or no time), read from a frame
    // that goes before the pass.
    let columns = rows
        .clone()
        .lazy()
        .select([
            when(col("is_net"))
                .then((col("ts").cast(DataType::Int64) - lit(window.start_us)) / lit(bucket_us))
                .otherwise(lit(NULL).cast(DataType::Int64))
                .fill_null(lit(-1i64))
                .alias("bucket"),
            col("attempts").cast(DataType::Int64),
            col("attempts_429").cast(DataType::Int64),
            col("method").eq(lit("HEAD")).fill_null(false).alias("head"),
        ])
        .collect()?;
    let bucket = values(columns.column("bucket")?.i64()?, -1);
    let attempts = values(columns.column("attempts")?.i64()?, 0);
    let attempts_429 = values(columns.column("attempts_429")?.i64()?, 0);
    let head = flags(columns.column("head")?.bool()?);
    drop(columns);
    let (hosts, host_names) = (&keys.hosts.of_row, &keys.hosts.values);
    let (roles, role_names) = (&keys.roles.of_row, &keys.roles.values);
    let (sources, processes) = (&keys.sources.of_row, &keys.processes);

    // One pass: the counts per window (host, role, bucket) that has calls, and each
    // limiter's first and last bucket. Sparse: a window is held only when a row falls
    // in it, so no count of distinct roles (free text a crawler bug can fill) or span of
    // buckets sizes the table; at most one window a row.
    let n_buckets = ((window.end_us - window.start_us + bucket_us - 1) / bucket_us).max(1) as usize;
    #[derive(Default, Clone, Copy)]
    struct Counts {
        requests: i64,
        attempts: i64,
        attempts_429: i64,
        attempts_head: i64,
    }
    let mut windows: PlHashMap<(u32, u32, usize), Counts> = PlHashMap::new();
    // Per host, role and limiter (a process, a machine): its first and last bucket.
    let mut spans: [Spans; 2] = Default::default();
    for i in 0..bucket.len() {
        let Some(b) = usize::try_from(bucket[i]).ok().filter(|&b| b < n_buckets) else {
            continue;
        };
        let (h, r) = (hosts[i], roles[i]);
        let w = windows.entry((h, r, b)).or_default();
        let a = attempts[i];
        w.requests += 1;
        w.attempts += a;
        w.attempts_429 += attempts_429[i];
        if head[i] {
            w.attempts_head += a;
        }
        for (limiters, by) in spans.iter_mut().zip([processes.of_row[i], sources[i]]) {
            let span = limiters.entry((h, r, by)).or_insert((b, b));
            span.0 = span.0.min(b);
            span.1 = span.1.max(b);
        }
    }
    // The windows with calls, in (host, role, bucket) order.
    let mut kept: Vec<((u32, u32, usize), Counts)> = windows.into_iter().collect();
    kept.sort_unstable_by_key(|(k, _)| *k);
    // A limiter runs from its first call to its last: per window, the spans of its host
    // and role that cover its bucket (first buckets and last buckets sorted per pair).
    let running = |limiters: &Spans| -> Vec<i64> {
        let mut by_pair: PlHashMap<(u32, u32), (Vec<usize>, Vec<usize>)> = PlHashMap::new();
        for (&(h, r, _), &(first, last)) in limiters {
            let e = by_pair.entry((h, r)).or_default();
            e.0.push(first);
            e.1.push(last);
        }
        for (firsts, lasts) in by_pair.values_mut() {
            firsts.sort_unstable();
            lasts.sort_unstable();
        }
        kept.iter()
            .map(|&((h, r, b), _)| {
                by_pair.get(&(h, r)).map_or(0, |(firsts, lasts)| {
                    let started = firsts.partition_point(|&f| f <= b);
                    let ended = lasts.partition_point(|&l| l < b);
                    (started - ended) as i64
                })
            })
            .collect()
    };
    let (processes, machines) = (running(&spans[0]), running(&spans[1]));
    let counts = |f: fn(&Counts) -> i64| kept.iter().map(|(_, c)| f(c)).collect::<Vec<i64>>();
    let buckets: Vec<i64> = kept.iter().map(|((_, _, b), _)| *b as i64).collect();
    df!(
        "host" => kept.iter().map(|((h, _, _), _)| host_names[*h as usize].as_deref()).collect::<Vec<_>>(),
        "role" => kept.iter().map(|((_, r, _), _)| role_names[*r as usize].as_deref()).collect::<Vec<_>>(),
        "bucket" => &buckets,
        "bucket_start" => buckets.iter().map(|b| window.start_us + b * bucket_us).collect::<Vec<i64>>(),
        "requests" => counts(|c| c.requests),
        "attempts" => counts(|c| c.attempts),
        "attempts_429" => counts(|c| c.attempts_429),
        "attempts_head" => counts(|c| c.attempts_head),
        "processes" => processes,
        "machines" => machines,
    )?
    .lazy()
    .with_column(col("bucket_start").cast(DataType::Datetime(TimeUnit::Microseconds, None)))
    .collect()
}

/// The same ratios over the trailing baseline before the window, as `baseline_*`
/// columns: `baseline_hours` is the part of the baseline the data covers (from
/// `data_start_us`, else from the first event in it), `baseline_calls_net` the calls it
/// rests on, `baseline_<k>_ratio` and
/// `baseline_<k>_hi` (95% Wilson upper bound) for 429, 5xx, timeouts and failures, and
/// `baseline_opens_per_hour`. A host with no calls in the baseline has NULLs.
fn baseline(
    events: LazyFrame,
    transitions: LazyFrame,
    config: &BreakerConfig,
    model: &CrawlerModel,
    window: Window,
    data_start_us: Option<i64>,
) -> PolarsResult<LazyFrame> {
    let events = classify(
        window.select(events).select(EVENT_COLUMNS.map(col)),
        config,
        model,
    );
    let first = match data_start_us {
        Some(s) => (s < window.end_us).then_some(s),
        None => first_event_us(events.clone())?,
    };
    let covered_h = first.map_or(0.0, |f| {
        (window.end_us - f.max(window.start_us)) as f64 / 3.6e9
    });
    let opens = dedupe_transitions(window.select(transitions))
        .filter(col("new_state").eq(lit("open")))
        .group_by([col("host")])
        .agg([len().cast(DataType::Int64).alias("baseline_opens")]);
    let mut cols = vec![
        col("host"),
        col("calls_net").alias("baseline_calls_net"),
        lit(covered_h).alias("baseline_hours"),
        (col("baseline_opens")
            .fill_null(lit(0i64))
            .cast(DataType::Float64)
            / lit(covered_h))
        .alias("baseline_opens_per_hour"),
    ];
    for k in ["e429", "e5xx", "timeouts", "failures"] {
        let [ratio, _lo, hi] =
            <[Expr; 3]>::try_from(wilson(k, "calls_net", k)).expect("three bounds");
        cols.push(ratio.alias(format!("baseline_{k}_ratio")));
        cols.push(hi.alias(format!("baseline_{k}_hi")));
    }
    Ok(run_sql(events, HOST_COUNTS_SQL)?
        .join(opens, [col("host")], [col("host")], left_join())
        .select(cols))
}

/// Hosts without bursts or transitions have zero of them, not NULL.
fn fill_zero_counts(df: DataFrame) -> PolarsResult<DataFrame> {
    let zero_cols = [
        "breaker_failures_logged",
        "breaker_outcomes_logged",
        "transitions_from_table",
        "transitions_from_events",
        "bursts",
        "burst_max",
        "opens",
        "half_open_episodes",
        "half_open_closed",
        "reopen_from_half_open",
        "pingpong_flaps",
    ];
    df.lazy()
        .with_columns(
            zero_cols
                .iter()
                .map(|c| col(*c).fill_null(lit(0i64)))
                .collect::<Vec<_>>(),
        )
        .collect_streaming()
}

/// Runs a query on Polars' streaming engine: scans, filters and group-bys stream in
/// bounded memory; operators it cannot stream fall back to the in-memory engine.
pub fn collect(lf: LazyFrame) -> PolarsResult<DataFrame> {
    Ok(lf.collect_with_engine(Engine::Streaming)?.unwrap_single())
}

trait CollectStreaming {
    fn collect_streaming(self) -> PolarsResult<DataFrame>;
}

impl CollectStreaming for LazyFrame {
    fn collect_streaming(self) -> PolarsResult<DataFrame> {
        collect(self)
    }
}

/// The classified rows a breaker counted something for: a final outcome, or retried
/// failures before an uncounted one (the rows bursts and the replay read).
pub fn breaker_counted() -> Expr {
    col("outcome")
        .is_not_null()
        .or(col("retried_failures").gt(lit(0i64)))
}

/// What joins an instance's source and run in its name (`instance` columns).
pub const INSTANCE_SEPARATOR: &str = "\u{1f}";

/// Adds `instance`, the breaker instance a row belongs to under `model`: its process
/// (`source` and `run_id` joined by U+001F), or one (empty) for the fleet. A row without
/// a run id belongs to the most frequent run of its source with the same host (the
/// crawler's sink leaves `run_id` NULL now and then): the guess reads the host's own
/// rows only, so hosts can be computed apart.
pub fn with_instance(lf: LazyFrame, model: &CrawlerModel) -> LazyFrame {
    match model.breaker_scope {
        Scope::Fleet => lf.with_column(lit("").alias("instance")),
        Scope::Process => {
            let runs = lf
                .clone()
                .filter(col("run_id").is_not_null())
                .group_by([col("source"), col("host")])
                .agg([col("run_id")
                    .mode(true)
                    .sort(SortOptions::default())
                    .first()
                    .alias("source_run")]);
            lf.join(
                runs,
                [col("source"), col("host")],
                [col("source"), col("host")],
                left_join(),
            )
            .with_column(
                concat_str(
                    [
                        col("source"),
                        col("run_id")
                            .fill_null(col("source_run"))
                            .fill_null(lit("")),
                    ],
                    INSTANCE_SEPARATOR,
                    false,
                )
                .alias("instance"),
            )
            .drop(cols(["source_run"]))
        }
    }
}

/// Over rows sorted by host and instance: whether a row is the first, and the last, of
/// its breaker instance.
fn breaker_edges(host: &str, instance: &str) -> (Expr, Expr) {
    let edge = |n: i64| {
        col(host)
            .neq(col(host).shift(lit(n)))
            .or(col(instance).neq(col(instance).shift(lit(n))))
            .fill_null(true)
    };
    (edge(1), edge(-1))
}

/// The columns of `bursts.parquet`, in order, from a frame with `host`, `instance`,
/// `start` / `end` (µs), `length` and the window-edge flags; both burst tables (from rows
/// and from logged events) end with this select so that they concatenate.
fn burst_columns(dominant_status: Expr, role_calls: [Expr; 3]) -> Vec<Expr> {
    let datetime = DataType::Datetime(TimeUnit::Microseconds, None);
    let [metadata, landing, artifact] = role_calls;
    vec![
        col("host"),
        instance_part(0).alias("source"),
        instance_part(1).alias("run_id"),
        col("start").cast(datetime.clone()),
        col("end").cast(datetime),
        col("length"),
        dominant_status.alias("dominant_status"),
        metadata.alias("metadata_calls"),
        landing.alias("landing_calls"),
        artifact.alias("artifact_calls"),
        col("at_window_start"),
        col("at_window_end"),
    ]
}

/// Part `i` of `instance` (0: the source, 1: the run id).
fn instance_part(i: i64) -> Expr {
    col("instance")
        .str()
        .split(lit(INSTANCE_SEPARATOR))
        .list()
        .get(lit(i), true)
        .fill_null(lit(""))
}

/// One row per burst: the consecutive failures one breaker instance counted. Rows are
/// taken per instance in (ts, source, id) order and each stands for what the breaker
/// recorded (see [`classify`]): its retried failures, then its final outcome
/// `final_outcome_counted` times. A burst ends at the first success; its `length` is in
/// breaker failures, not rows. Columns: host, source, run_id (the instance; empty under
/// a fleet-wide breaker), start, end, length, dominant status (of the failures: a
/// row's final status when it failed, else its retried attempts'), role mix (rows), and
/// whether it touches the instance's first / last counted row in the window (so it may
/// be longer than seen).
pub fn bursts(events: LazyFrame, opts: &AnalyzeOptions) -> PolarsResult<DataFrame> {
    let rows = collect(events)?;
    burst_table(&rows, &RowKeys::of(&rows)?, opts)
}

/// [`bursts`] of a group's classified rows and their keys.
fn burst_table(rows: &DataFrame, keys: &RowKeys, opts: &AnalyzeOptions) -> PolarsResult<DataFrame> {
    let weight = i64::from(opts.crawler.final_outcome_counted);
    let columns = rows
        .clone()
        .lazy()
        .select([
            breaker_counted().alias("counted"),
            // NULL first when sorted, as Polars sorts.
            col("ts")
                .cast(DataType::Int64)
                .fill_null(lit(i64::MIN))
                .alias("ts_us"),
            col("id").cast(DataType::Int64).fill_null(lit(i64::MIN)),
            // The status of the row's failures: its final one when that failed, else its
            // retried attempts' (-1 when unknown).
            when(col("outcome").eq(lit(1i32)))
                .then(col("status").fill_null(lit(0i64)))
                .otherwise(col("retried_status").fill_null(lit(-1i64)))
                .cast(DataType::Int64)
                .alias("status"),
            (col("retried_failures")
                + when(col("outcome").eq(lit(1i32)))
                    .then(lit(weight))
                    .otherwise(lit(0i64)))
            .cast(DataType::Int64)
            .alias("fails"),
            col("outcome").eq(lit(0i32)).fill_null(false).alias("ends"),
        ])
        .collect()?;
    let counted = CountedRows {
        counted: flags(columns.column("counted")?.bool()?),
        ts: values(columns.column("ts_us")?.i64()?, i64::MIN),
        id: values(columns.column("id")?.i64()?, i64::MIN),
        status: values(columns.column("status")?.i64()?, 0),
        fails: values(columns.column("fails")?.i64()?, 0),
        ends: flags(columns.column("ends")?.bool()?),
    };
    drop(columns);
    collect(
        burst_runs(&counted, keys, opts.crawler.breaker_scope)?
            .lazy()
            .select(burst_columns(
                when(col("dominant_status").eq(lit(0i64)))
                    .then(lit("timeout"))
                    .when(col("dominant_status").eq(lit(-1i64)))
                    .then(lit("unknown"))
                    .otherwise(col("dominant_status").cast(DataType::String)),
                ["metadata_calls", "landing_calls", "artifact_calls"].map(col),
            )),
    )
}

/// What a breaker counted for each row, as plain vectors (`i64::MIN`: no time or id).
struct CountedRows {
    /// The breaker counted something for the row (see [`breaker_counted`]).
    counted: Vec<bool>,
    ts: Vec<i64>,
    id: Vec<i64>,
    /// The status of the row's failures (0: none, a timeout; -1: unknown).
    status: Vec<i64>,
    /// Failures the breaker counted for the row.
    fails: Vec<i64>,
    /// The row ended a burst: a success.
    ends: Vec<bool>,
}

/// A column's values as a plain vector, NULL as `null` (reading a ChunkedArray by
/// index looks up the chunk every time).
fn values<T: PolarsNumericType>(ca: &ChunkedArray<T>, null: T::Native) -> Vec<T::Native> {
    ca.iter().map(|v| v.unwrap_or(null)).collect()
}

/// A boolean column as a plain vector, NULL as false.
fn flags(ca: &BooleanChunked) -> Vec<bool> {
    ca.iter().map(|v| v.unwrap_or(false)).collect()
}

/// A string column as dense codes, numbered in the sorted order of its values (NULL
/// first, as Polars sorts): rows then sort and group by four bytes instead of strings.
pub struct Codes {
    /// Each row's code.
    pub of_row: Vec<u32>,
    /// The values, by code (a few: hosts, sources, runs, roles).
    pub values: Vec<Option<String>>,
}

impl Codes {
    pub fn of(ca: &StringChunked) -> Codes {
        let mut seen: PlHashMap<Option<&str>, u32> = PlHashMap::default();
        let first_seen: Vec<u32> = ca
            .iter()
            .map(|v| {
                let next = seen.len() as u32;
                *seen.entry(v).or_insert(next)
            })
            .collect();
        let mut values: Vec<(Option<&str>, u32)> = seen.into_iter().collect();
        values.sort_unstable();
        let mut rank = vec![0u32; values.len()];
        for (r, (_, c)) in values.iter().enumerate() {
            rank[*c as usize] = r as u32;
        }
        Codes {
            of_row: first_seen.into_iter().map(|c| rank[c as usize]).collect(),
            values: values
                .into_iter()
                .map(|(v, _)| v.map(str::to_owned))
                .collect(),
        }
    }

    /// The value of code `c` (empty for NULL).
    pub fn name(&self, c: u32) -> String {
        self.values[c as usize].clone().unwrap_or_default()
    }
}

/// A group's rows keyed for the tables computed in plain Rust (bursts, rate windows):
/// the codes of the strings they group by, and each row's crawler process, computed
/// once per group.
pub struct RowKeys {
    pub hosts: Codes,
    pub roles: Codes,
    pub sources: Codes,
    /// Each row's crawler process (its source and run; see [`Instances`]): the breaker
    /// instance under a breaker per process, and the rate limiter under the `memory`
    /// backend.
    pub processes: Instances,
}

impl RowKeys {
    /// The keys of a frame with `host`, `role`, `source` and `run_id`.
    pub fn of<'a>(df: &'a DataFrame) -> PolarsResult<RowKeys> {
        let [host, source, run, role] = ["host", "source", "run_id", "role"].map(|c| df.column(c));
        let (host, source, run, role) = (host?.str()?, source?.str()?, run?.str()?, role?.str()?);
        // Four columns, coded side by side.
        let ((hosts, sources), (runs, roles)) = std::thread::scope(|s| {
            let pair = |a: &'a StringChunked, b: &'a StringChunked| {
                s.spawn(move || (Codes::of(a), Codes::of(b)))
            };
            let (first, second) = (pair(host, source), pair(run, role));
            (
                first.join().expect("no panic"),
                second.join().expect("no panic"),
            )
        });
        let processes = Instances::of_processes(&hosts, &sources, &runs);
        Ok(RowKeys {
            roles,
            hosts,
            sources,
            processes,
        })
    }

    /// Each row's breaker instance under `scope`.
    pub fn breakers(&self, scope: Scope) -> std::borrow::Cow<'_, Instances> {
        match scope {
            Scope::Process => std::borrow::Cow::Borrowed(&self.processes),
            Scope::Fleet => std::borrow::Cow::Owned(Instances {
                of_row: self.hosts.of_row.clone(),
                names: (0..self.hosts.values.len() as u32)
                    .map(|h| [self.hosts.name(h), String::new(), String::new()])
                    .collect(),
            }),
        }
    }
}

/// Each row's (host, source, run key) under a breaker per process: the run key is the
/// row's run (its code plus one), else the most frequent run of its source with the
/// same host (the smallest on a tie), else 0 (the empty run, as an empty run id).
fn process_keys(
    hosts: &[u32],
    sources: &[u32],
    runs: &[u32],
    run_names: &[Option<String>],
) -> Vec<(u32, u32, u32)> {
    let run_key = |r: u32| match run_names[r as usize].as_deref() {
        None | Some("") => 0,
        Some(_) => r + 1,
    };
    let rows = || {
        hosts
            .iter()
            .zip(sources)
            .zip(runs)
            .map(|((&h, &s), &r)| (h, s, r))
    };
    let mut per_run: PlHashMap<(u32, u32, u32), u64> = PlHashMap::default();
    for (h, s, r) in rows().filter(|&(_, _, r)| run_names[r as usize].is_some()) {
        *per_run.entry((h, s, r)).or_default() += 1;
    }
    let mut usual: PlHashMap<(u32, u32), (u64, u32)> = PlHashMap::default();
    for ((h, s, r), n) in per_run {
        let best = usual.entry((h, s)).or_insert((n, r));
        if n > best.0 || (n == best.0 && r < best.1) {
            *best = (n, r);
        }
    }
    rows()
        .map(|(h, s, r)| {
            let key = match run_names[r as usize] {
                Some(_) => run_key(r),
                None => usual.get(&(h, s)).map_or(0, |&(_, u)| run_key(u)),
            };
            (h, s, key)
        })
        .collect()
}

/// The breaker instances of a frame's rows, by the rule of [`with_instance`]: under a
/// breaker per process, a row's host, source and run id, where a row without a run id
/// takes the most frequent run of its source with the same host (the smallest on a
/// tie; none: the empty run); under a fleet-wide breaker, its host.
#[derive(Clone)]
pub struct Instances {
    /// Each row's instance.
    pub of_row: Vec<u32>,
    /// Each instance's host, source and run key (source and run key are empty under a
    /// fleet-wide breaker), numbered in their sorted order.
    pub names: Vec<[String; 3]>,
}

impl Instances {
    /// The crawler processes of rows with these hosts, sources and run ids.
    fn of_processes(hosts: &Codes, sources: &Codes, runs: &Codes) -> Instances {
        let keys = process_keys(&hosts.of_row, &sources.of_row, &runs.of_row, &runs.values);
        let mut distinct: Vec<(u32, u32, u32)> = keys.clone();
        distinct.sort_unstable();
        distinct.dedup();
        let code: PlHashMap<(u32, u32, u32), u32> = distinct
            .iter()
            .enumerate()
            .map(|(i, k)| (*k, i as u32))
            .collect();
        Instances {
            of_row: keys.iter().map(|k| code[k]).collect(),
            names: distinct
                .iter()
                .map(|&(h, s, r)| {
                    // Run keys count from 1; 0 is the empty run.
                    let run = r.checked_sub(1).map_or_else(String::new, |r| runs.name(r));
                    [hosts.name(h), sources.name(s), run]
                })
                .collect(),
        }
    }

    /// What [`with_instance`] calls instance `k`: nothing under a fleet-wide breaker,
    /// else its source and run.
    pub fn name(&self, k: usize, scope: Scope) -> String {
        match scope {
            Scope::Fleet => String::new(),
            Scope::Process => {
                let [_, source, run] = &self.names[k];
                format!("{source}{INSTANCE_SEPARATOR}{run}")
            }
        }
    }

    /// The rows of `keep`, by instance (instances in code order, rows in frame order):
    /// a counting sort.
    fn rows_by_instance(&self, keep: impl Fn(usize) -> bool) -> (Vec<usize>, Vec<usize>) {
        let mut start = vec![0usize; self.names.len() + 1];
        for (i, &c) in self.of_row.iter().enumerate() {
            if keep(i) {
                start[c as usize + 1] += 1;
            }
        }
        for k in 1..start.len() {
            start[k] += start[k - 1];
        }
        let mut next = start.clone();
        let mut order = vec![0usize; start[self.names.len()]];
        for (i, &c) in self.of_row.iter().enumerate() {
            if keep(i) {
                order[next[c as usize]] = i;
                next[c as usize] += 1;
            }
        }
        (order, start)
    }
}

/// One burst while its rows are read.
#[derive(Default)]
struct Run {
    instance: u32,
    start: i64,
    end: i64,
    length: i64,
    /// Rows per status of the burst's failures.
    statuses: Vec<(i64, u32)>,
    roles: [i64; 3],
    at_start: bool,
    at_end: bool,
}

/// The bursts of the rows a breaker counted (`rows`, with `keys` of the same rows), in
/// one pass over them per instance in (ts, source, id) order: a burst starts with a
/// breaker's first row or after a row that ended one (a success) and holds the rows up
/// to the next success whose failures count (`fails > 0`).
fn burst_runs(rows: &CountedRows, keys: &RowKeys, scope: Scope) -> PolarsResult<DataFrame> {
    let instances = keys.breakers(scope);
    let CountedRows {
        counted,
        ts,
        id,
        status,
        fails,
        ends,
    } = rows;
    let source = &keys.sources.of_row;
    // The role counted in each burst, by role code.
    let role_slot: Vec<Option<usize>> = keys
        .roles
        .values
        .iter()
        .map(|r| {
            ["metadata", "landing", "artifact"]
                .iter()
                .position(|n| Some(*n) == r.as_deref())
        })
        .collect();
    let (mut order, start) = instances.rows_by_instance(|i| counted[i]);

    let mut runs: Vec<Run> = Vec::new();
    for (inst, bounds) in start.windows(2).enumerate() {
        let rows = &mut order[bounds[0]..bounds[1]];
        // Stable, and fast on rows that come nearly in time order.
        rows.sort_by_key(|&i| (ts[i], source[i], id[i]));
        let mut open: Option<Run> = None;
        for (pos, &i) in rows.iter().enumerate() {
            let first = pos == 0;
            if pos > 0 && ends[rows[pos - 1]] {
                runs.extend(open.take().filter(|r| r.length > 0));
            }
            let f = fails[i];
            if f <= 0 {
                continue;
            }
            let run = open.get_or_insert_with(|| Run {
                instance: inst as u32,
                start: i64::MAX,
                end: i64::MIN,
                ..Run::default()
            });
            if ts[i] != i64::MIN {
                run.start = run.start.min(ts[i]);
                run.end = run.end.max(ts[i]);
            }
            run.length += f;
            let s = status[i];
            match run.statuses.iter_mut().find(|(v, _)| *v == s) {
                Some((_, n)) => *n += 1,
                None => run.statuses.push((s, 1)),
            }
            if let Some(slot) = role_slot[keys.roles.of_row[i] as usize] {
                run.roles[slot] += 1;
            }
            run.at_start |= first;
            run.at_end |= pos + 1 == rows.len();
        }
        runs.extend(open.take().filter(|r| r.length > 0));
    }

    // The most frequent status (the smallest on a tie).
    let dominant = |r: &Run| {
        r.statuses
            .iter()
            .fold((0i64, 0u32), |best, &(s, n)| {
                if n > best.1 || (n == best.1 && s < best.0) {
                    (s, n)
                } else {
                    best
                }
            })
            .0
    };
    Ok(df!(
        "host" => runs.iter().map(|r| instances.names[r.instance as usize][0].as_str()).collect::<Vec<_>>(),
        "instance" => runs.iter().map(|r| instances.name(r.instance as usize, scope)).collect::<Vec<_>>(),
        "start" => runs.iter().map(|r| r.start).collect::<Vec<i64>>(),
        "end" => runs.iter().map(|r| r.end).collect::<Vec<i64>>(),
        "length" => runs.iter().map(|r| r.length).collect::<Vec<i64>>(),
        "dominant_status" => runs.iter().map(dominant).collect::<Vec<i64>>(),
        "metadata_calls" => runs.iter().map(|r| r.roles[0]).collect::<Vec<i64>>(),
        "landing_calls" => runs.iter().map(|r| r.roles[1]).collect::<Vec<i64>>(),
        "artifact_calls" => runs.iter().map(|r| r.roles[2]).collect::<Vec<i64>>(),
        "at_window_start" => runs.iter().map(|r| r.at_start).collect::<Vec<bool>>(),
        "at_window_end" => runs.iter().map(|r| r.at_end).collect::<Vec<bool>>(),
    )?)
}

/// Bursts from the breakers' own `breaker_failure` / `breaker_success` events (the
/// `breaker_outcomes` table): the exact record of what each breaker counted, one event
/// per counted outcome, in (ts, id) order per instance. Same columns as [`bursts`]
/// (`dominant_status` is `logged`: the events carry no status; the role counts are 0);
/// `logged` is the list of instances that logged any event.
pub struct LoggedBursts {
    pub bursts: DataFrame,
    pub instances: DataFrame,
}

pub fn logged_bursts(outcomes: LazyFrame, opts: &AnalyzeOptions) -> PolarsResult<LoggedBursts> {
    let rows = with_instance(
        outcomes.filter(col("scope").is_null().or(col("scope").eq(lit("host")))),
        &opts.crawler,
    )
    .filter(col("outcome").is_not_null());
    let instances = collect(
        rows.clone()
            .select([col("host"), col("instance")])
            .unique_stable(None, UniqueKeepStrategy::First)
            .sort(["host", "instance"], SortMultipleOptions::default()),
    )?;
    let by = [col("host"), col("instance")];
    let (breaker_change, last_of_breaker) = breaker_edges("host", "instance");
    let is_fail = col("outcome").eq(lit("failure"));
    let boundary = breaker_change
        .clone()
        .or(col("is_fail").not().shift(lit(1)).fill_null(true));

    let bursts = collect(
        rows.select([
            col("host"),
            col("instance"),
            col("ts").cast(DataType::Int64).alias("ts_us"),
            col("id"),
            is_fail.clone().alias("is_fail"),
        ])
        .sort(
            ["host", "instance", "ts_us", "id"],
            SortMultipleOptions::default().with_maintain_order(true),
        )
        .with_columns([
            boundary.cast(DataType::UInt32).cum_sum(false).alias("run"),
            breaker_change.alias("first_of_breaker"),
            last_of_breaker.alias("last_of_breaker"),
        ])
        .filter(col("is_fail"))
        .group_by(
            by.clone()
                .into_iter()
                .chain([col("run")])
                .collect::<Vec<_>>(),
        )
        .agg([
            col("ts_us").min().alias("start"),
            col("ts_us").max().alias("end"),
            len().cast(DataType::Int64).alias("length"),
            col("first_of_breaker").any(true).alias("at_window_start"),
            col("last_of_breaker").any(true).alias("at_window_end"),
        ])
        .sort(["host", "instance", "run"], SortMultipleOptions::default())
        .select(burst_columns(
            lit("logged"),
            [(); 3].map(|()| lit(0i64).cast(DataType::Int64)),
        )),
    )?;
    let instances = instances
        .lazy()
        .select([
            col("host"),
            instance_part(0).alias("source"),
            instance_part(1).alias("run_id"),
        ])
        .collect()?;
    Ok(LoggedBursts { bursts, instances })
}

/// The bursts of every instance: from its logged events when it logged any, else
/// reconstructed from its rows. Adds `counted_from` (`events` or `rows`).
pub fn prefer_logged_bursts(from_rows: DataFrame, logged: LoggedBursts) -> PolarsResult<DataFrame> {
    let key = [col("host"), col("source"), col("run_id")];
    let mut anti = JoinArgs::new(JoinType::Anti);
    anti.maintain_order = MaintainOrderJoin::Left;
    let rows = from_rows
        .lazy()
        .join(logged.instances.lazy(), key.clone(), key, anti)
        .with_column(lit("rows").alias("counted_from"));
    let events = logged
        .bursts
        .lazy()
        .with_column(lit("events").alias("counted_from"));
    collect(concat([rows, events], UnionArgs::default())?.sort(
        ["host", "source", "run_id", "start"],
        SortMultipleOptions::default().with_maintain_order(true),
    ))
}

/// Per host: number of bursts and nearest-rank q50, q95, q99 and max of their lengths.
pub fn burst_stats(bursts: &DataFrame, hosts: &[String]) -> PolarsResult<DataFrame> {
    let mut lengths: BTreeMap<&str, Vec<u64>> =
        hosts.iter().map(|h| (h.as_str(), Vec::new())).collect();
    let host_col = bursts.column("host")?.str()?;
    let len_col = bursts.column("length")?.i64()?;
    for (h, l) in host_col.iter().zip(len_col.iter()) {
        if let (Some(h), Some(l)) = (h, l) {
            lengths.entry(h).or_default().push(l as u64);
        }
    }
    let mut out: BTreeMap<&str, Vec<Option<i64>>> = BTreeMap::new();
    let names = ["bursts", "burst_q50", "burst_q95", "burst_q99", "burst_max"];
    let mut host_names = Vec::new();
    for (h, mut ls) in lengths {
        ls.sort_unstable();
        host_names.push(h.to_owned());
        let s = stats::BurstStats::from_sorted(&ls);
        let vals = [
            Some(s.bursts as i64),
            (s.bursts > 0).then_some(s.q50 as i64),
            (s.bursts > 0).then_some(s.q95 as i64),
            (s.bursts > 0).then_some(s.q99 as i64),
            Some(s.max as i64),
        ];
        for (n, v) in names.iter().zip(vals) {
            out.entry(n).or_default().push(v);
        }
    }
    let mut columns = vec![Column::new("host".into(), host_names)];
    for n in names {
        columns.push(Column::new(n.into(), out.remove(n).unwrap_or_default()));
    }
    DataFrame::new_infer_height(columns)
}

/// Transitions recorded in both `breaker_transitions` and `breaker_events` (a crawler
/// may write both), counted once: a transition of the same breaker instance (source,
/// run, host), between the same states, from the other origin, within a second of the
/// previous one is the same transition. (A breaker cannot make the same transition twice
/// within a second: it has to leave the state in between.) Keeps the first.
pub fn dedupe_transitions(transitions: LazyFrame) -> LazyFrame {
    let key = ["host", "source", "run_id", "old_state", "new_state"];
    let same = key
        .iter()
        .map(|k| {
            col(*k)
                .fill_null(lit(""))
                .eq(col(*k).fill_null(lit("")).shift(lit(1)))
        })
        .reduce(|a, b| a.and(b))
        .expect("a key");
    let ts = col("ts").cast(DataType::Int64);
    let close = (ts.clone() - ts.shift(lit(1))).lt_eq(lit(US_PER_S));
    let other_origin = col("origin")
        .fill_null(lit(""))
        .neq(col("origin").fill_null(lit("")).shift(lit(1)));
    transitions
        .sort(
            ["host", "source", "run_id", "ts", "origin", "id"],
            SortMultipleOptions::default()
                .with_maintain_order(true)
                .with_nulls_last(true),
        )
        .filter(same.and(close).and(other_origin).fill_null(false).not())
}

/// Per host, from the breaker transitions (each counted once, see
/// [`dedupe_transitions`]): opens, open durations, half-open episodes and how they
/// ended, flapping, all per breaker instance; and how many transitions came from each
/// table.
pub fn transition_stats(
    transitions: LazyFrame,
    policies: &DataFrame,
    opts: &AnalyzeOptions,
) -> PolarsResult<DataFrame> {
    // Neighbouring transitions are those of the same breaker instance.
    let by_host = |e: Expr| e.over([col("host"), col("instance")]);
    // Times 1e-6, not over 1e6: the same bits whatever the number of rows (Polars
    // divides by a scalar as times its reciprocal, by a one-row column exactly).
    let ts_s = col("ts").cast(DataType::Int64).cast(DataType::Float64) * lit(1e-6);
    let new = col("new_state");
    let prev = |n: i64| by_host(col("new_state").shift(lit(n)));
    let prev_ts = |n: i64| by_host(ts_s.clone().shift(lit(n)));
    let (prev1, prev2, prev_ts1, prev_ts2) = (prev(1)?, prev(2)?, prev_ts(1)?, prev_ts(2)?);
    let next_ts = by_host(ts_s.clone().shift(lit(-1)))?;
    let next_state = by_host(col("new_state").shift(lit(-1)))?;
    with_instance(dedupe_transitions(transitions), &opts.crawler)
        .filter(col("scope").is_null().or(col("scope").eq(lit("host"))))
        .sort(
            ["host", "instance", "ts", "id"],
            SortMultipleOptions::default().with_maintain_order(true),
        )
        .join(
            policies
                .clone()
                .lazy()
                .select([col("host"), col("reset_timeout_s")]),
            [col("host")],
            [col("host")],
            left_join(),
        )
        .with_columns([
            // Time until the next transition of the same host: how long this state lasted.
            (next_ts - ts_s.clone()).alias("lasted_s"),
            // open -> half_open -> open, quickly: a failed trial.
            new.clone()
                .eq(lit("open"))
                .and(prev1.clone().eq(lit("half_open")))
                .and(prev2.eq(lit("open")))
                .and((ts_s.clone() - prev_ts2).lt_eq(lit(opts.flap_horizon_s)))
                .fill_null(false)
                .alias("reopen_from_half_open"),
            // open -> (half_open ->) closed -> open within a few reset timeouts: ping-pong.
            new.clone()
                .eq(lit("open"))
                .and(prev1.eq(lit("closed")))
                .and((ts_s.clone() - prev_ts1).lt_eq(
                    lit(opts.pingpong_reset_timeouts) * col("reset_timeout_s").fill_null(lit(60.0)),
                ))
                .fill_null(false)
                .alias("pingpong"),
            // Whether a half-open episode ended closed.
            new.clone()
                .eq(lit("half_open"))
                .and(next_state.eq(lit("closed")))
                .fill_null(false)
                .alias("half_open_then_closed"),
        ])
        .group_by([col("host")])
        .agg([
            count_where(new.clone().eq(lit("open")), "opens"),
            col("lasted_s")
                .filter(new.clone().eq(lit("open")))
                .median()
                .alias("open_duration_median_s"),
            col("lasted_s")
                .filter(new.clone().eq(lit("open")))
                .quantile(lit(0.9), QuantileMethod::Nearest)
                .alias("open_duration_p90_s"),
            count_where(new.eq(lit("half_open")), "half_open_episodes"),
            count_where(col("half_open_then_closed"), "half_open_closed"),
            count_where(col("reopen_from_half_open"), "reopen_from_half_open"),
            count_where(col("pingpong"), "pingpong_flaps"),
            count_where(
                col("origin")
                    .eq(lit("breaker_transitions"))
                    .fill_null(false),
                "transitions_from_table",
            ),
            count_where(
                col("origin").eq(lit("breaker_events")).fill_null(false),
                "transitions_from_events",
            ),
        ])
        .with_column(
            (col("half_open_closed").cast(DataType::Float64)
                / col("half_open_episodes").cast(DataType::Float64))
            .alias("half_open_close_share"),
        )
        .collect_streaming()
}

/// Per host and bucket, from the transitions: `opens` (each counted once) and
/// `open_failures`, the `fail_max` consecutive failures each open stands for (the
/// detector's breaker evidence, see `crate::detect::BREAKER_KIND`).
fn open_evidence(
    transitions: LazyFrame,
    policies: &DataFrame,
    window: Window,
    opts: &AnalyzeOptions,
) -> LazyFrame {
    let bucket_us = opts.bucket_s * US_PER_S;
    dedupe_transitions(transitions)
        .filter(col("scope").is_null().or(col("scope").eq(lit("host"))))
        .filter(col("new_state").eq(lit("open")))
        .join(
            policies
                .clone()
                .lazy()
                .select([col("host"), col("fail_max")]),
            [col("host")],
            [col("host")],
            left_join(),
        )
        .with_column(
            ((col("ts").cast(DataType::Int64) - lit(window.start_us)) / lit(bucket_us))
                .alias("bucket"),
        )
        .group_by([col("host"), col("bucket")])
        .agg([
            len().cast(DataType::Int64).alias("opens"),
            col("fail_max")
                .fill_null(lit(5i64))
                .sum()
                .cast(DataType::Int64)
                .alias("open_failures"),
        ])
}

/// Per host and bucket: counts, raw ratios, and EWMA ratios. The counts are per attempt,
/// what the host answered (a retried 429 is a 429 the host sent): `calls_net` rows,
/// `attempts`, and `e429`, `e5xx`, `failures` (failed attempts: the retried ones and
/// the final failure, once) and `timeouts` (rows) over `attempts`. Buckets with no calls
/// are explicit rows with zero counts; their raw ratios are NULL, and the EWMA ratios
/// are the ratio of the EWMAs of the counts, so an empty bucket weighs nothing instead
/// of reading as healthy.
pub fn timeseries(
    events: LazyFrame,
    open_failures: LazyFrame,
    hosts: &[String],
    window: Window,
    opts: &AnalyzeOptions,
) -> PolarsResult<DataFrame> {
    let bucket_us = opts.bucket_s * US_PER_S;
    let n_buckets = ((window.end_us - window.start_us) + bucket_us - 1) / bucket_us;
    let grid_hosts: Vec<&str> = hosts
        .iter()
        .flat_map(|h| std::iter::repeat_n(h.as_str(), n_buckets as usize))
        .collect();
    let grid_buckets: Vec<i64> = (0..hosts.len()).flat_map(|_| 0..n_buckets).collect();
    let grid = df!("host" => grid_hosts, "bucket" => grid_buckets)?;
    let counts = events
        .filter(col("is_net"))
        .with_column(
            ((col("ts").cast(DataType::Int64) - lit(window.start_us)) / lit(bucket_us))
                .alias("bucket"),
        )
        .group_by([col("host"), col("bucket")])
        .agg([
            len().cast(DataType::Int64).alias("calls_net"),
            sum_as("attempts", "attempts"),
            sum_as("attempts_429", "e429"),
            sum_as("attempts_5xx", "e5xx"),
            count_where(col("is_timeout"), "timeouts"),
            (col("retried_failures") + col("is_failure").cast(DataType::Int64))
                .sum()
                .cast(DataType::Int64)
                .alias("failures"),
        ]);
    let alpha = 1.0 - 0.5f64.powf(1.0 / opts.half_life_buckets);
    let ewm = |c: &str| {
        col(c)
            .cast(DataType::Float64)
            .ewm_mean(EWMOptions {
                alpha,
                adjust: false,
                bias: false,
                min_periods: 1,
                ignore_nulls: false,
            })
            .over([col("host")])
    };
    let count_cols = [
        "calls_net",
        "attempts",
        "e429",
        "e5xx",
        "timeouts",
        "failures",
    ];
    let mut ratio_exprs = Vec::new();
    let ewm_calls = ewm("attempts")?;
    for k in ["e429", "e5xx", "timeouts", "failures"] {
        ratio_exprs.push(
            when(col("attempts").gt(lit(0)))
                .then(col(k).cast(DataType::Float64) / col("attempts").cast(DataType::Float64))
                .otherwise(lit(NULL))
                .alias(format!("{k}_ratio")),
        );
        ratio_exprs.push(
            when(ewm_calls.clone().gt(lit(0.0)))
                .then(ewm(k)? / ewm_calls.clone())
                .otherwise(lit(NULL))
                .alias(format!("{k}_ewma")),
        );
    }
    grid.lazy()
        .join(
            counts,
            [col("host"), col("bucket")],
            [col("host"), col("bucket")],
            left_join(),
        )
        .join(
            open_failures,
            [col("host"), col("bucket")],
            [col("host"), col("bucket")],
            left_join(),
        )
        .with_columns(
            count_cols
                .iter()
                .chain(&["opens", "open_failures"])
                .map(|c| col(*c).fill_null(lit(0i64)))
                .collect::<Vec<_>>(),
        )
        .sort(["host", "bucket"], SortMultipleOptions::default())
        .with_column(
            (lit(window.start_us) + col("bucket") * lit(bucket_us))
                .cast(DataType::Datetime(TimeUnit::Microseconds, None))
                .alias("bucket_start"),
        )
        .with_columns(ratio_exprs)
        .collect_streaming()
}
