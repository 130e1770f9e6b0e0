"""Reads an exported dataset with DuckDB and pyarrow, as an analyst would, and prints
what they see as JSON (row counts per table and date, column types, a checksum).

Usage: python3 read_dataset.py DATASET_DIR
"""
import json
import sys

import duckdb
import pyarrow.dataset as ds

root = sys.argv[1]
out = {}
con = duckdb.connect()
for table in ("http_events", "breaker_transitions"):
    glob = f"{root}/{table}/*/*.parquet"
    rel = f"read_parquet('{glob}', hive_partitioning = true)"
    rows = con.execute(f"SELECT count(*), count(DISTINCT (source, id)) FROM {rel}").fetchone()
    by_date = con.execute(
        f"SELECT CAST(date AS VARCHAR), count(*) FROM {rel} GROUP BY 1 ORDER BY 1"
    ).fetchall()
    types = con.execute(f"DESCRIBE SELECT * FROM {rel}").fetchall()
    id_sum = con.execute(f"SELECT sum(id) FROM {rel}").fetchone()[0]
    arrow = ds.dataset(f"{root}/{table}", format="parquet", partitioning="hive")
    out[table] = {
        "duckdb_rows": rows[0],
        "duckdb_distinct_keys": rows[1],
        "duckdb_by_date": {d: n for d, n in by_date},
        "duckdb_types": {name: typ for name, typ, *_ in types},
        "duckdb_id_sum": int(id_sum or 0),
        "pyarrow_rows": arrow.count_rows(),
        "pyarrow_columns": sorted(arrow.schema.names),
    }
print(json.dumps(out, indent=1, sort_keys=True))
