"""PJSIP_CONTACT() / PJSIP_AOR() (pjsip_compat.read_function) against asterisk-pjsip-observed.md §7
(`dialplan eval function ...` on Asterisk 20.20.1, run 2 at T0+25) and the return values and
messages of funcs/func_pjsip_contact.c `pjsip_contact_function_read` and funcs/func_pjsip_aor.c
`pjsip_aor_function_read`."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sipqualify.config import load_config
from sipqualify.pjsip_compat import pjsip_snapshot, read_function

DATA = Path(__file__).parent / "data" / "pjsip"
PJ = load_config(str(DATA / "observed_pjsip.conf")).pjsip
assert PJ is not None
OK = "ok-def@@e0152829e49ec8fffb59bb00ed1fd08e"
SIL = "sil-05@@2d856176aeaa52810528768ccc9cb70e"
NQ = "nq@@4114a150d5e8b1dddb0b3c3c6bba75aa"
P1 = "phone1;@f21aeab93a6db6525cee4f0f7dcaf4cd"
P2A, P2B = "phone2;@14d92dec16ce2231edf6c0fbcd9b9ef2", "phone2;@a3300cd16d29592544ef766c5aff30a7"


def reg(peer: str, port: int, call_id: str) -> dict[str, object]:
    aor = peer.split(";@")[0]
    return {"peer": peer, "contact": f"sip:{aor}@127.0.0.1:{port}", "call_id": call_id,
            "useragent": "bar-phone/1.0", "address": "127.0.0.1", "port": port, "expires_at": 1796151963.0}


STATES = {OK: ("OK", 0.000684), SIL: ("UNREACHABLE", None), NQ: ("UNMONITORED", None), P1: ("OK", 0.000461),
          P2A: ("OK", 0.0015), P2B: ("UNREACHABLE", None)}
SNAP = pjsip_snapshot(PJ, lambda p: STATES.get(p, (None, None)),
                      [reg(P1, 35090, "546e2166@regc"), reg(P2A, 35093, "x@regc"), reg(P2B, 35092, "3f9ecfbc@regc")])


@pytest.mark.parametrize(("cid", "field", "want"), [
    (OK, "status", "Reachable"), (SIL, "status", "Unreachable"), (NQ, "status", "NonQualified"),
    (P1, "status", "Reachable"), (P2B, "status", "Unreachable"),
    (OK, "rtt", "684"), (SIL, "rtt", "N/A"), (NQ, "rtt", "N/A"), (P1, "rtt", "461"), (P2B, "rtt", "N/A"),
    (OK, "uri", "sip:ok@127.0.0.1:35071"), (P1, "uri", "sip:phone1@127.0.0.1:35090"),
    (P1, "qualify_timeout", "2.000000"), (P2B, "qualify_timeout", "3.000000"), (P1, "qualify_frequency", "5"),
    (OK, "qualify_2xx_only", "false"), (OK, "authenticate_qualify", "no"), (P1, "authenticate_qualify", "no"),
    (OK, "expiration_time", "0"), (P1, "expiration_time", "1796151963"),
    (OK, "user_agent", ""), (P1, "user_agent", "bar-phone/1.0"), (OK, "reg_server", ""), (P1, "reg_server", ""),
    (OK, "via_addr", ""), (P1, "via_addr", "127.0.0.1"), (OK, "via_port", "0"), (P2B, "via_port", "35092"),
    (OK, "call_id", ""), (P2B, "call_id", "3f9ecfbc@regc"), (OK, "endpoint", ""), (P1, "endpoint", "phone1"),
    (OK, "prune_on_boot", "no"), (P1, "path", ""), (OK, "outbound_proxy", ""),
])
def test_pjsip_contact_fields_as_captured(cid: str, field: str, want: str) -> None:
    assert read_function(SNAP, "PJSIP_CONTACT", f"{cid},{field}") == (0, want, "")


def test_static_contact_qualify_fields_are_the_aor_s() -> None:
    """The contact views' deliberate difference: Asterisk answers 0 and 3.000000 (§7) for
    ok-def@@…, the contact object's unused defaults; sipqualify the AOR's 5 and 3.000000 it
    is qualified with (and sil-05's 0.500000)."""
    assert read_function(SNAP, "PJSIP_CONTACT", f"{OK},qualify_frequency") == (0, "5", "")
    assert read_function(SNAP, "PJSIP_CONTACT", f"{SIL},qualify_timeout") == (0, "0.500000", "")


@pytest.mark.parametrize(("data", "want"), [
    ("ok-def,contact", "ok-def@@e0152829e49ec8fffb59bb00ed1fd08e"),
    ("two,contact", "two@@15e0d505655510bdcbd243b989bc9ee0,two@@6fa85a8f1fe65eb9ea034c4257c8470e"),
    ("ok-def,qualify_frequency", "5"), ("sil-05,qualify_timeout", "0.500000"), ("nf-2xx,qualify_2xx_only", "true"),
    ("phone2,contact", f"{P2A},{P2B}"), ("phone2,max_contacts", "2"), ("phone2,remove_existing", "false"),
    ("phone2,remove_unavailable", "false"), ("phone2,qualify_frequency", "5"),
    ("phone2,qualify_timeout", "3.000000"), ("phone2,qualify_2xx_only", "false"),
    ("phone2,authenticate_qualify", "false"), ("empty,contact", ""),
])
def test_pjsip_aor_fields_as_captured(data: str, want: str) -> None:
    assert read_function(SNAP, "PJSIP_AOR", data) == (0, want, "")


@pytest.mark.parametrize(("fn", "data", "want"), [
    # §7: Failure (1) for an unknown field, Failure (-1) for an unknown object, with the WARNINGs logged
    ("PJSIP_CONTACT", f"{OK},nosuchfield", (1, "", "Unknown property 'nosuchfield' for PJSIP contact")),
    ("PJSIP_AOR", "nosuch,contact", (-1, "", "Failed to retrieve information for AOR 'nosuch'")),
    ("PJSIP_CONTACT", "nosuch@@abc,status", (-1, "", "Failed to retrieve information for contact 'nosuch@@abc'")),
    ("PJSIP_AOR", "ok-def,nosuchfield", (1, "", "Unknown property 'nosuchfield' for PJSIP AOR")),
    # the C's argument checks (ERROR lines, -1)
    ("PJSIP_CONTACT", "", (-1, "", "Cannot call PJSIP_CONTACT without arguments")),
    ("PJSIP_CONTACT", ",status", (-1, "", "Cannot call PJSIP_CONTACT without a contact name to query")),
    ("PJSIP_AOR", ",contact", (-1, "", "Cannot call PJSIP_AOR without an AOR name to query")),
    ("PJSIP_AOR", "ok-def", (-1, "", "Cannot call PJSIP_AOR with an empty field name to query")),
    # a static id must name an existing AOR's permanent contact, a registered id a registered one
    ("PJSIP_CONTACT", "ok-def@@0000,status", (-1, "", "Failed to retrieve information for contact 'ok-def@@0000'")),
    ("PJSIP_CONTACT", "ok-def;@e0152829e49ec8fffb59bb00ed1fd08e,status",
     (-1, "", "Failed to retrieve information for contact 'ok-def;@e0152829e49ec8fffb59bb00ed1fd08e'")),
])
def test_failures_as_asterisk(fn: str, data: str, want: tuple[int, str, str]) -> None:
    assert read_function(SNAP, fn, data) == want


@settings(max_examples=300, deadline=None)
@given(fn=st.sampled_from(["PJSIP_CONTACT", "PJSIP_AOR"]), data=st.text(max_size=80))
def test_any_argument_text_gives_an_answer_never_a_traceback(fn: str, data: str) -> None:
    """`Variable:` of an AMI Getvar is network input: whatever it holds, an answer."""
    res, value, why = read_function(SNAP, fn, data)
    assert res in (-1, 0, 1) and isinstance(value, str) and (res == 0) == (why == "")
