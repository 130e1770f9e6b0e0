//! The breakers.yaml patcher on the crawler's real, heavily commented file (read from
//! ../shared/fixtures, never copied into the project): the diff is the edited lines only.

use std::path::Path;

use breaker_advisor::config::BreakerConfig;
use breaker_advisor::config::edit::{BreakerEdit, BreakerKey, patch_breakers};

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../shared/fixtures/docstokg/breakers.yaml"
);

/// Whether `small` is a subsequence of `big` (every original line kept, in order).
fn is_subsequence(small: &[&str], big: &[&str]) -> bool {
    let mut it = big.iter();
    small.iter().all(|line| it.any(|b| b == line))
}

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

// ---------------------------------------------------------------------------
// The patch file and `apply`, on the project's own samples of every awkward form.

use breaker_advisor::advise::{BreakerChange, Num, RateChange};
use breaker_advisor::config::rates::RateLimits;
use breaker_advisor::patch::{
    Applied, BreakersSection, RatelimitsSection, apply_breakers, apply_ratelimits, sha256_hex,
};

fn change(host: &str, role: Option<&str>, key: BreakerKey, from: i64, to: i64) -> BreakerChange {
    BreakerChange {
        host: host.into(),
        role: role.map(str::to_owned),
        key,
        from: Num::Int(from),
        to,
        reason: "test".into(),
        evidence: Default::default(),
    }
}

/// A rates change to `to` (the other fields do not matter to `apply`).
fn rate_change(host: &str, role: &str, to: Vec<String>) -> RateChange {
    RateChange {
        host: host.into(),
        role: role.into(),
        from: vec![],
        to,
        multiplier_from: Num::Int(1),
        multiplier_to: Num::Float(0.8),
        base: vec![],
        reason: "test".into(),
        evidence: Default::default(),
    }
}

fn section(text: &str, changes: Vec<BreakerChange>) -> BreakersSection {
    BreakersSection {
        file: "breakers.yaml".into(),
        base_sha256: sha256_hex(text.as_bytes()),
        changes,
    }
}

fn applied(text: &str, changes: Vec<BreakerChange>) -> String {
    match apply_breakers(&section(text, changes), Path::new("b.yaml"), text).unwrap() {
        Applied::Changed(t) => t,
        other => panic!("expected a change, got {other:?}"),
    }
}

/// Lines of `after` that are not in `before` (multiset difference, in order).
fn added_lines<'a>(before: &str, after: &'a str) -> Vec<&'a str> {
    let mut pool: Vec<&str> = before.lines().collect();
    after
        .lines()
        .filter(|l| match pool.iter().position(|p| p == l) {
            Some(i) => {
                pool.remove(i);
                false
            }
            None => true,
        })
        .collect()
}

#[test]
fn inline_comments_quoted_keys_and_flow_lists_survive() {
    let text = r#"# banner
defaults:
  fail_max: 5      # trips after five
  classify:
    failure_statuses: [500, 502,
      503, 504]
hosts:
  "API.Example.org":   # quoted, mixed case
    fail_max: 3 # inline
  'b.example': {fail_max: 2, reset_timeout_s: 30}
# notes
"#;
    let out = applied(
        text,
        vec![
            change("api.example.org", None, BreakerKey::FailMax, 3, 4),
            change("b.example", None, BreakerKey::ResetTimeoutS, 30, 45),
        ],
    );
    let (a, b): (Vec<&str>, Vec<&str>) = (text.lines().collect(), out.lines().collect());
    assert_eq!(a.len(), b.len(), "{out}");
    let differing: Vec<_> = a.iter().zip(&b).filter(|(x, y)| x != y).collect();
    assert_eq!(differing.len(), 2, "{out}");
    assert!(out.contains("    fail_max: 4 # inline\n"), "{out}");
    assert!(
        out.contains("'b.example': {fail_max: 2, reset_timeout_s: 45}"),
        "{out}"
    );
    assert!(
        out.contains("failure_statuses: [500, 502,\n      503, 504]"),
        "{out}"
    );
    let cfg = BreakerConfig::parse(&out, Path::new("b.yaml")).unwrap();
    assert_eq!(cfg.policy("api.example.org", None).fail_max, 4);
    assert_eq!(cfg.hosts.len(), 2, "matched by normalised name, not added");
}

#[test]
fn crlf_files_stay_crlf() {
    let text = "defaults:\r\n  fail_max: 5\r\nhosts:\r\n  a.example:\r\n    fail_max: 3 # note\r\n";
    let out = applied(
        text,
        vec![
            change("a.example", None, BreakerKey::FailMax, 3, 4),
            change("new.example", None, BreakerKey::FailMax, 5, 6),
        ],
    );
    assert!(
        out.split_inclusive('\n').all(|l| l.ends_with("\r\n")),
        "{out:?}"
    );
    assert!(out.contains("    fail_max: 4 # note\r\n"), "{out:?}");
    let cfg = BreakerConfig::parse(&out, Path::new("b.yaml")).unwrap();
    assert_eq!(cfg.policy("new.example", None).fail_max, 6);
}

#[test]
fn four_space_files_get_four_space_additions() {
    let text = "defaults:\n    fail_max: 5\nhosts:\n    a.example:\n        fail_max: 3\n";
    let out = applied(
        text,
        vec![
            change("a.example", None, BreakerKey::ResetTimeoutS, 60, 90),
            change(
                "a.example",
                Some("metadata"),
                BreakerKey::SuccessThreshold,
                1,
                2,
            ),
            change("new.example", None, BreakerKey::FailMax, 5, 6),
        ],
    );
    for line in added_lines(text, &out) {
        let indent = line.len() - line.trim_start().len();
        assert_eq!(indent % 4, 0, "{line:?} in\n{out}");
    }
    assert!(
        out.contains("    new.example:\n        fail_max: 6\n"),
        "{out}"
    );
    assert!(
        out.contains(
            "        roles:\n            metadata:\n                success_threshold: 2\n"
        ),
        "{out}"
    );
}

#[test]
fn an_empty_hosts_section_gets_its_first_host() {
    let text = "defaults:\n  fail_max: 5\nhosts:\n# per-host overrides go above\n";
    let out = applied(
        text,
        vec![change("a.example", None, BreakerKey::FailMax, 5, 4)],
    );
    assert!(
        out.contains("hosts:\n  a.example:\n    fail_max: 4\n"),
        "{out}"
    );
    assert!(out.contains("# per-host overrides go above"), "{out}");
}

#[test]
fn hostile_host_names_round_trip_as_data() {
    let text = "defaults:\n  fail_max: 5\nhosts:\n  a.example:\n    fail_max: 3\n";
    for (raw, key) in [
        ("true", "true"),
        ("a: b", "a: b"),
        ("x #y", "x #y"),
        ("*x", "*x"),
        ("münchen.example", "xn--mnchen-3ya.example"),
    ] {
        let out = applied(text, vec![change(raw, None, BreakerKey::FailMax, 5, 7)]);
        let v: yaml_serde::Value = yaml_serde::from_str(&out).unwrap();
        assert_eq!(
            v["hosts"][key]["fail_max"].as_i64(),
            Some(7),
            "{raw:?}:\n{out}"
        );
        assert_eq!(v["hosts"]["a.example"]["fail_max"].as_i64(), Some(3));
        assert!(out.starts_with(text), "only appended:\n{out}");
    }
}

#[test]
fn a_stale_patch_is_refused_and_a_second_apply_changes_nothing() {
    let text = "hosts:\n  a.example:\n    fail_max: 3\n";
    let s = section(
        text,
        vec![change("a.example", None, BreakerKey::FailMax, 3, 4)],
    );
    let Applied::Changed(once) = apply_breakers(&s, Path::new("b.yaml"), text).unwrap() else {
        panic!("first apply changes the file");
    };
    assert_eq!(
        apply_breakers(&s, Path::new("b.yaml"), &once).unwrap(),
        Applied::AlreadyApplied
    );
    let edited = text.replace("fail_max: 3", "fail_max: 9");
    let err = apply_breakers(&s, Path::new("b.yaml"), &edited)
        .unwrap_err()
        .to_string();
    assert!(err.contains("b.yaml: stale patch"), "{err}");
    assert!(err.contains(&sha256_hex(text.as_bytes())), "{err}");
}

#[test]
fn rates_patch_keeps_form_and_matches_hosts_by_normalised_name() {
    let text = "defaults:\n  metadata:\n    rates:\n      - \"10/SECOND\"\n      - \"5000/HOUR\"\nhosts:\n  # Crossref\n  API.Crossref.org:\n    metadata:\n      rates: [\"50/SECOND\", \"10000/HOUR\"] # agreed with them\n";
    let rc =
        |host: &str, to: [&str; 2]| rate_change(host, "metadata", to.map(String::from).to_vec());
    let sec = RatelimitsSection {
        file: "ratelimits.yaml".into(),
        base_sha256: sha256_hex(text.as_bytes()),
        changes: vec![
            rc("api.crossref.org", ["40/SECOND", "8000/HOUR"]),
            rc("new.example", ["8/SECOND", "4000/HOUR"]),
        ],
    };
    let Applied::Changed(out) = apply_ratelimits(&sec, Path::new("r.yaml"), text).unwrap() else {
        panic!("changed");
    };
    assert!(
        out.contains("  API.Crossref.org:\n    metadata:\n      rates: [\"40/SECOND\", \"8000/HOUR\"] # agreed with them\n"),
        "{out}"
    );
    let rl = RateLimits::parse(&out, Path::new("r.yaml")).unwrap();
    assert_eq!(
        rl.hosts["new.example"]["metadata"],
        ["8/SECOND", "4000/HOUR"]
    );
    assert_eq!(rl.hosts.len(), 2);
    assert_eq!(
        apply_ratelimits(&sec, Path::new("r.yaml"), &out).unwrap(),
        Applied::AlreadyApplied
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
    assert_eq!(
        added.len(),
        4,
        "one replaced rates line, three for the new host: {added:?}"
    );
    assert!(
        out.contains("rates: [\"16/MINUTE\", \"800/DAY\"]"),
        "{added:?}"
    );
}
