//! Streams one canonical table out of one SQLite file, in id order after a high-water
//! mark, as bounded per-date batches of typed columns. Unusable rows are counted by
//! reason; unusable optional values become NULL and are counted by column.

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};

use polars::prelude::*;
use rusqlite::Connection;
use rusqlite::types::{Value, ValueRef};
use sha2::{Digest, Sha256};

use super::TelemetryError;
use super::schema::{ColumnSpec, EventRows, Kind, MAX_TEXT_BYTES, TableLayout, TableSpec};
use super::values::{
    Decoded, TimeError, decode_bool, decode_int, decode_text, decode_time, parse_recorded,
    parse_state,
};
use crate::hostname::{HostError, normalize_host};

const US_PER_DAY: i64 = 86_400_000_000;
/// Distinct raw host spellings remembered; past this, names are normalised each time
/// (a hostile file with millions of hosts must not grow memory without bound).
const HOST_CACHE_LIMIT: usize = 100_000;

/// What reading one table produced, besides the batches.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TableCounts {
    /// Rows read (exported and rejected).
    pub rows_read: u64,
    pub rows_exported: u64,
    /// Rejected rows per reason (`null_host`, `unparsable_time`, ...).
    pub rejected: BTreeMap<String, u64>,
    /// Values set to NULL because they could not be decoded, per column.
    pub nulled: BTreeMap<String, u64>,
    /// Values outside what their column can mean, set to NULL or clamped, per
    /// `column: reason` (see [`super::schema::Range`]).
    pub adjusted: BTreeMap<String, u64>,
    /// Rows of hosts that another shard exports.
    pub other_shards: u64,
    /// The earliest time of a row that passed every check, whatever its shard.
    pub first_ts_us: Option<i64>,
    /// Highest id read, the next high-water mark.
    pub max_id: Option<i64>,
}

impl TableCounts {
    fn reject(&mut self, reason: &str) {
        *self.rejected.entry(reason.to_owned()).or_default() += 1;
    }
}

enum ColBuilder {
    Text(StringChunkedBuilder),
    Int(PrimitiveChunkedBuilder<Int64Type>),
    Bool(BooleanChunkedBuilder),
}

/// Column builders for one (table, date) batch.
struct Batch {
    len: usize,
    id: PrimitiveChunkedBuilder<Int64Type>,
    ts: PrimitiveChunkedBuilder<Int64Type>,
    host: StringChunkedBuilder,
    cols: Vec<ColBuilder>,
}

impl Batch {
    fn new(spec: &TableSpec, capacity: usize) -> Self {
        let cols = spec
            .columns
            .iter()
            .map(|c| match c.kind {
                Kind::Int => ColBuilder::Int(PrimitiveChunkedBuilder::new(c.name.into(), capacity)),
                Kind::Bool => ColBuilder::Bool(BooleanChunkedBuilder::new(c.name.into(), capacity)),
                Kind::Text | Kind::State | Kind::Recorded => {
                    ColBuilder::Text(StringChunkedBuilder::new(c.name.into(), capacity))
                }
            })
            .collect();
        Batch {
            len: 0,
            id: PrimitiveChunkedBuilder::new("id".into(), capacity),
            ts: PrimitiveChunkedBuilder::new("ts".into(), capacity),
            host: StringChunkedBuilder::new("host".into(), capacity),
            cols,
        }
    }

    fn finish(self, source: &str) -> PolarsResult<DataFrame> {
        let mut columns: Vec<Column> = Vec::with_capacity(4 + self.cols.len());
        columns.push(StringChunked::full("source".into(), source, self.len).into_column());
        columns.push(self.id.finish().into_column());
        columns.push(
            self.ts
                .finish()
                .into_datetime(TimeUnit::Microseconds, None)
                .into_column(),
        );
        columns.push(self.host.finish().into_column());
        for c in self.cols {
            columns.push(match c {
                ColBuilder::Text(b) => b.finish().into_column(),
                ColBuilder::Int(b) => b.finish().into_column(),
                ColBuilder::Bool(b) => b.finish().into_column(),
            });
        }
        DataFrame::new(self.len, columns)
    }
}

/// Caches host normalisation by raw bytes: the same few hosts repeat millions of times.
type Normalized = Result<Box<str>, HostError>;

#[derive(Default)]
pub struct HostCache {
    map: HashMap<Box<[u8]>, Normalized, BuildHasherDefault<Fnv1a>>,
    /// Holds the last result once the map is full.
    overflow: Option<Normalized>,
}

impl HostCache {
    fn normalize(&mut self, raw: &[u8]) -> Result<&str, HostError> {
        let slot = if self.map.contains_key(raw) {
            &self.map[raw]
        } else {
            let result = normalize_host(&String::from_utf8_lossy(raw)).map(String::into_boxed_str);
            if self.map.len() < HOST_CACHE_LIMIT {
                self.map.entry(raw.into()).or_insert(result)
            } else {
                self.overflow.insert(result)
            }
        };
        match slot {
            Ok(h) => Ok(h),
            Err(e) => Err(e.clone()),
        }
    }
}

/// FNV-1a: host names are short, and SipHash's DoS resistance buys nothing for a cache
/// that stops growing at [`HOST_CACHE_LIMIT`] entries.
#[derive(Default)]
pub struct Fnv1a(u64);

impl Hasher for Fnv1a {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        self.0 = h;
    }
}

fn json_to_value(v: Option<&serde_json::Value>) -> Value {
    match v {
        None | Some(serde_json::Value::Null) => Value::Null,
        Some(serde_json::Value::Number(n)) => n
            .as_i64()
            .map(Value::Integer)
            .or_else(|| n.as_f64().map(Value::Real))
            .unwrap_or(Value::Null),
        Some(serde_json::Value::String(s)) => Value::Text(s.clone()),
        Some(serde_json::Value::Bool(b)) => Value::Integer(i64::from(*b)),
        Some(other) => Value::Text(other.to_string()),
    }
}

/// A `breaker_events` payload: a JSON object.
fn parse_payload(raw: ValueRef<'_>) -> Option<serde_json::Map<String, serde_json::Value>> {
    let text = match raw {
        ValueRef::Text(b) | ValueRef::Blob(b) => b,
        _ => return None,
    };
    match serde_json::from_slice(text).ok()? {
        serde_json::Value::Object(map) => Some(map),
        _ => None,
    }
}

/// `breaker_failure` / `breaker_success` (the event type column) as an outcome.
fn event_outcome(v: ValueRef<'_>) -> Value {
    match v {
        ValueRef::Text(b"breaker_failure") => Value::Text("failure".into()),
        ValueRef::Text(b"breaker_success") => Value::Text("success".into()),
        _ => Value::Null,
    }
}

/// Rows per hand-over from the SQLite thread to the decoding thread.
const RAW_BATCH_ROWS: usize = 4_096;

/// One SQLite value copied out of its row, text and blobs into the batch's arena.
#[derive(Debug, Clone, Copy)]
enum Raw {
    Null,
    Int(i64),
    Real(f64),
    Text(usize, usize),
    Blob(usize, usize),
}

/// A run of rows as SQLite gave them, so that decoding runs on another thread while
/// SQLite steps on: reading the file and decoding it are about equal halves of the work.
struct RawBatch {
    width: usize,
    values: Vec<Raw>,
    arena: Vec<u8>,
}

impl RawBatch {
    fn new(width: usize) -> Self {
        RawBatch {
            width,
            values: Vec::with_capacity(width * RAW_BATCH_ROWS),
            arena: Vec::with_capacity(64 * RAW_BATCH_ROWS),
        }
    }

    fn push_row(&mut self, row: &rusqlite::Row<'_>) -> rusqlite::Result<()> {
        for i in 0..self.width {
            let raw = match row.get_ref(i)? {
                ValueRef::Null => Raw::Null,
                ValueRef::Integer(v) => Raw::Int(v),
                ValueRef::Real(v) => Raw::Real(v),
                ValueRef::Text(b) => {
                    self.arena.extend_from_slice(b);
                    Raw::Text(self.arena.len() - b.len(), b.len())
                }
                ValueRef::Blob(b) => {
                    self.arena.extend_from_slice(b);
                    Raw::Blob(self.arena.len() - b.len(), b.len())
                }
            };
            self.values.push(raw);
        }
        Ok(())
    }

    fn rows(&self) -> usize {
        self.values.len() / self.width
    }

    fn get(&self, row: usize, col: usize) -> ValueRef<'_> {
        match self.values[row * self.width + col] {
            Raw::Null => ValueRef::Null,
            Raw::Int(v) => ValueRef::Integer(v),
            Raw::Real(v) => ValueRef::Real(v),
            Raw::Text(s, n) => ValueRef::Text(&self.arena[s..s + n]),
            Raw::Blob(s, n) => ValueRef::Blob(&self.arena[s..s + n]),
        }
    }
}

/// Where decoded per-date batches go.
pub type BatchSink<'a> = dyn FnMut(i32, DataFrame) -> Result<(), TelemetryError> + Send + 'a;

/// Reads the rows of `layout` with id above `after_id` and hands each full per-date
/// batch (date as days since the Unix epoch) to `sink`. This thread steps SQLite; a
/// second one decodes.
#[allow(clippy::too_many_arguments)]
pub fn read_table(
    conn: &Connection,
    source: &str,
    layout: &TableLayout,
    after_id: i64,
    batch_rows: usize,
    hosts: &mut HostCache,
    shard: Option<crate::shard::Shard>,
    sink: &mut BatchSink<'_>,
    progress: &dyn Fn(u64),
) -> Result<TableCounts, TelemetryError> {
    let sql = layout.select_sql("> ?1");
    let sqlite_err = |e| TelemetryError::sqlite(source, e);
    let mut stmt = conn.prepare(&sql).map_err(sqlite_err)?;
    let width = stmt.column_count();
    let mut rows = stmt.query([after_id]).map_err(sqlite_err)?;
    let (tx, rx) = std::sync::mpsc::sync_channel::<RawBatch>(4);
    std::thread::scope(|scope| {
        let decoder = scope.spawn(move || {
            let mut decoder = Decoder::new(source, layout, batch_rows, shard);
            for raw in rx {
                for r in 0..raw.rows() {
                    decoder.row(|c| raw.get(r, c), hosts, sink)?;
                }
            }
            decoder.finish(sink)
        });
        let mut pumped: Result<(), TelemetryError> = Ok(());
        let mut raw = RawBatch::new(width);
        loop {
            match rows.next() {
                Ok(Some(row)) => {
                    if let Err(e) = raw.push_row(row) {
                        pumped = Err(sqlite_err(e));
                        break;
                    }
                    if raw.rows() == RAW_BATCH_ROWS {
                        progress(RAW_BATCH_ROWS as u64);
                        let full = std::mem::replace(&mut raw, RawBatch::new(width));
                        // A send fails only when the decoder stopped; join() says why.
                        if tx.send(full).is_err() {
                            break;
                        }
                    }
                }
                Ok(None) => {
                    progress(raw.rows() as u64);
                    let _ = tx.send(raw);
                    break;
                }
                Err(e) => {
                    pumped = Err(sqlite_err(e));
                    break;
                }
            }
        }
        drop(tx);
        let decoded = decoder.join().expect("telemetry decoder thread panicked");
        pumped?;
        decoded
    })
}

/// Turns rows of SQLite values into typed per-date column batches.
struct Decoder<'a> {
    source: &'a str,
    layout: &'a TableLayout,
    batch_rows: usize,
    counts: TableCounts,
    batches: BTreeMap<i32, Batch>,
    /// Where each canonical value comes from, and which ones can reject a row: worked
    /// out once, not per row.
    sources: Vec<ValueSource>,
    checks: Vec<(usize, RowCheck)>,
    shard: Option<crate::shard::Shard>,
}

impl<'a> Decoder<'a> {
    fn new(
        source: &'a str,
        layout: &'a TableLayout,
        batch_rows: usize,
        shard: Option<crate::shard::Shard>,
    ) -> Self {
        let spec = layout.spec;
        let sources = spec
            .columns
            .iter()
            .zip(&layout.sources)
            .map(|(c, column)| value_source(layout.events, c.name, column.is_some()))
            .collect();
        let checks = spec
            .columns
            .iter()
            .enumerate()
            .filter_map(|(i, c)| match (c.name, c.kind) {
                ("status", _) => Some((i, RowCheck::HttpStatus)),
                ("old_state" | "new_state", Kind::State) => Some((i, RowCheck::KnownState)),
                _ => None,
            })
            .collect();
        Decoder {
            source,
            layout,
            batch_rows,
            counts: TableCounts::default(),
            batches: BTreeMap::new(),
            sources,
            checks,
            shard,
        }
    }

    fn flush(
        &self,
        date: i32,
        batch: Batch,
        sink: &mut BatchSink<'_>,
    ) -> Result<(), TelemetryError> {
        let df = batch
            .finish(self.source)
            .map_err(|e| TelemetryError::polars(self.source, self.layout.spec.name, e))?;
        sink(date, df)
    }

    /// Decodes one row. Column order: id, time, host, the canonical columns, and for
    /// `breaker_events` the JSON payload and the event type.
    fn row<'v>(
        &mut self,
        get: impl Fn(usize) -> ValueRef<'v>,
        hosts: &mut HostCache,
        sink: &mut BatchSink<'_>,
    ) -> Result<(), TelemetryError> {
        let spec = self.layout.spec;
        let counts = &mut self.counts;
        counts.rows_read += 1;
        let id = match get(0) {
            ValueRef::Integer(i) => i,
            _ => {
                counts.reject("invalid_id");
                return Ok(());
            }
        };
        counts.max_id = Some(counts.max_id.map_or(id, |m| m.max(id)));

        let width = spec.columns.len();
        let payload = if self.layout.events.is_some() {
            match parse_payload(get(3 + width)) {
                Some(p) => Some(p),
                None => {
                    counts.reject("invalid_payload");
                    return Ok(());
                }
            }
        } else {
            None
        };
        // The values of this row that do not come from a column of their own.
        let derived: Vec<Value> = match &payload {
            None => Vec::new(),
            Some(obj) => self
                .sources
                .iter()
                .map(|s| match *s {
                    ValueSource::Payload(keys) => {
                        json_to_value(keys.iter().find_map(|k| obj.get(*k)))
                    }
                    ValueSource::EventOutcome => event_outcome(get(4 + width)),
                    _ => Value::Null,
                })
                .collect(),
        };

        let host = match get(2) {
            ValueRef::Null => Err("null_host"),
            ValueRef::Text(b) | ValueRef::Blob(b) => hosts.normalize(b).map_err(|e| match e {
                HostError::Empty => "null_host",
                HostError::Idna(_) => "invalid_host",
            }),
            _ => Err("invalid_host"),
        };
        let host: &str = match host {
            Ok(h) => h,
            Err(reason) => {
                counts.reject(reason);
                return Ok(());
            }
        };

        // The payload's epoch `ts` is the listener's own clock; the row's `timestamp` is
        // when the sink wrote it.
        let payload_ts = payload
            .as_ref()
            .and_then(|p| p.get("ts"))
            .map(|v| json_to_value(Some(v)))
            .and_then(|v| decode_time(ValueRef::from(&v)).ok());
        let ts_us = match payload_ts.map_or_else(|| decode_time(get(1)), Ok) {
            Ok(t) => t,
            Err(TimeError::Null) => {
                counts.reject("null_time");
                return Ok(());
            }
            Err(TimeError::Unparsable) => {
                counts.reject("unparsable_time");
                return Ok(());
            }
            Err(TimeError::OutOfRange) => {
                counts.reject("time_outside_1990_2200");
                return Ok(());
            }
        };

        // Check the values that can reject the row before appending anything.
        let sources = &self.sources;
        let origin = self.layout.sqlite_table.as_bytes();
        let value = |i: usize| -> ValueRef<'_> {
            match sources[i] {
                ValueSource::Column => get(3 + i),
                ValueSource::Origin => ValueRef::Text(origin),
                ValueSource::Payload(_) | ValueSource::EventOutcome => {
                    derived.get(i).map_or(ValueRef::Null, ValueRef::from)
                }
            }
        };
        if let Some(reason) = self
            .checks
            .iter()
            .find_map(|&(i, check)| check.reject(value(i)))
        {
            counts.reject(reason);
            return Ok(());
        }
        counts.first_ts_us = Some(counts.first_ts_us.map_or(ts_us, |t| t.min(ts_us)));
        // Another shard's host: read and checked like every row, exported by that shard.
        if self.shard.is_some_and(|s| !s.owns(host)) {
            counts.other_shards += 1;
            return Ok(());
        }

        let date = ts_us.div_euclid(US_PER_DAY) as i32;
        let batch_rows = self.batch_rows;
        let batch = self
            .batches
            .entry(date)
            .or_insert_with(|| Batch::new(spec, batch_rows));
        batch.len += 1;
        batch.id.append_value(id);
        batch.ts.append_value(ts_us);
        batch.host.append_value(host);
        for (i, (c, b)) in spec.columns.iter().zip(batch.cols.iter_mut()).enumerate() {
            match append_value(c, b, value(i)) {
                Fate::Kept => {}
                Fate::Nulled => *counts.nulled.entry(c.name.to_owned()).or_default() += 1,
                Fate::Adjusted(why) => {
                    *counts
                        .adjusted
                        .entry(format!("{}: {why}", c.name))
                        .or_default() += 1;
                }
            }
        }
        counts.rows_exported += 1;
        if batch.len >= batch_rows {
            let full = self.batches.remove(&date).expect("just used");
            self.flush(date, full, sink)?;
        }
        Ok(())
    }

    fn finish(mut self, sink: &mut BatchSink<'_>) -> Result<TableCounts, TelemetryError> {
        for (date, batch) in std::mem::take(&mut self.batches) {
            self.flush(date, batch, sink)?;
        }
        Ok(self.counts)
    }
}

/// Where one canonical value of a row comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ValueSource {
    /// The SQLite column mapped to it (NULL when the file has none).
    Column,
    /// The first of these keys of the `breaker_events` JSON payload.
    Payload(&'static [&'static str]),
    /// The `event_type` column, as `failure` / `success`.
    EventOutcome,
    /// The name of the SQLite table read.
    Origin,
}

/// Maps a canonical column to its source, for rows of a table or of `breaker_events`
/// (`has_column`: the file has a column for it).
fn value_source(events: Option<EventRows>, name: &str, has_column: bool) -> ValueSource {
    match (events, name) {
        (_, "origin") => ValueSource::Origin,
        (None, _) => ValueSource::Column,
        (Some(_), "run_id" | "scope") if has_column => ValueSource::Column,
        (Some(_), "run_id") => ValueSource::Payload(&["run_id"]),
        (Some(_), "scope") => ValueSource::Payload(&["scope"]),
        (Some(EventRows::StateChange), "old_state") => ValueSource::Payload(&["old", "old_state"]),
        (Some(EventRows::StateChange), "new_state") => ValueSource::Payload(&["new", "new_state"]),
        (Some(EventRows::StateChange), "reset_timeout_s") => {
            ValueSource::Payload(&["reset_timeout_s", "reset_timeout"])
        }
        (Some(EventRows::Outcome), "outcome") => ValueSource::EventOutcome,
        (Some(EventRows::Outcome), "state") => ValueSource::Payload(&["state"]),
        (Some(EventRows::Outcome), "fail_counter") => ValueSource::Payload(&["fail_counter"]),
        (Some(EventRows::Outcome), "exc_type") => ValueSource::Payload(&["exc_type"]),
        (Some(_), _) => ValueSource::Column,
    }
}

/// Values that make the whole row unusable: a status that is not an HTTP status, and
/// transitions between states we cannot name.
#[derive(Debug, Clone, Copy)]
enum RowCheck {
    HttpStatus,
    KnownState,
}

impl RowCheck {
    fn reject(self, v: ValueRef<'_>) -> Option<&'static str> {
        match self {
            RowCheck::HttpStatus => match decode_int(v) {
                Decoded::Value(s) if !(100..=999).contains(&s) => Some("invalid_status"),
                Decoded::Invalid => Some("invalid_status"),
                _ => None,
            },
            RowCheck::KnownState => {
                let ok = matches!(decode_text(v), Decoded::Value(s) if parse_state(&s).is_some());
                (!ok).then_some("unknown_state")
            }
        }
    }
}

/// What became of one value on its way into a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    Kept,
    /// Unusable (not a number, an unknown state): NULL instead.
    Nulled,
    /// Outside what the column can mean, or too long: NULL, clamped or cut (why).
    Adjusted(&'static str),
}

/// Appends one decoded value, within the column's range (see
/// [`super::schema::Range`]).
fn append_value(spec: &ColumnSpec, builder: &mut ColBuilder, v: ValueRef<'_>) -> Fate {
    match (spec.kind, builder) {
        (Kind::Int, ColBuilder::Int(b)) => match decode_int(v) {
            Decoded::Value(i) => match spec.range {
                Some(r) if i < r.min => {
                    b.append_null();
                    return Fate::Adjusted("negative, set to NULL");
                }
                Some(r) if i > r.max => {
                    b.append_value(r.max);
                    return Fate::Adjusted(r.above);
                }
                _ => b.append_value(i),
            },
            Decoded::Null => b.append_null(),
            Decoded::Invalid => {
                b.append_null();
                return Fate::Nulled;
            }
        },
        (Kind::Bool, ColBuilder::Bool(b)) => match decode_bool(v) {
            Decoded::Value(x) => b.append_value(x),
            Decoded::Null => b.append_null(),
            Decoded::Invalid => {
                b.append_null();
                return Fate::Nulled;
            }
        },
        (Kind::Text, ColBuilder::Text(b)) => match decode_text(v) {
            Decoded::Value(s) if s.len() > MAX_TEXT_BYTES => {
                b.append_value(cut(&s, MAX_TEXT_BYTES));
                return Fate::Adjusted("longer than 256 bytes, cut");
            }
            Decoded::Value(s) => b.append_value(&*s),
            _ => b.append_null(),
        },
        (Kind::State, ColBuilder::Text(b)) => match decode_text(v) {
            Decoded::Value(s) => match parse_state(&s) {
                Some(state) => b.append_value(state.as_str()),
                None => {
                    b.append_null();
                    return Fate::Nulled;
                }
            },
            _ => b.append_null(),
        },
        (Kind::Recorded, ColBuilder::Text(b)) => match decode_text(v) {
            Decoded::Value(s) => match parse_recorded(&s) {
                Some(r) => b.append_value(r),
                None => {
                    b.append_null();
                    return Fate::Nulled;
                }
            },
            _ => b.append_null(),
        },
        _ => unreachable!("builders are made from the same spec"),
    }
    Fate::Kept
}

/// The longest prefix of `s` of at most `max` bytes that ends at a character boundary.
fn cut(s: &str, max: usize) -> &str {
    let mut end = max.min(s.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// A digest of the first row matching `condition` (with `param`), or None when no row
/// matches. Used to recognise a source file and the row at its high-water mark.
pub fn row_digest(
    conn: &Connection,
    path: &str,
    layout: &TableLayout,
    condition: &str,
    param: i64,
) -> Result<Option<String>, TelemetryError> {
    let sql = format!("{} LIMIT 1", layout.select_sql(condition));
    let sqlite_err = |e| TelemetryError::sqlite(path, e);
    let mut stmt = conn.prepare(&sql).map_err(sqlite_err)?;
    let mut rows = stmt.query([param]).map_err(sqlite_err)?;
    let Some(row) = rows.next().map_err(sqlite_err)? else {
        return Ok(None);
    };
    let mut h = Sha256::new();
    for i in 0..row.as_ref().column_count() {
        match row.get_ref(i).map_err(sqlite_err)? {
            ValueRef::Null => h.update([0u8]),
            ValueRef::Integer(v) => {
                h.update([1u8]);
                h.update(v.to_le_bytes());
            }
            ValueRef::Real(v) => {
                h.update([2u8]);
                h.update(v.to_le_bytes());
            }
            ValueRef::Text(b) | ValueRef::Blob(b) => {
                h.update([3u8]);
                h.update((b.len() as u64).to_le_bytes());
                h.update(b);
            }
        }
    }
    Ok(Some(hex(&h.finalize()[..16])))
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
