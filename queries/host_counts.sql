-- host_counts: calls and breaker outcomes per host over the analysis window.
--
-- Input: `events`, the window's http_events rows plus the classification columns
--   is_net      the call touched the network (not from the HTTP cache, not blocked)
--   is_failure  a network call with a failure status
--   is_timeout  a network call with no status and an error (a request that raised)
--   is_neutral  a network call with a neutral status (a success for the breaker)
-- breaker-advisor registers `events` itself (classification from breakers.yaml and the
-- crawler model); in DuckDB or Spark, run events.sql first (see README.md).
--
-- Output, one row per host (all counts BIGINT):
--   calls_total, cache_hits, calls_net, e429, e5xx (500-599), e503, timeouts, neutral,
--   failures, half_open_trials, half_open_trial_successes, half_open_trial_failures.
-- The tool joins this onto host_summary.parquet.
SELECT
  host,
  CAST(COUNT(*) AS BIGINT) AS calls_total,
  CAST(SUM(CASE WHEN NOT is_net THEN 1 ELSE 0 END) AS BIGINT) AS cache_hits,
  CAST(SUM(CASE WHEN is_net THEN 1 ELSE 0 END) AS BIGINT) AS calls_net,
  CAST(SUM(CASE WHEN is_net AND status = 429 THEN 1 ELSE 0 END) AS BIGINT) AS e429,
  CAST(SUM(CASE WHEN is_net AND status >= 500 AND status < 600 THEN 1 ELSE 0 END) AS BIGINT) AS e5xx,
  CAST(SUM(CASE WHEN is_net AND status = 503 THEN 1 ELSE 0 END) AS BIGINT) AS e503,
  CAST(SUM(CASE WHEN is_timeout THEN 1 ELSE 0 END) AS BIGINT) AS timeouts,
  CAST(SUM(CASE WHEN is_neutral THEN 1 ELSE 0 END) AS BIGINT) AS neutral,
  CAST(SUM(CASE WHEN is_failure THEN 1 ELSE 0 END) AS BIGINT) AS failures,
  CAST(SUM(CASE WHEN is_net AND breaker_state = 'half_open' THEN 1 ELSE 0 END) AS BIGINT) AS half_open_trials,
  CAST(SUM(CASE WHEN is_net AND breaker_state = 'half_open' AND NOT is_failure THEN 1 ELSE 0 END) AS BIGINT) AS half_open_trial_successes,
  CAST(SUM(CASE WHEN is_net AND breaker_state = 'half_open' AND is_failure THEN 1 ELSE 0 END) AS BIGINT) AS half_open_trial_failures
FROM events
GROUP BY host
ORDER BY host
