//! Synthetic crawler telemetry with ground truth, deterministic from a seed.
//!
//! Each host follows a regime (healthy noise, chronic low-level errors, rate limiting
//! with Retry-After, 5xx outages, flapping, timeouts) laid out as incident windows. A
//! Poisson stream of requests per host is spread over the fleet's machines, and each
//! request goes through that machine's pybreaker-like [`breaker::Breaker`] for the host
//! as the crawler sends it (the documented `crate::crawler::CrawlerModel`): every
//! attempt is admitted and counted, retryable statuses and exceptions are retried after
//! tenacity's wait (Retry-After for 429/503), the final outcome is recorded twice, a
//! timeout is not a breaker failure, a request denied or out of retries on an exception
//! leaves no row, a success clears the cooldown, cooldowns live per machine or
//! fleet-wide. Writes one telemetry SQLite per machine in either real variant and
//! `ground_truth.json` (incidents, policy, and per breaker instance its opens and exact
//! burst statistics) that later stages are scored against.

pub mod breaker;
pub mod limits;
mod sqlite;

mod host;
mod options;
mod truth;

use host::*;
pub use options::*;
pub use truth::*;

use std::path::PathBuf;

use serde::Serialize;

use crate::config::DEFAULT_FAILURE_STATUSES;

/// Summary of a simulation run.
#[derive(Debug, Clone, Serialize)]
pub struct SimSummary {
    /// One telemetry file per machine.
    pub telemetry: Vec<PathBuf>,
    pub ground_truth: PathBuf,
    pub rows: u64,
    pub transitions: u64,
    pub hosts: usize,
}

/// Writes `DIR/telemetry.sqlite` and `DIR/ground_truth.json`.
pub fn simulate(opts: &SimOptions) -> anyhow::Result<SimSummary> {
    anyhow::ensure!(opts.hosts > 0, "--hosts must be at least 1");
    anyhow::ensure!(
        opts.rps > 0.0 && opts.rps.is_finite(),
        "--rps must be positive"
    );
    anyhow::ensure!(
        opts.hours > 0.0 && opts.hours.is_finite(),
        "--hours must be positive"
    );
    anyhow::ensure!(opts.machines >= 1, "--machines must be at least 1");
    std::fs::create_dir_all(&opts.out)?;
    let mut sims: Vec<HostSim> = (0..opts.hosts).map(|i| HostSim::new(i, opts)).collect();
    let names: Vec<String> = sims.iter().map(|s| s.name.clone()).collect();
    let paths: Vec<PathBuf> = (0..opts.machines).map(|m| opts.telemetry_path(m)).collect();
    let mut writers = paths
        .iter()
        .enumerate()
        .map(|(m, p)| sqlite::Writer::create(p, opts.variant, opts.run_id(m), &names))
        .collect::<anyhow::Result<Vec<_>>>()?;

    let start = opts.night_start_s() as f64;
    let end = start + opts.hours * 3600.0;
    // Simulate in ten-minute chunks so memory stays small at any scale.
    let chunk_s = 600.0;
    let mut t = start;
    let mut rows = 0u64;
    let mut n_transitions = 0u64;
    while t < end {
        let until = (t + chunk_s).min(end);
        let mut chunk = Chunk::default();
        for (idx, sim) in sims.iter_mut().enumerate() {
            sim.run_until(idx, until, opts.rps, &mut chunk);
        }
        let Chunk {
            mut events,
            mut transitions,
            mut outcomes,
            mut rate_events,
        } = chunk;
        rate_events.sort_by_key(|e| (e.machine, e.ts_us, e.host_idx));
        outcomes.sort_by_key(|o| (o.machine, o.ts_us, o.host_idx));
        // Rows in the order each machine wrote them: by time (a row is written when its
        // request ends), then host.
        events.sort_by_key(|e| (e.machine, e.ts_us, e.host_idx));
        transitions.sort_by(|a, b| {
            a.machine
                .cmp(&b.machine)
                .then(a.transition.at_s.total_cmp(&b.transition.at_s))
                .then(a.host_idx.cmp(&b.host_idx))
        });
        for (m, w) in writers.iter_mut().enumerate() {
            let ev: Vec<Event> = events.iter().filter(|e| e.machine == m).cloned().collect();
            let tr: Vec<HostTransition> = transitions
                .iter()
                .filter(|x| x.machine == m)
                .cloned()
                .collect();
            let oc: Vec<OutcomeEvent> = outcomes
                .iter()
                .filter(|o| o.machine == m)
                .cloned()
                .collect();
            let re: Vec<RateEvent> = rate_events
                .iter()
                .filter(|e| e.machine == m)
                .cloned()
                .collect();
            w.write_chunk(&ev, &tr, &oc, &re)?;
        }
        rows += events.len() as u64;
        n_transitions += transitions.len() as u64;
        t = until;
    }
    for w in writers {
        w.finish()?;
    }

    let truth = GroundTruth {
        seed: opts.seed,
        variant: opts.variant,
        machines: opts.machines,
        cooldowns: opts.cooldowns,
        max_retries: opts.max_retries,
        night: opts.night.max(1),
        start_s: opts.night_start_s(),
        end_s: end.round() as i64,
        rps_per_host: opts.rps,
        failure_statuses: DEFAULT_FAILURE_STATUSES,
        quantile_method: "nearest-rank: the value at rank ceil(q * n) of the sorted burst lengths",
        hosts: sims.into_iter().map(HostSim::finish).collect(),
    };
    let truth_path = opts.out.join("ground_truth.json");
    let mut text = serde_json::to_string_pretty(&truth)?;
    text.push('\n');
    crate::output::write_atomic(&truth_path, text.as_bytes())?;
    Ok(SimSummary {
        telemetry: paths,
        ground_truth: truth_path,
        rows,
        transitions: n_transitions,
        hosts: names.len(),
    })
}
