//! The run folder's files that several stages share: the crawler model and the replay
//! fidelity beside the metrics, and the analysis window in the metrics' metadata. Below
//! every command's module: it reads and writes files, and knows no stage.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::bail;

use super::InputError;
use crate::output::write_atomic;

/// The crawler model a run counted by, beside the metrics.
pub const MODEL_FILE: &str = "crawler_model.yaml";

/// The model a run's metrics were counted by, and how it was chosen, as YAML (the
/// `crawler:` section it amounts to, for the report and for the next run's settings).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelFile {
    pub calibration: String,
    pub crawler: crate::crawler::CrawlerModel,
    /// Per calibrated field: what the night showed, the value chosen, the fit of the
    /// other value (empty when the settings fix the model).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<crate::replay::calibrate::Finding>,
}

impl ModelFile {
    /// The model file of a metrics folder, when `run` wrote one.
    pub fn load(metrics: &Path) -> anyhow::Result<Option<ModelFile>> {
        let path = metrics.join(MODEL_FILE);
        if !path.is_file() {
            return Ok(None);
        }
        let text = crate::config::read_file(&path)?;
        let m =
            yaml_serde::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        Ok(Some(m))
    }
}

/// Writes the model file beside the metrics.
pub fn write_model(
    metrics: &Path,
    model: &crate::crawler::CrawlerModel,
    calibration: &str,
    fields: Vec<crate::replay::calibrate::Finding>,
) -> anyhow::Result<()> {
    let text = yaml_serde::to_string(&ModelFile {
        calibration: calibration.to_owned(),
        crawler: model.clone(),
        fields,
    })?;
    write_atomic(&metrics.join(MODEL_FILE), &text)?;
    Ok(())
}

/// The fidelity file beside the metrics: `replay_fidelity.parquet`.
pub const FIDELITY_FILE: &str = "replay_fidelity.parquet";

/// The analysis window (epoch µs) in the metrics' metadata.
pub fn window_of(metrics: &Path) -> anyhow::Result<(i64, i64)> {
    window_in(&metrics_meta(metrics)?, metrics)
}

/// The key-value metadata of a run's metrics (host_summary.parquet's).
pub fn metrics_meta(metrics: &Path) -> anyhow::Result<BTreeMap<String, String>> {
    Ok(
        crate::output::parquet_metadata(&metrics.join("host_summary.parquet"))?
            .into_iter()
            .collect(),
    )
}

/// The analysis window in the metrics' metadata (`metrics` names them in the error).
pub fn window_in(meta: &BTreeMap<String, String>, metrics: &Path) -> anyhow::Result<(i64, i64)> {
    let get = |k: &str| {
        meta.get(k)
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .map(|d| d.timestamp_micros())
    };
    match (
        get("breaker_advisor.window_start"),
        get("breaker_advisor.window_end"),
    ) {
        (Some(a), Some(b)) => Ok((a, b)),
        _ => bail!(InputError(format!(
            "{}: no analysis window in its metadata",
            metrics.join("host_summary.parquet").display()
        ))),
    }
}
