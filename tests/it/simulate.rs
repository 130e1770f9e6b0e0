//! Simulator: deterministic from its seed, and its ground truth agrees with the rows it
//! wrote (burst statistics recomputed independently, breaker gaps, incidents).

use crate::common;

use std::collections::BTreeMap;
use std::path::Path;

use breaker_advisor::simulate::{SimOptions, Variant, simulate};
use common::*;
use rusqlite::Connection;
use serde_json::Value;
use sha2::{Digest, Sha256};

fn digest_rows(db: &std::path::Path) -> String {
    let conn = Connection::open(db).unwrap();
    let mut h = Sha256::new();
    for table in ["http_events", "breaker_transitions"] {
        let mut stmt = conn
            .prepare(&format!("SELECT * FROM {table} ORDER BY id"))
            .unwrap();
        let n = stmt.column_count();
        let mut rows = stmt.query([]).unwrap();
        while let Some(r) = rows.next().unwrap() {
            for i in 0..n {
                h.update(format!("{:?}|", r.get_ref(i).unwrap()).as_bytes());
            }
        }
    }
    format!("{:x}", h.finalize())
}

#[test]
fn same_seed_same_rows_other_seed_other_rows() {
    let tmp = tempfile::tempdir().unwrap();
    let a = sim(&tmp.path().join("a"), Variant::Schema, 2.0, 6, 0.5, 7);
    let b = sim(&tmp.path().join("b"), Variant::Schema, 2.0, 6, 0.5, 7);
    let c = sim(&tmp.path().join("c"), Variant::Schema, 2.0, 6, 0.5, 8);
    assert_eq!(digest_rows(&a), digest_rows(&b));
    assert_ne!(digest_rows(&a), digest_rows(&c));
    assert_eq!(
        std::fs::read(tmp.path().join("a/ground_truth.json")).unwrap(),
        std::fs::read(tmp.path().join("b/ground_truth.json")).unwrap()
    );
}

/// Nearest rank, written independently of the library's.
fn quantile(sorted: &[u64], q: f64) -> u64 {
    let n = sorted.len();
    let mut rank = 1;
    while (rank as f64) < q * n as f64 {
        rank += 1;
    }
    sorted[rank - 1]
}

/// The `new` state of a `breaker_state_change` payload.
fn new_state(payload: &str) -> String {
    let v: Value = serde_json::from_str(payload).unwrap();
    v["new"].as_str().unwrap_or_default().to_owned()
}

#[test]
fn ground_truth_matches_what_each_breaker_logged() {
    let tmp = tempfile::tempdir().unwrap();
    let dbs = sim_fleet(
        tmp.path(),
        SimOptions {
            variant: Variant::Sink,
            machines: 2,
            ..SimOptions::new(tmp.path(), 24.0, 6, 0.3, 7)
        },
    );
    assert_eq!(dbs.len(), 2);
    let truth: Value =
        serde_json::from_slice(&std::fs::read(tmp.path().join("ground_truth.json")).unwrap())
            .unwrap();
    let hosts = truth["hosts"].as_array().unwrap();
    assert_eq!(hosts.len(), 6);

    let mut total_rows = 0;
    let mut retried_rows = 0;
    let mut checked_open_spans = 0;
    for (m, db) in dbs.iter().enumerate() {
        let conn = Connection::open(db).unwrap();
        total_rows += count(&conn, "SELECT count(*) FROM http_events");
        retried_rows += count(
            &conn,
            "SELECT count(*) FROM http_events WHERE retry_count > 0",
        );
        // Bursts per breaker: the listener's failure / success events in log order.
        let mut stmt = conn
            .prepare("SELECT host, event_type, payload FROM breaker_events ORDER BY id")
            .unwrap();
        let mut runs: BTreeMap<String, Vec<u64>> = BTreeMap::new();
        let mut current: BTreeMap<String, u64> = BTreeMap::new();
        let mut opens: BTreeMap<String, i64> = BTreeMap::new();
        let events = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                ))
            })
            .unwrap();
        for e in events {
            let (host, kind, payload) = e.unwrap();
            let c = current.entry(host.clone()).or_default();
            match kind.as_str() {
                "breaker_failure" => *c += 1,
                "breaker_success" if *c > 0 => {
                    runs.entry(host).or_default().push(*c);
                    *c = 0;
                }
                "breaker_state_change" if new_state(&payload).contains("CircuitOpenState") => {
                    *opens.entry(host).or_default() += 1;
                }
                _ => {}
            }
        }
        for (host, c) in current {
            if c > 0 {
                runs.entry(host).or_default().push(c);
            }
        }
        for h in hosts {
            let name = h["host"].as_str().unwrap();
            let inst = &h["instances"][m];
            assert_eq!(inst["machine"].as_u64().unwrap(), m as u64);
            let mut lengths = runs.get(name).cloned().unwrap_or_default();
            lengths.sort_unstable();
            let b = &inst["bursts"];
            assert_eq!(
                b["bursts"].as_u64().unwrap(),
                lengths.len() as u64,
                "{name} m{m}"
            );
            if !lengths.is_empty() {
                for (k, q) in [("q50", 0.5), ("q95", 0.95), ("q99", 0.99)] {
                    assert_eq!(
                        b[k].as_u64().unwrap(),
                        quantile(&lengths, q),
                        "{name} m{m} {k}"
                    );
                }
                assert_eq!(b["max"].as_u64().unwrap(), *lengths.last().unwrap());
            }
            assert_eq!(
                inst["opens"].as_i64().unwrap(),
                opens.get(name).copied().unwrap_or(0),
                "{name} m{m}"
            );
        }

        // An open breaker denies its machine's calls: no network request of that machine
        // began between an open and the next half-open of the same breaker (a row is
        // written when its request ends, `elapsed_ms` after it began; one in flight
        // when the breaker opened ends while it is open).
        let mut stmt = conn
            .prepare(
                "SELECT host, json_extract(payload, '$.ts'), payload FROM breaker_events
                 WHERE event_type = 'breaker_state_change' ORDER BY host, id",
            )
            .unwrap();
        let transitions: Vec<(String, f64, String)> = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        for w in transitions.windows(2) {
            let opened = new_state(&w[0].2).contains("CircuitOpenState");
            let half = new_state(&w[1].2).contains("CircuitHalfOpenState");
            if w[0].0 == w[1].0 && opened && half {
                let inside = conn
                    .query_row(
                        "SELECT count(*) FROM http_events WHERE lower(rtrim(host, '.')) = ?1
                         AND from_cache = 0
                         AND (julianday(timestamp) - 2440587.5) * 86400.0
                             - elapsed_ms / 1000.0 > ?2 + 0.002
                         AND (julianday(timestamp) - 2440587.5) * 86400.0
                             - elapsed_ms / 1000.0 < ?3 - 0.002",
                        rusqlite::params![w[0].0, w[0].1, w[1].1],
                        |r| r.get::<_, i64>(0),
                    )
                    .unwrap();
                assert_eq!(inside, 0, "network rows while {} was open on m{m}", w[0].0);
                checked_open_spans += 1;
            }
        }
    }
    let truth_rows: i64 = hosts.iter().map(|h| h["rows"].as_i64().unwrap()).sum();
    assert_eq!(total_rows, truth_rows);
    assert!(
        retried_rows > 0,
        "retried requests end in rows with retry_count > 0"
    );
    assert!(
        checked_open_spans > 10,
        "too few open periods: {checked_open_spans}"
    );
    for h in hosts {
        let per: i64 = h["instances"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["opens"].as_i64().unwrap())
            .sum();
        assert_eq!(h["opens"].as_i64().unwrap(), per);
        let regime = h["regime"].as_str().unwrap();
        let incidents = h["incidents"].as_array().unwrap();
        assert_eq!(
            incidents.is_empty(),
            regime == "healthy" || regime == "chronic",
            "{regime}"
        );
    }
}

#[test]
fn a_night_series_keeps_each_hosts_behaviour_under_the_given_config() {
    let tmp = tempfile::tempdir().unwrap();
    let config = breaker_advisor::config::BreakerConfig::parse(
        "defaults: {fail_max: 7}\nhosts:\n  api.openalex.org: {fail_max: 2, reset_timeout_s: 200}\n",
        Path::new("breakers.yaml"),
    )
    .unwrap();
    let night = |k: u32| -> Value {
        let dir = tmp.path().join(format!("night-{k}"));
        simulate(&SimOptions {
            config: Some(config.clone()),
            night: k,
            ..SimOptions::new(&dir, 6.0, 6, 0.2, 7)
        })
        .unwrap();
        let conn = Connection::open(dir.join("telemetry.sqlite")).unwrap();
        let run: String = conn
            .query_row("SELECT DISTINCT run_id FROM http_events", [], |r| r.get(0))
            .unwrap();
        assert_eq!(
            run,
            if k == 1 {
                "sim-7".to_owned()
            } else {
                format!("sim-7-n{k}")
            }
        );
        serde_json::from_slice(&std::fs::read(dir.join("ground_truth.json")).unwrap()).unwrap()
    };
    let (one, two) = (night(1), night(2));
    // Night 2 follows night 1.
    assert_eq!(
        two["start_s"].as_i64().unwrap(),
        one["start_s"].as_i64().unwrap() + 6 * 3600
    );
    assert_eq!(two["night"], 2);
    let (h1, h2) = (
        one["hosts"].as_array().unwrap(),
        two["hosts"].as_array().unwrap(),
    );
    let mut moved = 0;
    for (a, b) in h1.iter().zip(h2) {
        // The same host, behaviour and breaker settings, from the config.
        assert_eq!(
            (&a["host"], &a["regime"], &a["policy"]),
            (&b["host"], &b["regime"], &b["policy"])
        );
        let want = if a["host"] == "api.openalex.org" {
            (2, 200.0)
        } else {
            (7, 60.0)
        };
        assert_eq!(
            (
                a["policy"]["fail_max"].as_i64().unwrap(),
                a["policy"]["reset_timeout_s"].as_f64().unwrap()
            ),
            want,
            "{}",
            a["host"]
        );
        // New incident times (relative to each night's start).
        let starts = |t: &Value, h: &Value| -> Vec<i64> {
            h["incidents"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i["start_s"].as_f64().unwrap() as i64 - t["start_s"].as_i64().unwrap())
                .collect()
        };
        if starts(&one, a) != starts(&two, b) {
            moved += 1;
        }
    }
    assert!(
        moved >= 3,
        "incident times are drawn again each night ({moved} hosts moved)"
    );
}
