//! Decoding of single SQLite values into canonical ones: times, breaker states,
//! integers and booleans stored loosely (SQLite columns are dynamically typed).

use chrono::{DateTime, NaiveDateTime};
use rusqlite::types::ValueRef;

use crate::breaker_state::BreakerState;

/// Earliest and latest plausible event times (1990-01-01 and 2200-01-01, in µs): a value
/// outside is a unit mistake (milliseconds, say) and is rejected rather than exported.
const MIN_TS_US: i64 = 631_152_000_000_000;
const MAX_TS_US: i64 = 7_258_118_400_000_000;

/// Why a row's time could not be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeError {
    Null,
    Unparsable,
    /// A time, but before 1990 or after 2200: a clock or a unit that is off.
    OutOfRange,
}

/// Normalises `closed`, `OPEN`, `half-open`, `HalfOpen` and pybreaker reprs such as
/// `<pybreaker.CircuitHalfOpenState object at 0x7f...>`.
pub fn parse_state(raw: &str) -> Option<BreakerState> {
    // Fast path for the canonical spellings the crawler's schema writes on every row.
    match raw {
        "closed" => return Some(BreakerState::Closed),
        "open" => return Some(BreakerState::Open),
        "half_open" => return Some(BreakerState::HalfOpen),
        _ => {}
    }
    let s: String = raw
        .chars()
        .filter(|c| c.is_ascii_alphabetic())
        .map(|c| c.to_ascii_lowercase())
        .collect();
    let s = s.strip_prefix("pybreaker").unwrap_or(&s);
    // The repr's "object at 0x..." tail holds no state word; strip it so hex digits
    // cannot be misread.
    let s = s.split("object").next().unwrap_or(s);
    if s.contains("halfopen") {
        Some(BreakerState::HalfOpen)
    } else if s.contains("closed") {
        Some(BreakerState::Closed)
    } else if s.contains("open") {
        Some(BreakerState::Open)
    } else {
        None
    }
}

/// Normalises `breaker_recorded` to `success|failure|none|cache-hit|blocked`: the
/// crawler sets `cache-hit` for a response served from its HTTP cache and `blocked` when
/// `allow()` denied the call.
pub fn parse_recorded(raw: &str) -> Option<&'static str> {
    match raw {
        "success" => return Some("success"),
        "failure" => return Some("failure"),
        "none" => return Some("none"),
        _ => {}
    }
    match raw.trim().to_ascii_lowercase().replace('_', "-").as_str() {
        "success" => Some("success"),
        "failure" => Some("failure"),
        "none" | "" => Some("none"),
        "cache-hit" | "cachehit" => Some("cache-hit"),
        "blocked" => Some("blocked"),
        _ => None,
    }
}

/// Epoch seconds (float) to microseconds, range-checked.
pub fn epoch_seconds_to_us(secs: f64) -> Result<i64, TimeError> {
    if !secs.is_finite() {
        return Err(TimeError::Unparsable);
    }
    let us = (secs * 1e6).round();
    if us < MIN_TS_US as f64 || us > MAX_TS_US as f64 {
        return Err(TimeError::OutOfRange);
    }
    Ok(us as i64)
}

/// Parses ISO 8601 / RFC 3339 text; without an offset the time is taken as UTC.
/// Numeric text is read as epoch seconds.
pub fn parse_time_text(text: &str) -> Result<i64, TimeError> {
    let t = text.trim();
    if t.is_empty() {
        return Err(TimeError::Null);
    }
    if let Ok(dt) = DateTime::parse_from_rfc3339(t) {
        return check_us(dt.timestamp_micros());
    }
    for fmt in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"] {
        if let Ok(ndt) = NaiveDateTime::parse_from_str(t, fmt) {
            return check_us(ndt.and_utc().timestamp_micros());
        }
    }
    // "2025-11-26 10:15:30+00:00" (space separator with an offset), as SQLite's
    // datetime() and Python's str(datetime) write it.
    if let Ok(dt) = DateTime::parse_from_str(t, "%Y-%m-%d %H:%M:%S%.f%:z") {
        return check_us(dt.timestamp_micros());
    }
    match t.parse::<f64>() {
        Ok(secs) => epoch_seconds_to_us(secs),
        Err(_) => Err(TimeError::Unparsable),
    }
}

fn check_us(us: i64) -> Result<i64, TimeError> {
    if (MIN_TS_US..=MAX_TS_US).contains(&us) {
        Ok(us)
    } else {
        Err(TimeError::OutOfRange)
    }
}

/// Decodes a time value of either variant column.
pub fn decode_time(v: ValueRef<'_>) -> Result<i64, TimeError> {
    match v {
        ValueRef::Null => Err(TimeError::Null),
        ValueRef::Integer(i) => epoch_seconds_to_us(i as f64),
        ValueRef::Real(f) => epoch_seconds_to_us(f),
        ValueRef::Text(b) => std::str::from_utf8(b)
            .map_err(|_| TimeError::Unparsable)
            .and_then(parse_time_text),
        ValueRef::Blob(_) => Err(TimeError::Unparsable),
    }
}

/// Result of decoding an optional value: present, absent (NULL) or unusable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoded<T> {
    Value(T),
    Null,
    Invalid,
}

pub fn decode_int(v: ValueRef<'_>) -> Decoded<i64> {
    match v {
        ValueRef::Null => Decoded::Null,
        ValueRef::Integer(i) => Decoded::Value(i),
        ValueRef::Real(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => Decoded::Value(f as i64),
        ValueRef::Text(b) => match std::str::from_utf8(b).map(str::trim) {
            Ok("") => Decoded::Null,
            Ok(s) => s.parse().map_or(Decoded::Invalid, Decoded::Value),
            Err(_) => Decoded::Invalid,
        },
        _ => Decoded::Invalid,
    }
}

pub fn decode_bool(v: ValueRef<'_>) -> Decoded<bool> {
    match v {
        ValueRef::Null => Decoded::Null,
        ValueRef::Integer(0) => Decoded::Value(false),
        ValueRef::Integer(1) => Decoded::Value(true),
        ValueRef::Text(b) => match b.to_ascii_lowercase().as_slice() {
            b"0" | b"false" => Decoded::Value(false),
            b"1" | b"true" => Decoded::Value(true),
            b"" => Decoded::Null,
            _ => Decoded::Invalid,
        },
        _ => Decoded::Invalid,
    }
}

/// Text of a value; numbers are formatted, blobs must be UTF-8.
pub fn decode_text(v: ValueRef<'_>) -> Decoded<std::borrow::Cow<'_, str>> {
    match v {
        ValueRef::Null => Decoded::Null,
        ValueRef::Text(b) | ValueRef::Blob(b) => match std::str::from_utf8(b) {
            Ok(s) => Decoded::Value(std::borrow::Cow::Borrowed(s)),
            Err(_) => Decoded::Value(String::from_utf8_lossy(b)),
        },
        ValueRef::Integer(i) => Decoded::Value(i.to_string().into()),
        ValueRef::Real(f) => Decoded::Value(f.to_string().into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_in_every_spelling() {
        for (raw, want) in [
            ("closed", BreakerState::Closed),
            ("OPEN", BreakerState::Open),
            ("half_open", BreakerState::HalfOpen),
            ("half-open", BreakerState::HalfOpen),
            ("HalfOpen", BreakerState::HalfOpen),
            (
                "<pybreaker.CircuitOpenState object at 0x7f3a2c1d0e50>",
                BreakerState::Open,
            ),
            (
                "<pybreaker.CircuitHalfOpenState object at 0x7fc105ed>",
                BreakerState::HalfOpen,
            ),
            (
                "<pybreaker.CircuitClosedState object at 0x7f00deadbeef>",
                BreakerState::Closed,
            ),
        ] {
            assert_eq!(parse_state(raw), Some(want), "{raw}");
        }
        assert_eq!(parse_state("tripped"), None);
    }

    #[test]
    fn recorded_values_the_crawler_writes() {
        for (raw, want) in [
            ("success", "success"),
            ("FAILURE", "failure"),
            ("", "none"),
            ("cache-hit", "cache-hit"),
            ("cache_hit", "cache-hit"),
            ("blocked", "blocked"),
        ] {
            assert_eq!(parse_recorded(raw), Some(want), "{raw}");
        }
        assert_eq!(parse_recorded("maybe"), None);
    }

    #[test]
    fn iso_times() {
        let want = 1_764_152_130_123_456;
        assert_eq!(parse_time_text("2025-11-26T10:15:30.123456Z"), Ok(want));
        assert_eq!(
            parse_time_text("2025-11-26T10:15:30.123456+00:00"),
            Ok(want)
        );
        assert_eq!(
            parse_time_text("2025-11-26T11:15:30.123456+01:00"),
            Ok(want)
        );
        assert_eq!(parse_time_text("2025-11-26 10:15:30.123456"), Ok(want));
        assert_eq!(parse_time_text("1764152130.123456"), Ok(want));
        assert_eq!(parse_time_text("yesterday"), Err(TimeError::Unparsable));
        assert_eq!(parse_time_text(""), Err(TimeError::Null));
        // Milliseconds mistaken for seconds land far in the future: rejected.
        assert_eq!(
            decode_time(ValueRef::Real(1_764_152_130_123.0)),
            Err(TimeError::OutOfRange)
        );
        assert_eq!(
            parse_time_text("1970-01-01T00:00:00Z"),
            Err(TimeError::OutOfRange)
        );
    }

    #[test]
    fn loose_ints_and_bools() {
        assert_eq!(decode_int(ValueRef::Real(503.0)), Decoded::Value(503));
        assert_eq!(decode_int(ValueRef::Text(b" 429 ")), Decoded::Value(429));
        assert_eq!(decode_int(ValueRef::Text(b"abc")), Decoded::Invalid);
        assert_eq!(decode_int(ValueRef::Real(1.5)), Decoded::Invalid);
        assert_eq!(decode_bool(ValueRef::Text(b"TRUE")), Decoded::Value(true));
        assert_eq!(decode_bool(ValueRef::Integer(2)), Decoded::Invalid);
    }
}
