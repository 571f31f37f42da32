"""Property: whatever arrives, the SIP parser and the accessors a receiver calls afterwards raise
SipParseError and nothing else (RFC 3261 §25.1: the grammar is ASCII; anything outside it is a
parse error, not a ValueError from `int()` or an IndexError).

Two kinds of input: arbitrary bytes, and near-valid requests and responses in which one to
three values are replaced by hostile ones: Unicode digits ('²', '٣', '１') and ASCII digits
mixed with them in every numeric position (Via port and rport, CSeq, Content-Length,
Max-Forwards, Expires, status code, URI ports), Unicode spaces, 5,000-digit numbers, and any
text in any header, with long and compact header names. Budget: fixed (derandomize), a few
seconds.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hs

from sipqualify.sip.framing import StreamFramer
from sipqualify.sip.message import Request, Response, SipParseError, make_response, parse_message, parse_via
from sipqualify.sip.uri import SipUri, parse_name_addr, parse_uri

T = TypeVar("T")
BUDGET = settings(max_examples=500, deadline=None, derandomize=True, database=None,
                  suppress_health_check=[HealthCheck.too_slow])

UNICODE_DIGITS = "\u00b2\u00b9\u0663\u0660\u06f5\u07c0\u0966\u0e51\uff10\uff11\uff15\U0001d7d8\u2460\u00bd"
UNICODE_SPACES = "\u00a0\u2003\u3000\x85\x1c\x0b\u2028"
PLAIN = {  # slot -> a valid value
    "method": "OPTIONS", "ruri_port": "5060", "status": "200", "via_port": "5060", "rport": ";rport=5070",
    "branch": "z9hG4bKabc123", "mf": "70", "from_port": "5061", "to_port": "5062", "call_id": "abc@192.0.2.1",
    "cseq": "102", "contact_port": "5063", "cexp": "3600", "expires": "3600", "clen": "0", "via2_port": "5064",
}
NUMERIC = ("ruri_port", "status", "via_port", "mf", "from_port", "to_port", "cseq", "contact_port", "cexp",
           "expires", "clen", "via2_port")
REQUEST = ("{method} sip:bob@192.0.2.2:{ruri_port};transport=udp SIP/2.0",
           [("Via", "SIP/2.0/UDP 192.0.2.1:{via_port};branch={branch}{rport}"),
            ("Via", "SIP/2.0/UDP [2001:db8::1]:{via2_port};branch=z9hG4bKx"),
            ("Max-Forwards", "{mf}"),
            ("From", '"Al\u00efce" <sip:alice@192.0.2.1:{from_port}>;tag=1'),
            ("To", "<sip:bob@192.0.2.2:{to_port}>"),
            ("Call-ID", "{call_id}"),
            ("CSeq", "{cseq} {method}"),
            ("Contact", "<sip:alice@192.0.2.1:{contact_port}>;expires={cexp}"),
            ("Expires", "{expires}"),
            ("Content-Length", "{clen}")])
RESPONSE = ("SIP/2.0 {status} OK", [h for h in REQUEST[1] if h[0] != "Max-Forwards"])
COMPACT = {"Via": "v", "From": "f", "To": "t", "Call-ID": "i", "Contact": "m", "Content-Length": "l"}


def mixed_digits() -> hs.SearchStrategy[str]:
    """Digits, at least one of them not ASCII, sometimes with ASCII ones around it."""
    return hs.tuples(hs.text("0123456789", max_size=3), hs.text(UNICODE_DIGITS, min_size=1, max_size=3),
                     hs.text("0123456789", max_size=3)).map("".join)


HOSTILE = hs.one_of(
    mixed_digits(),
    mixed_digits().map(lambda d: f"{d} OPTIONS"),
    hs.sampled_from(["9" * 5000, "0" * 4400 + "1", "-1", "+5", "1_0", " 1 ", "0x10", "", ",", ";", "\"", "<", ":",
                     "1e3", "\u212a", "\udcff", "99999", "65536", "2147483648"]),
    hs.tuples(hs.text("0123456789", min_size=1, max_size=4), hs.sampled_from(UNICODE_SPACES)).map("".join),
    hs.text(max_size=30),
    hs.text(alphabet=hs.characters(codec="ascii"), max_size=30),
)


def message(draw: Callable[[hs.SearchStrategy[T]], T]) -> bytes:
    start, headers = draw(hs.sampled_from([REQUEST, RESPONSE]))
    slots = dict(PLAIN)
    for slot in draw(hs.lists(hs.sampled_from(sorted(PLAIN)), min_size=1, max_size=3, unique=True)):
        slots[slot] = draw(HOSTILE)
    compact = draw(hs.booleans())
    lines = [start.format(**slots)]
    whole = draw(hs.none() | hs.tuples(hs.integers(0, len(headers) - 1), HOSTILE))  # any header, any value
    for i, (name, value) in enumerate(headers):
        name = COMPACT.get(name, name) if compact else name
        value = whole[1] if whole is not None and whole[0] == i else value.format(**slots)
        if draw(hs.integers(0, 7)) == 0:  # LWS around the colon, which sends Via down its slow path
            value = value.replace(" ", "  ").replace(":", " : ", 1)
        lines.append(f"{name}: {value}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogatepass")


def sip_errors_only(fn: Callable[..., T], *args: object, **kw: object) -> T | None:
    """Call fn; a SipParseError is an answer (None), anything else fails the test."""
    try:
        return fn(*args, **kw)
    except SipParseError:
        return None


def exercise(data: bytes) -> None:
    """What a receiver does with a datagram: parse, then use every accessor it relies on."""
    framer = StreamFramer()
    sip_errors_only(framer.feed, data[: len(data) // 2])
    sip_errors_only(framer.feed, data[len(data) // 2:])
    msg = sip_errors_only(parse_message, data)
    if msg is None:
        return
    assert isinstance(msg, Request | Response)
    sip_errors_only(lambda: msg.cseq)
    via = sip_errors_only(lambda: msg.top_via)
    if via is not None:
        assert via.rport is None or 0 < via.rport < 65536
        assert via.port is None or 0 < via.port < 65536
        assert via.host.isascii() and via.transport.isascii()
    sip_errors_only(lambda: msg.branch)
    assert msg.call_id is None or msg.call_id.isascii()
    for v in msg.headers.get_all("Via"):
        sip_errors_only(parse_via, v)
    for name in ("From", "To", "Contact"):
        value = msg.headers.get(name)
        if value is not None and (na := sip_errors_only(parse_name_addr, value)) is not None:
            sip_errors_only(parse_uri, na[1])
    if isinstance(msg, Request):
        sip_errors_only(msg.response_dest, ("192.0.2.9", 5060))
        uri = sip_errors_only(parse_uri, msg.uri)
        if isinstance(uri, SipUri):
            assert uri.port is None or 0 < uri.port < 65536
        for status in (100, 200, 400):
            resp = sip_errors_only(make_response, msg, status, "OK", received=("192.0.2.9", 5060), to_tag="t",
                                   extra=[("Allow", "OPTIONS")])
            if resp is not None:
                assert isinstance(resp.to_bytes(), bytes)
    else:
        assert 100 <= msg.status <= 699
    if msg.headers.get("CSeq") is not None and not msg.defects:
        number = msg.headers.get("CSeq", "").strip().partition(" ")[0]
        assert number.isascii() or sip_errors_only(lambda: msg.cseq) is None


@BUDGET
@given(hs.binary(max_size=600))
def test_arbitrary_bytes_give_only_sip_parse_errors(data: bytes) -> None:
    exercise(data)
    exercise(b"OPTIONS sip:h SIP/2.0\r\n" + data)
    exercise(b"SIP/2.0 200 OK\r\n" + data)


@BUDGET
@given(hs.composite(message)())
def test_near_valid_messages_give_only_sip_parse_errors(data: bytes) -> None:
    exercise(data)


@BUDGET
@given(hs.sampled_from(NUMERIC), mixed_digits())
def test_a_non_ascii_digit_in_a_field_the_parser_reads_is_rejected(slot: str, digits: str) -> None:
    """Every numeric field that parse_message (or top_via) interprets: a non-ASCII digit there is a
    parse error, never a number. (Expires and the Contact's expires are the registrar's to read.)"""
    start, headers = (RESPONSE if slot == "status" else REQUEST)
    slots = dict(PLAIN, **{slot: digits})
    data = ("\r\n".join([start.format(**slots), *(f"{n}: {v.format(**slots)}" for n, v in headers)]) +
            "\r\n\r\n").encode()
    msg = sip_errors_only(parse_message, data)
    if slot in ("cexp", "expires", "contact_port"):
        assert msg is not None
        return
    if msg is not None and slot in ("from_port", "to_port") and isinstance(msg, Response):
        return  # a response's From and To are not parsed (the engine matches on Via, CSeq and Call-ID)
    assert msg is None or sip_errors_only(lambda: msg.top_via) is None, (slot, digits)


@BUDGET
@given(HOSTILE, HOSTILE)
def test_parse_functions_alone(a: str, b: str) -> None:
    for text in (a, f"SIP/2.0/UDP 192.0.2.1:{a};rport={b}", f"SIP / 2.0 / UDP h : {a} ; {b}",
                 f"SIP/2.0/UDP h;branch={a};received={b}"):
        via = sip_errors_only(parse_via, text)
        if via is not None:
            assert via.rport is None or isinstance(via.rport, int)
    for text in (a, f"sip:{a}@h:{b}", f"sip:h:{a};{b}", f"tel:{a}", f"sips:[::1]:{a}"):
        sip_errors_only(parse_uri, text)
    for text in (a, f'"{a}" <sip:h:{b}>;tag={a}', f"{a} <sip:{b}>", f"<sip:h>;{a}={b}"):
        sip_errors_only(parse_name_addr, text)
    sip_errors_only(StreamFramer().feed, f"OPTIONS sip:h SIP/2.0\r\nl: {a}\r\n\r\n{b}".encode("utf-8", "surrogatepass"))
