"""The three inputs the files in queries/ read (queries/README.md), registered in DuckDB
or in Spark SQL: the dataset's http_events table, the analysis window and unix_micros.
Used by tests/python/run_queries.py and by the benchmark peers in bench/."""
import os
import sys


def window_sql(start, end):
    return (
        "CREATE OR REPLACE TEMPORARY VIEW analysis_window AS "
        f"SELECT TIMESTAMP '{start}' AS window_start, TIMESTAMP '{end}' AS window_end"
    )


def duckdb_connection(dataset, start, end):
    """A DuckDB connection with the inputs registered."""
    import duckdb

    con = duckdb.connect()
    con.execute("CREATE MACRO unix_micros(t) AS epoch_us(t)")
    con.execute(
        "CREATE VIEW http_events AS SELECT * FROM "
        f"read_parquet('{dataset}/http_events/*/*.parquet', hive_partitioning = true)"
    )
    con.execute(window_sql(start, end))
    return con


def spark_session(dataset, start, end, master="local[2]", **config):
    """A local Spark session (quiet: no UI, no progress bars; the session clock in UTC)
    with the inputs registered; unix_micros is built in. `config`: more settings."""
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    from pyspark.sql import SparkSession

    builder = (
        SparkSession.builder.master(master)
        .appName("queries")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.driver.extraJavaOptions", "-Duser.timezone=UTC")
    )
    for k, v in config.items():
        builder = builder.config(k, v)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    spark.read.parquet(f"{dataset}/http_events").createOrReplaceTempView("http_events")
    spark.sql(window_sql(start, end))
    return spark
