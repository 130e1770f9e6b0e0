//! The closed loop on a short fleet: night 1 under the sample's files, `run --write`,
//! night 2 under the patched files beside the same night under the originals.

mod common;

use std::path::Path;

use breaker_advisor::config::rates::RateLimits;
use breaker_advisor::simulate::SimOptions;
use serde_json::Value;

/// Six hosts (healthy, 429 episodes, outages, flapping, timeouts with a quota, chronic
/// noise with a quota), 8 hours, one machine, under the given files.
fn night(dir: &Path, k: u32, cfg: &Path) -> Value {
    let config = breaker_advisor::config::BreakerConfig::load(&cfg.join("breakers.yaml")).unwrap();
    let rates = RateLimits::load(&cfg.join("ratelimits.yaml")).unwrap();
    common::sim_fleet(
        dir,
        SimOptions {
            config: Some(config),
            ratelimits: Some(rates),
            quotas: true,
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

#[test]
fn the_advice_makes_the_next_night_better() {
    let tmp = tempfile::tempdir().unwrap();
    let (orig, cfg) = (tmp.path().join("orig"), tmp.path().join("cfg"));
    let samples = Path::new(env!("CARGO_MANIFEST_DIR")).join("data-samples");
    for d in [&orig, &cfg] {
        std::fs::create_dir_all(d).unwrap();
        for f in ["breakers.yaml", "ratelimits.yaml"] {
            std::fs::copy(samples.join(f), d.join(f)).unwrap();
        }
    }
    let first = night(&tmp.path().join("n1"), 1, &orig);
    common::bin()
        .args(["-q", "run", "--write", "-t"])
        .arg(tmp.path().join("n1/telemetry.sqlite"))
        .arg("--config")
        .arg(cfg.join("breakers.yaml"))
        .arg("--ratelimits")
        .arg(cfg.join("ratelimits.yaml"))
        .arg("--patch-file")
        .arg(cfg.join("breakers.patch.yaml"))
        .arg("--out")
        .arg(tmp.path().join("out"))
        .assert()
        .success();

    // Each quota host's metadata and landing rates now hold a per-minute rate at or
    // under the server's quota; the host throttled in episodes of its own and the
    // healthy one keep theirs.
    let patched = RateLimits::load(&cfg.join("ratelimits.yaml")).unwrap();
    let before = RateLimits::load(&orig.join("ratelimits.yaml")).unwrap();
    for name in ["unpaywall.org", "archive.org"] {
        for q in host(&first, name)["quotas"].as_array().unwrap() {
            let role = q["role"].as_str().unwrap();
            let rates = patched.rates_for(name, role).unwrap();
            let minute = rates
                .iter()
                .find_map(|r| r.strip_suffix("/MINUTE"))
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or_else(|| panic!("{name} {role}: no per-minute rate in {rates:?}"));
            assert!(
                minute <= q["limit"].as_u64().unwrap(),
                "{name} {role}: {minute}/MINUTE over {q}"
            );
            assert!(
                minute * 2 >= q["limit"].as_u64().unwrap(),
                "{name} {role}: {minute}/MINUTE"
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
