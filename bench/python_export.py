"""The peer an analyst would write: export http_events from a telemetry SQLite file to
one Parquet file with sqlite3 + pyarrow, a fixed schema and zstd, in bounded batches.

Usage: python3 python_export.py TELEMETRY.sqlite OUT.parquet
"""
import sqlite3
import sys

import pyarrow as pa
import pyarrow.parquet as pq

SCHEMA = pa.schema([
    ("id", pa.int64()), ("run_id", pa.string()), ("ts", pa.float64()), ("host", pa.string()),
    ("role", pa.string()), ("method", pa.string()), ("status", pa.int64()),
    ("url_hash", pa.string()), ("from_cache", pa.int64()), ("revalidated", pa.int64()),
    ("stale", pa.int64()), ("retry_count", pa.int64()), ("retry_after_s", pa.int64()),
    ("rate_delay_ms", pa.int64()), ("breaker_state", pa.string()),
    ("breaker_recorded", pa.string()), ("elapsed_ms", pa.int64()), ("error", pa.string()),
])

src, dst = sys.argv[1], sys.argv[2]
con = sqlite3.connect(f"file:{src}?mode=ro", uri=True)
cur = con.execute(f"SELECT {', '.join(SCHEMA.names)} FROM http_events ORDER BY id")
rows = 0
with pq.ParquetWriter(dst, SCHEMA, compression="zstd") as writer:
    while True:
        batch = cur.fetchmany(131072)
        if not batch:
            break
        cols = list(zip(*batch))
        writer.write_table(pa.table([pa.array(c, type=f.type) for c, f in zip(cols, SCHEMA)], schema=SCHEMA))
        rows += len(batch)
print(rows)
