"""SQLite persistence (one writer thread; the event loop only enqueues)."""

from .db import PeerStateRecord, SampleRecord, Store, TransitionRecord

__all__ = ["PeerStateRecord", "SampleRecord", "Store", "TransitionRecord"]
