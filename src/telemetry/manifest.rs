//! The export manifest: per source file, what was exported (high-water marks, digests,
//! part files, rejected rows), and the commit protocol that keeps the dataset and the
//! manifest consistent when a run fails or is killed.
//!
//! Protocol: a run writes its part files under `_staging/`, then atomically replaces
//! `_manifest.json` with one that lists them (the commit point), then moves them into
//! place. On start, [`recover`] finishes a committed run's moves (roll forward), deletes
//! part files that no manifest lists (roll back) and empties `_staging/`.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::TelemetryError;
use super::parquet::is_part_file_name;
use super::schema::{HTTP_EVENTS, SCHEMA_VERSION, TABLES};

pub const MANIFEST_FILE: &str = "_manifest.json";
pub const STAGING_DIR: &str = "_staging";
const FORMAT: &str = "breaker-advisor/telemetry-export";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format: String,
    pub schema_version: u32,
    /// Number of committed export runs; names the next run's part files.
    pub runs: u64,
    /// The shard (`I/N`) whose hosts this dataset holds; absent: every host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<String>,
    /// Per source label (the path as given on the command line).
    pub sources: BTreeMap<String, SourceState>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceState {
    /// Digest of the first `http_events` row: recognises the file across runs.
    pub fingerprint: Option<String>,
    pub tables: BTreeMap<String, TableState>,
    /// Part files holding this source's rows, relative to the dataset root.
    pub parts: Vec<String>,
    /// Rejected rows so far, per table and reason.
    pub rejected: BTreeMap<String, BTreeMap<String, u64>>,
    /// Values exported as NULL because they could not be decoded, per table and column.
    pub nulled: BTreeMap<String, BTreeMap<String, u64>>,
    /// Values outside what their column can mean (NULL or clamped), per table and
    /// `column: reason`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub adjusted: BTreeMap<String, BTreeMap<String, u64>>,
    /// The run that last exported rows from it.
    pub last_run: u64,
    /// The earliest `http_events` row exported or left to another shard (epoch µs):
    /// where the fleet's data begins, the same in every shard's dataset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_event_us: Option<i64>,
    /// Dates whose rows were lost, per table: a listed part file went missing and the
    /// source no longer had its rows to export them again.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub incomplete: BTreeMap<String, BTreeSet<String>>,
}

impl SourceState {
    /// The listed part files that are not in the dataset `dir` (deleted by hand, a lost
    /// disk).
    pub fn missing_parts(&self, dir: &Path) -> Vec<String> {
        self.parts
            .iter()
            .filter(|rel| !dir.join(rel).is_file())
            .cloned()
            .collect()
    }

    /// Drops missing part files from the listing and records their tables' dates as
    /// incomplete.
    pub fn forget_parts(&mut self, missing: &[String]) {
        self.parts.retain(|p| !missing.contains(p));
        for rel in missing {
            let mut parts = rel.split('/');
            let (Some(table), Some(date)) = (parts.next(), parts.next()) else {
                continue;
            };
            let date = date.strip_prefix("date=").unwrap_or(date);
            self.incomplete
                .entry(table.to_owned())
                .or_default()
                .insert(date.to_owned());
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableState {
    /// The SQLite table read (`breaker_events` for transitions from JSON payloads).
    pub sqlite_table: String,
    /// Highest id read; the next run reads ids above it.
    pub high_water_id: i64,
    /// Digest of the row at the high-water mark, to notice a replaced file.
    pub high_water_digest: Option<String>,
    pub rows_read: u64,
    pub rows_exported: u64,
}

impl Default for Manifest {
    fn default() -> Self {
        Manifest {
            format: FORMAT.into(),
            schema_version: SCHEMA_VERSION,
            runs: 0,
            shard: None,
            sources: BTreeMap::new(),
        }
    }
}

impl Manifest {
    /// Where the fleet's calls begin: the earliest first event of its sources; None
    /// when a source that has calls does not know its first one (exported before the
    /// manifest recorded it).
    pub fn first_event_us(&self) -> Option<i64> {
        let mut first: Option<i64> = None;
        for s in self.sources.values() {
            let has_calls = s.tables.iter().any(|(stream, t)| {
                t.rows_read > 0
                    && (stream == HTTP_EVENTS.name
                        || stream.starts_with(&format!("{}@", HTTP_EVENTS.name)))
            });
            match s.first_event_us {
                Some(f) => first = Some(first.map_or(f, |m| m.min(f))),
                None if has_calls => return None,
                None => {}
            }
        }
        first
    }

    /// Loads `DIR/_manifest.json`, or an empty manifest when the dataset is new.
    pub fn load(dir: &Path) -> Result<Manifest, TelemetryError> {
        let path = dir.join(MANIFEST_FILE);
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Manifest::default()),
            Err(e) => return Err(TelemetryError::io(&path, e)),
        };
        let mut manifest: Manifest =
            serde_json::from_str(&text).map_err(|e| TelemetryError::Manifest {
                path: path.clone(),
                detail: e.to_string(),
            })?;
        if manifest.format != FORMAT {
            return Err(TelemetryError::Manifest {
                path,
                detail: format!("format is {:?}, expected {FORMAT:?}", manifest.format),
            });
        }
        if manifest.schema_version == 1 {
            manifest.upgrade_from_v1();
        }
        if manifest.schema_version != SCHEMA_VERSION {
            return Err(TelemetryError::Manifest {
                path,
                detail: format!(
                    "dataset has schema version {}, this tool writes {SCHEMA_VERSION}; export into a new directory",
                    manifest.schema_version
                ),
            });
        }
        Ok(manifest)
    }

    /// Atomically replaces `DIR/_manifest.json` (write, fsync, rename, fsync the folder).
    pub fn save(&self, dir: &Path) -> Result<(), TelemetryError> {
        let mut text = serde_json::to_string_pretty(self).expect("manifest serialises");
        text.push('\n');
        crate::output::write_atomic(&dir.join(MANIFEST_FILE), text.as_bytes()).map_err(|e| {
            TelemetryError::Io {
                path: e.path,
                source: e.source,
            }
        })
    }

    /// Version 1 kept one stream per canonical table, so transitions read from
    /// `breaker_events` were keyed `breaker_transitions`; they are the stream
    /// `breaker_transitions@breaker_events` now. Version 1 parts stay as they are (they
    /// lack `origin`, which reads as NULL).
    fn upgrade_from_v1(&mut self) {
        for state in self.sources.values_mut() {
            let moved: Vec<String> = state
                .tables
                .iter()
                .filter(|(key, t)| **key != t.sqlite_table && !key.contains('@'))
                .map(|(key, _)| key.clone())
                .collect();
            for key in moved {
                if let Some(t) = state.tables.remove(&key) {
                    let stream = format!("{key}@{}", t.sqlite_table);
                    for counts in [&mut state.rejected, &mut state.nulled, &mut state.adjusted] {
                        if let Some(c) = counts.remove(&key) {
                            counts.insert(stream.clone(), c);
                        }
                    }
                    state.tables.insert(stream, t);
                }
            }
        }
        self.schema_version = SCHEMA_VERSION;
    }

    fn listed_parts(&self) -> BTreeSet<&str> {
        self.sources
            .values()
            .flat_map(|s| s.parts.iter().map(String::as_str))
            .collect()
    }
}

/// Brings a dataset folder back to the state its manifest describes; see the module doc.
/// Returns the number of part files moved forward and deleted.
pub fn recover(dir: &Path, manifest: &Manifest) -> Result<(usize, usize), TelemetryError> {
    let staging = dir.join(STAGING_DIR);
    let listed = manifest.listed_parts();
    let mut moved = 0;
    for rel in &listed {
        let target = dir.join(rel);
        let staged = staging.join(rel);
        if !target.exists() && staged.exists() {
            publish(&staged, &target)?;
            moved += 1;
        }
    }
    let mut deleted = 0;
    for spec in TABLES {
        let table_dir = dir.join(spec.name);
        let Ok(partitions) = fs::read_dir(&table_dir) else {
            continue;
        };
        for partition in partitions.flatten() {
            let Ok(files) = fs::read_dir(partition.path()) else {
                continue;
            };
            for file in files.flatten() {
                let name = file.file_name().to_string_lossy().into_owned();
                if !is_part_file_name(&name) {
                    continue;
                }
                let rel = format!(
                    "{}/{}/{name}",
                    spec.name,
                    partition.file_name().to_string_lossy()
                );
                if !listed.contains(rel.as_str()) {
                    tracing::warn!(part = %rel, "deleting a part file no manifest lists (left by an interrupted run)");
                    fs::remove_file(file.path())
                        .map_err(|e| TelemetryError::io(&file.path(), e))?;
                    deleted += 1;
                }
            }
        }
    }
    if staging.exists() {
        fs::remove_dir_all(&staging).map_err(|e| TelemetryError::io(&staging, e))?;
    }
    Ok((moved, deleted))
}

/// Moves a staged part file into the dataset.
pub fn publish(staged: &Path, target: &Path) -> Result<(), TelemetryError> {
    if let Some(parent) = target.parent() {
        fs::create_dir_all(parent).map_err(|e| TelemetryError::io(parent, e))?;
    }
    fs::rename(staged, target).map_err(|e| TelemetryError::io(target, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(first: Option<i64>, calls: u64) -> SourceState {
        let mut s = SourceState {
            first_event_us: first,
            ..SourceState::default()
        };
        s.tables.insert(
            "http_events".into(),
            TableState {
                rows_read: calls,
                ..TableState::default()
            },
        );
        s
    }

    #[test]
    fn the_fleet_s_data_starts_at_its_earliest_source_unless_one_does_not_know() {
        let mut m = Manifest::default();
        assert_eq!(m.first_event_us(), None);
        m.sources.insert("a".into(), source(Some(20), 5));
        m.sources.insert("b".into(), source(Some(10), 5));
        // A source without calls has no first one to know.
        m.sources.insert("c".into(), source(None, 0));
        assert_eq!(m.first_event_us(), Some(10));
        // Exported before the manifest recorded it: the start is unknown.
        m.sources.insert("d".into(), source(None, 5));
        assert_eq!(m.first_event_us(), None);
    }
}
