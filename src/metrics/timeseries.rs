//! The per-host time series: calls and failures per bucket and their EWMA rates, the
//! input of change-point detection and of the report's charts.

use polars::prelude::*;

use super::AnalyzeOptions;
use super::CollectStreaming;
use super::US_PER_S;
use super::Window;
use super::count_where;
use super::left_join;
use super::summary::sum_as;

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
