"""SQLite persistence (one writer thread; the event loop only enqueues)."""

from .sqlite import PeerStateRecord, SampleRecord, Store, TransitionRecord

__all__ = ["PeerStateRecord", "SampleRecord", "Store", "TransitionRecord"]
