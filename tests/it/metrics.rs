//! Metrics engine: golden cases from SQL text, the simulator's ground truth reproduced
//! exactly, and burst run lengths checked against a naive loop (property test).

use crate::common;

use std::collections::BTreeMap;

use breaker_advisor::config::BreakerConfig;
use breaker_advisor::crawler::CrawlerModel;
use breaker_advisor::metrics::stats::{BurstStats, nearest_rank};
use breaker_advisor::metrics::{AnalyzeOptions, Metrics, analyze, bursts, classify};
use breaker_advisor::simulate::Variant;
use breaker_advisor::telemetry::parquet::scan_table;
use breaker_advisor::telemetry::schema::{BREAKER_OUTCOMES, BREAKER_TRANSITIONS, HTTP_EVENTS};
use breaker_advisor::telemetry::{ExportOptions, export};
use common::*;
use polars::prelude::*;
use proptest::prelude::*;

/// 2025-11-26T10:00:00Z
const T0: f64 = 1_764_151_200.0;

fn export_and_analyze(
    db: &std::path::Path,
    dir: &std::path::Path,
    opts: &AnalyzeOptions,
) -> Metrics {
    export_and_analyze_all(&[db.to_owned()], dir, opts)
}

fn export_and_analyze_all(
    dbs: &[std::path::PathBuf],
    dir: &std::path::Path,
    opts: &AnalyzeOptions,
) -> Metrics {
    let out = dir.join("ds");
    let mut eo = ExportOptions::new(&out);
    eo.progress = false;
    export(dbs, &eo).unwrap();
    analyze(
        scan_table(&out, &HTTP_EVENTS).unwrap(),
        scan_table(&out, &BREAKER_TRANSITIONS).unwrap(),
        scan_table(&out, &BREAKER_OUTCOMES).unwrap(),
        &BreakerConfig::default(),
        opts,
    )
    .unwrap()
}

/// A row as (seconds after T0, host, role, status, from_cache, error).
type Row<'a> = (f64, &'a str, &'a str, Option<i64>, i64, Option<&'a str>);

fn telemetry_sql(rows: &[Row<'_>]) -> String {
    let mut sql = String::from(
        "CREATE TABLE http_events (id INTEGER PRIMARY KEY AUTOINCREMENT, run_id TEXT NOT NULL, ts REAL NOT NULL,
           host TEXT NOT NULL, role TEXT NOT NULL, method TEXT NOT NULL, status INTEGER, url_hash TEXT NOT NULL,
           from_cache INTEGER, retry_after_s INTEGER, breaker_state TEXT, error TEXT);\n",
    );
    for (dt, host, role, status, cache, error) in rows {
        sql.push_str(&format!(
            "INSERT INTO http_events (run_id, ts, host, role, method, status, url_hash, from_cache, error) VALUES ('r', {}, '{host}', '{role}', 'GET', {}, '0000000000000000', {cache}, {});\n",
            T0 + dt,
            status.map_or("NULL".into(), |s| s.to_string()),
            error.map_or("NULL".into(), |e| format!("'{e}'")),
        ));
    }
    sql
}

/// A burst as (length, dominant status, metadata, landing, artifact calls, at start, at end).
type BurstRow = (i64, String, i64, i64, i64, bool, bool);

fn bursts_of(m: &Metrics, host: &str) -> Vec<BurstRow> {
    let b = m
        .bursts
        .clone()
        .lazy()
        .filter(col("host").eq(lit(host)))
        .collect()
        .unwrap();
    let len = col_i64(&b, "length");
    let dom = col_str(&b, "dominant_status");
    let (md, la, ar) = (
        col_i64(&b, "metadata_calls"),
        col_i64(&b, "landing_calls"),
        col_i64(&b, "artifact_calls"),
    );
    let (s, e) = (
        col_bool(&b, "at_window_start"),
        col_bool(&b, "at_window_end"),
    );
    (0..b.height())
        .map(|i| {
            (
                len[i].unwrap(),
                dom[i].clone().unwrap(),
                md[i].unwrap(),
                la[i].unwrap(),
                ar[i].unwrap(),
                s[i].unwrap(),
                e[i].unwrap(),
            )
        })
        .collect()
}

#[test]
fn golden_bursts() {
    let tmp = tempfile::tempdir().unwrap();
    let t = |s: f64| s;
    let rows = [
        // calm.example: no failures at all.
        (t(0.0), "calm.example", "metadata", Some(200), 0, None),
        (t(10.0), "calm.example", "landing", Some(404), 0, None),
        // outage.example: an outage with interleaved roles, as the documented crawler
        // counts it: each failed row is recorded twice, the cache hit inside is a success
        // that ends a burst, the timeout (NULL status) is not counted at all.
        (t(0.0), "outage.example", "metadata", Some(200), 0, None),
        (t(1.0), "outage.example", "metadata", Some(503), 0, None),
        (t(2.0), "outage.example", "landing", Some(503), 0, None),
        (t(3.0), "outage.example", "metadata", Some(200), 1, None),
        (
            t(4.0),
            "outage.example",
            "artifact",
            None,
            0,
            Some("ReadTimeout"),
        ),
        (t(5.0), "outage.example", "metadata", Some(502), 0, None),
        (t(6.0), "outage.example", "metadata", Some(503), 0, None),
        (t(7.0), "outage.example", "landing", Some(200), 0, None),
        // neutral.example: a neutral status breaks a burst; equal timestamps keep id order.
        (t(0.0), "neutral.example", "metadata", Some(500), 0, None),
        (t(0.0), "neutral.example", "metadata", Some(500), 0, None),
        (t(0.0), "neutral.example", "metadata", Some(404), 0, None),
        (t(0.0), "neutral.example", "metadata", Some(429), 0, None),
        (t(1.0), "neutral.example", "metadata", Some(200), 0, None),
        // edge.example: a burst cut by the window start (the first row is before it) and
        // one still running at the window end.
        (t(-10.0), "edge.example", "metadata", Some(503), 0, None),
        (t(20.0), "edge.example", "metadata", Some(503), 0, None),
        (t(21.0), "edge.example", "metadata", Some(503), 0, None),
        (t(22.0), "edge.example", "metadata", Some(200), 0, None),
        (t(30.0), "edge.example", "metadata", Some(504), 0, None),
    ];
    let db = sqlite_from_sql(&tmp.path().join("t.sqlite"), &telemetry_sql(&rows));
    let opts = AnalyzeOptions {
        window_s: 40,
        now_us: Some(((T0 + 31.0) * 1e6) as i64),
        ..AnalyzeOptions::default()
    };
    let m = export_and_analyze(&db, tmp.path(), &opts);
    assert_eq!(m.window.start_us, ((T0 - 9.0) * 1e6) as i64);

    assert!(bursts_of(&m, "calm.example").is_empty());
    assert_eq!(
        bursts_of(&m, "outage.example"),
        [
            (4, "503".to_string(), 1, 1, 0, false, false),
            (4, "502".to_string(), 2, 0, 0, false, false)
        ]
    );
    assert_eq!(
        bursts_of(&m, "neutral.example"),
        [
            (4, "500".to_string(), 2, 0, 0, true, false),
            (2, "429".to_string(), 1, 0, 0, false, false)
        ]
    );
    assert_eq!(
        bursts_of(&m, "edge.example"),
        [
            (4, "503".to_string(), 2, 0, 0, true, false),
            (2, "504".to_string(), 1, 0, 0, false, true)
        ]
    );

    // The summary: counts, ratios with Wilson intervals, burst quantiles, zero not NULL.
    let s = m
        .host_summary
        .clone()
        .lazy()
        .filter(col("host").eq(lit("outage.example")))
        .collect()
        .unwrap();
    let get = |c: &str| col_i64(&s, c)[0];
    assert_eq!(get("calls_total"), Some(8));
    assert_eq!(get("cache_hits"), Some(1));
    assert_eq!(get("calls_net"), Some(7));
    assert_eq!(get("e5xx"), Some(4));
    assert_eq!(get("e503"), Some(3));
    assert_eq!(get("timeouts"), Some(1));
    assert_eq!(
        get("failures"),
        Some(4),
        "a timeout is not a breaker failure"
    );
    assert_eq!(
        get("breaker_failures"),
        Some(8),
        "each failed row counted twice"
    );
    assert_eq!(get("attempts"), Some(7));
    assert_eq!(get("bursts"), Some(2));
    assert_eq!(get("burst_max"), Some(4));
    assert_eq!(get("opens"), Some(0));
    let ratio = s
        .column("failures_ratio")
        .unwrap()
        .f64()
        .unwrap()
        .get(0)
        .unwrap();
    let lo = s
        .column("failures_lo")
        .unwrap()
        .f64()
        .unwrap()
        .get(0)
        .unwrap();
    let hi = s
        .column("failures_hi")
        .unwrap()
        .f64()
        .unwrap()
        .get(0)
        .unwrap();
    assert!((ratio - 4.0 / 7.0).abs() < 1e-12);
    // Wilson 95% for 4 of 7: [0.2505, 0.8418].
    assert!(
        (lo - 0.250_46).abs() < 1e-4 && (hi - 0.841_78).abs() < 1e-4,
        "{lo} {hi}"
    );

    let roles = m
        .host_role_summary
        .clone()
        .lazy()
        .filter(col("host").eq(lit("outage.example")))
        .collect()
        .unwrap();
    assert_eq!(
        col_str(&roles, "role"),
        ["artifact", "landing", "metadata"].map(|r| Some(r.to_string()))
    );
    assert_eq!(col_i64(&roles, "failures"), [Some(0), Some(1), Some(3)]);
}

#[test]
fn timeseries_keeps_empty_buckets_without_reading_them_as_healthy() {
    let tmp = tempfile::tempdir().unwrap();
    let mut rows = Vec::new();
    // Minute 0: 10 calls, 5 failures. Minutes 1-3: nothing. Minute 4: 10 calls, 5 failures.
    for minute in [0.0, 4.0] {
        for i in 0..10 {
            let status = if i % 2 == 0 { Some(503) } else { Some(200) };
            rows.push((
                minute * 60.0 + i as f64,
                "a.example",
                "metadata",
                status,
                0,
                None,
            ));
        }
    }
    let db = sqlite_from_sql(&tmp.path().join("t.sqlite"), &telemetry_sql(&rows));
    let opts = AnalyzeOptions {
        window_s: 300,
        now_us: Some(((T0 + 300.0) * 1e6) as i64),
        bucket_s: 60,
        half_life_buckets: 1.0,
        ..AnalyzeOptions::default()
    };
    let m = export_and_analyze(&db, tmp.path(), &opts);
    let ts = &m.host_timeseries;
    assert_eq!(ts.height(), 5, "one row per bucket, empty ones included");
    assert_eq!(
        col_i64(ts, "calls_net"),
        [Some(10), Some(0), Some(0), Some(0), Some(10)]
    );
    let raw: Vec<Option<f64>> = ts
        .column("failures_ratio")
        .unwrap()
        .f64()
        .unwrap()
        .iter()
        .collect();
    assert_eq!(raw, [Some(0.5), None, None, None, Some(0.5)]);
    let ewma: Vec<Option<f64>> = ts
        .column("failures_ewma")
        .unwrap()
        .f64()
        .unwrap()
        .iter()
        .collect();
    for v in ewma {
        assert!(
            (v.unwrap() - 0.5).abs() < 1e-12,
            "an empty bucket moved the EWMA ratio: {v:?}"
        );
    }
}

#[test]
fn a_host_with_too_little_data_gets_a_summary_row_and_no_time_series() {
    let tmp = tempfile::tempdir().unwrap();
    // a.example: 20 calls in the window; b.example: 4.
    let mut rows = Vec::new();
    for i in 0..20 {
        rows.push((i as f64 * 10.0, "a.example", "metadata", Some(200), 0, None));
    }
    for i in 0..4 {
        rows.push((i as f64 * 10.0, "b.example", "metadata", Some(503), 0, None));
    }
    let db = sqlite_from_sql(&tmp.path().join("t.sqlite"), &telemetry_sql(&rows));
    let opts = AnalyzeOptions {
        window_s: 300,
        now_us: Some(((T0 + 300.0) * 1e6) as i64),
        bucket_s: 60,
        min_series_calls: 10,
        ..AnalyzeOptions::default()
    };
    let m = export_and_analyze(&db, tmp.path(), &opts);
    assert_eq!(
        col_str(&m.host_summary, "host"),
        ["a.example", "b.example"].map(|h| Some(h.to_string()))
    );
    let series: std::collections::BTreeSet<Option<String>> =
        col_str(&m.host_timeseries, "host").into_iter().collect();
    assert_eq!(series, [Some("a.example".to_string())].into());
    assert_eq!(m.host_timeseries.height(), 5);
}

#[test]
fn simulator_ground_truth_is_reproduced_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    for variant in [Variant::Schema, Variant::Sink] {
        let dir = tmp.path().join(format!("{variant:?}"));
        let dbs = sim_fleet(
            &dir.join("sim"),
            breaker_advisor::simulate::SimOptions {
                variant,
                machines: 2,
                ..breaker_advisor::simulate::SimOptions::new(&dir, 24.0, 12, 0.2, 13)
            },
        );
        let truth: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("sim/ground_truth.json")).unwrap())
                .unwrap();
        let end_s = truth["end_s"].as_i64().unwrap();
        let opts = AnalyzeOptions {
            window_s: 24 * 3600,
            now_us: Some(end_s * 1_000_000),
            ..AnalyzeOptions::default()
        };
        let m = export_and_analyze_all(&dbs, &dir, &opts);
        let s = &m.host_summary;
        let hosts = col_str(s, "host");
        let by_host: BTreeMap<String, usize> = hosts
            .iter()
            .enumerate()
            .map(|(i, h)| (h.clone().unwrap(), i))
            .collect();
        let opens = col_i64(s, "opens");
        let (bh, brun, blen, bfrom) = (
            col_str(&m.bursts, "host"),
            col_str(&m.bursts, "run_id"),
            col_i64(&m.bursts, "length"),
            col_str(&m.bursts, "counted_from"),
        );
        for h in truth["hosts"].as_array().unwrap() {
            let name = h["host"].as_str().unwrap();
            let i = by_host[name];
            // Opens come from the recorded transitions: exact in both variants.
            assert_eq!(opens[i], h["opens"].as_i64(), "{variant:?} {name} opens");
            // The rate windows hold every request and 429 attempt, and see both
            // machines' processes running (rows without a run id belong to their
            // machine's run).
            let rw = &m.rate_windows;
            let of = |c: &str| -> Vec<i64> {
                let hs = col_str(rw, "host");
                col_i64(rw, c)
                    .into_iter()
                    .zip(hs)
                    .filter(|(_, hh)| hh.as_deref() == Some(name))
                    .map(|(v, _)| v.unwrap())
                    .collect()
            };
            assert_eq!(
                of("requests").iter().sum::<i64>(),
                h["network_rows"].as_i64().unwrap(),
                "{variant:?} {name} requests"
            );
            // (Retried attempts' statuses are estimated from the rows, as in
            // host_summary, whose totals they add up to.)
            assert_eq!(
                Some(of("attempts_429").iter().sum::<i64>()),
                col_i64(s, "attempts_429")[i],
                "{variant:?} {name} 429 attempts"
            );
            let mut procs = of("processes");
            procs.sort_unstable();
            assert_eq!(procs[procs.len() / 2], 2, "{variant:?} {name} processes");
            if variant != Variant::Sink {
                continue;
            }
            // With the listener's events, the bursts of each breaker are exact.
            for inst in h["instances"].as_array().unwrap() {
                let run_id = inst["run_id"].as_str().unwrap();
                let mut got: Vec<u64> = (0..bh.len())
                    .filter(|&k| {
                        bh[k].as_deref() == Some(name) && brun[k].as_deref() == Some(run_id)
                    })
                    .map(|k| {
                        assert_eq!(bfrom[k].as_deref(), Some("events"));
                        blen[k].unwrap() as u64
                    })
                    .collect();
                got.sort_unstable();
                let stats = BurstStats::from_sorted(&got);
                let b = &inst["bursts"];
                assert_eq!(
                    stats.bursts,
                    b["bursts"].as_u64().unwrap(),
                    "{name} {run_id}"
                );
                assert_eq!(stats.max, b["max"].as_u64().unwrap(), "{name} {run_id}");
                if !got.is_empty() {
                    assert_eq!(stats.q95, b["q95"].as_u64().unwrap(), "{name} {run_id}");
                    assert_eq!(stats.q50, b["q50"].as_u64().unwrap(), "{name} {run_id}");
                }
            }
        }
    }
}

/// A naive loop over the same rows: the reference for the Polars burst computation.
/// A generated row: host, time (s), status (None: the request raised), served from
/// the cache, retries before the final attempt, crawler process.
type GenRow = (u8, i64, Option<i64>, bool, i64, u8);

/// Bursts as the documented crawler's breakers count them, one breaker per host and
/// process: a row's retries are failures (every retryable status is a failure status by
/// default), its final failure is recorded twice, a request that raised is not counted
/// (nor its retries: the same exception), a cache hit is a success.
fn naive_bursts(rows: &[GenRow]) -> BTreeMap<String, Vec<u64>> {
    let failure = [429, 500, 502, 503, 504, 408];
    let mut sorted: Vec<_> = rows.iter().enumerate().collect();
    sorted.sort_by_key(|(i, (h, t, _, _, _, p))| (*h, *p, *t, *i));
    let mut out: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut run: BTreeMap<(u8, u8), u64> = BTreeMap::new();
    let close = |out: &mut BTreeMap<String, Vec<u64>>, h: u8, r: &mut u64| {
        if *r > 0 {
            out.entry(format!("h{h}.example")).or_default().push(*r);
            *r = 0;
        }
    };
    for (_, (h, _, status, cached, retries, p)) in sorted {
        let r = run.entry((*h, *p)).or_default();
        if *cached {
            close(&mut out, *h, r);
            continue;
        }
        match status {
            // It retried the same exception: nothing the breaker counts.
            None => {}
            Some(s) if failure.contains(s) => *r += *retries as u64 + 2,
            Some(_) => {
                *r += *retries as u64;
                close(&mut out, *h, r);
            }
        }
    }
    for ((h, _), mut r) in run {
        close(&mut out, h, &mut r);
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    #[test]
    fn bursts_equal_a_naive_loop(
        rows in prop::collection::vec(
            (
                0u8..3,
                0i64..40,
                prop::option::weighted(0.9, prop::sample::select(vec![200i64, 404, 429, 500, 503, 304])),
                prop::bool::weighted(0.1),
                prop::sample::select(vec![0i64, 0, 0, 1, 3]),
                0u8..2,
            ),
            0..200,
        )
    ) {
        let n = rows.len();
        let df = df!(
            "host" => rows.iter().map(|r| format!("h{}.example", r.0)).collect::<Vec<_>>(),
            "ts" => rows.iter().map(|r| r.1 * 1_000_000).collect::<Vec<_>>(),
            "source" => vec!["s"; n],
            "run_id" => rows.iter().map(|r| format!("p{}", r.5)).collect::<Vec<_>>(),
            "id" => (0..n as i64).collect::<Vec<_>>(),
            "role" => vec!["metadata"; n],
            "status" => rows.iter().map(|r| r.2).collect::<Vec<_>>(),
            "from_cache" => rows.iter().map(|r| r.3).collect::<Vec<_>>(),
            "retry_count" => rows.iter().map(|r| r.4).collect::<Vec<_>>(),
            "breaker_recorded" => vec![None::<&str>; n],
            "error" => rows.iter().map(|r| r.2.is_none().then_some("ReadTimeout")).collect::<Vec<_>>(),
        ).unwrap();
        let df = df.lazy().with_column(col("ts").cast(DataType::Datetime(TimeUnit::Microseconds, None)));
        let got = bursts(
            classify(df, &BreakerConfig::default(), &CrawlerModel::default()),
            &AnalyzeOptions::default(),
        ).unwrap();
        let mut got_by_host: BTreeMap<String, Vec<u64>> = BTreeMap::new();
        for (h, l) in col_str(&got, "host").into_iter().zip(col_i64(&got, "length")) {
            got_by_host.entry(h.unwrap()).or_default().push(l.unwrap() as u64);
        }
        let mut want = naive_bursts(&rows);
        // The table lists a host's bursts by instance, then time; compare as multisets.
        for v in got_by_host.values_mut().chain(want.values_mut()) {
            v.sort_unstable();
        }
        prop_assert_eq!(&got_by_host, &want);
        for lengths in want.values() {
            let s = BurstStats::from_sorted(lengths);
            prop_assert_eq!(s.q95, nearest_rank(lengths, 0.95));
            prop_assert_eq!(s.max, *lengths.last().unwrap());
        }
    }
}

/// Runs every file in queries/ in `engine` (tests/python/run_queries.py) over the
/// exported dataset in `dir/ds`, for `m`'s window.
fn run_queries(engine: &str, dir: &std::path::Path, m: &Metrics) -> serde_json::Value {
    let fmt = |us: i64| {
        chrono::DateTime::from_timestamp_micros(us)
            .unwrap()
            .format("%Y-%m-%d %H:%M:%S%.6f")
            .to_string()
    };
    let output = std::process::Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/python/run_queries.py"
        ))
        .arg(engine)
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/queries"))
        .arg(dir.join("ds"))
        .arg(fmt(m.window.start_us))
        .arg(fmt(m.window.end_us))
        .output()
        .expect("python3");
    assert!(
        output.status.success(),
        "{engine}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

/// A table's rows as JSON objects, for comparison with a query's: the named columns,
/// timestamps as 'YYYY-MM-DD HH:MM:SS.ffffff'.
fn json_rows(df: &DataFrame, columns: &[(&str, &str)]) -> Vec<serde_json::Value> {
    let mut rows = vec![serde_json::Map::new(); df.height()];
    for (ours, theirs) in columns {
        let c = df.column(ours).expect(ours);
        let values: Vec<serde_json::Value> = match c.dtype() {
            DataType::String => col_str(df, ours).into_iter().map(|v| v.into()).collect(),
            DataType::Boolean => col_bool(df, ours).into_iter().map(|v| v.into()).collect(),
            DataType::Datetime(..) => col_ts_us(df, ours)
                .into_iter()
                .map(|v| {
                    chrono::DateTime::from_timestamp_micros(v.unwrap())
                        .unwrap()
                        .format("%Y-%m-%d %H:%M:%S%.6f")
                        .to_string()
                        .into()
                })
                .collect(),
            _ => col_i64(df, ours).into_iter().map(|v| v.into()).collect(),
        };
        for (row, v) in rows.iter_mut().zip(values) {
            row.insert((*theirs).to_owned(), v);
        }
    }
    rows.into_iter().map(serde_json::Value::Object).collect()
}

/// The rows of a query's result, each with only `columns` (the query's names).
fn query_rows(result: &serde_json::Value, columns: &[(&str, &str)]) -> Vec<serde_json::Value> {
    result
        .as_array()
        .unwrap()
        .iter()
        .map(|row| {
            serde_json::Value::Object(
                columns
                    .iter()
                    .map(|(_, c)| ((*c).to_owned(), row[*c].clone()))
                    .collect(),
            )
        })
        .collect()
}

#[test]
fn the_queries_give_the_tool_s_numbers_in_duckdb_and_spark() {
    let tmp = tempfile::tempdir().unwrap();
    // Two machines (two breaker instances per host), retries, outages: every burst rule.
    let dbs = sim_fleet(
        &tmp.path().join("sim"),
        breaker_advisor::simulate::SimOptions {
            machines: 2,
            ..breaker_advisor::simulate::SimOptions::new(tmp.path(), 6.0, 6, 0.3, 21)
        },
    );
    // What the simulator never writes and the rules must handle: calls without a run id
    // (the crawler's sink leaves it NULL now and then: the run-id guess) and calls the
    // breaker blocked (not network calls, not counted).
    for db in &dbs {
        let conn = rusqlite::Connection::open(db).unwrap();
        let ddl: String = conn
            .query_row(
                "SELECT sql FROM sqlite_master WHERE name = 'http_events'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert!(ddl.contains("run_id TEXT NOT NULL"), "{ddl}");
        conn.execute_batch(&format!(
            "ALTER TABLE http_events RENAME TO http_events_sim;
             {};
             INSERT INTO http_events SELECT * FROM http_events_sim;
             DROP TABLE http_events_sim;
             UPDATE http_events SET run_id = NULL WHERE id % 11 = 0;
             UPDATE http_events SET breaker_recorded = 'blocked', status = NULL,
               error = 'CircuitBreakerError', retry_count = 0 WHERE id % 97 = 0;",
            ddl.replace("run_id TEXT NOT NULL", "run_id TEXT")
        ))
        .unwrap();
    }
    let opts = AnalyzeOptions {
        window_s: 4 * 3600,
        // Not on a whole minute: minute k of the window starts at its start plus k minutes.
        now_us: Some((breaker_advisor::simulate::DEFAULT_START_S + 5 * 3600 + 17) * 1_000_000),
        ..AnalyzeOptions::default()
    };
    let m = export_and_analyze_all(&dbs, tmp.path(), &opts);
    assert_eq!(opts.bucket_s, 60, "minute_counts.sql is per minute");
    assert!(
        col_str(&m.bursts, "counted_from")
            .iter()
            .all(|c| c.as_deref() == Some("rows")),
        "bursts.sql reads the calls: the tool's bursts must too"
    );

    let counts: Vec<&str> = vec![
        "calls_total",
        "cache_hits",
        "calls_net",
        "e429",
        "e5xx",
        "e503",
        "timeouts",
        "neutral",
        "failures",
        "half_open_trials",
        "half_open_trial_successes",
        "half_open_trial_failures",
    ];
    let same = |v: &[&'static str]| v.iter().map(|c| (*c, *c)).collect::<Vec<_>>();
    let host_counts = same(&[&["host"][..], &counts].concat());
    let host_role_counts = same(&[&["host", "role"][..], &counts].concat());
    let bursts = [
        ("host", "host"),
        ("source", "source"),
        ("run_id", "run_id"),
        ("start", "start_ts"),
        ("end", "end_ts"),
        ("length", "length"),
        ("dominant_status", "dominant_status"),
        ("metadata_calls", "metadata_calls"),
        ("landing_calls", "landing_calls"),
        ("artifact_calls", "artifact_calls"),
        ("at_window_start", "at_window_start"),
        ("at_window_end", "at_window_end"),
    ];
    let minutes = same(&[
        "host",
        "bucket",
        "calls_net",
        "attempts",
        "e429",
        "e5xx",
        "timeouts",
        "failures",
    ]);
    let sorted_bursts = m
        .bursts
        .sort(
            ["host", "source", "run_id", "start"],
            SortMultipleOptions::default().with_maintain_order(true),
        )
        .unwrap();
    let busy_minutes = m
        .host_timeseries
        .clone()
        .lazy()
        .filter(col("calls_net").gt(lit(0)))
        .collect()
        .unwrap();
    let want = [
        (
            "host_counts",
            json_rows(&m.host_summary, &host_counts),
            &host_counts[..],
        ),
        (
            "host_role_counts",
            json_rows(&m.host_role_summary, &host_role_counts),
            &host_role_counts[..],
        ),
        ("bursts", json_rows(&sorted_bursts, &bursts), &bursts[..]),
        (
            "minute_counts",
            json_rows(&busy_minutes, &minutes),
            &minutes[..],
        ),
    ];
    // What the test needs to mean something: every rule has rows to act on.
    assert!(m.host_summary.height() >= 6);
    assert!(sorted_bursts.height() > 50, "{}", sorted_bursts.height());
    assert!(
        col_i64(&sorted_bursts, "length")
            .iter()
            .any(|l| l.unwrap() > 2)
    );
    let sources: std::collections::BTreeSet<_> =
        col_str(&sorted_bursts, "source").into_iter().collect();
    assert_eq!(sources.len(), 2);
    assert!(busy_minutes.height() > 1000);
    assert!(col_i64(&busy_minutes, "attempts") != col_i64(&busy_minutes, "calls_net"));

    for engine in ["duckdb", "spark"] {
        let got = run_queries(engine, tmp.path(), &m);
        let names: Vec<&str> = got
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        // Every file in queries/ is compared: a new one needs its table here.
        assert_eq!(
            names,
            ["bursts", "host_counts", "host_role_counts", "minute_counts"],
            "{engine}"
        );
        for (query, rows, columns) in &want {
            let theirs = query_rows(&got[*query], columns);
            assert_eq!(theirs.len(), rows.len(), "{engine} {query}: rows");
            for (i, (a, b)) in theirs.iter().zip(rows).enumerate() {
                assert_eq!(a, b, "{engine} {query} row {i}");
            }
        }
    }
}

#[test]
fn the_baseline_says_what_usual_looks_like() {
    let tmp = tempfile::tempdir().unwrap();
    let mut rows = Vec::new();
    // Two hours before the window: 100 calls, 2 failures. The window: 100 calls, 20.
    for i in 0..100 {
        let status = if i < 2 { Some(503) } else { Some(200) };
        rows.push((
            -7200.0 + i as f64 * 60.0,
            "a.example",
            "metadata",
            status,
            0,
            None,
        ));
        let status = if i < 20 { Some(503) } else { Some(200) };
        rows.push((i as f64 * 30.0, "a.example", "metadata", status, 0, None));
    }
    let db = sqlite_from_sql(&tmp.path().join("t.sqlite"), &telemetry_sql(&rows));
    let opts = AnalyzeOptions {
        window_s: 3600,
        now_us: Some(((T0 + 3600.0) * 1e6) as i64),
        baseline_s: Some(7 * 86_400),
        ..AnalyzeOptions::default()
    };
    let m = export_and_analyze(&db, tmp.path(), &opts);
    let s = &m.host_summary;
    let f = |c: &str| {
        s.column(c)
            .unwrap()
            .cast(&DataType::Float64)
            .unwrap()
            .f64()
            .unwrap()
            .get(0)
    };
    assert_eq!(f("failures_ratio"), Some(0.2));
    assert_eq!(f("baseline_failures_ratio"), Some(0.02));
    assert_eq!(f("baseline_calls_net"), Some(100.0));
    // The data starts two hours before the window, not seven days.
    assert!(
        (f("baseline_hours").unwrap() - 2.0).abs() < 1e-9,
        "{:?}",
        f("baseline_hours")
    );
    assert!(
        f("failures_lo").unwrap() > f("baseline_failures_hi").unwrap(),
        "clearly worse than usual"
    );
}

/// Hosts computed in groups (here one host each, each read from the dataset by its
/// host) give the tables of the whole window, row for row.
#[test]
fn host_groups_give_the_same_tables_as_the_whole_window() {
    let tmp = tempfile::tempdir().unwrap();
    let db = sim(tmp.path(), Variant::Sink, 6.0, 5, 1.0, 11);
    let whole = export_and_analyze(&db, &tmp.path().join("whole"), &AnalyzeOptions::default());
    let tables = |m: &Metrics| {
        [
            m.host_summary.clone(),
            m.host_role_summary.clone(),
            m.bursts.clone(),
            m.host_timeseries.clone(),
            m.rate_windows.clone(),
        ]
    };
    assert!(whole.host_summary.height() == 5 && whole.bursts.height() > 0);
    let opts = AnalyzeOptions {
        group_rows: 1,
        ..AnalyzeOptions::default()
    };
    let grouped = export_and_analyze(&db, &tmp.path().join("grouped"), &opts);
    assert_eq!(grouped.window, whole.window);
    for (a, b) in tables(&whole).iter().zip(tables(&grouped).iter()) {
        assert!(a.equals_missing(b), "\n{a}\n{b}");
    }
}
