"""The incremental rollups behind the time windows (store/rollup.py; issue 13 item 6): the pure
histogram and interval code, then the store's windows against the exact computation over every
raw row (what Store.windows did before the rollups), retention and the migration of an old
database."""

from __future__ import annotations

import math
import random
import sqlite3
import time
from collections.abc import Callable

import pytest

from sipqualify.store import Store, rollup
from sipqualify.store.rollup import REL_ERROR, RTT_BUCKET_S, RttCell
from sipqualify.store.sqlite import MIGRATIONS
from sipqualify.store.windows import PERCENTILES, RTT_WINDOWS, UPTIME_WINDOWS, percentile, uptime

from ..helpers import wait_until

# the rollups are the SQLite store's (store/postgres.py computes the windows from the raw rows,
# exactly: tests/store/test_windows.py runs against both)
pytestmark = pytest.mark.sqlite_only

NOW = 1_796_000_123.4  # not on a bucket boundary
TOL = REL_ERROR + 1e-9  # float rounding at a bin edge


# ---------------------------------------------------------------------------- pure


def test_bins_cover_the_range_with_five_percent_resolution() -> None:
    assert rollup.bin_of(0.05) == 0 and rollup.bin_of(0.1) == 1
    assert rollup.bin_of(59_999.0) == rollup.TOP - 1 and rollup.bin_of(60_000.0) == rollup.TOP
    assert rollup.bin_of(math.inf) == rollup.TOP
    rng = random.Random(1)
    for _ in range(20_000):
        v = 10 ** rng.uniform(-1, math.log10(60_000))
        i = rollup.bin_of(v)
        low, high = rollup.bin_bounds(i)
        assert low <= v < high and high / low <= rollup.RATIO * (1 + 1e-12)
        assert abs(rollup.representative(i) / v - 1) <= TOL
    assert rollup.TOP == 274  # 273 bins of 5 % from 0.1 ms to 60 s, one below, one above


def test_encode_decode_merge() -> None:
    assert rollup.encode({}) == b"" and rollup.decode(b"") == {} and rollup.decode(None) == {}
    a, b = {3: 2, 140: 7, 274: 1}, {140: 1, 5: 4}
    assert rollup.decode(rollup.encode(a)) == a and len(rollup.encode(a)) == 18  # 6 bytes a bin
    assert rollup.decode(rollup.merge_blobs(rollup.encode(a), rollup.encode(b))) == {3: 2, 5: 4, 140: 8, 274: 1}
    assert rollup.merge_blobs(None, rollup.encode(b)) == rollup.encode(b)
    assert rollup.merge_blobs(rollup.encode(a), b"") == rollup.encode(a)


@pytest.mark.parametrize("shape", ["lognormal", "uniform", "bimodal", "constant", "few", "tiny", "huge"])
def test_percentile_error_is_bounded_against_nearest_rank(shape: str) -> None:
    rng = random.Random(shape)
    for _ in range(30):
        n = rng.randint(1, 3000)
        values = {
            "lognormal": lambda: rng.lognormvariate(math.log(30), 1.0),
            "uniform": lambda: rng.uniform(0.1, 2000.0),
            "bimodal": lambda: rng.choice((rng.gauss(12, 1), rng.gauss(800, 50))),
            "constant": lambda: 42.0,
            "few": lambda: rng.choice((1.0, 7.5, 250.0)),
            "tiny": lambda: rng.uniform(0.0, 0.3),
            "huge": lambda: rng.uniform(50_000.0, 90_000.0),
        }[shape]
        data = [max(0.0, values()) for _ in range(n)]
        # merged from pieces, as buckets are
        cut = rng.randint(0, n)
        left, right = RttCell(), RttCell()
        for v in data[:cut]:
            left.add(v)
        for v in data[cut:]:
            right.add(v)
        left.merge(right.n, right.answered, right.min_ms, right.max_ms, right.hist)
        exact = sorted(data)
        for q in (*PERCENTILES, 0.1, 100):
            got, want = left.percentile(q), percentile(exact, q)
            assert got is not None and want is not None
            if want < rollup.LOW_MS:
                assert abs(got - want) <= rollup.LOW_MS
            elif want >= rollup.HIGH_MS:
                assert got == exact[-1]  # the overflow bin reports the largest
            else:
                assert abs(got / want - 1) <= TOL, (q, got, want)
        if shape == "constant":
            assert left.percentile(50) == 42.0  # clamped to the smallest/largest seen: exact


def test_cells_count_losses_and_skip_what_is_not_a_sample() -> None:
    rows = rollup.rollup_rows([("p", 299.9, 10.0), ("p", 300.0, None), ("p", 301.0, float("nan")),
                               ("p", 310.0, 20.0), ("q", 5.0, 1.0), (None, 1.0, 1.0), ("p", "x", 1.0),
                               ("p", float("inf"), 1.0), ("p", 1.0, "slow"), ("p", 900, 2), ("p", 1200.0, None)])
    by_key = {(r[0], r[1]): r[2:] for r in rows}
    assert set(by_key) == {("p", 0), ("p", 300), ("q", 0), ("p", 900), ("p", 1200)}
    assert by_key[("p", 300)] == (3, 1, 20.0, 20.0, rollup.encode({rollup.bin_of(20.0): 1}))
    assert by_key[("p", 0)] == (1, 1, 10.0, 10.0, rollup.encode({rollup.bin_of(10.0): 1}))  # one sample: same bytes
    assert by_key[("p", 900)][:2] == (1, 1) and by_key[("p", 1200)] == (1, 0, None, None, b"")
    assert RttCell().percentile(50) is None


def test_intervals_split_at_hour_boundaries() -> None:
    assert list(rollup.split_interval(3000.0, 7300.0)) == [(0, 600.0), (3600, 3600.0), (7200, 100.0)]
    assert list(rollup.split_interval(5.0, 5.0)) == []
    assert list(rollup.credit("OK", 3500.0, 3700.0)) == [(0, 100.0, 100.0), (3600, 100.0, 100.0)]
    assert list(rollup.credit("UNREACHABLE", 0.0, 10.0)) == [(0, 0.0, 10.0)]
    assert list(rollup.credit("UNKNOWN", 0.0, 10.0)) == [] and list(rollup.credit(None, 0.0, 10.0)) == []


# ---------------------------------------------------------------------------- the store


def _exact_rtt(samples: list[tuple[str, float, float | None]], peer: str, now: float) -> dict[str, dict]:
    """What Store.windows computed before the rollups: every answered sample of the window, sorted."""
    out = {}
    for name, span in RTT_WINDOWS:
        values = sorted(r for p, t, r in samples if p == peer and now - span <= t <= now and r is not None)
        out[name] = {"samples": len(values), **{f"p{q}_ms": percentile(values, q) for q in PERCENTILES}}
    return out


def _assert_close(got: dict[str, dict], want: dict[str, dict]) -> None:
    for name, w in want.items():
        g = got[name]
        assert g["samples"] == w["samples"], name
        for q in PERCENTILES:
            key = f"p{q}_ms"
            if w[key] is None:
                assert g[key] is None
            elif name == "5m":
                assert g[key] == w[key]  # one bucket at most: from the raw samples, exact
            else:
                assert abs(g[key] / w[key] - 1) <= TOL, (name, key, g[key], w[key])


def test_rtt_windows_match_the_exact_computation(make_store: Callable[..., Store]) -> None:
    s = make_store(sample_retention_s=1e9)
    s.open()
    rng = random.Random(7)
    samples: list[tuple[str, float, float | None]] = []
    for peer, step in (("fast", 7.0), ("slow", 61.0), ("bursty", 0.0)):
        t = NOW - 26 * 3600
        while t < NOW + 30:  # a few samples after `now` too: not in any window
            t += step or rng.expovariate(1 / 20)
            rtt = None if rng.random() < 0.05 else rng.lognormvariate(math.log(25), 0.8)
            samples.append((peer, t, rtt))
    samples.append(("fast", NOW - 3600, 5.0))  # exactly on a window's first instant: included
    rng.shuffle(samples)  # arrival order does not matter
    for i, (peer, t, rtt) in enumerate(samples):
        s.record_sample(peer, t, rtt, 200 if rtt is not None else None, 1)
        if i % 997 == 0:
            s.flush()  # many batches: a bucket's rollup row is merged across them
    s.flush()
    for now in (NOW, NOW - 3600.0, rollup.bucket_of(NOW, RTT_BUCKET_S) + 0.0, NOW - 12345.6):
        for peer in ("fast", "slow", "bursty", "nobody"):
            got, read = s.rtt_windows(peer, now)
            _assert_close(got, _exact_rtt(samples, peer, now))
    # the rows read for 24 h of "fast" (one sample every 7 s: 12,343 in the window)
    _, read = s.rtt_windows("fast", NOW)
    assert read < 288 + 3 * 300 / 7 + 3


def _exact_uptime(transitions: list[tuple[float, str]], since: float, until: float) -> tuple[float | None, float]:
    start = [new for t, new in transitions if t < since]
    changes = [(t, new) for t, new in transitions if since <= t <= until]
    return uptime(start[-1] if start else None, changes, since, until)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_uptime_windows_match_the_exact_computation(make_store: Callable[..., Store], seed: int) -> None:
    s = make_store(transition_retention_s=1e9)
    s.open()
    now0 = time.time() + 0.4  # the uptime rollup is kept 31 days back from the real clock
    rng = random.Random(seed)
    states = ("OK", "LAGGED", "UNREACHABLE", "UNKNOWN", "UNMONITORED")
    transitions: list[tuple[float, str]] = []
    t, old = now0 - 45 * 86400 + rng.uniform(0, 86400), "UNKNOWN"
    while True:
        t += rng.choice((rng.expovariate(1 / 60), rng.expovariate(1 / 7200), rng.expovariate(1 / 200_000)))
        if t > now0:
            break
        new = rng.choice([x for x in states if x != old])
        transitions.append((t, new))
        s.record_transition("p", t, old, new, 1, 2000, 1.0)
        if rng.random() < 0.3:
            s.flush()  # some alone, some in a batch with the next ones
        old = new
    s.flush()
    last = max(transitions[-1][0], now0 - 80_000)  # windows within the 31 days kept (from the real clock)
    for now in (now0, last, last + 3600.0, now0 - 20_000 - 17.0, now0 + 40 * 86400):
        for _, span in UPTIME_WINDOWS:
            got = s.uptime_window("p", now - span, now)
            want = _exact_uptime(transitions, now - span, now)
            assert got[1] == pytest.approx(want[1], abs=1e-3)
            assert (got[0] is None) == (want[0] is None)
            if want[0] is not None:
                assert got[0] == pytest.approx(want[0], abs=1e-6)
        # under two hours: the transitions alone
        assert s.uptime_window("p", now - 5000, now) == pytest.approx(_exact_uptime(transitions, now - 5000, now))


def test_uptime_of_a_peer_stable_for_longer_than_the_transitions_kept(make_store: Callable[..., Store]) -> None:
    """Its last transition is gone (retention): the saved state says since when, before and after
    its next transition."""
    s = make_store()
    s.open()
    s.save_state("p", "OK", 10, 2000, 10.0, NOW - 200 * 86400, NOW - 200 * 86400)
    s.flush()
    assert s.uptime_window("p", NOW - 7 * 86400, NOW) == (100.0, 7 * 86400.0)
    s.record_transition("p", NOW - 86400, "OK", "UNREACHABLE", -1, 2000, None)
    s.save_state("p", "UNREACHABLE", -1, 2000, None, NOW - 86400, NOW - 86400)
    s.flush()
    pct, seen = s.uptime_window("p", NOW - 7 * 86400, NOW)
    assert seen == 7 * 86400.0 and pct == pytest.approx(100 * 6 / 7)


def test_rollups_follow_retention(make_store: Callable[..., Store], db_path: str) -> None:
    now = time.time()
    s = make_store(sample_retention_s=3600, transition_retention_s=1e9, retention_interval_s=0.1)
    s.open()
    for i in range(20):
        s.record_sample("p", now - 4 * 3600 - 60 * i, 1.0, 200, 1)  # expired, and their buckets
        s.record_sample("p", now - 60 * i, 2.0, 200, 1)  # kept
    s.record_transition("p", now - 40 * 86400, "UNKNOWN", "OK", 1, 2000, 1.0)
    s.record_transition("p", now - 20 * 86400, "OK", "UNREACHABLE", -1, 2000, None)  # credits 20 days
    s.flush()
    wait_until(lambda: s.stats["retention_deleted"] == 20 and s.stats["rollup_rows_deleted"] > 0)
    ro = sqlite3.connect(db_path)
    wait_until(lambda: ro.execute("SELECT MIN(bucket) FROM uptime_rollup").fetchone()[0]
               >= now - rollup.UPTIME_KEEP_S - 2 * rollup.UPTIME_BUCKET_S)
    oldest = ro.execute("SELECT MIN(bucket) FROM rtt_rollup").fetchone()[0]
    assert oldest >= now - 3600 - 2 * RTT_BUCKET_S
    n = ro.execute("SELECT SUM(n) FROM rtt_rollup").fetchone()[0]
    assert n == 20  # the kept samples are all still summarised
    ro.close()
    assert s.windows("p", now)["uptime"]["30d"]["pct"] == pytest.approx(100 * 10 / 30, abs=1e-3)


def test_an_old_database_gets_its_rollups_built_once(make_store: Callable[..., Store], db_path: str) -> None:
    # a database as the previous schema version left it, with history in it
    db = sqlite3.connect(db_path, isolation_level=None)
    old_version = len(MIGRATIONS) - 1
    for step in MIGRATIONS[:old_version]:
        for stmt in step:
            assert isinstance(stmt, str)
            db.execute(stmt)
    db.execute(f"PRAGMA user_version={old_version}")
    db.execute("BEGIN")
    rng = random.Random(5)
    samples = [("p", NOW - rng.uniform(0, 90_000), rng.choice((None, 3.0, 30.0, 300.0))) for _ in range(5000)]
    db.executemany("INSERT INTO samples(peer, time, rtt_ms, status_code, transmissions) VALUES (?,?,?,200,1)",
                   samples)
    transitions = [(NOW - 20 * 86400, "OK"), (NOW - 2 * 86400, "UNREACHABLE"), (NOW - 86400, "OK")]
    old = "UNKNOWN"
    for t, new in transitions:
        db.execute("INSERT INTO transitions(peer, time, old, new, lastms, maxms) VALUES ('p',?,?,?,1,2000)",
                   (t, old, new))
        old = new
    db.execute("COMMIT")
    db.close()

    s = make_store(sample_retention_s=1e9, transition_retention_s=1e9)
    s.open()
    _assert_close(s.windows("p", NOW)["rtt_windows"], _exact_rtt(samples, "p", NOW))
    for _, span in UPTIME_WINDOWS:
        assert s.uptime_window("p", NOW - span, NOW) == pytest.approx(_exact_uptime(transitions, NOW - span, NOW))
    # then kept up to date as usual
    s.record_sample("p", NOW - 1000, 1.0, 200, 1)
    s.record_transition("p", NOW - 3600 * 5, "OK", "LAGGED", 1, 2000, 1.0)
    s.flush()
    assert s.windows("p", NOW)["rtt_windows"]["24h"]["samples"] == _exact_rtt(samples, "p", NOW)["24h"]["samples"] + 1
    transitions.append((NOW - 3600 * 5, "LAGGED"))
    assert s.uptime_window("p", NOW - 86400, NOW) == pytest.approx(_exact_uptime(transitions, NOW - 86400, NOW))
    s.close()
    with sqlite3.connect(db_path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
        assert db.execute("SELECT SUM(n) FROM rtt_rollup").fetchone()[0] == 5001
