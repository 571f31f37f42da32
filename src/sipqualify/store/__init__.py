"""SQLite persistence (one writer thread; the event loop only enqueues)."""

from .base import PeerStateRecord, SampleRecord, TransitionRecord
from .sqlite import Store

__all__ = ["PeerStateRecord", "SampleRecord", "Store", "TransitionRecord"]
