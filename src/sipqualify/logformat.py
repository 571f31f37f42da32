"""The daemon's log line formats: `plain` (the default), `asterisk` and `json` (docs/cli.md).

`asterisk` writes Asterisk's full-log shape, `[YYYY-MM-DD HH:MM:SS.mmm] LEVEL[tid] file: message`,
so scrapers written for chan_sip keep working: a qualify transition comes out byte for byte as
chan_sip's `NOTICE[tid] chan_sip.c: Peer 'x' is now Reachable. (1ms / 2000ms)`. Other lines
keep the logger's name as the "file" and map the level to Asterisk's word: DEBUG -> DEBUG,
INFO -> VERBOSE (Asterisk's informational lines, `VERBOSE[tid] chan_sip.c: Reloading SIP`, have
this same shape in its log file), WARNING -> WARNING, ERROR/CRITICAL -> ERROR. The tid is the
Linux thread id of the emitting thread, as Asterisk prints it.

`json` writes one JSON object per line: `time` (ISO-8601 UTC, milliseconds, `Z`), `level`,
`logger`, `message`, and for a transition `event: "transition"`, `peer`, `status` and the
numbers of the line; `exc` holds a traceback when there is one.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from typing import Any, Final

FORMATS: Final = ("plain", "asterisk", "json")
DEFAULT_FORMAT: Final = "plain"
PLAIN: Final = "[%(asctime)s] %(levelname)s %(name)s: %(message)s"

# chan_sip's transition lines (qualify/state.py notice_line), as the daemon logs them
TRANSITION: Final = re.compile(
    r"Peer '(?P<peer>.*)' is now (?:(?P<word>Reachable|Lagged)\. \((?P<lastms>-?\d+)ms / (?P<maxms>-?\d+)ms\)"
    r"|UNREACHABLE!  Last qualify: (?P<prev>-?\d+))\Z", re.DOTALL)
_STATUS: Final = {"Reachable": "OK", "Lagged": "LAGGED"}
_ASTERISK_LEVEL: Final = {logging.DEBUG: "DEBUG", logging.INFO: "VERBOSE", logging.WARNING: "WARNING"}


def transition_fields(record: logging.LogRecord) -> dict[str, Any] | None:
    """peer/status/lastms/maxms (or prev_lastms) when the record is a chan_sip transition line."""
    if not record.name.startswith("sipqualify"):
        return None
    m = TRANSITION.match(record.getMessage())
    if m is None:
        return None
    if m.group("word"):
        return {"peer": m.group("peer"), "status": _STATUS[m.group("word")], "lastms": int(m.group("lastms")),
                "maxms": int(m.group("maxms"))}
    return {"peer": m.group("peer"), "status": "UNREACHABLE", "prev_lastms": int(m.group("prev"))}


class AsteriskFormatter(logging.Formatter):
    """`[YYYY-MM-DD HH:MM:SS.mmm] LEVEL[tid] file: message`, local time like Asterisk's."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if transition_fields(record) is not None:
            level, where = "NOTICE", "chan_sip.c"
        else:
            level = _ASTERISK_LEVEL.get(record.levelno, "ERROR" if record.levelno > logging.WARNING else "DEBUG")
            where = record.name
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record.created))
        line = f"[{stamp}.{int(record.msecs):03d}] {level}[{threading.get_native_id()}] {where}: {message}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        obj: dict[str, Any] = {"time": f"{stamp}.{int(record.msecs):03d}Z", "level": record.levelname,
                               "logger": record.name, "message": record.getMessage()}
        fields = transition_fields(record)
        if fields is not None:
            obj["event"] = "transition"
            obj.update(fields)
        if record.exc_info:
            obj["exc"] = self.formatException(record.exc_info)
        return json.dumps(obj, ensure_ascii=False)


def formatter(name: str) -> logging.Formatter:
    if name == "asterisk":
        return AsteriskFormatter()
    if name == "json":
        return JsonFormatter()
    if name == "plain":
        return logging.Formatter(PLAIN)
    raise ValueError(f"unknown log format {name!r} (one of {', '.join(FORMATS)})")


def setup(level: str, fmt: str = DEFAULT_FORMAT) -> None:
    """Log to stderr at `level` in format `fmt` (replacing what an earlier call set up)."""
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO), format=PLAIN)
    set_format(fmt)


def set_format(fmt: str) -> None:
    """Switch the root logger's handlers to format `fmt`."""
    f = formatter(fmt)
    for handler in logging.getLogger().handlers:
        handler.setFormatter(f)


def toml_log_format(path: str | None) -> str | None:
    """`[service] log_format` of a native TOML config, if it names a format; None otherwise
    (a sip.conf, no file, a bad value: the config reader reports those)."""
    if not path or not path.endswith(".toml"):
        return None
    import tomllib

    try:
        with open(path, "rb") as f:
            value = tomllib.load(f).get("service", {}).get("log_format")
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, str) and value in FORMATS else None
