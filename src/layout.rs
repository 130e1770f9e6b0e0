//! The run folder, typed: every file a stage writes under `--out` and the next stage
//! reads back (the dataset, the metrics tables, the reports, the proposed configs, a
//! shard's folder), and the keys of the metrics' Parquet metadata, the analysis window
//! among them. Stages name a file through [`RunFolder`] or [`MetricsFolder`], never by a
//! string of their own. Below every stage: it knows paths and metadata, no stage.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::shard::Shard;

/// A table of the metrics folder (`metrics/NAME.parquet`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Table {
    HostSummary,
    HostRoleSummary,
    Bursts,
    HostTimeseries,
    RateWindows,
    Incidents,
    ReplayFidelity,
}

impl Table {
    /// The tables `analyze` writes, in its order.
    pub const ANALYZED: [Table; 5] = [
        Table::HostSummary,
        Table::HostRoleSummary,
        Table::Bursts,
        Table::HostTimeseries,
        Table::RateWindows,
    ];

    /// The tables the advisor reads, in the order their hashes are fingerprinted.
    pub const ADVICE_INPUTS: [Table; 5] = [
        Table::HostSummary,
        Table::HostRoleSummary,
        Table::Bursts,
        Table::Incidents,
        Table::RateWindows,
    ];

    /// The tables a shard merge concatenates, each ordered by host first.
    pub const MERGED: [Table; 7] = [
        Table::HostSummary,
        Table::HostRoleSummary,
        Table::Bursts,
        Table::HostTimeseries,
        Table::RateWindows,
        Table::Incidents,
        Table::ReplayFidelity,
    ];

    /// The table's name, its file's stem.
    pub const fn name(self) -> &'static str {
        match self {
            Table::HostSummary => "host_summary",
            Table::HostRoleSummary => "host_role_summary",
            Table::Bursts => "bursts",
            Table::HostTimeseries => "host_timeseries",
            Table::RateWindows => "rate_windows",
            Table::Incidents => "incidents",
            Table::ReplayFidelity => "replay_fidelity",
        }
    }

    /// `NAME.parquet`.
    pub fn file_name(self) -> String {
        format!("{}.parquet", self.name())
    }
}

pub use crate::output::META_PREFIX;

/// The metadata keys of the metrics tables (without [`META_PREFIX`]).
pub mod meta {
    pub const TOOL_VERSION: &str = "tool_version";
    pub const SCHEMA_VERSION: &str = "metrics_schema_version";
    /// The SHA-256 of the breakers.yaml the metrics were counted against.
    pub const CONFIG_SHA256: &str = "config_sha256";
    pub const HALF_LIFE_BUCKETS: &str = "half_life_buckets";
    /// The rows set aside after the night's end (`metrics::night`).
    pub const SET_ASIDE: &str = "set_aside";
    /// The analysis window's start and end, RFC 3339.
    pub const WINDOW_START: &str = "window_start";
    pub const WINDOW_END: &str = "window_end";
    /// The time series' bucket, seconds.
    pub const BUCKET_S: &str = "bucket_s";
    /// The hours of the trailing baseline the data covers.
    pub const BASELINE_HOURS: &str = "baseline_hours";
    /// The detector and its settings (on `incidents.parquet`).
    pub const DETECTOR: &str = "detector";
}

/// The full metadata key of `key` (`breaker_advisor.KEY`).
pub fn meta_key(key: &str) -> String {
    format!("{META_PREFIX}{key}")
}

/// A run's output folder (`--out`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunFolder {
    root: PathBuf,
}

impl RunFolder {
    pub fn new(root: impl Into<PathBuf>) -> RunFolder {
        RunFolder { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `OUT/dataset`: the Parquet dataset `export` writes.
    pub fn dataset(&self) -> PathBuf {
        self.root.join("dataset")
    }

    /// `OUT/metrics`.
    pub fn metrics(&self) -> MetricsFolder {
        MetricsFolder::new(self.root.join("metrics"))
    }

    /// `OUT/report.md`: the PR body.
    pub fn report_md(&self) -> PathBuf {
        self.root.join("report.md")
    }

    /// `OUT/report.html`.
    pub fn report_html(&self) -> PathBuf {
        self.root.join("report.html")
    }

    /// `OUT/proposed`: the config files as the patch would leave them.
    pub fn proposed(&self) -> PathBuf {
        self.root.join("proposed")
    }

    /// `OUT/proposed/breakers.yaml`, whatever the input is called.
    pub fn proposed_breakers(&self) -> PathBuf {
        self.proposed().join("breakers.yaml")
    }

    /// `OUT/proposed/ratelimits.yaml`, whatever the input is called.
    pub fn proposed_ratelimits(&self) -> PathBuf {
        self.proposed().join("ratelimits.yaml")
    }

    /// `OUT/changes.diff`: the unified diff of the config files.
    pub fn changes_diff(&self) -> PathBuf {
        self.root.join("changes.diff")
    }

    /// `OUT/breakers.patch.yaml`: the patch file when `--patch-file` is not given.
    pub fn default_patch_file(&self) -> PathBuf {
        self.root.join("breakers.patch.yaml")
    }

    /// `OUT/.earlier-nights`: the scratch folder of the nights before tonight, removed
    /// when the run is done with them.
    pub fn earlier_nights_scratch(&self) -> PathBuf {
        self.root.join(".earlier-nights")
    }

    /// `OUT/shard=I`: a shard job's own run folder.
    pub fn shard(&self, shard: Shard) -> RunFolder {
        RunFolder::new(self.root.join(format!("{SHARD_PREFIX}{}", shard.index)))
    }

    /// `OUT/shard.yaml`: a shard job's record, in the shard's folder.
    pub fn shard_record(&self) -> PathBuf {
        self.root.join(SHARD_RECORD)
    }

    /// `OUT/shard=*/dataset`, as the reports name the datasets of a sharded night.
    pub fn shard_datasets(&self) -> PathBuf {
        self.root.join(format!("{SHARD_PREFIX}*")).join("dataset")
    }
}

/// What a shard's folder name starts with (`shard=I`).
pub const SHARD_PREFIX: &str = "shard=";

/// The shard record's file name inside `OUT/shard=I/`.
pub const SHARD_RECORD: &str = "shard.yaml";

impl AsRef<Path> for RunFolder {
    fn as_ref(&self) -> &Path {
        &self.root
    }
}

impl std::ops::Deref for RunFolder {
    type Target = Path;

    fn deref(&self) -> &Path {
        &self.root
    }
}

/// A metrics folder (`OUT/metrics`, or `--metrics`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsFolder {
    root: PathBuf,
}

impl MetricsFolder {
    pub fn new(root: impl Into<PathBuf>) -> MetricsFolder {
        MetricsFolder { root: root.into() }
    }

    /// `DATA/metrics`: where `analyze --data DATA` writes without `--out`.
    pub fn in_dataset(data: &Path) -> MetricsFolder {
        MetricsFolder::new(data.join("metrics"))
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `METRICS/NAME.parquet`.
    pub fn table(&self, table: Table) -> PathBuf {
        self.root.join(table.file_name())
    }

    /// `METRICS/crawler_model.yaml`: the crawler model a run counted by.
    pub fn model_file(&self) -> PathBuf {
        self.root.join("crawler_model.yaml")
    }

    /// The key-value metadata of the run's metrics (`host_summary.parquet`'s).
    pub fn meta(&self) -> anyhow::Result<BTreeMap<String, String>> {
        Ok(
            crate::output::parquet_metadata(&self.table(Table::HostSummary))?
                .into_iter()
                .collect(),
        )
    }

    /// The analysis window (epoch µs) in the metrics' metadata.
    pub fn window(&self) -> anyhow::Result<(i64, i64)> {
        self.window_in(&self.meta()?)
    }

    /// The analysis window in `meta`, read from this folder's metadata (the folder is
    /// named in the error).
    pub fn window_in(&self, meta: &BTreeMap<String, String>) -> anyhow::Result<(i64, i64)> {
        let get = |k: &str| {
            meta.get(&meta_key(k))
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                .map(|d| d.timestamp_micros())
        };
        match (get(meta::WINDOW_START), get(meta::WINDOW_END)) {
            (Some(a), Some(b)) => Ok((a, b)),
            _ => bail_input!(
                "{}: no analysis window in its metadata",
                self.table(Table::HostSummary).display()
            ),
        }
    }
}

impl AsRef<Path> for MetricsFolder {
    fn as_ref(&self) -> &Path {
        &self.root
    }
}

impl std::ops::Deref for MetricsFolder {
    type Target = Path;

    fn deref(&self) -> &Path {
        &self.root
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_table_has_its_own_file() {
        let names: std::collections::BTreeSet<String> =
            Table::MERGED.iter().map(|t| t.file_name()).collect();
        assert_eq!(names.len(), Table::MERGED.len());
        for t in Table::ANALYZED.iter().chain(&Table::ADVICE_INPUTS) {
            assert!(Table::MERGED.contains(t), "{t:?} is not merged");
        }
        let run = RunFolder::new("out");
        assert_eq!(
            run.metrics().table(Table::RateWindows),
            Path::new("out/metrics/rate_windows.parquet")
        );
    }

    #[test]
    fn the_window_is_read_from_its_keys() {
        let folder = MetricsFolder::new("m");
        let mut meta = BTreeMap::new();
        meta.insert(
            meta_key(meta::WINDOW_START),
            "2025-11-25T00:00:00Z".to_owned(),
        );
        let err = folder.window_in(&meta).unwrap_err().to_string();
        assert!(err.contains("m/host_summary.parquet"), "{err}");
        meta.insert(
            meta_key(meta::WINDOW_END),
            "2025-11-25T00:00:01Z".to_owned(),
        );
        let (a, b) = folder.window_in(&meta).unwrap();
        assert_eq!(b - a, 1_000_000);
    }
}
