//! What each telemetry row stands for under the crawler model: its class (success,
//! 429, 5xx, timeout, ...), whether the breaker counted it, and the breaker instance
//! (process or fleet) it belongs to.

use polars::prelude::*;

use crate::config::BreakerConfig;
use crate::crawler::{CrawlerModel, Scope};
use crate::frame::collect;

use super::US_PER_S;
use super::left_join;
use super::list_lit;

/// `status in <the host's list>`, with per-host classification overrides when the
/// crawler model honours them.
pub(super) fn status_in(
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

/// The longest latency one attempt is taken to have had (the crawler's connect and read
/// timeouts, with room): a longer one is a clock or a bug, and left unknown.
pub const MAX_LATENCY_MS: i64 = 60_000;

/// Rows read into memory (a group's, once), classified, without the columns only the
/// classification reads (`from_cache`, `error`, `retry_count`, `breaker_recorded`,
/// `elapsed_ms`, `rate_delay_ms`): on the streaming engine, which evaluates it a morsel
/// at a time (the in-memory engine held several full-length temporaries of every new
/// column at once). Besides `classify`'s columns:
/// - `latency_ms`: how long a network row's request that was not retried took after its
///   limiter wait, its one attempt's latency (NULL for a retried one, or unknown). The
///   crawler writes a row when its request ends; its one attempt reached the server that
///   long before.
pub fn classified(
    rows: LazyFrame,
    config: &BreakerConfig,
    model: &CrawlerModel,
) -> PolarsResult<DataFrame> {
    let latency = col("elapsed_ms") - col("rate_delay_ms").fill_null(lit(0i64));
    let single = col("is_net").and(col("retry_count").fill_null(lit(0i64)).eq(lit(0i64)));
    collect(
        classify(rows, config, model)
            .with_column(
                when(
                    single
                        .and(latency.clone().gt_eq(lit(0i64)))
                        .and(latency.clone().lt_eq(lit(MAX_LATENCY_MS))),
                )
                .then(latency.cast(DataType::Int32))
                .otherwise(lit(NULL).cast(DataType::Int32))
                .alias("latency_ms"),
            )
            .drop(cols([
                "from_cache",
                "error",
                "retry_count",
                "breaker_recorded",
                "elapsed_ms",
                "rate_delay_ms",
            ])),
    )
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
