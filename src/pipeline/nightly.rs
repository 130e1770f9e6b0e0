//! The advice end of the pipeline: `advise`, `apply` and the nightly `run` job.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use super::layout::{FIDELITY_FILE, write_model};
use super::past_nights::{EarlierNights, Recorded, Recorder, replay_earlier_nights};
use super::{InputError, analyze_into, detect_into};
use crate::advise::{AdviseSettings, Current, Plan, advise, evidence};
use crate::cli::{AdviseArgs, ApplyArgs, RunArgs};
use crate::clock::format_utc;
use crate::config::BreakerConfig;
use crate::config::rates::RateLimits;
use crate::output::{read_parquet, write_all_atomic, write_atomic};
use crate::patch::{
    Applied, ConfigText, PatchFile, PatchWindow, apply_breakers, apply_ratelimits, sha256_hex,
    unified_diff,
};

/// Exit code of `run --check` when changes are proposed.
pub const EXIT_CHANGES_PROPOSED: u8 = 3;

/// The sample inputs `run` uses when given no telemetry: every
/// `data-samples/telemetry*.sqlite` (one file per crawler machine).
pub const SAMPLE_DIR: &str = "data-samples";
pub const SAMPLE_CONFIG: &str = "data-samples/breakers.yaml";
pub const SAMPLE_RATELIMITS: &str = "data-samples/ratelimits.yaml";

/// The metrics tables the advisor reads, in fingerprint order.
const ADVICE_INPUTS: [&str; 5] = [
    "host_summary",
    "host_role_summary",
    "bursts",
    "incidents",
    "rate_windows",
];

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
            let groups = super::replaying::TrafficGroups::open(
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
                let (_, end_us) = super::layout::window_of(metrics)?;
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
struct AdviceInputs {
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
        let mut tables = Vec::new();
        let mut fingerprint = Vec::new();
        for name in ADVICE_INPUTS {
            let path = metrics.join(format!("{name}.parquet"));
            if !path.is_file() {
                bail!(InputError(format!(
                    "{}: no {name}.parquet; run `analyze` and `detect` first",
                    metrics.display()
                )));
            }
            let bytes =
                std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
            fingerprint.extend_from_slice(name.as_bytes());
            fingerprint.extend_from_slice(sha256_hex(&bytes).as_bytes());
            drop(bytes);
            if name == "rate_windows" {
                tables.push(read_rate_windows(&path, &tables[0], min_calls)?);
            } else {
                tables.push(read_parquet(&path)?);
            }
        }
        let (w0, w1) = super::layout::window_of(metrics)?;
        let window = PatchWindow {
            start: format_utc(w0 as f64 / 1e6),
            end: format_utc(w1 as f64 / 1e6),
        };
        let hours = (w1 - w0) as f64 / 3.6e9;
        let mut evidence = evidence::gather(&tables[0], &tables[1], &tables[2], &tables[3], hours)
            .with_context(|| format!("reading the metrics in {}", metrics.display()))?;
        let bucket_s: f64 = crate::output::parquet_metadata(&metrics.join("rate_windows.parquet"))?
            .into_iter()
            .find(|(k, _)| k == "breaker_advisor.bucket_s")
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
            evidence::attach_rate_windows(&mut evidence, &tables[4], bucket_s, rl.limiter_column())
                .with_context(|| {
                    format!("reading {}", metrics.join("rate_windows.parquet").display())
                })?;
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
fn read_rate_windows(
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

/// How the model was chosen when the settings fix it.
const FIXED_MODEL: &str = "fixed by the settings file (crawler:)";

/// How a shard job chose its model under `crawler: auto`.
const SHARD_MODEL: &str = "a shard counts by the model the fleet's calibration chose the night before (the previous patch file's; the documented one on the first night); the merge calibrates the fleet";

/// How `crawler: auto` chose: the settings' model (`kept`) or another one, with the fits.
fn calibration_text(kept: bool, choice: &crate::replay::calibrate::Choice) -> String {
    let (f, b) = (choice.fit, choice.base_fit);
    if kept {
        format!(
            "the documented model explains the recorded opens best (it misses {} opens and needs {} failures no row shows)",
            b.open_miss, b.inferred
        )
    } else {
        let moved: Vec<&str> = choice.path.iter().map(|f| f.key()).collect();
        format!(
            "calibrated ({} moved): this model misses the recorded opens by {} in total and needs {} failures no row shows; the documented one misses {} and needs {}",
            moved.join(", "),
            f.open_miss,
            f.inferred,
            b.open_miss,
            b.inferred
        )
    }
}

/// Writes the replay's fidelity per host beside the metrics, for the report and for
/// analysts.
fn write_fidelity(
    metrics: &Path,
    fidelity: &[crate::replay::traffic::Fidelity],
) -> anyhow::Result<()> {
    use polars::prelude::*;
    let u = |f: fn(&crate::replay::traffic::Fidelity) -> u64| {
        fidelity.iter().map(f).collect::<Vec<u64>>()
    };
    let df = df!(
        "host" => fidelity.iter().map(|f| f.host.clone()).collect::<Vec<_>>(),
        "instances" => fidelity.iter().map(|f| f.instances as u64).collect::<Vec<_>>(),
        "logged_instances" => fidelity.iter().map(|f| f.logged_instances as u64).collect::<Vec<_>>(),
        "recorded_opens" => u(|f| f.recorded_opens),
        "replayed_opens" => u(|f| f.replayed_opens),
        "recorded_half_open_closed" => u(|f| f.recorded_half_open_closed),
        "replayed_half_open_closed" => u(|f| f.replayed_half_open_closed),
        "recorded_half_open_reopened" => u(|f| f.recorded_half_open_reopened),
        "replayed_half_open_reopened" => u(|f| f.replayed_half_open_reopened),
        "worst_instance_miss" => u(|f| f.worst_instance_miss),
        "inferred_failures" => u(|f| f.inferred_failures),
        "miss_share" => fidelity.iter().map(|f| f.miss_share()).collect::<Vec<_>>(),
    )?;
    let meta = crate::output::parquet_metadata(&metrics.join("host_summary.parquet"))?;
    crate::output::write_parquet_atomic(&df, &metrics.join(FIDELITY_FILE), meta)
}

/// The plan for humans: one line per change, then the hosts left alone.
pub fn write_plan(w: &mut dyn Write, patch: &PatchFile) -> std::io::Result<()> {
    let b = &patch.breakers;
    writeln!(
        w,
        "{} (patch v{}, window {} .. {}): {} change(s)",
        b.file,
        patch.patch_version,
        patch.window.start,
        patch.window.end,
        b.changes.len()
    )?;
    for c in &b.changes {
        let at = match &c.role {
            Some(r) => format!("{} [{r}]", c.host),
            None => c.host.clone(),
        };
        writeln!(
            w,
            "  {at:<32} {:<18} {:>6} -> {:<6} {}",
            c.key.name(),
            c.from.to_string(),
            c.to,
            c.reason
        )?;
    }
    if let Some(r) = &patch.ratelimits {
        writeln!(w, "{}: {} change(s)", r.file, r.changes.len())?;
        for c in &r.changes {
            let multiplier = if c.moves_multiplier() {
                format!(" (x{} -> x{})", c.multiplier_from, c.multiplier_to)
            } else {
                String::new()
            };
            writeln!(
                w,
                "  {:<32} {:<18} {} -> {}{multiplier} {}",
                c.host,
                format!("{} rates", c.role),
                c.from.join(", "),
                c.to.join(", "),
                c.reason
            )?;
        }
    }
    if !patch.needs_crawler_change.is_empty() {
        writeln!(
            w,
            "needs a crawler change (not written): {} proposal(s)",
            patch.needs_crawler_change.len()
        )?;
        for c in &patch.needs_crawler_change {
            let (from, to) = c.values();
            writeln!(
                w,
                "  {:<32} {:<18} {:>6} -> {:<6} {} [{}]",
                c.host,
                c.key.name(),
                from,
                to,
                c.reason,
                c.ignored_by
            )?;
        }
    }
    // Hosts with too little data are counted, not listed (the patch file has them).
    let (quiet, held): (Vec<_>, Vec<_>) = patch.held.iter().partition(|h| h.is_too_little_data());
    if !held.is_empty() {
        writeln!(w, "left alone: {} host(s)", held.len())?;
        for h in &held {
            writeln!(w, "  {:<32} {}", h.host, h.reason)?;
        }
    }
    if !quiet.is_empty() {
        writeln!(
            w,
            "too little data to advise: {} host(s) (advise.min_calls; listed in the patch file and report.html)",
            quiet.len()
        )?;
    }
    Ok(())
}

pub fn run_advise(args: &AdviseArgs) -> anyhow::Result<u8> {
    let settings = crate::settings::load(args.settings.as_deref())?;
    let previous_path = args
        .previous
        .clone()
        .or_else(|| args.patch_out.clone().filter(|p| p.is_file()));
    let previous = previous_path.as_deref().map(PatchFile::load).transpose()?;
    let dataset = match &args.data {
        Some(d) if !super::is_dataset(d) => bail!(InputError(format!(
            "{}: not a dataset written by `export`",
            d.display()
        ))),
        Some(d) => Some(d.clone()),
        None => args
            .metrics
            .parent()
            .filter(|p| super::is_dataset(p))
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
        write_plan(&mut stdout, &advice.patch)?;
    }
    Ok(0)
}

/// The new texts of both config files under a patch, computed before anything is
/// written so a refused section leaves both files untouched.
struct Edits {
    breakers: Applied,
    ratelimits: Applied,
}

fn compute_edits(
    patch: &PatchFile,
    patch_path: &Path,
    config: &Path,
    breakers_text: &str,
    ratelimits: Option<(&Path, &str)>,
) -> anyhow::Result<Edits> {
    let breakers = apply_breakers(&patch.breakers, config, breakers_text)?;
    let ratelimits = match (&patch.ratelimits, ratelimits) {
        (Some(section), Some((path, text))) => apply_ratelimits(section, path, text)?,
        (Some(section), None) if !section.changes.is_empty() => bail!(InputError(format!(
            "{}: the patch changes {} ({} changes); pass it with --ratelimits",
            patch_path.display(),
            section.file,
            section.changes.len()
        ))),
        _ => Applied::Nothing,
    };
    Ok(Edits {
        breakers,
        ratelimits,
    })
}

fn describe(a: &Applied) -> &'static str {
    match a {
        Applied::Changed(_) => "patched",
        Applied::AlreadyApplied => "already up to date",
        Applied::Nothing => "no changes",
    }
}

pub fn run_apply(args: &ApplyArgs) -> anyhow::Result<u8> {
    let patch = PatchFile::load(&args.patch)?;
    let breakers_text = crate::config::read_file(&args.config)?;
    let rl_text = args
        .ratelimits
        .as_deref()
        .map(crate::config::read_file)
        .transpose()?;
    let edits = compute_edits(
        &patch,
        &args.patch,
        &args.config,
        &breakers_text,
        args.ratelimits.as_deref().zip(rl_text.as_deref()),
    )?;
    let mut stdout = std::io::stdout().lock();
    let mut writes: Vec<(&Path, &[u8])> = Vec::new();
    for (applied, path, before) in [
        (
            &edits.breakers,
            Some(args.config.as_path()),
            Some(breakers_text.as_str()),
        ),
        (
            &edits.ratelimits,
            args.ratelimits.as_deref(),
            rl_text.as_deref(),
        ),
    ] {
        let (Some(path), Some(before)) = (path, before) else {
            continue;
        };
        if let Applied::Changed(after) = applied {
            if args.dry_run {
                write!(
                    stdout,
                    "{}",
                    unified_diff(&path.display().to_string(), before, after)
                )?;
                continue;
            }
            writes.push((path, after.as_bytes()));
        }
    }
    // Both files or neither.
    write_all_atomic(&writes)?;
    if !args.dry_run {
        for (applied, path) in [
            (&edits.breakers, Some(args.config.as_path())),
            (&edits.ratelimits, args.ratelimits.as_deref()),
        ] {
            if let Some(path) = path {
                writeln!(stdout, "{}: {}", path.display(), describe(applied))?;
            }
        }
    }
    Ok(0)
}

/// The sample's machine files, sorted.
fn sample_telemetry() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(SAMPLE_DIR)
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with("telemetry") && n.ends_with(".sqlite"))
                })
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

/// The inputs of a run: the samples when no telemetry is given.
fn run_inputs(args: &RunArgs) -> anyhow::Result<(Vec<PathBuf>, PathBuf, Option<PathBuf>)> {
    // A merge reads the shards' outputs, not telemetry; given a config, it runs on
    // that config and the rate limits given with it, as the shards did.
    if let (true, Some(cfg)) = (args.merge_shards, &args.config) {
        return Ok((Vec::new(), cfg.clone(), args.ratelimits.clone()));
    }
    if args.telemetry.is_empty() {
        let sample = if args.merge_shards {
            Vec::new()
        } else {
            sample_telemetry()
        };
        if sample.is_empty() && !args.merge_shards {
            bail!(InputError(format!(
                "no --telemetry given and no {SAMPLE_DIR}/telemetry*.sqlite here: run from the repository root or pass --telemetry and --config"
            )));
        }
        let rl = args
            .ratelimits
            .clone()
            .or_else(|| Some(PathBuf::from(SAMPLE_RATELIMITS)));
        let cfg = args
            .config
            .clone()
            .unwrap_or_else(|| PathBuf::from(SAMPLE_CONFIG));
        return Ok((sample, cfg, rl));
    }
    let Some(cfg) = args.config.clone() else {
        bail!(InputError(
            "--config is required with --telemetry: the advice is a change of that breakers.yaml"
                .into()
        ));
    };
    Ok((args.telemetry.clone(), cfg, args.ratelimits.clone()))
}

/// One nightly `run`: its inputs, settings and output paths, and the stages in order.
struct Night<'a> {
    args: &'a RunArgs,
    telemetry: Vec<PathBuf>,
    config: PathBuf,
    ratelimits: Option<PathBuf>,
    settings: crate::settings::Settings,
    /// The run's folder: OUT, or OUT/shard=I for a shard job.
    out: PathBuf,
    shard: Option<crate::shards::Shard>,
    dataset: PathBuf,
    metrics: PathBuf,
    patch_path: PathBuf,
}

/// What a run proposes: the advice and the edited texts of the config files.
struct Proposal {
    advice: Advice,
    edits: Edits,
}

pub fn run_job(args: &RunArgs) -> anyhow::Result<u8> {
    let night = Night::new(args)?;
    let mut stdout = std::io::stdout().lock();
    if args.merge_shards {
        return night.merge_shards(&mut stdout);
    }
    if night.shard.is_some() {
        // What a failed shard job leaves must not pass for tonight's shard.
        let record = night.out.join(crate::shards::RECORD_FILE);
        if record.is_file() {
            std::fs::remove_file(&record)
                .with_context(|| format!("removing the last night's {}", record.display()))?;
        }
    }
    night.export(&mut stdout)?;
    night.analyze(&night.settings.crawler.model, &mut stdout)?;
    let (model, calibration) = night.choose_model(&mut stdout)?;
    // The model the calibration chose, for the shards that start from this patch (a shard's own patch
    // is not written).
    let calibrated = (calibration.is_some() && night.shard.is_none()).then_some(&model);
    let advice = night.advise(&model, calibrated)?;
    if let Some(shard) = night.shard {
        return night.record_shard(shard, advice, calibration, &mut stdout);
    }
    let proposal = night.present(advice, &mut stdout)?;
    night.finish(&proposal, &model, None, &mut stdout)
}

impl<'a> Night<'a> {
    fn new(args: &'a RunArgs) -> anyhow::Result<Night<'a>> {
        let (telemetry, config, ratelimits) = run_inputs(args)?;
        let settings = crate::settings::load(args.settings.as_deref())?;
        settings.advise.validate().map_err(InputError)?;
        let out = match args.shard {
            Some(s) => s.folder(&args.out),
            None => args.out.clone(),
        };
        Ok(Night {
            args,
            telemetry,
            config,
            ratelimits,
            settings,
            dataset: out.join("dataset"),
            metrics: out.join("metrics"),
            out,
            shard: args.shard,
            patch_path: args
                .patch_file
                .clone()
                .unwrap_or_else(|| args.out.join("breakers.patch.yaml")),
        })
    }

    /// Stage 1, export: every telemetry file, or no advice from a partial fleet.
    fn export(&self, stdout: &mut dyn Write) -> anyhow::Result<()> {
        let export = crate::telemetry::export(
            &self.telemetry,
            &crate::telemetry::ExportOptions {
                progress: false,
                shard: self.shard,
                ..crate::telemetry::ExportOptions::new(&self.dataset)
            },
        )?;
        let failed: Vec<_> = export.failed().map(|s| s.source.as_str()).collect();
        if !failed.is_empty() {
            super::write_export_summary(stdout, &export)?;
            bail!(InputError(format!(
                "{} of {} telemetry files could not be exported ({}); no advice from a partial fleet",
                failed.len(),
                export.sources.len(),
                failed.join(", ")
            )));
        }
        let others = match self.shard {
            Some(s) => format!(
                ", {} left to the other shards of {}",
                export.rows_other_shards, s.count
            ),
            None => String::new(),
        };
        writeln!(
            stdout,
            "export: {} new rows ({} rejected{others}) into {}",
            export.rows_exported,
            export.rows_rejected,
            self.dataset.display()
        )?;
        for s in export
            .sources
            .iter()
            .filter(|s| !s.missing_parts.is_empty())
        {
            writeln!(
                stdout,
                "export: {}: {} missing part files ({})",
                s.source,
                s.missing_parts.len(),
                s.outcome
            )?;
        }
        Ok(())
    }

    fn analyze_options(
        &self,
        model: &crate::crawler::CrawlerModel,
    ) -> anyhow::Result<crate::metrics::AnalyzeOptions> {
        Ok(crate::metrics::AnalyzeOptions {
            window_s: self.args.window,
            now_us: crate::clock::parse_now_us(self.args.now.as_deref())?,
            baseline_s: Some(7 * 86_400),
            crawler: model.clone(),
            group_rows: self.args.scale.group_rows(),
            // Too little data to act on: no time series, no change-point search.
            min_series_calls: self.settings.advise.min_calls,
            ..crate::metrics::AnalyzeOptions::default()
        })
    }

    /// Stages 2 and 3, analyze and detect, counting as `model` says the crawler counts.
    fn analyze(
        &self,
        model: &crate::crawler::CrawlerModel,
        stdout: &mut dyn Write,
    ) -> anyhow::Result<super::Analyzed> {
        let analyzed = analyze_into(
            &self.dataset,
            &self.metrics,
            Some(&self.config),
            &self.analyze_options(model)?,
        )?;
        writeln!(
            stdout,
            "analyze: window {}, {} hosts, {} failure bursts",
            analyzed.window.utc(),
            analyzed.hosts,
            analyzed.bursts
        )?;
        for a in &analyzed.set_aside {
            writeln!(stdout, "analyze: {a}")?;
        }
        let detected = detect_into(
            &self.metrics,
            Some(&self.dataset),
            &crate::detect::DetectOptions {
                min_calls: self.settings.advise.min_calls,
                ..super::detect_options(&self.settings.detect)
            },
        )?;
        writeln!(
            stdout,
            "detect: {} incidents ({} ongoing) on {} hosts",
            detected.incidents, detected.ongoing, detected.hosts
        )?;
        Ok(analyzed)
    }

    /// The crawler model: the settings' one, or with `crawler: auto` the one the
    /// calibration reaches from it (then the metrics are counted again under it), with
    /// the calibration. Written to metrics/crawler_model.yaml.
    fn choose_model(
        &self,
        stdout: &mut dyn Write,
    ) -> anyhow::Result<(
        crate::crawler::CrawlerModel,
        Option<crate::replay::calibrate::Calibration>,
    )> {
        let mut model = self.settings.crawler.model.clone();
        if !self.settings.crawler.calibrate {
            write_model(&self.metrics, &model, FIXED_MODEL, Vec::new())?;
            return Ok((model, None));
        }
        let cfg = BreakerConfig::load(&self.config)?;
        let calibration = super::replaying::TrafficGroups::open(
            &self.dataset,
            &self.metrics,
            &cfg,
            &model,
            self.args.scale.group_rows(),
        )
        .and_then(|groups| groups.calibrate())
        .context("loading the traffic to calibrate the crawler model")?;
        if self.shard.is_some() {
            // One shard cannot calibrate the fleet (the merge sums every shard's fits):
            // it counts by the fleet's choice of the night before.
            let counted = self
                .previous()?
                .and_then(|p| p.calibrated_model)
                .unwrap_or_else(|| model.clone());
            writeln!(stdout, "crawler model: {SHARD_MODEL}")?;
            if counted != model {
                self.analyze(&counted, &mut std::io::sink())?;
            }
            write_model(&self.metrics, &counted, SHARD_MODEL, Vec::new())?;
            return Ok((counted, Some(calibration)));
        }
        let choice = calibration.choose();
        let text = calibration_text(choice.model == model, &choice);
        writeln!(stdout, "crawler model: {text}")?;
        if choice.model != model {
            model = choice.model.clone();
            self.analyze(&model, &mut std::io::sink())?;
        }
        write_model(&self.metrics, &model, &text, calibration.findings(&choice))?;
        Ok((model, Some(calibration)))
    }

    /// The previous patch file, when there is one.
    fn previous(&self) -> anyhow::Result<Option<PatchFile>> {
        Ok(self
            .patch_path
            .is_file()
            .then(|| PatchFile::load(&self.patch_path))
            .transpose()?)
    }

    /// Stage 4, advise (with the replay check), and the replay's fidelity beside the
    /// metrics.
    fn advise(
        &self,
        model: &crate::crawler::CrawlerModel,
        calibrated: Option<&crate::crawler::CrawlerModel>,
    ) -> anyhow::Result<Advice> {
        let previous = self.previous()?;
        let scratch = self.out.join(".earlier-nights");
        let earlier = EarlierNights {
            config_path: &self.config,
            analyze: self.analyze_options(model)?,
            detect: crate::detect::DetectOptions {
                min_calls: self.settings.advise.min_calls,
                ..super::detect_options(&self.settings.detect)
            },
            scratch: &scratch,
        };
        let mut advice = advise_from(
            &self.metrics,
            Some(ReplayData {
                dataset: &self.dataset,
                group_rows: self.args.scale.group_rows(),
                earlier: Some(earlier),
            }),
            &self.config,
            self.ratelimits.as_deref(),
            &self.settings.advise,
            model,
            previous.as_ref(),
        )?;
        advice.patch = advice
            .patch
            .with_calibrated_model(calibrated, previous.as_ref());
        write_fidelity(&self.metrics, &advice.fidelity)?;
        Ok(advice)
    }

    /// Stage 5, patch: the edited texts, and what a reviewer reads first: proposed/,
    /// changes.diff, the plan.
    fn present(&self, mut advice: Advice, stdout: &mut dyn Write) -> anyhow::Result<Proposal> {
        // With --write the patch says so: the next night reads a config back at a
        // change's `from` value as a person's revert.
        advice.patch = advice
            .patch
            .with_written(self.args.write, self.previous()?.as_ref());
        let edits = compute_edits(
            &advice.patch,
            &self.patch_path,
            &self.config,
            &advice.breakers_text,
            self.ratelimits
                .as_deref()
                .zip(advice.ratelimits_text.as_deref()),
        )?;
        let proposed = self.out.join("proposed");
        std::fs::create_dir_all(&proposed)
            .with_context(|| format!("creating {}", proposed.display()))?;
        let mut diff = String::new();
        // Fixed names in proposed/, whatever the inputs are called; the diff names the
        // real paths.
        for (name, applied, path, before) in [
            (
                "breakers.yaml",
                &edits.breakers,
                Some(self.config.as_path()),
                Some(advice.breakers_text.as_str()),
            ),
            (
                "ratelimits.yaml",
                &edits.ratelimits,
                self.ratelimits.as_deref(),
                advice.ratelimits_text.as_deref(),
            ),
        ] {
            let (Some(path), Some(before)) = (path, before) else {
                continue;
            };
            let after = match applied {
                Applied::Changed(t) => t.as_str(),
                _ => before,
            };
            write_atomic(&proposed.join(name), after)?;
            diff.push_str(&unified_diff(&path.display().to_string(), before, after));
        }
        write_atomic(&self.out.join("changes.diff"), &diff)?;
        write_plan(stdout, &advice.patch)?;
        Ok(Proposal { advice, edits })
    }

    /// What the merge and every shard must agree on.
    fn shard_inputs(&self) -> anyhow::Result<crate::shards::ShardInputs> {
        let sha_of = |p: &Path| -> anyhow::Result<String> {
            let bytes = std::fs::read(p).with_context(|| format!("reading {}", p.display()))?;
            Ok(sha256_hex(&bytes))
        };
        Ok(crate::shards::ShardInputs {
            breakers_sha256: sha_of(&self.config)?,
            ratelimits_sha256: self.ratelimits.as_deref().map(sha_of).transpose()?,
            settings_sha256: sha256_hex(format!("{:?}", self.settings).as_bytes()),
            previous_patch_sha256: self
                .patch_path
                .is_file()
                .then(|| sha_of(&self.patch_path))
                .transpose()?,
        })
    }

    /// A shard job's last step: OUT/shard=I/shard.yaml, what the merge needs besides
    /// the shard's metrics (written last: it marks the shard as done).
    fn record_shard(
        &self,
        shard: crate::shards::Shard,
        advice: Advice,
        calibration: Option<crate::replay::calibrate::Calibration>,
        stdout: &mut dyn Write,
    ) -> anyhow::Result<u8> {
        let facts = super::reporting::dataset_facts(&self.dataset, &self.metrics, &advice.patch)?;
        let changes = advice.patch.change_count();
        let record = crate::shards::ShardRecord::new(
            shard,
            advice.patch.window.clone(),
            self.shard_inputs()?,
            &crate::telemetry::manifest::Manifest::load(&self.dataset)?,
            advice.evidence.len(),
            advice.model,
            calibration.map(|c| c.summed()),
            advice.plan,
            facts,
        );
        let path = self.out.join(crate::shards::RECORD_FILE);
        write_atomic(&path, record.to_yaml()?)?;
        writeln!(
            stdout,
            "shard {shard}: {} host(s), {changes} change(s) proposed; wrote {} (then: run --merge-shards)",
            advice.evidence.len(),
            path.display()
        )?;
        Ok(0)
    }

    /// `run --merge-shards`: the fleet's metrics, model, patch, diff and report from
    /// the shard jobs' folders, as one run over the whole fleet writes them.
    fn merge_shards(&self, stdout: &mut dyn Write) -> anyhow::Result<u8> {
        let shards = crate::shards::Shards::load(
            &self.out,
            &self.shard_inputs()?,
            self.previous()?.as_ref(),
        )?;
        // The shards are checked before the first output is written.
        let fleet = shards.model(&self.settings.crawler.model)?;
        shards.merge_metrics(&self.metrics)?;
        let model = fleet.counted;
        let (calibration, calibrated, findings) = match fleet.calibration {
            None => (FIXED_MODEL.to_owned(), None, Vec::new()),
            Some(cal) => {
                let counted_fit = cal.fit(&model);
                let choice = cal.choose();
                let earlier = self
                    .previous()?
                    .is_some_and(|p| p.calibrated_model.is_some());
                let text = if choice.model == model {
                    calibration_text(model == self.settings.crawler.model, &choice)
                } else {
                    format!(
                        "the shards counted by {} ({}); tonight's calibration prefers another, which misses them by {} in total (the documented one by {}): shards that start from this patch file count by it",
                        if earlier {
                            "the model the fleet's calibration chose the night before"
                        } else {
                            "the documented model (the patch file records no earlier choice)"
                        },
                        counted_fit.map_or_else(
                            || "not among tonight's fits".to_owned(),
                            |f| format!("it misses the recorded opens by {} in total", f.open_miss)
                        ),
                        choice.fit.open_miss,
                        choice.base_fit.open_miss
                    )
                };
                let findings = cal.findings(&choice);
                (text, Some(choice.model), findings)
            }
        };
        write_model(&self.metrics, &model, &calibration, findings)?;
        let window = shards.window();
        writeln!(
            stdout,
            "merge: {} shards, window {} .. {}, into {}",
            shards.count,
            window.start,
            window.end,
            self.metrics.display()
        )?;
        let advice = advice_of_plan(
            &self.metrics,
            &self.config,
            self.ratelimits.as_deref(),
            &model,
            self.previous()?.as_ref(),
            MergedPlan {
                plan: shards.plan(),
                calibrated: calibrated.as_ref(),
            },
            self.settings.advise.min_calls,
        )?;
        let proposal = self.present(advice, stdout)?;
        self.finish(&proposal, &model, Some(&shards.facts()), stdout)
    }

    /// Stage 6, report: report.md (the PR body) and report.html.
    fn report(
        &self,
        advice: &Advice,
        model: &crate::crawler::CrawlerModel,
        facts: Option<&crate::shards::DatasetFacts>,
        stdout: &mut dyn Write,
    ) -> anyhow::Result<()> {
        // A merge has the shards' datasets, not one of its own.
        let shown = self.out.join("shard=*").join("dataset");
        let warnings = super::reporting::ReportJob {
            out: &self.out,
            dataset: if facts.is_some() {
                &shown
            } else {
                &self.dataset
            },
            metrics: &self.metrics,
            patch: &advice.patch,
            patch_path: &self.patch_path,
            config: &advice.config,
            model,
            report_url: self.args.report_url.as_deref(),
            facts,
        }
        .write()?;
        for w in warnings {
            writeln!(stdout, "warning: {w}")?;
        }
        writeln!(
            stdout,
            "report: {} and {}",
            self.out.join("report.md").display(),
            self.out.join("report.html").display()
        )?;
        Ok(())
    }

    /// Stage 6 and the commit of a run or of a merge of shards: the report, the patch
    /// file and config edits, cooldowns, and the exit code.
    fn finish(
        &self,
        proposal: &Proposal,
        model: &crate::crawler::CrawlerModel,
        facts: Option<&crate::shards::DatasetFacts>,
        stdout: &mut dyn Write,
    ) -> anyhow::Result<u8> {
        self.report(&proposal.advice, model, facts, stdout)?;
        self.commit(proposal, stdout)?;
        let args = self.args;
        if args.push_cooldowns {
            let (_, end_us) = super::layout::window_of(&self.metrics)?;
            push_cooldowns(args, &proposal.advice, end_us as f64 / 1e6, stdout)?;
        }
        let n = proposal.advice.patch.change_count();
        if args.check && n > 0 {
            writeln!(
                stdout,
                "check: {n} change(s) proposed (exit {EXIT_CHANGES_PROPOSED})"
            )?;
            return Ok(EXIT_CHANGES_PROPOSED);
        }
        Ok(0)
    }

    /// With --write, both config files or neither; then the patch file. The patch file
    /// comes last: it carries the version, the baselines and the reverts the next run
    /// builds on, and says whether its changes were written, so it is only replaced
    /// once everything else of this run is written.
    fn commit(&self, p: &Proposal, stdout: &mut dyn Write) -> anyhow::Result<()> {
        if self.args.write {
            let mut writes: Vec<(&Path, &[u8])> = Vec::new();
            for (applied, path) in [
                (&p.edits.breakers, Some(self.config.as_path())),
                (&p.edits.ratelimits, self.ratelimits.as_deref()),
            ] {
                if let (Applied::Changed(t), Some(path)) = (applied, path) {
                    writes.push((path, t.as_bytes()));
                }
            }
            write_all_atomic(&writes)?;
            for (path, _) in &writes {
                writeln!(stdout, "wrote {}", path.display())?;
            }
        }
        write_atomic(&self.patch_path, p.advice.patch.to_yaml())?;
        writeln!(
            stdout,
            "patch: {} (v{}), proposed files in {}, diff in {}",
            self.patch_path.display(),
            p.advice.patch.patch_version,
            self.out.join("proposed").display(),
            self.out.join("changes.diff").display()
        )?;
        Ok(())
    }
}

/// `run --push-cooldowns`: a cooldown per host whose latest incident is still going on,
/// printed, and written (never shortening a longer one) only with `--yes`.
fn push_cooldowns(
    args: &RunArgs,
    advice: &Advice,
    window_end_s: f64,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    use crate::advise::cooldowns::{INCIDENT_REASON, incident_cooldowns};
    use crate::cooldown::SetOutcome;

    let now = match &args.now {
        Some(t) => crate::clock::parse_instant(t)?,
        None => crate::clock::wall_clock_now(),
    };
    let proposals = incident_cooldowns(
        &advice.evidence,
        &advice.config,
        &advice.model,
        window_end_s,
    );
    if proposals.is_empty() {
        writeln!(
            out,
            "cooldowns: no incident is going on at the end of the window"
        )?;
        return Ok(());
    }
    // The store is needed (and must be reachable) only to write; a dry run names it
    // when one is configured.
    let spec = super::cooldowns::resolve_store(
        args.store.as_deref(),
        args.key_prefix.as_deref(),
        args.settings.as_deref(),
    );
    let (mut store, target) = match (spec, args.yes) {
        (Ok(spec), true) => (Some(spec.open()?), spec.redacted()),
        (Err(e), true) => return Err(e),
        (Ok(spec), false) => (None, spec.redacted()),
        (Err(_), false) => (None, "the cooldown store".to_owned()),
    };
    for p in &proposals {
        let until = format_utc(p.until_wall);
        if p.until_wall <= now {
            writeln!(
                out,
                "cooldowns: {}: expected recovery {until} has passed; nothing to set ({})",
                p.host, p.basis
            )?;
            continue;
        }
        match store.as_mut() {
            None => writeln!(
                out,
                "cooldowns: would set {} until {until} in {target} ({}); pass --yes to write",
                p.host, p.basis
            )?,
            Some(store) => match store.extend(&p.host, p.until_wall, INCIDENT_REASON, now)? {
                SetOutcome::Set => writeln!(
                    out,
                    "cooldowns: set {} until {until} in {target} ({})",
                    p.host, p.basis
                )?,
                SetOutcome::KeptLonger => writeln!(
                    out,
                    "cooldowns: {} already has a later deadline in {target}; kept it",
                    p.host
                )?,
            },
        }
    }
    Ok(())
}
