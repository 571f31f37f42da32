"""`sipqualify ping`: one-shot SIP OPTIONS probes (a sipsak / check_sip replacement).

Each probe is one non-INVITE client transaction, the engine's `ClientTransaction` (RFC 3261
Timer E retransmissions on UDP, none on TCP); RTT is measured from the first transmission, like qualify. Any final
response counts as an answer (as chan_sip does), and its status is reported.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from dataclasses import dataclass
from typing import Any

from ..sip.framing import StreamFramer
from ..sip.message import Response, SipParseError, parse_message
from ..sip.options import build_options, format_host
from ..sip.transaction import FINAL, RETRANSMIT, RFC3261, ClientTransaction
from ..sip.uri import SipUri, parse_uri
from .resolve import default_port, resolve_host
from .tls import failure_reason
from .udp import norm_addr


class PingError(Exception):
    """Bad target or local failure (Nagios UNKNOWN)."""


@dataclass(slots=True)
class Probe:
    seq: int
    answered: bool
    rtt_ms: float | None
    status: int | None
    reason: str
    transmissions: int


@dataclass(slots=True)
class Target:
    uri: str
    host: str
    addr: tuple[str, int]
    transport: str


async def resolve_target(text: str, transport: str | None) -> Target:
    if "://" in text or not text.startswith(("sip:", "sips:")):
        text = "sip:" + text
    try:
        uri = parse_uri(text)
    except SipParseError as e:
        raise PingError(f"bad SIP URI {text!r}: {e}") from None
    if not isinstance(uri, SipUri):
        raise PingError(f"not a sip: or sips: URI: {text!r}")
    tp = (transport or str(uri.params.get("transport") or ("tls" if uri.scheme == "sips" else "udp"))).lower()
    if tp not in ("udp", "tcp", "tls"):
        raise PingError(f"transport {tp} is not supported by ping (udp, tcp, tls)")
    ip = await resolve_host(uri.host)
    if ip is None:
        raise PingError(f"cannot resolve {uri.host}")
    port = uri.port or default_port(tp)
    return Target(text, uri.host, (ip, port), tp)


class _UdpProbeSocket(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[bytes, tuple[str, int]]] = asyncio.Queue()
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's UDP transport is not an asyncio.DatagramTransport subclass
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self.queue.put_nowait((data, norm_addr(addr)))

    def error_received(self, exc: Exception) -> None:
        # connected socket: the kernel reports ICMP port unreachable here; b"" marks it
        self.queue.put_nowait((b"", ("", 0)))


async def ping(
    target: Target,
    *,
    count: int = 1,
    interval: float = 1.0,
    timeout: float = 5.0,
    useragent: str = "sipqualify-ping",
    from_user: str = "sipqualify",
) -> list[Probe]:
    if target.transport in ("tcp", "tls"):
        return await _ping_tcp(target, count=count, interval=interval, timeout=timeout, useragent=useragent,
                               from_user=from_user)
    loop = asyncio.get_running_loop()
    family = socket.AF_INET6 if ":" in target.addr[0] else socket.AF_INET
    transport, proto = await loop.create_datagram_endpoint(
        _UdpProbeSocket, remote_addr=target.addr, family=family
    )
    try:
        local = norm_addr(transport.get_extra_info("sockname"))
        results = []
        for seq in range(1, count + 1):
            if seq > 1:
                await asyncio.sleep(interval)
            results.append(await _probe_udp(proto, target, local, seq, timeout, useragent, from_user))
        return results
    finally:
        transport.close()


def _ruri(target: Target) -> str:
    return target.uri.split("?", 1)[0]


async def _probe_udp(
    proto: _UdpProbeSocket, target: Target, local: tuple[str, int], seq: int, timeout: float, ua: str, user: str
) -> Probe:
    loop = asyncio.get_running_loop()
    req = build_options(_ruri(target), local, transport="UDP", from_user=user, from_display=user, useragent=ua,
                        cseq=seq)
    txn = ClientTransaction(req.branch, req.data, target.addr, policy=RFC3261, call_id=req.call_id)
    assert proto.transport is not None
    proto.transport.sendto(req.data)
    t0 = loop.time()
    txn.start(t0)
    deadline = t0 + timeout
    while True:
        now = loop.time()
        if now >= deadline:
            return Probe(seq, False, None, None, "timeout", txn.transmissions)
        wake = min(deadline, txn.next_timer or deadline)
        try:
            data, src = await asyncio.wait_for(proto.queue.get(), timeout=max(0.0, wake - now))
        except TimeoutError:
            if txn.on_timer(loop.time()) == RETRANSMIT:
                proto.transport.sendto(req.data)
            continue
        if not data:
            return Probe(seq, False, None, None, "port unreachable (ICMP)", txn.transmissions)
        t = loop.time()
        try:
            msg = parse_message(data)
        except SipParseError:
            continue
        if not isinstance(msg, Response) or msg.branch != req.branch or msg.call_id != req.call_id:
            continue
        if txn.on_response(msg.status, t) == FINAL:
            return Probe(seq, True, (t - t0) * 1000, msg.status, msg.reason, txn.transmissions)


async def _ping_tcp(
    target: Target, *, count: int, interval: float, timeout: float, useragent: str, from_user: str
) -> list[Probe]:
    loop = asyncio.get_running_loop()
    results: list[Probe] = []
    try:
        if target.transport == "tls":  # verified against the system store (SSL_CERT_FILE), SNI = the host
            ctx = ssl.create_default_context()
            reader, writer = await asyncio.wait_for(asyncio.open_connection(
                *target.addr, ssl=ctx, server_hostname=target.host, ssl_handshake_timeout=timeout), timeout)
        else:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(*target.addr), timeout)
    except (TimeoutError, OSError) as e:
        reason = failure_reason(e)
        return [Probe(i, False, None, None, reason, 0) for i in range(1, count + 1)]
    try:
        local = norm_addr(writer.get_extra_info("sockname"))
        framer = StreamFramer()
        for seq in range(1, count + 1):
            if seq > 1:
                await asyncio.sleep(interval)
            req = build_options(_ruri(target), local, transport=target.transport.upper(), from_user=from_user,
                                from_display=from_user, useragent=useragent, cseq=seq)
            # the same transaction as over UDP, reliable: no retransmissions (RFC 3261 §17.1.2.2)
            txn = ClientTransaction(req.branch, req.data, target.addr, reliable=True, policy=RFC3261,
                                    call_id=req.call_id)
            t0 = loop.time()
            writer.write(req.data)
            txn.start(t0)
            await writer.drain()
            deadline = t0 + timeout
            probe = Probe(seq, False, None, None, "timeout", 1)
            while probe.status is None and loop.time() < deadline:
                try:
                    chunk = await asyncio.wait_for(reader.read(65536), deadline - loop.time())
                except TimeoutError:
                    break
                if not chunk:
                    probe.reason = "connection closed"
                    break
                try:
                    frames = framer.feed(chunk)
                except SipParseError:
                    probe.reason = "bad stream"
                    break
                for frame in frames:
                    try:
                        msg = parse_message(frame)
                    except SipParseError:
                        continue
                    if not isinstance(msg, Response) or msg.branch != req.branch or msg.call_id != req.call_id:
                        continue
                    t = loop.time()
                    if txn.on_response(msg.status, t) == FINAL:
                        probe = Probe(seq, True, (t - t0) * 1000, msg.status, msg.reason, txn.transmissions)
                        break
            results.append(probe)
    finally:
        writer.close()
    return results


@dataclass(slots=True)
class Summary:
    sent: int
    answered: int
    loss_pct: float
    min_ms: float | None
    avg_ms: float | None
    max_ms: float | None


def summarize(probes: list[Probe]) -> Summary:
    rtts = [p.rtt_ms for p in probes if p.answered and p.rtt_ms is not None]
    sent = len(probes)
    answered = len(rtts)
    loss = 100.0 * (sent - answered) / sent if sent else 100.0
    if not rtts:
        return Summary(sent, 0, loss, None, None, None)
    return Summary(sent, answered, loss, min(rtts), sum(rtts) / len(rtts), max(rtts))


def nagios(summary: Summary, warn_ms: float | None, crit_ms: float | None, target: str) -> tuple[int, str]:
    """Exit code and the one status line with perfdata (Nagios plugin guidelines)."""
    w = "" if warn_ms is None else f"{warn_ms:g}"
    c = "" if crit_ms is None else f"{crit_ms:g}"
    avg = summary.avg_ms
    perf = (
        f"rtt={avg:.3f}ms;{w};{c};0 loss={summary.loss_pct:g}%;;;0;100"
        if avg is not None
        else f"rtt=U;{w};{c};0 loss={summary.loss_pct:g}%;;;0;100"
    )
    if summary.answered == 0:
        return 2, f"SIP CRITICAL - {target}: no answer to {summary.sent} request(s) | {perf}"
    assert avg is not None
    text = f"{summary.answered}/{summary.sent} answered, avg {avg:.3f} ms"
    if crit_ms is not None and avg > crit_ms:
        return 2, f"SIP CRITICAL - {target}: {text} (> {c} ms) | {perf}"
    if warn_ms is not None and avg > warn_ms:
        return 1, f"SIP WARNING - {target}: {text} (> {w} ms) | {perf}"
    if summary.answered < summary.sent:
        return 1, f"SIP WARNING - {target}: {text}, {summary.loss_pct:g}% loss | {perf}"
    return 0, f"SIP OK - {target}: {text} | {perf}"


def host_label(target: Target) -> str:
    return f"{format_host(target.addr[0])}:{target.addr[1]}"
