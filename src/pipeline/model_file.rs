//! The crawler model file beside the metrics (`crawler_model.yaml`): the model a run
//! counted by and how it was chosen. Below every command's module, so the night that
//! writes it and the report that reads it do not import each other.

use crate::layout::MetricsFolder;
use crate::output::write_atomic;

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
    pub fn load(metrics: &MetricsFolder) -> anyhow::Result<Option<ModelFile>> {
        let path = metrics.model_file();
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
    metrics: &MetricsFolder,
    model: &crate::crawler::CrawlerModel,
    calibration: &str,
    fields: Vec<crate::replay::calibrate::Finding>,
) -> anyhow::Result<()> {
    let text = yaml_serde::to_string(&ModelFile {
        calibration: calibration.to_owned(),
        crawler: model.clone(),
        fields,
    })?;
    write_atomic(&metrics.model_file(), &text)?;
    Ok(())
}
