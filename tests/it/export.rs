//! Export stage: every real telemetry variant to Parquet, row for row; bad files; locks;
//! idempotence; replaced sources; crash safety.

use crate::common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use breaker_advisor::simulate::Variant;
use breaker_advisor::telemetry::parquet::scan_table;
use breaker_advisor::telemetry::{ExportOptions, export};
use common::*;
use polars::prelude::*;
use rusqlite::Connection;

fn opts(out: &Path) -> ExportOptions {
    let mut o = ExportOptions::new(out);
    o.progress = false;
    // Small batches exercise batch boundaries and several row groups per part.
    o.batch_rows = 1_000;
    o
}

#[test]
fn schema_variant_round_trips_row_for_row() {
    let tmp = tempfile::tempdir().unwrap();
    let db = sim(&tmp.path().join("sim"), Variant::Schema, 3.0, 6, 0.5, 11);
    let out = tmp.path().join("ds");
    let summary = export(std::slice::from_ref(&db), &opts(&out)).unwrap();
    assert_eq!(summary.rows_rejected, 0, "{summary:?}");

    let conn = Connection::open(&db).unwrap();
    let mut stmt = conn
        .prepare(
            "SELECT id, ts, host, role, method, status, url_hash, from_cache, revalidated, stale,
                    retry_count, retry_after_s, rate_delay_ms, breaker_state, breaker_recorded,
                    elapsed_ms, error, run_id
             FROM http_events ORDER BY id",
        )
        .unwrap();
    type Row = (
        i64,
        f64,
        String,
        String,
        String,
        Option<i64>,
        String,
        i64,
        i64,
        i64,
        i64,
        Option<i64>,
        i64,
        Option<String>,
        String,
        i64,
        Option<String>,
        String,
    );
    let want: Vec<Row> = stmt
        .query_map([], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
                r.get(6)?,
                r.get(7)?,
                r.get(8)?,
                r.get(9)?,
                r.get(10)?,
                r.get(11)?,
                r.get(12)?,
                r.get(13)?,
                r.get(14)?,
                r.get(15)?,
                r.get(16)?,
                r.get(17)?,
            ))
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert!(want.len() > 10_000, "simulation too small: {}", want.len());

    let df = read_dataset(&out, "http_events");
    assert_eq!(df.height(), want.len());
    let ids = col_i64(&df, "id");
    let ts = col_ts_us(&df, "ts");
    let host = col_str(&df, "host");
    let role = col_str(&df, "role");
    let method = col_str(&df, "method");
    let status = col_i64(&df, "status");
    let url_hash = col_str(&df, "url_hash");
    let from_cache = col_bool(&df, "from_cache");
    let revalidated = col_bool(&df, "revalidated");
    let stale = col_bool(&df, "stale");
    let retry_count = col_i64(&df, "retry_count");
    let retry_after = col_i64(&df, "retry_after_s");
    let rate_delay = col_i64(&df, "rate_delay_ms");
    let state = col_str(&df, "breaker_state");
    let recorded = col_str(&df, "breaker_recorded");
    let elapsed = col_i64(&df, "elapsed_ms");
    let error = col_str(&df, "error");
    let run_id = col_str(&df, "run_id");
    let source = col_str(&df, "source");
    let date = df
        .column("date")
        .unwrap()
        .cast(&DataType::String)
        .unwrap()
        .str()
        .unwrap()
        .iter()
        .map(|v| v.unwrap().to_owned())
        .collect::<Vec<_>>();
    for (i, w) in want.iter().enumerate() {
        assert_eq!(ids[i], Some(w.0), "row {i}");
        assert_eq!(ts[i], Some((w.1 * 1e6).round() as i64), "row {i}");
        assert_eq!(host[i].as_deref(), Some(w.2.as_str()));
        assert_eq!(role[i].as_deref(), Some(w.3.as_str()));
        assert_eq!(method[i].as_deref(), Some(w.4.as_str()));
        assert_eq!(status[i], w.5);
        assert_eq!(url_hash[i].as_deref(), Some(w.6.as_str()));
        assert_eq!(from_cache[i], Some(w.7 == 1));
        assert_eq!(revalidated[i], Some(w.8 == 1));
        assert_eq!(stale[i], Some(w.9 == 1));
        assert_eq!(retry_count[i], Some(w.10));
        assert_eq!(retry_after[i], w.11);
        assert_eq!(rate_delay[i], Some(w.12));
        assert_eq!(state[i], w.13);
        assert_eq!(recorded[i].as_deref(), Some(w.14.as_str()));
        assert_eq!(elapsed[i], Some(w.15));
        assert_eq!(error[i], w.16);
        assert_eq!(run_id[i].as_deref(), Some(w.17.as_str()));
        assert_eq!(source[i].as_deref(), Some(db.to_str().unwrap()));
        let day = chrono::DateTime::from_timestamp_micros(ts[i].unwrap())
            .unwrap()
            .date_naive()
            .to_string();
        assert_eq!(date[i], day, "row {i} is in the wrong date partition");
    }

    // Transitions, row for row.
    let tr = read_dataset(&out, "breaker_transitions");
    let mut stmt = conn
        .prepare("SELECT id, ts, host, old_state, new_state, reset_timeout_s FROM breaker_transitions ORDER BY id")
        .unwrap();
    let want: Vec<(i64, f64, String, String, String, i64)> = stmt
        .query_map([], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
            ))
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert!(!want.is_empty());
    assert_eq!(tr.height(), want.len());
    let (ids, ts, host, old, new, reset) = (
        col_i64(&tr, "id"),
        col_ts_us(&tr, "ts"),
        col_str(&tr, "host"),
        col_str(&tr, "old_state"),
        col_str(&tr, "new_state"),
        col_i64(&tr, "reset_timeout_s"),
    );
    for (i, w) in want.iter().enumerate() {
        assert_eq!(
            (
                ids[i],
                ts[i],
                host[i].clone(),
                old[i].clone(),
                new[i].clone(),
                reset[i]
            ),
            (
                Some(w.0),
                Some((w.1 * 1e6).round() as i64),
                Some(w.2.clone()),
                Some(w.3.clone()),
                Some(w.4.clone()),
                Some(w.5)
            )
        );
    }
}

#[test]
fn sink_variant_is_normalised() {
    let tmp = tempfile::tempdir().unwrap();
    let db = sim(&tmp.path().join("sim"), Variant::Sink, 3.0, 12, 0.3, 5);
    let out = tmp.path().join("ds");
    let summary = export(std::slice::from_ref(&db), &opts(&out)).unwrap();
    assert_eq!(summary.rows_rejected, 0, "{summary:?}");
    let conn = Connection::open(&db).unwrap();
    let df = read_dataset(&out, "http_events");
    assert_eq!(
        df.height() as i64,
        count(&conn, "SELECT count(*) FROM http_events")
    );

    // Hosts: the sink wrote a Unicode IDN host and an upper-case host with a dot.
    let hosts: std::collections::BTreeSet<String> =
        col_str(&df, "host").into_iter().flatten().collect();
    assert!(hosts.contains("xn--mnchen-3ya.example"), "{hosts:?}");
    assert!(hosts.contains("api.crossref.org"));
    assert_eq!(hosts.len(), 12, "{hosts:?}");
    assert!(
        count(
            &conn,
            "SELECT count(*) FROM http_events WHERE host = 'API.CROSSREF.ORG.'"
        ) > 0
    );

    // States were upper case; now canonical. Columns absent in the sink are typed NULLs.
    let states: std::collections::BTreeSet<Option<String>> =
        col_str(&df, "breaker_state").into_iter().collect();
    assert!(
        states
            .iter()
            .flatten()
            .all(|s| ["closed", "open", "half_open"].contains(&s.as_str()))
    );
    assert!(states.contains(&Some("half_open".into())), "{states:?}");
    for (name, dtype) in [
        ("stale", DataType::Boolean),
        ("revalidated", DataType::Boolean),
        ("rate_delay_ms", DataType::Int64),
    ] {
        let c = df.column(name).unwrap();
        assert_eq!(c.dtype(), &dtype, "{name}");
        assert_eq!(c.null_count(), df.height(), "{name}");
    }
    let run_nulls = df.column("run_id").unwrap().null_count() as i64;
    assert_eq!(
        run_nulls,
        count(
            &conn,
            "SELECT count(*) FROM http_events WHERE run_id IS NULL"
        )
    );

    // Transitions come from breaker_events JSON payloads with pybreaker reprs.
    let tr = read_dataset(&out, "breaker_transitions");
    assert_eq!(
        tr.height() as i64,
        count(
            &conn,
            "SELECT count(*) FROM breaker_events WHERE event_type = 'breaker_state_change'"
        )
    );
    assert!(
        count(
            &conn,
            "SELECT count(*) FROM breaker_events WHERE payload LIKE '%pybreaker.Circuit%'"
        ) > 0
    );
    let pairs: std::collections::BTreeSet<(String, String)> = col_str(&tr, "old_state")
        .into_iter()
        .zip(col_str(&tr, "new_state"))
        .map(|(a, b)| (a.unwrap(), b.unwrap()))
        .collect();
    let want: std::collections::BTreeSet<(String, String)> = [
        ("closed", "open"),
        ("open", "half_open"),
        ("half_open", "closed"),
        ("half_open", "open"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(pairs, want);
}

/// Values no crawler means, from servers, clocks and bugs: each bounded on the way in.
const HOSTILE: &str = r#"
CREATE TABLE http_events (
  id INTEGER PRIMARY KEY AUTOINCREMENT, run_id TEXT, ts REAL NOT NULL, host TEXT,
  role TEXT, status INTEGER, retry_count INTEGER, retry_after_s INTEGER,
  rate_delay_ms INTEGER, elapsed_ms INTEGER, error TEXT);
INSERT INTO http_events (run_id, ts, host, role, status, retry_count, retry_after_s, rate_delay_ms, elapsed_ms, error) VALUES
  ('r1', 1764152130.5, 'a.example', 'metadata', 429, 3, 1000000000000, 5, 120, NULL),
  ('r1', 1764152131.5, 'a.example', 'metadata', 429, -2, -30, -1, -7, NULL),
  ('r1', 1764152132.5, 'a.example', 'metadata', 503, 1000000000, 86400, 90000000000, 9000000000000, NULL),
  ('r1', 0, 'a.example', 'metadata', 200, 0, NULL, NULL, NULL, NULL),
  ('r1', 4102444800.0, 'a.example', 'metadata', 200, 0, NULL, NULL, NULL, NULL),
  ('r1', 1764152133.5, 'a.example', 'metadata', 200, 0, NULL, NULL, NULL, NULL);
"#;

#[test]
fn values_no_crawler_means_are_bounded_and_counted() {
    let tmp = tempfile::tempdir().unwrap();
    let db = sqlite_from_sql(&tmp.path().join("hostile.sqlite"), HOSTILE);
    // Rows a crawler bug could write: a host longer than any DNS name, a run id of a
    // megabyte.
    let conn = Connection::open(&db).unwrap();
    conn.execute(
        "INSERT INTO http_events (run_id, ts, host, role, status) VALUES ('r1', 1764152134.5, ?1, 'metadata', 200), (?2, 1764152135.5, 'a.example', 'metadata', 200)",
        ["h".repeat(300), "r".repeat(1 << 20)],
    )
    .unwrap();
    drop(conn);
    let out = tmp.path().join("ds");
    let summary = export(std::slice::from_ref(&db), &opts(&out)).unwrap();
    let http = &summary.sources[0].tables["http_events"];
    let want_rejected: BTreeMap<String, u64> = [
        ("time_outside_1990_2200".to_string(), 1),
        ("invalid_host".to_string(), 1),
    ]
    .into();
    assert_eq!(http.rejected, want_rejected);
    let want: BTreeMap<String, u64> = [
        ("elapsed_ms: above 86400000 ms (a day), clamped", 1),
        ("elapsed_ms: negative, set to NULL", 1),
        ("rate_delay_ms: above 86400000 ms (a day), clamped", 1),
        ("rate_delay_ms: negative, set to NULL", 1),
        ("retry_after_s: above 86400 s (a day), clamped", 1),
        ("retry_after_s: negative, set to NULL", 1),
        ("retry_count: above 100 retries, clamped", 1),
        ("retry_count: negative, set to NULL", 1),
        ("run_id: longer than 256 bytes, cut", 1),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), *v))
    .collect();
    assert_eq!(http.adjusted, want);

    let df = read_dataset(&out, "http_events");
    // The rows in id order: the year-2100 row is kept (the window, not the export,
    // sets it aside), the 1970 one and the long host are not.
    assert_eq!(
        col_i64(&df, "retry_after_s"),
        [Some(86_400), None, Some(86_400), None, None, None]
    );
    assert_eq!(
        col_i64(&df, "retry_count"),
        [Some(3), None, Some(100), Some(0), Some(0), None]
    );
    assert_eq!(
        col_i64(&df, "elapsed_ms"),
        [Some(120), None, Some(86_400_000), None, None, None]
    );
    let run_ids = col_str(&df, "run_id");
    assert_eq!(run_ids[5].as_deref().map(str::len), Some(256));
    // The manifest keeps the counts for the report.
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("_manifest.json")).unwrap()).unwrap();
    let label = db.to_string_lossy().into_owned();
    assert_eq!(
        manifest["sources"][&label]["adjusted"]["http_events"]["retry_after_s: above 86400 s (a day), clamped"],
        1
    );
}

const HANDWRITTEN: &str = r#"
CREATE TABLE http_events (
  id INTEGER PRIMARY KEY AUTOINCREMENT, run_id TEXT, timestamp TEXT NOT NULL,
  host TEXT, role TEXT, status INTEGER, from_cache INTEGER, retry_after_s INTEGER,
  breaker_host_state TEXT, breaker_recorded TEXT, error TEXT);
INSERT INTO http_events (run_id, timestamp, host, role, status, from_cache, retry_after_s, breaker_host_state, breaker_recorded, error) VALUES
  ('r1', '2025-11-26T10:15:30.123456Z', 'Example.COM.', 'metadata', 200, 0, NULL, 'CLOSED', 'success', NULL),
  (NULL, '2025-11-26T23:59:59.999999+00:00', 'münchen.example', 'landing', 429, 0, 30, 'HalfOpen', 'failure', NULL),
  ('r1', '2025-11-27 00:00:00', 'example.com', 'artifact', NULL, 0, NULL, '<pybreaker.CircuitOpenState object at 0x7f3a2c1d0e50>', 'failure', 'ReadTimeout'),
  ('r1', '2025-11-26T10:16:00Z', NULL, 'metadata', 200, 0, NULL, 'closed', 'success', NULL),
  ('r1', '2025-11-26T10:16:01Z', '  ', 'metadata', 200, 0, NULL, 'closed', 'success', NULL),
  ('r1', 'not a time', 'example.com', 'metadata', 200, 0, NULL, 'closed', 'success', NULL),
  ('r1', '', 'example.com', 'metadata', 200, 0, NULL, 'closed', 'success', NULL),
  ('r1', '2025-11-26T10:17:00Z', 'example.com', 'metadata', 'abc', 0, NULL, 'closed', 'success', NULL),
  ('r1', '2025-11-26T10:18:00Z', 'example.com', 'metadata', 42, 0, NULL, 'closed', 'success', NULL),
  ('r1', '2025-11-26T10:19:00Z', 'example.com', 'metadata', 404, 'yes', 'soon', 'tripped', 'maybe', NULL);
CREATE TABLE breaker_events (
  id INTEGER PRIMARY KEY AUTOINCREMENT, timestamp TEXT NOT NULL, run_id TEXT, event_type TEXT NOT NULL,
  host TEXT, scope TEXT, resolver TEXT, payload TEXT);
INSERT INTO breaker_events (timestamp, run_id, event_type, host, scope, resolver, payload) VALUES
  ('2025-11-26T10:20:00Z', 'r1', 'breaker_failure', 'example.com', 'host', NULL, '{}'),
  ('2025-11-26T10:20:00Z', 'r1', 'breaker_state_change', 'example.com', 'host', NULL,
   '{"old": "<pybreaker.CircuitClosedState object at 0x7f00>", "new": "<pybreaker.CircuitOpenState object at 0x7f01>", "reset_timeout_s": 60, "ts": 1764152400.5}'),
  ('2025-11-26T10:21:00Z', 'r1', 'breaker_state_change', 'EXAMPLE.com', 'host', NULL,
   '{"old": "OPEN", "new": "half_open", "reset_timeout_s": 60}'),
  ('2025-11-26T10:22:00Z', 'r1', 'breaker_state_change', 'example.com', 'host', NULL, 'not json'),
  ('2025-11-26T10:23:00Z', 'r1', 'breaker_state_change', 'example.com', 'host', NULL,
   '{"old": "open", "new": "exploded"}'),
  ('2025-11-26T10:24:00Z', 'r1', 'breaker_before_call', 'example.com', 'host', NULL, '{}');
"#;

#[test]
fn handwritten_variant_counts_rejected_rows_by_reason() {
    let tmp = tempfile::tempdir().unwrap();
    let db = sqlite_from_sql(&tmp.path().join("sink.sqlite"), HANDWRITTEN);
    let out = tmp.path().join("ds");
    let summary = export(std::slice::from_ref(&db), &opts(&out)).unwrap();
    let src = &summary.sources[0];
    let http = &src.tables["http_events"];
    let want: BTreeMap<String, u64> = [
        ("null_host", 2),
        ("unparsable_time", 1),
        ("null_time", 1),
        ("invalid_status", 2),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), *v))
    .collect();
    assert_eq!(http.rejected, want);
    assert_eq!(http.rows_read, 10);
    assert_eq!(http.rows_exported, 4);
    let nulled: BTreeMap<String, u64> = [
        ("from_cache", 1),
        ("retry_after_s", 1),
        ("breaker_state", 1),
        ("breaker_recorded", 1),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), *v))
    .collect();
    assert_eq!(http.nulled, nulled);

    let df = read_dataset(&out, "http_events");
    assert_eq!(
        col_str(&df, "host"),
        [
            "example.com",
            "xn--mnchen-3ya.example",
            "example.com",
            "example.com"
        ]
        .map(|s| Some(s.to_string()))
    );
    assert_eq!(
        col_str(&df, "breaker_state"),
        [Some("closed"), Some("half_open"), Some("open"), None].map(|s| s.map(str::to_string))
    );
    assert_eq!(
        col_i64(&df, "status"),
        [Some(200), Some(429), None, Some(404)]
    );
    assert_eq!(col_ts_us(&df, "ts")[0], Some(1_764_152_130_123_456));
    // 23:59:59.999999 stays on the 26th, midnight goes to the 27th.
    let parts: Vec<String> = snapshot(&out.join("http_events"))
        .into_iter()
        .map(|(p, _)| p)
        .collect();
    assert_eq!(parts.len(), 2, "{parts:?}");
    assert!(parts[0].starts_with("date=2025-11-26/") && parts[1].starts_with("date=2025-11-27/"));

    let tr_report = &src.tables["breaker_transitions@breaker_events"];
    assert_eq!(tr_report.sqlite_table, "breaker_events");
    assert_eq!(
        tr_report.rows_read, 4,
        "only breaker_state_change rows are read"
    );
    assert_eq!(tr_report.rows_exported, 2);
    let want: BTreeMap<String, u64> = [("invalid_payload", 1), ("unknown_state", 1)]
        .iter()
        .map(|(k, v)| (k.to_string(), *v))
        .collect();
    assert_eq!(tr_report.rejected, want);
    let tr = read_dataset(&out, "breaker_transitions");
    assert_eq!(
        col_str(&tr, "old_state"),
        [Some("closed".into()), Some("open".into())]
    );
    assert_eq!(
        col_str(&tr, "new_state"),
        [Some("open".into()), Some("half_open".into())]
    );
    // The payload's ts wins over the row's timestamp; without it the row's is used.
    assert_eq!(
        col_ts_us(&tr, "ts"),
        [Some(1_764_152_400_500_000), Some(1_764_152_460_000_000)]
    );
    assert_eq!(col_i64(&tr, "reset_timeout_s"), [Some(60), Some(60)]);
}

/// A crawler that writes both transition tables (one of them empty at first), the
/// listener's failure / success events, and the `cache-hit` / `blocked` values.
const BOTH_TABLES: &str = r#"
CREATE TABLE http_events (
  id INTEGER PRIMARY KEY AUTOINCREMENT, run_id TEXT NOT NULL, ts REAL NOT NULL,
  host TEXT NOT NULL, role TEXT NOT NULL, status INTEGER, from_cache INTEGER,
  retry_count INTEGER, breaker_state TEXT, breaker_recorded TEXT, error TEXT);
INSERT INTO http_events (run_id, ts, host, role, status, from_cache, retry_count, breaker_state, breaker_recorded, error) VALUES
  ('r1', 1764152400.0, 'a.example', 'metadata', 200, 1, 0, 'closed', 'cache-hit', NULL),
  ('r1', 1764152401.0, 'a.example', 'metadata', NULL, 0, 0, 'open', 'blocked', 'BreakerOpenError'),
  ('r1', 1764152402.0, 'a.example', 'metadata', 503, 0, 3, 'closed', 'failure', NULL);
CREATE TABLE breaker_transitions (
  id INTEGER PRIMARY KEY AUTOINCREMENT, run_id TEXT NOT NULL, ts REAL NOT NULL,
  host TEXT NOT NULL, scope TEXT NOT NULL, old_state TEXT NOT NULL, new_state TEXT NOT NULL,
  reset_timeout_s INTEGER);
CREATE TABLE breaker_events (
  id INTEGER PRIMARY KEY AUTOINCREMENT, timestamp TEXT, run_id TEXT, event_type TEXT,
  host TEXT, scope TEXT, resolver TEXT, payload TEXT);
INSERT INTO breaker_events (timestamp, run_id, event_type, host, scope, resolver, payload) VALUES
  ('2025-11-26T10:00:02Z', 'r1', 'breaker_failure', 'a.example', 'host', NULL,
   '{"event_type": "breaker_failure", "exc_type": "HTTPStatusError", "fail_counter": 5, "host": "a.example", "msg": "503", "resolver": null, "run_id": "r1", "scope": "host", "state": "closed", "ts": 1764152402.0}'),
  ('2025-11-26T10:00:02Z', 'r1', 'breaker_state_change', 'a.example', 'host', NULL,
   '{"event_type": "breaker_state_change", "host": "a.example", "new": "<pybreaker.CircuitOpenState object at 0x7fb8899c6610>", "old": "<pybreaker.CircuitClosedState object at 0x7fb8899c6310>", "reset_timeout_s": 60, "resolver": null, "run_id": "r1", "scope": "host", "ts": 1764152402.0}'),
  ('2025-11-26T10:01:03Z', 'r1', 'breaker_success', 'a.example', 'host', NULL,
   '{"event_type": "breaker_success", "fail_counter": 0, "host": "a.example", "resolver": null, "run_id": "r1", "scope": "host", "state": "half-open", "ts": 1764152463.0}'),
  ('2025-11-26T10:01:03Z', 'r1', 'breaker_before_call', 'a.example', 'host', NULL, '{}');
"#;

#[test]
fn both_transition_tables_and_the_breakers_own_events_are_exported() {
    let tmp = tempfile::tempdir().unwrap();
    let db = sqlite_from_sql(&tmp.path().join("both.sqlite"), BOTH_TABLES);
    let out = tmp.path().join("ds");
    // The first night: breaker_transitions is empty, breaker_events is not.
    let summary = export(std::slice::from_ref(&db), &opts(&out)).unwrap();
    let src = &summary.sources[0];
    assert_eq!(src.tables["breaker_transitions"].rows_exported, 0);
    assert_eq!(
        src.tables["breaker_transitions@breaker_events"].rows_exported,
        1
    );
    assert_eq!(
        src.tables["breaker_outcomes@breaker_events"].rows_exported,
        2
    );
    let http = &src.tables["http_events"];
    assert!(
        http.nulled.is_empty(),
        "cache-hit and blocked are values: {:?}",
        http.nulled
    );
    let ev = read_dataset(&out, "http_events");
    assert_eq!(
        col_str(&ev, "breaker_recorded"),
        [Some("cache-hit"), Some("blocked"), Some("failure")].map(|s| s.map(str::to_string))
    );
    let oc = read_dataset(&out, "breaker_outcomes");
    assert_eq!(
        col_str(&oc, "outcome"),
        [Some("failure".to_string()), Some("success".to_string())]
    );
    assert_eq!(col_i64(&oc, "fail_counter"), [Some(5), Some(0)]);
    assert_eq!(
        col_str(&oc, "state"),
        [Some("closed".to_string()), Some("half_open".to_string())]
    );
    assert_eq!(
        col_str(&oc, "run_id"),
        [Some("r1".to_string()), Some("r1".to_string())]
    );

    // The next night the crawler also wrote the transition into its own table: both
    // are kept (each with its origin) and counted once by analyze.
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute_batch(
        "INSERT INTO breaker_transitions (run_id, ts, host, scope, old_state, new_state, reset_timeout_s)
         VALUES ('r1', 1764152402.3, 'a.example', 'host', 'CLOSED', 'OPEN', 60);",
    )
    .unwrap();
    drop(conn);
    let again = export(std::slice::from_ref(&db), &opts(&out)).unwrap();
    assert_eq!(
        again.sources[0].tables["breaker_transitions"].rows_exported,
        1
    );
    assert_eq!(
        again.sources[0].tables["breaker_transitions@breaker_events"].rows_exported, 0,
        "nothing new in breaker_events"
    );
    let tr = read_dataset(&out, "breaker_transitions");
    let mut origins: Vec<String> = col_str(&tr, "origin").into_iter().flatten().collect();
    origins.sort();
    assert_eq!(origins, ["breaker_events", "breaker_transitions"]);
    let m = breaker_advisor::metrics::analyze(
        scan_table(&out, &breaker_advisor::telemetry::schema::HTTP_EVENTS).unwrap(),
        scan_table(
            &out,
            &breaker_advisor::telemetry::schema::BREAKER_TRANSITIONS,
        )
        .unwrap(),
        scan_table(&out, &breaker_advisor::telemetry::schema::BREAKER_OUTCOMES).unwrap(),
        &breaker_advisor::config::BreakerConfig::default(),
        &breaker_advisor::metrics::AnalyzeOptions {
            now_us: Some(1_764_155_000_000_000),
            ..Default::default()
        },
    )
    .unwrap();
    let hs = &m.host_summary;
    assert_eq!(
        col_i64(hs, "opens"),
        [Some(1)],
        "the same open, recorded twice"
    );
    assert_eq!(col_i64(hs, "transitions_from_events"), [Some(1)]);
    assert_eq!(col_i64(hs, "transitions_from_table"), [Some(0)]);
    // The blocked row is not a network call and not a failure; the 503 after three
    // retries is 3 + 2 breaker failures.
    assert_eq!(col_i64(hs, "calls_net"), [Some(1)]);
    assert_eq!(col_i64(hs, "attempts"), [Some(4)]);
    assert_eq!(col_i64(hs, "breaker_failures"), [Some(5)]);
    // The logged events are the burst record: one failure before the success.
    assert_eq!(col_i64(&m.bursts, "length"), [Some(1)]);
    assert_eq!(
        col_str(&m.bursts, "counted_from"),
        [Some("events".to_string())]
    );
}

#[test]
fn unusable_files_fail_with_named_errors_and_write_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let good = sim(&tmp.path().join("good"), Variant::Schema, 1.0, 2, 0.2, 3);
    let garbage = tmp.path().join("garbage.sqlite");
    std::fs::write(
        &garbage,
        b"this is not a database, just some bytes that go on and on...".repeat(100),
    )
    .unwrap();
    let no_table = sqlite_from_sql(
        &tmp.path().join("no_table.sqlite"),
        "CREATE TABLE other (x);",
    );
    let no_status = sqlite_from_sql(
        &tmp.path().join("no_status.sqlite"),
        "CREATE TABLE http_events (id INTEGER PRIMARY KEY, ts REAL, host TEXT);
         INSERT INTO http_events (ts, host) VALUES (1764152130.0, 'a.example');",
    );
    let no_host_time = sqlite_from_sql(
        &tmp.path().join("no_host_time.sqlite"),
        "CREATE TABLE http_events (id INTEGER PRIMARY KEY, status INTEGER);",
    );
    let missing = tmp.path().join("missing.sqlite");
    let out = tmp.path().join("ds");

    let cases = [
        (&garbage, vec!["garbage.sqlite", "not a SQLite database"]),
        (&no_table, vec!["no_table.sqlite", "no table http_events"]),
        (
            &no_status,
            vec!["no_status.sqlite", "table http_events has no column status"],
        ),
        (
            &no_host_time,
            vec!["no_host_time.sqlite", "http_events", "host, ts|timestamp"],
        ),
        (&missing, vec!["missing.sqlite", "no such file"]),
    ];
    let mut cmd = bin();
    cmd.arg("export")
        .arg("--out")
        .arg(&out)
        .arg("--telemetry")
        .arg(&good);
    for (p, _) in &cases {
        cmd.arg("--telemetry").arg(p);
    }
    let output = cmd.output().unwrap();
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let stdout = String::from_utf8_lossy(&output.stdout);
    for (_, needles) in &cases {
        for n in needles {
            assert!(stderr.contains(n), "stderr lacks {n:?}:\n{stderr}");
            assert!(stdout.contains(n), "summary lacks {n:?}:\n{stdout}");
        }
    }
    assert!(
        stderr.contains("5 of 6 telemetry files could not be exported"),
        "{stderr}"
    );

    // The good file is exported; nothing of the bad ones is.
    let df = read_dataset(&out, "http_events");
    let sources: std::collections::BTreeSet<String> =
        col_str(&df, "source").into_iter().flatten().collect();
    assert_eq!(sources, [good.to_string_lossy().into_owned()].into());
    let conn = Connection::open(&good).unwrap();
    assert_eq!(
        df.height() as i64,
        count(&conn, "SELECT count(*) FROM http_events")
    );
    // The garbage file was not touched.
    assert!(
        std::fs::read(&garbage)
            .unwrap()
            .starts_with(b"this is not a database")
    );
}

const SMALL: &str = "
CREATE TABLE http_events (id INTEGER PRIMARY KEY AUTOINCREMENT, run_id TEXT NOT NULL, ts REAL NOT NULL,
  host TEXT NOT NULL, role TEXT NOT NULL, status INTEGER);
INSERT INTO http_events (run_id, ts, host, role, status) VALUES
  ('r', 1764152130.0, 'a.example', 'metadata', 200),
  ('r', 1764152131.0, 'a.example', 'metadata', 503);
";

#[test]
fn a_locked_file_fails_clearly_and_a_wal_writer_does_not_block() {
    let tmp = tempfile::tempdir().unwrap();
    // Rollback journal: a writer holding an exclusive lock blocks readers.
    let locked = sqlite_from_sql(&tmp.path().join("locked.sqlite"), SMALL);
    let writer = Connection::open(&locked).unwrap();
    writer
        .execute_batch("BEGIN EXCLUSIVE; INSERT INTO http_events (run_id, ts, host, role, status) VALUES ('r', 1764152132.0, 'a.example', 'metadata', 200);")
        .unwrap();
    let out = tmp.path().join("ds");
    let mut o = opts(&out);
    o.busy_timeout = Duration::from_millis(200);
    let summary = export(std::slice::from_ref(&locked), &o).unwrap();
    let err = summary.sources[0].error.as_deref().unwrap();
    assert!(
        err.contains("locked.sqlite")
            && err.contains("locked by another process")
            && err.contains("200 ms"),
        "{err}"
    );
    assert!(!out.join("http_events").exists());
    writer.execute_batch("ROLLBACK").unwrap();

    // WAL: a crawler in the middle of a write transaction; the export reads the last
    // committed snapshot and does not modify the file.
    let wal = sqlite_from_sql(&tmp.path().join("wal.sqlite"), "PRAGMA journal_mode=WAL;");
    let setup = Connection::open(&wal).unwrap();
    setup.execute_batch(SMALL).unwrap();
    setup
        .execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")
        .unwrap();
    let writer = Connection::open(&wal).unwrap();
    writer
        .execute_batch("BEGIN IMMEDIATE; INSERT INTO http_events (run_id, ts, host, role, status) VALUES ('r', 1764152133.0, 'a.example', 'metadata', 200);")
        .unwrap();
    let before = std::fs::read(&wal).unwrap();
    let out2 = tmp.path().join("ds2");
    let mut o = opts(&out2);
    o.busy_timeout = Duration::from_millis(200);
    let summary = export(std::slice::from_ref(&wal), &o).unwrap();
    assert!(summary.sources[0].error.is_none(), "{summary:?}");
    assert_eq!(summary.rows_exported, 2);
    assert_eq!(
        std::fs::read(&wal).unwrap(),
        before,
        "the export modified the telemetry file"
    );
    writer.execute_batch("COMMIT").unwrap();
    let summary = export(std::slice::from_ref(&wal), &o).unwrap();
    assert_eq!(
        summary.rows_exported, 1,
        "the committed row comes next time"
    );
    assert_eq!(read_dataset(&out2, "http_events").height(), 3);
    drop(setup);
}

#[test]
fn export_is_idempotent_and_incremental() {
    let tmp = tempfile::tempdir().unwrap();
    let db = sim(&tmp.path().join("sim"), Variant::Schema, 1.0, 3, 0.5, 21);
    let out = tmp.path().join("ds");
    let first = export(std::slice::from_ref(&db), &opts(&out)).unwrap();
    assert!(first.rows_exported > 1_000);
    let snap = snapshot(&out);

    let again = export(std::slice::from_ref(&db), &opts(&out)).unwrap();
    assert_eq!(again.rows_exported, 0);
    assert_eq!(again.parts_written, 0);
    assert_eq!(
        snapshot(&out),
        snap,
        "a rerun on the same data changed the dataset"
    );

    // The crawler appends rows; the next run exports only those.
    let conn = Connection::open(&db).unwrap();
    conn.execute_batch(
        "INSERT INTO http_events (run_id, ts, host, role, method, status, url_hash)
         SELECT run_id, ts + 86400, host, role, method, status, url_hash FROM http_events WHERE id <= 500;",
    )
    .unwrap();
    let third = export(std::slice::from_ref(&db), &opts(&out)).unwrap();
    assert_eq!(third.rows_exported, 500);
    let df = read_dataset(&out, "http_events");
    assert_eq!(
        df.height() as i64,
        count(&conn, "SELECT count(*) FROM http_events")
    );
    let ids = df
        .column("id")
        .unwrap()
        .as_materialized_series()
        .n_unique()
        .unwrap();
    assert_eq!(ids, df.height(), "duplicate ids in the dataset");
    // Each run's parts carry their run number.
    let parts: Vec<String> = snapshot(&out)
        .into_iter()
        .map(|(p, _)| p)
        .filter(|p| p.ends_with(".parquet"))
        .collect();
    assert!(
        parts.iter().any(|p| p.contains("part-r000001-"))
            && parts.iter().any(|p| p.contains("part-r000002-")),
        "{parts:?}"
    );
}

#[test]
fn a_replaced_source_is_detected_not_mixed_in() {
    let tmp = tempfile::tempdir().unwrap();
    let db = sim(&tmp.path().join("sim"), Variant::Schema, 1.0, 2, 0.3, 1);
    let out = tmp.path().join("ds");
    export(std::slice::from_ref(&db), &opts(&out)).unwrap();
    let snap = snapshot(&out);

    // The crawler machine was reset: same path, different file.
    sim(&tmp.path().join("sim"), Variant::Schema, 0.5, 2, 0.3, 2);
    let output = bin()
        .args(["export", "--out"])
        .arg(&out)
        .arg("--telemetry")
        .arg(&db)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("was replaced since the last export")
            && stderr.contains("--replace-changed"),
        "{stderr}"
    );
    assert_eq!(snapshot(&out), snap);

    let mut o = opts(&out);
    o.replace_changed = true;
    let summary = export(std::slice::from_ref(&db), &o).unwrap();
    assert_eq!(summary.sources[0].outcome, "replaced");
    let conn = Connection::open(&db).unwrap();
    assert_eq!(
        read_dataset(&out, "http_events").height() as i64,
        count(&conn, "SELECT count(*) FROM http_events")
    );
}

fn export_with_failpoint(out: &Path, db: &Path, failpoint: &str) -> std::process::Output {
    bin()
        .env("BREAKER_ADVISOR_FAILPOINT", failpoint)
        .args(["export", "--batch-rows", "500", "--out"])
        .arg(out)
        .arg("--telemetry")
        .arg(db)
        .output()
        .unwrap()
}

#[test]
fn a_run_killed_before_its_commit_leaves_the_dataset_unchanged() {
    let tmp = tempfile::tempdir().unwrap();
    let db = sim(&tmp.path().join("sim"), Variant::Schema, 1.0, 3, 0.5, 4);
    let out = tmp.path().join("ds");
    export(std::slice::from_ref(&db), &opts(&out)).unwrap();
    let snap = snapshot(&out);
    let rows = read_dataset(&out, "http_events").height();

    let conn = Connection::open(&db).unwrap();
    conn.execute_batch(
        "INSERT INTO http_events (run_id, ts, host, role, method, status, url_hash)
         SELECT run_id, ts + 3600, host, role, method, status, url_hash FROM http_events;",
    )
    .unwrap();
    let output = export_with_failpoint(&out, &db, "export:staged");
    assert!(!output.status.success(), "the failpoint did not fire");
    assert!(
        out.join("_staging").exists(),
        "the killed run had staged its parts"
    );
    assert_eq!(snapshot(&out), snap, "a killed run changed the dataset");
    assert_eq!(read_dataset(&out, "http_events").height(), rows);

    // The next run cleans up and exports the new rows exactly once.
    export(std::slice::from_ref(&db), &opts(&out)).unwrap();
    assert!(!out.join("_staging").exists());
    let df = read_dataset(&out, "http_events");
    assert_eq!(
        df.height() as i64,
        count(&conn, "SELECT count(*) FROM http_events")
    );
}

#[test]
fn a_run_killed_after_its_commit_is_rolled_forward() {
    let tmp = tempfile::tempdir().unwrap();
    let db = sim(&tmp.path().join("sim"), Variant::Schema, 1.0, 3, 0.5, 8);
    let out = tmp.path().join("ds");
    let output = export_with_failpoint(&out, &db, "export:committed");
    assert!(!output.status.success(), "the failpoint did not fire");
    // Committed but not yet published: readers still see the previous (empty) dataset.
    assert!(!out.join("http_events").exists());
    let summary = export(std::slice::from_ref(&db), &opts(&out)).unwrap();
    assert_eq!(
        summary.rows_exported, 0,
        "rows of the committed run were exported twice"
    );
    let conn = Connection::open(&db).unwrap();
    let df = read_dataset(&out, "http_events");
    assert_eq!(
        df.height() as i64,
        count(&conn, "SELECT count(*) FROM http_events")
    );
}

#[test]
fn parquet_parts_carry_metadata_zstd_and_statistics() {
    let tmp = tempfile::tempdir().unwrap();
    let db = sim(&tmp.path().join("sim"), Variant::Schema, 1.0, 2, 0.3, 9);
    let out = tmp.path().join("ds");
    export(std::slice::from_ref(&db), &opts(&out)).unwrap();
    let (rel, _) = snapshot(&out.join("http_events"))
        .into_iter()
        .next()
        .unwrap();
    let file = std::fs::File::open(out.join("http_events").join(rel)).unwrap();
    let mut reader = ParquetReader::new(file);
    let md = reader.get_metadata().unwrap().clone();
    let kv: BTreeMap<String, String> = md
        .key_value_metadata()
        .clone()
        .unwrap()
        .iter()
        .map(|kv| (kv.key.clone(), kv.value.clone().unwrap_or_default()))
        .collect();
    assert_eq!(
        kv["breaker_advisor.schema_version"],
        breaker_advisor::telemetry::schema::SCHEMA_VERSION.to_string()
    );
    assert_eq!(
        kv["breaker_advisor.tool_version"],
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(kv["breaker_advisor.source"], db.to_string_lossy());
    assert_eq!(kv["breaker_advisor.source_fingerprint"].len(), 32);
    assert!(
        md.row_groups.len() > 1,
        "batches of 1000 rows make several row groups"
    );
    for rg in &md.row_groups {
        for col in rg.parquet_columns() {
            assert_eq!(format!("{:?}", col.compression()), "Zstd");
            let stats = col.statistics(&md.footer_buf);
            assert!(matches!(stats, Some(Ok(_))), "no statistics");
        }
    }
}

/// The dataset's part files of one table, relative to the dataset root.
fn parts_of(out: &Path, table: &str) -> Vec<String> {
    let mut v: Vec<String> = snapshot(out)
        .into_iter()
        .map(|(p, _)| p)
        .filter(|p| p.starts_with(&format!("{table}/")) && p.ends_with(".parquet"))
        .collect();
    v.sort();
    v
}

#[test]
fn a_missing_part_is_exported_again_or_its_dates_named_incomplete() {
    let tmp = tempfile::tempdir().unwrap();
    // Two days, so the dataset has several date partitions.
    let db = sim(&tmp.path().join("sim"), Variant::Schema, 30.0, 3, 0.3, 5);
    let out = tmp.path().join("ds");
    export(std::slice::from_ref(&db), &opts(&out)).unwrap();
    let full = read_dataset(&out, "http_events").height();
    let parts = parts_of(&out, "http_events");
    assert!(parts.len() >= 2, "{parts:?}");

    // Deleted by hand: the source still has the rows, so they come back, once each.
    std::fs::remove_file(out.join(&parts[0])).unwrap();
    let summary = export(std::slice::from_ref(&db), &opts(&out)).unwrap();
    let s = &summary.sources[0];
    assert_eq!(
        (s.outcome.as_str(), &s.missing_parts),
        ("repaired", &vec![parts[0].clone()])
    );
    assert!(s.incomplete.is_empty());
    let df = read_dataset(&out, "http_events");
    assert_eq!(df.height(), full);
    let ids = df
        .column("id")
        .unwrap()
        .as_materialized_series()
        .n_unique()
        .unwrap();
    assert_eq!(ids, full, "no row twice");

    // Lost while its source is unreadable (the machine is gone): the manifest stops
    // listing the part, the dates are named, and the dataset stays readable for analyze.
    let parts = parts_of(&out, "http_events");
    let lost = parts.last().unwrap().clone();
    let date = lost
        .split('/')
        .nth(1)
        .unwrap()
        .trim_start_matches("date=")
        .to_owned();
    std::fs::remove_file(out.join(&lost)).unwrap();
    for p in parts_of(&out, "breaker_transitions") {
        std::fs::remove_file(out.join(p)).unwrap();
    }
    let away = tmp.path().join("away.sqlite");
    std::fs::rename(&db, &away).unwrap();
    let summary = export(std::slice::from_ref(&db), &opts(&out)).unwrap();
    let s = &summary.sources[0];
    assert_eq!(s.outcome, "failed");
    assert_eq!(
        s.incomplete["http_events"].iter().collect::<Vec<_>>(),
        [&date]
    );
    assert!(s.incomplete.contains_key("breaker_transitions"), "{s:?}");
    let manifest = std::fs::read_to_string(out.join("_manifest.json")).unwrap();
    assert!(
        !manifest.contains(&lost) && manifest.contains(&date),
        "{manifest}"
    );
    assert!(read_dataset(&out, "http_events").height() < full);
    let metrics = tmp.path().join("metrics");
    bin()
        .args(["analyze", "--data"])
        .arg(&out)
        .arg("--out")
        .arg(&metrics)
        .assert()
        .success();
    assert!(metrics.join("host_summary.parquet").is_file());

    // A source not given at all cannot restore its parts either.
    let other = parts_of(&out, "http_events")[0].clone();
    std::fs::remove_file(out.join(&other)).unwrap();
    let summary = export(&[], &opts(&out)).unwrap();
    assert_eq!(summary.sources[0].outcome, "incomplete");
    assert_eq!(summary.sources[0].missing_parts, [other]);

    // Back again with every row: exported once more from scratch, nothing incomplete.
    std::fs::rename(&away, &db).unwrap();
    let summary = export(std::slice::from_ref(&db), &opts(&out)).unwrap();
    assert_eq!(summary.sources[0].outcome, "repaired");
    assert_eq!(read_dataset(&out, "http_events").height(), full);
    let manifest = std::fs::read_to_string(out.join("_manifest.json")).unwrap();
    assert!(!manifest.contains("incomplete"), "{manifest}");
}

/// Each batch is written sorted by host, a host's rows in their id order, in row groups
/// of its own, so that a reader of a few hosts skips the others' row groups by their
/// statistics; a part that reaches `MAX_ROW_GROUPS_PER_FILE` row groups goes on in a
/// new file, which the manifest lists too.
#[test]
fn batches_are_sorted_by_host_and_long_parts_go_on_in_new_files() {
    use breaker_advisor::telemetry::parquet::MAX_ROW_GROUPS_PER_FILE;
    let tmp = tempfile::tempdir().unwrap();
    let db = sim(&tmp.path().join("sim"), Variant::Schema, 0.5, 6, 3.0, 5);
    let out = tmp.path().join("ds");
    let mut o = opts(&out);
    o.batch_rows = 50;
    export(std::slice::from_ref(&db), &o).unwrap();

    let conn = Connection::open(&db).unwrap();
    let mut stmt = conn
        .prepare("SELECT id FROM http_events ORDER BY id")
        .unwrap();
    let sqlite_ids: Vec<i64> = stmt
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let rows = sqlite_ids.len();
    let batches = rows.div_ceil(50);
    assert!(batches > MAX_ROW_GROUPS_PER_FILE, "{rows} rows");
    let parts = parts_of(&out, "http_events");
    assert_eq!(
        parts.len(),
        batches.div_ceil(MAX_ROW_GROUPS_PER_FILE),
        "{parts:?}"
    );
    let manifest = std::fs::read_to_string(out.join("_manifest.json")).unwrap();
    for p in &parts {
        assert!(manifest.contains(p.as_str()), "{p} is not listed");
    }

    let mut ids = Vec::new();
    for p in &parts {
        let file = std::fs::File::open(out.join(p)).unwrap();
        let mut reader = ParquetReader::new(file);
        let md = reader.get_metadata().unwrap().clone();
        assert!(md.row_groups.len() <= MAX_ROW_GROUPS_PER_FILE);
        let df = reader.finish().unwrap();
        let host: Vec<String> = df
            .column("host")
            .unwrap()
            .str()
            .unwrap()
            .iter()
            .map(|h| h.unwrap().to_owned())
            .collect();
        let id: Vec<i64> = df
            .column("id")
            .unwrap()
            .i64()
            .unwrap()
            .into_no_null_iter()
            .collect();
        let mut at = 0;
        let mut last_id: BTreeMap<&str, i64> = BTreeMap::new();
        for rg in &md.row_groups {
            let n = rg.num_rows();
            assert!(n <= 50, "a row group per batch");
            let hosts = &host[at..at + n];
            assert!(hosts.is_sorted(), "a batch is sorted by host: {hosts:?}");
            for (h, i) in hosts.iter().zip(&id[at..at + n]) {
                let previous = last_id.insert(h, *i);
                assert!(previous.is_none_or(|p| p < *i), "{h}: ids out of order");
            }
            at += n;
        }
        assert_eq!(at, df.height());
        ids.extend(id);
    }
    ids.sort_unstable();
    assert_eq!(ids, sqlite_ids, "every row once");
}
