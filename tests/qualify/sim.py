"""A virtual-clock harness for the qualify engine: peers are functions, time is a number."""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field

from sipqualify.model import GeneralConfig, PeerConfig
from sipqualify.qualify.engine import QualifyEngine
from sipqualify.qualify.events import Event, QualifyResult, StateChanged

Addr = tuple[str, int]
LOCAL: Addr = ("127.0.0.1", 15060)


def header(req: bytes, name: str) -> str:
    for line in req.split(b"\r\n"):
        k, _, v = line.partition(b":")
        if k.strip().lower() == name.lower().encode():
            return v.strip().decode()
    raise KeyError(name)


def answer(req: bytes, status: int = 200, reason: str = "OK", to_tag: str | None = "resp") -> bytes:
    """A response as a simple UAS builds it (copy Via/From/To/Call-ID/CSeq)."""
    to = header(req, "To") + (f";tag={to_tag}" if to_tag else "")
    return (
        f"SIP/2.0 {status} {reason}\r\n"
        f"Via: {header(req, 'Via')}\r\n"
        f"From: {header(req, 'From')}\r\n"
        f"To: {to}\r\n"
        f"Call-ID: {header(req, 'Call-ID')}\r\n"
        f"CSeq: {header(req, 'CSeq')}\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


# A responder gets (request bytes, time) and returns [(delay_s, response bytes)].
Responder = Callable[[bytes, float], list[tuple[float, bytes]]]


def ok_after(delay: float, status: int = 200, reason: str = "OK") -> Responder:
    return lambda req, t: [(delay, answer(req, status, reason))]


def silent(req: bytes, t: float) -> list[tuple[float, bytes]]:
    return []


def trying_only(req: bytes, t: float) -> list[tuple[float, bytes]]:
    return [(0.0005, answer(req, 100, "Trying", to_tag=None))]


@dataclass
class Sim:
    engine: QualifyEngine
    responders: dict[Addr, Responder]
    now: float = 0.0
    sent: list[tuple[float, Addr, bytes]] = field(default_factory=list)
    sent_from: list[tuple[float, Addr, Addr]] = field(default_factory=list)  # (t, our local address, dest)
    events: list[tuple[float, Event]] = field(default_factory=list)
    _pending: list[tuple[float, int, Addr, bytes]] = field(default_factory=list)
    _seq: itertools.count[int] = field(default_factory=itertools.count)

    def _flush(self) -> None:
        out: list[tuple[bytes, Addr, Addr | None]] = [(d, a, None) for d, a in self.engine.datagrams_to_send()]
        out += self.engine.datagrams_to_send_from()  # peers with a qualify_source
        for data, dest, local in out:
            self.sent.append((self.now, dest, data))
            if local is not None:
                self.sent_from.append((self.now, local, dest))
            r = self.responders.get(dest)
            if r is not None:
                for delay, resp in r(data, self.now):
                    heapq.heappush(self._pending, (self.now + delay, next(self._seq), dest, resp))
        for data, flow in self.engine.inbound.sends():
            self.sent.append((self.now, flow.remote, data))
        while (ev := self.engine.next_event()) is not None:
            self.events.append((self.now, ev))

    def answers(self) -> list[tuple[bytes, Addr]]:
        """What was sent since the last look, answers to requests included (to their flow's address)."""
        out = self.engine.datagrams_to_send()
        out += [(data, flow.remote) for data, flow in self.engine.inbound.sends()]
        return out

    def deliver(self, data: bytes, src: Addr) -> None:
        self.engine.receive_datagram(data, src, self.now)
        self._flush()

    def run_until(self, t_end: float) -> None:
        self._flush()
        while True:
            t_timer = self.engine.get_timer()
            t_pkt = self._pending[0][0] if self._pending else None
            cands = [t for t in (t_timer, t_pkt) if t is not None]
            if not cands or min(cands) > t_end:
                self.now = t_end
                return
            t = min(cands)
            self.now = t
            if t_pkt is not None and t_pkt <= (t_timer if t_timer is not None else t_pkt):
                _, _, src, data = heapq.heappop(self._pending)
                self.engine.receive_datagram(data, src, t)
            else:
                self.engine.handle_timer(t)
            self._flush()

    def stall_until(self, t: float) -> None:
        """The shell did not drive the engine until `t` (a stalled loop): everything due runs at `t`."""
        self.now = t
        self.engine.handle_timer(t)
        self._flush()

    # --- views for assertions
    def sends_to(self, addr: Addr) -> list[float]:
        return [round(t * 1000) for t, d, _ in self.sent if d == addr]

    def changes(self, peer: str | None = None) -> list[tuple[int, str, str, bool]]:
        return [
            (round(t * 1000), e.new, e.log_line(), e.silent)
            for t, e in self.events
            if isinstance(e, StateChanged) and (peer is None or e.peer == peer)
        ]

    def results(self, peer: str) -> list[QualifyResult]:
        return [e for _, e in self.events if isinstance(e, QualifyResult) and e.peer == peer]


def make_engine(general: GeneralConfig | None = None, **kw: object) -> QualifyEngine:
    return QualifyEngine(
        general or GeneralConfig(),
        local_address=lambda dest: LOCAL,
        wallclock=lambda: 1795463111.0,  # Mon, 23 Nov 2026 19:45:11 GMT (asterisk-observed.md §4)
        **kw,  # type: ignore[arg-type]
    )


def peer(name: str, port: int, qualify: int = 2000, freq_s: int = 60, **kw: object) -> PeerConfig:
    return PeerConfig(name=name, host="127.0.0.1", port=port, qualify_ms=qualify, qualifyfreq_ms=freq_s * 1000, **kw)  # type: ignore[arg-type]


def build(peers: list[PeerConfig], responders: dict[Addr, Responder], general: GeneralConfig | None = None,
          **kw: object) -> Sim:
    eng = make_engine(general, **kw)
    addrs: dict[str, Addr | None] = {p.name: (p.host or "", p.port or 5060) for p in peers if p.host}
    sim = Sim(eng, responders)
    eng.load(peers, 0.0, addresses=addrs)
    sim.run_until(0.0)
    return sim
