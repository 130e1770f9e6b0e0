//! ratelimits.yaml rate strings (`LIMIT/UNIT`, and `LIMIT/NUNIT` such as `1/3SECOND`,
//! read correctly though the crawler misreads it) and their comment-preserving scaling
//! by an AIMD multiplier.

use std::path::Path;

use yaml_edit::Sequence;

use super::ConfigError;
use super::patch::{child_mapping, parse_for_edit};
use crate::hostname::normalize_host;

/// The rate units the crawler knows, with their length in seconds, finest first.
const UNITS: [(&str, f64); 4] = [
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

    /// The rate times `m`, written as `COUNT/UNIT` in the original unit when the count
    /// rounds within 2%, else in the first coarser unit where it does (2/SECOND x 0.8 =
    /// 96/MINUTE, not a rounded 2/SECOND). The `N/kUNIT` form is never written: the
    /// crawler's parser misreads it (`1/3SECOND` x 0.8 becomes 16/MINUTE).
    pub fn scaled(&self, m: f64) -> Rate {
        let target = self.per_second() * m;
        let first = UNITS.iter().position(|(u, _)| *u == self.unit).unwrap_or(0);
        for (unit, seconds) in &UNITS[first..] {
            let count = target * seconds;
            if count >= 1.0 && (count.round() - count).abs() / count <= 0.02 {
                return Rate {
                    limit: count.round() as u64,
                    per: 1,
                    unit: (*unit).to_owned(),
                };
            }
        }
        Rate {
            limit: (target * 86_400.0).round().max(1.0) as u64,
            per: 1,
            unit: "DAY".to_owned(),
        }
    }
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

/// Sets `hosts.<host>.<role>.rates` to `base` scaled by `multiplier`, creating the host
/// and role entries when missing (the rates then start from `base`, which the caller
/// takes from the file's defaults for that role). Returns the new text.
pub fn patch_rates(
    text: &str,
    path: &Path,
    host: &str,
    role: &str,
    base: &[Rate],
    multiplier: f64,
) -> Result<String, ConfigError> {
    let invalid = |key: &str, detail: String| ConfigError::Invalid {
        path: path.to_owned(),
        key: key.to_owned(),
        detail,
    };
    let host =
        normalize_host(host).map_err(|e| invalid(&format!("hosts.{host}"), e.to_string()))?;
    let (doc, root) = parse_for_edit(text, path)?;
    let hosts = child_mapping(&root, "hosts");
    let role_map = child_mapping(&child_mapping(&hosts, &host), role);
    let scaled: Vec<String> = base
        .iter()
        .map(|r| r.scaled(multiplier).to_string())
        .collect();
    match role_map.get_sequence("rates") {
        Some(seq) if seq.len() == scaled.len() => {
            for (i, r) in scaled.iter().enumerate() {
                seq.set(i, r.as_str());
            }
        }
        _ => {
            let seq = Sequence::new_flow();
            for r in &scaled {
                seq.push(r.as_str());
            }
            role_map.set("rates", seq);
        }
    }
    Ok(doc.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_scale_and_print_in_their_form() {
        let r = Rate::parse("50/SECOND").unwrap();
        assert_eq!(r.scaled(0.8).to_string(), "40/SECOND");
        let arxiv = Rate::parse("1/3SECOND").unwrap();
        assert_eq!((arxiv.limit, arxiv.per), (1, 3));
        assert!((arxiv.per_second() - 1.0 / 3.0).abs() < 1e-12);
        assert_eq!(arxiv.scaled(0.8).to_string(), "16/MINUTE");
        assert_eq!(
            Rate::parse("2/SECOND").unwrap().scaled(0.8).to_string(),
            "96/MINUTE"
        );
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
        let out = patch_rates(
            text,
            Path::new("r.yaml"),
            "api.crossref.org",
            "metadata",
            &base,
            0.8,
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
            "New.Example",
            "landing",
            &base,
            0.5,
        )
        .unwrap();
        let v: yaml_serde::Value = yaml_serde::from_str(&out).unwrap();
        assert_eq!(
            v["hosts"]["new.example"]["landing"]["rates"][0].as_str(),
            Some("5/SECOND")
        );
    }
}
