//! Change points and incidents end to end: simulate -> export -> analyze -> detect, scored
//! against the simulator's ground truth.

use crate::common;

use breaker_advisor::simulate::Variant;
use common::*;
use polars::prelude::*;

#[test]
fn incidents_match_the_ground_truth() {
    let tmp = tempfile::tempdir().unwrap();
    let db = sim(&tmp.path().join("sim"), Variant::Schema, 24.0, 12, 1.0, 31);
    let data = tmp.path().join("ds");
    let end_s = breaker_advisor::simulate::DEFAULT_START_S + 24 * 3600;
    for args in [
        vec![
            "export".to_string(),
            "--out".into(),
            data.display().to_string(),
            "--telemetry".into(),
            db.display().to_string(),
        ],
        vec![
            "analyze".into(),
            "--data".into(),
            data.display().to_string(),
            "--now".into(),
            end_s.to_string(),
        ],
        vec![
            "detect".into(),
            "--metrics".into(),
            data.join("metrics").display().to_string(),
        ],
    ] {
        let out = bin().args(&args).output().unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let incidents =
        ParquetReader::new(std::fs::File::open(data.join("metrics/incidents.parquet")).unwrap())
            .finish()
            .unwrap();
    let hosts = col_str(&incidents, "host");
    let kinds = col_str(&incidents, "kind");
    let starts = col_ts_us(&incidents, "start");
    let retry_after: Vec<Option<f64>> = incidents
        .column("retry_after_median_s")
        .unwrap()
        .f64()
        .unwrap()
        .iter()
        .collect();
    let truth: serde_json::Value =
        serde_json::from_slice(&std::fs::read(tmp.path().join("sim/ground_truth.json")).unwrap())
            .unwrap();

    let mut matched = 0;
    let mut severe = 0;
    let mut with_retry_after = 0;
    let (mut rate_limits, mut rate_limits_found) = (0, 0);
    for h in truth["hosts"].as_array().unwrap() {
        let name = h["host"].as_str().unwrap();
        let found: Vec<(String, i64, Option<f64>)> = (0..incidents.height())
            .filter(|&i| hosts[i].as_deref() == Some(name))
            .map(|i| {
                let start_s = starts[i].unwrap() / 1_000_000;
                (kinds[i].clone().unwrap(), start_s, retry_after[i])
            })
            .collect();
        match h["regime"].as_str().unwrap() {
            "healthy" => assert!(
                found.is_empty(),
                "false incidents on healthy {name}: {found:?}"
            ),
            "chronic" => assert!(
                found.len() <= 1,
                "chronic noise on {name} split into incidents: {found:?}"
            ),
            "flapping" => assert!(!found.is_empty(), "the flapping storm on {name} was missed"),
            _ => {}
        }
        for inc in h["incidents"].as_array().unwrap() {
            if inc["level"] != "severe" || inc["kind"] == "flapping" {
                continue;
            }
            severe += 1;
            let kind = match inc["kind"].as_str().unwrap() {
                "rate_limit" => "429",
                "outage" => "5xx",
                _ => "timeout",
            };
            if kind == "timeout" {
                // The documented crawler does not count timeouts, and a request that
                // times out on every attempt leaves no row: nothing to find.
                severe -= 1;
                continue;
            }
            let onset = inc["start_s"].as_f64().unwrap() as i64;
            // Onset within 5 one-minute buckets, as its own kind or as the breakers'
            // evidence (opens standing for failures that left no row).
            let hit = found
                .iter()
                .find(|(k, s, _)| (k == kind || k == "breaker") && (s - onset).abs() <= 5 * 60);
            if kind == "429" {
                rate_limits += 1;
            }
            if hit.is_some() {
                matched += 1;
                if kind == "429" {
                    rate_limits_found += 1;
                }
            } else {
                eprintln!("missed {name} {kind} at {onset}: found {found:?}");
            }
        }
    }
    assert!(
        severe >= 6,
        "too few severe incidents in the sample: {severe}"
    );
    // Outages are seen by the breakers (their opens stand for the failures that left no
    // row): every one is found. A rate-limit incident hides behind the Retry-After
    // cooldowns it causes (each process is denied every call until the header's time,
    // so the window's rows vanish rather than fail); at least half are found.
    assert_eq!(
        matched - rate_limits_found,
        severe - rate_limits,
        "every severe outage is found within 5 buckets"
    );
    assert!(
        2 * rate_limits_found >= rate_limits,
        "{rate_limits_found} of {rate_limits} severe rate-limit incidents found"
    );
    // The simulated server sends one Retry-After per rate-limit incident. The crawler
    // retries a 429 after its Retry-After and rows keep only the final response's
    // header, so it is known only where a request ran out of retries; when known, it is
    // the server's.
    for h in truth["hosts"].as_array().unwrap() {
        let name = h["host"].as_str().unwrap();
        for i in 0..incidents.height() {
            let (Some(ra), Some("429")) = (retry_after[i], kinds[i].as_deref()) else {
                continue;
            };
            if hosts[i].as_deref() != Some(name) {
                continue;
            }
            let start = starts[i].unwrap() / 1_000_000;
            let server = h["incidents"]
                .as_array()
                .unwrap()
                .iter()
                .find(|t| {
                    t["start_s"].as_f64().unwrap() as i64 - 600 <= start
                        && start <= t["end_s"].as_f64().unwrap() as i64
                })
                .unwrap_or_else(|| {
                    panic!("{name}: a 429 incident at {start} the server never had")
                });
            assert_eq!(
                Some(ra),
                server["retry_after_s"].as_f64(),
                "{name} Retry-After"
            );
            with_retry_after += 1;
        }
    }
    assert!(
        with_retry_after >= 1,
        "no rate-limit incident got its Retry-After"
    );

    // One incident per outage: the breakers' opens stand alone as an incident only where
    // no incident the rows show overlaps them.
    let ends = col_ts_us(&incidents, "end");
    let mut breaker_only = 0;
    for i in 0..incidents.height() {
        if kinds[i].as_deref() != Some("breaker") {
            continue;
        }
        breaker_only += 1;
        for j in 0..incidents.height() {
            assert!(
                j == i
                    || hosts[j] != hosts[i]
                    || kinds[j].as_deref() == Some("breaker")
                    || ends[j] <= starts[i]
                    || ends[i] <= starts[j],
                "{:?}: a breaker incident over a {:?} one",
                hosts[i],
                kinds[j]
            );
        }
    }
    eprintln!("{breaker_only} breaker-only incidents");

    // Every bucket is labelled, and unhealthy buckets are exactly those inside incidents.
    let ts = ParquetReader::new(
        std::fs::File::open(data.join("metrics/host_timeseries.parquet")).unwrap(),
    )
    .finish()
    .unwrap();
    let unhealthy = ts.column("unhealthy").unwrap().bool().unwrap();
    assert_eq!(unhealthy.null_count(), 0);
    let labelled = unhealthy.sum().unwrap() as i64;
    let in_incidents: i64 = col_i64(&incidents, "buckets").into_iter().flatten().sum();
    assert!(
        labelled > 0 && labelled <= in_incidents,
        "{labelled} vs {in_incidents}"
    );
}

#[test]
fn settings_that_break_bocpd_are_an_error_not_a_crash() {
    let tmp = tempfile::tempdir().unwrap();
    let db = sim(&tmp.path().join("sim"), Variant::Schema, 6.0, 6, 1.0, 5);
    let data = tmp.path().join("ds");
    let metrics = data.join("metrics");
    bin()
        .arg("export")
        .arg("--out")
        .arg(&data)
        .arg("--telemetry")
        .arg(&db)
        .assert()
        .success();
    bin()
        .arg("analyze")
        .arg("--data")
        .arg(&data)
        .assert()
        .success();
    let out = bin()
        .args([
            "detect",
            "--detector",
            "bocpd",
            "--bocpd-prior-scale",
            "0.001",
            "--metrics",
        ])
        .arg(&metrics)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("BOCPD failed numerically") && stderr.contains("--bocpd-prior-scale"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        !metrics.join("incidents.parquet").exists(),
        "nothing is written on failure"
    );
    // The same data with the defaults works.
    bin()
        .args(["detect", "--detector", "bocpd", "--metrics"])
        .arg(&metrics)
        .assert()
        .success();

    // The settings file's detect section applies; a flag overrides it.
    let settings = tmp.path().join("breaker-advisor.yaml");
    std::fs::write(
        &settings,
        "detect:\n  detector: bocpd\n  bocpd_prior_scale: 0.001\n",
    )
    .unwrap();
    let out = bin()
        .args(["detect", "--metrics"])
        .arg(&metrics)
        .arg("--settings")
        .arg(&settings)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("prior scale 0.001"));
    bin()
        .args(["detect", "--detector", "pelt-binomial", "--metrics"])
        .arg(&metrics)
        .arg("--settings")
        .arg(&settings)
        .assert()
        .success();
}
