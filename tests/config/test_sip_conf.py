"""sip.conf reading on real-world-shaped files (chan_sip semantics, asterisk-qualify.md §1.1)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sipqualify.config import check_config, load_config
from sipqualify.model import ConfigError

HERE = Path(__file__).parent


def write(tmp: Path, name: str, text: str) -> str:
    p = tmp / name
    p.write_text(text)
    return str(p)


def test_observed_asterisk_config() -> None:
    """The sip.conf Asterisk 20 ran with in asterisk-observed.md, verbatim."""
    cfg = load_config(str(HERE / "observed_sip.conf"))
    g = cfg.general
    assert (g.udpbindaddr, g.bindport, g.qualifygap_ms, g.qualifypeers, g.qualifyfreq_ms) == (
        "127.0.0.1", 15060, 100, 1, 60000)
    assert list(cfg.peers) == ["ok-yes", "ok-500", "ok-default-freq", "lagged-500", "resp-404", "trying-only",
                               "user-peer", "sipp-uas", "flap", "dead-yes", "dead-500", "dead-3000", "noqualify"]
    p = cfg.peers
    assert (p["ok-yes"].qualify_ms, p["ok-yes"].qualifyfreq_ms, p["ok-yes"].port) == (2000, 5000, 15070)
    assert (p["ok-500"].qualify_ms, p["dead-3000"].qualify_ms) == (500, 3000)
    assert p["ok-default-freq"].qualifyfreq_ms == 60000
    assert p["noqualify"].qualify_ms == 0
    u = p["user-peer"]
    assert (u.defaultuser, u.fromuser, u.fromdomain) == ("alice", "ast-from", "example.test")
    assert p["ok-yes"].nat == ("auto_force_rport",)
    assert p["ok-yes"].context == "default"
    assert cfg.warnings == []  # every option in Asterisk's own file is known


def test_freepbx_layout_includes_templates(tmp_path: Path) -> None:
    write(tmp_path, "sip_general_additional.conf", "qualifyfreq=30\nuseragent=PBX\n")
    write(tmp_path, "sip_additional.conf", """
[phone](!)
type=friend
host=dynamic
qualify=yes
nat=force_rport,comedia
secret=template-secret

[1001](phone)
secret=s3cret
description=Reception

[1002](phone)
qualify=no

[trunk-a]
type=peer
host=203.0.113.9
qualify=3000
qualifyfreq=30 ; seconds
fromuser=\\;odd
""")
    main = write(tmp_path, "sip.conf", """
[general]
#include sip_general_additional.conf
qualify=2500
;-- a block comment
    spanning lines --;
#tryinclude sip_custom.conf

#include sip_additional.conf
""")
    cfg = load_config(main)
    assert cfg.general.qualifyfreq_ms == 30000 and cfg.general.useragent == "PBX"
    assert list(cfg.peers) == ["1001", "1002", "trunk-a"]
    a = cfg.peers["1001"]
    assert a.dynamic and a.host is None and a.qualify_ms == 2500  # qualify=yes -> [general] qualify
    assert a.secret == "s3cret" and a.description == "Reception"
    assert a.nat == ("force_rport", "comedia")
    assert cfg.peers["1002"].qualify_ms == 0
    t = cfg.peers["trunk-a"]
    assert (t.host, t.qualify_ms, t.qualifyfreq_ms, t.fromuser) == ("203.0.113.9", 3000, 30000, ";odd")
    assert t.source.endswith("sip_additional.conf:16")


def test_glob_include_and_arrow_and_append(tmp_path: Path) -> None:
    write(tmp_path, "peers-a.conf", "[a]\ntype=peer\nhost=10.0.0.1\n")
    write(tmp_path, "peers-b.conf", "[b]\ntype => peer\nhost => 10.0.0.2\n[a](+)\nqualify=yes\n")
    main = write(tmp_path, "sip.conf", "[general]\n#include \"peers-*.conf\"\n")
    cfg = load_config(main)
    assert sorted(cfg.peers) == ["a", "b"]
    assert cfg.peers["a"].qualify_ms == 2000
    assert cfg.peers["b"].host == "10.0.0.2"


def test_include_loop_and_missing_include(tmp_path: Path) -> None:
    write(tmp_path, "a.conf", "#include b.conf\n")
    write(tmp_path, "b.conf", "#include a.conf\n")
    main = write(tmp_path, "sip.conf", "#include a.conf\n#include missing.conf\n")
    msgs = check_config(main)
    text = "\n".join(map(str, msgs))
    assert "#include loop" in text
    assert "missing.conf: no such file" in text
    assert all(m.severity == "error" for m in msgs)


def test_bad_lines_all_reported_with_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "sip.conf", """orphan=1
[general]
qualifygap=-5
this line has no equals sign
[peer1
[p2]
type=peer
host=127.0.0.1
port=70000
[p3]
type=peer
host=127.0.0.1
qualify=sometimes
frobnicate=1
frobnicate=2
[p4]
type=peer
""")
    msgs = check_config(path)
    got = {(m.line, m.severity) for m in msgs}
    assert (1, "error") in got  # option outside a section
    assert (3, "error") in got  # negative qualifygap
    assert (4, "error") in got  # no '='
    assert (5, "error") in got  # unterminated [
    assert (9, "error") in got  # port out of range
    assert (13, "warning") in got  # qualify junk -> no, warned
    assert [m.line for m in msgs if "frobnicate" in m.message] == [14]  # unknown option warned once
    assert any(m.line == 16 and "host" in m.message for m in msgs)  # peer without host
    for m in msgs:
        assert str(m).startswith(f"{path}:{m.line}: {m.severity}")
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert "sip.conf:9: error [port]" in str(e.value)


def test_qualify_values_like_chan_sip(tmp_path: Path) -> None:
    path = write(tmp_path, "sip.conf", """[general]
[a]
type=peer
host=h.example
qualify=yes
[b]
type=peer
host=[2001:db8::1]:5070
qualify=no
[c]
type=peer
host=h.example
qualify=1234
qualifyfreq=junk
[d]
type=user
[e]
host=x
""")
    cfg = load_config(path)
    assert cfg.peers["a"].qualify_ms == 2000
    assert (cfg.peers["b"].host, cfg.peers["b"].port, cfg.peers["b"].qualify_ms) == ("2001:db8::1", 5070, 0)
    assert cfg.peers["c"].qualify_ms == 1234 and cfg.peers["c"].qualifyfreq_ms == 60000
    assert "d" not in cfg.peers and "e" not in cfg.peers
    assert any("qualifyfreq" in m.message for m in cfg.warnings)
    assert any("no type=" in m.message for m in cfg.warnings)


def test_duplicate_peer_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, "sip.conf", "[a]\ntype=peer\nhost=1.2.3.4\n[a]\ntype=peer\nhost=1.2.3.5\n")
    msgs = check_config(path)
    assert any("defined twice" in m.message and m.line == 4 for m in msgs)


def test_missing_file() -> None:
    with pytest.raises(ConfigError) as e:
        load_config("/nonexistent/sip.conf")
    assert "no such file" in str(e.value)


def test_toml_equivalent_and_sip_conf_reference(tmp_path: Path) -> None:
    write(tmp_path, "sip.conf", "[general]\nqualifyfreq=20\n[old]\ntype=peer\nhost=10.0.0.1\nqualify=yes\n"
                                "[keep]\ntype=peer\nhost=10.0.0.2\n")
    path = write(tmp_path, "sipqualify.toml", """
sip_conf = "sip.conf"
[general]
qualifygap = 50
bind = ["127.0.0.1:5070", "[::1]:5070"]
[api]
listen = "127.0.0.1:7555"
token = "0123456789abcdef0123"
[store]
state_dir = "state"
sample_retention = "2d"
[peers.old]
host = "10.0.0.9"
port = 5080
qualify = 500
retransmit = "rfc3261"
[peers.trunk]
host = "gw.example.net"
qualify = true
qualifyfreq = 30
nat = ["force_rport"]
""")
    cfg = load_config(path)
    assert cfg.general.qualifyfreq_ms == 20000 and cfg.general.qualifygap_ms == 50
    assert (cfg.general.udpbindaddr, cfg.general.bindport, cfg.general.extra_bindaddrs) == (
        "127.0.0.1", 5070, [("::1", 5070)])
    assert (cfg.service.api_host, cfg.service.api_port) == ("127.0.0.1", 7555)
    assert cfg.service.state_dir == str(tmp_path / "state")
    assert cfg.service.sample_retention_s == 2 * 86400
    assert list(cfg.peers) == ["old", "keep", "trunk"]
    old = cfg.peers["old"]
    assert (old.host, old.port, old.qualify_ms, old.retransmit, old.qualifyfreq_ms) == (
        "10.0.0.9", 5080, 500, "rfc3261", 20000)
    assert cfg.peers["trunk"].qualify_ms == 2000 and cfg.peers["trunk"].nat == ("force_rport",)


def test_toml_errors_have_lines(tmp_path: Path) -> None:
    bad_syntax = write(tmp_path, "a.toml", "[peers.x]\nhost = \n")
    msgs = check_config(bad_syntax)
    assert msgs and msgs[0].line == 2 and "TOML syntax" in msgs[0].message
    bad_types = write(tmp_path, "b.toml", "[general]\nqualify = 1\n\n[peers.x]\nhost = \"h\"\nport = \"80\"\n"
                                          "wat = 1\n")
    msgs = check_config(bad_types)
    assert any(m.severity == "error" and m.line == 6 and m.option == "port" for m in msgs)
    assert any(m.severity == "warning" and m.line == 7 for m in msgs)
