//! The report: the Markdown PR body (snapshot of the sample run), and report.html loaded
//! in a real headless Chromium (renders, no network, a changes table, charts in every
//! host section, a screenshot that is not blank). A host name carrying HTML stays text.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Command;

use breaker_advisor::patch::PatchFile;
use common::{bin, sample_telemetry, sqlite_from_sql};
use polars::prelude::{ParquetReader, SerReader};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const HOSTILE: &str = "</script><img src=x onerror=alert(1)>.example";

/// Runs the job on the samples (plus `extra` telemetry) from `dir` with `--out out`, so
/// the paths in the report are relative and the snapshot stable.
fn run_in(dir: &Path, extra: &[PathBuf]) -> PathBuf {
    for f in ["breakers.yaml", "ratelimits.yaml"] {
        std::fs::copy(Path::new(ROOT).join("data-samples").join(f), dir.join(f)).unwrap();
    }
    let mut cmd = bin();
    cmd.current_dir(dir).arg("run");
    // Relative names: the sources are named in the metrics, whose digest the report shows.
    for f in sample_telemetry() {
        let name = f.file_name().unwrap().to_owned();
        std::fs::copy(&f, dir.join(&name)).unwrap();
        cmd.arg("--telemetry").arg(name);
    }
    for e in extra {
        cmd.arg("--telemetry").arg(e);
    }
    cmd.args([
        "--config",
        "breakers.yaml",
        "--ratelimits",
        "ratelimits.yaml",
        "--out",
        "out",
    ])
    .env_remove("GITHUB_STEP_SUMMARY")
    .assert()
    .success();
    dir.join("out")
}

/// A crawler file with one host whose name is HTML: 2000 calls over the sample's day,
/// an hour of 503s in the middle.
fn hostile_telemetry(dir: &Path) -> PathBuf {
    let sql = format!(
        "CREATE TABLE http_events (id INTEGER PRIMARY KEY AUTOINCREMENT, run_id TEXT, ts REAL NOT NULL,
           host TEXT NOT NULL, role TEXT, method TEXT, status INTEGER, url_hash TEXT, from_cache INTEGER,
           retry_after_s INTEGER, breaker_state TEXT, error TEXT);
         WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < 1999)
         INSERT INTO http_events (run_id, ts, host, role, method, status, url_hash, from_cache, breaker_state)
         SELECT 'r', 1764028800.0 + i * 43.0, '{}', 'metadata', 'GET',
                CASE WHEN i BETWEEN 900 AND 990 THEN 503 ELSE 200 END, 'abcd', 0, 'closed' FROM n;",
        HOSTILE.replace('\'', "''")
    );
    sqlite_from_sql(&dir.join("hostile.sqlite"), &sql)
}

#[test]
fn markdown_report_of_the_sample_run() {
    let tmp = tempfile::tempdir().unwrap();
    let out = run_in(tmp.path(), &[]);
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    insta::assert_snapshot!("sample_report_md", md);
    // Rerunning the report gives the same bytes.
    bin()
        .current_dir(tmp.path())
        .args(["report", "--out", "out", "--config", "breakers.yaml"])
        .env_remove("GITHUB_STEP_SUMMARY")
        .assert()
        .success();
    assert_eq!(std::fs::read_to_string(out.join("report.md")).unwrap(), md);
}

#[test]
fn report_is_appended_to_the_github_step_summary() {
    let tmp = tempfile::tempdir().unwrap();
    let out = run_in(tmp.path(), &[]);
    let summary = tmp.path().join("summary.md");
    std::fs::write(&summary, "earlier step\n").unwrap();
    bin()
        .current_dir(tmp.path())
        .args(["report", "--out", "out", "--config", "breakers.yaml"])
        .env("GITHUB_STEP_SUMMARY", &summary)
        .assert()
        .success();
    let text = std::fs::read_to_string(&summary).unwrap();
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert_eq!(text, format!("earlier step\n{md}"));
}

fn chromium(args: &[&str], html: &Path) -> std::process::Output {
    Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--no-first-run",
            "--disable-extensions",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--enable-logging=stderr",
            "--v=0",
        ])
        .args(args)
        .arg(format!("file://{}", html.display()))
        .output()
        .expect("chromium (installed by tests/run.sh)")
}

#[test]
fn html_report_renders_in_chromium_offline_with_charts() {
    let tmp = tempfile::tempdir().unwrap();
    let hostile = hostile_telemetry(tmp.path());
    let out = run_in(tmp.path(), &[hostile]);
    let html_path = out.join("report.html");
    let html = std::fs::read_to_string(&html_path).unwrap();
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();

    // The hostile host appears, as text only, in both reports.
    assert!(!html.contains("<img") && !md.contains("<img"));
    assert!(html.contains("&lt;/script&gt;&lt;img src=x onerror=alert(1)&gt;.example"));
    assert!(md.contains("&lt;/script&gt;&lt;img src=x onerror=alert\\(1\\)&gt;.example"));
    assert!(html.contains("Content-Security-Policy") && !html.contains("<script"));

    // DOM as Chromium built it, with the network log.
    let netlog = tmp.path().join("netlog.json");
    let dom = chromium(
        &["--dump-dom", &format!("--log-net-log={}", netlog.display())],
        &html_path,
    );
    assert!(
        dom.status.success(),
        "{}",
        String::from_utf8_lossy(&dom.stderr)
    );
    let dom_text = String::from_utf8_lossy(&dom.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&dom.stderr).into_owned();
    assert!(
        !stderr.contains("Refused to") && !stderr.contains("Uncaught"),
        "console errors:\n{stderr}"
    );
    assert!(!dom_text.contains("<img"), "the hostile name became markup");
    assert!(
        dom_text.contains("onerror=alert(1)"),
        "the hostile name is shown"
    );

    // The changes table has a row per change of the patch.
    let patch = PatchFile::load(&out.join("breakers.patch.yaml")).unwrap();
    let table = dom_text
        .split("<table class=\"changes\">")
        .nth(1)
        .and_then(|t| t.split("</table>").next())
        .expect("a changes table");
    assert_eq!(
        table.matches("<tr>").count() - 1,
        patch.change_count(),
        "header + one row per change"
    );
    // One section per host with a change or an incident, each with its charts.
    let sections: Vec<&str> = dom_text
        .split("<section class=\"host-section\"")
        .skip(1)
        .collect();
    let incidents =
        ParquetReader::new(std::fs::File::open(out.join("metrics/incidents.parquet")).unwrap())
            .finish()
            .unwrap();
    let mut featured: std::collections::BTreeSet<String> = common::col_str(&incidents, "host")
        .into_iter()
        .flatten()
        .collect();
    featured.extend(patch.breakers.changes.iter().map(|c| c.host.clone()));
    if let Some(r) = &patch.ratelimits {
        featured.extend(r.changes.iter().map(|c| c.host.clone()));
    }
    assert!(featured.len() >= 4, "the sample has changes and incidents");
    assert_eq!(
        sections.len(),
        featured.len(),
        "one section per host with a change or an incident"
    );
    for s in &sections {
        let s = s.split("</section>").next().unwrap();
        assert_eq!(s.matches("<svg").count(), 3, "{}", &s[..200.min(s.len())]);
    }
    assert!(
        sections.iter().any(|s| s.contains("onerror=alert(1)")),
        "the hostile host had an incident: it has a section"
    );

    // No network request from the page: Chromium's net log lists the page's requests
    // (initiator: the page's origin), apart from the browser's own background traffic
    // (initiator "not an origin"). A control page with an image and a stylesheet on
    // the network shows the check sees page requests.
    assert_eq!(page_requests(&netlog), Vec::<String>::new());
    let control = tmp.path().join("control.html");
    std::fs::write(
        &control,
        r#"<html><body><img src="http://127.0.0.1:9/x.png"><link rel=stylesheet href="https://example.invalid/a.css"></body></html>"#,
    )
    .unwrap();
    let control_log = tmp.path().join("control.json");
    chromium(
        &[
            "--dump-dom",
            &format!("--log-net-log={}", control_log.display()),
        ],
        &control,
    );
    assert_eq!(
        page_requests(&control_log),
        ["http://127.0.0.1:9/x.png", "https://example.invalid/a.css"]
    );

    // A screenshot is not blank.
    let shot = tmp.path().join("shot.png");
    let s = chromium(
        &[
            &format!("--screenshot={}", shot.display()),
            "--window-size=1200,1600",
        ],
        &html_path,
    );
    assert!(s.status.success(), "{}", String::from_utf8_lossy(&s.stderr));
    let stats = Command::new("python3")
        .arg(Path::new(ROOT).join("tests/python/png_stats.py"))
        .arg(&shot)
        .output()
        .unwrap();
    assert!(
        stats.status.success(),
        "{}",
        String::from_utf8_lossy(&stats.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&stats.stdout).unwrap();
    assert_eq!(v["width"], 1200);
    assert!(v["colours"].as_u64().unwrap() > 20, "{v}");
    assert!(v["non_background_share"].as_f64().unwrap() > 0.02, "{v}");
}

/// URLs of the requests a page made, from a Chromium net log.
fn page_requests(netlog: &Path) -> Vec<String> {
    let log: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(netlog).unwrap()).unwrap();
    let start_job = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"].clone();
    let mut urls: Vec<String> = log["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == start_job)
        .filter(|e| {
            e["params"]["initiator"]
                .as_str()
                .is_some_and(|i| i != "not an origin")
        })
        .filter_map(|e| e["params"]["url"].as_str().map(str::to_owned))
        .collect();
    urls.sort();
    urls.dedup();
    urls
}

/// A fleet of `n` hosts, each with a breaker change (with replay evidence), a change of
/// its rates, three incidents, a left-alone note, a day of per-minute EWMA rates shaped
/// like sparse traffic (jumps and decays), 120 opens and a burst and Retry-After history:
/// the worst a night can look for the report's size.
struct Fleet {
    patch: PatchFile,
    evidence: Vec<breaker_advisor::advise::HostEvidence>,
    hosts: Vec<String>,
}

fn fleet(n: usize) -> Fleet {
    use breaker_advisor::advise::{BreakerChange, Held, Num, RateChange};
    use breaker_advisor::config::edit::BreakerKey;
    use breaker_advisor::patch::{BreakersSection, PatchWindow, RatelimitsSection};
    // Every fourth host is an IDN one.
    let hosts: Vec<String> = (0..n)
        .map(|i| {
            if i % 4 == 0 {
                breaker_advisor::hostname::normalize_host(&format!("bücher-{i:03}.example"))
                    .unwrap()
            } else {
                format!("api-{i:03}.metadata.example.org")
            }
        })
        .collect();
    let ev = |i: usize| -> breaker_advisor::advise::Evidence {
        [
            ("replay_let_through_current", 300 + i as i64),
            ("replay_let_through_proposed", 200 + i as i64),
            ("replay_false_trips_current", 3),
            ("replay_false_trips_proposed", 1),
            ("replay_opens_current", 120),
            ("replay_opens_proposed", 90),
            ("replay_cost_current", 303 + i as i64),
            ("replay_cost_proposed", 201 + i as i64),
            ("incident_duration_median_s", 3300),
            ("incidents", 3),
            ("opens", 120),
            ("pingpong_flaps", 4),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), Num::Int(v)))
        .collect()
    };
    let changes = hosts
        .iter()
        .enumerate()
        .map(|(i, h)| BreakerChange {
            host: h.clone(),
            role: None,
            key: BreakerKey::ResetTimeoutS,
            from: Num::Int(45),
            to: 90,
            reason: "incidents last 3300 s (median of 3); the breaker flaps: 4 times it reopened soon after closing; reset_timeout_s moves towards 3300 within this run's step and limits; replay cost 303 -> 201".into(),
            evidence: ev(i),
            confidence: None,
        })
        .collect();
    let rates = hosts
        .iter()
        .map(|h| RateChange {
            host: h.clone(),
            role: "metadata".into(),
            from: vec!["10/SECOND".into(), "5000/HOUR".into()],
            to: vec!["9/SECOND".into(), "4500/HOUR".into()],
            multiplier_from: Num::Int(1),
            multiplier_to: Num::Float(0.9),
            base: vec!["10/SECOND".into(), "5000/HOUR".into()],
            reason:
                "429 share 6.1% (95% interval 5.2% - 7.0%) above aimd.high_429_ratio 5%; rates x0.9"
                    .into(),
            evidence: [("calls", 4000), ("e429", 244)]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), Num::Int(v)))
                .collect(),
        })
        .collect();
    let patch = PatchFile {
        format_version: breaker_advisor::patch::FORMAT_VERSION,
        patch_version: 7,
        tool_version: "test".into(),
        window: PatchWindow {
            start: "2025-11-24T00:00:00Z".into(),
            end: "2025-11-25T00:00:00Z".into(),
        },
        input_fingerprint: "f".repeat(64),
        breakers: BreakersSection {
            file: "breakers.yaml".into(),
            base_sha256: "0".repeat(64),
            changes,
        },
        ratelimits: Some(RatelimitsSection {
            file: "ratelimits.yaml".into(),
            base_sha256: "0".repeat(64),
            changes: rates,
        }),
        baselines: Default::default(),
        held: hosts
            .iter()
            .map(|h| Held {
                host: format!("held-{h}"),
                reason: "too little data: 12 network calls in 24 h (minimum 200)".into(),
            })
            .collect(),
        needs_crawler_change: Vec::new(),
        reverted: Vec::new(),
        written: false,
        calibrated_model: None,
    };
    Fleet {
        patch,
        evidence: Vec::new(),
        hosts,
    }
}

fn render(f: &Fleet) -> breaker_advisor::report::Report {
    use breaker_advisor::report::*;
    let (t0, day) = (1_763_942_400_000_000i64, 86_400_000_000i64);
    let minute = 60_000_000i64;
    let mut series = std::collections::BTreeMap::new();
    let mut opens = std::collections::BTreeMap::new();
    let mut retry_after = std::collections::BTreeMap::new();
    let mut incidents = Vec::new();
    for (i, h) in f.hosts.iter().enumerate() {
        // Sparse traffic: a failure lifts the EWMA, which then decays; failures crowd
        // into the three incident hours and are rare outside; some minutes have no
        // call at all.
        let mut s = Series::default();
        let mut state = (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let (mut a, mut b) = (0.0f64, 0.0f64);
        for m in 0..1440i64 {
            s.bucket_start_us.push(t0 + m * minute);
            let r = next();
            if r % 5 == 0 {
                s.e429.push(None);
                s.e5xx.push(None);
                s.timeouts.push(None);
                continue;
            }
            let incident = (0..3).any(|k| (k * 360 + 120..k * 360 + 180).contains(&m));
            let odds = if incident { 2 } else { 45 };
            a = 0.8 * a + if r % odds == 0 { 0.3 } else { 0.0 };
            b = 0.8 * b + if (r >> 8) % odds == 0 { 0.3 } else { 0.0 };
            s.e429.push(Some(a));
            s.e5xx.push(Some(b));
            s.timeouts.push(Some((a + b) / 4.0));
        }
        series.insert(h.clone(), s);
        // 40 opens in each incident, from 4 breakers.
        opens.insert(
            h.clone(),
            (0..120)
                .map(|k| {
                    let at = t0 + ((k / 40) * 6 + 2) * 3_600_000_000 + (k % 40) * 90_000_000;
                    (at, at + 45_000_000)
                })
                .collect::<Vec<_>>(),
        );
        retry_after.insert(
            h.clone(),
            (0..100)
                .map(|k| [30.0, 60.0, 60.0, 120.0, 300.0, 600.0][k % 6])
                .collect(),
        );
        for k in 0..3 {
            incidents.push(IncidentLine {
                host: h.clone(),
                kind: ["5xx", "429", "breaker"][k].into(),
                start_us: t0 + (k as i64 * 6 + 2) * 3_600_000_000,
                end_us: t0 + (k as i64 * 6 + 3) * 3_600_000_000,
                ongoing: false,
                level_before: Some(0.004),
                level_during: Some(0.7),
                level_after: Some(0.002),
            });
        }
    }
    Report::build(&ReportInput {
        patch: &f.patch,
        model: vec![(
            "breaker scope".into(),
            "one breaker per host per process".into(),
        )],
        fidelity: f
            .hosts
            .iter()
            .map(|h| FidelityLine {
                host: h.clone(),
                instances: 4,
                logged_instances: 4,
                recorded_opens: 120,
                replayed_opens: 118,
            })
            .collect(),
        window: (t0, t0 + day),
        hosts: f
            .hosts
            .iter()
            .map(|h| HostLine {
                host: h.clone(),
                calls_net: 4000,
                failures: 400,
                e429: 244,
                e5xx: 150,
                timeouts: 6,
                opens: 120,
            })
            .collect(),
        evidence: &f.evidence,
        incidents,
        series,
        retry_after,
        opens,
        current: Default::default(),
        sources: 8,
        rejected: vec![(
            "telemetry-1.sqlite".into(),
            "http_events: bad status".into(),
            3,
        )],
        incomplete: Vec::new(),
        adjusted: Vec::new(),
        set_aside: Vec::new(),
        traffic: breaker_advisor::report::Traffic {
            calls_net: 4000 * f.hosts.len() as i64,
            ..Default::default()
        },
        outputs: vec![("report with charts".into(), "out/report.html".into())],
        report_url: Some("https://github.com/acme/crawler/actions/runs/42".into()),
    })
}

#[test]
fn the_pr_body_of_a_500_host_night_fits_githubs_limit() {
    let fleet = fleet(500);
    let md = breaker_advisor::report::markdown(&render(&fleet));
    let chars = md.chars().count();
    assert!(
        chars <= breaker_advisor::report::PR_BODY_LIMIT,
        "{chars} characters"
    );
    // The summary and the changes come first and stay; what was cut says where to look.
    assert!(md.starts_with("## breaker-advisor"), "{}", &md[..200]);
    assert!(md.contains("**1000 changes on 500 hosts"), "{}", &md[..400]);
    assert!(md.contains("[report.html](https://github.com/acme/crawler/actions/runs/42)"));
    assert!(md.contains("| host | setting | change | confidence | why | predicted"));
    // Hosts with too little data cost a line, not a row each; report.html names them.
    assert!(
        md.contains("500 host(s) had too little data to advise"),
        "{md}"
    );
    assert!(!md.contains("held-"), "no quiet host is listed");
    let report = render(&fleet);
    // A host's breaker and rate changes are one group of rows.
    let hosts: Vec<&str> = report.changes.iter().map(|c| c.host.as_str()).collect();
    assert!(hosts.chunks(2).all(|p| p[0] == p[1]), "{:?}", &hosts[..6]);
    let page = breaker_advisor::report::html(&report).unwrap();
    assert!(page.contains("Too little data to advise (500 hosts"));
    let rows = md
        .lines()
        .filter(|l| l.contains("| breakers.yaml: reset\\_timeout\\_s | 45 → 90 |"))
        .count();
    assert!(rows >= 100, "{rows} change rows kept");
    assert!(
        md.contains("Rejected input rows"),
        "a warning is not the first thing cut"
    );
    assert!(!md.contains("Noisiest hosts\n") || md.contains("<summary>Noisiest"));
    assert_eq!(
        md.matches("<details>").count(),
        md.matches("</details>").count(),
        "folds are balanced"
    );
    // IDN hosts read in Unicode with their key beside them.
    assert!(
        md.contains("bücher-000.example \\(xn--bcher-000-"),
        "{}",
        &md[..2000]
    );
    // A small night is not cut at all.
    let small = breaker_advisor::report::markdown(&render(&fleet_of(&fleet, 3)));
    assert!(
        !small.contains("were cut") && small.contains("<summary>Evidence:"),
        "{small}"
    );
    // One fold per host, its breaker and rate changes together.
    assert_eq!(
        small.matches("<summary>Evidence: api-001.").count(),
        1,
        "{small}"
    );
    assert!(
        small.contains("<summary>Evidence: api-001.metadata.example.org (2 changes)</summary>")
    );
}

/// The first `n` hosts of a fleet.
fn fleet_of(f: &Fleet, n: usize) -> Fleet {
    let keep = |h: &String| {
        f.hosts[..n].contains(h) || f.hosts[..n].iter().any(|k| h == &format!("held-{k}"))
    };
    let mut patch = f.patch.clone();
    patch.breakers.changes.retain(|c| keep(&c.host));
    if let Some(r) = patch.ratelimits.as_mut() {
        r.changes.retain(|c| keep(&c.host));
    }
    patch.held.retain(|h| keep(&h.host));
    Fleet {
        patch,
        evidence: Vec::new(),
        hosts: f.hosts[..n].to_vec(),
    }
}

#[test]
fn report_html_for_200_changed_hosts_stays_under_3_mb_and_renders() {
    let tmp = tempfile::tempdir().unwrap();
    let fleet = fleet(200);
    let page = breaker_advisor::report::html(&render(&fleet)).unwrap();
    assert!(page.len() <= 3_000_000, "{} bytes", page.len());
    let path = tmp.path().join("report.html");
    std::fs::write(&path, &page).unwrap();
    let dom = chromium(&["--dump-dom"], &path);
    assert!(
        dom.status.success(),
        "{}",
        String::from_utf8_lossy(&dom.stderr)
    );
    let dom = String::from_utf8_lossy(&dom.stdout).into_owned();
    let sections: Vec<&str> = dom
        .split("<section class=\"host-section\"")
        .skip(1)
        .collect();
    assert_eq!(sections.len(), 200);
    for s in &sections {
        let s = s.split("</section>").next().unwrap();
        assert_eq!(s.matches("<svg").count(), 3);
        assert!(
            s.contains("<table class=\"evidence\">"),
            "each change has its evidence table"
        );
    }
    // The evidence is a labelled table: current against proposed.
    assert!(dom.contains("failed attempts let into incidents (replay)</td><td class=\"num\">300</td><td class=\"num\">200</td>"));
}
