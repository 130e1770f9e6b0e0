//! The pull-request body (GitHub Markdown), in the form reviewers know from Renovate and
//! Dependabot: a one-line summary, one table of changes, the evidence and the long
//! sections folded in `<details>`.
//!
//! The body stays within GitHub's 65,536-character limit. When the whole body would
//! not fit, sections are cut least important first: the noisiest hosts, the crawler
//! model, the incidents, the hosts left alone, the "needs a crawler change" rows, the
//! evidence, and only then rows of the changes table, each cut section keeping a note
//! that points to report.html.

use std::fmt::Write;

use super::{ChangeRow, Report};

/// GitHub's limit on a pull-request body, in characters.
pub const PR_BODY_LIMIT: usize = 65_536;
/// What the body may use: room is kept below the limit for what a workflow adds.
const BUDGET: usize = PR_BODY_LIMIT - 1_536;

/// Escapes text for a Markdown table cell (GitHub): pipes, backticks, brackets, emphasis
/// and HTML are inert; line breaks become spaces.
pub fn md(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '|' | '`' | '[' | ']' | '*' | '_' | '\\' | '#' | '~' | '!' | '(' | ')' => {
                out.push('\\');
                out.push(c);
            }
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '\n' | '\r' => out.push(' '),
            _ => out.push(c),
        }
    }
    out
}

/// Escapes text inside an HTML element of the body (`<summary>`), where Markdown is not
/// interpreted.
fn html_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\n' | '\r' => out.push(' '),
            _ => out.push(c),
        }
    }
    out
}

/// One Markdown table row, every cell made inert by `md`.
fn md_row(cells: &[&str]) -> String {
    let mut o = String::from("|");
    for c in cells {
        let _ = write!(o, " {} |", md(c));
    }
    o.push('\n');
    o
}

/// A section of the body: `head`, then `items` (table rows, folded host entries), then
/// `tail`. Cutting keeps the first `kept` items and says how many more report.html has.
struct Block {
    /// Named in the note that replaces a section cut to nothing.
    title: String,
    head: String,
    items: Vec<String>,
    tail: String,
    /// Cut order: higher first; 0 is never cut.
    cut_rank: u8,
    kept: usize,
}

impl Block {
    fn new(title: impl Into<String>, cut_rank: u8, head: String, items: Vec<String>) -> Block {
        Block {
            title: title.into(),
            head,
            kept: items.len(),
            items,
            tail: String::new(),
            cut_rank,
        }
    }

    fn folded(title: String, cut_rank: u8, table_head: &str, items: Vec<String>) -> Block {
        Block {
            head: format!(
                "<details><summary>{}</summary>\n\n{table_head}",
                html_text(&title)
            ),
            tail: "\n</details>\n\n".into(),
            ..Block::new(title, cut_rank, String::new(), items)
        }
    }

    fn with_tail(mut self, tail: impl Into<String>) -> Block {
        self.tail = tail.into();
        self
    }

    /// What replaces a block cut to nothing.
    fn cut_note(&self, more: &str) -> String {
        format!(
            "<sub>{}: left out to keep this body under GitHub's 65,536-character limit; {more}.</sub>\n\n",
            html_text(&self.title)
        )
    }

    /// What follows the items kept of a block cut in part.
    fn more_note(&self, kept: usize, more: &str) -> String {
        if kept < self.items.len() {
            format!(
                "\n<sub>… and {} more: {more}.</sub>\n",
                self.items.len() - kept
            )
        } else {
            String::new()
        }
    }

    fn render_into(&self, o: &mut String, more: &str) {
        if self.kept == 0 && !self.items.is_empty() {
            o.push_str(&self.cut_note(more));
            return;
        }
        o.push_str(&self.head);
        for i in &self.items[..self.kept] {
            o.push_str(i);
        }
        o.push_str(&self.more_note(self.kept, more));
        o.push_str(&self.tail);
    }

    /// Characters the block renders to with `kept` items.
    fn len_with(&self, kept: usize, more: &str) -> usize {
        if kept == 0 && !self.items.is_empty() {
            return self.cut_note(more).chars().count();
        }
        let items: usize = self.items[..kept].iter().map(|i| i.chars().count()).sum();
        self.head.chars().count()
            + items
            + self.more_note(kept, more).chars().count()
            + self.tail.chars().count()
    }
}

/// A URL made safe inside a Markdown link target.
fn link_target(url: &str) -> String {
    url.chars()
        .map(|c| match c {
            ' ' => "%20".to_owned(),
            '(' => "%28".to_owned(),
            ')' => "%29".to_owned(),
            '<' => "%3C".to_owned(),
            '>' => "%3E".to_owned(),
            c => c.to_string(),
        })
        .collect()
}

/// The pull-request body for a report.
pub fn markdown(r: &Report) -> String {
    let more = match &r.report_url {
        Some(u) => format!("see [report.html]({})", link_target(u)),
        None => "see report.html in this run's outputs".to_owned(),
    };
    let mut head = String::new();
    let _ = writeln!(head, "## breaker-advisor: nightly settings review\n");
    let _ = writeln!(head, "**{}**\n", md(&r.summary));
    for w in &r.warnings {
        let _ = writeln!(head, "> [!WARNING]\n> {}\n", md(w));
    }
    let _ = writeln!(
        head,
        "<sub>Window {} – {} · {} telemetry file(s) · {} hosts · {} network calls, {} failures · patch v{}</sub>\n",
        r.window_start, r.window_end, r.sources, r.hosts, r.calls, r.failures, r.patch_version
    );
    let blocks = cut_to_fit(
        blocks(r),
        BUDGET.saturating_sub(head.chars().count() + 200),
        &more,
    );
    let mut o = head;
    if blocks.iter().any(|b| b.kept < b.items.len()) {
        let _ = writeln!(
            o,
            "> [!NOTE]\n> Parts of this body were cut to stay under GitHub's 65,536-character limit; {more} for all of it.\n"
        );
    }
    for b in &blocks {
        b.render_into(&mut o, &more);
    }
    o
}

/// Keeps as many items as fit in `budget` characters, cutting the blocks in their cut
/// order, each from its end.
fn cut_to_fit(mut blocks: Vec<Block>, budget: usize, more: &str) -> Vec<Block> {
    let total = |bs: &[Block]| -> usize { bs.iter().map(|b| b.len_with(b.kept, more)).sum() };
    let mut order: Vec<usize> = (0..blocks.len())
        .filter(|&i| blocks[i].cut_rank > 0)
        .collect();
    order.sort_by_key(|&i| std::cmp::Reverse(blocks[i].cut_rank));
    for i in order {
        let now = total(&blocks);
        if now <= budget {
            break;
        }
        let others = now - blocks[i].len_with(blocks[i].kept, more);
        let room = budget.saturating_sub(others);
        // The most items whose rendering fits the room (lengths grow with the count).
        let (mut lo, mut hi) = (0, blocks[i].kept);
        while lo < hi {
            let mid = (lo + hi).div_ceil(2);
            if blocks[i].len_with(mid, more) <= room {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        blocks[i].kept = lo;
    }
    blocks
}

fn change_cells(c: &ChangeRow) -> String {
    let predicted = if c.predicted.is_empty() {
        "not replayed"
    } else {
        &c.predicted
    };
    md_row(&[
        &c.label,
        &format!("{}: {}", c.file, c.setting),
        &format!("{} → {}", c.from, c.to),
        &c.confidence,
        &c.why,
        predicted,
    ])
}

/// Below the changes: how the operator keeps a value for good.
const HOW_TO_SAY_NO: &str = "\n<sub>To keep a value, end its line in breakers.yaml or ratelimits.yaml with `# breaker-advisor: keep` (at the end of a host's key line it keeps the whole host), or list it under `advise.pins` in breaker-advisor.yaml. A change set back by hand after it was merged is not proposed again for `advise.revert_hold_nights` nights (7 by default).</sub>\n\n";

/// The body's sections in display order, each with its cut rank.
fn blocks(r: &Report) -> Vec<Block> {
    let mut out = Vec::new();
    if r.changes.is_empty() {
        out.push(Block::new(
            "Changes",
            0,
            "### Changes\n\nNo change proposed.\n\n".into(),
            Vec::new(),
        ));
    } else {
        out.push(
            Block::new(
                "Changes",
                1,
                "### Changes\n\n| host | setting | change | confidence | why | predicted (replay of the window) |\n|---|---|---|---|---|---|\n".into(),
                r.changes.iter().map(change_cells).collect(),
            )
            .with_tail(HOW_TO_SAY_NO),
        );
        // The evidence, folded per host (its breaker and rate changes together), in
        // the order the hosts first appear in the table.
        let mut groups: Vec<(&str, Vec<&ChangeRow>)> = Vec::new();
        for c in &r.changes {
            match groups.iter_mut().find(|(h, _)| *h == c.host) {
                Some((_, g)) => g.push(c),
                None => groups.push((&c.host, vec![c])),
            }
        }
        let mut items = Vec::new();
        for (_, group) in &groups {
            let n = group.len();
            let mut e = format!(
                "<details><summary>Evidence: {} ({} change{})</summary>\n\n",
                html_text(&group[0].label),
                n,
                if n == 1 { "" } else { "s" }
            );
            for c in group {
                let _ = writeln!(
                    e,
                    "**{} {} → {}**: {}\n",
                    md(&c.setting),
                    md(&c.from),
                    md(&c.to),
                    md(&c.reason)
                );
                let _ = writeln!(e, "| measure | current | proposed |\n|---|---:|---:|");
                for row in &c.evidence {
                    e.push_str(&md_row(&[&row.label, &row.current, &row.proposed]));
                }
                e.push('\n');
            }
            e.push_str("</details>\n");
            items.push(e);
        }
        out.push(Block::new("Evidence", 2, String::new(), items).with_tail("\n"));
    }
    if !r.crawler_changes.is_empty() {
        out.push(
            Block::new(
                format!("Needs a crawler change ({})", r.crawler_changes.len()),
                3,
                format!(
                    "### Needs a crawler change ({})\n\nThese would help, but the crawler ignores the setting: not written into breakers.yaml.\n\n| host | setting | from | to | why | ignored by |\n|---|---|---|---|---|---|\n",
                    r.crawler_changes.len()
                ),
                r.crawler_changes
                    .iter()
                    .map(|c| md_row(&[&c.label, &c.setting, &c.from, &c.to, &c.reason, &c.ignored_by]))
                    .collect(),
            )
            .with_tail("\n"),
        );
    }
    if !r.incomplete.is_empty() {
        out.push(
            Block::new(
                "Incomplete input",
                0,
                "### Incomplete input\n\nRows of these dates are gone from the dataset (listed part files went missing and the source no longer has them); the figures for them are low.\n\n| source | table | dates |\n|---|---|---|\n".into(),
                r.incomplete.iter().map(|(s, t, d)| md_row(&[s, t, d])).collect(),
            )
            .with_tail("\n"),
        );
    }
    if !r.rejected.is_empty() {
        out.push(
            Block::new(
                "Rejected input rows",
                5,
                "### Rejected input rows\n\n| source | reason | rows |\n|---|---|---:|\n".into(),
                r.rejected
                    .iter()
                    .map(|(s, why, n)| md_row(&[s, why, &n.to_string()]))
                    .collect(),
            )
            .with_tail("\n"),
        );
    }
    if !r.set_aside.is_empty() {
        out.push(
            Block::new(
                "Rows set aside",
                5,
                "### Rows set aside\n\nRows after the fleet's traffic: they do not set the window, and they are not analysed.\n\n| source | why | rows | first | last |\n|---|---|---:|---|---|\n".into(),
                r.set_aside
                    .iter()
                    .map(|(s, why, n, first, last)| md_row(&[s, why, &n.to_string(), first, last]))
                    .collect(),
            )
            .with_tail("\n"),
        );
    }
    if !r.adjusted.is_empty() {
        out.push(
            Block::new(
                "Adjusted input values",
                5,
                "### Adjusted input values\n\nValues outside what their column can mean, or unreadable, changed by the exports into this dataset; the rows were kept.\n\n| source | value | values |\n|---|---|---:|\n".into(),
                r.adjusted
                    .iter()
                    .map(|(s, what, n)| md_row(&[s, what, &n.to_string()]))
                    .collect(),
            )
            .with_tail("\n"),
        );
    }
    if !r.held.is_empty() {
        out.push(Block::folded(
            format!("Left alone ({})", r.held.len()),
            4,
            "| host | why |\n|---|---|\n",
            r.held.iter().map(|(h, _, why)| md_row(&[h, why])).collect(),
        ));
    }
    if !r.quiet.is_empty() {
        out.push(Block::new(
            "Too little data",
            0,
            format!(
                "<sub>{} host(s) had too little data to advise (fewer network calls in the window than `advise.min_calls`): no replay, no change-point search; report.html names them.</sub>\n\n",
                r.quiet.len()
            ),
            Vec::new(),
        ));
    }
    if r.incidents.is_empty() {
        out.push(Block::new(
            "Incidents",
            0,
            "No incident detected.\n\n".into(),
            Vec::new(),
        ));
    } else {
        out.push(Block::folded(
            format!("Incidents ({})", r.incidents.len()),
            6,
            "| host | kind | start | end | failure rate before → during → after |\n|---|---|---|---|---|\n",
            r.incidents
                .iter()
                .map(|i| md_row(&[&i.label, &i.kind, &i.start, &i.end, &i.levels]))
                .collect(),
        ));
    }
    if !r.noisiest.is_empty() {
        out.push(Block::folded(
            "Noisiest hosts".into(),
            8,
            "| host | calls | failures | 429 | 5xx | timeouts | opens |\n|---|---:|---:|---:|---:|---:|---:|\n",
            r.noisiest
                .iter()
                .map(|n| {
                    md_row(&[
                        &n.label,
                        &n.calls.to_string(),
                        &n.failures,
                        &n.e429,
                        &n.e5xx,
                        &n.timeouts,
                        &n.opens.to_string(),
                    ])
                })
                .collect(),
        ));
    }
    let mut model = String::new();
    for (what, how) in &r.crawler_model {
        let _ = writeln!(model, "- {}: {}", md(what), md(how));
    }
    let fidelity_head = format!(
        "{model}\nReplay of the recorded policy under this model against the recorded breakers:\n\n| host | breakers | opens recorded | opens replayed | miss |\n|---|---|---:|---:|---:|\n"
    );
    let mut m = Block::folded(
        "Crawler model and replay fidelity".into(),
        7,
        &fidelity_head,
        r.fidelity
            .iter()
            .map(|f| {
                md_row(&[
                    &f.label,
                    &f.instances,
                    &f.recorded_opens.to_string(),
                    &f.replayed_opens.to_string(),
                    &f.miss,
                ])
            })
            .collect(),
    );
    if r.fidelity.is_empty() {
        m.head = format!("<details><summary>Crawler model</summary>\n\n{model}");
    }
    out.push(m);
    let mut foot = String::from("<sub>");
    if r.rejected.is_empty() {
        foot.push_str("No input row rejected · ");
    }
    let outputs: Vec<String> = r
        .outputs
        .iter()
        .map(|(what, path)| format!("{}: `{}`", md(what), path.replace('`', "'")))
        .collect();
    let _ = writeln!(
        foot,
        "{} · input fingerprint {}</sub>",
        outputs.join(" · "),
        md(&r.input_fingerprint)
    );
    out.push(Block::new("Outputs", 0, foot, Vec::new()));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markdown_cells_keep_hostile_names_inert() {
        let h = "</script><img src=x onerror=alert(1)>.example|`x`[y]";
        let m = md(h);
        assert!(!m.contains('<') && !m.contains('>'), "{m}");
        assert!(
            m.contains("\\|") && m.contains("\\`") && m.contains("\\["),
            "{m}"
        );
        let a = super::super::anchor(h);
        assert!(
            a.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
            "{a}"
        );
        assert_eq!(html_text("<b>&\""), "&lt;b&gt;&amp;&quot;");
    }

    #[test]
    fn blocks_are_cut_in_their_order_to_the_budget() {
        let items = |n: usize, w: usize| (0..n).map(|_| "x".repeat(w) + "\n").collect();
        let blocks = vec![
            Block::new("keep", 0, "head\n".into(), Vec::new()),
            Block::new("changes", 1, String::new(), items(10, 99)),
            Block::new("noise", 9, String::new(), items(50, 99)),
        ];
        let full: usize = blocks.iter().map(|b| b.len_with(b.kept, "m")).sum();
        let cut = cut_to_fit(blocks, 2_000, "m");
        let used: usize = cut.iter().map(|b| b.len_with(b.kept, "m")).sum();
        assert!(full > 2_000 && used <= 2_000, "{full} {used}");
        assert_eq!(cut[1].kept, 10, "the changes are cut last");
        assert!(cut[2].kept < 50);
        let mut o = String::new();
        cut[2].render_into(&mut o, "m");
        assert_eq!(o.chars().count(), cut[2].len_with(cut[2].kept, "m"));
        let mut o = String::new();
        let none = Block {
            kept: 0,
            ..Block::new("noise", 9, "h".into(), items(3, 5))
        };
        none.render_into(&mut o, "m");
        assert_eq!(o.chars().count(), none.len_with(0, "m"));
        assert!(o.contains("noise: left out"), "{o}");
    }
}
