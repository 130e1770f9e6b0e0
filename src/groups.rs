//! Host groups: how the stages after export keep memory bounded by a budget instead of
//! by the night.
//!
//! No per-host table reads another host's rows: bursts, time series, change points,
//! quotas and the replay are all per host (a breaker is per host and process); the model
//! calibration, which sums over every host, sums per group. So the window's
//! hosts are cut, in host order, into groups whose rows fit the budget, and each group
//! reads its own rows from the dataset ([`in_group`]: a host range; the export writes
//! its batches sorted by host, so the Parquet reader skips other hosts' row groups by
//! their statistics and filters the rest as it decodes) and is computed on its own. The
//! tables of the groups, concatenated in group order, are the tables of the whole
//! window, row for row.

use polars::prelude::*;

/// What one row of the window costs in memory while its group is computed, at the peak
/// (the classified rows, the burst sort, the replay's calls). Measured when groups
/// spilled to disk (BENCHMARKS.md, "Memory and time at scale"), rounded up; since groups
/// read their own rows the 10M-event day's peaks are 550-850 MiB with these constants
/// (about 1M rows a group), so they leave room, and the 100M day, one 2.5M-row host a
/// group, peaks under the 1 GiB default.
pub const BYTES_PER_ROW: u64 = 640;

/// Memory the process holds whatever the group size (the binary, Polars' pools, the
/// per-host tables), taken off the budget before the groups are sized.
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
    let df = crate::frame::collect(
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

/// The rows of `hosts` (normalised names) only.
pub fn among(hosts: &[String]) -> Expr {
    col("host").is_in(
        lit(Series::new("hosts".into(), hosts.to_vec())).implode(false),
        false,
    )
}

/// Returns the allocator's free pages to the system: glibc keeps the pages Polars frees
/// in its arenas, so without this the process would hold the largest group's peak for
/// the rest of the run. Called after each group.
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
