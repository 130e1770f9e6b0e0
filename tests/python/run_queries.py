"""Runs queries/*.sql in DuckDB over an exported dataset, as an analyst would, and
prints the results as JSON. events.sql is used as written, with only its dataset path
and window replaced.

Usage: python3 run_queries.py QUERIES_DIR DATASET_DIR WINDOW_START WINDOW_END
(window bounds as 'YYYY-MM-DD HH:MM:SS.ffffff', UTC)
"""
import json
import pathlib
import sys

import duckdb

queries, dataset, start, end = pathlib.Path(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
events = (queries / "events.sql").read_text()
events = events.replace("out/dataset/http_events/*/*.parquet", f"{dataset}/http_events/*/*.parquet")
events = events.replace("TIMESTAMP '2025-11-25 00:00:00'", f"TIMESTAMP '{start}'")
events = events.replace("TIMESTAMP '2025-11-26 00:00:00'", f"TIMESTAMP '{end}'")
con = duckdb.connect()
con.execute(events)
out = {}
for name in ("host_counts", "host_role_counts"):
    cur = con.execute((queries / f"{name}.sql").read_text())
    cols = [d[0] for d in cur.description]
    out[name] = [dict(zip(cols, row)) for row in cur.fetchall()]
print(json.dumps(out, sort_keys=True))
