"""Property tests of the vantage points' NOTIFY payload (cluster/vantage.py `payload` / `parse_payload`).

Anything may arrive on the channel (another program's NOTIFY, a different version's format,
junk): `parse_payload` must never raise, and whatever it takes in must be an observation the
agreement can use (a known state, finite numbers). What our own nodes send must come back
exactly.
"""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as hs

from sipqualify.cluster.vantage import STATES, Observation, parse_payload, payload

# a node id or peer name as they can be: any text but the field separator
names = hs.text(hs.characters(blacklist_characters="\t", blacklist_categories=("Cs",)), min_size=1, max_size=40)
finite = hs.floats(allow_nan=False, allow_infinity=False)
observations = hs.builds(
    Observation,
    state=hs.sampled_from(sorted(STATES)),
    lastms=hs.integers(min_value=-1, max_value=10**9),
    rtt_ms=hs.none() | hs.floats(min_value=0, allow_nan=False, allow_infinity=False),
    at=finite,
)


def valid(got: tuple[str, str, Observation]) -> bool:
    node, peer, o = got
    return (bool(node) and bool(peer) and o.state in STATES and isinstance(o.lastms, int)
            and (o.rtt_ms is None or (math.isfinite(o.rtt_ms) and o.rtt_ms >= 0)) and math.isfinite(o.at))


@settings(max_examples=500, deadline=None, derandomize=True, database=None)
@given(names, names, observations)
def test_our_payloads_come_back_exactly(node: str, peer: str, o: Observation) -> None:
    assert parse_payload(payload(node, peer, o)) == (node, peer, o)


@settings(max_examples=1000, deadline=None, derandomize=True, database=None)
@given(hs.text(max_size=200))
def test_any_text_never_raises_and_only_valid_is_taken(text: str) -> None:
    got = parse_payload(text)
    assert got is None or valid(got)


fields = hs.one_of(
    hs.sampled_from(["", "OK", "LAGGED", "UNREACHABLE", "UNKNOWN", "ok", "nan", "inf", "-inf", "NaN", "1e309",
                     "-1e309", "1_000", " 5", "5 ", "\u0665", "0x10", "-0", "+3", "1.5", "-2.5", "1e3",
                     "99999999999999999999", "-1", "0"]),
    hs.text(max_size=12),
)


@settings(max_examples=2000, deadline=None, derandomize=True, database=None)
@given(hs.lists(fields, min_size=0, max_size=8))
def test_field_by_field_junk(parts: list[str]) -> None:
    """Six-ish fields of near-valid values: the strict checks, field by field."""
    text = "\t".join(parts)
    got = parse_payload(text)
    if got is None:
        return
    assert valid(got)
    node, peer, state, lastms, rtt, at = parts
    assert lastms.lstrip("-").isascii() and lastms.lstrip("-").isdigit()
    assert got[2].lastms == int(lastms)
    assert (got[2].rtt_ms is None) == (rtt == "")


def test_examples_of_what_is_refused() -> None:
    ok = payload("n1", "p", Observation("OK", 7, 7.5, 1.0))
    assert parse_payload(ok) is not None
    for field, bad in ((2, "ok"), (2, "DOWN"), (3, "1_000"), (3, " 7"), (3, "\u0667"), (3, "7.0"),
                       (4, "nan"), (4, "inf"), (4, "-1.0"), (5, "nan"), (5, "-inf"), (5, "1e309"),
                       (0, ""), (1, "")):
        parts = ok.split("\t")
        parts[field] = bad
        assert parse_payload("\t".join(parts)) is None, (field, bad)


def test_a_refused_notification_is_counted_and_logged(caplog) -> None:  # type: ignore[no-untyped-def]
    from sipqualify.cluster.vantage import Vantage

    v = Vantage("postgresql://unused", "a", report=lambda _: None, read_stored=lambda _: {})
    with caplog.at_level("WARNING", logger="sipqualify.cluster"):
        for _ in range(1001):
            v._reject("junk\tfrom\tsomeone")
    assert v.rejected == 1001 and v.status()["rejected"] == 1001
    assert len(caplog.records) == 2  # the first, then the 1,000th
    assert "not an observation" in caplog.records[0].getMessage()
