//! One shard of a fleet: `--shard I/N` and the stable host hash that assigns each host
//! to its shard, night after night. Below the telemetry export, which keeps a shard's
//! hosts only; [`crate::shards`] records and merges the shard jobs.

use std::fmt;
use std::str::FromStr;

/// Shard `index` of `count` (1-based, as `--shard 1/4`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

impl FromStr for Shard {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("{s:?}: a shard is I/N with 1 <= I <= N, for example 2/4");
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let (index, count): (u32, u32) = (
            i.trim().parse().map_err(|_| bad())?,
            n.trim().parse().map_err(|_| bad())?,
        );
        if index == 0 || index > count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl Shard {
    /// Whether this shard advises `host` (a normalised host name).
    pub fn owns(&self, host: &str) -> bool {
        host_hash(host) % u64::from(self.count) == u64::from(self.index - 1)
    }
}

/// FNV-1a (64 bits) of the host's bytes: stable across runs, machines and versions, so
/// a host stays in its shard night after night.
pub fn host_hash(host: &str) -> u64 {
    host.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shard_is_parsed_checked_and_owns_a_stable_share_of_hosts() {
        let s: Shard = "2/3".parse().unwrap();
        assert_eq!((s.index, s.count), (2, 3));
        assert_eq!(s.to_string(), "2/3");
        for bad in ["0/3", "4/3", "3", "a/b", "1/0"] {
            assert!(bad.parse::<Shard>().is_err(), "{bad}");
        }
        // FNV-1a's published test vector: the hash does not depend on the platform.
        assert_eq!(host_hash("a"), 0xaf63_dc4c_8601_ec8c);
        let hosts: Vec<String> = (0..300).map(|i| format!("h{i}.example")).collect();
        let shards: Vec<Shard> = (1..=3).map(|i| Shard { index: i, count: 3 }).collect();
        for h in &hosts {
            assert_eq!(shards.iter().filter(|s| s.owns(h)).count(), 1, "{h}");
        }
        for s in &shards {
            let n = hosts.iter().filter(|h| s.owns(h)).count();
            assert!((70..=130).contains(&n), "shard {s} owns {n} of 300");
        }
        let whole = Shard { index: 1, count: 1 };
        assert!(hosts.iter().all(|h| whole.owns(h)));
    }
}
