-- events: the view host_counts.sql and host_role_counts.sql read, for DuckDB.
--
-- breaker-advisor builds `events` itself, with the status classification of the
-- breakers.yaml it is given; this file is the same view with the crawler's default
-- classification, for analysts running the queries in DuckDB:
--   duckdb -c ".read queries/events.sql" -c ".read queries/host_counts.sql"
-- Edit the path, the window and the status lists to match your run.
CREATE OR REPLACE VIEW events AS
SELECT
  e.*,
  NOT coalesce(e.from_cache, false) AS is_net,
  NOT coalesce(e.from_cache, false) AND e.status IS NULL AND e.error IS NOT NULL AS is_timeout,
  NOT coalesce(e.from_cache, false)
    AND ((e.status IS NULL AND e.error IS NOT NULL) OR coalesce(e.status IN (429, 500, 502, 503, 504, 408), false)) AS is_failure,
  NOT coalesce(e.from_cache, false) AND coalesce(e.status IN (401, 403, 404, 410, 451), false) AS is_neutral
FROM read_parquet('out/dataset/http_events/*/*.parquet', hive_partitioning = true) AS e
WHERE e.ts >= TIMESTAMP '2025-11-25 00:00:00' AND e.ts < TIMESTAMP '2025-11-26 00:00:00';
