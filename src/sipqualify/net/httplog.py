"""The logger of our aiohttp servers (the API, the WebSocket listeners).

aiohttp's server logs every request it cannot parse (a 100 KB header, a bad request line,
TLS on the plain port) with a traceback at ERROR. Those come from the network, not from a
bug: one rate-limited line without a traceback, with a count. Anything else is logged as
aiohttp logs it.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

from aiohttp.http_exceptions import HttpProcessingError

from ..ratelog import RateLog


class ServerLog(logging.Logger):
    """`name`: the logger's; `what`: the server, as log lines name it ("API", "WS")."""

    def __init__(self, name: str, what: str, parent: logging.Logger) -> None:
        super().__init__(name)
        self.parent = parent
        self.what = what
        self.rejected = 0
        self._say = RateLog(parent)

    def exception(self, msg: object, *args: object, exc_info: Any = True, **kw: Any) -> None:
        exc = exc_info if isinstance(exc_info, BaseException) else sys.exc_info()[1]
        if not isinstance(exc, HttpProcessingError):
            super().exception(msg, *args, exc_info=exc_info, **kw)
            return
        self.rejected += 1
        self._say(time.monotonic(), "%s: malformed HTTP request refused (%s; %d so far)", self.what,
                  exc.message or exc, self.rejected)
