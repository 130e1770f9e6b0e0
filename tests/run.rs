//! The nightly job end to end through the binary: `run` on the samples, determinism,
//! `--check`, `--write`, and `apply` refusing stale patches.

mod common;

use std::path::Path;

use breaker_advisor::patch::PatchFile;
use common::{bin, sample_configs, sample_telemetry};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn run_job(out: &Path, config: &Path, rates: &Path, extra: &[&str]) -> assert_cmd::assert::Assert {
    common::run_in(Path::new(ROOT), config, rates, true)
        .arg("--out")
        .arg(out)
        .args(extra)
        .assert()
}

fn outputs(out: &Path) -> Vec<(String, Vec<u8>)> {
    [
        "breakers.patch.yaml",
        "changes.diff",
        "proposed/breakers.yaml",
        "proposed/ratelimits.yaml",
        "metrics/host_summary.parquet",
        "metrics/incidents.parquet",
    ]
    .iter()
    .map(|f| (f.to_string(), std::fs::read(out.join(f)).expect(f)))
    .collect()
}

#[test]
fn run_is_deterministic_and_writes_a_reviewable_patch() {
    let tmp = tempfile::tempdir().unwrap();
    let (b, r) = sample_configs(tmp.path());
    let before = std::fs::read(&b).unwrap();
    let (one, two) = (tmp.path().join("one"), tmp.path().join("two"));
    run_job(&one, &b, &r, &[]).success();
    run_job(&two, &b, &r, &[]).success();
    assert_eq!(outputs(&one), outputs(&two), "same inputs, same bytes");
    // A rerun into the same folder: nothing new to export, the same patch and version.
    let first = outputs(&one);
    let report =
        |d: &Path| ["report.md", "report.html"].map(|f| std::fs::read(d.join(f)).expect(f));
    let first_report = report(&one);
    run_job(&one, &b, &r, &[]).success();
    assert_eq!(outputs(&one), first);
    assert_eq!(report(&one), first_report);
    assert_eq!(std::fs::read(&b).unwrap(), before, "no --write, no edit");

    let patch = PatchFile::load(&one.join("breakers.patch.yaml")).unwrap();
    assert_eq!(patch.patch_version, 1);
    assert!(
        patch.change_count() > 0,
        "the samples hold incidents to act on"
    );
    assert_eq!(
        patch.breakers.base_sha256,
        breaker_advisor::patch::sha256_hex(&before)
    );
    for c in &patch.breakers.changes {
        assert!(!c.reason.is_empty() && !c.evidence.is_empty(), "{c:?}");
        assert_ne!(c.from.as_f64(), c.to as f64, "{c:?}");
    }
    // The diff touches only the changed values (and the roles a change adds).
    let diff = std::fs::read_to_string(one.join("changes.diff")).unwrap();
    let removed = diff
        .lines()
        .filter(|l| l.starts_with('-') && !l.starts_with("---"))
        .count();
    let changed_in_place = patch
        .breakers
        .changes
        .iter()
        .filter(|c| c.role.is_none())
        .count();
    assert_eq!(removed, changed_in_place, "{diff}");
    // Healthy hosts of the samples are left alone.
    assert!(
        !patch
            .breakers
            .changes
            .iter()
            .any(|c| c.host == "api.crossref.org" || c.host == "zenodo.org"),
        "{:?}",
        patch.breakers.changes
    );
}

/// Every file `run` writes (the dataset aside), by path relative to `out`.
fn every_output(out: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files = Vec::new();
    let mut dirs = vec![out.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            let rel = p.strip_prefix(out).unwrap().display().to_string();
            if p.is_dir() {
                if rel != "dataset" {
                    dirs.push(p);
                }
            } else {
                files.push((rel, std::fs::read(&p).unwrap()));
            }
        }
    }
    files.sort();
    files
}

#[test]
fn a_memory_budget_changes_how_hosts_are_grouped_and_nothing_else() {
    let tmp = tempfile::tempdir().unwrap();
    let (b, r) = sample_configs(tmp.path());
    let out = tmp.path().join("out");
    run_job(&out, &b, &r, &[]).success();
    let whole = every_output(&out);
    assert!(
        whole.len() >= 12,
        "{:?}",
        whole.iter().map(|f| &f.0).collect::<Vec<_>>()
    );
    // One byte: every host is a group of its own, its rows read on their own, for the
    // metrics, the replay check and the advice alike; 403MiB: groups of a few hosts
    // (19 MiB over the fixed part, about 31,000 rows each).
    for budget in ["1", "403MiB"] {
        std::fs::remove_dir_all(&out).unwrap();
        run_job(&out, &b, &r, &["--memory-budget", budget]).success();
        let grouped = every_output(&out);
        assert_eq!(
            grouped.iter().map(|f| &f.0).collect::<Vec<_>>(),
            whole.iter().map(|f| &f.0).collect::<Vec<_>>()
        );
        for ((name, a), (_, b)) in whole.iter().zip(&grouped) {
            assert!(a == b, "{name} differs under --memory-budget {budget}");
        }
    }
    run_job(&out, &b, &r, &["--memory-budget", "lots"])
        .failure()
        .stderr(predicates::str::contains("--memory-budget"));
}

#[test]
fn hosts_sharing_values_through_an_anchor_are_held_and_the_others_advised() {
    let tmp = tempfile::tempdir().unwrap();
    let (b, r) = sample_configs(tmp.path());
    // api.openalex.org defines &fast; the IDN host takes it through a merge key. Both
    // get advice from the sample as plain values (tested above).
    let text = std::fs::read_to_string(&b).unwrap();
    let shared = text
        .replacen("  api.openalex.org:\n", "  api.openalex.org: &fast\n", 1)
        .replacen(
            "    # münchen.example (IDN host, stored as punycode)\n    fail_max: 4\n    reset_timeout_s: 45\n",
            "    # münchen.example (IDN host, stored as punycode)\n    <<: *fast\n",
            1,
        );
    assert_ne!(shared, text);
    std::fs::write(&b, &shared).unwrap();
    let plain = tmp.path().join("plain.yaml");
    std::fs::write(&plain, &text).unwrap();
    let (out, base) = (tmp.path().join("out"), tmp.path().join("base"));
    run_job(&base, &plain, &r, &[]).success();
    run_job(&out, &b, &r, &["--write"]).success();

    let (was, now) = (
        PatchFile::load(&base.join("breakers.patch.yaml")).unwrap(),
        PatchFile::load(&out.join("breakers.patch.yaml")).unwrap(),
    );
    let sharing = ["api.openalex.org", "xn--mnchen-3ya.example"];
    for h in sharing {
        assert!(was.breakers.changes.iter().any(|c| c.host == h), "{h}");
        assert!(!now.breakers.changes.iter().any(|c| c.host == h), "{h}");
        let held = now
            .held
            .iter()
            .find(|x| x.host == h && x.reason.starts_with("breakers.yaml left alone"))
            .unwrap_or_else(|| panic!("{h} held: {:?}", now.held));
        let other = sharing.iter().find(|o| **o != h).unwrap();
        assert!(
            held.reason.contains("&fast") && held.reason.contains(&format!("hosts.{other}")),
            "{}",
            held.reason
        );
    }
    // Every other host keeps its advice, and the write went through with the anchor.
    let others = |p: &PatchFile| -> Vec<String> {
        let mut v: Vec<String> = p
            .breakers
            .changes
            .iter()
            .filter(|c| !sharing.contains(&c.host.as_str()))
            .map(|c| format!("{c:?}"))
            .collect();
        v.sort();
        v
    };
    assert!(!others(&now).is_empty());
    assert_eq!(others(&now), others(&was));
    let written = std::fs::read_to_string(&b).unwrap();
    assert!(written.contains("api.openalex.org: &fast") && written.contains("<<: *fast"));
    assert_ne!(written, shared, "the other hosts' changes were written");
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    // (Markdown-escaped: GitHub renders it as &fast.)
    assert!(report.contains("&amp;fast"), "the report names the anchor");
}

#[test]
fn check_exits_3_and_write_applies_the_patch() {
    let tmp = tempfile::tempdir().unwrap();
    let (b, r) = sample_configs(tmp.path());
    let out = tmp.path().join("out");
    let a = run_job(&out, &b, &r, &["--check"]).code(3);
    let stdout = String::from_utf8_lossy(&a.get_output().stdout).into_owned();
    assert!(stdout.contains("check:"), "{stdout}");

    run_job(&out, &b, &r, &["--write"]).success();
    assert_eq!(
        std::fs::read(&b).unwrap(),
        std::fs::read(out.join("proposed/breakers.yaml")).unwrap()
    );
    // The next run starts from the edited file: a new patch version, and no change
    // already made is proposed again.
    let applied = PatchFile::load(&out.join("breakers.patch.yaml")).unwrap();
    run_job(&out, &b, &r, &[]).success();
    let next = PatchFile::load(&out.join("breakers.patch.yaml")).unwrap();
    assert_eq!(next.patch_version, applied.patch_version + 1);
    for c in &next.breakers.changes {
        assert!(
            !applied
                .breakers
                .changes
                .iter()
                .any(|p| p.host == c.host && p.key == c.key && p.role == c.role && p.to == c.to),
            "{c:?} proposed twice"
        );
    }
}

#[test]
fn apply_refuses_a_stale_patch_and_is_idempotent() {
    let tmp = tempfile::tempdir().unwrap();
    let (b, r) = sample_configs(tmp.path());
    let out = tmp.path().join("out");
    run_job(&out, &b, &r, &[]).success();
    let patch = out.join("breakers.patch.yaml");
    let apply = || {
        bin()
            .args(["apply", "--patch"])
            .arg(&patch)
            .arg("--config")
            .arg(&b)
            .arg("--ratelimits")
            .arg(&r)
            .assert()
    };

    // Someone edited the file since the patch was made: refused, file untouched.
    let original = std::fs::read_to_string(&b).unwrap();
    let edited = original.replacen("fail_max: 5", "fail_max: 6", 1);
    std::fs::write(&b, &edited).unwrap();
    let a = apply().code(1);
    let err = String::from_utf8_lossy(&a.get_output().stderr).into_owned();
    assert!(err.contains("stale patch"), "{err}");
    assert_eq!(std::fs::read_to_string(&b).unwrap(), edited);

    std::fs::write(&b, &original).unwrap();
    apply().success();
    let once = std::fs::read(&b).unwrap();
    assert_eq!(
        once,
        std::fs::read(out.join("proposed/breakers.yaml")).unwrap()
    );
    let a = apply().success();
    assert!(String::from_utf8_lossy(&a.get_output().stdout).contains("already up to date"));
    assert_eq!(std::fs::read(&b).unwrap(), once);
}

#[test]
fn run_without_arguments_uses_the_samples_and_leaves_them_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let samples = ["breakers.yaml", "ratelimits.yaml"]
        .map(|f| std::fs::read(Path::new(ROOT).join("data-samples").join(f)).unwrap());
    bin()
        .current_dir(ROOT)
        .args(["run", "--out"])
        .arg(tmp.path())
        .assert()
        .success();
    assert!(tmp.path().join("breakers.patch.yaml").is_file());
    let after = ["breakers.yaml", "ratelimits.yaml"]
        .map(|f| std::fs::read(Path::new(ROOT).join("data-samples").join(f)).unwrap());
    assert_eq!(samples, after);
}

#[test]
fn advise_prints_the_plan_or_json_and_bad_input_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let (b, r) = sample_configs(tmp.path());
    let out = tmp.path().join("out");
    run_job(&out, &b, &r, &[]).success();
    let a = bin()
        .args(["advise", "--metrics"])
        .arg(out.join("metrics"))
        .arg("--data")
        .arg(out.join("dataset"))
        .arg("--config")
        .arg(&b)
        .arg("--ratelimits")
        .arg(&r)
        .arg("--json")
        .assert()
        .success();
    let v: serde_json::Value = serde_json::from_slice(&a.get_output().stdout).unwrap();
    let from_run = PatchFile::load(&out.join("breakers.patch.yaml")).unwrap();
    assert_eq!(
        v["breakers"]["changes"].as_array().unwrap().len(),
        from_run.breakers.changes.len()
    );

    // A config the crawler would reject: named by file and key, exit 1.
    std::fs::write(&b, "defaults:\n  fail_max: 0\n").unwrap();
    let a = bin()
        .args(["advise", "--metrics"])
        .arg(out.join("metrics"))
        .arg("--config")
        .arg(&b)
        .assert()
        .code(1);
    let err = String::from_utf8_lossy(&a.get_output().stderr).into_owned();
    assert!(
        err.contains("breakers.yaml") && err.contains("defaults.fail_max"),
        "{err}"
    );

    // --telemetry without --config is a usage error.
    bin()
        .args(["run", "--telemetry", "x.sqlite", "--out"])
        .arg(tmp.path().join("o2"))
        .assert()
        .code(1);
}

#[test]
fn push_cooldowns_dry_runs_then_sets_and_never_shortens() {
    let tmp = tempfile::tempdir().unwrap();
    let (b, r) = sample_configs(tmp.path());
    let out = tmp.path().join("out");
    let store = tmp.path().join("cooldowns.sqlite");
    let spec = format!("sqlite:{}", store.display());
    // The window ends inside europepmc.org's 429 incident (13:57-14:55 UTC): ongoing.
    // Its median Retry-After is 80 s, below its reset timeout (90 s): 90 s it is.
    let now = "2025-11-25T14:30:00Z";
    let a = run_job(
        &out,
        &b,
        &r,
        &["--now", now, "--push-cooldowns", "--store", &spec],
    )
    .success();
    let stdout = String::from_utf8_lossy(&a.get_output().stdout).into_owned();
    assert!(
        stdout.contains("would set europepmc.org until 2025-11-25T14:31:30Z"),
        "{stdout}"
    );
    assert!(!store.exists(), "no --yes, no store written");

    // A longer deadline set by an operator is kept.
    bin()
        .args([
            "cooldown",
            "--store",
            &spec,
            "--now",
            now,
            "open",
            "europepmc.org",
        ])
        .args(["--seconds", "3600", "--reason", "maintenance"])
        .assert()
        .success();
    let a = run_job(
        &out,
        &b,
        &r,
        &["--now", now, "--push-cooldowns", "--store", &spec, "--yes"],
    )
    .success();
    let stdout = String::from_utf8_lossy(&a.get_output().stdout).into_owned();
    assert!(
        stdout.contains("europepmc.org already has a later deadline"),
        "{stdout}"
    );
    let a = bin()
        .args(["cooldown", "--store", &spec, "--now", now, "show", "--json"])
        .assert()
        .success();
    let v: serde_json::Value = serde_json::from_slice(&a.get_output().stdout).unwrap();
    let rows = v["cooldowns"].as_array().unwrap();
    let reason = |host: &str| {
        rows.iter()
            .find(|c| c["host"] == host)
            .map(|c| c["reason"].as_str().unwrap_or_default().to_owned())
    };
    assert_eq!(reason("europepmc.org").as_deref(), Some("maintenance"));
    assert_eq!(
        reason("api.openalex.org").as_deref(),
        Some("advisor:incident"),
        "{v}"
    );
}

#[test]
fn a_report_names_the_dates_a_damaged_dataset_lost() {
    let tmp = tempfile::tempdir().unwrap();
    let (b, r) = sample_configs(tmp.path());
    let samples = sample_telemetry();
    let (one, two) = (tmp.path().join("one.sqlite"), tmp.path().join("two.sqlite"));
    std::fs::copy(&samples[0], &one).unwrap();
    std::fs::copy(&samples[1], &two).unwrap();
    let out = tmp.path().join("out");
    let job = |files: &[&Path]| {
        let mut cmd = bin();
        cmd.arg("run");
        for f in files {
            cmd.arg("--telemetry").arg(f);
        }
        cmd.arg("--config")
            .arg(&b)
            .arg("--ratelimits")
            .arg(&r)
            .arg("--out")
            .arg(&out)
            .assert()
    };
    job(&[&one, &two]).success();
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("dataset/_manifest.json")).unwrap())
            .unwrap();
    let label = one.to_string_lossy().into_owned();
    let part = manifest["sources"][&label]["parts"][0]
        .as_str()
        .unwrap()
        .to_owned();
    let date = part
        .split('/')
        .nth(1)
        .unwrap()
        .trim_start_matches("date=")
        .to_owned();
    std::fs::remove_file(out.join("dataset").join(&part)).unwrap();
    // The first machine's file is no longer given: its lost rows cannot come back.
    job(&[&two]).success();
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    let section = report.split("### Incomplete input").nth(1).expect(&report);
    let table = part.split('/').next().unwrap();
    assert!(
        section.contains(&date)
            && section.contains(&breaker_advisor::report::md(table))
            && section.contains("one.sqlite"),
        "{section}"
    );
}
