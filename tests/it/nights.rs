//! The closed loop on a short fleet: night 1 under the sample's files, `run --write`,
//! night 2 under the patched files beside the same night under the originals.

use crate::common;

use std::path::{Path, PathBuf};

use breaker_advisor::config::rates::RateLimits;
use breaker_advisor::simulate::SimOptions;
use serde_json::Value;

/// Six hosts (healthy, 429 episodes, outages, flapping, timeouts with a quota per
/// minute, chronic noise with a quota per hour), 8 hours, one machine, under the given
/// files.
fn night(dir: &Path, k: u32, cfg: &Path) -> Value {
    let config = breaker_advisor::config::BreakerConfig::load(&cfg.join("breakers.yaml")).unwrap();
    let rates = RateLimits::load(&cfg.join("ratelimits.yaml")).unwrap();
    common::sim_fleet(
        dir,
        SimOptions {
            config: Some(config),
            ratelimits: Some(rates),
            quotas: true,
            quota_windows: vec![60.0, 3600.0],
            night: k,
            ..SimOptions::new(dir, 8.0, 6, 2.0, 7)
        },
    );
    serde_json::from_slice(&std::fs::read(dir.join("ground_truth.json")).unwrap()).unwrap()
}

fn host<'a>(truth: &'a Value, name: &str) -> &'a Value {
    truth["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["host"] == name)
        .unwrap_or_else(|| panic!("{name} not simulated"))
}

fn share_429(h: &Value) -> f64 {
    h["attempts_429"].as_f64().unwrap() / h["attempts"].as_f64().unwrap()
}

/// Night 1 under the sample's files (breakers.yaml passed through `edit`), then
/// `run --write` on its telemetry: returns (the original files' folder, the patched
/// files' folder, night 1's ground truth).
fn first_night(tmp: &Path, edit: impl Fn(String) -> String) -> (PathBuf, PathBuf, Value) {
    let (orig, cfg) = (tmp.join("orig"), tmp.join("cfg"));
    let samples = Path::new(env!("CARGO_MANIFEST_DIR")).join("data-samples");
    for d in [&orig, &cfg] {
        std::fs::create_dir_all(d).unwrap();
        std::fs::copy(samples.join("ratelimits.yaml"), d.join("ratelimits.yaml")).unwrap();
        let breakers = std::fs::read_to_string(samples.join("breakers.yaml")).unwrap();
        std::fs::write(d.join("breakers.yaml"), edit(breakers)).unwrap();
    }
    let first = night(&tmp.join("n1"), 1, &orig);
    common::bin()
        .args(["-q", "run", "--write", "-t"])
        .arg(tmp.join("n1/telemetry.sqlite"))
        .arg("--config")
        .arg(cfg.join("breakers.yaml"))
        .arg("--ratelimits")
        .arg(cfg.join("ratelimits.yaml"))
        .arg("--patch-file")
        .arg(cfg.join("breakers.patch.yaml"))
        .arg("--out")
        .arg(tmp.join("out"))
        .assert()
        .success();
    (orig, cfg, first)
}

#[test]
fn the_advice_makes_the_next_night_better() {
    let tmp = tempfile::tempdir().unwrap();
    let (orig, cfg, first) = first_night(tmp.path(), |b| b);

    // Each quota host's metadata and landing rates now hold a rate in the quota's own
    // unit (a minute on one host, an hour on the other), at or under the server's
    // quota; the host throttled in episodes of its own and the healthy one keep theirs.
    let patched = RateLimits::load(&cfg.join("ratelimits.yaml")).unwrap();
    let before = RateLimits::load(&orig.join("ratelimits.yaml")).unwrap();
    for name in ["unpaywall.org", "archive.org"] {
        for q in host(&first, name)["quotas"].as_array().unwrap() {
            let role = q["role"].as_str().unwrap();
            let unit =
                breaker_advisor::config::rates::unit_of(q["window_s"].as_f64().unwrap()).unwrap();
            let rates = patched.rates_for(name, role).unwrap();
            let limit = rates
                .iter()
                .find_map(|r| r.strip_suffix(&format!("/{unit}")))
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or_else(|| panic!("{name} {role}: no rate per {unit} in {rates:?}"));
            assert!(
                limit <= q["limit"].as_u64().unwrap(),
                "{name} {role}: {limit}/{unit} over {q}"
            );
            assert!(
                limit * 2 >= q["limit"].as_u64().unwrap(),
                "{name} {role}: {limit}/{unit}"
            );
        }
    }
    for name in ["api.crossref.org", "export.arxiv.org"] {
        for role in ["metadata", "landing", "artifact"] {
            assert_eq!(
                patched.rates_for(name, role),
                before.rates_for(name, role),
                "{name} {role}"
            );
        }
    }

    let base = night(&tmp.path().join("base-2"), 2, &orig);
    let advised = night(&tmp.path().join("advised-2"), 2, &cfg);
    for name in ["unpaywall.org", "archive.org"] {
        let (b, a) = (host(&base, name), host(&advised, name));
        // The limiter's waits replace the 429s, and the Retry-After cooldowns they
        // started no longer block healthy calls.
        assert!(
            share_429(a) < 0.75 * share_429(b),
            "{name}: 429 share {} against {}",
            share_429(a),
            share_429(b)
        );
        let out = |h: &Value, k: &str| h["outcome"][k].as_u64().unwrap();
        assert!(
            out(a, "blocked_outside_incidents") < out(b, "blocked_outside_incidents"),
            "{name}: {} calls blocked outside incidents against {}",
            out(a, "blocked_outside_incidents"),
            out(b, "blocked_outside_incidents")
        );
        assert!(
            out(a, "successes") >= out(b, "successes"),
            "{name}: {} successful requests against {}",
            out(a, "successes"),
            out(b, "successes")
        );
    }
    // The healthy host was left alone, so its night is the baseline's, call for call.
    assert_eq!(
        host(&advised, "api.crossref.org"),
        host(&base, "api.crossref.org")
    );
}

/// From a fail_max at which one failed request opens the breaker, the hosts whose own
/// noise trips it get a higher one, and their next night opens less outside incidents
/// without losing successful requests.
#[test]
fn a_fail_max_that_noise_trips_is_raised_and_the_false_opens_go() {
    let tmp = tempfile::tempdir().unwrap();
    let (orig, cfg, first) = first_night(tmp.path(), |b| {
        assert!(
            b.contains("\n  fail_max: 5\n"),
            "the sample's defaults changed"
        );
        b.replace("\n  fail_max: 5\n", "\n  fail_max: 2\n")
    });
    let before = breaker_advisor::config::BreakerConfig::load(&orig.join("breakers.yaml")).unwrap();
    let after = breaker_advisor::config::BreakerConfig::load(&cfg.join("breakers.yaml")).unwrap();
    let raised: Vec<&str> = first["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|h| h["host"].as_str())
        .filter(|h| after.policy(h, None).fail_max > before.policy(h, None).fail_max)
        .collect();
    assert!(!raised.is_empty(), "no fail_max raised");
    let base = night(&tmp.path().join("base-2"), 2, &orig);
    let advised = night(&tmp.path().join("advised-2"), 2, &cfg);
    let out = |t: &Value, h: &str, k: &str| host(t, h)["outcome"][k].as_u64().unwrap();
    for name in raised {
        assert_eq!(
            before.policy(name, None).fail_max,
            2,
            "{name}: only the mistuned"
        );
        assert!(after.policy(name, None).fail_max <= 4, "{name}: one step");
        assert!(
            out(&advised, name, "opens_outside_incidents")
                < out(&base, name, "opens_outside_incidents"),
            "{name}: {} opens outside incidents against {}",
            out(&advised, name, "opens_outside_incidents"),
            out(&base, name, "opens_outside_incidents")
        );
        assert!(
            out(&advised, name, "successes") >= out(&base, name, "successes"),
            "{name}: {} successful requests against {}",
            out(&advised, name, "successes"),
            out(&base, name, "successes")
        );
    }
}
