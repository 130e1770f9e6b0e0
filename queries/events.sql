-- events: the classified window every other file in queries/ reads.
--
-- breaker-advisor builds `events` itself, with the classification of the breakers.yaml
-- and the crawler model it is given; this file is the same view under the defaults (the
-- crawler's default status lists, its breaker per process, every retried attempt
-- counted, the final outcome counted twice), for analysts. It runs unchanged in DuckDB
-- and in Spark SQL; queries/README.md shows the few lines each needs first:
--   http_events      the dataset's http_events table
--   analysis_window  one row: window_start, window_end (TIMESTAMP, UTC, end excluded)
--   unix_micros(ts)  microseconds since the epoch (Spark's built-in; a macro in DuckDB)
--
-- Columns: the rows' own, and
--   is_net            the call touched the network (not from the HTTP cache, not blocked)
--   is_timeout        a network call with no status and an error (a request that raised)
--   is_failure        a network call whose final status is a failure status
--   is_neutral        a network call with a neutral status (a success for the breaker)
--   outcome           what the breaker counted last: 1 failure, 0 success, NULL nothing
--                     (a blocked row, a request that raised); a cache hit is a success
--   attempts          retry_count + 1 for a network call, else 0
--   retried_failures  the retried attempts the breaker counted as failures. Their status
--                     is the final one when that is retryable (the retries ran out), else
--                     the host's most frequent retryable final status in the same UTC hour,
--                     else in the window: what was retried away is not logged. A request
--                     that raised retried the same exception: none counted
--   retried_status    that estimated status (NULL without retries, for a request that
--                     raised, or when the host has no retryable final status in the window)
--   attempts_429, attempts_5xx  attempts with that status, retried ones included
--   breaker_failures  retried_failures, plus 2 for a final failure
--   run_key           the breaker instance within the source: the row's run_id, else its
--                     source's most frequent run_id for the same host (the crawler's sink
--                     leaves run_id NULL now and then), else ''
CREATE OR REPLACE TEMPORARY VIEW events AS
WITH win AS (
  SELECT
    e.id, e.ts, e.source, e.run_id, e.host, e.role, e.method, e.status, e.url_hash,
    e.from_cache, e.retry_count, e.retry_after_s, e.rate_delay_ms, e.breaker_state,
    e.breaker_recorded, e.elapsed_ms, e.error,
    NOT coalesce(e.from_cache, false) AND NOT coalesce(e.breaker_recorded = 'blocked', false) AS is_net,
    date_trunc('hour', e.ts) AS retry_hour
  FROM http_events AS e
  CROSS JOIN analysis_window AS w
  WHERE e.ts >= w.window_start AND e.ts < w.window_end
),
retryable AS (
  SELECT host, retry_hour, status, COUNT(*) AS n
  FROM win
  WHERE is_net AND status IN (429, 500, 502, 503, 504)
  GROUP BY host, retry_hour, status
),
hour_mode AS (
  SELECT host, retry_hour, status AS hour_retry_status
  FROM (
    SELECT host, retry_hour, status,
      ROW_NUMBER() OVER (PARTITION BY host, retry_hour ORDER BY n DESC, status) AS r
    FROM retryable
  ) AS t
  WHERE r = 1
),
host_mode AS (
  SELECT host, status AS host_retry_status
  FROM (
    SELECT host, status,
      ROW_NUMBER() OVER (PARTITION BY host ORDER BY SUM(n) DESC, status) AS r
    FROM retryable
    GROUP BY host, status
  ) AS t
  WHERE r = 1
),
run_mode AS (
  SELECT source, host, run_id AS source_run
  FROM (
    SELECT source, host, run_id,
      ROW_NUMBER() OVER (PARTITION BY source, host ORDER BY COUNT(*) DESC, run_id) AS r
    FROM win
    WHERE run_id IS NOT NULL
    GROUP BY source, host, run_id
  ) AS t
  WHERE r = 1
),
classified AS (
  SELECT
    w.*,
    w.is_net AND w.status IS NULL AND w.error IS NOT NULL AS is_timeout,
    w.is_net AND coalesce(w.status IN (429, 500, 502, 503, 504, 408), false) AS is_failure,
    w.is_net AND coalesce(w.status IN (401, 403, 404, 410, 451), false) AS is_neutral,
    CASE
      WHEN coalesce(w.breaker_recorded = 'blocked', false) THEN NULL
      WHEN NOT w.is_net THEN 0
      WHEN coalesce(w.status IN (429, 500, 502, 503, 504, 408), false) THEN 1
      WHEN w.status IS NULL AND w.error IS NOT NULL THEN NULL
      ELSE 0
    END AS outcome,
    CASE WHEN w.is_net THEN GREATEST(coalesce(w.retry_count, 0), 0) ELSE 0 END AS retried,
    CASE
      -- A request that raised retried the same exception: no status to estimate.
      WHEN w.status IS NULL AND w.error IS NOT NULL THEN NULL
      WHEN coalesce(w.status IN (429, 500, 502, 503, 504), false) THEN w.status
      ELSE coalesce(h.hour_retry_status, m.host_retry_status)
    END AS retried_status,
    coalesce(w.run_id, r.source_run, '') AS run_key
  FROM win AS w
  LEFT JOIN hour_mode AS h ON h.host = w.host AND h.retry_hour = w.retry_hour
  LEFT JOIN host_mode AS m ON m.host = w.host
  LEFT JOIN run_mode AS r ON r.source = w.source AND r.host = w.host
)
SELECT
  id, ts, source, run_id, host, role, method, status, url_hash, from_cache, retry_count,
  retry_after_s, rate_delay_ms, breaker_state, breaker_recorded, elapsed_ms, error,
  is_net, is_timeout, is_failure, is_neutral, outcome, run_key,
  CASE WHEN retried > 0 THEN retried_status END AS retried_status,
  retried + CASE WHEN is_net THEN 1 ELSE 0 END AS attempts,
  -- Every retryable status is a failure status, so an unknown one counts as a failure;
  -- the retried attempts of a request that raised are exceptions, which no breaker counts.
  CASE
    WHEN is_timeout THEN 0
    WHEN coalesce(retried_status IN (429, 500, 502, 503, 504, 408), true) THEN retried
    ELSE 0
  END AS retried_failures,
  CASE WHEN is_net AND status = 429 THEN 1 ELSE 0 END
    + CASE WHEN retried_status = 429 THEN retried ELSE 0 END AS attempts_429,
  CASE WHEN is_net AND status >= 500 AND status < 600 THEN 1 ELSE 0 END
    + CASE WHEN retried_status >= 500 AND retried_status < 600 THEN retried ELSE 0 END
    AS attempts_5xx,
  CASE
    WHEN is_timeout THEN 0
    WHEN coalesce(retried_status IN (429, 500, 502, 503, 504, 408), true) THEN retried
    ELSE 0
  END + CASE WHEN is_failure THEN 2 ELSE 0 END AS breaker_failures
FROM classified
