"""Runs every file in queries/ unchanged, as an analyst would, in DuckDB or in Spark SQL
(pyspark in local mode), over an exported dataset, and prints the results as JSON:
{query name: [row, ...]}, timestamps as 'YYYY-MM-DD HH:MM:SS.ffffff'.

First the inputs queries/README.md tells each engine to register (the dataset's
http_events table, the analysis window, unix_micros), then events.sql, then each other
file in name order.

Usage: python3 run_queries.py ENGINE QUERIES_DIR DATASET_DIR WINDOW_START WINDOW_END
(ENGINE duckdb or spark; window bounds as 'YYYY-MM-DD HH:MM:SS.ffffff', UTC)
"""
import datetime
import json
import pathlib
import sys

from query_inputs import duckdb_connection, spark_session

engine, queries, dataset, start, end = sys.argv[1:6]
queries = pathlib.Path(queries)

if engine == "duckdb":
    con = duckdb_connection(dataset, start, end)

    def sql(text):
        cur = con.execute(text)
        if cur.description is None:
            return []
        cols = [d[0] for d in cur.description]
        return [dict(zip(cols, row)) for row in cur.fetchall()]

elif engine == "spark":
    spark = spark_session(dataset, start, end, **{"spark.sql.shuffle.partitions": "4"})

    def sql(text):
        return [row.asDict() for row in spark.sql(text).collect()]

else:
    sys.exit(f"unknown engine {engine!r}: duckdb or spark")


def plain(value):
    if isinstance(value, datetime.datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S.%f")
    return value


sql((queries / "events.sql").read_text())
out = {}
for path in sorted(queries.glob("*.sql")):
    if path.name == "events.sql":
        continue
    rows = sql(path.read_text())
    out[path.stem] = [{k: plain(v) for k, v in row.items()} for row in rows]
print(json.dumps(out, sort_keys=True))
