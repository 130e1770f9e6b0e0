"""Peer for `analyze`: the same core metrics computed by DuckDB SQL over the Parquet
dataset, with the files in queries/ as they are: the classified window (events.sql),
per-host counts (host_counts.sql), exact burst runs per breaker instance (bursts.sql)
and their nearest-rank quantiles per host, per-minute counts (minute_counts.sql).
(No EWMA: DuckDB has no ewm function; the peer does less than the tool.)

Usage: python3 peer_duckdb.py QUERIES_DIR DATASET_DIR WINDOW_START WINDOW_END
"""
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "tests" / "python"))
from query_inputs import duckdb_connection  # noqa: E402

queries, dataset, start, end = pathlib.Path(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
con = duckdb_connection(dataset, start, end)
con.execute((queries / "events.sql").read_text())
counts = con.execute((queries / "host_counts.sql").read_text()).fetchall()
bursts = con.execute(f"""
WITH b AS ({(queries / "bursts.sql").read_text()})
SELECT host, count(*) AS bursts,
       quantile_disc(length, 0.5) AS q50, quantile_disc(length, 0.95) AS q95,
       quantile_disc(length, 0.99) AS q99, max(length) AS max
FROM b GROUP BY host ORDER BY host
""").fetchall()
series = con.execute((queries / "minute_counts.sql").read_text()).fetchall()
print(len(counts), len(bursts), len(series))
