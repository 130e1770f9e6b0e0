//! The replay fidelity file beside the metrics (`replay_fidelity.parquet`): per host,
//! the opens and half-open outcomes the breakers recorded beside those the replay of the
//! recorded policy made. Written by the night, read by the report and by analysts.

use polars::prelude::*;

use crate::layout::{MetricsFolder, Table};
use crate::metrics::columns::{ints as col_i64, strings as col_str};
use crate::output::read_parquet;

/// Writes the replay's fidelity per host beside the metrics, for the report and for
/// analysts.
pub fn write(
    metrics: &MetricsFolder,
    fidelity: &[crate::replay::traffic::Fidelity],
) -> anyhow::Result<()> {
    let u = |f: fn(&crate::replay::traffic::Fidelity) -> u64| {
        fidelity.iter().map(f).collect::<Vec<u64>>()
    };
    let df = df!(
        "host" => fidelity.iter().map(|f| f.host.clone()).collect::<Vec<_>>(),
        "instances" => fidelity.iter().map(|f| f.instances as u64).collect::<Vec<_>>(),
        "logged_instances" => fidelity.iter().map(|f| f.logged_instances as u64).collect::<Vec<_>>(),
        "recorded_opens" => u(|f| f.recorded_opens),
        "replayed_opens" => u(|f| f.replayed_opens),
        "recorded_half_open_closed" => u(|f| f.recorded_half_open_closed),
        "replayed_half_open_closed" => u(|f| f.replayed_half_open_closed),
        "recorded_half_open_reopened" => u(|f| f.recorded_half_open_reopened),
        "replayed_half_open_reopened" => u(|f| f.replayed_half_open_reopened),
        "worst_instance_miss" => u(|f| f.worst_instance_miss),
        "inferred_failures" => u(|f| f.inferred_failures),
        "miss_share" => fidelity.iter().map(|f| f.miss_share()).collect::<Vec<_>>(),
        "reset_timeout_s" => fidelity.iter().map(|f| f.reset_timeout_s).collect::<Vec<_>>(),
        "open_spell_median_s" => fidelity.iter().map(|f| f.open_spell_median_s).collect::<Vec<_>>(),
    )?;
    let meta = crate::output::parquet_metadata(&metrics.table(Table::HostSummary))?;
    crate::output::write_parquet_atomic(&df, &metrics.table(Table::ReplayFidelity), meta)
}

/// The fidelity table `run` wrote beside the metrics (empty when absent).
pub fn read(metrics: &MetricsFolder) -> anyhow::Result<Vec<crate::report::FidelityLine>> {
    let path = metrics.table(Table::ReplayFidelity);
    if !path.is_file() {
        return Ok(Vec::new());
    }
    let df = read_parquet(&path)?;
    let host = col_str(&df, "host")?;
    let [inst, logged, rec, rep] = [
        "instances",
        "logged_instances",
        "recorded_opens",
        "replayed_opens",
    ]
    .map(|c| col_i64(&df, c).unwrap_or_default());
    let at = |v: &[Option<i64>], i: usize| v.get(i).copied().flatten().unwrap_or(0);
    Ok((0..host.len())
        .map(|i| crate::report::FidelityLine {
            host: host[i].clone(),
            instances: at(&inst, i),
            logged_instances: at(&logged, i),
            recorded_opens: at(&rec, i),
            replayed_opens: at(&rep, i),
        })
        .collect())
}
