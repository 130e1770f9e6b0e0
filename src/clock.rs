//! Time as the tool reads and prints it: `--now` (RFC 3339 or epoch seconds), UTC
//! instants, and the wall clock, read only where no `--now` was given (outputs take
//! their time from the data or from `--now`, so reruns are byte-identical).

use crate::error::InputError;

/// Parses `--now`: RFC 3339, or epoch seconds.
pub fn parse_instant(text: &str) -> Result<f64, InputError> {
    if let Ok(secs) = text.trim().parse::<f64>()
        && secs.is_finite()
    {
        return Ok(secs);
    }
    chrono::DateTime::parse_from_rfc3339(text.trim())
        .map(|d| d.timestamp_micros() as f64 / 1e6)
        .map_err(|e| input_error!("--now {text:?}: expected RFC 3339 or epoch seconds ({e})"))
}

/// The wall clock, used only where no `--now` was given.
pub fn wall_clock_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// An instant (epoch seconds) in RFC 3339 to the second, as the outputs record it.
pub fn format_utc(epoch: f64) -> String {
    chrono::DateTime::from_timestamp_micros((epoch * 1e6).round() as i64)
        .map(|d| d.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|| format!("{epoch}"))
}

/// An instant (epoch µs) to the minute, as the reports print it (`2025-11-25 03:10 UTC`).
pub fn utc_minute(us: i64) -> String {
    chrono::DateTime::from_timestamp_micros(us)
        .map(|d| d.format("%Y-%m-%d %H:%M UTC").to_string())
        .unwrap_or_default()
}

/// `--now` as epoch microseconds.
pub fn parse_now_us(now: Option<&str>) -> Result<Option<i64>, InputError> {
    Ok(now
        .map(parse_instant)
        .transpose()?
        .map(|s| (s * 1e6).round() as i64))
}
