//! Pins: the operator's "leave this alone", written in the config file itself. The
//! comment `# breaker-advisor: keep` at the end of a value's line holds that value; at
//! the end of a host's key line it holds the whole host; on a role's line, that role's
//! values (breakers.yaml: `roles.<role>:`, ratelimits.yaml: `<role>:`). The advisor
//! turns a pinned proposal into a hold whose reason says where the pin is.
//!
//! A comment is found by the line it ends: the most specific entry under `hosts` that
//! the line's first character belongs to is what it pins, so a pin on an item of a block
//! list (`- "10/SECOND"  # breaker-advisor: keep`) pins the list's key.

use std::ops::Range;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use yaml_edit::{Document, Mapping, SyntaxKind};

use crate::hostname::normalize_host;

/// The comment that pins a value, a role or a host.
pub const PIN_MARK: &str = "breaker-advisor: keep";

/// What a pin holds: a host (no role, no key), a role of it (`role`, no key), or one
/// key at the host level or in a role. `role: "*"` is every role (a pin on `roles:`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pin {
    pub host: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

impl Pin {
    /// Whether the pin holds `key` of `host` (normalised) at the host level (`role`
    /// None) or in `role`.
    pub fn holds(&self, host: &str, role: Option<&str>, key: &str) -> bool {
        let host_matches = normalize_host(&self.host).is_ok_and(|h| h == host);
        // An alias (`reset`) holds the key it spells.
        let canonical = |k: &str| {
            super::edit::BreakerKey::from_spelling(k)
                .map_or_else(|| k.to_owned(), |b| b.name().to_owned())
        };
        let key_matches = self
            .key
            .as_deref()
            .is_none_or(|k| canonical(k) == canonical(key));
        let role_matches = match (self.role.as_deref(), role) {
            // A host-level key; `rates` are per role, so a role-less `rates` pin holds
            // every role's.
            (None, _) => self.key.is_none() || role.is_none() || key == "rates",
            (Some("*"), r) => r.is_some(),
            (Some(p), Some(r)) => p == r,
            (Some(_), None) => false,
        };
        host_matches && role_matches && key_matches
    }
}

/// A pin found in a config file, with the line it is on (1-based) and the key path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilePin {
    pub pin: Pin,
    pub line: usize,
    /// `hosts.<host as written>.<key>...`
    pub path: String,
}

/// The pins of one config file, in file order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pins(pub Vec<FilePin>);

impl Pins {
    /// The first pin that holds `key` of `host` at the host level or in `role`.
    pub fn find(&self, host: &str, role: Option<&str>, key: &str) -> Option<&FilePin> {
        self.0.iter().find(|p| p.pin.holds(host, role, key))
    }
}

/// Which file's layout the paths follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// `hosts.<host>.<key>` and `hosts.<host>.roles.<role>.<key>`.
    Breakers,
    /// `hosts.<host>.<role>.<key>`.
    Ratelimits,
}

/// An entry under `hosts`, with its key path below it and its byte range.
struct Entry {
    path: Vec<String>,
    range: Range<usize>,
}

fn key_text(entry: &yaml_edit::MappingEntry) -> Option<String> {
    let k = entry.key_node()?.to_string();
    Some(k.trim().trim_matches('"').trim_matches('\'').to_owned())
}

fn collect(m: &Mapping, path: &[String], depth: usize, out: &mut Vec<Entry>) {
    for e in m.entries() {
        let Some(k) = key_text(&e) else { continue };
        let r = e.byte_range();
        let mut p = path.to_vec();
        p.push(k);
        if depth < 3
            && let Some(inner) = e.value_node().and_then(|v| v.as_mapping().cloned())
        {
            collect(&inner, &p, depth + 1, out);
        }
        out.push(Entry {
            path: p,
            range: r.start as usize..r.end as usize,
        });
    }
}

/// The pin a key path under `hosts` stands for, in a file of `layout`.
fn pin_of(path: &[String], layout: Layout) -> Option<Pin> {
    let host = normalize_host(path.first()?).ok()?;
    let s = |i: usize| path.get(i).cloned();
    let (role, key) = match (layout, path.len()) {
        (_, 1) => (None, None),
        (Layout::Breakers, 2) if path[1] == "roles" => (Some("*".to_owned()), None),
        (Layout::Breakers, 2) => (None, s(1)),
        (Layout::Breakers, 3) if path[1] == "roles" => (s(2), None),
        (Layout::Breakers, _) if path[1] == "roles" => (s(2), s(3)),
        (Layout::Breakers, _) => (None, s(1)),
        (Layout::Ratelimits, 2) => (s(1), None),
        (Layout::Ratelimits, _) => (s(1), s(2)),
    };
    // An alias (`reset`) pins the key it spells.
    let key = match layout {
        Layout::Breakers => key
            .map(|k| super::edit::BreakerKey::from_spelling(&k).map_or(k, |b| b.name().to_owned())),
        Layout::Ratelimits => key,
    };
    Some(Pin { host, role, key })
}

/// The pins of a config file's text. A text that does not parse pins nothing (its parse
/// error is reported by the loader).
pub fn pins(text: &str, layout: Layout) -> Pins {
    if !text.contains(PIN_MARK) {
        return Pins::default();
    }
    let Ok(doc) = Document::from_str(text) else {
        return Pins::default();
    };
    let Some(root) = doc.as_mapping() else {
        return Pins::default();
    };
    let mut entries = Vec::new();
    for e in root.entries() {
        if key_text(&e).as_deref() == Some("hosts")
            && let Some(m) = e.value_node().and_then(|v| v.as_mapping().cloned())
        {
            collect(&m, &[], 0, &mut entries);
        }
    }
    let base = text.as_ptr() as usize;
    let mut out = Vec::new();
    for (kind, tok) in yaml_edit::lex(text) {
        if kind != SyntaxKind::COMMENT || !is_pin(tok) {
            continue;
        }
        let at = tok.as_ptr() as usize - base;
        let line_start = text[..at].rfind('\n').map_or(0, |i| i + 1);
        let first =
            line_start + (text[line_start..at].len() - text[line_start..at].trim_start().len());
        if first == at {
            // A comment on a line of its own pins nothing.
            continue;
        }
        let Some(e) = entries
            .iter()
            .filter(|e| e.range.contains(&first))
            .max_by_key(|e| e.path.len())
        else {
            continue;
        };
        if let Some(pin) = pin_of(&e.path, layout) {
            out.push(FilePin {
                pin,
                line: text[..at].matches('\n').count() + 1,
                path: format!("hosts.{}", e.path.join(".")),
            });
        }
    }
    Pins(out)
}

/// `# breaker-advisor: keep`, with any spacing after the `#` and any words after it
/// (`# breaker-advisor: keep (vendor contract)`).
fn is_pin(comment: &str) -> bool {
    comment
        .trim_start_matches('#')
        .trim_start()
        .starts_with(PIN_MARK)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BREAKERS: &str = "\
defaults:
  fail_max: 5 # breaker-advisor: keep
hosts:
  a.example:
    fail_max: 3 # breaker-advisor: keep
    reset: 60 # breaker-advisor: keep
    roles:
      artifact:  # breaker-advisor: keep
        trial_calls: 2
  B.Example:   # breaker-advisor: keep (vendor contract)
    fail_max: 4
  c.example: {fail_max: 8}
  d.example:
    roles:
      metadata:
        trial_calls: 1   #breaker-advisor: keep
  # breaker-advisor: keep
  e.example:
    fail_max: 2 # keep this in mind
";

    #[test]
    fn a_pin_holds_the_value_role_or_host_whose_line_it_ends() {
        let p = pins(BREAKERS, Layout::Breakers);
        let found: Vec<(String, Option<String>, Option<String>, usize)> =
            p.0.iter()
                .map(|f| {
                    (
                        f.pin.host.clone(),
                        f.pin.role.clone(),
                        f.pin.key.clone(),
                        f.line,
                    )
                })
                .collect();
        let s = |x: &str| Some(x.to_owned());
        assert_eq!(
            found,
            [
                ("a.example".into(), None, s("fail_max"), 5),
                ("a.example".into(), None, s("reset_timeout_s"), 6),
                ("a.example".into(), s("artifact"), None, 8),
                ("b.example".into(), None, None, 10),
                ("d.example".into(), s("metadata"), s("trial_calls"), 16),
            ]
        );
        assert!(p.find("a.example", None, "fail_max").is_some());
        assert!(p.find("a.example", None, "reset_timeout_s").is_some());
        assert!(p.find("a.example", None, "retry_after_cap_s").is_none());
        assert!(
            p.find("a.example", Some("artifact"), "trial_calls")
                .is_some()
        );
        assert!(
            p.find("a.example", Some("metadata"), "trial_calls")
                .is_none()
        );
        assert!(p.find("b.example", None, "reset_timeout_s").is_some());
        assert!(
            p.find("b.example", Some("landing"), "trial_calls")
                .is_some()
        );
        assert!(
            p.find("d.example", Some("metadata"), "trial_calls")
                .is_some()
        );
        assert!(p.find("d.example", None, "trial_calls").is_none());
        assert!(p.find("c.example", None, "fail_max").is_none());
        assert!(p.find("e.example", None, "fail_max").is_none());
        assert_eq!(p.0[0].path, "hosts.a.example.fail_max");
    }

    #[test]
    fn a_pin_on_a_rate_list_item_holds_the_list_and_a_role_line_the_role() {
        let text = "\
hosts:
  api.example:
    metadata:
      rates:
        - \"10/SECOND\" # breaker-advisor: keep
        - \"5000/HOUR\"
    landing: # breaker-advisor: keep
      rates: [\"5/SECOND\"]
  b.example:
    artifact:
      rates: [\"2/SECOND\"]
";
        let p = pins(text, Layout::Ratelimits);
        assert_eq!(p.0.len(), 2);
        assert!(p.find("api.example", Some("metadata"), "rates").is_some());
        assert!(p.find("api.example", Some("landing"), "rates").is_some());
        assert!(p.find("api.example", Some("artifact"), "rates").is_none());
        assert!(p.find("b.example", Some("artifact"), "rates").is_none());
        assert_eq!(p.0[0].path, "hosts.api.example.metadata.rates");
        assert!(pins("hosts: [", Layout::Ratelimits).0.is_empty());
    }

    #[test]
    fn a_pin_in_the_settings_matches_the_normalised_host() {
        let pin = Pin {
            host: "API.Example.".into(),
            role: None,
            key: Some("fail_max".into()),
        };
        assert!(pin.holds("api.example", None, "fail_max"));
        assert!(!pin.holds("api.example", Some("artifact"), "fail_max"));
        assert!(!pin.holds("api.example", None, "reset_timeout_s"));
        let host = Pin {
            key: None,
            ..pin.clone()
        };
        assert!(host.holds("api.example", Some("artifact"), "trial_calls"));
        let alias = Pin {
            key: Some("reset".into()),
            ..pin.clone()
        };
        assert!(alias.holds("api.example", None, "reset_timeout_s"));
        let rates = Pin {
            key: Some("rates".into()),
            ..pin
        };
        assert!(rates.holds("api.example", Some("metadata"), "rates"));
        assert!(!rates.holds("api.example", None, "fail_max"));
    }
}
