//! The command line: clap derive only. Doc comments here are the `--help` text.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::simulate::Variant;

/// Proposes circuit-breaker and rate-limit settings per host from a crawler fleet's
/// HTTP telemetry. The nightly job exports the telemetry SQLite files to Parquet,
/// computes per-host metrics, and turns them into a reviewed breakers.yaml change.
///
/// Logs go to stderr (-v for more, or RUST_LOG=breaker_advisor=debug); results to stdout.
#[derive(Debug, Parser)]
#[command(name = "breaker-advisor", version, propagate_version = true)]
pub struct Cli {
    /// More log output on stderr (-v: debug, -vv: trace).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Only warnings and errors on stderr.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Export telemetry SQLite files to a hive-partitioned Parquet dataset.
    ///
    /// Incremental: DIR/_manifest.json remembers, per file, the last row exported, so a
    /// nightly rerun appends only new rows and running twice adds no duplicates.
    /// Crash-safe: a failed or killed run leaves the previous dataset readable.
    ///
    /// Example: breaker-advisor export --telemetry a.sqlite --telemetry b.sqlite --out data/
    Export(ExportArgs),
    /// Compute per-host metrics over a time window of an exported dataset.
    ///
    /// Writes host_summary, host_role_summary, bursts and host_timeseries as Parquet
    /// into --out. The window ends at --now (default: where the fleet's traffic ends, so
    /// reruns on the same data agree; rows a clock put past it are set aside and listed)
    /// and spans --window.
    ///
    /// Example: breaker-advisor analyze --data data/ --config breakers.yaml --window 24h
    Analyze(AnalyzeArgs),
    /// Find incidents per host: change points in the 429, 5xx and timeout rates.
    ///
    /// Reads host_timeseries.parquet from `analyze`, writes incidents.parquet beside it and
    /// adds the `unhealthy` bucket label to host_timeseries.parquet.
    ///
    /// Example: breaker-advisor detect --metrics data/metrics
    Detect(DetectArgs),
    /// Propose breakers.yaml / ratelimits.yaml changes from the metrics and incidents.
    ///
    /// Prints the plan (host, change, reason) or, with --json, the patch file; writes the
    /// patch file with --patch-out. Exit 0 whether or not changes are proposed.
    ///
    /// Example: breaker-advisor advise --metrics data/metrics --config breakers.yaml --ratelimits ratelimits.yaml
    Advise(AdviseArgs),
    /// Apply a patch file to breakers.yaml (and ratelimits.yaml) in place.
    ///
    /// Only the changed values' lines differ; comments, blank lines, key order, quoting
    /// and flow lists stay. A patch made for another version of a file is refused
    /// (stale); applying the same patch twice changes nothing.
    ///
    /// Example: breaker-advisor apply --patch out/breakers.patch.yaml --config breakers.yaml --ratelimits ratelimits.yaml
    Apply(ApplyArgs),
    /// The nightly job: export -> analyze -> detect -> advise -> patch -> report.
    ///
    /// Without --telemetry it runs on data-samples/ (its telemetry, breakers.yaml and
    /// ratelimits.yaml). Writes into --out: dataset/, metrics/, breakers.patch.yaml,
    /// proposed/ (the patched config files), changes.diff, report.md and report.html. Exit codes: 0 done, 1 bad
    /// input, 2 internal error, 3 changes proposed (only with --check).
    ///
    /// Example: breaker-advisor run --telemetry a.sqlite --config breakers.yaml --ratelimits ratelimits.yaml --out out/ --write
    Run(RunArgs),
    /// Write report.md (the pull-request body) and report.html (charts) for a run.
    ///
    /// Reads the run's output folder (dataset/, metrics/, breakers.patch.yaml). `run`
    /// does this itself; this command redoes it. With $GITHUB_STEP_SUMMARY set, the
    /// Markdown is also appended to the job summary.
    ///
    /// Example: breaker-advisor report --out out/ --config breakers.yaml
    Report(ReportArgs),
    /// Replay recorded traffic under a breaker policy: what would it have done?
    ///
    /// Per host: opens, half-open trials, calls blocked while the host was healthy
    /// (false trips), failed calls let through during incidents, time from incident onset
    /// to the first open, flaps; beside the recorded breaker's opens. Calls the recorded
    /// breaker blocked (no rows) are filled in deterministically from the incidents.
    ///
    /// Example: breaker-advisor replay --data out/dataset --config breakers.yaml --policy fail_max=3,reset_timeout_s=90
    Replay(ReplayArgs),
    /// Write synthetic telemetry (and its ground truth) for tests, demos and benchmarks.
    ///
    /// Deterministic: the same options and seed give the same rows.
    ///
    /// Example: breaker-advisor simulate --out sim/ --hours 24 --hosts 12 --rps 2 --seed 7
    Simulate(SimulateArgs),
    /// Show or change the cooldown store the crawler machines share.
    ///
    /// A cooldown tells every crawler "do not call this host until T". The store is the
    /// first of: --store, $BREAKER_ADVISOR_COOLDOWN_STORE, `cooldown_store.url` in the
    /// settings file (--settings, default ./breaker-advisor.yaml).
    ///
    /// Example: breaker-advisor cooldown --store sqlite:cooldowns.sqlite open api.example.org --seconds 600 --reason maintenance
    Cooldown(CooldownArgs),
}

/// How much of the fleet one process computes at once.
#[derive(Debug, Clone, Args)]
pub struct ScaleArgs {
    /// Memory for the stages after export: hosts are computed in groups whose rows of
    /// the window fit it (1GiB, 512MiB). The outputs are the same whatever the budget;
    /// a smaller one only takes longer.
    #[arg(long, default_value = "1GiB", value_parser = crate::groups::parse_budget, value_name = "SIZE")]
    pub memory_budget: u64,
}

impl ScaleArgs {
    /// The rows of the window one group of hosts may hold.
    pub fn group_rows(&self) -> u64 {
        crate::groups::rows_for_budget(self.memory_budget)
    }
}

#[derive(Debug, Args)]
pub struct AdviseArgs {
    /// Folder written by `analyze` and `detect`.
    #[arg(long, value_name = "DIR")]
    pub metrics: PathBuf,
    /// The dataset, for the replay check of breaker proposals (default: the metrics
    /// folder's parent when it is a dataset; without one, no replay check).
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// The crawler's breakers.yaml the advice is for.
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
    /// The crawler's ratelimits.yaml (rate advice only when given).
    #[arg(long, value_name = "FILE")]
    pub ratelimits: Option<PathBuf>,
    /// Settings file with an `advise:` section (default: ./breaker-advisor.yaml if present).
    #[arg(long, value_name = "FILE")]
    pub settings: Option<PathBuf>,
    /// The previous run's patch file: its version and rate baselines carry over
    /// (default: --patch-out when that file exists).
    #[arg(long, value_name = "FILE")]
    pub previous: Option<PathBuf>,
    /// Write the patch file here.
    #[arg(long, value_name = "FILE")]
    pub patch_out: Option<PathBuf>,
    /// Print the patch file as JSON instead of the plan for humans.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub scale: ScaleArgs,
}

#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// The patch file written by `advise` or `run`.
    #[arg(long, value_name = "FILE")]
    pub patch: PathBuf,
    /// The breakers.yaml to edit in place.
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
    /// The ratelimits.yaml to edit in place (required when the patch changes rates).
    #[arg(long, value_name = "FILE")]
    pub ratelimits: Option<PathBuf>,
    /// Print the diff and change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Crawler telemetry SQLite files (repeat for a fleet). Default: data-samples/telemetry*.sqlite.
    #[arg(long = "telemetry", short = 't', value_name = "FILE")]
    pub telemetry: Vec<PathBuf>,
    /// The crawler's breakers.yaml (default with no --telemetry: data-samples/breakers.yaml).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The crawler's ratelimits.yaml (default with no --telemetry: data-samples/ratelimits.yaml).
    #[arg(long, value_name = "FILE")]
    pub ratelimits: Option<PathBuf>,
    /// Output folder; the dataset inside it grows night after night.
    #[arg(long, short = 'o', default_value = "out", value_name = "DIR")]
    pub out: PathBuf,
    /// The patch file: the previous one is read from here (version, rate baselines) and
    /// the new one written here. Keep it with the config files so it persists between
    /// nights [default: OUT/breakers.patch.yaml].
    #[arg(long, value_name = "FILE")]
    pub patch_file: Option<PathBuf>,
    /// Apply the patch to --config and --ratelimits in place.
    #[arg(long)]
    pub write: bool,
    /// Exit with code 3 when changes are proposed (for CI).
    #[arg(long)]
    pub check: bool,
    /// Where readers find report.html (for example the CI run's page, which holds it as
    /// an artifact): linked from report.md wherever the PR body is cut.
    #[arg(long, value_name = "URL")]
    pub report_url: Option<String>,
    /// Settings file (`advise:` and `detect:` sections; default: ./breaker-advisor.yaml if present).
    #[arg(long, value_name = "FILE")]
    pub settings: Option<PathBuf>,
    /// Window length: 24h, 90m, 7d.
    #[arg(long, default_value = "24h", value_parser = parse_duration_s)]
    pub window: i64,
    /// End of the window, RFC 3339 or epoch seconds (default: where the fleet's traffic
    /// ends; rows past it are set aside). Also the "now" of --push-cooldowns (default
    /// there: the system clock).
    #[arg(long, value_name = "TIME")]
    pub now: Option<String>,
    /// For each host whose latest incident is still going on at the end of the window,
    /// set a cooldown until its expected recovery (reason advisor:incident). Prints what
    /// it would set unless --yes; never shortens a longer deadline already stored.
    #[arg(long)]
    pub push_cooldowns: bool,
    /// Really write the cooldowns of --push-cooldowns.
    #[arg(long, requires = "push_cooldowns")]
    pub yes: bool,
    /// Cooldown store for --push-cooldowns: sqlite:PATH, redis://..., rediss://...
    #[arg(long, env = crate::cooldown::STORE_ENV, hide_env_values = true, value_name = "STORE")]
    pub store: Option<String>,
    /// Redis key prefix (default: the settings file's, else breaker:cooldown:).
    #[arg(long, value_name = "PREFIX")]
    pub key_prefix: Option<String>,
    /// Advise only the hosts of shard I of N (1-based, by a stable hash of the host
    /// name) into OUT/shard=I/ (dataset, metrics, shard.yaml); `--merge-shards` then
    /// makes the fleet's patch, diff and report. Needs --now: every shard must analyse
    /// the same window.
    #[arg(
        long,
        value_name = "I/N",
        requires = "now",
        conflicts_with_all = ["merge_shards", "write", "check", "push_cooldowns", "report_url"]
    )]
    pub shard: Option<crate::shard::Shard>,
    /// Make the fleet's patch, diff and report from the shard jobs' OUT/shard=*/
    /// folders (every shard of the night, made from the same config, settings and patch
    /// file); reads no telemetry.
    #[arg(long, conflicts_with = "telemetry")]
    pub merge_shards: bool,
    #[command(flatten)]
    pub scale: ScaleArgs,
}

#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// Crawler telemetry SQLite files (exported to a scratch dataset first).
    #[arg(
        long = "telemetry",
        short = 't',
        value_name = "FILE",
        conflicts_with = "data"
    )]
    pub telemetry: Vec<PathBuf>,
    /// A dataset written by `export`.
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// Its metrics and incidents (analyze + detect) [default: DATA/metrics; computed in
    /// a scratch folder when missing].
    #[arg(long, value_name = "DIR", requires = "data")]
    pub metrics: Option<PathBuf>,
    /// The crawler's breakers.yaml: each host's policy and the status classification.
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
    /// Only this host.
    #[arg(long)]
    pub host: Option<String>,
    /// Override the policy for every host: fail_max=3,reset_timeout_s=90,...
    #[arg(long, value_name = "KEY=VALUE,...")]
    pub policy: Option<String>,
    /// Window length: 24h, 90m, 7d.
    #[arg(long, default_value = "24h", value_parser = parse_duration_s)]
    pub window: i64,
    /// End of the window, RFC 3339 or epoch seconds (default: where the fleet's traffic
    /// ends; rows past it are set aside).
    #[arg(long, value_name = "TIME")]
    pub now: Option<String>,
    /// One JSON object per host instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Settings file with a `crawler:` section, the crawler model the replay runs
    /// (default: ./breaker-advisor.yaml if present, else the documented model).
    #[arg(long, value_name = "FILE")]
    pub settings: Option<PathBuf>,
    #[command(flatten)]
    pub scale: ScaleArgs,
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// Where readers find report.html (for example the CI run's page, which holds it as
    /// an artifact): linked from report.md wherever the PR body is cut.
    #[arg(long, value_name = "URL")]
    pub report_url: Option<String>,
    /// The output folder of `run`; report.md and report.html are written into it.
    #[arg(long, short = 'o', default_value = "out", value_name = "DIR")]
    pub out: PathBuf,
    /// The breakers.yaml the run advised on (its current values are charted).
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
    /// The run's patch file [default: OUT/breakers.patch.yaml].
    #[arg(long, value_name = "FILE")]
    pub patch_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct CooldownArgs {
    /// The store: sqlite:PATH, redis://[user:pass@]host:port/db, or rediss://... for TLS.
    /// Like the other options of the group, accepted before or after the action.
    #[arg(
        long,
        global = true,
        env = crate::cooldown::STORE_ENV,
        hide_env_values = true,
        value_name = "STORE"
    )]
    pub store: Option<String>,
    /// Redis key prefix (default: the settings file's, else breaker:cooldown:).
    #[arg(long, global = true, value_name = "PREFIX")]
    pub key_prefix: Option<String>,
    /// Settings file with a cooldown_store section (default: ./breaker-advisor.yaml if present).
    #[arg(long, global = true, value_name = "FILE")]
    pub settings: Option<PathBuf>,
    /// The current time, RFC 3339 or epoch seconds, instead of the system clock.
    #[arg(long, global = true, value_name = "TIME")]
    pub now: Option<String>,
    #[command(subcommand)]
    pub action: CooldownAction,
}

#[derive(Debug, Subcommand)]
pub enum CooldownAction {
    /// List live cooldowns: host, time remaining, deadline (UTC), reason; sorted by host.
    Show {
        /// Only this host.
        #[arg(long)]
        host: Option<String>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Stop all crawlers calling HOST for the given time.
    Open {
        host: String,
        #[arg(long)]
        seconds: f64,
        /// Why (kept to 128 characters).
        #[arg(long, default_value = "cli-open")]
        reason: String,
    },
    /// Let crawlers call HOST again.
    Close { host: String },
    /// Delete expired cooldowns.
    Prune,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// A crawler telemetry SQLite file (repeat for a fleet: one file per machine).
    /// The path as given names the source in the dataset; give the same path each night.
    #[arg(long = "telemetry", short = 't', value_name = "FILE", required = true)]
    pub telemetry: Vec<PathBuf>,
    /// Dataset folder to create or append to.
    #[arg(long, short = 'o', value_name = "DIR")]
    pub out: PathBuf,
    /// Rows per in-memory batch; bounds memory. Each batch is written sorted by host,
    /// in row groups of at most 16,384 rows that end at a host's last row once they hold
    /// 4,096 (a reader of a few hosts skips the others'); larger batches sort more rows
    /// together.
    #[arg(long, default_value_t = crate::telemetry::DEFAULT_BATCH_ROWS, value_name = "ROWS")]
    pub batch_rows: usize,
    /// How long to wait for a crawler's write lock on a file, in milliseconds.
    #[arg(long, default_value_t = 5_000, value_name = "MS")]
    pub busy_timeout_ms: u64,
    /// When a file was replaced since the last export (its first row or its last
    /// exported row changed), drop its earlier rows from the dataset and export it again,
    /// instead of failing on it.
    #[arg(long)]
    pub replace_changed: bool,
    /// Export only the hosts of shard I of N (1-based, by a stable hash of the host
    /// name), for fleets advised by several jobs; the dataset then holds that shard
    /// night after night.
    #[arg(long, value_name = "I/N")]
    pub shard: Option<crate::shard::Shard>,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct AnalyzeArgs {
    /// Dataset folder written by `export`.
    #[arg(long, value_name = "DIR")]
    pub data: PathBuf,
    /// Output folder for the metrics tables (default: DATA/metrics).
    #[arg(long, short = 'o', value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// The crawler's breakers.yaml: status classification, Retry-After caps, reset
    /// timeouts. Without it the crawler's code defaults apply.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Window length: 24h, 90m, 7d, 3600s.
    #[arg(long, default_value = "24h", value_parser = parse_duration_s)]
    pub window: i64,
    /// End of the window, RFC 3339 or epoch seconds (default: where the fleet's traffic
    /// ends; rows past it are set aside).
    #[arg(long, value_name = "TIME")]
    pub now: Option<String>,
    /// Time-series bucket: 1m, 5m, 1h.
    #[arg(long, default_value = "1m", value_parser = parse_duration_s)]
    pub bucket: i64,
    /// EWMA half-life in buckets.
    #[arg(long, default_value_t = 10.0)]
    pub half_life: f64,
    /// Trailing baseline before the window (baseline_* columns, "worse than usual");
    /// the part the data covers is reported as baseline_hours.
    #[arg(long, default_value = "7d", value_parser = parse_duration_s)]
    pub baseline: i64,
    /// Settings file with a `crawler:` section, the crawler model the metrics count by
    /// (default: ./breaker-advisor.yaml if present, else the documented model).
    #[arg(long, value_name = "FILE")]
    pub settings: Option<PathBuf>,
    #[command(flatten)]
    pub scale: ScaleArgs,
}

#[derive(Debug, Args)]
pub struct DetectArgs {
    /// Folder written by `analyze` (holds host_timeseries.parquet).
    #[arg(long, value_name = "DIR")]
    pub metrics: PathBuf,
    /// The dataset, for the median Retry-After inside each incident (default: the
    /// metrics folder's parent, when it is a dataset).
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// Settings file whose `detect:` section gives defaults for the flags below
    /// (default: ./breaker-advisor.yaml if present).
    #[arg(long, value_name = "FILE")]
    pub settings: Option<PathBuf>,
    /// Change-point detector [default: pelt-binomial].
    #[arg(long, value_enum)]
    pub detector: Option<crate::detect::DetectorKind>,
    /// PELT penalty per change point, in multiples of ln(buckets) [default: 2].
    #[arg(long)]
    pub penalty: Option<f64>,
    /// Minimum excess of an incident's failure rate over the host's background
    /// [default: 0.02].
    #[arg(long)]
    pub min_excess: Option<f64>,
    /// Minimum incident length in buckets; shorter spikes are not incidents [default: 2].
    #[arg(long)]
    pub min_incident_buckets: Option<usize>,
    /// BOCPD: expected buckets between changes (inverse hazard) [default: 250].
    #[arg(long)]
    pub bocpd_hazard: Option<f64>,
    /// BOCPD: Normal-Gamma prior scale; smaller finds milder changes [default: 0.01].
    #[arg(long)]
    pub bocpd_prior_scale: Option<f64>,
}

/// Parses `90`, `90s`, `15m`, `24h`, `7d` into seconds.
pub fn parse_duration_s(text: &str) -> Result<i64, String> {
    let t = text.trim();
    let (num, unit) = t
        .find(|c: char| !c.is_ascii_digit())
        .map_or((t, "s"), |i| t.split_at(i));
    let n: i64 = num
        .parse()
        .map_err(|_| format!("{text:?}: expected a duration like 90s, 15m, 24h or 7d"))?;
    let mult = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => {
            return Err(format!(
                "{text:?}: unknown unit {unit:?} (use s, m, h or d)"
            ));
        }
    };
    if n <= 0 {
        return Err(format!("{text:?}: must be positive"));
    }
    Ok(n * mult)
}

#[derive(Debug, Args)]
pub struct SimulateArgs {
    /// Folder for telemetry.sqlite and ground_truth.json.
    #[arg(long, short = 'o', value_name = "DIR")]
    pub out: PathBuf,
    /// Simulated hours.
    #[arg(long, default_value_t = 24.0)]
    pub hours: f64,
    /// Number of hosts; regimes cycle through healthy, rate-limited, outages,
    /// flapping, timeouts and chronic errors.
    #[arg(long, default_value_t = 12)]
    pub hosts: usize,
    /// Mean calls per second per host.
    #[arg(long, default_value_t = 2.0)]
    pub rps: f64,
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Telemetry variant to write.
    #[arg(long, value_enum, default_value_t = Variant::Schema)]
    pub variant: Variant,
    /// Start of the simulated period (RFC 3339, UTC).
    #[arg(long, default_value = "2025-11-25T00:00:00Z")]
    pub start: String,
    /// Crawler machines, each one process with its own breakers and telemetry file
    /// (telemetry.sqlite for one, telemetry-1.sqlite ... for several).
    #[arg(long, default_value_t = 1)]
    pub machines: usize,
    /// Retry-After cooldowns per machine (in-memory store) or shared by the fleet.
    #[arg(long, value_enum, default_value_t = crate::crawler::Scope::Process)]
    pub cooldowns: crate::crawler::Scope,
    /// Retries per request (tenacity's max_retries).
    #[arg(long, default_value_t = 3)]
    pub max_retries: u32,
    /// The crawler's breakers.yaml: each host's breakers run the settings the crawler
    /// would run under it (default: the simulator's own settings per behaviour, the ones
    /// data-samples/breakers.yaml records).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Night K of a series: the same hosts with the same behaviour, new noise and
    /// incident times, starting (K - 1) x --hours after --start.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub night: u32,
    /// The crawler's ratelimits.yaml: every attempt waits for its host and role's
    /// limiter as the crawler's does (at most max_delay_ms, then the request raises),
    /// and rate_events records each acquire and refusal (default: no limiter).
    #[arg(long, value_name = "FILE")]
    pub ratelimits: Option<PathBuf>,
    /// Give the chronic-noise and timeout hosts a server quota on their metadata and
    /// landing requests (80% of their mean rate per minute, under a load that rises
    /// and falls); ground_truth.json lists them.
    #[arg(long)]
    pub quotas: bool,
    /// The quotas' windows, dealt to the quota hosts in turn (second, minute, hour,
    /// day; comma-separated): `minute,hour` gives every other quota host a per-hour
    /// quota. Implies --quotas.
    #[arg(long, value_name = "UNITS", value_delimiter = ',', value_parser = quota_window)]
    pub quota_windows: Vec<f64>,
    /// How the simulated crawler's breakers count: a YAML mapping of crawler-model
    /// fields, as the settings file's `crawler:` section (default: the documented
    /// model). Its cache-hit, exception, retry, final-outcome and cooldown-clearing
    /// fields take effect; breakers stay one per machine, cooldowns follow --cooldowns.
    #[arg(long, value_name = "FILE")]
    pub crawler: Option<PathBuf>,
    /// A request that raised on an exception leaves a row (no status, its error), as a
    /// crawler that logs them would write.
    #[arg(long)]
    pub exception_rows: bool,
}

/// A quota window named by the unit a rate string uses, in seconds.
fn quota_window(unit: &str) -> Result<f64, String> {
    crate::config::rates::unit_seconds(unit)
        .ok_or_else(|| format!("{unit:?} is not a window: second, minute, hour or day"))
}
