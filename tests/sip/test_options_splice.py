"""The OPTIONS request's splice (sip/options.py `_splice`, and `splice` in sip/_speedups.c where
it is built, which build_options then calls): both make the same bytes, branch and Call-ID from
the same pieces and per-poke parts, whatever the strings (non-ASCII display names and users,
IPv6 local addresses, a To URI or none, a Date or none), and refuse the same bad input."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as hs

from sipqualify.sip import options
from sipqualify.sip.message import parse_message
from sipqualify.sip.options import SPLICE_C, _pieces, _splice

pytestmark = pytest.mark.skipif(SPLICE_C is None, reason="sip/_speedups.c not built")
TEXT = "0123456789abcdef" * 40
RAW = TEXT.encode()
SHAPES = [
    _pieces("OPTIONS", "UDP", ("127.0.0.1", 5060), 70, "sipqualify", options.ALLOW, "", ()),
    _pieces("NOTIFY", "TCP", ("::1", 5070), 0, "Ästerisk PBX", options.ASTERISK_ALLOW, options.ASTERISK_SUPPORTED,
            ("X-A: 1", "X-B: ü")),
    _pieces("INFO", "WSS", ("fe80::1%eth0", 443), 70, "", options.ALLOW, "", ()),
]


@settings(max_examples=600, deadline=None, derandomize=True, database=None)
@given(shape=hs.sampled_from(SHAPES), ruri=hs.text(max_size=60), at=hs.integers(0, len(TEXT) - 56),
       display=hs.text(max_size=20), user=hs.text(max_size=20), to_uri=hs.none() | hs.text(max_size=30),
       cseq=hs.integers(0, 2**63 - 1), date=hs.sampled_from(["", "Thu, 03 Dec 2026 12:00:00 GMT", "é"]))
def test_c_splice_is_the_python_one(shape: tuple, ruri: str, at: int, display: str, user: str,  # type: ignore[type-arg]
                                    to_uri: str | None, cseq: int, date: str) -> None:
    assert SPLICE_C is not None
    args = (shape, ruri, TEXT, RAW, at, display, user, to_uri, cseq, date)
    assert SPLICE_C(*args) == _splice(*args)


def test_a_spliced_request_parses_as_built() -> None:
    assert SPLICE_C is not None
    data, branch, call_id = SPLICE_C(SHAPES[0], "sip:p1@192.0.2.1", TEXT, RAW, 56, "asterisk", "asterisk",
                                     None, 102, "")
    m = parse_message(data)
    assert (m.branch, m.call_id, m.cseq) == (branch, call_id, (102, "OPTIONS"))
    assert branch == "z9hG4bK" + TEXT[56:72] and call_id == TEXT[80:112] + "@127.0.0.1:5060"


def test_bad_input_is_refused_alike() -> None:
    assert SPLICE_C is not None
    good = (SHAPES[0], "sip:p1@192.0.2.1", TEXT, RAW, 0, "a", "b", None, 1, "")
    for k, bad in ((1, "sip:\ud800"), (5, "\udfff"), (7, "\ud800")):  # lone surrogates: not UTF-8
        args = list(good)
        args[k] = bad
        with pytest.raises(UnicodeEncodeError):
            _splice(*args)  # type: ignore[arg-type]
        with pytest.raises(UnicodeEncodeError):
            SPLICE_C(*args)  # type: ignore[arg-type]
    with pytest.raises(ValueError):  # the 56 digits must be in the pool
        SPLICE_C(SHAPES[0], "sip:x", TEXT, RAW, len(RAW) - 55, "a", "b", None, 1, "")
    with pytest.raises(ValueError):
        SPLICE_C(SHAPES[0], "sip:x", TEXT, b"\xff" * 56, 0, "a", "b", None, 1, "")
    with pytest.raises(TypeError):
        SPLICE_C(SHAPES[0][:11], "sip:x", TEXT, RAW, 0, "a", "b", None, 1, "")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        SPLICE_C(SHAPES[0], b"sip:x", TEXT, RAW, 0, "a", "b", None, 1, "")  # type: ignore[arg-type]


def test_build_options_calls_the_c_splice_where_built() -> None:
    assert options.SPLICE is SPLICE_C
