//! Helpers shared by the integration tests: simulated telemetry, SQLite fixtures from
//! SQL text, reading the exported dataset back with Polars, and comparing patched texts.

use std::path::{Path, PathBuf};

use breaker_advisor::advise::{Num, RateChange};
use breaker_advisor::simulate::{DEFAULT_START_S, SimOptions, Variant, simulate};
use breaker_advisor::telemetry::parquet::scan_table;
use breaker_advisor::telemetry::schema::TABLES;
use polars::prelude::*;

/// The breaker-advisor binary built for these tests.
pub fn bin() -> assert_cmd::Command {
    assert_cmd::Command::cargo_bin("breaker-advisor").expect("binary")
}

/// The sample's telemetry files (`data-samples/telemetry*.sqlite`, one per machine),
/// sorted, as absolute paths.
pub fn sample_telemetry() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("data-samples");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("data-samples/")
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("telemetry") && n.ends_with(".sqlite"))
        })
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no data-samples/telemetry*.sqlite");
    files
}

/// Copies the sample config files into `dir` (so tests may let `run --write` edit them).
pub fn sample_configs(dir: &Path) -> (PathBuf, PathBuf) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let b = dir.join("breakers.yaml");
    let r = dir.join("ratelimits.yaml");
    std::fs::copy(root.join("data-samples/breakers.yaml"), &b).unwrap();
    std::fs::copy(root.join("data-samples/ratelimits.yaml"), &r).unwrap();
    (b, r)
}

/// `breaker-advisor run` in `dir` on `config` and `rates`, with the sample telemetry
/// when `telemetry`; the caller adds `--out` and the rest.
pub fn run_in(dir: &Path, config: &Path, rates: &Path, telemetry: bool) -> assert_cmd::Command {
    let mut cmd = bin();
    cmd.current_dir(dir).arg("run");
    if telemetry {
        for f in sample_telemetry() {
            cmd.arg("--telemetry").arg(f);
        }
    }
    cmd.arg("--config")
        .arg(config)
        .arg("--ratelimits")
        .arg(rates);
    cmd
}

/// Simulates `hours` of telemetry of one machine into `dir` and returns the SQLite path.
pub fn sim(dir: &Path, variant: Variant, hours: f64, hosts: usize, rps: f64, seed: u64) -> PathBuf {
    let summary = simulate(&SimOptions {
        variant,
        start_s: DEFAULT_START_S,
        ..SimOptions::new(dir, hours, hosts, rps, seed)
    })
    .expect("simulate");
    summary.telemetry[0].clone()
}

/// Simulates a fleet of `machines` into `dir` and returns their SQLite paths.
pub fn sim_fleet(dir: &Path, opts: SimOptions) -> Vec<PathBuf> {
    simulate(&SimOptions {
        out: dir.to_owned(),
        ..opts
    })
    .expect("simulate")
    .telemetry
}

/// Creates a SQLite file from SQL text.
pub fn sqlite_from_sql(path: &Path, sql: &str) -> PathBuf {
    let conn = rusqlite::Connection::open(path).expect("create sqlite");
    conn.execute_batch(sql).expect("fixture SQL");
    path.to_owned()
}

/// Reads one exported table (all partitions, with the hive `date` column) the way
/// `analyze` does, sorted by source and id.
pub fn read_dataset(dataset: &Path, table: &str) -> DataFrame {
    let spec = TABLES
        .iter()
        .find(|t| t.name == table)
        .expect("an exported table");
    scan_table(dataset, spec)
        .expect("scan dataset")
        .sort(["source", "id"], SortMultipleOptions::default())
        .collect()
        .expect("collect dataset")
}

/// Every file under `dir` with its bytes, skipping the lock and staging area.
pub fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("read_dir") {
            let entry = entry.expect("entry");
            let p = entry.path();
            let rel = p.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
            if rel == "_lock" || rel.starts_with("_staging") {
                continue;
            }
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push((rel, std::fs::read(&p).expect("read")));
            }
        }
    }
    out.sort();
    out
}

pub fn count(conn: &rusqlite::Connection, sql: &str) -> i64 {
    conn.query_row(sql, [], |r| r.get(0)).expect(sql)
}

pub fn col_i64(df: &DataFrame, name: &str) -> Vec<Option<i64>> {
    df.column(name)
        .expect(name)
        .as_materialized_series()
        .cast(&DataType::Int64)
        .expect("cast")
        .i64()
        .expect("i64")
        .iter()
        .collect()
}

pub fn col_str(df: &DataFrame, name: &str) -> Vec<Option<String>> {
    df.column(name)
        .expect(name)
        .str()
        .expect("str")
        .iter()
        .map(|v| v.map(str::to_owned))
        .collect()
}

pub fn col_bool(df: &DataFrame, name: &str) -> Vec<Option<bool>> {
    df.column(name)
        .expect(name)
        .bool()
        .expect("bool")
        .iter()
        .collect()
}

/// Microseconds since the epoch of the `ts` column.
pub fn col_ts_us(df: &DataFrame, name: &str) -> Vec<Option<i64>> {
    df.column(name)
        .expect(name)
        .as_materialized_series()
        .to_physical_repr()
        .i64()
        .expect("datetime physical")
        .iter()
        .collect()
}

/// A rates change to `to` (the other fields do not matter to `apply`).
pub fn rate_change(host: &str, role: &str, to: Vec<String>) -> RateChange {
    RateChange {
        host: host.into(),
        role: role.into(),
        from: vec![],
        to,
        multiplier_from: Num::Int(1),
        multiplier_to: Num::Float(0.8),
        base: vec![],
        reason: "test".into(),
        evidence: Default::default(),
    }
}

/// Lines of `after` that are not in `before` (multiset difference, in order).
pub fn added_lines<'a>(before: &str, after: &'a str) -> Vec<&'a str> {
    let mut pool: Vec<&str> = before.lines().collect();
    after
        .lines()
        .filter(|l| match pool.iter().position(|p| p == l) {
            Some(i) => {
                pool.remove(i);
                false
            }
            None => true,
        })
        .collect()
}

/// Sets a breakers.yaml value back to where `change` found it, as a person would.
pub fn set_back(config: &Path, change: &breaker_advisor::advise::BreakerChange) {
    use breaker_advisor::config::edit::{BreakerEdit, patch_breakers};
    let text = std::fs::read_to_string(config).unwrap();
    let back = BreakerEdit {
        host: Some(change.host.clone()),
        role: change.role.clone(),
        key: change.key,
        value: change.from.as_f64() as i64,
    };
    std::fs::write(config, patch_breakers(&text, config, &[back]).unwrap()).unwrap();
}
