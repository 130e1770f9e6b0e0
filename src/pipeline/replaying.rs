//! The replay stage's I/O: opens the dataset and the metrics of a window and hands them
//! to `crate::replay::traffic` (the `replay` command, and the advisor's grid check).

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use polars::prelude::*;
use serde::Serialize;

use super::InputError;
use crate::cli::ReplayArgs;
use crate::config::BreakerConfig;
use crate::crawler::CrawlerModel;
use crate::output::read_parquet;
use crate::replay::traffic::{Recorded, Traffic, TrafficInput};
use crate::replay::{Figures, ReplayPolicy};
use crate::telemetry::parquet::scan_table;

/// Loads the window's traffic from `dataset`, with the incidents and window of
/// `metrics` (written by `analyze` and `detect`), as the crawler `model` counts it.
pub fn load_traffic(
    dataset: &Path,
    metrics: &Path,
    config: &BreakerConfig,
    model: &CrawlerModel,
    only_host: Option<&str>,
) -> anyhow::Result<Traffic> {
    let (w0, w1) = super::reporting::window_of(metrics)?;
    let ts_lit = |us: i64| lit(us).cast(DataType::Datetime(TimeUnit::Microseconds, None));
    let mut in_window = col("ts").gt_eq(ts_lit(w0)).and(col("ts").lt(ts_lit(w1)));
    if let Some(h) = only_host {
        in_window = in_window.and(col("host").eq(lit(h.to_owned())));
    }
    // Calls carry their process and every retried failure whatever the model, so the
    // replay (and calibration) can count them as the model says.
    let load_model = CrawlerModel {
        count_retries: true,
        breaker_scope: crate::crawler::Scope::Process,
        ..model.clone()
    };
    let events = crate::metrics::classify(
        scan_table(dataset, &crate::telemetry::schema::HTTP_EVENTS)?.filter(in_window.clone()),
        config,
        &load_model,
    );
    let transitions = scan_table(dataset, &crate::telemetry::schema::BREAKER_TRANSITIONS)?
        .filter(in_window.clone());
    let outcomes =
        scan_table(dataset, &crate::telemetry::schema::BREAKER_OUTCOMES)?.filter(in_window);
    let incidents = read_parquet(&metrics.join("incidents.parquet"))?;
    let built = crate::replay::traffic::build(TrafficInput {
        events,
        transitions,
        outcomes,
        incidents: &incidents,
        window_us: (w0, w1),
        config,
        model: &load_model,
    });
    let mut traffic =
        anyhow::Context::context(built, "reading the window's calls and transitions")?;
    traffic.model = crate::replay::ReplayModel::from(model);
    Ok(traffic)
}

#[derive(Serialize)]
struct Row<'a> {
    host: &'a str,
    policy: ReplayPolicy,
    #[serde(flatten)]
    figures: Figures,
    recorded: &'a Recorded,
}

/// Exports, analyzes and detects into a scratch folder when the replay is given raw
/// telemetry or a dataset without metrics; returns (dataset, metrics, scratch to remove).
fn prepare(
    args: &ReplayArgs,
    model: &CrawlerModel,
) -> anyhow::Result<(PathBuf, PathBuf, Option<PathBuf>)> {
    let scratch =
        std::env::temp_dir().join(format!("breaker-advisor-replay-{}", std::process::id()));
    let analyze = |dataset: &Path, metrics: &Path| -> anyhow::Result<()> {
        let opts = crate::metrics::AnalyzeOptions {
            window_s: args.window,
            now_us: crate::clock::parse_now_us(args.now.as_deref())?,
            crawler: model.clone(),
            ..crate::metrics::AnalyzeOptions::default()
        };
        super::analyze_into(dataset, metrics, Some(&args.config), &opts)?;
        super::detect_into(
            metrics,
            Some(dataset),
            &crate::detect::DetectOptions::default(),
        )?;
        Ok(())
    };
    match (&args.data, args.telemetry.is_empty()) {
        (Some(data), true) => {
            let metrics = args.metrics.clone().unwrap_or_else(|| data.join("metrics"));
            if metrics.join("incidents.parquet").is_file() && args.now.is_none() {
                return Ok((data.clone(), metrics, None));
            }
            let metrics = scratch.join("metrics");
            analyze(data, &metrics)?;
            Ok((data.clone(), metrics, Some(scratch)))
        }
        (None, false) => {
            let dataset = scratch.join("dataset");
            let summary = crate::telemetry::export(
                &args.telemetry,
                &crate::telemetry::ExportOptions {
                    progress: false,
                    ..crate::telemetry::ExportOptions::new(&dataset)
                },
            )?;
            if let Some(f) = summary.failed().next() {
                bail!(InputError(format!(
                    "{}: {}",
                    f.source,
                    f.error.clone().unwrap_or_default()
                )));
            }
            let metrics = scratch.join("metrics");
            analyze(&dataset, &metrics)?;
            Ok((dataset, metrics, Some(scratch)))
        }
        _ => bail!(InputError(
            "give either --telemetry FILE... or --data DIR".into()
        )),
    }
}

pub fn run_replay(args: &ReplayArgs) -> anyhow::Result<u8> {
    let config = BreakerConfig::load(&args.config)?;
    let model = crate::settings::load(args.settings.as_deref())?
        .crawler
        .model;
    let host = args
        .host
        .as_deref()
        .map(crate::hostname::normalize_host)
        .transpose()
        .map_err(|e| InputError(format!("--host: {e}")))?;
    let (dataset, metrics, scratch) = prepare(args, &model)?;
    let result = (|| -> anyhow::Result<()> {
        let traffic = load_traffic(&dataset, &metrics, &config, &model, host.as_deref())
            .context("loading the traffic to replay")?;
        if let Some(h) = &host
            && traffic.get(h).is_none()
        {
            bail!(InputError(format!(
                "--host {h}: no network calls in the window"
            )));
        }
        let mut rows = Vec::new();
        for t in &traffic.hosts {
            let policy = match &args.policy {
                Some(spec) => t
                    .policy
                    .with_overrides(spec)
                    .map_err(|e| InputError(format!("--policy: {e}")))?,
                None => t.policy,
            };
            rows.push(Row {
                host: &t.host,
                policy,
                figures: traffic.replay(t, &policy),
                recorded: &t.recorded,
            });
        }
        let mut out = std::io::stdout().lock();
        if args.json {
            serde_json::to_writer_pretty(&mut out, &rows)?;
            writeln!(out)?;
        } else {
            writeln!(
                out,
                "{:<28} {:>8} {:>6} {:>7} {:>6} {:>7} {:>6} {:>8} {:>9} {:>9} {:>6}",
                "host",
                "policy",
                "calls",
                "filled",
                "opens",
                "opens/h",
                "trials",
                "false",
                "let-thru",
                "onset>open",
                "flaps"
            )?;
            for r in &rows {
                let f = &r.figures;
                writeln!(
                    out,
                    "{:<28} {:>8} {:>6} {:>7} {:>6} {:>7.2} {:>6} {:>8} {:>9} {:>9} {:>6}",
                    r.host,
                    format!("{}/{}", r.policy.fail_max, r.policy.reset_timeout_s),
                    f.calls,
                    f.synthetic_calls,
                    f.opens,
                    f.opens_per_hour,
                    f.half_open_trials,
                    f.false_trips,
                    f.failures_let_through,
                    f.onset_to_open_s
                        .map_or_else(|| "-".into(), |s| format!("{s:.0}s")),
                    f.flaps
                )?;
            }
        }
        Ok(())
    })();
    if let Some(s) = scratch {
        let _ = std::fs::remove_dir_all(s);
    }
    result.map(|()| 0)
}

impl crate::advise::ReplayCheck for Traffic {
    fn current(&self, host: &str) -> Option<ReplayPolicy> {
        self.get(host).map(|t| t.policy)
    }

    fn figures(&self, host: &str, policy: &ReplayPolicy) -> Figures {
        self.get(host)
            .map(|t| self.replay(t, policy))
            .unwrap_or_default()
    }

    fn recorded_opens(&self, host: &str) -> Option<u64> {
        self.get(host).map(|t| t.recorded.opens)
    }
}
