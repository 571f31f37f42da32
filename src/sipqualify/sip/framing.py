"""Stream framing for SIP over TCP/TLS (RFC 3261 §18.3): Content-Length decides.

`feed()` returns complete messages; leading CRLFs between messages are keepalives
(RFC 5626 §4.4.1: a double-CRLF "ping" is answered with a single-CRLF "pong"); their count
is in `pings` so the transport can answer them, and single CRLFs before a message (pongs
to our pings) are counted in `pongs`. A lone CRLF that ends what has come so far may be a
pong or the first half of a ping: `take_pong()` settles it as a pong, for a connection that
is waiting for one.
"""

from __future__ import annotations

from .abnf import digits_value
from .errors import SipParseError

MAX_MESSAGE = 65535


class StreamFramer:
    def __init__(self, max_message: int = MAX_MESSAGE) -> None:
        self.max_message = max_message
        self._buf = bytearray()
        self.pings = 0  # double-CRLF keepalives seen and not yet collected
        self.pongs = 0  # single CRLFs before a message, not yet collected

    def feed(self, data: bytes) -> list[bytes]:
        self._buf += data
        out: list[bytes] = []
        buf = self._buf
        while True:
            while buf[:4] == b"\r\n\r\n":
                del buf[:4]
                self.pings += 1
            if buf[:2] == b"\r\n" and len(buf) >= 4:
                del buf[:2]
                self.pongs += 1
                continue
            if bytes(buf) in (b"\r\n", b"\r\n\r", b"\r"):
                break
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > self.max_message:
                    raise SipParseError("stream message headers exceed the size limit")
                break
            head = bytes(buf[:end])
            clen = None
            for line in head.split(b"\r\n")[1:]:
                name, colon, value = line.partition(b":")
                if colon and name.strip(b" \t").lower() in (b"content-length", b"l"):
                    v = value.strip(b" \t")
                    clen = digits_value(v, 10)  # more digits than that would exceed max_message anyway
                    if clen is None:
                        raise SipParseError(f"bad Content-Length {v[:20]!r} on a stream")
            if clen is None:
                raise SipParseError("no Content-Length on a stream transport (RFC 3261 §18.3)")
            total = end + 4 + clen
            if total > self.max_message:
                raise SipParseError(f"stream message of {total} bytes exceeds {self.max_message}")
            if len(buf) < total:
                break
            out.append(bytes(buf[:total]))
            del buf[:total]
        return out

    def take_pong(self) -> bool:
        """What is held is exactly one CRLF: consume it as a pong (RFC 5626 §4.4.1)."""
        if self._buf != b"\r\n":
            return False
        self._buf.clear()
        self.pongs += 1
        return True
