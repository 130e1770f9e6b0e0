//! Stage 1, export: reads telemetry from one or many crawler SQLite files (every real
//! schema variant) and appends it, incrementally and crash-safely, to a hive-partitioned
//! Parquet dataset `DIR/<table>/date=YYYY-MM-DD/part-*.parquet`.
//!
//! Entry point: [`export`]. Sources are read read-only inside one transaction each (a
//! consistent snapshot of a file a crawler is writing), streamed in bounded batches, and
//! committed through the manifest protocol of [`manifest`].

pub mod manifest;
pub mod parquet;
pub mod read;
pub mod schema;
pub mod values;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use polars::prelude::{DataFrame, PolarsError};
use rusqlite::{Connection, OpenFlags};
use serde::Serialize;
use sha2::{Digest, Sha256};

use manifest::{Manifest, STAGING_DIR, SourceState};
use parquet::{MAX_ROW_GROUPS_PER_FILE, PartWriter, part_rel_path};
use read::{HostCache, TableCounts, hex, read_table, row_digest};
use schema::{FileLayout, TableLayout, TableSpec};

/// Errors of the export stage; each names the file (and table, column) to look at.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("{path}: not a SQLite database (or encrypted, or corrupt)")]
    NotSqlite { path: String },
    #[error("{path}: cannot open: {detail}")]
    Open { path: String, detail: String },
    #[error(
        "{path}: database is locked by another process (waited {waited_ms} ms); retry later or raise --busy-timeout"
    )]
    Locked { path: String, waited_ms: u64 },
    #[error("{path}: SQLite error: {source}")]
    Sqlite {
        path: String,
        #[source]
        source: rusqlite::Error,
    },
    #[error("{path}: no table {table}")]
    MissingTable { path: String, table: String },
    #[error("{path}: table {table} has no column {columns}")]
    MissingColumns {
        path: String,
        table: String,
        columns: String,
    },
    #[error(
        "{path}: the file was replaced since the last export ({detail}); its rows were not mixed in. Export it into a new dataset, or pass --replace-changed to drop its earlier rows and export it again"
    )]
    SourceReplaced { path: String, detail: String },
    #[error("{path}: table {table}: {source}")]
    Polars {
        path: String,
        table: String,
        #[source]
        source: PolarsError,
    },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: invalid manifest: {detail}", path.display())]
    Manifest { path: PathBuf, detail: String },
    #[error("{}: another export is running on this dataset", path.display())]
    Busy { path: PathBuf },
}

impl TelemetryError {
    pub fn sqlite(path: &str, e: rusqlite::Error) -> Self {
        use rusqlite::ErrorCode;
        match e.sqlite_error_code() {
            Some(ErrorCode::NotADatabase) => TelemetryError::NotSqlite { path: path.into() },
            Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => TelemetryError::Locked {
                path: path.into(),
                waited_ms: 0,
            },
            Some(ErrorCode::CannotOpen) => TelemetryError::Open {
                path: path.into(),
                detail: "file missing or unreadable".into(),
            },
            _ => TelemetryError::Sqlite {
                path: path.into(),
                source: e,
            },
        }
    }

    pub fn polars(path: &str, table: &str, e: PolarsError) -> Self {
        TelemetryError::Polars {
            path: path.into(),
            table: table.into(),
            source: e,
        }
    }

    pub fn io(path: &Path, e: std::io::Error) -> Self {
        TelemetryError::Io {
            path: path.to_owned(),
            source: e,
        }
    }
}

/// Rows per in-memory batch of one table and date: 32 row groups
/// (`parquet::ROW_GROUP_ROWS`) sorted by host, so that a host's rows in a batch fill
/// about one row group of their own when a fleet has a few dozen busy hosts.
pub const DEFAULT_BATCH_ROWS: usize = 524_288;

/// Settings of one export run.
#[derive(Debug, Clone)]
pub struct ExportOptions {
    pub out: PathBuf,
    /// Rows per Parquet row group and per in-memory batch (bounds memory).
    pub batch_rows: usize,
    /// How long to wait for a writer's lock before giving up on a file.
    pub busy_timeout: Duration,
    /// Re-export a replaced source from scratch instead of failing on it.
    pub replace_changed: bool,
    /// Draw a progress bar (only when stderr is a terminal).
    pub progress: bool,
    /// Export only the rows of this shard's hosts (every row is still read and checked,
    /// so every shard counts the same rejected rows).
    pub shard: Option<crate::shard::Shard>,
}

impl ExportOptions {
    pub fn new(out: impl Into<PathBuf>) -> Self {
        ExportOptions {
            out: out.into(),
            batch_rows: DEFAULT_BATCH_ROWS,
            busy_timeout: Duration::from_secs(5),
            replace_changed: false,
            progress: true,
            shard: None,
        }
    }
}

/// What happened to one source file.
#[derive(Debug, Clone, Serialize)]
pub struct SourceReport {
    pub source: String,
    /// `exported`, `replaced` (re-exported from scratch), `repaired` (re-exported from
    /// scratch to restore missing part files) or `failed`.
    pub outcome: String,
    pub error: Option<String>,
    /// Listed part files that were missing from the dataset at the start of the run.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub missing_parts: Vec<String>,
    /// Dates whose rows are lost, per table (missing parts the source could not restore).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub incomplete: BTreeMap<String, BTreeSet<String>>,
    /// Per stream (`http_events`, `breaker_transitions`,
    /// `breaker_transitions@breaker_events`, `breaker_outcomes@breaker_events`, ...): rows
    /// read, exported, rejected by reason, nulled by column.
    pub tables: BTreeMap<String, TableReport>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct TableReport {
    pub sqlite_table: String,
    pub rows_read: u64,
    pub rows_exported: u64,
    pub rejected: BTreeMap<String, u64>,
    pub nulled: BTreeMap<String, u64>,
    /// Values set to NULL or clamped because they were outside what their column can
    /// mean, per `column: reason`.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub adjusted: BTreeMap<String, u64>,
    /// Rows of hosts another shard exports (`--shard`).
    #[serde(skip_serializing_if = "is_zero")]
    pub other_shards: u64,
    pub high_water_id: i64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Summary of one export run (printed by the CLI; times are not part of any file).
#[derive(Debug, Clone, Serialize)]
pub struct ExportSummary {
    pub dataset: String,
    pub run: u64,
    pub sources: Vec<SourceReport>,
    pub rows_read: u64,
    pub rows_exported: u64,
    pub rows_rejected: u64,
    /// Rows read and left to other shards (`--shard`).
    pub rows_other_shards: u64,
    pub parts_written: usize,
    pub elapsed_s: f64,
}

impl ExportSummary {
    pub fn failed(&self) -> impl Iterator<Item = &SourceReport> {
        self.sources.iter().filter(|s| s.outcome == "failed")
    }
}

/// A short, stable id for a source label, used in part file names.
fn source_id(label: &str) -> String {
    hex(&Sha256::digest(label.as_bytes())[..4])
}

/// Exports every source into `opts.out`. A source that cannot be used is reported as
/// failed in the summary, and nothing of it is written; the others are committed.
/// Errors returned here concern the dataset itself (lock, manifest, disk).
pub fn export(sources: &[PathBuf], opts: &ExportOptions) -> Result<ExportSummary, TelemetryError> {
    let started = Instant::now();
    let out = &opts.out;
    std::fs::create_dir_all(out).map_err(|e| TelemetryError::io(out, e))?;
    let lock_path = out.join("_lock");
    let lock = File::create(&lock_path).map_err(|e| TelemetryError::io(&lock_path, e))?;
    lock.try_lock()
        .map_err(|_| TelemetryError::Busy { path: out.clone() })?;

    let mut manifest = Manifest::load(out)?;
    // One dataset holds one shard's hosts (or all of them), night after night.
    let shard = opts.shard.map(|s| s.to_string());
    if manifest.runs > 0 && manifest.shard != shard {
        let held = |s: &Option<String>| {
            s.as_ref()
                .map_or("every host".to_owned(), |s| format!("shard {s}"))
        };
        return Err(TelemetryError::Manifest {
            path: out.join(manifest::MANIFEST_FILE),
            detail: format!(
                "the dataset holds {}, this export is for {}; export each shard into its own folder",
                held(&manifest.shard),
                held(&shard)
            ),
        });
    }
    manifest.shard = shard;
    let (moved, deleted) = manifest::recover(out, &manifest)?;
    if moved + deleted > 0 {
        tracing::warn!(
            moved,
            deleted,
            "recovered the dataset after an interrupted run"
        );
    }
    let run = manifest.runs + 1;
    let staging = out.join(STAGING_DIR);

    let mut reports = Vec::new();
    let mut to_publish: Vec<String> = Vec::new();
    let mut to_delete: Vec<String> = Vec::new();
    let mut seen = BTreeSet::new();
    for path in sources {
        let label = path.to_string_lossy().into_owned();
        if !seen.insert(label.clone()) {
            continue;
        }
        let previous = manifest.sources.get(&label);
        let missing = previous.map(|p| p.missing_parts(out)).unwrap_or_default();
        if !missing.is_empty() {
            tracing::warn!(source = %label, parts = ?missing, "part files listed in the manifest are missing; exporting the source again from scratch");
        }
        // Rows lost earlier come back too once the source is given again.
        let rebuild = !missing.is_empty() || previous.is_some_and(|p| !p.incomplete.is_empty());
        match export_source(path, &label, previous, rebuild, run, &staging, opts) {
            Ok(done) => {
                let mut state = if done.replaced {
                    to_delete.extend(previous.map(|p| p.parts.clone()).unwrap_or_default());
                    SourceState::default()
                } else {
                    previous.cloned().unwrap_or_default()
                };
                state.fingerprint = done.fingerprint.or(state.fingerprint);
                let mut report = SourceReport {
                    source: label.clone(),
                    outcome: match (done.replaced, rebuild) {
                        (true, true) => "repaired",
                        (true, false) => "replaced",
                        _ => "exported",
                    }
                    .into(),
                    error: None,
                    missing_parts: missing,
                    incomplete: BTreeMap::new(),
                    tables: BTreeMap::new(),
                };
                for (name, (layout, counts, digest)) in done.tables {
                    let t = state.tables.entry(name.clone()).or_default();
                    t.sqlite_table = layout.sqlite_table.clone();
                    if let Some(max) = counts.max_id {
                        t.high_water_id = max;
                        t.high_water_digest = digest;
                    }
                    // Known only when read from the source's first row (a manifest written
                    // before the field existed leaves it unknown).
                    let from_first_row = t.rows_read == 0 || state.first_event_us.is_some();
                    t.rows_read += counts.rows_read;
                    t.rows_exported += counts.rows_exported;
                    if layout.spec.name == schema::HTTP_EVENTS.name
                        && from_first_row
                        && let Some(first) = counts.first_ts_us
                    {
                        state.first_event_us =
                            Some(state.first_event_us.map_or(first, |f| f.min(first)));
                    }
                    add_counts(
                        state.rejected.entry(name.clone()).or_default(),
                        &counts.rejected,
                    );
                    add_counts(
                        state.nulled.entry(name.clone()).or_default(),
                        &counts.nulled,
                    );
                    add_counts(
                        state.adjusted.entry(name.clone()).or_default(),
                        &counts.adjusted,
                    );
                    report.tables.insert(
                        name,
                        TableReport {
                            sqlite_table: layout.sqlite_table,
                            rows_read: counts.rows_read,
                            rows_exported: counts.rows_exported,
                            rejected: counts.rejected,
                            nulled: counts.nulled,
                            adjusted: counts.adjusted,
                            other_shards: counts.other_shards,
                            high_water_id: t.high_water_id,
                        },
                    );
                }
                state.rejected.retain(|_, m| !m.is_empty());
                state.nulled.retain(|_, m| !m.is_empty());
                state.adjusted.retain(|_, m| !m.is_empty());
                if !done.parts.is_empty() {
                    state.last_run = run;
                }
                for part in &done.parts {
                    state.parts.push(part.clone());
                    to_publish.push(part.clone());
                }
                manifest.sources.insert(label, state);
                reports.push(report);
            }
            Err(e) => {
                tracing::error!("{e}");
                // Whatever else failed, the lost parts are no longer listed: the
                // dataset stays readable and says which dates are incomplete.
                let incomplete = match manifest.sources.get_mut(&label) {
                    Some(state) if !missing.is_empty() => {
                        state.forget_parts(&missing);
                        state.incomplete.clone()
                    }
                    _ => BTreeMap::new(),
                };
                reports.push(SourceReport {
                    source: label,
                    outcome: "failed".into(),
                    error: Some(e.to_string()),
                    missing_parts: missing,
                    incomplete,
                    tables: BTreeMap::new(),
                });
            }
        }
    }
    // Sources not given this time cannot restore their missing parts.
    for (label, state) in manifest.sources.iter_mut() {
        if seen.contains(label) {
            continue;
        }
        let missing = state.missing_parts(out);
        if missing.is_empty() {
            continue;
        }
        tracing::warn!(source = %label, parts = ?missing, "part files listed in the manifest are missing and the source was not given: its dates are marked incomplete");
        state.forget_parts(&missing);
        reports.push(SourceReport {
            source: label.clone(),
            outcome: "incomplete".into(),
            error: None,
            missing_parts: missing,
            incomplete: state.incomplete.clone(),
            tables: BTreeMap::new(),
        });
    }

    failpoint("export:staged");
    // Commit point: the manifest that lists the new parts replaces the old one.
    if !to_publish.is_empty() || !to_delete.is_empty() {
        manifest.runs = run;
    }
    manifest.save(out)?;
    failpoint("export:committed");
    for rel in &to_publish {
        manifest::publish(&staging.join(rel), &out.join(rel))?;
    }
    for rel in &to_delete {
        let p = out.join(rel);
        if let Err(e) = std::fs::remove_file(&p)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            return Err(TelemetryError::io(&p, e));
        }
    }
    if staging.exists() {
        std::fs::remove_dir_all(&staging).map_err(|e| TelemetryError::io(&staging, e))?;
    }

    let sum = |f: fn(&TableReport) -> u64| -> u64 {
        reports.iter().flat_map(|r| r.tables.values()).map(f).sum()
    };
    Ok(ExportSummary {
        dataset: out.to_string_lossy().into_owned(),
        run: manifest.runs,
        rows_read: sum(|t| t.rows_read),
        rows_exported: sum(|t| t.rows_exported),
        rows_rejected: sum(|t| t.rejected.values().sum()),
        rows_other_shards: sum(|t| t.other_shards),
        parts_written: to_publish.len(),
        sources: reports,
        elapsed_s: started.elapsed().as_secs_f64(),
    })
}

/// Test hook: `BREAKER_ADVISOR_FAILPOINT=<name>` aborts the process at that point, as a
/// crash or `kill -9` would, so tests can check that the dataset survives it.
fn failpoint(name: &str) {
    if std::env::var_os("BREAKER_ADVISOR_FAILPOINT").is_some_and(|v| v == name) {
        tracing::error!(failpoint = name, "aborting at failpoint");
        std::process::abort();
    }
}

fn add_counts(into: &mut BTreeMap<String, u64>, from: &BTreeMap<String, u64>) {
    for (k, v) in from {
        *into.entry(k.clone()).or_default() += v;
    }
}

/// One source's staged output, not yet committed.
struct SourceExport {
    fingerprint: Option<String>,
    replaced: bool,
    /// Per stream (see `TableLayout::stream`): layout, counts and the digest of the new
    /// high-water row.
    tables: BTreeMap<String, (TableLayout, TableCounts, Option<String>)>,
    parts: Vec<String>,
}

fn open_snapshot(path: &Path, label: &str, busy: Duration) -> Result<Connection, TelemetryError> {
    if !path.is_file() {
        return Err(TelemetryError::Open {
            path: label.into(),
            detail: "no such file".into(),
        });
    }
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn =
        Connection::open_with_flags(path, flags).map_err(|e| TelemetryError::sqlite(label, e))?;
    conn.busy_timeout(busy)
        .map_err(|e| TelemetryError::sqlite(label, e))?;
    // A deferred transaction takes its snapshot at the first read and keeps it until the
    // end, so every table is read as of the same instant even while a crawler writes.
    conn.execute_batch("BEGIN DEFERRED")
        .map_err(|e| TelemetryError::sqlite(label, e))?;
    Ok(conn)
}

/// Exports one source into the staging folder: the rows above its high-water marks, or
/// all of them when the source was replaced (with `replace_changed`) or when `rebuild`
/// asks to restore missing part files and the source still holds every exported row.
fn export_source(
    path: &Path,
    label: &str,
    previous: Option<&SourceState>,
    rebuild: bool,
    run: u64,
    staging: &Path,
    opts: &ExportOptions,
) -> Result<SourceExport, TelemetryError> {
    let conn = open_snapshot(path, label, opts.busy_timeout)?;
    let with_wait = |e: TelemetryError| match e {
        TelemetryError::Locked { path, .. } => TelemetryError::Locked {
            path,
            waited_ms: opts.busy_timeout.as_millis() as u64,
        },
        other => other,
    };
    let layout = schema::detect(&conn, label).map_err(with_wait)?;
    for t in &layout.tables {
        let absent = t.absent_columns();
        if !absent.is_empty() && t.events.is_none() {
            tracing::debug!(source = label, table = %t.sqlite_table, ?absent, "columns absent, exported as NULL");
        }
    }
    let http = &layout.tables[0];
    let fingerprint = row_digest(&conn, label, http, ">= ?1", i64::MIN).map_err(with_wait)?;

    let replaced = match previous {
        Some(prev) => {
            match continuity_break(&conn, label, &layout, prev, fingerprint.as_deref())? {
                // The source still holds every exported row: exporting it again from
                // scratch restores the missing parts.
                None => rebuild,
                Some(detail) if opts.replace_changed => {
                    tracing::warn!(source = label, %detail, "source replaced; exporting it again from scratch");
                    true
                }
                Some(detail) => {
                    return Err(TelemetryError::SourceReplaced {
                        path: label.into(),
                        detail,
                    });
                }
            }
        }
        None => false,
    };
    let previous = if replaced { None } else { previous };

    let total_estimate = estimate_new_rows(&conn, &layout, previous);
    let bar = progress_bar(opts.progress, total_estimate, label);
    let sid = source_id(label);
    let mut hosts = HostCache::default();
    let mut tables = BTreeMap::new();
    let mut parts = Vec::new();

    for table in &layout.tables {
        let after = previous
            .and_then(|p| p.tables.get(&table.stream()))
            .map_or(i64::MIN, |t| t.high_water_id);
        let part_meta = PartMeta {
            label,
            fingerprint: fingerprint.as_deref().unwrap_or(""),
            run,
            source_id: &sid,
        };
        let (counts, table_parts) = export_table(
            &conn, table, after, &part_meta, staging, opts, &mut hosts, &bar,
        )?;
        let digest = match counts.max_id {
            Some(max) => row_digest(&conn, label, table, "= ?1", max)?,
            None => None,
        };
        parts.extend(table_parts);
        tables.insert(table.stream(), (table.clone(), counts, digest));
    }
    bar.finish_and_clear();
    conn.execute_batch("COMMIT")
        .map_err(|e| TelemetryError::sqlite(label, e))?;
    Ok(SourceExport {
        fingerprint,
        replaced,
        tables,
        parts,
    })
}

/// Says why a source no longer continues what was exported from it, if it does not.
fn continuity_break(
    conn: &Connection,
    label: &str,
    layout: &FileLayout,
    prev: &SourceState,
    fingerprint: Option<&str>,
) -> Result<Option<String>, TelemetryError> {
    if let (Some(old), Some(new)) = (prev.fingerprint.as_deref(), fingerprint)
        && old != new
    {
        return Ok(Some(format!(
            "its first http_events row changed (fingerprint {old} -> {new})"
        )));
    }
    for table in &layout.tables {
        let Some(state) = prev.tables.get(&table.stream()) else {
            continue;
        };
        if state.sqlite_table != table.sqlite_table {
            return Ok(Some(format!(
                "{} now come from table {} instead of {}",
                table.spec.name, table.sqlite_table, state.sqlite_table
            )));
        }
        let Some(want) = state.high_water_digest.as_deref() else {
            continue;
        };
        match row_digest(conn, label, table, "= ?1", state.high_water_id)? {
            Some(got) if got == want => {}
            Some(_) => {
                return Ok(Some(format!(
                    "row {} of {} differs from the one exported",
                    state.high_water_id, table.sqlite_table
                )));
            }
            None => {
                return Ok(Some(format!(
                    "row {} of {} is gone (high-water mark went backwards)",
                    state.high_water_id, table.sqlite_table
                )));
            }
        }
    }
    Ok(None)
}

fn estimate_new_rows(
    conn: &Connection,
    layout: &FileLayout,
    previous: Option<&SourceState>,
) -> u64 {
    layout
        .tables
        .iter()
        .map(|t| {
            let after = previous
                .and_then(|p| p.tables.get(&t.stream()))
                .map_or(0, |s| s.high_water_id);
            let sql = format!(
                "SELECT max(\"{}\") FROM \"{}\"",
                t.id_column, t.sqlite_table
            );
            let max: Option<i64> = conn.query_row(&sql, [], |r| r.get(0)).unwrap_or(None);
            max.map_or(0, |m| (m - after).max(0) as u64)
        })
        .sum()
}

fn progress_bar(enabled: bool, total: u64, label: &str) -> ProgressBar {
    if !enabled || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template(
            "{msg} [{bar:30}] {human_pos}/{human_len} rows {per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_message(label.to_owned());
    bar
}

/// What every part file of one source says about where it came from.
struct PartMeta<'a> {
    label: &'a str,
    fingerprint: &'a str,
    run: u64,
    source_id: &'a str,
}

/// Streams one table: this thread reads SQLite, a second one encodes and compresses
/// Parquet, with at most a few batches in flight between them.
#[allow(clippy::too_many_arguments)]
fn export_table(
    conn: &Connection,
    table: &TableLayout,
    after_id: i64,
    meta: &PartMeta<'_>,
    staging: &Path,
    opts: &ExportOptions,
    hosts: &mut HostCache,
    bar: &ProgressBar,
) -> Result<(TableCounts, Vec<String>), TelemetryError> {
    let spec: &'static TableSpec = table.spec;
    let label = meta.label;
    let (tx, rx) = mpsc::sync_channel::<(i32, DataFrame)>(2);
    std::thread::scope(|scope| {
        let writer = scope.spawn(move || -> Result<Vec<String>, TelemetryError> {
            let polars_err = |e| TelemetryError::polars(label, spec.name, e);
            let create = |date: i32, file: usize| {
                let rel = part_rel_path(
                    spec.name,
                    date,
                    meta.run,
                    meta.source_id,
                    &table.sqlite_table,
                    file,
                );
                let metadata = vec![
                    ("breaker_advisor.source".to_owned(), label.to_owned()),
                    (
                        "breaker_advisor.source_fingerprint".to_owned(),
                        meta.fingerprint.to_owned(),
                    ),
                    ("breaker_advisor.run".to_owned(), meta.run.to_string()),
                ];
                PartWriter::create(&staging.join(&rel), rel, spec, metadata).map_err(polars_err)
            };
            // Per date: the open part file and its number among the date's files.
            let mut parts: BTreeMap<i32, (PartWriter, usize)> = BTreeMap::new();
            let mut written = Vec::new();
            for (date, df) in rx {
                if parts
                    .get(&date)
                    .is_some_and(|(p, _)| p.row_groups >= MAX_ROW_GROUPS_PER_FILE)
                {
                    let (full, file) = parts.remove(&date).expect("just seen");
                    written.push(full.finish().map_err(polars_err)?.0);
                    parts.insert(date, (create(date, file + 1)?, file + 1));
                }
                let part = match parts.entry(date) {
                    std::collections::btree_map::Entry::Occupied(o) => o.into_mut(),
                    std::collections::btree_map::Entry::Vacant(v) => {
                        v.insert((create(date, 0)?, 0))
                    }
                };
                part.0.write(&df).map_err(polars_err)?;
            }
            for (part, _) in parts.into_values() {
                written.push(part.finish().map_err(polars_err)?.0);
            }
            Ok(written)
        });
        let mut sink = |date: i32, df: DataFrame| -> Result<(), TelemetryError> {
            // A send fails only when the writer stopped on an error; join() reports it.
            tx.send((date, df)).map_err(|_| TelemetryError::Open {
                path: label.into(),
                detail: "parquet writer stopped".into(),
            })
        };
        let counts = read_table(
            conn,
            label,
            table,
            after_id,
            opts.batch_rows,
            hosts,
            opts.shard,
            &mut sink,
            &|n| bar.inc(n),
        );
        drop(tx);
        // The writer's own error explains a failed send better than the send does.
        let parts = writer.join().expect("parquet writer thread panicked")?;
        Ok((counts?, parts))
    })
}
