//! breaker-advisor: reads a crawler fleet's HTTP telemetry and proposes circuit-breaker
//! and rate-limit settings per host.
//!
//! Module map (one module per pipeline stage; see ARCHITECTURE.md):
//! - [`telemetry`]: SQLite telemetry (every real variant) -> hive-partitioned Parquet
//!   dataset, incremental and crash-safe. Takes file paths, gives a dataset + summary.
//! - [`metrics`]: Polars over the dataset -> per-host summaries, bursts, time series.
//! - [`detect`]: change points per host -> incident segments, bucket labels (no I/O).
//! - [`advise`]: evidence per host + current config -> bounded, explained changes (no I/O).
//! - [`patch`]: the versioned patch file and its comment-preserving application.
//! - [`replay`]: a faithful breaker state machine replayed over recorded traffic.
//! - [`report`]: the Markdown PR body and the self-contained HTML report (rendering only).
//! - [`config`]: the crawler's breakers.yaml / ratelimits.yaml: models and text edits.
//! - [`crawler`]: the crawler model: what its breakers count and which settings take
//!   effect (read by the metrics, the replay and the advisor alike).
//! - [`simulate`]: synthetic telemetry with ground truth, deterministic from a seed.
//! - [`cooldown`]: the shared cooldown stores (SQLite, Redis) in the crawler's formats.
//! - [`settings`]: the tool's own settings file.
//! - [`hostname`]: host normalisation shared by every stage; [`breaker_state`]: the
//!   breaker's three states.
//! - [`frame`]: how a Polars query is collected (streaming).
//! - [`layout`]: the run folder, typed: every file a stage writes and the next reads.
//! - [`groups`]: host groups, how the stages after export bound their memory.
//! - [`shard`]: `--shard I/N` and the host hash; [`shards`]: a fleet advised by N shard
//!   jobs and one merge.
//! - [`cli`]: the command line (clap derive); [`pipeline`] runs a parsed command.
//! - [`error`]: the input error and the exit status, below everything; [`clock`]: `--now`
//!   and the UTC formats; [`output`]: every file written after export (atomic).

#[macro_use]
pub mod error;

pub mod advise;
pub mod breaker_state;
pub mod cli;
pub mod clock;
pub mod config;
pub mod cooldown;
pub mod crawler;
pub mod detect;
pub mod frame;
pub mod groups;
pub mod hostname;
pub mod layout;
pub mod metrics;
pub mod output;
pub mod patch;
pub mod pipeline;
pub mod replay;
pub mod report;
pub mod settings;
pub mod shard;
pub mod shards;
pub mod simulate;
pub mod telemetry;
