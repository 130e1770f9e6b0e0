//! The crawler model: what the crawler's breakers count and which of breakers.yaml's
//! settings take effect, as one documented struct that the metrics, the replay and the
//! advisor all read (the `crawler:` section of breaker-advisor.yaml).
//!
//! The defaults are the crawler at the reference commit (DocsToKG bbbbd971,
//! `src/DocsToKG/ContentDownload/`); each field names the code it comes from. The
//! telemetry is the check: every run replays the recorded policy under the model and
//! compares it with the recorded transitions (README "Crawler model").

use serde::{Deserialize, Serialize};

use crate::config::{BreakerConfig, Classify, Policy};

/// Where one breaker (or one cooldown) lives.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// One per crawler process: a telemetry source and its `run_id`.
    Process,
    /// One for the whole fleet.
    Fleet,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Process => "process",
            Scope::Fleet => "fleet",
        }
    }
}

/// What the crawler's breakers see and honour.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CrawlerModel {
    /// One breaker per host per process (`networking.configure_breaker_registry` builds
    /// "the process-wide breaker registry", networking.py ~326; pybreaker state is in
    /// memory, breakers.py ~625), or one per host for the fleet.
    pub breaker_scope: Scope,
    /// Retry-After and rolling-window cooldowns: per process (the registry's in-memory
    /// `CooldownStore`, the default) or fleet-wide (a shared SQLite or Redis store).
    pub cooldown_scope: Scope,
    /// Any success clears the host's cooldown (`on_success` calls `cooldowns.clear`,
    /// breakers.py ~421), a fleet-wide one too.
    pub success_clears_cooldown: bool,
    /// Each of a row's `retry_count` earlier attempts went through the breaker (every
    /// attempt calls `allow()` and then `on_failure` / `on_success`, networking.py
    /// ~1068-1150).
    pub count_retries: bool,
    /// How many times the breaker records a row's final outcome: once in the attempt,
    /// once more after the retry loop (networking.py ~1204-1235).
    pub final_outcome_counted: u32,
    /// A response from the HTTP cache counts as one success (the update after the retry
    /// loop has no cache check): it resets the consecutive failures and clears the
    /// cooldown.
    pub cache_hit_is_success: bool,
    /// Exceptions (timeouts, connection errors) count as breaker failures. The crawler
    /// passes no exception types by default (`BreakerClassification().failure_exceptions`
    /// is empty, networking.py ~332), and a request that raised leaves no row.
    pub exceptions_are_failures: bool,
    /// Statuses tenacity retries (`DEFAULT_RETRYABLE_STATUSES`, networking.py ~309).
    pub retry_statuses: Vec<i64>,
    /// `success_threshold` takes effect (the registry always passes
    /// `success_threshold=1` to pybreaker, breakers.py ~637).
    pub honours_success_threshold: bool,
    /// Role entries' `fail_max` and `reset_timeout_s` take effect (the loader parses
    /// them, the breaker is host-wide and never reads them).
    pub honours_role_breaker_settings: bool,
    /// A host entry inherits `defaults.roles` (the loader builds a host's roles from its
    /// own `roles:` only, breakers_loader.py ~490).
    pub host_inherits_default_roles: bool,
    /// A host's own `classify:` takes effect (the registry classifies with
    /// `config.classify`, from `defaults.classify`, only).
    pub per_host_classify: bool,
}

impl Default for CrawlerModel {
    fn default() -> Self {
        CrawlerModel {
            breaker_scope: Scope::Process,
            cooldown_scope: Scope::Process,
            success_clears_cooldown: true,
            count_retries: true,
            final_outcome_counted: 2,
            cache_hit_is_success: true,
            exceptions_are_failures: false,
            retry_statuses: vec![429, 500, 502, 503, 504],
            honours_success_threshold: false,
            honours_role_breaker_settings: false,
            host_inherits_default_roles: false,
            per_host_classify: false,
        }
    }
}

/// The `crawler:` section: `auto` (the default: the documented model, calibrated on the
/// recorded transitions each run) or a mapping that fixes the model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CrawlerSettings {
    pub model: CrawlerModel,
    /// Try the candidate models and keep the one that reproduces the recorded opens best.
    pub calibrate: bool,
}

impl Default for CrawlerSettings {
    fn default() -> Self {
        CrawlerSettings {
            model: CrawlerModel::default(),
            calibrate: true,
        }
    }
}

impl<'de> Deserialize<'de> for CrawlerSettings {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Word(String),
            Model(CrawlerModel),
        }
        match Raw::deserialize(d)? {
            Raw::Word(w) if w == "auto" => Ok(CrawlerSettings::default()),
            Raw::Word(w) => Err(serde::de::Error::custom(format!(
                "crawler: expected `auto` or a mapping of model fields, got {w:?}"
            ))),
            Raw::Model(model) => Ok(CrawlerSettings {
                model,
                calibrate: false,
            }),
        }
    }
}

/// The breaker settings of breakers.yaml that the crawler never reads, under a model:
/// a proposal for one of them goes to "needs a crawler change", never into the file.
pub const IGNORED_SETTING_SUCCESS_THRESHOLD: &str = "breakers.py ~637: `_get_or_create_host_breaker` always passes success_threshold=1 to pybreaker";

/// Where the crawler leaves requests that raised uncounted: a proposal to count them
/// goes to "needs a crawler change".
pub const UNCOUNTED_EXCEPTIONS: &str = "networking.py ~332: the breaker is built with `BreakerClassification()`, whose failure_exceptions is empty";

/// The crawler's client timeouts (`_DEFAULT_TIMEOUT`, httpx_transport.py ~152): an
/// attempt that timed out held its request at least the connect timeout, at most the
/// read timeout after it.
pub const CONNECT_TIMEOUT_S: f64 = 5.0;
pub const READ_TIMEOUT_S: f64 = 30.0;

/// tenacity's longest fallback wait before retry `n` (1 for the first), where the
/// server sent no Retry-After: `wait_random_exponential(multiplier=0.75, max=60)`
/// (networking.py ~638) waits a random time up to this.
pub fn backoff_cap_s(n: u32) -> f64 {
    (0.75 * 2f64.powi(n.min(64) as i32)).min(60.0)
}

impl CrawlerModel {
    /// The settings the crawler runs for `host` (and `role`, for the half-open trial
    /// budget): host-level `fail_max`, `reset_timeout_s` and `retry_after_cap_s` (else
    /// `defaults`); `trial_calls` from the host's own `roles:` when it has an entry,
    /// else from `defaults.roles`; `success_threshold` 1 unless the model honours it.
    pub fn policy(&self, config: &BreakerConfig, host: &str, role: Option<&str>) -> Policy {
        let mut p = Policy::default();
        let entry = config.hosts.get(host);
        let set = |p: &mut Policy, o: &crate::config::PolicyOverride, breaker: bool| {
            if breaker {
                if let Some(v) = o.fail_max {
                    p.fail_max = v;
                }
                if let Some(v) = o.reset_timeout_s {
                    p.reset_timeout_s = v;
                }
                if let Some(v) = o.retry_after_cap_s {
                    p.retry_after_cap_s = v;
                }
            }
            if let Some(v) = o.success_threshold {
                p.success_threshold = v;
            }
            if let Some(v) = o.trial_calls {
                p.trial_calls = v;
            }
        };
        set(&mut p, &config.defaults, true);
        let inherited = role
            .filter(|_| entry.is_none() || self.host_inherits_default_roles)
            .and_then(|r| config.default_roles.get(r));
        let own = role.and_then(|r| entry.and_then(|h| h.roles.get(r)));
        if let Some(o) = inherited {
            set(&mut p, o, self.honours_role_breaker_settings);
        }
        if let Some(h) = entry {
            set(&mut p, &h.policy, true);
        }
        if let Some(o) = own {
            set(&mut p, o, self.honours_role_breaker_settings);
        }
        if !self.honours_success_threshold {
            p.success_threshold = 1;
        }
        p
    }

    /// The status classification the crawler applies to `host`.
    pub fn classify_for<'a>(&self, config: &'a BreakerConfig, host: &str) -> &'a Classify {
        if self.per_host_classify {
            config.classify_for(host)
        } else {
            &config.classify
        }
    }

    /// Whether a breaker setting of breakers.yaml takes effect, and if not, the crawler
    /// code that ignores it.
    pub fn ignores(&self, key: crate::config::edit::BreakerKey) -> Option<&'static str> {
        use crate::config::edit::BreakerKey;
        match key {
            BreakerKey::SuccessThreshold if !self.honours_success_threshold => {
                Some(IGNORED_SETTING_SUCCESS_THRESHOLD)
            }
            BreakerKey::FailureExceptions => Some(UNCOUNTED_EXCEPTIONS),
            _ => None,
        }
    }

    /// One line per field, for the report.
    pub fn describe(&self) -> Vec<(&'static str, String)> {
        vec![
            (
                "breaker scope",
                format!("one breaker per host per {}", self.breaker_scope.as_str()),
            ),
            ("cooldown scope", self.cooldown_scope.as_str().to_owned()),
            (
                "one row",
                format!(
                    "{}, then the final outcome, counted {}x",
                    if self.count_retries {
                        "its retry_count earlier attempts, each counted"
                    } else {
                        "its earlier attempts not counted"
                    },
                    self.final_outcome_counted
                ),
            ),
            (
                "cache hit",
                if self.cache_hit_is_success {
                    "one success"
                } else {
                    "not counted"
                }
                .to_owned(),
            ),
            (
                "exceptions",
                if self.exceptions_are_failures {
                    "failures"
                } else {
                    "not counted (no row)"
                }
                .to_owned(),
            ),
            (
                "success_threshold",
                if self.honours_success_threshold {
                    "honoured"
                } else {
                    "ignored (always 1)"
                }
                .to_owned(),
            ),
            (
                "role fail_max / reset_timeout_s",
                if self.honours_role_breaker_settings {
                    "honoured"
                } else {
                    "ignored (host-level only)"
                }
                .to_owned(),
            ),
            (
                "success clears cooldown",
                self.success_clears_cooldown.to_string(),
            ),
        ]
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    const FILE: &str = r#"
defaults:
  fail_max: 5
  reset_timeout_s: 60
  classify: {failure_statuses: [500, 502, 503, 504]}
  roles:
    metadata: {fail_max: 3, reset_timeout_s: 45, success_threshold: 2, trial_calls: 2}
hosts:
  api.crossref.org:
    fail_max: 6
    reset_timeout_s: 90
    roles: {landing: {trial_calls: 3, success_threshold: 2}}
  own.example:
    classify: {failure_statuses: [429]}
"#;

    fn config() -> BreakerConfig {
        BreakerConfig::parse(FILE, Path::new("breakers.yaml")).unwrap()
    }

    #[test]
    fn a_host_without_entry_runs_the_host_level_defaults() {
        let m = CrawlerModel::default();
        let p = m.policy(&config(), "core.ac.uk", Some("metadata"));
        // Not the metadata role's 3 / 45 / 2: those never reach the breaker.
        assert_eq!(
            (p.fail_max, p.reset_timeout_s, p.success_threshold),
            (5, 60.0, 1)
        );
        assert_eq!(
            p.trial_calls, 2,
            "trial_calls per role works, from defaults.roles"
        );
    }

    #[test]
    fn a_host_entry_does_not_inherit_default_roles() {
        let m = CrawlerModel::default();
        let p = m.policy(&config(), "api.crossref.org", Some("metadata"));
        assert_eq!((p.fail_max, p.reset_timeout_s, p.trial_calls), (6, 90.0, 1));
        let l = m.policy(&config(), "api.crossref.org", Some("landing"));
        assert_eq!((l.trial_calls, l.success_threshold), (3, 1));
    }

    #[test]
    fn a_model_that_honours_everything_resolves_like_the_file_reads() {
        let m = CrawlerModel {
            honours_success_threshold: true,
            honours_role_breaker_settings: true,
            host_inherits_default_roles: true,
            ..CrawlerModel::default()
        };
        let p = m.policy(&config(), "core.ac.uk", Some("metadata"));
        assert_eq!(
            (p.fail_max, p.reset_timeout_s, p.success_threshold),
            (3, 45.0, 2)
        );
        assert_eq!(p, config().policy("core.ac.uk", Some("metadata")));
    }

    #[test]
    fn classification_comes_from_the_defaults_only() {
        let c = config();
        let m = CrawlerModel::default();
        assert!(
            !m.classify_for(&c, "own.example")
                .failure_statuses
                .contains(&429)
        );
        let per_host = CrawlerModel {
            per_host_classify: true,
            ..CrawlerModel::default()
        };
        assert!(
            per_host
                .classify_for(&c, "own.example")
                .failure_statuses
                .contains(&429)
        );
    }

    #[test]
    fn settings_section_is_auto_or_a_model() {
        #[derive(Deserialize)]
        struct S {
            crawler: CrawlerSettings,
        }
        let auto: S = yaml_serde::from_str("crawler: auto").unwrap();
        assert!(auto.crawler.calibrate);
        assert_eq!(auto.crawler.model, CrawlerModel::default());
        let fixed: S =
            yaml_serde::from_str("crawler: {breaker_scope: fleet, final_outcome_counted: 1}")
                .unwrap();
        assert!(!fixed.crawler.calibrate);
        assert_eq!(fixed.crawler.model.breaker_scope, Scope::Fleet);
        assert_eq!(fixed.crawler.model.final_outcome_counted, 1);
        assert!(
            fixed.crawler.model.count_retries,
            "unnamed fields keep their defaults"
        );
        assert!(yaml_serde::from_str::<S>("crawler: {breaker_scop: fleet}").is_err());
        assert!(yaml_serde::from_str::<S>("crawler: manual").is_err());
    }
}
