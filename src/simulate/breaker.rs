//! A pybreaker-like circuit breaker: the state machine the crawler runs per host, used by
//! the simulator to decide which calls happen (an open breaker blocks calls, and blocked
//! calls leave no telemetry row).

/// The settings of one breaker.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct BreakerPolicy {
    pub fail_max: u32,
    pub reset_timeout_s: f64,
    pub success_threshold: u32,
    pub trial_calls: u32,
    pub retry_after_cap_s: f64,
}

impl Default for BreakerPolicy {
    fn default() -> Self {
        BreakerPolicy {
            fail_max: 5,
            reset_timeout_s: 60.0,
            success_threshold: 1,
            trial_calls: 1,
            retry_after_cap_s: 900.0,
        }
    }
}

pub use crate::breaker_state::BreakerState as State;

/// A state change, as the crawler logs it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Transition {
    pub at_s: f64,
    pub from: State,
    pub to: State,
}

/// Outcome of asking the breaker for permission to call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Call allowed; the state the call runs in.
    Allowed(State),
    Blocked,
}

#[derive(Debug, Clone)]
pub struct Breaker {
    pub policy: BreakerPolicy,
    state: State,
    consecutive_failures: u32,
    half_open_successes: u32,
    open_until_s: f64,
    /// A Retry-After cooldown: calls are blocked until then without a state change.
    cooldown_until_s: f64,
    /// Half-open probes per role (metadata, landing, artifact): those left and when the
    /// budget was given (`_enforce_half_open_probe_limit`, breakers.py ~683).
    probes: [Option<Probes>; 3],
}

/// A role's half-open probe budget.
#[derive(Debug, Clone, Copy)]
struct Probes {
    remaining: u32,
    given_at_s: f64,
}

impl Breaker {
    pub fn new(policy: BreakerPolicy) -> Self {
        Breaker {
            policy,
            state: State::Closed,
            consecutive_failures: 0,
            half_open_successes: 0,
            open_until_s: f64::NEG_INFINITY,
            cooldown_until_s: f64::NEG_INFINITY,
            probes: [None; 3],
        }
    }

    pub fn state(&self) -> State {
        self.state
    }

    /// pybreaker's `fail_counter`: consecutive failures counted (0 after a success).
    pub fn fail_counter(&self) -> u32 {
        self.consecutive_failures
    }

    /// Asks to call at `now_s` for a role (0..3); an open breaker past its reset timeout
    /// turns half-open, where each role has `trial_calls` probes, given again after
    /// `reset_timeout_s` or by a success of the role (the crawler's registry).
    pub fn admit(
        &mut self,
        now_s: f64,
        role: usize,
        transitions: &mut Vec<Transition>,
    ) -> Admission {
        if now_s < self.cooldown_until_s {
            return Admission::Blocked;
        }
        match self.state {
            State::Open if now_s < self.open_until_s => return Admission::Blocked,
            State::Open => {
                self.set(State::HalfOpen, now_s, transitions);
                self.half_open_successes = 0;
            }
            _ => {}
        }
        if self.state == State::HalfOpen {
            let allowed = self.policy.trial_calls.max(1);
            let reset = self.policy.reset_timeout_s;
            let p = self.probes[role.min(2)]
                .filter(|p| now_s - p.given_at_s <= reset)
                .unwrap_or(Probes {
                    remaining: allowed,
                    given_at_s: now_s,
                });
            if p.remaining == 0 {
                self.probes[role.min(2)] = Some(p);
                return Admission::Blocked;
            }
            self.probes[role.min(2)] = Some(Probes {
                remaining: p.remaining - 1,
                ..p
            });
        }
        Admission::Allowed(self.state)
    }

    /// Records a call's outcome. `retry_after_s` is the server's Retry-After on a
    /// 429/503 failure, honoured up to `retry_after_cap_s`.
    pub fn record(
        &mut self,
        now_s: f64,
        role: usize,
        failure: bool,
        retry_after_s: Option<f64>,
        transitions: &mut Vec<Transition>,
    ) {
        if let Some(ra) = retry_after_s.filter(|_| failure) {
            let until = now_s + ra.min(self.policy.retry_after_cap_s);
            self.cooldown_until_s = self.cooldown_until_s.max(until);
        }
        if !failure {
            self.probes[role.min(2)] = None;
        }
        match (self.state, failure) {
            (State::Closed, true) => {
                self.consecutive_failures += 1;
                if self.consecutive_failures >= self.policy.fail_max {
                    self.trip(now_s, transitions);
                }
            }
            (State::Closed, false) => self.consecutive_failures = 0,
            (State::HalfOpen, true) => self.trip(now_s, transitions),
            (State::HalfOpen, false) => {
                self.half_open_successes += 1;
                if self.half_open_successes >= self.policy.success_threshold {
                    self.consecutive_failures = 0;
                    self.set(State::Closed, now_s, transitions);
                }
            }
            // A call admitted before the breaker opened finished afterwards.
            (State::Open, _) => {}
        }
    }

    fn trip(&mut self, now_s: f64, transitions: &mut Vec<Transition>) {
        self.open_until_s = now_s + self.policy.reset_timeout_s;
        self.set(State::Open, now_s, transitions);
    }

    fn set(&mut self, to: State, now_s: f64, transitions: &mut Vec<Transition>) {
        if self.state != to {
            transitions.push(Transition {
                at_s: now_s,
                from: self.state,
                to,
            });
            self.state = to;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_fail_max_and_closes_after_successes() {
        let mut b = Breaker::new(BreakerPolicy {
            fail_max: 3,
            reset_timeout_s: 10.0,
            success_threshold: 2,
            ..BreakerPolicy::default()
        });
        let mut tr = Vec::new();
        for t in 0..3 {
            assert_eq!(
                b.admit(t as f64, 0, &mut tr),
                Admission::Allowed(State::Closed)
            );
            b.record(t as f64, 0, true, None, &mut tr);
        }
        assert_eq!(b.state(), State::Open);
        assert_eq!(b.admit(5.0, 0, &mut tr), Admission::Blocked);
        assert_eq!(
            b.admit(12.0, 0, &mut tr),
            Admission::Allowed(State::HalfOpen)
        );
        b.record(12.0, 0, false, None, &mut tr);
        assert_eq!(b.state(), State::HalfOpen);
        b.record(13.0, 0, false, None, &mut tr);
        assert_eq!(b.state(), State::Closed);
        let kinds: Vec<_> = tr.iter().map(|t| (t.from, t.to)).collect();
        assert_eq!(
            kinds,
            [
                (State::Closed, State::Open),
                (State::Open, State::HalfOpen),
                (State::HalfOpen, State::Closed)
            ]
        );
    }

    #[test]
    fn half_open_gives_each_role_its_trial_calls_until_a_success_or_the_reset_timeout() {
        let mut b = Breaker::new(BreakerPolicy {
            fail_max: 1,
            reset_timeout_s: 10.0,
            success_threshold: 2,
            trial_calls: 1,
            ..BreakerPolicy::default()
        });
        let mut tr = Vec::new();
        b.record(0.0, 0, true, None, &mut tr);
        let half_open = Admission::Allowed(State::HalfOpen);
        assert_eq!(b.admit(10.0, 0, &mut tr), half_open);
        // The role's one probe is out: another of the same role waits, another role's
        // gets its own.
        assert_eq!(b.admit(10.1, 0, &mut tr), Admission::Blocked);
        assert_eq!(b.admit(10.2, 1, &mut tr), half_open);
        // A success of the role gives its budget back (one success of two: still
        // half-open).
        b.record(10.5, 0, false, None, &mut tr);
        assert_eq!(b.state(), State::HalfOpen);
        assert_eq!(b.admit(10.6, 0, &mut tr), half_open);
        assert_eq!(b.admit(10.7, 1, &mut tr), Admission::Blocked);
        // After the reset timeout the budget is given again.
        assert_eq!(b.admit(20.3, 1, &mut tr), half_open);
    }

    #[test]
    fn retry_after_blocks_without_a_transition_and_is_capped() {
        let mut b = Breaker::new(BreakerPolicy {
            retry_after_cap_s: 30.0,
            ..BreakerPolicy::default()
        });
        let mut tr = Vec::new();
        b.record(0.0, 0, true, Some(600.0), &mut tr);
        assert_eq!(b.admit(29.0, 0, &mut tr), Admission::Blocked);
        assert_eq!(b.admit(30.0, 0, &mut tr), Admission::Allowed(State::Closed));
        assert!(tr.is_empty());
    }
}
