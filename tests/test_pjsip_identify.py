"""pjsip.conf `type=identify` (res_pjsip_endpoint_identifier_ip): the reader's messages, the
source address -> endpoint match, and what it does to inbound OPTIONS answers."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from sipqualify.config import check_config
from sipqualify.config.pjsip import load_pjsip_conf
from sipqualify.model import PjsipConfig, PjsipIdentify
from sipqualify.qualify.engine import QualifyEngine
from sipqualify.qualify.pjsip_identify import Identifier, hostnames
from sipqualify.service import _resolve_identify

from .helpers import Shell

CONF = """
[itsp]
type = endpoint
[pbx]
type = endpoint
[itsp-id]
type = identify
endpoint = itsp
match = 192.0.2.10, 198.51.100.0/24
match = 10.0.0.0/255.0.0.0
match = 2001:db8::/32
[pbx-id]
type = identify
endpoint = pbx
match = 192.0.2.11
"""


@pytest.fixture
def conf(tmp_path: Path) -> Callable[[str], str]:
    def write(text: str) -> str:
        p = tmp_path / "pjsip.conf"
        p.write_text(text)
        return str(p)
    return write


def test_match_by_address_network_netmask_and_ipv6(conf: Callable[[str], str]) -> None:
    ident = Identifier.from_config(load_pjsip_conf(conf(CONF)).pjsip)
    assert [ident.endpoint(ip) for ip in ("192.0.2.10", "198.51.100.77", "10.9.8.7", "2001:db8::5", "192.0.2.11",
                                          "192.0.2.12", "::ffff:192.0.2.10", "not-an-ip")] == [
        "itsp", "itsp", "itsp", "itsp", "pbx", None, None, None]


def test_bad_match_is_an_error_and_an_unknown_endpoint_a_warning(conf: Callable[[str], str]) -> None:
    path = conf("[e]\ntype = endpoint\n"                                           # 1-2
                "[i]\ntype = identify\nendpoint = e\nmatch = 192.0.2.300/40\n"     # 3-6
                "match = gw.example.net, bad_name!\n"                              # 7
                "[j]\ntype = identify\nendpoint = nosuch\nmatch = 192.0.2.1\n")    # 8-11
    msgs = [(m.severity, m.line, m.option) for m in check_config(path)]
    assert msgs == [("error", 6, "match"), ("error", 7, "match"), ("warning", 10, "endpoint")]
    ident = Identifier.from_config(load_pjsip_conf(path).pjsip)
    assert ident.endpoint("192.0.2.1") is None  # its endpoint does not exist


def test_host_names_match_the_addresses_they_resolved_to(conf: Callable[[str], str]) -> None:
    pj = load_pjsip_conf(conf("[e]\ntype = endpoint\n[i]\ntype = identify\nendpoint = e\n"
                              "match = gw.example.net, 192.0.2.7\n")).pjsip
    assert pj is not None and hostnames(pj.identifies["i"].match) == ["gw.example.net"]
    ident = Identifier.from_config(pj, {"gw.example.net": ["198.51.100.20", "2001:db8::20"]})
    assert [ident.endpoint(ip) for ip in ("198.51.100.20", "2001:db8::20", "192.0.2.7", "198.51.100.21")] == [
        "e", "e", "e", None]
    assert Identifier.from_config(pj).endpoint("198.51.100.20") is None  # not resolved: no match


async def test_the_daemon_resolves_identify_host_names() -> None:
    """`localhost` (from /etc/hosts: no network) as the shell resolves it at load."""
    pj = PjsipConfig(identifies={"i": PjsipIdentify("i", "e", ["localhost", "192.0.2.7"])})
    got = await _resolve_identify(pj)
    assert list(got) == ["localhost"] and "127.0.0.1" in got["localhost"]


def test_options_from_an_identified_address_are_never_404(conf: Callable[[str], str]) -> None:
    """With options_unknown_user_404 (`known_user`), an unknown user gets 404, unless the OPTIONS
    comes from an address an identify section matches."""
    ident = Identifier.from_config(load_pjsip_conf(conf(CONF)).pjsip)
    eng = QualifyEngine(local_address=lambda d: ("192.0.2.1", 5060), wallclock=lambda: 1e9)
    eng.load([], 0.0)
    eng.inbound.known_user = lambda user: user in ("itsp", "pbx")
    eng.inbound.identified = lambda ip: ident.endpoint(ip) is not None
    s = Shell(eng)
    for n, src in enumerate([("192.0.2.99", 5060), ("198.51.100.7", 5060), ("192.0.2.99", 5060)]):
        user = "4930123456" if n < 2 else "itsp"
        s.deliver((f"OPTIONS sip:{user}@192.0.2.1 SIP/2.0\r\nVia: SIP/2.0/UDP {src[0]}:5060;branch=z9hG4bKo{n}\r\n"
                   f"Max-Forwards: 70\r\nFrom: <sip:x@{src[0]}>;tag=1\r\nTo: <sip:{user}@192.0.2.1>\r\n"
                   f"Call-ID: o{n}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n").encode(), src)
    assert s.answers() == ["SIP/2.0 404 Not Found", "SIP/2.0 200 OK", "SIP/2.0 200 OK"]
