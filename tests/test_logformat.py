"""Item 7: the daemon's log formats (logformat.py): `asterisk` gives chan_sip's log lines byte for
byte for the transitions, `json` one object a line, `plain` (the default) stays as it was."""

from __future__ import annotations

import io
import json
import logging
import re
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from sipqualify.cli import build_parser
from sipqualify.config import load_config
from sipqualify.logformat import PLAIN, formatter, toml_log_format
from sipqualify.qualify.events import StateChanged
from sipqualify.service import Service, ServiceOptions

from .helpers import endpoint, free_port, sip_conf, wait_for

UP = StateChanged("ok-yes", "UNREACHABLE", "OK", 1, 2000, 0.001, 0.0, prev_lastms=-1)
LAGGED = StateChanged("lagged-500", "OK", "LAGGED", 700, 500, 0.7, 0.0, prev_lastms=1)
DOWN = StateChanged("flap", "OK", "UNREACHABLE", -1, 500, None, 0.0, prev_lastms=1)

# asterisk-observed.md: `[2026-11-23 19:45:11.883] NOTICE[14465] chan_sip.c: Peer 'ok-yes' is now ...`
ASTERISK_PREFIX = r"\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}\] NOTICE\[(\d+)\] chan_sip\.c: "


@pytest.fixture
def capture() -> Iterator[tuple[io.StringIO, logging.Handler]]:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    logger = logging.getLogger("sipqualify")
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield out, handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)


def _log_transition(ev: StateChanged) -> None:
    """As readmodel.TransitionFeed logs a transition: UNREACHABLE at warning, the others at info."""
    log = logging.getLogger("sipqualify")
    line = ev.log_line()
    log.warning("%s", line) if ev.new == "UNREACHABLE" else log.info("%s", line)


def test_asterisk_transition_lines_byte_pattern(capture: tuple[io.StringIO, logging.Handler]) -> None:
    out, handler = capture
    handler.setFormatter(formatter("asterisk"))
    for ev in (UP, LAGGED, DOWN):
        _log_transition(ev)
    lines = out.getvalue().splitlines()
    expected = ["Peer 'ok-yes' is now Reachable. (1ms / 2000ms)", "Peer 'lagged-500' is now Lagged. (700ms / 500ms)",
                "Peer 'flap' is now UNREACHABLE!  Last qualify: 1"]
    assert len(lines) == 3
    for line, text in zip(lines, expected, strict=True):
        m = re.fullmatch(ASTERISK_PREFIX + re.escape(text), line)
        assert m is not None, line
        assert int(m.group(1)) == threading.get_native_id()


def test_asterisk_other_lines(capture: tuple[io.StringIO, logging.Handler]) -> None:
    out, handler = capture
    handler.setFormatter(formatter("asterisk"))
    logging.getLogger("sipqualify").info("Reloading SIP: 0 added")
    logging.getLogger("sipqualify.ami").warning("AMI listens on %s", "0.0.0.0")
    logging.getLogger("sipqualify").error("boom")
    logging.getLogger("sipqualify").debug("detail")
    levels = [re.match(r"\[[^]]+\] ([A-Z]+)\[\d+\] ([a-z.]+): (.*)$", line).groups()  # type: ignore[union-attr]
              for line in out.getvalue().splitlines()]
    assert levels == [("VERBOSE", "sipqualify", "Reloading SIP: 0 added"),
                      ("WARNING", "sipqualify.ami", "AMI listens on 0.0.0.0"),
                      ("ERROR", "sipqualify", "boom"), ("DEBUG", "sipqualify", "detail")]


def test_json_lines_parse(capture: tuple[io.StringIO, logging.Handler]) -> None:
    out, handler = capture
    handler.setFormatter(formatter("json"))
    _log_transition(UP)
    _log_transition(DOWN)
    logging.getLogger("sipqualify").info("Peer \"quoted\"\nsecond line")
    try:
        raise ValueError("bad")
    except ValueError:
        logging.getLogger("sipqualify").exception("failed")
    objs = [json.loads(line) for line in out.getvalue().splitlines()]
    assert len(objs) == 4
    for o in objs:
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", o["time"])
        assert o["logger"] == "sipqualify"
    assert objs[0] == {"time": objs[0]["time"], "level": "INFO", "logger": "sipqualify",
                       "message": "Peer 'ok-yes' is now Reachable. (1ms / 2000ms)", "event": "transition",
                       "peer": "ok-yes", "status": "OK", "lastms": 1, "maxms": 2000}
    assert (objs[1]["level"], objs[1]["status"], objs[1]["prev_lastms"], objs[1]["peer"]) == (
        "WARNING", "UNREACHABLE", 1, "flap")
    assert objs[2]["message"] == "Peer \"quoted\"\nsecond line" and "event" not in objs[2]
    assert "ValueError: bad" in objs[3]["exc"]


def test_plain_is_the_default_and_unchanged(tmp_path: Path) -> None:
    assert build_parser().parse_args(["run", "-c", "x.conf"]).log_format is None
    assert build_parser().parse_args(["run", "--log-format", "asterisk"]).log_format == "asterisk"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["run", "--log-format", "xml"])
    assert PLAIN == "[%(asctime)s] %(levelname)s %(name)s: %(message)s"
    assert formatter("plain")._fmt == PLAIN  # noqa: SLF001
    conf = tmp_path / "sip.conf"
    sip_conf(conf, 5060, {})
    assert load_config(str(conf)).service.log_format == "plain"
    assert toml_log_format(str(conf)) is None and toml_log_format(None) is None


def test_toml_log_format(tmp_path: Path) -> None:
    conf = tmp_path / "sip.conf"
    sip_conf(conf, 5060, {})
    toml = tmp_path / "sipqualify.toml"
    toml.write_text(f'sip_conf = "{conf}"\n[service]\nlog_format = "json"\n')
    assert load_config(str(toml)).service.log_format == "json"
    assert toml_log_format(str(toml)) == "json"
    toml.write_text('[service]\nlog_format = "xml"\n')
    assert toml_log_format(str(toml)) is None  # the reader reports it


async def test_daemon_transition_in_asterisk_format(tmp_path: Path,
                                                    capture: tuple[io.StringIO, logging.Handler]) -> None:
    out, handler = capture
    handler.setFormatter(formatter("asterisk"))
    t, port = await endpoint(200)
    conf = tmp_path / "sip.conf"
    sip_conf(conf, free_port(), {"ok": {"host": "127.0.0.1", "port": port, "qualify": "yes"}})
    svc = Service(ServiceOptions(str(conf), "127.0.0.1", 0, str(tmp_path / "state")))
    await svc.start()
    try:
        await wait_for(lambda: "is now Reachable" in out.getvalue())
    finally:
        await svc.close()
        t.close()
    line = next(x for x in out.getvalue().splitlines() if "is now" in x)
    assert re.fullmatch(ASTERISK_PREFIX + r"Peer 'ok' is now Reachable\. \(\d+ms / 2000ms\)", line), line
