//! Runs a parsed command: one file per command (`export`, `analyze`, `detect`, `advise`,
//! `apply`, `run`, `report`, `replay`, `simulate`, `cooldown`), each calling the stages in
//! order and printing their results to stdout, and the exit status of a failure. The
//! one place that turns stage results into user output.

pub mod advise;
pub mod analyze;
pub mod apply;
pub mod cooldown;
pub mod detect;
pub mod export;
pub mod fidelity_file;
pub mod model_file;
pub mod past_nights;
pub mod replay;
pub mod report;
pub mod run;
pub mod simulate;

use crate::cli::Command;
use crate::cooldown::CooldownError;
use crate::error::{ExitStatus, InputError};
use crate::telemetry::TelemetryError;

/// Logging on stderr: `-q` warnings, `-v` debug, `-vv` trace, or `RUST_LOG`.
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

/// How a failed command exits: [`ExitStatus::InputError`] for errors the user can fix
/// (bad input, bad arguments), [`ExitStatus::Internal`] for everything else. Every error
/// type the crate defines is named here, either way (the house test checks it), so a new
/// one cannot exit 2 unnoticed. A broken pipe is not a failure.
pub fn exit_status(e: &anyhow::Error) -> ExitStatus {
    if crate::error::is_broken_pipe(e) {
        return ExitStatus::Success;
    }
    let input = e.chain().any(|c| {
        c.is::<InputError>()
            || c.is::<CooldownError>()
            || c.is::<crate::settings::SettingsError>()
            || c.is::<crate::config::ConfigError>()
            || c.is::<crate::patch::PatchError>()
            || c.is::<crate::hostname::HostError>()
            || c.downcast_ref::<TelemetryError>().is_some_and(|t| {
                !matches!(t, TelemetryError::Io { .. } | TelemetryError::Polars { .. })
            })
    });
    // Internal: crate::output::OutputError (the disk), TelemetryError::Io and ::Polars.
    if input {
        ExitStatus::InputError
    } else {
        ExitStatus::Internal
    }
}

/// Runs a command; `Ok` carries its exit status (success, or changes for `run --check`).
pub fn run(command: Command) -> anyhow::Result<ExitStatus> {
    let done = |r: anyhow::Result<()>| r.map(|()| ExitStatus::Success);
    match command {
        Command::Export(args) => done(export::run_export(&args)),
        Command::Analyze(args) => done(analyze::run_analyze(&args)),
        Command::Detect(args) => done(detect::run_detect(&args)),
        Command::Advise(args) => advise::run_advise(&args),
        Command::Apply(args) => apply::run_apply(&args),
        Command::Run(args) => run::run_job(&args),
        Command::Report(args) => report::run_report(&args),
        Command::Replay(args) => replay::run_replay(&args),
        Command::Simulate(args) => done(simulate::run_simulate(&args)),
        Command::Cooldown(args) => done(cooldown::run_cooldown(&args)),
    }
}
