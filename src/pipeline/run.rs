//! `run`, the nightly job: export, analyze, choose the crawler model, advise, present
//! (proposed files, diff, plan), report, commit; and the two ends of a sharded night
//! (a shard job's record, the merge).

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::cli::RunArgs;
use crate::clock::format_utc;
use crate::config::BreakerConfig;
use crate::error::{ExitStatus, InputError};
use crate::layout::{MetricsFolder, RunFolder};
use crate::output::{write_all_atomic, write_atomic};
use crate::patch::{Applied, PatchFile, sha256_hex, unified_diff};
use crate::replay::calibrate::{FIXED_MODEL, SHARD_MODEL, calibration_text};

use super::advise::{Advice, MergedPlan, ReplayData, advice_of_plan, advise_from};
use super::analyze::analyze_into;
use super::apply::{Edits, compute_edits};
use super::detect::detect_into;
use super::model_file::write_model;
use super::past_nights::EarlierNights;

/// The sample inputs `run` uses when given no telemetry: every
/// `data-samples/telemetry*.sqlite` (one file per crawler machine).
pub const SAMPLE_DIR: &str = "data-samples";
pub const SAMPLE_CONFIG: &str = "data-samples/breakers.yaml";
pub const SAMPLE_RATELIMITS: &str = "data-samples/ratelimits.yaml";

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
            bail_input!(
                "no --telemetry given and no {SAMPLE_DIR}/telemetry*.sqlite here: run from the repository root or pass --telemetry and --config"
            );
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
        bail_input!(
            "--config is required with --telemetry: the advice is a change of that breakers.yaml"
        );
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
    out: RunFolder,
    shard: Option<crate::shard::Shard>,
    dataset: PathBuf,
    metrics: MetricsFolder,
    patch_path: PathBuf,
}

/// What a run proposes: the advice and the edited texts of the config files.
struct Proposal {
    advice: Advice,
    edits: Edits,
}

pub fn run_job(args: &RunArgs) -> anyhow::Result<ExitStatus> {
    let night = Night::new(args)?;
    let mut stdout = std::io::stdout().lock();
    if args.merge_shards {
        return night.merge_shards(&mut stdout);
    }
    if night.shard.is_some() {
        // What a failed shard job leaves must not pass for tonight's shard.
        let record = night.out.shard_record();
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
        let whole = RunFolder::new(&args.out);
        let out = match args.shard {
            Some(s) => whole.shard(s),
            None => whole.clone(),
        };
        Ok(Night {
            args,
            telemetry,
            config,
            ratelimits,
            settings,
            dataset: out.dataset(),
            metrics: out.metrics(),
            out,
            shard: args.shard,
            patch_path: args
                .patch_file
                .clone()
                .unwrap_or_else(|| whole.default_patch_file()),
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
            super::export::write_export_summary(stdout, &export)?;
            bail_input!(
                "{} of {} telemetry files could not be exported ({}); no advice from a partial fleet",
                failed.len(),
                export.sources.len(),
                failed.join(", ")
            );
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
    ) -> anyhow::Result<super::analyze::Analyzed> {
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
                ..super::detect::detect_options(&self.settings.detect)
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
        let calibration = super::replay::TrafficGroups::open(
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
        let scratch = self.out.earlier_nights_scratch();
        let earlier = EarlierNights {
            config_path: &self.config,
            analyze: self.analyze_options(model)?,
            detect: crate::detect::DetectOptions {
                min_calls: self.settings.advise.min_calls,
                ..super::detect::detect_options(&self.settings.detect)
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
        super::fidelity_file::write(&self.metrics, &advice.fidelity)?;
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
        let proposed = self.out.proposed();
        std::fs::create_dir_all(&proposed)
            .with_context(|| format!("creating {}", proposed.display()))?;
        let mut diff = String::new();
        // Fixed names in proposed/, whatever the inputs are called; the diff names the
        // real paths.
        for (proposed_file, applied, path, before) in [
            (
                self.out.proposed_breakers(),
                &edits.breakers,
                Some(self.config.as_path()),
                Some(advice.breakers_text.as_str()),
            ),
            (
                self.out.proposed_ratelimits(),
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
            write_atomic(&proposed_file, after)?;
            diff.push_str(&unified_diff(&path.display().to_string(), before, after));
        }
        write_atomic(&self.out.changes_diff(), &diff)?;
        crate::report::plan_text::write_plan(stdout, &advice.patch)?;
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
        shard: crate::shard::Shard,
        advice: Advice,
        calibration: Option<crate::replay::calibrate::Calibration>,
        stdout: &mut dyn Write,
    ) -> anyhow::Result<ExitStatus> {
        let facts = super::report::dataset_facts(&self.dataset, &self.metrics, &advice.patch)?;
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
        let path = self.out.shard_record();
        write_atomic(&path, record.to_yaml()?)?;
        writeln!(
            stdout,
            "shard {shard}: {} host(s), {changes} change(s) proposed; wrote {} (then: run --merge-shards)",
            advice.evidence.len(),
            path.display()
        )?;
        Ok(ExitStatus::Success)
    }

    /// `run --merge-shards`: the fleet's metrics, model, patch, diff and report from
    /// the shard jobs' folders, as one run over the whole fleet writes them.
    fn merge_shards(&self, stdout: &mut dyn Write) -> anyhow::Result<ExitStatus> {
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
        let shown = self.out.shard_datasets();
        let warnings = super::report::ReportJob {
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
            self.out.report_md().display(),
            self.out.report_html().display()
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
    ) -> anyhow::Result<ExitStatus> {
        self.report(&proposal.advice, model, facts, stdout)?;
        self.commit(proposal, stdout)?;
        let args = self.args;
        if args.push_cooldowns {
            let (_, end_us) = self.metrics.window()?;
            push_cooldowns(args, &proposal.advice, end_us as f64 / 1e6, stdout)?;
        }
        let n = proposal.advice.patch.change_count();
        if args.check && n > 0 {
            writeln!(stdout, "check: {n} change(s) proposed (exit 3)")?;
            return Ok(ExitStatus::Changes);
        }
        Ok(ExitStatus::Success)
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
            self.out.proposed().display(),
            self.out.changes_diff().display()
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
    let spec = super::cooldown::resolve_store(
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
