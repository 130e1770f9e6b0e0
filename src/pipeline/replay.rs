//! The replay stage's I/O: opens the dataset and the metrics of a window and hands them
//! to `crate::replay::traffic` (the `replay` command, and the advisor's grid check).

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use polars::prelude::*;
use serde::Serialize;

use crate::cli::ReplayArgs;
use crate::config::BreakerConfig;
use crate::crawler::CrawlerModel;
use crate::error::ExitStatus;
use crate::layout::{MetricsFolder, RunFolder, Table};
use crate::output::read_parquet;
use crate::replay::calibrate::{Calibration, Evaluated};
use crate::replay::traffic::{Recorded, Traffic, TrafficInput};
use crate::replay::{Figures, Kind, ReplayPolicy};
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
    let window = WindowScans::open(dataset, metrics)?;
    let mut scans = window.scans()?;
    if let Some(h) = only_host {
        let only = col("host").eq(lit(h.to_owned()));
        scans = scans.filter(only);
    }
    window.load(scans, config, model)
}

/// The window's rows of the three tables the replay reads.
struct Scans {
    events: LazyFrame,
    transitions: LazyFrame,
    outcomes: LazyFrame,
}

impl Scans {
    fn filter(self, e: Expr) -> Scans {
        Scans {
            events: self.events.filter(e.clone()),
            transitions: self.transitions.filter(e.clone()),
            outcomes: self.outcomes.filter(e),
        }
    }
}

/// A dataset's window (from the metrics) and its incidents.
struct WindowScans<'a> {
    dataset: &'a Path,
    window_us: (i64, i64),
    incidents: DataFrame,
}

impl WindowScans<'_> {
    fn open<'a>(dataset: &'a Path, metrics: &Path) -> anyhow::Result<WindowScans<'a>> {
        let metrics = MetricsFolder::new(metrics);
        Ok(WindowScans {
            dataset,
            window_us: metrics.window()?,
            incidents: read_parquet(&metrics.table(Table::Incidents))?,
        })
    }

    /// The tables' rows in the window.
    fn scans(&self) -> anyhow::Result<Scans> {
        Ok(self.tables()?.filter(self.in_window()))
    }

    /// The tables' rows in the window's date partitions.
    fn tables(&self) -> anyhow::Result<Scans> {
        use crate::telemetry::schema::{BREAKER_OUTCOMES, BREAKER_TRANSITIONS, HTTP_EVENTS};
        let (start_us, end_us) = self.window_us;
        let window = crate::metrics::Window { start_us, end_us };
        Ok(Scans {
            events: window.days(scan_table(self.dataset, &HTTP_EVENTS)?),
            transitions: window.days(scan_table(self.dataset, &BREAKER_TRANSITIONS)?),
            outcomes: window.days(scan_table(self.dataset, &BREAKER_OUTCOMES)?),
        })
    }

    fn in_window(&self) -> Expr {
        let (w0, w1) = self.window_us;
        let ts_lit = |us: i64| lit(us).cast(DataType::Datetime(TimeUnit::Microseconds, None));
        col("ts").gt_eq(ts_lit(w0)).and(col("ts").lt(ts_lit(w1)))
    }

    /// Builds the traffic of the hosts in `scans`.
    fn load(
        &self,
        scans: Scans,
        config: &BreakerConfig,
        model: &CrawlerModel,
    ) -> anyhow::Result<Traffic> {
        // The classification streams from the scan into the calls' columns (its
        // estimates read the few columns they need first). Calls carry their process, what
        // they are and every retried failure whatever the model, so the replay (and
        // calibration) can count them as a model says.
        let built = crate::replay::traffic::build(TrafficInput {
            events: crate::metrics::classify(scans.events, config, model),
            transitions: scans.transitions,
            outcomes: scans.outcomes,
            incidents: &self.incidents,
            window_us: self.window_us,
            config,
            model,
        });
        let traffic =
            anyhow::Context::context(built, "reading the window's calls and transitions")?;
        // The rows are gone; their pages go back before the next group.
        crate::groups::release_free_memory();
        Ok(traffic)
    }
}

/// The rows of hosts whose breakers.yaml entry the advisor can start from: a held
/// host's values (`fail_max: 1000000000`, an entry the crawler rejects) neither size its
/// replay nor weigh in the fleet's calibration.
fn usable_hosts(config: &BreakerConfig) -> Expr {
    if config.unusable.defaults.is_some() {
        return lit(false);
    }
    let held: Vec<String> = config.unusable.hosts.keys().cloned().collect();
    col("host")
        .is_in(lit(Series::new("held".into(), held)).implode(false), false)
        .not()
}

/// The window's traffic a group of hosts at a time (see [`crate::groups`]): each group's
/// calls are in memory only while it is replayed, read from the dataset by their hosts.
pub struct TrafficGroups<'a> {
    window: WindowScans<'a>,
    config: &'a BreakerConfig,
    model: &'a CrawlerModel,
    groups: Vec<Vec<String>>,
    /// Only these hosts' traffic (the earlier nights of the advice); None: every host.
    only: Option<Vec<String>>,
}

impl<'a> TrafficGroups<'a> {
    /// Plans the groups: at most `group_rows` rows of the window each.
    pub fn open(
        dataset: &'a Path,
        metrics: &Path,
        config: &'a BreakerConfig,
        model: &'a CrawlerModel,
        group_rows: u64,
    ) -> anyhow::Result<TrafficGroups<'a>> {
        Self::open_for(dataset, metrics, config, model, group_rows, None)
    }

    /// As `open`, for the traffic of `only` these hosts (None: every host).
    pub fn open_for(
        dataset: &'a Path,
        metrics: &Path,
        config: &'a BreakerConfig,
        model: &'a CrawlerModel,
        group_rows: u64,
        only: Option<Vec<String>>,
    ) -> anyhow::Result<TrafficGroups<'a>> {
        let window = WindowScans::open(dataset, metrics)?;
        let mut events = window.scans()?.events;
        if let Some(hosts) = &only {
            events = events.filter(crate::groups::among(hosts));
        }
        let groups = crate::groups::plan(&crate::groups::host_counts(events)?, group_rows);
        Ok(TrafficGroups {
            window,
            config,
            model,
            groups,
            only,
        })
    }

    /// The number of groups (at least one).
    pub fn count(&self) -> usize {
        self.groups.len().max(1)
    }

    /// The group a host belongs to (see [`crate::groups::group_of`]).
    pub fn group_of(&self, host: &str) -> usize {
        crate::groups::group_of(&self.groups, host)
    }

    /// The traffic of group `k`.
    pub fn load(&self, k: usize) -> anyhow::Result<Traffic> {
        let clock = std::time::Instant::now();
        let mut scans = self
            .window
            .scans()?
            .filter(crate::groups::in_group(&self.groups, k))
            .filter(usable_hosts(self.config));
        if let Some(hosts) = &self.only {
            scans = scans.filter(crate::groups::among(hosts));
        }
        let traffic = self.window.load(scans, self.config, self.model)?;
        tracing::debug!(
            group = k,
            hosts = traffic.hosts.len(),
            elapsed_s = clock.elapsed().as_secs_f64(),
            "traffic: group loaded"
        );
        Ok(traffic)
    }

    /// Calibration over every group (see [`crate::replay::calibrate`]): each group's
    /// descent from the settings' model, then the fits the fleet's descent needs that a
    /// group did not compute (groups whose calls point elsewhere), read again.
    pub fn calibrate(&self) -> anyhow::Result<Calibration> {
        let mut parts = Vec::with_capacity(self.count());
        for k in 0..self.count() {
            let traffic = self.load(k)?;
            parts.push(Evaluated::search(traffic.signs(), self.model, |m| {
                traffic.fit(m)
            }));
        }
        let mut calibration = Calibration::new(self.model, parts);
        // Each pass adds at least one fit; the descent asks for at most a few dozen.
        for _ in 0..64 {
            let missing = calibration.missing();
            if missing.is_empty() {
                break;
            }
            let mut groups: Vec<usize> = missing.iter().map(|(k, _)| *k).collect();
            groups.dedup();
            for k in groups {
                let traffic = self.load(k)?;
                for (_, m) in missing.iter().filter(|(g, _)| *g == k) {
                    calibration.parts[k].fit_or_compute(self.model, m, |m| traffic.fit(m));
                }
            }
        }
        Ok(calibration)
    }
}

#[derive(Serialize)]
struct Row {
    host: String,
    policy: ReplayPolicy,
    #[serde(flatten)]
    figures: Figures,
    recorded: Recorded,
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
            group_rows: args.scale.group_rows(),
            ..crate::metrics::AnalyzeOptions::default()
        };
        super::analyze::analyze_into(dataset, metrics, Some(&args.config), &opts)?;
        super::detect::detect_into(
            metrics,
            Some(dataset),
            &crate::detect::DetectOptions::default(),
        )?;
        Ok(())
    };
    match (&args.data, args.telemetry.is_empty()) {
        (Some(data), true) => {
            let metrics = args
                .metrics
                .clone()
                .unwrap_or_else(|| MetricsFolder::in_dataset(data).root().to_owned());
            if MetricsFolder::new(&metrics)
                .table(Table::Incidents)
                .is_file()
                && args.now.is_none()
            {
                return Ok((data.clone(), metrics, None));
            }
            let metrics = RunFolder::new(&scratch).metrics().root().to_owned();
            analyze(data, &metrics)?;
            Ok((data.clone(), metrics, Some(scratch)))
        }
        (None, false) => {
            let run = RunFolder::new(&scratch);
            let dataset = run.dataset();
            let summary = crate::telemetry::export(
                &args.telemetry,
                &crate::telemetry::ExportOptions {
                    progress: false,
                    ..crate::telemetry::ExportOptions::new(&dataset)
                },
            )?;
            if let Some(f) = summary.failed().next() {
                bail_input!("{}: {}", f.source, f.error.clone().unwrap_or_default());
            }
            let metrics = run.metrics().root().to_owned();
            analyze(&dataset, &metrics)?;
            Ok((dataset, metrics, Some(scratch)))
        }
        _ => bail_input!("give either --telemetry FILE... or --data DIR"),
    }
}

/// The model a replay counts by: the settings' fixed one; with `crawler: auto`, the one
/// `run` chose for these metrics (metrics/crawler_model.yaml), else the calibration's on
/// this dataset, as `run` would choose it.
fn replay_model(
    crawler: &crate::crawler::CrawlerSettings,
    dataset: &Path,
    metrics: &Path,
    config: &BreakerConfig,
    args: &ReplayArgs,
) -> anyhow::Result<CrawlerModel> {
    if !crawler.calibrate {
        return Ok(crawler.model.clone());
    }
    if let Some(m) = super::model_file::ModelFile::load(&MetricsFolder::new(metrics))? {
        return Ok(m.crawler);
    }
    let calibration = TrafficGroups::open(
        dataset,
        metrics,
        config,
        &crawler.model,
        args.scale.group_rows(),
    )
    .and_then(|g| g.calibrate())
    .context("loading the traffic to calibrate the crawler model")?;
    Ok(calibration.choose().model)
}

pub fn run_replay(args: &ReplayArgs) -> anyhow::Result<ExitStatus> {
    let config = BreakerConfig::load(&args.config)?;
    let crawler = crate::settings::load(args.settings.as_deref())?.crawler;
    let host = args
        .host
        .as_deref()
        .map(crate::hostname::normalize_host)
        .transpose()
        .map_err(|e| input_error!("--host: {e}"))?;
    let (dataset, metrics, scratch) = prepare(args, &crawler.model)?;
    let result = (|| -> anyhow::Result<()> {
        let model = replay_model(&crawler, &dataset, &metrics, &config, args)?;
        let mut rows = Vec::new();
        let mut add = |traffic: &Traffic| -> anyhow::Result<()> {
            for t in &traffic.hosts {
                let policy = match &args.policy {
                    Some(spec) => t
                        .policy
                        .with_overrides(spec)
                        .map_err(|e| input_error!("--policy: {e}"))?,
                    None => t.policy,
                };
                rows.push(Row {
                    host: t.host.clone(),
                    policy,
                    figures: traffic.replay(t, &policy),
                    recorded: t.recorded.clone(),
                });
            }
            Ok(())
        };
        if let Some(h) = &host {
            let traffic = load_traffic(&dataset, &metrics, &config, &model, Some(h))
                .context("loading the traffic to replay")?;
            if traffic.get(h).is_none() {
                bail_input!("--host {h}: no network calls in the window");
            }
            add(&traffic)?;
        } else {
            // A group of hosts at a time: one group's calls in memory at once.
            let groups =
                TrafficGroups::open(&dataset, &metrics, &config, &model, args.scale.group_rows())
                    .context("loading the traffic to replay")?;
            for k in 0..groups.count() {
                add(&groups.load(k).context("loading the traffic to replay")?)?;
            }
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
    result.map(|()| ExitStatus::Success)
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

    fn recorded_spells(&self, host: &str) -> Option<crate::replay::traffic::OpenSpells> {
        crate::replay::traffic::open_spells(&self.get(host)?.transitions)
    }

    fn raised_counted(
        &self,
        host: &str,
        policy: &ReplayPolicy,
    ) -> Option<crate::advise::RaisedCounted> {
        if self.model.exceptions_are_failures {
            return None;
        }
        let t = self.get(host)?;
        let recorded = t.calls.iter().filter(|c| !c.synthetic && !c.retry);
        let rows = recorded
            .clone()
            .filter(|c| c.kind == Kind::Exception)
            .count() as u64;
        // The retried attempts estimated to have raised before one that answered.
        let retried = recorded
            .filter(|c| c.kind == Kind::Response)
            .map(|c| u64::from(c.retried_raised.min(c.retried_failures)))
            .sum();
        if rows + retried == 0 {
            return None;
        }
        let counting = crate::replay::ReplayModel {
            exceptions_are_failures: true,
            ..self.model
        };
        Some(crate::advise::RaisedCounted {
            rows,
            retried,
            now: self.replay(t, policy),
            then: crate::replay::replay(&t.calls, policy, &counting, &t.incidents, self.hours),
        })
    }
}
