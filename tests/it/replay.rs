//! Policy replay: fidelity (replaying the simulator's telemetry under the policy that
//! produced it reproduces the recorded opens and half-open outcomes) and what a
//! different policy changes.

use crate::common;

use std::path::Path;

use breaker_advisor::simulate::Variant;
use common::{bin, sim};
use polars::prelude::{ParquetReader, SerReader};

/// breakers.yaml holding each simulated host's policy (from ground_truth.json).
fn config_from_ground_truth(dir: &Path) -> std::path::PathBuf {
    let gt: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("ground_truth.json")).unwrap()).unwrap();
    let mut y = String::from("defaults:\n  fail_max: 5\n  reset_timeout_s: 60\nhosts:\n");
    for h in gt["hosts"].as_array().unwrap() {
        let p = &h["policy"];
        y.push_str(&format!(
            "  {}:\n    fail_max: {}\n    reset_timeout_s: {}\n    success_threshold: {}\n    trial_calls: {}\n    retry_after_cap_s: {}\n",
            h["host"].as_str().unwrap(),
            p["fail_max"],
            p["reset_timeout_s"],
            p["success_threshold"],
            p["trial_calls"],
            p["retry_after_cap_s"]
        ));
    }
    let path = dir.join("breakers.yaml");
    std::fs::write(&path, y).unwrap();
    path
}

fn replay_json(args: &[&str], config: &Path, data: &Path) -> Vec<serde_json::Value> {
    let a = bin()
        .args(["replay", "--data"])
        .arg(data)
        .arg("--config")
        .arg(config)
        .arg("--json")
        .args(args)
        .assert()
        .success();
    serde_json::from_slice::<serde_json::Value>(&a.get_output().stdout)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

#[test]
fn replaying_under_the_recorded_policy_reproduces_the_breaker() {
    let tmp = tempfile::tempdir().unwrap();
    let telemetry = sim(tmp.path(), Variant::Sink, 24.0, 12, 0.1, 11);
    let config = config_from_ground_truth(tmp.path());
    let data = tmp.path().join("ds");
    bin()
        .args(["export", "--telemetry"])
        .arg(&telemetry)
        .arg("--out")
        .arg(&data)
        .assert()
        .success();
    let rows = replay_json(&[], &config, &data);
    assert_eq!(rows.len(), 12);
    let mut opening_hosts = 0;
    for r in &rows {
        let rec = &r["recorded"];
        for (ours, theirs) in [
            ("opens", "opens"),
            ("half_open_closed", "half_open_closed"),
            ("half_open_reopened", "half_open_reopened"),
        ] {
            let (a, b) = (r[ours].as_f64().unwrap(), rec[theirs].as_f64().unwrap());
            assert!(
                (a - b).abs() <= 0.05 * b.max(1.0),
                "{}: {ours} replayed {a}, recorded {b}",
                r["host"]
            );
        }
        if rec["opens"].as_u64().unwrap() > 0 {
            opening_hosts += 1;
        }
    }
    assert!(
        opening_hosts >= 4,
        "the regimes open breakers on several hosts"
    );

    // A far more permissive policy opens less and lets more failures through; its
    // extra calls inside the recorded gaps were filled in, not invented as successes.
    let lax = replay_json(
        &["--policy", "fail_max=50,reset_timeout_s=15"],
        &config,
        &data,
    );
    let sum = |rows: &[serde_json::Value], k: &str| -> u64 {
        rows.iter().map(|r| r[k].as_u64().unwrap()).sum()
    };
    assert!(sum(&lax, "opens") < sum(&rows, "opens"));
    assert!(sum(&lax, "failures_let_through") > sum(&rows, "failures_let_through"));
    assert!(sum(&rows, "synthetic_calls") > 0);
    assert!(
        lax.iter()
            .all(|r| r["policy"]["fail_max"] == 50 && r["policy"]["reset_timeout_s"] == 15.0)
    );
}

#[test]
fn replay_rejects_bad_policies_and_unknown_hosts() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("ds");
    let mut export = bin();
    export.arg("export").arg("--out").arg(&data);
    for f in common::sample_telemetry() {
        export.arg("--telemetry").arg(f);
    }
    export.assert().success();
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("data-samples/breakers.yaml");
    for (args, needle) in [
        (vec!["--policy", "fail_max=0"], "fail_max=0"),
        (vec!["--policy", "bogus=3"], "bogus"),
        (vec!["--host", "nowhere.example"], "nowhere.example"),
    ] {
        let a = bin()
            .args(["replay", "--data"])
            .arg(&data)
            .arg("--config")
            .arg(&config)
            .args(&args)
            .assert()
            .code(1);
        let err = String::from_utf8_lossy(&a.get_output().stderr).into_owned();
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}

/// Runs the pybreaker fleet harness (tests/python/pybreaker_fleet.py) into `dir`.
fn pybreaker_fleet(dir: &Path, cooldowns: &str) -> Vec<std::path::PathBuf> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/pybreaker_fleet.py");
    let out = std::process::Command::new("python3")
        .arg(script)
        .arg("--out")
        .arg(dir)
        .args(["--processes", "4", "--cooldowns", cooldowns])
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "pybreaker harness failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (1..=4)
        .map(|p| dir.join(format!("process-{p}.sqlite")))
        .collect()
}

#[test]
fn replay_reproduces_a_fleet_of_real_pybreakers_in_both_cooldown_scopes() {
    let tmp = tempfile::tempdir().unwrap();
    for scope in ["process", "fleet"] {
        let dir = tmp.path().join(scope);
        let files = pybreaker_fleet(&dir, scope);
        let settings = dir.join("breaker-advisor.yaml");
        std::fs::write(&settings, format!("crawler: {{cooldown_scope: {scope}}}\n")).unwrap();
        let data = dir.join("ds");
        let mut export = bin();
        export.args(["export", "--out"]).arg(&data);
        for f in &files {
            export.arg("--telemetry").arg(f);
        }
        export.assert().success();
        let truth: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("truth.json")).unwrap()).unwrap();
        let rows = replay_json(
            &["--settings", settings.to_str().unwrap()],
            &dir.join("breakers.yaml"),
            &data,
        );
        let mut opening = 0;
        for (host, per) in truth.as_object().unwrap() {
            let per = per.as_array().unwrap();
            let want: u64 = per.iter().map(|p| p["opens"].as_u64().unwrap()).sum();
            let r = rows
                .iter()
                .find(|r| r["host"] == host.as_str())
                .unwrap_or_else(|| panic!("{scope}: no replay of {host}"));
            assert_eq!(
                r["recorded"]["opens"].as_u64().unwrap(),
                want,
                "{scope} {host}"
            );
            let got = r["opens"].as_u64().unwrap();
            assert!(
                (got as f64 - want as f64).abs() <= 0.05 * want as f64,
                "{scope} {host}: replayed {got} opens, the breakers made {want}"
            );
            // Per process too: one breaker per process, not one for the fleet.
            let inst: Vec<u64> = r["instance_opens"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap())
                .collect();
            let want_inst: Vec<u64> = per.iter().map(|p| p["opens"].as_u64().unwrap()).collect();
            if want > 0 {
                assert_eq!(inst.len(), 4, "{scope} {host}");
                for (g, w) in inst.iter().zip(&want_inst) {
                    assert!(
                        g.abs_diff(*w) as f64 <= (0.05 * *w as f64).max(1.0),
                        "{scope} {host}: {inst:?} vs {want_inst:?}"
                    );
                }
            }
            if want >= 10 {
                opening += 1;
            }
        }
        assert!(
            opening >= 2,
            "{scope}: the harness opens breakers on several hosts"
        );

        // Bursts per breaker instance equal what each pybreaker counted, exactly.
        let metrics = dir.join("metrics");
        bin()
            .args(["analyze", "--data"])
            .arg(&data)
            .arg("--out")
            .arg(&metrics)
            .arg("--config")
            .arg(dir.join("breakers.yaml"))
            .assert()
            .success();
        let bursts =
            ParquetReader::new(std::fs::File::open(metrics.join("bursts.parquet")).unwrap())
                .finish()
                .unwrap();
        let hosts = common::col_str(&bursts, "host");
        let runs = common::col_str(&bursts, "run_id");
        let lengths = common::col_i64(&bursts, "length");
        let from = common::col_str(&bursts, "counted_from");
        assert!(from.iter().all(|f| f.as_deref() == Some("events")));
        for (host, per) in truth.as_object().unwrap() {
            for p in per.as_array().unwrap() {
                let run_id = p["run_id"].as_str().unwrap();
                let mut want: Vec<i64> = p["bursts"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_i64().unwrap())
                    .collect();
                let mut got: Vec<i64> = (0..hosts.len())
                    .filter(|&i| {
                        hosts[i].as_deref() == Some(host.as_str())
                            && runs[i].as_deref() == Some(run_id)
                    })
                    .map(|i| lengths[i].unwrap())
                    .collect();
                want.sort_unstable();
                got.sort_unstable();
                assert_eq!(got, want, "{scope} {host} {run_id}");
            }
        }
    }
}

#[test]
fn rows_alone_reproduce_a_fleets_opens_with_the_failures_the_opens_prove() {
    // The schema variant has rows and transitions only: requests denied mid-retry left
    // no row, and the replay infers their failures from the recorded opens.
    let tmp = tempfile::tempdir().unwrap();
    let files = common::sim_fleet(
        tmp.path(),
        breaker_advisor::simulate::SimOptions {
            machines: 3,
            ..breaker_advisor::simulate::SimOptions::new(tmp.path(), 24.0, 12, 0.15, 5)
        },
    );
    let config = config_from_ground_truth(tmp.path());
    let data = tmp.path().join("ds");
    let mut export = bin();
    export.arg("export").arg("--out").arg(&data);
    for f in &files {
        export.arg("--telemetry").arg(f);
    }
    export.assert().success();
    let rows = replay_json(&[], &config, &data);
    let mut checked = 0;
    for r in &rows {
        let recorded = r["recorded"]["opens"].as_f64().unwrap();
        let replayed = r["opens"].as_f64().unwrap();
        if recorded >= 10.0 {
            assert!(
                (replayed - recorded).abs() <= 0.10 * recorded,
                "{}: replayed {replayed} opens, recorded {recorded}",
                r["host"]
            );
            checked += 1;
        }
    }
    assert!(checked >= 3, "hosts with 10+ opens: {checked}");
}

#[test]
fn a_night_that_ran_a_shorter_reset_than_the_file_holds_the_host_with_both_numbers() {
    // The crawler ran each host's own settings; the file handed to `run` doubles the
    // flapping hosts' reset_timeout_s (an older file, say). Their breakers turned
    // half-open sooner than the file allows: no breaker change, and the fidelity table
    // shows the spells beside the file's reset.
    let tmp = tempfile::tempdir().unwrap();
    let db = sim(tmp.path(), Variant::Schema, 24.0, 12, 0.3, 7);
    let config = config_from_ground_truth(tmp.path());
    let gt: serde_json::Value =
        serde_json::from_slice(&std::fs::read(tmp.path().join("ground_truth.json")).unwrap())
            .unwrap();
    let flapping: Vec<(String, f64)> = gt["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["regime"] == "flapping")
        .map(|h| {
            let host = h["host"].as_str().unwrap().to_owned();
            (host, h["policy"]["reset_timeout_s"].as_f64().unwrap())
        })
        .collect();
    assert!(!flapping.is_empty());
    let mut text = std::fs::read_to_string(&config).unwrap();
    for (host, reset) in &flapping {
        let at = text.find(&format!("  {host}:\n")).unwrap();
        let key = at + text[at..].find("reset_timeout_s: ").unwrap();
        let end = key + text[key..].find('\n').unwrap();
        text.replace_range(key..end, &format!("reset_timeout_s: {}", reset * 2.0));
    }
    std::fs::write(&config, text).unwrap();
    let out = tmp.path().join("out");
    bin()
        .arg("run")
        .arg("--telemetry")
        .arg(&db)
        .arg("--config")
        .arg(&config)
        .arg("--out")
        .arg(&out)
        .arg("-q")
        .assert()
        .success();
    let fidelity = ParquetReader::new(
        std::fs::File::open(out.join("metrics/replay_fidelity.parquet")).unwrap(),
    )
    .finish()
    .unwrap();
    let hosts = fidelity.column("host").unwrap().str().unwrap().clone();
    let reset = fidelity
        .column("reset_timeout_s")
        .unwrap()
        .f64()
        .unwrap()
        .clone();
    let spell = fidelity
        .column("open_spell_median_s")
        .unwrap()
        .f64()
        .unwrap()
        .clone();
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    let patch = std::fs::read_to_string(out.join("breakers.patch.yaml")).unwrap();
    let changes = patch.split("\nheld:").next().unwrap();
    let mut checked = 0;
    for i in 0..fidelity.height() {
        let (host, reset, spell) = (hosts.get(i).unwrap(), reset.get(i).unwrap(), spell.get(i));
        let Some(spell) = spell else { continue };
        if flapping.iter().any(|(h, _)| h == host) {
            assert!(
                spell < 0.9 * reset - 1.0,
                "{host}: spells {spell} s, file {reset} s"
            );
            assert!(!changes.contains(&format!("host: {host}")), "{changes}");
            checked += 1;
        } else {
            // Hosts the file describes: no spell is shorter than their reset.
            assert!(spell >= reset, "{host}: spells {spell} s, reset {reset} s");
        }
    }
    assert_eq!(checked, flapping.len());
    assert!(
        report.contains("turned half-open a median"),
        "no host held for its spells:\n{report}"
    );
}
