//! The report: the Markdown PR body (snapshot of the sample run), and report.html loaded
//! in a real headless Chromium (renders, no network, a changes table, charts in every
//! host section, a screenshot that is not blank). A host name carrying HTML stays text.

mod common;

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
