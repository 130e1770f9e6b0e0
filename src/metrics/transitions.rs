//! Breaker transitions: deduplicated (several sinks log the same change), counted per
//! host (opens, half-open outcomes, flapping) with the evidence around each open.

use polars::prelude::*;

use crate::breaker_state::BreakerState;

use super::AnalyzeOptions;
use super::CollectStreaming;
use super::US_PER_S;
use super::Window;
use super::classify::with_instance;
use super::count_where;
use super::left_join;

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
                .eq(lit(BreakerState::Open.as_str()))
                .and(prev1.clone().eq(lit(BreakerState::HalfOpen.as_str())))
                .and(prev2.eq(lit(BreakerState::Open.as_str())))
                .and((ts_s.clone() - prev_ts2).lt_eq(lit(opts.flap_horizon_s)))
                .fill_null(false)
                .alias("reopen_from_half_open"),
            // open -> (half_open ->) closed -> open within a few reset timeouts: ping-pong.
            new.clone()
                .eq(lit(BreakerState::Open.as_str()))
                .and(prev1.eq(lit(BreakerState::Closed.as_str())))
                .and(
                    (ts_s.clone() - prev_ts1).lt_eq(
                        lit(opts.pingpong_reset_timeouts)
                            * col("reset_timeout_s")
                                .fill_null(lit(crate::config::Policy::default().reset_timeout_s)),
                    ),
                )
                .fill_null(false)
                .alias("pingpong"),
            // Whether a half-open episode ended closed.
            new.clone()
                .eq(lit(BreakerState::HalfOpen.as_str()))
                .and(next_state.eq(lit(BreakerState::Closed.as_str())))
                .fill_null(false)
                .alias("half_open_then_closed"),
        ])
        .group_by([col("host")])
        .agg([
            count_where(new.clone().eq(lit(BreakerState::Open.as_str())), "opens"),
            col("lasted_s")
                .filter(new.clone().eq(lit(BreakerState::Open.as_str())))
                .median()
                .alias("open_duration_median_s"),
            col("lasted_s")
                .filter(new.clone().eq(lit(BreakerState::Open.as_str())))
                .quantile(lit(0.9), QuantileMethod::Nearest)
                .alias("open_duration_p90_s"),
            count_where(
                new.eq(lit(BreakerState::HalfOpen.as_str())),
                "half_open_episodes",
            ),
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
pub(super) fn open_evidence(
    transitions: LazyFrame,
    policies: &DataFrame,
    window: Window,
    opts: &AnalyzeOptions,
) -> LazyFrame {
    let bucket_us = opts.bucket_s * US_PER_S;
    dedupe_transitions(transitions)
        .filter(col("scope").is_null().or(col("scope").eq(lit("host"))))
        .filter(col("new_state").eq(lit(BreakerState::Open.as_str())))
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
