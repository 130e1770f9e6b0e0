//! Streams one canonical table out of one SQLite file, in id order after a high-water
//! mark, as bounded per-date batches of typed columns. Unusable rows are counted by
//! reason; unusable optional values become NULL and are counted by column.

use std::collections::{BTreeMap, HashMap};

use polars::prelude::*;
use rusqlite::Connection;
use rusqlite::types::{Value, ValueRef};
use sha2::{Digest, Sha256};

use super::TelemetryError;
use super::schema::{Kind, TableLayout, TableSpec};
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
#[derive(Default)]
pub struct HostCache {
    map: HashMap<Box<[u8]>, Result<Box<str>, HostError>>,
}

impl HostCache {
    fn normalize(&mut self, raw: &[u8]) -> Result<Box<str>, HostError> {
        if let Some(hit) = self.map.get(raw) {
            return hit.clone();
        }
        let result = normalize_host(&String::from_utf8_lossy(raw)).map(String::into_boxed_str);
        if self.map.len() < HOST_CACHE_LIMIT {
            self.map.insert(raw.into(), result.clone());
        }
        result
    }
}

/// Fields of a `breaker_events` payload that feed canonical columns.
struct Payload {
    old: Value,
    new: Value,
    reset_timeout_s: Value,
    ts: Option<Value>,
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

fn parse_payload(raw: ValueRef<'_>) -> Option<Payload> {
    let text = match raw {
        ValueRef::Text(b) | ValueRef::Blob(b) => b,
        _ => return None,
    };
    let obj: serde_json::Value = serde_json::from_slice(text).ok()?;
    let obj = obj.as_object()?;
    Some(Payload {
        old: json_to_value(obj.get("old").or_else(|| obj.get("old_state"))),
        new: json_to_value(obj.get("new").or_else(|| obj.get("new_state"))),
        reset_timeout_s: json_to_value(obj.get("reset_timeout_s")),
        ts: obj.get("ts").map(|v| json_to_value(Some(v))),
    })
}

/// Reads the rows of `layout` with id above `after_id` and hands each full per-date
/// batch (date as days since the Unix epoch) to `sink`.
#[allow(clippy::too_many_arguments)]
pub fn read_table(
    conn: &Connection,
    source: &str,
    layout: &TableLayout,
    after_id: i64,
    batch_rows: usize,
    hosts: &mut HostCache,
    sink: &mut dyn FnMut(i32, DataFrame) -> Result<(), TelemetryError>,
    progress: &dyn Fn(u64),
) -> Result<TableCounts, TelemetryError> {
    let spec = layout.spec;
    let sql = layout.select_sql("> ?1");
    let path = source;
    let sqlite_err = |e| TelemetryError::sqlite(path, e);
    let mut stmt = conn.prepare(&sql).map_err(sqlite_err)?;
    let mut rows = stmt.query([after_id]).map_err(sqlite_err)?;
    let mut counts = TableCounts::default();
    let mut batches: BTreeMap<i32, Batch> = BTreeMap::new();
    let n_cols = spec.columns.len();
    let payload_idx = 3 + n_cols;
    let flush = |date: i32,
                 batch: Batch,
                 sink: &mut dyn FnMut(i32, DataFrame) -> Result<(), TelemetryError>|
     -> Result<(), TelemetryError> {
        let df = batch
            .finish(source)
            .map_err(|e| TelemetryError::polars(path, spec.name, e))?;
        sink(date, df)
    };

    while let Some(row) = rows.next().map_err(sqlite_err)? {
        counts.rows_read += 1;
        if counts.rows_read % 65_536 == 0 {
            progress(65_536);
        }
        let id = match row.get_ref(0).map_err(sqlite_err)? {
            ValueRef::Integer(i) => i,
            _ => {
                counts.reject("invalid_id");
                continue;
            }
        };
        counts.max_id = Some(counts.max_id.map_or(id, |m| m.max(id)));

        let payload = if layout.from_breaker_events {
            match parse_payload(row.get_ref(payload_idx).map_err(sqlite_err)?) {
                Some(p) => Some(p),
                None => {
                    counts.reject("invalid_payload");
                    continue;
                }
            }
        } else {
            None
        };

        let host = match row.get_ref(2).map_err(sqlite_err)? {
            ValueRef::Null => Err("null_host"),
            ValueRef::Text(b) | ValueRef::Blob(b) => hosts.normalize(b).map_err(|e| match e {
                HostError::Empty => "null_host",
                HostError::Idna(_) => "invalid_host",
            }),
            _ => Err("invalid_host"),
        };
        let host = match host {
            Ok(h) => h,
            Err(reason) => {
                counts.reject(reason);
                continue;
            }
        };

        let payload_ts = payload
            .as_ref()
            .and_then(|p| p.ts.as_ref())
            .and_then(|v| decode_time(ValueRef::from(v)).ok());
        let ts_us = match payload_ts {
            Some(t) => Ok(t),
            None => decode_time(row.get_ref(1).map_err(sqlite_err)?),
        };
        let ts_us = match ts_us {
            Ok(t) => t,
            Err(TimeError::Null) => {
                counts.reject("null_time");
                continue;
            }
            Err(TimeError::Unparsable) => {
                counts.reject("unparsable_time");
                continue;
            }
        };

        // Gather the canonical values first: a row may still be rejected on them.
        let mut values: Vec<ValueRef<'_>> = Vec::with_capacity(n_cols);
        for (i, c) in spec.columns.iter().enumerate() {
            let v = match (&payload, c.name) {
                (Some(p), "old_state") => ValueRef::from(&p.old),
                (Some(p), "new_state") => ValueRef::from(&p.new),
                (Some(p), "reset_timeout_s") => ValueRef::from(&p.reset_timeout_s),
                _ => row.get_ref(3 + i).map_err(sqlite_err)?,
            };
            values.push(v);
        }
        if let Some(reason) = row_rejection(spec, &values) {
            counts.reject(reason);
            continue;
        }

        let date = ts_us.div_euclid(US_PER_DAY) as i32;
        let batch = batches
            .entry(date)
            .or_insert_with(|| Batch::new(spec, batch_rows));
        batch.len += 1;
        batch.id.append_value(id);
        batch.ts.append_value(ts_us);
        batch.host.append_value(&*host);
        for ((c, b), v) in spec.columns.iter().zip(batch.cols.iter_mut()).zip(values) {
            if !append_value(c.kind, b, v) {
                *counts.nulled.entry(c.name.to_owned()).or_default() += 1;
            }
        }
        counts.rows_exported += 1;
        if batch.len >= batch_rows {
            let full = batches.remove(&date).expect("just used");
            flush(date, full, sink)?;
        }
    }
    progress(counts.rows_read % 65_536);
    for (date, batch) in batches {
        flush(date, batch, sink)?;
    }
    Ok(counts)
}

/// Values that make the whole row unusable: a status that is not an HTTP status, and
/// transitions between states we cannot name.
fn row_rejection(spec: &TableSpec, values: &[ValueRef<'_>]) -> Option<&'static str> {
    for (c, v) in spec.columns.iter().zip(values) {
        match (c.name, c.kind) {
            ("status", _) => match decode_int(*v) {
                Decoded::Value(s) if !(100..=999).contains(&s) => return Some("invalid_status"),
                Decoded::Invalid => return Some("invalid_status"),
                _ => {}
            },
            ("old_state" | "new_state", Kind::State) => {
                let ok = matches!(decode_text(*v), Decoded::Value(s) if parse_state(&s).is_some());
                if !ok {
                    return Some("unknown_state");
                }
            }
            _ => {}
        }
    }
    None
}

/// Appends one decoded value; false when it was unusable and NULL was appended instead.
fn append_value(kind: Kind, builder: &mut ColBuilder, v: ValueRef<'_>) -> bool {
    match (kind, builder) {
        (Kind::Int, ColBuilder::Int(b)) => match decode_int(v) {
            Decoded::Value(i) => b.append_value(i),
            Decoded::Null => b.append_null(),
            Decoded::Invalid => {
                b.append_null();
                return false;
            }
        },
        (Kind::Bool, ColBuilder::Bool(b)) => match decode_bool(v) {
            Decoded::Value(x) => b.append_value(x),
            Decoded::Null => b.append_null(),
            Decoded::Invalid => {
                b.append_null();
                return false;
            }
        },
        (Kind::Text, ColBuilder::Text(b)) => match decode_text(v) {
            Decoded::Value(s) => b.append_value(&*s),
            _ => b.append_null(),
        },
        (Kind::State, ColBuilder::Text(b)) => match decode_text(v) {
            Decoded::Value(s) => match parse_state(&s) {
                Some(state) => b.append_value(state.as_str()),
                None => {
                    b.append_null();
                    return false;
                }
            },
            _ => b.append_null(),
        },
        (Kind::Recorded, ColBuilder::Text(b)) => match decode_text(v) {
            Decoded::Value(s) => match parse_recorded(&s) {
                Some(r) => b.append_value(r),
                None => {
                    b.append_null();
                    return false;
                }
            },
            _ => b.append_null(),
        },
        _ => unreachable!("builders are made from the same spec"),
    }
    true
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
