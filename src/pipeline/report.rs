//! The report stage's I/O: gathers the report's inputs from a run's folders and writes
//! report.md and report.html (rendering itself is `crate::report`).

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use polars::prelude::*;

use crate::advise::evidence;
use crate::breaker_state::BreakerState;
use crate::cli::ReportArgs;
use crate::config::BreakerConfig;
use crate::error::ExitStatus;
use crate::layout::{MetricsFolder, RunFolder, Table, meta, meta_key};
use crate::metrics::columns::{
    floats as col_f64, ints as col_i64, micros as col_us, strings as col_str,
};
use crate::output::read_parquet;
use crate::output::write_atomic;
use crate::patch::PatchFile;
use crate::report::{HostLine, IncidentLine, Report, ReportInput, html, markdown};
use crate::shards::DatasetFacts;
use crate::telemetry::parquet::scan_table;

/// Environment variable of GitHub Actions' job summary; the Markdown is appended to it.
pub const STEP_SUMMARY_ENV: &str = "GITHUB_STEP_SUMMARY";

/// What the report stage reads: a run's folders, its patch and the config it was made
/// against.
pub struct ReportJob<'a> {
    pub out: &'a RunFolder,
    pub dataset: &'a Path,
    pub metrics: &'a MetricsFolder,
    pub patch: &'a PatchFile,
    pub patch_path: &'a Path,
    pub config: &'a BreakerConfig,
    /// The model given; the one `run` chose (metrics/crawler_model.yaml) wins.
    pub model: &'a crate::crawler::CrawlerModel,
    /// Where readers find report.html (linked from the PR body).
    pub report_url: Option<&'a str>,
    /// What the report reads of the dataset, when the dataset is not at hand (a merge
    /// of shards): the shards gathered it.
    pub facts: Option<&'a DatasetFacts>,
}

impl ReportJob<'_> {
    /// Writes `report.md` and `report.html` into `out` (and appends the Markdown to the
    /// GitHub job summary when there is one); returns the report's warnings, for the
    /// command's own output.
    pub fn write(&self) -> anyhow::Result<Vec<String>> {
        let meta = self.metrics.meta()?;
        let window = self.metrics.window_in(&meta)?;
        let hours = (window.1 - window.0) as f64 / 3.6e9;
        let hs = read_parquet(&self.metrics.table(Table::HostSummary))?;
        let incidents_df = read_parquet(&self.metrics.table(Table::Incidents))?;
        let evidence = evidence::gather(
            &hs,
            &read_parquet(&self.metrics.table(Table::HostRoleSummary))?,
            &read_parquet(&self.metrics.table(Table::Bursts))?,
            &incidents_df,
            hours,
        )?;
        let hosts = host_lines(&hs)?;
        let incidents = incident_lines(&incidents_df)?;
        let featured = featured_hosts(self.patch, &incidents);
        let facts = match self.facts {
            Some(f) => f.clone(),
            None => DatasetFacts::read(self.dataset, window, &featured)?,
        };
        let report = Report::build(&ReportInput {
            patch: self.patch,
            model: self.model_lines()?,
            fidelity: super::fidelity_file::read(self.metrics)?,
            window,
            hosts,
            evidence: &evidence,
            incidents,
            series: rate_series(self.metrics, &featured)?,
            retry_after: facts.retry_after,
            opens: facts.opens,
            current: self.current_settings(&featured, &evidence),
            sources: facts.sources,
            rejected: facts.rejected,
            incomplete: facts.incomplete,
            adjusted: facts.adjusted,
            set_aside: set_aside_of(&meta),
            traffic: traffic_of(&hs, &meta, hours),
            outputs: self.outputs(),
            report_url: self.report_url.map(str::to_owned),
        });
        let md = markdown(&report);
        let page = html(&report).context("rendering report.html")?;
        write_atomic(&self.out.report_md(), &md)?;
        write_atomic(&self.out.report_html(), &page)?;
        append_step_summary(&md)?;
        Ok(report.warnings)
    }

    /// The crawler model the run counted by (written by `run`), else the one given, one
    /// (what, how) line per field.
    fn model_lines(&self) -> anyhow::Result<Vec<(String, String)>> {
        let (model, calibration, fields) = match super::model_file::ModelFile::load(self.metrics)? {
            Some(m) => (m.crawler, Some(m.calibration), m.fields),
            None => (self.model.clone(), None, Vec::new()),
        };
        let mut lines: Vec<(String, String)> = model
            .describe()
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
        if let Some(c) = calibration {
            lines.push(("chosen".to_owned(), c));
        }
        lines.extend(
            fields
                .iter()
                .map(|f| (format!("night: {}", f.field), f.describe())),
        );
        Ok(lines)
    }

    /// (fail_max, reset_timeout_s) per featured host as the patch found them: its `from`
    /// where it changes them (after `run --write` the config already holds the proposed
    /// values), else what the crawler runs under the config.
    fn current_settings(
        &self,
        featured: &BTreeSet<String>,
        evidence: &[crate::advise::HostEvidence],
    ) -> BTreeMap<String, (i64, f64)> {
        use crate::config::edit::BreakerKey;
        featured
            .iter()
            .map(|h| {
                let role = evidence
                    .iter()
                    .find(|e| &e.host == h)
                    .and_then(|e| e.dominant_role());
                let p = self.model.policy(self.config, h, role);
                let from = |key: BreakerKey| {
                    self.patch
                        .breakers
                        .changes
                        .iter()
                        .find(|c| &c.host == h && c.role.is_none() && c.key == key)
                        .map(|c| c.from.as_f64())
                };
                let fail_max = from(BreakerKey::FailMax).map_or(p.fail_max, |v| v as i64);
                let reset = from(BreakerKey::ResetTimeoutS).unwrap_or(p.reset_timeout_s);
                (h.clone(), (fail_max, reset))
            })
            .collect()
    }

    fn outputs(&self) -> Vec<(String, String)> {
        let shown = |p: &Path| p.display().to_string();
        vec![
            ("Parquet dataset".to_owned(), shown(self.dataset)),
            (
                "metrics and incidents (Parquet)".to_owned(),
                shown(self.metrics),
            ),
            ("patch file".to_owned(), shown(self.patch_path)),
            (
                "report with charts".to_owned(),
                shown(&self.out.report_html()),
            ),
        ]
    }
}

/// Appends the Markdown to GitHub Actions' job summary, when the job has one.
fn append_step_summary(md: &str) -> anyhow::Result<()> {
    if let Some(path) = std::env::var_os(STEP_SUMMARY_ENV).filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("appending to ${STEP_SUMMARY_ENV} {}", path.display()))?;
        f.write_all(md.as_bytes())?;
    }
    Ok(())
}

/// One line per host of host_summary.
fn host_lines(hs: &DataFrame) -> anyhow::Result<Vec<HostLine>> {
    let names = col_str(hs, "host")?;
    let [calls, fails, e429, e5xx, tmo, opens] =
        ["calls_net", "failures", "e429", "e5xx", "timeouts", "opens"]
            .map(|c| col_i64(hs, c).unwrap_or_default());
    let at = |v: &[Option<i64>], i: usize| v.get(i).copied().flatten().unwrap_or(0);
    Ok((0..names.len())
        .map(|i| HostLine {
            host: names[i].clone(),
            calls_net: at(&calls, i),
            failures: at(&fails, i),
            e429: at(&e429, i),
            e5xx: at(&e5xx, i),
            timeouts: at(&tmo, i),
            opens: at(&opens, i),
        })
        .collect())
}

/// One line per incident of incidents.parquet.
fn incident_lines(df: &DataFrame) -> anyhow::Result<Vec<IncidentLine>> {
    let ih = col_str(df, "host")?;
    let ik = col_str(df, "kind")?;
    let (is, ie) = (col_us(df, "start")?, col_us(df, "end")?);
    let ion: Vec<bool> = df
        .column("ongoing")?
        .bool()?
        .iter()
        .map(|b| b.unwrap_or(false))
        .collect();
    let [lb, ld, la] =
        ["level_before", "level_during", "level_after"].map(|c| col_f64(df, c).unwrap_or_default());
    Ok((0..ih.len())
        .map(|i| IncidentLine {
            host: ih[i].clone(),
            kind: ik[i].clone(),
            start_us: is[i],
            end_us: ie[i],
            ongoing: ion[i],
            level_before: lb.get(i).copied().flatten(),
            level_during: ld.get(i).copied().flatten(),
            level_after: la.get(i).copied().flatten(),
        })
        .collect())
}

/// The report's facts of the dataset for the hosts with a section under `patch` (a
/// change, or an incident in `metrics`): what a shard gathers for the merge.
pub fn dataset_facts(
    dataset: &Path,
    metrics: &MetricsFolder,
    patch: &PatchFile,
) -> anyhow::Result<DatasetFacts> {
    let incidents = incident_lines(&read_parquet(&metrics.table(Table::Incidents))?)?;
    DatasetFacts::read(
        dataset,
        metrics.window()?,
        &featured_hosts(patch, &incidents),
    )
}

impl DatasetFacts {
    fn read(
        dataset: &Path,
        window: (i64, i64),
        featured: &BTreeSet<String>,
    ) -> anyhow::Result<DatasetFacts> {
        let manifest = crate::telemetry::manifest::Manifest::load(dataset)?;
        let (rejected, incomplete) = input_losses(&manifest);
        Ok(DatasetFacts {
            sources: manifest.sources.len(),
            rejected,
            incomplete,
            adjusted: input_adjustments(&manifest),
            retry_after: retry_after_values(dataset, window, featured)?,
            opens: open_spans(dataset, window, featured)?,
        })
    }
}

/// Hosts with a section (and charts): a change or an incident.
fn featured_hosts(patch: &PatchFile, incidents: &[IncidentLine]) -> BTreeSet<String> {
    let mut featured: BTreeSet<String> = incidents.iter().map(|i| i.host.clone()).collect();
    featured.extend(patch.breakers.changes.iter().map(|c| c.host.clone()));
    if let Some(r) = &patch.ratelimits {
        featured.extend(r.changes.iter().map(|c| c.host.clone()));
    }
    featured
}

fn host_filter(featured: &BTreeSet<String>) -> Expr {
    let list: Vec<String> = featured.iter().cloned().collect();
    col("host").is_in(lit(Series::new("h".into(), list)).implode(false), false)
}

fn in_window(window: (i64, i64)) -> Expr {
    let ts_lit = |us: i64| lit(us).cast(DataType::Datetime(TimeUnit::Microseconds, None));
    col("ts")
        .gt_eq(ts_lit(window.0))
        .and(col("ts").lt(ts_lit(window.1)))
}

/// The EWMA rate series of the featured hosts: the EWMA where a bucket had calls, a gap
/// where it had none.
fn rate_series(
    metrics: &MetricsFolder,
    featured: &BTreeSet<String>,
) -> anyhow::Result<BTreeMap<String, crate::report::Series>> {
    let ts = read_parquet(&metrics.table(Table::HostTimeseries))?;
    let ts = ts.lazy().filter(host_filter(featured)).collect()?;
    let mut series: BTreeMap<String, crate::report::Series> = BTreeMap::new();
    let th = col_str(&ts, "host")?;
    let tb = col_us(&ts, "bucket_start")?;
    let [s429, s5xx, stmo] =
        ["e429_ewma", "e5xx_ewma", "timeouts_ewma"].map(|c| col_f64(&ts, c).unwrap_or_default());
    let [c429, c5xx, ctmo] =
        ["e429_ratio", "e5xx_ratio", "timeouts_ratio"].map(|c| col_f64(&ts, c).unwrap_or_default());
    for i in 0..th.len() {
        let s = series.entry(th[i].clone()).or_default();
        s.bucket_start_us.push(tb[i]);
        let pick = |ewma: &[Option<f64>], ratio: &[Option<f64>]| {
            ratio
                .get(i)
                .copied()
                .flatten()
                .and(ewma.get(i).copied().flatten())
        };
        s.e429.push(pick(&s429, &c429));
        s.e5xx.push(pick(&s5xx, &c5xx));
        s.timeouts.push(pick(&stmo, &ctmo));
    }
    Ok(series)
}

/// Retry-After values (s) of the featured hosts' network 429/503 responses.
fn retry_after_values(
    dataset: &Path,
    window: (i64, i64),
    featured: &BTreeSet<String>,
) -> anyhow::Result<BTreeMap<String, Vec<f64>>> {
    let ra = scan_table(dataset, &crate::telemetry::schema::HTTP_EVENTS)?
        .filter(in_window(window).and(host_filter(featured)))
        .filter(col("status").is_in(
            lit(Series::new("s".into(), [429i64, 503])).implode(false),
            false,
        ))
        .filter(col("from_cache").fill_null(lit(false)).not())
        .filter(col("retry_after_s").is_not_null())
        .select([col("host"), col("retry_after_s").cast(DataType::Float64)])
        .sort(["host", "retry_after_s"], Default::default())
        .collect();
    let ra = anyhow::Context::context(ra, "reading Retry-After values")?;
    let mut retry_after: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for (h, v) in col_str(&ra, "host")?
        .into_iter()
        .zip(col_f64(&ra, "retry_after_s")?)
    {
        retry_after.entry(h).or_default().extend(v);
    }
    Ok(retry_after)
}

/// Breaker open spans (µs) of the featured hosts, from the recorded transitions.
fn open_spans(
    dataset: &Path,
    window: (i64, i64),
    featured: &BTreeSet<String>,
) -> anyhow::Result<BTreeMap<String, Vec<(i64, i64)>>> {
    let tr = scan_table(dataset, &crate::telemetry::schema::BREAKER_TRANSITIONS)?
        .filter(in_window(window).and(host_filter(featured)))
        .filter(col("scope").eq(lit("host")).or(col("scope").is_null()))
        .select([
            col("host"),
            col("ts"),
            col("new_state"),
            col("source"),
            col("id"),
        ])
        .sort(["host", "ts", "source", "id"], Default::default())
        .collect();
    let tr = anyhow::Context::context(tr, "reading breaker transitions")?;
    let (trh, trt, trs) = (
        col_str(&tr, "host")?,
        col_us(&tr, "ts")?,
        col_str(&tr, "new_state")?,
    );
    let mut spans: BTreeMap<String, Vec<(i64, i64)>> = BTreeMap::new();
    for i in 0..trh.len() {
        if trs[i] == BreakerState::Open.as_str() {
            let end = if i + 1 < trh.len() && trh[i + 1] == trh[i] {
                trt[i + 1]
            } else {
                window.1
            };
            spans.entry(trh[i].clone()).or_default().push((trt[i], end));
        }
    }
    Ok(spans)
}

/// What the dataset lost on the way in, from the manifest: (source, reason, rows) of
/// rejected rows, and (source, table, dates) lost with missing part files.
#[allow(clippy::type_complexity)]
fn input_losses(
    manifest: &crate::telemetry::manifest::Manifest,
) -> (Vec<(String, String, u64)>, Vec<(String, String, String)>) {
    let mut rejected = Vec::new();
    let mut incomplete = Vec::new();
    for (source, st) in &manifest.sources {
        for (table, dates) in &st.incomplete {
            let dates: Vec<&str> = dates.iter().map(String::as_str).collect();
            incomplete.push((source.clone(), table.clone(), dates.join(", ")));
        }
        for (table, reasons) in &st.rejected {
            for (reason, n) in reasons {
                rejected.push((source.clone(), format!("{table}: {reason}"), *n));
            }
        }
    }
    (rejected, incomplete)
}

/// What the export changed in the values it kept, from the manifest: (source,
/// "table.column: what", values) of values set to NULL (unreadable, or meaningless)
/// or clamped into what their column can mean.
fn input_adjustments(
    manifest: &crate::telemetry::manifest::Manifest,
) -> Vec<(String, String, u64)> {
    let mut out = Vec::new();
    for (source, st) in &manifest.sources {
        for (table, columns) in &st.nulled {
            for (column, n) in columns {
                out.push((
                    source.clone(),
                    format!("{table}.{column}: unreadable, set to NULL"),
                    *n,
                ));
            }
        }
        for (table, reasons) in &st.adjusted {
            for (what, n) in reasons {
                out.push((source.clone(), format!("{table}.{what}"), *n));
            }
        }
    }
    out.sort();
    out
}

/// The rows set aside after the night's end (none when the window was given), from
/// the metrics' metadata.
fn set_aside_of(meta: &BTreeMap<String, String>) -> Vec<crate::metrics::night::SetAside> {
    let key = meta_key(meta::SET_ASIDE);
    crate::metrics::night::decode(meta.get(&key).map(String::as_str))
}

/// The traffic of the window beside the trailing baseline's, from host_summary:
/// (network calls in the window, network calls a window of the same length held on
/// average over the baseline, the baseline's covered hours).
fn traffic_of(
    hs: &DataFrame,
    meta: &BTreeMap<String, String>,
    window_hours: f64,
) -> crate::report::Traffic {
    let sum = |c: &str| -> i64 {
        col_i64(hs, c)
            .map(|v| v.into_iter().flatten().sum())
            .unwrap_or(0)
    };
    // From the metadata (metrics written before it was: the hosts' own column, which a
    // baseline without calls leaves empty).
    let key = meta_key(meta::BASELINE_HOURS);
    let covered_h = match meta.get(&key) {
        Some(v) => v.parse().unwrap_or(0.0),
        None => col_f64(hs, "baseline_hours")
            .map(|v| v.into_iter().flatten().fold(0.0, f64::max))
            .unwrap_or(0.0),
    };
    let baseline = sum("baseline_calls_net");
    crate::report::Traffic {
        calls_net: sum("calls_net"),
        expected_calls_net: (covered_h > 0.0).then(|| baseline as f64 / covered_h * window_hours),
        baseline_hours: covered_h,
    }
}

/// `breaker-advisor report`: the report of an earlier `run`'s output folder.
pub fn run_report(args: &ReportArgs) -> anyhow::Result<ExitStatus> {
    let out = RunFolder::new(&args.out);
    let patch_path = args
        .patch_file
        .clone()
        .unwrap_or_else(|| out.default_patch_file());
    let patch = PatchFile::load(&patch_path)?;
    let config = BreakerConfig::load(&args.config)?;
    let model = crate::settings::load(None)?.crawler.model;
    // A merge of shards has no dataset of its own: the shards gathered its facts.
    let dataset = out.dataset();
    let sharded =
        !super::analyze::is_dataset(&dataset) && crate::shards::Shards::present(&args.out);
    let (dataset, facts) = if sharded {
        let shards = crate::shards::Shards::read(&args.out)?;
        (out.shard_datasets(), Some(shards.facts()))
    } else {
        (dataset, None)
    };
    let warnings = ReportJob {
        out: &out,
        dataset: &dataset,
        metrics: &out.metrics(),
        patch: &patch,
        patch_path: &patch_path,
        config: &config,
        model: &model,
        report_url: args.report_url.as_deref(),
        facts: facts.as_ref(),
    }
    .write()?;
    let mut stdout = std::io::stdout().lock();
    for w in warnings {
        writeln!(stdout, "warning: {w}")?;
    }
    writeln!(
        stdout,
        "wrote {} and {}",
        out.report_md().display(),
        out.report_html().display()
    )?;
    Ok(ExitStatus::Success)
}
