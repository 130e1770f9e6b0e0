//! The crawler's `breakers.yaml`, read leniently into a model: defaults, role and host
//! overrides, status classification. Host keys are normalised as the crawler does.
//! (Editing the file without losing comments is the patcher's job, not this model's.)

pub mod anchors;
pub mod edit;
pub mod pins;
pub mod rates;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use yaml_serde::Value;

use crate::hostname::normalize_host;

/// The crawler's code defaults, used where breakers.yaml says nothing.
pub const DEFAULT_FAILURE_STATUSES: [i64; 6] = [429, 500, 502, 503, 504, 408];
pub const DEFAULT_NEUTRAL_STATUSES: [i64; 5] = [401, 403, 404, 410, 451];
pub const ROLES: [&str; 3] = ["metadata", "landing", "artifact"];

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: not valid YAML: {detail}", path.display())]
    Yaml { path: PathBuf, detail: String },
    #[error("{}: {key}: {detail}", path.display())]
    Invalid {
        path: PathBuf,
        key: String,
        detail: String,
    },
}

/// Breaker settings at one level; `None` inherits from the level above.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PolicyOverride {
    pub fail_max: Option<i64>,
    pub reset_timeout_s: Option<f64>,
    pub retry_after_cap_s: Option<f64>,
    pub success_threshold: Option<i64>,
    pub trial_calls: Option<i64>,
}

/// Fully resolved breaker settings for one host (and role).
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub fail_max: i64,
    pub reset_timeout_s: f64,
    pub retry_after_cap_s: f64,
    pub success_threshold: i64,
    pub trial_calls: i64,
}

impl Default for Policy {
    /// pybreaker's and the crawler's code defaults.
    fn default() -> Self {
        Policy {
            fail_max: 5,
            reset_timeout_s: 60.0,
            retry_after_cap_s: 900.0,
            success_threshold: 1,
            trial_calls: 1,
        }
    }
}

impl Policy {
    /// The resolved value of a breakers.yaml key (None for what is not one).
    pub fn value(&self, key: edit::BreakerKey) -> Option<f64> {
        use edit::BreakerKey::*;
        match key {
            FailMax => Some(self.fail_max as f64),
            ResetTimeoutS => Some(self.reset_timeout_s),
            RetryAfterCapS => Some(self.retry_after_cap_s),
            SuccessThreshold => Some(self.success_threshold as f64),
            TrialCalls => Some(self.trial_calls as f64),
            FailureExceptions => None,
        }
    }
}

impl PolicyOverride {
    /// The value this level sets for `key`, if any.
    pub fn get(&self, key: edit::BreakerKey) -> Option<f64> {
        use edit::BreakerKey::*;
        match key {
            FailMax => self.fail_max.map(|v| v as f64),
            ResetTimeoutS => self.reset_timeout_s,
            RetryAfterCapS => self.retry_after_cap_s,
            SuccessThreshold => self.success_threshold.map(|v| v as f64),
            TrialCalls => self.trial_calls.map(|v| v as f64),
            // The crawler's classification, not a breakers.yaml setting.
            FailureExceptions => None,
        }
    }

    fn apply(&self, p: &mut Policy) {
        if let Some(v) = self.fail_max {
            p.fail_max = v;
        }
        if let Some(v) = self.reset_timeout_s {
            p.reset_timeout_s = v;
        }
        if let Some(v) = self.retry_after_cap_s {
            p.retry_after_cap_s = v;
        }
        if let Some(v) = self.success_threshold {
            p.success_threshold = v;
        }
        if let Some(v) = self.trial_calls {
            p.trial_calls = v;
        }
    }
}

/// Which statuses count as breaker failures and which as neutral (success).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Classify {
    pub failure_statuses: BTreeSet<i64>,
    pub neutral_statuses: BTreeSet<i64>,
}

impl Default for Classify {
    fn default() -> Self {
        Classify {
            failure_statuses: DEFAULT_FAILURE_STATUSES.into_iter().collect(),
            neutral_statuses: DEFAULT_NEUTRAL_STATUSES.into_iter().collect(),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct HostConfig {
    pub policy: PolicyOverride,
    pub roles: BTreeMap<String, PolicyOverride>,
    pub classify: Option<Classify>,
}

/// breakers.yaml as the crawler reads it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BreakerConfig {
    pub defaults: PolicyOverride,
    pub default_roles: BTreeMap<String, PolicyOverride>,
    pub classify: Classify,
    /// Keyed by normalised host.
    pub hosts: BTreeMap<String, HostConfig>,
    /// `advanced.rolling` when enabled.
    pub rolling: Option<Rolling>,
    /// Hosts whose values are shared through YAML anchors (left alone by the advisor).
    pub shared: anchors::Sharing,
    /// Values, roles and hosts the operator pinned (`# breaker-advisor: keep`).
    pub pins: pins::Pins,
    /// Host entries the advisor cannot start from: an entry the crawler rejects
    /// (`fail_max: 0`, `reset_timeout_s: -1`; read here as absent, so the rest of the
    /// file still loads) or one beyond what any breaker means (`fail_max: 1000000000`;
    /// kept, since the crawler runs it). The advisor holds them.
    pub unusable: Unusable,
}

/// The entries of a config file the advisor cannot start from, with why (the key path
/// and value); the same for breakers.yaml and ratelimits.yaml.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Unusable {
    /// Per normalised host (a key that names no host, as written).
    pub hosts: BTreeMap<String, String>,
    /// The `defaults` entries' (their values reach every host that does not set its
    /// own): only values beyond any meaning, since a value the crawler rejects there is
    /// an error of the whole file.
    pub defaults: Option<String>,
}

impl Unusable {
    /// Why the advisor cannot start from `host`'s values, if so.
    pub fn reason(&self, host: &str) -> Option<&str> {
        self.hosts
            .get(host)
            .or(self.defaults.as_ref())
            .map(String::as_str)
    }
}

/// The largest `fail_max` the advisor starts from: a breaker that needs more
/// consecutive failures than this never opens.
pub const MAX_PLAUSIBLE_FAIL_MAX: i64 = 1_000;
/// The longest `reset_timeout_s` / `retry_after_cap_s` the advisor starts from (a day).
pub const MAX_PLAUSIBLE_SECONDS: f64 = 86_400.0;
/// The most trial calls or successes a half-open breaker plausibly asks for.
pub const MAX_PLAUSIBLE_TRIALS: i64 = 1_000;

/// Why the values of one level are beyond what any breaker means, naming the first such
/// key (`at` is the level's key path); None when they are plausible.
fn implausible(p: &PolicyOverride, at: &str) -> Option<String> {
    let big_int = |k: &str, v: Option<i64>, max: i64| {
        v.filter(|x| *x > max)
            .map(|x| format!("{at}.{k} is {x}, beyond what any breaker means (at most {max})"))
    };
    let big_secs = |k: &str, v: Option<f64>| {
        v.filter(|x| !x.is_finite() || *x > MAX_PLAUSIBLE_SECONDS).map(|x| {
            format!("{at}.{k} is {x} s, beyond what any breaker means (at most {MAX_PLAUSIBLE_SECONDS} s, a day)")
        })
    };
    big_int("fail_max", p.fail_max, MAX_PLAUSIBLE_FAIL_MAX)
        .or_else(|| big_secs("reset_timeout_s", p.reset_timeout_s))
        .or_else(|| big_secs("retry_after_cap_s", p.retry_after_cap_s))
        .or_else(|| big_int("trial_calls", p.trial_calls, MAX_PLAUSIBLE_TRIALS))
        .or_else(|| {
            big_int(
                "success_threshold",
                p.success_threshold,
                MAX_PLAUSIBLE_TRIALS,
            )
        })
}

/// [`implausible`] over a level and its roles.
fn implausible_with_roles(
    p: &PolicyOverride,
    roles: &BTreeMap<String, PolicyOverride>,
    at: &str,
) -> Option<String> {
    implausible(p, at).or_else(|| {
        roles
            .iter()
            .find_map(|(role, r)| implausible(r, &format!("{at}.roles.{role}")))
    })
}

/// The crawler's rolling-window rule (`advanced.rolling`): `threshold_failures` failures
/// within `window_s` put the host in a `cooldown_s` cooldown.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Rolling {
    pub threshold_failures: u32,
    pub window_s: f64,
    pub cooldown_s: f64,
}

/// Reads a config file's text; errors name the file.
pub fn read_file(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })
}

/// Parses YAML text into a value as the crawler's `yaml.safe_load` reads it: aliases
/// and merge keys (`<<`) expanded. Errors name the file.
pub(crate) fn parse_yaml(text: &str, path: &Path) -> Result<Value, ConfigError> {
    let yaml = |e: yaml_serde::Error| ConfigError::Yaml {
        path: path.to_owned(),
        detail: e.to_string(),
    };
    let mut v: Value = yaml_serde::from_str(text).map_err(yaml)?;
    v.apply_merge().map_err(yaml)?;
    Ok(v)
}

impl BreakerConfig {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        Self::parse(&read_file(path)?, path)
    }

    /// Parses the text of a breakers.yaml; `path` names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let doc = parse_yaml(text, path)?;
        let invalid = |key: &str, detail: String| ConfigError::Invalid {
            path: path.to_owned(),
            key: key.to_owned(),
            detail,
        };
        let mut cfg = BreakerConfig {
            shared: anchors::sharing(text),
            pins: pins::pins(text, pins::Layout::Breakers),
            ..BreakerConfig::default()
        };
        if doc.is_null() {
            return Ok(cfg);
        }
        if let Some(defaults) = doc.get("defaults") {
            cfg.defaults = policy_override(defaults, "defaults", &invalid)?;
            cfg.default_roles = roles(defaults.get("roles"), "defaults.roles", &invalid)?;
            if let Some(c) = defaults.get("classify") {
                cfg.classify = classify(c, "defaults.classify", &cfg.classify, &invalid)?;
            }
        }
        if let Some(r) = doc.get("advanced").and_then(|a| a.get("rolling"))
            && r.get("enabled").and_then(Value::as_bool).unwrap_or(false)
        {
            let num = |k: &str| -> Result<f64, ConfigError> {
                r.get(k)
                    .and_then(number)
                    .filter(|x| *x > 0.0)
                    .ok_or_else(|| {
                        invalid(
                            &format!("advanced.rolling.{k}"),
                            "must be a number > 0".into(),
                        )
                    })
            };
            cfg.rolling = Some(Rolling {
                threshold_failures: num("threshold_failures")?.max(1.0) as u32,
                window_s: num("window_s")?,
                cooldown_s: num("cooldown_s")?,
            });
        }
        cfg.unusable.defaults =
            implausible_with_roles(&cfg.defaults, &cfg.default_roles, "defaults");
        if let Some(hosts) = doc.get("hosts").and_then(Value::as_mapping) {
            for (key, value) in hosts {
                let Some((raw, host)) = host_key(key, &mut cfg.unusable) else {
                    continue;
                };
                let at = format!("hosts.{raw}");
                let entry = || -> Result<HostConfig, ConfigError> {
                    let mut hc = HostConfig {
                        policy: policy_override(value, &at, &invalid)?,
                        roles: roles(value.get("roles"), &format!("{at}.roles"), &invalid)?,
                        classify: None,
                    };
                    if let Some(c) = value.get("classify") {
                        hc.classify = Some(classify(
                            c,
                            &format!("{at}.classify"),
                            &cfg.classify,
                            &invalid,
                        )?);
                    }
                    Ok(hc)
                };
                // One host's bad entry holds that host, not the file.
                match entry() {
                    Ok(hc) => {
                        if let Some(why) = implausible_with_roles(&hc.policy, &hc.roles, &at) {
                            cfg.unusable.hosts.insert(host.clone(), why);
                        }
                        cfg.hosts.insert(host, hc);
                    }
                    Err(ConfigError::Invalid { key, detail, .. }) => {
                        cfg.unusable
                            .hosts
                            .insert(host, format!("{key}: {detail}, which the crawler rejects"));
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(cfg)
    }

    /// Effective settings: code defaults < `defaults` < `defaults.roles[role]` <
    /// `hosts[host]` < `hosts[host].roles[role]`.
    pub fn policy(&self, host: &str, role: Option<&str>) -> Policy {
        let mut p = Policy::default();
        self.defaults.apply(&mut p);
        if let Some(r) = role.and_then(|r| self.default_roles.get(r)) {
            r.apply(&mut p);
        }
        if let Some(h) = self.hosts.get(host) {
            h.policy.apply(&mut p);
            if let Some(r) = role.and_then(|r| h.roles.get(r)) {
                r.apply(&mut p);
            }
        }
        p
    }

    /// The classification that applies to a host.
    pub fn classify_for(&self, host: &str) -> &Classify {
        self.hosts
            .get(host)
            .and_then(|h| h.classify.as_ref())
            .unwrap_or(&self.classify)
    }
}

/// A `hosts:` key as (the key's text, the normalised host); None, recorded in
/// `unusable`, when it names no host: such a key holds nothing the telemetry can reach,
/// and it does not fail the file either.
pub(crate) fn host_key<'v>(key: &'v Value, unusable: &mut Unusable) -> Option<(&'v str, String)> {
    let Some(raw) = key.as_str() else {
        unusable.hosts.insert(
            format!("{key:?}"),
            format!("hosts: key {key:?} is not a host name"),
        );
        return None;
    };
    match normalize_host(raw) {
        Ok(host) => Some((raw, host)),
        Err(e) => {
            unusable
                .hosts
                .insert(raw.to_owned(), format!("hosts.{raw}: {e}"));
            None
        }
    }
}

type Invalid<'a> = dyn Fn(&str, String) -> ConfigError + 'a;

fn number(v: &Value) -> Option<f64> {
    v.as_f64().or_else(|| v.as_i64().map(|i| i as f64))
}

fn policy_override(
    v: &Value,
    at: &str,
    invalid: &Invalid<'_>,
) -> Result<PolicyOverride, ConfigError> {
    let get = |keys: &[&'static str]| keys.iter().find_map(|k| v.get(*k).map(|x| (*k, x)));
    let int = |keys: &[&'static str], min: i64| -> Result<Option<i64>, ConfigError> {
        match get(keys) {
            None => Ok(None),
            Some((k, x)) => match x.as_i64() {
                Some(i) if i >= min => Ok(Some(i)),
                _ => Err(invalid(
                    &format!("{at}.{k}"),
                    format!("must be an integer >= {min}, got {x:?}"),
                )),
            },
        }
    };
    let secs = |keys: &[&'static str]| -> Result<Option<f64>, ConfigError> {
        match get(keys) {
            None => Ok(None),
            Some((k, x)) => match number(x) {
                Some(f) if f > 0.0 => Ok(Some(f)),
                _ => Err(invalid(
                    &format!("{at}.{k}"),
                    format!("must be a number > 0, got {x:?}"),
                )),
            },
        }
    };
    Ok(PolicyOverride {
        fail_max: int(&["fail_max"], 1)?,
        reset_timeout_s: secs(&["reset_timeout_s", "reset"])?,
        retry_after_cap_s: secs(&["retry_after_cap_s", "retry_after_cap"])?,
        success_threshold: int(&["success_threshold"], 1)?,
        trial_calls: int(&["trial_calls"], 1)?,
    })
}

fn roles(
    v: Option<&Value>,
    at: &str,
    invalid: &Invalid<'_>,
) -> Result<BTreeMap<String, PolicyOverride>, ConfigError> {
    let mut out = BTreeMap::new();
    if let Some(map) = v.and_then(Value::as_mapping) {
        for (k, rv) in map {
            let role = k
                .as_str()
                .ok_or_else(|| invalid(at, format!("role key {k:?} is not a string")))?;
            out.insert(
                role.to_owned(),
                policy_override(rv, &format!("{at}.{role}"), invalid)?,
            );
        }
    }
    Ok(out)
}

fn statuses(v: &Value, at: &str, invalid: &Invalid<'_>) -> Result<BTreeSet<i64>, ConfigError> {
    let seq = v
        .as_sequence()
        .ok_or_else(|| invalid(at, "must be a list of HTTP statuses".into()))?;
    seq.iter()
        .map(|s| match s.as_i64() {
            Some(i) if (100..=999).contains(&i) => Ok(i),
            _ => Err(invalid(at, format!("{s:?} is not an HTTP status"))),
        })
        .collect()
}

fn classify(
    v: &Value,
    at: &str,
    base: &Classify,
    invalid: &Invalid<'_>,
) -> Result<Classify, ConfigError> {
    let mut c = base.clone();
    if let Some(f) = v.get("failure_statuses") {
        c.failure_statuses = statuses(f, &format!("{at}.failure_statuses"), invalid)?;
    }
    if let Some(n) = v.get("neutral_statuses") {
        c.neutral_statuses = statuses(n, &format!("{at}.neutral_statuses"), invalid)?;
    }
    if let Some(both) = c.failure_statuses.intersection(&c.neutral_statuses).next() {
        return Err(invalid(
            at,
            format!("status {both} is both a failure and neutral"),
        ));
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    const REAL_SHAPE: &str = r#"
defaults:
  fail_max: 5
  reset: 60            # alias of reset_timeout_s
  retry_after_cap: 900
  classify:
    failure_statuses: [500, 502, 503, 504]
    neutral_statuses:
      [
        400,
        404,
      ]
  roles:
    metadata: {fail_max: 3, reset_timeout_s: 45, success_threshold: 2, trial_calls: 1}
hosts:
  API.Crossref.org.:
    fail_max: 6
    reset_timeout_s: 90
    retry_after_cap_s: 600
    roles: {metadata: {success_threshold: 2, trial_calls: 1}}
  münchen.example:
    classify: {failure_statuses: [429, 503]}
resolvers:
"#;

    #[test]
    fn resolves_levels_and_aliases() {
        let c = BreakerConfig::parse(REAL_SHAPE, Path::new("breakers.yaml")).unwrap();
        let d = c.policy("unknown.example", None);
        assert_eq!(
            (d.fail_max, d.reset_timeout_s, d.retry_after_cap_s),
            (5, 60.0, 900.0)
        );
        let m = c.policy("unknown.example", Some("metadata"));
        assert_eq!(
            (m.fail_max, m.reset_timeout_s, m.success_threshold),
            (3, 45.0, 2)
        );
        let cr = c.policy("api.crossref.org", Some("metadata"));
        assert_eq!(
            (cr.fail_max, cr.reset_timeout_s, cr.retry_after_cap_s),
            (6, 90.0, 600.0)
        );
        assert_eq!(cr.success_threshold, 2);
        assert!(
            !c.classify.failure_statuses.contains(&429),
            "the file's list replaces the code default"
        );
        assert!(
            c.classify_for("xn--mnchen-3ya.example")
                .failure_statuses
                .contains(&429)
        );
        assert_eq!(
            c.classify_for("xn--mnchen-3ya.example").neutral_statuses,
            [400, 404].into()
        );
    }

    #[test]
    fn rejects_what_the_crawler_rejects_naming_the_key() {
        for (text, key) in [
            ("defaults: {fail_max: 0}", "defaults.fail_max"),
            (
                "defaults: {classify: {failure_statuses: [404], neutral_statuses: [404]}}",
                "defaults.classify",
            ),
        ] {
            let err = BreakerConfig::parse(text, Path::new("b.yaml"))
                .unwrap_err()
                .to_string();
            assert!(err.starts_with("b.yaml: ") && err.contains(key), "{err}");
        }
    }

    #[test]
    fn a_bad_host_entry_holds_that_host_not_the_file() {
        let text = "hosts:\n  a.example: {reset_timeout_s: 0}\n  b.example: {retry_after_cap_s: -1}\n  c.example: {fail_max: 1000000000}\n  d.example: {roles: {metadata: {reset_timeout_s: .inf}}}\n  ok.example: {fail_max: 7}\n  123: {fail_max: 3}\n";
        let long = "x".repeat(300);
        let text = format!("{text}  {long}: {{fail_max: 3}}\n");
        let c = BreakerConfig::parse(&text, Path::new("b.yaml")).unwrap();
        for (host, key) in [
            ("a.example", "hosts.a.example.reset_timeout_s"),
            ("b.example", "hosts.b.example.retry_after_cap_s"),
            ("c.example", "hosts.c.example.fail_max is 1000000000"),
            (
                "d.example",
                "hosts.d.example.roles.metadata.reset_timeout_s",
            ),
        ] {
            let why = c
                .unusable
                .reason(host)
                .unwrap_or_else(|| panic!("{host} held"));
            assert!(why.contains(key), "{host}: {why}");
        }
        // Rejected entries read as absent; an implausible one is what the crawler runs.
        assert!(!c.hosts.contains_key("a.example"));
        assert_eq!(c.policy("c.example", None).fail_max, 1_000_000_000);
        assert_eq!(c.unusable.reason("ok.example"), None);
        // Keys that name no host: recorded, the file still loads.
        assert!(
            c.unusable.hosts.keys().any(|k| k.contains("123")),
            "{:?}",
            c.unusable
        );
        assert!(
            c.unusable
                .hosts
                .get(&long)
                .is_some_and(|w| w.contains("longer than any DNS name")),
            "{:?}",
            c.unusable
        );
        assert_eq!(c.policy("ok.example", None).fail_max, 7);

        let absurd_defaults =
            BreakerConfig::parse("defaults: {fail_max: 5000}", Path::new("b.yaml")).unwrap();
        assert!(
            absurd_defaults
                .unusable
                .reason("any.example")
                .is_some_and(|w| w.contains("defaults.fail_max")),
        );
    }
}
