//! Acceptance against the crawler's real, heavily commented config files in
//! ../shared/fixtures/docstokg (never copied into the project): the diff is the edited
//! lines only. Not part of the README's test command (a plain clone has no ../shared);
//! `.ci/run` runs it as its own step, `cargo test --release --test acceptance`, and fails
//! when the folder is missing.

// Only a few of the shared helpers are used here; the `it` binary uses them all.
#[allow(dead_code)]
#[path = "it/common/mod.rs"]
mod common;

use std::path::Path;

use breaker_advisor::config::BreakerConfig;
use breaker_advisor::config::edit::{BreakerEdit, BreakerKey, patch_breakers};
use breaker_advisor::config::rates::RateLimits;
use breaker_advisor::patch::{Applied, RatelimitsSection, apply_ratelimits, sha256_hex};
use common::{added_lines, rate_change};

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../shared/fixtures/docstokg/breakers.yaml"
);

#[test]
fn replacing_values_changes_only_those_lines() {
    let text = std::fs::read_to_string(FIXTURE).expect("../shared/fixtures beside the clone");
    let out = patch_breakers(
        &text,
        Path::new(FIXTURE),
        &[
            BreakerEdit::new(Some("api.crossref.org"), None, BreakerKey::FailMax, 4),
            BreakerEdit::new(
                Some("api.crossref.org"),
                None,
                BreakerKey::RetryAfterCapS,
                300,
            ),
            BreakerEdit::new(
                Some("export.arxiv.org"),
                None,
                BreakerKey::ResetTimeoutS,
                180,
            ),
            BreakerEdit::new(None, Some("metadata"), BreakerKey::SuccessThreshold, 3),
        ],
    )
    .unwrap();
    let (a, b): (Vec<&str>, Vec<&str>) = (text.lines().collect(), out.lines().collect());
    assert_eq!(a.len(), b.len(), "replacing values adds or removes no line");
    let changed: Vec<(&str, &str)> = a
        .iter()
        .zip(&b)
        .filter(|(x, y)| x != y)
        .map(|(x, y)| (*x, *y))
        .collect();
    assert_eq!(
        changed,
        [
            ("      success_threshold: 2", "      success_threshold: 3"),
            ("    fail_max: 6", "    fail_max: 4"),
            (
                "    retry_after_cap_s: 600 # Cap at 10 minutes for Crossref",
                "    retry_after_cap_s: 300 # Cap at 10 minutes for Crossref"
            ),
            ("    reset_timeout_s: 120", "    reset_timeout_s: 180"),
        ]
    );
    let cfg = BreakerConfig::parse(&out, Path::new(FIXTURE)).unwrap();
    assert_eq!(cfg.policy("api.crossref.org", None).fail_max, 4);
    assert_eq!(cfg.policy("export.arxiv.org", None).reset_timeout_s, 180.0);
}

#[test]
fn new_keys_and_hosts_only_add_lines() {
    let text = std::fs::read_to_string(FIXTURE).expect("../shared/fixtures beside the clone");
    let out = patch_breakers(
        &text,
        Path::new(FIXTURE),
        &[
            BreakerEdit::new(
                Some("api.openalex.org"),
                None,
                BreakerKey::SuccessThreshold,
                2,
            ),
            BreakerEdit::new(
                Some("api.crossref.org"),
                Some("metadata"),
                BreakerKey::TrialCalls,
                1,
            ),
            BreakerEdit::new(Some("München.example"), None, BreakerKey::FailMax, 3),
        ],
    )
    .unwrap();
    let (a, b): (Vec<&str>, Vec<&str>) = (text.lines().collect(), out.lines().collect());
    assert!(
        is_subsequence(&a, &b),
        "an original line was changed or lost"
    );
    let added = b.len() - a.len();
    // success_threshold (1); roles, metadata, trial_calls (3); the host and fail_max (2).
    assert_eq!(added, 6, "{out}");
    let cfg = BreakerConfig::parse(&out, Path::new(FIXTURE)).unwrap();
    assert_eq!(cfg.policy("api.openalex.org", None).success_threshold, 2);
    assert_eq!(
        cfg.policy("api.crossref.org", Some("metadata")).trial_calls,
        1
    );
    assert_eq!(cfg.policy("xn--mnchen-3ya.example", None).fail_max, 3);
    assert!(
        out.contains("  xn--mnchen-3ya.example:\n    fail_max: 3"),
        "{out}"
    );
}

#[test]
fn the_real_ratelimits_file_changes_only_the_edited_rates() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/fixtures/docstokg/ratelimits.yaml"
    );
    let text = std::fs::read_to_string(path).expect("../shared/fixtures beside the clone");
    let rl = RateLimits::parse(&text, Path::new(path)).unwrap();
    // arXiv's "1/3SECOND" scaled by 0.8 is written in a form the crawler reads right.
    let arxiv: Vec<String> = rl.hosts["export.arxiv.org"]["metadata"]
        .iter()
        .map(|r| {
            breaker_advisor::config::rates::Rate::parse(r)
                .unwrap()
                .scaled(0.8)
                .to_string()
        })
        .collect();
    assert_eq!(arxiv, ["16/MINUTE", "800/DAY"]);
    let rc = rate_change;
    let sec = RatelimitsSection {
        file: "ratelimits.yaml".into(),
        base_sha256: sha256_hex(text.as_bytes()),
        changes: vec![
            rc("export.arxiv.org", "metadata", arxiv),
            rc(
                "new.example",
                "landing",
                vec!["4/SECOND".into(), "1600/HOUR".into()],
            ),
        ],
    };
    let Applied::Changed(out) = apply_ratelimits(&sec, Path::new(path), &text).unwrap() else {
        panic!("changed");
    };
    let (a, b): (Vec<&str>, Vec<&str>) = (text.lines().collect(), out.lines().collect());
    assert!(is_subsequence(
        &a.iter()
            .copied()
            .filter(|l| !l.contains("\"1/3SECOND\", \"1000/DAY\""))
            .collect::<Vec<_>>(),
        &b
    ));
    let added = added_lines(&text, &out);
    // The new host's entry replaces the defaults' landing entry as a whole in the
    // crawler's loader, so it carries the defaults' wait (250 ms, not the loader's 200).
    assert_eq!(
        added.len(),
        5,
        "one replaced rates line, four for the new host: {added:?}"
    );
    assert!(
        added.iter().any(|l| l.trim() == "max_delay_ms: 250"),
        "{added:?}"
    );
    assert!(
        out.contains("rates: [\"16/MINUTE\", \"800/DAY\"]"),
        "{added:?}"
    );
}

/// Whether `small` is a subsequence of `big` (every original line kept, in order).
fn is_subsequence(small: &[&str], big: &[&str]) -> bool {
    let mut it = big.iter();
    small.iter().all(|line| it.any(|b| b == line))
}
