"""Every DNS target of a peer qualified on its own, the peer's state rolled up from theirs.

`qualify_targets = all` (opt-in; chan_sip qualifies the first target only): each SRV target
and each of its addresses (A and AAAA) is a *target* with its own poke cycle, state and RTT,
qualified by the engine as an internal entry keyed `PEER#LABEL` (`Target.label`:
`udp:host:port/address`). The peer itself sends nothing; its state is the rollup of its
targets', as Asterisk PJSIP decides since asterisk/asterisk PR #2041 (issue #1927:
geo-redundant trunks looked dead when their one probed target was):

    targets now                                   the peer's verdict
    any answering (OK or LAGGED)                  a reply of the best (lowest) RTT answering
    all UNREACHABLE                               no reply
    none answering, some not yet known            none: the peer keeps its state

The verdict goes through the chan_sip transition table (qualify/state.py) like any result,
so a peer that stays reachable while one target dies publishes nothing, and one whose
targets all die becomes UNREACHABLE once (one NOTICE line, one PeerStatus). A target's own
transitions are `TargetChanged` events: logged at INFO and put on the event stream, never a
PeerStatus, never a peer in `sip show peers` or the peer count.

Sans-I/O: no clock, no socket; the engine calls `rollup` after every target result.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from ..addr import Addr
from . import state as st

SEP = "#"  # PEER#LABEL: a target's key in the engine, the store's samples and the metrics


def target_key(peer: str, label: str) -> str:
    return f"{peer}{SEP}{label}"


@dataclass(frozen=True, slots=True)
class Target:
    """One place to send OPTIONS to: a transport, the name it came from and one address."""

    transport: str
    host: str  # the SRV target (or the peer's host) this address belongs to
    port: int
    address: str

    @property
    def addr(self) -> Addr:
        return self.address, self.port

    @property
    def label(self) -> str:
        return f"{self.transport}:{self.host}:{self.port}/{self.address}"


@dataclass(frozen=True, slots=True)
class TargetChanged:
    """One target of a peer changed state (`old` -> `new`, chan_sip's words)."""

    peer: str
    target: str  # Target.label
    old: str
    new: str
    lastms: int
    rtt: float | None
    time: float
    reason: str | None = None  # a connection that could not be opened: why

    def log_line(self) -> str:
        ms = f" ({self.lastms} ms)" if self.lastms > 0 else ""
        why = f": {self.reason}" if self.reason else ""
        return f"peer '{self.peer}': target {self.target} is now {self.new}{ms} (was {self.old}){why}"


def rollup(targets: Iterable[tuple[int, float | None]]) -> tuple[int, float | None] | None:
    """The peer's (lastms, rtt) from its targets' (lastms, rtt) in chan_sip's encoding (-1 no
    answer, 0 unknown, > 0 RTT in ms); None: no verdict (the table in the module docstring)."""
    best: tuple[int, float | None] | None = None
    seen = unreachable = 0
    for lastms, rtt in targets:
        seen += 1
        if lastms > 0:
            if best is None or lastms < best[0]:
                best = (lastms, rtt)
        elif lastms < 0:
            unreachable += 1
    if best is not None:
        return best
    if seen and unreachable == seen:
        return -1, None
    return None


def verdict_result(maxms: int, lastms: int) -> str:
    """The rolled-up lastms as a result for the transition table."""
    return st.NO_REPLY if lastms < 0 else st.result_kind(maxms, lastms)
