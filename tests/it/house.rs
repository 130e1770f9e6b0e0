//! The house rules ARCHITECTURE.md states, checked on the source: no import cycle among
//! the modules of `src/`, a `//!` line at the top of every file, and every error type
//! the crate defines classified by `pipeline::exit_status`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A module's path from the crate root (`["metrics", "night"]`); `lib.rs` is `[]`.
type Module = Vec<String>;

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every `.rs` file under `src/`, by its module path.
fn modules(root: &Path) -> BTreeMap<Module, PathBuf> {
    fn walk(dir: &Path, root: &Path, out: &mut BTreeMap<Module, PathBuf>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .expect("src/ is readable")
            .map(|e| e.expect("a directory entry").path())
            .collect();
        entries.sort();
        for p in entries {
            if p.is_dir() {
                walk(&p, root, out);
            } else if p.extension().is_some_and(|e| e == "rs") {
                let rel = p.strip_prefix(root).expect("under src/").with_extension("");
                let mut m: Module = rel
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect();
                if m.last().is_some_and(|l| l == "mod") {
                    m.pop();
                }
                // main.rs is the binary's root: it reaches the library by its name,
                // never by `crate::`, so it is no module of the graph.
                if m == ["main"] {
                    continue;
                }
                if m == ["lib"] {
                    m.clear();
                }
                out.insert(m, p);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// The source without `//` comments (doc comments name modules in links).
fn code_of(path: &Path) -> String {
    let text = std::fs::read_to_string(path).expect("a source file is readable");
    text.lines()
        .map(|l| l.find("//").map_or(l, |i| &l[..i]))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The longest known module that `parts` starts with.
fn resolve(known: &BTreeMap<Module, PathBuf>, parts: &[String]) -> Option<Module> {
    (1..=parts.len())
        .rev()
        .map(|n| parts[..n].to_vec())
        .find(|m| known.contains_key(m))
}

fn is_ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The module paths a file names: `crate::a::b`, `super::a`, `self::a`, and each item of
/// a `{...}` group after one of them (lower-case heads only: modules, not types).
fn named_paths(code: &str, here: &Module) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for (start, _) in code.match_indices("::") {
        // The head keyword right before this `::`.
        let before = &code[..start];
        let head_start = before
            .rfind(|c: char| !is_ident_char(c))
            .map_or(0, |i| i + 1);
        let head = &before[head_start..];
        let preceded_by_path = before[..head_start].ends_with("::");
        if preceded_by_path {
            continue;
        }
        let base: Module = match head {
            "crate" => Vec::new(),
            "self" => here.clone(),
            "super" => here[..here.len().saturating_sub(1)].to_vec(),
            _ => continue,
        };
        collect_tail(&code[start + 2..], base, &mut out);
    }
    out
}

/// Reads `a::b::{c, d::e}` (or `a::b`) after a path head into full paths.
fn collect_tail(rest: &str, mut base: Vec<String>, out: &mut Vec<Vec<String>>) {
    let mut rest = rest;
    loop {
        let rest_trim = rest.trim_start();
        if let Some(group) = rest_trim.strip_prefix('{') {
            let mut depth = 1;
            let end = group
                .char_indices()
                .find(|&(_, c)| {
                    depth += match c {
                        '{' => 1,
                        '}' => -1,
                        _ => 0,
                    };
                    depth == 0
                })
                .map_or(group.len(), |(i, _)| i);
            for item in split_top_level(&group[..end]) {
                collect_tail(item, base.clone(), out);
            }
            out.push(base);
            return;
        }
        let len = rest_trim
            .find(|c: char| !is_ident_char(c))
            .unwrap_or(rest_trim.len());
        let word = &rest_trim[..len];
        if word.is_empty() || !word.starts_with(|c: char| c.is_ascii_lowercase()) {
            out.push(base);
            return;
        }
        base.push(word.to_owned());
        let after = &rest_trim[len..];
        match after.strip_prefix("::") {
            Some(next) => rest = next,
            None => {
                out.push(base);
                return;
            }
        }
    }
}

fn split_top_level(group: &str) -> Vec<&str> {
    let (mut depth, mut last, mut parts) = (0, 0, Vec::new());
    for (i, c) in group.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&group[last..i]);
                last = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&group[last..]);
    parts
}

/// Edges between files, a module and its own submodules being one room.
fn import_graph() -> BTreeMap<Module, BTreeSet<Module>> {
    let known = modules(&src_dir());
    let mut edges: BTreeMap<Module, BTreeSet<Module>> = BTreeMap::new();
    for (m, path) in &known {
        let code = code_of(path);
        let targets = edges.entry(m.clone()).or_default();
        for parts in named_paths(&code, m) {
            let Some(t) = resolve(&known, &parts) else {
                continue;
            };
            let same_room = t.starts_with(m) || m.starts_with(&t);
            if !same_room {
                targets.insert(t);
            }
        }
    }
    edges
}

/// The strongly connected components of more than one module (Tarjan).
fn cycles(edges: &BTreeMap<Module, BTreeSet<Module>>) -> Vec<Vec<Module>> {
    struct Tarjan<'a> {
        edges: &'a BTreeMap<Module, BTreeSet<Module>>,
        index: BTreeMap<&'a Module, usize>,
        low: BTreeMap<&'a Module, usize>,
        stack: Vec<&'a Module>,
        on_stack: BTreeSet<&'a Module>,
        out: Vec<Vec<Module>>,
    }
    impl<'a> Tarjan<'a> {
        fn visit(&mut self, v: &'a Module) {
            let i = self.index.len();
            self.index.insert(v, i);
            self.low.insert(v, i);
            self.stack.push(v);
            self.on_stack.insert(v);
            for w in self.edges.get(v).into_iter().flatten() {
                let Some((w, _)) = self.edges.get_key_value(w) else {
                    continue;
                };
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let lw = self.low[w];
                    let lv = self.low.get_mut(v).expect("visited");
                    *lv = (*lv).min(lw);
                } else if self.on_stack.contains(w) {
                    let iw = self.index[w];
                    let lv = self.low.get_mut(v).expect("visited");
                    *lv = (*lv).min(iw);
                }
            }
            if self.low[v] == self.index[v] {
                let mut comp = Vec::new();
                while let Some(w) = self.stack.pop() {
                    self.on_stack.remove(w);
                    comp.push(w.clone());
                    if w == v {
                        break;
                    }
                }
                if comp.len() > 1 {
                    comp.sort();
                    self.out.push(comp);
                }
            }
        }
    }
    let mut t = Tarjan {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in edges.keys() {
        if !t.index.contains_key(v) {
            t.visit(v);
        }
    }
    t.out
}

/// Each top-level module with its files as one node, so a cycle that passes through a
/// module's own files (a child of one stage reaching another stage that reaches back
/// into the first) is found too.
fn stages_of(edges: &BTreeMap<Module, BTreeSet<Module>>) -> BTreeMap<Module, BTreeSet<Module>> {
    let mut stages: BTreeMap<Module, BTreeSet<Module>> = BTreeMap::new();
    for (m, targets) in edges {
        let top: Module = m.iter().take(1).cloned().collect();
        let entry = stages.entry(top.clone()).or_default();
        for t in targets {
            let t_top: Module = t.iter().take(1).cloned().collect();
            if t_top != top && !t_top.is_empty() && !top.is_empty() {
                entry.insert(t_top);
            }
        }
    }
    stages
}

#[test]
fn no_import_cycle_among_the_modules_of_src() {
    let edges = import_graph();
    // The check sees real imports: the pipeline's files conduct the stages they name.
    let from_pipeline: BTreeSet<&Module> = edges
        .iter()
        .filter(|(m, _)| m.first().is_some_and(|f| f == "pipeline"))
        .flat_map(|(_, targets)| targets)
        .collect();
    for stage in ["telemetry", "metrics", "detect", "advise", "report"] {
        assert!(
            from_pipeline
                .iter()
                .any(|t| t.first().is_some_and(|f| f == stage)),
            "pipeline -> {stage} not seen: {from_pipeline:?}"
        );
    }
    let stages = stages_of(&edges);
    let found: Vec<String> = cycles(&edges)
        .into_iter()
        .chain(cycles(&stages))
        .map(|c| {
            c.iter()
                .map(|m| format!("crate::{}", m.join("::")))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .collect();
    assert!(found.is_empty(), "import cycles: {found:#?}");
}

#[test]
fn the_cycle_check_finds_a_cycle() {
    let m = |s: &str| -> Module { s.split("::").map(str::to_owned).collect() };
    let mut edges: BTreeMap<Module, BTreeSet<Module>> = BTreeMap::new();
    edges.entry(m("a")).or_default().insert(m("b"));
    edges.entry(m("b")).or_default().insert(m("c"));
    edges.entry(m("c")).or_default().insert(m("a"));
    edges.entry(m("d")).or_default().insert(m("a"));
    assert_eq!(cycles(&edges), vec![vec![m("a"), m("b"), m("c")]]);
    // A stage's file reaching another stage that reaches back: no cycle between files,
    // one between stages.
    let mut edges: BTreeMap<Module, BTreeSet<Module>> = BTreeMap::new();
    edges
        .entry(m("metrics::bursts"))
        .or_default()
        .insert(m("advise::gate"));
    edges
        .entry(m("advise"))
        .or_default()
        .insert(m("metrics::stats"));
    assert!(cycles(&edges).is_empty());
    assert_eq!(
        cycles(&stages_of(&edges)),
        vec![vec![m("advise"), m("metrics")]]
    );
    // Paths are read as the compiler reads them, groups and relative heads included.
    let here = m("pipeline::nightly");
    let named = named_paths(
        "use crate::{metrics::night, shard::Shard};\nuse super::layout::window_of;\nlet x = self::y;",
        &here,
    );
    assert!(named.contains(&m("metrics::night")), "{named:?}");
    assert!(named.contains(&m("shard")), "{named:?}");
    assert!(
        named.contains(&m("pipeline::layout::window_of")),
        "{named:?}"
    );
    assert!(named.contains(&m("pipeline::nightly::y")), "{named:?}");
}

#[test]
fn every_source_file_says_what_it_holds() {
    let missing: Vec<String> = modules(&src_dir())
        .values()
        .chain([src_dir().join("main.rs")].iter())
        .filter(|p| {
            let text = std::fs::read_to_string(p).expect("readable");
            !text.trim_start().starts_with("//!")
        })
        .map(|p| p.display().to_string())
        .collect();
    assert!(missing.is_empty(), "files without a //! line: {missing:?}");
}

#[test]
fn every_error_type_has_an_exit_status() {
    let root = src_dir();
    let exit = std::fs::read_to_string(root.join("pipeline/mod.rs")).expect("readable");
    let start = exit
        .find("pub fn exit_status")
        .expect("pipeline::exit_status");
    let body = &exit[start..start + exit[start..].find("\n}\n").expect("its end")];
    let mut unclassified = Vec::new();
    let mut seen = 0;
    for path in modules(&root).values() {
        let code = code_of(path);
        let mut lines = code.lines();
        while let Some(line) = lines.next() {
            if !(line.contains("derive(") && line.contains("thiserror::Error")) {
                continue;
            }
            let Some(decl) = lines.find(|l| l.contains("pub struct ") || l.contains("pub enum "))
            else {
                continue;
            };
            let name: String = decl
                .split_whitespace()
                .skip_while(|w| *w != "struct" && *w != "enum")
                .nth(1)
                .unwrap_or_default()
                .chars()
                .take_while(|&c| is_ident_char(c))
                .collect();
            seen += 1;
            if !body.contains(&name) {
                unclassified.push(format!("{name} ({})", path.display()));
            }
        }
    }
    assert!(
        seen >= 8,
        "only {seen} error types found: the scan is broken"
    );
    assert!(
        unclassified.is_empty(),
        "error types pipeline::exit_status does not name: {unclassified:?}"
    );
}
