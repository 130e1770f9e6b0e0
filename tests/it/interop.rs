//! The exported dataset is read directly by the analysts' tools: DuckDB and pyarrow
//! (installed by .ci/run from tests/python/requirements.txt) see the same rows, dates and
//! types as Polars.

use crate::common;

use std::collections::BTreeMap;
use std::process::Command;

use breaker_advisor::simulate::Variant;
use breaker_advisor::telemetry::{ExportOptions, export};
use common::*;
use polars::prelude::*;

#[test]
fn duckdb_and_pyarrow_read_the_dataset() {
    let tmp = tempfile::tempdir().unwrap();
    let db = sim(&tmp.path().join("sim"), Variant::Sink, 26.0, 4, 0.1, 3);
    let out = tmp.path().join("ds");
    let mut opts = ExportOptions::new(&out);
    opts.progress = false;
    export(&[db], &opts).unwrap();

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/read_dataset.py");
    let output = Command::new("python3")
        .arg(script)
        .arg(&out)
        .output()
        .expect("python3");
    assert!(
        output.status.success(),
        "read_dataset.py failed (install tests/python/requirements.txt):\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let seen: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();

    for table in ["http_events", "breaker_transitions"] {
        let df = read_dataset(&out, table);
        let s = &seen[table];
        assert_eq!(
            s["duckdb_rows"].as_u64().unwrap(),
            df.height() as u64,
            "{table}"
        );
        assert_eq!(
            s["duckdb_distinct_keys"].as_u64().unwrap(),
            df.height() as u64,
            "{table}"
        );
        assert_eq!(
            s["pyarrow_rows"].as_u64().unwrap(),
            df.height() as u64,
            "{table}"
        );
        let id_sum: i64 = col_i64(&df, "id").into_iter().flatten().sum();
        assert_eq!(s["duckdb_id_sum"].as_i64().unwrap(), id_sum, "{table}");

        let by_date = df
            .clone()
            .lazy()
            .group_by([col("date").cast(DataType::String)])
            .agg([len()])
            .collect()
            .unwrap();
        let mut want = BTreeMap::new();
        for (d, n) in col_str(&by_date, "date")
            .into_iter()
            .zip(col_i64(&by_date, "len"))
        {
            want.insert(d.unwrap(), n.unwrap());
        }
        let got: BTreeMap<String, i64> = s["duckdb_by_date"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_i64().unwrap()))
            .collect();
        assert_eq!(got, want, "{table}");
        if table == "http_events" {
            assert!(want.len() >= 2, "26 hours span two dates");
        }

        let types = &s["duckdb_types"];
        assert_eq!(types["ts"], "TIMESTAMP");
        assert_eq!(types["id"], "BIGINT");
        assert_eq!(types["host"], "VARCHAR");
        assert_eq!(types["date"], "DATE");
    }
    let types = &seen["http_events"]["duckdb_types"];
    assert_eq!(types["from_cache"], "BOOLEAN");
    // Absent in the sink variant, still typed.
    assert_eq!(types["stale"], "BOOLEAN");
    assert_eq!(types["rate_delay_ms"], "BIGINT");
}
