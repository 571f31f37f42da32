"""qualify_source against SIPp (issue 13 item 4, multi-homed hosts): the daemon in-process, its SIP
socket on 127.0.0.1, one peer qualified from 127.0.0.5. SIPp's message trace shows the Via it got
(127.0.0.5 and the source socket's port); SIPp answers to the datagram's source address, and that
answer arrives on the source socket, not on the SIP socket, and makes the peer OK."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from sipqualify.service import Service, ServiceOptions

from ..helpers import sip_conf, wait_for
from .peers import LOOPBACK, SCENARIOS, Lab, free_port, require_binary, wait_answering

realpeer = pytest.mark.realpeer


@realpeer
async def test_sipp_uas_gets_the_options_from_the_source_and_the_peer_is_ok(lab: Lab, tmp_path: Path) -> None:
    sipp = require_binary("sipp", "sip-tester")
    port = free_port()
    trace = lab.tmp / "sipp-messages.log"
    proc = lab.spawn("sipp-uas-source", [sipp, "-sf", str(SCENARIOS / "uas_200.xml"), "-i", LOOPBACK,
                                         "-p", str(port), "-cp", str(free_port()), "-nostdin", "-trace_msg",
                                         "-message_file", str(trace)], cwd=lab.tmp)
    wait_answering(port, "SIPp (uas_200.xml)", proc=proc)
    sip_port = free_port()
    conf = sip_conf(tmp_path / "sip.conf", sip_port, {
        "trunk": {"host": LOOPBACK, "port": port, "qualify": 500, "qualifyfreq": 1, "qualify_source": "127.0.0.5"}})
    svc = Service(ServiceOptions(conf, "127.0.0.1", 0, str(tmp_path / "s")))
    await svc.start()
    try:
        assert svc.engine is not None
        src = svc.sockets.sources[("127.0.0.5", 0)]
        local = src.local
        on_source: list[tuple[bytes, tuple[str, int]]] = []
        forward = src.on_datagram

        def record(data: bytes, addr: tuple[str, int], t: float) -> None:  # what reaches the source socket
            on_source.append((data, addr))
            forward(data, addr, t)

        src.on_datagram = record  # before the first poke: start() returns before its timer runs
        trunk = svc.engine.peer("trunk")
        assert trunk is not None
        await wait_for(lambda: trunk.state == "OK" and trunk.qualifies >= 2)
        answers = [addr for data, addr in on_source if data.startswith(b"SIP/2.0 200 OK")]
        assert answers and set(answers) == {(LOOPBACK, port)}
        assert local[0] == "127.0.0.5" and local[1] != sip_port

        await wait_for(lambda: "User-Agent: sipqualify" in trace.read_text(errors="replace"))
        text = trace.read_text(errors="replace")
        ours = [m for m in re.split(r"-{20,}", text) if "received" in m and "User-Agent: sipqualify" in m]
        vias = {re.search(r"^Via: (.*)$", m, re.M).group(1).split(";")[0] for m in ours}  # type: ignore[union-attr]
        assert vias == {f"SIP/2.0/UDP 127.0.0.5:{local[1]}"}
        assert re.search(rf"^Contact: <sip:asterisk@127\.0\.0\.5:{local[1]}>$", ours[0], re.M)
    finally:
        await svc.close()
