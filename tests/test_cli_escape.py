"""The CLI never hands a terminal what a phone chose: control characters in a registered
User-Agent or Contact (ESC sequences, LF) print as escapes; --json stays exact JSON."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from sipqualify.compat import escape_controls, format_sip_show_peers

from .helpers import Phone, cli, register_with_useragent, start_registrar, view

HOSTILE = "\x1b[31mRed\x1b[0m\nFake: line\x07"
SHOWN = r"\x1b[31mRed\x1b[0m\nFake: line\x07"


async def test_registrations_and_peer_escape_control_characters(tmp_path: Path) -> None:
    loop = asyncio.get_running_loop()
    t, phone = await loop.create_datagram_endpoint(Phone, local_addr=("127.0.0.1", 0))
    svc, server = await start_registrar(tmp_path)
    where = ["--api", f"127.0.0.1:{svc.api_addr[1]}", "--state-dir", str(tmp_path / "s")]
    try:
        await register_with_useragent(phone, t, server, HOSTILE)

        rc, out, err = await cli("registrations", *where)
        assert rc == 0, err
        assert "\x1b" not in out and "\x07" not in out
        lines = out.splitlines()
        assert len(lines) == 3 and lines[-1] == "1 registration"  # header, the binding, the count: no extra line
        assert lines[1].startswith("1001 ") and lines[1].endswith("  " + SHOWN)

        rc, out, err = await cli("peer", "1001", *where)
        assert rc == 0, err
        assert "\x1b" not in out and "\x07" not in out
        assert [ln for ln in out.splitlines() if "Useragent" in ln] == ["  Useragent    : " + SHOWN]
        assert not any(ln.startswith("Fake:") for ln in out.splitlines())

        rc, out, err = await cli("get", "1001", "useragent", *where)
        assert rc == 0 and out == SHOWN + "\n"

        rc, out, _ = await cli("registrations", "--json", *where)
        assert json.loads(out)[0]["useragent"] == HOSTILE  # JSON carries the value itself, escaped by JSON
        rc, out, _ = await cli("peer", "1001", "--json", *where)
        assert json.loads(out)["useragent"] == HOSTILE
    finally:
        await svc.close()
        t.close()


def test_sip_show_peers_escapes_names_and_keeps_columns() -> None:
    plain = format_sip_show_peers([view("p1", 5060, 2000, 1, description="office")])
    evil = format_sip_show_peers([view("p1", 5060, 2000, 1, description="off\x1b[2Jice")])
    assert "\x1b" not in evil and "off\\x1b[2Jice" in evil
    assert plain.splitlines()[1].index("office") == evil.splitlines()[1].index("off\\x1b")


def test_escape_controls() -> None:
    assert escape_controls("Grandstream GXP2170 1.0.11.3 (é, 电话) \\ ok") == (
        "Grandstream GXP2170 1.0.11.3 (é, 电话) \\ ok")
    assert escape_controls("a\tb\rc\nd\x00e\x1bf\x7fg\x9bh\u2028i\u202ej\udcff") == (
        r"a\tb\rc\nd\x00e\x1bf\x7fg\x9bh\u2028i\u202ej\udcff")
