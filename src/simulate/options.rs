//! What to simulate: the fleet's shape (hosts, machines, processes, hours, rate), the
//! crawler's accounting switches, quotas, and where the telemetry files go.

use std::path::PathBuf;

use serde::Serialize;

use crate::crawler::Scope;

/// Which real telemetry variant to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Variant {
    /// The crawler's declared schema: `ts REAL`, `breaker_state`, `breaker_transitions`.
    Schema,
    /// Its SQLite sink: ISO `timestamp TEXT`, `breaker_host_state`, transitions as
    /// `breaker_events` JSON payloads with pybreaker reprs, some columns missing.
    Sink,
}

#[derive(Debug, Clone)]
pub struct SimOptions {
    pub out: PathBuf,
    pub hours: f64,
    pub hosts: usize,
    /// Mean calls per second per host.
    pub rps: f64,
    pub seed: u64,
    pub variant: Variant,
    /// Start of the simulated period, epoch seconds (UTC).
    pub start_s: i64,
    /// Crawler machines, each one process with its own breakers and telemetry file.
    pub machines: usize,
    /// Where Retry-After cooldowns live: per machine, or in a store the fleet shares.
    pub cooldowns: Scope,
    /// tenacity's `max_retries` (attempts = retries + 1).
    pub max_retries: u32,
    /// The crawler's breakers.yaml: when given, each host's breakers run the settings
    /// the crawler would run under it (`CrawlerModel::policy`), instead of the
    /// simulator's own per-behaviour settings.
    pub config: Option<crate::config::BreakerConfig>,
    /// Night K (from 1) of a series: every host keeps its behaviour, with new noise and
    /// incident times, and the night starts `(K - 1) * hours` after `start_s`. Night 1
    /// is the series' first draw.
    pub night: u32,
    /// The crawler's ratelimits.yaml: when given, every attempt goes through the
    /// crawler's limiter for its host and role (`limits::Limiter`), one per process
    /// (`backend.kind` memory, multiprocess, sqlite) or one for the fleet (redis,
    /// postgres), and `rate_events` records each acquire and refusal.
    pub ratelimits: Option<crate::config::rates::RateLimits>,
    /// Give the chronic-noise and timeout hosts a server quota on their metadata and
    /// landing roles, with a load that rises and falls through the night (ground
    /// truth: `quotas`).
    pub quotas: bool,
    /// The quotas' windows in seconds, dealt to the quota hosts in turn (timeout host,
    /// then chronic-noise host, by index): `[60.0]` gives every one a per-minute quota,
    /// `[60.0, 3600.0]` alternates minute and hour. Each allows 80% of the host's mean
    /// requests over its window.
    pub quota_windows: Vec<f64>,
    /// How the simulated crawler's breakers count (the documented model by default):
    /// cache hits, exceptions, retried attempts, the final outcome's repeat and a
    /// success clearing the cooldown follow it, so tests can cover crawlers that
    /// account differently. Breakers stay one per machine; cooldowns follow `cooldowns`.
    pub crawler: crate::crawler::CrawlerModel,
    /// A request that raised on an exception (out of retries) leaves a row: no status,
    /// the error (the documented crawler writes none).
    pub exception_rows: bool,
}

impl SimOptions {
    /// One machine, per-process cooldowns, the crawler's three retries.
    pub fn new(out: impl Into<PathBuf>, hours: f64, hosts: usize, rps: f64, seed: u64) -> Self {
        SimOptions {
            out: out.into(),
            hours,
            hosts,
            rps,
            seed,
            variant: Variant::Schema,
            start_s: DEFAULT_START_S,
            machines: 1,
            cooldowns: Scope::Process,
            max_retries: 3,
            config: None,
            night: 1,
            ratelimits: None,
            quotas: false,
            quota_windows: vec![60.0],
            crawler: crate::crawler::CrawlerModel::default(),
            exception_rows: false,
        }
    }

    /// When night `night` starts, epoch seconds.
    pub fn night_start_s(&self) -> i64 {
        self.start_s + (f64::from(self.night.max(1) - 1) * self.hours * 3600.0).round() as i64
    }

    /// The telemetry file of machine `m` (0-based): `telemetry.sqlite` for a single
    /// machine, else `telemetry-1.sqlite` ... `telemetry-N.sqlite`.
    pub fn telemetry_path(&self, m: usize) -> PathBuf {
        if self.machines <= 1 {
            self.out.join("telemetry.sqlite")
        } else {
            self.out.join(format!("telemetry-{}.sqlite", m + 1))
        }
    }

    /// The run id machine `m` writes.
    /// The crawler process of machine `m` (a new one each night after the first).
    pub fn run_id(&self, m: usize) -> String {
        let night = if self.night > 1 {
            format!("-n{}", self.night)
        } else {
            String::new()
        };
        if self.machines <= 1 {
            format!("sim-{}{night}", self.seed)
        } else {
            format!("sim-{}-m{}{night}", self.seed, m + 1)
        }
    }
}

/// Default start of a simulation: 2025-11-25T00:00:00Z.
pub const DEFAULT_START_S: i64 = 1_764_028_800;
