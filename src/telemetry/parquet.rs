//! Writing one part file of the hive-partitioned Parquet dataset: fixed declared schema
//! (a column that is all NULL is still typed), zstd, column statistics and key-value
//! metadata naming the schema version, the tool version and the source.

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use polars::io::parquet::write::{BatchedWriter, KeyValueMetadata};
use polars::prelude::*;

use super::schema::{Kind, SCHEMA_VERSION, TableSpec};

/// The declared Polars schema of an exported table.
pub fn table_schema(spec: &TableSpec) -> Schema {
    let mut schema = Schema::with_capacity(4 + spec.columns.len());
    schema.insert("source".into(), DataType::String);
    schema.insert("id".into(), DataType::Int64);
    schema.insert(
        "ts".into(),
        DataType::Datetime(TimeUnit::Microseconds, None),
    );
    schema.insert("host".into(), DataType::String);
    for c in spec.columns {
        let dtype = match c.kind {
            Kind::Int => DataType::Int64,
            Kind::Bool => DataType::Boolean,
            Kind::Text | Kind::State | Kind::Recorded => DataType::String,
        };
        schema.insert(c.name.into(), dtype);
    }
    schema
}

/// `2025-11-26` for a day number counted from the Unix epoch.
pub fn date_string(days: i32) -> String {
    chrono::DateTime::from_timestamp(i64::from(days) * 86_400, 0)
        .map(|d| d.date_naive().to_string())
        .unwrap_or_else(|| format!("day{days}"))
}

/// Path of a part file relative to the dataset root. The run number, the source id, the
/// SQLite table read (when it is not the canonical table's own) and the file's number
/// among the run's files of that date (when it is not the first) make it unique; the
/// `part-r` prefix marks it as ours (see manifest recovery).
pub fn part_rel_path(
    table: &str,
    days: i32,
    run: u64,
    source_id: &str,
    sqlite_table: &str,
    file: usize,
) -> String {
    let from = if sqlite_table == table {
        String::new()
    } else {
        format!("-{sqlite_table}")
    };
    let number = if file == 0 {
        String::new()
    } else {
        format!("-{file}")
    };
    format!(
        "{table}/date={}/part-r{run:06}-{source_id}{from}{number}.parquet",
        date_string(days)
    )
}

/// Whether a file name is one of our part files.
pub fn is_part_file_name(name: &str) -> bool {
    name.starts_with("part-r") && name.ends_with(".parquet")
}

/// Rows per row group of a part file, at most: a 32nd of the export's batch, so that
/// the batch's hosts, sorted, fall into row groups of a few hosts each.
pub const ROW_GROUP_ROWS: usize = 16_384;

/// Rows a row group holds before it may end at a host's last row: a row group then
/// holds one host's rows, or a few small hosts', so a reader of a range of hosts reads
/// at most this many rows of the hosts beside the range at each end of a batch.
pub const ROW_GROUP_MIN_ROWS: usize = 4_096;

/// Row groups of one part file: a Parquet writer holds every row group's metadata
/// until it finishes, and a reader parses all of it, so an export that writes more
/// begins the next file (256 row groups: 4.2M rows).
pub const MAX_ROW_GROUPS_PER_FILE: usize = 256;

/// An open part file being written in the staging area.
pub struct PartWriter {
    pub rel: String,
    pub rows: u64,
    pub row_groups: usize,
    path: PathBuf,
    writer: BatchedWriter<BufWriter<File>>,
}

impl PartWriter {
    pub fn create(
        path: &Path,
        rel: String,
        spec: &TableSpec,
        metadata: Vec<(String, String)>,
    ) -> Result<Self, PolarsError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = File::create(path)?;
        let mut kv = vec![
            (
                "breaker_advisor.schema_version".to_owned(),
                SCHEMA_VERSION.to_string(),
            ),
            (
                "breaker_advisor.tool_version".to_owned(),
                env!("CARGO_PKG_VERSION").to_owned(),
            ),
            ("breaker_advisor.table".to_owned(), spec.name.to_owned()),
        ];
        kv.extend(metadata);
        let writer = ParquetWriter::new(BufWriter::with_capacity(1 << 20, file))
            .with_compression(ParquetCompression::Zstd(None))
            .with_statistics(StatisticsOptions::default())
            .with_key_value_metadata(Some(KeyValueMetadata::from_static(kv)))
            .batched(&table_schema(spec))?;
        Ok(PartWriter {
            rel,
            rows: 0,
            row_groups: 0,
            path: path.to_owned(),
            writer,
        })
    }

    /// Writes a batch sorted by host (rows of one host keep their order) in row groups
    /// that end at a host's last row (see [`row_groups`]): their statistics let a
    /// reader of a few hosts skip the others' row groups.
    pub fn write(&mut self, df: &DataFrame) -> PolarsResult<()> {
        self.rows += df.height() as u64;
        let sorted = df.sort(
            ["host"],
            SortMultipleOptions::default().with_maintain_order(true),
        )?;
        for (offset, len) in row_groups(sorted.column("host")?.str()?) {
            self.writer.write_batch(&sorted.slice(offset as i64, len))?;
            self.row_groups += 1;
        }
        Ok(())
    }

    /// Writes the footer and syncs the file to disk, so a later rename publishes a
    /// complete file.
    pub fn finish(self) -> PolarsResult<(String, u64)> {
        self.writer.finish()?;
        drop(self.writer);
        File::open(&self.path)?.sync_all()?;
        Ok((self.rel, self.rows))
    }
}

/// The row groups (offset, length) of a batch sorted by host: at most
/// [`ROW_GROUP_ROWS`] rows each, and ended at a host's last row once they hold
/// [`ROW_GROUP_MIN_ROWS`].
pub fn row_groups(hosts: &StringChunked) -> Vec<(usize, usize)> {
    let mut groups = Vec::new();
    let mut start = 0;
    let mut previous = None;
    for (i, host) in hosts.iter().enumerate() {
        let len = i - start;
        if len == ROW_GROUP_ROWS || (len >= ROW_GROUP_MIN_ROWS && host != previous) {
            groups.push((start, len));
            start = i;
        }
        previous = host;
    }
    if hosts.len() > start {
        groups.push((start, hosts.len() - start));
    }
    groups
}

/// Scans one exported table lazily (hive partitions by date); a table the export never
/// wrote reads as empty with its declared schema.
pub fn scan_table(
    data: &std::path::Path,
    spec: &crate::telemetry::schema::TableSpec,
) -> anyhow::Result<polars::prelude::LazyFrame> {
    use polars::prelude::*;
    let dir = data.join(spec.name);
    // A partition folder left empty (its parts deleted) holds nothing to scan.
    let has_parts = std::fs::read_dir(&dir).is_ok_and(|d| {
        d.flatten().any(|p| {
            std::fs::read_dir(p.path()).is_ok_and(|mut f| {
                f.any(|x| x.is_ok_and(|x| x.path().extension().is_some_and(|e| e == "parquet")))
            })
        })
    });
    if !has_parts {
        let mut schema = crate::telemetry::parquet::table_schema(spec);
        schema.insert("date".into(), DataType::Date);
        return Ok(DataFrame::empty_with_schema(&schema).lazy());
    }
    // The declared schema, not the first file's: parts written by an older schema
    // version lack the columns added since, which then read as NULL.
    let args = ScanArgsParquet {
        hive_options: HiveOptions {
            enabled: Some(true),
            hive_start_idx: 0,
            schema: None,
            try_parse_dates: true,
        },
        schema: Some(std::sync::Arc::new(
            crate::telemetry::parquet::table_schema(spec),
        )),
        allow_missing_columns: true,
        ..Default::default()
    };
    let scan = LazyFrame::scan_parquet(PlRefPath::new(format!("{}/", dir.display())), args);
    anyhow::Context::with_context(scan, || format!("reading the dataset {}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_groups_end_at_a_host_s_last_row_once_they_hold_enough() {
        // a: 3 rows, b: 5,000, c: 40,000, d: 100, e: 10.
        let counts = [("a", 3), ("b", 5_000), ("c", 40_000), ("d", 100), ("e", 10)];
        let hosts: Vec<&str> = counts
            .iter()
            .flat_map(|&(h, n)| std::iter::repeat_n(h, n))
            .collect();
        let groups = row_groups(&StringChunked::from_slice("host".into(), &hosts));
        assert_eq!(
            groups,
            [
                // a is too small to end a row group: it shares b's.
                (0, 5_003),
                // c's rows fill two row groups; what is left ends with c.
                (5_003, ROW_GROUP_ROWS),
                (5_003 + ROW_GROUP_ROWS, ROW_GROUP_ROWS),
                (5_003 + 2 * ROW_GROUP_ROWS, 40_000 - 2 * ROW_GROUP_ROWS),
                // d and e are too small to be apart.
                (45_003, 110),
            ]
        );
        assert!(row_groups(&StringChunked::from_slice("host".into(), &[] as &[&str])).is_empty());
    }
}
