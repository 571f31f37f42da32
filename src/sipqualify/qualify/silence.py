"""Silences (maintenance windows): which peers' notifications are held back, and until when.

A silence names one peer or one group (`group` of peers) and an end time (UNIX time: silences
are set by people, in wall-clock time, and survive restarts). Qualifying goes on: a silenced
peer's verdict events and webhooks are held back, and what is still reported (the chan_sip
transitions on the event stream, the peer's API view) is marked `silenced`. An expired silence
simply stops matching; it is pruned when next looked at. No I/O here: store/silences.py keeps
them in SQLite, the shell asks `match` at each transition and verdict change.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Silence:
    id: int
    peer: str | None  # exactly one of peer and group
    group: str | None
    until: float  # UNIX time
    comment: str = ""
    created: float = 0.0  # UNIX time

    def matches(self, peer: str, group: str) -> bool:
        return peer == self.peer if self.peer is not None else group == self.group

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class Silences:
    """The silences in force, by id. Few (set by hand): a linear scan per lookup."""

    def __init__(self, items: list[Silence] | None = None) -> None:
        self.items: dict[int, Silence] = {s.id: s for s in items or ()}

    def add(self, s: Silence) -> None:
        self.items[s.id] = s

    def remove(self, silence_id: int) -> bool:
        return self.items.pop(silence_id, None) is not None

    def active(self, now: float) -> list[Silence]:
        """In force at `now` (UNIX time), by id; expired ones are dropped."""
        for sid in [sid for sid, s in self.items.items() if s.until <= now]:
            del self.items[sid]
        return sorted(self.items.values(), key=lambda s: s.id)

    def match(self, peer: str, group: str, now: float) -> Silence | None:
        """The silence (the one ending last) that holds this peer's notifications back at `now`."""
        if not self.items:
            return None
        best: Silence | None = None
        for s in self.items.values():
            if s.until > now and s.matches(peer, group) and (best is None or s.until > best.until):
                best = s
        return best
