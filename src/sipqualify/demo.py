"""`sipqualify demo`: built-in SIP endpoints on loopback and a daemon qualifying them.

No outside SIP device is needed. Within 30 s a newcomer sees every state:
OK, LAGGED, UNREACHABLE, UNKNOWN (a dynamic peer that never registered), Unmonitored,
a flapping peer going UNREACHABLE and back, and a phone that registers with digest auth and
is then qualified at the address it registered from.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .addr import Addr, is_loopback
from .api.dashboard import login_link
from .model import Config, GeneralConfig, PeerConfig, ServiceConfig
from .sip.message import Request, SipParseError, make_response, parse_message


class DemoEndpoint(asyncio.DatagramProtocol):
    """A tiny UAS: answers OPTIONS with `status` after `delay` seconds while `up()` is true."""

    def __init__(self, status: int, reason: str, delay: float = 0.0, up: Callable[[], bool] = lambda: True) -> None:
        self.status, self.reason, self.delay, self.up = status, reason, delay, up
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's UDP transport is not an asyncio.DatagramTransport subclass
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        if not self.up() or self.status == 0:
            return
        try:
            req = parse_message(data)
        except SipParseError:
            return
        if not isinstance(req, Request):
            return
        resp = make_response(req, self.status, self.reason, to_tag="demo",
                             extra=[("Allow", "INVITE, ACK, CANCEL, OPTIONS, BYE")]).to_bytes()
        dest = (str(addr[0]), int(addr[1]))
        loop = asyncio.get_running_loop()
        if self.delay:
            loop.call_later(self.delay, self._send, resp, dest)
        else:
            self._send(resp, dest)

    def _send(self, data: bytes, dest: Addr) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.sendto(data, dest)


class DemoPhone(asyncio.DatagramProtocol):
    """A phone for `host=dynamic`: REGISTERs with digest auth (401, then Authorization), again
    before its binding expires, and answers the daemon's OPTIONS with 200."""

    def __init__(self, user: str, password: str, expires: int = 120) -> None:
        self.user, self.password, self.expires = user, password, expires
        self.transport: asyncio.DatagramTransport | None = None
        self.server: Addr | None = None
        self.cseq = 0
        self.call_id = os.urandom(8).hex() + "@demo-phone"

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def register(self, server: Addr, auth: str = "") -> None:
        if self.transport is None or self.transport.is_closing():
            return
        self.server = server
        self.cseq += 1
        ip, port = self.transport.get_extra_info("sockname")[:2]
        lines = [f"REGISTER sip:{server[0]}:{server[1]} SIP/2.0",
                 f"Via: SIP/2.0/UDP {ip}:{port};branch=z9hG4bK{os.urandom(8).hex()};rport", "Max-Forwards: 70",
                 f"From: <sip:{self.user}@{server[0]}>;tag=demo", f"To: <sip:{self.user}@{server[0]}>",
                 f"Call-ID: {self.call_id}", f"CSeq: {self.cseq} REGISTER", f"Contact: <sip:{self.user}@{ip}:{port}>",
                 f"Expires: {self.expires}", "User-Agent: sipqualify-demo-phone"]
        if auth:
            lines.append(f"Authorization: {auth}")
        self.transport.sendto(("\r\n".join(lines) + "\r\nContent-Length: 0\r\n\r\n").encode(), server)

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        from .sip.digest import authorization
        from .sip.message import Response

        try:
            msg = parse_message(data)
        except SipParseError:
            return
        dest = (str(addr[0]), int(addr[1]))
        if isinstance(msg, Request):
            if msg.method == "OPTIONS" and self.transport is not None:
                self.transport.sendto(make_response(msg, 200, "OK", to_tag="phone").to_bytes(), dest)
            return
        if not isinstance(msg, Response) or self.server is None:
            return
        if msg.status == 401:
            challenges = msg.headers.get_all("WWW-Authenticate")
            if not challenges:
                return
            uri = f"sip:{self.server[0]}:{self.server[1]}"
            self.register(self.server, authorization(challenges[0], self.user, self.password, "REGISTER", uri))
        elif msg.status == 200:  # refresh at half the expiry, like most phones
            asyncio.get_running_loop().call_later(self.expires / 2, self.register, self.server)


async def start_endpoints(t0: float) -> tuple[list[asyncio.DatagramTransport], list[PeerConfig]]:
    """Start the demo endpoints on 127.0.0.1 ephemeral ports; return them and matching peers."""
    loop = asyncio.get_running_loop()
    flap_period = 40.0

    def flaky_up() -> bool:  # up for 20 s, down for 20 s
        return ((time.monotonic() - t0) % flap_period) < flap_period / 2

    specs = [
        ("pbx-healthy", DemoEndpoint(200, "OK"), 2000, 5, "answers 200 at once"),
        ("trunk-slow", DemoEndpoint(200, "OK", delay=0.7), 500, 5, "answers after 700 ms (> qualify=500)"),
        ("gw-404", DemoEndpoint(404, "Not Found"), 2000, 5, "answers 404: still reachable"),
        ("phone-silent", DemoEndpoint(0, ""), 2000, 5, "never answers"),
        ("trunk-flaky", DemoEndpoint(200, "OK", up=flaky_up), 500, 5, "20 s up, 20 s down"),
        ("fax-noqualify", DemoEndpoint(200, "OK"), 0, 60, "qualify=no"),
    ]
    transports: list[asyncio.DatagramTransport] = []
    peers: list[PeerConfig] = []
    for name, proto, qualify, freq, desc in specs:
        transport, _ = await loop.create_datagram_endpoint(lambda p=proto: p, local_addr=("127.0.0.1", 0))  # type: ignore[misc]
        transports.append(transport)
        port = transport.get_extra_info("sockname")[1]
        peers.append(PeerConfig(name=name, host="127.0.0.1", port=port, qualify_ms=qualify,
                                qualifyfreq_ms=freq * 1000, description=desc, source="demo"))
    peers.append(PeerConfig(name="phone-1001", dynamic=True, qualify_ms=2000, defaultuser="1001",
                            description="host=dynamic, never registered", source="demo"))
    peers.append(PeerConfig(name="phone-1002", dynamic=True, qualify_ms=2000, qualifyfreq_ms=5000,
                            secret="demo-1002", nat=("force_rport",),
                            description="host=dynamic, registers (digest) at +3 s", source="demo"))
    return transports, peers


async def run_demo(*, duration: float = 0, interval: float = 5.0, api: Addr | None = None,
                   state_dir: str | None = None) -> int:
    """`api`: where the demo daemon's API listens (the CLI parses `--api`); default any free port."""
    from .compat import format_sip_show_peers
    from .service import Service, ServiceOptions
    from .store.statedir import default_state_dir

    t0 = time.monotonic()
    transports, peers = await start_endpoints(t0)
    api_host, api_port = api or ("127.0.0.1", 0)
    sdir = Path(state_dir) if state_dir else default_state_dir() / "demo"
    cfg = Config(
        general=GeneralConfig(udpbindaddr="127.0.0.1", bindport=0),
        service=ServiceConfig(api_host=api_host, api_port=api_port, state_dir=str(sdir)),
        peers={p.name: p for p in peers},
        source="demo",
    )
    svc = Service(ServiceOptions(None, config=cfg, api_host=api_host, api_port=api_port, state_dir=str(sdir)))
    await svc.start()
    sip = svc.sockets.local_addresses()[0]
    phone_t, phone = await asyncio.get_running_loop().create_datagram_endpoint(
        lambda: DemoPhone("phone-1002", "demo-1002"), local_addr=("127.0.0.1", 0))
    transports.append(phone_t)
    asyncio.get_running_loop().call_later(3.0, phone.register, sip)
    print(f"sipqualify demo: {len(peers)} peers on 127.0.0.1, daemon SIP on {sip[0]}:{sip[1]}, "
          f"API on http://{svc.api_addr[0]}:{svc.api_addr[1]}")
    print(f"  try: sipqualify peers --api {svc.api_addr[0]}:{svc.api_addr[1]} --state-dir {sdir}")
    url = f"http://{svc.api_addr[0]}:{svc.api_addr[1]}/"
    if is_loopback(svc.api_addr[0]):  # a link that logs in once, without the token; only shown on loopback
        print(f"  dashboard: {login_link(url, svc.token)}")
    else:
        print(f"  dashboard: {url} (log in with the token in {sdir / 'api-token'})")
    print("  Ctrl-C to stop\n", flush=True)
    stop = asyncio.Event()
    try:
        import signal

        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
    except (NotImplementedError, RuntimeError):
        pass
    try:
        while not stop.is_set():
            elapsed = time.monotonic() - t0
            if duration and elapsed >= duration:
                break
            try:
                wait = interval if not duration else min(interval, duration - elapsed)
                await asyncio.wait_for(stop.wait(), timeout=wait)
            except TimeoutError:
                pass
            print(f"--- {time.strftime('%H:%M:%S')} (+{time.monotonic() - t0:.0f} s)")
            sys.stdout.write(format_sip_show_peers(svc.model.views()))
            sys.stdout.flush()
    finally:
        await svc.close()
        for t in transports:
            t.close()
    if os.environ.get("SIPQUALIFY_DEMO_QUIET") is None:
        print("demo stopped")
    return 0
