"""The DuckDB peer's work (bench/peer_duckdb.py) in Spark SQL, local mode on every core:
the files in queries/ as they are, over the Parquet dataset. For analysts who run the
queries at scale; startup of the JVM included in the time.

Usage: python3 peer_spark.py QUERIES_DIR DATASET_DIR WINDOW_START WINDOW_END
"""
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "tests" / "python"))
from query_inputs import spark_session  # noqa: E402

queries, dataset, start, end = pathlib.Path(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
spark = spark_session(dataset, start, end, master="local[*]", **{"spark.driver.memory": "2g"})
spark.sql((queries / "events.sql").read_text())
counts = spark.sql((queries / "host_counts.sql").read_text()).collect()
spark.sql((queries / "bursts.sql").read_text()).createOrReplaceTempView("b")
bursts = spark.sql("""
SELECT host, count(*) AS bursts,
       percentile_disc(0.5) WITHIN GROUP (ORDER BY length) AS q50,
       percentile_disc(0.95) WITHIN GROUP (ORDER BY length) AS q95,
       percentile_disc(0.99) WITHIN GROUP (ORDER BY length) AS q99, max(length) AS max
FROM b GROUP BY host ORDER BY host
""").collect()
series = spark.sql((queries / "minute_counts.sql").read_text()).collect()
print(len(counts), len(bursts), len(series))
