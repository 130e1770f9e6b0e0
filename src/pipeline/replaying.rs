//! The replay stage's I/O: loads each host's network calls, recorded transitions and
//! incidents from a dataset and its metrics, fills the recorded breaker's gaps, and
//! runs `crate::replay` (the `replay` command, and the advisor's grid check).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use polars::prelude::*;
use serde::Serialize;

use super::{InputError, read_parquet, scan_table};
use crate::cli::ReplayArgs;
use crate::config::BreakerConfig;
use crate::replay::{Call, Figures, Incident, ReplayPolicy, Span, fill_gaps, merge_spans, replay};

/// What the recorded breaker did on a host (from its transitions).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Recorded {
    pub opens: u64,
    pub half_open_closed: u64,
    pub half_open_reopened: u64,
}

/// One host's traffic, ready to replay.
#[derive(Debug, Clone)]
pub struct HostTraffic {
    pub host: String,
    /// Recorded calls plus the synthetic calls of the recorded breaker's gaps.
    pub calls: Vec<Call>,
    pub incidents: Vec<Incident>,
    pub recorded: Recorded,
    /// The policy breakers.yaml gives the host (its busiest role).
    pub policy: ReplayPolicy,
}

/// The traffic of every host (or one) over a window.
pub struct Traffic {
    pub hours: f64,
    pub hosts: Vec<HostTraffic>,
}

impl Traffic {
    pub fn get(&self, host: &str) -> Option<&HostTraffic> {
        self.hosts.iter().find(|h| h.host == host)
    }
}

fn us_to_s(v: Option<i64>) -> f64 {
    v.unwrap_or_default() as f64 / 1e6
}

/// Loads the window's traffic from `dataset`, with the incidents and window of
/// `metrics` (written by `analyze` and `detect`).
pub fn load_traffic(
    dataset: &Path,
    metrics: &Path,
    config: &BreakerConfig,
    only_host: Option<&str>,
) -> anyhow::Result<Traffic> {
    let (w0, w1) = super::reporting::window_of(metrics)?;
    let (ws, we) = (w0 as f64 / 1e6, w1 as f64 / 1e6);
    let hours = (we - ws) / 3600.0;
    let ts_lit = |us: i64| lit(us).cast(DataType::Datetime(TimeUnit::Microseconds, None));
    let mut in_window = col("ts").gt_eq(ts_lit(w0)).and(col("ts").lt(ts_lit(w1)));
    if let Some(h) = only_host {
        in_window = in_window.and(col("host").eq(lit(h.to_owned())));
    }

    let net_events = crate::metrics::classify(
        scan_table(dataset, &crate::telemetry::schema::HTTP_EVENTS)?.filter(in_window.clone()),
        config,
    )
    .filter(col("is_net"));
    // Each host's busiest role (ties: the first by name), as the advisor uses.
    let role_counts = net_events
        .clone()
        .group_by([col("host"), col("role")])
        .agg([len().alias("n")])
        .sort_by_exprs(
            [col("host"), col("n"), col("role")],
            SortMultipleOptions::default().with_order_descending_multi([false, true, false]),
        )
        .collect();
    let role_counts = anyhow::Context::context(role_counts, "counting calls per role")?;
    let mut busiest: BTreeMap<String, String> = BTreeMap::new();
    {
        let h = role_counts.column("host")?.str()?;
        let r = role_counts.column("role")?.str()?;
        for i in 0..role_counts.height() {
            if let (Some(h), Some(r)) = (h.get(i), r.get(i)) {
                busiest.entry(h.to_owned()).or_insert_with(|| r.to_owned());
            }
        }
    }
    // Sources ranked by name: the tie-break of calls at the same instant.
    let sources = net_events
        .clone()
        .select([col("source").unique().sort(Default::default())])
        .collect();
    let sources = anyhow::Context::context(sources, "listing sources")?;
    let names: Vec<String> = sources
        .column("source")?
        .str()?
        .iter()
        .map(|s| s.unwrap_or_default().to_owned())
        .collect();
    let ranks: Vec<u32> = (0..names.len() as u32).collect();
    let events = net_events
        .select([
            col("host"),
            col("ts").cast(DataType::Int64).alias("t"),
            col("is_failure"),
            when(col("status").eq(lit(429)).or(col("status").eq(lit(503))))
                .then(col("retry_after_s").cast(DataType::Float64))
                .otherwise(lit(NULL).cast(DataType::Float64))
                .alias("ra"),
            col("elapsed_ms").cast(DataType::Float64).alias("elapsed"),
            col("source")
                .replace_strict(
                    lit(Series::new("s".into(), names)),
                    lit(Series::new("r".into(), ranks)),
                    None::<Expr>,
                    Some(DataType::UInt32),
                )
                .alias("src"),
            col("id").cast(DataType::Int64),
        ])
        // Sorted per host below, in Rust: a sort here would copy all the rows once more.
        .collect_with_engine(Engine::Streaming)
        .map(|r| r.unwrap_single());
    let events = anyhow::Context::context(events, "reading the window's calls")?;
    let transitions = scan_table(dataset, &crate::telemetry::schema::BREAKER_TRANSITIONS)?
        .filter(in_window)
        .filter(col("scope").eq(lit("host")).or(col("scope").is_null()))
        .select([
            col("host"),
            col("ts").cast(DataType::Int64).alias("t"),
            col("old_state"),
            col("new_state"),
            col("reset_timeout_s").cast(DataType::Float64),
            col("source"),
            col("id"),
        ])
        .sort(["host", "t", "source", "id"], Default::default())
        .collect();
    let transitions = anyhow::Context::context(transitions, "reading breaker transitions")?;
    let incidents_df = read_parquet(&metrics.join("incidents.parquet"))?;

    // Calls at the same instant keep their recorded order (source, then row id), so a
    // replay never depends on how the rows were read.
    let mut calls: BTreeMap<String, Vec<Call>> = BTreeMap::new();
    {
        let h = events.column("host")?.str()?;
        let t = events.column("t")?.i64()?;
        let f = events.column("is_failure")?.bool()?;
        let ra = events.column("ra")?.f64()?;
        let el = events.column("elapsed")?.f64()?;
        let src = events.column("src")?.u32()?;
        let id = events.column("id")?.i64()?;
        for i in 0..events.height() {
            calls
                .entry(h.get(i).unwrap_or_default().to_owned())
                .or_default()
                .push(Call {
                    t_s: us_to_s(t.get(i)),
                    failure: f.get(i).unwrap_or(false),
                    retry_after_s: ra.get(i),
                    elapsed_s: el.get(i).unwrap_or(0.0).max(0.0) / 1000.0,
                    synthetic: false,
                    seq: (u64::from(src.get(i).unwrap_or(0)) << 40)
                        | (id.get(i).unwrap_or(0) as u64 & ((1 << 40) - 1)),
                });
        }
    }
    drop(events);
    for v in calls.values_mut() {
        v.sort_unstable_by(|a, b| a.t_s.total_cmp(&b.t_s).then(a.seq.cmp(&b.seq)));
    }
    let mut recorded: BTreeMap<String, Recorded> = BTreeMap::new();
    let mut open_spans: BTreeMap<String, Vec<Span>> = BTreeMap::new();
    {
        let h = transitions.column("host")?.str()?;
        let t = transitions.column("t")?.i64()?;
        let old = transitions.column("old_state")?.str()?;
        let new = transitions.column("new_state")?.str()?;
        let reset = transitions.column("reset_timeout_s")?.f64()?;
        let src = transitions.column("source")?.str()?;
        for i in 0..transitions.height() {
            let host = h.get(i).unwrap_or_default().to_owned();
            let r = recorded.entry(host.clone()).or_default();
            let (o, n) = (
                old.get(i).unwrap_or_default(),
                new.get(i).unwrap_or_default(),
            );
            if n == "open" {
                r.opens += 1;
                // Calls were blocked until the reset timeout ran out (the logged one, else
                // the configured one), or until the next transition if that came first.
                let start = us_to_s(t.get(i));
                let reset_s = reset
                    .get(i)
                    .unwrap_or_else(|| config.policy(&host, None).reset_timeout_s);
                // The next transition of the same breaker: same host, same machine.
                let next = (i + 1..transitions.height())
                    .take_while(|&j| h.get(j) == h.get(i))
                    .find(|&j| src.get(j) == src.get(i))
                    .map_or(we, |j| us_to_s(t.get(j)));
                let end = next.min(start + reset_s);
                open_spans.entry(host.clone()).or_default().push(Span {
                    start_s: start,
                    end_s: end,
                });
            }
            if o == "half_open" && n == "closed" {
                r.half_open_closed += 1;
            }
            if o == "half_open" && n == "open" {
                r.half_open_reopened += 1;
            }
        }
    }
    let mut incidents: BTreeMap<String, Vec<Incident>> = BTreeMap::new();
    {
        let h = incidents_df.column("host")?.str()?;
        let start = incidents_df
            .column("start")?
            .as_materialized_series()
            .cast(&DataType::Int64)?;
        let end = incidents_df
            .column("end")?
            .as_materialized_series()
            .cast(&DataType::Int64)?;
        let (start, end) = (start.i64()?, end.i64()?);
        for i in 0..incidents_df.height() {
            incidents
                .entry(h.get(i).unwrap_or_default().to_owned())
                .or_default()
                .push(Incident {
                    start_s: us_to_s(start.get(i)),
                    end_s: us_to_s(end.get(i)),
                    rate: 0.0,
                });
        }
    }

    let mut hosts = Vec::new();
    for (host, recorded_calls) in calls {
        // Incidents of different kinds may overlap: health is their union, and each
        // merged span's failure rate is measured on the recorded calls inside it (all
        // breaker failures, not one kind's); the background rate on the calls outside.
        let spans = merge_spans(
            incidents
                .remove(&host)
                .unwrap_or_default()
                .into_iter()
                .map(|i| Span {
                    start_s: i.start_s,
                    end_s: i.end_s,
                })
                .collect(),
        );
        let mut inside = vec![(0u64, 0u64); spans.len()];
        let (mut out_k, mut out_n) = (0u64, 0u64);
        for c in &recorded_calls {
            match spans
                .iter()
                .position(|sp| sp.start_s <= c.t_s && c.t_s < sp.end_s)
            {
                Some(j) => {
                    inside[j].0 += u64::from(c.failure);
                    inside[j].1 += 1;
                }
                None => {
                    out_k += u64::from(c.failure);
                    out_n += 1;
                }
            }
        }
        let background = out_k as f64 / out_n.max(1) as f64;
        let incs: Vec<Incident> = spans
            .iter()
            .zip(&inside)
            .map(|(sp, (k, n))| Incident {
                start_s: sp.start_s,
                end_s: sp.end_s,
                rate: if *n > 0 {
                    *k as f64 / *n as f64
                } else {
                    background
                },
            })
            .collect();
        let role = busiest.get(&host).map(String::as_str);
        let policy = ReplayPolicy::from_config(&config.policy(&host, role), config.rolling);
        // The recorded breaker's gaps: its open spans, and the Retry-After cooldowns it
        // honoured (capped by the configured cap).
        let mut gaps = open_spans.remove(&host).unwrap_or_default();
        for c in &recorded_calls {
            if let (true, Some(ra)) = (c.failure, c.retry_after_s) {
                gaps.push(Span {
                    start_s: c.t_s,
                    end_s: (c.t_s + ra.min(policy.retry_after_cap_s)).min(we),
                });
            }
        }
        let gaps = merge_spans(gaps);
        let gap_s: f64 = gaps.iter().map(|g| g.end_s - g.start_s).sum();
        // The host's call rate while it was not blocked, measured over at least a tenth
        // of the window: a host blocked nearly all day would otherwise get an absurd
        // rate (its few probes over a few seconds) and millions of synthetic calls.
        let open_time = ((we - ws) - gap_s).max(0.1 * (we - ws)).max(1.0);
        let rate = recorded_calls.len() as f64 / open_time;
        let calls = fill_gaps(recorded_calls, &gaps, &incs, background, rate);
        hosts.push(HostTraffic {
            recorded: recorded.remove(&host).unwrap_or_default(),
            host,
            calls,
            incidents: incs,
            policy,
        });
    }
    Ok(Traffic { hours, hosts })
}

/// Replays one host under `policy`.
pub fn replay_host(t: &HostTraffic, policy: &ReplayPolicy, hours: f64) -> Figures {
    replay(&t.calls, policy, &t.incidents, hours)
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
fn prepare(args: &ReplayArgs) -> anyhow::Result<(PathBuf, PathBuf, Option<PathBuf>)> {
    let scratch =
        std::env::temp_dir().join(format!("breaker-advisor-replay-{}", std::process::id()));
    let analyze = |dataset: &Path, metrics: &Path| -> anyhow::Result<()> {
        let opts = crate::metrics::AnalyzeOptions {
            window_s: args.window,
            now_us: super::parse_now_us(args.now.as_deref())?,
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
    let host = args
        .host
        .as_deref()
        .map(crate::hostname::normalize_host)
        .transpose()
        .map_err(|e| InputError(format!("--host: {e}")))?;
    let (dataset, metrics, scratch) = prepare(args)?;
    let result = (|| -> anyhow::Result<()> {
        let traffic = load_traffic(&dataset, &metrics, &config, host.as_deref())
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
                figures: replay_host(t, &policy, traffic.hours),
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
            .map(|t| replay_host(t, policy, self.hours))
            .unwrap_or_default()
    }
}
