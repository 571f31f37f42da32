"""Verdict policy keys (issue 13 item 3): sip.conf [general]/peer keys, TOML [[policies]]."""

from __future__ import annotations

from collections.abc import Callable

from sipqualify.config import check_config, load_config
from sipqualify.qualify.verdict import CHAN_SIP_VERDICT, policy_of

Write = Callable[[str, str], str]


def test_sip_conf_general_keys_are_inherited_and_peer_keys_beat_them(write: Write) -> None:
    cfg = load_config(write("sip.conf", """[general]
reply_up=2xx
down_after=3
retry_interval=2
[a]
type=peer
host=10.0.0.1
[b]
type=peer
host=10.0.0.2
reply_up=200-299,404
reply_degraded=503,486
down_after=5
up_after=2
[c]
type=peer
host=10.0.0.3
"""))
    assert cfg.messages == []
    a, b = cfg.peers["a"], cfg.peers["b"]
    assert (a.reply_up, a.reply_degraded, a.down_after, a.up_after, a.retry_interval_s) == ("200-299", "", 3, 1, 2)
    assert (b.reply_up, b.reply_degraded, b.down_after, b.up_after, b.retry_interval_s) == (
        "200-299,404", "486,503", 5, 2, 2)
    pol = policy_of(b)
    assert 404 in pol.reply_up and 503 in pol.reply_degraded and 500 not in pol.reply_up  # type: ignore[operator]


def test_no_keys_is_the_chan_sip_verdict(write: Write) -> None:
    cfg = load_config(write("sip.conf", "[p]\ntype=peer\nhost=10.0.0.1\n"))
    assert policy_of(cfg.peers["p"]) is CHAN_SIP_VERDICT


def test_bad_values_are_errors_with_file_and_line(write: Write) -> None:
    path = write("sip.conf", "[general]\nreply_up=2xy\n[p]\ntype=peer\nhost=h\ndown_after=0\n"
                             "reply_degraded=700\nretry_interval=-1\n")
    msgs = check_config(path)
    assert [(m.severity, m.line, m.option) for m in msgs] == [
        ("error", 2, "reply_up"), ("error", 6, "down_after"), ("error", 7, "reply_degraded"),
        ("error", 8, "retry_interval")]
    assert "'2xy' is not a status code" in msgs[0].message
    assert str(msgs[0]).startswith(f"{path}:2: error [reply_up]: ")


TOML = """
[general]
down_after = 2

[[policies]]
name = "trunks"
groups = ["carriers"]
reply_up = "2xx"
reply_degraded = "503"
down_after = 3
retry_interval = 2

[[policies]]
name = "strict"
peers = ["Office"]
up_after = 4

[peers.t1]
host = "10.0.0.1"
group = "carriers"

[peers.t2]
host = "10.0.0.2"
group = "carriers"
down_after = 7

[peers.office]
host = "10.0.0.3"

[peers.named]
host = "10.0.0.4"
group = "carriers"
policy = "strict"

[peers.plain]
host = "10.0.0.5"
"""


def test_toml_policies_by_group_by_peer_and_by_name(write: Write) -> None:
    cfg = load_config(write("sipqualify.toml", TOML))
    assert cfg.messages == []
    got = {n: (p.policy, p.reply_up, p.reply_degraded, p.down_after, p.up_after, p.retry_interval_s)
           for n, p in cfg.peers.items()}
    assert got == {
        "t1": ("trunks", "200-299", "503", 3, 1, 2),
        "t2": ("trunks", "200-299", "503", 7, 1, 2),  # its own key beats the policy
        "office": ("strict", "", "", 2, 4, 0),  # peers = [...] is case-insensitive; [general] below
        "named": ("strict", "", "", 2, 4, 0),  # policy = "..." beats its group's
        "plain": ("", "", "", 2, 1, 0),
    }
    assert policy_of(cfg.peers["t1"]).name == "trunks"


def test_toml_policy_errors(write: Write) -> None:
    path = write("sipqualify.toml", """[[policies]]
name = "p"
down_after = "three"
colour = "red"

[[policies]]
peers = ["x"]

[peers.x]
host = "10.0.0.1"
policy = "nope"
""")
    msgs = check_config(path)
    assert [(m.severity, m.line, m.option) for m in msgs] == [
        ("warning", 4, "colour"), ("error", 3, "down_after"), ("error", 6, "name"), ("error", 11, "policy")]
    assert "no [[policies]] named 'nope'" in msgs[-1].message


def test_qualify_auth_is_read_from_both_files_and_warned_without_a_secret(write: Write) -> None:
    """qualify_auth (qualify/auth.py): off by default; on without secret/md5secret is a warning
    with file and line, as it changes nothing."""
    path = write("sip.conf", "[a]\ntype=peer\nhost=10.0.0.1\nsecret=x\nqualify_auth=yes\n"
                             "[b]\ntype=peer\nhost=10.0.0.2\nqualify_auth=yes\n[c]\ntype=peer\nhost=10.0.0.3\n")
    cfg = load_config(path)
    assert [cfg.peers[n].qualify_auth for n in "abc"] == [True, True, False]
    assert [(m.severity, m.line, m.option) for m in cfg.messages] == [("warning", 6, "qualify_auth")]
    path = write("sipqualify.toml", '[peers.a]\nhost = "10.0.0.1"\nmd5secret = "00"\nqualify_auth = true\n\n'
                                    '[peers.b]\nhost = "10.0.0.2"\nqualify_auth = true\n\n'
                                    '[peers.c]\nhost = "10.0.0.3"\nqualify_auth = "yes"\n')
    msgs = check_config(path)
    assert [(m.severity, m.line, m.option) for m in msgs] == [("warning", 8, "qualify_auth"),
                                                              ("error", 12, "qualify_auth")]


def test_flap_keys_from_general_policies_and_peers(write: Write) -> None:
    """Flap damping (qualify/flap.py): off by default; [general] and [[policies]] keys; bad values
    are errors with file:line."""
    cfg = load_config(write("sipqualify.toml", """[general]
flap_half_life = 600
[[policies]]
name = "phones"
groups = ["desk"]
flap_suppress = 2000
flap_reuse = 500
[peers.a]
host = "10.0.0.1"
group = "desk"
[peers.b]
host = "10.0.0.2"
"""))
    assert cfg.messages == []
    a, b = policy_of(cfg.peers["a"]), policy_of(cfg.peers["b"])
    assert a.flap is not None and (a.flap.penalty, a.flap.suppress, a.flap.reuse, a.flap.half_life_s) == (
        1000, 2000, 500, 600.0)
    assert b.flap is None and b is CHAN_SIP_VERDICT
    path = write("sip.conf", "[general]\nflap_suppress=-1\n[p]\ntype=peer\nhost=h\nflap_half_life=0\n")
    msgs = check_config(path)
    assert [(m.severity, m.line, m.option) for m in msgs] == [
        ("error", 2, "flap_suppress"), ("error", 6, "flap_half_life")]
