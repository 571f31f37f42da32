"""Fidelity with a real Asterisk 20.20.1 chan_sip: the bytes of asterisk-differences.md items 2
(fromuser/fromdomain in peer details), 3 (AMI Getvar with SIPPEER()), 8 (CLI words) and 9
(SIPPEER limit and codec[x])."""

from __future__ import annotations

from sipqualify.compat import sippeer_item

from .helpers import view

# --- item 9 ----------------------------------------------------------------------------------

def test_sippeer_limit_and_codecs() -> None:
    v = view("ok-yes", 15070, 2000, 1)
    assert sippeer_item(v, "limit") == "0"
    assert sippeer_item(v, "codec[0]") == "ulaw"
    assert sippeer_item(v, "CODEC[0]") == "ulaw"
    assert sippeer_item(v, "codec[1]") == ""
    assert sippeer_item(v, "codecs") == "(ulaw)"
