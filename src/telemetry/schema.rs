//! The canonical tables we export and the detection of which real telemetry variant a
//! SQLite file holds (`PRAGMA table_info`), mapped onto those tables.

use std::collections::BTreeSet;

use rusqlite::Connection;

use super::TelemetryError;

/// Version of the exported Parquet schema, written into every file's key-value metadata
/// and into the manifest. Bump it when a column is added, removed or retyped.
/// Version 2 added `breaker_transitions.origin` and the `breaker_outcomes` table; a
/// version 1 dataset is read as it is (the new column is NULL in its old parts) and its
/// manifest is carried forward (see `manifest::Manifest::load`).
pub const SCHEMA_VERSION: u32 = 2;

/// How a canonical column is decoded from SQLite's dynamically typed values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Free text, kept as is.
    Text,
    /// Integer; integral reals and numeric text are accepted.
    Int,
    /// 0/1 (or true/false text).
    Bool,
    /// Breaker state, normalised to `closed|open|half_open`.
    State,
    /// What the breaker recorded: `success|failure|none|cache-hit|blocked`.
    Recorded,
}

/// One canonical column of an exported table and the SQLite names it may have.
#[derive(Debug)]
pub struct ColumnSpec {
    pub name: &'static str,
    pub kind: Kind,
    /// Source column names, first match wins.
    pub aliases: &'static [&'static str],
    /// What an `Int` value can mean (None: any integer).
    pub range: Option<Range>,
}

/// The values an integer column can mean. Servers, clocks and crawler bugs can put
/// anything in a column, and later stages size loops and series by these values, so the
/// export bounds them: a value below `min` means nothing and is exported as NULL; one
/// above `max` is clamped to `max` (a Retry-After of 10^12 s says "not today", which
/// `max` says too). Both are counted per column and reason (`adjusted` in the manifest).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    pub min: i64,
    pub max: i64,
    /// Why a value above `max` was clamped, for the counts.
    pub above: &'static str,
}

/// The longest duration in seconds a column keeps: a day, the default window and the
/// longest setting the advisor starts from (the crawler caps the cooldowns it sets,
/// `retry_after_cap_s`, 900 s by default).
pub const MAX_SECONDS: i64 = crate::config::MAX_PLAUSIBLE_SECONDS as i64;
/// The same day in milliseconds (waits, elapsed times).
pub const MAX_MILLISECONDS: i64 = MAX_SECONDS * 1_000;
/// The most retries one row can stand for. The crawler retries 3 times by default; each
/// retried attempt is one call in the replay, so this bounds the calls a row makes.
pub const MAX_RETRY_COUNT: i64 = 100;
/// The highest consecutive-failure counter a breaker listener can report meaningfully.
pub const MAX_FAIL_COUNTER: i64 = 1_000_000;
/// The longest text value kept (bytes): run ids, roles, methods, hashes and error names
/// are short; a longer value is cut at a character boundary.
pub const MAX_TEXT_BYTES: usize = 256;

/// An exported table. Every table also has the fixed leading columns
/// `source, id, ts, host` (see [`FIXED_COLUMNS`]).
#[derive(Debug)]
pub struct TableSpec {
    /// Name of the dataset folder and of the SQLite table read.
    pub name: &'static str,
    /// Columns that must exist in the SQLite table (besides host and time).
    pub required: &'static [&'static str],
    pub columns: &'static [ColumnSpec],
}

/// Columns every exported table starts with.
pub const FIXED_COLUMNS: [&str; 4] = ["source", "id", "ts", "host"];

const fn col(name: &'static str, kind: Kind) -> ColumnSpec {
    ColumnSpec {
        name,
        kind,
        aliases: &[],
        range: None,
    }
}

/// An integer column whose values mean something between 0 and `max` (`above`: why a
/// larger one is clamped).
const fn bounded(name: &'static str, max: i64, above: &'static str) -> ColumnSpec {
    ColumnSpec {
        name,
        kind: Kind::Int,
        aliases: &[],
        range: Some(Range { min: 0, max, above }),
    }
}

const ABOVE_A_DAY_S: &str = "above 86400 s (a day), clamped";
const ABOVE_A_DAY_MS: &str = "above 86400000 ms (a day), clamped";

pub static HTTP_EVENTS: TableSpec = TableSpec {
    name: "http_events",
    required: &["status"],
    columns: &[
        col("run_id", Kind::Text),
        col("role", Kind::Text),
        col("method", Kind::Text),
        col("status", Kind::Int),
        col("url_hash", Kind::Text),
        col("from_cache", Kind::Bool),
        col("revalidated", Kind::Bool),
        col("stale", Kind::Bool),
        bounded("retry_count", MAX_RETRY_COUNT, "above 100 retries, clamped"),
        bounded("retry_after_s", MAX_SECONDS, ABOVE_A_DAY_S),
        bounded("rate_delay_ms", MAX_MILLISECONDS, ABOVE_A_DAY_MS),
        ColumnSpec {
            name: "breaker_state",
            kind: Kind::State,
            aliases: &["breaker_state", "breaker_host_state"],
            range: None,
        },
        col("breaker_recorded", Kind::Recorded),
        bounded("elapsed_ms", MAX_MILLISECONDS, ABOVE_A_DAY_MS),
        col("error", Kind::Text),
    ],
};

pub static BREAKER_TRANSITIONS: TableSpec = TableSpec {
    name: "breaker_transitions",
    required: &["old_state", "new_state"],
    columns: &[
        col("run_id", Kind::Text),
        col("scope", Kind::Text),
        col("old_state", Kind::State),
        col("new_state", Kind::State),
        bounded("reset_timeout_s", MAX_SECONDS, ABOVE_A_DAY_S),
        // The SQLite table the transition was read from: `breaker_transitions` or
        // `breaker_events` (a crawler may write both; `analyze` counts each once).
        col("origin", Kind::Text),
    ],
};

/// What each breaker counted, from the crawler listener's `breaker_failure` and
/// `breaker_success` events in `breaker_events`: the exact record, when it is logged.
pub static BREAKER_OUTCOMES: TableSpec = TableSpec {
    name: "breaker_outcomes",
    required: &[],
    columns: &[
        col("run_id", Kind::Text),
        col("scope", Kind::Text),
        // `failure` or `success`.
        col("outcome", Kind::Text),
        // The breaker's state as the listener saw it (before a trip, after a close).
        col("state", Kind::State),
        // pybreaker's consecutive-failure counter (after the increment; 0 on success).
        bounded("fail_counter", MAX_FAIL_COUNTER, "above 1000000, clamped"),
        // The exception class the failure carried (`HTTPStatusError`, `ReadTimeout`).
        col("exc_type", Kind::Text),
    ],
};

pub static RATE_EVENTS: TableSpec = TableSpec {
    name: "rate_events",
    required: &["action"],
    columns: &[
        col("run_id", Kind::Text),
        col("role", Kind::Text),
        col("action", Kind::Text),
        bounded("delay_ms", MAX_MILLISECONDS, ABOVE_A_DAY_MS),
        bounded("max_delay_ms", MAX_MILLISECONDS, ABOVE_A_DAY_MS),
    ],
};

/// All exported tables, in export order.
pub static TABLES: [&TableSpec; 4] = [
    &HTTP_EVENTS,
    &BREAKER_TRANSITIONS,
    &BREAKER_OUTCOMES,
    &RATE_EVENTS,
];

impl ColumnSpec {
    fn candidates(&self) -> impl Iterator<Item = &'static str> + '_ {
        let own: &[&'static str] = if self.aliases.is_empty() {
            std::slice::from_ref(&self.name)
        } else {
            self.aliases
        };
        own.iter().copied()
    }
}

/// Where the event time lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TimeColumn {
    /// `ts REAL`, epoch seconds.
    EpochSeconds(String),
    /// `timestamp TEXT`, ISO 8601 (UTC when no offset is given).
    Iso8601(String),
}

impl TimeColumn {
    pub fn name(&self) -> &str {
        match self {
            TimeColumn::EpochSeconds(n) | TimeColumn::Iso8601(n) => n,
        }
    }
}

/// Which rows of `breaker_events` a layout reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventRows {
    /// `breaker_state_change`: transitions.
    StateChange,
    /// `breaker_failure` and `breaker_success`: what the breaker counted.
    Outcome,
}

impl EventRows {
    fn filter(self) -> &'static str {
        match self {
            EventRows::StateChange => "event_type = 'breaker_state_change'",
            EventRows::Outcome => "event_type IN ('breaker_failure', 'breaker_success')",
        }
    }
}

/// How one canonical table is read from one SQLite table of one file: a *stream*. A
/// canonical table may be fed by several streams (transitions from `breaker_transitions`
/// and from `breaker_events`); each has its own high-water mark.
#[derive(Debug, Clone)]
pub struct TableLayout {
    pub spec: &'static TableSpec,
    /// The SQLite table read (differs from `spec.name` for `breaker_events`).
    pub sqlite_table: String,
    /// `id` when the table has it, else `rowid`.
    pub id_column: String,
    pub time: TimeColumn,
    pub host_column: String,
    /// Per canonical column, the SQLite column it comes from (None: exported as NULL).
    pub sources: Vec<Option<String>>,
    /// Set when rows come from `breaker_events` JSON payloads.
    pub events: Option<EventRows>,
}

/// Everything detected about one telemetry file.
#[derive(Debug, Clone)]
pub struct FileLayout {
    pub tables: Vec<TableLayout>,
}

/// Lists a table's columns, or None when the table does not exist.
fn table_columns(
    conn: &Connection,
    path: &str,
    table: &str,
) -> Result<Option<BTreeSet<String>>, TelemetryError> {
    let sql = format!("PRAGMA table_info(\"{table}\")");
    let mut stmt = conn
        .prepare(&sql)
        .map_err(|e| TelemetryError::sqlite(path, e))?;
    let names = stmt
        .query_map([], |row| row.get::<_, String>(1))
        .and_then(|rows| rows.collect::<Result<BTreeSet<_>, _>>())
        .map_err(|e| TelemetryError::sqlite(path, e))?;
    Ok(if names.is_empty() { None } else { Some(names) })
}

fn find_time(cols: &BTreeSet<String>) -> Option<TimeColumn> {
    if cols.contains("ts") {
        Some(TimeColumn::EpochSeconds("ts".into()))
    } else if cols.contains("timestamp") {
        Some(TimeColumn::Iso8601("timestamp".into()))
    } else {
        None
    }
}

fn layout_for(
    spec: &'static TableSpec,
    path: &str,
    cols: &BTreeSet<String>,
) -> Result<TableLayout, TelemetryError> {
    let mut missing: Vec<String> = Vec::new();
    if !cols.contains("host") {
        missing.push("host".into());
    }
    let time = find_time(cols);
    if time.is_none() {
        missing.push("ts|timestamp".into());
    }
    for req in spec.required {
        let spec_col = spec.columns.iter().find(|c| c.name == *req);
        let found = spec_col.is_some_and(|c| c.candidates().any(|n| cols.contains(n)));
        if !found {
            missing.push((*req).into());
        }
    }
    if !missing.is_empty() {
        return Err(TelemetryError::MissingColumns {
            path: path.into(),
            table: spec.name.into(),
            columns: missing.join(", "),
        });
    }
    let sources = spec
        .columns
        .iter()
        .map(|c| {
            c.candidates()
                .find(|n| cols.contains(*n))
                .map(str::to_owned)
        })
        .collect();
    Ok(TableLayout {
        spec,
        sqlite_table: spec.name.into(),
        id_column: if cols.contains("id") { "id" } else { "rowid" }.into(),
        time: time.expect("checked above"),
        host_column: "host".into(),
        sources,
        events: None,
    })
}

/// Detects the variant of a telemetry file. `http_events` is required; transitions come
/// from `breaker_transitions` and from `breaker_events` (both, when both exist: an empty
/// table beside a full one is not "no transitions"); the breaker's own failure and
/// success events from `breaker_events`; `rate_events` is exported when present.
pub fn detect(conn: &Connection, path: &str) -> Result<FileLayout, TelemetryError> {
    let http_cols =
        table_columns(conn, path, "http_events")?.ok_or_else(|| TelemetryError::MissingTable {
            path: path.into(),
            table: "http_events".into(),
        })?;
    let mut tables = vec![layout_for(&HTTP_EVENTS, path, &http_cols)?];

    if let Some(cols) = table_columns(conn, path, "breaker_transitions")? {
        tables.push(layout_for(&BREAKER_TRANSITIONS, path, &cols)?);
    }
    if let Some(cols) = table_columns(conn, path, "breaker_events")? {
        let mut missing = Vec::new();
        for need in ["event_type", "payload"] {
            if !cols.contains(need) {
                missing.push(need);
            }
        }
        let time = find_time(&cols);
        if time.is_none() {
            missing.push("timestamp");
        }
        if !missing.is_empty() {
            return Err(TelemetryError::MissingColumns {
                path: path.into(),
                table: "breaker_events".into(),
                columns: missing.join(", "),
            });
        }
        for (spec, rows) in [
            (&BREAKER_TRANSITIONS, EventRows::StateChange),
            (&BREAKER_OUTCOMES, EventRows::Outcome),
        ] {
            // Canonical columns are filled from the payload, except run_id and scope
            // when the table has them as columns.
            let sources = spec
                .columns
                .iter()
                .map(|c| match c.name {
                    "run_id" | "scope" if cols.contains(c.name) => Some(c.name.to_owned()),
                    _ => None,
                })
                .collect();
            tables.push(TableLayout {
                spec,
                sqlite_table: "breaker_events".into(),
                id_column: if cols.contains("id") { "id" } else { "rowid" }.into(),
                time: time.clone().expect("checked above"),
                host_column: if cols.contains("host") {
                    "host"
                } else {
                    "resolver"
                }
                .into(),
                sources,
                events: Some(rows),
            });
        }
    }

    if let Some(cols) = table_columns(conn, path, "rate_events")? {
        tables.push(layout_for(&RATE_EVENTS, path, &cols)?);
    }
    Ok(FileLayout { tables })
}

impl TableLayout {
    /// The stream's name: the manifest key of its high-water mark. The canonical table's
    /// name when it is read from the table of that name, else `table@sqlite_table`.
    pub fn stream(&self) -> String {
        if self.sqlite_table == self.spec.name {
            self.spec.name.to_owned()
        } else {
            format!("{}@{}", self.spec.name, self.sqlite_table)
        }
    }

    /// The SELECT that reads rows after a high-water mark, in id order. Column order:
    /// id, time, host, then one per canonical column (NULL when absent); for
    /// `breaker_events` also the JSON payload and the event type.
    pub fn select_sql(&self, condition: &str) -> String {
        let mut cols = vec![
            quote(&self.id_column),
            quote(self.time.name()),
            quote(&self.host_column),
        ];
        for src in &self.sources {
            cols.push(src.as_deref().map_or_else(|| "NULL".to_owned(), quote));
        }
        let mut filter = format!("{} {condition}", quote(&self.id_column));
        if let Some(rows) = self.events {
            cols.push("payload".into());
            cols.push("event_type".into());
            filter.push_str(" AND ");
            filter.push_str(rows.filter());
        }
        format!(
            "SELECT {} FROM {} WHERE {filter} ORDER BY {}",
            cols.join(", "),
            quote(&self.sqlite_table),
            quote(&self.id_column)
        )
    }

    /// Columns that exist in the canonical table but not in this file: exported as NULL.
    pub fn absent_columns(&self) -> Vec<&'static str> {
        self.spec
            .columns
            .iter()
            .zip(&self.sources)
            .filter(|(_, s)| s.is_none())
            .map(|(c, _)| c.name)
            .collect()
    }
}

fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}
