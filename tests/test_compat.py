"""`sip show peers` / `sip show peer` / SIPPEER() byte for byte against real Asterisk 20 output
(asterisk-observed.md §3, copied verbatim into tests/data)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sipqualify.compat import format_sip_show_peer, format_sip_show_peers, sippeer_item, status_counts

from .helpers import phase2, view

DATA = Path(__file__).parent / "data"


def test_sip_show_peers_phase2_byte_for_byte() -> None:
    assert format_sip_show_peers(phase2()) == (DATA / "observed_peers_phase2.txt").read_text()


def test_sip_show_peers_outage_byte_for_byte() -> None:
    assert format_sip_show_peers(phase2(outage=True)) == (DATA / "observed_peers_outage.txt").read_text()


def test_summary_counts_lagged_online_unknown_offline() -> None:
    assert status_counts(phase2()) == (8, 4, 1, 0)
    unknown = view("x", 1, 2000, 0)
    nowhere = view("y", 0, 0, 0, addr_ip=None)
    assert status_counts([unknown, nowhere]) == (0, 1, 0, 1)


def test_sip_show_peer_ok_yes_byte_for_byte() -> None:
    v = view("ok-yes", 15070, 2000, 1)
    assert format_sip_show_peer(v) == (DATA / "observed_show_peer_ok_yes.txt").read_text()


def test_sip_show_peer_keepalive_in_ms() -> None:
    """chan_sip prints the peer's keepalive= (seconds) times 1000 (asterisk-qualify.md §1.1);
    every other line stays the observed one."""
    observed = (DATA / "observed_show_peer_ok_yes.txt").read_text()
    shown = format_sip_show_peer(view("ok-yes", 15070, 2000, 1, keepalive_ms=30_000))
    assert shown == observed.replace("  Keepalive    : 0 ms\n", "  Keepalive    : 30000 ms\n")
    assert shown != observed


def test_dynamic_unregistered_row() -> None:
    """asterisk-qualify.md §1.7 example: (Unspecified), ' D ', port 0, UNKNOWN."""
    v = view("1002", 0, 2000, 0, addr_ip=None, dynamic=True, host="dynamic")
    row = format_sip_show_peers([v]).splitlines()[1].rstrip()
    assert row == ("1002                      (Unspecified)                            D  Auto (No)  No"
                   "             0        UNKNOWN")


def test_lagged_with_description_and_forced_rport() -> None:
    v = view("trunk-a", 5060, 2000, 2500, nat=["force_rport", "comedia"], description="Carrier A")
    row = format_sip_show_peers([v]).splitlines()[1].rstrip()
    assert row == ("trunk-a                   127.0.0.1                                   Yes        Yes"
                   "            5060     LAGGED (2500 ms) Carrier A")


@pytest.mark.parametrize(("item", "value"), [
    ("ip", "127.0.0.1"), ("port", "15075"), ("status", "OK (1 ms)"), ("STATUS", "OK (1 ms)"), ("dynamic", "no"),
    ("context", "default"), ("useragent", ""), ("regexten", ""), ("expire", "-1"), ("nonsense", ""),
])
def test_sippeer_items(item: str, value: str) -> None:
    assert sippeer_item(view("user-peer", 15075, 2000, 1, defaultuser="alice"), item) == value


def test_sippeer_no_address() -> None:
    v = view("d", 0, 2000, 0, addr_ip=None, dynamic=True)
    assert (sippeer_item(v, "ip"), sippeer_item(v, "port"), sippeer_item(v, "dynamic")) == ("(null)", "0", "yes")
