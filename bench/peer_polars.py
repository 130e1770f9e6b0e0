"""Peer for `analyze`: the same core metrics in Python Polars (lazy, over the same
Parquet dataset): per-host counts, exact burst runs and nearest-rank quantiles,
per-minute bucket counts with EWMA of the counts.

Usage: python3 peer_polars.py DATASET_DIR WINDOW_START_US WINDOW_END_US
"""
import math
import sys

import polars as pl

dataset, start_us, end_us = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
failure = [429, 500, 502, 503, 504, 408]
neutral = [401, 403, 404, 410, 451]
ev = (
    pl.scan_parquet(f"{dataset}/http_events/", hive_partitioning=True)
    .filter(pl.col("ts").cast(pl.Int64).is_between(start_us, end_us - 1))
    .with_columns(is_net=~pl.col("from_cache").fill_null(False))
    .with_columns(
        is_timeout=pl.col("is_net") & pl.col("status").is_null() & pl.col("error").is_not_null(),
        is_failure=pl.col("is_net")
        & ((pl.col("status").is_null() & pl.col("error").is_not_null()) | pl.col("status").is_in(failure).fill_null(False)),
        is_neutral=pl.col("is_net") & pl.col("status").is_in(neutral).fill_null(False),
    )
)
counts = ev.group_by("host").agg(
    calls_total=pl.len(),
    calls_net=pl.col("is_net").sum(),
    e429=(pl.col("is_net") & (pl.col("status") == 429)).sum(),
    e5xx=(pl.col("is_net") & (pl.col("status") >= 500) & (pl.col("status") < 600)).sum(),
    timeouts=pl.col("is_timeout").sum(),
    neutral=pl.col("is_neutral").sum(),
    failures=pl.col("is_failure").sum(),
)
net = ev.filter("is_net").sort("host", "ts", "source", "id")
bursts = (
    net.with_columns(
        run=((pl.col("host") != pl.col("host").shift(1)).fill_null(True)
             | (pl.col("is_failure") != pl.col("is_failure").shift(1)).fill_null(True)).cum_sum()
    )
    .filter("is_failure")
    .group_by("host", "run")
    .agg(start=pl.col("ts").min(), end=pl.col("ts").max(), length=pl.len())
)


def nearest_rank(q):
    return pl.col("length").sort().get((pl.len() * q).ceil().cast(pl.Int64) - 1)


burst_stats = bursts.group_by("host").agg(
    bursts=pl.len(), q50=nearest_rank(0.5), q95=nearest_rank(0.95), q99=nearest_rank(0.99), max=pl.col("length").max()
)
alpha = 1 - 0.5 ** (1 / 10)
series = (
    ev.filter("is_net")
    .with_columns(bucket=(pl.col("ts").cast(pl.Int64) - start_us) // 60_000_000)
    .group_by("host", "bucket")
    .agg(calls_net=pl.len(), e429=(pl.col("status") == 429).sum(), failures=pl.col("is_failure").sum())
    .sort("host", "bucket")
    .with_columns(
        failures_ewma=pl.col("failures").cast(pl.Float64).ewm_mean(alpha=alpha, adjust=False).over("host")
        / pl.col("calls_net").cast(pl.Float64).ewm_mean(alpha=alpha, adjust=False).over("host")
    )
)
c, b, s = pl.collect_all([counts, burst_stats, series])
print(c.height, b.height, s.height)
