//! The advisor's rules, one golden case each: host evidence in, changes out; and the
//! gates, bands, steps and clamps that keep the advice safe.

use std::path::Path;

use breaker_advisor::advise::{
    AdviseSettings, Confidence, Current, HostEvidence, IncidentEvidence, Num, Plan, Previous,
    RaisedCounted, RateBaselines, ReplayCheck, RoleEvidence, advise,
};
use breaker_advisor::config::BreakerConfig;
use breaker_advisor::config::edit::BreakerKey;
use breaker_advisor::config::rates::RateLimits;
use breaker_advisor::crawler::CrawlerModel;
use breaker_advisor::replay::traffic::OpenSpells;
use breaker_advisor::replay::{Figures, ReplayPolicy};

/// A crawler that honours every setting of breakers.yaml as the file reads (the
/// documented crawler ignores success_threshold and role-level fail_max).
fn honouring() -> CrawlerModel {
    CrawlerModel {
        honours_success_threshold: true,
        honours_role_breaker_settings: true,
        host_inherits_default_roles: true,
        ..CrawlerModel::default()
    }
}

const BREAKERS: &str = "
defaults:
  fail_max: 5
  reset_timeout_s: 60
  retry_after_cap_s: 900
  roles:
    metadata: {success_threshold: 1, trial_calls: 1}
hosts:
  a.example:
    fail_max: 3
    reset_timeout_s: 60
    retry_after_cap_s: 300
    roles: {landing: {fail_max: 4}}
";

const RATES: &str = "
defaults:
  metadata: {rates: [\"10/SECOND\", \"5000/HOUR\"]}
hosts:
  a.example:
    metadata: {rates: [\"50/SECOND\", \"10000/HOUR\"]}
aimd:
  high_429_ratio: 0.05
  increase_step_pct: 5
  decrease_step_pct: 20
  min_multiplier: 0.3
  max_multiplier: 1.0
";

/// A busy, healthy host: enough calls for every gate, nothing to change.
fn host(name: &str) -> HostEvidence {
    HostEvidence {
        host: name.into(),
        window_hours: 24.0,
        calls_net: 50_000,
        roles: vec![RoleEvidence {
            role: "metadata".into(),
            calls_net: 50_000,
            e429: 0,
            ..RoleEvidence::default()
        }],
        background_bursts: vec![1; 200],
        ..HostEvidence::default()
    }
}

fn incident(start_s: i64, minutes: i64, ra: Option<f64>) -> IncidentEvidence {
    IncidentEvidence {
        kind: "5xx".into(),
        start_us: start_s * 1_000_000,
        end_us: (start_s + minutes * 60) * 1_000_000,
        duration_s: (minutes * 60) as f64,
        ongoing: false,
        retry_after_median_s: ra,
    }
}

/// RATES with a.example's metadata rates set to `a` and `b`.
fn with_rates(a: &str, b: &str) -> String {
    RATES.replace(
        "[\"50/SECOND\", \"10000/HOUR\"]",
        &format!("[\"{a}\", \"{b}\"]"),
    )
}

/// Baselines holding a.example's first recorded metadata rates.
fn recorded(a: &str, b: &str) -> RateBaselines {
    let mut base = RateBaselines::new();
    base.entry("a.example".into())
        .or_default()
        .insert("metadata".into(), vec![a.into(), b.into()]);
    base
}

fn plan_for(hosts: &[HostEvidence], s: &AdviseSettings) -> Plan {
    plan_with(hosts, s, &RateBaselines::new(), RATES)
}

fn plan_with(
    hosts: &[HostEvidence],
    s: &AdviseSettings,
    baselines: &RateBaselines,
    rates: &str,
) -> Plan {
    let cfg = BreakerConfig::parse(BREAKERS, Path::new("breakers.yaml")).unwrap();
    let rl = RateLimits::parse(rates, Path::new("ratelimits.yaml")).unwrap();
    advise(
        hosts,
        &Current {
            breakers: &cfg,
            model: &CrawlerModel::default(),
            ratelimits: Some(&rl),
            baselines,
            replay: None,
            previous: Previous::default(),
        },
        s,
    )
}

/// The plan for one host of BREAKERS under a crawler model, without rates or replay.
fn plan_under(h: &HostEvidence, model: &CrawlerModel, s: &AdviseSettings) -> Plan {
    let cfg = BreakerConfig::parse(BREAKERS, Path::new("breakers.yaml")).unwrap();
    advise(
        std::slice::from_ref(h),
        &Current {
            breakers: &cfg,
            model,
            ratelimits: None,
            baselines: &RateBaselines::new(),
            replay: None,
            previous: Previous::default(),
        },
        s,
    )
}

fn change(plan: &Plan, host: &str, role: Option<&str>, key: BreakerKey) -> Option<(f64, i64)> {
    plan.breakers
        .iter()
        .find(|c| c.host == host && c.role.as_deref() == role && c.key == key)
        .map(|c| (c.from.as_f64(), c.to))
}

#[test]
fn a_healthy_busy_host_gets_no_advice() {
    let plan = plan_for(&[host("a.example")], &AdviseSettings::default());
    assert!(plan.is_empty(), "{plan:#?}");
    assert!(plan.held.is_empty());
}

#[test]
fn low_volume_hosts_are_held_with_the_reason() {
    let mut h = host("a.example");
    h.calls_net = 30;
    h.retry_after_samples = 30;
    h.retry_after_median_s = Some(200.0);
    h.opens = 5;
    let plan = plan_for(&[h], &AdviseSettings::default());
    assert!(plan.is_empty());
    assert_eq!(plan.held.len(), 1);
    assert!(
        plan.held[0].reason.contains("30 network calls"),
        "{:?}",
        plan.held
    );
}

#[test]
fn retry_after_sets_reset_timeout_capped_and_stepped() {
    let s = AdviseSettings::default();
    let mut h = host("a.example");
    h.opens = 4;
    h.retry_after_samples = 120;
    h.retry_after_median_s = Some(90.0);
    let plan = plan_for(&[h.clone()], &s);
    assert_eq!(
        change(&plan, "a.example", None, BreakerKey::ResetTimeoutS),
        Some((60.0, 90))
    );
    let c = &plan.breakers[0];
    assert_eq!(c.evidence["retry_after_samples"], Num::Int(120));
    assert!(c.reason.contains("Retry-After"), "{}", c.reason);

    // Above the host's cap (300): capped; and at most doubled in one run.
    h.retry_after_median_s = Some(1_000.0);
    let plan = plan_for(&[h.clone()], &s);
    let (from, to) = change(&plan, "a.example", None, BreakerKey::ResetTimeoutS).unwrap();
    assert_eq!((from, to), (60.0, 120));
    assert!(plan.breakers[0].reason.contains("capped at 300"));
    assert!(plan.breakers[0].reason.contains("towards 300"));

    // Too few headers: no Retry-After rule.
    h.retry_after_samples = 5;
    assert!(plan_for(&[h], &s).is_empty());
}

#[test]
fn reset_timeout_has_a_hysteresis_band() {
    let mut h = host("a.example");
    h.opens = 4;
    h.retry_after_samples = 120;
    h.retry_after_median_s = Some(66.0); // within 20% of 60
    assert!(plan_for(&[h], &AdviseSettings::default()).is_empty());
}

#[test]
fn incident_durations_set_reset_timeout_without_retry_after() {
    let mut h = host("a.example");
    h.incidents = vec![
        incident(0, 2, None),
        incident(10_000, 2, None),
        incident(20_000, 3, None),
    ];
    let plan = plan_for(&[h], &AdviseSettings::default());
    assert_eq!(
        change(&plan, "a.example", None, BreakerKey::ResetTimeoutS),
        Some((60.0, 120))
    );
    assert_eq!(
        plan.breakers[0].evidence["incident_duration_median_s"],
        Num::Int(120)
    );
}

#[test]
fn fail_max_rises_above_background_noise() {
    let s = AdviseSettings::default();
    let mut h = host("a.example");
    // 200 background bursts: q95 is 3; bursts of 4+ happen 0 times a day.
    h.background_bursts = [vec![1; 150], vec![2; 38], vec![3; 12]].concat();
    let plan = plan_for(&[h.clone()], &s);
    assert_eq!(
        change(&plan, "a.example", None, BreakerKey::FailMax),
        Some((3.0, 4))
    );
    // The host's landing role sets its own fail_max, which the crawler never reads:
    // not mentioned. A crawler that honoured it would keep it, and the reason says so.
    assert_eq!(plan.breakers.len(), 1, "{:#?}", plan.breakers);
    assert!(
        !plan.breakers[0].reason.contains("roles.landing"),
        "{}",
        plan.breakers[0].reason
    );
    let honoured = plan_under(&h, &honouring(), &s);
    assert!(
        honoured.breakers[0]
            .reason
            .contains("roles.landing keeps its own fail_max (4)"),
        "{}",
        honoured.breakers[0].reason
    );
    let e = &plan.breakers[0].evidence;
    assert_eq!(e["background_q95"], Num::Int(3));
    assert_eq!(e["background_bursts"], Num::Int(200));
    assert_eq!(e["background_reaching_current"], Num::Int(12));
    assert_eq!(e["background_reaching_proposed"], Num::Int(0));
    // Over a 24 h window, each burst that reaches fail_max is one false open a day.
    assert_eq!(e["false_opens_per_day_current"], Num::Int(12));
    assert_eq!(e["false_opens_per_day_proposed"], Num::Int(0));

    // Too few background bursts: no fail_max advice.
    h.background_bursts.truncate(10);
    assert!(plan_for(&[h], &s).is_empty());
}

#[test]
fn fail_max_falls_to_where_outages_trip_it_bounded_by_the_step() {
    let mut h = host("b.example"); // defaults: fail_max 5
    h.background_bursts = vec![1; 300];
    h.incidents = vec![incident(1_000_000, 60, None)];
    h.incident_bursts = vec![2, 2, 2, 2, 2, 2, 3];
    let s = AdviseSettings::default();
    let plan = plan_for(&[h.clone()], &s);
    assert_eq!(
        change(&plan, "b.example", None, BreakerKey::FailMax),
        Some((5.0, 3))
    );
    // Outages whose failures come one at a time cannot be told from background noise.
    h.incident_bursts = vec![1, 1, 1];
    let plan = plan_for(&[h], &s);
    assert!(
        change(&plan, "b.example", None, BreakerKey::FailMax).is_none(),
        "no separation between noise (q95 1 -> at least 2) and outages (1): held"
    );
    assert!(
        plan.held
            .iter()
            .any(|x| x.reason.contains("no value separates"))
    );
}

#[test]
fn fail_max_is_never_lowered_without_incidents() {
    let mut h = host("b.example");
    h.background_bursts = vec![1; 300];
    assert!(plan_for(&[h], &AdviseSettings::default()).is_empty());
}

#[test]
fn clamps_hold_whatever_the_evidence() {
    let s = AdviseSettings::default();
    let mut h = host("a.example");
    h.background_bursts = [vec![1; 100], vec![30; 100]].concat();
    let mut cfg_text = BREAKERS.replace("fail_max: 3", "fail_max: 9");
    cfg_text.push('\n');
    let cfg = BreakerConfig::parse(&cfg_text, Path::new("b.yaml")).unwrap();
    let plan = advise(
        &[h],
        &Current {
            breakers: &cfg,
            model: &CrawlerModel::default(),
            ratelimits: None,
            baselines: &RateBaselines::new(),
            replay: None,
            previous: Previous::default(),
        },
        &s,
    );
    assert_eq!(
        change(&plan, "a.example", None, BreakerKey::FailMax),
        Some((9.0, 10)),
        "{plan:#?}"
    );
    let mut h = host("a.example");
    h.opens = 3;
    h.retry_after_samples = 100;
    h.retry_after_median_s = Some(3.0);
    let plan = plan_for(&[h], &s);
    assert_eq!(
        change(&plan, "a.example", None, BreakerKey::ResetTimeoutS),
        Some((60.0, 30)),
        "halved at most"
    );
}

#[test]
fn failing_half_open_trials_tighten_the_metadata_role() {
    let mut h = host("a.example");
    h.half_open_trials = 40;
    h.half_open_trial_failures = 30;
    let plan = plan_for(&[h.clone()], &AdviseSettings::default());
    // The crawler always runs success_threshold 1: the proposal is reported as needing
    // a crawler change and never reaches breakers.yaml.
    assert!(
        plan.breakers
            .iter()
            .all(|c| c.key != BreakerKey::SuccessThreshold),
        "{:#?}",
        plan.breakers
    );
    let needs = &plan.crawler_changes;
    assert_eq!(needs.len(), 1, "{needs:#?}");
    assert_eq!(
        (needs[0].key, needs[0].to, needs[0].role.as_deref()),
        (BreakerKey::SuccessThreshold, 2, Some("metadata"))
    );
    assert!(needs[0].ignored_by.contains("breakers.py"), "{needs:?}");
    let honoured = plan_under(&h, &honouring(), &AdviseSettings::default());
    assert_eq!(
        change(
            &honoured,
            "a.example",
            Some("metadata"),
            BreakerKey::SuccessThreshold
        ),
        Some((1.0, 2))
    );
    // trial_calls is already 1: no change for it.
    assert!(change(&plan, "a.example", Some("metadata"), BreakerKey::TrialCalls).is_none());
    // 5 of 8 failed: too few trials.
    h.half_open_trials = 8;
    h.half_open_trial_failures = 5;
    assert!(plan_for(&[h], &AdviseSettings::default()).is_empty());
}

#[test]
fn consistently_successful_trials_relax_back_to_one() {
    let text = BREAKERS.replace(
        "metadata: {success_threshold: 1, trial_calls: 1}",
        "metadata: {success_threshold: 2, trial_calls: 1}",
    );
    let cfg = BreakerConfig::parse(&text, Path::new("b.yaml")).unwrap();
    let mut h = host("a.example");
    h.half_open_trials = 200;
    h.half_open_trial_failures = 2;
    // The crawler already runs 1, whatever the file says: nothing to propose.
    let ignored = advise(
        std::slice::from_ref(&h),
        &Current {
            breakers: &cfg,
            model: &CrawlerModel::default(),
            ratelimits: None,
            baselines: &RateBaselines::new(),
            replay: None,
            previous: Previous::default(),
        },
        &AdviseSettings::default(),
    );
    assert!(
        ignored.is_empty() && ignored.crawler_changes.is_empty(),
        "{ignored:#?}"
    );
    let plan = advise(
        &[h],
        &Current {
            breakers: &cfg,
            model: &honouring(),
            ratelimits: None,
            baselines: &RateBaselines::new(),
            replay: None,
            previous: Previous::default(),
        },
        &AdviseSettings::default(),
    );
    assert_eq!(
        change(
            &plan,
            "a.example",
            Some("metadata"),
            BreakerKey::SuccessThreshold
        ),
        Some((2.0, 1))
    );
}

#[test]
fn flapping_raises_reset_timeout_by_half() {
    let mut h = host("a.example");
    h.opens = 20;
    h.pingpong_flaps = 6;
    let plan = plan_for(&[h], &AdviseSettings::default());
    assert_eq!(
        change(&plan, "a.example", None, BreakerKey::ResetTimeoutS),
        Some((60.0, 90))
    );
    assert!(plan.breakers[0].reason.contains("flaps"));
}

#[test]
fn many_429s_lower_the_rates_and_a_quiet_host_climbs_back() {
    let s = AdviseSettings::default();
    let mut h = host("a.example");
    h.roles[0].e429 = 5_000; // 10%, lower bound far above 5%
    let plan = plan_for(&[h.clone()], &s);
    assert_eq!(plan.rates.len(), 1, "{plan:#?}");
    let r = &plan.rates[0];
    assert_eq!(r.from, ["50/SECOND", "10000/HOUR"]);
    assert_eq!(r.to, ["40/SECOND", "8000/HOUR"]);
    assert_eq!(
        (r.multiplier_from, r.multiplier_to),
        (Num::Int(1), Num::Float(0.8))
    );
    assert_eq!(
        plan.baselines["a.example"]["metadata"],
        ["50/SECOND", "10000/HOUR"]
    );

    // Next night, with the decreased rates in the file and the baseline recorded: a
    // quiet host climbs back by 5%, relative to the first recorded rates.
    let lowered = with_rates("40/SECOND", "8000/HOUR");
    h.roles[0].e429 = 0;
    let plan = plan_with(&[h.clone()], &s, &plan.baselines, &lowered);
    let r = &plan.rates[0];
    assert_eq!(
        (r.multiplier_from, r.multiplier_to),
        (Num::Float(0.8), Num::Float(0.84))
    );
    assert_eq!(r.to, ["42/SECOND", "8400/HOUR"]);

    // At the cap (1.0, the first recorded rates) a quiet host stays.
    assert!(plan_for(&[h.clone()], &s).rates.is_empty());

    // A ratio near the threshold (Wilson interval straddles 5%): no change either way.
    h.roles[0].e429 = 2_500;
    assert!(plan_for(&[h], &s).rates.is_empty());
}

#[test]
fn a_quota_hidden_by_retries_lowers_the_rates_and_a_429_blocks_raising() {
    let s = AdviseSettings::default();
    // 4% of the requests end in 429 (below 5%), but 18% of the attempts got one: the
    // retries hid most of them from the rows.
    let mut h = host("a.example");
    h.roles[0] = RoleEvidence {
        role: "metadata".into(),
        calls_net: 10_000,
        e429: 400,
        attempts: 12_000,
        attempts_429: 2_160,
        ..RoleEvidence::default()
    };
    let plan = plan_for(&[h.clone()], &s);
    let r = &plan.rates[0];
    assert_eq!(r.to, ["40/SECOND", "8000/HOUR"]);
    assert!(
        r.reason.contains("2160 of 12000 metadata attempts got 429"),
        "{}",
        r.reason
    );
    assert_eq!(r.evidence["attempts_429"], Num::Int(2_160));

    // Lowered, then a night with no 429 in the rows but a few among the retried
    // attempts: the rates are not raised (the quota is still being hit).
    let base = recorded("50/SECOND", "10000/HOUR");
    let lowered = with_rates("40/SECOND", "8000/HOUR");
    h.roles[0].e429 = 0;
    h.roles[0].attempts_429 = 12;
    assert!(
        plan_with(&[h.clone()], &s, &base, &lowered)
            .rates
            .is_empty()
    );
    h.roles[0].attempts_429 = 0;
    let up = plan_with(&[h], &s, &base, &lowered);
    assert_eq!(up.rates[0].to, ["42/SECOND", "8400/HOUR"]);
}

#[test]
fn scaled_rates_keep_their_unit_and_a_step_rounding_eats_is_held() {
    let s = AdviseSettings::default();
    let mut h = host("a.example");
    h.roles[0].e429 = 5_000;
    let rates = |r: &str| RATES.replace("[\"50/SECOND\", \"10000/HOUR\"]", r);
    let plan = plan_with(
        &[h.clone()],
        &s,
        &RateBaselines::new(),
        &rates("[\"8/SECOND\", \"500/HOUR\"]"),
    );
    assert_eq!(
        plan.rates[0].to,
        ["6/SECOND", "400/HOUR"],
        "never 384/MINUTE"
    );
    // 2/SECOND x 0.8 rounds back to 2/SECOND: nothing to write, and the reason says so.
    let plan = plan_with(&[h], &s, &RateBaselines::new(), &rates("[\"2/SECOND\"]"));
    assert!(plan.rates.is_empty(), "{:?}", plan.rates);
    let held = plan
        .held
        .iter()
        .find(|x| x.host == "a.example")
        .expect("held");
    assert!(
        held.reason.contains("rounds back to the same limits"),
        "{}",
        held.reason
    );
}

/// Ten hours of one-minute windows from 4 rate limiters, 100 to 499 attempts sent
/// each: with `knee`, a quota of 420 a minute took every window's attempts up to 420
/// and answered the rest with 429 (the quota slides, so a third of the throttled
/// windows took a little less); without, one window in five got 429s, whatever its
/// count.
fn windows(knee: bool) -> Vec<(i64, breaker_advisor::advise::quota::Window)> {
    use breaker_advisor::advise::quota::Window;
    (0..600)
        .map(|i: i64| {
            let sent = 100 + (i * 37) % 400;
            let (accepted, refused) = if knee {
                let took = if i % 3 == 0 { 400 + i % 20 } else { 420 };
                (sent.min(took), (sent - took).max(0))
            } else {
                (sent, i64::from(i % 5 == 0) * 40)
            };
            (i, Window::bucket(accepted, refused, 0, 4))
        })
        .collect()
}

/// The same windows' attempts under a quota of `quota` a window from 4 limiters: it
/// takes up to `quota` and answers the rest 429.
fn under_quota(windows: &mut [(i64, breaker_advisor::advise::quota::Window)], quota: i64) {
    for (_, w) in windows {
        let sent = w.accepted + w.attempts_429;
        *w = breaker_advisor::advise::quota::Window::bucket(
            sent.min(quota),
            (sent - quota).max(0),
            0,
            4,
        );
    }
}

#[test]
fn the_quota_sets_rates_just_under_it_and_unrelated_429s_slow_nothing() {
    let s = AdviseSettings::default();
    let mut h = host("a.example");
    h.roles[0] = RoleEvidence {
        role: "metadata".into(),
        calls_net: 100_000,
        e429: 9_000,
        attempts: 120_000,
        attempts_429: 12_000,
        windows: windows(true),
        window_s: 60.0,
        per_second: None,
    };
    // The server took at most 420 a minute from 4 limiters: each limiter gets 101 a
    // minute (its 105 less its share of the margin: a request and two seconds at 420 a
    // minute), a per-minute rate added beside the per-second and per-hour ones, which
    // let a minute's burst through.
    let plan = plan_for(&[h.clone()], &s);
    let r = &plan.rates[0];
    assert!(
        r.reason
            .contains("the server took at most 420 metadata attempts in a throttled minute"),
        "{}",
        r.reason
    );
    assert_eq!(r.evidence["quota_ceiling"], Num::Int(420));
    assert_eq!(r.evidence["quota_limiters"], Num::Int(4));
    let mut want = r.from.clone();
    want.push("101/MINUTE".into());
    assert_eq!(r.to, want);
    assert_eq!(r.multiplier_from, r.multiplier_to);
    // The new rates are the multiplier's reference from now on: speeding back up
    // scales them, never the old ones over the quota.
    assert_eq!(plan.baselines["a.example"]["metadata"], r.to);

    // A per-second rate already holds the role under 101 a minute (1/SECOND is 60),
    // whatever the per-minute one says: nothing to change.
    let tight = with_rates("1/SECOND", "100/MINUTE");
    let plan = plan_with(&[h.clone()], &s, &Default::default(), &tight);
    assert!(plan.rates.is_empty(), "{:?}", plan.rates);

    // Next night the per-minute rate is there: a lower quota lowers it.
    let mut lower = h.clone();
    under_quota(&mut lower.roles[0].windows, 200);
    let current = with_rates("50/SECOND", "101/MINUTE");
    let plan = plan_with(&[lower], &s, &Default::default(), &current);
    let r = &plan.rates[0];
    // The target is 48 (50 per limiter, less the margin); the step bound (busiest 499
    // sent, 124 per limiter, no lower than 93 tonight) stops at the ceiling instead: never above
    // what the server was seen to take.
    assert_eq!(r.to, ["50/SECOND", "50/MINUTE"], "{}", r.reason);
    assert!(r.reason.contains("moves towards 48/MINUTE"), "{}", r.reason);

    // 429s at every rate (1 window in 5, whatever its count): not the host's own rate,
    // so no slow-down even though 10% of the attempts got one.
    h.roles[0].windows = windows(false);
    let plan = plan_for(&[h], &s);
    assert!(plan.rates.is_empty(), "{:?}", plan.rates);
    let held = plan
        .held
        .iter()
        .find(|x| x.host == "a.example")
        .expect("held");
    assert!(
        held.reason.contains("429s come at every rate"),
        "{}",
        held.reason
    );
}

#[test]
fn a_quota_per_second_sets_the_rate_per_second_at_it() {
    use breaker_advisor::advise::quota::SecondCounts;
    let s = AdviseSettings::default();
    let mut h = host("a.example");
    // 50,000 seconds with an attempt taken, a mean of 1.5 a second, 5,200 of them at 3
    // and 35 over: a rate of that mean without a quota would put a thousand over 3.
    let capped = SecondCounts {
        busy_seconds: 50_000,
        mean: 1.5,
        max: 4,
        cap: Some(3),
        at_cap: 5_200,
        over_cap: 35,
    };
    h.roles[0] = RoleEvidence {
        role: "metadata".into(),
        calls_net: 75_000,
        e429: 500,
        attempts: 80_000,
        attempts_429: 4_000,
        windows: windows(false),
        window_s: 60.0,
        per_second: Some(capped),
    };
    // From one limiter: the role's per-second rate goes to the quota, 3, not below (a
    // quota of a few a second leaves no room to round down). The minute windows, which
    // see 429s at every rate, are not read.
    let mut one = h.clone();
    for (_, w) in &mut one.roles[0].windows {
        w.limiters = 1;
    }
    let current = with_rates("10/SECOND", "10000/HOUR");
    let plan = plan_with(&[one.clone()], &s, &Default::default(), &current);
    let r = &plan.rates[0];
    assert_eq!(r.to, ["3/SECOND", "10000/HOUR"], "{}", r.reason);
    assert!(
        r.reason.contains("the server took at most 3 metadata attempts in any second (5200 of 50000 seconds reached 3, 35 went over, where a rate of the same mean without a quota would put"),
        "{}",
        r.reason
    );
    assert_eq!(r.evidence["quota_window_s"], Num::Int(1));
    assert_eq!(r.evidence["quota_seconds_over_cap"], Num::Int(35));
    // A cap the role's own limiters hold it to (3/SECOND already) is theirs: the
    // minute windows decide, and they see 429s at every rate.
    let own = with_rates("3/SECOND", "10000/HOUR");
    let plan = plan_with(&[one.clone()], &s, &Default::default(), &own);
    assert!(plan.rates.is_empty(), "{:?}", plan.rates);
    // As many seconds over 3 as a rate without a quota puts there: no cap.
    let mut spread = one.clone();
    spread.roles[0].per_second = Some(SecondCounts {
        over_cap: 1_000,
        ..capped
    });
    let plan = plan_with(&[spread], &s, &Default::default(), &current);
    assert!(plan.rates.is_empty(), "{:?}", plan.rates);
    // Four limiters share the server's 3 a second: under 2 each, no rate per second
    // (each would refuse its own process's bursts); held with the reason, and the
    // minute windows are not read for it.
    let plan = plan_with(&[h.clone()], &s, &Default::default(), &current);
    assert!(plan.rates.is_empty(), "{:?}", plan.rates);
    let held = plan.held.iter().find(|x| x.host == "a.example").unwrap();
    assert!(
        held.reason
            .contains("the server takes at most 3 attempts a second, shared by 4 rate limiters"),
        "{}",
        held.reason
    );
    // Two limiters under 5 a second: 2/SECOND each.
    let mut two = h.clone();
    for (_, w) in &mut two.roles[0].windows {
        w.limiters = 2;
    }
    two.roles[0].per_second = Some(SecondCounts {
        cap: Some(5),
        max: 5,
        ..capped
    });
    let plan = plan_with(&[two.clone()], &s, &Default::default(), &current);
    let r = &plan.rates[0];
    assert_eq!(r.to, ["2/SECOND", "10000/HOUR"], "{}", r.reason);
    // Already there: the rate per second cannot go lower, and the minute windows are
    // read as ever. Here they show a quota of 200 a minute from the 2 limiters, under
    // the 120 a minute each that 2/SECOND lets through: 100/MINUTE each (one night's
    // step stops at the ceiling).
    under_quota(&mut two.roles[0].windows, 200);
    for (_, w) in &mut two.roles[0].windows {
        w.limiters = 2;
    }
    let at_least = with_rates("2/SECOND", "10000/HOUR");
    let plan = plan_with(&[two], &s, &Default::default(), &at_least);
    let r = &plan.rates[0];
    assert_eq!(
        r.to,
        ["2/SECOND", "10000/HOUR", "100/MINUTE"],
        "{}",
        r.reason
    );
    assert_eq!(r.evidence["quota_window_s"], Num::Int(60));
}

#[test]
fn a_host_without_rates_gets_them_from_the_defaults() {
    let mut h = host("new.example");
    h.roles[0].e429 = 10_000;
    let plan = plan_for(&[h], &AdviseSettings::default());
    let r = &plan.rates[0];
    assert_eq!(r.from, ["10/SECOND", "5000/HOUR"]);
    assert_eq!(r.to, ["8/SECOND", "4000/HOUR"]);
}

#[test]
fn rate_gate_and_floor() {
    let s = AdviseSettings::default();
    let mut h = host("a.example");
    h.roles[0] = RoleEvidence {
        role: "metadata".into(),
        calls_net: 100,
        e429: 50,
        ..RoleEvidence::default()
    };
    assert!(
        plan_for(&[h.clone()], &s).rates.is_empty(),
        "too few role calls"
    );
    // At the floor (0.3 of the baseline) nothing lower is proposed.
    h.roles[0] = RoleEvidence {
        role: "metadata".into(),
        calls_net: 10_000,
        e429: 5_000,
        ..RoleEvidence::default()
    };
    let floor = with_rates("15/SECOND", "3000/HOUR");
    let base = recorded("50/SECOND", "10000/HOUR");
    assert!(plan_with(&[h], &s, &base, &floor).rates.is_empty());
}

#[test]
fn ongoing_incidents_give_cooldowns_until_expected_recovery() {
    use breaker_advisor::advise::cooldowns::incident_cooldowns;
    let cfg = BreakerConfig::parse(BREAKERS, Path::new("breakers.yaml")).unwrap();
    let end = 100_000.0;
    let ongoing = |start_s: i64, ra: Option<f64>| IncidentEvidence {
        ongoing: true,
        ..incident(start_s, ((end as i64) - start_s) / 60, ra)
    };
    // Retry-After inside the incident, capped by a.example's retry_after_cap_s (300).
    let mut a = host("a.example");
    a.incidents = vec![incident(10_000, 10, None), ongoing(99_000, Some(1_000.0))];
    // No Retry-After: typical length of its ended incidents (20 min), minus the
    // elapsed 1000 s.
    let mut b = host("b.example");
    b.incidents = vec![incident(0, 20, None), ongoing(99_000, None)];
    // An ended latest incident: nothing.
    let mut c = host("c.example");
    c.incidents = vec![incident(0, 60, None)];
    let got = incident_cooldowns(&[a, b, c], &cfg, &CrawlerModel::default(), end);
    assert_eq!(got.len(), 2, "{got:#?}");
    assert_eq!(got[0].host, "a.example");
    assert_eq!(got[0].until_wall, end + 300.0);
    assert!(got[0].basis.contains("capped at 300"), "{}", got[0].basis);
    assert_eq!(got[1].until_wall, end + 1200.0 - 1000.0);
    assert!(got[1].basis.contains("last 1200 s"), "{}", got[1].basis);
}

/// A replay whose cost is a fixed function of the policy.
struct FakeReplay(fn(&ReplayPolicy) -> u64);

impl ReplayCheck for FakeReplay {
    fn current(&self, _host: &str) -> Option<ReplayPolicy> {
        Some(ReplayPolicy {
            fail_max: 3,
            reset_timeout_s: 60.0,
            success_threshold: 1,
            trial_calls: 1,
            retry_after_cap_s: 300.0,
            rolling: None,
        })
    }
    fn figures(&self, _host: &str, p: &ReplayPolicy) -> Figures {
        Figures {
            false_trips: (self.0)(p),
            ..Figures::default()
        }
    }
}

/// A replay like `FakeReplay` of a host whose breaker runs fail_max `self.0`.
struct FakeReplayFrom(u32, fn(&ReplayPolicy) -> u64);

impl ReplayCheck for FakeReplayFrom {
    fn current(&self, host: &str) -> Option<ReplayPolicy> {
        let base = FakeReplay(self.1).current(host)?;
        Some(ReplayPolicy {
            fail_max: self.0,
            ..base
        })
    }
    fn figures(&self, host: &str, p: &ReplayPolicy) -> Figures {
        FakeReplay(self.1).figures(host, p)
    }
}

/// A replay like `FakeReplay` that replays 10 opens of a host whose breakers recorded
/// `self.0`.
struct FakeReplayMissing(u64, fn(&ReplayPolicy) -> u64);

impl ReplayCheck for FakeReplayMissing {
    fn current(&self, host: &str) -> Option<ReplayPolicy> {
        FakeReplay(self.1).current(host)
    }
    fn figures(&self, host: &str, p: &ReplayPolicy) -> Figures {
        Figures {
            opens: 10,
            ..FakeReplay(self.1).figures(host, p)
        }
    }
    fn recorded_opens(&self, _host: &str) -> Option<u64> {
        Some(self.0)
    }
}

#[test]
fn a_replay_that_misses_the_recorded_opens_needs_a_gain_clearly_larger_than_the_miss() {
    let mut h = host("a.example");
    h.opens = 4;
    h.retry_after_samples = 120;
    h.retry_after_median_s = Some(100.0); // heuristic: 60 -> 100
    // 10 replayed against 12 recorded: a miss of 17%. A longer reset_timeout_s halves
    // the cost (a gain of 50%, more than twice 17%): the change stands, the miss said.
    let halves = |p: &ReplayPolicy| if p.reset_timeout_s > 60.0 { 500 } else { 1000 };
    let plan = plan_with_replay(&h, &FakeReplayMissing(12, halves));
    let c = &plan.breakers[0];
    assert!(
        c.reason.contains("the replay misses the recorded opens by 17% (12 recorded, 10 replayed): the gain of 50% is more than twice that"),
        "{}",
        c.reason
    );
    assert_eq!(c.evidence["replay_open_miss_share"], Num::real(2.0 / 12.0));
    // A gain of 20% is within twice the miss: held, with both numbers.
    let fifth = |p: &ReplayPolicy| if p.reset_timeout_s > 60.0 { 800 } else { 1000 };
    let plan = plan_with_replay(&h, &FakeReplayMissing(12, fifth));
    assert!(plan.breakers.is_empty(), "{:?}", plan.breakers);
    let held = plan.held.iter().find(|x| x.host == "a.example").unwrap();
    assert!(
        held.reason.contains("misses the recorded opens by 17%")
            && held.reason.contains("the best gain, 20%"),
        "{}",
        held.reason
    );
    // Within the tolerance (11 against 10): any gain stands, nothing said.
    let plan = plan_with_replay(&h, &FakeReplayMissing(11, fifth));
    assert!(
        !plan.breakers[0].reason.contains("misses"),
        "{}",
        plan.breakers[0].reason
    );
    // 10 against 25: a miss of 60%, the replay does not stand for the host.
    let plan = plan_with_replay(&h, &FakeReplayMissing(25, halves));
    assert!(plan.breakers.is_empty());
    assert!(
        plan.held
            .iter()
            .any(|x| x.reason.starts_with("the replay does not reproduce")),
        "{:?}",
        plan.held
    );
}

/// A replay like `FakeReplay` (reset_timeout_s 60) of a host whose recorded breakers
/// stayed open `self.0` before turning half-open.
struct FakeSpells(Option<OpenSpells>, fn(&ReplayPolicy) -> u64);

impl ReplayCheck for FakeSpells {
    fn current(&self, host: &str) -> Option<ReplayPolicy> {
        FakeReplay(self.1).current(host)
    }
    fn figures(&self, host: &str, p: &ReplayPolicy) -> Figures {
        FakeReplay(self.1).figures(host, p)
    }
    fn recorded_spells(&self, _host: &str) -> Option<OpenSpells> {
        self.0
    }
}

#[test]
fn breakers_that_turned_half_open_before_the_files_reset_timeout_hold_the_host() {
    let h = retry_after_host(); // heuristic: 60 -> 100
    let halves = |p: &ReplayPolicy| if p.reset_timeout_s > 60.0 { 500 } else { 1000 };
    let spells = |count, median_s| Some(OpenSpells { count, median_s });
    // Half-open a median 30 s after opening, where the file says 60: the night ran
    // other settings, and a replay under the file's says nothing of them.
    let plan = plan_with_replay(&h, &FakeSpells(spells(5, 30.0), halves));
    assert!(plan.breakers.is_empty(), "{:?}", plan.breakers);
    let held = plan.held.iter().find(|x| x.host == "a.example").unwrap();
    assert!(
        held.reason
            .contains("turned half-open a median 30 s after opening (5 times)")
            && held.reason.contains("reset_timeout_s 60"),
        "{}",
        held.reason
    );
    // Spells a little longer than the reset (the first call after it), none at all,
    // or too few to say: the change stands.
    for s in [spells(5, 61.5), None, spells(2, 30.0)] {
        let plan = plan_with_replay(&h, &FakeSpells(s, halves));
        assert_eq!(plan.breakers.len(), 1, "{s:?}: {:?}", plan.held);
        assert_eq!(plan.breakers[0].to, 100);
    }
}

/// A replay of a host whose 1,000 attempts that raised in incidents fall by `self.0`
/// if the crawler counted them, at `self.1` more healthy calls blocked.
struct FakeRaised(u64, u64);

impl ReplayCheck for FakeRaised {
    fn current(&self, host: &str) -> Option<ReplayPolicy> {
        FakeReplay(|_| 100).current(host)
    }
    fn figures(&self, host: &str, p: &ReplayPolicy) -> Figures {
        FakeReplay(|_| 100).figures(host, p)
    }
    fn raised_counted(&self, _host: &str, _p: &ReplayPolicy) -> Option<RaisedCounted> {
        let now = Figures {
            raised_attempts_in_incidents: 1000,
            raised_seconds_in_incidents: 30_000.0,
            false_trips: 100,
            ..Figures::default()
        };
        let then = Figures {
            raised_attempts_in_incidents: 1000 - self.0,
            raised_seconds_in_incidents: 30.0 * (1000 - self.0) as f64,
            false_trips: 100 + self.1,
            ..Figures::default()
        };
        Some(RaisedCounted {
            rows: 0,
            retried: 1000,
            now,
            then,
        })
    }
}

#[test]
fn counting_timeouts_goes_to_needs_a_crawler_change_only_for_a_gain_worth_a_change() {
    let h = host("a.example");
    let entries = |kept, lost| {
        plan_with_replay(&h, &FakeRaised(kept, lost))
            .crawler_changes
            .into_iter()
            .filter(|c| c.key == BreakerKey::FailureExceptions)
            .collect::<Vec<_>>()
    };
    // 300 attempts kept out for 50 healthy calls: a gain of 250, a quarter of the
    // attempts. Its reason says what the missing rows hide.
    let got = entries(300, 50);
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(
        got[0]
            .reason
            .contains("1000 retried attempts estimated to have timed out")
            && got[0].reason.contains("keeps 300 of the 1000 attempts")
            && got[0]
                .reason
                .contains("writes no row for a request that raised"),
        "{}",
        got[0].reason
    );
    // A gain of 90, under a tenth of the attempts (the default min_gain_share): none.
    assert!(entries(140, 50).is_empty());
    // As many healthy calls lost as attempts kept out: none.
    assert!(entries(300, 300).is_empty());
}

fn plan_with_replay(h: &HostEvidence, r: &dyn ReplayCheck) -> Plan {
    plan_with_replay_under(h, r, &AdviseSettings::default())
}

fn plan_with_replay_under(h: &HostEvidence, r: &dyn ReplayCheck, s: &AdviseSettings) -> Plan {
    plan_remembering_replay(h, r, s, Previous::default())
}

/// The plan for one host of BREAKERS under a replay and a memory of earlier nights.
fn plan_remembering_replay(
    h: &HostEvidence,
    r: &dyn ReplayCheck,
    s: &AdviseSettings,
    previous: Previous<'_>,
) -> Plan {
    let cfg = BreakerConfig::parse(BREAKERS, Path::new("breakers.yaml")).unwrap();
    advise(
        std::slice::from_ref(h),
        &Current {
            breakers: &cfg,
            model: &CrawlerModel::default(),
            ratelimits: None,
            baselines: &RateBaselines::new(),
            replay: Some(r),
            previous,
        },
        s,
    )
}

#[test]
fn replay_keeps_a_proposal_only_if_it_beats_the_current_settings() {
    let mut h = host("a.example");
    h.opens = 4;
    h.retry_after_samples = 120;
    h.retry_after_median_s = Some(100.0); // heuristic: 60 -> 100

    // Longer is better in this replay: the grid's 125 (100 x 1.25) wins.
    let plan = plan_with_replay(
        &h,
        &FakeReplay(|p| (2000.0 - 10.0 * p.reset_timeout_s) as u64),
    );
    let c = &plan.breakers[0];
    assert_eq!(
        (c.from.as_f64(), c.to),
        (60.0, 120),
        "x1.25 is 125, beyond the x2 step"
    );
    assert_eq!(c.evidence["replay_cost_current"], Num::Int(1400));
    assert_eq!(c.evidence["replay_cost_proposed"], Num::Int(800));

    // Nothing beats the current settings: no breaker change, held with both costs.
    let plan = plan_with_replay(&h, &FakeReplay(|_| 7));
    assert!(plan.breakers.is_empty(), "{:?}", plan.breakers);
    assert!(
        plan.held[0].reason.contains("do not beat"),
        "{:?}",
        plan.held
    );
}

#[test]
fn a_gain_from_moving_fail_max_and_reset_together_needs_one_move_that_pays_alone() {
    // a.example runs 3/60: background bursts of 3 propose fail_max 4, Retry-After
    // reset_timeout_s 100.
    let mut h = retry_after_host();
    h.background_bursts = [vec![1; 150], vec![2; 38], vec![3; 12]].concat();
    // Each move alone costs more than now (1000); both together less (500): held, with
    // the four costs.
    let plan = plan_with_replay(&h, &FakeReplayFrom(3, by_moves::<500, 1100, 1200>));
    assert!(plan.breakers.is_empty(), "{:#?}", plan.breakers);
    let held = plan.held.iter().find(|x| x.host == "a.example").unwrap();
    assert!(
        held.reason.contains("(cost 1000 now, 500 both): fail_max ")
            && held.reason.contains(" alone costs 1100, reset_timeout_s ")
            && held
                .reason
                .contains(" alone 1200; neither change pays for itself"),
        "{}",
        held.reason
    );
    // A move alone that saves less than the minimum gain (1%) does not pay either.
    let plan = plan_with_replay(&h, &FakeReplayFrom(3, by_moves::<500, 990, 1100>));
    assert!(plan.breakers.is_empty(), "{:#?}", plan.breakers);
    // The raise alone pays for itself (10%), or the reset alone: both moves stand.
    for pays in [by_moves::<500, 900, 1100>, by_moves::<500, 1100, 900>] {
        let plan = plan_with_replay(&h, &FakeReplayFrom(3, pays));
        let keys: Vec<BreakerKey> = plan.breakers.iter().map(|c| c.key).collect();
        assert!(
            keys.contains(&BreakerKey::FailMax) && keys.contains(&BreakerKey::ResetTimeoutS),
            "{:#?}",
            plan.breakers
        );
    }
}

/// A replayed cost by which keys a policy moves from 3/60: both, fail_max alone,
/// reset_timeout_s alone; 1000 for neither.
fn by_moves<const BOTH: u64, const FAIL: u64, const RESET: u64>(p: &ReplayPolicy) -> u64 {
    match (p.fail_max != 3, p.reset_timeout_s != 60.0) {
        (true, true) => BOTH,
        (true, false) => FAIL,
        (false, true) => RESET,
        (false, false) => 1000,
    }
}

#[test]
fn replay_grid_points_inside_the_hysteresis_band_are_not_proposed() {
    let mut h = host("a.example");
    h.opens = 4;
    h.retry_after_samples = 120;
    h.retry_after_median_s = Some(80.0); // heuristic 60 -> 80; grid 64 (x0.8) is within 20%
    // Anything beats the current 60 and shorter is better, but 64 is no change worth
    // making: 80 is proposed.
    let plan = plan_with_replay(
        &h,
        &FakeReplay(|p| {
            if p.reset_timeout_s == 60.0 {
                1000
            } else {
                p.reset_timeout_s as u64
            }
        }),
    );
    let c = &plan.breakers[0];
    assert_eq!((c.from.as_f64(), c.to), (60.0, 80), "{c:?}");
}

#[test]
fn no_slow_down_below_the_floor() {
    let mut h = host("a.example");
    h.roles[0].e429 = 10_000;
    // 10/SECOND of a first-recorded 40/SECOND: 0.25, below the floor of 0.3.
    let below = with_rates("10/SECOND", "2000/HOUR");
    let base = recorded("40/SECOND", "8000/HOUR");
    let plan = plan_with(&[h], &AdviseSettings::default(), &base, &below);
    assert!(plan.rates.is_empty(), "{:?}", plan.rates);
}

#[test]
fn a_value_moved_last_night_moves_back_only_on_new_evidence() {
    use breaker_advisor::advise::BreakerChange;
    let mut h = host("a.example");
    h.opens = 4;
    h.retry_after_samples = 120;
    h.retry_after_median_s = Some(100.0); // heuristic: 60 -> 100, the grid prefers 120
    // Last night's patch moved reset_timeout_s 120 -> 60.
    let last = [BreakerChange {
        host: "a.example".into(),
        role: None,
        key: BreakerKey::ResetTimeoutS,
        from: Num::Int(120),
        to: 60,
        reason: "last night".into(),
        evidence: Default::default(),
        confidence: None,
    }];
    let plan_of = |r: &dyn ReplayCheck, previous: &[BreakerChange]| {
        let last_night = Previous {
            breakers: previous,
            ..Previous::default()
        };
        plan_remembering_replay(&h, r, &AdviseSettings::default(), last_night)
    };
    // A modest replay gain (880 -> 760, 14%): enough for a change, but back to 120
    // would undo last night for little; held, with both nights' numbers.
    let weak = FakeReplay(|p| (1000.0 - 2.0 * p.reset_timeout_s) as u64);
    assert_eq!(
        plan_of(&weak, &[]).breakers[0].to,
        120,
        "without history it moves"
    );
    let plan = plan_of(&weak, &last);
    assert!(plan.breakers.is_empty(), "{:?}", plan.breakers);
    let held = plan
        .held
        .iter()
        .find(|x| x.reason.contains("last night"))
        .expect("held");
    assert!(
        held.reason.contains("moved 120 -> 60 last night") && held.reason.contains("gains 14%"),
        "{}",
        held.reason
    );
    // A large gain (cost halves) is new evidence: it moves back, and says so.
    let strong = FakeReplay(|p| (12_000.0 / p.reset_timeout_s) as u64);
    let plan = plan_of(&strong, &last);
    let c = &plan.breakers[0];
    assert_eq!(c.to, 120);
    assert!(
        c.reason.contains("moves back from last night's 120 -> 60"),
        "{}",
        c.reason
    );
    // Moving on the same way as last night (30 -> 60, now 60 -> 120) is no reversal,
    // but a staircase: it needs high confidence, which one night cannot give.
    let onward = [BreakerChange {
        from: Num::Int(30),
        ..last[0].clone()
    }];
    let plan = plan_of(&weak, &onward);
    assert!(plan.breakers.is_empty(), "{:?}", plan.breakers);
    assert!(
        plan.held[0]
            .reason
            .contains("moved 30 -> 60 last night; moving it on to 120 the next night needs high confidence across the nights replayed, and it has low"),
        "{}",
        plan.held[0].reason
    );
    // Every night replayed says so: it moves on.
    let every = FakeNights(
        |p| (1000.0 - 5.0 * p.reset_timeout_s) as u64,
        |_, p| (1000.0 - 5.0 * p.reset_timeout_s) as u64,
    );
    let plan = plan_of(&every, &onward);
    assert_eq!(plan.breakers[0].to, 120);
    assert_eq!(plan.breakers[0].confidence, Some(Confidence::High));
}

/// A replay like `FakeReplay` (tonight) with three earlier nights, night `k` costing
/// `self.1(k, policy)`.
struct FakeNights(fn(&ReplayPolicy) -> u64, fn(u32, &ReplayPolicy) -> u64);

impl ReplayCheck for FakeNights {
    fn current(&self, host: &str) -> Option<ReplayPolicy> {
        FakeReplay(self.0).current(host)
    }
    fn figures(&self, host: &str, p: &ReplayPolicy) -> Figures {
        FakeReplay(self.0).figures(host, p)
    }
    fn past_figures(&self, _host: &str, p: &ReplayPolicy) -> Vec<(u32, Figures)> {
        (1..=3)
            .map(|k| {
                let f = Figures {
                    false_trips: (self.1)(k, p),
                    ..Figures::default()
                };
                (k, f)
            })
            .collect()
    }
}

/// Tonight's cost of a reset timeout in the multi-night tests: 700 at 60, 400 at 120.
fn tonight_cost(p: &ReplayPolicy) -> u64 {
    (1000.0 - 5.0 * p.reset_timeout_s) as u64
}

#[test]
fn the_nights_before_tonight_choose_the_value_and_rate_its_confidence() {
    let mut h = host("a.example");
    h.opens = 4;
    h.retry_after_samples = 120;
    h.retry_after_median_s = Some(100.0);
    // Tonight alone: 700 -> 400 at 120, one night's evidence.
    let plan = plan_with_replay(&h, &FakeReplay(tonight_cost));
    let c = &plan.breakers[0];
    assert_eq!((c.to, c.confidence), (120, Some(Confidence::Low)));
    assert!(
        c.reason.contains("confidence low: one night replayed"),
        "{}",
        c.reason
    );

    // Every night alike: it wins all four, high.
    let plan = plan_with_replay(&h, &FakeNights(tonight_cost, |_, p| tonight_cost(p)));
    let c = &plan.breakers[0];
    assert_eq!((c.to, c.confidence), (120, Some(Confidence::High)));
    assert_eq!(c.evidence["replay_nights"], Num::Int(4));
    assert_eq!(c.evidence["replay_nights_won"], Num::Int(4));
    assert!(
        c.reason
            .contains("it wins 4 of the 4 nights replayed, a weighted gain of 43%"),
        "{}",
        c.reason
    );

    // Tonight prefers 120, the three nights before prefer the current 60 (800 against
    // 1100 at 120): weighed by half a night back, the best gain is under the minimum.
    let plan = plan_with_replay(
        &h,
        &FakeNights(tonight_cost, |_, p| {
            (500.0 + 5.0 * p.reset_timeout_s) as u64
        }),
    );
    assert!(plan.breakers.is_empty(), "{:?}", plan.breakers);
    let why = &plan.held[0].reason;
    assert!(
        why.contains("too small") && why.contains("over the 4 nights replayed"),
        "{why}"
    );

    // An operator who wants the nights to agree first: one night's change waits.
    let medium = AdviseSettings {
        min_confidence: Confidence::Medium,
        ..AdviseSettings::default()
    };
    let plan = plan_with_replay_under(&h, &FakeReplay(tonight_cost), &medium);
    assert!(plan.breakers.is_empty(), "{:?}", plan.breakers);
    assert!(
        plan.held[0]
            .reason
            .contains("confidence low: below advise.min_confidence (medium)"),
        "{}",
        plan.held[0].reason
    );
    let agree = FakeNights(tonight_cost, |_, p| tonight_cost(p));
    assert_eq!(
        plan_with_replay_under(&h, &agree, &medium).breakers.len(),
        1
    );

    // The nights weighed are bounded: each earlier one is analysed again.
    for (nights, ok) in [(0, false), (1, true), (90, true), (91, false)] {
        let s = AdviseSettings {
            evidence_nights: nights,
            ..AdviseSettings::default()
        };
        assert_eq!(s.validate().is_ok(), ok, "evidence_nights {nights}");
    }

    // Tonight and last night win, the two before lose a little: mixed, low. The night
    // two back alone losing: three of four, medium.
    let mixed: fn(u32, &ReplayPolicy) -> u64 = |k, p| {
        if k == 1 {
            (1000.0 - 5.0 * p.reset_timeout_s) as u64
        } else {
            (600.0 + p.reset_timeout_s) as u64
        }
    };
    let plan = plan_with_replay(&h, &FakeNights(tonight_cost, mixed));
    assert_eq!(plan.breakers[0].confidence, Some(Confidence::Low));
    let once: fn(u32, &ReplayPolicy) -> u64 = |k, p| {
        if k == 2 {
            (600.0 + p.reset_timeout_s) as u64
        } else {
            (1000.0 - 5.0 * p.reset_timeout_s) as u64
        }
    };
    let plan = plan_with_replay(&h, &FakeNights(tonight_cost, once));
    let c = &plan.breakers[0];
    assert_eq!(c.confidence, Some(Confidence::Medium), "{}", c.reason);
    assert!(
        c.reason
            .contains("it wins 3 of the 4 nights replayed (loses 1)"),
        "{}",
        c.reason
    );
}

#[test]
fn the_replay_chooses_fail_max_among_the_candidates_and_names_them() {
    // b.example runs the defaults' fail_max 5. Background: 190 single failures and 10
    // bursts of 2 a day, so fail_max 2 would open 10 times a day (over the budget of 1)
    // and 3 is the floor. Outages come in bursts of 3: the heuristic proposes 3.
    let mut h = host("b.example");
    h.background_bursts = [vec![1; 190], vec![2; 10]].concat();
    h.incidents = vec![incident(1_000_000, 60, None)];
    h.incident_bursts = vec![3; 7];
    let s = AdviseSettings {
        max_fail_max_step: 3,
        ..AdviseSettings::default()
    };
    let chosen = |r: &FakeReplayFrom| {
        let plan = plan_with_replay_under(&h, r, &s);
        plan.breakers
            .iter()
            .find(|c| c.key == BreakerKey::FailMax)
            .cloned()
    };

    // A replay in which lower is always cheaper would take 2, but 2 is below the floor:
    // the lowest candidate is 3.
    let c = chosen(&FakeReplayFrom(5, |p| u64::from(p.fail_max) * 10)).unwrap();
    assert_eq!((c.from.as_f64(), c.to), (5.0, 3));
    assert!(
        c.reason.contains(
            "fail_max candidates (false opens a day expected from the background bursts, replayed failures let into incidents, healthy calls blocked): 3: 0, 0, 30; 4: 0, 0, 40; 5: 0, 0, 50; the replay chooses 3"
        ),
        "{}",
        c.reason
    );
    assert!(
        !c.reason.contains(" 2: "),
        "2 is not a candidate: {}",
        c.reason
    );

    // A replay that prefers 4 moves it one step less than the heuristic, and the
    // evidence follows the chosen value.
    let c = chosen(&FakeReplayFrom(5, |p| {
        10 * (u64::from(p.fail_max.abs_diff(4)) + 1)
    }))
    .unwrap();
    assert_eq!(c.to, 4);
    assert!(
        c.reason.contains("the replay grid prefers 4 to 3"),
        "{}",
        c.reason
    );
    assert!(c.reason.contains("the replay chooses 4"), "{}", c.reason);
    assert_eq!(c.evidence["false_opens_per_day_proposed"], Num::Int(0));

    // A replay in which the current value is best: no fail_max change.
    assert!(chosen(&FakeReplayFrom(5, |p| u64::from(p.fail_max.abs_diff(5)))).is_none());

    // Raising: the current value is a candidate too, with the false opens it gives
    // (a.example runs 3; 12 bursts of 3 a day reach it).
    let mut a = host("a.example");
    a.background_bursts = [vec![1; 150], vec![2; 38], vec![3; 12]].concat();
    let plan = plan_with_replay_under(
        &a,
        &FakeReplayFrom(3, |p| 10 * u64::from(p.fail_max.abs_diff(5))),
        &AdviseSettings::default(),
    );
    let c = &plan.breakers[0];
    assert_eq!(
        (c.key, c.from.as_f64(), c.to),
        (BreakerKey::FailMax, 3.0, 5)
    );
    assert!(
        c.reason
            .contains("3: 12, 0, 20; 4: 0, 0, 10; 5: 0, 0, 0; the replay chooses 5"),
        "{}",
        c.reason
    );
}

#[test]
fn noise_that_trips_the_breaker_raises_it_even_when_outages_come_in_short_bursts() {
    // a.example runs 3; 12 background bursts of 3 a day reach it (the floor is 4), and
    // half the incident failures come in bursts of 2: no value separates the two, but
    // 12 false opens a day against the budget of 1 is the larger harm. The rule
    // proposes the raise and says what it costs; the replay (when given) weighs it.
    let mut h = host("a.example");
    h.background_bursts = [vec![1; 150], vec![2; 38], vec![3; 12]].concat();
    h.incidents = vec![incident(1_000_000, 60, None)];
    h.incident_bursts = vec![2; 7];
    let plan = plan_for(&[h.clone()], &AdviseSettings::default());
    let c = plan
        .breakers
        .iter()
        .find(|c| c.key == BreakerKey::FailMax)
        .unwrap_or_else(|| panic!("{:#?}", plan.held));
    assert_eq!((c.from.as_f64(), c.to), (3.0, 4));
    assert!(
        c.reason.contains(
            "half the failures inside incidents come in bursts of 2 or more, which a fail_max of 4 lets through"
        ),
        "{}",
        c.reason
    );
    // Noise within the budget at the current value: held as before.
    h.background_bursts = [vec![1; 199], vec![3; 1]].concat();
    h.incident_bursts = vec![1; 7];
    let plan = plan_for(&[h], &AdviseSettings::default());
    assert!(plan.breakers.is_empty(), "{:#?}", plan.breakers);
    assert!(
        plan.held
            .iter()
            .any(|x| x.reason.contains("no value separates")),
        "{:#?}",
        plan.held
    );
}

/// a.example with Retry-After evidence: the reset rule proposes 60 -> 100, and a 10%
/// 429 share lowers its metadata rates.
fn retry_after_host() -> HostEvidence {
    let mut h = host("a.example");
    h.opens = 4;
    h.retry_after_samples = 120;
    h.retry_after_median_s = Some(100.0);
    h.roles[0].e429 = 5_000;
    h
}

/// The plan for `h` under the given config texts, settings and memory of earlier nights.
fn plan_remembering(
    breakers: &str,
    rates: &str,
    h: &HostEvidence,
    s: &AdviseSettings,
    previous: Previous<'_>,
) -> Plan {
    let cfg = BreakerConfig::parse(breakers, Path::new("breakers.yaml")).unwrap();
    let rl = RateLimits::parse(rates, Path::new("ratelimits.yaml")).unwrap();
    advise(
        std::slice::from_ref(h),
        &Current {
            breakers: &cfg,
            model: &CrawlerModel::default(),
            ratelimits: Some(&rl),
            baselines: &RateBaselines::new(),
            replay: None,
            previous,
        },
        s,
    )
}

#[test]
fn a_gain_below_the_minimum_is_left_alone_with_its_numbers() {
    let mut h = host("a.example");
    h.opens = 4;
    h.retry_after_samples = 120;
    h.retry_after_median_s = Some(100.0);
    let held = |plan: &Plan| {
        assert!(plan.breakers.is_empty(), "{:?}", plan.breakers);
        plan.held
            .iter()
            .find(|x| x.reason.contains("too small"))
            .map(|x| x.reason.clone())
            .expect("held as too small")
    };
    // 940 -> 880: 60 calls, but 6% of the cost.
    let share = FakeReplay(|p| (1000.0 - p.reset_timeout_s) as u64);
    let why = held(&plan_with_replay(&h, &share));
    assert!(why.contains("60 of 940 calls (6%)"), "{why}");
    assert!(why.contains("(at least 10% and 5 calls)"), "{why}");
    // 18 -> 16: 11% of the cost, but 2 calls.
    let calls = FakeReplay(|p| (20.0 - p.reset_timeout_s / 30.0) as u64);
    let why = held(&plan_with_replay(&h, &calls));
    assert!(why.contains("2 of 18 calls (11%)"), "{why}");
    // The thresholds are the operator's: at zero both changes go through.
    let any = AdviseSettings {
        min_gain_share: 0.0,
        min_gain_calls: 0,
        ..AdviseSettings::default()
    };
    assert_eq!(plan_with_replay_under(&h, &share, &any).breakers[0].to, 120);
    // (100 and 120 both cost 16 there: the tie goes to the rule's own 100.)
    assert_eq!(plan_with_replay_under(&h, &calls, &any).breakers[0].to, 100);
}

#[test]
fn a_pin_holds_a_value_a_role_or_a_host_in_the_file_or_the_settings() {
    let s = AdviseSettings::default();
    let h = retry_after_host();
    let none = Previous::default();
    let plan = plan_remembering(BREAKERS, RATES, &h, &s, none);
    assert_eq!(
        change(&plan, "a.example", None, BreakerKey::ResetTimeoutS),
        Some((60.0, 100)),
        "unpinned, both change"
    );
    assert_eq!(plan.rates.len(), 1);

    // The value's own line: that value stays, the host's others move.
    let value = BREAKERS.replace(
        "    reset_timeout_s: 60\n",
        "    reset_timeout_s: 60 # breaker-advisor: keep\n",
    );
    let plan = plan_remembering(&value, RATES, &h, &s, none);
    assert!(plan.breakers.is_empty(), "{:?}", plan.breakers);
    assert_eq!(plan.rates.len(), 1, "a breakers.yaml pin holds no rate");
    let why = &plan.held[0].reason;
    assert!(
        why.starts_with("pinned: reset_timeout_s 60 -> 100 not proposed")
            && why.contains("breakers.yaml line 11, hosts.a.example.reset_timeout_s"),
        "{why}"
    );
    let other = BREAKERS.replace(
        "    fail_max: 3\n",
        "    fail_max: 3 # breaker-advisor: keep\n",
    );
    let plan = plan_remembering(&other, RATES, &h, &s, none);
    assert_eq!(
        change(&plan, "a.example", None, BreakerKey::ResetTimeoutS),
        Some((60.0, 100)),
        "a pin on fail_max holds fail_max only"
    );

    // The host's key line: the whole host, in that file.
    let host_pin = BREAKERS.replace("  a.example:\n", "  a.example:  # breaker-advisor: keep\n");
    let plan = plan_remembering(&host_pin, RATES, &h, &s, none);
    assert!(plan.breakers.is_empty() && plan.rates.len() == 1);
    assert!(plan.held[0].reason.contains("line 9, hosts.a.example)"));

    // A role's line in ratelimits.yaml holds its rates.
    let role_pin = RATES.replace(
        "    metadata: {rates: [\"50/SECOND\", \"10000/HOUR\"]}",
        "    metadata: {rates: [\"50/SECOND\", \"10000/HOUR\"]} # breaker-advisor: keep",
    );
    let plan = plan_remembering(BREAKERS, &role_pin, &h, &s, none);
    assert!(plan.rates.is_empty(), "{:?}", plan.rates);
    assert_eq!(plan.breakers.len(), 1);
    assert!(
        plan.held[0]
            .reason
            .starts_with("pinned: metadata rates 50/SECOND, 10000/HOUR -> 40/SECOND, 8000/HOUR"),
        "{}",
        plan.held[0].reason
    );

    // The settings file: a host's key, and a whole host (both files).
    let pinned = |pins: &str| AdviseSettings {
        pins: yaml_serde::from_str(pins).unwrap(),
        ..AdviseSettings::default()
    };
    let key = pinned("[{host: A.Example, key: reset_timeout_s}]");
    key.validate().unwrap();
    let plan = plan_remembering(BREAKERS, RATES, &h, &key, none);
    assert!(plan.breakers.is_empty() && plan.rates.len() == 1);
    assert!(
        plan.held[0]
            .reason
            .contains("advise.pins in breaker-advisor.yaml")
    );
    let whole = pinned("[{host: a.example}]");
    let plan = plan_remembering(BREAKERS, RATES, &h, &whole, none);
    assert!(plan.breakers.is_empty() && plan.rates.is_empty());
    assert_eq!(plan.held.len(), 2);
    assert!(
        pinned("[{host: a.example, key: fail_maxx}]")
            .validate()
            .is_err()
    );
}

#[test]
fn a_change_a_person_set_back_is_held_for_the_configured_nights_then_proposed_again() {
    let s = AdviseSettings::default();
    let h = retry_after_host();
    // Last night's patch moved reset_timeout_s 60 -> 100 and the rates down; the files
    // say 60 and the old rates again: a person set both back.
    let last = plan_remembering(BREAKERS, RATES, &h, &s, Previous::default());
    assert_eq!((last.breakers.len(), last.rates.len()), (1, 1));
    let night = |tonight: &str, reverted: &[_], breakers: &str| {
        plan_remembering(
            breakers,
            RATES,
            &h,
            &s,
            Previous {
                breakers: &last.breakers,
                breakers_applied: true,
                rates: &last.rates,
                rates_applied: true,
                reverted,
                tonight,
            },
        )
    };
    let first = night("2026-12-06", &[], BREAKERS);
    assert!(first.breakers.is_empty() && first.rates.is_empty());
    assert_eq!(first.reverted.len(), 2);
    assert!(first.reverted.iter().all(|r| r.since == "2026-12-06"));
    let why = &first.held[0].reason;
    assert!(
        why.starts_with(
            "reverted by a person on 2026-12-06: reset_timeout_s was set back from 100 to 60"
        ) && why.contains("not proposed again before 2026-12-13"),
        "{why}"
    );
    assert!(first.held[1].reason.contains("rates was set back"));

    // Six nights on, the memory (carried by the patch file) still holds them, from the
    // night the revert was seen; last night's patch no longer lists the changes.
    let later = |tonight: &str| {
        plan_remembering(
            BREAKERS,
            RATES,
            &h,
            &s,
            Previous {
                reverted: &first.reverted,
                tonight,
                ..Previous::default()
            },
        )
    };
    let sixth = later("2026-12-12");
    assert!(sixth.breakers.is_empty() && sixth.rates.is_empty());
    assert_eq!(sixth.reverted, first.reverted);
    // The seventh night, the hold is over: proposed again (without a replay there is
    // no confidence to ask for), and the memory goes with the change.
    let seventh = later("2026-12-13");
    assert_eq!((seventh.breakers.len(), seventh.rates.len()), (1, 1));
    assert!(seventh.reverted.is_empty());
    // With a replay, the breaker change comes back only with high confidence: one
    // night's evidence (low) keeps it held and remembered; every night alike lets it go.
    let replayed = |r: &dyn ReplayCheck| {
        let memory = Previous {
            reverted: &first.reverted,
            tonight: "2026-12-13",
            ..Previous::default()
        };
        plan_remembering_replay(&h, r, &s, memory)
    };
    let low = replayed(&FakeReplay(tonight_cost));
    assert!(low.breakers.is_empty(), "{:?}", low.breakers);
    assert!(
        low.held.iter().any(|x| x.reason.contains(
            "after the hold, reset_timeout_s 60 -> 120 comes back only with high confidence across the nights replayed, and it has low"
        )),
        "{:?}",
        low.held
    );
    let remembered = |p: &Plan| p.reverted.iter().any(|r| r.key == "reset_timeout_s");
    assert!(remembered(&low));
    let high = replayed(&FakeNights(tonight_cost, |_, p| tonight_cost(p)));
    assert_eq!(high.breakers[0].confidence, Some(Confidence::High));
    assert!(!remembered(&high), "{:?}", high.reverted);
    // (The rates' revert stays remembered: this run reads no ratelimits.yaml.)
    assert!(high.reverted.iter().all(|r| r.key == "rates"));

    // A patch never applied (not written, the files as it found them): no revert.
    let unpatched = plan_remembering(
        BREAKERS,
        RATES,
        &h,
        &s,
        Previous {
            breakers: &last.breakers,
            rates: &last.rates,
            tonight: "2026-12-06",
            ..Previous::default()
        },
    );
    assert!(unpatched.reverted.is_empty());
    assert_eq!((unpatched.breakers.len(), unpatched.rates.len()), (1, 1));
    // A patch that was applied (the file says 100) is no revert.
    let applied = BREAKERS.replace("    reset_timeout_s: 60\n", "    reset_timeout_s: 100\n");
    let plan = night("2026-12-06", &[], &applied);
    assert!(
        plan.reverted.iter().all(|r| r.key == "rates"),
        "{:?}",
        plan.reverted
    );
}
