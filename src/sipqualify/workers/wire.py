"""The pipe between the main process and a worker: length-prefixed pickled messages over a
Unix socketpair. Both ends are our own processes from the same installation (the socketpair is
never reachable from outside), which is what makes pickle acceptable here.

Messages are tuples whose first item names them:

main -> worker
    ("load", general, [(cfg, addr, dest, restored)], now)   the worker's partition (start, reload, restart)
    ("qualify", name)                                       qualify now (CLI, AMI, API)
    ("address", name, addr, transport)                      a peer's host name resolved elsewhere
    ("stop",)
worker -> main
    ("batch", [snapshot], [event], stats | None)            what a pump produced, one message per pump
    ("ready", pid, [local address])

A snapshot is the tuple `snapshot(peer)` makes: what the surfaces read of a peer, so that the
main process's copy of it shows what the worker knows.
"""

from __future__ import annotations

import asyncio
import pickle
import struct
from typing import Any

from ..qualify.engine import Peer

HEADER = struct.Struct("!I")
MAX_MESSAGE = 256 * 1024 * 1024

# what the read side shows of a peer (views.py, readmodel.py, api/): copied from the worker's
FIELDS = ("lastms", "rtt", "last_change", "last_qualify", "qualifies", "timeouts", "retransmissions",
          "transitions", "transport_error")
VERDICT_FIELDS = ("confirmed", "reason", "streak", "toward", "refused", "status", "flap")
STATS_FIELDS = ("count", "avg", "m2", "est", "dev", "jitter", "last", "window", "polls", "reported")

Snapshot = tuple[Any, ...]


def snapshot(p: Peer) -> Snapshot:
    v, s = p.verdict, p.stats
    return (p.name, *(getattr(p, f) for f in FIELDS), tuple(getattr(v, f) for f in VERDICT_FIELDS),
            tuple(getattr(s, f) for f in STATS_FIELDS) if s is not None else None)


def restore(p: Peer, snap: Snapshot) -> None:
    """Make `p` show what `snap` (taken of the same peer elsewhere) holds."""
    from ..qualify.stats import LatencyStats

    for f, value in zip(FIELDS, snap[1:], strict=False):
        setattr(p, f, value)
    verdict, stats = snap[1 + len(FIELDS)], snap[2 + len(FIELDS)]
    for f, value in zip(VERDICT_FIELDS, verdict, strict=True):
        setattr(p.verdict, f, value)
    if stats is None:
        p.stats = None
        return
    s = p.stats if p.stats is not None else LatencyStats()
    for f, value in zip(STATS_FIELDS, stats, strict=True):
        setattr(s, f, value)
    p.stats = s


def encode(msg: tuple[Any, ...]) -> bytes:
    body = pickle.dumps(msg, protocol=pickle.HIGHEST_PROTOCOL)
    return HEADER.pack(len(body)) + body


async def read_message(reader: asyncio.StreamReader) -> tuple[Any, ...] | None:
    """The next message; None at the end of the stream (the other process is gone)."""
    try:
        head = await reader.readexactly(HEADER.size)
        (n,) = HEADER.unpack(head)
        if n > MAX_MESSAGE:
            raise ValueError(f"worker message of {n} bytes")
        msg = pickle.loads(await reader.readexactly(n))
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    if not isinstance(msg, tuple) or not msg:
        raise ValueError("worker message is not a tuple")
    return msg
