//! Exact PELT (pruned exact linear time) segmentation with a binomial segment cost over
//! (failures, calls) per bucket, in the style of ruptures' `Pelt` with a custom cost.
//!
//! Cost of a segment with `K` failures in `N` calls: the binomial deviance at the
//! segment's own rate, `-2 [K ln(K/N) + (N-K) ln(1-K/N)]` (0 when N = 0). Buckets with no
//! calls add nothing, so gaps neither split nor join segments. The total cost of a
//! segmentation is the sum of its segments' costs plus `penalty` per change point.
//! Pruning with constant 0 is exact for this cost (it is a negative log-likelihood).

/// Prefix sums of failures and calls, and `x ln x` for every count up to the total.
struct Prefix {
    k: Vec<f64>,
    n: Vec<f64>,
    /// `x ln x` for x = 0..=total calls: counts are integers, so the deviance needs no
    /// logarithm in the inner loop.
    xlnx: Vec<f64>,
}

impl Prefix {
    fn new(k: &[f64], n: &[f64]) -> Self {
        let mut pk = Vec::with_capacity(k.len() + 1);
        let mut pn = Vec::with_capacity(n.len() + 1);
        pk.push(0.0);
        pn.push(0.0);
        for (a, b) in k.iter().zip(n) {
            pk.push(pk.last().copied().unwrap_or(0.0) + a);
            pn.push(pn.last().copied().unwrap_or(0.0) + b);
        }
        let total = pn.last().copied().unwrap_or(0.0);
        let integral = k.iter().chain(n).all(|v| v.fract() == 0.0 && *v >= 0.0);
        // The table costs 8 bytes per call: kept for series up to 8 M calls (a day of
        // buckets), beyond that the logarithms are computed in the loop.
        let xlnx = if integral && total <= (1u64 << 23) as f64 {
            (0..=total as usize)
                .map(|x| {
                    if x == 0 {
                        0.0
                    } else {
                        x as f64 * (x as f64).ln()
                    }
                })
                .collect()
        } else {
            Vec::new()
        };
        Prefix { k: pk, n: pn, xlnx }
    }

    /// Binomial deviance of buckets `[s, t)`:
    /// `-2 [K ln K + (N-K) ln (N-K) - N ln N]`, the same as [`binomial_deviance`].
    fn cost(&self, s: usize, t: usize) -> f64 {
        let k = self.k[t] - self.k[s];
        let n = self.n[t] - self.n[s];
        if self.xlnx.is_empty() {
            return binomial_deviance(k, n);
        }
        let (k, n) = (k as usize, n as usize);
        -2.0 * (self.xlnx[k] + self.xlnx[n - k] - self.xlnx[n])
    }
}

/// `-2 log L` of `k` failures in `n` calls at the maximum-likelihood rate.
pub fn binomial_deviance(k: f64, n: f64) -> f64 {
    if n <= 0.0 {
        return 0.0;
    }
    let mut c = 0.0;
    if k > 0.0 {
        c -= 2.0 * k * (k / n).ln();
    }
    if n - k > 0.0 {
        c -= 2.0 * (n - k) * ((n - k) / n).ln();
    }
    c
}

/// Change points of the series: indices where a new segment starts (never 0), sorted.
/// `min_segment` is the shortest segment in buckets; `penalty` the cost of a change point.
pub fn pelt_binomial(k: &[f64], n: &[f64], penalty: f64, min_segment: usize) -> Vec<usize> {
    assert_eq!(k.len(), n.len(), "failures and calls per bucket");
    let len = k.len();
    let min_segment = min_segment.max(1);
    if len < 2 * min_segment {
        return Vec::new();
    }
    let prefix = Prefix::new(k, n);
    // f[t]: optimal cost of buckets [0, t); last[t]: start of the last segment.
    let mut f = vec![f64::INFINITY; len + 1];
    let mut last = vec![0usize; len + 1];
    f[0] = -penalty;
    let mut candidates: Vec<usize> = Vec::new();
    let mut totals: Vec<f64> = Vec::new();
    for t in min_segment..=len {
        // A start s becomes admissible once the segment [s, t) is long enough.
        let s_new = t - min_segment;
        if s_new == 0 || s_new >= min_segment {
            candidates.push(s_new);
        }
        let mut best = f64::INFINITY;
        let mut best_s = 0;
        totals.clear();
        for &s in &candidates {
            let total = f[s] + prefix.cost(s, t) + penalty;
            totals.push(total);
            if total < best {
                best = total;
                best_s = s;
            }
        }
        f[t] = best;
        last[t] = best_s;
        // Prune starts that can never beat t again: if F(s) + C(s, t) >= F(t), then for
        // every later T, F(s) + C(s, T) >= F(t) + C(t, T), because splitting a segment
        // never raises its cost. Ties are pruned too (t is as good), which is what keeps
        // long failure-free stretches linear.
        let mut i = 0;
        candidates.retain(|_| {
            let keep = totals[i] - penalty < best;
            i += 1;
            keep
        });
    }
    let mut cps = Vec::new();
    let mut t = len;
    while t > 0 {
        let s = last[t];
        if s > 0 {
            cps.push(s);
        }
        t = s;
    }
    cps.reverse();
    cps
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Brute-force optimal segmentation for small series (all subsets of change points).
    fn brute_force(k: &[f64], n: &[f64], penalty: f64, min_segment: usize) -> f64 {
        let p = Prefix::new(k, n);
        let len = k.len();
        let mut best = f64::INFINITY;
        for mask in 0u32..(1 << (len - 1)) {
            let mut cps: Vec<usize> = (1..len).filter(|i| mask & (1 << (i - 1)) != 0).collect();
            cps.insert(0, 0);
            cps.push(len);
            if cps.windows(2).any(|w| w[1] - w[0] < min_segment) {
                continue;
            }
            let cost: f64 = cps.windows(2).map(|w| p.cost(w[0], w[1])).sum::<f64>()
                + penalty * (cps.len() - 2) as f64;
            best = best.min(cost);
        }
        best
    }

    fn total_cost(k: &[f64], n: &[f64], cps: &[usize], penalty: f64) -> f64 {
        let p = Prefix::new(k, n);
        let mut bounds = vec![0];
        bounds.extend_from_slice(cps);
        bounds.push(k.len());
        bounds.windows(2).map(|w| p.cost(w[0], w[1])).sum::<f64>() + penalty * cps.len() as f64
    }

    #[test]
    fn the_table_cost_is_the_deviance() {
        let k = [0.0, 3.0, 7.0, 0.0, 12.0];
        let n = [10.0, 10.0, 20.0, 0.0, 12.0];
        let p = Prefix::new(&k, &n);
        assert!(!p.xlnx.is_empty());
        for s in 0..5 {
            for t in s + 1..=5 {
                let direct = binomial_deviance(k[s..t].iter().sum(), n[s..t].iter().sum());
                assert!((p.cost(s, t) - direct).abs() < 1e-9, "{s}..{t}");
            }
        }
    }

    #[test]
    fn finds_a_step_up_and_down() {
        let mut k = vec![1.0; 100];
        let n = vec![100.0; 100];
        for v in &mut k[40..60] {
            *v = 30.0;
        }
        assert_eq!(pelt_binomial(&k, &n, 4.0 * 100f64.ln(), 2), vec![40, 60]);
    }

    #[test]
    fn flat_and_empty_series_have_no_change_points() {
        assert!(pelt_binomial(&[1.0; 500], &[100.0; 500], 4.0 * 500f64.ln(), 2).is_empty());
        assert!(pelt_binomial(&[0.0; 500], &[0.0; 500], 4.0 * 500f64.ln(), 2).is_empty());
        assert!(pelt_binomial(&[], &[], 1.0, 1).is_empty());
    }

    #[test]
    fn is_exact_against_brute_force() {
        // A deterministic mix of levels and empty buckets.
        let mut seed = 12345u64;
        for case in 0..40 {
            let len = 6 + case % 7;
            let (mut k, mut n) = (Vec::new(), Vec::new());
            for i in 0..len {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let calls = ((seed >> 33) % 20) as f64;
                let rate = if (i / 3) % 2 == 0 { 0.1 } else { 0.6 };
                k.push((calls * rate).round());
                n.push(calls);
            }
            for min_segment in [1, 2] {
                let penalty = 3.0;
                let cps = pelt_binomial(&k, &n, penalty, min_segment);
                let got = total_cost(&k, &n, &cps, penalty);
                let want = brute_force(&k, &n, penalty, min_segment);
                assert!(
                    (got - want).abs() < 1e-9,
                    "case {case}: {got} vs {want} ({cps:?})"
                );
            }
        }
    }
}
