"""A crawler fleet on the real pybreaker, on a fake clock, writing the crawler's sink.

Drives one real ``pybreaker.CircuitBreaker`` per host in each simulated crawler process,
with the crawler's call pattern (networking.py at DocsToKG bbbbd971): every attempt goes
through the cooldown check and ``cb.call``; 429/5xx answers and timeouts are retried up
to three times after tenacity's wait (Retry-After for 429/503); the final response is
recorded once more after the retry loop; a 429/503 with Retry-After sets a cooldown
(capped), in the process or in a store the fleet shares; any success clears it; a denied
attempt or a request out of retries on an exception leaves no row; timeouts are not
breaker failures. A listener logs ``breaker_state_change``, ``breaker_failure`` and
``breaker_success`` to ``breaker_events`` in the listener's payload format.

Writes ``DIR/process-N.sqlite`` (the sink's ``http_events`` and ``breaker_events``),
``DIR/breakers.yaml`` (the policies it ran) and ``DIR/truth.json``: per host and process
the opens and the exact lengths of the failure bursts each breaker counted.

    python3 pybreaker_fleet.py --out DIR [--processes 4] [--cooldowns process|fleet]
"""

import argparse
import heapq
import json
import random
import sqlite3
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pybreaker

START = 1_764_028_800.0  # 2025-11-25T00:00:00Z
FAILURE = {429, 500, 502, 503, 504, 408}
RETRYABLE = {429, 500, 502, 503, 504}
MAX_RETRIES = 3


class Clock:
    """The fake clock every breaker and the harness read."""

    now = START


class FakeDatetime(datetime):
    """pybreaker reads ``datetime.now(UTC)``; this returns the fake clock."""

    @classmethod
    def now(cls, tz=None):
        return datetime.fromtimestamp(Clock.now, tz or timezone.utc)


pybreaker.datetime = FakeDatetime


def iso(ts):
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Sink:
    """One process's telemetry file in the crawler's SQLite sink format."""

    def __init__(self, path, run_id):
        if path.exists():
            path.unlink()
        self.db = sqlite3.connect(path)
        self.run_id = run_id
        self.db.executescript(
            """
            CREATE TABLE http_events (
              id INTEGER PRIMARY KEY AUTOINCREMENT, run_id TEXT, timestamp TEXT NOT NULL,
              host TEXT, role TEXT, method TEXT, status INTEGER, url_hash TEXT,
              from_cache INTEGER, retry_count INTEGER, retry_after_s INTEGER,
              breaker_host_state TEXT, breaker_recorded TEXT, elapsed_ms INTEGER, error TEXT);
            CREATE TABLE breaker_events (
              id INTEGER PRIMARY KEY AUTOINCREMENT, timestamp TEXT, run_id TEXT,
              event_type TEXT, host TEXT, scope TEXT, resolver TEXT, payload TEXT);
            """
        )

    def event(self, host, event_type, **body):
        payload = {
            "event_type": event_type,
            "ts": Clock.now,
            "run_id": self.run_id,
            "host": host,
            "scope": "host",
            "resolver": None,
            **body,
        }
        self.db.execute(
            "INSERT INTO breaker_events (timestamp, run_id, event_type, host, scope, resolver, payload)"
            " VALUES (?, ?, ?, ?, 'host', NULL, ?)",
            (iso(Clock.now), self.run_id, event_type, host, json.dumps(payload, sort_keys=True)),
        )

    def row(self, host, status, retry_count, retry_after, state, recorded, url_hash):
        self.db.execute(
            "INSERT INTO http_events (run_id, timestamp, host, role, method, status, url_hash,"
            " from_cache, retry_count, retry_after_s, breaker_host_state, breaker_recorded,"
            " elapsed_ms, error) VALUES (?, ?, ?, 'metadata', 'GET', ?, ?, 0, ?, ?, ?, ?, 120, NULL)",
            (self.run_id, iso(Clock.now), host, status, url_hash, retry_count, retry_after,
             state, recorded),
        )


class Listener(pybreaker.CircuitBreakerListener):
    """The crawler's NetworkBreakerListener payloads (networking_breaker_listener.py)."""

    def __init__(self, sink, host, truth):
        self.sink, self.host, self.truth = sink, host, truth

    def state_change(self, cb, old_state, new_state):
        self.sink.event(self.host, "breaker_state_change", old=str(old_state),
                        new=str(new_state), reset_timeout_s=cb.reset_timeout)
        if new_state.name == pybreaker.STATE_OPEN:
            self.truth["opens"] += 1

    def failure(self, cb, exc):
        self.sink.event(self.host, "breaker_failure", state=str(cb.current_state),
                        exc_type=type(exc).__name__, msg=str(exc)[:300],
                        fail_counter=cb.fail_counter)
        self.truth["run"] += 1

    def success(self, cb):
        self.sink.event(self.host, "breaker_success", state=str(cb.current_state),
                        fail_counter=cb.fail_counter)
        if self.truth["run"]:
            self.truth["bursts"].append(self.truth["run"])
            self.truth["run"] = 0


class HTTPStatusError(Exception):
    pass


class ReadTimeout(Exception):
    pass


# Each host: (fail_max, reset_timeout_s, retry_after_cap_s, base failure rate, incidents),
# an incident being (start h, end h, failure probability, status, Retry-After or None).
HOSTS = {
    "outage.example": (4, 45, 900, 0.004, [(1.0, 1.6, 0.9, 503, None), (3.5, 4.0, 0.6, 500, None)]),
    "flappy.example": (3, 30, 900, 0.004, [(0.5, 0.6, 0.8, 502, None), (0.75, 0.85, 0.8, 502, None),
                                           (1.0, 1.1, 0.8, 502, None), (2.0, 2.2, 0.7, 504, None)]),
    "throttled.example": (5, 60, 120, 0.002, [(1.0, 2.5, 0.5, 429, 30), (4.0, 4.5, 0.7, 429, 300)]),
    "healthy.example": (5, 60, 900, 0.003, []),
    "timeouts.example": (5, 120, 900, 0.002, [(2.0, 2.5, 0.6, None, None)]),
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--processes", type=int, default=4)
    ap.add_argument("--cooldowns", choices=["process", "fleet"], default="process")
    ap.add_argument("--hours", type=float, default=5.0)
    ap.add_argument("--rps", type=float, default=0.5, help="requests per second per host")
    ap.add_argument("--seed", type=int, default=3)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(args.seed)

    sinks = [Sink(args.out / f"process-{p + 1}.sqlite", f"run-{args.seed}-p{p + 1}")
             for p in range(args.processes)]
    truth = {h: [{"opens": 0, "bursts": [], "run": 0} for _ in sinks] for h in HOSTS}
    breakers = {
        h: [pybreaker.CircuitBreaker(fail_max=fm, reset_timeout=rt, success_threshold=1,
                                     listeners=[Listener(sinks[p], h, truth[h][p])], name=f"{h}@{p}")
            for p in range(len(sinks))]
        for h, (fm, rt, _cap, _base, _inc) in HOSTS.items()
    }
    cooldown = {}  # (host, process or None) -> until

    def slot(host, p):
        return (host, None if args.cooldowns == "fleet" else p)

    def answer(host, t):
        _fm, _rt, _cap, base, incidents = HOSTS[host]
        h = (t - START) / 3600
        for s, e, prob, status, ra in incidents:
            if s <= h < e:
                if rng.random() < prob:
                    return status, ra
                return 200, None
        if rng.random() < base:
            return rng.choice([500, 502, 504]), None
        return 200, None

    def denied(cb):
        opened_at = cb._state_storage.opened_at
        return (cb.current_state == pybreaker.STATE_OPEN and opened_at is not None
                and FakeDatetime.now() < opened_at + timedelta(seconds=cb.reset_timeout))

    queue = []  # (t, seq, host, process, attempts made, url hash)
    seq = 0
    end = START + args.hours * 3600
    for host in HOSTS:
        t = START
        while True:
            t += rng.expovariate(args.rps)
            if t >= end:
                break
            seq += 1
            heapq.heappush(queue, (t, seq, host, rng.randrange(len(sinks)), 0, f"{rng.getrandbits(64):016x}"))

    while queue:
        t, _, host, p, made, url_hash = heapq.heappop(queue)
        Clock.now = t
        cb, sink = breakers[host][p], sinks[p]
        if cooldown.get(slot(host, p), 0) > t:
            continue  # denied by the cooldown: BreakerOpenError, no row
        status, ra = answer(host, t)

        def attempt():
            if status is None:
                raise ReadTimeout("read timed out")
            if status in FAILURE:
                raise HTTPStatusError(f"{status}")
            return status

        try:
            # Timeouts are not breaker failures (the crawler passes no exception types):
            # the attempt is admitted or denied, and pybreaker records nothing.
            if status is None:
                if denied(cb):
                    raise pybreaker.CircuitBreakerError("open")
                raise ReadTimeout("read timed out")
            cb.call(attempt)
            failed = False
        except pybreaker.CircuitBreakerError:
            continue  # denied: no row
        except HTTPStatusError:
            failed = True
        except ReadTimeout:
            failed = None
        made += 1
        cap = HOSTS[host][2]
        if failed and status in (429, 503) and ra:
            cooldown[slot(host, p)] = max(cooldown.get(slot(host, p), 0), t + min(ra, cap))
        if failed is False:
            cooldown.pop(slot(host, p), None)
        retry = failed is None or (failed and status in RETRYABLE)
        if retry and made <= MAX_RETRIES:
            wait = ra if (status in (429, 503) and ra) else rng.uniform(0, min(60, 0.75 * 2 ** made))
            seq += 1
            heapq.heappush(queue, (t + wait + 0.12, seq, host, p, made, url_hash))
            continue
        if failed is None:
            continue  # out of retries on an exception: the request raised, no row
        # The final response, recorded once more after the retry loop.
        try:
            cb.call(attempt)
        except (pybreaker.CircuitBreakerError, HTTPStatusError):
            pass
        if not failed:
            cooldown.pop(slot(host, p), None)
        state = cb.current_state.replace("-", "_")
        sink.row(host, status, made - 1, ra, state, "failure" if failed else "success", url_hash)

    for sink in sinks:
        sink.db.commit()
    out_truth = {}
    for host, per in truth.items():
        out_truth[host] = []
        for p, tr in enumerate(per):
            if tr["run"]:
                tr["bursts"].append(tr["run"])
            out_truth[host].append({"process": p + 1, "run_id": sinks[p].run_id,
                                    "opens": tr["opens"], "bursts": tr["bursts"]})
    (args.out / "truth.json").write_text(json.dumps(out_truth, indent=1, sort_keys=True) + "\n")
    lines = ["defaults:", "  fail_max: 5", "  reset_timeout_s: 60", "  retry_after_cap_s: 900", "hosts:"]
    for host, (fm, rt, cap, _b, _i) in HOSTS.items():
        lines += [f"  {host}:", f"    fail_max: {fm}", f"    reset_timeout_s: {rt}", f"    retry_after_cap_s: {cap}"]
    (args.out / "breakers.yaml").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
