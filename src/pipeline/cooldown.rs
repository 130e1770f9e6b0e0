//! The `cooldown` commands: show, open, close and prune deadlines in the shared store.

use std::io::Write;

use crate::cli::{CooldownAction, CooldownArgs};
use crate::clock::{format_utc, parse_instant, wall_clock_now};
use crate::cooldown::{Cooldown, StoreSpec};

/// The store from --store / the environment (clap merges both), else the settings file.
pub fn resolve_store(
    store: Option<&str>,
    key_prefix: Option<&str>,
    settings: Option<&std::path::Path>,
) -> anyhow::Result<StoreSpec> {
    let from_settings = crate::settings::load(settings)?.cooldown_store;
    let prefix = key_prefix
        .map(str::to_owned)
        .or_else(|| from_settings.as_ref().and_then(|s| s.key_prefix.clone()))
        .unwrap_or_else(|| "breaker:cooldown:".to_owned());
    let spec = match (store, &from_settings) {
        (Some(s), _) => s.to_owned(),
        (None, Some(s)) => s.url.clone(),
        (None, None) => bail_input!(
            "no cooldown store: pass --store, set {}, or add cooldown_store.url to the settings file",
            crate::cooldown::STORE_ENV
        ),
    };
    Ok(StoreSpec::parse(&spec, &prefix)?)
}

fn format_remaining(secs: f64) -> String {
    let s = secs.max(0.0).ceil() as u64;
    match (s / 3600, (s % 3600) / 60, s % 60) {
        (0, 0, sec) => format!("{sec}s"),
        (0, m, sec) => format!("{m}m{sec:02}s"),
        (h, m, sec) => format!("{h}h{m:02}m{sec:02}s"),
    }
}

pub fn run_cooldown(args: &CooldownArgs) -> anyhow::Result<()> {
    let now = match &args.now {
        Some(t) => parse_instant(t)?,
        None => wall_clock_now(),
    };
    let spec = resolve_store(
        args.store.as_deref(),
        args.key_prefix.as_deref(),
        args.settings.as_deref(),
    )?;
    let mut store = spec.open()?;
    let mut stdout = std::io::stdout().lock();
    match &args.action {
        CooldownAction::Show { host, json } => {
            let mut listing = match host {
                Some(h) => {
                    let mut l = crate::cooldown::Listing::default();
                    l.cooldowns.extend(store.get(h, now)?);
                    l
                }
                None => store.list(now)?,
            };
            listing.cooldowns.sort_by(|a, b| a.host.cmp(&b.host));
            for bad in &listing.bad_records {
                tracing::warn!(host = %bad.host, "skipping an unreadable cooldown record: {}", bad.problem);
            }
            if *json {
                #[derive(serde::Serialize)]
                struct Row<'a> {
                    #[serde(flatten)]
                    cooldown: &'a Cooldown,
                    remaining_s: f64,
                    until_utc: String,
                }
                let rows: Vec<Row<'_>> = listing
                    .cooldowns
                    .iter()
                    .map(|c| Row {
                        cooldown: c,
                        remaining_s: c.until_wall - now,
                        until_utc: format_utc(c.until_wall),
                    })
                    .collect();
                let doc = serde_json::json!({
                    "store": store.describe(),
                    "now": now,
                    "cooldowns": rows,
                    "bad_records": listing.bad_records,
                });
                serde_json::to_writer_pretty(&mut stdout, &doc)?;
                writeln!(stdout)?;
            } else if listing.cooldowns.is_empty() {
                writeln!(stdout, "no active cooldowns in {}", store.describe())?;
            } else {
                writeln!(
                    stdout,
                    "{:<40} {:>10}  {:<20}  reason",
                    "host", "remaining", "until (UTC)"
                )?;
                for c in &listing.cooldowns {
                    writeln!(
                        stdout,
                        "{:<40} {:>10}  {:<20}  {}",
                        c.host,
                        format_remaining(c.until_wall - now),
                        format_utc(c.until_wall),
                        c.reason.as_deref().unwrap_or("")
                    )?;
                }
            }
        }
        CooldownAction::Open {
            host,
            seconds,
            reason,
        } => {
            if !(seconds.is_finite() && *seconds > 0.0) {
                bail_input!("--seconds must be positive, got {seconds}");
            }
            let until = now + seconds;
            store.set(host, until, reason, now)?;
            let host = crate::cooldown::store_host(host)?;
            writeln!(
                stdout,
                "{host}: cooldown until {} ({})",
                format_utc(until),
                format_remaining(*seconds)
            )?;
        }
        CooldownAction::Close { host } => {
            let removed = store.clear(host)?;
            let host = crate::cooldown::store_host(host)?;
            writeln!(
                stdout,
                "{host}: {}",
                if removed {
                    "cooldown cleared"
                } else {
                    "had no cooldown"
                }
            )?;
        }
        CooldownAction::Prune => {
            let n = store.prune(now)?;
            writeln!(
                stdout,
                "pruned {n} expired cooldowns from {}",
                store.describe()
            )?;
        }
    }
    Ok(())
}
