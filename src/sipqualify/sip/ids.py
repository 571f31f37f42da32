"""Random identifiers for requests (RFC 3261 §8.1.1.7: branch magic cookie)."""

from __future__ import annotations

import os


def new_branch() -> str:
    """`z9hG4bK` + 64 random bits (Asterisk uses 32)."""
    return "z9hG4bK" + os.urandom(8).hex()


def new_tag() -> str:
    return os.urandom(4).hex()


def new_call_id(host: str) -> str:
    return f"{os.urandom(16).hex()}@{host}"
