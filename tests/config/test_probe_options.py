"""Probe shape keys (issue 13 item 4): sip.conf [general]/peer keys, TOML peers and [[policies]]."""

from __future__ import annotations

from collections.abc import Callable

from sipqualify.config import check_config, load_config

Write = Callable[[str, str], str]


def test_sip_conf_general_keys_are_inherited_and_peer_keys_beat_them(write: Write) -> None:
    cfg = load_config(write("sip.conf", """[general]
qualify_max_forwards=10
qualify_header=X-Site: berlin
[a]
type=peer
host=10.0.0.1
[b]
type=peer
host=10.0.0.2
qualify_to_user=monitor
qualify_ruri_user=ping
qualify_max_forwards=0
qualify_method=notify
qualify_header=X-Probe:sipqualify
qualify_header = P-Note:  two  words\t
[c]
type=peer
host=10.0.0.3
qualify_header=
"""))
    assert cfg.messages == []
    a, b, c = cfg.peers["a"], cfg.peers["b"], cfg.peers["c"]
    assert (a.qualify_to_user, a.qualify_ruri_user, a.qualify_max_forwards, a.qualify_method,
            a.qualify_headers_extra) == (None, None, 10, "OPTIONS", ("X-Site: berlin",))
    assert (b.qualify_to_user, b.qualify_ruri_user, b.qualify_max_forwards, b.qualify_method,
            b.qualify_headers_extra) == ("monitor", "ping", 0, "NOTIFY", ("X-Probe: sipqualify", "P-Note: two  words"))
    assert c.qualify_headers_extra == ()


def test_no_keys_is_chan_sips_request(write: Write) -> None:
    p = load_config(write("sip.conf", "[p]\ntype=peer\nhost=10.0.0.1\n")).peers["p"]
    assert (p.qualify_to_user, p.qualify_ruri_user, p.qualify_max_forwards, p.qualify_method,
            p.qualify_headers_extra) == (None, None, 70, "OPTIONS", ())


def test_bad_sip_conf_values_are_errors_with_file_and_line(write: Write) -> None:
    path = write("sip.conf", "[general]\nqualify_header=X-Bad header: v\n[p]\ntype=peer\nhost=h\n"
                             "qualify_header=no colon here\nqualify_header=Via: SIP/2.0/UDP x\n"
                             "qualify_max_forwards=256\nqualify_method=INVITE\nqualify_to_user=a b\n"
                             "qualify_ruri_user=x@y\nqualify_header=X-Good: kept\n")
    msgs = check_config(path)
    assert [(m.severity, m.line, m.option) for m in msgs] == [
        ("error", 2, "qualify_header"), ("error", 6, "qualify_header"), ("error", 7, "qualify_header"),
        ("error", 8, "qualify_max_forwards"), ("error", 9, "qualify_method"), ("error", 10, "qualify_to_user"),
        ("error", 11, "qualify_ruri_user")]
    assert str(msgs[0]).startswith(f"{path}:2: error [qualify_header]: ")
    assert "is not a header line" in msgs[1].message
    assert "writes the Via header itself" in msgs[2].message


TOML = """
[general]
qualify_max_forwards = 20

[[policies]]
name = "carriers"
groups = ["carriers"]
qualify_method = "INFO"
qualify_headers_extra = ["X-Probe: policy"]

[peers.t1]
host = "10.0.0.1"
group = "carriers"

[peers.t2]
host = "10.0.0.2"
group = "carriers"
qualify_headers_extra = ["X-Probe: own", "X-Other: 1"]
qualify_to_user = "monitor"

[peers.plain]
host = "10.0.0.3"
"""


def test_toml_general_policy_and_peer(write: Write) -> None:
    cfg = load_config(write("sipqualify.toml", TOML))
    assert cfg.messages == []
    t1, t2, plain = cfg.peers["t1"], cfg.peers["t2"], cfg.peers["plain"]
    assert (t1.qualify_method, t1.qualify_headers_extra, t1.qualify_max_forwards) == (
        "INFO", ("X-Probe: policy",), 20)
    assert (t2.qualify_method, t2.qualify_headers_extra, t2.qualify_to_user) == (
        "INFO", ("X-Probe: own", "X-Other: 1"), "monitor")
    assert (plain.qualify_method, plain.qualify_headers_extra, plain.qualify_max_forwards) == ("OPTIONS", (), 20)


def test_bad_toml_values_are_errors_with_file_and_line(write: Write) -> None:
    path = write("sipqualify.toml", """[peers.p]
host = "10.0.0.1"
qualify_headers_extra = ["X-Ok: 1", "X-Bad: a\\r\\nInjected: b"]
qualify_max_forwards = -1
qualify_method = "REGISTER"

[peers.q]
host = "10.0.0.2"
qualify_headers_extra = "X-Not: a list"
""")
    msgs = check_config(path)
    assert [(m.severity, m.line, m.option) for m in msgs] == [
        ("error", 3, "qualify_headers_extra"), ("error", 4, "qualify_max_forwards"),
        ("error", 5, "qualify_method"), ("error", 9, "qualify_headers_extra")]
    assert str(msgs[0]).startswith(f"{path}:3: error [qualify_headers_extra]: ")
    assert "not a header line" in msgs[0].message
