"""Log lines about what the network does to us, at a bounded rate.

A flood (refused connections, malformed requests, out-of-files accept errors) must cost a
counter, not a log line each: one warning per kind of event per interval, and the next one
says how many were held back. Sans-I/O like the rest: the caller passes `now`.
"""

from __future__ import annotations

import logging


class RateLog:
    """At most one warning per `every` seconds for each `key` (one kind of event)."""

    __slots__ = ("logger", "every", "_next", "_held")

    def __init__(self, logger: logging.Logger, every: float = 60.0) -> None:
        self.logger = logger
        self.every = every
        self._next: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def __call__(self, now: float, msg: str, *args: object, key: str = "") -> bool:
        """Log `msg % args` unless a line of this `key` went out less than `every` s ago;
        True when it was logged."""
        if now < self._next.get(key, float("-inf")):
            self._held[key] = self._held.get(key, 0) + 1
            return False
        self._next[key] = now + self.every
        held = self._held.pop(key, 0)
        if held:
            self.logger.warning(msg + " (and %d more like it since the last such message)", *args, held)
        else:
            self.logger.warning(msg, *args)
        return True
