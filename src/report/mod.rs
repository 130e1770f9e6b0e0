//! Stage 6, report: the Markdown pull-request body and the self-contained HTML page
//! (inline SVG charts, no scripts, no network, a strict Content-Security-Policy).
//! Rendering only: the pipeline gathers the inputs; nothing here reads files or clocks.

pub mod markdown;
pub mod plan_text;
pub mod svg;

pub use markdown::{PR_BODY_LIMIT, markdown, md};

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

use serde::Serialize;

use crate::advise::{HostEvidence, failure_weighted_median};
use crate::clock::utc_minute;
use crate::hostname::display_host;
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
    /// (source, "table.column: what", values) set to NULL or clamped on export.
    pub adjusted: Vec<(String, String, u64)>,
    /// Rows after the night's end, per source (a clock off, corrupt times).
    pub set_aside: Vec<crate::metrics::night::SetAside>,
    /// The window's traffic beside the baseline's, for the quiet-night warning.
    pub traffic: Traffic,
    /// (what, path) of the outputs.
    pub outputs: Vec<(String, String)>,
    /// Where the reader finds report.html, for the PR body's links.
    pub report_url: Option<String>,
}

/// The network calls of the window, and what a window of its length held on average
/// over the trailing baseline (None: the baseline holds no data).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Traffic {
    pub calls_net: i64,
    pub expected_calls_net: Option<f64>,
    pub baseline_hours: f64,
}

/// Below this share of the baseline's calls a window is "almost empty".
pub const QUIET_SHARE: f64 = 0.1;
/// ...when the baseline held at least this many calls a window.
pub const QUIET_MIN_EXPECTED: f64 = 100.0;

impl Traffic {
    /// The warning of a window that holds (almost) no calls: it must never pass for a
    /// quiet night.
    pub fn warning(&self) -> Option<String> {
        if self.calls_net == 0 {
            return Some(
                "no network call in the window: nothing was analysed (check --now, the telemetry files, and the rows set aside)".into(),
            );
        }
        let expected = self.expected_calls_net?;
        if expected == 0.0 && (self.calls_net as f64) < QUIET_MIN_EXPECTED {
            return Some(format!(
                "almost no calls in the window: {} network calls, and none in the {:.0} h before it although the data begins earlier (check --now, the telemetry files, and the rows set aside)",
                self.calls_net, self.baseline_hours
            ));
        }
        (expected >= QUIET_MIN_EXPECTED && (self.calls_net as f64) < QUIET_SHARE * expected)
            .then(|| {
                format!(
                    "almost no calls in the window: {} network calls, {:.1}% of the {:.0} a window held on average over the {:.0} h before it (check --now and the telemetry files)",
                    self.calls_net,
                    100.0 * self.calls_net as f64 / expected,
                    expected,
                    self.baseline_hours
                )
            })
    }
}

/// One measure behind a change: its value at the current and at the proposed setting
/// (a replay figure, or a count either way), or a single value in `current`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EvidenceRow {
    pub label: String,
    pub current: String,
    pub proposed: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct ChangeRow {
    pub host: String,
    /// The host for people: Unicode beside the punycode key for IDN hosts.
    pub label: String,
    pub anchor: String,
    pub file: String,
    pub setting: String,
    pub from: String,
    pub to: String,
    /// The reason's first clause, for the one-line table.
    pub why: String,
    pub reason: String,
    /// The replay's prediction in one line (empty when not replayed).
    pub predicted: String,
    /// How far the replayed gain holds across the nights replayed ("high, 4 of 4
    /// nights"); "—" when not replayed.
    pub confidence: String,
    pub evidence: Vec<EvidenceRow>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CrawlerChangeRow {
    pub host: String,
    pub label: String,
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
    pub label: String,
    pub anchor: String,
    pub instances: String,
    pub recorded_opens: i64,
    pub replayed_opens: i64,
    pub miss: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct IncidentRow {
    pub host: String,
    pub label: String,
    pub anchor: String,
    pub kind: String,
    pub start: String,
    pub end: String,
    pub levels: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct NoisyRow {
    pub host: String,
    pub label: String,
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
    pub label: String,
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
    /// One line: N changes on M hosts and their replayed effect.
    pub summary: String,
    /// Where the reader finds report.html (the CI run's page), if known.
    pub report_url: Option<String>,
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
    /// Hosts with too little data to advise (held with `advise::TOO_LITTLE_DATA`): a
    /// count in the PR body, their names in report.html.
    pub quiet: Vec<String>,
    pub rejected: Vec<(String, String, u64)>,
    pub incomplete: Vec<(String, String, String)>,
    /// (source, what, values) changed on export.
    pub adjusted: Vec<(String, String, u64)>,
    /// (source, why, rows, first, last) of rows set aside after the night's end.
    pub set_aside: Vec<(String, String, u64, String, String)>,
    /// What the reader must see before trusting the rest: a window with (almost) no
    /// calls, rows set aside.
    pub warnings: Vec<String>,
    pub outputs: Vec<(String, String)>,
    pub sections: Vec<HostSection>,
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

/// A breaker setting as the report names it: `reset_timeout_s`, `roles.metadata.trial_calls`.
fn setting_name(role: Option<&str>, key: crate::config::edit::BreakerKey) -> String {
    match role {
        Some(r) => format!("roles.{r}.{}", key.name()),
        None => key.name().to_owned(),
    }
}

/// The first clause of a reason (its clauses are joined by "; "), for one-line cells.
fn first_clause(reason: &str) -> String {
    reason.split("; ").next().unwrap_or(reason).to_owned()
}

/// A readable label for an evidence key (the patch file keeps the keys).
fn evidence_label(key: &str) -> String {
    let known = match key {
        "replay_let_through" => "failed attempts let into incidents (replay)",
        "replay_false_trips" => "healthy calls blocked (replay)",
        "replay_opens" => "breaker opens (replay)",
        "replay_cost" => "replay cost: let through + blocked healthy",
        "replay_cost_if_honoured" => "replay cost if the crawler honoured it",
        "background_bursts" => "failure bursts outside incidents",
        "background_q95" => "q95 burst length outside incidents",
        "background_reaching" => "bursts outside incidents reaching fail_max",
        "false_opens_per_day" => "false opens a day expected from those bursts",
        "incident_bursts" => "failure bursts inside incidents",
        "incident_failures_burst_median" => "half the incident failures in bursts of at least",
        "incident_duration_median_s" => "median incident length (s)",
        "incidents" => "incidents",
        "opens" => "breaker opens recorded",
        "pingpong_flaps" => "reopened soon after closing",
        "retry_after_median_s" => "median Retry-After (s)",
        "retry_after_cap_s" => "Retry-After cap (s)",
        "half_open_trials" => "half-open trial calls",
        "half_open_trial_failures" => "half-open trials that failed",
        "failure_share_lo95" => "trial failure share, 95% lower bound",
        "success_share_lo95" => "trial success share, 95% lower bound",
        "calls" => "network calls",
        "e429" => "429 responses",
        "e429_lo95" => "429 share, 95% lower bound",
        "e429_hi95" => "429 share, 95% upper bound",
        "high_429_ratio" => "aimd.high_429_ratio",
        "window_hours" => "window (h)",
        other => return other.replace('_', " "),
    };
    known.to_owned()
}

/// A change's evidence as labelled rows: `X_current` / `X_proposed` pairs first (in key
/// order), then single values.
pub fn evidence_rows(e: &crate::advise::Evidence) -> Vec<EvidenceRow> {
    let mut pairs = Vec::new();
    let mut single = Vec::new();
    for (k, v) in e {
        if let Some(base) = k.strip_suffix("_current")
            && let Some(p) = e.get(&format!("{base}_proposed"))
        {
            pairs.push(EvidenceRow {
                label: evidence_label(base),
                current: v.to_string(),
                proposed: p.to_string(),
            });
        } else if k
            .strip_suffix("_proposed")
            .is_some_and(|b| e.contains_key(&format!("{b}_current")))
        {
            continue;
        } else {
            single.push(EvidenceRow {
                label: evidence_label(k),
                current: v.to_string(),
                proposed: String::new(),
            });
        }
    }
    // The replay's outcomes first, in the order the PR body's table names them.
    let rank = |label: &str| {
        [
            "replay_let_through",
            "replay_false_trips",
            "replay_opens",
            "replay_cost",
        ]
        .iter()
        .position(|k| evidence_label(k) == label)
        .unwrap_or(usize::MAX)
    };
    pairs.sort_by_key(|r| rank(&r.label));
    pairs.extend(single);
    pairs
}

/// The replay figures of a change: (let through, blocked healthy, opens), each
/// (current, proposed).
fn replayed(e: &crate::advise::Evidence) -> Option<[(i64, i64); 3]> {
    let pair = |k: &str| -> Option<(i64, i64)> {
        let v = |s: &str| e.get(&format!("{k}_{s}")).map(|n| n.as_f64() as i64);
        Some((v("current")?, v("proposed")?))
    };
    Some([
        pair("replay_let_through")?,
        pair("replay_false_trips")?,
        pair("replay_opens")?,
    ])
}

fn predicted_text(e: &crate::advise::Evidence) -> String {
    match replayed(e) {
        Some([l, b, o]) => format!(
            "let into incidents {} → {}, healthy blocked {} → {}, opens {} → {}",
            l.0, l.1, b.0, b.1, o.0, o.1
        ),
        None => String::new(),
    }
}

/// The report's warnings: a window with (almost) no calls (`quiet`), rows set aside.
fn warnings(input: &ReportInput<'_>, quiet: Option<&String>) -> Vec<String> {
    let mut out: Vec<String> = quiet.into_iter().cloned().collect();
    if !input.set_aside.is_empty() {
        let rows: u64 = input.set_aside.iter().map(|a| a.rows).sum();
        let ahead: Vec<&str> = input
            .set_aside
            .iter()
            .filter(|a| a.clock_ahead)
            .map(|a| a.source.as_str())
            .collect();
        let mut w = format!(
            "{rows} row(s) after the fleet's traffic set aside: they do not move the window (see \"Rows set aside\")"
        );
        if !ahead.is_empty() {
            let _ = write!(w, "; clock ahead of the fleet: {}", ahead.join(", "));
        }
        out.push(w);
    }
    out
}

/// The summary line: N changes on M hosts, and the replayed effect of the breaker
/// changes (each host's replay counted once).
fn summary_line(
    changes: &[ChangeRow],
    evidence: &BTreeMap<&str, &crate::advise::Evidence>,
) -> String {
    if changes.is_empty() {
        return "No change proposed.".into();
    }
    let hosts: BTreeSet<&str> = changes.iter().map(|c| c.host.as_str()).collect();
    let mut line = format!(
        "{} change{} on {} host{}",
        changes.len(),
        if changes.len() == 1 { "" } else { "s" },
        hosts.len(),
        if hosts.len() == 1 { "" } else { "s" }
    );
    let mut tot = [(0i64, 0i64); 3];
    let mut any = false;
    for e in evidence.values() {
        if let Some(f) = replayed(e) {
            any = true;
            for (t, x) in tot.iter_mut().zip(f) {
                t.0 += x.0;
                t.1 += x.1;
            }
        }
    }
    if any {
        let change = |(a, b): (i64, i64)| {
            if a > 0 {
                format!("{a} → {b} ({:+.0}%)", 100.0 * (b - a) as f64 / a as f64)
            } else {
                format!("{a} → {b}")
            }
        };
        let _ = write!(
            line,
            "; replayed on this window: failed attempts let into incidents {}, healthy calls blocked {}, breaker opens {}",
            change(tot[0]),
            change(tot[1]),
            change(tot[2])
        );
    }
    line
}

/// "high, 4 of 4 nights": the change's confidence and the nights it won.
fn confidence_text(c: &crate::advise::BreakerChange) -> String {
    let Some(conf) = c.confidence else {
        return "—".into();
    };
    let n = |k: &str| c.evidence.get(k).map(|v| v.as_f64() as u64);
    match (n("replay_nights_won"), n("replay_nights")) {
        (Some(won), Some(1)) => format!("{}, {won} of 1 night", conf.name()),
        (Some(won), Some(nights)) => format!("{}, {won} of {nights} nights", conf.name()),
        _ => conf.name().to_owned(),
    }
}

impl Report {
    pub fn build(input: &ReportInput<'_>) -> Report {
        let p = input.patch;
        let mut changes = Vec::new();
        let mut replay_of: BTreeMap<&str, &crate::advise::Evidence> = BTreeMap::new();
        for c in &p.breakers.changes {
            changes.push(ChangeRow {
                host: c.host.clone(),
                label: display_host(&c.host),
                anchor: anchor(&c.host),
                file: p.breakers.file.clone(),
                setting: setting_name(c.role.as_deref(), c.key),
                from: c.from.to_string(),
                to: c.to.to_string(),
                why: first_clause(&c.reason),
                reason: c.reason.clone(),
                predicted: predicted_text(&c.evidence),
                confidence: confidence_text(c),
                evidence: evidence_rows(&c.evidence),
            });
            replay_of.entry(c.host.as_str()).or_insert(&c.evidence);
        }
        if let Some(r) = &p.ratelimits {
            for c in &r.changes {
                changes.push(ChangeRow {
                    host: c.host.clone(),
                    label: display_host(&c.host),
                    anchor: anchor(&c.host),
                    file: r.file.clone(),
                    setting: format!("{}.rates", c.role),
                    from: if c.moves_multiplier() {
                        format!("{} (x{})", c.from.join(", "), c.multiplier_from)
                    } else {
                        c.from.join(", ")
                    },
                    to: if c.moves_multiplier() {
                        format!("{} (x{})", c.to.join(", "), c.multiplier_to)
                    } else {
                        c.to.join(", ")
                    },
                    why: first_clause(&c.reason),
                    reason: c.reason.clone(),
                    predicted: String::new(),
                    confidence: "—".into(),
                    evidence: evidence_rows(&c.evidence),
                });
            }
        }
        // A host's changes are one group of rows (its breaker and rate changes together),
        // hosts in the order of their first change.
        let mut first: BTreeMap<String, usize> = BTreeMap::new();
        for (i, c) in changes.iter().enumerate() {
            first.entry(c.host.clone()).or_insert(i);
        }
        changes.sort_by_key(|c| first[&c.host]);
        let incident_row = |i: &IncidentLine| IncidentRow {
            host: i.host.clone(),
            label: display_host(&i.host),
            anchor: anchor(&i.host),
            kind: i.kind.clone(),
            start: utc_minute(i.start_us),
            end: if i.ongoing {
                "ongoing".into()
            } else {
                utc_minute(i.end_us)
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
            .map(|c| {
                let (from, to) = c.values();
                CrawlerChangeRow {
                    host: c.host.clone(),
                    label: display_host(&c.host),
                    anchor: anchor(&c.host),
                    setting: setting_name(c.role.as_deref(), c.key),
                    from,
                    to,
                    reason: c.reason.clone(),
                    ignored_by: c.ignored_by.clone(),
                }
            })
            .collect();
        // Hosts held for too little data are a name in a list, not a row of their own,
        // and cost nothing in the fidelity table: no replay is judged on them.
        let (quiet_held, held): (Vec<&crate::advise::Held>, Vec<&crate::advise::Held>) =
            p.held.iter().partition(|h| h.is_too_little_data());
        let quiet: BTreeSet<&str> = quiet_held.iter().map(|h| h.host.as_str()).collect();
        let fidelity = input
            .fidelity
            .iter()
            .filter(|f| f.recorded_opens > 0 || f.replayed_opens > 0)
            .filter(|f| !quiet.contains(f.host.as_str()))
            .map(|f| FidelityRow {
                host: f.host.clone(),
                label: display_host(&f.host),
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
                label: display_host(&h.host),
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
        let quiet = input.traffic.warning();
        Report {
            summary: match &quiet {
                Some(w) => format!("{} Warning: {w}.", summary_line(&changes, &replay_of)),
                None => summary_line(&changes, &replay_of),
            },
            report_url: input.report_url.clone(),
            window_start: utc_minute(input.window.0),
            window_end: utc_minute(input.window.1),
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
            held: held
                .iter()
                .map(|h| (display_host(&h.host), anchor(&h.host), h.reason.clone()))
                .collect(),
            quiet: quiet_held.iter().map(|h| display_host(&h.host)).collect(),
            rejected: input.rejected.clone(),
            incomplete: input.incomplete.clone(),
            adjusted: input.adjusted.clone(),
            set_aside: input
                .set_aside
                .iter()
                .map(|a| {
                    (
                        a.source.clone(),
                        a.reason().to_owned(),
                        a.rows,
                        utc_minute(a.first_us),
                        utc_minute(a.last_us),
                    )
                })
                .collect(),
            warnings: warnings(input, quiet.as_ref()),
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
    let (cur_fail, cur_reset) = input.current.get(host).copied().unwrap_or_else(|| {
        let d = crate::config::Policy::default();
        (d.fail_max, d.reset_timeout_s)
    });
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
                utc_minute(i.start_us),
                utc_minute(i.end_us)
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
    // A server can send any Retry-After and a config can say any reset timeout: at most
    // RETRY_BINS bins, the last holding every longer value ("N+").
    let max_ra = ra.iter().copied().fold(cur_reset, f64::max).max(1.0);
    let width = [
        5.0, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0,
    ]
    .into_iter()
    .find(|w| max_ra / w < RETRY_BINS as f64)
    .unwrap_or(3600.0);
    let nbins = ((max_ra / width).floor().min(RETRY_BINS as f64 - 1.0) as usize) + 1;
    let mut counts = vec![0u64; nbins];
    for v in &ra {
        counts[((v.max(0.0) / width).floor().min(nbins as f64 - 1.0)) as usize] += 1;
    }
    let beyond = ra.iter().any(|v| *v >= nbins as f64 * width);
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
                .map(|i| {
                    let edge = i as f64 * width;
                    if i + 1 == nbins && beyond {
                        format!("{edge}+")
                    } else {
                        format!("{edge}")
                    }
                })
                .collect(),
            edge_labels: true,
        },
        &[("retry", "Retry-After headers", counts)],
        &markers,
    );
    HostSection {
        host: host.to_owned(),
        label: display_host(host),
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

/// The most bins of a Retry-After histogram.
const RETRY_BINS: usize = 31;

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
