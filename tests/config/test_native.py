"""Native TOML: the same model as sip.conf, ServiceConfig, overrides of a referenced sip.conf."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

from sipqualify.config import check_config, load_config
from sipqualify.model import Config

HERE = Path(__file__).parent
Write = Callable[[str, str], str]

OBSERVED_AS_TOML = """
[general]
context = "default"
bind = "127.0.0.1:15060"
qualifygap = 100
qualifypeers = 1

[peers.ok-yes]
host = "127.0.0.1"
port = 15070
qualify = true
qualifyfreq = 5

[peers.ok-500]
host = "127.0.0.1"
port = 15072
qualify = 500
qualifyfreq = 5

[peers.ok-default-freq]
host = "127.0.0.1"
port = 15073
qualify = "yes"

[peers.lagged-500]
host = "127.0.0.1"
port = 15071
qualify = 500
qualifyfreq = 5

[peers.resp-404]
host = "127.0.0.1"
port = 15076
qualify = true
qualifyfreq = 5

[peers.trying-only]
host = "127.0.0.1"
port = 15077
qualify = true
qualifyfreq = 5

[peers.user-peer]
host = "127.0.0.1"
port = 15075
defaultuser = "alice"
fromuser = "ast-from"
fromdomain = "example.test"
qualify = true
qualifyfreq = 5

[peers.sipp-uas]
host = "127.0.0.1"
port = 15078
qualify = true
qualifyfreq = 5

[peers.flap]
host = "127.0.0.1"
port = 15090
qualify = 500
qualifyfreq = 5

[peers.dead-yes]
host = "127.0.0.1"
port = 15080
qualify = true
qualifyfreq = 5

[peers.dead-500]
host = "127.0.0.1"
port = 15081
qualify = 500
qualifyfreq = 5

[peers.dead-3000]
host = "127.0.0.1"
port = 15082
qualify = 3000
qualifyfreq = 5

[peers.noqualify]
host = "127.0.0.1"
port = 15074
qualify = false
"""


def _model(cfg: Config) -> tuple[object, ...]:
    peers = [(p.name, p.host, p.port, p.transport, p.dynamic, p.qualify_ms, p.qualifyfreq_ms, p.defaultuser,
              p.fromuser, p.fromdomain, p.nat, p.context, p.retransmit) for p in cfg.peers.values()]
    g = cfg.general
    return (g.udpbindaddr, g.bindport, g.qualify_ms, g.qualifyfreq_ms, g.qualifygap_ms, g.qualifypeers,
            g.context), peers


def test_toml_equivalent_of_observed_sip_conf(write: Write) -> None:
    from_sip = load_config(str(HERE / "observed_sip.conf"))
    from_toml = load_config(write("sipqualify.toml", OBSERVED_AS_TOML))
    assert _model(from_toml) == _model(from_sip)
    assert from_toml.messages == []
    assert from_toml.peers["ok-yes"].source.endswith("sipqualify.toml:8")


def test_toml_service_sections(write: Write, tmp_path: Path) -> None:
    cfg = load_config(write("s.toml", """
[general]
bind = ["127.0.0.1:5070", "[::1]:5070", "0.0.0.0"]
useragent = "Monitor"
externip = "198.51.100.7"
[api]
listen = "127.0.0.1:7555"
token = "0123456789abcdef0123"
metrics_peer_limit = 50
[store]
state_dir = "state"
sample_retention = "2d"
sample_every = 10
transition_retention = "1h30m"
[service]
respond_options = false
[ami]
manager_conf = "manager.conf"
enabled = true
listen = "127.0.0.1:5039"
[ami.users.admin]
secret = "amp111"
"""))
    g, s = cfg.general, cfg.service
    assert (g.udpbindaddr, g.bindport, g.extra_bindaddrs) == ("127.0.0.1", 5070, [("::1", 5070), ("0.0.0.0", 5060)])
    assert (g.useragent, g.externip) == ("Monitor", "198.51.100.7")
    assert (s.api_host, s.api_port, s.api_token, s.metrics_peer_limit) == (
        "127.0.0.1", 7555, "0123456789abcdef0123", 50)
    assert s.state_dir == str(tmp_path / "state")
    assert (s.sample_retention_s, s.transition_retention_s, s.sample_every) == (2 * 86400, 5400, 10)
    assert (s.respond_options, s.match_source_address) == (False, True)
    assert (s.manager_conf, s.ami_enabled, s.ami_listen) == (str(tmp_path / "manager.conf"), True, ("127.0.0.1", 5039))
    assert s.ami_users == {"admin": {"secret": "amp111"}}
    assert cfg.messages == []


def test_toml_over_sip_conf_merges(write: Write) -> None:
    write("asterisk/sip.conf", """[general]
qualifyfreq=20
nat=force_rport
[old]
type=peer
host=10.0.0.1
qualify=yes
fromuser=pbx
[keep]
type=peer
host=10.0.0.2
[late](!)
""")
    cfg = load_config(write("sipqualify.toml", """
sip_conf = "asterisk/sip.conf"
[general]
qualify = 1500          # peers with qualify=yes in sip.conf now get 1500
qualifygap = 50
[peers.OLD]                # peer names are case-insensitive
host = "10.0.0.9"
port = 5080
retransmit = "rfc3261"
[peers.trunk]
host = "gw.example.net"
qualify = true
nat = ["comedia"]
"""))
    assert (cfg.general.qualifyfreq_ms, cfg.general.qualifygap_ms, cfg.general.qualify_ms) == (20_000, 50, 1500)
    assert list(cfg.peers) == ["old", "keep", "trunk"]
    old = cfg.peers["old"]
    assert (old.host, old.port, old.qualify_ms, old.retransmit, old.qualifyfreq_ms, old.fromuser, old.nat) == (
        "10.0.0.9", 5080, 1500, "rfc3261", 20_000, "pbx", ("force_rport",))
    assert old.source.endswith("sip.conf:4")
    keep = cfg.peers["keep"]
    assert (keep.qualify_ms, keep.nat) == (1500, ("force_rport",))  # [general] qualify applies to peers, as in sip.conf
    trunk = cfg.peers["trunk"]
    assert (trunk.qualify_ms, trunk.qualifyfreq_ms, trunk.nat) == (1500, 20_000, ("comedia",))
    assert cfg.source.endswith("sipqualify.toml") and cfg.messages == []


def test_toml_carries_sip_conf_messages(write: Write) -> None:
    write("sip.conf", "[p]\ntype=peer\nhost=h\nport=0\nfrob=1\n")
    msgs = check_config(write("a.toml", 'sip_conf = "sip.conf"\n'))
    assert [(m.severity, m.file.rsplit("/", 1)[1], m.line) for m in msgs] == [
        ("error", "sip.conf", 4), ("warning", "sip.conf", 5)]


def test_toml_syntax_error_has_line(write: Write) -> None:
    msgs = check_config(write("a.toml", "[general]\nqualify = 1\n\n[peers.x]\nhost = \n"))
    assert len(msgs) == 1 and msgs[0].line == 5 and msgs[0].message.startswith("TOML syntax: ")
    assert "(at line" not in msgs[0].message


def test_toml_type_errors_and_unknown_keys_have_lines(write: Write) -> None:
    path = write("b.toml", """sip_conf = 3
colour = "blue"
[general]
qualifygap = -1
bind = "pbx.example:5060"
wat = 1
[api]
listen = "127.0.0.1"
token = "short"
[store]
sample_retention = "a week"
sample_every = 0
[peers.x]
host = "h"
port = "80"
wat = 1
qualify = "sometimes"
nat = "route"
[peers."dotted.name"]
port = 5060
[peers.y]
host = "dynamic"
transport = "sctp"
retransmit = "fast"
""")
    got = [(m.severity, m.line, m.option) for m in check_config(path)]
    assert got == [
        ("warning", 2, "colour"), ("error", 4, "qualifygap"), ("error", 5, "bind"), ("warning", 6, "wat"),
        ("error", 1, "sip_conf"), ("error", 8, "listen"), ("error", 9, "token"), ("error", 11, "sample_retention"),
        ("error", 12, "sample_every"),
        ("error", 15, "port"), ("warning", 16, "wat"), ("error", 17, "qualify"), ("error", 18, "nat"),
        ("error", 19, "dotted.name"), ("error", 23, "transport"), ("error", 24, "retransmit"),
    ]


def test_toml_missing_sip_conf_and_not_utf8(write: Write, tmp_path: Path) -> None:
    msgs = check_config(write("a.toml", 'sip_conf = "nope.conf"\n'))
    assert [(m.severity, m.line) for m in msgs] == [("error", 1)] and "no such file" in msgs[0].message
    bad = tmp_path / "b.toml"
    bad.write_bytes(b'[general]\nuseragent = "\xff"\n')
    assert "not UTF-8" in check_config(str(bad))[0].message


def test_examples_load_clean(tmp_path: Path) -> None:
    examples = HERE.parent.parent / "examples"
    for name in ("sip.conf", "sipqualify.toml"):
        shutil.copy(examples / name, tmp_path / name)
    sip = load_config(str(tmp_path / "sip.conf"))
    native = load_config(str(tmp_path / "sipqualify.toml"))
    assert sip.messages == [] and native.messages == []
    assert all(p.dynamic or p.host == "127.0.0.1" for c in (sip, native) for p in c.peers.values())
    assert len(native.peers) > len(sip.peers)  # the TOML adds to the sip.conf it references


def test_registrar_settings_in_toml_and_sip_conf(write: Write) -> None:
    """The registrar's [general] keys in both formats; digest algorithms challenged with MD5
    only unless supported_algorithms_uas says otherwise (PJSIP's name for it)."""
    toml = write("r.toml", """[general]
realm = "pbx.example"
minexpiry = 30
maxexpiry = 7200
defaultexpiry = 300
authfail_limit = 5
authfail_window = 30
authfail_ban = 0
supported_algorithms_uas = ["sha-256", "MD5"]
[peers.p]
host = "dynamic"
secret = "s"
""")
    g = load_config(toml).general
    assert (g.realm, g.minexpiry, g.maxexpiry, g.defaultexpiry) == ("pbx.example", 30, 7200, 300)
    assert (g.authfail_limit, g.authfail_window, g.authfail_ban) == (5, 30, 0)
    assert g.auth_algorithms == ("SHA-256", "MD5")
    conf = write("sip.conf", "[general]\nsupported_algorithms_uas=md5, sha256, rot13\n[p]\ntype=friend\nhost=dynamic\n")
    cfg = load_config(conf)
    assert cfg.general.auth_algorithms == ("MD5", "SHA-256")
    assert [(m.severity, m.line, m.option) for m in check_config(conf)] == [
        ("warning", 2, "supported_algorithms_uas")]
    assert load_config(write("d.conf", "[general]\n[p]\ntype=peer\nhost=dynamic\n")).general.auth_algorithms == ("MD5",)
    bad = write("bad.toml", '[general]\nsupported_algorithms_uas = "sha-512"\n')
    assert [(m.severity, m.line, m.option) for m in check_config(bad)] == [("error", 2, "supported_algorithms_uas")]


def test_bad_service_values_are_errors_with_lines(write: Write) -> None:
    path = write("s.toml", """[service]
options_unknown_user_404 = "maybe"
tcp_idle_timeout = "soon"
tcp_max_connections = 0
tcp_max_connections_per_ip = "many"
[peers.p]
host = "127.0.0.1"
""")
    got = [(m.severity, m.line, m.option) for m in check_config(path)]
    assert got == [("error", 2, "options_unknown_user_404"), ("error", 3, "tcp_idle_timeout"),
                   ("error", 4, "tcp_max_connections"), ("error", 5, "tcp_max_connections_per_ip")]
    ok = write("ok.toml", """[service]
options_unknown_user_404 = true
tcp_idle_timeout = "10m"
tcp_max_connections = 500
tcp_max_connections_per_ip = 5
""")
    svc = load_config(ok).service
    assert (svc.options_unknown_user_404, svc.tcp_idle_timeout_s, svc.tcp_max_connections,
            svc.tcp_max_connections_per_ip) == (True, 600, 500, 5)


def test_toml_qualify_targets(write: Write) -> None:
    cfg = load_config(write("t.toml", '[general]\nqualify_targets = "all"\n[peers.a]\nhost = "a.test"\n'
                                      '[peers.b]\nhost = "b.test"\nqualify_targets = "first"\n'))
    assert [p.qualify_targets for p in cfg.peers.values()] == ["all", "first"]
    msgs = check_config(write("bad.toml", '[peers.a]\nhost = "a.test"\nqualify_targets = true\n'))
    assert [(m.severity, m.line) for m in msgs] == [("error", 3)]
    assert "qualify_targets must be one of first, all" in msgs[0].message


def test_toml_transport_named_only_when_written(write: Write) -> None:
    cfg = load_config(write("n.toml", '[peers.a]\nhost = "a.test"\n[peers.b]\nhost = "b.test"\ntransport = "tcp"\n'))
    assert [p.transport_named for p in cfg.peers.values()] == [False, True]
    cfg = load_config(write("g.toml", '[general]\ntransport = "udp"\n[peers.a]\nhost = "a.test"\n'))
    assert cfg.peers["a"].transport_named


def test_store_url_and_node_id(write: Write) -> None:
    svc = load_config(write("pg.toml", '[store]\nurl = "postgresql://sq:pw@127.0.0.1:5432/sipqualify"\n'
                                       '[service]\nnode_id = "edge-1"\n')).service
    assert (svc.store_url, svc.node_id) == ("postgresql://sq:pw@127.0.0.1:5432/sipqualify", "edge-1")
    assert load_config(write("none.toml", "[store]\n")).service.store_url is None
    bad = write("bad.toml", '[store]\nurl = "mysql://sq:hunter2@db/x"\n[service]\nnode_id = ""\n'
                            '[peers.p]\nhost = "127.0.0.1"\n')
    msgs = check_config(bad)
    assert [(m.severity, m.line, m.option) for m in msgs] == [("error", 2, "url"), ("error", 4, "node_id")]
    assert all("hunter2" not in str(m) for m in msgs)  # a password is never echoed
    broken = write("broken.toml", '[store]\nurl = "postgresql://h:notaport/db"\n')
    assert [(m.severity, m.line, m.option) for m in check_config(broken)] == [("error", 2, "url")]
    unparsable = write("u.toml", '[store]\nurl = "postgresql://u:hunter2@[::1/db"\n')
    msgs = check_config(unparsable)
    assert [(m.severity, m.line) for m in msgs] == [("error", 2)] and "hunter2" not in str(msgs[0])
