"""TLS for SIP (RFC 3261 §26.3.1, RFC 5630) with the standard library's ssl module: the
contexts chan_sip's `[general]` tls* options describe, and the words a failed handshake is
reported with.

The connections themselves are net/tcp.py's: TLS is the same stream framing over an
`ssl` transport (`StreamServer(..., ssl_server=..., ssl_client=...)`).

chan_sip's options, and what they mean here (Asterisk main/tcptls.c `ast_tls_read_conf`):
- `tlscertfile` / `tlsprivatekey`: our certificate (chain) and key: the server certificate
  of the `tlsbindaddr` listener and the client certificate of our connections to peers.
- `tlscafile` / `tlscapath`: what peers' certificates are verified against; neither: the
  system store.
- `tlsdontverifyserver=yes`: peers' certificates are not verified (warned once).
- `tlscipher`: an OpenSSL cipher list (TLS 1.2 and below; TLS 1.3 suites are OpenSSL's).
- `tlsclientmethod`: chan_sip's `tlsv1` / `sslv3` / `sslv2` pin a protocol version (obsolete
  ones OpenSSL no longer speaks) and `sslv23` (its default) negotiates; here `sslv23`
  negotiates TLS 1.2 or 1.3, `tlsv1_2` / `tlsv1_3` pin that version, and the obsolete words
  are warned and negotiate.
"""

from __future__ import annotations

import errno
import logging
import os
import ssl
from typing import Any

from ..model import GeneralConfig

log = logging.getLogger("sipqualify.net")

CLIENT_METHODS = ("sslv23", "tlsv1_2", "tlsv1_3")
OBSOLETE_METHODS = ("tlsv1", "sslv3", "sslv2")
HANDSHAKE_TIMEOUT = 5.0  # seconds a TLS handshake may take (connect and accept alike)
DAY = 86400.0


class TlsConfigError(ValueError):
    """A tls* option that cannot be used (a missing or unreadable file, a bad cipher list)."""


def client_context(g: GeneralConfig) -> ssl.SSLContext:
    """The context of the connections we open to `transport=tls` peers."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if g.tlsdontverifyserver:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        log.warning("tlsdontverifyserver=yes: the certificates of TLS peers are not verified")
    elif g.tlscafile or g.tlscapath:
        _load(ctx.load_verify_locations, "tlscafile/tlscapath", cafile=g.tlscafile, capath=g.tlscapath)
    else:
        ctx.load_default_certs(ssl.Purpose.SERVER_AUTH)
    _common(ctx, g)
    return ctx


def server_context(g: GeneralConfig) -> ssl.SSLContext:
    """The context of the `tlsbindaddr` listener: our certificate; phones' are not asked for
    (chan_sip's `tlsverifyclient` default)."""
    if not g.tlscertfile:
        raise TlsConfigError("tlsenable=yes needs tlscertfile (the server certificate)")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    _common(ctx, g)
    return ctx


def _common(ctx: ssl.SSLContext, g: GeneralConfig) -> None:
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    method = (g.tlsclientmethod or "sslv23").lower()
    if method == "tlsv1_2":
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    elif method == "tlsv1_3":
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    if g.tlscipher:
        try:
            ctx.set_ciphers(g.tlscipher)
        except ssl.SSLError:
            raise TlsConfigError(f"tlscipher: no usable cipher in {g.tlscipher!r}") from None
    if g.tlscertfile:
        _load(ctx.load_cert_chain, "tlscertfile/tlsprivatekey", g.tlscertfile, g.tlsprivatekey or None)


def _load(fn: Any, what: str, *args: Any, **kw: Any) -> None:
    try:
        fn(*args, **kw)
    except (OSError, ssl.SSLError) as e:
        paths = ", ".join(str(a) for a in (*args, *kw.values()) if a)
        detail = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise TlsConfigError(f"{what} ({paths}): {detail}") from None


def failure_reason(e: BaseException) -> str:
    """A connection or handshake failure in the words `peer X` shows: "certificate has expired",
    "hostname mismatch, certificate is not valid for 'a.example'", "connection refused", "timeout"."""
    if isinstance(e, ssl.SSLCertVerificationError):
        text = e.verify_message or str(e)
    elif isinstance(e, ssl.SSLError):
        text = e.reason or str(e)
        text = text.replace("_", " ")
    elif isinstance(e, TimeoutError):
        return "timeout"
    elif isinstance(e, OSError) and e.errno:
        text = os.strerror(e.errno) if e.errno in errno.errorcode else str(e)
    elif isinstance(e, ConnectionError) and not str(e):  # asyncio's, without errno: the peer closed
        return "connection reset" if isinstance(e, ConnectionResetError) else "connection closed"
    else:
        text = str(e) or type(e).__name__
    text = text.rstrip(".")
    return text[:1].lower() + text[1:]


def days_left(cert: dict[str, Any] | None, now_wall: float) -> float | None:
    """Days until a peer certificate (ssl's `getpeercert()`) expires; negative once it has."""
    not_after = (cert or {}).get("notAfter")
    if not isinstance(not_after, str):
        return None
    try:
        return (ssl.cert_time_to_seconds(not_after) - now_wall) / DAY
    except ValueError:
        return None


class CertWatch:
    """Peers' certificates by address (from the handshakes of the connections we open): days
    left, and the crossing under `warn_days`, reported once per crossing (a renewed
    certificate re-arms it)."""

    def __init__(self, warn_days: int = 14) -> None:
        self.warn_days = warn_days
        self.not_after: dict[tuple[str, int], float] = {}  # address -> notAfter, UNIX time
        self._warned: set[tuple[str, int]] = set()

    def record(self, addr: tuple[str, int], cert: dict[str, Any] | None) -> None:
        days = days_left(cert, 0.0)
        if days is None:  # not verified (tlsdontverifyserver): getpeercert() is empty
            self.not_after.pop(addr, None)
        else:
            self.not_after[addr] = days * DAY

    def days_left(self, addr: tuple[str, int] | None, now_wall: float) -> float | None:
        t = self.not_after.get(addr) if addr is not None else None
        return None if t is None else (t - now_wall) / DAY

    def crossed(self, addr: tuple[str, int] | None, now_wall: float) -> float | None:
        """Days left when the certificate at `addr` has just fallen under `warn_days`; else None."""
        days = self.days_left(addr, now_wall)
        if days is None or addr is None:
            return None
        if days >= self.warn_days:
            self._warned.discard(addr)
            return None
        if addr in self._warned:
            return None
        self._warned.add(addr)
        return days
