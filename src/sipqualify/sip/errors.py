"""The one exception the SIP layer raises for bad input."""

from __future__ import annotations


class SipParseError(ValueError):
    """A message, header or URI that cannot be parsed; `reason` says specifically why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
