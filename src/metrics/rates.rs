//! Rate windows: requests accepted and throttled per host, role and window, the
//! evidence the rate advice reads.

use polars::prelude::*;

use super::AnalyzeOptions;
use super::US_PER_S;
use super::Window;
use super::keys::RowKeys;
use super::keys::flags;
use super::keys::values;

/// The first and last bucket of each host, role and rate limiter.
pub(super) type Spans = PlHashMap<(u32, u32, u32), (usize, usize)>;

/// Per host, role and bucket with network calls: `requests` (network rows: the load the
/// crawler offered), `attempts` (retried ones included), `attempts_429`,
/// `attempts_head` (those of HEAD requests, which skip the crawler's limiter unless
/// `count_head`, while a server's quota counts them), and the rate
/// limiters running then: `processes` (crawler processes, source and run id, whose calls to the
/// host and role span the bucket: one limiter each under the `memory` backend) and
/// `machines` (the same by source: one each under `multiprocess` / `sqlite`). Buckets
/// without calls are left out.
pub(super) fn rate_windows(
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
                .then(col("ts").cast(DataType::Int64))
                .otherwise(lit(NULL).cast(DataType::Int64))
                .alias("ts"),
            col("latency_ms"),
            col("attempts").cast(DataType::Int64),
            col("attempts_429").cast(DataType::Int64),
            col("method").eq(lit("HEAD")).fill_null(false).alias("head"),
        ])
        .collect()?;
    let (hosts, host_names) = (&keys.hosts.of_row, &keys.hosts.values);
    let bucket = sent_buckets(
        columns.column("ts")?.i64()?,
        columns.column("latency_ms")?.i32()?,
        hosts,
        host_names.len(),
        window.start_us,
        bucket_us,
    );
    let attempts = values(columns.column("attempts")?.i64()?, 0);
    let attempts_429 = values(columns.column("attempts_429")?.i64()?, 0);
    let head = flags(columns.column("head")?.bool()?);
    drop(columns);
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

/// Each network row's bucket by when its last attempt reached the server, as a quota
/// counts it (-1: not a network row, or no time). A row is written when its request
/// ends (its time, `ts`): a request that was not retried reached the server its latency
/// earlier (`latency_ms`), a retried one the host's mean latency of those. Buckets
/// before the window's start are -1.
fn sent_buckets(
    ts: &Int64Chunked,
    latency_ms: &Int32Chunked,
    hosts: &[u32],
    n_hosts: usize,
    start_us: i64,
    bucket_us: i64,
) -> Vec<i64> {
    // Per host (codes index the host names): the latencies' sum and count.
    let mut sums = vec![(0i64, 0i64); n_hosts];
    for (h, l) in hosts.iter().zip(latency_ms.iter()) {
        if let (Some(l), Some(s)) = (l, sums.get_mut(*h as usize)) {
            *s = (s.0 + i64::from(l), s.1 + 1);
        }
    }
    let mean_us: Vec<i64> = sums
        .iter()
        .map(|&(sum, n)| if n > 0 { sum * 1_000 / n } else { 0 })
        .collect();
    ts.iter()
        .zip(latency_ms.iter())
        .zip(hosts)
        .map(|((t, l), h)| {
            let Some(t) = t else { return -1 };
            let lag = l.map_or_else(
                || mean_us.get(*h as usize).copied().unwrap_or(0),
                |l| i64::from(l) * 1_000,
            );
            let since = t.saturating_sub(lag).saturating_sub(start_us);
            if since < 0 { -1 } else { since / bucket_us }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_counts_in_the_bucket_its_last_attempt_reached_the_server() {
        // Buckets of 60 s from 0. Host 0: a request that took 0.8 s ended at 60.5 s (sent
        // in bucket 0); a retried one ending at 60.2 s took the host's mean latency (of
        // 0.8, 0.1 and 0.5 s: bucket 0); one at 120.3 s of 0.1 s stays in bucket 2.
        // Host 1 has no latency: its retried row keeps its time. A row without a time,
        // or sent before the window, has none.
        let s = |v: f64| Some((v * 1e6) as i64);
        let ts = Int64Chunked::from_iter([s(60.5), s(60.2), s(120.3), s(61.0), None, s(0.1)]);
        let latency = Int32Chunked::from_iter([Some(800), None, Some(100), None, None, Some(500)]);
        let hosts = [0, 0, 0, 1, 0, 0];
        let b = sent_buckets(&ts, &latency, &hosts, 2, 0, 60_000_000);
        assert_eq!(b, [0, 0, 2, 1, -1, -1]);
    }
}
