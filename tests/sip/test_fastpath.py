"""The response fast path (sip/fastpath.py) accepts only what the full parser accepts without
defects, and reads the same status, branch, Call-ID and CSeq from it.

Near-valid responses (header order, compact and lower-case names, extra headers, rport and
received) must be taken by the fast path; mutated ones (a byte inserted, removed or replaced
anywhere, from an alphabet of the characters the grammar cares about) may go either way, but
whatever the fast path takes the parser must take the same way. Budget: fixed (derandomize).

Every case runs on the Python `peek_response` and, where it is built (setup.py, the compiled
build), on the C one (sip/_speedups.c) the engine then uses; and the two must return the same for
every answer tried, mutated or not.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hs

from sipqualify.sip import fastpath
from sipqualify.sip.fastpath import PEEK_C, peek_response
from sipqualify.sip.message import Response, SipParseError, parse_message

Peek = Callable[[bytes], "tuple[int, str, str, bytes] | None"]
IMPLS = pytest.mark.parametrize("peek", [
    pytest.param(peek_response, id="python"),
    pytest.param(PEEK_C, id="c", marks=pytest.mark.skipif(PEEK_C is None, reason="sip/_speedups.c not built")),
])

BUDGET = settings(max_examples=1500, deadline=None, derandomize=True, database=None,
                  suppress_health_check=[HealthCheck.too_slow])
BRANCH = "z9hG4bK0fa0b5029f33dc02"
CALL_ID = "4232c55db38c982d39878ac9cc386f63@10.0.0.1:5060"
KAMAILIO = (
    b"SIP/2.0 200 OK\r\n"
    b"Via: SIP/2.0/UDP 10.0.0.1:5060;branch=" + BRANCH.encode() + b";rport=5060;received=127.0.0.1\r\n"
    b'From: "asterisk" <sip:asterisk@10.0.0.1:5060>;tag=asd5c6bd4c\r\n'
    b"To: <sip:10.0.0.1>;tag=2c9e3f1a\r\n"
    b"Call-ID: " + CALL_ID.encode() + b"\r\n"
    b"CSeq: 102 OPTIONS\r\n"
    b"Server: kamailio (5.6.3 (x86_64/linux))\r\n"
    b"Content-Length: 0\r\n\r\n"
)


def agrees(data: bytes, peek_fn: Peek = peek_response) -> bool:
    """True when the fast path took `data`; fails the test if the parser disagrees. The CSeq is
    not checked by peek_response: its caller takes the answer only if it equals its own (the
    engine: `102 OPTIONS`), which the parser then reads the same way."""
    peek = peek_fn(data)
    if PEEK_C is not None:
        assert PEEK_C(data) == peek_response(data), data  # the C rules are the Python ones
    if peek is None:
        return False
    try:
        msg = parse_message(data)
    except SipParseError as e:
        if peek[3] != b"102 OPTIONS":
            return False  # the engine would not take it: the parser's turn
        raise AssertionError(f"fast path took what the parser rejects ({e.reason}): {data!r}") from e
    assert isinstance(msg, Response)
    assert not msg.defects, data
    status, branch, call_id, cseq = peek
    assert (status, branch, call_id) == (msg.status, msg.branch, msg.call_id), data
    assert cseq.decode() == msg.headers.get("CSeq"), data
    return True


@IMPLS
def test_kamailio_answer_is_read_from_its_bytes(peek: Peek) -> None:
    assert peek(KAMAILIO) == (200, BRANCH, CALL_ID, b"102 OPTIONS")
    assert agrees(KAMAILIO, peek)


HEADERS = [
    (b"Via", b"SIP/2.0/UDP 10.0.0.1:5060;branch=" + BRANCH.encode() + b";rport"),
    (b"From", b"<sip:asterisk@10.0.0.1>;tag=as1"),
    (b"To", b"<sip:10.0.0.1>;tag=x"),
    (b"Call-ID", CALL_ID.encode()),
    (b"CSeq", b"102 OPTIONS"),
]
COMPACT = {b"Via": b"v", b"From": b"f", b"To": b"t", b"Call-ID": b"i", b"CSeq": b"cseq"}


@IMPLS
@BUDGET
@given(order=hs.permutations(range(5)), compact=hs.lists(hs.booleans(), min_size=5, max_size=5),
       extra=hs.lists(hs.sampled_from([b"Server: x", b"Allow: OPTIONS, INVITE", b"Accept: application/sdp",
                                       b"Content-Length: 0", b"l: 0", b"Supported: timer"]), max_size=3, unique=True),
       status=hs.sampled_from([b"100 Trying", b"180 Ringing", b"200 OK", b"404 Not Found", b"486 Busy Here",
                               b"503 Service Unavailable", b"699 X"]))
def test_plain_shapes_take_the_fast_path(peek: Peek, order: list[int], compact: list[bool], extra: list[bytes],
                                         status: bytes) -> None:
    lines = [b"SIP/2.0 " + status]
    for i in order:
        name, value = HEADERS[i]
        lines.append((COMPACT[name] if compact[i] else name) + b": " + value)
    if b"Content-Length: 0" in extra and b"l: 0" in extra:
        extra.remove(b"l: 0")  # two Content-Lengths: the parser's business (tested below)
    lines += extra
    data = b"\r\n".join(lines) + b"\r\n\r\n"
    assert agrees(data, peek), data


def mutated(data: bytes, edits: list[tuple[int, int, bytes]]) -> bytes:
    """`data` with each edit (where, 0 insert / 1 delete one byte / 2 overwrite, the text) applied."""
    for at, kind, text in edits:
        at = min(at, len(data))
        if kind == 0:
            data = data[:at] + text + data[at:]
        elif kind == 1:
            data = data[:at] + data[at + 1:]
        else:
            data = data[:at] + text + data[at + len(text):]
    return data


ALPHABET = [b" ", b"\t", b":", b";", b",", b"\r", b"\n", b"\r\n", b"\r\n ", b"0", b"9", b"a", b"B", b"=",
            b"\xc2\xb2", b"\xef\xbc\x95", b"branch=z9hG4bK0fa0b5029f33dc03", b"Via: SIP/2.0/UDP x", b"v",
            b"l: 5", b"Content-Length: 1", b"CSeq: 1 OPTIONS", b"\r\n\r\nbody", b"\x00", b"\x7f", b"SIP/2.0 "]


@IMPLS
@BUDGET
@given(edits=hs.lists(hs.tuples(hs.integers(0, len(KAMAILIO)), hs.integers(0, 2), hs.sampled_from(ALPHABET)),
                      min_size=1, max_size=3))
def test_mutated_answers_never_taken_against_the_parser(peek: Peek, edits: list[tuple[int, int, bytes]]) -> None:
    agrees(mutated(KAMAILIO, edits), peek)


VIA_LINE = KAMAILIO.split(b"\r\n")[1]
VIA_ALPHABET = [b" ", b"\t", b":", b";", b"=", b"0", b"f", b"F", b"g", b".", b"-", b"B", b"branch=z9hG4bK",
                b";branch=z9hG4bK0fa0b5029f33dc03", b"TCP", b"WSS", b"[::1]", b"65536", b"\r"]


@IMPLS
@BUDGET
@given(edits=hs.lists(hs.tuples(hs.integers(0, len(VIA_LINE)), hs.integers(0, 2), hs.sampled_from(VIA_ALPHABET)),
                      min_size=1, max_size=3))
def test_mutated_vias_never_taken_against_the_parser(peek: Peek, edits: list[tuple[int, int, bytes]]) -> None:
    """The Via is read in parts (head, branch, parameters), the first and last checked once and
    remembered: whatever is remembered, mutated Vias go the parser's way (and the memory stays
    bounded)."""
    agrees(KAMAILIO.replace(VIA_LINE, mutated(VIA_LINE, edits)), peek)
    assert len(fastpath._VIA_HEADS) <= fastpath._MAX_SHAPES and len(fastpath._VIA_TAILS) <= fastpath._MAX_SHAPES
    assert peek(KAMAILIO) == (200, BRANCH, CALL_ID, b"102 OPTIONS")  # remembered or not


@IMPLS
def test_what_is_left_to_the_parser(peek: Peek) -> None:
    base = KAMAILIO
    for bad in (
        base.replace(b"Content-Length: 0", b"Content-Length: 4") + b"body",  # a body
        base.replace(b"Via: ", b"Via:"),  # no space: the parser strips, we do not
        base.replace(b"rport=5060", b"rport=5060,SIP/2.0/UDP 10.0.0.9"),  # two Vias in one line
        base.replace(b"Server:", b"Via: SIP/2.0/UDP 10.0.0.9;branch=z9hG4bKx\r\nServer:"),  # two Via lines
        base.replace(b"CSeq: 102 OPTIONS\r\n", b""),  # a mandatory header missing: a defect
        base.replace(b";rport", b";BRANCH=z9hG4bK1;rport"),  # the parser's branch would be the last
        base.replace(b"Server: kamailio", b"Server: \xc2\xb2"),  # not ASCII
        base.replace(b"\r\nServer", b"\r\n Server"),  # folding
        b"\r\n" + base,  # leading CRLF
        base.replace(b"200 OK", b"099 Early"),
    ):
        assert peek(bad) is None, bad
        try:
            parse_message(bad)
        except SipParseError:
            pass


NEAR = [
    KAMAILIO.replace(b";rport=5060", b";rport=5060;x+y=1"),  # `+`: a name token, not a Via parameter's
    KAMAILIO.replace(b";rport=5060", b";rport=5060;a=b=c"),
    KAMAILIO.replace(b";rport=5060", b";rport="),
    KAMAILIO.replace(b";rport=5060", b";Branch=z9hG4bK1"),
    KAMAILIO.replace(b";rport=5060", b";branchx=1"),
    KAMAILIO.replace(b"UDP 10.0.0.1", b"WSx10.0.0.1"),
    KAMAILIO.replace(b"UDP 10.0.0.1", b"UDP10.0.0.1"),
    KAMAILIO.replace(b"\r\nServer", b"\r\nX+Y: z\r\nServer"),
    KAMAILIO.replace(b"Content-Length: 0", b"l: 0"),
    KAMAILIO.replace(b"Content-Length: 0", b"Content-Length: 00"),
    KAMAILIO.replace(b"Content-Length: 0", b"Content-Length:  0"),
    KAMAILIO.replace(b"Call-ID:", b"CALL-id:"),
    KAMAILIO.replace(b"Call-ID:", b"i:"),
    KAMAILIO.replace(b"CSeq:", b"cseq:"),
    KAMAILIO.replace(b"Via:", b"V:"),
    KAMAILIO.replace(b"To:", b"t:"),
    KAMAILIO.replace(b"From:", b"F:"),
    KAMAILIO.replace(b"To:", b"m:"),
    KAMAILIO.replace(b"SIP/2.0 200", b"SIP/2.0 1x0"),
    KAMAILIO.replace(b"SIP/2.0 200", b"SIP/2.0 700"),
    KAMAILIO.replace(b"200 OK", b"200\rOK"),
    KAMAILIO.replace(b"200 OK\r\n", b"200 OK\n"),
    KAMAILIO.replace(b"z9hG4bK0fa0", b"z9hG4bK0FA0"),
    KAMAILIO.replace(BRANCH.encode(), BRANCH.encode()[:-1]),
    KAMAILIO.replace(BRANCH.encode() + b";", BRANCH.encode() + b"0;"),
    KAMAILIO.replace(b";rport=5060;received=127.0.0.1", b""),
    KAMAILIO.replace(b"Call-ID: ", b"Call-ID:  "),
    KAMAILIO.replace(b"102 OPTIONS", b"102 OPTIONS\t"),
    KAMAILIO.replace(b"Call-ID: " + CALL_ID.encode(), b"Call-ID: "),
    KAMAILIO.replace(b"\r\n\r\n", b"\r\n\r\n\r\n"),
    KAMAILIO.replace(b"\r\nServer", b"\r\n: x\r\nServer"),
    KAMAILIO.replace(b"\r\nServer", b"\r\n\r\nServer"),
    KAMAILIO.replace(b"Server: kamailio", b"Server: \x00"),
    KAMAILIO.replace(b"\r\nServer", b"".join(b"\r\nX-%d: y" % i for i in range(250)) + b"\r\nServer"),
    KAMAILIO.replace(b"\r\nServer", b"".join(b"\r\nX-%d: y" % i for i in range(251)) + b"\r\nServer"),
    KAMAILIO.replace(b"kamailio", b"k" * (8192 - len(KAMAILIO) + 8)),
    KAMAILIO.replace(b"kamailio", b"k" * (8192 - len(KAMAILIO) + 9)),
    b"SIP/2.0 200 \r\n\r\n",
    b"SIP/2.0 200 OK\r\n\r\n",
    b"SIP/2.0 200 ",
    b"",
]
NEAR += [KAMAILIO.replace(b"UDP 10.0.0.1:5060", b"%s %s%s" % (t, h, p))
         for t in (b"UDP", b"TCP", b"TLS", b"WS", b"WSS", b"SCTP", b"udp", b"WSX")
         for h in (b"10.0.0.1", b"a-b.example", b"", b"[::1]", b"h_x")
         for p in (b"", b":1", b":5060", b":65535", b":65536", b":0", b":05060", b":", b":123456", b":6553a")]


@pytest.mark.skipif(PEEK_C is None, reason="sip/_speedups.c not built")
def test_c_rules_are_the_python_rules() -> None:
    assert PEEK_C is not None
    for data in NEAR:
        assert PEEK_C(data) == peek_response(data), data
        agrees(data)


@pytest.mark.skipif(PEEK_C is None, reason="sip/_speedups.c not built")
@BUDGET
@given(base=hs.sampled_from(NEAR[:8] + [KAMAILIO]), edits=hs.lists(
    hs.tuples(hs.integers(0, 8300), hs.integers(0, 2), hs.sampled_from(ALPHABET + VIA_ALPHABET + [b"+", b"l", b"I"])),
    min_size=1, max_size=4))
def test_c_rules_agree_on_mutated_answers(base: bytes, edits: list[tuple[int, int, bytes]]) -> None:
    data = mutated(base, edits)
    assert PEEK_C is not None
    assert PEEK_C(data) == peek_response(data), data


def test_the_engine_calls_the_c_rules_where_built() -> None:
    assert fastpath.PEEK is (PEEK_C if PEEK_C is not None else peek_response)


@pytest.mark.skipif(PEEK_C is None, reason="sip/_speedups.c not built")
@BUDGET
@given(junk=hs.binary(max_size=9000), cut=hs.integers(0, len(KAMAILIO)), tail=hs.booleans())
def test_c_rules_on_arbitrary_bytes(junk: bytes, cut: int, tail: bool) -> None:
    """Whatever arrives (alone, after the start of an answer, before its end): no crash, and the
    Python answer."""
    assert PEEK_C is not None
    for data in (junk, KAMAILIO[:cut] + junk + (b"\r\n\r\n" if tail else b"")):
        assert PEEK_C(data) == peek_response(data), data
