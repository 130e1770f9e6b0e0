//! `simulate`: synthetic telemetry with its ground truth.

use std::io::Write;

use anyhow::Context;

use crate::cli::SimulateArgs;
use crate::simulate::{SimOptions, simulate};

pub(super) fn run_simulate(args: &SimulateArgs) -> anyhow::Result<()> {
    if args.hosts == 0 {
        bail_input!("--hosts must be at least 1");
    }
    if !(args.rps > 0.0 && args.rps.is_finite() && args.hours > 0.0 && args.hours.is_finite()) {
        bail_input!("--rps and --hours must be positive numbers");
    }
    let start = chrono::DateTime::parse_from_rfc3339(&args.start)
        .map_err(|e| input_error!("--start {:?}: {e}", args.start))?;
    if args.machines == 0 {
        bail_input!("--machines must be at least 1");
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
                yaml_serde::from_str(&text).map_err(|e| input_error!("{}: {e}", path.display()))?
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
