//! YAML anchors, aliases and merge keys under a config file's `hosts`. A host whose
//! values come through an alias (`host: *fast`) or a merge key (`<<: *fast`), or that
//! defines an anchor used elsewhere (`host: &fast {...}`), shares its values with other
//! places in the file. An edit there would either replace the alias (losing everything
//! else it brought) or change every place that shares the anchor, so the advisor leaves
//! such a host alone and says why; the patcher refuses to edit it.
//!
//! The crawler reads these files with PyYAML's `safe_load`, which expands aliases and
//! merge keys; `parse_yaml` does the same, so the model holds the values the crawler runs.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::str::FromStr;

use yaml_edit::{Document, SyntaxKind};

use crate::hostname::normalize_host;

/// The anchors a host shares its values through, and the other places using them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Shared {
    /// Anchor names, without `&` or `*`.
    pub anchors: Vec<String>,
    /// The other places that define or use them: a top-level key (`x-fast`,
    /// `defaults`) or `hosts.<key as written>`.
    pub with: Vec<String>,
}

impl Shared {
    /// One sentence for a held host or a refused edit.
    pub fn describe(&self) -> String {
        let anchors: Vec<String> = self.anchors.iter().map(|a| format!("&{a}")).collect();
        let with = if self.with.is_empty() {
            String::new()
        } else {
            format!(", shared with {}", self.with.join(", "))
        };
        format!(
            "its values come through YAML anchor {}{with}; the advisor does not edit shared values (the edit would change every place that shares them): give the host its own values to let it be tuned",
            anchors.join(", ")
        )
    }
}

/// Which hosts of a file share values through anchors.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sharing {
    /// Keyed by normalised host.
    pub hosts: BTreeMap<String, Shared>,
    /// The `hosts` mapping itself comes through or defines a shared anchor: every host,
    /// listed or new, shares it.
    pub all: Option<Shared>,
}

impl Sharing {
    /// How `host` (normalised) shares its values, if it does.
    pub fn get(&self, host: &str) -> Option<&Shared> {
        self.hosts.get(host).or(self.all.as_ref())
    }

    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty() && self.all.is_none()
    }
}

/// A region of the text and the place it stands for.
struct Place {
    name: String,
    /// Normalised host, for the entries of `hosts`.
    host: Option<String>,
    range: Range<usize>,
}

fn range(p: yaml_edit::TextPosition) -> Range<usize> {
    p.start as usize..p.end as usize
}

fn key_text(entry: &yaml_edit::MappingEntry) -> Option<String> {
    let k = entry.key_node()?.to_string();
    Some(k.trim().trim_matches('"').trim_matches('\'').to_owned())
}

/// The places of a document: each entry of `hosts` (most specific first), `hosts`
/// itself, then every other top-level key.
fn places(text: &str) -> Vec<Place> {
    let Ok(doc) = Document::from_str(text) else {
        return Vec::new();
    };
    let Some(root) = doc.as_mapping() else {
        return Vec::new();
    };
    let mut hosts = Vec::new();
    let mut top = Vec::new();
    for entry in root.entries() {
        let Some(name) = key_text(&entry) else {
            continue;
        };
        if name == "hosts"
            && let Some(m) = entry.value_node().and_then(|v| v.as_mapping().cloned())
        {
            for h in m.entries() {
                let Some(key) = key_text(&h) else { continue };
                hosts.push(Place {
                    host: normalize_host(&key).ok(),
                    name: format!("hosts.{key}"),
                    range: range(h.byte_range()),
                });
            }
        }
        top.push(Place {
            name,
            host: None,
            range: range(entry.byte_range()),
        });
    }
    hosts.extend(top);
    hosts
}

/// The anchors and aliases of a YAML text, by name: (byte offset, is a definition).
fn anchor_tokens(text: &str) -> BTreeMap<String, Vec<(usize, bool)>> {
    let mut out: BTreeMap<String, Vec<(usize, bool)>> = BTreeMap::new();
    let base = text.as_ptr() as usize;
    for (kind, tok) in yaml_edit::lex(text) {
        let def = match kind {
            SyntaxKind::ANCHOR => true,
            SyntaxKind::REFERENCE => false,
            _ => continue,
        };
        let name = tok[1..].to_owned();
        out.entry(name)
            .or_default()
            .push((tok.as_ptr() as usize - base, def));
    }
    out
}

/// The hosts of a config file's text that share values through anchors. A text that
/// does not parse shares nothing (its parse error is reported by the loader).
pub fn sharing(text: &str) -> Sharing {
    let tokens = anchor_tokens(text);
    if tokens.is_empty() {
        return Sharing::default();
    }
    let places = places(text);
    let place_of = |at: usize| places.iter().position(|p| p.range.contains(&at));
    // Per place: the anchors it takes part in, and whether it uses or defines a used one.
    let mut involved: BTreeMap<usize, BTreeSet<String>> = BTreeMap::new();
    let mut by_anchor: BTreeMap<&str, BTreeSet<usize>> = BTreeMap::new();
    for (name, uses) in &tokens {
        let referenced = uses.iter().any(|(_, def)| !def);
        if !referenced {
            continue;
        }
        for &(at, _) in uses {
            if let Some(p) = place_of(at) {
                involved.entry(p).or_default().insert(name.clone());
                by_anchor.entry(name).or_default().insert(p);
            }
        }
    }
    let mut out = Sharing::default();
    for (p, anchors) in involved {
        let place = &places[p];
        let mut with: BTreeSet<&str> = BTreeSet::new();
        for a in &anchors {
            for &q in &by_anchor[a.as_str()] {
                if q != p {
                    with.insert(&places[q].name);
                }
            }
        }
        let shared = Shared {
            anchors: anchors.into_iter().collect(),
            with: with.into_iter().map(str::to_owned).collect(),
        };
        match (&place.host, place.name.as_str()) {
            (Some(h), _) => {
                out.hosts.insert(h.clone(), shared);
            }
            (None, "hosts") => out.all = Some(shared),
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
x-fast: &fast
  fail_max: 3 # quick
  reset_timeout_s: 30
defaults:
  fail_max: 5
hosts:
  a.example: *fast
  B.Example:
    <<: *fast
    retry_after_cap_s: 600
  c.example: &slow {fail_max: 8}
  d.example: *slow
  e.example:
    fail_max: 4
  f.example: &unused {fail_max: 2}
";

    #[test]
    fn names_the_anchor_and_the_places_sharing_it() {
        let s = sharing(TEXT);
        assert_eq!(
            s.get("a.example").unwrap().with,
            ["hosts.B.Example", "x-fast"]
        );
        assert_eq!(s.get("b.example").unwrap().anchors, ["fast"]);
        assert_eq!(s.get("c.example").unwrap().with, ["hosts.d.example"]);
        assert_eq!(s.get("d.example").unwrap().with, ["hosts.c.example"]);
        assert!(s.get("e.example").is_none(), "plain values are not shared");
        assert!(
            s.get("f.example").is_none(),
            "an anchor nobody uses shares nothing"
        );
        assert!(s.get("new.example").is_none() && s.all.is_none());
        let why = s.get("a.example").unwrap().describe();
        assert!(
            why.contains("&fast") && why.contains("hosts.B.Example"),
            "{why}"
        );
    }

    #[test]
    fn a_hosts_mapping_through_an_alias_shares_every_host() {
        let s = sharing("base: &h {a.example: {fail_max: 3}}\nhosts: *h\n");
        assert_eq!(s.get("new.example").unwrap().with, ["base"]);
        assert!(sharing("hosts: {a.example: {fail_max: 3}}\n").is_empty());
    }
}
