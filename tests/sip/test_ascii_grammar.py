"""RFC 3261 §25.1: the grammar is ASCII. DIGIT is %x30-39, LWS is SP / HTAB; UTF-8 appears only in
quoted strings, reason phrases and free text (TEXT-UTF8). Python's `str.isdigit()` and `int()`
accept any Unicode digit ('²', '٣', '５') and `int()` refuses more than 4300 digits, so every
numeric field here once let a ValueError (not SipParseError) out of the parser or its accessors,
or accepted a number the RFC does not allow. Each test names the field it covers."""

from __future__ import annotations

import pytest

from sipqualify.sip.abnf import delta_seconds
from sipqualify.sip.framing import StreamFramer
from sipqualify.sip.message import SipParseError, Via, parse_message, parse_via
from sipqualify.sip.uri import parse_hostport, parse_name_addr, parse_uri

SUPERSCRIPT = "\u00b2"  # '²': isdigit() is True, int() raises ValueError
ARABIC_INDIC = "\u0663"  # '٣': int() gives 3
FULLWIDTH = "\uff11"  # '１': int() gives 1
HUGE = "9" * 5000  # int() raises ValueError: more than 4300 digits
HUGE_P = pytest.param(HUGE, id="5000-digits")
NOT_ASCII_DIGITS = [SUPERSCRIPT, ARABIC_INDIC, FULLWIDTH, "5\uff10\uff16\uff10", "\u0665\u0660\u0666\u0660"]


def request(*, start: str = "OPTIONS sip:127.0.0.1 SIP/2.0", via: str = "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKa",
            cseq: str = "1 OPTIONS", clen: str = "0", extra: str = "", call_id: str = "c1") -> bytes:
    return (f"{start}\r\nVia: {via}\r\nFrom: <sip:a@192.0.2.1>;tag=1\r\nTo: <sip:127.0.0.1>\r\n"
            f"Call-ID: {call_id}\r\nCSeq: {cseq}\r\n{extra}Content-Length: {clen}\r\n\r\n").encode()


def response(status: str = "200") -> bytes:
    return request(start=f"SIP/2.0 {status} OK")


@pytest.mark.parametrize("digits", NOT_ASCII_DIGITS)
def test_via_port_fast_path_ascii_digits_only(digits: str) -> None:
    """RFC 3261 §20.42 sent-by port = 1*DIGIT (the fast path of parse_via)."""
    text = f"SIP/2.0/UDP 192.0.2.1:{digits};branch=z9hG4bKa"
    with pytest.raises(SipParseError):
        parse_via(text)
    with pytest.raises(SipParseError):
        parse_message(request(via=text))


@pytest.mark.parametrize("digits", NOT_ASCII_DIGITS)
def test_via_port_lws_path_ascii_digits_only(digits: str) -> None:
    """The same port in the LWS-tolerant Via path (its regex once used `\\d`, which is Unicode)."""
    with pytest.raises(SipParseError):
        parse_via(f"SIP / 2.0 / UDP 192.0.2.1 : {digits} ; branch=z9hG4bKa")


@pytest.mark.parametrize("value", [*NOT_ASCII_DIGITS, HUGE_P, "-1", "70000", "0", "x"])
def test_via_rport_value_is_a_port_or_none(value: str) -> None:
    """RFC 3581 §3: rport = "rport" [EQUAL 1*DIGIT]. The accessor gives a port or None and never
    raises; a value that is not ASCII does not even parse (a via-param is a token)."""
    text = f"SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKa;rport={value}"
    if value.isascii():
        assert parse_via(text).rport is None
    else:
        with pytest.raises(SipParseError):
            parse_via(text)
    assert Via("UDP", "192.0.2.1", 5060, {"rport": value}).rport is None  # built, not parsed
    assert parse_via("SIP/2.0/UDP 192.0.2.1:5060;rport=5070").rport == 5070


@pytest.mark.parametrize("num", [*NOT_ASCII_DIGITS, "1" + SUPERSCRIPT])
def test_cseq_number_ascii_digits_only(num: str) -> None:
    """RFC 3261 §20.16 CSeq = 1*DIGIT LWS Method."""
    with pytest.raises(SipParseError, match="CSeq"):
        parse_message(request(cseq=f"{num} OPTIONS"))


@pytest.mark.parametrize("clen", [*NOT_ASCII_DIGITS, HUGE_P])
def test_content_length_ascii_digits_only(clen: str) -> None:
    """RFC 3261 §20.14 Content-Length = 1*DIGIT."""
    with pytest.raises(SipParseError, match="Content-Length"):
        parse_message(request(clen=clen))


@pytest.mark.parametrize("other", [SUPERSCRIPT, FULLWIDTH, HUGE_P])
def test_conflicting_content_lengths_with_non_ascii_digits(other: str) -> None:
    """RFC 4475 §3.3.9 compares conflicting Content-Length values: only ASCII numbers are compared."""
    with pytest.raises(SipParseError, match="Content-Length"):
        parse_message(request(clen="0", extra=f"Content-Length: {other}\r\n"))
    with pytest.raises(SipParseError, match="Content-Length"):
        parse_message(request(clen=other, extra="Content-Length: 0\r\n"))


@pytest.mark.parametrize("code", ["\u00b200", "\uff12\uff10\uff10", "2\u0660\u0660"])
def test_status_code_ascii_digits_only(code: str) -> None:
    """RFC 3261 §25.1 Status-Code = 3DIGIT."""
    with pytest.raises(SipParseError, match="status code"):
        parse_message(response(code))


@pytest.mark.parametrize("mf", [*NOT_ASCII_DIGITS, HUGE_P])
def test_max_forwards_ascii_digits_only(mf: str) -> None:
    """RFC 3261 §20.22 Max-Forwards = 1*DIGIT."""
    with pytest.raises(SipParseError, match="Max-Forwards"):
        parse_message(request(extra=f"Max-Forwards: {mf}\r\n"))


@pytest.mark.parametrize("port", [*NOT_ASCII_DIGITS, HUGE_P])
def test_uri_port_ascii_digits_only(port: str) -> None:
    """RFC 3261 §25.1 hostport: port = 1*DIGIT, in a URI and in a Request-URI."""
    with pytest.raises(SipParseError):
        parse_uri(f"sip:alice@192.0.2.1:{port}")
    with pytest.raises(SipParseError):
        parse_hostport(f"192.0.2.1:{port}")
    with pytest.raises(SipParseError):
        parse_message(request(start=f"OPTIONS sip:127.0.0.1:{port} SIP/2.0"))


def test_stream_content_length_digits_bounded() -> None:
    """RFC 3261 §18.3 framing: a Content-Length of 5,000 digits is a framing error, not a ValueError."""
    head = b"OPTIONS sip:h SIP/2.0\r\nl: " + HUGE.encode() + b"\r\n\r\n"
    with pytest.raises(SipParseError, match="Content-Length"):
        StreamFramer().feed(head)
    with pytest.raises(SipParseError, match="Content-Length"):
        StreamFramer().feed("OPTIONS sip:h SIP/2.0\r\nl: \u00b2\r\n\r\n".encode())


@pytest.mark.parametrize("via", [
    "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK\u212a",  # KELVIN SIGN: [a-z] under re.IGNORECASE matched it
    "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKa\u00b2",
    "SIP/2.0/UDP 192.0.2.1:5060;bran\u212ah=z9hG4bKa",  # 'K'.lower() == 'k'
    "SIP/2.0/UDP 192.0.2.1:5060;received=192.0.2.\u0663",
])
def test_via_parameters_ascii_outside_quotes(via: str) -> None:
    """RFC 3261 §20.42 via-params are tokens / hosts / quoted-strings: no UTF-8 outside quotes."""
    with pytest.raises(SipParseError):
        parse_via(via)
    with pytest.raises(SipParseError):
        parse_message(request(via=via))


def test_quoted_via_parameter_may_hold_utf8() -> None:
    via = parse_via('SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKa;x="\u0440\u0430\u0431"')
    assert via.params["x"] == '"\u0440\u0430\u0431"'


@pytest.mark.parametrize("lws", ["\u00a0", "\u3000", "\x85", "\x1c"])
def test_lws_is_space_or_tab_only(lws: str) -> None:
    """RFC 3261 §25.1 LWS = [*WSP CRLF] 1*WSP, WSP = SP / HTAB: `str.strip()` removed any Unicode space."""
    with pytest.raises(SipParseError, match="CSeq"):
        parse_message(request(cseq=f"1 OPTIONS{lws}"))
    with pytest.raises(SipParseError):
        parse_via(f"SIP / 2.0 / UDP{lws}192.0.2.1 ; branch=z9hG4bKa")


@pytest.mark.parametrize("call_id", ["b\u00f6se@192.0.2.1".encode(), b"c\xff1", "\uff11@h".encode()])
def test_call_id_ascii_only(call_id: bytes) -> None:
    """RFC 3261 §25.1 callid = word ["@" word]: ASCII (invalid UTF-8 too: it arrives as a lone surrogate)."""
    with pytest.raises(SipParseError, match="Call-ID"):
        parse_message(request(call_id="CALLID").replace(b"CALLID", call_id))


@pytest.mark.parametrize("uri", ["sip:b\u00f6b@192.0.2.1", "sip:bob@b\u00fccher.example", "sip:bob@h;t\u00e4g=1",
                                 "sip:bob@h?subj\u00e9ct=x", "tel:+\u0663\u0663"])
def test_uri_ascii_only(uri: str) -> None:
    """RFC 3261 §19.1.2 / §25.1: a SIP or tel URI is ASCII; anything else is %-escaped."""
    with pytest.raises(SipParseError, match="ASCII"):
        parse_uri(uri)
    with pytest.raises(SipParseError):
        parse_message(request(start=f"OPTIONS {uri} SIP/2.0"))


@pytest.mark.parametrize("value", ["<sip:b\u00f6b@192.0.2.1>", "B\u00f6b <sip:bob@h>", "<sip:bob@h>;t\u00e4g=1",
                                   "<sip:bob@h>;tag=\u00b2"])
def test_name_addr_ascii_outside_quotes(value: str) -> None:
    """RFC 3261 §20.10 name-addr: only the quoted display name and quoted parameter values are UTF-8."""
    with pytest.raises(SipParseError, match="ASCII"):
        parse_name_addr(value)
    assert parse_name_addr('"B\u00f6b" <sip:bob@h>;x="\u00b2"') == ("B\u00f6b", "sip:bob@h", {"x": '"\u00b2"'})


@pytest.mark.parametrize("via", [",", " , ,"])
def test_via_of_commas_only_is_a_parse_error(via: str) -> None:
    """A Via header whose value is only commas holds no via-parm (RFC 3261 §20.42: 1#via-parm):
    top_via once raised IndexError on it."""
    with pytest.raises(SipParseError, match="Via"):
        assert parse_message(request(via=via)).top_via is None  # (never reached)


@pytest.mark.parametrize(("text", "value"), [
    ("3600", 3600), (" 60 ", 60), ("0", 0), ("0003600", 3600), ("4294967296", 2**32 - 1),
    pytest.param(HUGE, 2**32 - 1, id="5000-digits"),
    ("\uff11\uff12\uff10", None), (SUPERSCRIPT, None), ("-5", None), ("1_0", None), ("", None), ("0x10", None),
])
def test_delta_seconds_for_expires(text: str, value: int | None) -> None:
    """RFC 3261 §20.19 Expires / §10.2.1.1 expires parameter: delta-seconds = 1*DIGIT, at most
    2**32-1. `int()` accepts '１２０', '-5', '1_0' and refuses 5,000 digits; this does the opposite."""
    assert delta_seconds(text) == value
