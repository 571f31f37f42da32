"""sip.conf -> model with chan_sip's rules (asterisk-qualify.md §1.1), on real-world-shaped files."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from sipqualify.config import check_config, load_config
from sipqualify.model import ConfigError

HERE = Path(__file__).parent
Write = Callable[[str, str], str]


def test_observed_asterisk_sip_conf() -> None:
    """The sip.conf Asterisk 20 ran with in asterisk-observed.md ("Configuration used"), verbatim."""
    cfg = load_config(str(HERE / "observed_sip.conf"))
    g = cfg.general
    assert (g.udpbindaddr, g.bindport, g.qualifygap_ms, g.qualifypeers, g.qualifyfreq_ms, g.qualify_ms) == (
        "127.0.0.1", 15060, 100, 1, 60_000, 0)
    assert g.context == "default"
    expected = {  # name: (qualify_ms, qualifyfreq_ms, port)
        "ok-yes": (2000, 5000, 15070), "ok-500": (500, 5000, 15072), "ok-default-freq": (2000, 60_000, 15073),
        "lagged-500": (500, 5000, 15071), "resp-404": (2000, 5000, 15076), "trying-only": (2000, 5000, 15077),
        "user-peer": (2000, 5000, 15075), "sipp-uas": (2000, 5000, 15078), "flap": (500, 5000, 15090),
        "dead-yes": (2000, 5000, 15080), "dead-500": (500, 5000, 15081), "dead-3000": (3000, 5000, 15082),
        "noqualify": (0, 60_000, 15074),
    }
    assert list(cfg.peers) == list(expected)
    for name, (q, f, port) in expected.items():
        p = cfg.peers[name]
        assert (p.qualify_ms, p.qualifyfreq_ms, p.port) == (q, f, port), name
        assert (p.host, p.dynamic, p.transport, p.nat, p.context) == (
            "127.0.0.1", False, "udp", ("auto_force_rport",), "default"), name
        assert p.source == f"{HERE / 'observed_sip.conf'}:{_header_line(name)}"
        if name != "user-peer":
            assert (p.defaultuser, p.fromuser, p.fromdomain) == (None, None, None), name
    u = cfg.peers["user-peer"]
    assert (u.defaultuser, u.fromuser, u.fromdomain) == ("alice", "ast-from", "example.test")
    assert cfg.messages == []  # every option in Asterisk's own file is known


def _header_line(name: str) -> int:
    lines = (HERE / "observed_sip.conf").read_text().splitlines()
    return next(i for i, ln in enumerate(lines, 1) if ln.startswith(f"[{name}]"))


def test_freepbx_layout(write: Write) -> None:
    write("sip_general_additional.conf", "qualifyfreq=30\nuseragent=FPBX-16\nnat=yes\n")
    write("sip_additional.conf", """
[phone](!)
type=friend
host=dynamic
qualify=yes
nat=force_rport,comedia
secret=template-secret
context=from-internal
dtmfmode=rfc2833
disallow=all
allow=ulaw&alaw
callerid=device <1000>
mailbox=1000@device
call-limit=50
permit=0.0.0.0/0.0.0.0
deny=0.0.0.0/0.0.0.0

[1001](phone)
secret=s3cret
description=Reception

[1002](phone)
qualify=no
username=bob

[trunk-a]
type=peer
host=sip.carrier.example
qualify=3000
qualifyfreq=30 ; seconds
fromuser=\\;odd
insecure=port,invite
""")
    main = write("sip.conf", """; FreePBX-style sip.conf
[general]
#include sip_general_additional.conf
qualify=2500
;-- a block comment
    spanning lines --;
#tryinclude sip_custom.conf
#include sip_nat.conf
#include sip_additional.conf
""")
    write("sip_nat.conf", "; empty nat file\n")
    cfg = load_config(main)
    g = cfg.general
    assert (g.qualifyfreq_ms, g.useragent, g.qualify_ms) == (30_000, "FPBX-16", 2500)
    assert list(cfg.peers) == ["1001", "1002", "trunk-a"]
    a = cfg.peers["1001"]
    assert a.dynamic and a.host is None and a.port is None
    assert a.qualify_ms == 2500  # qualify=yes takes [general] qualify when it is non-zero (S20:32211-32219)
    assert (a.secret, a.description, a.context, a.qualifyfreq_ms) == ("s3cret", "Reception", "from-internal", 30_000)
    assert a.nat == ("force_rport", "comedia")
    b = cfg.peers["1002"]
    assert (b.qualify_ms, b.secret, b.defaultuser) == (0, "template-secret", "bob")
    t = cfg.peers["trunk-a"]
    assert (t.host, t.qualify_ms, t.qualifyfreq_ms, t.fromuser) == ("sip.carrier.example", 3000, 30_000, ";odd")
    assert t.nat == ("force_rport", "comedia")  # [general] nat=yes is the default for peers
    assert t.source.endswith("sip_additional.conf:26")
    assert cfg.messages == []


def test_glob_include_arrow_and_append(write: Write) -> None:
    write("peers-a.conf", "[a]\ntype=peer\nhost=10.0.0.1\n")
    write("peers-b.conf", "[b]\ntype => peer\nhost => 10.0.0.2\n[a](+)\nqualify=yes\n")
    main = write("sip.conf", "[general]\n#include \"peers-*.conf\"\n")
    cfg = load_config(main)
    assert list(cfg.peers) == ["a", "b"]
    assert cfg.peers["a"].qualify_ms == 2000 and cfg.peers["b"].host == "10.0.0.2"


def test_include_loop_and_missing_include(write: Write) -> None:
    write("a.conf", "#include b.conf\n")
    write("b.conf", "#include a.conf\n")
    main = write("sip.conf", "#include a.conf\n#include missing.conf\n#tryinclude also-missing.conf\n")
    msgs = check_config(main)
    assert [(m.severity, m.file.rsplit("/", 1)[1], m.line) for m in msgs] == [
        ("error", "b.conf", 1), ("error", "sip.conf", 2)]
    assert "#include loop" in msgs[0].message and "missing.conf: no such file" in msgs[1].message


def test_bad_lines_all_reported_in_one_pass(write: Write) -> None:
    path = write("sip.conf", """orphan=1
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
host=
[p5](nosuchtemplate)
type=peer
""")
    msgs = check_config(path)
    got = {(m.line, m.severity, m.option) for m in msgs}
    assert (1, "error", "orphan") in got  # option outside a section
    assert (3, "error", "qualifygap") in got  # negative qualifygap (ASTERISK-25792)
    assert (4, "error", None) in got  # no '='
    assert (5, "error", None) in got  # unterminated [
    assert (9, "error", "port") in got  # port out of range
    assert (13, "warning", "qualify") in got  # junk qualify -> no, warned (chan_sip)
    assert [m.line for m in msgs if m.option == "frobnicate"] == [14]  # unknown option warned once per file
    assert (18, "error", "host") in got  # empty host
    assert (19, "error", None) in got  # unknown template
    for m in msgs:
        assert str(m).startswith(f"{path}:{m.line}: {m.severity}")
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert f"{path}:9: error [port]: port '70000' is not a number 1..65535" in str(e.value)
    assert len(e.value.messages) == len(msgs)


def test_qualify_and_qualifyfreq_like_chan_sip(write: Write) -> None:
    path = write("sip.conf", """[general]
qualifyfreq=20
[a]
type=peer
host=h.example
qualify=yes
[b]
type=peer
host=h.example
qualify=true
[c]
type=peer
host=h.example
qualify=1234
qualifyfreq=junk
[d]
type=peer
host=h.example
qualify=500ms
qualifyfreq=0
[e]
type=peer
host=h.example
qualify=-1
""")
    cfg = load_config(path)
    p = cfg.peers
    assert p["a"].qualify_ms == 2000 and p["a"].qualifyfreq_ms == 20_000
    assert p["b"].qualify_ms == 0  # chan_sip knows only yes/no/number: 'true' is junk
    assert (p["c"].qualify_ms, p["c"].qualifyfreq_ms) == (1234, 20_000)  # junk qualifyfreq -> general value
    assert (p["d"].qualify_ms, p["d"].qualifyfreq_ms) == (500, 20_000)  # sscanf("%d") reads 500 from "500ms"
    assert p["e"].qualify_ms == 0
    lines = sorted((m.line, m.option or "") for m in cfg.warnings)
    assert lines == [(10, "qualify"), (15, "qualifyfreq"), (19, "qualify"), (20, "qualifyfreq"), (24, "qualify")]


def test_general_qualify_values(write: Write) -> None:
    for text, ms, warned in (("yes", 2000, False), ("no", 0, False), ("3000", 3000, False), ("maybe", 0, True)):
        path = write("sip.conf", f"[general]\nqualify={text}\n[p]\ntype=peer\nhost=h\n[q]\ntype=peer\nhost=h\n"
                                 "qualify=yes\n")
        cfg = load_config(path)
        assert cfg.general.qualify_ms == ms and cfg.peers["p"].qualify_ms == ms
        assert cfg.peers["q"].qualify_ms == (ms or 2000)
        assert bool(cfg.warnings) == warned


def test_types_like_chan_sip(write: Write) -> None:
    path = write("sip.conf", """[general]
[u]
type=user
[e]
host=x
[w]
type=wizard
host=x
[f]
type=friend
host=x
[t](!)
type=user
[t2](t)
type=peer
host=y
[authentication]
realm=x
""")
    cfg = load_config(path)
    assert list(cfg.peers) == ["f", "t2"]  # a later type=peer adds to an inherited type=user
    assert [(m.line, m.option) for m in cfg.warnings] == [(4, "type"), (7, "type")]


def test_duplicate_peer_names_both_places(write: Write) -> None:
    path = write("sip.conf", "[a]\ntype=peer\nhost=1.2.3.4\n[A]\ntype=peer\nhost=1.2.3.5\n")
    msgs = check_config(path)
    assert len(msgs) == 1 and msgs[0].severity == "error" and msgs[0].line == 4
    assert f"{path}:1" in msgs[0].message


def test_second_general_is_ignored_like_chan_sip(write: Write) -> None:
    path = write("sip.conf", "[general]\nqualify=yes\n[general]\nqualifyfreq=5\n[general](+)\nqualifygap=7\n")
    cfg = load_config(path)
    assert (cfg.general.qualify_ms, cfg.general.qualifyfreq_ms, cfg.general.qualifygap_ms) == (2000, 60_000, 7)
    assert [m.line for m in cfg.warnings] == [3]


def test_hosts_ports_and_ipv6(write: Write) -> None:
    path = write("sip.conf", """[general]
udpbindaddr=[::]:5070
bindport=5080
[v6]
type=peer
host=[2001:db8::1]:5070
[v6bare]
type=peer
host=2001:db8::2
[portwins]
type=peer
port=5090
host=10.0.0.1:5070
[dyn]
type=friend
host=dynamic
port=5062
qualify=yes
[nohost]
type=peer
""")
    cfg = load_config(path)
    assert (cfg.general.udpbindaddr, cfg.general.bindport) == ("::", 5070)  # a port in udpbindaddr beats bindport
    p = cfg.peers
    assert (p["v6"].host, p["v6"].port) == ("2001:db8::1", 5070)
    assert (p["v6bare"].host, p["v6bare"].port) == ("2001:db8::2", None)
    assert (p["portwins"].host, p["portwins"].port) == ("10.0.0.1", 5090)
    assert (p["dyn"].dynamic, p["dyn"].host, p["dyn"].port, p["dyn"].qualify_ms) == (True, None, 5062, 2000)
    assert p["nohost"].host is None and not p["nohost"].dynamic  # kept, like chan_sip: no address, never poked
    assert [(m.line, m.option) for m in cfg.warnings] == [(19, "host")]  # the section header


@pytest.mark.parametrize("host", ["[not-v6]", "a b", "[2001:db8::1]x", "10.0.0.1:0", "1:2:zz"])
def test_bad_hosts(write: Write, host: str) -> None:
    path = write("sip.conf", f"[p]\ntype=peer\nhost={host}\n")
    assert [(m.severity, m.line, m.option) for m in check_config(path)] == [("error", 3, "host")]


def test_transport_and_nat(write: Write) -> None:
    path = write("sip.conf", """[general]
tcpenable=yes
nat=no
transport=tcp,udp
[a]
type=peer
host=h
[b]
type=peer
host=h
transport=tls,udp
nat=force_rport,auto_comedia
[c]
type=peer
host=h
transport=wss
nat=route
[d]
type=peer
host=h
transport=udp
nat=yes,bogus
""")
    cfg = load_config(path)
    p = cfg.peers
    assert (p["a"].transport, p["a"].nat) == ("tcp", ("no",))  # general defaults
    assert (p["b"].transport, p["b"].nat) == ("udp", ("force_rport", "auto_comedia"))  # tlsenable=no: tls skipped
    assert (p["c"].transport, p["c"].nat) == ("wss", ("force_rport",))  # a WebSocket client needs no listener
    assert (p["d"].transport, p["d"].nat) == ("udp", ("force_rport", "comedia"))
    assert sorted((m.line, m.option or "") for m in cfg.warnings) == [
        (11, "transport"), (17, "nat"), (22, "nat")]


def test_unknown_options_warned_once_per_file_and_name(write: Write) -> None:
    write("more.conf", "[b]\ntype=peer\nhost=h\nfoo=1\n")
    path = write("sip.conf", "[general]\nfoo=1\nbar=2\n[a]\ntype=peer\nhost=h\nfoo=2\nBAR=3\nallow=ulaw\n"
                             "udpbindaddr=1.2.3.4\n#include more.conf\n")
    cfg = load_config(path)
    assert [(m.file.rsplit("/", 1)[1], m.line, m.option) for m in cfg.warnings] == [
        ("sip.conf", 2, "foo"), ("sip.conf", 3, "bar"), ("more.conf", 4, "foo")]
    assert cfg.warnings[0].message == "unknown option 'foo' ignored"


def test_general_junk_values_warn_with_defaults(write: Write) -> None:
    path = write("sip.conf", "[general]\nqualifyfreq=soon\nqualifygap=x\nqualifypeers=-1\nbindport=99999\n"
                             "udpbindaddr=pbx.example\nexternip=198.51.100.7:5080\nfromdomain=example.test\n")
    msgs = check_config(path)
    assert [(m.severity, m.line) for m in msgs] == [
        ("warning", 2), ("warning", 3), ("warning", 4), ("error", 5), ("error", 6), ("warning", 7)]
    path = write("ok.conf", "[general]\nqualifyfreq=soon\nexternaddr=198.51.100.7\nfromdomain=example.test\n"
                            "[p]\ntype=peer\nhost=h\n")
    cfg = load_config(path)
    assert (cfg.general.qualifyfreq_ms, cfg.general.externip, cfg.general.fromdomain) == (
        60_000, "198.51.100.7", "example.test")
    assert cfg.peers["p"].fromdomain is None  # chan_sip keeps [general] fromdomain out of the peer


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as e:
        load_config("/nonexistent/sip.conf")
    assert str(e.value) == "/nonexistent/sip.conf: error: no such file"
    assert [m.message for m in check_config(str(tmp_path))] == ["not a regular file"]


def test_qualify_targets_general_default_peer_override_and_bad_value(write: Write) -> None:
    """sipqualify's extension key: [general] sets the peers' default, a peer overrides it, and a
    word that is neither `first` nor `all` is an error at its file:line."""
    path = write("sip.conf", "[general]\nqualify_targets=all\n[a]\ntype=peer\nhost=a.test\n"
                             "[b]\ntype=peer\nhost=b.test\nqualify_targets=First\n"
                             "[c]\ntype=peer\nhost=c.test\nqualify_targets=every\n")
    msgs = check_config(path)
    assert [(m.severity, m.line, m.message) for m in msgs] == [
        ("error", 13, "qualify_targets must be one of first, all, not 'every'")]
    cfg = load_config(write("ok.conf", "[a]\ntype=peer\nhost=a.test\n[b]\ntype=peer\nhost=b.test\n"
                                       "qualify_targets=all\n"))
    assert [p.qualify_targets for p in cfg.peers.values()] == ["first", "all"]


def test_transport_named_only_when_written(write: Write) -> None:
    """RFC 3263 §4.1 NAPTR is for peers whose transport nobody wrote; [general] transport= counts."""
    cfg = load_config(write("a.conf", "[a]\ntype=peer\nhost=a.test\n[b]\ntype=peer\nhost=b.test\ntransport=udp\n"))
    assert [p.transport_named for p in cfg.peers.values()] == [False, True]
    cfg = load_config(write("g.conf", "[general]\ntransport=udp\n[a]\ntype=peer\nhost=a.test\n"))
    assert cfg.peers["a"].transport_named
