//! The crawler's SQLite cooldown store: table `breaker_cooldowns`, WAL, busy timeout
//! 4000 ms, upserts. Several processes may write at once; each statement is atomic.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};

use super::{
    BadRecord, Cooldown, CooldownError, CooldownStore, Listing, SetOutcome, cut_reason, store_host,
};

/// The crawler's DDL, verbatim.
const DDL: &str = "
CREATE TABLE IF NOT EXISTS breaker_cooldowns (
  host TEXT PRIMARY KEY,
  until_wall REAL NOT NULL,
  reason TEXT,
  updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS idx_cd_until ON breaker_cooldowns(until_wall);
";

pub struct SqliteStore {
    path: PathBuf,
    conn: Connection,
}

impl SqliteStore {
    pub fn open(path: &Path) -> Result<Self, CooldownError> {
        let store = path.display().to_string();
        let err = |e: rusqlite::Error| CooldownError::Store {
            store: format!("sqlite:{store}"),
            detail: e.to_string(),
        };
        let conn = Connection::open(path).map_err(err)?;
        conn.busy_timeout(Duration::from_millis(4000))
            .map_err(err)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(err)?;
        conn.execute_batch(DDL).map_err(err)?;
        Ok(SqliteStore {
            path: path.to_owned(),
            conn,
        })
    }

    fn err(&self, e: rusqlite::Error) -> CooldownError {
        CooldownError::Store {
            store: self.describe(),
            detail: e.to_string(),
        }
    }
}

/// A row as stored; `until_wall` may be NULL or not a number in a damaged store.
fn decode(
    host: String,
    until: rusqlite::types::Value,
    reason: Option<String>,
) -> Result<Cooldown, BadRecord> {
    use rusqlite::types::Value;
    let until_wall = match until {
        Value::Real(f) => f,
        Value::Integer(i) => i as f64,
        Value::Null => {
            return Err(BadRecord {
                host,
                problem: "until_wall is NULL".into(),
            });
        }
        other => {
            return Err(BadRecord {
                host,
                problem: format!("until_wall is not a number: {other:?}"),
            });
        }
    };
    Ok(Cooldown {
        host,
        until_wall,
        reason,
    })
}

impl CooldownStore for SqliteStore {
    fn get(&mut self, host: &str, now: f64) -> Result<Option<Cooldown>, CooldownError> {
        let host = store_host(host)?;
        let row = self
            .conn
            .query_row(
                "SELECT host, until_wall, reason FROM breaker_cooldowns WHERE host = ?1",
                [&host],
                |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get(1)?,
                        r.get::<_, Option<String>>(2)?,
                    ))
                },
            )
            .optional()
            .map_err(|e| self.err(e))?;
        let Some((h, until, reason)) = row else {
            return Ok(None);
        };
        let cd = decode(h, until, reason).map_err(|b| CooldownError::BadRecord {
            store: self.describe(),
            host: b.host,
            problem: b.problem,
        })?;
        if cd.until_wall <= now {
            // Expired reads as absent; delete it unless someone extended it meanwhile.
            self.conn
                .execute(
                    "DELETE FROM breaker_cooldowns WHERE host = ?1 AND until_wall <= ?2",
                    params![host, now],
                )
                .map_err(|e| self.err(e))?;
            return Ok(None);
        }
        Ok(Some(cd))
    }

    fn set(
        &mut self,
        host: &str,
        until_wall: f64,
        reason: &str,
        now: f64,
    ) -> Result<(), CooldownError> {
        let host = store_host(host)?;
        self.conn
            .execute(
                "INSERT INTO breaker_cooldowns (host, until_wall, reason, updated_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(host) DO UPDATE SET until_wall = excluded.until_wall,
                   reason = excluded.reason, updated_at = excluded.updated_at",
                params![host, until_wall, cut_reason(reason), now],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    fn extend(
        &mut self,
        host: &str,
        until_wall: f64,
        reason: &str,
        now: f64,
    ) -> Result<SetOutcome, CooldownError> {
        let host = store_host(host)?;
        // One statement, so a concurrent writer cannot slip between the read and the write.
        let changed = self
            .conn
            .execute(
                "INSERT INTO breaker_cooldowns (host, until_wall, reason, updated_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(host) DO UPDATE SET until_wall = excluded.until_wall,
                   reason = excluded.reason, updated_at = excluded.updated_at
                 WHERE breaker_cooldowns.until_wall IS NULL
                    OR typeof(breaker_cooldowns.until_wall) NOT IN ('real', 'integer')
                    OR breaker_cooldowns.until_wall < excluded.until_wall",
                params![host, until_wall, cut_reason(reason), now],
            )
            .map_err(|e| self.err(e))?;
        Ok(if changed > 0 {
            SetOutcome::Set
        } else {
            SetOutcome::KeptLonger
        })
    }

    fn clear(&mut self, host: &str) -> Result<bool, CooldownError> {
        let host = store_host(host)?;
        let n = self
            .conn
            .execute("DELETE FROM breaker_cooldowns WHERE host = ?1", [&host])
            .map_err(|e| self.err(e))?;
        Ok(n > 0)
    }

    fn list(&mut self, now: f64) -> Result<Listing, CooldownError> {
        let mut stmt = self
            .conn
            .prepare("SELECT host, until_wall, reason FROM breaker_cooldowns ORDER BY host")
            .map_err(|e| CooldownError::Store {
                store: format!("sqlite:{}", self.path.display()),
                detail: e.to_string(),
            })?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get(1)?,
                    r.get::<_, Option<String>>(2)?,
                ))
            })
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            .map_err(|e| CooldownError::Store {
                store: format!("sqlite:{}", self.path.display()),
                detail: e.to_string(),
            })?;
        let mut listing = Listing::default();
        for (host, until, reason) in rows {
            match decode(host, until, reason) {
                Ok(cd) if cd.until_wall > now => listing.cooldowns.push(cd),
                Ok(_) => {}
                Err(bad) => listing.bad_records.push(bad),
            }
        }
        Ok(listing)
    }

    fn prune(&mut self, now: f64) -> Result<u64, CooldownError> {
        let n = self
            .conn
            .execute(
                "DELETE FROM breaker_cooldowns WHERE typeof(until_wall) IN ('real', 'integer') AND until_wall <= ?1",
                [now],
            )
            .map_err(|e| self.err(e))?;
        Ok(n as u64)
    }

    fn describe(&self) -> String {
        format!("sqlite:{}", self.path.display())
    }
}
