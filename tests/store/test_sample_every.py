"""`[store] sample_every = N` (issue 15: a million peers every 60 s are 16,700 sample rows a
second): one RTT sample in N per peer is stored, the peer's 1st, N+1th, ...; states and
transitions are untouched (they do not go through `sample`)."""

from __future__ import annotations

import time
from collections.abc import Callable

from sipqualify.model import PeerConfig
from sipqualify.qualify.engine import Peer
from sipqualify.qualify.events import QualifyResult
from sipqualify.store import Store
from sipqualify.store.recorder import StateRecorder


def test_one_sample_in_n_per_peer_is_stored(make_store: Callable[..., Store]) -> None:
    s = make_store()
    s.open()
    rec = StateRecorder(s, time.time() - 100.0)  # recent: retention keeps them
    rec.sample_every = 3
    peers = [Peer(PeerConfig(name=n, host="192.0.2.1", qualify_ms=2000)) for n in ("a", "b")]
    for i in range(10):
        for p in peers:
            answered = i != 4  # a given-up poke counts like an answer in the peer's results
            if answered:
                p.qualifies += 1
            else:
                p.timeouts += 1
            rec.sample(QualifyResult(p.name, float(i), answered, 0.001 * (i + 1) if answered else None,
                                     200 if answered else None, 1, False, "OK"), p)
    s.flush(timeout=10)
    for name in ("a", "b"):
        got = [round(r.rtt_ms) if r.rtt_ms is not None else None for r in s.samples(name)]
        assert got == [1, 4, 7, 10]  # results 1, 4, 7 and 10 of each peer
    assert rec.thinned == 12
    rec.sample_every = 1  # back to every sample (a reload)
    rec.sample(QualifyResult("a", 11.0, True, 0.011, 200, 1, False, "OK"), peers[0])
    s.flush(timeout=10)
    assert len(s.samples("a")) == 5
