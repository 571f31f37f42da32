"""REGISTER to a pjsip.conf AOR through the inbound endpoint and the engine, on a virtual clock
(tests/helpers.py `Shell`): stored before answered, the new contact qualified at once where the
REGISTER came from, `remove_existing` and expiry removing contacts and their polling."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import pytest

from sipqualify.config.pjsip import load_pjsip_conf, registered_contact_peer
from sipqualify.model import PjsipConfig
from sipqualify.qualify.engine import QualifyEngine
from sipqualify.qualify.inbound import TCP, UDP, BindingChanged, Flow, FlowPinned, RegistryChanged
from sipqualify.qualify.pjsip_registrar import PjsipRegistrar, registered_contact_id
from sipqualify.qualify.registrar import RegistrarSettings
from sipqualify.sip.digest import authorization
from sipqualify.sip.message import parse_message

from .helpers import PJSIP_PHONE1, Shell

CONF = PJSIP_PHONE1
NAT: tuple[str, int] = ("203.0.113.9", 40112)  # where the REGISTERs come from (the phone's NAT)


@pytest.fixture
def shell(tmp_path: Path) -> Shell:
    f = tmp_path / "pjsip.conf"
    f.write_text(CONF)
    pj = load_pjsip_conf(str(f)).pjsip
    assert pj is not None
    return make_shell(pj)


def make_shell(pj: PjsipConfig) -> Shell:
    eng = QualifyEngine(local_address=lambda d: ("192.0.2.1", 5060), wallclock=lambda: 1e9)
    eng.load([], 0.0)
    eng.adopt = lambda cid, uri: registered_contact_peer(cid, uri, pj)
    eng.inbound.registrar = PjsipRegistrar(pj, lambda _: None, RegistrarSettings(realm="asterisk"))
    s = Shell(eng)
    s.flush()
    return s


def register(contact: str, cseq: int, auth: str = "", expires: int = 60, via: str = "UDP 10.0.0.5:5060") -> bytes:
    lines = ["REGISTER sip:pbx.test SIP/2.0", f"Via: SIP/2.0/{via};branch=z9hG4bK{contact[-6:]}{cseq};rport",
             "Max-Forwards: 70", "From: <sip:phone1@pbx.test>;tag=g", "To: <sip:phone1@pbx.test>",
             f"Call-ID: {contact}", f"CSeq: {cseq} REGISTER", f"Contact: <{contact}>", f"Expires: {expires}"]
    if auth:
        lines.append(f"Authorization: {auth}")
    return ("\r\n".join(lines) + "\r\nContent-Length: 0\r\n\r\n").encode()


def registered(s: Shell, contact: str, src: tuple[str, int] = NAT, transport: str = UDP) -> None:
    """REGISTER, the 401, the REGISTER with credentials (not yet stored)."""
    via = "TCP 10.0.0.5:5060" if transport == TCP else "UDP 10.0.0.5:5060"
    s.deliver(register(contact, 1, via=via), src, transport)
    www = parse_message(s.sent[-1][1]).headers.get_all("WWW-Authenticate")[0]
    auth = authorization(www, "phone1", "secret1", "REGISTER", "sip:pbx.test", cnonce="c")
    s.deliver(register(contact, 2, auth, via=via), src, transport)


def cid(uri: str) -> str:
    return "phone1;@" + hashlib.md5(uri.encode()).hexdigest()


def test_new_contact_is_stored_answered_then_qualified_where_the_register_came_from(shell: Shell) -> None:
    s, uri = shell, "sip:phone1@10.0.0.5:5060"
    registered(s, uri)
    assert s.answers() == ["SIP/2.0 401 Unauthorized"] and [c.peer for c in s.commits] == [cid(uri)]
    assert s.engine.peer(cid(uri)) is None and not s.pokes  # nothing before the commit
    s.now = 0.1
    s.store_all()
    assert s.answers()[-1] == "SIP/2.0 200 OK"
    assert parse_message(s.sent[-1][1]).headers.get_all("Contact") == [f"<{uri}>;expires=60"]
    p = s.engine.peer(cid(uri))
    assert p is not None and p.cfg.semantics == "pjsip" and p.maxms == 2000  # the AOR's qualify_timeout
    # OPTIONS at once, to the Contact as Request-URI but to where the REGISTER came from (NAT)
    (t, data, dest), = s.pokes
    assert (t, dest) == (0.1, NAT) and data.startswith(f"OPTIONS {uri} SIP/2.0\r\n".encode())
    assert RegistryChanged(cid(uri), "Created", uri, NAT) in s.events
    # a refresh: stored and answered, but no extra OPTIONS (res_pjsip, §3.8) and no new contact
    created = len([e for e in s.events if isinstance(e, RegistryChanged)])
    registered(s, uri)
    s.store_all()
    assert s.answers()[-1] == "SIP/2.0 200 OK" and len(s.pokes) == 1
    assert len([e for e in s.events if isinstance(e, RegistryChanged)]) == created


def test_remove_existing_is_answered_after_both_changes_are_stored(shell: Shell,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    s = shell
    old, new = "sip:phone1@10.0.0.5:5060", "sip:phone1@10.0.0.5:5062"
    registered(s, old)
    s.store_all()
    registered(s, new)
    assert [(c.peer, c.binding is None) for c in s.commits] == [(cid(new), False), (cid(old), True)]
    first, second = s.commits
    s.commits = [first]
    s.store_all()
    assert s.answers()[-1] == "SIP/2.0 401 Unauthorized"  # one of two stored: not answered yet
    s.commits = [second]
    with caplog.at_level(logging.INFO, logger="sipqualify"):
        s.store_all()
    assert s.answers()[-1] == "SIP/2.0 200 OK"
    assert s.engine.peer(cid(old)) is None and s.engine.peer(cid(new)) is not None
    assert RegistryChanged(cid(old), "Removed", "", NAT) in s.events
    assert f"Removed contact '{old}' from AOR 'phone1' due to remove existing" in caplog.text


def test_expiry_removes_the_contact_and_its_polling(shell: Shell, caplog: pytest.LogCaptureFixture) -> None:
    s, uri = shell, "sip:phone1@10.0.0.5:5060"
    registered(s, uri)
    s.store_all()
    assert s.expiry == {cid(uri): 60.0}
    with caplog.at_level(logging.INFO, logger="sipqualify"):
        s.advance(61.0)
    assert s.engine.peer(cid(uri)) is None and not s.engine.inbound.registrar.bindings  # type: ignore[union-attr]
    assert BindingChanged(0, cid(uri), None) in s.events  # the stored row goes too
    assert RegistryChanged(cid(uri), "Removed", uri, None) in s.events
    assert f"Removed contact '{uri}' from AOR 'phone1' due to expiration" in caplog.text
    polled = len(s.pokes)
    s.engine.handle_timer(200.0)
    assert len(s.engine.datagrams_to_send()) == 0 and len(s.pokes) == polled


def test_over_tcp_the_contact_is_pinned_to_the_register_connection(shell: Shell) -> None:
    s, uri, conn = shell, "sip:phone1@10.0.0.5:5060;transport=tcp", ("203.0.113.9", 51000)
    registered(s, uri, conn, TCP)
    s.store_all()
    assert s.sent[-1][2] == Flow(TCP, conn) and FlowPinned(conn, True) in s.events
    assert s.engine.inbound.pinned(conn)
    p = s.engine.peer(registered_contact_id("phone1", uri))
    assert p is not None and p.dest == conn and p.transport == TCP
