//! `detect`: incidents from the metrics' time series, and the series labelled.

use std::io::Write;

use crate::cli::DetectArgs;
use crate::layout::{MetricsFolder, Table, meta, meta_key};
use crate::output::{parquet_metadata, read_parquet, write_parquet_atomic};
use crate::telemetry::parquet::scan_table;

pub(super) fn run_detect(args: &DetectArgs) -> anyhow::Result<()> {
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
        Some(p) if !super::analyze::is_dataset(p) => {
            bail_input!("{}: not a dataset written by `export`", p.display())
        }
        Some(p) => Some(p.clone()),
        None => args
            .metrics
            .parent()
            .filter(|p| super::analyze::is_dataset(p))
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
        MetricsFolder::new(&args.metrics)
            .table(Table::Incidents)
            .display()
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

    let metrics = MetricsFolder::new(metrics);
    let ts_path = metrics.table(Table::HostTimeseries);
    if !ts_path.is_file() {
        bail_input!(
            "{}: no host_timeseries.parquet; run `analyze` first",
            metrics.display()
        );
    }
    if !(opts.penalty_ln_n > 0.0
        && opts.min_excess >= 0.0
        && opts.min_incident_buckets >= 1
        && opts.bocpd_hazard_buckets > 1.0
        && opts.bocpd_prior_scale > 0.0)
    {
        bail_input!(
            "detect settings: penalty and bocpd prior scale must be positive, bocpd hazard above 1, min excess >= 0, min incident buckets >= 1"
        );
    }
    let timeseries = read_parquet(&ts_path)?;
    let timeseries = match timeseries.get_column_index("unhealthy") {
        Some(_) => timeseries.drop("unhealthy")?,
        None => timeseries,
    };
    let mut meta = parquet_metadata(&ts_path)?;
    meta.push((
        meta_key(meta::DETECTOR),
        format!(
            "{:?} penalty={} min_excess={} min_incident_buckets={}",
            opts.detector, opts.penalty_ln_n, opts.min_excess, opts.min_incident_buckets
        ),
    ));
    // detect does no I/O: what fails there is the settings on this data.
    let mut d = detect(&timeseries, opts)
        .map_err(|e| input_error!("{}: detecting incidents: {e}", ts_path.display()))?;
    if let Some(data) = data {
        let events = scan_table(data, &crate::telemetry::schema::HTTP_EVENTS)?;
        d.incidents = anyhow::Context::context(
            crate::detect::with_retry_after(d.incidents, events),
            "reading Retry-After inside incidents",
        )?;
    }
    write_parquet_atomic(&d.incidents, &metrics.table(Table::Incidents), meta.clone())?;
    write_parquet_atomic(&d.host_timeseries, &ts_path, meta)?;
    Ok(Detected {
        incidents: d.incidents.height(),
        ongoing: d.incidents.column("ongoing")?.bool()?.sum().unwrap_or(0) as usize,
        hosts: d.incidents.column("host")?.n_unique()?,
    })
}
