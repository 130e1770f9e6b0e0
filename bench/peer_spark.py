"""The DuckDB peer's work (bench/peer_duckdb.py) in Spark SQL, local mode on every core:
the files in queries/ as they are, over the Parquet dataset. For analysts who run the
queries at scale; startup of the JVM included in the time.

Usage: python3 peer_spark.py QUERIES_DIR DATASET_DIR WINDOW_START WINDOW_END
"""
import os
import pathlib
import sys

os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
from pyspark.sql import SparkSession

queries, dataset, start, end = pathlib.Path(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
spark = (
    SparkSession.builder.master("local[*]")
    .appName("peer")
    .config("spark.ui.enabled", "false")
    .config("spark.ui.showConsoleProgress", "false")
    .config("spark.sql.session.timeZone", "UTC")
    .config("spark.driver.memory", "2g")
    .getOrCreate()
)
spark.sparkContext.setLogLevel("ERROR")
# The inputs queries/README.md has Spark register (unix_micros is built in).
spark.read.parquet(f"{dataset}/http_events").createOrReplaceTempView("http_events")
spark.sql(
    "CREATE OR REPLACE TEMPORARY VIEW analysis_window AS SELECT "
    f"TIMESTAMP '{start}' AS window_start, TIMESTAMP '{end}' AS window_end"
)
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
