//! The crawler's Redis cooldown store: key `<prefix><host>`, value the JSON bytes
//! `{"until_wall": <float>, "reason": "<str>"}` exactly as Python's `json.dumps` writes
//! them, expiry `EX = max(1, round(until_wall - now))`. Listing uses `SCAN`, never `KEYS`.

use std::time::Duration;

use redis::{Client, Connection, ErrorKind, RedisError, Value};

use super::{
    BadRecord, Cooldown, CooldownError, CooldownStore, Listing, SetOutcome, cut_reason,
    python_float, python_json_string, redact_dsn, store_host,
};

/// Connect and command timeout: an unreachable server fails fast, not after minutes.
pub const TIMEOUT: Duration = Duration::from_secs(2);

/// Sets the key unless it holds a later deadline; atomic on the server.
const EXTEND_SCRIPT: &str = r#"
local cur = redis.call('GET', KEYS[1])
if cur then
  local ok, obj = pcall(cjson.decode, cur)
  if ok and type(obj) == 'table' then
    local until_wall = tonumber(obj['until_wall'])
    if until_wall and until_wall >= tonumber(ARGV[2]) then
      return 0
    end
  end
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[3])
return 1
"#;

pub struct RedisStore {
    display: String,
    password: Option<String>,
    prefix: String,
    conn: Connection,
}

/// The value bytes the crawler writes.
pub fn encode_value(until_wall: f64, reason: &str) -> String {
    format!(
        "{{\"until_wall\": {}, \"reason\": {}}}",
        python_float(until_wall),
        python_json_string(cut_reason(reason))
    )
}

/// The expiry the crawler sets: `max(1, round(until_wall - now))`, rounding half to even
/// as Python's `round` does.
pub fn ttl_seconds(until_wall: f64, now: f64) -> i64 {
    let d = until_wall - now;
    let r = d.round();
    // Python rounds exact halves to the even neighbour.
    let r = if (d - d.trunc()).abs() == 0.5 && (r as i64) % 2 != 0 {
        r - d.signum()
    } else {
        r
    };
    (r as i64).max(1)
}

fn decode_value(host: String, raw: &[u8]) -> Result<Cooldown, BadRecord> {
    let bad = |problem: String| BadRecord {
        host: host.clone(),
        problem,
    };
    let v: serde_json::Value =
        serde_json::from_slice(raw).map_err(|e| bad(format!("value is not JSON ({e})")))?;
    let until = v
        .get("until_wall")
        .and_then(serde_json::Value::as_f64)
        .ok_or_else(|| bad("value has no numeric until_wall".into()))?;
    let reason = v.get("reason").and_then(|r| r.as_str()).map(str::to_owned);
    Ok(Cooldown {
        host,
        until_wall: until,
        reason,
    })
}

fn password_of(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let authority = &rest[..rest.find('/').unwrap_or(rest.len())];
    let userinfo = &authority[..authority.rfind('@')?];
    let pass = userinfo.split_once(':').map_or(userinfo, |(_, p)| p);
    (!pass.is_empty()).then(|| pass.to_owned())
}

impl RedisStore {
    /// Connects (TLS for `rediss://`), authenticates and selects the db, within [`TIMEOUT`].
    pub fn connect(url: &str, prefix: &str) -> Result<Self, CooldownError> {
        let display = redact_dsn(url);
        let password = password_of(url);
        let fail = |e: RedisError| CooldownError::Store {
            store: display.clone(),
            detail: describe_error(&e, password.as_deref()),
        };
        if url.starts_with("rediss://") {
            // rustls needs a process-wide crypto provider; a second install is a no-op error.
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let client = Client::open(url).map_err(fail)?;
        let conn = client.get_connection_with_timeout(TIMEOUT).map_err(fail)?;
        conn.set_read_timeout(Some(TIMEOUT)).map_err(fail)?;
        conn.set_write_timeout(Some(TIMEOUT)).map_err(fail)?;
        let mut store = RedisStore {
            display,
            password,
            prefix: prefix.to_owned(),
            conn,
        };
        // The handshake already ran AUTH and SELECT; PING proves the session works.
        let _: String = redis::cmd("PING")
            .query(&mut store.conn)
            .map_err(|e| store.err(e))?;
        Ok(store)
    }

    fn key(&self, host: &str) -> String {
        format!("{}{host}", self.prefix)
    }

    fn err(&self, e: RedisError) -> CooldownError {
        CooldownError::Store {
            store: self.display.clone(),
            detail: describe_error(&e, self.password.as_deref()),
        }
    }
}

/// A redis error as a sentence, with the password scrubbed should the server echo it.
fn describe_error(e: &RedisError, password: Option<&str>) -> String {
    let text = match e.kind() {
        ErrorKind::AuthenticationFailed => format!("authentication failed ({e})"),
        ErrorKind::Io if e.is_timeout() => {
            format!("no answer within {} s ({e})", TIMEOUT.as_secs())
        }
        ErrorKind::Io if e.is_connection_refusal() => format!("connection refused ({e})"),
        _ => e.to_string(),
    };
    match password {
        Some(p) if p.len() >= 3 => text.replace(p, "***"),
        _ => text,
    }
}

impl CooldownStore for RedisStore {
    fn get(&mut self, host: &str, now: f64) -> Result<Option<Cooldown>, CooldownError> {
        let host = store_host(host)?;
        let key = self.key(&host);
        let raw: Option<Vec<u8>> = redis::cmd("GET")
            .arg(&key)
            .query(&mut self.conn)
            .map_err(|e| self.err(e))?;
        let Some(raw) = raw else { return Ok(None) };
        let cd = decode_value(host, &raw).map_err(|b| CooldownError::BadRecord {
            store: self.display.clone(),
            host: b.host,
            problem: b.problem,
        })?;
        if cd.until_wall <= now {
            let _: i64 = redis::cmd("DEL")
                .arg(&key)
                .query(&mut self.conn)
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
        let _: () = redis::cmd("SET")
            .arg(self.key(&host))
            .arg(encode_value(until_wall, reason))
            .arg("EX")
            .arg(ttl_seconds(until_wall, now))
            .query(&mut self.conn)
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
        let set: i64 = redis::cmd("EVAL")
            .arg(EXTEND_SCRIPT)
            .arg(1)
            .arg(self.key(&host))
            .arg(encode_value(until_wall, reason))
            .arg(python_float(until_wall))
            .arg(ttl_seconds(until_wall, now))
            .query(&mut self.conn)
            .map_err(|e| self.err(e))?;
        Ok(if set == 1 {
            SetOutcome::Set
        } else {
            SetOutcome::KeptLonger
        })
    }

    fn clear(&mut self, host: &str) -> Result<bool, CooldownError> {
        let host = store_host(host)?;
        let n: i64 = redis::cmd("DEL")
            .arg(self.key(&host))
            .query(&mut self.conn)
            .map_err(|e| self.err(e))?;
        Ok(n > 0)
    }

    fn list(&mut self, now: f64) -> Result<Listing, CooldownError> {
        let pattern = format!("{}*", glob_escape(&self.prefix));
        let mut keys: Vec<Vec<u8>> = Vec::new();
        let mut cursor: u64 = 0;
        loop {
            let (next, batch): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(500)
                .query(&mut self.conn)
                .map_err(|e| self.err(e))?;
            keys.extend(batch);
            if next == 0 {
                break;
            }
            cursor = next;
        }
        keys.sort();
        keys.dedup();
        let mut listing = Listing::default();
        for chunk in keys.chunks(500) {
            let values: Vec<Value> = redis::cmd("MGET")
                .arg(chunk)
                .query(&mut self.conn)
                .map_err(|e| self.err(e))?;
            for (key, value) in chunk.iter().zip(values) {
                let host = String::from_utf8_lossy(&key[self.prefix.len()..]).into_owned();
                let raw = match value {
                    Value::BulkString(b) => b,
                    // Expired between SCAN and MGET.
                    Value::Nil => continue,
                    other => {
                        listing.bad_records.push(BadRecord {
                            host,
                            problem: format!("unexpected value type {other:?}"),
                        });
                        continue;
                    }
                };
                match decode_value(host, &raw) {
                    Ok(cd) if cd.until_wall > now => listing.cooldowns.push(cd),
                    Ok(_) => {}
                    Err(bad) => listing.bad_records.push(bad),
                }
            }
        }
        Ok(listing)
    }

    fn prune(&mut self, now: f64) -> Result<u64, CooldownError> {
        // Redis expires keys itself; delete the ones whose deadline passed before their TTL.
        let listing_all = {
            let mut l = self.list(f64::NEG_INFINITY)?;
            l.cooldowns.retain(|c| c.until_wall <= now);
            l.cooldowns
        };
        let mut n = 0;
        for cd in listing_all {
            let removed: i64 = redis::cmd("DEL")
                .arg(self.key(&cd.host))
                .query(&mut self.conn)
                .map_err(|e| self.err(e))?;
            n += removed as u64;
        }
        Ok(n)
    }

    fn describe(&self) -> String {
        self.display.clone()
    }
}

/// Escapes glob metacharacters so a prefix matches literally in SCAN MATCH.
fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_and_ttls_as_the_crawler_writes_them() {
        assert_eq!(
            encode_value(1764152130.5, "retry-after"),
            r#"{"until_wall": 1764152130.5, "reason": "retry-after"}"#
        );
        assert_eq!(ttl_seconds(100.4, 0.0), 100);
        assert_eq!(ttl_seconds(100.5, 0.0), 100, "half to even");
        assert_eq!(ttl_seconds(101.5, 0.0), 102, "half to even");
        assert_eq!(ttl_seconds(0.2, 0.0), 1);
        assert_eq!(ttl_seconds(-5.0, 0.0), 1);
        assert_eq!(password_of("redis://u:pw@h:1/0").as_deref(), Some("pw"));
        assert_eq!(password_of("redis://h:1/0"), None);
    }
}
