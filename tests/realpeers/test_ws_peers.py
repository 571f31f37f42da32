"""SIP over WebSocket against real peers: Kamailio's websocket module as a `transport=ws` peer
qualified over a WebSocket sipqualify opens, and JsSIP in headless Chromium registering to
sipqualify over ws and wss, qualified over its own WebSocket, unregistered when its page closes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import trustme

from ..browser import chromium_page
from .peers import (
    KAMAILIO_WS_TEMPLATE,
    Daemon,
    Kamailio,
    Lab,
    free_tcp_port,
    peer,
    require_kamailio_module,
    sip_conf,
    status_ms,
)

realpeer = pytest.mark.realpeer


@realpeer
def test_kamailio_websocket_peer_is_qualified_over_a_websocket(lab: Lab) -> None:
    require_kamailio_module("websocket.so", "kamailio-websocket-modules")
    kam = Kamailio(lab, template=KAMAILIO_WS_TEMPLATE)
    d = Daemon(lab, sip_conf({"kamws": peer(kam.port, transport="ws", qualify="yes", qualifyfreq=5)}))
    p = d.wait_state("kamws", "OK")
    assert status_ms(p["status"]) < 100 and p["transport"] == "ws" and p["retransmissions"] == 0
    log = kam.proc.log_text()
    assert "WebSocket handshake from 127.0.0.1:" in log and "for /ws" in log
    assert "OPTIONS over ws from 127.0.0.1:" in log  # over the WebSocket, not UDP
    assert "OPTIONS over udp from" not in log.split("WebSocket handshake", 1)[1]
    # Kamailio gone: the peer shows why, and nothing is sent another way
    kam.stop()
    p = d.wait_for("kamws", lambda p: p["state"] == "UNREACHABLE" and p.get("transport_error"), "UNREACHABLE "
                   "with a reason", timeout=30)
    assert p["transport_error"] == "connection refused"


# --------------------------------------------------------------------------- JsSIP in Chromium

JSSIP = Path(__file__).parents[1] / "data" / "vendor" / "jssip.min.js"  # scripts/vendor-jssip.sh

REGISTER_JS = """([url, user, password]) => new Promise((resolve, reject) => {
    const socket = new JsSIP.WebSocketInterface(url);
    const ua = new JsSIP.UA({sockets: [socket], uri: `sip:${user}@127.0.0.1`, password,
                             register: true, register_expires: 300});
    window.ua = ua;
    window.optionsSeen = 0;
    ua.on('newOptions', (e) => { window.optionsSeen += 1; e.request.reply(200); });
    ua.on('registered', () => resolve(ua.contact.toString()));
    ua.on('registrationFailed', (e) => reject(new Error('registration failed: ' + e.cause)));
    ua.start();
})"""


def registrations(d: Daemon) -> list[dict[str, Any]]:
    r = d.cli("registrations", "--json", timeout=10)
    assert r.returncode == 0, r.stderr
    regs: list[dict[str, Any]] = json.loads(r.stdout)
    return regs


@realpeer
@pytest.mark.parametrize("scheme", ["ws", "wss"])
def test_jssip_in_chromium_registers_over_websocket_is_qualified_and_unregistered_when_closed(
        lab: Lab, tmp_path: Path, scheme: str) -> None:
    ws_port = free_tcp_port()
    general: dict[str, object] = {"realm": "pbx.test"}
    if scheme == "ws":
        general |= {"wsenable": "yes", "wsbindaddr": f"127.0.0.1:{ws_port}"}
    else:
        ca = trustme.CA()
        cert = ca.issue_cert("127.0.0.1")
        pem = tmp_path / "server.pem"
        cert.private_key_and_cert_chain_pem.write_to_path(str(pem))
        general |= {"wssenable": "yes", "wssbindaddr": f"127.0.0.1:{ws_port}", "tlscertfile": pem}
    d = Daemon(lab, sip_conf({"webphone": {"host": "dynamic", "secret": "s3cret", "qualify": "yes",
                                           "qualifyfreq": 2}}, general))
    url = f"{scheme}://127.0.0.1:{ws_port}/ws"
    with chromium_page(tmp_path / "chromium") as page:
        page.set_content("<!doctype html><title>JsSIP phone</title>")
        page.add_script_tag(path=str(JSSIP))
        contact = page.evaluate(REGISTER_JS, [url, "webphone", "s3cret"])
        # JsSIP's Contact says transport=ws over wss too (its Via says WSS): the binding's
        # transport is what the REGISTER came over
        assert ".invalid" in contact and contact.endswith(";transport=ws>")
        regs = registrations(d)
        assert [(r["peer"], r["transport"], r["contact"]) for r in regs] == [
            ("webphone", scheme, contact.strip("<>").split(">")[0])]
        p = d.wait_state("webphone", "OK")  # JsSIP answered our OPTIONS over its WebSocket
        assert p["transport"] == scheme and p["retransmissions"] == 0
        page.wait_for_function("window.optionsSeen > 0", timeout=10_000)
        page.close()  # the tab goes, its WebSocket with it: the binding is dropped
        d.wait_for("webphone", lambda p: not p.get("addr_ip"), "unregistered", timeout=15)
        assert registrations(d) == []
        d.wait_state("webphone", "UNKNOWN", timeout=15)
    assert "Unregistered SIP 'webphone' (connection closed)" in d.log_text()
