//! `export`: the telemetry SQLite files to the Parquet dataset, and its summary.

use std::io::Write;
use std::time::Duration;

use crate::cli::ExportArgs;
use crate::telemetry::{ExportOptions, ExportSummary, export};

pub(super) fn run_export(args: &ExportArgs) -> anyhow::Result<()> {
    if args.batch_rows == 0 {
        bail_input!("--batch-rows must be at least 1");
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
        bail_input!(
            "{} of {} telemetry files could not be exported ({}); the others were",
            failed.len(),
            summary.sources.len(),
            failed.join(", ")
        );
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
