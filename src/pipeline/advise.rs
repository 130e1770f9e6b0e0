//! `advise`: the metrics, the current config files and the previous patch in, the plan
//! and its patch file out; the replay check reads the dataset a host group at a time.

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::io::Write;
use std::path::Path;

use anyhow::Context;
use polars::prelude::DataFrame;

use crate::advise::{AdviseSettings, Current, Plan, advise, evidence};
use crate::cli::AdviseArgs;
use crate::clock::format_utc;
use crate::config::BreakerConfig;
use crate::config::rates::RateLimits;
use crate::error::{ExitStatus, InputError};
use crate::layout::{MetricsFolder, Table, meta, meta_key};
use crate::output::{read_parquet, write_atomic};
use crate::patch::{ConfigText, PatchFile, PatchWindow, sha256_hex};

use super::past_nights::{EarlierNights, Recorded, Recorder, replay_earlier_nights};

/// A run's advice with the texts it was made for.
pub struct Advice {
    pub evidence: Vec<crate::advise::HostEvidence>,
    pub config: BreakerConfig,
    /// The crawler model the advice was made under.
    pub model: crate::crawler::CrawlerModel,
    /// The replay of the recorded policy against the recorded breakers, per host (empty
    /// without a dataset).
    pub fidelity: Vec<crate::replay::traffic::Fidelity>,
    pub plan: Plan,
    pub patch: PatchFile,
    pub breakers_text: String,
    pub ratelimits_text: Option<String>,
}

/// The dataset for the advisor's replay check, read a host group of at most
/// `group_rows` rows of the window at a time.
pub struct ReplayData<'a> {
    pub dataset: &'a Path,
    pub group_rows: u64,
    /// How to read the nights before tonight, for the evidence of several nights
    /// (`advise.evidence_nights`); None: tonight alone.
    pub earlier: Option<EarlierNights<'a>>,
}

/// Stage 4: reads the metrics and incidents in `metrics`, the current config files and
/// the previous patch, and returns the plan and its patch file.
pub fn advise_from(
    metrics: &Path,
    replay: Option<ReplayData<'_>>,
    config: &Path,
    ratelimits: Option<&Path>,
    settings: &AdviseSettings,
    model: &crate::crawler::CrawlerModel,
    previous: Option<&PatchFile>,
) -> anyhow::Result<Advice> {
    settings.validate().map_err(InputError)?;
    let inputs = AdviceInputs::read(metrics, config, ratelimits, settings.min_calls)?;
    let baselines = previous.map(|p| p.baselines.clone()).unwrap_or_default();
    let current = Current {
        breakers: &inputs.config,
        model,
        ratelimits: inputs.ratelimits.as_ref(),
        baselines: &baselines,
        replay: None,
        previous: crate::advise::Previous {
            breakers: previous.map_or(&[][..], |p| &p.breakers.changes[..]),
            // Patched: written by its run, or the file changed since the patch was made
            // from it (applied by `apply`). Else a value at a change's `from` is a patch
            // never applied (a run without --write, then a rerun), not a revert.
            breakers_applied: previous.is_some_and(|p| {
                p.written || p.breakers.base_sha256 != sha256_hex(inputs.breakers_text.as_bytes())
            }),
            rates: previous
                .and_then(|p| p.ratelimits.as_ref())
                .map_or(&[][..], |r| &r.changes[..]),
            rates_applied: previous.is_some_and(|p| {
                p.written
                    || p.ratelimits
                        .as_ref()
                        .zip(inputs.ratelimits_text.as_deref())
                        .is_some_and(|(r, t)| r.base_sha256 != sha256_hex(t.as_bytes()))
            }),
            reverted: previous.map_or(&[][..], |p| &p.reverted[..]),
            tonight: inputs.window.end.get(..10).unwrap_or_default(),
        },
    };
    let evidence = &inputs.evidence;
    // With the dataset at hand, breaker proposals must win a replay of the window: a
    // group of hosts at a time, so one group's calls are in memory at once.
    let (plan, fidelity) = match replay {
        None => (advise(evidence, &current, settings), Vec::new()),
        Some(ReplayData {
            dataset,
            group_rows,
            earlier,
        }) => {
            let groups = super::replay::TrafficGroups::open(
                dataset,
                metrics,
                &inputs.config,
                model,
                group_rows,
            )
            .context("loading the traffic for the replay check")?;
            let mut plan = crate::advise::Plan::default();
            let mut fidelity = Vec::new();
            let mut recorded = Recorded::default();
            let mut rest = &evidence[..];
            for k in 0..groups.count() {
                let n = rest
                    .iter()
                    .take_while(|h| k + 1 == groups.count() || groups.group_of(&h.host) <= k)
                    .count();
                let (mine, later) = rest.split_at(n);
                rest = later;
                let traffic = groups
                    .load(k)
                    .context("loading the traffic for the replay check")?;
                fidelity.extend(traffic.fidelity());
                let recorder = Recorder::new(&traffic);
                let with_replay = Current {
                    replay: Some(&recorder),
                    ..current
                };
                plan.append(advise(mine, &with_replay, settings), mine);
                recorded.extend(recorder.into_recorded());
            }
            // The hosts replayed on a grid tonight are replayed on the nights before it
            // and advised again with every night's figures.
            if let Some(e) = &earlier {
                let (_, end_us) = MetricsFolder::new(metrics).window()?;
                let tonight = super::past_nights::Night {
                    dataset,
                    config: &inputs.config,
                    model,
                    end_us,
                };
                let nights =
                    replay_earlier_nights(&mut recorded, e, &tonight, settings.evidence_nights)
                        .context("replaying the nights before tonight")?;
                if nights > 0 {
                    let hosts: BTreeSet<String> = recorded.gridded_hosts().into_iter().collect();
                    let again: Vec<_> = evidence
                        .iter()
                        .filter(|h| hosts.contains(&h.host))
                        .cloned()
                        .collect();
                    let with_nights = Current {
                        replay: Some(&recorded),
                        ..current
                    };
                    let second = advise(&again, &with_nights, settings);
                    plan.replace_hosts(second, &hosts, evidence);
                }
            }
            (plan, fidelity)
        }
    };
    Ok(inputs.advice(plan, fidelity, model, config, ratelimits, previous))
}

/// The shards' plans of a night, merged, and the model the fleet's calibration chose.
pub struct MergedPlan<'a> {
    pub plan: Plan,
    pub calibrated: Option<&'a crate::crawler::CrawlerModel>,
}

/// The advice of a plan made elsewhere (the shards of a night, merged) for the metrics
/// in `metrics` and the current config files.
pub fn advice_of_plan(
    metrics: &Path,
    config: &Path,
    ratelimits: Option<&Path>,
    model: &crate::crawler::CrawlerModel,
    previous: Option<&PatchFile>,
    merged: MergedPlan<'_>,
    min_calls: i64,
) -> anyhow::Result<Advice> {
    let MergedPlan { plan, calibrated } = merged;
    let inputs = AdviceInputs::read(metrics, config, ratelimits, min_calls)?;
    let mut advice = inputs.advice(plan, Vec::new(), model, config, ratelimits, previous);
    advice.patch = advice.patch.with_calibrated_model(calibrated, previous);
    Ok(advice)
}

/// What the advisor reads besides the traffic: the metrics as evidence (and their
/// fingerprint), the window, and the current config files.
pub(super) struct AdviceInputs {
    evidence: Vec<crate::advise::HostEvidence>,
    fingerprint: Vec<u8>,
    window: PatchWindow,
    config: BreakerConfig,
    breakers_text: String,
    ratelimits: Option<RateLimits>,
    ratelimits_text: Option<String>,
}

impl AdviceInputs {
    /// `min_calls`: the rate windows of hosts with fewer network calls are not read (the
    /// advisor holds such a host before it looks at its rates; a fleet of many small
    /// hosts has about one window per call).
    fn read(
        metrics: &Path,
        config: &Path,
        ratelimits: Option<&Path>,
        min_calls: i64,
    ) -> anyhow::Result<AdviceInputs> {
        let metrics = MetricsFolder::new(metrics);
        let mut fingerprint = Vec::new();
        // Each table in turn: there, hashed into the fingerprint, read.
        let mut tables: BTreeMap<Table, DataFrame> = BTreeMap::new();
        for table in Table::ADVICE_INPUTS {
            let path = metrics.table(table);
            if !path.is_file() {
                bail_input!(
                    "{}: no {}; run `analyze` and `detect` first",
                    metrics.display(),
                    table.file_name()
                );
            }
            let bytes =
                std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
            fingerprint.extend_from_slice(table.name().as_bytes());
            fingerprint.extend_from_slice(sha256_hex(&bytes).as_bytes());
            drop(bytes);
            let df = match table {
                // Host summary comes first in ADVICE_INPUTS: the rate windows of the
                // hosts with too few calls are not read.
                Table::RateWindows => {
                    read_rate_windows(&path, &tables[&Table::HostSummary], min_calls)?
                }
                _ => read_parquet(&path)?,
            };
            tables.insert(table, df);
        }
        let mut take = |table: Table| tables.remove(&table).expect("read above");
        let (host_summary, rate_windows) = (take(Table::HostSummary), take(Table::RateWindows));
        let (host_role_summary, bursts, incidents) = (
            take(Table::HostRoleSummary),
            take(Table::Bursts),
            take(Table::Incidents),
        );
        let rate_windows_path = metrics.table(Table::RateWindows);
        let (w0, w1) = metrics.window()?;
        let window = PatchWindow {
            start: format_utc(w0 as f64 / 1e6),
            end: format_utc(w1 as f64 / 1e6),
        };
        let hours = (w1 - w0) as f64 / 3.6e9;
        let mut evidence = evidence::gather(
            &host_summary,
            &host_role_summary,
            &bursts,
            &incidents,
            hours,
        )
        .with_context(|| format!("reading the metrics in {}", metrics.display()))?;
        let bucket_s: f64 = crate::output::parquet_metadata(&rate_windows_path)?
            .into_iter()
            .find(|(k, _)| *k == meta_key(meta::BUCKET_S))
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(60.0);

        let breakers_text = crate::config::read_file(config)?;
        let cfg = BreakerConfig::parse(&breakers_text, config)?;
        let (ratelimits_text, rl) = match ratelimits {
            Some(p) => {
                let t = crate::config::read_file(p)?;
                let rl = RateLimits::parse(&t, p)?;
                (Some(t), Some(rl))
            }
            None => (None, None),
        };
        if let Some(rl) = &rl {
            evidence::attach_rate_windows(
                &mut evidence,
                &rate_windows,
                bucket_s,
                rl.limiter_column(),
            )
            .with_context(|| format!("reading {}", rate_windows_path.display()))?;
        }
        Ok(AdviceInputs {
            evidence,
            fingerprint,
            window,
            config: cfg,
            breakers_text,
            ratelimits: rl,
            ratelimits_text,
        })
    }

    /// The advice of `plan`, with its patch file.
    fn advice(
        self,
        plan: Plan,
        fidelity: Vec<crate::replay::traffic::Fidelity>,
        model: &crate::crawler::CrawlerModel,
        config: &Path,
        ratelimits: Option<&Path>,
        previous: Option<&PatchFile>,
    ) -> Advice {
        let patch = PatchFile::new(
            &plan,
            self.window,
            sha256_hex(&self.fingerprint),
            ConfigText {
                path: config,
                text: &self.breakers_text,
            },
            ratelimits
                .zip(self.ratelimits_text.as_deref())
                .map(|(path, text)| ConfigText { path, text }),
            previous,
        );
        Advice {
            evidence: self.evidence,
            config: self.config,
            model: model.clone(),
            fidelity,
            plan,
            patch,
            breakers_text: self.breakers_text,
            ratelimits_text: self.ratelimits_text,
        }
    }
}

/// The rate windows of the hosts in `host_summary` with at least `min_calls` network
/// calls, read with that filter pushed into the Parquet scan.
pub(super) fn read_rate_windows(
    path: &Path,
    host_summary: &polars::prelude::DataFrame,
    min_calls: i64,
) -> anyhow::Result<polars::prelude::DataFrame> {
    use polars::prelude::*;
    let busy = host_summary
        .clone()
        .lazy()
        .filter(col("calls_net").gt_eq(lit(min_calls)))
        .select([col("host")])
        .collect()?;
    let hosts: Vec<String> = busy
        .column("host")?
        .str()?
        .iter()
        .flatten()
        .map(str::to_owned)
        .collect();
    let windows = LazyFrame::scan_parquet(
        PlRefPath::new(path.display().to_string()),
        ScanArgsParquet::default(),
    )
    .and_then(|scan| scan.filter(crate::groups::among(&hosts)).collect());
    anyhow::Context::with_context(windows, || format!("reading {}", path.display()))
}

pub fn run_advise(args: &AdviseArgs) -> anyhow::Result<ExitStatus> {
    let settings = crate::settings::load(args.settings.as_deref())?;
    let previous_path = args
        .previous
        .clone()
        .or_else(|| args.patch_out.clone().filter(|p| p.is_file()));
    let previous = previous_path.as_deref().map(PatchFile::load).transpose()?;
    let dataset = match &args.data {
        Some(d) if !super::analyze::is_dataset(d) => {
            bail_input!("{}: not a dataset written by `export`", d.display())
        }
        Some(d) => Some(d.clone()),
        None => args
            .metrics
            .parent()
            .filter(|p| super::analyze::is_dataset(p))
            .map(Path::to_path_buf),
    };
    let mut advice = advise_from(
        &args.metrics,
        dataset.as_deref().map(|dataset| ReplayData {
            dataset,
            group_rows: args.scale.group_rows(),
            // `advise` weighs tonight alone; `run` the nights before it too.
            earlier: None,
        }),
        &args.config,
        args.ratelimits.as_deref(),
        &settings.advise,
        &settings.crawler.model,
        previous.as_ref(),
    )?;
    // `advise` does not calibrate: the fleet's last choice carries on.
    let carried = previous.as_ref().and_then(|p| p.calibrated_model.as_ref());
    advice.patch = advice
        .patch
        .with_calibrated_model(carried, previous.as_ref());
    if let Some(out) = &args.patch_out {
        write_atomic(out, advice.patch.to_yaml())?;
    }
    let mut stdout = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut stdout, &advice.patch)?;
        writeln!(stdout)?;
    } else {
        crate::report::plan_text::write_plan(&mut stdout, &advice.patch)?;
    }
    Ok(ExitStatus::Success)
}
