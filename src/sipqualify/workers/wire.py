"""The pipe between the main process and a worker: length-prefixed pickled messages over a
Unix socketpair. Both ends are our own processes from the same installation (the socketpair is
never reachable from outside), which is what makes pickle acceptable here.

Messages are tuples whose first item names them:

main -> worker
    ("load", general, [(cfg, addr, dest, view)], offset)    the worker's partition (start, reload, restart)
    ("qualify", name)                                       qualify now (CLI, AMI, API)
    ("address", name, addr, transport)                      a peer's host name resolved elsewhere
    ("stop",)
worker -> main
    ("batch", [snapshot], [event], stats | None)            what the worker's pumps produced in a few ms
                                                            (a QualifyResult as a plain tuple)
    ("ready", pid, [local address])

A snapshot is the tuple `snapshot(peer)` makes: what the surfaces read of a peer, so that the
main process's copy of it shows what the worker knows.
"""

from __future__ import annotations

import asyncio
import pickle
import struct
from operator import attrgetter
from typing import Any

from ..qualify.engine import Peer
from ..qualify.stats import FIELDS as STATS_FIGURES
from ..qualify.stats import LatencyStats

HEADER = struct.Struct("!I")
MAX_MESSAGE = 256 * 1024 * 1024

# what the read side shows of a peer (views.py, readmodel.py, api/): copied from the worker's.
# `restore` spells the same fields out (tuple assignment is several times faster than setattr
# in a loop); tests/workers/test_wire.py holds the two to each other.
FIELDS = ("name", "lastms", "rtt", "last_change", "last_qualify", "qualifies", "timeouts", "retransmissions",
          "transitions", "transport_error")
VERDICT_FIELDS = ("confirmed", "reason", "streak", "toward", "refused", "status", "flap")
STATS_FIELDS = STATS_FIGURES  # carried as LatencyStats.state(): its packed figures and its window
_peer, _verdict = attrgetter(*FIELDS), attrgetter(*VERDICT_FIELDS)

Snapshot = tuple[Any, ...]


def snapshot(p: Peer) -> Snapshot:
    s = p.stats
    return _peer(p), _verdict(p.verdict), s.state() if s is not None else None


def restore(p: Peer, snap: Snapshot) -> None:
    """Make `p` show what `snap` (taken of the same peer elsewhere) holds."""
    fields, verdict, stats = snap
    (_, p.lastms, p.rtt, p.last_change, p.last_qualify, p.qualifies, p.timeouts, p.retransmissions, p.transitions,
     p.transport_error) = fields
    v = p.own_verdict()  # settled verdicts are shared (qualify/verdict.py): never written in place
    v.confirmed, v.reason, v.streak, v.toward, v.refused, v.status, v.flap = verdict
    p.settle_verdict()
    if stats is None:
        p.stats = None
        return
    s = p.stats
    if s is None:
        s = p.stats = LatencyStats()
    s.set_state(stats)


def name_of(snap: Snapshot) -> str:
    return str(snap[0][0])


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
