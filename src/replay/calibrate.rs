//! Calibration: the crawler model the night's recorded breakers show.
//!
//! Every field that changes what a breaker counts is searched: breaker and cooldown
//! scope, a success clearing the cooldown, retried attempts counted, the final outcome
//! counted once or twice, a cache hit counted as a success, exceptions counted as
//! failures. Not all 2^k models: the search starts from the configured (documented)
//! model and moves one field at a time while the fit clearly improves ([`descend`],
//! [`clearly_better`]). A field the
//! night cannot show (no cache hits, no exception rows, no retried rows, no cooldowns,
//! one process per host) is not moved: its signature is absent from the calls, so every
//! model agrees on it and the fit cannot tell ([`Signs`]).
//!
//! The fit of a model ([`Fit`]) replays every host's recorded policy on the same calls
//! (calls carry what they are, whatever the model: `Call::kind`) and compares with the
//! recorded transitions. An open the model cannot reproduce is a miss; an open it reaches
//! only by inventing failures that no row shows (requests that raised and left no row,
//! [`super::traffic::hidden_failures`]) costs those failures: a model that counts too
//! little explains every open by invention, and is charged for it. The score weighs a
//! missed open as the host's `fail_max` failures.
//!
//! Fits are sums over hosts, so host groups and shards add theirs; the fleet's choice is
//! the same descent over the summed fits.

use serde::{Deserialize, Serialize};

use crate::crawler::{CrawlerModel, Scope};

/// How well a model explains the recorded breakers on some hosts (sums over hosts).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fit {
    /// |replayed - recorded| opens, per breaker (per host under a fleet-wide one),
    /// summed.
    pub open_miss: u64,
    /// Failures no row shows that the recorded opens need under the model.
    pub inferred: u64,
    /// What the search minimises: each host's open miss times its `fail_max` (an open
    /// the model cannot place is that many failures unaccounted for), plus `inferred`.
    pub score: u64,
}

impl std::ops::AddAssign for Fit {
    fn add_assign(&mut self, o: Fit) {
        self.open_miss = self.open_miss.saturating_add(o.open_miss);
        self.inferred = self.inferred.saturating_add(o.inferred);
        self.score = self.score.saturating_add(o.score);
    }
}

/// A model field the calibration moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    BreakerScope,
    CooldownScope,
    SuccessClearsCooldown,
    CountRetries,
    FinalOutcomeCounted,
    CacheHitIsSuccess,
    ExceptionsAreFailures,
}

impl Field {
    pub const ALL: [Field; 7] = [
        Field::FinalOutcomeCounted,
        Field::CountRetries,
        Field::CacheHitIsSuccess,
        Field::ExceptionsAreFailures,
        Field::BreakerScope,
        Field::CooldownScope,
        Field::SuccessClearsCooldown,
    ];

    /// Its key in the `crawler:` section.
    pub fn key(self) -> &'static str {
        match self {
            Field::BreakerScope => "breaker_scope",
            Field::CooldownScope => "cooldown_scope",
            Field::SuccessClearsCooldown => "success_clears_cooldown",
            Field::CountRetries => "count_retries",
            Field::FinalOutcomeCounted => "final_outcome_counted",
            Field::CacheHitIsSuccess => "cache_hit_is_success",
            Field::ExceptionsAreFailures => "exceptions_are_failures",
        }
    }

    /// Its value in `m`, as the settings file writes it.
    pub fn value(self, m: &CrawlerModel) -> String {
        match self {
            Field::BreakerScope => m.breaker_scope.as_str().to_owned(),
            Field::CooldownScope => m.cooldown_scope.as_str().to_owned(),
            Field::SuccessClearsCooldown => m.success_clears_cooldown.to_string(),
            Field::CountRetries => m.count_retries.to_string(),
            Field::FinalOutcomeCounted => m.final_outcome_counted.to_string(),
            Field::CacheHitIsSuccess => m.cache_hit_is_success.to_string(),
            Field::ExceptionsAreFailures => m.exceptions_are_failures.to_string(),
        }
    }

    /// The value an identification's `yes` stands for, as [`Field::value`] writes it:
    /// the final outcome twice or once, a flag's own value (no scope is identified).
    pub fn value_of(self, yes: bool) -> String {
        match self {
            Field::FinalOutcomeCounted => if yes { "2" } else { "1" }.to_owned(),
            _ => yes.to_string(),
        }
    }

    /// `m` with this field moved to its other value (the final outcome: once <-> twice).
    pub fn moved(self, m: &CrawlerModel) -> CrawlerModel {
        let other = |s: Scope| match s {
            Scope::Process => Scope::Fleet,
            Scope::Fleet => Scope::Process,
        };
        let mut out = m.clone();
        match self {
            Field::BreakerScope => out.breaker_scope = other(m.breaker_scope),
            Field::CooldownScope => out.cooldown_scope = other(m.cooldown_scope),
            Field::SuccessClearsCooldown => {
                out.success_clears_cooldown = !m.success_clears_cooldown;
            }
            Field::CountRetries => out.count_retries = !m.count_retries,
            Field::FinalOutcomeCounted => {
                out.final_outcome_counted = if m.final_outcome_counted >= 2 { 1 } else { 2 };
            }
            Field::CacheHitIsSuccess => out.cache_hit_is_success = !m.cache_hit_is_success,
            Field::ExceptionsAreFailures => {
                out.exceptions_are_failures = !m.exceptions_are_failures;
            }
        }
        out
    }

    /// `m` with this field as in `base`.
    fn reset(self, m: &CrawlerModel, base: &CrawlerModel) -> CrawlerModel {
        if self.value(m) == self.value(base) {
            m.clone()
        } else {
            self.moved(m)
        }
    }
}

/// What the night's calls hold that could show each field: without its signature a
/// field changes no replay, and the night cannot tell its value. Sums over hosts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signs {
    /// Recorded transitions to open.
    pub opens: u64,
    /// Rows whose final status failed.
    pub failed_rows: u64,
    /// Rows with failed retried attempts.
    pub retried_rows: u64,
    pub cache_hits: u64,
    /// Rows of requests that raised (no status, an error).
    pub exceptions: u64,
    /// Failed rows with a Retry-After, and failures under a rolling-window rule: what
    /// sets a cooldown.
    pub cooldown_failures: u64,
    /// Hosts with more than one breaker instance (process).
    pub shared_hosts: u64,
    /// Outcomes the breakers logged themselves: their instances are replayed from them,
    /// whatever the rows stand for.
    #[serde(default)]
    pub logged: u64,
    /// What the rows' own `breaker_recorded` column says.
    #[serde(default)]
    pub said: Said,
    /// What the rows show of successes during cooldowns.
    #[serde(default)]
    pub cooldowns: CooldownSign,
    /// What the runs the breakers did not open on show of the final outcome's repeat.
    #[serde(default)]
    pub repeat: RepeatSign,
}

/// What the rows show of the final outcome's repeat: the runs of failures a recorded
/// breaker did not open on (a success came first, or the open came later) that the
/// model counts past `fail_max`, with the final outcome counted once and twice
/// ([`super::traffic::overcounted_runs`]). Every success has a row (a request that
/// raised is never one), so the failures the rows show since the last success are at
/// most what the breaker counted: a run that only the repeat takes past `fail_max`, on
/// which the breaker stayed closed, says the crawler does not repeat it. Runs past it
/// under either count are the reconstruction's noise (the attempts of concurrent
/// requests are placed by estimate). The same noise grows with the fleet's traffic: on
/// a busy fleet of four machines whose crawler repeats the final outcome, 6, 1 and 7
/// runs a night were past `fail_max` only with the repeat, as many as on the
/// calibration's nights of crawlers that do not (3 to 6). The opens the repeat alone
/// explains (the breaker opened as the run counted twice reached `fail_max`, where
/// counted once it did not) are the evidence the other way: on those busy nights 1,311,
/// 209 and 11; on the calibration's nights of crawlers that count it once 0 or 1, and
/// on the busy fleet under such a crawler 85, against 1,764 runs. Their absence says
/// nothing: failures that no row shows explain any open. Sums over hosts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepeatSign {
    pub past_once: u64,
    pub past_twice: u64,
    #[serde(default)]
    pub opened_by_repeat: u64,
}

impl std::ops::AddAssign for RepeatSign {
    fn add_assign(&mut self, o: RepeatSign) {
        self.past_once += o.past_once;
        self.past_twice += o.past_twice;
        self.opened_by_repeat += o.opened_by_repeat;
    }
}

/// Runs that only the repeat takes past `fail_max` needed before they identify the
/// final outcome as counted once; they must also be at least as many as the runs past
/// it either way (the noise), and more than the opens the repeat alone explains. On
/// the simulated nights of seeds 7 and 11 whose crawlers repeat it, at most one run a
/// night was past `fail_max` only with the repeat.
pub const REPEAT_MIN_RUNS: u64 = 3;

impl RepeatSign {
    /// The runs only the repeat takes past `fail_max`.
    pub fn only_repeated(&self) -> u64 {
        self.past_twice.saturating_sub(self.past_once)
    }

    /// That the final outcome is counted once (`false`: not twice), where the runs show
    /// it, with the runs only the repeat takes past `fail_max` and those past it when
    /// counted twice.
    pub fn identifies(&self) -> Option<(bool, u64, u64)> {
        let only = self.only_repeated();
        (only >= REPEAT_MIN_RUNS && only >= self.past_once && only > self.opened_by_repeat)
            .then_some((false, only, self.past_twice))
    }
}

/// What the rows show of a success clearing a cooldown, per process of a host whose
/// breaker fills `breaker_recorded`: the cooldowns a row's Retry-After set (their union),
/// those in which a request answered with a success, and the requests that began in a
/// cooldown (a row's time less its elapsed time), after such a success or with none
/// before them. A cooldown denies every request until it ends, so a request that began
/// in one after a success says the success cleared it. No such request is weaker
/// evidence the other way (an open breaker, a later Retry-After, another process's
/// cooldown also hold requests back), so it identifies nothing. Sums over hosts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CooldownSign {
    pub with_success: u64,
    pub starts_after_success: u64,
    pub starts_without_success: u64,
}

impl std::ops::AddAssign for CooldownSign {
    fn add_assign(&mut self, o: CooldownSign) {
        self.with_success += o.with_success;
        self.starts_after_success += o.starts_after_success;
        self.starts_without_success += o.starts_without_success;
    }
}

impl CooldownSign {
    /// That a success clears the cooldown, where the rows show it: at least
    /// [`SAID_MIN_ROWS`] requests began in cooldowns after a success in them, and at
    /// most a tenth as many without one before them.
    pub fn identifies(&self) -> Option<(bool, u64, u64)> {
        let (after, without) = (self.starts_after_success, self.starts_without_success);
        (after >= SAID_MIN_ROWS && without * 10 <= after).then_some((true, after, after + without))
    }
}

/// What the rows' `breaker_recorded` column says the breaker did with each kind of row:
/// the crawler's own word on the fields it names (a cache hit counted or not, an
/// exception counted), read only on hosts where the crawler fills the column. Sums over
/// hosts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Said {
    /// Rows of responses from the network, and those whose column says `success` or
    /// `failure` (a crawler that fills it).
    pub responses: u64,
    pub responses_said: u64,
    /// Cache hits, and those recorded as a success or as untouched (`none`,
    /// `cache-hit`: the crawler's update after the retry loop did not count them).
    #[serde(default)]
    pub cache_rows: u64,
    pub cache_success: u64,
    pub cache_untouched: u64,
    /// Rows of requests that raised, and those recorded as a failure or as `none`.
    #[serde(default)]
    pub exception_rows: u64,
    pub exceptions_failure: u64,
    pub exceptions_none: u64,
}

impl std::ops::AddAssign for Said {
    fn add_assign(&mut self, o: Said) {
        self.responses += o.responses;
        self.responses_said += o.responses_said;
        self.cache_rows += o.cache_rows;
        self.cache_success += o.cache_success;
        self.cache_untouched += o.cache_untouched;
        self.exception_rows += o.exception_rows;
        self.exceptions_failure += o.exceptions_failure;
        self.exceptions_none += o.exceptions_none;
    }
}

/// Rows of a kind (and network rows) the column must speak for before its word
/// identifies a field.
pub const SAID_MIN_ROWS: u64 = 10;

/// The share of the network rows that must fill the column for a host's word to count,
/// and of a kind's rows that must say something.
pub const SAID_FILLED: f64 = 0.9;

/// The share of a kind's rows that must agree. The column is the crawler's own record,
/// the same for every row of a kind: a split word is a mixed fleet or a crawler that
/// counts some exceptions and not others, and then the fit decides.
pub const SAID_AGREEMENT: f64 = 0.99;

impl Said {
    /// Whether the crawler fills the column: nine in ten network rows say what the
    /// breaker recorded (a host without a breaker writes `none`).
    pub fn filled(&self) -> bool {
        self.responses >= SAID_MIN_ROWS
            && self.responses_said as f64 >= SAID_FILLED * self.responses as f64
    }

    /// The field's value the column identifies, with the rows that say so and the rows
    /// it speaks for; `None` where it names no such field, is not filled, speaks for too
    /// few rows, or is split. A request that raised is counted inside the retry loop,
    /// and the update after the loop (which writes the column) never runs for it: a
    /// `none` there does not say that its attempts went uncounted, so only `failure`
    /// identifies how exceptions count.
    pub fn identifies(&self, f: Field) -> Option<(bool, u64, u64)> {
        let (yes, no, rows, yes_only) = match f {
            Field::CacheHitIsSuccess => (
                self.cache_success,
                self.cache_untouched,
                self.cache_rows,
                false,
            ),
            Field::ExceptionsAreFailures => (
                self.exceptions_failure,
                self.exceptions_none,
                self.exception_rows,
                true,
            ),
            _ => return None,
        };
        let n = yes + no;
        if !self.filled() || n < SAID_MIN_ROWS || (n as f64) < SAID_FILLED * rows as f64 {
            return None;
        }
        let agree = |k: u64| k as f64 >= SAID_AGREEMENT * n as f64;
        if agree(yes) {
            Some((true, yes, n))
        } else if agree(no) && !yes_only {
            Some((false, no, n))
        } else {
            None
        }
    }
}

impl std::ops::AddAssign for Signs {
    fn add_assign(&mut self, o: Signs) {
        self.opens += o.opens;
        self.failed_rows += o.failed_rows;
        self.retried_rows += o.retried_rows;
        self.cache_hits += o.cache_hits;
        self.exceptions += o.exceptions;
        self.cooldown_failures += o.cooldown_failures;
        self.shared_hosts += o.shared_hosts;
        self.logged += o.logged;
        self.said += o.said;
        self.cooldowns += o.cooldowns;
        self.repeat += o.repeat;
    }
}

impl Signs {
    /// Whether the night holds the field's signature.
    pub fn shows(&self, f: Field) -> bool {
        match f {
            Field::BreakerScope => self.shared_hosts > 0,
            Field::CooldownScope => self.shared_hosts > 0 && self.cooldown_failures > 0,
            Field::SuccessClearsCooldown => self.cooldown_failures > 0,
            Field::CountRetries => self.retried_rows > 0,
            Field::FinalOutcomeCounted => self.failed_rows + self.exceptions > 0,
            Field::CacheHitIsSuccess => self.cache_hits > 0,
            Field::ExceptionsAreFailures => self.exceptions > 0,
        }
    }

    /// What the night held for the field, in words.
    pub fn describe(&self, f: Field) -> String {
        let shown = self.shows(f);
        let what = match f {
            Field::BreakerScope => {
                format!("{} hosts called from several processes", self.shared_hosts)
            }
            Field::CooldownScope => format!(
                "{} failures that set a cooldown, on {} hosts called from several processes",
                self.cooldown_failures, self.shared_hosts
            ),
            Field::SuccessClearsCooldown => format!(
                "{} failures that set a cooldown, {} cooldowns with a success in them",
                self.cooldown_failures, self.cooldowns.with_success
            ),
            Field::CountRetries => {
                format!("{} rows with failed retried attempts", self.retried_rows)
            }
            Field::FinalOutcomeCounted => format!(
                "{} failed rows and {} rows of requests that raised",
                self.failed_rows, self.exceptions
            ),
            Field::CacheHitIsSuccess => format!("{} cache hits", self.cache_hits),
            Field::ExceptionsAreFailures => {
                format!("{} rows of requests that raised", self.exceptions)
            }
        };
        match (shown, self.logged) {
            (true, _) => match (f, self.identified(f)) {
                (Field::FinalOutcomeCounted, None)
                    if self.repeat.only_repeated() > 0 || self.repeat.opened_by_repeat > 0 =>
                {
                    format!(
                        "{what}; runs of failures that only the final outcome's repeat takes past fail_max, ended without the breaker opening: {}; opens where the repeat alone took a run to fail_max: {}; the runs do not show it",
                        self.repeat.only_repeated(),
                        self.repeat.opened_by_repeat
                    )
                }
                (_, None) => what,
                (Field::FinalOutcomeCounted, Some((_, k, n))) => format!(
                    "{what}; {k} runs of failures that only the final outcome's repeat takes past fail_max ended without the breaker opening ({n} past it counted twice, {} counted once; opens where the repeat alone took a run to fail_max: {}): the crawler counts the final outcome once",
                    n - k,
                    self.repeat.opened_by_repeat
                ),
                (Field::SuccessClearsCooldown, Some((_, k, n))) => format!(
                    "{what}; {k} of the {n} requests that began in a cooldown came after a success in it: the success cleared it"
                ),
                (Field::CacheHitIsSuccess, Some((v, k, n))) => format!(
                    "{what}; the rows' breaker_recorded says {k} of {n} {}",
                    if v {
                        "were counted as a success"
                    } else {
                        "left the breaker untouched"
                    }
                ),
                (_, Some((v, k, n))) => format!(
                    "{what}; the rows' breaker_recorded says {k} of {n} {}",
                    if v {
                        "were counted as a failure"
                    } else {
                        "were not counted"
                    }
                ),
            },
            (false, 0) => format!("{what}: the night cannot show it"),
            (false, n) => format!(
                "{what}: the night cannot show it (the breakers logged {n} outcomes themselves, and their replay reads those, not the rows)"
            ),
        }
    }

    /// Where the rows' `breaker_recorded` identifies the field: its value, the rows that
    /// say so, and the rows the column speaks for.
    pub fn identified(&self, f: Field) -> Option<(bool, u64, u64)> {
        match f {
            Field::SuccessClearsCooldown if self.shows(f) => self.cooldowns.identifies(),
            Field::FinalOutcomeCounted if self.shows(f) => self.repeat.identifies(),
            _ => self.said.identifies(f),
        }
    }

    /// Whether the descent keeps an identified field: the rows' own record of what the
    /// crawler counted (`breaker_recorded`, the requests begun in cooldowns) is stronger
    /// evidence than the fit's reconstruction. The final outcome's repeat is read from
    /// that reconstruction (the runs past `fail_max`), so the descent starts from it and
    /// may still move it where the fit is clearly better.
    pub fn locks(&self, f: Field) -> bool {
        f != Field::FinalOutcomeCounted && self.identified(f).is_some()
    }

    /// `base` with every field the rows identify set as they say: where the descent
    /// starts ([`Signs::locks`] says which it does not move).
    pub fn start(&self, base: &CrawlerModel) -> CrawlerModel {
        Field::ALL
            .iter()
            .fold(base.clone(), |m, f| match self.identified(*f) {
                Some((v, _, _)) if f.value(&m) != f.value_of(v) => f.moved(&m),
                _ => m,
            })
    }

    /// `m` with every field the night cannot show as in `base`: every such model has
    /// the same fit.
    fn canonical(&self, m: &CrawlerModel, base: &CrawlerModel) -> CrawlerModel {
        Field::ALL
            .iter()
            .filter(|f| !self.shows(**f))
            .fold(m.clone(), |m, f| f.reset(&m, base))
    }
}

/// The descent: from `base` with the fields the rows identify ([`Signs::start`]), move
/// the one field (among the others `signs` shows) whose move lowers the score most,
/// while that move is [`clearly_better`]. A field the rows' own record identifies is
/// not moved ([`Signs::locks`]): the fit's reconstruction (estimated attempts, inferred
/// failures) is weaker evidence than the crawler's record of what it counted. `fit_of` gives a model's fit,
/// or `None` when it is unknown (such a move is not taken); `base` is always asked, so
/// its fit can be reported. Returns the model reached, its fit and the fields moved.
pub fn descend(
    base: &CrawlerModel,
    signs: &Signs,
    mut fit_of: impl FnMut(&CrawlerModel) -> Option<Fit>,
) -> Option<(CrawlerModel, Fit, Vec<Field>)> {
    let base_fit = fit_of(base);
    let mut current = signs.start(base);
    let mut best = if current == *base {
        base_fit?
    } else {
        fit_of(&current)?
    };
    let mut path = Vec::new();
    // Each round fixes one more field: at most every field once.
    for _ in 0..Field::ALL.len() {
        let mut step: Option<(Field, CrawlerModel, Fit)> = None;
        for f in Field::ALL
            .iter()
            .filter(|f| signs.shows(**f) && !signs.locks(**f) && !path.contains(*f))
        {
            let candidate = f.moved(&current);
            if let Some(fit) = fit_of(&candidate)
                && fit.score < step.as_ref().map_or(best.score, |s| s.2.score)
            {
                step = Some((*f, candidate, fit));
            }
        }
        let Some((f, m, fit)) = step else { break };
        if !clearly_better(fit.score, best.score) {
            break;
        }
        path.push(f);
        current = m;
        best = fit;
    }
    // The other value of each locked field, for the findings: whether the recorded
    // opens agree with the rows' word.
    for f in Field::ALL
        .iter()
        .filter(|f| signs.shows(**f) && signs.locks(**f))
    {
        let _ = fit_of(&f.moved(&current));
    }
    Some((current, best, path))
}

/// Whether a score clearly beats the current one: by more than twice the current
/// one's square root. The score counts misses and unseen failures, which vary about
/// that much between nights of one crawler (the rows only approximate the attempts: a
/// request's retried attempts are spread over its elapsed time, their statuses
/// estimated), so a smaller gain is as likely the reconstruction's noise as the
/// crawler's accounting.
pub fn clearly_better(score: u64, current: u64) -> bool {
    score < current && (current - score) as f64 > noise(current)
}

/// How far a score varies by the reconstruction's noise alone (see [`clearly_better`]).
fn noise(score: u64) -> f64 {
    2.0 * (score as f64).sqrt()
}

/// The fits a descent over one set of hosts computed, with what those hosts show.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Evaluated {
    pub signs: Signs,
    pub fits: Vec<(CrawlerModel, Fit)>,
}

impl Evaluated {
    /// The descent on one group's hosts, which show `signs`, every fit it computed
    /// kept; `fit_of` replays a model on them (`Traffic::fit`).
    pub fn search(
        signs: Signs,
        base: &CrawlerModel,
        mut fit_of: impl FnMut(&CrawlerModel) -> Fit,
    ) -> Evaluated {
        let mut e = Evaluated {
            signs,
            fits: Vec::new(),
        };
        descend(base, &signs, |m| {
            Some(e.fit_or_compute(base, m, &mut fit_of))
        });
        e
    }

    /// The fit of `m` on these hosts, when known (a field these hosts cannot show
    /// changes nothing).
    pub fn get(&self, m: &CrawlerModel, base: &CrawlerModel) -> Option<Fit> {
        let m = self.signs.canonical(m, base);
        self.fits.iter().find(|(k, _)| *k == m).map(|(_, f)| *f)
    }

    /// The fit of `m`, from `fit_of` (a replay on these hosts) when not known yet.
    pub fn fit_or_compute(
        &mut self,
        base: &CrawlerModel,
        m: &CrawlerModel,
        fit_of: impl FnOnce(&CrawlerModel) -> Fit,
    ) -> Fit {
        if let Some(f) = self.get(m, base) {
            return f;
        }
        let m = self.signs.canonical(m, base);
        let f = fit_of(&m);
        self.fits.push((m, f));
        f
    }
}

/// The fleet's calibration from its parts (host groups, or shards).
#[derive(Debug, Clone, PartialEq)]
pub struct Calibration {
    pub base: CrawlerModel,
    pub signs: Signs,
    pub parts: Vec<Evaluated>,
}

/// What the calibration chose.
#[derive(Debug, Clone, PartialEq)]
pub struct Choice {
    pub model: CrawlerModel,
    pub fit: Fit,
    pub base_fit: Fit,
    /// The fields the rows' own word set (where the descent started).
    pub identified: Vec<Field>,
    /// The fields moved, in the order the descent moved them.
    pub path: Vec<Field>,
}

impl Calibration {
    pub fn new(base: &CrawlerModel, parts: Vec<Evaluated>) -> Calibration {
        let mut signs = Signs::default();
        for p in &parts {
            signs += p.signs;
        }
        Calibration {
            base: base.clone(),
            signs,
            parts,
        }
    }

    /// The fleet's fit of `m`: the sum of the parts', when every part knows it.
    pub fn fit(&self, m: &CrawlerModel) -> Option<Fit> {
        let mut total = Fit::default();
        for p in &self.parts {
            total += p.get(m, &self.base)?;
        }
        Some(total)
    }

    /// The parts as one: every model each part knows, with the summed fits (a shard's
    /// record, for the merge to add to the other shards').
    pub fn summed(&self) -> Evaluated {
        let mut fits: Vec<(CrawlerModel, Fit)> = Vec::new();
        for p in &self.parts {
            for (m, _) in &p.fits {
                let m = self.signs.canonical(m, &self.base);
                if fits.iter().any(|(k, _)| *k == m) {
                    continue;
                }
                if let Some(f) = self.fit(&m) {
                    fits.push((m, f));
                }
            }
        }
        Evaluated {
            signs: self.signs,
            fits,
        }
    }

    /// The models the fleet's descent needs and some part does not know yet, per part.
    pub fn missing(&self) -> Vec<(usize, CrawlerModel)> {
        let mut asked = Vec::new();
        descend(&self.base, &self.signs, |m| {
            asked.push(m.clone());
            self.fit(m)
        });
        let mut out = Vec::new();
        for m in asked {
            for (k, p) in self.parts.iter().enumerate() {
                if p.get(&m, &self.base).is_none() {
                    let c = p.signs.canonical(&m, &self.base);
                    if !out.contains(&(k, c.clone())) {
                        out.push((k, c));
                    }
                }
            }
        }
        out
    }

    /// The fleet's descent over the summed fits.
    pub fn choose(&self) -> Choice {
        let base_fit = self.fit(&self.base).unwrap_or_default();
        let start = self.signs.start(&self.base);
        let identified: Vec<Field> = Field::ALL
            .into_iter()
            .filter(|f| f.value(&start) != f.value(&self.base))
            .collect();
        match descend(&self.base, &self.signs, |m| self.fit(m)) {
            Some((model, fit, path)) => Choice {
                model,
                fit,
                base_fit,
                identified,
                path,
            },
            None => Choice {
                model: self.base.clone(),
                fit: base_fit,
                base_fit,
                identified: Vec::new(),
                path: Vec::new(),
            },
        }
    }

    /// Per field: what the night held for it, the value chosen, and the fit with that
    /// field moved back (or away) from the chosen model, when known.
    pub fn findings(&self, choice: &Choice) -> Vec<Finding> {
        Field::ALL
            .iter()
            .map(|f| {
                let other = f.moved(&choice.model);
                let other_fit = if self.signs.shows(*f) {
                    self.fit(&other)
                } else {
                    None
                };
                Finding {
                    field: f.key().to_owned(),
                    start: f.value(&self.base),
                    chosen: f.value(&choice.model),
                    night: self.signs.describe(*f),
                    // A field the rows do not identify, whose other value ties with
                    // the chosen one, the night did not show either (a cooldown no
                    // success fell in says nothing of what one does).
                    shown: self.signs.shows(*f)
                        && (self.signs.identified(*f).is_some() || other_fit != Some(choice.fit)),
                    fit: choice.fit,
                    other: f.value(&other),
                    other_fit,
                }
            })
            .collect()
    }
}

/// What the calibration found for one field (metrics/crawler_model.yaml, the report).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Finding {
    pub field: String,
    /// The value the search started from (the settings' model).
    pub start: String,
    pub chosen: String,
    /// What the night held that could show it.
    pub night: String,
    /// Whether it could.
    pub shown: bool,
    /// The chosen model's fit.
    pub fit: Fit,
    /// The field's other value, and the fit with it (the rest as chosen), when computed.
    pub other: String,
    pub other_fit: Option<Fit>,
}

impl Finding {
    /// One line: the value, and why.
    pub fn describe(&self) -> String {
        let moved = if self.chosen == self.start {
            String::new()
        } else {
            format!(" (moved from {})", self.start)
        };
        let evidence = match (&self.other_fit, self.shown) {
            (Some(o), false) if *o == self.fit => format!(
                "{}; {} = {} fits it exactly as well: the night cannot tell the two apart",
                self.night, self.field, self.other
            ),
            (_, false) => self.night.clone(),
            (Some(o), true) => format!(
                "{}; {} = {} misses {} opens and needs {} unseen failures, against {} and {}{}",
                self.night,
                self.field,
                self.other,
                o.open_miss,
                o.inferred,
                self.fit.open_miss,
                self.fit.inferred,
                self.undecided(o)
            ),
            (None, true) => format!(
                "{}; {} = {} not replayed",
                self.night, self.field, self.other
            ),
        };
        format!("{}{moved}: {evidence}", self.chosen)
    }

    /// Where the other value fits as well or a little better: the night could not
    /// tell them apart, or not beyond the noise of its reconstruction
    /// ([`clearly_better`]), so the value chosen stands for lack of evidence.
    fn undecided(&self, o: &Fit) -> String {
        if o.score == self.fit.score {
            "; the same fit: the night cannot tell the two apart".to_owned()
        } else if o.score < self.fit.score {
            format!(
                "; {} fits better by {}, within the night's noise ({:.0}): not evidence enough to choose it",
                self.other,
                self.fit.score - o.score,
                noise(self.fit.score)
            )
        } else {
            String::new()
        }
    }
}

/// How the model was chosen when the settings fix it.
pub const FIXED_MODEL: &str = "fixed by the settings file (crawler:)";

/// How a shard job chose its model under `crawler: auto`.
pub const SHARD_MODEL: &str = "a shard counts by the model the fleet's calibration chose the night before (the previous patch file's; the documented one on the first night); the merge calibrates the fleet";

/// How `crawler: auto` chose: the settings' model (`kept`) or another one, with the fits.
pub fn calibration_text(kept: bool, choice: &Choice) -> String {
    let (f, b) = (choice.fit, choice.base_fit);
    if kept {
        format!(
            "the documented model explains the recorded opens best (it misses {} opens and needs {} failures no row shows)",
            b.open_miss, b.inferred
        )
    } else {
        let keys = |fs: &[Field]| fs.iter().map(|f| f.key()).collect::<Vec<_>>().join(", ");
        // What identified them: the column, or the requests begun in cooldowns.
        let said: Vec<Field> = choice
            .identified
            .iter()
            .copied()
            .filter(|f| matches!(f, Field::CacheHitIsSuccess | Field::ExceptionsAreFailures))
            .collect();
        let mut parts = Vec::new();
        if !said.is_empty() {
            parts.push(format!(
                "{} as the rows' breaker_recorded says",
                keys(&said)
            ));
        }
        if choice.identified.contains(&Field::FinalOutcomeCounted) {
            parts.push(format!(
                "{} as the runs the breakers did not open on show",
                Field::FinalOutcomeCounted.key()
            ));
        }
        if choice.identified.contains(&Field::SuccessClearsCooldown) {
            parts.push(format!(
                "{} as the requests begun in cooldowns show",
                Field::SuccessClearsCooldown.key()
            ));
        }
        if !choice.path.is_empty() {
            parts.push(format!("{} moved", keys(&choice.path)));
        }
        let how = parts.join("; ");
        format!(
            "calibrated ({how}): this model misses the recorded opens by {} in total and needs {} failures no row shows; the documented one misses {} and needs {}",
            f.open_miss, f.inferred, b.open_miss, b.inferred
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fit(score: u64) -> Fit {
        Fit {
            open_miss: score,
            inferred: 0,
            score,
        }
    }

    #[test]
    fn the_descent_moves_one_field_at_a_time_while_the_score_falls() {
        let base = CrawlerModel::default();
        let signs = Signs {
            failed_rows: 1,
            cache_hits: 1,
            exceptions: 1,
            ..Signs::default()
        };
        // The truth: cache hits uncounted, exceptions failures, the final outcome once.
        let truth = Field::FinalOutcomeCounted
            .moved(&Field::ExceptionsAreFailures.moved(&Field::CacheHitIsSuccess.moved(&base)));
        let distance = |m: &CrawlerModel| {
            Field::ALL
                .iter()
                .filter(|f| f.value(m) != f.value(&truth))
                .count() as u64
        };
        let mut asked = 0;
        let (model, f, path) = descend(&base, &signs, |m| {
            asked += 1;
            Some(fit(distance(m) * 100))
        })
        .unwrap();
        assert_eq!(model, truth);
        assert_eq!(f.score, 0);
        assert_eq!(path.len(), 3);
        // Three fields shown: 1 + 3 + 2 + 1 fits, not 2^3 (the scopes, retries and
        // cooldowns are not shown, so never moved).
        assert_eq!(asked, 7);
        // A gain within the reconstruction's noise moves nothing: 1000 -> 950 (less
        // than 2 x sqrt(1000) = 63).
        let (model, _, path) =
            descend(&base, &signs, |m| Some(fit(950 + 50 * distance(m) / 3))).unwrap();
        assert_eq!((model, path.len()), (base.clone(), 0));
        assert!(clearly_better(930, 1000) && !clearly_better(940, 1000));
        // Nothing shown: the base stays.
        let (model, _, path) =
            descend(&base, &Signs::default(), |m| Some(fit(distance(m)))).unwrap();
        assert_eq!((model, path.len()), (base.clone(), 0));
    }

    #[test]
    fn fields_a_part_cannot_show_share_its_fits_and_parts_sum() {
        let base = CrawlerModel::default();
        let cache_only = Signs {
            cache_hits: 3,
            ..Signs::default()
        };
        let moved = Field::CacheHitIsSuccess.moved(&base);
        let part = |signs: Signs, a: u64, b: u64| Evaluated {
            signs,
            fits: vec![(base.clone(), fit(a)), (moved.clone(), fit(b))],
        };
        let with_final = Signs {
            failed_rows: 2,
            cache_hits: 1,
            ..Signs::default()
        };
        let cal = Calibration::new(&base, vec![part(cache_only, 5, 1), part(with_final, 4, 1)]);
        // The first part cannot show the final outcome: its fit under a model that
        // moves it is its base fit.
        let final_once = Field::FinalOutcomeCounted.moved(&base);
        assert_eq!(cal.parts[0].get(&final_once, &base), Some(fit(5)));
        assert_eq!(cal.parts[1].get(&final_once, &base), None);
        assert_eq!(cal.fit(&moved), Some(fit(2)));
        // The fleet's descent needs the second part's final-outcome moves.
        let missing = cal.missing();
        assert!(missing.contains(&(1, final_once.clone())), "{missing:?}");
        assert!(missing.iter().all(|(k, _)| *k == 1));
        // Unknown moves are not taken: the cache field alone.
        let choice = cal.choose();
        assert_eq!(
            (choice.model, choice.fit.score, choice.base_fit.score),
            (moved, 2, 9)
        );
    }

    #[test]
    fn a_finding_says_when_the_night_cannot_tell_the_values_apart() {
        let finding = |other: Fit| Finding {
            field: "success_clears_cooldown".into(),
            start: "true".into(),
            chosen: "true".into(),
            night: "19 failures that set a cooldown".into(),
            shown: true,
            fit: Fit {
                open_miss: 8,
                inferred: 694,
                score: 726,
            },
            other: "false".into(),
            other_fit: Some(other),
        };
        let same = finding(Fit {
            open_miss: 8,
            inferred: 694,
            score: 726,
        });
        assert!(
            same.describe()
                .ends_with("the same fit: the night cannot tell the two apart"),
            "{}",
            same.describe()
        );
        // 50 better, under twice the square root of 726 (54): not chosen, and said so.
        let close = finding(Fit {
            open_miss: 4,
            inferred: 672,
            score: 676,
        });
        assert!(!clearly_better(676, 726));
        assert!(
            close.describe().ends_with(
                "false fits better by 50, within the night's noise (54): not evidence enough to choose it"
            ),
            "{}",
            close.describe()
        );
        // A worse fit needs no word.
        let worse = finding(Fit {
            open_miss: 30,
            inferred: 700,
            score: 790,
        });
        assert!(
            worse.describe().ends_with("against 8 and 694"),
            "{}",
            worse.describe()
        );
    }

    #[test]
    fn the_rows_own_word_identifies_a_field_where_the_crawler_fills_it() {
        let said = Said {
            responses: 1000,
            responses_said: 1000,
            cache_rows: 40,
            cache_success: 0,
            cache_untouched: 40,
            exception_rows: 12,
            exceptions_failure: 12,
            exceptions_none: 0,
        };
        assert_eq!(
            said.identifies(Field::CacheHitIsSuccess),
            Some((false, 40, 40))
        );
        assert_eq!(
            said.identifies(Field::ExceptionsAreFailures),
            Some((true, 12, 12))
        );
        // The column names no other field.
        assert_eq!(said.identifies(Field::FinalOutcomeCounted), None);
        // A request that raised never reaches the update that writes the column: its
        // `none` says nothing of how its attempts were counted.
        let none = Said {
            exceptions_failure: 0,
            exceptions_none: 12,
            ..said
        };
        assert_eq!(none.identifies(Field::ExceptionsAreFailures), None);
        // Too few rows, a split word, rows of the kind mostly silent, or a crawler that
        // does not fill the column: none.
        let few = Said {
            exception_rows: 9,
            exceptions_failure: 9,
            ..said
        };
        assert_eq!(few.identifies(Field::ExceptionsAreFailures), None);
        let split = Said {
            cache_success: 1,
            cache_untouched: 39,
            ..said
        };
        assert_eq!(split.identifies(Field::CacheHitIsSuccess), None);
        let silent = Said {
            cache_rows: 100,
            ..said
        };
        assert_eq!(silent.identifies(Field::CacheHitIsSuccess), None);
        let unfilled = Said {
            responses_said: 800,
            ..said
        };
        assert_eq!(unfilled.identifies(Field::CacheHitIsSuccess), None);

        // The descent starts from that word and does not move it; the other fields are
        // searched as before.
        let base = CrawlerModel::default();
        let signs = Signs {
            failed_rows: 5,
            cache_hits: 40,
            exceptions: 12,
            said,
            ..Signs::default()
        };
        let start = signs.start(&base);
        assert!(!start.cache_hit_is_success && start.exceptions_are_failures);
        // A fit that prefers the documented cache field (100 better) does not move it.
        let (model, _, path) = descend(&base, &signs, |m| {
            Some(fit(if m.cache_hit_is_success { 100 } else { 200 }))
        })
        .unwrap();
        assert_eq!((model, path), (start.clone(), Vec::new()));
        let cal = Calibration::new(
            &base,
            vec![Evaluated::search(signs, &base, |m| {
                fit(if m.cache_hit_is_success { 100 } else { 200 })
            })],
        );
        let choice = cal.choose();
        assert_eq!(
            choice.identified,
            [Field::CacheHitIsSuccess, Field::ExceptionsAreFailures]
        );
        assert_eq!(choice.base_fit.score, 100);
        let text = calibration_text(false, &choice);
        assert!(
            text.starts_with("calibrated (cache_hit_is_success, exceptions_are_failures as the rows' breaker_recorded says): "),
            "{text}"
        );
        let both = Choice {
            path: vec![Field::FinalOutcomeCounted],
            ..choice.clone()
        };
        let text = calibration_text(false, &both);
        assert!(
            text.starts_with("calibrated (cache_hit_is_success, exceptions_are_failures as the rows' breaker_recorded says; final_outcome_counted moved): "),
            "{text}"
        );
        let cooldown = Choice {
            identified: vec![Field::SuccessClearsCooldown],
            ..both
        };
        let text = calibration_text(false, &cooldown);
        assert!(
            text.starts_with("calibrated (success_clears_cooldown as the requests begun in cooldowns show; final_outcome_counted moved): "),
            "{text}"
        );
        // The cooldown's signature, in the finding's words; without requests begun
        // after a success in a cooldown, the fit decides.
        let cooling = Signs {
            cooldown_failures: 30,
            cooldowns: CooldownSign {
                with_success: 12,
                starts_after_success: 40,
                starts_without_success: 0,
            },
            ..Signs::default()
        };
        assert_eq!(
            cooling.identified(Field::SuccessClearsCooldown),
            Some((true, 40, 40))
        );
        assert!(
            cooling.describe(Field::SuccessClearsCooldown).ends_with(
                "40 of the 40 requests that began in a cooldown came after a success in it: the success cleared it"
            ),
            "{}",
            cooling.describe(Field::SuccessClearsCooldown)
        );
        let none = Signs {
            cooldowns: CooldownSign::default(),
            ..cooling
        };
        assert!(none.shows(Field::SuccessClearsCooldown));
        assert_eq!(none.identified(Field::SuccessClearsCooldown), None);
        let finding = cal
            .findings(&choice)
            .into_iter()
            .find(|f| f.field == "cache_hit_is_success")
            .unwrap();
        assert!(
            finding
                .night
                .ends_with("the rows' breaker_recorded says 40 of 40 left the breaker untouched"),
            "{}",
            finding.night
        );
        // A field whose other value fits exactly as well (the fit here reads only the
        // cache hits): the night could not show it.
        let repeat = cal
            .findings(&choice)
            .into_iter()
            .find(|f| f.field == "final_outcome_counted")
            .unwrap();
        assert!(!repeat.shown && repeat.other_fit == Some(repeat.fit));
        assert!(
            repeat.describe().ends_with(
                "final_outcome_counted = 1 fits it exactly as well: the night cannot tell the two apart"
            ),
            "{}",
            repeat.describe()
        );
        // A field the rows identify stays shown though its other value ties.
        let runs = Signs {
            failed_rows: 100,
            repeat: RepeatSign {
                past_once: 0,
                past_twice: 12,
                opened_by_repeat: 0,
            },
            ..Signs::default()
        };
        let cal = Calibration::new(&base, vec![Evaluated::search(runs, &base, |_| fit(100))]);
        let choice = cal.choose();
        let once = cal
            .findings(&choice)
            .into_iter()
            .find(|f| f.field == "final_outcome_counted")
            .unwrap();
        assert_eq!(once.chosen, "1");
        assert!(once.shown && once.other_fit == Some(once.fit), "{once:?}");
    }

    #[test]
    fn runs_only_the_repeat_takes_past_fail_max_identify_the_final_outcome_counted_once() {
        let base = CrawlerModel::default();
        let signs = |past_once: u64, past_twice: u64| Signs {
            failed_rows: 100,
            repeat: RepeatSign {
                past_once,
                past_twice,
                opened_by_repeat: 1,
            },
            ..Signs::default()
        };
        // Twelve runs past fail_max counted twice, two counted once: ten only the repeat
        // explains, more than the noise.
        let once = signs(2, 12);
        assert_eq!(
            once.identified(Field::FinalOutcomeCounted),
            Some((false, 10, 12))
        );
        assert_eq!(once.start(&base).final_outcome_counted, 1);
        assert!(
            once.describe(Field::FinalOutcomeCounted).ends_with(
                "10 runs of failures that only the final outcome's repeat takes past fail_max ended without the breaker opening (12 past it counted twice, 2 counted once; opens where the repeat alone took a run to fail_max: 1): the crawler counts the final outcome once"
            ),
            "{}",
            once.describe(Field::FinalOutcomeCounted)
        );
        // As many opens the repeat alone explains: a busy fleet's noise, not a sign.
        let busy = Signs {
            repeat: RepeatSign {
                opened_by_repeat: 10,
                ..once.repeat
            },
            ..once
        };
        assert_eq!(busy.identified(Field::FinalOutcomeCounted), None);
        assert_eq!(busy.start(&base), base);
        assert!(
            busy.describe(Field::FinalOutcomeCounted).ends_with(
                "runs of failures that only the final outcome's repeat takes past fail_max, ended without the breaker opening: 10; opens where the repeat alone took a run to fail_max: 10; the runs do not show it"
            ),
            "{}",
            busy.describe(Field::FinalOutcomeCounted)
        );
        // Too few, or fewer than the runs past it either way: the fit decides. The
        // absence of such runs never says twice.
        for (o, t) in [(0, 2), (5, 9), (0, 0), (3, 3)] {
            let s = signs(o, t);
            assert_eq!(s.identified(Field::FinalOutcomeCounted), None, "{o} {t}");
            assert_eq!(s.start(&base), base);
        }
        // A night without failed rows cannot show it, whatever the runs say.
        let unshown = Signs {
            failed_rows: 0,
            ..once
        };
        assert_eq!(unshown.identified(Field::FinalOutcomeCounted), None);
        let choice = Calibration::new(
            &base,
            vec![Evaluated::search(once, &base, |m| {
                fit(if m.final_outcome_counted == 1 { 50 } else { 60 })
            })],
        )
        .choose();
        assert_eq!(choice.identified, [Field::FinalOutcomeCounted]);
        assert_eq!(choice.model.final_outcome_counted, 1);
        let text = calibration_text(false, &choice);
        assert!(
            text.starts_with(
                "calibrated (final_outcome_counted as the runs the breakers did not open on show): "
            ),
            "{text}"
        );
        // Read from the reconstruction, not the crawler's own record: where the fit
        // clearly disagrees, the descent moves it back.
        let back = Calibration::new(
            &base,
            vec![Evaluated::search(once, &base, |m| {
                fit(if m.final_outcome_counted == 1 {
                    500
                } else {
                    100
                })
            })],
        )
        .choose();
        assert_eq!(back.model.final_outcome_counted, 2);
        assert_eq!(back.path, [Field::FinalOutcomeCounted]);
    }
}
