"""Item 11: PeerStatus `Time:` switchable from manager.conf ([general] peerstatus_time, sipqualify's
own option) as well as from the TOML; off, the blocks are Asterisk 12+'s byte for byte."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

from sipqualify.api.ami import AmiServer, load_manager_conf, peerstatus_event
from sipqualify.model import ServiceConfig
from sipqualify.qualify.events import StateChanged

from .helpers import MANAGER_CONF

UP = StateChanged("ok-yes", "UNREACHABLE", "OK", 1, 2000, 0.001, 0.0, prev_lastms=-1)
LAGGED = StateChanged("lagged-500", "OK", "LAGGED", 700, 500, 0.7, 0.0, prev_lastms=1)
DOWN = StateChanged("flap", "OK", "UNREACHABLE", -1, 500, None, 0.0, prev_lastms=1)

# Asterisk 20.20.1 (asterisk-observed.md §8): no Time: on Reachable/Lagged, Time: -1 on Unreachable
ASTERISK = {
    UP: "Event: PeerStatus\r\nPrivilege: system,all\r\nChannelType: SIP\r\nPeer: SIP/ok-yes\r\n"
        "PeerStatus: Reachable\r\n\r\n",
    LAGGED: "Event: PeerStatus\r\nPrivilege: system,all\r\nChannelType: SIP\r\nPeer: SIP/lagged-500\r\n"
            "PeerStatus: Lagged\r\n\r\n",
    DOWN: "Event: PeerStatus\r\nPrivilege: system,all\r\nChannelType: SIP\r\nPeer: SIP/flap\r\n"
          "PeerStatus: Unreachable\r\nTime: -1\r\n\r\n",
}


def _conf(tmp_path: Path, extra: str) -> str:
    path = tmp_path / "manager.conf"
    path.write_text(MANAGER_CONF.format(port=5038).replace("[general]\n", f"[general]\n{extra}", 1))
    return str(path)


def _server(conf: str, svc: ServiceConfig) -> AmiServer:
    server = AmiServer.from_config(cast(Any, None), svc, conf)
    assert server is not None
    return server


def test_manager_conf_peerstatus_time_no_gives_asterisk_blocks(tmp_path: Path) -> None:
    server = _server(_conf(tmp_path, "peerstatus_time = no\n"), ServiceConfig())
    assert server.config.peerstatus_time is False
    for ev, text in ASTERISK.items():
        assert peerstatus_event(ev, server.config.peerstatus_time) == text


def test_default_and_yes_keep_time(tmp_path: Path) -> None:
    for extra in ("", "peerstatus_time = yes\n"):
        server = _server(_conf(tmp_path, extra), ServiceConfig())
        assert "Time: 1\r\n" in peerstatus_event(UP, server.config.peerstatus_time)


def test_toml_beats_manager_conf(tmp_path: Path) -> None:
    server = _server(_conf(tmp_path, "peerstatus_time = no\n"), ServiceConfig(ami_peerstatus_time=True))
    assert server.config.peerstatus_time is True
    server = _server(_conf(tmp_path, "peerstatus_time = yes\n"), ServiceConfig(ami_peerstatus_time=False))
    assert peerstatus_event(UP, server.config.peerstatus_time) == ASTERISK[UP]


def test_bad_value_is_an_error(tmp_path: Path) -> None:
    cfg = load_manager_conf(_conf(tmp_path, "peerstatus_time = maybe\n"))
    assert [(m.severity, m.option) for m in cfg.messages] == [("error", "peerstatus_time")]
