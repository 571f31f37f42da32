"""The RTT histograms and response counts the shell keeps from each qualify result (read by
/metrics through the read model). Its own module, compiled with mypyc with the hot path
(setup.py): `QualifyMetrics.observe` runs once per answered transaction."""

from __future__ import annotations

from bisect import bisect_left
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from .model import PeerConfig
    from .qualify.events import QualifyResult

RTT_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 2.5, 5.0, 10.0)


class RttHistogram:
    """Cumulative-at-scrape histogram: observe() is a bisect and two adds."""

    __slots__ = ("counts", "sum", "count")

    def __init__(self) -> None:
        self.counts = [0] * (len(RTT_BUCKETS) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(RTT_BUCKETS, seconds)] += 1
        self.sum += seconds
        self.count += 1

    def buckets(self) -> list[tuple[str, float]]:
        out: list[tuple[str, float]] = []
        acc = 0
        for bound, n in zip(RTT_BUCKETS, self.counts, strict=False):
            acc += n
            out.append((repr(bound), float(acc)))
        out.append(("+Inf", float(self.count)))
        return out


class QualifyMetrics:
    """What the engine does not count itself: RTT histograms per group and for peers marked
    `rtt_histogram = true`, and responses by status class for the peers that get per-peer
    series (the first `peer_limit` that answer)."""

    def __init__(self) -> None:
        self.rtt_groups: dict[str, RttHistogram] = {}  # per PeerConfig.group
        self.rtt_peers: dict[str, RttHistogram] = {}  # peers with rtt_histogram = true
        self.responses_by_peer: dict[str, list[int]] = {}

    def observe(self, ev: QualifyResult, cfg: PeerConfig | None, peer_limit: int) -> None:
        if ev.rtt is not None and cfg is not None:
            h = self.rtt_groups.get(cfg.group)
            if h is None:
                h = self.rtt_groups[cfg.group] = RttHistogram()
            h.observe(ev.rtt)
            if cfg.rtt_histogram:
                ph = self.rtt_peers.get(ev.peer)
                if ph is None:
                    ph = self.rtt_peers[ev.peer] = RttHistogram()
                ph.observe(ev.rtt)
        if ev.status_code is not None:
            classes = self.responses_by_peer.get(ev.peer)
            if classes is None and len(self.responses_by_peer) < peer_limit:
                classes = self.responses_by_peer[ev.peer] = [0] * 7
            if classes is not None:
                classes[min(ev.status_code // 100, 6)] += 1
