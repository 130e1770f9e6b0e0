//! The plan for a terminal: what `advise` and `run` print to stdout, one line per
//! change, then the crawler changes and the hosts left alone.

use std::io::Write;

use crate::patch::PatchFile;

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
