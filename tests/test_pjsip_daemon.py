"""The daemon on a pjsip.conf (127.0.0.1 only): contacts qualified with the pjsip policy, shown by
`sipqualify pjsip show ...` through GET /api/v1/pjsip."""

from __future__ import annotations

import asyncio
import logging
import re
import socket
from pathlib import Path

import pytest

from sipqualify.demo import DemoEndpoint
from sipqualify.service import Service, ServiceOptions

from .helpers import MANAGER_CONF, api, cli, endpoint, free_port, wait_for


async def test_daemon_qualifies_pjsip_contacts_and_cli_shows_them(tmp_path: Path,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="sipqualify")
    ok, ok_port = await endpoint(200)
    dead = free_port()  # nothing listens there
    conf = tmp_path / "pjsip.conf"
    conf.write_text(
        f"[udp]\ntype = transport\nprotocol = udp\nbind = 127.0.0.1:{free_port()}\n"
        "[global]\ntype = global\nmax_initial_qualify_time = 1\n"
        "[trunk](!)\ntype = aor\nqualify_frequency = 2\nqualify_timeout = 0.5\n"
        f"[itsp](trunk)\ncontact = sip:gw@127.0.0.1:{ok_port}\ncontact = sip:gw@127.0.0.1:{dead}\n"
        "[itsp]\ntype = endpoint\naors = itsp\n")
    svc = Service(ServiceOptions(str(conf), "127.0.0.1", 0, str(tmp_path / "s")))
    await svc.start()
    try:
        engine = svc.engine
        assert engine is not None
        names = list(svc.config.peers)
        await wait_for(lambda: sorted(engine.peer(n).state for n in names) == ["OK", "UNREACHABLE"],  # type: ignore[union-attr]
                       15)
        _, snap = await api(svc, "GET", "/api/v1/pjsip")
        assert sorted(c["status"] for a in snap["aors"] for c in a["contacts"]) == ["Reachable", "Unreachable"]
        assert snap["endpoints"][0]["online"] is True
        await wait_for(lambda: sum("is now" in r.getMessage() for r in caplog.records) == 3)
        lines = [r.getMessage() for r in caplog.records if "is now" in r.getMessage()]
        # res_pjsip's texts (asterisk-pjsip-observed.md §6), not chan_sip's
        up = re.escape(f"Contact itsp/sip:gw@127.0.0.1:{ok_port} is now Reachable.  RTT: ") + r"\d+\.\d{3} msec"
        assert len(lines) == 3 and "Endpoint itsp is now Reachable" in lines
        assert f"Contact itsp/sip:gw@127.0.0.1:{dead} is now Unreachable.  RTT: 0.000 msec" in lines
        assert any(re.fullmatch(up, ln) for ln in lines)
        code, out, err = await cli("pjsip", "show", "contacts", "--api", f"127.0.0.1:{svc.api_addr[1]}",
                                   "--state-dir", str(tmp_path / "s"))
        assert code == 0, err
        rows = [ln for ln in out.splitlines() if ln.startswith("  Contact:  itsp/")]
        assert {r.split()[1]: r.split()[3] for r in rows} == {f"itsp/sip:gw@127.0.0.1:{ok_port}": "Avail",
                                                              f"itsp/sip:gw@127.0.0.1:{dead}": "Unavail"}
        assert out.endswith("\nObjects found: 2\n")
        code, out, _ = await cli("pjsip", "show", "endpoint", "nosuch", "--api", f"127.0.0.1:{svc.api_addr[1]}",
                                 "--state-dir", str(tmp_path / "s"))
        assert (code, out) == (1, "Unable to find object nosuch.\n\n")
    finally:
        await svc.close()
        ok.close()


async def test_ami_contact_status_events_and_pjsip_actions(tmp_path: Path) -> None:
    """The contact answers only once the session is logged in, so its Reachable events are seen."""
    gw_port = free_port()
    ami_port = free_port(socket.SOCK_STREAM)
    (tmp_path / "manager.conf").write_text(MANAGER_CONF.format(port=ami_port))
    conf = tmp_path / "pjsip.conf"
    conf.write_text(f"[udp]\ntype = transport\nprotocol = udp\nbind = 127.0.0.1:{free_port()}\n"
                    f"[gw]\ntype = aor\ncontact = sip:gw@127.0.0.1:{gw_port}\nqualify_frequency = 1\n"
                    "[gw]\ntype = endpoint\naors = gw\n[pbx]\ntype = endpoint\naors = gw\n")
    svc = Service(ServiceOptions(str(conf), "127.0.0.1", 0, str(tmp_path / "s"),
                                 manager_conf=str(tmp_path / "manager.conf")))
    await svc.start()
    r, w = await asyncio.open_connection("127.0.0.1", ami_port)
    gw: asyncio.BaseTransport | None = None

    async def send(text: str) -> None:
        w.write(text.replace("\n", "\r\n").encode())
        await w.drain()

    async def message() -> str:
        return (await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 10)).decode()

    try:
        await r.readline()  # the banner
        await send("Action: Login\nUsername: admin\nSecret: amp111\nEvents: on\n\n")
        assert (await message()).startswith("Response: Success")
        gw, _ = await asyncio.get_running_loop().create_datagram_endpoint(
            lambda: DemoEndpoint(200, "OK"), local_addr=("127.0.0.1", gw_port))
        first = await message()
        while not first.startswith("Event: PeerStatus"):  # FullyBooted, SuccessfulAuth, the Unreachable of
            assert "ContactStatus: Reachable" not in first  # polls before the contact answered
            first = await message()
        got = [first] + [await message() for _ in range(5)]
        uri = f"sip:gw@127.0.0.1:{gw_port}"
        assert [m.split("\r\n")[0] for m in got] == ["Event: PeerStatus"] * 2 + ["Event: ContactStatus"] * 2 + [
            "Event: DeviceStateChange"] * 2
        assert got[0] == ("Event: PeerStatus\r\nPrivilege: system,all\r\nChannelType: PJSIP\r\nPeer: PJSIP/gw\r\n"
                          "PeerStatus: Reachable\r\n\r\n")
        assert [m.split("EndpointName: ")[1].split("\r\n")[0] for m in got[2:4]] == ["gw", "pbx"]
        assert all(f"URI: {uri}\r\nContactStatus: Reachable\r\nAOR: gw\r\n" in m for m in got[2:4])
        await send("Action: PJSIPShowContacts\nActionID: c\n\n")
        assert await message() == "Response: Error\r\nActionID: c\r\nMessage: No Contacts found\r\n\r\n"  # no bare LF
        await send("Action: PJSIPQualify\nEndpoint: nosuch\nActionID: q\n\n")
        assert await message() == "Response: Error\r\nActionID: q\r\nMessage: Unable to retrieve endpoint\r\n\r\n"
        await send("Action: PJSIPQualify\nEndpoint: pbx\nActionID: q\n\n")
        assert await message() == "Response: Success\r\nActionID: q\r\nMessage: Endpoint found, will qualify\r\n\r\n"
        await send("Action: PJSIPShowAors\nActionID: a\n\n")
        answer = [await message() for _ in range(3)]
        assert "ObjectName: gw\r\n" in answer[1] and f"Contacts: gw/{uri}\r\n" in answer[1]
        assert answer[2].endswith("EventList: Complete\r\nListItems: 1\r\n\r\n")
    finally:
        w.close()
        await svc.close()
        if gw is not None:
            gw.close()
