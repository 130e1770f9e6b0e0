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
) -> PolarsResult<(DataFrame, DataFrame)> {
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
            col("status")
                .eq(lit(429))
                .fill_null(false)
                .alias("final_429"),
        ])
        .collect()?;
    let (hosts, host_names) = (&keys.hosts.of_row, &keys.hosts.values);
    let sent = sent_times(
        columns.column("ts")?.i64()?,
        columns.column("latency_ms")?.i32()?,
        hosts,
        host_names.len(),
        window.start_us,
    );
    let bucket: Vec<i64> = sent
        .iter()
        .map(|&t| if t < 0 { -1 } else { t / bucket_us })
        .collect();
    let attempts = values(columns.column("attempts")?.i64()?, 0);
    let attempts_429 = values(columns.column("attempts_429")?.i64()?, 0);
    let head = flags(columns.column("head")?.bool()?);
    let final_429 = flags(columns.column("final_429")?.bool()?);
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
    // The host and role pairs whose attempts met a 429: their counts per second.
    let mut throttled: Vec<(u32, u32)> = kept
        .iter()
        .filter(|(_, c)| c.attempts_429 > 0)
        .map(|((h, r, _), _)| (*h, *r))
        .collect();
    throttled.dedup();
    let seconds = per_second(
        &throttled,
        (&sent, window.start_us),
        hosts,
        roles,
        &final_429,
        (host_names, role_names),
    )?;
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
    .map(|windows| (windows, seconds))
}

/// A per-second cap is a count that at most this share of the seconds reaching it
/// exceed ...
pub const CAP_EXCEEDED: f64 = 0.03;
/// ... and that at least this share of the busy seconds reach.
pub const CAP_REACHED: f64 = 0.01;

/// Per host and role of `pairs`, what the server took per second of the clock
/// (`host_role_summary`'s per-second columns; `sent` is since `start_us`): each row's
/// last attempt counted in the second it reached the server ([`sent_times`]) unless it
/// was answered 429 (retried attempts, whose times no row gives, are left out).
/// `busy_seconds` (seconds with an attempt taken), `accepted_per_busy_second` (their
/// mean), `max_per_second`, and the seconds' cap: `second_cap`, the smallest count that
/// at most [`CAP_EXCEEDED`] of the seconds reaching it exceed among those at least
/// [`CAP_REACHED`] of the busy seconds reach (null without one), with `seconds_at_cap`
/// (seconds reaching it) and `seconds_over_cap`. A
/// quota per second holds every second at or under it, where an uncapped rate spreads
/// its seconds over a tail. Sorted keys, not a map of seconds: the memory is a word per
/// row of those pairs, and no count from the data sizes a table (the counts' histogram
/// holds the distinct counts only).
fn per_second(
    pairs: &[(u32, u32)],
    (sent, start_us): (&[i64], i64),
    hosts: &[u32],
    roles: &[u32],
    final_429: &[bool],
    (host_names, role_names): (&[Option<String>], &[Option<String>]),
) -> PolarsResult<DataFrame> {
    let index: PlHashMap<(u32, u32), u64> = pairs
        .iter()
        .enumerate()
        .map(|(i, p)| (*p, i as u64))
        .collect();
    let mut keys: Vec<u64> = Vec::new();
    if !index.is_empty() {
        for i in 0..sent.len() {
            if sent[i] < 0 || final_429[i] {
                continue;
            }
            if let Some(&p) = index.get(&(hosts[i], roles[i])) {
                // Whole seconds of the clock (a server counts those, or any second: the
                // window's start is no second's), from the first one of the window.
                let second = start_us
                    .saturating_add(sent[i])
                    .div_euclid(US_PER_S)
                    .saturating_sub(start_us.div_euclid(US_PER_S));
                let second = u64::try_from(second).unwrap_or(0).min(u64::from(u32::MAX));
                keys.push(p << 32 | second);
            }
        }
    }
    keys.sort_unstable();
    // Per pair, the histogram of its seconds' counts.
    let mut hist: Vec<std::collections::BTreeMap<u64, u64>> = vec![Default::default(); pairs.len()];
    let mut at = 0;
    while at < keys.len() {
        let run = keys[at..].partition_point(|&k| k == keys[at]);
        *hist[(keys[at] >> 32) as usize]
            .entry(run as u64)
            .or_default() += 1;
        at += run;
    }
    drop(keys);
    let mut out: Vec<[Option<i64>; 5]> = Vec::with_capacity(pairs.len());
    let mut means: Vec<Option<f64>> = Vec::with_capacity(pairs.len());
    for h in &hist {
        let busy: u64 = h.values().sum();
        let taken: u64 = h.iter().map(|(k, n)| k * n).sum();
        let max = h.keys().next_back().copied();
        // Seconds reaching each count, from the top.
        let mut reaching = 0u64;
        let mut cap = None;
        for (&k, &n) in h.iter().rev() {
            let over = reaching;
            reaching += n;
            if reaching as f64 >= CAP_REACHED * busy as f64
                && over as f64 <= CAP_EXCEEDED * reaching as f64
            {
                cap = Some((k, reaching, over));
            }
        }
        let int = |v: u64| Some(i64::try_from(v).unwrap_or(i64::MAX));
        out.push([
            int(busy),
            max.and_then(int),
            cap.and_then(|c| int(c.0)),
            cap.and_then(|c| int(c.1)),
            cap.and_then(|c| int(c.2)),
        ]);
        means.push((busy > 0).then(|| taken as f64 / busy as f64));
    }
    let col_of = |j: usize| out.iter().map(|v| v[j]).collect::<Vec<Option<i64>>>();
    df!(
        "host" => pairs.iter().map(|(h, _)| host_names[*h as usize].as_deref()).collect::<Vec<_>>(),
        "role" => pairs.iter().map(|(_, r)| role_names[*r as usize].as_deref()).collect::<Vec<_>>(),
        "busy_seconds" => col_of(0),
        "accepted_per_busy_second" => means,
        "max_per_second" => col_of(1),
        "second_cap" => col_of(2),
        "seconds_at_cap" => col_of(3),
        "seconds_over_cap" => col_of(4),
    )
}

/// Each network row's time since `start_us` when its last attempt reached the server,
/// as a quota counts it (-1: not a network row, no time, or before the window). A row is
/// written when its request ends (its time, `ts`): a request that was not retried
/// reached the server its latency earlier (`latency_ms`), a retried one the host's mean
/// latency of those.
fn sent_times(
    ts: &Int64Chunked,
    latency_ms: &Int32Chunked,
    hosts: &[u32],
    n_hosts: usize,
    start_us: i64,
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
            if since < 0 { -1 } else { since }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_counts_when_its_last_attempt_reached_the_server() {
        // A request that took 0.8 s ended at 60.5 s (sent at 59.7 s); a retried one
        // ending at 60.2 s took the host's mean latency (of 0.8, 0.1 and 0.5 s: 59.733
        // s); one at 120.3 s of 0.1 s was sent at 120.2 s. Host 1 has no latency: its
        // retried row keeps its time. A row without a time, or sent before the window,
        // has none.
        let s = |v: f64| Some((v * 1e6) as i64);
        let ts = Int64Chunked::from_iter([s(60.5), s(60.2), s(120.3), s(61.0), None, s(0.1)]);
        let latency = Int32Chunked::from_iter([Some(800), None, Some(100), None, None, Some(500)]);
        let hosts = [0, 0, 0, 1, 0, 0];
        let t = sent_times(&ts, &latency, &hosts, 2, 0);
        assert_eq!(t, [59_700_000, 59_733_334, 120_200_000, 61_000_000, -1, -1]);
    }

    #[test]
    fn a_quota_per_second_caps_every_second_where_a_rate_spreads_a_tail() {
        // Pair 0 (host 0, role 0): 100 seconds of 1, 60 of 2 and 40 of 3 attempts
        // taken, none above: a cap at 3. Pair 1: counts 1 to 7, each count's seconds
        // exceeded by more than 3% of those reaching it (7, the top, is reached by
        // fewer than 1% of the seconds): no cap. A 429 row is not taken; a row outside
        // the pairs is not counted.
        let (mut sent, mut hosts, mut roles, mut f429) = (vec![], vec![], vec![], vec![]);
        // A clock second's attempts at a tenth of a second apart from 0.1 s into it, as
        // times since the window's start, 0.4 s into the clock's second 0 (its seconds
        // would split a clock second's attempts).
        let mut add = |pair: u32, second: i64, n: usize| {
            for j in 0..n as i64 {
                sent.push((second + 1) * 1_000_000 + 100_000 * (j + 1) - 400_000);
                hosts.push(pair);
                roles.push(0u32);
                f429.push(false);
            }
        };
        let mut second = 0;
        for (count, seconds) in [(1, 100), (2, 60), (3, 40)] {
            for _ in 0..seconds {
                add(0, second, count);
                second += 1;
            }
        }
        for (count, seconds) in [(1, 50), (2, 40), (3, 30), (4, 20), (5, 10), (6, 5), (7, 1)] {
            for _ in 0..seconds {
                add(1, second, count);
                second += 1;
            }
        }
        add(2, 0, 9);
        // A 429 in pair 0's first second: it was not taken.
        sent.push(1_000_000 + 50_000 - 400_000);
        hosts.push(0);
        roles.push(0);
        f429.push(true);
        let names = [
            Some("a".to_owned()),
            Some("b".to_owned()),
            Some("c".to_owned()),
        ];
        let role = [Some("metadata".to_owned())];
        let df = per_second(
            &[(0, 0), (1, 0)],
            (&sent, 400_000),
            &hosts,
            &roles,
            &f429,
            (&names, &role),
        )
        .unwrap();
        let int = |c: &str| {
            df.column(c)
                .unwrap()
                .i64()
                .unwrap()
                .iter()
                .collect::<Vec<_>>()
        };
        assert_eq!(int("busy_seconds"), [Some(200), Some(156)]);
        assert_eq!(int("max_per_second"), [Some(3), Some(7)]);
        assert_eq!(int("second_cap"), [Some(3), None]);
        assert_eq!(int("seconds_at_cap"), [Some(40), None]);
        assert_eq!(int("seconds_over_cap"), [Some(0), None]);
        let mean = df
            .column("accepted_per_busy_second")
            .unwrap()
            .f64()
            .unwrap()
            .get(0);
        assert_eq!(mean, Some((100.0 + 120.0 + 120.0) / 200.0));
    }
}
