//! `apply`: a patch file onto the config files, both or neither, each edit the smallest
//! that keeps every comment.

use std::io::Write;
use std::path::Path;

use crate::cli::ApplyArgs;
use crate::error::ExitStatus;
use crate::output::write_all_atomic;
use crate::patch::{Applied, PatchFile, apply_breakers, apply_ratelimits, unified_diff};

/// The new texts of both config files under a patch, computed before anything is
/// written so a refused section leaves both files untouched.
pub(super) struct Edits {
    pub(super) breakers: Applied,
    pub(super) ratelimits: Applied,
}

pub(super) fn compute_edits(
    patch: &PatchFile,
    patch_path: &Path,
    config: &Path,
    breakers_text: &str,
    ratelimits: Option<(&Path, &str)>,
) -> anyhow::Result<Edits> {
    let breakers = apply_breakers(&patch.breakers, config, breakers_text)?;
    let ratelimits = match (&patch.ratelimits, ratelimits) {
        (Some(section), Some((path, text))) => apply_ratelimits(section, path, text)?,
        (Some(section), None) if !section.changes.is_empty() => bail_input!(
            "{}: the patch changes {} ({} changes); pass it with --ratelimits",
            patch_path.display(),
            section.file,
            section.changes.len()
        ),
        _ => Applied::Nothing,
    };
    Ok(Edits {
        breakers,
        ratelimits,
    })
}

pub(super) fn describe(a: &Applied) -> &'static str {
    match a {
        Applied::Changed(_) => "patched",
        Applied::AlreadyApplied => "already up to date",
        Applied::Nothing => "no changes",
    }
}

pub fn run_apply(args: &ApplyArgs) -> anyhow::Result<ExitStatus> {
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
    Ok(ExitStatus::Success)
}
