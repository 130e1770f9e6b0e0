//! Simulator: deterministic from its seed, and its ground truth agrees with the rows it
//! wrote (burst statistics recomputed independently, breaker gaps, incidents).

mod common;

use std::collections::BTreeMap;

use breaker_advisor::simulate::Variant;
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

#[test]
fn ground_truth_matches_the_rows() {
    let tmp = tempfile::tempdir().unwrap();
    let db = sim(tmp.path(), Variant::Schema, 24.0, 6, 0.3, 7);
    let truth: Value =
        serde_json::from_slice(&std::fs::read(tmp.path().join("ground_truth.json")).unwrap())
            .unwrap();
    let conn = Connection::open(&db).unwrap();
    let failure = [429, 500, 502, 503, 504, 408];

    // Bursts: per host, network rows in (ts, id) order, runs of consecutive failures.
    let mut stmt = conn
        .prepare("SELECT host, status, error FROM http_events WHERE from_cache = 0 ORDER BY host, ts, id")
        .unwrap();
    let mut runs: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut current: BTreeMap<String, u64> = BTreeMap::new();
    let rows = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, Option<i64>>(1)?,
                r.get::<_, Option<String>>(2)?,
            ))
        })
        .unwrap();
    for row in rows {
        let (host, status, error) = row.unwrap();
        let fail = match status {
            Some(s) => failure.contains(&s),
            None => error.is_some(),
        };
        let c = current.entry(host.clone()).or_default();
        if fail {
            *c += 1;
        } else if *c > 0 {
            runs.entry(host).or_default().push(*c);
            *c = 0;
        }
    }
    for (host, c) in current {
        if c > 0 {
            runs.entry(host).or_default().push(c);
        }
    }

    let hosts = truth["hosts"].as_array().unwrap();
    assert_eq!(hosts.len(), 6);
    let mut with_incidents = 0;
    for h in hosts {
        let name = h["host"].as_str().unwrap();
        let mut lengths = runs.get(name).cloned().unwrap_or_default();
        lengths.sort_unstable();
        let b = &h["bursts"];
        assert_eq!(
            b["bursts"].as_u64().unwrap(),
            lengths.len() as u64,
            "{name}"
        );
        if !lengths.is_empty() {
            assert_eq!(
                b["q50"].as_u64().unwrap(),
                quantile(&lengths, 0.5),
                "{name}"
            );
            assert_eq!(
                b["q95"].as_u64().unwrap(),
                quantile(&lengths, 0.95),
                "{name}"
            );
            assert_eq!(
                b["q99"].as_u64().unwrap(),
                quantile(&lengths, 0.99),
                "{name}"
            );
            assert_eq!(
                b["max"].as_u64().unwrap(),
                *lengths.last().unwrap(),
                "{name}"
            );
        }
        let rows = count(
            &conn,
            &format!("SELECT count(*) FROM http_events WHERE host = '{name}'"),
        );
        assert_eq!(h["rows"].as_i64().unwrap(), rows, "{name}");
        let opens = count(
            &conn,
            &format!(
                "SELECT count(*) FROM breaker_transitions WHERE host = '{name}' AND new_state = 'open'"
            ),
        );
        assert_eq!(h["opens"].as_i64().unwrap(), opens, "{name}");
        let regime = h["regime"].as_str().unwrap();
        let incidents = h["incidents"].as_array().unwrap();
        if regime == "healthy" || regime == "chronic" {
            assert!(incidents.is_empty());
        } else {
            assert!(!incidents.is_empty(), "{name} ({regime}) has no incident");
            with_incidents += 1;
        }
        for w in incidents.windows(2) {
            assert!(
                w[0]["end_s"].as_f64() <= w[1]["start_s"].as_f64(),
                "overlapping incidents"
            );
        }
    }
    assert_eq!(with_incidents, 4);

    // An open breaker blocks calls: no network row between an open and the next half-open.
    let mut stmt = conn
        .prepare("SELECT host, ts, new_state FROM breaker_transitions ORDER BY host, ts, id")
        .unwrap();
    let transitions: Vec<(String, f64, String)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let mut checked = 0;
    for w in transitions.windows(2) {
        if w[0].0 == w[1].0 && w[0].2 == "open" && w[1].2 == "half_open" {
            let inside = conn
                .query_row(
                    "SELECT count(*) FROM http_events WHERE host = ?1 AND from_cache = 0 AND ts > ?2 AND ts < ?3",
                    rusqlite::params![w[0].0, w[0].1, w[1].1],
                    |r| r.get::<_, i64>(0),
                )
                .unwrap();
            assert_eq!(inside, 0, "network calls while {} was open", w[0].0);
            checked += 1;
        }
    }
    assert!(checked > 10, "too few open periods to check: {checked}");
}
