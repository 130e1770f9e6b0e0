//! `analyze`: the dataset's metrics tables for the night's window, written group by
//! group and published together, with the metadata the later stages read.

use std::io::Write;

use anyhow::Context;

use crate::cli::AnalyzeArgs;
use crate::clock::{format_utc, parse_now_us};
use crate::layout::{MetricsFolder, Table, meta, meta_key};
use crate::telemetry::parquet::scan_table;

pub(super) fn run_analyze(args: &AnalyzeArgs) -> anyhow::Result<()> {
    if !(args.half_life > 0.0 && args.half_life.is_finite()) {
        bail_input!("--half-life must be a positive number of buckets");
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
        .unwrap_or_else(|| MetricsFolder::in_dataset(&args.data).root().to_owned());
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
        bail_input!(
            "{}: not a dataset written by `export` (no {})",
            data.display(),
            crate::telemetry::manifest::MANIFEST_FILE
        );
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
    let folder = MetricsFolder::new(out);
    let mut tables: Option<(crate::metrics::Window, Vec<(Table, TableWriter)>)> = None;
    analyze_each(events, transitions, outcomes, &config, &opts, |part| {
        let (_, writers) = tables.get_or_insert_with(|| {
            let meta = metrics_metadata(&part.window, &config_hash, &opts, &set_aside);
            let writers = part
                .tables()
                .map(|(table, _)| (table, TableWriter::new(&folder.table(table), meta.clone())))
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
    let rows_of = |table: Table| {
        writers
            .iter()
            .find(|(t, _)| *t == table)
            .map_or(0, |(_, w)| w.rows())
    };
    let (hosts, bursts) = (rows_of(Table::HostSummary), rows_of(Table::Bursts));
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

/// The key-value metadata of the metrics tables: what they were computed from.
pub(super) fn metrics_metadata(
    window: &crate::metrics::Window,
    config_hash: &str,
    opts: &crate::metrics::AnalyzeOptions,
    set_aside: &[crate::metrics::night::SetAside],
) -> Vec<(String, String)> {
    let mut meta = vec![
        (meta::TOOL_VERSION, env!("CARGO_PKG_VERSION").to_owned()),
        (meta::SCHEMA_VERSION, "1".to_owned()),
        (meta::WINDOW_START, format_utc(window.start_us as f64 / 1e6)),
        (meta::WINDOW_END, format_utc(window.end_us as f64 / 1e6)),
        (meta::CONFIG_SHA256, config_hash.to_owned()),
        (meta::BUCKET_S, opts.bucket_s.to_string()),
        (meta::HALF_LIFE_BUCKETS, opts.half_life_buckets.to_string()),
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
        meta.push((meta::BASELINE_HOURS, covered_h.to_string()));
    }
    if !set_aside.is_empty() {
        meta.push((meta::SET_ASIDE, crate::metrics::night::encode(set_aside)));
    }
    meta.into_iter().map(|(k, v)| (meta_key(k), v)).collect()
}

/// Whether `p` is a dataset folder written by `export` (it holds the manifest).
pub fn is_dataset(p: &std::path::Path) -> bool {
    p.join(crate::telemetry::manifest::MANIFEST_FILE).is_file()
}
