//! Comment-preserving edits of breakers.yaml: set a breaker setting at the defaults, a
//! host, or a host's role, with the smallest textual change (yaml-edit keeps every
//! comment, blank line and flow list; a scalar keeps its inline comment). Every patch is
//! re-parsed and compared with the original: only the edited keys may differ.

use std::collections::BTreeSet;
use std::path::Path;
use std::str::FromStr;

use yaml_edit::{Document, Mapping};
use yaml_serde::Value;

use super::{BreakerConfig, ConfigError};
use crate::hostname::normalize_host;

/// A breaker setting the advisor may change (serialised as its breakers.yaml name).
/// `FailureExceptions` is the crawler's `BreakerClassification.failure_exceptions`,
/// which breakers.yaml cannot set: it is only ever a crawler change.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum BreakerKey {
    FailMax,
    ResetTimeoutS,
    RetryAfterCapS,
    SuccessThreshold,
    TrialCalls,
    FailureExceptions,
}

impl BreakerKey {
    pub fn name(self) -> &'static str {
        match self {
            BreakerKey::FailMax => "fail_max",
            BreakerKey::ResetTimeoutS => "reset_timeout_s",
            BreakerKey::RetryAfterCapS => "retry_after_cap_s",
            BreakerKey::SuccessThreshold => "success_threshold",
            BreakerKey::TrialCalls => "trial_calls",
            BreakerKey::FailureExceptions => "failure_exceptions",
        }
    }

    pub const ALL: [BreakerKey; 6] = [
        BreakerKey::FailMax,
        BreakerKey::ResetTimeoutS,
        BreakerKey::RetryAfterCapS,
        BreakerKey::SuccessThreshold,
        BreakerKey::TrialCalls,
        BreakerKey::FailureExceptions,
    ];

    /// The key a spelling in breakers.yaml stands for: its name or an alias.
    pub fn from_spelling(s: &str) -> Option<BreakerKey> {
        Self::ALL
            .into_iter()
            .find(|k| k.name() == s || k.aliases().contains(&s))
    }

    /// Spellings the crawler also reads; an existing alias is edited in place.
    fn aliases(self) -> &'static [&'static str] {
        match self {
            BreakerKey::ResetTimeoutS => &["reset"],
            BreakerKey::RetryAfterCapS => &["retry_after_cap"],
            _ => &[],
        }
    }
}

/// One change: `host` None means `defaults`; `role` targets `roles.<role>` below it.
#[derive(Debug, Clone, PartialEq)]
pub struct BreakerEdit {
    pub host: Option<String>,
    pub role: Option<String>,
    pub key: BreakerKey,
    pub value: i64,
}

impl BreakerEdit {
    pub fn new(host: Option<&str>, role: Option<&str>, key: BreakerKey, value: i64) -> Self {
        BreakerEdit {
            host: host.map(str::to_owned),
            role: role.map(str::to_owned),
            key,
            value,
        }
    }

    /// The key path of the edited value in the parsed document.
    fn path(&self, host_key: Option<&str>) -> Vec<String> {
        let mut p = match (&self.host, host_key) {
            (None, _) => vec!["defaults".to_owned()],
            (Some(h), k) => vec!["hosts".to_owned(), k.unwrap_or(h).to_owned()],
        };
        if let Some(r) = &self.role {
            p.push("roles".into());
            p.push(r.clone());
        }
        p
    }
}

/// The mapping under `key`, created empty when missing.
pub(super) fn child_mapping(parent: &Mapping, key: &str) -> Mapping {
    if let Some(m) = parent.get_mapping(key) {
        return m;
    }
    parent.set(key, Mapping::new());
    parent
        .get_mapping(key)
        .expect("a mapping that was just set")
}

/// Parses a YAML file's text for editing and returns it with its top-level mapping.
pub(super) fn parse_for_edit(text: &str, path: &Path) -> Result<(Document, Mapping), ConfigError> {
    let doc = Document::from_str(text).map_err(|e| ConfigError::Yaml {
        path: path.to_owned(),
        detail: e.to_string(),
    })?;
    let root = doc.as_mapping().ok_or_else(|| ConfigError::Invalid {
        path: path.to_owned(),
        key: "(document)".into(),
        detail: "the top level is not a mapping".into(),
    })?;
    Ok((doc, root))
}

/// The existing key of `hosts` that normalises to `host`, if any.
pub(super) fn existing_host_key(hosts: &Mapping, host: &str) -> Option<String> {
    hosts.keys().find_map(|k| {
        let text = k.to_string();
        let text = text.trim().trim_matches('"').trim_matches('\'');
        (normalize_host(text).ok().as_deref() == Some(host)).then(|| text.to_owned())
    })
}

/// Applies `edits` to the text of a breakers.yaml and returns the new text. `path`
/// names the file in errors.
pub fn patch_breakers(
    text: &str,
    path: &Path,
    edits: &[BreakerEdit],
) -> Result<String, ConfigError> {
    let invalid = |key: &str, detail: String| ConfigError::Invalid {
        path: path.to_owned(),
        key: key.to_owned(),
        detail,
    };
    let (doc, root) = parse_for_edit(text, path)?;
    let shared = super::anchors::sharing(text);
    let mut edited: BTreeSet<Vec<String>> = BTreeSet::new();
    for edit in edits {
        let (mut target, host_key) = match &edit.host {
            None => (child_mapping(&root, "defaults"), None),
            Some(h) => {
                let host =
                    normalize_host(h).map_err(|e| invalid(&format!("hosts.{h}"), e.to_string()))?;
                if let Some(sh) = shared.get(&host) {
                    return Err(invalid(
                        &format!("hosts.{host}"),
                        format!("{}; nothing was written", sh.describe()),
                    ));
                }
                let hosts = child_mapping(&root, "hosts");
                let key = existing_host_key(&hosts, &host).unwrap_or(host);
                (child_mapping(&hosts, &key), Some(key))
            }
        };
        if let Some(role) = &edit.role {
            target = child_mapping(&child_mapping(&target, "roles"), role);
        }
        let key = edit
            .key
            .aliases()
            .iter()
            .find(|a| target.contains_key(**a))
            .copied()
            .unwrap_or(edit.key.name());
        target.set(key, edit.value);
        let mut p = edit.path(host_key.as_deref());
        p.push(key.to_owned());
        edited.insert(p);
    }
    let out = match_indent(text, &doc.to_string());
    BreakerConfig::parse(&out, path)?;
    check_only_edited(text, &out, &edited, path)?;
    Ok(out)
}

/// The file's indentation step: the smallest indentation of a content line.
fn indent_unit(text: &str) -> usize {
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .map(|l| l.len() - l.trim_start_matches(' ').len())
        .filter(|&n| n > 0)
        .min()
        .unwrap_or(2)
}

/// yaml-edit indents the inside of a block it creates by two spaces; in a file indented
/// by another step, the inserted lines are re-indented to the file's own step (relative
/// to the first line of each inserted run, which yaml-edit aligns with its siblings).
/// Lines the edit kept or replaced in place are untouched; the result is re-parsed by
/// the caller like any patch.
pub(crate) fn match_indent(before: &str, after: &str) -> String {
    let unit = indent_unit(before);
    if unit == 2 {
        return after.to_owned();
    }
    let mut out = String::with_capacity(after.len());
    let mut base: Option<usize> = None;
    for change in similar::TextDiff::from_lines(before, after).iter_all_changes() {
        let line = change.value();
        match change.tag() {
            similar::ChangeTag::Insert => {
                let ind = line.len() - line.trim_start_matches(' ').len();
                // A line at or left of the run's base starts a new block, which
                // yaml-edit aligned with its siblings: it becomes the base.
                let b = match base {
                    Some(b) if ind > b => b,
                    _ => {
                        base = Some(ind);
                        ind
                    }
                };
                if ind > b && !line.trim().is_empty() {
                    let (depth, rest) = ((ind - b) / 2, (ind - b) % 2);
                    out.push_str(&" ".repeat(b + depth * unit + rest));
                    out.push_str(&line[ind..]);
                } else {
                    out.push_str(line);
                }
            }
            similar::ChangeTag::Equal => {
                base = None;
                out.push_str(line);
            }
            similar::ChangeTag::Delete => base = None,
        }
    }
    out
}

/// Re-parses both texts: every path whose value differs must be an edited one (or lead
/// to one that was created).
pub(super) fn check_only_edited(
    before: &str,
    after: &str,
    edited: &BTreeSet<Vec<String>>,
    path: &Path,
) -> Result<(), ConfigError> {
    let changed = changed_paths(before, after, path)?;
    for p in changed {
        let allowed = edited.iter().any(|e| e.starts_with(&p) || p.starts_with(e));
        if !allowed {
            return Err(ConfigError::Invalid {
                path: path.to_owned(),
                key: p.join("."),
                detail: "the patch changed a value it was not asked to change; nothing was written"
                    .into(),
            });
        }
    }
    Ok(())
}

/// The key paths whose values differ between two YAML texts (a path that exists on one
/// side only is reported at the missing key).
pub(super) fn changed_paths(
    before: &str,
    after: &str,
    path: &Path,
) -> Result<Vec<Vec<String>>, ConfigError> {
    let (a, b) = (
        super::parse_yaml(before, path)?,
        super::parse_yaml(after, path)?,
    );
    let mut changed = Vec::new();
    diff(&a, &b, &mut Vec::new(), &mut changed);
    Ok(changed)
}

fn diff(a: &Value, b: &Value, at: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    match (a.as_mapping(), b.as_mapping()) {
        (Some(ma), Some(mb)) => {
            let keys: BTreeSet<String> = ma
                .keys()
                .chain(mb.keys())
                .map(|k| k.as_str().map_or_else(|| format!("{k:?}"), str::to_owned))
                .collect();
            for k in keys {
                at.push(k.clone());
                match (ma.get(k.as_str()), mb.get(k.as_str())) {
                    (Some(x), Some(y)) => diff(x, y, at, out),
                    _ => out.push(at.clone()),
                }
                at.pop();
            }
        }
        _ if a != b => out.push(at.clone()),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# banner
defaults:
  fail_max: 5 # trips after five
  reset: 60
hosts:
  API.Crossref.org.:
    fail_max: 6
    roles: {metadata: {success_threshold: 2}}
# trailing notes
";

    #[test]
    fn minimal_edits_keep_comments_and_aliases() {
        let out = patch_breakers(
            TEXT,
            Path::new("b.yaml"),
            &[
                BreakerEdit::new(None, None, BreakerKey::FailMax, 4),
                BreakerEdit::new(None, None, BreakerKey::ResetTimeoutS, 90),
                BreakerEdit::new(Some("api.crossref.org"), None, BreakerKey::FailMax, 7),
                BreakerEdit::new(
                    Some("api.crossref.org"),
                    Some("metadata"),
                    BreakerKey::TrialCalls,
                    1,
                ),
                BreakerEdit::new(Some("new.example"), None, BreakerKey::ResetTimeoutS, 120),
            ],
        )
        .unwrap();
        assert!(out.contains("fail_max: 4 # trips after five"), "{out}");
        assert!(
            out.contains("reset: 90") && !out.contains("reset_timeout_s: 90"),
            "{out}"
        );
        assert!(
            out.contains("  API.Crossref.org.:\n    fail_max: 7"),
            "{out}"
        );
        assert!(
            out.starts_with("# banner\n") && out.contains("# trailing notes"),
            "{out}"
        );
        let cfg = BreakerConfig::parse(&out, Path::new("b.yaml")).unwrap();
        let m = cfg.policy("api.crossref.org", Some("metadata"));
        assert_eq!((m.fail_max, m.success_threshold, m.trial_calls), (7, 2, 1));
        assert_eq!(cfg.policy("new.example", None).reset_timeout_s, 120.0);
        assert_eq!(cfg.policy("other.example", None).fail_max, 4);
    }

    #[test]
    fn a_shared_host_is_refused_and_the_others_keep_the_anchor() {
        let text = "x-fast: &fast {fail_max: 3}\nhosts:\n  a.example: *fast\n  b.example:\n    <<: *fast\n    reset: 30\n  c.example:\n    fail_max: 6\n";
        let cfg = BreakerConfig::parse(text, Path::new("b.yaml")).unwrap();
        assert_eq!(cfg.policy("a.example", None).fail_max, 3);
        assert_eq!(
            cfg.policy("b.example", None).fail_max,
            3,
            "merge keys read as the crawler's safe_load reads them"
        );
        for h in ["a.example", "b.example"] {
            let err = patch_breakers(
                text,
                Path::new("b.yaml"),
                &[BreakerEdit::new(Some(h), None, BreakerKey::FailMax, 4)],
            )
            .unwrap_err()
            .to_string();
            assert!(
                err.contains(&format!("hosts.{h}"))
                    && err.contains("&fast")
                    && err.contains("x-fast"),
                "{err}"
            );
        }
        let out = patch_breakers(
            text,
            Path::new("b.yaml"),
            &[BreakerEdit::new(
                Some("c.example"),
                None,
                BreakerKey::FailMax,
                7,
            )],
        )
        .unwrap();
        assert_eq!(out, text.replace("fail_max: 6", "fail_max: 7"));
    }
}
