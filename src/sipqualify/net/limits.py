"""Open files: every SIP TCP connection is one, and so are the API's and AMI's clients, the
SQLite files, webhook connections and the sockets the daemon listens on. A daemon at its
RLIMIT_NOFILE cannot accept anything, its API included, so:

- at start the soft limit is raised to the hard one (any process may; the common soft default
  of 1,024 is far below `tcp_max_connections`' default of 10,000);
- the TCP connection cap is sized to what is left after a reserve for everything else;
- an accept() that fails for want of files on a listener that is not ours (asyncio logs it with a
  traceback, and in Python 3.11 once per connection waiting in the backlog) is logged in one line
  at most once a minute. asyncio itself stops accepting on that listener for a second.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import resource
from typing import Any

from ..ratelog import RateLog

log = logging.getLogger("sipqualify.net")

# "unlimited" hard limit: Linux refuses a soft limit above fs.nr_open, whose default is this
UNLIMITED = 1 << 20
# Kept free of TCP connections: ~30 for the daemon itself (stdio, event loop, UDP and TCP
# listeners, API and AMI listeners, two SQLite databases with their WAL and shm files, DNS),
# up to 100 for the webhooks' HTTP connection pool (aiohttp's default), and one accept batch
# (net/tcp.py ACCEPT_BATCH) of connections that are accepted before the ones they replace are
# closed. On top of that, 10 % of the limit for API, AMI and event-stream clients.
RESERVE_FIXED = 128
RESERVE_SHARE = 0.10
OUT_OF_FILES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


def raise_open_files_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit; the soft limit in force after."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = UNLIMITED if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
            log.debug("open-files limit raised from %d to %d", soft, want)
            soft = want
        except (ValueError, OSError) as e:
            log.warning("cannot raise the open-files limit from %d to %d: %s", soft, want, e)
    return soft


def connection_cap(configured: int, soft: int) -> int:
    """How many TCP connections fit under the open-files limit `soft`, at most `configured`."""
    if soft == resource.RLIM_INFINITY:
        return configured
    room = soft - RESERVE_FIXED - int(soft * RESERVE_SHARE)
    return max(1, min(configured, max(room, soft // 4)))


def release(per_ip: dict[str, int], ip: str) -> None:
    """One connection fewer from `ip` (per-address counts of TCP and WebSocket connections)."""
    n = per_ip.get(ip, 0) - 1
    if n > 0:
        per_ip[ip] = n
    else:
        per_ip.pop(ip, None)


def tcp_connection_cap(configured: int) -> int:
    """`tcp_max_connections` as the open-files limit allows; says so when it had to be lowered."""
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    cap = connection_cap(configured, soft)
    if cap < configured:
        log.warning("tcp_max_connections lowered from %d to %d: the open-files limit is %d "
                    "(raise it, e.g. LimitNOFILE= in the systemd unit)", configured, cap, soft)
    return cap


def prepare_open_files(loop: asyncio.AbstractEventLoop) -> int:
    """At daemon start: raise the limit and quiet the loop's accept() failures; the soft limit."""
    soft = raise_open_files_limit()
    prev = loop.get_exception_handler()
    if getattr(prev, "sipqualify_accept", False):
        return soft  # already there (a service started again on the same loop)
    say = RateLog(log)

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        if (isinstance(exc, OSError) and exc.errno in OUT_OF_FILES
                and str(context.get("message", "")).startswith("socket.accept()")):
            try:
                ip, port = context["socket"].getsockname()[:2]
                where = f"{ip}:{port}"
            except (KeyError, AttributeError, OSError, TypeError, ValueError):
                where = "a listener"
            say(loop.time(), "%s: accept() failed: %s; retried in a second", where, exc)
            return
        if prev is not None:
            prev(loop, context)
        else:
            loop.default_exception_handler(context)

    handler.sipqualify_accept = True  # type: ignore[attr-defined]
    loop.set_exception_handler(handler)
    return soft
