//! Stage 6, report: the Markdown pull-request body and the self-contained HTML page
//! (inline SVG charts, no scripts, no network, a strict Content-Security-Policy).
//! Rendering only: the pipeline gathers the inputs; nothing here reads files or clocks.

pub mod svg;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

use serde::Serialize;

use crate::advise::{HostEvidence, failure_weighted_median};
use crate::metrics::stats::nearest_rank;
use crate::patch::PatchFile;

/// One host's totals over the window (from host_summary).
#[derive(Debug, Clone, Default)]
pub struct HostLine {
    pub host: String,
    pub calls_net: i64,
    pub failures: i64,
    pub e429: i64,
    pub e5xx: i64,
    pub timeouts: i64,
    pub opens: i64,
}

/// One incident (from incidents.parquet).
#[derive(Debug, Clone)]
pub struct IncidentLine {
    pub host: String,
    pub kind: String,
    pub start_us: i64,
    pub end_us: i64,
    pub ongoing: bool,
    pub level_before: Option<f64>,
    pub level_during: Option<f64>,
    pub level_after: Option<f64>,
}

/// One host's EWMA series (from host_timeseries).
#[derive(Debug, Clone, Default)]
pub struct Series {
    pub bucket_start_us: Vec<i64>,
    pub e429: Vec<Option<f64>>,
    pub e5xx: Vec<Option<f64>>,
    pub timeouts: Vec<Option<f64>>,
}

/// How the replay of the recorded policy compares with one host's recorded breakers.
#[derive(Debug, Clone, Default)]
pub struct FidelityLine {
    pub host: String,
    pub instances: i64,
    pub logged_instances: i64,
    pub recorded_opens: i64,
    pub replayed_opens: i64,
}

/// Everything the report shows.
pub struct ReportInput<'a> {
    pub patch: &'a PatchFile,
    /// The crawler model, one (what, how) line per field.
    pub model: Vec<(String, String)>,
    pub fidelity: Vec<FidelityLine>,
    pub window: (i64, i64),
    pub hosts: Vec<HostLine>,
    pub evidence: &'a [HostEvidence],
    pub incidents: Vec<IncidentLine>,
    pub series: BTreeMap<String, Series>,
    /// Retry-After values (s) of network 429/503 responses, per host.
    pub retry_after: BTreeMap<String, Vec<f64>>,
    /// Breaker open spans (µs), per host.
    pub opens: BTreeMap<String, Vec<(i64, i64)>>,
    /// Current (fail_max, reset_timeout_s) per host.
    pub current: BTreeMap<String, (i64, f64)>,
    pub sources: usize,
    /// (source, reason, rows) of rejected input rows.
    pub rejected: Vec<(String, String, u64)>,
    /// (source, table, dates) whose rows were lost from the dataset (missing part files
    /// the source could not restore).
    pub incomplete: Vec<(String, String, String)>,
    /// (what, path) of the outputs.
    pub outputs: Vec<(String, String)>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ChangeRow {
    pub host: String,
    pub anchor: String,
    pub file: String,
    pub setting: String,
    pub from: String,
    pub to: String,
    pub reason: String,
    pub evidence: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct CrawlerChangeRow {
    pub host: String,
    pub anchor: String,
    pub setting: String,
    pub from: String,
    pub to: String,
    pub reason: String,
    pub ignored_by: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct FidelityRow {
    pub host: String,
    pub anchor: String,
    pub instances: String,
    pub recorded_opens: i64,
    pub replayed_opens: i64,
    pub miss: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct IncidentRow {
    pub host: String,
    pub anchor: String,
    pub kind: String,
    pub start: String,
    pub end: String,
    pub levels: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct NoisyRow {
    pub host: String,
    pub anchor: String,
    pub calls: i64,
    pub failures: String,
    pub e429: String,
    pub e5xx: String,
    pub timeouts: String,
    pub opens: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct HostSection {
    pub host: String,
    pub anchor: String,
    pub changes: Vec<ChangeRow>,
    pub incidents: Vec<IncidentRow>,
    pub rate_chart: String,
    pub burst_chart: String,
    pub retry_chart: String,
}

/// The report's content, shared by both renderings.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub window_start: String,
    pub window_end: String,
    pub patch_version: u64,
    pub input_fingerprint: String,
    pub sources: usize,
    pub hosts: usize,
    pub calls: i64,
    pub failures: i64,
    pub changes: Vec<ChangeRow>,
    pub crawler_changes: Vec<CrawlerChangeRow>,
    pub crawler_model: Vec<(String, String)>,
    pub fidelity: Vec<FidelityRow>,
    pub incidents: Vec<IncidentRow>,
    pub noisiest: Vec<NoisyRow>,
    pub held: Vec<(String, String, String)>,
    pub rejected: Vec<(String, String, u64)>,
    pub incomplete: Vec<(String, String, String)>,
    pub outputs: Vec<(String, String)>,
    pub sections: Vec<HostSection>,
}

fn utc(us: i64) -> String {
    chrono::DateTime::from_timestamp_micros(us)
        .map(|d| d.format("%Y-%m-%d %H:%M UTC").to_string())
        .unwrap_or_default()
}

fn pct(k: i64, n: i64) -> String {
    if n <= 0 {
        "–".into()
    } else {
        format!("{:.1}%", 100.0 * k as f64 / n as f64)
    }
}

fn level(v: Option<f64>) -> String {
    v.map_or_else(|| "–".into(), |x| format!("{:.1}%", x * 100.0))
}

/// A stable, URL-safe anchor for a host (hex of its bytes keeps hostile names inert).
pub fn anchor(host: &str) -> String {
    let mut a = String::from("host-");
    for b in host.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' {
            a.push(b as char);
        } else {
            let _ = write!(a, "_{b:02x}");
        }
    }
    a
}

fn evidence_text(e: &crate::advise::Evidence) -> String {
    e.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl Report {
    pub fn build(input: &ReportInput<'_>) -> Report {
        let p = input.patch;
        let mut changes = Vec::new();
        for c in &p.breakers.changes {
            changes.push(ChangeRow {
                host: c.host.clone(),
                anchor: anchor(&c.host),
                file: p.breakers.file.clone(),
                setting: match &c.role {
                    Some(r) => format!("roles.{r}.{}", c.key.name()),
                    None => c.key.name().to_owned(),
                },
                from: c.from.to_string(),
                to: c.to.to_string(),
                reason: c.reason.clone(),
                evidence: evidence_text(&c.evidence),
            });
        }
        if let Some(r) = &p.ratelimits {
            for c in &r.changes {
                changes.push(ChangeRow {
                    host: c.host.clone(),
                    anchor: anchor(&c.host),
                    file: r.file.clone(),
                    setting: format!("{}.rates", c.role),
                    from: format!("{} (x{})", c.from.join(", "), c.multiplier_from),
                    to: format!("{} (x{})", c.to.join(", "), c.multiplier_to),
                    reason: c.reason.clone(),
                    evidence: evidence_text(&c.evidence),
                });
            }
        }
        let incident_row = |i: &IncidentLine| IncidentRow {
            host: i.host.clone(),
            anchor: anchor(&i.host),
            kind: i.kind.clone(),
            start: utc(i.start_us),
            end: if i.ongoing {
                "ongoing".into()
            } else {
                utc(i.end_us)
            },
            levels: format!(
                "{} → {} → {}",
                level(i.level_before),
                level(i.level_during),
                level(i.level_after)
            ),
        };
        let incidents: Vec<IncidentRow> = input.incidents.iter().map(incident_row).collect();
        let crawler_changes = p
            .needs_crawler_change
            .iter()
            .map(|c| CrawlerChangeRow {
                host: c.host.clone(),
                anchor: anchor(&c.host),
                setting: match &c.role {
                    Some(r) => format!("roles.{r}.{}", c.key.name()),
                    None => c.key.name().to_owned(),
                },
                from: c.from.to_string(),
                to: c.to.to_string(),
                reason: c.reason.clone(),
                ignored_by: c.ignored_by.clone(),
            })
            .collect();
        let fidelity = input
            .fidelity
            .iter()
            .filter(|f| f.recorded_opens > 0 || f.replayed_opens > 0)
            .map(|f| FidelityRow {
                host: f.host.clone(),
                anchor: anchor(&f.host),
                instances: if f.logged_instances > 0 {
                    format!(
                        "{} ({} from logged outcomes)",
                        f.instances, f.logged_instances
                    )
                } else {
                    f.instances.to_string()
                },
                recorded_opens: f.recorded_opens,
                replayed_opens: f.replayed_opens,
                miss: if f.recorded_opens > 0 {
                    format!(
                        "{:+.0}%",
                        100.0 * (f.replayed_opens - f.recorded_opens) as f64
                            / f.recorded_opens as f64
                    )
                } else {
                    "–".into()
                },
            })
            .collect();
        let mut noisy: Vec<&HostLine> = input.hosts.iter().filter(|h| h.failures > 0).collect();
        noisy.sort_by(|a, b| {
            let ra = a.failures as f64 / a.calls_net.max(1) as f64;
            let rb = b.failures as f64 / b.calls_net.max(1) as f64;
            rb.total_cmp(&ra).then_with(|| a.host.cmp(&b.host))
        });
        let noisiest = noisy
            .into_iter()
            .take(10)
            .map(|h| NoisyRow {
                host: h.host.clone(),
                anchor: anchor(&h.host),
                calls: h.calls_net,
                failures: pct(h.failures, h.calls_net),
                e429: pct(h.e429, h.calls_net),
                e5xx: pct(h.e5xx, h.calls_net),
                timeouts: pct(h.timeouts, h.calls_net),
                opens: h.opens,
            })
            .collect();

        // A section per host with a change or an incident, in host order.
        let featured: BTreeSet<&str> = changes
            .iter()
            .map(|c| c.host.as_str())
            .chain(input.incidents.iter().map(|i| i.host.as_str()))
            .collect();
        let sections = featured
            .into_iter()
            .map(|host| section(input, host, &changes, &incidents))
            .collect();
        Report {
            window_start: utc(input.window.0),
            window_end: utc(input.window.1),
            patch_version: p.patch_version,
            input_fingerprint: p.input_fingerprint.clone(),
            sources: input.sources,
            hosts: input.hosts.len(),
            calls: input.hosts.iter().map(|h| h.calls_net).sum(),
            failures: input.hosts.iter().map(|h| h.failures).sum(),
            changes,
            crawler_changes,
            crawler_model: input.model.clone(),
            fidelity,
            incidents,
            noisiest,
            held: p
                .held
                .iter()
                .map(|h| (h.host.clone(), anchor(&h.host), h.reason.clone()))
                .collect(),
            rejected: input.rejected.clone(),
            incomplete: input.incomplete.clone(),
            outputs: input.outputs.clone(),
            sections,
        }
    }
}

fn section(
    input: &ReportInput<'_>,
    host: &str,
    changes: &[ChangeRow],
    incidents: &[IncidentRow],
) -> HostSection {
    let ev = input.evidence.iter().find(|e| e.host == host);
    let (cur_fail, cur_reset) = input.current.get(host).copied().unwrap_or((5, 60.0));
    let proposed = |key: &str| {
        input
            .patch
            .breakers
            .changes
            .iter()
            .find(|c| c.host == host && c.role.is_none() && c.key.name() == key)
            .map(|c| c.to as f64)
    };
    // Rates over time.
    let spans: Vec<svg::Span> = input
        .incidents
        .iter()
        .filter(|i| i.host == host)
        .map(|i| svg::Span {
            start_us: i.start_us,
            end_us: i.end_us,
            label: format!(
                "{} incident {} – {}",
                i.kind,
                utc(i.start_us),
                utc(i.end_us)
            ),
        })
        .collect();
    let empty = Series::default();
    let s = input.series.get(host).unwrap_or(&empty);
    let pts = |v: &[Option<f64>]| -> Vec<(i64, Option<f64>)> {
        s.bucket_start_us
            .iter()
            .zip(v)
            .map(|(t, r)| (*t, *r))
            .collect()
    };
    let mut series = vec![
        svg::RateSeries {
            label: "429",
            class: "s429",
            points: pts(&s.e429),
        },
        svg::RateSeries {
            label: "5xx",
            class: "s5xx",
            points: pts(&s.e5xx),
        },
    ];
    if s.timeouts.iter().any(|v| v.is_some_and(|x| x > 0.0)) {
        series.push(svg::RateSeries {
            label: "timeouts",
            class: "stimeout",
            points: pts(&s.timeouts),
        });
    }
    let empty_opens = Vec::new();
    let rate_chart = svg::rate_chart(
        &format!("{host}: 429, 5xx and timeout rates over the window"),
        input.window,
        &series,
        &spans,
        input.opens.get(host).unwrap_or(&empty_opens),
    );

    // Burst lengths: background and inside incidents, with q95 and fail_max markers.
    let (bg, inc) = ev.map_or((&[][..], &[][..]), |e| {
        (&e.background_bursts[..], &e.incident_bursts[..])
    });
    let top = bg
        .iter()
        .chain(inc)
        .copied()
        .max()
        .unwrap_or(1)
        .max(cur_fail as u64 + 1)
        .min(30);
    let count = |v: &[u64], len: u64| -> u64 {
        v.iter()
            .filter(|&&l| if len == top { l >= top } else { l == len })
            .count() as u64
    };
    let labels: Vec<String> = (1..=top)
        .map(|l| {
            if l == top && bg.iter().chain(inc).any(|&x| x > top) {
                format!("{l}+")
            } else {
                l.to_string()
            }
        })
        .collect();
    // Bin i holds bursts of length i + 1. A burst of fail_max failures trips the
    // breaker, so fail_max sits at the left edge of its bin; q95 at the right edge of
    // its bin (95% of background bursts are at most that long).
    let mut markers = vec![svg::Marker {
        pos: cur_fail as f64 - 1.0,
        class: "current",
        label: format!("current fail_max {cur_fail}"),
    }];
    if !bg.is_empty() {
        let q95 = nearest_rank(bg, 0.95);
        markers.push(svg::Marker {
            pos: q95 as f64,
            class: "q95",
            label: format!("background q95 {q95}"),
        });
    }
    if let Some(to) = proposed("fail_max") {
        markers.push(svg::Marker {
            pos: to - 1.0,
            class: "proposed",
            label: format!("proposed fail_max {to}"),
        });
    }
    if !inc.is_empty() {
        let u = failure_weighted_median(inc);
        markers.push(svg::Marker {
            pos: u as f64 - 1.0,
            class: "incmed",
            label: format!("half the incident failures in bursts >= {u}"),
        });
    }
    let burst_chart = svg::histogram(
        &format!("{host}: failure burst lengths"),
        "consecutive failures in a burst",
        "bursts",
        &svg::Bins {
            labels,
            edge_labels: false,
        },
        &[
            (
                "background",
                "outside incidents",
                (1..=top).map(|l| count(bg, l)).collect(),
            ),
            (
                "inside",
                "inside incidents",
                (1..=top).map(|l| count(inc, l)).collect(),
            ),
        ],
        &markers,
    );

    // Retry-After distribution with the current and proposed reset timeout.
    let ra = input.retry_after.get(host).cloned().unwrap_or_default();
    let max_ra = ra.iter().copied().fold(cur_reset, f64::max).max(1.0);
    let width = [5.0, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0]
        .into_iter()
        .find(|w| max_ra / w <= 30.0)
        .unwrap_or(900.0);
    let nbins = (max_ra / width).floor() as usize + 1;
    let mut counts = vec![0u64; nbins];
    for v in &ra {
        counts[((v / width).floor() as usize).min(nbins - 1)] += 1;
    }
    let mut markers = vec![svg::Marker {
        pos: cur_reset / width,
        class: "current",
        label: format!("current reset_timeout_s {cur_reset}"),
    }];
    if let Some(to) = proposed("reset_timeout_s") {
        markers.push(svg::Marker {
            pos: to / width,
            class: "proposed",
            label: format!("proposed reset_timeout_s {to}"),
        });
    }
    let retry_chart = svg::histogram(
        &format!(
            "{host}: Retry-After of 429/503 responses ({} headers)",
            ra.len()
        ),
        &format!("Retry-After (s), bins of {width} s"),
        "responses",
        &svg::Bins {
            labels: (0..nbins)
                .map(|i| format!("{}", i as f64 * width))
                .collect(),
            edge_labels: true,
        },
        &[("retry", "Retry-After headers", counts)],
        &markers,
    );
    HostSection {
        host: host.to_owned(),
        anchor: anchor(host),
        changes: changes.iter().filter(|c| c.host == host).cloned().collect(),
        incidents: incidents
            .iter()
            .filter(|i| i.host == host)
            .cloned()
            .collect(),
        rate_chart,
        burst_chart,
        retry_chart,
    }
}

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

/// The pull-request body.
/// One Markdown table row, every cell made inert by `md`.
fn md_row(o: &mut String, cells: &[&str]) {
    o.push('|');
    for c in cells {
        let _ = write!(o, " {} |", md(c));
    }
    o.push('\n');
}

pub fn markdown(r: &Report) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "## breaker-advisor: nightly settings review\n");
    let _ = writeln!(
        o,
        "Window **{} – {}** · {} telemetry file(s) · {} hosts · {} network calls, {} failures · patch v{}\n",
        r.window_start, r.window_end, r.sources, r.hosts, r.calls, r.failures, r.patch_version
    );
    let _ = writeln!(o, "### Proposed changes ({})\n", r.changes.len());
    if r.changes.is_empty() {
        let _ = writeln!(o, "No change proposed.\n");
    } else {
        let _ = writeln!(
            o,
            "| host | file | setting | from | to | reason | evidence |"
        );
        let _ = writeln!(o, "|---|---|---|---|---|---|---|");
        for c in &r.changes {
            md_row(
                &mut o,
                &[
                    &c.host,
                    &c.file,
                    &c.setting,
                    &c.from,
                    &c.to,
                    &c.reason,
                    &c.evidence,
                ],
            );
        }
        o.push('\n');
    }
    if !r.crawler_changes.is_empty() {
        let _ = writeln!(
            o,
            "### Needs a crawler change ({})\n\nThese would help, but the crawler ignores the setting: not written into breakers.yaml.\n",
            r.crawler_changes.len()
        );
        let _ = writeln!(o, "| host | setting | from | to | why | ignored by |");
        let _ = writeln!(o, "|---|---|---|---|---|---|");
        for c in &r.crawler_changes {
            md_row(
                &mut o,
                &[
                    &c.host,
                    &c.setting,
                    &c.from,
                    &c.to,
                    &c.reason,
                    &c.ignored_by,
                ],
            );
        }
        o.push('\n');
    }
    let _ = writeln!(o, "### Incidents ({})\n", r.incidents.len());
    if r.incidents.is_empty() {
        let _ = writeln!(o, "No incident detected.\n");
    } else {
        let _ = writeln!(
            o,
            "| host | kind | start | end | failure rate before → during → after |"
        );
        let _ = writeln!(o, "|---|---|---|---|---|");
        for i in &r.incidents {
            let _ = writeln!(
                o,
                "| {} | {} | {} | {} | {} |",
                md(&i.host),
                md(&i.kind),
                md(&i.start),
                md(&i.end),
                md(&i.levels)
            );
        }
        o.push('\n');
    }
    let _ = writeln!(o, "### Noisiest hosts\n");
    if r.noisiest.is_empty() {
        let _ = writeln!(o, "No failures.\n");
    } else {
        let _ = writeln!(
            o,
            "| host | calls | failures | 429 | 5xx | timeouts | opens |"
        );
        let _ = writeln!(o, "|---|---:|---:|---:|---:|---:|---:|");
        for n in &r.noisiest {
            let _ = writeln!(
                o,
                "| {} | {} | {} | {} | {} | {} | {} |",
                md(&n.host),
                n.calls,
                n.failures,
                n.e429,
                n.e5xx,
                n.timeouts,
                n.opens
            );
        }
        o.push('\n');
    }
    if !r.held.is_empty() {
        let _ = writeln!(o, "### Left alone ({})\n", r.held.len());
        let _ = writeln!(o, "| host | why |");
        let _ = writeln!(o, "|---|---|");
        for (host, _, why) in &r.held {
            let _ = writeln!(o, "| {} | {} |", md(host), md(why));
        }
        o.push('\n');
    }
    let _ = writeln!(o, "### Crawler model\n");
    for (what, how) in &r.crawler_model {
        let _ = writeln!(o, "- {}: {}", md(what), md(how));
    }
    o.push('\n');
    if !r.fidelity.is_empty() {
        let _ = writeln!(
            o,
            "Replay of the recorded policy under this model against the recorded breakers:\n"
        );
        let _ = writeln!(
            o,
            "| host | breakers | opens recorded | opens replayed | miss |"
        );
        let _ = writeln!(o, "|---|---|---:|---:|---:|");
        for f in &r.fidelity {
            md_row(
                &mut o,
                &[
                    &f.host,
                    &f.instances,
                    &f.recorded_opens.to_string(),
                    &f.replayed_opens.to_string(),
                    &f.miss,
                ],
            );
        }
        o.push('\n');
    }
    if !r.incomplete.is_empty() {
        let _ = writeln!(o, "### Incomplete input\n");
        let _ = writeln!(
            o,
            "Rows of these dates are gone from the dataset (listed part files went missing and the source no longer has them); the figures for them are low.\n"
        );
        let _ = writeln!(o, "| source | table | dates |");
        let _ = writeln!(o, "|---|---|---|");
        for (s, t, d) in &r.incomplete {
            let _ = writeln!(o, "| {} | {} | {} |", md(s), md(t), md(d));
        }
        o.push('\n');
    }
    let _ = writeln!(o, "### Rejected input rows\n");
    if r.rejected.is_empty() {
        let _ = writeln!(o, "None.\n");
    } else {
        let _ = writeln!(o, "| source | reason | rows |");
        let _ = writeln!(o, "|---|---|---:|");
        for (s, why, n) in &r.rejected {
            let _ = writeln!(o, "| {} | {} | {n} |", md(s), md(why));
        }
        o.push('\n');
    }
    let _ = writeln!(o, "### Outputs\n");
    for (what, path) in &r.outputs {
        let _ = writeln!(o, "- {}: `{}`", md(what), path.replace('`', "'"));
    }
    let _ = writeln!(
        o,
        "\n<sub>input fingerprint {} · charts in report.html</sub>",
        md(&r.input_fingerprint)
    );
    o
}

const TEMPLATE: &str = include_str!("report.html.j2");

/// The self-contained HTML page (minijinja, autoescaped; the SVG charts are built and
/// escaped by `svg` and inserted as markup).
pub fn html(r: &Report) -> Result<String, minijinja::Error> {
    let mut env = minijinja::Environment::new();
    env.set_auto_escape_callback(|_| minijinja::AutoEscape::Html);
    env.add_template("report.html", TEMPLATE)?;
    env.get_template("report.html")?
        .render(minijinja::context! { r => r })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markdown_cells_and_anchors_keep_hostile_names_inert() {
        let h = "</script><img src=x onerror=alert(1)>.example|`x`[y]";
        let m = md(h);
        assert!(!m.contains('<') && !m.contains('>'), "{m}");
        assert!(
            m.contains("\\|") && m.contains("\\`") && m.contains("\\["),
            "{m}"
        );
        let a = anchor(h);
        assert!(
            a.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
            "{a}"
        );
    }
}
