"""The daemon on a pjsip.conf (127.0.0.1 only): contacts qualified with the pjsip policy, shown by
`sipqualify pjsip show ...` through GET /api/v1/pjsip."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import socket
from pathlib import Path

import pytest

from sipqualify.demo import DemoEndpoint
from sipqualify.service import Service, ServiceOptions

from .helpers import MANAGER_CONF, Phone, api, cli, endpoint, free_port, wait_for


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
        # PJSIP_CONTACT() / PJSIP_AOR() through `get`, as `dialplan eval function` answers them (§7)
        api_opts = ("--api", f"127.0.0.1:{svc.api_addr[1]}", "--state-dir", str(tmp_path / "s"))
        code, out, err = await cli("pjsip", "show", "endpoint", "itsp", *api_opts)  # §4.7 whole
        assert code == 0 and out.startswith("\n Endpoint:  <Endpoint/CID"), err
        assert f"\n {'aors':<34} : itsp\n" in out and out.endswith(f"\n {'webrtc':<34} : no\n")
        ok_id = "itsp@@" + hashlib.md5(f"sip:gw@127.0.0.1:{ok_port}".encode()).hexdigest()
        dead_id = "itsp@@" + hashlib.md5(f"sip:gw@127.0.0.1:{dead}".encode()).hexdigest()
        code, out, err = await cli("get", "PJSIP_AOR(itsp,contact)", *api_opts)
        assert (code, out) == (0, ",".join(sorted([ok_id, dead_id])) + "\n"), err
        assert (await cli("get", f"PJSIP_CONTACT({ok_id},status)", *api_opts))[:2] == (0, "Reachable\n")
        code, out, _ = await cli("get", f"PJSIP_CONTACT({ok_id},rtt)", *api_opts)
        assert code == 0 and out.strip().isdigit() and int(out) < 500_000  # µs
        assert (await cli("get", f"PJSIP_CONTACT({dead_id},rtt)", *api_opts))[:2] == (0, "N/A\n")
        code, out, err = await cli("get", "PJSIP_AOR(nosuch,contact)", *api_opts)
        assert (code, out) == (1, "\n") and "Failed to retrieve information for AOR 'nosuch'" in err
        code, out, err = await cli("get", f"PJSIP_CONTACT({ok_id},nosuchfield)", *api_opts)
        assert (code, out) == (1, "\n") and "Unknown property 'nosuchfield' for PJSIP contact" in err
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
        await send("Action: PJSIPShowEndpoints\nActionID: e\n\n")
        answer = [await message() for _ in range(4)]
        assert [m.split("ObjectName: ")[1].split("\r\n")[0] for m in answer[1:3]] == ["gw", "pbx"]
        assert f"Aor: gw\r\nAuths: \r\nOutboundAuths: \r\nContacts: gw/{uri},\r\nDeviceState: Not in use\r\n" \
            "ActiveChannels: 0\r\n\r\n" in answer[2]
        assert answer[3].endswith("EventList: Complete\r\nListItems: 2\r\n\r\n")
        await send("Action: PJSIPShowEndpoint\nEndpoint: PJSIP/pbx\nActionID: e\n\n")
        answer = [await message() for _ in range(5)]
        assert [m.split("\r\n")[0] for m in answer[1:]] == ["Event: EndpointDetail", "Event: AorDetail",
                                                             "Event: ContactStatusDetail",
                                                             "Event: EndpointDetailComplete"]
        assert "Status: Reachable\r\nRoundtripUsec: " in answer[3] and "EndpointName: pbx\r\n" in answer[3]
        assert answer[4].endswith("ListItems: 3\r\n\r\n")  # Aor + ContactStatus + 1, as Asterisk counts
        await send("Action: PJSIPShowEndpoint\nEndpoint: nosuch\nActionID: e\n\n")
        assert await message() == ("Response: Error\r\nActionID: e\r\n"
                                   "Message: Unable to retrieve endpoint nosuch\r\n\r\n")
        await send("Action: PJSIPShowEndpoint\nActionID: e\n\n")
        assert await message() == ("Response: Error\r\nActionID: e\r\n"
                                   "Message: PJSIPShowEndpoint requires an endpoint name\r\n\r\n")
        # Getvar: PJSIP_AOR() / PJSIP_CONTACT() read as Asterisk reads them; a failure is an empty Value
        cid = "gw@@" + hashlib.md5(uri.encode()).hexdigest()
        for var, value in (("PJSIP_AOR(gw,contact)", cid), (f"PJSIP_CONTACT({cid},status)", "Reachable"),
                           ("PJSIP_AOR(gw,qualify_frequency)", "1"), ("PJSIP_AOR(nosuch,contact)", ""),
                           (f"PJSIP_CONTACT({cid},nosuchfield)", ""), ("SIPPEER(nosuch,status)", "")):
            await send(f"Action: Getvar\nVariable: {var}\nActionID: g\n\n")
            want = f"Response: Success\r\nActionID: g\r\nVariable: {var}\r\nValue: {value}\r\n\r\n"
            assert await message() == want
    finally:
        w.close()
        await svc.close()
        if gw is not None:
            gw.close()


async def phone1_daemon(tmp_path: Path, port: int) -> Service:
    """A daemon whose pjsip.conf has phone1 of asterisk-pjsip-observed.md §1 (qualified every 1 s)."""
    conf = tmp_path / "pjsip.conf"
    conf.write_text(f"[udp]\ntype = transport\nprotocol = udp\nbind = 127.0.0.1:{port}\n"
                    "[phone1-auth]\ntype = auth\nauth_type = userpass\nusername = phone1\npassword = secret1\n"
                    "[phone1]\ntype = aor\nmax_contacts = 1\nremove_existing = yes\nqualify_frequency = 1\n"
                    "qualify_timeout = 2.0\n[phone1]\ntype = endpoint\naors = phone1\nauth = phone1-auth\n")
    svc = Service(ServiceOptions(str(conf), "127.0.0.1", 0, str(tmp_path / "s")))
    await svc.start()
    return svc


async def phone1_ua() -> tuple[Phone, asyncio.DatagramTransport, str, str]:
    """A Phone on 127.0.0.1: it, its transport, its Contact URI and that contact's id."""
    phone = Phone()
    t, _ = await asyncio.get_running_loop().create_datagram_endpoint(lambda: phone, local_addr=("127.0.0.1", 0))
    uri = f"sip:phone1@127.0.0.1:{t.get_extra_info('sockname')[1]}"
    return phone, t, uri, "phone1;@" + hashlib.md5(uri.encode()).hexdigest()


async def test_registered_contact_survives_a_restart_and_is_qualified_again(tmp_path: Path,
                                                                          caplog: pytest.LogCaptureFixture) -> None:
    """Stored before the 200 OK, restored at start (as res_pjsip's astdb): polled again with the
    start-up rules and reported with res_pjsip's texts."""
    caplog.set_level(logging.INFO, logger="sipqualify")
    port = free_port()
    svc = await phone1_daemon(tmp_path, port)
    phone, t, uri, cid = await phone1_ua()
    try:
        assert (await phone.register_auth(("127.0.0.1", port), "phone1", "secret1", expires=300)).status == 200
        await svc.close()
        caplog.clear()
        seen = phone.options
        svc = await phone1_daemon(tmp_path, port)
        engine = svc.engine
        assert engine is not None
        await wait_for(lambda: (p := engine.peer(cid)) is not None and p.state == "OK" and phone.options > seen)
        await wait_for(lambda: any(r.getMessage().startswith(f"Contact phone1/{uri} is now Reachable.  RTT: ")
                                   for r in caplog.records))
        _, snap = await api(svc, "GET", "/api/v1/pjsip")
        (c,) = snap["aors"][0]["contacts"]
        assert (c["id"], c["status"], c["binding"]["endpoint"]) == (cid, "Reachable", "phone1")
    finally:
        t.close()
        await svc.close()


async def test_phone_registers_to_a_pjsip_aor_is_qualified_and_listed(tmp_path: Path,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    """A Phone REGISTERs to AOR `phone1` (auth from the endpoint's `auth=`): the 200 OK lists its
    contact with its expiry, the contact `phone1;@<md5>` is qualified at once at the address
    the REGISTER came from, `pjsip show contacts` shows it in Asterisk's row format, and an
    unregister removes it with res_pjsip's log lines."""
    caplog.set_level(logging.INFO, logger="sipqualify")
    port = free_port()
    svc = await phone1_daemon(tmp_path, port)
    phone, t, uri, cid = await phone1_ua()
    try:
        engine = svc.engine
        assert engine is not None
        resp = await phone.register_auth(("127.0.0.1", port), "phone1", "secret1", expires=120)
        assert resp.status == 200 and resp.headers.get_all("Contact") == [f"<{uri}>;expires=120"]
        await wait_for(lambda: (p := engine.peer(cid)) is not None and p.state == "OK")
        assert phone.options >= 1
        await wait_for(lambda: any(r.getMessage().startswith(f"Contact phone1/{uri} is now Reachable.  RTT: ")
                                   for r in caplog.records))
        msgs = [r.getMessage() for r in caplog.records]
        assert f"Added contact '{uri}' to AOR 'phone1' with expiration of 120 seconds" in msgs
        assert "Endpoint phone1 is now Reachable" in msgs
        code, out, err = await cli("pjsip", "show", "contacts", "--api", f"127.0.0.1:{svc.api_addr[1]}",
                                   "--state-dir", str(tmp_path / "s"))
        assert code == 0, err
        row = next(ln for ln in out.splitlines() if ln.startswith("  Contact:  phone1/"))
        name = f"phone1/{uri}"
        rtt = row[-11:]  # `%11.3f` ms (location.c cli_contact_print_body), the name column 46 wide
        assert re.fullmatch(r" *\d+\.\d{3}", rtt) and float(rtt) > 0, row
        assert row == f"  Contact:  {name:<46} {hashlib.md5(uri.encode()).hexdigest()[:10]} Avail   {rtt}", row
        assert out.endswith("\nObjects found: 1\n")
        store = svc.store
        assert store is not None
        await wait_for(lambda: cid in store.states())
        resp = await phone.register_auth(("127.0.0.1", port), "phone1", "secret1", expires=0)
        assert resp.status == 200 and resp.headers.get_all("Contact") == []
        await wait_for(lambda: engine.peer(cid) is None)
        await wait_for(lambda: "Endpoint phone1 is now Unreachable" in [r.getMessage() for r in caplog.records])
        msgs = [r.getMessage() for r in caplog.records]
        assert f"Removed contact '{uri}' from AOR 'phone1' due to request" in msgs
        assert f"Contact phone1/{uri} has been deleted" in msgs
        await wait_for(lambda: cid not in store.states())  # no state row left behind
    finally:
        t.close()
        await svc.close()
