//! Runs a parsed command: calls the stages in order, prints results to stdout and maps
//! failures to exit codes. The one place that turns stage results into user output.

pub mod cooldowns;
pub mod layout;
pub mod nightly;
pub mod past_nights;
pub mod replaying;
pub mod reporting;

use std::io::Write;
use std::time::Duration;

use anyhow::{Context, bail};

use crate::cli::{AnalyzeArgs, Command, DetectArgs, ExportArgs, SimulateArgs};
use crate::cooldown::CooldownError;
use crate::simulate::{SimOptions, simulate};
use crate::telemetry::{ExportOptions, ExportSummary, TelemetryError, export};

pub use crate::cli::InputError;
use crate::clock::{format_utc, parse_now_us};
use crate::output::{parquet_metadata, read_parquet, write_parquet_atomic};
use crate::telemetry::parquet::scan_table;

pub fn init_logging(verbose: u8, quiet: bool) {
    use tracing_subscriber::EnvFilter;
    let default = match (quiet, verbose) {
        (true, _) => "warn",
        (false, 0) => "info",
        (false, 1) => "breaker_advisor=debug,info",
        _ => "breaker_advisor=trace,debug",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .without_time()
        .try_init();
}

pub fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// 1 for errors the user can fix (bad input, bad arguments), 2 for everything else.
pub fn exit_code(e: &anyhow::Error) -> u8 {
    let input = e.chain().any(|c| {
        c.is::<InputError>()
            || c.is::<CooldownError>()
            || c.is::<crate::settings::SettingsError>()
            || c.is::<crate::config::ConfigError>()
            || c.is::<crate::patch::PatchError>()
            || c.downcast_ref::<TelemetryError>().is_some_and(|t| {
                !matches!(t, TelemetryError::Io { .. } | TelemetryError::Polars { .. })
            })
    });
    if input { 1 } else { 2 }
}

/// Runs a command; `Ok` carries the exit code (0, or 3 for `run --check` with changes).
pub fn run(command: Command) -> anyhow::Result<u8> {
    let done = |r: anyhow::Result<()>| r.map(|()| 0);
    match command {
        Command::Export(args) => done(run_export(&args)),
        Command::Analyze(args) => done(run_analyze(&args)),
        Command::Detect(args) => done(run_detect(&args)),
        Command::Advise(args) => nightly::run_advise(&args),
        Command::Apply(args) => nightly::run_apply(&args),
        Command::Run(args) => nightly::run_job(&args),
        Command::Report(args) => reporting::run_report(&args),
        Command::Replay(args) => replaying::run_replay(&args),
        Command::Simulate(args) => done(run_simulate(&args)),
        Command::Cooldown(args) => done(cooldowns::run_cooldown(&args)),
    }
}

fn run_export(args: &ExportArgs) -> anyhow::Result<()> {
    if args.batch_rows == 0 {
        bail!(InputError("--batch-rows must be at least 1".into()));
    }
    let opts = ExportOptions {
        out: args.out.clone(),
        batch_rows: args.batch_rows,
        busy_timeout: Duration::from_millis(args.busy_timeout_ms),
        replace_changed: args.replace_changed,
        progress: true,
        shard: args.shard,
    };
    let summary = export(&args.telemetry, &opts)?;
    let mut stdout = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut stdout, &summary)?;
        writeln!(stdout)?;
    } else {
        write_export_summary(&mut stdout, &summary)?;
    }
    stdout.flush()?;
    let failed: Vec<_> = summary.failed().map(|s| s.source.as_str()).collect();
    if !failed.is_empty() {
        bail!(InputError(format!(
            "{} of {} telemetry files could not be exported ({}); the others were",
            failed.len(),
            summary.sources.len(),
            failed.join(", ")
        )));
    }
    Ok(())
}

/// The human-readable export summary.
pub fn write_export_summary(w: &mut dyn Write, s: &ExportSummary) -> std::io::Result<()> {
    let rate = if s.elapsed_s > 0.0 {
        s.rows_read as f64 / s.elapsed_s
    } else {
        0.0
    };
    writeln!(
        w,
        "export run {} into {}: {} rows exported, {} rejected, {} part files, {:.1} s ({:.0} rows/s)",
        s.run, s.dataset, s.rows_exported, s.rows_rejected, s.parts_written, s.elapsed_s, rate
    )?;
    if s.rows_other_shards > 0 {
        writeln!(w, "  {} rows left to the other shards", s.rows_other_shards)?;
    }
    for src in &s.sources {
        if !src.missing_parts.is_empty() {
            writeln!(
                w,
                "  {}: {} listed part files were missing: {}",
                src.source,
                src.missing_parts.len(),
                src.missing_parts.join(", ")
            )?;
        }
        for (table, dates) in &src.incomplete {
            let dates: Vec<&str> = dates.iter().map(String::as_str).collect();
            writeln!(
                w,
                "  {}: {table} is incomplete on {} (its rows are gone from the dataset and the source no longer has them)",
                src.source,
                dates.join(", ")
            )?;
        }
        match &src.error {
            Some(err) => writeln!(w, "  {}: FAILED: {err}", src.source)?,
            None => {
                writeln!(w, "  {} ({})", src.source, src.outcome)?;
                for (name, t) in &src.tables {
                    writeln!(
                        w,
                        "    {name:<20} from {:<20} read {:>10}  exported {:>10}  rejected {:>6}",
                        t.sqlite_table,
                        t.rows_read,
                        t.rows_exported,
                        t.rejected.values().sum::<u64>()
                    )?;
                    for (reason, n) in &t.rejected {
                        writeln!(w, "      rejected {reason}: {n}")?;
                    }
                    for (column, n) in &t.nulled {
                        writeln!(w, "      {column}: {n} unreadable values exported as NULL")?;
                    }
                    for (what, n) in &t.adjusted {
                        writeln!(w, "      {what}: {n} values")?;
                    }
                }
            }
        }
    }
    Ok(())
}

fn run_simulate(args: &SimulateArgs) -> anyhow::Result<()> {
    if args.hosts == 0 {
        bail!(InputError("--hosts must be at least 1".into()));
    }
    if !(args.rps > 0.0 && args.rps.is_finite() && args.hours > 0.0 && args.hours.is_finite()) {
        bail!(InputError(
            "--rps and --hours must be positive numbers".into()
        ));
    }
    let start = chrono::DateTime::parse_from_rfc3339(&args.start)
        .map_err(|e| InputError(format!("--start {:?}: {e}", args.start)))?;
    if args.machines == 0 {
        bail!(InputError("--machines must be at least 1".into()));
    }
    let opts = SimOptions {
        variant: args.variant,
        start_s: start.timestamp(),
        machines: args.machines,
        cooldowns: args.cooldowns,
        max_retries: args.max_retries,
        config: args
            .config
            .as_deref()
            .map(crate::config::BreakerConfig::load)
            .transpose()?,
        night: args.night,
        ratelimits: args
            .ratelimits
            .as_deref()
            .map(crate::config::rates::RateLimits::load)
            .transpose()?,
        quotas: args.quotas || !args.quota_windows.is_empty(),
        quota_windows: if args.quota_windows.is_empty() {
            vec![60.0]
        } else {
            args.quota_windows.clone()
        },
        crawler: match &args.crawler {
            None => crate::crawler::CrawlerModel::default(),
            Some(path) => {
                let text = crate::config::read_file(path)?;
                yaml_serde::from_str(&text)
                    .map_err(|e| InputError(format!("{}: {e}", path.display())))?
            }
        },
        exception_rows: args.exception_rows,
        ..SimOptions::new(&args.out, args.hours, args.hosts, args.rps, args.seed)
    };
    let summary =
        simulate(&opts).with_context(|| format!("simulating into {}", args.out.display()))?;
    let mut stdout = std::io::stdout().lock();
    writeln!(
        stdout,
        "wrote {} rows and {} breaker transitions for {} hosts to {}; ground truth in {}",
        summary.rows,
        summary.transitions,
        summary.hosts,
        summary
            .telemetry
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", "),
        summary.ground_truth.display()
    )?;
    Ok(())
}

fn run_analyze(args: &AnalyzeArgs) -> anyhow::Result<()> {
    if !(args.half_life > 0.0 && args.half_life.is_finite()) {
        bail!(InputError(
            "--half-life must be a positive number of buckets".into()
        ));
    }
    let opts = crate::metrics::AnalyzeOptions {
        window_s: args.window,
        now_us: parse_now_us(args.now.as_deref())?,
        bucket_s: args.bucket,
        half_life_buckets: args.half_life,
        baseline_s: Some(args.baseline),
        crawler: crate::settings::load(args.settings.as_deref())?
            .crawler
            .model,
        group_rows: args.scale.group_rows(),
        ..crate::metrics::AnalyzeOptions::default()
    };
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| args.data.join("metrics"));
    let done = analyze_into(&args.data, &out, args.config.as_deref(), &opts)?;
    let mut stdout = std::io::stdout().lock();
    writeln!(
        stdout,
        "window {}: {} hosts, {} bursts; wrote host_summary, host_role_summary, bursts, host_timeseries, rate_windows to {}",
        done.window.utc(),
        done.hosts,
        done.bursts,
        out.display()
    )?;
    for a in &done.set_aside {
        writeln!(stdout, "{a}")?;
    }
    Ok(())
}

/// What `analyze_into` wrote.
pub struct Analyzed {
    pub window: crate::metrics::Window,
    pub hosts: usize,
    pub bursts: usize,
    /// Rows after the night's end, per source (only when the window was not given).
    pub set_aside: Vec<crate::metrics::night::SetAside>,
}

/// Stage 2: computes the metrics of the dataset `data` and writes them into `out`.
pub fn analyze_into(
    data: &std::path::Path,
    out: &std::path::Path,
    config_path: Option<&std::path::Path>,
    opts: &crate::metrics::AnalyzeOptions,
) -> anyhow::Result<Analyzed> {
    use crate::config::BreakerConfig;
    use crate::metrics::analyze_each;
    use crate::output::TableWriter;
    use crate::telemetry::schema::{BREAKER_OUTCOMES, BREAKER_TRANSITIONS, HTTP_EVENTS};

    if !is_dataset(data) {
        bail!(InputError(format!(
            "{}: not a dataset written by `export` (no {})",
            data.display(),
            crate::telemetry::manifest::MANIFEST_FILE
        )));
    }
    let (config, config_hash) = match config_path {
        Some(p) => {
            let cfg = BreakerConfig::load(p)?;
            let bytes = std::fs::read(p).with_context(|| format!("reading {}", p.display()))?;
            (cfg, crate::patch::sha256_hex(&bytes))
        }
        None => (BreakerConfig::default(), "code-defaults".to_owned()),
    };
    let only = |scan: polars::prelude::LazyFrame| match &opts.hosts {
        None => scan,
        Some(hosts) => scan.filter(crate::groups::among(hosts)),
    };
    let events = only(scan_table(data, &HTTP_EVENTS)?);
    let transitions = only(scan_table(data, &BREAKER_TRANSITIONS)?);
    let outcomes = only(scan_table(data, &BREAKER_OUTCOMES)?);
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    // Without --now, the night ends where the fleet's traffic does; rows a clock put
    // past it are set aside, named in the metadata and the report.
    let night = match opts.now_us {
        Some(_) => None,
        None => crate::metrics::night::locate(events.clone(), opts.window_s)
            .context("finding the night")?,
    };
    let set_aside = night.as_ref().map_or(Vec::new(), |n| n.set_aside.clone());
    let opts = crate::metrics::AnalyzeOptions {
        now_us: opts.now_us.or(night.map(|n| n.end_us)),
        // From the manifest: a shard's dataset holds only its hosts' calls.
        data_start_us: opts
            .data_start_us
            .or(crate::telemetry::manifest::Manifest::load(data)?.first_event_us()),
        ..opts.clone()
    };
    // Each group's tables go to the files as they come (the window's are never held
    // whole); the files replace the earlier ones only once every group is written.
    let mut tables: Option<(crate::metrics::Window, Vec<(&str, TableWriter)>)> = None;
    analyze_each(events, transitions, outcomes, &config, &opts, |part| {
        let (_, writers) = tables.get_or_insert_with(|| {
            let meta = metrics_metadata(&part.window, &config_hash, &opts, &set_aside);
            let writers = part
                .tables()
                .map(|(name, _)| {
                    let path = out.join(format!("{name}.parquet"));
                    (name, TableWriter::new(&path, meta.clone()))
                })
                .into();
            (part.window, writers)
        });
        for ((_, writer), (_, df)) in writers.iter_mut().zip(part.tables()) {
            writer.write(df)?;
        }
        anyhow::Ok(())
    })
    .context("computing metrics")?;
    let (window, writers) = tables.expect("at least one group");
    let rows_of = |table: &str| {
        writers
            .iter()
            .find(|(name, _)| *name == table)
            .map_or(0, |(_, w)| w.rows())
    };
    let (hosts, bursts) = (rows_of("host_summary"), rows_of("bursts"));
    let staged = writers
        .into_iter()
        .map(|(_, w)| w.finish())
        .collect::<anyhow::Result<Vec<_>>>()?;
    crate::output::publish_all(staged)?;
    Ok(Analyzed {
        window,
        hosts,
        bursts,
        set_aside,
    })
}

/// The metrics tables' metadata key (under `breaker_advisor.`) of the baseline's covered
/// hours.
pub const BASELINE_HOURS_KEY: &str = "baseline_hours";

/// The key-value metadata of the metrics tables: what they were computed from.
fn metrics_metadata(
    window: &crate::metrics::Window,
    config_hash: &str,
    opts: &crate::metrics::AnalyzeOptions,
    set_aside: &[crate::metrics::night::SetAside],
) -> Vec<(String, String)> {
    let mut meta = vec![
        ("tool_version", env!("CARGO_PKG_VERSION").to_owned()),
        ("metrics_schema_version", "1".to_owned()),
        ("window_start", format_utc(window.start_us as f64 / 1e6)),
        ("window_end", format_utc(window.end_us as f64 / 1e6)),
        ("config_sha256", config_hash.to_owned()),
        ("bucket_s", opts.bucket_s.to_string()),
        ("half_life_buckets", opts.half_life_buckets.to_string()),
    ];
    // The hours of the trailing baseline the data covers, whether or not any host had
    // calls in them (the report's quiet-night warning compares the window with them).
    if let (Some(b), Some(first)) = (opts.baseline_s, opts.data_start_us) {
        let start = window.start_us - b * crate::metrics::US_PER_S;
        let covered_h = if first < window.start_us {
            (window.start_us - first.max(start)) as f64 / 3.6e9
        } else {
            0.0
        };
        meta.push((BASELINE_HOURS_KEY, covered_h.to_string()));
    }
    if !set_aside.is_empty() {
        meta.push((
            crate::metrics::night::SET_ASIDE_KEY,
            crate::metrics::night::encode(set_aside),
        ));
    }
    meta.into_iter()
        .map(|(k, v)| (format!("breaker_advisor.{k}"), v))
        .collect()
}

fn run_detect(args: &DetectArgs) -> anyhow::Result<()> {
    use crate::detect::DetectOptions;
    // Flags, then the settings file's `detect:` section, then the built-in defaults.
    let settings = crate::settings::load(args.settings.as_deref())?;
    let base = detect_options(&settings.detect);
    let opts = DetectOptions {
        min_calls: settings.advise.min_calls,
        detector: args.detector.unwrap_or(base.detector),
        penalty_ln_n: args.penalty.unwrap_or(base.penalty_ln_n),
        min_excess: args.min_excess.unwrap_or(base.min_excess),
        min_incident_buckets: args
            .min_incident_buckets
            .unwrap_or(base.min_incident_buckets),
        bocpd_hazard_buckets: args.bocpd_hazard.unwrap_or(base.bocpd_hazard_buckets),
        bocpd_prior_scale: args.bocpd_prior_scale.unwrap_or(base.bocpd_prior_scale),
        ..base
    };
    let data = match &args.data {
        Some(p) if !is_dataset(p) => bail!(InputError(format!(
            "{}: not a dataset written by `export`",
            p.display()
        ))),
        Some(p) => Some(p.clone()),
        None => args
            .metrics
            .parent()
            .filter(|p| is_dataset(p))
            .map(|p| p.to_owned()),
    };
    if data.is_none() {
        tracing::warn!(
            "no dataset beside {} (pass --data): incidents get no retry_after_median_s",
            args.metrics.display()
        );
    }
    let done = detect_into(&args.metrics, data.as_deref(), &opts)?;
    let mut stdout = std::io::stdout().lock();
    writeln!(
        stdout,
        "{} incidents ({} ongoing) on {} hosts; wrote {}",
        done.incidents,
        done.ongoing,
        done.hosts,
        args.metrics.join("incidents.parquet").display()
    )?;
    Ok(())
}

/// The detection settings of the settings file's `detect:` section over the defaults.
pub fn detect_options(s: &crate::settings::DetectSettings) -> crate::detect::DetectOptions {
    let d = crate::detect::DetectOptions::default();
    crate::detect::DetectOptions {
        detector: s.detector.unwrap_or(d.detector),
        penalty_ln_n: s.penalty.unwrap_or(d.penalty_ln_n),
        min_excess: s.min_excess.unwrap_or(d.min_excess),
        min_incident_buckets: s.min_incident_buckets.unwrap_or(d.min_incident_buckets),
        bocpd_hazard_buckets: s.bocpd_hazard.unwrap_or(d.bocpd_hazard_buckets),
        bocpd_prior_scale: s.bocpd_prior_scale.unwrap_or(d.bocpd_prior_scale),
        ..d
    }
}

/// Whether `p` is a dataset folder written by `export` (it holds the manifest).
pub fn is_dataset(p: &std::path::Path) -> bool {
    p.join(crate::telemetry::manifest::MANIFEST_FILE).is_file()
}

/// What `detect_into` wrote.
pub struct Detected {
    pub incidents: usize,
    pub ongoing: usize,
    pub hosts: usize,
}

/// Stage 3: finds incidents in `metrics/host_timeseries.parquet`, writes
/// `incidents.parquet` and labels the time series; Retry-After inside incidents comes
/// from the dataset `data` when given.
pub fn detect_into(
    metrics: &std::path::Path,
    data: Option<&std::path::Path>,
    opts: &crate::detect::DetectOptions,
) -> anyhow::Result<Detected> {
    use crate::detect::detect;

    let ts_path = metrics.join("host_timeseries.parquet");
    if !ts_path.is_file() {
        bail!(InputError(format!(
            "{}: no host_timeseries.parquet; run `analyze` first",
            metrics.display()
        )));
    }
    if !(opts.penalty_ln_n > 0.0
        && opts.min_excess >= 0.0
        && opts.min_incident_buckets >= 1
        && opts.bocpd_hazard_buckets > 1.0
        && opts.bocpd_prior_scale > 0.0)
    {
        bail!(InputError(
            "detect settings: penalty and bocpd prior scale must be positive, bocpd hazard above 1, min excess >= 0, min incident buckets >= 1".into()
        ));
    }
    let timeseries = read_parquet(&ts_path)?;
    let timeseries = match timeseries.get_column_index("unhealthy") {
        Some(_) => timeseries.drop("unhealthy")?,
        None => timeseries,
    };
    let mut meta = parquet_metadata(&ts_path)?;
    meta.push((
        "breaker_advisor.detector".to_owned(),
        format!(
            "{:?} penalty={} min_excess={} min_incident_buckets={}",
            opts.detector, opts.penalty_ln_n, opts.min_excess, opts.min_incident_buckets
        ),
    ));
    // detect does no I/O: what fails there is the settings on this data.
    let mut d = detect(&timeseries, opts)
        .map_err(|e| InputError(format!("{}: detecting incidents: {e}", ts_path.display())))?;
    if let Some(data) = data {
        let events = scan_table(data, &crate::telemetry::schema::HTTP_EVENTS)?;
        d.incidents = anyhow::Context::context(
            crate::detect::with_retry_after(d.incidents, events),
            "reading Retry-After inside incidents",
        )?;
    }
    write_parquet_atomic(
        &d.incidents,
        &metrics.join("incidents.parquet"),
        meta.clone(),
    )?;
    write_parquet_atomic(&d.host_timeseries, &ts_path, meta)?;
    Ok(Detected {
        incidents: d.incidents.height(),
        ongoing: d.incidents.column("ongoing")?.bool()?.sum().unwrap_or(0) as usize,
        hosts: d.incidents.column("host")?.n_unique()?,
    })
}
