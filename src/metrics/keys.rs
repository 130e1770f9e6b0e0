//! Interned row keys for the per-row passes (bursts here, the replay's traffic): host,
//! role and instance codes, and the columns read out as plain vectors.

use polars::prelude::*;

use crate::crawler::Scope;

use super::classify::INSTANCE_SEPARATOR;

/// A column's values as a plain vector, NULL as `null` (reading a ChunkedArray by
/// index looks up the chunk every time).
pub(super) fn values<T: PolarsNumericType>(
    ca: &ChunkedArray<T>,
    null: T::Native,
) -> Vec<T::Native> {
    ca.iter().map(|v| v.unwrap_or(null)).collect()
}

/// A boolean column as a plain vector, NULL as false.
pub(super) fn flags(ca: &BooleanChunked) -> Vec<bool> {
    ca.iter().map(|v| v.unwrap_or(false)).collect()
}

/// A string column as dense codes, numbered in the sorted order of its values (NULL
/// first, as Polars sorts): rows then sort and group by four bytes instead of strings.
pub struct Codes {
    /// Each row's code.
    pub of_row: Vec<u32>,
    /// The values, by code (a few: hosts, sources, runs, roles).
    pub values: Vec<Option<String>>,
}

impl Codes {
    pub fn of(ca: &StringChunked) -> Codes {
        let mut seen: PlHashMap<Option<&str>, u32> = PlHashMap::default();
        let first_seen: Vec<u32> = ca
            .iter()
            .map(|v| {
                let next = seen.len() as u32;
                *seen.entry(v).or_insert(next)
            })
            .collect();
        let mut values: Vec<(Option<&str>, u32)> = seen.into_iter().collect();
        values.sort_unstable();
        let mut rank = vec![0u32; values.len()];
        for (r, (_, c)) in values.iter().enumerate() {
            rank[*c as usize] = r as u32;
        }
        Codes {
            of_row: first_seen.into_iter().map(|c| rank[c as usize]).collect(),
            values: values
                .into_iter()
                .map(|(v, _)| v.map(str::to_owned))
                .collect(),
        }
    }

    /// The value of code `c` (empty for NULL).
    pub fn name(&self, c: u32) -> String {
        self.values[c as usize].clone().unwrap_or_default()
    }
}

/// A group's rows keyed for the tables computed in plain Rust (bursts, rate windows):
/// the codes of the strings they group by, and each row's crawler process, computed
/// once per group.
pub struct RowKeys {
    pub hosts: Codes,
    pub roles: Codes,
    pub sources: Codes,
    /// Each row's crawler process (its source and run; see [`Instances`]): the breaker
    /// instance under a breaker per process, and the rate limiter under the `memory`
    /// backend.
    pub processes: Instances,
}

impl RowKeys {
    /// The keys of a frame with `host`, `role`, `source` and `run_id`.
    pub fn of<'a>(df: &'a DataFrame) -> PolarsResult<RowKeys> {
        let [host, source, run, role] = ["host", "source", "run_id", "role"].map(|c| df.column(c));
        let (host, source, run, role) = (host?.str()?, source?.str()?, run?.str()?, role?.str()?);
        // Four columns, coded side by side.
        let ((hosts, sources), (runs, roles)) = std::thread::scope(|s| {
            let pair = |a: &'a StringChunked, b: &'a StringChunked| {
                s.spawn(move || (Codes::of(a), Codes::of(b)))
            };
            let (first, second) = (pair(host, source), pair(run, role));
            (
                first.join().expect("no panic"),
                second.join().expect("no panic"),
            )
        });
        let processes = Instances::of_processes(&hosts, &sources, &runs);
        Ok(RowKeys {
            roles,
            hosts,
            sources,
            processes,
        })
    }

    /// Each row's breaker instance under `scope`.
    pub fn breakers(&self, scope: Scope) -> std::borrow::Cow<'_, Instances> {
        match scope {
            Scope::Process => std::borrow::Cow::Borrowed(&self.processes),
            Scope::Fleet => std::borrow::Cow::Owned(Instances {
                of_row: self.hosts.of_row.clone(),
                names: (0..self.hosts.values.len() as u32)
                    .map(|h| [self.hosts.name(h), String::new(), String::new()])
                    .collect(),
            }),
        }
    }
}

/// Each row's (host, source, run key) under a breaker per process: the run key is the
/// row's run (its code plus one), else the most frequent run of its source with the
/// same host (the smallest on a tie), else 0 (the empty run, as an empty run id).
pub(super) fn process_keys(
    hosts: &[u32],
    sources: &[u32],
    runs: &[u32],
    run_names: &[Option<String>],
) -> Vec<(u32, u32, u32)> {
    let run_key = |r: u32| match run_names[r as usize].as_deref() {
        None | Some("") => 0,
        Some(_) => r + 1,
    };
    let rows = || {
        hosts
            .iter()
            .zip(sources)
            .zip(runs)
            .map(|((&h, &s), &r)| (h, s, r))
    };
    let mut per_run: PlHashMap<(u32, u32, u32), u64> = PlHashMap::default();
    for (h, s, r) in rows().filter(|&(_, _, r)| run_names[r as usize].is_some()) {
        *per_run.entry((h, s, r)).or_default() += 1;
    }
    let mut usual: PlHashMap<(u32, u32), (u64, u32)> = PlHashMap::default();
    for ((h, s, r), n) in per_run {
        let best = usual.entry((h, s)).or_insert((n, r));
        if n > best.0 || (n == best.0 && r < best.1) {
            *best = (n, r);
        }
    }
    rows()
        .map(|(h, s, r)| {
            let key = match run_names[r as usize] {
                Some(_) => run_key(r),
                None => usual.get(&(h, s)).map_or(0, |&(_, u)| run_key(u)),
            };
            (h, s, key)
        })
        .collect()
}

/// The breaker instances of a frame's rows, by the rule of [`with_instance`]: under a
/// breaker per process, a row's host, source and run id, where a row without a run id
/// takes the most frequent run of its source with the same host (the smallest on a
/// tie; none: the empty run); under a fleet-wide breaker, its host.
#[derive(Clone)]
pub struct Instances {
    /// Each row's instance.
    pub of_row: Vec<u32>,
    /// Each instance's host, source and run key (source and run key are empty under a
    /// fleet-wide breaker), numbered in their sorted order.
    pub names: Vec<[String; 3]>,
}

impl Instances {
    /// The crawler processes of rows with these hosts, sources and run ids.
    pub(super) fn of_processes(hosts: &Codes, sources: &Codes, runs: &Codes) -> Instances {
        let keys = process_keys(&hosts.of_row, &sources.of_row, &runs.of_row, &runs.values);
        let mut distinct: Vec<(u32, u32, u32)> = keys.clone();
        distinct.sort_unstable();
        distinct.dedup();
        let code: PlHashMap<(u32, u32, u32), u32> = distinct
            .iter()
            .enumerate()
            .map(|(i, k)| (*k, i as u32))
            .collect();
        Instances {
            of_row: keys.iter().map(|k| code[k]).collect(),
            names: distinct
                .iter()
                .map(|&(h, s, r)| {
                    // Run keys count from 1; 0 is the empty run.
                    let run = r.checked_sub(1).map_or_else(String::new, |r| runs.name(r));
                    [hosts.name(h), sources.name(s), run]
                })
                .collect(),
        }
    }

    /// What [`with_instance`] calls instance `k`: nothing under a fleet-wide breaker,
    /// else its source and run.
    pub fn name(&self, k: usize, scope: Scope) -> String {
        match scope {
            Scope::Fleet => String::new(),
            Scope::Process => {
                let [_, source, run] = &self.names[k];
                format!("{source}{INSTANCE_SEPARATOR}{run}")
            }
        }
    }

    /// The rows of `keep`, by instance (instances in code order, rows in frame order):
    /// a counting sort.
    pub(super) fn rows_by_instance(
        &self,
        keep: impl Fn(usize) -> bool,
    ) -> (Vec<usize>, Vec<usize>) {
        let mut start = vec![0usize; self.names.len() + 1];
        for (i, &c) in self.of_row.iter().enumerate() {
            if keep(i) {
                start[c as usize + 1] += 1;
            }
        }
        for k in 1..start.len() {
            start[k] += start[k - 1];
        }
        let mut next = start.clone();
        let mut order = vec![0usize; start[self.names.len()]];
        for (i, &c) in self.of_row.iter().enumerate() {
            if keep(i) {
                order[next[c as usize]] = i;
                next[c as usize] += 1;
            }
        }
        (order, start)
    }
}
