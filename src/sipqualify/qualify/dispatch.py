"""The front door, sans-I/O: everything that arrives is charged, parsed once and handed on.

Responses go to the qualify engine (`receive_response`), requests to the inbound endpoint
(`receive_request`, with the `Flow` they came over). Bad input of any kind is counted and
logged here, once per source per interval, without a traceback; what cannot be parsed never
reaches either side.
"""

from __future__ import annotations

import logging
from typing import Protocol

from ..addr import Addr
from ..sip.message import Request, Response, SipParseError, parse_message
from .inbound import Flow

log = logging.getLogger("sipqualify.engine")  # the name operators filter on since the start


REQUEST_RATE = 2000.0  # datagrams per second per source address (an SBC fronts many phones)
REQUEST_BURST = 4000.0
MAX_DATAGRAM = 65535
MALFORMED_LOG_INTERVAL = 60.0  # s: one line per source per interval for bad input, the rest is counted
MALFORMED_LOG_SOURCES = 64  # sources named per interval: spoofed source addresses cannot flood the log


class ResponseSink(Protocol):
    def owns_branch(self, data: bytes) -> bool: ...

    def receive_response(self, msg: Response, addr: Addr, now: float, data: bytes = b"") -> None: ...

    def receive_fast(self, data: bytes, addr: Addr, now: float) -> bool: ...


class RequestSink(Protocol):
    def receive_request(self, req: Request, flow: Flow, now: float) -> None: ...


class FrontStats(Protocol):
    rx_datagrams: int
    rx_keepalive: int
    rx_malformed: int
    rate_limited: int
    internal_errors: int


class Dispatcher:
    def __init__(self, responses: ResponseSink, requests: RequestSink, stats: FrontStats) -> None:
        self.responses = responses
        self.requests = requests
        self.stats = stats
        self._buckets: dict[str, list[float]] = {}  # per-source budget (token bucket)
        self._malformed_logged: set[str] = set()  # sources whose bad input was logged this interval
        self._malformed_interval_end = float("-inf")

    def receive(self, data: bytes, addr: Addr, now: float, transport: str) -> None:
        """A datagram, or a message framed off a TCP connection from `addr`."""
        stats = self.stats
        stats.rx_datagrams += 1
        if data[:1] in (b"\r", b"\n", b"") and not data.strip(b"\r\n"):
            stats.rx_keepalive += 1  # CRLF keepalive (RFC 5626 §4.4.1 style); nothing to do on UDP
            return
        if data[:8] == b"SIP/2.0 ":  # the answer to one of our pokes, read from its bytes (sip/fastpath.py)
            try:
                if self.responses.receive_fast(data, addr, now):
                    return
            except Exception:
                stats.internal_errors += 1
                log.exception("internal error handling a message from %s", addr)
                return
        # The per-source budget is charged before any parsing, so beyond it a flood costs a dict
        # lookup per datagram whatever it holds (and gets no answers: never amplify). Requests
        # and responses alike: a response to nobody's poke is worth nothing, and starting with
        # "SIP/2.0 " must not be a way around the budget. The one exemption is a response naming
        # the branch of one of our pokes in flight or lingering: 64 random bits that only the
        # peer we sent it to can know, so its answers are never dropped, whoever floods from
        # whatever address (its own, spoofed, included) and however the flood is shaped.
        if not self.responses.owns_branch(data) and not self._allow_from(addr[0], now):
            stats.rate_limited += 1
            return
        if len(data) > MAX_DATAGRAM:
            self.malformed(addr, now, f"datagram of {len(data)} bytes")
            return
        try:
            msg = parse_message(data)
        except SipParseError as e:
            self.malformed(addr, now, e.reason)
            return
        except Exception:  # a bug in the parser (it raises SipParseError for any bad input)
            stats.internal_errors += 1
            log.exception("parser failed on a datagram from %s", addr)
            return
        if msg.defects and isinstance(msg, Response):
            self.malformed(addr, now, msg.defects[0])
            return
        try:
            if isinstance(msg, Response):
                self.responses.receive_response(msg, addr, now, data)  # as received: for a watched peer
            elif msg.defects and msg.method != "ACK" and (msg.top_via is None or msg.call_id is None):
                self.malformed(addr, now, msg.defects[0])  # nowhere to send an answer to
            else:
                self.requests.receive_request(msg, Flow(transport, addr), now)
        except SipParseError as e:
            self.malformed(addr, now, e.reason)
        except Exception:
            stats.internal_errors += 1
            log.exception("internal error handling a message from %s", addr)

    def malformed(self, addr: Addr, now: float, reason: str) -> None:
        """Bad input: counted; logged without a traceback, once per source per interval, for
        at most MALFORMED_LOG_SOURCES sources per interval (bounded memory, bounded log)."""
        self.stats.rx_malformed += 1
        if now >= self._malformed_interval_end:
            self._malformed_interval_end = now + MALFORMED_LOG_INTERVAL
            self._malformed_logged.clear()
        ip = addr[0]
        if ip in self._malformed_logged or len(self._malformed_logged) >= MALFORMED_LOG_SOURCES:
            return
        self._malformed_logged.add(ip)
        log.info("malformed SIP from %s port %s: %s (more bad input from %s is counted, not logged, for %.0f s)",
                 ip, addr[1], reason[:200].encode("ascii", "backslashreplace").decode(), ip,
                 self._malformed_interval_end - now)

    def _allow_from(self, ip: str, now: float) -> bool:
        """Token bucket per source address for what it sends us (RATE per second, BURST)."""
        b = self._buckets.get(ip)
        if b is None:
            if len(self._buckets) > 100_000:
                self._buckets.clear()
            b = self._buckets[ip] = [REQUEST_BURST, now]
        tokens = min(REQUEST_BURST, b[0] + (now - b[1]) * REQUEST_RATE)
        b[1] = now
        if tokens < 1.0:
            b[0] = tokens
            return False
        b[0] = tokens - 1.0
        return True
