//! Host groups: how the stages after export keep memory bounded by a budget instead of
//! by the night.
//!
//! No per-host table reads another host's rows: bursts, time series, change points,
//! quotas and the replay are all per host (a breaker is per host and process); the model
//! calibration, which sums over every host, sums per group. So the window's
//! hosts are cut, in host order, into groups whose rows fit the budget, the window's
//! rows are written once per group to a scratch file ([`spill`]: one pass over the
//! dataset), and each group is computed from its own file. The tables of the groups,
//! concatenated in group order, are the tables of the whole window, row for row.

use std::path::{Path, PathBuf};

use polars::io::parquet::write::BatchedWriter;
use polars::prelude::*;

/// What one row of the window costs in memory while its group is computed, at the peak
/// (the classified rows, the burst sort, the replay's calls): measured on the
/// 10M-event benchmark day (BENCHMARKS.md, "Memory and time at scale"), rounded up.
pub const BYTES_PER_ROW: u64 = 640;

/// Memory the process holds whatever the group size (the binary, Polars' pools, a
/// slice of the spill, the per-host tables), taken off the budget before the groups
/// are sized.
pub const FIXED_BYTES: u64 = 384 << 20;

/// The default `--memory-budget`.
pub const DEFAULT_BUDGET: u64 = 1 << 30;

/// The rows of the window one group may hold under a memory budget of `bytes`.
pub fn rows_for_budget(bytes: u64) -> u64 {
    (bytes.saturating_sub(FIXED_BYTES) / BYTES_PER_ROW).max(1)
}

/// Parses a memory budget: bytes, or a number with `KiB`, `MiB`, `GiB` (or `K`, `M`,
/// `G`, powers of 1024).
pub fn parse_budget(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size (for example 1GiB, 512MiB)"))?;
    let scale = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1u64,
        "k" | "kib" | "kb" => 1 << 10,
        "m" | "mib" | "mb" => 1 << 20,
        "g" | "gib" | "gb" => 1 << 30,
        other => {
            return Err(format!(
                "{s:?}: unknown unit {other:?} (use KiB, MiB or GiB)"
            ));
        }
    };
    let bytes = n * scale as f64;
    if !(bytes >= 1.0 && bytes.is_finite()) {
        return Err(format!("{s:?}: the budget must be at least one byte"));
    }
    Ok(bytes as u64)
}

/// Cuts hosts (with their row counts, in host order) into consecutive groups of at most
/// `max_rows` rows each; a host with more rows than that is a group on its own.
pub fn plan(counts: &[(String, u64)], max_rows: u64) -> Vec<Vec<String>> {
    let mut groups: Vec<Vec<String>> = Vec::new();
    let mut rows = 0u64;
    for (host, n) in counts {
        match groups.last_mut() {
            Some(g) if rows + n <= max_rows => {
                g.push(host.clone());
                rows += n;
            }
            _ => {
                groups.push(vec![host.clone()]);
                rows = *n;
            }
        }
    }
    groups
}

/// The rows per host of a frame with a `host` column, in host order.
pub fn host_counts(lf: LazyFrame) -> PolarsResult<Vec<(String, u64)>> {
    let df = crate::metrics::collect(
        lf.group_by([col("host")])
            .agg([len().cast(DataType::UInt64).alias("n")])
            .sort(["host"], SortMultipleOptions::default()),
    )?;
    let h = df.column("host")?.str()?;
    let n = df.column("n")?.u64()?;
    Ok(h.iter()
        .zip(n.iter())
        .filter_map(|(h, n)| Some((h?.to_owned(), n.unwrap_or(0))))
        .collect())
}

/// The group a host belongs to: groups are consecutive runs of hosts in order, so a
/// host they do not list (one with logged outcomes or transitions but no calls) goes
/// with the group its name falls in, as it would in the whole window.
pub fn group_of(groups: &[Vec<String>], host: &str) -> usize {
    groups
        .partition_point(|g| g.last().is_some_and(|last| last.as_str() < host))
        .min(groups.len().saturating_sub(1))
}

/// The rows of group `k` (by [`group_of`]'s rule): hosts after the previous group's
/// last and up to this group's last.
pub fn in_group(groups: &[Vec<String>], k: usize) -> Expr {
    let after_previous = k
        .checked_sub(1)
        .and_then(|p| groups[p].last())
        .map(|h| col("host").gt(lit(h.clone())));
    let up_to_last = (k + 1 < groups.len())
        .then(|| groups[k].last())
        .flatten()
        .map(|h| col("host").lt_eq(lit(h.clone())));
    match (after_previous, up_to_last) {
        (Some(a), Some(b)) => a.and(b),
        (Some(e), None) | (None, Some(e)) => e,
        (None, None) => lit(true),
    }
}

/// A scratch folder, removed with everything in it when dropped.
pub struct Scratch {
    path: PathBuf,
    /// Held locked while the folder is in use: how a sweep tells a live run's folder
    /// from one a killed run left behind.
    _lock: Option<std::fs::File>,
}

/// The lock file inside a scratch folder.
const LOCK_FILE: &str = ".lock";

impl Scratch {
    /// A hidden folder of its own inside `parent` (the process id and a counter, so
    /// two analyses in one process never share one), created with its lock held.
    /// Folders a killed run left in `parent` are removed first.
    pub fn new(parent: &Path) -> Scratch {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        sweep_stale(parent);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = parent.join(format!(".groups-{}-{n}", std::process::id()));
        // Locked under another name, then renamed: whenever `.lock` exists, its owner
        // holds it. (A folder that cannot be made fails later, where it is written.)
        let lock = std::fs::create_dir_all(&path).ok().and_then(|()| {
            let fresh = path.join(".lock-new");
            let file = std::fs::File::create(&fresh).ok()?;
            file.try_lock().ok()?;
            std::fs::rename(&fresh, path.join(LOCK_FILE)).ok()?;
            Some(file)
        });
        Scratch { path, _lock: lock }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Removes the `.groups-PID-N` folders in `parent` whose lock nobody holds: their run
/// ended without removing them (it was killed). A live run holds its lock, on this
/// machine or on another sharing the folder; a folder without a lock file is left.
fn sweep_stale(parent: &Path) {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let scratch = name
            .to_str()
            .and_then(|n| n.strip_prefix(".groups-"))
            .and_then(|rest| rest.split_once('-'))
            .is_some_and(|(pid, n)| pid.parse::<u32>().is_ok() && n.parse::<u64>().is_ok());
        if !scratch {
            continue;
        }
        let path = entry.path();
        let free = std::fs::File::open(path.join(LOCK_FILE)).is_ok_and(|f| f.try_lock().is_ok());
        if free && std::fs::remove_dir_all(&path).is_ok() {
            tracing::info!(path = %path.display(), "removed a killed run's scratch folder");
        }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// One frame's rows, written once per group to `dir`; the files go with it.
pub struct Spill {
    dir: PathBuf,
    /// Each group's files, in order (none: the group has no rows).
    files: Vec<Vec<PathBuf>>,
    schema: SchemaRef,
}

impl Spill {
    /// The rows of group `k`, in the order the frame gave them.
    pub fn scan(&self, k: usize) -> PolarsResult<LazyFrame> {
        let files = self.files.get(k).map_or(&[][..], Vec::as_slice);
        if files.is_empty() {
            return Ok(DataFrame::empty_with_schema(&self.schema).lazy());
        }
        let scans = files
            .iter()
            .map(|p| {
                LazyFrame::scan_parquet(
                    PlRefPath::new(p.display().to_string()),
                    ScanArgsParquet::default(),
                )
            })
            .collect::<PolarsResult<Vec<_>>>()?;
        if scans.len() == 1 {
            return Ok(scans.into_iter().next().expect("one scan"));
        }
        concat(scans, UnionArgs::default())
    }
}

impl Drop for Spill {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Rows read per slice of a spill: two of the export's row groups.
pub const SLICE_ROWS: usize = 1 << 18;
/// Slices written to one scratch file of a group before the next file.
const ROW_GROUPS_PER_FILE: usize = 8;

/// Writes the rows of `scans` (one per part file, in order) through `prepare` (a filter
/// and projection that keep a `host` column) to Parquet files per group in `dir` (a new
/// one every `ROW_GROUPS_PER_FILE` slices), in one pass of slices of [`SLICE_ROWS`]
/// rows: memory holds a slice and the open files' metadata, not the table.
/// (Polars' streaming scan decodes row groups ahead of a slower sink without bound, so
/// the pass slices the files itself.) Rows keep their order; `empty` (the table with no
/// rows) gives the schema of a group without any.
pub fn spill(
    scans: &[(String, LazyFrame)],
    empty: LazyFrame,
    prepare: &dyn Fn(LazyFrame) -> LazyFrame,
    groups: &[Vec<String>],
    dir: &Path,
) -> PolarsResult<Spill> {
    std::fs::create_dir_all(dir)?;
    let mut spill = Spill {
        dir: dir.to_owned(),
        files: vec![Vec::new(); groups.len()],
        schema: prepare(empty).collect_schema()?,
    };
    let listed: std::collections::HashMap<&str, u32> = groups
        .iter()
        .enumerate()
        .flat_map(|(k, g)| g.iter().map(move |h| (h.as_str(), k as u32)))
        .collect();
    let names: Vec<PlSmallStr> = spill.schema.iter_names().cloned().collect();
    // A group's writer is replaced by a new file every `ROW_GROUPS_PER_FILE` writes: a
    // Parquet writer holds every row group's metadata until it finishes (about 60 KB
    // each here, one per slice and group: 1.1 GB over 100M rows in 40 groups).
    let file_of = |k: usize, n: usize| dir.join(format!("group-{k:05}-{n:05}.parquet"));
    let mut writers: Vec<Option<(BatchedWriter<std::io::BufWriter<std::fs::File>>, usize)>> =
        (0..groups.len()).map(|_| None).collect();
    let reading = |label: &str| {
        let label = label.to_owned();
        move |e: PolarsError| e.context(format!("reading {label}").into())
    };
    let slices = scans.iter().map(|(label, scan)| -> PolarsResult<_> {
        let rows = crate::metrics::collect(scan.clone().select([len().cast(DataType::UInt64)]))
            .map_err(reading(label))?
            .column("len")?
            .u64()?
            .get(0)
            .unwrap_or(0) as usize;
        Ok((0..rows).step_by(SLICE_ROWS).map(move |offset| {
            prepare(scan.clone().slice(offset as i64, SLICE_ROWS as IdxSize))
                .collect()
                .map_err(reading(label))
        }))
    });
    let schema = spill.schema.clone();
    for slice in slices {
        for df in slice? {
            let mut df = df?;
            if df.height() == 0 {
                continue;
            }
            let codes: Vec<u32> = df
                .column("host")?
                .str()?
                .iter()
                .map(|h| match h {
                    Some(h) => listed
                        .get(h)
                        .copied()
                        .unwrap_or_else(|| group_of(groups, h) as u32),
                    None => 0,
                })
                .collect();
            df.with_column(Column::new("__group".into(), codes))?;
            for part in df.partition_by_stable(["__group"], true)? {
                let k = part.column("__group")?.u32()?.get(0).unwrap_or(u32::MAX) as usize;
                if k >= writers.len() {
                    continue;
                }
                // By name: the files hold exactly the schema's columns, in its order.
                let mut part = part.select(names.iter().cloned())?;
                part.rechunk_mut();
                if writers[k]
                    .as_ref()
                    .is_some_and(|(_, n)| *n >= ROW_GROUPS_PER_FILE)
                {
                    let (w, _) = writers[k].take().expect("open");
                    w.finish()?;
                }
                if writers[k].is_none() {
                    let path = file_of(k, spill.files[k].len());
                    let file = std::fs::File::create(&path).map_err(|e| {
                        PolarsError::from(e).context(format!("creating {}", path.display()).into())
                    })?;
                    spill.files[k].push(path);
                    writers[k] = Some((
                        ParquetWriter::new(std::io::BufWriter::new(file))
                            .with_compression(ParquetCompression::Lz4Raw)
                            .batched(&schema)?,
                        0,
                    ));
                }
                let (w, n) = writers[k].as_mut().expect("opened");
                w.write_batch(&part)?;
                *n += 1;
            }
            release_free_memory();
        }
    }
    for (w, _) in writers.into_iter().flatten() {
        w.finish()?;
    }
    Ok(spill)
}

/// Returns the allocator's free pages to the system (glibc otherwise keeps the pages
/// Polars frees in its arenas): called after each slice of a spill.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only hands free memory back to the system.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(v: &[(&str, u64)]) -> Vec<(String, u64)> {
        v.iter().map(|(h, n)| ((*h).to_owned(), *n)).collect()
    }

    #[test]
    fn a_killed_run_s_scratch_folder_is_removed_and_a_running_one_kept() {
        let parent = tempfile::tempdir().unwrap();
        // A run that is still going holds its folder's lock; a killed one holds none.
        let running = Scratch::new(parent.path());
        std::fs::write(running.path().join("group-0.parquet"), b"x").unwrap();
        let killed = parent.path().join(".groups-4242-0");
        let unlocked = parent.path().join(".groups-4243-0");
        let other = parent.path().join(".groups-notes");
        for d in [&killed, &unlocked, &other] {
            std::fs::create_dir(d).unwrap();
            std::fs::write(d.join("group-0.parquet"), b"x").unwrap();
        }
        std::fs::write(killed.join(LOCK_FILE), b"").unwrap();
        std::fs::write(other.join(LOCK_FILE), b"").unwrap();
        let mine = Scratch::new(parent.path());
        assert!(!killed.exists(), "a free lock: its run is gone");
        assert!(running.path().join("group-0.parquet").exists());
        assert!(unlocked.exists() && other.exists(), "not ours to judge");
        assert!(mine.path().join(LOCK_FILE).exists());
        let (a, b) = (running.path().to_owned(), mine.path().to_owned());
        drop((running, mine));
        assert!(!a.exists() && !b.exists());
    }

    #[test]
    fn groups_are_consecutive_and_fit() {
        let c = counts(&[("a", 4), ("b", 3), ("c", 5), ("d", 1), ("e", 9)]);
        assert_eq!(plan(&c, 8), vec![vec!["a", "b"], vec!["c", "d"], vec!["e"]]);
        assert_eq!(plan(&c, 100), vec![vec!["a", "b", "c", "d", "e"]]);
        assert!(plan(&[], 8).is_empty());
    }

    #[test]
    fn a_host_no_group_lists_goes_where_its_name_falls() {
        let g = plan(&counts(&[("b", 4), ("d", 4), ("f", 4)]), 4);
        let of = |h: &str| group_of(&g, h);
        assert_eq!(
            ["a", "b", "c", "d", "e", "f", "g"].map(of),
            [0, 0, 1, 1, 2, 2, 2]
        );
        assert_eq!(group_of(&[], "x"), 0);
    }

    #[test]
    fn budgets_parse_in_binary_units() {
        assert_eq!(parse_budget("1GiB"), Ok(1 << 30));
        assert_eq!(parse_budget("512 MiB"), Ok(512 << 20));
        assert_eq!(parse_budget("1.5g"), Ok(3 << 29));
        assert_eq!(parse_budget("4096"), Ok(4096));
        assert!(parse_budget("lots").is_err());
        assert!(parse_budget("1 TiB").is_err());
        assert!(parse_budget("0").is_err());
        assert_eq!(rows_for_budget(FIXED_BYTES), 1);
    }
}
