"""The order chan_sip keeps its peers in, which is the order it pokes them at start-up and
lists them in `SIPpeerstatus` (asterisk-differences.md item 10).

chan_sip holds its peers in an ao2 hash container of HASH_PEER_SIZE = 563 buckets
(`ao2_t_container_alloc_hash(..., 0, HASH_PEER_SIZE, peer_hash_cb, ...)`, 17 only in a
LOW_MEMORY build), hashed by `ast_str_case_hash(peer->name)`: djb2 with xor over the
lower-cased bytes, unsigned 32-bit, top bit cleared (`ast_str_hash_restrict`, Asterisk 13.18
and later). astobj2_hash.c puts an object in bucket `hash % n_buckets`, at the tail of that
bucket (no INSERT_BEGIN option, no sort function), and an iterator walks buckets 0..562, each
head to tail. `sip reload` unlinks every configured peer and links it again in file order, so
inside a bucket the order is always the config order. `sip_poke_all_peers()` walks that
iterator; `sip show peers` and `SIPpeers` sort by name instead.

Checked against a capture of Asterisk 20.20.1 (asterisk-observed.md §6 start-up slots and §8
SIPpeerstatus): all 13 peers in the captured order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TypeVar

__all__ = ["HASH_PEER_SIZE", "container_order", "peer_bucket"]

HASH_PEER_SIZE = 563
T = TypeVar("T")


def peer_bucket(name: str, buckets: int = HASH_PEER_SIZE) -> int:
    """The bucket chan_sip's peers container puts `name` in."""
    h = 5381
    for c in name.encode().lower():  # tolower() of the C locale: ASCII letters only
        h = h * 33 ^ c  # unbounded here; only the low 32 bits matter and they are exact
    return (h & 0x7FFFFFFF) % buckets


def container_order(items: Iterable[T], name: Callable[[T], str]) -> list[T]:
    """`items` (in config order) in the order chan_sip's peers container iterates them."""
    return sorted(items, key=lambda it: peer_bucket(name(it)))  # stable: config order in a bucket
