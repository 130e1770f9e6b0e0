//! Policy replay: fidelity (replaying the simulator's telemetry under the policy that
//! produced it reproduces the recorded opens and half-open outcomes) and what a
//! different policy changes.

mod common;

use std::path::Path;

use breaker_advisor::simulate::Variant;
use common::{bin, sim};

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
    bin()
        .args(["export", "--telemetry"])
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("data-samples/telemetry.sqlite"))
        .arg("--out")
        .arg(&data)
        .assert()
        .success();
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
