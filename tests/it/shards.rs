//! Shards through the binary: `run --shard I/N` jobs and `run --merge-shards` write the
//! single run's patch, diff, metrics and report; the merge refuses what does not add up.

use crate::common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use common::{bin, sample_configs, sample_telemetry};

/// The end of the samples' day: every shard and the single run analyse the same window.
const NOW: &str = "2025-11-26T00:00:00Z";

/// A folder where runs write `out/` (relative, so the paths the report names are the
/// same in every folder).
fn workdir(tmp: &Path, name: &str) -> PathBuf {
    let dir = tmp.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn run(
    dir: &Path,
    config: &Path,
    rates: &Path,
    telemetry: bool,
    extra: &[&str],
) -> assert_cmd::assert::Assert {
    common::run_in(dir, config, rates, telemetry)
        .args(["--out", "out"])
        .args(extra)
        .assert()
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The hosts of a metrics folder's host_summary.
fn hosts(metrics: &Path) -> BTreeSet<String> {
    let df = breaker_advisor::output::read_parquet(&metrics.join("host_summary.parquet")).unwrap();
    df.column("host")
        .unwrap()
        .str()
        .unwrap()
        .iter()
        .map(|h| h.expect("a host").to_owned())
        .collect()
}

#[test]
fn shard_jobs_and_a_merge_write_the_single_run_s_patch_metrics_and_report() {
    let tmp = tempfile::tempdir().unwrap();
    let (b, r) = sample_configs(tmp.path());
    // Two shards on a 20 h window whose baseline holds the day's first 4 hours (its
    // coverage is the fleet's, not a shard's); 20 shards of the samples' 13 hosts on
    // the whole day: some shards have none.
    let evening: &[&str] = &["--window", "20h", "--now", NOW];
    for (n, window) in [(2, evening), (20, &["--now", NOW][..])] {
        let single = workdir(tmp.path(), &format!("single-{n}"));
        run(&single, &b, &r, true, window).success();
        let fleet = workdir(tmp.path(), &format!("fleet-{n}"));
        for i in 1..=n {
            run(
                &fleet,
                &b,
                &r,
                true,
                &[window, &["--shard", &format!("{i}/{n}")]].concat(),
            )
            .success()
            .stdout(predicates::str::contains(format!("shard {i}/{n}:")));
        }
        // Every host is advised by exactly one shard.
        let mut all = BTreeSet::new();
        let mut empty = 0;
        for i in 1..=n {
            let mine = hosts(&fleet.join(format!("out/shard={i}/metrics")));
            empty += usize::from(mine.is_empty());
            assert!(mine.is_disjoint(&all), "{mine:?} {all:?}");
            all.extend(mine);
            // The merge reads no telemetry and needs no dataset.
            std::fs::remove_dir_all(fleet.join(format!("out/shard={i}/dataset"))).unwrap();
        }
        assert_eq!(all, hosts(&single.join("out/metrics")));
        assert_eq!(empty > 0, n == 20, "{empty} of {n} shards without a host");
        run(&fleet, &b, &r, false, &["--merge-shards"])
            .success()
            .stdout(predicates::str::contains(format!("merge: {n} shards")));

        let patch = read(&single.join("out/breakers.patch.yaml"));
        assert!(
            breaker_advisor::patch::PatchFile::load(&single.join("out/breakers.patch.yaml"))
                .unwrap()
                .change_count()
                > 0,
            "the samples hold changes to merge"
        );
        assert!(
            patch == read(&fleet.join("out/breakers.patch.yaml")),
            "the patch file differs"
        );
        // A rerun of the merge, now beside the patch file it wrote, writes it again.
        run(&fleet, &b, &r, false, &["--merge-shards"]).success();
        assert!(
            patch == read(&fleet.join("out/breakers.patch.yaml")),
            "a rerun of the merge changed the patch file"
        );
        let mut files: Vec<String> = [
            "changes.diff",
            "proposed/breakers.yaml",
            "proposed/ratelimits.yaml",
            "metrics/crawler_model.yaml",
        ]
        .map(str::to_owned)
        .to_vec();
        files.extend(
            breaker_advisor::layout::Table::MERGED.map(|t| format!("metrics/{}", t.file_name())),
        );
        for f in &files {
            assert!(
                read(&single.join("out").join(f)) == read(&fleet.join("out").join(f)),
                "{f} differs"
            );
        }
        // The report names the shards' datasets where the single run names its own, and is
        // otherwise the same byte for byte.
        for f in ["report.md", "report.html"] {
            let one = String::from_utf8(read(&single.join("out").join(f))).unwrap();
            let merged = String::from_utf8(read(&fleet.join("out").join(f))).unwrap();
            assert!(merged.contains("shard=*"), "{f} names the shards' datasets");
            let merged = merged
                .replace("out/shard=*/dataset", "out/dataset")
                .replace("out&#x2f;shard=*&#x2f;dataset", "out&#x2f;dataset");
            assert!(one == merged, "{f} differs beyond the dataset's path");
        }
    }
}

#[test]
fn a_merge_refuses_missing_shards_other_inputs_and_a_dataset_of_another_shard() {
    let tmp = tempfile::tempdir().unwrap();
    let (b, r) = sample_configs(tmp.path());
    let dir = workdir(tmp.path(), "fleet");
    // Every shard must analyse the same window: --now is required.
    run(&dir, &b, &r, true, &["--shard", "1/2"])
        .failure()
        .stderr(predicates::str::contains("--now"));
    run(&dir, &b, &r, true, &["--now", NOW, "--shard", "3/2"])
        .failure()
        .stderr(predicates::str::contains("1 <= I <= N"));
    run(&dir, &b, &r, true, &["--now", NOW, "--shard", "1/2"]).success();
    run(&dir, &b, &r, false, &["--merge-shards"])
        .failure()
        .stderr(predicates::str::contains("shard(s) 2/2 missing"));
    run(&dir, &b, &r, true, &["--now", NOW, "--shard", "2/2"]).success();
    // The merge's config must be the one the shards advised against.
    let edited = tmp.path().join("edited.yaml");
    let text = std::fs::read_to_string(&b).unwrap();
    std::fs::write(&edited, format!("{text}\n# edited after the shards ran\n")).unwrap();
    run(&dir, &edited, &r, false, &["--merge-shards"])
        .failure()
        .stderr(predicates::str::contains("another breakers.yaml"));
    // Nor without the rate limits the shards advised on (no sample stands in for them).
    let mut cmd = bin();
    cmd.current_dir(&dir)
        .args(["run", "--merge-shards", "--out", "out", "--config"])
        .arg(&b)
        .assert()
        .failure()
        .stderr(predicates::str::contains("another ratelimits.yaml"));
    // A shard that ran in another window does not merge.
    run(
        &dir,
        &b,
        &r,
        true,
        &["--now", "2025-11-25T20:00:00Z", "--shard", "2/2"],
    )
    .success();
    run(&dir, &b, &r, false, &["--merge-shards"])
        .failure()
        .stderr(predicates::str::contains("window"));
    // A shard's dataset holds that shard night after night.
    let mut cmd = bin();
    cmd.current_dir(&dir).arg("export");
    for f in sample_telemetry() {
        cmd.arg("--telemetry").arg(f);
    }
    cmd.args(["--out", "out/shard=1/dataset", "--shard", "2/2"])
        .assert()
        .failure()
        .stderr(predicates::str::contains("holds shard 1/2"));
}

#[test]
fn a_sharded_night_remembers_a_change_a_person_set_back_as_a_single_run_does() {
    use breaker_advisor::patch::PatchFile;
    let tmp = tempfile::tempdir().unwrap();
    let (b, r) = sample_configs(tmp.path());
    let night = &["--now", NOW];
    // Last night's patch, written into the config files...
    let first = workdir(tmp.path(), "first");
    run(&first, &b, &r, true, &[&night[..], &["--write"]].concat()).success();
    let last = first.join("out/breakers.patch.yaml");
    let c = PatchFile::load(&last).unwrap().breakers.changes[0].clone();
    // ...then a person sets one value back.
    common::set_back(&b, &c);
    let from_last_night = |dir: &Path| {
        std::fs::create_dir_all(dir.join("out")).unwrap();
        std::fs::copy(&last, dir.join("out/breakers.patch.yaml")).unwrap();
    };
    let single = workdir(tmp.path(), "single");
    from_last_night(&single);
    run(&single, &b, &r, true, night).success();
    let fleet = workdir(tmp.path(), "fleet");
    from_last_night(&fleet);
    for i in 1..=2 {
        let shard = format!("{i}/2");
        run(
            &fleet,
            &b,
            &r,
            true,
            &[&night[..], &["--shard", &shard]].concat(),
        )
        .success();
    }
    run(&fleet, &b, &r, false, &["--merge-shards"]).success();
    let patch = PatchFile::load(&single.join("out/breakers.patch.yaml")).unwrap();
    assert_eq!(patch.reverted.len(), 1, "{:?}", patch.reverted);
    assert_eq!(patch.reverted[0].host, c.host);
    assert!(
        read(&single.join("out/breakers.patch.yaml"))
            == read(&fleet.join("out/breakers.patch.yaml")),
        "the merged patch file differs"
    );
}
