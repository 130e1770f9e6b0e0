//! Sliding-window counts on both sides of a call: the crawler's pyrate-limiter
//! limiters (`ratelimit.RateLimitRegistry`) and a server's quota.
//!
//! The crawler's limiter, as its code runs at commit bbbbd971:
//! - one `Limiter` per (host, role) built from that role's rate strings, each limit
//!   scaled by the AIMD multiplier with `int(limit * multiplier)` over the same interval
//!   (`_get_or_create_limiter`). Nothing calls `tick_aimd`, so the multiplier stays 1.0
//!   and the rates run as written;
//! - rates are parsed by `_parse_rates`, which reads `1/3SECOND` as one per second (the
//!   unit `3SECOND` is unknown and defaults to a second);
//! - `acquire` tries once, then polls every 25 ms until `max_delay_ms` has passed; a
//!   slot found in time is taken (`rate_delay_ms` is the wait), otherwise
//!   `RateLimitExceeded` is raised: tenacity does not retry it, the breaker does not
//!   count it (an exception), and the request leaves no `http_events` row, only a
//!   `rate_events` `block` row;
//! - cache hits never reach the limiter (the transport stack is `CacheTransport ->
//!   RateLimitedTransport`), and HEAD requests skip it unless `count_head`;
//! - every attempt, retries included, goes through it (it is the HTTP transport).
//!
//! Requests wait their turn: a slot is taken first come, first served, so the log of
//! taken slots is in time order.

use std::collections::VecDeque;

use serde::Serialize;

use crate::config::rates::crawler_reading;

/// At most `limit` events in any `window_s` seconds.
#[derive(Debug, Clone)]
struct Rate {
    limit: usize,
    window_s: f64,
}

/// A sliding-window log over one or more rates sharing their events.
#[derive(Debug, Clone)]
pub struct Window {
    rates: Vec<Rate>,
    /// The last `max(limit)` events, oldest first.
    log: VecDeque<f64>,
    keep: usize,
}

impl Window {
    fn new(rates: Vec<Rate>) -> Self {
        let keep = rates.iter().map(|r| r.limit).max().unwrap_or(0);
        Window {
            rates,
            log: VecDeque::with_capacity(keep.min(4096)),
            keep,
        }
    }

    /// The earliest time at or after `t` at which one more event fits every rate;
    /// infinite when a rate allows none.
    pub fn free_at(&self, t: f64) -> f64 {
        let last = self.log.back().copied().unwrap_or(f64::NEG_INFINITY);
        let mut at = t.max(last);
        for r in &self.rates {
            if r.limit == 0 {
                return f64::INFINITY;
            }
            if self.log.len() >= r.limit {
                at = at.max(self.log[self.log.len() - r.limit] + r.window_s);
            }
        }
        at
    }

    /// Records an event at `t` (not before the last one).
    pub fn take(&mut self, t: f64) {
        self.log.push_back(t);
        while self.log.len() > self.keep {
            self.log.pop_front();
        }
    }
}

/// How often `acquire` polls for a free slot.
const POLL_S: f64 = 0.025;

/// One (host, role) limiter of the crawler.
#[derive(Debug, Clone)]
pub struct Limiter {
    window: Window,
    max_delay_s: f64,
    pub count_head: bool,
}

/// What `acquire` did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Acquired {
    /// A slot taken after this wait, seconds.
    After(f64),
    /// `RateLimitExceeded` after waiting `max_delay_ms`.
    Refused(f64),
}

impl Limiter {
    /// The limiter for a role's rate strings (scaled by `multiplier`) and wait; None
    /// when no rate parses (the crawler then sends without limiting).
    pub fn new(
        rates: &[String],
        multiplier: f64,
        max_delay_ms: u64,
        count_head: bool,
    ) -> Option<Self> {
        let rates: Vec<Rate> = rates
            .iter()
            .filter_map(|r| crawler_reading(r))
            .map(|(limit, window_s)| Rate {
                limit: (limit as f64 * multiplier).floor() as usize,
                window_s,
            })
            .collect();
        (!rates.is_empty()).then(|| Limiter {
            window: Window::new(rates),
            max_delay_s: max_delay_ms as f64 / 1000.0,
            count_head,
        })
    }

    pub fn max_delay_s(&self) -> f64 {
        self.max_delay_s
    }

    /// `acquire` at `t`: the first poll that finds a slot, within `max_delay_ms`.
    pub fn acquire(&mut self, t: f64) -> Acquired {
        let free = self.window.free_at(t);
        let wait = if free <= t {
            0.0
        } else {
            ((free - t) / POLL_S - 1e-6).ceil() * POLL_S
        };
        if wait > self.max_delay_s + 1e-9 {
            return Acquired::Refused(self.max_delay_s);
        }
        // A poll lands on or after the slot frees.
        self.window.take(t + wait);
        Acquired::After(wait)
    }
}

/// A server's quota for one role of a host, in ground truth: at most `limit` accepted
/// requests in any `window_s` seconds, counted over the whole fleet; a request over it
/// gets 429 with Retry-After for when a slot frees.
#[derive(Debug, Clone, Serialize)]
pub struct ServerQuota {
    pub role: &'static str,
    pub limit: u64,
    pub window_s: f64,
}

/// The server side of a quota.
#[derive(Debug, Clone)]
pub struct QuotaCounter {
    window: Window,
}

impl QuotaCounter {
    pub fn new(q: &ServerQuota) -> Self {
        QuotaCounter {
            window: Window::new(vec![Rate {
                limit: q.limit as usize,
                window_s: q.window_s,
            }]),
        }
    }

    /// A request at `t`: accepted (and counted), or refused with the whole seconds
    /// until a slot frees (at least 1), as Retry-After.
    pub fn request(&mut self, t: f64) -> Result<(), i64> {
        // The log is kept in time order: a request a little earlier than the last one
        // counted (attempts are processed per host in start order, a limiter wait can
        // reorder them by milliseconds) is counted at the last one's time.
        let free = self.window.free_at(t);
        if free > t.max(self.window.log.back().copied().unwrap_or(t)) {
            return Err(((free - t).ceil() as i64).max(1));
        }
        self.window.take(free);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_limiter_waits_then_refuses() {
        // 2 per second, 100 ms of patience.
        let mut l = Limiter::new(&["2/SECOND".into()], 1.0, 100, false).unwrap();
        assert_eq!(l.acquire(10.0), Acquired::After(0.0));
        assert_eq!(l.acquire(10.5), Acquired::After(0.0));
        // The third in a second waits for the first to leave the window, 50 ms: two
        // polls.
        match l.acquire(10.95) {
            Acquired::After(w) => assert!((w - 0.05).abs() < 1e-9, "{w}"),
            other => panic!("{other:?}"),
        }
        // Half a second to wait: refused after the 100 ms.
        match l.acquire(11.0) {
            Acquired::Refused(w) => assert!((w - 0.1).abs() < 1e-9),
            other => panic!("{other:?}"),
        }
        // 60 ms short of a slot: three polls.
        match l.acquire(11.44) {
            Acquired::After(w) => assert!((w - 0.075).abs() < 1e-9, "{w}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_crawler_misreads_one_per_three_seconds() {
        assert_eq!(crawler_reading("1/3SECOND"), Some((1, 1.0)));
        assert_eq!(crawler_reading("5000/HOUR"), Some((5000, 3600.0)));
        assert_eq!(crawler_reading("ten/SECOND"), None);
        // Both rates bind: 3 a second, 4 a minute.
        let mut l = Limiter::new(&["3/SECOND".into(), "4/MINUTE".into()], 1.0, 0, false).unwrap();
        let taken = (0..10)
            .filter(|i| matches!(l.acquire(f64::from(*i) * 0.1), Acquired::After(_)))
            .count();
        assert_eq!(taken, 3);
        assert!(matches!(l.acquire(30.0), Acquired::After(_)));
        assert!(matches!(l.acquire(31.0), Acquired::Refused(_)));
    }

    #[test]
    fn a_quota_answers_with_the_time_to_a_free_slot() {
        let mut q = QuotaCounter::new(&ServerQuota {
            role: "metadata",
            limit: 2,
            window_s: 60.0,
        });
        assert_eq!(q.request(0.0), Ok(()));
        assert_eq!(q.request(10.0), Ok(()));
        assert_eq!(q.request(20.5), Err(40));
        assert_eq!(q.request(60.5), Ok(()));
    }
}
