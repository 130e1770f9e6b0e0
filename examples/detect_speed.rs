//! Times one change-point detector on one synthetic series (Poisson-like calls per bucket,
//! 1% background, one 5xx incident at 30% every 1,440 buckets) for BENCHMARKS.md.
//! Peak memory is measured around it by `bench/detect_speed.sh` with /usr/bin/time.
//!
//! Usage: cargo run --release --example detect_speed -- pelt-binomial|bocpd BUCKETS

use std::time::Instant;

use breaker_advisor::detect::{DetectOptions, DetectorKind, change_points};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let detector = match args.get(1).map(String::as_str) {
        Some("bocpd") => DetectorKind::Bocpd,
        _ => DetectorKind::PeltBinomial,
    };
    let len: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(1440);
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let (mut k, mut n) = (Vec::with_capacity(len), Vec::with_capacity(len));
    for i in 0..len {
        let calls = rng.random_range(50..500) as f64;
        let rate = if i % 1440 >= 600 && i % 1440 < 660 {
            0.3
        } else {
            0.01
        };
        let fails = (0..calls as usize)
            .filter(|_| rng.random_bool(rate))
            .count() as f64;
        k.push(fails);
        n.push(calls);
    }
    let opts = DetectOptions {
        detector,
        ..DetectOptions::default()
    };
    let started = Instant::now();
    let cps = change_points(&k, &n, &opts).expect("change points");
    let took = started.elapsed();
    println!(
        "{detector:?} {len} buckets: {:.3} ms, {} change points",
        took.as_secs_f64() * 1e3,
        cps.len()
    );
}
