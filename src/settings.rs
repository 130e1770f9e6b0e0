//! The tool's own settings file (`breaker-advisor.yaml`, or `--settings FILE`). We own
//! this format, so unknown keys are errors rather than silently ignored typos.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Looked for in the working directory when `--settings` is not given.
pub const DEFAULT_SETTINGS_FILE: &str = "breaker-advisor.yaml";

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    #[serde(default)]
    pub cooldown_store: Option<CooldownStoreSettings>,
    /// Defaults for `detect`; its command-line flags override them.
    #[serde(default)]
    pub detect: DetectSettings,
    /// The advisor's limits, sample gates, hysteresis bands and steps.
    #[serde(default)]
    pub advise: crate::advise::AdviseSettings,
    /// The crawler model (`auto`, the default, or a mapping of its fields).
    #[serde(default)]
    pub crawler: crate::crawler::CrawlerSettings,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetectSettings {
    /// `pelt-binomial` or `bocpd`.
    pub detector: Option<crate::detect::DetectorKind>,
    /// PELT penalty in multiples of ln(buckets).
    pub penalty: Option<f64>,
    pub min_excess: Option<f64>,
    pub min_incident_buckets: Option<usize>,
    pub bocpd_hazard: Option<f64>,
    pub bocpd_prior_scale: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CooldownStoreSettings {
    /// `sqlite:PATH`, `redis://...` or `rediss://...`.
    pub url: String,
    /// Redis key prefix; the crawler's default is `breaker:cooldown:`.
    #[serde(default)]
    pub key_prefix: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("{}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {detail}", path.display())]
    Parse { path: PathBuf, detail: String },
}

/// Loads the settings: from `explicit` (which must exist), else from
/// `./breaker-advisor.yaml` when present, else the defaults.
pub fn load(explicit: Option<&Path>) -> Result<Settings, SettingsError> {
    let path = match explicit {
        Some(p) => p.to_owned(),
        None => {
            let p = PathBuf::from(DEFAULT_SETTINGS_FILE);
            if !p.is_file() {
                return Ok(Settings::default());
            }
            p
        }
    };
    let text = std::fs::read_to_string(&path).map_err(|source| SettingsError::Read {
        path: path.clone(),
        source,
    })?;
    if text.trim().is_empty() {
        return Ok(Settings::default());
    }
    yaml_serde::from_str(&text).map_err(|e| SettingsError::Parse {
        path,
        detail: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rejects_unknown_keys() {
        let s: Settings =
            yaml_serde::from_str("cooldown_store:\n  url: sqlite:/tmp/cd.sqlite\n").unwrap();
        assert_eq!(s.cooldown_store.unwrap().url, "sqlite:/tmp/cd.sqlite");
        let bad: Result<Settings, _> = yaml_serde::from_str("cooldown_stor:\n  url: x\n");
        assert!(bad.unwrap_err().to_string().contains("cooldown_stor"));
        let d: Settings =
            yaml_serde::from_str("detect:\n  detector: bocpd\n  penalty: 3\n").unwrap();
        assert_eq!(d.detect.detector, Some(crate::detect::DetectorKind::Bocpd));
        assert_eq!(d.detect.penalty, Some(3.0));
    }
}
