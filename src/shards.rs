//! Shards: a fleet too large for one machine is advised by N jobs, each on the hosts
//! whose stable hash falls in its shard, and one merge that makes the fleet's patch,
//! diff and report from what the shard jobs wrote.
//!
//! A shard job (`run --shard I/N`) exports only its hosts (every row is still read, so
//! every shard counts the same rejected rows), analyzes, detects, calibrates and advises
//! them as a whole run does, and writes `OUT/shard=I/`: its dataset, its metrics and
//! `shard.yaml` ([`ShardRecord`]: its plan, its calibration misses, the dataset facts the
//! report needs, and the inputs it was made from). The merge (`run --merge-shards`)
//! needs only those records and metrics, not the datasets: it checks that the shards
//! are complete and were made from the same inputs, concatenates their metrics in host
//! order (no per-host table reads another host's rows, see [`crate::groups`]), merges
//! their plans in host order, and writes what one run over the whole fleet writes.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::Context;
use polars::prelude::*;
use serde::{Deserialize, Serialize};

use crate::advise::Plan;
use crate::crawler::CrawlerModel;
use crate::layout::{MetricsFolder, RunFolder, SHARD_PREFIX, SHARD_RECORD, Table};
use crate::patch::PatchWindow;
use crate::replay::calibrate::{Calibration, Evaluated};
use crate::shard::Shard;

const FORMAT_VERSION: u32 = 2;

/// What the report reads from the dataset rather than from the metrics: the input
/// losses the manifest records, and the Retry-After values and breaker open spans of
/// the hosts with a section.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetFacts {
    pub sources: usize,
    /// (source, "table: reason", rows) of rejected rows.
    pub rejected: Vec<(String, String, u64)>,
    /// (source, table, dates) lost with missing part files.
    pub incomplete: Vec<(String, String, String)>,
    /// (source, "table.column: what", values) set to NULL or clamped on export: each
    /// shard counts its own hosts' values, and the merge sums them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub adjusted: Vec<(String, String, u64)>,
    pub retry_after: BTreeMap<String, Vec<f64>>,
    /// Open spans (µs) per host, from the recorded transitions.
    pub opens: BTreeMap<String, Vec<(i64, i64)>>,
}

/// What a shard was made from; every shard of a night and the merge must agree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShardInputs {
    pub breakers_sha256: String,
    pub ratelimits_sha256: Option<String>,
    /// SHA-256 of the effective settings (the settings file as loaded).
    pub settings_sha256: String,
    /// The previous patch file the advice built on (hysteresis, baselines, version).
    pub previous_patch_sha256: Option<String>,
}

/// `OUT/shard=I/shard.yaml`: what the merge needs of a shard besides its metrics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShardRecord {
    pub format_version: u32,
    pub tool_version: String,
    pub shard: String,
    pub window: PatchWindow,
    pub inputs: ShardInputs,
    /// The telemetry read: per source, per stream, the highest row id (every shard reads
    /// every row, so the shards of one night agree).
    pub telemetry: BTreeMap<String, BTreeMap<String, i64>>,
    /// Where the fleet's calls begin (the manifest's, the baseline's coverage).
    pub data_start_us: Option<i64>,
    /// The hosts this shard advised.
    pub hosts: usize,
    /// The model this shard counted by.
    pub model: CrawlerModel,
    /// With `crawler: auto`, the calibration's fits on this shard's hosts (every model
    /// its descent replayed) and what those hosts show.
    pub calibration: Option<Evaluated>,
    pub plan: Plan,
    pub facts: DatasetFacts,
}

impl ShardRecord {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        shard: Shard,
        window: PatchWindow,
        inputs: ShardInputs,
        telemetry: &crate::telemetry::manifest::Manifest,
        hosts: usize,
        model: CrawlerModel,
        calibration: Option<Evaluated>,
        plan: Plan,
        facts: DatasetFacts,
    ) -> ShardRecord {
        ShardRecord {
            format_version: FORMAT_VERSION,
            tool_version: env!("CARGO_PKG_VERSION").to_owned(),
            shard: shard.to_string(),
            window,
            inputs,
            telemetry: telemetry
                .sources
                .iter()
                .map(|(source, s)| {
                    let ids = s
                        .tables
                        .iter()
                        .map(|(stream, t)| (stream.clone(), t.high_water_id))
                        .collect();
                    (source.clone(), ids)
                })
                .collect(),
            data_start_us: telemetry.first_event_us(),
            hosts,
            model,
            calibration,
            plan,
            facts,
        }
    }

    pub fn to_yaml(&self) -> anyhow::Result<String> {
        Ok(yaml_serde::to_string(self)?)
    }
}

/// The crawler model of a sharded night.
#[derive(Debug, Clone, PartialEq)]
pub struct FleetModel {
    /// What every shard counted by: the model the fleet's calibration chose the night
    /// before (a shard cannot calibrate the fleet alone).
    pub counted: CrawlerModel,
    /// With `crawler: auto`, the fleet's calibration: one part per shard.
    pub calibration: Option<Calibration>,
}

/// The shards of a night, read from `OUT/shard=*/`, in shard order.
pub struct Shards {
    pub count: u32,
    /// (folder, record) per shard, shard 1 first.
    pub shards: Vec<(PathBuf, ShardRecord)>,
}

impl Shards {
    /// Reads every `OUT/shard=I/shard.yaml` (see [`Shards::read`]) and refuses shards
    /// made from inputs other than `expected` (the merge's own). `previous` is the patch
    /// file the merge found: one that a merge of this very window wrote is a rerun, not
    /// another previous patch.
    pub fn load(
        out: &Path,
        expected: &ShardInputs,
        previous: Option<&crate::patch::PatchFile>,
    ) -> anyhow::Result<Shards> {
        let shards = Shards::read(out)?;
        let rerun = previous.is_some_and(|p| &p.window == shards.window());
        for (folder, r) in &shards.shards {
            let same = ShardInputs {
                previous_patch_sha256: if rerun {
                    expected.previous_patch_sha256.clone()
                } else {
                    r.inputs.previous_patch_sha256.clone()
                },
                ..r.inputs.clone()
            };
            if &same != expected {
                let which = if r.inputs.breakers_sha256 != expected.breakers_sha256 {
                    "breakers.yaml"
                } else if r.inputs.ratelimits_sha256 != expected.ratelimits_sha256 {
                    "ratelimits.yaml"
                } else if r.inputs.settings_sha256 != expected.settings_sha256 {
                    "settings"
                } else {
                    "previous patch file"
                };
                bail_input!(
                    "{}: made from another {which} than this merge's; run the shards and the merge on the same config, settings and patch file",
                    folder.join(SHARD_RECORD).display()
                );
            }
        }
        Ok(shards)
    }

    /// Whether `out` holds shard folders.
    pub fn present(out: &Path) -> bool {
        std::fs::read_dir(out).is_ok_and(|d| {
            d.flatten()
                .any(|e| e.file_name().to_string_lossy().starts_with(SHARD_PREFIX))
        })
    }

    /// Reads every `OUT/shard=I/shard.yaml`; refuses an incomplete set, and shards of
    /// different counts, windows, tool versions, telemetry or inputs.
    pub fn read(out: &Path) -> anyhow::Result<Shards> {
        let mut found: BTreeMap<u32, (PathBuf, ShardRecord)> = BTreeMap::new();
        let entries =
            std::fs::read_dir(out).with_context(|| format!("reading {}", out.display()))?;
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(i) = name.strip_prefix(SHARD_PREFIX) else {
                continue;
            };
            let folder = e.path();
            let path = folder.join(SHARD_RECORD);
            if !path.is_file() {
                bail_input!(
                    "{}: the shard job did not finish (no {SHARD_RECORD})",
                    folder.display()
                );
            }
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            let record: ShardRecord =
                yaml_serde::from_str(&text).map_err(|e| input_error!("{}: {e}", path.display()))?;
            if record.format_version != FORMAT_VERSION {
                bail_input!(
                    "{}: format_version {}, this tool reads {FORMAT_VERSION}",
                    path.display(),
                    record.format_version
                );
            }
            let shard: Shard = record
                .shard
                .parse()
                .map_err(|e| input_error!("{}: {e}", path.display()))?;
            if i != shard.index.to_string() {
                bail_input!("{}: holds shard {shard}, not shard {i}", folder.display());
            }
            found.insert(shard.index, (folder, record));
        }
        let Some((_, (_, first))) = found.first_key_value() else {
            bail_input!(
                "{}: no shard=I/ folders; run `run --shard I/N` for each shard first",
                out.display()
            );
        };
        let count: u32 = first.shard.parse::<Shard>().map(|s| s.count).unwrap_or(0);
        let missing: Vec<String> = (1..=count)
            .filter(|i| !found.contains_key(i))
            .map(|i| format!("{i}/{count}"))
            .collect();
        if !missing.is_empty() {
            bail_input!(
                "{}: shard(s) {} missing; every shard must finish before the merge",
                out.display(),
                missing.join(", ")
            );
        }
        let shards: Vec<(PathBuf, ShardRecord)> = found.into_values().collect();
        let (folder0, r0) = &shards[0];
        let tool = env!("CARGO_PKG_VERSION");
        for (folder, r) in &shards {
            let differs = |what: &str| {
                input_error!(
                    "{} and {} differ in {what}: the shards of one night must be made by the same tool from the same inputs",
                    folder0.join(SHARD_RECORD).display(),
                    folder.join(SHARD_RECORD).display()
                )
            };
            if r.shard.parse::<Shard>().map(|s| s.count).unwrap_or(0) != count {
                return Err(differs("their shard count").into());
            }
            if r.tool_version != tool {
                bail_input!(
                    "{}: made by breaker-advisor {}, this is {tool}",
                    folder.join(SHARD_RECORD).display(),
                    r.tool_version
                );
            }
            if r.window != r0.window {
                return Err(differs("their window (pass the same --now to every shard)").into());
            }
            if r.data_start_us != r0.data_start_us {
                return Err(differs("where their data begins (a dataset that lost rows, or one exported before it was recorded)").into());
            }
            if r.telemetry != r0.telemetry {
                return Err(differs(
                    "the telemetry they read (files or rows; fetch it once for every shard)",
                )
                .into());
            }
            if r.facts.sources != r0.facts.sources || r.facts.rejected != r0.facts.rejected {
                return Err(differs("the telemetry they read (sources or rejected rows)").into());
            }
            if r.inputs != r0.inputs {
                return Err(differs("their inputs (config, settings or patch file)").into());
            }
        }
        Ok(Shards { count, shards })
    }

    /// The window every shard analysed.
    pub fn window(&self) -> &PatchWindow {
        &self.shards[0].1.window
    }

    /// The model the shards counted by (they all must have, unless they have no hosts)
    /// and, with `crawler: auto`, the fleet's calibration from `base` (the settings'
    /// model): every shard's fits, summed where all of them replayed a model.
    pub fn model(&self, base: &CrawlerModel) -> anyhow::Result<FleetModel> {
        // A shard without hosts counted nothing: any model gives its (empty) tables.
        let counting: Vec<&(PathBuf, ShardRecord)> =
            self.shards.iter().filter(|(_, r)| r.hosts > 0).collect();
        let counted = counting
            .first()
            .map_or(&self.shards[0].1.model, |(_, r)| &r.model)
            .clone();
        for (folder, r) in &counting {
            if r.model != counted {
                bail_input!(
                    "{}: counted by another crawler model than the other shards",
                    folder.display()
                );
            }
        }
        let calibrated = self.shards[0].1.calibration.is_some();
        if let Some((folder, _)) = self
            .shards
            .iter()
            .find(|(_, r)| r.calibration.is_some() != calibrated)
        {
            bail_input!(
                "{}: {} the crawler model, shard 1 {}",
                folder.display(),
                if calibrated {
                    "did not calibrate"
                } else {
                    "calibrated"
                },
                if calibrated { "did" } else { "did not" }
            );
        }
        let calibration = calibrated.then(|| {
            Calibration::new(
                base,
                self.shards
                    .iter()
                    .filter_map(|(_, r)| r.calibration.clone())
                    .collect(),
            )
        });
        Ok(FleetModel {
            counted,
            calibration,
        })
    }

    /// The fleet's plan: the shards' plans in host order.
    pub fn plan(&self) -> Plan {
        let mut plan = Plan::default();
        for (_, r) in &self.shards {
            let p = &r.plan;
            plan.breakers.extend(p.breakers.iter().cloned());
            plan.crawler_changes
                .extend(p.crawler_changes.iter().cloned());
            plan.rates.extend(p.rates.iter().cloned());
            plan.held.extend(p.held.iter().cloned());
            plan.reverted.extend(p.reverted.iter().cloned());
        }
        // Stable: a host's entries keep the order its shard gave them.
        plan.breakers.sort_by(|a, b| a.host.cmp(&b.host));
        plan.crawler_changes.sort_by(|a, b| a.host.cmp(&b.host));
        plan.rates.sort_by(|a, b| a.host.cmp(&b.host));
        plan.held.sort_by(|a, b| a.host.cmp(&b.host));
        plan.reverted.sort_by(|a, b| a.host.cmp(&b.host));
        // Every shard carries the previous night's baselines of every host; the shard
        // that owns a host may have recorded or changed its own.
        let hosts: BTreeSet<&String> = self
            .shards
            .iter()
            .flat_map(|(_, r)| r.plan.baselines.keys())
            .collect();
        for host in hosts {
            let owner = self.shards.iter().find(|(_, r)| {
                r.shard
                    .parse::<Shard>()
                    .is_ok_and(|s| s.owns(host.as_str()))
            });
            if let Some(b) = owner.and_then(|(_, r)| r.plan.baselines.get(host)) {
                plan.baselines.insert(host.clone(), b.clone());
            }
        }
        plan
    }

    /// The report's dataset facts of the fleet.
    pub fn facts(&self) -> DatasetFacts {
        let first = &self.shards[0].1.facts;
        let mut incomplete: BTreeSet<(String, String, String)> = BTreeSet::new();
        let mut adjusted: BTreeMap<(String, String), u64> = BTreeMap::new();
        let mut facts = DatasetFacts {
            sources: first.sources,
            rejected: first.rejected.clone(),
            ..DatasetFacts::default()
        };
        for (_, r) in &self.shards {
            incomplete.extend(r.facts.incomplete.iter().cloned());
            for (source, what, n) in &r.facts.adjusted {
                *adjusted.entry((source.clone(), what.clone())).or_default() += n;
            }
            facts.retry_after.extend(
                r.facts
                    .retry_after
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone())),
            );
            facts
                .opens
                .extend(r.facts.opens.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        facts.incomplete = incomplete.into_iter().collect();
        facts.adjusted = adjusted.into_iter().map(|((s, w), n)| (s, w, n)).collect();
        facts
    }

    /// Writes the fleet's metrics tables into `metrics`: each shard's table, stacked and
    /// ordered by host (a host's rows are all in one shard, in their order). Every shard
    /// must have written its tables with the same metadata (window, config, settings).
    pub fn merge_metrics(&self, metrics: &MetricsFolder) -> anyhow::Result<()> {
        // Every table is read and checked before the first one is written.
        let mut merged = Vec::new();
        for table in Table::MERGED {
            let mut frames = Vec::new();
            let mut meta: Option<(PathBuf, Vec<(String, String)>)> = None;
            for (folder, _) in &self.shards {
                let path = RunFolder::new(folder).metrics().table(table);
                let read = || -> anyhow::Result<_> {
                    Ok((
                        crate::output::parquet_metadata(&path)?,
                        crate::output::read_parquet(&path)?,
                    ))
                };
                let (m, df) = read().with_context(|| format!("reading {}", path.display()))?;
                match &meta {
                    None => meta = Some((path.clone(), m)),
                    Some((first, m0)) if *m0 != m => bail_input!(
                        "{} and {} were written with different metadata (window, config or settings)",
                        first.display(),
                        path.display()
                    ),
                    Some(_) => {}
                }
                frames.push(df.lazy());
            }
            let (_, meta) = meta.expect("a night has at least one shard");
            let mut df = concat(frames, UnionArgs::default())
                .and_then(|lf| {
                    lf.sort(
                        ["host"],
                        SortMultipleOptions::default().with_maintain_order(true),
                    )
                    .collect()
                })
                .map_err(|e| anyhow::anyhow!("merging the shards' {}: {e}", table.file_name()))?;
            df.rechunk_mut();
            merged.push((metrics.table(table), df, meta));
        }
        std::fs::create_dir_all(metrics)
            .with_context(|| format!("creating {}", metrics.display()))?;
        for (path, df, meta) in merged {
            crate::output::write_parquet_atomic(&df, &path, meta)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(shard: &str, model: &CrawlerModel, misses: &[(CrawlerModel, u64)]) -> ShardRecord {
        ShardRecord::new(
            shard.parse().unwrap(),
            PatchWindow {
                start: "2025-11-25T00:00:00Z".into(),
                end: "2025-11-26T00:00:00Z".into(),
            },
            ShardInputs {
                breakers_sha256: "b".into(),
                ratelimits_sha256: None,
                settings_sha256: "s".into(),
                previous_patch_sha256: None,
            },
            &crate::telemetry::manifest::Manifest::default(),
            1,
            model.clone(),
            Some(Evaluated {
                signs: crate::replay::calibrate::Signs {
                    retried_rows: 1,
                    ..Default::default()
                },
                fits: misses
                    .iter()
                    .map(|(m, d)| {
                        let fit = crate::replay::calibrate::Fit {
                            open_miss: *d,
                            inferred: 0,
                            score: *d,
                        };
                        (m.clone(), fit)
                    })
                    .collect(),
            }),
            Plan::default(),
            DatasetFacts::default(),
        )
    }

    fn shards(records: Vec<ShardRecord>) -> Shards {
        Shards {
            count: records.len() as u32,
            shards: records
                .into_iter()
                .enumerate()
                .map(|(i, r)| (PathBuf::from(format!("out/shard={}", i + 1)), r))
                .collect(),
        }
    }

    #[test]
    fn the_fleet_s_calibration_sums_every_shard_s_fits() {
        let documented = CrawlerModel::default();
        let other = CrawlerModel {
            count_retries: !documented.count_retries,
            ..documented.clone()
        };
        // (documented's misses, other's misses) on one shard's hosts.
        let misses = |d: u64, o: u64| [(documented.clone(), d), (other.clone(), o)];
        // Shard 2 alone prefers the other model; every shard counted by the documented
        // one (the previous night's choice), and the sums are the fleet's.
        let night = shards(vec![
            record("1/2", &documented, &misses(3, 0)),
            record("2/2", &documented, &misses(1, 5)),
        ]);
        let fleet = night.model(&documented).unwrap();
        assert_eq!(fleet.counted, documented);
        let cal = fleet.calibration.unwrap();
        assert_eq!(cal.fit(&documented).map(|f| f.open_miss), Some(4));
        assert_eq!(cal.fit(&other).map(|f| f.open_miss), Some(5));
        assert_eq!(cal.choose().model, documented, "4 < 5 over the fleet");
        // Shards that counted by different models do not merge...
        let night = shards(vec![
            record("1/2", &documented, &misses(3, 0)),
            record("2/2", &other, &misses(1, 5)),
        ]);
        let err = night.model(&documented).unwrap_err().to_string();
        assert!(
            err.contains("out/shard=2") && err.contains("another crawler model"),
            "{err}"
        );
        // ...unless the odd one has no hosts: it counted nothing.
        let mut empty = record("3/3", &documented, &misses(0, 0));
        empty.hosts = 0;
        let night = shards(vec![
            record("1/3", &other, &misses(30, 10)),
            record("2/3", &other, &misses(20, 0)),
            empty,
        ]);
        let fleet = night.model(&documented).unwrap();
        assert_eq!(fleet.counted, other);
        let cal = fleet.calibration.unwrap();
        assert_eq!(cal.fit(&other).map(|f| f.open_miss), Some(10));
        assert_eq!(cal.choose().model, other);
    }

    #[test]
    fn the_fleet_s_plan_is_in_host_order_with_each_host_s_baselines_from_its_shard() {
        let m = CrawlerModel::default();
        let hosts = [
            "a.example",
            "b.example",
            "c.example",
            "d.example",
            "e.example",
        ];
        let owner = |h: &str| {
            (1..=2)
                .find(|&i| Shard { index: i, count: 2 }.owns(h))
                .unwrap() as usize
        };
        let mut records = vec![record("1/2", &m, &[]), record("2/2", &m, &[])];
        let previous: BTreeMap<String, Vec<String>> =
            [("metadata".to_owned(), vec!["10/SECOND".to_owned()])].into();
        for h in hosts {
            let r = &mut records[owner(h) - 1];
            r.plan.held.push(crate::advise::Held {
                host: h.to_owned(),
                reason: format!("{h} first"),
            });
            r.plan.held.push(crate::advise::Held {
                host: h.to_owned(),
                reason: format!("{h} second"),
            });
            // Every shard carries every host's previous baselines; the owner records a
            // new one for its hosts.
            for (i, r) in records.iter_mut().enumerate() {
                let mine = i + 1 == owner(h);
                let rates = if mine { "5/SECOND" } else { "10/SECOND" };
                r.plan.baselines.insert(
                    h.to_owned(),
                    [("metadata".to_owned(), vec![rates.to_owned()])].into(),
                );
            }
        }
        assert!(hosts.iter().any(|h| owner(h) == 1) && hosts.iter().any(|h| owner(h) == 2));
        let plan = shards(records).plan();
        let held: Vec<&str> = plan.held.iter().map(|h| h.reason.as_str()).collect();
        let expected: Vec<String> = hosts
            .iter()
            .flat_map(|h| [format!("{h} first"), format!("{h} second")])
            .collect();
        assert_eq!(held, expected);
        assert_eq!(plan.baselines.len(), hosts.len());
        for b in plan.baselines.values() {
            assert_ne!(b, &previous);
            assert_eq!(b["metadata"], ["5/SECOND"]);
        }
    }
}
