//! Stage 5, patch: the versioned patch file (`breakers.patch.yaml`) that records a run's
//! changes with their evidence, and its application to breakers.yaml and ratelimits.yaml
//! with a minimal, comment-preserving diff.
//!
//! One patch file covers both config files: each has its own section with the base
//! file's SHA-256, so a patch made against another version of either file is refused.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::Digest;

use crate::advise::{
    BreakerChange, CrawlerChange, Held, Plan, RateBaselines, RateChange, Reverted,
};
use crate::config::edit::{BreakerEdit, patch_breakers};
use crate::config::rates::{RateLimits, RatesEdit, patch_rates};
use crate::config::{BreakerConfig, ConfigError};
use crate::hostname::normalize_host;

/// The patch file format this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum PatchError {
    #[error("{}: {detail}", path.display())]
    Invalid { path: PathBuf, detail: String },
    #[error(
        "{}: stale patch: it was made for a file with sha256 {expected}, this one has {actual}; run the advisor again on the current file",
        path.display()
    )]
    Stale {
        path: PathBuf,
        expected: String,
        actual: String,
    },
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The analysed window, as RFC 3339 UTC instants.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatchWindow {
    pub start: String,
    pub end: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakersSection {
    /// The file name the patch was made for (informational; `apply` takes the path).
    pub file: String,
    pub base_sha256: String,
    pub changes: Vec<BreakerChange>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RatelimitsSection {
    pub file: String,
    pub base_sha256: String,
    pub changes: Vec<RateChange>,
}

/// `breakers.patch.yaml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatchFile {
    pub format_version: u32,
    /// Increases whenever a run's patch differs from the previous one.
    pub patch_version: u64,
    pub tool_version: String,
    pub window: PatchWindow,
    /// SHA-256 of the metrics and incidents the advice came from.
    pub input_fingerprint: String,
    pub breakers: BreakersSection,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ratelimits: Option<RatelimitsSection>,
    /// Rates first recorded per host and role, or last set from the server's quota:
    /// the reference of every multiplier, carried from patch to patch (also by runs
    /// without ratelimits.yaml).
    #[serde(default)]
    pub baselines: RateBaselines,
    /// Hosts left alone, and why.
    #[serde(default)]
    pub held: Vec<Held>,
    /// Proposals for settings the crawler ignores (never applied to the files).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub needs_crawler_change: Vec<CrawlerChange>,
    /// Changes a person set back, not proposed again for `advise.revert_hold_nights`
    /// from the night they were seen (carried from patch to patch).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reverted: Vec<Reverted>,
    /// The run that made this patch also wrote it into the config files (`run
    /// --write`): a config back at a change's `from` value later is a person's revert.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub written: bool,
    /// With `crawler: auto`, the model the fleet's calibration chose: the next night's
    /// shard jobs count by it (one shard cannot calibrate the fleet alone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calibrated_model: Option<crate::crawler::CrawlerModel>,
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    crate::telemetry::read::hex(&sha2::Sha256::digest(bytes))
}

/// A config file given to the patch stage: its path and current text.
pub struct ConfigText<'a> {
    pub path: &'a Path,
    pub text: &'a str,
}

fn file_name(p: &Path) -> String {
    p.file_name().map_or_else(
        || p.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

impl PatchFile {
    /// The patch for a plan. `previous` (the last run's patch) gives the version: kept
    /// when nothing but the version would differ, so reruns write identical bytes;
    /// increased otherwise.
    pub fn new(
        plan: &Plan,
        window: PatchWindow,
        input_fingerprint: String,
        breakers: ConfigText<'_>,
        ratelimits: Option<ConfigText<'_>>,
        previous: Option<&PatchFile>,
    ) -> PatchFile {
        let mut p = PatchFile {
            format_version: FORMAT_VERSION,
            patch_version: 1,
            tool_version: env!("CARGO_PKG_VERSION").to_owned(),
            window,
            input_fingerprint,
            breakers: BreakersSection {
                file: file_name(breakers.path),
                base_sha256: sha256_hex(breakers.text.as_bytes()),
                changes: plan.breakers.clone(),
            },
            ratelimits: ratelimits.map(|r| RatelimitsSection {
                file: file_name(r.path),
                base_sha256: sha256_hex(r.text.as_bytes()),
                changes: plan.rates.clone(),
            }),
            baselines: plan.baselines.clone(),
            held: plan.held.clone(),
            needs_crawler_change: plan.crawler_changes.clone(),
            reverted: plan.reverted.clone(),
            written: false,
            calibrated_model: None,
        };
        p.settle_version(previous);
        p
    }

    /// The same patch recording the model the fleet's calibration chose.
    pub fn with_calibrated_model(
        mut self,
        model: Option<&crate::crawler::CrawlerModel>,
        previous: Option<&PatchFile>,
    ) -> PatchFile {
        self.calibrated_model = model.cloned();
        self.settle_version(previous);
        self
    }

    /// The same patch, saying whether its run writes it into the config files.
    pub fn with_written(mut self, written: bool, previous: Option<&PatchFile>) -> PatchFile {
        self.written = written;
        self.settle_version(previous);
        self
    }

    /// The previous patch's version when nothing else differs, else the next one.
    fn settle_version(&mut self, previous: Option<&PatchFile>) {
        self.patch_version = match previous {
            None => 1,
            Some(prev) => {
                let same = PatchFile {
                    patch_version: prev.patch_version,
                    ..self.clone()
                };
                if &same == prev {
                    prev.patch_version
                } else {
                    prev.patch_version + 1
                }
            }
        };
    }

    pub fn change_count(&self) -> usize {
        self.breakers.changes.len() + self.ratelimits.as_ref().map_or(0, |r| r.changes.len())
    }

    pub fn to_yaml(&self) -> String {
        let body = yaml_serde::to_string(self).expect("a patch file always serialises");
        format!(
            "# breaker-advisor patch: proposed breakers.yaml / ratelimits.yaml changes and their evidence.\n\
             # Apply with: breaker-advisor apply --patch <this file> --config breakers.yaml --ratelimits ratelimits.yaml\n{body}"
        )
    }

    pub fn parse(text: &str, path: &Path) -> Result<PatchFile, PatchError> {
        let invalid = |detail: String| PatchError::Invalid {
            path: path.to_owned(),
            detail,
        };
        let p: PatchFile = yaml_serde::from_str(text)
            .map_err(|e| invalid(format!("not a breaker-advisor patch file: {e}")))?;
        if p.format_version != FORMAT_VERSION {
            return Err(invalid(format!(
                "patch format {} is not supported (this build reads format {FORMAT_VERSION})",
                p.format_version
            )));
        }
        for c in &p.breakers.changes {
            normalize_host(&c.host)
                .map_err(|e| invalid(format!("breakers change for {:?}: {e}", c.host)))?;
        }
        Ok(p)
    }

    pub fn load(path: &Path) -> Result<PatchFile, PatchError> {
        let text = std::fs::read_to_string(path).map_err(|source| PatchError::Io {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path)
    }
}

/// What applying a section to a file did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// The new text (to be written).
    Changed(String),
    /// The file already holds every change (the patch was applied before).
    AlreadyApplied,
    /// The section has no changes.
    Nothing,
}

fn check_base(
    path: &Path,
    text: &str,
    expected: &str,
    already: impl FnOnce() -> bool,
) -> Result<Option<Applied>, PatchError> {
    let actual = sha256_hex(text.as_bytes());
    if actual == expected {
        return Ok(None);
    }
    if already() {
        return Ok(Some(Applied::AlreadyApplied));
    }
    Err(PatchError::Stale {
        path: path.to_owned(),
        expected: expected.to_owned(),
        actual,
    })
}

/// Whether the parsed breakers.yaml holds `c.to` at the change's own level.
fn holds(cfg: &BreakerConfig, c: &BreakerChange) -> bool {
    let Ok(host) = normalize_host(&c.host) else {
        return false;
    };
    let Some(hc) = cfg.hosts.get(&host) else {
        return false;
    };
    let o = match &c.role {
        None => Some(&hc.policy),
        Some(r) => hc.roles.get(r),
    };
    o.is_some_and(|o| o.get(c.key) == Some(c.to as f64))
}

/// Applies the breakers section to the text of `path`. The edited text is re-read: it
/// must hold every intended value, else nothing is returned for writing.
pub fn apply_breakers(
    section: &BreakersSection,
    path: &Path,
    text: &str,
) -> Result<Applied, PatchError> {
    if section.changes.is_empty() {
        return Ok(Applied::Nothing);
    }
    let already = || {
        BreakerConfig::parse(text, path)
            .is_ok_and(|cfg| section.changes.iter().all(|c| holds(&cfg, c)))
    };
    if let Some(a) = check_base(path, text, &section.base_sha256, already)? {
        return Ok(a);
    }
    let edits: Vec<BreakerEdit> = section
        .changes
        .iter()
        .map(|c| BreakerEdit::new(Some(&c.host), c.role.as_deref(), c.key, c.to))
        .collect();
    let out = patch_breakers(text, path, &edits)?;
    let cfg = BreakerConfig::parse(&out, path)?;
    if let Some(c) = section.changes.iter().find(|c| !holds(&cfg, c)) {
        return Err(PatchError::Invalid {
            path: path.to_owned(),
            detail: format!(
                "the edited file does not read back {} = {} for {}; nothing was written",
                c.key.name(),
                c.to,
                c.host
            ),
        });
    }
    Ok(Applied::Changed(out))
}

/// Applies the ratelimits section to the text of `path` (re-read and checked by
/// `patch_rates`).
pub fn apply_ratelimits(
    section: &RatelimitsSection,
    path: &Path,
    text: &str,
) -> Result<Applied, PatchError> {
    if section.changes.is_empty() {
        return Ok(Applied::Nothing);
    }
    let already = || {
        RateLimits::parse(text, path).is_ok_and(|rl| {
            section.changes.iter().all(|c| {
                normalize_host(&c.host)
                    .is_ok_and(|h| rl.hosts.get(&h).and_then(|m| m.get(&c.role)) == Some(&c.to))
            })
        })
    };
    if let Some(a) = check_base(path, text, &section.base_sha256, already)? {
        return Ok(a);
    }
    let edits: Vec<RatesEdit> = section
        .changes
        .iter()
        .map(|c| RatesEdit {
            host: c.host.clone(),
            role: c.role.clone(),
            rates: c.to.clone(),
        })
        .collect();
    Ok(Applied::Changed(patch_rates(text, path, &edits)?))
}

/// A unified diff of two texts, labelled with the file name (empty when equal).
pub fn unified_diff(name: &str, before: &str, after: &str) -> String {
    if before == after {
        return String::new();
    }
    similar::TextDiff::from_lines(before, after)
        .unified_diff()
        .context_radius(3)
        .header(&format!("a/{name}"), &format!("b/{name}"))
        .to_string()
}
