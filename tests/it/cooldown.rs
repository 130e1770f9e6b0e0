//! Cooldown stores against a real SQLite file and a real redis-server (started here on a
//! free loopback port, no persistence): the crawler's exact formats both ways, expiry,
//! never shortening, concurrent writers, errors that name the store but not its password.

use std::net::TcpListener;
use std::process::{Child, Command as StdCommand, Stdio};
use std::time::{Duration, Instant};

use assert_cmd::Command;
use breaker_advisor::cooldown::{CooldownStore, RedisStore, SetOutcome, SqliteStore, StoreSpec};
use rusqlite::Connection;

const NOW: f64 = 1_764_152_130.0;

fn bin() -> Command {
    Command::cargo_bin("breaker-advisor").expect("binary")
}

/// A redis-server on a free loopback port, killed on drop.
struct Redis {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Redis {
    fn start(password: Option<&str>) -> Redis {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = StdCommand::new("redis-server");
        cmd.args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .arg("--dir")
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        if let Some(p) = password {
            cmd.args(["--requirepass", p]);
        }
        let child = cmd
            .spawn()
            .expect("redis-server must be installed (.ci/run installs Debian's redis-server)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Redis {
            child,
            port,
            _dir: dir,
        }
    }

    fn url(&self, db: u32) -> String {
        format!("redis://127.0.0.1:{}/{db}", self.port)
    }

    fn raw(&self, db: u32) -> redis::Connection {
        redis::Client::open(self.url(db))
            .unwrap()
            .get_connection()
            .unwrap()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn sqlite_store_reads_and_writes_the_crawler_format() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("cooldowns.sqlite");
    let mut store = SqliteStore::open(&path).unwrap();
    // What the crawler writes, by SQL.
    let raw = Connection::open(&path).unwrap();
    raw.execute(
        "INSERT INTO breaker_cooldowns (host, until_wall, reason, updated_at) VALUES ('api.crossref.org', ?1, 'retry-after', ?2)",
        [NOW + 120.5, NOW],
    )
    .unwrap();
    let cd = store.get("API.Crossref.org.", NOW).unwrap().unwrap();
    assert_eq!(
        (cd.host.as_str(), cd.until_wall, cd.reason.as_deref()),
        ("api.crossref.org", NOW + 120.5, Some("retry-after"))
    );

    // What we write, read back by SQL; hosts normalised, reasons cut to 128 chars.
    store
        .set("München.example", NOW + 60.0, &"x".repeat(300), NOW)
        .unwrap();
    let (host, until, reason, updated): (String, f64, String, f64) = raw
        .query_row("SELECT host, until_wall, reason, updated_at FROM breaker_cooldowns WHERE host LIKE 'xn--%'", [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })
        .unwrap();
    assert_eq!(
        (host.as_str(), until, reason.len(), updated),
        ("xn--mnchen-3ya.example", NOW + 60.0, 128, NOW)
    );
    let mode: String = raw
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");

    // Expired reads as absent and is deleted on read.
    assert!(
        store
            .get("api.crossref.org", NOW + 121.0)
            .unwrap()
            .is_none()
    );
    let left: i64 = raw
        .query_row(
            "SELECT count(*) FROM breaker_cooldowns WHERE host = 'api.crossref.org'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(left, 0);

    // Never shorten.
    assert_eq!(
        store
            .extend(
                "xn--mnchen-3ya.example",
                NOW + 30.0,
                "advisor:incident",
                NOW
            )
            .unwrap(),
        SetOutcome::KeptLonger
    );
    assert_eq!(
        store
            .get("xn--mnchen-3ya.example", NOW)
            .unwrap()
            .unwrap()
            .until_wall,
        NOW + 60.0
    );
    assert_eq!(
        store
            .extend(
                "xn--mnchen-3ya.example",
                NOW + 90.0,
                "advisor:incident",
                NOW
            )
            .unwrap(),
        SetOutcome::Set
    );
    assert_eq!(
        store
            .get("xn--mnchen-3ya.example", NOW)
            .unwrap()
            .unwrap()
            .until_wall,
        NOW + 90.0
    );

    store.set("b.example", NOW + 10.0, "cli-open", NOW).unwrap();
    let hosts: Vec<String> = store
        .list(NOW)
        .unwrap()
        .cooldowns
        .into_iter()
        .map(|c| c.host)
        .collect();
    assert_eq!(hosts, ["b.example", "xn--mnchen-3ya.example"]);
    assert_eq!(store.prune(NOW + 20.0).unwrap(), 1);
    assert!(store.clear("xn--mnchen-3ya.example").unwrap());
    assert!(!store.clear("xn--mnchen-3ya.example").unwrap());
    assert!(store.list(NOW).unwrap().cooldowns.is_empty());
}

#[test]
fn sqlite_store_reports_a_null_deadline_by_host_and_skips_it() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("damaged.sqlite");
    let raw = Connection::open(&path).unwrap();
    // A store created by an older crawler without the NOT NULL constraint.
    raw.execute_batch(
        "CREATE TABLE breaker_cooldowns (host TEXT PRIMARY KEY, until_wall REAL, reason TEXT, updated_at REAL NOT NULL);
         INSERT INTO breaker_cooldowns VALUES ('broken.example', NULL, 'x', 0), ('ok.example', 1764152190.0, 'y', 0);",
    )
    .unwrap();
    let mut store = SqliteStore::open(&path).unwrap();
    let listing = store.list(NOW).unwrap();
    assert_eq!(listing.cooldowns.len(), 1);
    assert_eq!(listing.bad_records.len(), 1);
    assert_eq!(listing.bad_records[0].host, "broken.example");
    let err = store.get("broken.example", NOW).unwrap_err().to_string();
    assert!(
        err.contains("broken.example") && err.contains("NULL"),
        "{err}"
    );

    let out = bin()
        .args(["cooldown", "--now", "1764152130", "--store"])
        .arg(format!("sqlite:{}", path.display()))
        .arg("show")
        .output()
        .unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stdout.contains("ok.example") && !stdout.contains("broken.example"),
        "{stdout}"
    );
    assert!(
        stderr.contains("broken.example") && stderr.contains("unreadable"),
        "{stderr}"
    );
}

#[test]
fn sqlite_store_takes_two_processes_writing_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = format!("sqlite:{}", tmp.path().join("shared.sqlite").display());
    SqliteStore::open(&tmp.path().join("shared.sqlite")).unwrap();
    let script = |reason: &str| {
        // Each process opens and closes the same host 40 times.
        let mut cmds = Vec::new();
        for i in 0..40 {
            cmds.push(format!(
                "\"$BIN\" cooldown --now 1764152130 --store '{spec}' open same.example --seconds {} --reason {reason}-{i} >/dev/null",
                100 + i
            ));
        }
        cmds.join(" && ")
    };
    let bin_path = assert_cmd::cargo::cargo_bin("breaker-advisor");
    let spawn = |reason: &str| {
        StdCommand::new("bash")
            .arg("-c")
            .arg(script(reason))
            .env("BIN", &bin_path)
            .spawn()
            .unwrap()
    };
    let (mut a, mut b) = (spawn("a"), spawn("b"));
    assert!(a.wait().unwrap().success(), "writer a failed");
    assert!(b.wait().unwrap().success(), "writer b failed");
    let mut store = SqliteStore::open(&tmp.path().join("shared.sqlite")).unwrap();
    let listing = store.list(NOW).unwrap();
    assert_eq!(listing.cooldowns.len(), 1);
    assert!(listing.bad_records.is_empty());
    let reason = listing.cooldowns[0].reason.clone().unwrap();
    assert!(
        reason.starts_with("a-") || reason.starts_with("b-"),
        "{reason}"
    );
}

#[test]
fn redis_store_matches_the_crawler_byte_for_byte() {
    let server = Redis::start(None);
    let mut raw = server.raw(3);
    let mut store = RedisStore::connect(&server.url(3), "breaker:cooldown:").unwrap();

    // Written by the crawler (Python json.dumps, EX ttl), read by us.
    let _: () = redis::cmd("SET")
        .arg("breaker:cooldown:api.crossref.org")
        .arg(br#"{"until_wall": 1764152250.75, "reason": "retry-after"}"#.as_slice())
        .arg("EX")
        .arg(121)
        .query(&mut raw)
        .unwrap();
    let cd = store.get("api.crossref.org", NOW).unwrap().unwrap();
    assert_eq!(
        (cd.until_wall, cd.reason.as_deref()),
        (1_764_152_250.75, Some("retry-after"))
    );

    // Written by us, exactly as the crawler would.
    store
        .set("München.example", NOW + 90.4, "maintenance é", NOW)
        .unwrap();
    let bytes: Vec<u8> = redis::cmd("GET")
        .arg("breaker:cooldown:xn--mnchen-3ya.example")
        .query(&mut raw)
        .unwrap();
    assert_eq!(
        String::from_utf8(bytes).unwrap(),
        r#"{"until_wall": 1764152220.4, "reason": "maintenance \u00e9"}"#
    );
    let ttl: i64 = redis::cmd("TTL")
        .arg("breaker:cooldown:xn--mnchen-3ya.example")
        .query(&mut raw)
        .unwrap();
    assert_eq!(ttl, 90);

    // A value that is not JSON is reported by host and skipped.
    let _: () = redis::cmd("SET")
        .arg("breaker:cooldown:bad.example")
        .arg("{oops")
        .query(&mut raw)
        .unwrap();
    let listing = store.list(NOW).unwrap();
    let hosts: Vec<&str> = listing.cooldowns.iter().map(|c| c.host.as_str()).collect();
    assert_eq!(hosts, ["api.crossref.org", "xn--mnchen-3ya.example"]);
    assert_eq!(listing.bad_records.len(), 1);
    assert_eq!(listing.bad_records[0].host, "bad.example");
    assert!(listing.bad_records[0].problem.contains("not JSON"));

    // Listing scans; it never runs KEYS.
    let stats: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(&mut raw)
        .unwrap();
    assert!(stats.contains("cmdstat_scan"), "{stats}");
    assert!(!stats.contains("cmdstat_keys"), "{stats}");

    // Never shorten, atomically on the server.
    assert_eq!(
        store
            .extend("api.crossref.org", NOW + 10.0, "advisor:incident", NOW)
            .unwrap(),
        SetOutcome::KeptLonger
    );
    assert_eq!(
        store
            .extend("api.crossref.org", NOW + 300.0, "advisor:incident", NOW)
            .unwrap(),
        SetOutcome::Set
    );
    assert_eq!(
        store
            .get("api.crossref.org", NOW)
            .unwrap()
            .unwrap()
            .until_wall,
        NOW + 300.0
    );
    assert_eq!(
        store
            .extend("new.example", NOW + 10.0, "advisor:incident", NOW)
            .unwrap(),
        SetOutcome::Set
    );

    // Expired (by our clock) reads as absent and is deleted.
    assert!(store.get("new.example", NOW + 11.0).unwrap().is_none());
    let exists: i64 = redis::cmd("EXISTS")
        .arg("breaker:cooldown:new.example")
        .query(&mut raw)
        .unwrap();
    assert_eq!(exists, 0);
    assert!(store.clear("api.crossref.org").unwrap());
    // Other databases are untouched.
    let other: i64 = redis::cmd("DBSIZE").query(&mut server.raw(0)).unwrap();
    assert_eq!(other, 0);
}

#[test]
fn redis_errors_are_fast_clear_and_keep_the_password_secret() {
    let server = Redis::start(Some("s3cret-pw"));
    let good = format!("redis://:s3cret-pw@127.0.0.1:{}/2", server.port);
    let mut store = RedisStore::connect(&good, "breaker:cooldown:").unwrap();
    store.set("a.example", NOW + 60.0, "r", NOW).unwrap();

    let wrong_pw = format!("redis://:wrong-pw@127.0.0.1:{}/2", server.port);
    let wrong_db = format!("redis://:s3cret-pw@127.0.0.1:{}/999", server.port);
    let closed_port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let unreachable = format!("redis://:s3cret-pw@127.0.0.1:{closed_port}/0");
    for (dsn, needle) in [
        (&wrong_pw, "authentication failed"),
        (&wrong_db, "DB index is out of range"),
        (&unreachable, "refused"),
    ] {
        let started = Instant::now();
        let out = bin()
            .args(["cooldown", "--store", dsn, "show"])
            .output()
            .unwrap();
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{dsn}: too slow"
        );
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(needle), "{stderr}");
        let host_port = dsn.split('@').nth(1).unwrap().split('/').next().unwrap();
        assert!(
            stderr.contains(host_port),
            "the error does not name {host_port}: {stderr}"
        );
        assert!(
            !stderr.contains("s3cret") && !stderr.contains("wrong-pw"),
            "password leaked: {stderr}"
        );
    }
    // Nothing was written by the failed attempts.
    let keys: i64 = redis::cmd("DBSIZE")
        .query(
            &mut redis::Client::open(good.as_str())
                .unwrap()
                .get_connection()
                .unwrap(),
        )
        .unwrap();
    assert_eq!(keys, 1);

    // --help never shows the store from the environment.
    let out = bin()
        .env("BREAKER_ADVISOR_COOLDOWN_STORE", &good)
        .args(["cooldown", "--help"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(!String::from_utf8_lossy(&out.stdout).contains("s3cret"));
}

#[test]
fn a_blackholed_redis_times_out_within_the_connect_timeout() {
    // A listener that accepts but never answers: the handshake must give up in ~2 s.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let started = Instant::now();
    let err = match RedisStore::connect(&format!("redis://127.0.0.1:{port}/0"), "p:") {
        Ok(_) => panic!("connected to a server that never answers"),
        Err(e) => e,
    };
    let took = started.elapsed();
    assert!(took < Duration::from_secs(5), "took {took:?}");
    assert!(
        err.to_string().contains(&format!("127.0.0.1:{port}")),
        "{err}"
    );
    drop(listener);
}

#[test]
fn cli_commands_and_store_precedence() {
    let tmp = tempfile::tempdir().unwrap();
    let flag = tmp.path().join("flag.sqlite");
    let env = tmp.path().join("env.sqlite");
    let file = tmp.path().join("file.sqlite");
    let settings = tmp.path().join("settings.yaml");
    std::fs::write(
        &settings,
        format!("cooldown_store:\n  url: sqlite:{}\n", file.display()),
    )
    .unwrap();
    let run_at = |now: &str, args: &[&str], use_flag: bool, use_env: bool| {
        let mut c = bin();
        c.current_dir(tmp.path())
            .arg("cooldown")
            .arg("--now")
            .arg(now);
        c.arg("--settings").arg(&settings);
        if use_flag {
            c.arg("--store").arg(format!("sqlite:{}", flag.display()));
        }
        if use_env {
            c.env(
                "BREAKER_ADVISOR_COOLDOWN_STORE",
                format!("sqlite:{}", env.display()),
            );
        } else {
            c.env_remove("BREAKER_ADVISOR_COOLDOWN_STORE");
        }
        let out = c.args(args).output().unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let run = |args: &[&str], use_flag: bool, use_env: bool| {
        run_at("2025-11-26T10:15:30Z", args, use_flag, use_env)
    };
    run(&["open", "Flag.Example", "--seconds", "600"], true, true);
    run(
        &[
            "open",
            "env.example",
            "--seconds",
            "60",
            "--reason",
            "from env",
        ],
        false,
        true,
    );
    run(&["open", "file.example", "--seconds", "3700"], false, false);
    let show = |store: &std::path::Path| {
        let mut s = SqliteStore::open(store).unwrap();
        s.list(NOW)
            .unwrap()
            .cooldowns
            .into_iter()
            .map(|c| c.host)
            .collect::<Vec<_>>()
    };
    assert_eq!(show(&flag), ["flag.example"]);
    assert_eq!(show(&env), ["env.example"]);
    assert_eq!(show(&file), ["file.example"]);

    let table = run(&["show"], false, false);
    assert!(
        table.contains("file.example")
            && table.contains("1h01m40s")
            && table.contains("2025-11-26T11:17:10Z"),
        "{table}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&run(&["show", "--json"], false, true)).unwrap();
    assert_eq!(json["cooldowns"][0]["host"], "env.example");
    assert_eq!(json["cooldowns"][0]["reason"], "from env");
    assert_eq!(json["cooldowns"][0]["remaining_s"], 60.0);
    assert!(run(&["close", "env.example"], false, true).contains("cleared"));
    assert!(run(&["show", "--host", "env.example"], false, true).contains("no active cooldowns"));
    assert!(run_at("2025-11-26T12:00:00Z", &["prune"], false, false).contains("pruned 1"));

    // The group's options go before or after the action alike.
    let after = bin()
        .current_dir(tmp.path())
        .env_remove("BREAKER_ADVISOR_COOLDOWN_STORE")
        .args(["cooldown", "show", "--json", "--store"])
        .arg(format!("sqlite:{}", flag.display()))
        .args(["--now", "2025-11-26T10:15:30Z", "--settings"])
        .arg(&settings)
        .output()
        .unwrap();
    assert!(after.status.success(), "{after:?}");
    let json: serde_json::Value = serde_json::from_slice(&after.stdout).unwrap();
    assert_eq!(json["cooldowns"][0]["host"], "flag.example");

    let parsed = StoreSpec::parse("ftp://x", "p").unwrap_err().to_string();
    assert!(parsed.contains("expected sqlite:PATH"), "{parsed}");
}
