//! The integration tests, one binary (as cargo's `tests/testsuite` and uv's `tests/it`):
//! Polars is linked once, and the modules share `common`. Each module is one stage or one
//! concern, run through the library or the built binary. The acceptance checks on the
//! crawler's real config files are their own target (`tests/acceptance.rs`), outside the
//! README's command.

mod common;

mod advise;
mod cooldown;
mod detect;
mod export;
mod house;
mod interop;
mod metrics;
mod nights;
mod patch;
mod replay;
mod report;
mod run;
mod shards;
mod simulate;
mod workflow;
