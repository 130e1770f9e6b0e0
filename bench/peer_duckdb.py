"""Peer for `analyze`: the same core metrics computed by DuckDB SQL over the Parquet
dataset: per-host counts (queries/host_counts.sql over queries/events.sql), exact burst
runs with window functions and their nearest-rank quantiles, per-minute bucket counts.
(No EWMA: DuckDB has no ewm function; the peer does less than the tool.)

Usage: python3 peer_duckdb.py QUERIES_DIR DATASET_DIR WINDOW_START WINDOW_END
"""
import pathlib
import sys

import duckdb

queries, dataset, start, end = pathlib.Path(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
con = duckdb.connect()
events = (queries / "events.sql").read_text()
events = events.replace("out/dataset/http_events/*/*.parquet", f"{dataset}/http_events/*/*.parquet")
events = events.replace("TIMESTAMP '2025-11-25 00:00:00'", f"TIMESTAMP '{start}'")
events = events.replace("TIMESTAMP '2025-11-26 00:00:00'", f"TIMESTAMP '{end}'")
con.execute(events)
counts = con.execute((queries / "host_counts.sql").read_text()).fetchall()
bursts = con.execute("""
WITH net AS (
  SELECT host, ts, source, id, status, role, is_failure,
         CASE WHEN is_failure IS DISTINCT FROM lag(is_failure) OVER w THEN 1 ELSE 0 END AS boundary
  FROM events WHERE is_net
  WINDOW w AS (PARTITION BY host ORDER BY ts, source, id)
), runs AS (
  SELECT *, sum(boundary) OVER (PARTITION BY host ORDER BY ts, source, id ROWS UNBOUNDED PRECEDING) AS run
  FROM net
), b AS (
  SELECT host, run, min(ts) AS start, max(ts) AS "end", count(*) AS length,
         mode(coalesce(CAST(status AS VARCHAR), 'timeout')) AS dominant_status
  FROM runs WHERE is_failure GROUP BY host, run
)
SELECT host, count(*) AS bursts,
       quantile_disc(length, 0.5) AS q50, quantile_disc(length, 0.95) AS q95,
       quantile_disc(length, 0.99) AS q99, max(length) AS max
FROM b GROUP BY host ORDER BY host
""").fetchall()
series = con.execute(f"""
SELECT host, date_diff('minute', TIMESTAMP '{start}', ts) AS bucket, count(*) AS calls_net,
       sum(CASE WHEN status = 429 THEN 1 ELSE 0 END) AS e429,
       sum(CASE WHEN is_failure THEN 1 ELSE 0 END) AS failures
FROM events WHERE is_net GROUP BY ALL
""").fetchall()
print(len(counts), len(bursts), len(series))
