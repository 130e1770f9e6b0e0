//! The advisor's input per host, gathered from the metrics tables and the incidents:
//! plain numbers and sorted burst lengths, so the rules stay testable without Polars.

use std::collections::BTreeMap;

use polars::prelude::*;

use crate::metrics::columns::{floats, ints, micros, strings};

/// Call counts of one request role of a host.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RoleEvidence {
    pub role: String,
    /// Rows (requests after retries) and their final 429s.
    pub calls_net: i64,
    pub e429: i64,
    /// Attempts (retried ones included) and the 429s among them; 0 when the metrics
    /// predate per-attempt counts (the rules then read the rows).
    pub attempts: i64,
    pub attempts_429: i64,
    /// The role's traffic per bucket of `window_s` seconds (`rate_windows.parquet`),
    /// with the bucket's number, in bucket order, for the quota estimate; empty when
    /// not read.
    pub windows: Vec<(i64, super::quota::Window)>,
    pub window_s: f64,
    /// What the server took per second (`host_role_summary`'s per-second columns),
    /// where the role met a 429.
    pub per_second: Option<super::quota::SecondCounts>,
}

impl RoleEvidence {
    /// (attempts, 429 attempts): what the server saw, retries included.
    pub fn attempt_counts(&self) -> (i64, i64) {
        (
            self.attempts.max(self.calls_net),
            self.attempts_429.max(self.e429),
        )
    }
}

/// One incident of a host, as the advisor uses it.
#[derive(Debug, Clone, PartialEq)]
pub struct IncidentEvidence {
    pub kind: String,
    pub start_us: i64,
    pub end_us: i64,
    pub duration_s: f64,
    pub ongoing: bool,
    pub retry_after_median_s: Option<f64>,
}

/// Everything the rules read about one host over the window.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HostEvidence {
    pub host: String,
    pub window_hours: f64,
    pub calls_net: i64,
    /// By role name.
    pub roles: Vec<RoleEvidence>,
    pub retry_after_samples: i64,
    pub retry_after_median_s: Option<f64>,
    pub half_open_trials: i64,
    pub half_open_trial_failures: i64,
    pub opens: i64,
    pub pingpong_flaps: i64,
    /// Sorted lengths of the failure bursts outside every incident of the host.
    pub background_bursts: Vec<u64>,
    /// Sorted lengths of the bursts that overlap an incident.
    pub incident_bursts: Vec<u64>,
    pub incidents: Vec<IncidentEvidence>,
}

impl HostEvidence {
    /// The role with the most network calls (ties: the first by name).
    pub fn dominant_role(&self) -> Option<&str> {
        self.roles
            .iter()
            .filter(|r| r.calls_net > 0)
            .fold(None::<&RoleEvidence>, |best, r| match best {
                Some(b) if b.calls_net >= r.calls_net => Some(b),
                _ => Some(r),
            })
            .map(|r| r.role.as_str())
    }
}

/// Builds the evidence of every host in `host_summary`, in its (host) order.
pub fn gather(
    host_summary: &DataFrame,
    host_role_summary: &DataFrame,
    bursts: &DataFrame,
    incidents: &DataFrame,
    window_hours: f64,
) -> PolarsResult<Vec<HostEvidence>> {
    let mut by_host: BTreeMap<String, HostEvidence> = BTreeMap::new();
    let hosts = strings(host_summary, "host")?;
    let calls = ints(host_summary, "calls_net")?;
    let ra_n = ints(host_summary, "retry_after_samples")?;
    let ra_med = floats(host_summary, "retry_after_median_s")?;
    let ho_n = ints(host_summary, "half_open_trials")?;
    let ho_fail = ints(host_summary, "half_open_trial_failures")?;
    let opens = ints(host_summary, "opens")?;
    let flaps = ints(host_summary, "pingpong_flaps")?;
    for i in 0..hosts.len() {
        by_host.insert(
            hosts[i].clone(),
            HostEvidence {
                host: hosts[i].clone(),
                window_hours,
                calls_net: calls[i].unwrap_or(0),
                retry_after_samples: ra_n[i].unwrap_or(0),
                retry_after_median_s: ra_med[i],
                half_open_trials: ho_n[i].unwrap_or(0),
                half_open_trial_failures: ho_fail[i].unwrap_or(0),
                opens: opens[i].unwrap_or(0),
                pingpong_flaps: flaps[i].unwrap_or(0),
                ..HostEvidence::default()
            },
        );
    }

    let (rh, rr) = (
        strings(host_role_summary, "host")?,
        strings(host_role_summary, "role")?,
    );
    let (rc, r429) = (
        ints(host_role_summary, "calls_net")?,
        ints(host_role_summary, "e429")?,
    );
    let (ra, ra429) = (
        ints(host_role_summary, "attempts").unwrap_or_default(),
        ints(host_role_summary, "attempts_429").unwrap_or_default(),
    );
    // Metrics written before the per-second columns have none: no cap is read.
    let per_second = |c: &str| ints(host_role_summary, c).unwrap_or_default();
    let (busy, max, cap, at_cap, over) = (
        per_second("busy_seconds"),
        per_second("max_per_second"),
        per_second("second_cap"),
        per_second("seconds_at_cap"),
        per_second("seconds_over_cap"),
    );
    let mean = floats(host_role_summary, "accepted_per_busy_second").unwrap_or_default();
    let at = |v: &[Option<i64>], i: usize| v.get(i).copied().flatten().unwrap_or(0);
    let some = |v: &[Option<i64>], i: usize| v.get(i).copied().flatten();
    for i in 0..rh.len() {
        if let Some(h) = by_host.get_mut(&rh[i]) {
            let seconds = match (some(&busy, i), mean.get(i).copied().flatten()) {
                (Some(busy_seconds), Some(mean)) => Some(super::quota::SecondCounts {
                    busy_seconds,
                    mean,
                    max: at(&max, i),
                    cap: some(&cap, i),
                    at_cap: at(&at_cap, i),
                    over_cap: at(&over, i),
                }),
                _ => None,
            };
            h.roles.push(RoleEvidence {
                role: rr[i].clone(),
                calls_net: rc[i].unwrap_or(0),
                e429: r429[i].unwrap_or(0),
                attempts: at(&ra, i),
                attempts_429: at(&ra429, i),
                per_second: seconds,
                ..RoleEvidence::default()
            });
        }
    }

    let ih = strings(incidents, "host")?;
    let ik = strings(incidents, "kind")?;
    let (is, ie) = (micros(incidents, "start")?, micros(incidents, "end")?);
    let ion: Vec<bool> = incidents
        .column("ongoing")?
        .bool()?
        .iter()
        .map(|b| b.unwrap_or(false))
        .collect();
    let ira = floats(incidents, "retry_after_median_s")?;
    for i in 0..ih.len() {
        if let Some(h) = by_host.get_mut(&ih[i]) {
            h.incidents.push(IncidentEvidence {
                kind: ik[i].clone(),
                start_us: is[i],
                end_us: ie[i],
                duration_s: (ie[i] - is[i]) as f64 / 1e6,
                ongoing: ion[i],
                retry_after_median_s: ira[i],
            });
        }
    }

    let bh = strings(bursts, "host")?;
    let (bs, be) = (micros(bursts, "start")?, micros(bursts, "end")?);
    let bl = ints(bursts, "length")?;
    for i in 0..bh.len() {
        let Some(h) = by_host.get_mut(&bh[i]) else {
            continue;
        };
        let len = bl[i].unwrap_or(0).max(0) as u64;
        let inside = h
            .incidents
            .iter()
            .any(|inc| bs[i] < inc.end_us && be[i] >= inc.start_us);
        if inside {
            h.incident_bursts.push(len);
        } else {
            h.background_bursts.push(len);
        }
    }
    let mut out: Vec<HostEvidence> = by_host.into_values().collect();
    for h in &mut out {
        h.background_bursts.sort_unstable();
        h.incident_bursts.sort_unstable();
        h.roles.sort_by(|a, b| a.role.cmp(&b.role));
        h.incidents.sort_by_key(|i| (i.start_us, i.kind.clone()));
    }
    Ok(out)
}

/// Adds each role's windows from `rate_windows.parquet` (written with buckets of
/// `window_s` seconds) to the hosts' evidence; `limiters` names the column that counts
/// the rate limiters behind a window (`processes`, `machines`, or None: one shared).
pub fn attach_rate_windows(
    hosts: &mut [HostEvidence],
    rate_windows: &DataFrame,
    window_s: f64,
    limiters: Option<&str>,
) -> PolarsResult<()> {
    let (h, r) = (
        strings(rate_windows, "host")?,
        strings(rate_windows, "role")?,
    );
    let (a, k) = (
        ints(rate_windows, "attempts")?,
        ints(rate_windows, "attempts_429")?,
    );
    // Older metrics folders have no HEAD column: no HEAD attempts known.
    let heads = ints(rate_windows, "attempts_head").unwrap_or_default();
    let p = match limiters {
        Some(c) => ints(rate_windows, c)?,
        None => Vec::new(),
    };
    let b = ints(rate_windows, "bucket")?;
    let mut by: BTreeMap<(&str, &str), Vec<(i64, super::quota::Window)>> = BTreeMap::new();
    for i in 0..h.len() {
        by.entry((&h[i], &r[i])).or_default().push((
            b[i].unwrap_or(0),
            super::quota::Window::bucket(
                a[i].unwrap_or(0) - k[i].unwrap_or(0),
                k[i].unwrap_or(0),
                heads.get(i).copied().flatten().unwrap_or(0),
                p.get(i).copied().flatten().unwrap_or(1),
            ),
        ));
    }
    for host in hosts.iter_mut() {
        for role in &mut host.roles {
            if let Some(mut ws) = by.remove(&(host.host.as_str(), role.role.as_str())) {
                ws.sort_by_key(|&(b, _)| b);
                role.windows = ws;
                role.window_s = window_s;
            }
        }
    }
    Ok(())
}
