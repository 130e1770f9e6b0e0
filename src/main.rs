//! The `breaker-advisor` binary: parse arguments, set up logging, run, map the outcome
//! to an exit code (0 ok, 1 input or usage error, 2 internal error, 3 changes proposed
//! under `run --check`).

use std::process::ExitCode;

use clap::Parser;

use breaker_advisor::cli::Cli;
use breaker_advisor::pipeline;

fn main() -> ExitCode {
    let cli = Cli::parse();
    pipeline::init_logging(cli.verbose, cli.quiet);
    match pipeline::run(cli.command) {
        Ok(code) => ExitCode::from(code),
        Err(e) if pipeline::is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(pipeline::exit_code(&e))
        }
    }
}
