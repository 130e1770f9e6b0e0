//! The patch file and `apply` on the project's own samples of every awkward form (the
//! crawler's real files are checked by tests/acceptance.rs, run by .ci/run).

use crate::common;

use std::path::Path;

use breaker_advisor::config::BreakerConfig;
use breaker_advisor::config::edit::BreakerKey;
use common::{added_lines, rate_change};

// ---------------------------------------------------------------------------
// The patch file and `apply`, on the project's own samples of every awkward form.

use breaker_advisor::advise::{BreakerChange, Num};
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
        confidence: None,
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
