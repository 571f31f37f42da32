"""workers/wire.py: a peer's snapshot restored elsewhere shows the same, field for field."""

from __future__ import annotations

import asyncio
import pickle
from operator import attrgetter

from sipqualify.model import PeerConfig
from sipqualify.qualify import stats
from sipqualify.qualify.engine import Peer
from sipqualify.qualify.stats import LatencyStats
from sipqualify.workers.wire import (
    FIELDS,
    STATS_FIELDS,
    VERDICT_FIELDS,
    encode,
    name_of,
    read_message,
    restore,
    snapshot,
)


def _busy_peer() -> Peer:
    p = Peer(PeerConfig(name="trunk-a", host="127.0.0.1", qualify_ms=2000))
    for i, f in enumerate(FIELDS[1:]):
        setattr(p, f, f"value-{i}" if f == "transport_error" else i + 1)
    values = {"confirmed": "down", "reason": "reply:404", "streak": 2, "toward": "up", "refused": True,
              "status": 404, "flap": None}  # of their types: the compiled (mypyc) verdict checks them
    for f in VERDICT_FIELDS:
        setattr(p.own_verdict(), f, values[f])
    p.stats = LatencyStats()
    for i, f in enumerate(STATS_FIELDS):
        setattr(p.stats, f, i + 1 if f in ("count", "polls", "window") else float(i) + 0.5)  # whole numbers
    return p


def test_snapshot_restore_round_trip() -> None:
    src = _busy_peer()
    dst = Peer(PeerConfig(name="trunk-a", host="127.0.0.1", qualify_ms=2000))
    snap = pickle.loads(pickle.dumps(snapshot(src)))
    assert name_of(snap) == "trunk-a"
    restore(dst, snap)
    assert attrgetter(*FIELDS)(dst) == attrgetter(*FIELDS)(src)
    assert attrgetter(*VERDICT_FIELDS)(dst.verdict) == attrgetter(*VERDICT_FIELDS)(src.verdict)
    assert dst.stats is not None and src.stats is not None
    assert attrgetter(*STATS_FIELDS)(dst.stats) == attrgetter(*STATS_FIELDS)(src.stats)
    # every slot of the verdict and the statistics is carried (a new one must be added to wire.py)
    slots = getattr(type(src.verdict), "__slots__", None)  # None: compiled by mypyc, which keeps no __slots__
    assert slots is None or set(VERDICT_FIELDS) == set(slots) - {"policy", "shared"}
    assert set(STATS_FIELDS) == set(stats.FIELDS)
    src.stats = None
    restore(dst, snapshot(src))
    assert dst.stats is None


async def test_framing() -> None:
    reader = asyncio.StreamReader()
    reader.feed_data(encode(("qualify", "a")) + encode(("stop",))[:3])
    assert await read_message(reader) == ("qualify", "a")
    reader.feed_eof()
    assert await read_message(reader) is None  # a message cut short: the other end is gone
