"""Fidelity with a real Asterisk 20.20.1 chan_sip: the bytes of asterisk-differences.md items 2
(fromuser/fromdomain in peer details), 3 (AMI Getvar with SIPPEER()), 8 (CLI words) and 9
(SIPPEER limit and codec[x])."""

from __future__ import annotations

from sipqualify.api.ami import show_peer
from sipqualify.compat import format_sip_show_peer, fromdomain_parts, sippeer_item

from .helpers import view


def user_peer(**kw: object) -> object:
    return view("user-peer", 15075, 2000, 1, defaultuser="alice", fromuser="ast-from", fromdomain="example.test",
                **kw)


# --- item 2 -----------------------------------------------------------------------------------

def test_sip_show_peer_fromuser_fromdomain_like_chan_sip() -> None:
    text = format_sip_show_peer(user_peer())  # type: ignore[arg-type]
    assert ("  CallingPres  : Presentation Allowed, Not Screened\n"
            "  FromUser     : ast-from\n"
            "  FromDomain   : example.test Port 5060\n"
            "  Callgroup    : \n") in text
    plain = format_sip_show_peer(view("ok-yes", 15070, 2000, 1))
    assert "FromUser" not in plain and "FromDomain" not in plain


def test_sipshowpeer_fromuser_fromdomain_like_chan_sip() -> None:
    text = show_peer(user_peer(), "s")  # type: ignore[arg-type]
    assert ("CID-CallingPres: Presentation Allowed, Not Screened\r\n"
            "SIP-FromUser: ast-from\r\n"
            "SIP-FromDomain: example.test\r\n"
            "Sip-FromDomain-Port: 5060\r\n"
            "Callgroup: \r\n") in text
    plain = show_peer(view("ok-yes", 15070, 2000, 1), "s")
    assert "SIP-From" not in plain and "Sip-From" not in plain


def test_fromdomain_with_port() -> None:
    assert fromdomain_parts("example.test:5070") == ("example.test", 5070)
    assert fromdomain_parts("example.test") == ("example.test", 5060)
    assert fromdomain_parts("example.test:x") == ("example.test", 5060)
    assert fromdomain_parts(None) == ("", 5060)
    v = view("p", 1, 2000, 1, fromdomain="example.test:5070")
    assert "  FromDomain   : example.test Port 5070\n" in format_sip_show_peer(v)
    assert "SIP-FromDomain: example.test\r\nSip-FromDomain-Port: 5070\r\n" in show_peer(v, None)


def test_only_fromuser() -> None:
    v = view("p", 1, 2000, 1, fromuser="u")
    assert "  FromUser     : u\n  Callgroup    : \n" in format_sip_show_peer(v)
    assert "SIP-FromUser: u\r\nCallgroup: \r\n" in show_peer(v, None)


# --- item 8 ------------------------------------------------------------------------------------

def test_sip_show_peer_ends_with_an_empty_line() -> None:
    assert format_sip_show_peer(view("ok-yes", 15070, 2000, 1)).endswith("  RTCP Mux     : No\n\n")


# --- item 9 ----------------------------------------------------------------------------------

def test_sippeer_limit_and_codecs() -> None:
    v = view("ok-yes", 15070, 2000, 1)
    assert sippeer_item(v, "limit") == "0"
    assert sippeer_item(v, "codec[0]") == "ulaw"
    assert sippeer_item(v, "CODEC[0]") == "ulaw"
    assert sippeer_item(v, "codec[1]") == ""
    assert sippeer_item(v, "codecs") == "(ulaw)"
