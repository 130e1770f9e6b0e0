-- minute_counts: calls and failures per host and minute, the counts of host_timeseries.parquet.
--
-- Input: `events` (events.sql) and `analysis_window`. Minute k of the window starts at
-- window_start + k minutes (the tool's buckets of `bucket_s: 60`, so minutes on the
-- clock when the window starts on a whole minute).
--
-- Output, one row per host and minute with network calls (host_timeseries.parquet has
-- the empty minutes, as zeros, and the EWMA ratios), all counts BIGINT:
--   bucket        the minute's index in the window
--   calls_net     network calls (rows)
--   attempts      attempts, retried ones included
--   e429, e5xx    attempts with those statuses
--   timeouts      calls that raised (rows)
--   failures      failed attempts: the retried failures and the final failure, once
SELECT
  e.host,
  CAST(FLOOR((unix_micros(CAST(e.ts AS TIMESTAMP)) - unix_micros(CAST(w.window_start AS TIMESTAMP))) / 60000000) AS BIGINT) AS bucket,
  CAST(COUNT(*) AS BIGINT) AS calls_net,
  CAST(SUM(e.attempts) AS BIGINT) AS attempts,
  CAST(SUM(e.attempts_429) AS BIGINT) AS e429,
  CAST(SUM(e.attempts_5xx) AS BIGINT) AS e5xx,
  CAST(SUM(CASE WHEN e.is_timeout THEN 1 ELSE 0 END) AS BIGINT) AS timeouts,
  CAST(SUM(e.retried_failures + CASE WHEN e.is_failure THEN 1 ELSE 0 END) AS BIGINT) AS failures
FROM events AS e
CROSS JOIN analysis_window AS w
WHERE e.is_net
GROUP BY 1, 2
ORDER BY 1, 2
