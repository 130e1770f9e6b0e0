//! Evidence from several nights: tonight's replay answers are recorded while the plan is
//! made (`Recorder`); the hosts whose breaker proposals were replayed on a grid are then
//! analysed, detected and replayed on each earlier night the dataset holds, under the
//! same policies (`replay_earlier_nights`: only those hosts' rows are read, a group at a
//! time under the memory budget, into a scratch folder that is removed); and they are
//! advised again from the record (`Recorded` answers every question the first pass
//! asked, with the earlier nights as `ReplayCheck::past_figures`).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::Path;

use crate::advise::{RaisedCounted, ReplayCheck};
use crate::config::BreakerConfig;
use crate::crawler::CrawlerModel;
use crate::replay::traffic::OpenSpells;
use crate::replay::{Figures, ReplayPolicy};

/// The figures of each earlier night replayed: (nights before tonight, figures).
type EarlierFigures = Vec<(u32, Figures)>;

/// What the replay check said about one host.
#[derive(Debug, Clone, Default)]
struct HostRecord {
    current: Option<ReplayPolicy>,
    recorded_opens: Option<u64>,
    recorded_spells: Option<OpenSpells>,
    /// Tonight's figures per policy asked, in the order asked, with the earlier nights'.
    figures: Vec<(ReplayPolicy, Figures, EarlierFigures)>,
    raised: Vec<(ReplayPolicy, Option<RaisedCounted>)>,
}

/// The replay check's answers, by host.
#[derive(Debug, Clone, Default)]
pub struct Recorded {
    hosts: BTreeMap<String, HostRecord>,
}

impl Recorded {
    /// The hosts whose proposals were replayed on a grid (more than the current policy):
    /// the ones whose advice earlier nights can change.
    pub fn gridded_hosts(&self) -> Vec<String> {
        self.hosts
            .iter()
            .filter(|(_, r)| r.figures.len() > 1)
            .map(|(h, _)| h.clone())
            .collect()
    }

    /// Takes in another group's record (groups hold disjoint hosts).
    pub fn extend(&mut self, other: Recorded) {
        self.hosts.extend(other.hosts);
    }

    /// Adds the figures of night `nights_ago` for every policy asked of `host`.
    pub fn add_night(&mut self, host: &str, nights_ago: u32, check: &dyn ReplayCheck) {
        if let Some(r) = self.hosts.get_mut(host) {
            for (p, _, past) in &mut r.figures {
                past.push((nights_ago, check.figures(host, p)));
            }
        }
    }
}

/// A replay check that records every answer of the one it wraps.
pub struct Recorder<'a> {
    inner: &'a dyn ReplayCheck,
    log: RefCell<Recorded>,
}

impl<'a> Recorder<'a> {
    pub fn new(inner: &'a dyn ReplayCheck) -> Self {
        Recorder {
            inner,
            log: RefCell::new(Recorded::default()),
        }
    }

    pub fn into_recorded(self) -> Recorded {
        self.log.into_inner()
    }

    /// The record of `host`, made on first sight.
    fn host(&self, host: &str) -> std::cell::RefMut<'_, HostRecord> {
        std::cell::RefMut::map(self.log.borrow_mut(), |log| {
            log.hosts.entry(host.to_owned()).or_default()
        })
    }
}

impl ReplayCheck for Recorder<'_> {
    fn current(&self, host: &str) -> Option<ReplayPolicy> {
        let c = self.inner.current(host);
        self.host(host).current = c;
        c
    }

    fn figures(&self, host: &str, policy: &ReplayPolicy) -> Figures {
        let f = self.inner.figures(host, policy);
        let mut r = self.host(host);
        if !r.figures.iter().any(|(p, _, _)| p == policy) {
            r.figures.push((*policy, f.clone(), Vec::new()));
        }
        f
    }

    fn recorded_opens(&self, host: &str) -> Option<u64> {
        let o = self.inner.recorded_opens(host);
        self.host(host).recorded_opens = o;
        o
    }

    fn recorded_spells(&self, host: &str) -> Option<OpenSpells> {
        let o = self.inner.recorded_spells(host);
        self.host(host).recorded_spells = o;
        o
    }

    fn raised_counted(&self, host: &str, policy: &ReplayPolicy) -> Option<RaisedCounted> {
        let r = self.inner.raised_counted(host, policy);
        let mut h = self.host(host);
        if !h.raised.iter().any(|(p, _)| p == policy) {
            h.raised.push((*policy, r.clone()));
        }
        r
    }
}

/// The record answers what was asked of it; anything else was never asked (the second
/// pass asks the first pass's questions), and reads as no traffic.
impl ReplayCheck for Recorded {
    fn current(&self, host: &str) -> Option<ReplayPolicy> {
        self.hosts.get(host).and_then(|r| r.current)
    }

    fn figures(&self, host: &str, policy: &ReplayPolicy) -> Figures {
        self.find(host, policy)
            .map(|(f, _)| f.clone())
            .unwrap_or_default()
    }

    fn past_figures(&self, host: &str, policy: &ReplayPolicy) -> Vec<(u32, Figures)> {
        self.find(host, policy)
            .map(|(_, past)| past.clone())
            .unwrap_or_default()
    }

    fn recorded_opens(&self, host: &str) -> Option<u64> {
        self.hosts.get(host).and_then(|r| r.recorded_opens)
    }

    fn recorded_spells(&self, host: &str) -> Option<OpenSpells> {
        self.hosts.get(host).and_then(|r| r.recorded_spells)
    }

    fn raised_counted(&self, host: &str, policy: &ReplayPolicy) -> Option<RaisedCounted> {
        self.hosts
            .get(host)?
            .raised
            .iter()
            .find(|(p, _)| p == policy)
            .and_then(|(_, r)| r.clone())
    }
}

impl Recorded {
    fn find(&self, host: &str, policy: &ReplayPolicy) -> Option<(&Figures, &EarlierFigures)> {
        self.hosts
            .get(host)?
            .figures
            .iter()
            .find(|(p, _, _)| p == policy)
            .map(|(_, f, past)| (f, past))
    }
}

/// How to read the nights before tonight.
pub struct EarlierNights<'a> {
    pub config_path: &'a Path,
    /// Tonight's analysis (its window length, buckets, baseline, budget).
    pub analyze: crate::metrics::AnalyzeOptions,
    pub detect: crate::detect::DetectOptions,
    /// Where the earlier nights' metrics are computed; removed afterwards.
    pub scratch: &'a Path,
}

/// The night to replay: its dataset, the config as read and the crawler model.
pub struct Night<'a> {
    pub dataset: &'a Path,
    pub config: &'a BreakerConfig,
    pub model: &'a CrawlerModel,
    /// Tonight's end (epoch µs).
    pub end_us: i64,
}

/// Replays the gridded hosts of `recorded` on each of the `nights - 1` nights before
/// tonight, as far back as the dataset's data goes, under every policy asked of them
/// tonight. Returns how many earlier nights held traffic of those hosts.
pub fn replay_earlier_nights(
    recorded: &mut Recorded,
    e: &EarlierNights<'_>,
    tonight: &Night<'_>,
    nights: u32,
) -> anyhow::Result<u32> {
    let Night {
        dataset,
        config,
        model,
        end_us: tonight_end_us,
    } = *tonight;
    let hosts = recorded.gridded_hosts();
    if hosts.is_empty() || nights <= 1 {
        return Ok(0);
    }
    let data_start = crate::telemetry::manifest::Manifest::load(dataset)?.first_event_us();
    let window_us = e.analyze.window_s.saturating_mul(crate::metrics::US_PER_S);
    let result = (|| {
        let mut held = 0;
        for k in 1..nights {
            let end = tonight_end_us.saturating_sub(i64::from(k).saturating_mul(window_us));
            if data_start.is_none_or(|s| end <= s) {
                break;
            }
            let metrics = e.scratch.join(format!("night-{k}"));
            let opts = crate::metrics::AnalyzeOptions {
                now_us: Some(end),
                hosts: Some(hosts.clone()),
                // The replay needs the night's rows and incidents, not how it compares
                // with the week before it; and every one of these hosts' series, even on
                // a night it had few calls (tonight it had enough to be advised).
                baseline_s: None,
                min_series_calls: 0,
                ..e.analyze.clone()
            };
            let analyzed =
                super::analyze::analyze_into(dataset, &metrics, Some(e.config_path), &opts)?;
            if analyzed.hosts == 0 {
                continue;
            }
            // The incidents' spans are what the replay needs (not their Retry-After).
            let every_host = crate::detect::DetectOptions {
                min_calls: 0,
                ..e.detect.clone()
            };
            super::detect::detect_into(&metrics, None, &every_host)?;
            let groups = super::replay::TrafficGroups::open_for(
                dataset,
                &metrics,
                config,
                model,
                e.analyze.group_rows,
                Some(hosts.clone()),
            )?;
            let mut any = false;
            for g in 0..groups.count() {
                let traffic = groups.load(g)?;
                for host in &hosts {
                    if traffic.get(host).is_some() {
                        recorded.add_night(host, k, &traffic);
                        any = true;
                    }
                }
            }
            held += u32::from(any);
            std::fs::remove_dir_all(&metrics).ok();
        }
        anyhow::Ok(held)
    })();
    std::fs::remove_dir_all(e.scratch).ok();
    result
}
