//! Bursts: runs of consecutive failures a breaker counted, per breaker instance, from
//! the rows or from the crawler's logged outcomes, and their quantiles per host.

use std::collections::BTreeMap;

use polars::prelude::*;

use crate::crawler::Scope;
use crate::frame::collect;

use super::AnalyzeOptions;
use super::classify::INSTANCE_SEPARATOR;
use super::classify::breaker_counted;
use super::classify::with_instance;
use super::keys::RowKeys;
use super::keys::flags;
use super::keys::values;
use super::stats;

/// Over rows sorted by host and instance: whether a row is the first, and the last, of
/// its breaker instance.
pub(super) fn breaker_edges(host: &str, instance: &str) -> (Expr, Expr) {
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
pub(super) fn burst_columns(dominant_status: Expr, role_calls: [Expr; 3]) -> Vec<Expr> {
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
pub(super) fn instance_part(i: i64) -> Expr {
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
pub(super) fn burst_table(
    rows: &DataFrame,
    keys: &RowKeys,
    opts: &AnalyzeOptions,
) -> PolarsResult<DataFrame> {
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
pub(super) struct CountedRows {
    /// The breaker counted something for the row (see [`breaker_counted`]).
    pub(super) counted: Vec<bool>,
    pub(super) ts: Vec<i64>,
    pub(super) id: Vec<i64>,
    /// The status of the row's failures (0: none, a timeout; -1: unknown).
    pub(super) status: Vec<i64>,
    /// Failures the breaker counted for the row.
    pub(super) fails: Vec<i64>,
    /// The row ended a burst: a success.
    pub(super) ends: Vec<bool>,
}

/// One burst while its rows are read.
#[derive(Default)]
pub(super) struct Run {
    pub(super) instance: u32,
    pub(super) start: i64,
    pub(super) end: i64,
    pub(super) length: i64,
    /// Rows per status of the burst's failures.
    pub(super) statuses: Vec<(i64, u32)>,
    pub(super) roles: [i64; 3],
    pub(super) at_start: bool,
    pub(super) at_end: bool,
}

/// The bursts of the rows a breaker counted (`rows`, with `keys` of the same rows), in
/// one pass over them per instance in (ts, source, id) order: a burst starts with a
/// breaker's first row or after a row that ended one (a success) and holds the rows up
/// to the next success whose failures count (`fails > 0`).
pub(super) fn burst_runs(
    rows: &CountedRows,
    keys: &RowKeys,
    scope: Scope,
) -> PolarsResult<DataFrame> {
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
