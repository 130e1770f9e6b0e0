//! Small exact statistics shared by the stages: nearest-rank quantiles and the z value
//! of the Wilson interval.

/// z for a two-sided 95% interval.
pub const Z95: f64 = 1.959_963_984_540_054;

/// The 95% Wilson score interval of `k` successes in `n`: (low, high). Exactly 0 for
/// no successes and 1 for all (no float noise at the edges); (0, 1) when `n` is 0.
pub fn wilson(k: f64, n: f64) -> (f64, f64) {
    if n <= 0.0 {
        return (0.0, 1.0);
    }
    let z2 = Z95 * Z95;
    let p = k / n;
    let center = p + z2 / (2.0 * n);
    let half = Z95 * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt();
    let denom = 1.0 + z2 / n;
    let lo = if k <= 0.0 {
        0.0
    } else {
        (center - half) / denom
    };
    let hi = if k >= n { 1.0 } else { (center + half) / denom };
    (lo, hi)
}

/// Lower bound of the 95% Wilson score interval (0 when `n` is 0).
pub fn wilson_lower(k: f64, n: f64) -> f64 {
    wilson(k, n).0
}

/// Upper bound of the 95% Wilson score interval (1 when `n` is 0).
pub fn wilson_upper(k: f64, n: f64) -> f64 {
    wilson(k, n).1
}

/// Nearest-rank quantile of sorted values: the value at rank `ceil(q * n)` (at least 1).
pub fn nearest_rank(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (q * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1]
}

/// Exact failure-burst statistics (nearest-rank quantiles over burst lengths).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct BurstStats {
    pub bursts: u64,
    pub q50: u64,
    pub q95: u64,
    pub q99: u64,
    pub max: u64,
}

impl BurstStats {
    pub fn from_sorted(lengths: &[u64]) -> Self {
        BurstStats {
            bursts: lengths.len() as u64,
            q50: nearest_rank(lengths, 0.50),
            q95: nearest_rank(lengths, 0.95),
            q99: nearest_rank(lengths, 0.99),
            max: lengths.last().copied().unwrap_or(0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wilson_is_exact_at_the_edges_and_brackets_the_ratio() {
        assert_eq!(wilson(0.0, 3000.0).0, 0.0);
        assert_eq!(wilson(50.0, 50.0).1, 1.0);
        let (lo, hi) = wilson(30.0, 1000.0);
        assert!(
            lo < 0.03 && 0.03 < hi && lo > 0.02 && hi < 0.043,
            "{lo} {hi}"
        );
    }

    #[test]
    fn nearest_rank_is_exact() {
        let v = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10];
        assert_eq!(nearest_rank(&v, 0.5), 5);
        assert_eq!(nearest_rank(&v, 0.95), 10);
        assert_eq!(nearest_rank(&v, 0.9), 9);
        assert_eq!(nearest_rank(&v, 0.0), 1);
        assert_eq!(nearest_rank(&[7], 0.99), 7);
        assert_eq!(nearest_rank(&[], 0.5), 0);
    }
}
