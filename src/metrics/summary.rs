//! The per-host and per-role counts (the SQL in `queries/`), their ratios with Wilson
//! bounds, the policy columns, and the trailing baseline.

use polars::prelude::*;

use crate::breaker_state::BreakerState;
use crate::config::BreakerConfig;
use crate::crawler::CrawlerModel;
use crate::frame::collect;

use super::CollectStreaming;
use super::EVENT_COLUMNS;
use super::Window;
use super::classify::classify;
use super::first_event_us;
use super::left_join;
use super::stats;
use super::transitions::dedupe_transitions;

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
pub(super) fn wilson(k: &str, n: &str, name: &str) -> Vec<Expr> {
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

pub(super) fn ratio_columns() -> Vec<Expr> {
    let mut v = Vec::new();
    for k in ["e429", "e5xx", "e503", "timeouts", "neutral", "failures"] {
        v.extend(wilson(k, "calls_net", k));
    }
    v
}

/// Counts per attempt (a retried 429 is still a 429 the host sent) and the failures the
/// breakers recorded; see [`classify`].
pub(super) fn attempt_aggs() -> Vec<Expr> {
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
pub(super) fn sum_as(column: &str, name: &str) -> Expr {
    col(column).sum().cast(DataType::Int64).alias(name)
}

/// `<k>_attempt_ratio` with Wilson bounds, over `attempts`.
pub(super) fn attempt_ratio_columns() -> Vec<Expr> {
    let mut v = wilson("attempts_429", "attempts", "e429_attempt");
    v.extend(wilson("attempts_5xx", "attempts", "e5xx_attempt"));
    v
}

/// Per-host breaker settings, as the crawler model resolves them, as a frame to join on.
pub(super) fn policy_frame(
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

/// The counts per host and role (queries/host_role_counts.sql) and their attempts.
pub(super) fn role_counts(events: LazyFrame) -> PolarsResult<DataFrame> {
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

/// The same ratios over the trailing baseline before the window, as `baseline_*`
/// columns: `baseline_hours` is the part of the baseline the data covers (from
/// `data_start_us`, else from the first event in it), `baseline_calls_net` the calls it
/// rests on, `baseline_<k>_ratio` and
/// `baseline_<k>_hi` (95% Wilson upper bound) for 429, 5xx, timeouts and failures, and
/// `baseline_opens_per_hour`. A host with no calls in the baseline has NULLs.
pub(super) fn baseline(
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
        .filter(col("new_state").eq(lit(BreakerState::Open.as_str())))
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
pub(super) fn fill_zero_counts(df: DataFrame) -> PolarsResult<DataFrame> {
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
