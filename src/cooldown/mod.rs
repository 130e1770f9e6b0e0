//! Shared cooldown stores: "do not call this host until T" deadlines that crawler
//! machines share, in SQLite (one machine) or Redis (a fleet), in the crawler's exact
//! formats so either side reads what the other wrote.
//!
//! Deadlines are wall-clock epoch seconds (`until_wall`); every operation takes `now`
//! explicitly (from `--now` or the system clock at the CLI edge), so tests control time.

mod redis_store;
mod sqlite_store;

use std::fmt;
use std::path::PathBuf;

pub use redis_store::RedisStore;
pub use sqlite_store::SqliteStore;

use crate::hostname::normalize_host;

/// Longest reason the crawler stores; longer ones are cut (on a character boundary).
pub const MAX_REASON_CHARS: usize = 128;
/// Environment variable naming the store when `--store` is not given.
pub const STORE_ENV: &str = "BREAKER_ADVISOR_COOLDOWN_STORE";

/// One host's deadline.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Cooldown {
    pub host: String,
    pub until_wall: f64,
    pub reason: Option<String>,
}

/// A record in the store that could not be read; reported by host and skipped.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct BadRecord {
    pub host: String,
    pub problem: String,
}

/// What `list` found: live cooldowns sorted by host, and unreadable records.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Listing {
    pub cooldowns: Vec<Cooldown>,
    pub bad_records: Vec<BadRecord>,
}

/// Outcome of a set that must never shorten an existing deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SetOutcome {
    Set,
    /// A later deadline was already in the store and was kept.
    KeptLonger,
}

#[derive(Debug, thiserror::Error)]
pub enum CooldownError {
    #[error("cooldown store {store}: {detail}")]
    Store { store: String, detail: String },
    #[error("invalid cooldown store {spec:?}: {detail}")]
    Spec { spec: String, detail: String },
    #[error("host {host:?}: {detail}")]
    Host { host: String, detail: String },
    #[error("cooldown store {store}: record for host {host} is unreadable: {problem}")]
    BadRecord {
        store: String,
        host: String,
        problem: String,
    },
}

/// The operations the crawler's stores support, over wall-clock deadlines.
pub trait CooldownStore {
    /// The live deadline of a host; an expired one reads as absent (and may be deleted).
    fn get(&mut self, host: &str, now: f64) -> Result<Option<Cooldown>, CooldownError>;
    /// Sets a deadline, replacing any other.
    fn set(
        &mut self,
        host: &str,
        until_wall: f64,
        reason: &str,
        now: f64,
    ) -> Result<(), CooldownError>;
    /// Sets a deadline unless a later one is already there (atomic in the store).
    fn extend(
        &mut self,
        host: &str,
        until_wall: f64,
        reason: &str,
        now: f64,
    ) -> Result<SetOutcome, CooldownError>;
    /// Removes a host's deadline; true when there was one.
    fn clear(&mut self, host: &str) -> Result<bool, CooldownError>;
    /// Every live deadline, sorted by host.
    fn list(&mut self, now: f64) -> Result<Listing, CooldownError>;
    /// Deletes expired deadlines; returns how many.
    fn prune(&mut self, now: f64) -> Result<u64, CooldownError>;
    /// The store as it may be shown to a user (no password).
    fn describe(&self) -> String;
}

/// Which store to use, parsed from `sqlite:PATH`, `redis://...` or `rediss://...`.
#[derive(Clone, PartialEq, Eq)]
pub enum StoreSpec {
    Sqlite(PathBuf),
    Redis { url: String, key_prefix: String },
}

impl fmt::Debug for StoreSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl StoreSpec {
    pub fn parse(spec: &str, key_prefix: &str) -> Result<StoreSpec, CooldownError> {
        let err = |detail: &str| CooldownError::Spec {
            spec: redact_dsn(spec),
            detail: detail.into(),
        };
        if let Some(path) = spec.strip_prefix("sqlite:") {
            let path = path.strip_prefix("//").unwrap_or(path);
            if path.is_empty() {
                return Err(err(
                    "sqlite: needs a file path, e.g. sqlite:/var/lib/crawler/cooldowns.sqlite",
                ));
            }
            Ok(StoreSpec::Sqlite(PathBuf::from(path)))
        } else if spec.starts_with("redis://") || spec.starts_with("rediss://") {
            Ok(StoreSpec::Redis {
                url: spec.to_owned(),
                key_prefix: key_prefix.to_owned(),
            })
        } else {
            Err(err(
                "expected sqlite:PATH, redis://[user:pass@]host:port/db or rediss://...",
            ))
        }
    }

    /// The spec with any password replaced by `***`.
    pub fn redacted(&self) -> String {
        match self {
            StoreSpec::Sqlite(p) => format!("sqlite:{}", p.display()),
            StoreSpec::Redis { url, .. } => redact_dsn(url),
        }
    }

    pub fn open(&self) -> Result<Box<dyn CooldownStore>, CooldownError> {
        Ok(match self {
            StoreSpec::Sqlite(path) => Box::new(SqliteStore::open(path)?),
            StoreSpec::Redis { url, key_prefix } => Box::new(RedisStore::connect(url, key_prefix)?),
        })
    }
}

/// Replaces the password of a `scheme://user:pass@host/...` DSN with `***`.
pub fn redact_dsn(dsn: &str) -> String {
    let Some(scheme_end) = dsn.find("://") else {
        return dsn.to_owned();
    };
    let rest = &dsn[scheme_end + 3..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let Some(at) = authority.rfind('@') else {
        return dsn.to_owned();
    };
    let userinfo = &authority[..at];
    let redacted = match userinfo.find(':') {
        Some(colon) => format!("{}:***", &userinfo[..colon]),
        None if userinfo.is_empty() => String::new(),
        // `redis://secret@host` puts the password where the user would be.
        None => "***".to_owned(),
    };
    format!("{}{}@{}", &dsn[..scheme_end + 3], redacted, &rest[at + 1..])
}

/// Normalises a host for use as a store key, as the crawler does.
pub fn store_host(raw: &str) -> Result<String, CooldownError> {
    normalize_host(raw).map_err(|e| CooldownError::Host {
        host: raw.to_owned(),
        detail: e.to_string(),
    })
}

/// Cuts a reason to [`MAX_REASON_CHARS`] characters.
pub fn cut_reason(reason: &str) -> &str {
    match reason.char_indices().nth(MAX_REASON_CHARS) {
        Some((i, _)) => &reason[..i],
        None => reason,
    }
}

/// Formats a float as Python's `repr` does for the values we store (finite, no
/// exponent below 1e16): shortest round-trip digits, always with a decimal point.
pub fn python_float(v: f64) -> String {
    let s = format!("{v}");
    if s.contains('.') || s.contains('e') || s.contains("inf") || s.contains("NaN") {
        s
    } else {
        format!("{s}.0")
    }
}

/// A JSON string exactly as Python's `json.dumps` writes it (`ensure_ascii=True`).
pub fn python_json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 || (c as u32) > 0x7e => {
                let mut buf = [0u16; 2];
                for unit in c.encode_utf16(&mut buf) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_show() {
        assert_eq!(
            redact_dsn("redis://u:s3cret@h:6379/2"),
            "redis://u:***@h:6379/2"
        );
        assert_eq!(
            redact_dsn("rediss://:s3cret@h:6380/1"),
            "rediss://:***@h:6380/1"
        );
        assert_eq!(redact_dsn("redis://s3cret@h/0"), "redis://***@h/0");
        assert_eq!(redact_dsn("redis://h:6379/0"), "redis://h:6379/0");
        let spec = StoreSpec::parse("redis://u:s3cret@h:6379/2", "breaker:cooldown:").unwrap();
        assert!(!format!("{spec:?}").contains("s3cret"));
    }

    #[test]
    fn python_compatible_json() {
        assert_eq!(python_float(1764152130.0), "1764152130.0");
        assert_eq!(python_float(1764152130.25), "1764152130.25");
        assert_eq!(python_float(0.1 + 0.2), "0.30000000000000004");
        assert_eq!(python_json_string("cli-open"), "\"cli-open\"");
        assert_eq!(python_json_string("a\"b\\c\n"), "\"a\\\"b\\\\c\\n\"");
        assert_eq!(
            python_json_string("münchen 🚀"),
            "\"m\\u00fcnchen \\ud83d\\ude80\""
        );
    }

    #[test]
    fn reasons_are_cut_on_characters() {
        let long = "é".repeat(200);
        assert_eq!(cut_reason(&long).chars().count(), 128);
        assert_eq!(cut_reason("short"), "short");
    }
}
