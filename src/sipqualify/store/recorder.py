"""What the qualify engine reports, written to the Store with wall-clock times.

Samples for every answered or given-up qualify (one in `sample_every` per peer with `[store]
sample_every`); a transition row and the peer's current
state on every transition (and every peer's state at shutdown): enough to restore the state
at the next start without an upsert per transaction.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from ..qualify.engine import Peer
from ..qualify.events import QualifyResult, StateChanged
from .base import BaseStore

if TYPE_CHECKING:
    from ..cluster.vantage import Vantage


class StateRecorder:
    def __init__(self, store: BaseStore[Any], wall_offset: float) -> None:
        self.store = store
        self.wall_offset = wall_offset  # engine (monotonic) time -> UNIX time
        self.sample_every = 1  # [store] sample_every: one sample in N per peer is stored
        self.thinned = 0  # samples not stored because of it
        # [cluster] vantage_points > 1: a peer's samples and state row are its primary's to store
        self.vantage: Vantage | None = None

    def sample(self, ev: QualifyResult, p: Peer | None = None) -> None:
        """Store the result's RTT sample; with `sample_every = N` only the peer's 1st, N+1th, ...
        (by its result count: no state per peer, the same ones after a restart's first result)."""
        every = self.sample_every
        if self.vantage is not None and self.vantage.covers(ev.peer) and not self.vantage.primary(ev.peer):
            return
        if every > 1 and p is not None and (p.qualifies + p.timeouts - 1) % every:
            self.thinned += 1
            return
        self.store.record_sample(ev.peer, self.wall_offset + ev.time, ev.rtt * 1000 if ev.rtt is not None else None,
                                 ev.status_code, ev.transmissions)

    def transition(self, ev: StateChanged, p: Peer | None, suppressed: str | None = None) -> None:
        """`suppressed`: why webhooks are held back for it (flapping, silenced), None when not. The
        peer's verdict, its reason and policy go with it (None when the peer is gone)."""
        v = p.verdict if p is not None else None
        if p is not None:
            self.save_state(p)
        self.store.record_transition(ev.peer, self.wall_offset + ev.time, ev.old, ev.new, ev.lastms, ev.maxms,
                                     ev.rtt * 1000 if ev.rtt is not None else None, ev.reason, suppressed,
                                     v.verdict if v else None, v.reason if v else None, v.policy.name if v else None)

    def save_state(self, p: Peer) -> None:
        v = self.vantage
        if v is not None and v.covers(p.name):  # the agreed state, by the primary only
            held = v.agreed(p.name)
            if held is not None:
                self.store.save_state(p.name, held.state, held.lastms, p.maxms, held.rtt_ms, held.changed_at,
                                      time.time())
            return
        self.store.save_state(p.name, p.state, p.lastms, p.maxms, p.rtt * 1000 if p.rtt is not None else None,
                              self.wall_offset + p.last_change if p.last_change is not None else None, time.time())
