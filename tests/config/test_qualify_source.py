"""qualify_source (issue 13 item 4, multi-homed hosts): [general] default, peer keys, TOML peers and
[[policies]], layered like the other probe shape keys; bad values are errors with file and line."""

from __future__ import annotations

from collections.abc import Callable

from sipqualify.config import check_config, load_config
from sipqualify.config.sipconf import PeerDefaults, new_peer
from sipqualify.model import Config, GeneralConfig
from sipqualify.realtime.rows import RowReader

Write = Callable[[str, str], str]


def test_sip_conf_general_default_peer_override_and_unset(write: Write) -> None:
    cfg = load_config(write("sip.conf", """[general]
qualify_source=127.0.0.5
[inherits]
type=peer
host=10.0.0.1
[own]
type=peer
host=10.0.0.2
qualify_source=127.0.0.6:5070
[v6]
type=peer
host=::1
qualify_source=[0:0::1]:5071
[bare-v6]
type=peer
host=::1
qualify_source=::1
[socket]
type=peer
host=10.0.0.3
qualify_source=
"""))
    assert cfg.messages == []
    src = {n: p.qualify_source for n, p in cfg.peers.items()}
    assert src == {"inherits": ("127.0.0.5", 0), "own": ("127.0.0.6", 5070), "v6": ("::1", 5071),
                   "bare-v6": ("::1", 0), "socket": None}


def test_unset_by_default(write: Write) -> None:
    assert load_config(write("sip.conf", "[p]\ntype=peer\nhost=10.0.0.1\n")).peers["p"].qualify_source is None


def test_bad_sip_conf_values_are_errors_with_file_and_line(write: Write) -> None:
    path = write("sip.conf", "[general]\nqualify_source=0.0.0.0\n[p]\ntype=peer\nhost=h\n"
                             "qualify_source=gw.example.com\nqualify_source=127.0.0.5:70000\n"
                             "qualify_source=[::]:5070\nqualify_source=224.0.0.1\nqualify_source=[127.0.0.1]:5\n")
    msgs = check_config(path)
    assert [(m.severity, m.line, m.option) for m in msgs] == [
        ("error", 2, "qualify_source"), ("error", 6, "qualify_source"), ("error", 7, "qualify_source"),
        ("error", 8, "qualify_source"), ("error", 9, "qualify_source"), ("error", 10, "qualify_source")]
    assert str(msgs[0]) == (f"{path}:2: error [qualify_source]: bad qualify_source: '0.0.0.0' is not one address "
                            "of this host: name the one OPTIONS leave from")
    assert "'gw.example.com' is not an IP address" in msgs[1].message
    assert "port '70000' is not a number 0..65535" in msgs[2].message
    assert "'224.0.0.1' is not one address of this host" in msgs[4].message


TOML = """
[general]
qualify_source = "127.0.0.5"

[[policies]]
name = "carriers"
groups = ["carriers"]
qualify_source = "127.0.0.6:5070"

[peers.t1]
host = "10.0.0.1"
group = "carriers"

[peers.t2]
host = "10.0.0.2"
group = "carriers"
qualify_source = "[::1]:5072"

[peers.plain]
host = "10.0.0.3"
"""


def test_toml_general_policy_and_peer(write: Write) -> None:
    cfg = load_config(write("sipqualify.toml", TOML))
    assert cfg.messages == []
    assert {n: p.qualify_source for n, p in cfg.peers.items()} == {
        "t1": ("127.0.0.6", 5070), "t2": ("::1", 5072), "plain": ("127.0.0.5", 0)}


def test_bad_toml_values_are_errors_with_file_and_line(write: Write) -> None:
    path = write("sipqualify.toml", """[peers.p]
host = "10.0.0.1"
qualify_source = 5070

[peers.q]
host = "10.0.0.2"
qualify_source = "::"
""")
    msgs = check_config(path)
    assert [(m.severity, m.line, m.option) for m in msgs] == [("error", 3, "qualify_source"),
                                                              ("error", 7, "qualify_source")]
    assert msgs[0].message == "qualify_source must be a string, not 5070"
    assert "'::' is not one address of this host" in msgs[1].message


def test_a_realtime_sippeers_column() -> None:
    """A `qualify_source` column of the realtime sippeers table is the sip.conf option (rows.py)."""
    general = GeneralConfig(qualify_ms=0)
    r = RowReader("pgsql:sippeers", new_peer("", general, PeerDefaults(), ""), Config(general=general))
    peers = r.peers([{"id": 1, "name": "gw", "host": "192.0.2.1", "qualify_source": "127.0.0.5:5070"},
                     {"id": 2, "name": "bad", "host": "192.0.2.2", "qualify_source": "0.0.0.0"}])
    gw = peers["gw"][1]
    assert gw is not None and gw.qualify_source == ("127.0.0.5", 5070)
    assert [(m.file, m.line, m.option) for m in r.messages] == [("pgsql:sippeers", 2, "qualify_source")]
