//! ratelimits.yaml rate strings (`LIMIT/UNIT`, and `LIMIT/NUNIT` such as `1/3SECOND`,
//! read correctly though the crawler misreads it) and their comment-preserving scaling
//! by an AIMD multiplier.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use yaml_edit::Sequence;
use yaml_serde::Value;

use super::ConfigError;
use super::edit::{check_only_edited, child_mapping, existing_host_key, parse_for_edit};
use crate::hostname::normalize_host;

/// The rate units the crawler knows, with their length in seconds, finest first.
pub const UNITS: [(&str, f64); 4] = [
    ("SECOND", 1.0),
    ("MINUTE", 60.0),
    ("HOUR", 3600.0),
    ("DAY", 86_400.0),
];

/// One rate: `limit` calls per `per` units of `unit`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rate {
    pub limit: u64,
    pub per: u64,
    pub unit: String,
}

impl Rate {
    /// Parses `10/SECOND`, `5000/HOUR`, `1/3SECOND` (one call per three seconds: the
    /// crawler's own parser misreads this form as one per second; we read it right).
    pub fn parse(text: &str) -> Option<Rate> {
        let (limit, rest) = text.trim().split_once('/')?;
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let (per, unit) = rest.split_at(digits);
        let unit = unit.to_ascii_uppercase();
        if !UNITS.iter().any(|(u, _)| *u == unit) {
            return None;
        }
        let limit: u64 = limit.trim().parse().ok().filter(|l| *l > 0)?;
        let per: u64 = if per.is_empty() {
            1
        } else {
            per.parse().ok().filter(|p| *p > 0)?
        };
        Some(Rate { limit, per, unit })
    }

    /// Calls per second.
    pub fn per_second(&self) -> f64 {
        let unit_s = UNITS
            .iter()
            .find(|(u, _)| *u == self.unit)
            .map_or(1.0, |(_, s)| *s);
        self.limit as f64 / (self.per as f64 * unit_s)
    }

    /// The rate times `m`: the limit scaled and rounded over the same interval, as the
    /// crawler applies a multiplier (`8/SECOND` x 0.9 is `7/SECOND`, never
    /// `432/MINUTE`, which would let sixty seconds' worth through at once). Rounding
    /// may leave the limit as it was (`2/SECOND` x 0.8); the advisor then says so. The
    /// `N/kUNIT` form (`1/3SECOND`), which the crawler's parser misreads, is the one
    /// exception: it is rewritten as `COUNT/UNIT` in the finest unit whose count rounds
    /// within 2% (`1/3SECOND` x 0.8 becomes 16/MINUTE).
    pub fn scaled(&self, m: f64) -> Rate {
        let round = f64::round;
        if self.per == 1 {
            return Rate {
                limit: round(self.limit as f64 * m).max(1.0) as u64,
                per: 1,
                unit: self.unit.clone(),
            };
        }
        let target = self.per_second() * m;
        let first = UNITS.iter().position(|(u, _)| *u == self.unit).unwrap_or(0);
        for (unit, seconds) in &UNITS[first..] {
            let count = target * seconds;
            if count >= 1.0 && (round(count) - count).abs() / count <= 0.02 {
                return Rate {
                    limit: round(count) as u64,
                    per: 1,
                    unit: (*unit).to_owned(),
                };
            }
        }
        Rate {
            limit: round(target * 86_400.0).max(1.0) as u64,
            per: 1,
            unit: "DAY".to_owned(),
        }
    }
}

/// The window of a unit named in any case (`minute`, `HOUR`).
pub fn unit_seconds(unit: &str) -> Option<f64> {
    UNITS
        .iter()
        .find(|(u, _)| u.eq_ignore_ascii_case(unit.trim()))
        .map(|&(_, s)| s)
}

/// The unit whose window is `window_s` seconds, if any.
pub fn unit_of(window_s: f64) -> Option<&'static str> {
    UNITS.iter().find(|(_, s)| *s == window_s).map(|&(u, _)| u)
}

/// A rate string as the crawler's `RateLimitRegistry._parse_rates` reads it: the limit
/// and the window in seconds, `LIMIT/UNIT` with an unknown unit (such as `3SECOND`) read
/// as a second, so `1/3SECOND` is one a second; None where the crawler logs a warning
/// and drops the rate.
pub fn crawler_reading(text: &str) -> Option<(u64, f64)> {
    let (limit, unit) = text.split_once('/')?;
    let limit: u64 = limit.trim().parse().ok()?;
    let window_s = match unit.trim().to_ascii_uppercase().as_str() {
        "MINUTE" => 60.0,
        "HOUR" => 3600.0,
        "DAY" => 86_400.0,
        _ => 1.0,
    };
    Some((limit, window_s))
}

impl std::fmt::Display for Rate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.per == 1 {
            write!(f, "{}/{}", self.limit, self.unit)
        } else {
            write!(f, "{}/{}{}", self.limit, self.per, self.unit)
        }
    }
}

/// The `aimd:` section: how the advisor moves a host's rate multiplier.
#[derive(Debug, Clone, PartialEq)]
pub struct Aimd {
    /// A 429 ratio above this lowers the rates.
    pub high_429_ratio: f64,
    pub increase_step_pct: f64,
    pub decrease_step_pct: f64,
    /// Bounds of the multiplier, relative to the rates first recorded for the host.
    pub min_multiplier: f64,
    pub max_multiplier: f64,
}

impl Default for Aimd {
    /// The crawler's documented defaults.
    fn default() -> Self {
        Aimd {
            high_429_ratio: 0.05,
            increase_step_pct: 5.0,
            decrease_step_pct: 20.0,
            min_multiplier: 0.3,
            max_multiplier: 1.0,
        }
    }
}

/// What the crawler's limiter does for one role besides its rates, as its loader
/// builds a `RoleRates` (`ratelimits_loader._build_role_rates`): a missing key takes
/// the dataclass default, not the `defaults:` entry's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoleWait {
    /// How long `acquire` polls for a free slot before it raises `RateLimitExceeded`.
    pub max_delay_ms: u64,
    /// Whether HEAD requests take a slot (`count_head`, default false: they skip it).
    pub count_head: bool,
}

impl Default for RoleWait {
    fn default() -> Self {
        RoleWait {
            max_delay_ms: 200,
            count_head: false,
        }
    }
}

/// ratelimits.yaml as far as the advisor and the simulator need it: the rate strings
/// and waits per role, at the defaults and per (normalised) host, and the AIMD
/// parameters.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RateLimits {
    pub defaults: BTreeMap<String, Vec<String>>,
    pub hosts: BTreeMap<String, BTreeMap<String, Vec<String>>>,
    /// The waits of the same role entries as `defaults` / `hosts`.
    pub default_waits: BTreeMap<String, RoleWait>,
    pub host_waits: BTreeMap<String, BTreeMap<String, RoleWait>>,
    pub aimd: Aimd,
    /// `backend.kind`: where the limiter's counts live (`memory`: per process, the
    /// default; `multiprocess` / `sqlite`: per machine; `redis` / `postgres`: fleet).
    pub backend: String,
    /// Hosts whose values are shared through YAML anchors (left alone by the advisor).
    pub shared: super::anchors::Sharing,
    /// Roles and hosts the operator pinned (`# breaker-advisor: keep`).
    pub pins: super::pins::Pins,
    /// Host entries the advisor cannot start from: one that does not parse (`0/SECOND`;
    /// read as absent, so the rest of the file still loads) or a rate or wait beyond what
    /// any limiter means (`999999999/DAY`; kept). The advisor holds them.
    pub unusable: super::Unusable,
}

/// The fastest rate the advisor starts from, in calls per second: no crawler calls one
/// host faster, so a rate above this limits nothing and scaling it means nothing.
pub const MAX_PLAUSIBLE_PER_SECOND: f64 = 10_000.0;
/// The longest limiter wait the advisor starts from (a day, in milliseconds).
pub const MAX_PLAUSIBLE_DELAY_MS: u64 = (super::MAX_PLAUSIBLE_SECONDS * 1_000.0) as u64;

/// Why a level's roles are beyond what any limiter means (`at`: its key path), naming
/// the first such value; None when they are plausible.
fn implausible(
    rates: &BTreeMap<String, Vec<String>>,
    waits: &BTreeMap<String, RoleWait>,
    at: &str,
) -> Option<String> {
    let fast = rates.iter().find_map(|(role, list)| {
        list.iter().find_map(|text| {
            // The faster of our reading and the crawler's (`20000/3SECOND` is 20,000 a
            // second to it).
            let ours = Rate::parse(text)?.per_second();
            let crawler = crawler_reading(text).map_or(0.0, |(l, w)| l as f64 / w);
            let per_s = ours.max(crawler);
            (per_s > MAX_PLAUSIBLE_PER_SECOND).then(|| {
                format!(
                    "{at}.{role}.rates has {text} ({per_s:.0} a second), beyond what any limiter means (at most {MAX_PLAUSIBLE_PER_SECOND:.0} a second)"
                )
            })
        })
    });
    fast.or_else(|| {
        waits.iter().find_map(|(role, w)| {
            (w.max_delay_ms > MAX_PLAUSIBLE_DELAY_MS).then(|| {
                format!(
                    "{at}.{role}.max_delay_ms is {}, beyond what any limiter means (at most {MAX_PLAUSIBLE_DELAY_MS}, a day)",
                    w.max_delay_ms
                )
            })
        })
    })
}

impl RateLimits {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        Self::parse(&super::read_file(path)?, path)
    }

    /// Parses a ratelimits.yaml; every rate string must parse (errors name the key).
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let invalid = |key: &str, detail: String| ConfigError::Invalid {
            path: path.to_owned(),
            key: key.to_owned(),
            detail,
        };
        let doc = super::parse_yaml(text, path)?;
        let mut out = RateLimits {
            backend: doc
                .get("backend")
                .and_then(|b| b.get("kind"))
                .and_then(Value::as_str)
                .unwrap_or("memory")
                .to_ascii_lowercase(),
            shared: super::anchors::sharing(text),
            pins: super::pins::pins(text, super::pins::Layout::Ratelimits),
            ..RateLimits::default()
        };
        type Roles = (BTreeMap<String, Vec<String>>, BTreeMap<String, RoleWait>);
        let roles = |v: &Value, at: &str| -> Result<Roles, ConfigError> {
            let mut m = BTreeMap::new();
            let mut waits = BTreeMap::new();
            for (k, rv) in v.as_mapping().into_iter().flatten() {
                let Some(role) = k.as_str() else { continue };
                if !rv.is_mapping() {
                    continue;
                }
                let d = RoleWait::default();
                let max_delay_ms = match rv.get("max_delay_ms") {
                    None => d.max_delay_ms,
                    Some(x) => x.as_u64().ok_or_else(|| {
                        invalid(
                            &format!("{at}.{role}.max_delay_ms"),
                            format!("must be a whole number of milliseconds >= 0, got {x:?}"),
                        )
                    })?,
                };
                let count_head = match rv.get("count_head") {
                    None => d.count_head,
                    Some(x) => x.as_bool().ok_or_else(|| {
                        invalid(
                            &format!("{at}.{role}.count_head"),
                            format!("must be true or false, got {x:?}"),
                        )
                    })?,
                };
                waits.insert(
                    role.to_owned(),
                    RoleWait {
                        max_delay_ms,
                        count_head,
                    },
                );
                // An entry without rates still has its wait (and the crawler reads it
                // instead of the defaults' entry).
                let Some(rates) = rv.get("rates") else {
                    continue;
                };
                let at = format!("{at}.{role}.rates");
                let seq = rates
                    .as_sequence()
                    .ok_or_else(|| invalid(&at, "must be a list of rate strings".into()))?;
                let mut list = Vec::new();
                for r in seq {
                    let text = r.as_str().unwrap_or_default();
                    if Rate::parse(text).is_none() {
                        let shown = r
                            .as_str()
                            .map_or_else(|| format!("{r:?}"), |t| format!("{t:?}"));
                        return Err(invalid(
                            &at,
                            format!("{shown} is not a rate like 10/SECOND"),
                        ));
                    }
                    list.push(text.to_owned());
                }
                m.insert(role.to_owned(), list);
            }
            Ok((m, waits))
        };
        if let Some(d) = doc.get("defaults") {
            (out.defaults, out.default_waits) = roles(d, "defaults")?;
            out.unusable.defaults = implausible(&out.defaults, &out.default_waits, "defaults");
        }
        for (k, hv) in doc
            .get("hosts")
            .and_then(Value::as_mapping)
            .into_iter()
            .flatten()
        {
            let Some((raw, host)) = super::host_key(k, &mut out.unusable) else {
                continue;
            };
            let at = format!("hosts.{raw}");
            // One host's bad entry holds that host, not the file.
            match roles(hv, &at) {
                Ok((rates, waits)) => {
                    if let Some(why) = implausible(&rates, &waits, &at) {
                        out.unusable.hosts.insert(host.clone(), why);
                    }
                    out.hosts.insert(host.clone(), rates);
                    out.host_waits.insert(host, waits);
                }
                Err(ConfigError::Invalid { key, detail, .. }) => {
                    out.unusable.hosts.insert(host, format!("{key}: {detail}"));
                }
                Err(e) => return Err(e),
            }
        }
        if let Some(a) = doc.get("aimd") {
            let num = |key: &str, default: f64| -> Result<f64, ConfigError> {
                match a.get(key) {
                    None => Ok(default),
                    Some(v) => v
                        .as_f64()
                        .or_else(|| v.as_i64().map(|i| i as f64))
                        .filter(|f| f.is_finite() && *f >= 0.0)
                        .ok_or_else(|| {
                            invalid(
                                &format!("aimd.{key}"),
                                format!("must be a number >= 0, got {v:?}"),
                            )
                        }),
                }
            };
            let d = Aimd::default();
            out.aimd = Aimd {
                high_429_ratio: num("high_429_ratio", d.high_429_ratio)?,
                increase_step_pct: num("increase_step_pct", d.increase_step_pct)?,
                decrease_step_pct: num("decrease_step_pct", d.decrease_step_pct)?,
                min_multiplier: num("min_multiplier", d.min_multiplier)?,
                max_multiplier: num("max_multiplier", d.max_multiplier)?,
            };
            if out.aimd.min_multiplier > out.aimd.max_multiplier || out.aimd.max_multiplier <= 0.0 {
                return Err(invalid(
                    "aimd",
                    "min_multiplier must be at most max_multiplier, and max_multiplier above 0"
                        .into(),
                ));
            }
        }
        Ok(out)
    }

    /// The `rate_windows` column counting the limiters behind a window under this
    /// backend: one per process, per machine, or one for the fleet (None).
    pub fn limiter_column(&self) -> Option<&'static str> {
        match self.backend.as_str() {
            "redis" | "postgres" => None,
            "multiprocess" | "sqlite" => Some("machines"),
            _ => Some("processes"),
        }
    }

    /// The rates in force for a host and role: the host's own, else the role's defaults.
    pub fn rates_for(&self, host: &str, role: &str) -> Option<&Vec<String>> {
        self.hosts
            .get(host)
            .and_then(|h| h.get(role))
            .or_else(|| self.defaults.get(role))
    }

    /// The wait in force for a host and role: the host's own role entry's, else the
    /// defaults' (the crawler takes a host's role entry whole, with or without rates).
    pub fn wait_for(&self, host: &str, role: &str) -> RoleWait {
        let own = self
            .host_waits
            .get(host)
            .is_some_and(|h| h.contains_key(role));
        let waits = if own {
            self.host_waits.get(host).and_then(|h| h.get(role))
        } else {
            self.default_waits.get(role)
        };
        waits.copied().unwrap_or_default()
    }
}

/// One rates edit: `hosts.<host>.<role>.rates` becomes `rates` (created when missing).
#[derive(Debug, Clone, PartialEq)]
pub struct RatesEdit {
    pub host: String,
    pub role: String,
    pub rates: Vec<String>,
}

/// Applies rates edits to the text of a ratelimits.yaml, keeping comments and the list
/// style (a flow list stays a flow list); a host is matched by its normalised name. The
/// result is re-parsed: it must load, hold exactly the new rates, and differ from the
/// original only there.
pub fn patch_rates(text: &str, path: &Path, edits: &[RatesEdit]) -> Result<String, ConfigError> {
    let invalid = |key: &str, detail: String| ConfigError::Invalid {
        path: path.to_owned(),
        key: key.to_owned(),
        detail,
    };
    let before = RateLimits::parse(text, path)?;
    let (doc, root) = parse_for_edit(text, path)?;
    let shared = super::anchors::sharing(text);
    let mut edited = BTreeSet::new();
    for e in edits {
        let host = normalize_host(&e.host)
            .map_err(|err| invalid(&format!("hosts.{}", e.host), err.to_string()))?;
        if let Some(sh) = shared.get(&host) {
            return Err(invalid(
                &format!("hosts.{host}"),
                format!("{}; nothing was written", sh.describe()),
            ));
        }
        if let Some(bad) = e.rates.iter().find(|r| Rate::parse(r).is_none()) {
            return Err(invalid(
                &format!("hosts.{host}.{}.rates", e.role),
                format!("{bad:?} is not a rate"),
            ));
        }
        let hosts = child_mapping(&root, "hosts");
        let key = existing_host_key(&hosts, &host).unwrap_or_else(|| host.clone());
        let created = !before
            .host_waits
            .get(&host)
            .is_some_and(|h| h.contains_key(&e.role));
        let role_map = child_mapping(&child_mapping(&hosts, &key), &e.role);
        match role_map.get_sequence("rates") {
            // Same length, or rates added at the end: edited in place, in its style.
            Some(seq) if seq.len() <= e.rates.len() => {
                let n = seq.len();
                let was = before.hosts.get(&host).and_then(|h| h.get(&e.role));
                for (i, r) in e.rates.iter().enumerate() {
                    if i < n {
                        // An unchanged item is left as written (quotes, comments).
                        if was.and_then(|w| w.get(i)) != Some(r) {
                            seq.set(i, r.as_str());
                        }
                    } else {
                        seq.push(r.as_str());
                    }
                }
            }
            _ => {
                let seq = Sequence::new_flow();
                for r in &e.rates {
                    seq.push(r.as_str());
                }
                role_map.set("rates", seq);
            }
        }
        if created {
            // A new host entry replaces the defaults' entry as a whole (the crawler's
            // loader does not merge them): it carries the defaults' wait along, so only
            // the rates change.
            let wait = before.wait_for(&host, &e.role);
            let d = RoleWait::default();
            let mut carry = |field: &str| {
                edited.insert(vec![
                    "hosts".to_owned(),
                    key.clone(),
                    e.role.clone(),
                    field.to_owned(),
                ]);
            };
            if wait.max_delay_ms != d.max_delay_ms {
                role_map.set("max_delay_ms", wait.max_delay_ms);
                carry("max_delay_ms");
            }
            if wait.count_head != d.count_head {
                role_map.set("count_head", wait.count_head);
                carry("count_head");
            }
        }
        edited.insert(vec![
            "hosts".to_owned(),
            key,
            e.role.clone(),
            "rates".to_owned(),
        ]);
    }
    let out = super::edit::match_indent(text, &doc.to_string());
    let parsed = RateLimits::parse(&out, path)?;
    for e in edits {
        let host = normalize_host(&e.host).unwrap_or_default();
        if parsed.hosts.get(&host).and_then(|h| h.get(&e.role)) != Some(&e.rates)
            || parsed.wait_for(&host, &e.role) != before.wait_for(&host, &e.role)
        {
            return Err(invalid(
                &format!("hosts.{host}.{}.rates", e.role),
                "the edited file does not read back as the intended rates; nothing was written"
                    .into(),
            ));
        }
    }
    check_only_edited(text, &out, &edited, path)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_or_absurd_host_entry_holds_that_host_not_the_file() {
        let text = "defaults:\n  metadata: {rates: [\"10/SECOND\"]}\nhosts:\n  a.example:\n    metadata: {rates: [\"0/SECOND\"]}\n  b.example:\n    metadata: {rates: [\"999999999/DAY\"]}\n  c.example:\n    metadata: {rates: [\"20000/3SECOND\"]}\n  d.example:\n    metadata: {rates: [\"5/SECOND\"], max_delay_ms: 100000000}\n  ok.example:\n    metadata: {rates: [\"5/SECOND\"]}\n";
        let rl = RateLimits::parse(text, Path::new("r.yaml")).unwrap();
        for (host, what) in [
            ("a.example", "\"0/SECOND\" is not a rate"),
            ("b.example", "999999999/DAY"),
            ("c.example", "20000/3SECOND"),
            ("d.example", "max_delay_ms is 100000000"),
        ] {
            let why = rl
                .unusable
                .reason(host)
                .unwrap_or_else(|| panic!("{host} held"));
            assert!(why.contains(what), "{host}: {why}");
        }
        assert!(
            !rl.hosts.contains_key("a.example"),
            "a rejected entry reads as absent"
        );
        assert_eq!(rl.unusable.reason("ok.example"), None);
        assert_eq!(rl.hosts["ok.example"]["metadata"], ["5/SECOND"]);
    }

    #[test]
    fn rates_parse_scale_and_print_in_their_form() {
        let r = Rate::parse("50/SECOND").unwrap();
        assert_eq!(r.scaled(0.8).to_string(), "40/SECOND");
        let arxiv = Rate::parse("1/3SECOND").unwrap();
        assert_eq!((arxiv.limit, arxiv.per), (1, 3));
        assert!((arxiv.per_second() - 1.0 / 3.0).abs() < 1e-12);
        assert_eq!(arxiv.scaled(0.8).to_string(), "16/MINUTE");
        // A scaled rate keeps its unit: the crawler's burst stays what it was.
        for (rate, m, want) in [
            ("2/SECOND", 0.8, "2/SECOND"),
            ("8/SECOND", 0.9, "7/SECOND"),
            ("8/SECOND", 63.0, "504/SECOND"),
            ("1/MINUTE", 0.3, "1/MINUTE"),
        ] {
            assert_eq!(Rate::parse(rate).unwrap().scaled(m).to_string(), want);
        }
        assert_eq!(
            Rate::parse("10000/HOUR").unwrap().scaled(0.8).to_string(),
            "8000/HOUR"
        );
        assert_eq!(
            Rate::parse("1000/DAY").unwrap().scaled(1.05).to_string(),
            "1050/DAY"
        );
        assert!(Rate::parse("10/FORTNIGHT").is_none());
        assert!(Rate::parse("0/SECOND").is_none());
    }

    #[test]
    fn patches_keep_form_and_comments() {
        let text = "hosts:\n  # Crossref\n  api.crossref.org:\n    metadata:\n      rates: [\"50/SECOND\", \"10000/HOUR\"]\n      max_delay_ms: 250 # wait\n";
        let base = [
            Rate::parse("50/SECOND").unwrap(),
            Rate::parse("10000/HOUR").unwrap(),
        ];
        let edit = |host: &str, role: &str, base: &[Rate], m: f64| RatesEdit {
            host: host.into(),
            role: role.into(),
            rates: base.iter().map(|r| r.scaled(m).to_string()).collect(),
        };
        let out = patch_rates(
            text,
            Path::new("r.yaml"),
            &[edit("API.Crossref.org", "metadata", &base, 0.8)],
        )
        .unwrap();
        assert!(
            out.contains("rates: [\"40/SECOND\", \"8000/HOUR\"]"),
            "{out}"
        );
        assert!(
            out.contains("# Crossref") && out.contains("max_delay_ms: 250 # wait"),
            "{out}"
        );
        let base = [Rate::parse("10/SECOND").unwrap()];
        let out = patch_rates(
            text,
            Path::new("r.yaml"),
            &[edit("New.Example", "landing", &base, 0.5)],
        )
        .unwrap();
        let v: yaml_serde::Value = yaml_serde::from_str(&out).unwrap();
        assert_eq!(
            v["hosts"]["new.example"]["landing"]["rates"][0].as_str(),
            Some("5/SECOND")
        );
    }

    #[test]
    fn a_new_host_entry_keeps_the_defaults_wait() {
        // The crawler reads a host's role entry instead of the defaults' one, with the
        // dataclass default (200 ms) for a key it lacks: the artifact wait must come
        // along, or adding rates would cut it from 2000 ms to 200 ms.
        let text = "defaults:\n  artifact: {rates: [\"2/SECOND\", \"500/HOUR\"], max_delay_ms: 2000, count_head: true}\n  metadata: {rates: [\"10/SECOND\"]}\n";
        let before = RateLimits::parse(text, Path::new("r.yaml")).unwrap();
        let want = RoleWait {
            max_delay_ms: 2000,
            count_head: true,
        };
        assert_eq!(before.wait_for("cdn.example", "artifact"), want);
        let out = patch_rates(
            text,
            Path::new("r.yaml"),
            &[
                RatesEdit {
                    host: "cdn.example".into(),
                    role: "artifact".into(),
                    rates: vec!["1/SECOND".into(), "400/HOUR".into()],
                },
                RatesEdit {
                    host: "cdn.example".into(),
                    role: "metadata".into(),
                    rates: vec!["8/SECOND".into()],
                },
            ],
        )
        .unwrap();
        let after = RateLimits::parse(&out, Path::new("r.yaml")).unwrap();
        assert_eq!(after.wait_for("cdn.example", "artifact"), want);
        assert_eq!(
            after.wait_for("cdn.example", "metadata"),
            RoleWait::default()
        );
        assert!(!out.contains("max_delay_ms: 200\n"), "{out}");
    }

    #[test]
    fn a_host_entry_without_rates_keeps_its_own_wait() {
        let text = "defaults:\n  metadata: {rates: [\"10/SECOND\"], max_delay_ms: 250}\nhosts:\n  api.example.org:\n    metadata:\n      max_delay_ms: 900 # patient\n";
        let before = RateLimits::parse(text, Path::new("r.yaml")).unwrap();
        assert_eq!(
            before.wait_for("api.example.org", "metadata").max_delay_ms,
            900
        );
        let out = patch_rates(
            text,
            Path::new("r.yaml"),
            &[RatesEdit {
                host: "api.example.org".into(),
                role: "metadata".into(),
                rates: vec!["8/SECOND".into()],
            }],
        )
        .unwrap();
        assert!(out.contains("max_delay_ms: 900 # patient"), "{out}");
        assert!(!out.contains("max_delay_ms: 250\n    "), "{out}");
        let after = RateLimits::parse(&out, Path::new("r.yaml")).unwrap();
        assert_eq!(
            after.wait_for("api.example.org", "metadata").max_delay_ms,
            900
        );
    }

    #[test]
    fn a_rate_added_to_a_block_list_keeps_its_style() {
        let text = "hosts:\n  api.example.org:\n    metadata:\n      rates:\n        - \"10/SECOND\" # burst\n        - \"5000/HOUR\"\n      max_delay_ms: 250\n";
        let out = patch_rates(
            text,
            Path::new("r.yaml"),
            &[RatesEdit {
                host: "api.example.org".into(),
                role: "metadata".into(),
                rates: vec!["10/SECOND".into(), "5000/HOUR".into(), "41/MINUTE".into()],
            }],
        )
        .unwrap();
        assert!(out.contains("- \"10/SECOND\" # burst\n"), "{out}");
        let after = RateLimits::parse(&out, Path::new("r.yaml")).unwrap();
        assert_eq!(
            after.rates_for("api.example.org", "metadata").unwrap(),
            &["10/SECOND", "5000/HOUR", "41/MINUTE"]
        );
    }
}
