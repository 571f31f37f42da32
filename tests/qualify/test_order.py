"""chan_sip's peers container order (qualify/order.py), against Asterisk 20.20.1 captures."""

from __future__ import annotations

from sipqualify.qualify.order import container_order, peer_bucket

CONFIG_ORDER = ["ok-yes", "ok-500", "ok-default-freq", "lagged-500", "resp-404", "trying-only", "user-peer",
                "sipp-uas", "flap", "dead-yes", "dead-500", "dead-3000", "noqualify"]  # asterisk-observed.md §1
# asterisk-observed.md §8: `Action: SIPpeerstatus` listed the peers in this order
CAPTURED = ["ok-yes", "sipp-uas", "flap", "resp-404", "lagged-500", "noqualify", "dead-500", "user-peer",
            "trying-only", "dead-3000", "dead-yes", "ok-500", "ok-default-freq"]


def test_container_order_is_the_captured_order() -> None:
    assert container_order(CONFIG_ORDER, str) == CAPTURED


def test_hash_clears_the_top_bit_rather_than_taking_abs() -> None:
    """ast_str_hash_restrict (hash & INT_MAX): names whose 32-bit hash has bit 31 set land in
    another bucket than abs((int)hash) would give; sipp-uas is one (abs: 529)."""
    assert peer_bucket("sipp-uas") == 128
    assert peer_bucket("ok-default-freq") == 529
    assert peer_bucket("ok-yes") == 12


def test_case_insensitive_and_ascii_only_lowering() -> None:
    assert peer_bucket("OK-YES") == peer_bucket("ok-yes")
    assert peer_bucket("Ä") != peer_bucket("ä")  # tolower() in the C locale leaves UTF-8 bytes alone


def test_same_bucket_keeps_config_order() -> None:
    """Peers sharing a bucket are linked at its tail in file order (astobj2_hash.c, no sort)."""
    names = [f"p{i}" for i in range(3000)]
    by_bucket: dict[int, list[str]] = {}
    for n in names:
        by_bucket.setdefault(peer_bucket(n), []).append(n)
    ordered = container_order(names, str)
    assert ordered == [n for b in sorted(by_bucket) for n in by_bucket[b]]
    assert any(len(v) > 1 for v in by_bucket.values())
