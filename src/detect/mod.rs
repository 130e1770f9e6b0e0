//! Stage 3, detect: change points per host and failure kind over the bucketed counts of
//! `host_timeseries`, turned into incident segments and a healthy/unhealthy label per
//! bucket. Two detectors behind one setting: an exact PELT with a binomial cost (the
//! default) and augurs' Bayesian online detector (BOCPD) on a variance-stabilised ratio.
//! Knows nothing about SQLite or files.

pub mod pelt;

use augurs_changepoint::Detector as _;
use augurs_changepoint::NormalGammaDetector;
use augurs_changepoint::dist::NormalGamma;
use polars::prelude::*;

use crate::metrics::stats::wilson_lower;

/// Which change-point detector to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DetectorKind {
    /// Exact PELT with a binomial segment cost over (failures, calls) per bucket.
    PeltBinomial,
    /// augurs BOCPD (Normal-Gamma) on arcsin(sqrt(ratio)) of the non-empty buckets.
    Bocpd,
}

/// Settings of the detection; the defaults work on every simulator regime untuned.
#[derive(Debug, Clone)]
pub struct DetectOptions {
    pub detector: DetectorKind,
    /// PELT penalty per change point, as a multiple of ln(number of buckets).
    pub penalty_ln_n: f64,
    /// Shortest PELT segment, in buckets.
    pub min_segment: usize,
    /// BOCPD expected run length between changes (the hazard's inverse), in buckets.
    pub bocpd_hazard_buckets: f64,
    /// BOCPD Normal-Gamma prior scale: smaller finds milder changes.
    pub bocpd_prior_scale: f64,
    /// An incident's failure rate must exceed the host's background by this much...
    pub min_excess: f64,
    /// ...and last at least this many buckets (a one-bucket spike is not an incident).
    pub min_incident_buckets: usize,
    /// No change-point search for a host with fewer network calls in the window: too
    /// little data to act on (`advise.min_calls`); its time series is kept as it is.
    pub min_calls: i64,
}

impl Default for DetectOptions {
    fn default() -> Self {
        DetectOptions {
            detector: DetectorKind::PeltBinomial,
            // Chosen on held-out seeds 201-204 (bench/detect_accuracy.py): F1 of onsets 0.89
            // at 4, 0.97 at 2; false incidents on chronic-noise hosts start at 1.
            penalty_ln_n: 2.0,
            min_segment: 1,
            bocpd_hazard_buckets: 250.0,
            bocpd_prior_scale: 0.01,
            min_excess: 0.02,
            min_incident_buckets: 2,
            min_calls: 0,
        }
    }
}

/// The failure kinds detected separately, with the `host_timeseries` column of each.
pub const KINDS: [(&str, &str); 3] = [("429", "e429"), ("5xx", "e5xx"), ("timeout", "timeouts")];

/// The breakers' own evidence: a recorded open means the breaker had just counted
/// `fail_max` consecutive failures, most of them in requests that raised and left no row.
/// `open_failures` counts them; added to the rows' failed attempts (`failures`:
/// retried ones too, which show a timeout host's incident where no final row does),
/// over `attempts + open_failures`, they are the host's failures as the rows and the
/// opens show them (an open's visible failures count twice: an upper bound, for
/// finding onsets); an incident of kind `breaker` is a period in which that rose.
pub const BREAKER_KIND: (&str, &str) = ("breaker", "open_failures");

/// Change points (segment starts, never 0) of one series of failures `k` in calls `n`.
/// Fails only for BOCPD, whose Normal-Gamma update can break down numerically (for
/// example with a very small prior scale).
pub fn change_points(k: &[f64], n: &[f64], opts: &DetectOptions) -> Result<Vec<usize>, String> {
    match opts.detector {
        DetectorKind::PeltBinomial => {
            let penalty = opts.penalty_ln_n * (k.len().max(2) as f64).ln();
            Ok(pelt::pelt_binomial(k, n, penalty, opts.min_segment))
        }
        DetectorKind::Bocpd => bocpd(k, n, opts),
    }
}

/// BOCPD over the non-empty buckets (an empty bucket is no observation), mapped back to
/// bucket indices.
fn bocpd(k: &[f64], n: &[f64], opts: &DetectOptions) -> Result<Vec<usize>, String> {
    let observed: Vec<usize> = (0..k.len()).filter(|&i| n[i] > 0.0).collect();
    if observed.len() < 2 {
        return Ok(Vec::new());
    }
    let y: Vec<f64> = observed
        .iter()
        .map(|&i| (k[i] / n[i]).clamp(0.0, 1.0).sqrt().asin())
        .collect();
    let prior = NormalGamma::new_unchecked(0.0, 1.0, 1.0, opts.bocpd_prior_scale);
    // The rv crate under augurs panics when an update leaves the Normal-Gamma's domain;
    // that is bad settings for this series, reported as an error rather than a crash.
    // Silence the default hook meanwhile, so the user sees our error, not a backtrace.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let raw = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        NormalGammaDetector::normal_gamma(opts.bocpd_hazard_buckets, prior).detect_changepoints(&y)
    }));
    std::panic::set_hook(hook);
    let raw = raw
    .map_err(|_| {
        format!(
            "BOCPD failed numerically (hazard {}, prior scale {}); try a larger --bocpd-prior-scale",
            opts.bocpd_hazard_buckets, opts.bocpd_prior_scale
        )
    })?;
    // augurs returns 0 first, then the last index of each finished segment.
    let mut cps: Vec<usize> = raw
        .into_iter()
        .filter(|&i| i > 0 && i + 1 < observed.len())
        .map(|i| observed[i + 1])
        .collect();
    cps.sort_unstable();
    cps.dedup();
    Ok(cps)
}

/// A run of buckets `[start, end)` with its pooled counts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Segment {
    pub start: usize,
    pub end: usize,
    pub failures: f64,
    pub calls: f64,
}

impl Segment {
    pub fn rate(&self) -> Option<f64> {
        (self.calls > 0.0).then(|| self.failures / self.calls)
    }
}

fn segments(k: &[f64], n: &[f64], cps: &[usize]) -> Vec<Segment> {
    let mut bounds = vec![0];
    bounds.extend_from_slice(cps);
    bounds.push(k.len());
    bounds
        .windows(2)
        .filter(|w| w[1] > w[0])
        .map(|w| Segment {
            start: w[0],
            end: w[1],
            failures: k[w[0]..w[1]].iter().sum(),
            calls: n[w[0]..w[1]].iter().sum(),
        })
        .collect()
}

/// The host's background rate: pooled over its lowest-rate segments that together cover
/// at least half of the buckets with calls. Robust to incidents taking up to half the day.
pub fn background_rate(segs: &[Segment]) -> f64 {
    let mut with_calls: Vec<&Segment> = segs.iter().filter(|s| s.calls > 0.0).collect();
    with_calls.sort_by(|a, b| {
        a.rate()
            .unwrap_or(0.0)
            .total_cmp(&b.rate().unwrap_or(0.0))
            .then(a.start.cmp(&b.start))
    });
    let total: usize = with_calls.iter().map(|s| s.end - s.start).sum();
    let (mut covered, mut k, mut n) = (0usize, 0.0, 0.0);
    for s in with_calls {
        covered += s.end - s.start;
        k += s.failures;
        n += s.calls;
        if 2 * covered >= total {
            break;
        }
    }
    if n > 0.0 { k / n } else { 0.0 }
}

/// One incident of one host and kind, in bucket indices.
#[derive(Debug, Clone, PartialEq)]
pub struct IncidentSpan {
    pub start: usize,
    /// Exclusive.
    pub end: usize,
    pub ongoing: bool,
    pub level_before: Option<f64>,
    pub level_during: f64,
    pub level_after: Option<f64>,
    pub background: f64,
    pub calls: f64,
    pub failures: f64,
}

/// Incidents of one series: segments whose rate is at least `min_excess` above the
/// background, significantly so (Wilson lower bound above the background), lasting
/// `min_incident_buckets`; adjacent ones merge.
pub fn incidents(k: &[f64], n: &[f64], opts: &DetectOptions) -> Result<Vec<IncidentSpan>, String> {
    let cps = change_points(k, n, opts)?;
    let segs = segments(k, n, &cps);
    let background = background_rate(&segs);
    let elevated = |s: &Segment| {
        s.rate().is_some_and(|r| {
            r >= background + opts.min_excess && wilson_lower(s.failures, s.calls) > background
        })
    };
    let mut out: Vec<IncidentSpan> = Vec::new();
    let mut i = 0;
    while i < segs.len() {
        if !elevated(&segs[i]) {
            i += 1;
            continue;
        }
        let first = i;
        while i + 1 < segs.len() && elevated(&segs[i + 1]) {
            i += 1;
        }
        let (start, end) = (segs[first].start, segs[i].end);
        let failures: f64 = segs[first..=i].iter().map(|s| s.failures).sum();
        let calls: f64 = segs[first..=i].iter().map(|s| s.calls).sum();
        if end - start >= opts.min_incident_buckets {
            out.push(IncidentSpan {
                start,
                end,
                ongoing: end == k.len(),
                level_before: first.checked_sub(1).and_then(|j| segs[j].rate()),
                level_during: failures / calls,
                level_after: segs.get(i + 1).and_then(Segment::rate),
                background,
                calls,
                failures,
            });
        }
        i += 1;
    }
    Ok(out)
}

/// What `detect` gives: the incidents table and `host_timeseries` with `unhealthy`.
#[derive(Debug, Clone)]
pub struct Detection {
    pub incidents: DataFrame,
    pub host_timeseries: DataFrame,
}

/// Runs the detector over every host and kind of a `host_timeseries` table (sorted by
/// host and bucket, as `analyze` writes it).
pub fn detect(host_timeseries: &DataFrame, opts: &DetectOptions) -> PolarsResult<Detection> {
    let hosts = host_timeseries.column("host")?.str()?;
    let buckets = host_timeseries.column("bucket")?.i64()?;
    let starts = host_timeseries
        .column("bucket_start")?
        .as_materialized_series()
        .to_physical_repr()
        .into_owned();
    let starts = starts.i64()?;
    // Per attempt when the table has it (what the host answered, retries included).
    let denominator = if host_timeseries.get_column_index("attempts").is_some() {
        "attempts"
    } else {
        "calls_net"
    };
    let calls = host_timeseries
        .column(denominator)?
        .cast(&DataType::Float64)?;
    let calls = calls.f64()?;
    // `get` panics past the end (an empty series: a window without calls).
    let first_two = |c: &Int64Chunked| [0, 1].map(|i| if i < c.len() { c.get(i) } else { None });
    let bucket_us = match (first_two(starts), first_two(buckets)) {
        ([Some(a), Some(b)], [Some(x), Some(y)]) if y > x => (b - a) / (y - x),
        _ => 60_000_000,
    };

    // Host runs: the table is sorted by host, then bucket.
    let mut runs: Vec<(usize, usize)> = Vec::new();
    let mut i = 0;
    let height = host_timeseries.height();
    while i < height {
        let mut j = i + 1;
        while j < height && hosts.get(j) == hosts.get(i) {
            j += 1;
        }
        runs.push((i, j));
        i = j;
    }

    // Hosts with too little data to act on get no change-point search.
    let net = match host_timeseries.get_column_index("calls_net") {
        Some(_) => host_timeseries
            .column("calls_net")?
            .cast(&DataType::Float64)?,
        None => calls.clone().into_series().into(),
    };
    let net = net.f64()?;
    let searched: Vec<bool> = runs
        .iter()
        .map(|&(a, b)| {
            opts.min_calls <= 0
                || (a..b).map(|i| net.get(i).unwrap_or(0.0)).sum::<f64>() >= opts.min_calls as f64
        })
        .collect();
    let mut rows: Vec<(String, &str, IncidentSpan, i64, i64)> = Vec::new();
    // Each host's incidents so far: bucket range in the table's row numbers, and row.
    let mut ranges: Vec<Vec<(usize, usize, usize)>> = vec![Vec::new(); runs.len()];
    let n_all: Vec<f64> = calls.iter().map(|v| v.unwrap_or(0.0)).collect();
    let has_opens = host_timeseries.get_column_index(BREAKER_KIND.1).is_some();
    // The breakers' evidence comes last: it only adds what the rows did not show.
    let kinds = KINDS
        .iter()
        .copied()
        .chain(has_opens.then_some(BREAKER_KIND));
    for (kind, column) in kinds {
        let k_col = host_timeseries.column(column)?.cast(&DataType::Float64)?;
        let mut k_all: Vec<f64> = k_col.f64()?.iter().map(|v| v.unwrap_or(0.0)).collect();
        // The open evidence is on top of the attempts the rows show.
        let n_all: Vec<f64> = if kind == BREAKER_KIND.0 {
            n_all.iter().zip(&k_all).map(|(n, k)| n + k).collect()
        } else {
            n_all.clone()
        };
        // The opens' failures and the rows' failed attempts.
        if kind == BREAKER_KIND.0 && host_timeseries.get_column_index("failures").is_some() {
            let f = host_timeseries
                .column("failures")?
                .cast(&DataType::Float64)?;
            for (k, f) in k_all.iter_mut().zip(f.f64()?.iter()) {
                *k += f.unwrap_or(0.0);
            }
        }
        for ((&(a, b), host_ranges), _) in runs
            .iter()
            .zip(&mut ranges)
            .zip(&searched)
            .filter(|(_, s)| **s)
        {
            let host = hosts.get(a).unwrap_or_default().to_owned();
            let spans = incidents(&k_all[a..b], &n_all[a..b], opts)
                .map_err(|e| polars_err!(ComputeError: "host {host}, {kind} failures: {e}"))?;
            for span in spans {
                let (first, end) = (a + span.start, a + span.end);
                let start_us = starts.get(first).unwrap_or(0);
                let end_us = starts.get(end - 1).unwrap_or(0) + bucket_us;
                // One incident per outage: an incident is what the host did, and the
                // breakers' opens are evidence for it. Where an incident the rows show
                // overlaps the breakers' one, it takes in the breakers' span (their
                // opens often come first: the failures that left no row) and keeps its
                // own levels and counts; elsewhere the breakers' incident stands alone.
                // Of several, the one it overlaps most (the first on a tie), so one
                // outage never becomes two incidents of the same span.
                if kind == BREAKER_KIND.0 {
                    let overlap =
                        |r: &(usize, usize, usize)| r.1.min(end).saturating_sub(r.0.max(first));
                    let best = host_ranges
                        .iter_mut()
                        .filter(|r| overlap(r) > 0)
                        .reduce(|x, y| if overlap(y) > overlap(x) { y } else { x });
                    if let Some(r) = best {
                        let row = &mut rows[r.2];
                        (r.0, r.1) = (r.0.min(first), r.1.max(end));
                        (row.3, row.4) = (row.3.min(start_us), row.4.max(end_us));
                        (row.2.start, row.2.end) = (r.0 - a, r.1 - a);
                        row.2.ongoing |= span.ongoing;
                        continue;
                    }
                }
                host_ranges.push((first, end, rows.len()));
                rows.push((host.clone(), kind, span, start_us, end_us));
            }
        }
    }
    let mut unhealthy = vec![false; height];
    for &(first, end, _) in ranges.iter().flatten() {
        for flag in &mut unhealthy[first..end] {
            *flag = true;
        }
    }
    rows.sort_by(|x, y| (x.0.as_str(), x.3, x.1).cmp(&(y.0.as_str(), y.3, y.1)));

    let dt = DataType::Datetime(TimeUnit::Microseconds, None);
    let incidents = df!(
        "host" => rows.iter().map(|r| r.0.as_str()).collect::<Vec<_>>(),
        "kind" => rows.iter().map(|r| r.1).collect::<Vec<_>>(),
        "start" => rows.iter().map(|r| r.3).collect::<Vec<_>>(),
        "end" => rows.iter().map(|r| r.4).collect::<Vec<_>>(),
        "ongoing" => rows.iter().map(|r| r.2.ongoing).collect::<Vec<_>>(),
        "buckets" => rows.iter().map(|r| (r.2.end - r.2.start) as i64).collect::<Vec<_>>(),
        "level_before" => rows.iter().map(|r| r.2.level_before).collect::<Vec<_>>(),
        "level_during" => rows.iter().map(|r| r.2.level_during).collect::<Vec<_>>(),
        "level_after" => rows.iter().map(|r| r.2.level_after).collect::<Vec<_>>(),
        "background" => rows.iter().map(|r| r.2.background).collect::<Vec<_>>(),
        "calls" => rows.iter().map(|r| r.2.calls as i64).collect::<Vec<_>>(),
        "failures" => rows.iter().map(|r| r.2.failures as i64).collect::<Vec<_>>(),
    )?
    .lazy()
    .with_columns([col("start").cast(dt.clone()), col("end").cast(dt)])
    .collect()?;
    let mut host_timeseries = host_timeseries.clone();
    host_timeseries.with_column(Column::new("unhealthy".into(), unhealthy))?;
    Ok(Detection {
        incidents,
        host_timeseries,
    })
}

/// Adds `retry_after_median_s` to the incidents: the median Retry-After of the 429/503
/// responses (network calls) inside each incident's span, NULL when none carried one.
/// `events` is the dataset's `http_events` (only host, ts, status, from_cache and
/// retry_after_s are read).
pub fn with_retry_after(incidents: DataFrame, events: LazyFrame) -> PolarsResult<DataFrame> {
    let numbered = incidents
        .clone()
        .lazy()
        .with_row_index("incident", None)
        .select([col("incident"), col("host"), col("start"), col("end")]);
    let samples = events
        .filter(
            col("from_cache")
                .fill_null(false)
                .not()
                .and(col("status").is_in(
                    lit(Series::new("s".into(), [429i64, 503])).implode(false),
                    false,
                ))
                .and(col("retry_after_s").is_not_null()),
        )
        .select([col("host"), col("ts"), col("retry_after_s")]);
    let medians = numbered
        .join(
            samples,
            [col("host")],
            [col("host")],
            JoinArgs::new(JoinType::Inner),
        )
        .filter(col("ts").gt_eq(col("start")).and(col("ts").lt(col("end"))))
        .group_by([col("incident")])
        .agg([col("retry_after_s")
            .cast(DataType::Float64)
            .median()
            .alias("retry_after_median_s")]);
    incidents
        .lazy()
        .with_row_index("incident", None)
        .join(
            medians,
            [col("incident")],
            [col("incident")],
            JoinArgs::new(JoinType::Left),
        )
        .sort(["incident"], SortMultipleOptions::default())
        .drop(cols(["incident"]))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(levels: &[(usize, f64)], calls: f64) -> (Vec<f64>, Vec<f64>) {
        let mut k = Vec::new();
        for &(len, rate) in levels {
            k.extend(std::iter::repeat_n((calls * rate).round(), len));
        }
        let n = vec![calls; k.len()];
        (k, n)
    }

    fn spans(k: &[f64], n: &[f64], opts: &DetectOptions) -> Vec<(usize, usize, bool)> {
        incidents(k, n, opts)
            .expect("PELT and BOCPD with default settings")
            .into_iter()
            .map(|s| (s.start, s.end, s.ongoing))
            .collect()
    }

    #[test]
    fn a_host_with_too_little_data_gets_no_change_point_search() {
        // The same outage (80% failures over buckets 300..330) on a host with 5 calls a
        // bucket (3150 calls) and on one with 1 (630 calls).
        let (k5, n5) = series(&[(300, 0.0), (30, 0.8), (300, 0.0)], 5.0);
        let (k1, n1) = series(&[(300, 0.0), (30, 1.0), (300, 0.0)], 1.0);
        let len = k5.len();
        let hosts: Vec<&str> = [vec!["a.example"; len], vec!["b.example"; len]].concat();
        let buckets: Vec<i64> = (0..2).flat_map(|_| 0..len as i64).collect();
        let starts: Vec<i64> = buckets.iter().map(|b| b * 60_000_000).collect();
        let zeros = vec![0.0; 2 * len];
        let ts = df!(
            "host" => hosts,
            "bucket" => buckets,
            "bucket_start" => starts,
            "calls_net" => [n5, n1].concat(),
            "e429" => zeros.clone(),
            "e5xx" => [k5, k1].concat(),
            "timeouts" => zeros,
        )
        .unwrap();
        let hosts_with = |min_calls: i64| -> Vec<String> {
            let d = detect(
                &ts,
                &DetectOptions {
                    min_calls,
                    ..DetectOptions::default()
                },
            )
            .unwrap();
            let h = d.incidents.column("host").unwrap().str().unwrap().clone();
            h.iter().flatten().map(str::to_owned).collect()
        };
        assert_eq!(hosts_with(0), ["a.example", "b.example"]);
        assert_eq!(hosts_with(1000), ["a.example"]);
    }

    #[test]
    fn cases_from_the_issue() {
        for detector in [DetectorKind::PeltBinomial, DetectorKind::Bocpd] {
            let o = DetectOptions {
                detector,
                ..DetectOptions::default()
            };
            // Step up and down.
            let (k, n) = series(&[(300, 0.01), (40, 0.3), (300, 0.01)], 200.0);
            assert_eq!(spans(&k, &n, &o), [(300, 340, false)], "{detector:?}");
            // Two incidents close together: PELT separates them; BOCPD's MAP path does
            // not see a 10-bucket recovery between them and reports one span.
            let (k, n) = series(
                &[(200, 0.01), (20, 0.4), (10, 0.01), (20, 0.4), (200, 0.01)],
                200.0,
            );
            let want: &[(usize, usize, bool)] = match detector {
                DetectorKind::PeltBinomial => &[(200, 220, false), (230, 250, false)],
                DetectorKind::Bocpd => &[(200, 250, false)],
            };
            assert_eq!(spans(&k, &n, &o), want, "{detector:?}");
            // Running past the window end.
            let (k, n) = series(&[(400, 0.01), (30, 0.5)], 200.0);
            assert_eq!(spans(&k, &n, &o), [(400, 430, true)], "{detector:?}");
            // Flat; all empty.
            let (k, n) = series(&[(1440, 0.01)], 200.0);
            assert!(spans(&k, &n, &o).is_empty(), "{detector:?}");
            assert!(
                spans(&[0.0; 1440], &[0.0; 1440], &o).is_empty(),
                "{detector:?}"
            );
        }
        let o = DetectOptions::default();
        // A one-bucket spike is not an incident.
        let (k, n) = series(&[(300, 0.01), (1, 0.9), (300, 0.01)], 200.0);
        assert!(spans(&k, &n, &o).is_empty());
        // A mild 5% incident on a 1% baseline.
        let (k, n) = series(&[(500, 0.01), (60, 0.05), (500, 0.01)], 300.0);
        assert_eq!(spans(&k, &n, &o), [(500, 560, false)]);
        // A host with 5 calls a bucket and a real outage.
        let (k, n) = series(&[(300, 0.0), (30, 0.8), (300, 0.0)], 5.0);
        assert_eq!(spans(&k, &n, &o), [(300, 330, false)]);
    }

    #[test]
    fn retry_after_median_inside_each_incident() {
        let dt = DataType::Datetime(TimeUnit::Microseconds, None);
        let incidents = df!(
            "host" => ["a.example", "a.example", "b.example"],
            "start" => [0i64, 100, 0],
            "end" => [50i64, 200, 50],
        )
        .unwrap()
        .lazy()
        .with_columns([col("start").cast(dt.clone()), col("end").cast(dt.clone())])
        .collect()
        .unwrap();
        let events = df!(
            "host" => ["a.example", "a.example", "a.example", "a.example", "a.example", "b.example"],
            "ts" => [10i64, 20, 30, 60, 150, 10],
            "status" => [Some(429i64), Some(503), Some(429), Some(429), Some(200), Some(429)],
            "from_cache" => [Some(false), Some(false), Some(true), Some(false), Some(false), None],
            "retry_after_s" => [Some(30i64), Some(60), Some(999), Some(5), Some(7), None],
        )
        .unwrap()
        .lazy()
        .with_column(col("ts").cast(dt));
        let out = with_retry_after(incidents, events).unwrap();
        let medians: Vec<Option<f64>> = out
            .column("retry_after_median_s")
            .unwrap()
            .f64()
            .unwrap()
            .iter()
            .collect();
        // a: 30 and 60 inside (the cached one and the one after the end are not); the
        // second incident has only a 200; b's 429 carried no Retry-After.
        assert_eq!(medians, [Some(45.0), None, None]);
        assert_eq!(out.height(), 3);
    }

    #[test]
    fn a_breaker_span_widens_the_incident_it_overlaps_and_stands_alone_elsewhere() {
        // 400 one-minute buckets of 100 attempts: 5xx at 40% in 100..140, the breakers'
        // opens from 95 (before the rows show it) to 140, and opens alone in 250..270.
        let n = 400usize;
        let in_range = |i: usize, a: usize, b: usize| (a..b).contains(&i);
        let e5xx: Vec<i64> = (0..n)
            .map(|i| if in_range(i, 100, 140) { 40 } else { 0 })
            .collect();
        let open_failures: Vec<i64> = (0..n)
            .map(|i| {
                if in_range(i, 95, 140) || in_range(i, 250, 270) {
                    20
                } else {
                    0
                }
            })
            .collect();
        let ts = df!(
            "host" => vec!["h.example"; n],
            "bucket" => (0..n as i64).collect::<Vec<_>>(),
            "bucket_start" => (0..n as i64).map(|i| i * 60_000_000).collect::<Vec<_>>(),
            "attempts" => vec![100i64; n],
            "e429" => vec![0i64; n],
            "e5xx" => e5xx.clone(),
            "timeouts" => vec![0i64; n],
            "failures" => e5xx,
            "open_failures" => open_failures,
        )
        .unwrap()
        .lazy()
        .with_column(col("bucket_start").cast(DataType::Datetime(TimeUnit::Microseconds, None)))
        .collect()
        .unwrap();
        let d = detect(&ts, &DetectOptions::default()).unwrap();
        let kinds: Vec<&str> = d
            .incidents
            .column("kind")
            .unwrap()
            .str()
            .unwrap()
            .iter()
            .map(|v| v.unwrap_or_default())
            .collect();
        let buckets: Vec<i64> = d
            .incidents
            .column("buckets")
            .unwrap()
            .i64()
            .unwrap()
            .iter()
            .map(|v| v.unwrap_or_default())
            .collect();
        assert_eq!(kinds, ["5xx", "breaker"]);
        // 95..140 and 250..270.
        assert_eq!(buckets, [45, 20]);
        let unhealthy: Vec<bool> = d
            .host_timeseries
            .column("unhealthy")
            .unwrap()
            .bool()
            .unwrap()
            .iter()
            .map(|v| v.unwrap_or_default())
            .collect();
        let marked: Vec<usize> = (0..n).filter(|&i| unhealthy[i]).collect();
        assert_eq!(marked, (95..140).chain(250..270).collect::<Vec<_>>());
        // The merged incident keeps the rows' level.
        let level = d
            .incidents
            .column("level_during")
            .unwrap()
            .f64()
            .unwrap()
            .get(0)
            .unwrap();
        assert!((level - 0.4).abs() < 1e-9, "{level}");
    }
}
