"""Fidelity with a real Asterisk 20.20.1 chan_sip: the bytes of asterisk-differences.md items 2
(fromuser/fromdomain in peer details), 3 (AMI Getvar with SIPPEER()), 8 (CLI words) and 9
(SIPPEER limit and codec[x])."""

from __future__ import annotations

import asyncio
import re
import socket
from pathlib import Path

from sipqualify.api.ami import show_peer
from sipqualify.compat import format_sip_show_peer, fromdomain_parts, sippeer_item
from sipqualify.service import Service, ServiceOptions

from .helpers import MANAGER_CONF, endpoint, free_port, sip_conf, view, wait_for


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


# --- item 8 (the page) and item 9 ---------------------------------------------------------------

def test_sip_show_peer_ends_with_an_empty_line() -> None:
    assert format_sip_show_peer(view("ok-yes", 15070, 2000, 1)).endswith("  RTCP Mux     : No\n\n")


def test_sippeer_limit_and_codecs() -> None:
    v = view("ok-yes", 15070, 2000, 1)
    assert sippeer_item(v, "limit") == "0"
    assert sippeer_item(v, "codec[0]") == "ulaw"
    assert sippeer_item(v, "CODEC[0]") == "ulaw"
    assert sippeer_item(v, "codec[1]") == ""
    assert sippeer_item(v, "codecs") == "(ulaw)"


# --- item 3: AMI Getvar, and the Command page (item 8) over a live session -------------------------

async def _block(r: asyncio.StreamReader) -> str:
    return (await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 5)).decode()


async def test_ami_getvar_sippeer(tmp_path: Path) -> None:
    t, port = await endpoint(200)
    ami_port = free_port(socket.SOCK_STREAM)
    (tmp_path / "manager.conf").write_text(MANAGER_CONF.format(port=ami_port))
    conf = tmp_path / "sip.conf"
    sip_conf(conf, free_port(), {"ok-yes": {"host": "127.0.0.1", "port": port, "qualify": "yes"}}, "qualifygap=10")
    svc = Service(ServiceOptions(str(conf), "127.0.0.1", 0, str(tmp_path / "s"),
                                 manager_conf=str(tmp_path / "manager.conf")))
    await svc.start()
    try:
        await wait_for(lambda: svc.engine.peer("ok-yes").state == "OK")  # type: ignore[union-attr]
        r, w = await asyncio.open_connection("127.0.0.1", ami_port)

        async def ask(text: str) -> str:
            w.write(text.replace("\n", "\r\n").encode())
            await w.drain()
            return await _block(r)

        await r.readline()
        assert "Authentication accepted" in await ask("Action: Login\nUsername: admin\nSecret: amp111\n"
                                                      "Events: off\n\n")
        text = await ask("Action: Getvar\nVariable: SIPPEER(ok-yes,status)\nActionID: gv-1\n\n")
        # Asterisk: Response, ActionID, Variable, Value (the round trip is 1 ms on an idle machine)
        assert re.fullmatch(r"Response: Success\r\nActionID: gv-1\r\nVariable: SIPPEER\(ok-yes,status\)\r\n"
                            r"Value: OK \([1-9][0-9]* ms\)\r\n\r\n", text), text
        assert await ask("Action: Getvar\nVariable: SIPPEER(ok-yes)\n\n") == (
            "Response: Success\r\nVariable: SIPPEER(ok-yes)\r\nValue: 127.0.0.1\r\n\r\n")
        assert await ask("Action: Getvar\nVariable: SIPPEER(ok-yes,limit)\nActionID: l\n\n") == (
            "Response: Success\r\nActionID: l\r\nVariable: SIPPEER(ok-yes,limit)\r\nValue: 0\r\n\r\n")
        # an unknown peer, an unset variable: the function fails / nothing is set -> empty Value
        assert await ask("Action: Getvar\nVariable: SIPPEER(nope,status)\nActionID: n\n\n") == (
            "Response: Success\r\nActionID: n\r\nVariable: SIPPEER(nope,status)\r\nValue: \r\n\r\n")
        assert await ask("Action: Getvar\nVariable: FOO\nActionID: f\n\n") == (
            "Response: Success\r\nActionID: f\r\nVariable: FOO\r\nValue: \r\n\r\n")
        assert await ask("Action: Getvar\nActionID: e\n\n") == (
            "Response: Error\r\nActionID: e\r\nMessage: No variable specified\r\n\r\n")
        assert await ask("Action: Getvar\nChannel: SIP/x-1\nVariable: FOO\nActionID: c\n\n") == (
            "Response: Error\r\nActionID: c\r\nMessage: No such channel\r\n\r\n")
        # item 8 through Command: the page's closing empty line, and the unknown peer's words
        text = await ask("Action: Command\nCommand: sip show peer ok-yes\nActionID: c1\n\n")
        assert text.endswith("Output:   RTCP Mux     : No\r\nOutput: \r\n\r\n"), text
        assert await ask("Action: Command\nCommand: sip show peer nope\nActionID: c2\n\n") == (
            "Response: Success\r\nActionID: c2\r\nMessage: Command output follows\r\n"
            "Output: Peer nope not found.\r\n\r\n")
        w.close()
    finally:
        await svc.close()
        t.close()
