-- bursts: runs of consecutive failures each breaker counted (gaps and islands).
--
-- Input: `events` (events.sql). A breaker instance is (host, source, run_key): one per
-- crawler process. Its rows, in (ts, id) order, are what it counted: a row stands for
-- its retried failures, then its final outcome (a failure counts twice). A burst is
-- the failures between two successes: a row whose final outcome is a success ends the
-- burst its retried failures belong to.
--
-- Output, one row per burst, the rows of bursts.parquet read from the calls:
--   host, source, run_id   the breaker instance (run_id is events.run_key)
--   start_ts, end_ts       first and last row with failures (bursts.parquet: start, end)
--   length                 breaker failures in the burst, retried attempts included
--   dominant_status        the most frequent status of the burst's failures, a row
--                          voting once (its final status when that failed, else its
--                          retried attempts'), the smallest on a tie; 'timeout' for no
--                          status, 'unknown' when the retried status cannot be estimated
--   metadata_calls, landing_calls, artifact_calls   those rows by role
--   at_window_start, at_window_end   the burst holds the instance's first / last
--                          counted row in the window: it may be longer than seen
-- The burst quantiles of host_summary.parquet are nearest-rank over `length`.
WITH counted AS (
  SELECT
    host, source, run_key, ts, id, role,
    -- The status of the row's failures: its final one when that failed, else its
    -- retried attempts' (0: no status, -1: unknown).
    CASE WHEN outcome = 1 THEN coalesce(status, 0) ELSE coalesce(retried_status, -1) END
      AS status,
    retried_failures + CASE WHEN outcome = 1 THEN 2 ELSE 0 END AS fails,
    CASE WHEN outcome = 0 THEN 1 ELSE 0 END AS ends
  FROM events
  WHERE outcome IS NOT NULL OR retried_failures > 0
),
numbered AS (
  SELECT
    *,
    -- The burst a row belongs to: the successes before it in its instance.
    coalesce(SUM(ends) OVER (
      PARTITION BY host, source, run_key ORDER BY ts, id
      ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING
    ), 0) AS burst,
    ROW_NUMBER() OVER (PARTITION BY host, source, run_key ORDER BY ts, id) AS pos,
    COUNT(*) OVER (PARTITION BY host, source, run_key) AS n
  FROM counted
),
failing AS (
  SELECT * FROM numbered WHERE fails > 0
),
dominant AS (
  SELECT host, source, run_key, burst, status
  FROM (
    SELECT host, source, run_key, burst, status,
      ROW_NUMBER() OVER (
        PARTITION BY host, source, run_key, burst ORDER BY COUNT(*) DESC, status
      ) AS r
    FROM failing
    GROUP BY host, source, run_key, burst, status
  ) AS t
  WHERE r = 1
)
SELECT
  f.host,
  f.source,
  f.run_key AS run_id,
  MIN(f.ts) AS start_ts,
  MAX(f.ts) AS end_ts,
  CAST(SUM(f.fails) AS BIGINT) AS length,
  CASE MIN(d.status)
    WHEN 0 THEN 'timeout'
    WHEN -1 THEN 'unknown'
    ELSE CAST(MIN(d.status) AS STRING)
  END AS dominant_status,
  CAST(SUM(CASE WHEN f.role = 'metadata' THEN 1 ELSE 0 END) AS BIGINT) AS metadata_calls,
  CAST(SUM(CASE WHEN f.role = 'landing' THEN 1 ELSE 0 END) AS BIGINT) AS landing_calls,
  CAST(SUM(CASE WHEN f.role = 'artifact' THEN 1 ELSE 0 END) AS BIGINT) AS artifact_calls,
  MAX(CASE WHEN f.pos = 1 THEN 1 ELSE 0 END) = 1 AS at_window_start,
  MAX(CASE WHEN f.pos = f.n THEN 1 ELSE 0 END) = 1 AS at_window_end
FROM failing AS f
JOIN dominant AS d
  ON d.host = f.host AND d.source = f.source AND d.run_key = f.run_key AND d.burst = f.burst
GROUP BY f.host, f.source, f.run_key, f.burst
-- Within an instance, bursts follow one another: their number orders them, ties in
-- start_ts included.
ORDER BY 1, 2, 3, f.burst
