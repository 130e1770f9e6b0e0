//! Writes simulated telemetry as the crawler does, in either real variant.

use std::path::Path;

use rusqlite::{Connection, params};

use super::breaker::State;
use super::{Event, HostTransition, OutcomeEvent, RateEvent, Variant};

/// The crawler's declared schema (see docs/reference): `ts REAL`, `breaker_transitions`.
const SCHEMA_DDL: &str = "
CREATE TABLE http_events (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  run_id TEXT NOT NULL,
  ts REAL NOT NULL,
  host TEXT NOT NULL,
  role TEXT NOT NULL,
  method TEXT NOT NULL,
  status INTEGER,
  url_hash TEXT NOT NULL,
  from_cache INTEGER,
  revalidated INTEGER,
  stale INTEGER,
  retry_count INTEGER,
  retry_after_s INTEGER,
  rate_delay_ms INTEGER,
  breaker_state TEXT,
  breaker_recorded TEXT,
  elapsed_ms INTEGER,
  error TEXT
);
CREATE TABLE rate_events (
  id INTEGER PRIMARY KEY AUTOINCREMENT, run_id TEXT NOT NULL, ts REAL NOT NULL,
  host TEXT NOT NULL, role TEXT NOT NULL,
  action TEXT NOT NULL, delay_ms INTEGER, max_delay_ms INTEGER);
CREATE TABLE breaker_transitions (
  id INTEGER PRIMARY KEY AUTOINCREMENT, run_id TEXT NOT NULL, ts REAL NOT NULL,
  host TEXT NOT NULL, scope TEXT NOT NULL,
  old_state TEXT NOT NULL, new_state TEXT NOT NULL,
  reset_timeout_s INTEGER);
";

/// The crawler's SQLite sink: ISO `timestamp TEXT`, `breaker_host_state`, nullable
/// `run_id`, no `stale`/`revalidated`/`rate_delay_ms`, transitions in `breaker_events`.
const SINK_DDL: &str = "
CREATE TABLE http_events (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  run_id TEXT,
  timestamp TEXT NOT NULL,
  host TEXT,
  role TEXT,
  method TEXT,
  status INTEGER,
  url_hash TEXT,
  from_cache INTEGER,
  retry_count INTEGER,
  retry_after_s INTEGER,
  breaker_host_state TEXT,
  breaker_recorded TEXT,
  elapsed_ms INTEGER,
  error TEXT
);
CREATE TABLE breaker_events (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  timestamp TEXT NOT NULL,
  run_id TEXT,
  event_type TEXT NOT NULL,
  host TEXT,
  scope TEXT,
  resolver TEXT,
  payload TEXT
);
";

pub struct Writer {
    conn: Connection,
    variant: Variant,
    run_id: String,
    hosts: Vec<String>,
}

fn iso(ts_us: i64) -> String {
    chrono::DateTime::from_timestamp_micros(ts_us)
        .expect("simulated times are in range")
        .format("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string()
}

fn pybreaker_repr(state: State, salt: u64) -> String {
    let class = match state {
        State::Closed => "CircuitClosedState",
        State::Open => "CircuitOpenState",
        State::HalfOpen => "CircuitHalfOpenState",
    };
    format!(
        "<pybreaker.{class} object at 0x7f{:010x}>",
        salt & 0xff_ffff_ffff
    )
}

impl Writer {
    pub fn create(
        path: &Path,
        variant: Variant,
        run_id: String,
        hosts: &[String],
    ) -> anyhow::Result<Self> {
        for suffix in ["", "-wal", "-shm"] {
            let p = format!("{}{suffix}", path.display());
            if Path::new(&p).exists() {
                std::fs::remove_file(&p)?;
            }
        }
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "OFF")?;
        conn.execute_batch(match variant {
            Variant::Schema => SCHEMA_DDL,
            Variant::Sink => SINK_DDL,
        })?;
        Ok(Writer {
            conn,
            variant,
            run_id,
            hosts: hosts.to_vec(),
        })
    }

    /// Host as the sink writes it: the IDN host in Unicode and, now and then, one
    /// host in mixed case with a trailing dot, which the export must normalise.
    fn host_text(hosts: &[String], idx: usize, salt: u64) -> String {
        let h = &hosts[idx];
        {
            if h == "xn--mnchen-3ya.example" {
                return "münchen.example".into();
            }
            if idx == 0 && salt.is_multiple_of(7) {
                return format!("{}.", h.to_ascii_uppercase());
            }
        }
        h.clone()
    }

    pub fn write_chunk(
        &mut self,
        events: &[Event],
        transitions: &[HostTransition],
        outcomes: &[OutcomeEvent],
        rate_events: &[RateEvent],
    ) -> anyhow::Result<()> {
        let tx = self.conn.transaction()?;
        match self.variant {
            Variant::Schema => {
                let mut ins = tx.prepare_cached(
                    "INSERT INTO http_events (run_id, ts, host, role, method, status, url_hash,
                     from_cache, revalidated, stale, retry_count, retry_after_s, rate_delay_ms,
                     breaker_state, breaker_recorded, elapsed_ms, error)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)",
                )?;
                for e in events {
                    ins.execute(params![
                        self.run_id,
                        e.ts_us as f64 / 1e6,
                        self.hosts[e.host_idx],
                        e.role,
                        e.method,
                        e.status,
                        format!("{:016x}", e.url_hash),
                        i64::from(e.from_cache),
                        i64::from(e.status == Some(304)),
                        0i64,
                        e.retry_count,
                        e.retry_after_s,
                        e.rate_delay_ms,
                        e.breaker_state.map(State::as_str),
                        e.breaker_recorded,
                        e.elapsed_ms,
                        e.error,
                    ])?;
                }
                let mut ins = tx.prepare_cached(
                    "INSERT INTO rate_events (run_id, ts, host, role, action, delay_ms, max_delay_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )?;
                for e in rate_events {
                    ins.execute(params![
                        self.run_id,
                        e.ts_us as f64 / 1e6,
                        self.hosts[e.host_idx],
                        e.role,
                        if e.refused { "block" } else { "acquire" },
                        e.delay_ms,
                        e.max_delay_ms,
                    ])?;
                }
                let mut ins = tx.prepare_cached(
                    "INSERT INTO breaker_transitions (run_id, ts, host, scope, old_state, new_state, reset_timeout_s)
                     VALUES (?1, ?2, ?3, 'host', ?4, ?5, ?6)",
                )?;
                for t in transitions {
                    ins.execute(params![
                        self.run_id,
                        t.transition.at_s,
                        self.hosts[t.host_idx],
                        t.transition.from.as_str(),
                        t.transition.to.as_str(),
                        t.reset_timeout_s.round() as i64,
                    ])?;
                }
            }
            Variant::Sink => {
                let mut ins = tx.prepare_cached(
                    "INSERT INTO http_events (run_id, timestamp, host, role, method, status, url_hash,
                     from_cache, retry_count, retry_after_s, breaker_host_state, breaker_recorded,
                     elapsed_ms, error)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
                )?;
                for e in events {
                    // The sink leaves run_id NULL for calls made outside a run.
                    let run_id = (e.url_hash % 10 != 0).then_some(self.run_id.as_str());
                    ins.execute(params![
                        run_id,
                        iso(e.ts_us),
                        Self::host_text(&self.hosts, e.host_idx, e.url_hash),
                        e.role,
                        e.method,
                        e.status,
                        format!("{:016x}", e.url_hash),
                        i64::from(e.from_cache),
                        e.retry_count,
                        e.retry_after_s,
                        e.breaker_state.map(|s| s.as_str().to_ascii_uppercase()),
                        e.breaker_recorded,
                        e.elapsed_ms,
                        e.error,
                    ])?;
                }
                let mut ins = tx.prepare_cached(
                    "INSERT INTO breaker_events (timestamp, run_id, event_type, host, scope, resolver, payload)
                     VALUES (?1, ?2, ?3, ?4, 'host', NULL, ?5)",
                )?;
                // The listener's events of one machine in the order it logged them,
                // merged by time; at one instant the half-open change that admitted the
                // attempt first, then the outcomes (in the order recorded), then the
                // changes they caused.
                enum Logged<'a> {
                    Outcome(&'a OutcomeEvent),
                    Change(usize, &'a HostTransition),
                }
                let mut logged: Vec<(i64, u8, Logged<'_>)> = outcomes
                    .iter()
                    .map(|o| (o.ts_us, 1, Logged::Outcome(o)))
                    .chain(transitions.iter().enumerate().map(|(i, t)| {
                        let rank = if t.transition.from == State::Open {
                            0
                        } else {
                            2
                        };
                        (
                            (t.transition.at_s * 1e6).round() as i64,
                            rank,
                            Logged::Change(i, t),
                        )
                    }))
                    .collect();
                logged.sort_by_key(|(ts, rank, _)| (*ts, *rank));
                for (ts_us, _, item) in logged {
                    match item {
                        Logged::Outcome(o) => {
                            let (kind, extra) = if o.failure {
                                (
                                    "breaker_failure",
                                    serde_json::json!({"exc_type": "HTTPStatusError", "msg": "server error"}),
                                )
                            } else {
                                ("breaker_success", serde_json::json!({}))
                            };
                            let mut payload = serde_json::json!({
                                "event_type": kind,
                                "fail_counter": o.fail_counter,
                                "host": self.hosts[o.host_idx],
                                "resolver": null,
                                "run_id": self.run_id,
                                "scope": "host",
                                "state": o.state.as_str().replace('_', "-"),
                                "ts": ts_us as f64 / 1e6,
                            });
                            if let (Some(p), Some(e)) = (payload.as_object_mut(), extra.as_object())
                            {
                                p.extend(e.clone());
                            }
                            ins.execute(params![
                                iso(ts_us),
                                self.run_id,
                                kind,
                                self.hosts[o.host_idx],
                                payload.to_string()
                            ])?;
                        }
                        Logged::Change(i, t) => {
                            let payload = serde_json::json!({
                                "old": pybreaker_repr(t.transition.from, ts_us as u64 ^ i as u64),
                                "new": pybreaker_repr(t.transition.to, ts_us as u64 ^ (i as u64 + 1)),
                                "reset_timeout_s": t.reset_timeout_s.round() as i64,
                                "ts": t.transition.at_s,
                            });
                            ins.execute(params![
                                iso(ts_us),
                                self.run_id,
                                "breaker_state_change",
                                self.hosts[t.host_idx],
                                payload.to_string()
                            ])?;
                        }
                    }
                }
            }
        }
        tx.commit()?;
        Ok(())
    }

    pub fn finish(self) -> anyhow::Result<()> {
        self.conn
            .execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")?;
        Ok(())
    }
}
