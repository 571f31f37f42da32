"""pjsip.conf: the reader (config/pjsip.py), its option table against docs/configuration.md,
and the peers it makes from the pjsip.conf of the Asterisk 20.20.1 capture
(tests/data/pjsip/observed_pjsip.conf, from asterisk-pjsip-observed.md §1)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from sipqualify.config import check_config, load_config, read_config
from sipqualify.config.pjsip import PJSIP_OPTIONS, contact_id, looks_like_pjsip

from ..helpers import doc_entries

OBSERVED = str(Path(__file__).parents[1] / "data" / "pjsip" / "observed_pjsip.conf")
Write = Callable[[str, str], str]


def test_every_pjsip_option_is_documented_and_nothing_else() -> None:
    entries = {(e.section, e.heading): e for e in doc_entries() if (e.section or "").startswith("pjsip:")}
    table = {(f"pjsip:{o.type}", o.name): o for o in PJSIP_OPTIONS}
    assert sorted(set(entries) - set(table)) == [], "documented, but not in PJSIP_OPTIONS"
    assert sorted(set(table) - set(entries)) == [], "in PJSIP_OPTIONS, but not documented"
    for key, opt in table.items():
        e = entries[key]
        where = f"docs/configuration.md:{e.line} ({opt.type} {opt.name})"
        assert (e.default, e.unit, e.read_from) == (opt.default, opt.unit, "pjsip.conf"), where
        assert opt.name in e.example, where
        assert len(e.text) > 20, where


def test_observed_config_gives_one_peer_per_static_contact_named_by_contact_id() -> None:
    cfg = load_config(OBSERVED)
    assert cfg.warnings == []
    # the ids and hashes Asterisk showed (§4.1, §7)
    assert contact_id("ok-def", "sip:ok@127.0.0.1:35071") == "ok-def@@e0152829e49ec8fffb59bb00ed1fd08e"
    assert contact_id("two", "sip:dead@127.0.0.1:35082") == "two@@15e0d505655510bdcbd243b989bc9ee0"
    assert len(cfg.peers) == 16  # `Objects found: 16` at T0+3 (§4.1)
    ok = cfg.peers["ok-def@@e0152829e49ec8fffb59bb00ed1fd08e"]
    assert (ok.host, ok.port, ok.contact_uri) == ("127.0.0.1", 35071, "sip:ok@127.0.0.1:35071")
    assert (ok.qualify_ms, ok.qualifyfreq_ms, ok.semantics, ok.retransmit) == (3000, 5000, "pjsip", "pjsip")
    assert ok.fromuser == "combo"  # the first endpoint listing the AOR (§2)
    by_aor = {n.split("@@")[0]: p for n, p in cfg.peers.items()}
    assert by_aor["sil-05"].qualify_ms == 500 and by_aor["sil-05"].fromuser == "combo"
    assert by_aor["slow-def"].fromuser == "slow-def"
    assert by_aor["nf-2xx"].qualify_2xx_only and not by_aor["nf-def"].qualify_2xx_only
    assert by_aor["sil-0"].qualify_ms == 32_000  # qualify_timeout = 0: Timer F decides (§3.1)
    assert by_aor["nq"].qualify_ms == 0  # qualify_frequency = 0
    assert by_aor["orphan"].qualify_ms == 0  # no endpoint lists it: never polled (§3.10)
    assert [n for n in cfg.peers if n.startswith("two@@")] == [
        "two@@6fa85a8f1fe65eb9ea034c4257c8470e", "two@@15e0d505655510bdcbd243b989bc9ee0"]
    pj = cfg.pjsip
    assert pj is not None
    assert pj.aors["phone1"].max_contacts == 1 and pj.aors["phone1"].remove_existing
    assert pj.endpoints["combo"].aors == ["ok-def", "sil-05"]
    assert pj.endpoints["auth"].outbound_auth == "auth-out" and pj.auths["auth-out"].username == "quser"
    assert pj.transports["transport-udp"] == ("udp", "127.0.0.1:35060")
    assert (cfg.general.udpbindaddr, cfg.general.bindport) == ("127.0.0.1", 35060)  # where sipqualify listens


def test_templates_includes_repeated_and_comma_contacts(write: Write) -> None:
    write("pjsip_aors.conf", "[office](aor-tpl)\ncontact = sip:a@192.0.2.1, sip:b@192.0.2.2:5070\n"
                             "contact = sip:c@192.0.2.3\\;transport=tcp\n")  # `;` needs `\\;`
    path = write("pjsip.conf", "[aor-tpl](!)\ntype = aor\nqualify_frequency = 30\nqualify_timeout = 1.5\n"
                               "[ep-tpl](!)\ntype = endpoint\nfrom_user = mon\n"
                               "#include pjsip_aors.conf\n#tryinclude nothing_here.conf\n"
                               "[office](ep-tpl)\naors = office\noutbound_proxy = sip:proxy.example.net:5080\\;lr\n")
    cfg = load_config(path)
    peers = list(cfg.peers.values())
    assert [p.contact_uri for p in peers] == ["sip:a@192.0.2.1", "sip:b@192.0.2.2:5070",
                                              "sip:c@192.0.2.3;transport=tcp"]
    assert [(p.port, p.transport) for p in peers] == [(None, "udp"), (5070, "udp"), (None, "tcp")]
    assert all(p.qualify_ms == 1500 and p.qualifyfreq_ms == 30_000 and p.fromuser == "mon" for p in peers)
    assert {p.outboundproxy for p in peers} == {"proxy.example.net:5080"}


def test_bad_values_are_errors_and_unknown_things_warnings_with_file_and_line(write: Write) -> None:
    path = write("pjsip.conf", "[t]\ntype = transport\nbind = pbx.example:5060\n"  # 1-3
                               "[a]\ntype = aor\ncontact = http://x\n"               # 4-6
                               "qualify_frequency = five\nqualify_timeout = -1\n"   # 7-8
                               "qualify_2xx_only = maybe\nfrobnicate = 1\n"         # 9-10
                               "[e]\ntype = endpoint\naors = a, nosuch\nallow = ulaw\n"  # 11-14
                               "[x]\ntype = widget\n[y]\nqualify_frequency = 5\n"   # 15-18
                               "[a]\ntype = aor\n")                                 # 19-20
    msgs = [(m.severity, m.line, m.option) for m in check_config(path)]
    assert msgs == [
        ("error", 3, "bind"), ("error", 6, "contact"), ("error", 7, "qualify_frequency"),
        ("error", 8, "qualify_timeout"), ("error", 9, "qualify_2xx_only"), ("warning", 10, "frobnicate"),
        ("warning", 16, "type"), ("warning", 17, None), ("error", 19, None), ("warning", 13, "aors"),
    ]
    assert all(str(m).startswith(f"{path}:") for m in check_config(path))


def test_unknown_transport_protocol_is_an_error(write: Write) -> None:
    path = write("pjsip.conf", "[t]\ntype = transport\nprotocol = sctp\n")
    assert [(m.severity, m.line, m.option) for m in check_config(path)] == [("error", 3, "protocol")]


def test_detected_by_name_or_content_and_from_toml(write: Write) -> None:
    text = "[gw]\ntype = aor\ncontact = sip:gw@192.0.2.9\nqualify_frequency = 10\n[gw]\ntype = endpoint\naors = gw\n"
    named = write("pjsip_custom.conf", text)
    other = write("asterisk-objects.conf", text)
    assert looks_like_pjsip(named) and looks_like_pjsip(other)
    assert not looks_like_pjsip(write("sip.conf", "[general]\n[peer1]\ntype=peer\nhost=192.0.2.1\n"))
    assert list(read_config(other).peers) == [contact_id("gw", "sip:gw@192.0.2.9")]
    toml = write("sq.toml", f'pjsip_conf = "{Path(other).name}"\n[peers.extra]\nhost = "192.0.2.50"\nqualify = true\n')
    cfg = load_config(toml)
    assert list(cfg.peers) == [contact_id("gw", "sip:gw@192.0.2.9"), "extra"]
    assert cfg.pjsip is not None and "gw" in cfg.pjsip.aors
    missing = write("bad.toml", 'pjsip_conf = "nope.conf"\n')
    assert [m.severity for m in check_config(missing)] == ["error"]


@pytest.mark.parametrize("value", ["yes", "no", "true", "off", "1"])
def test_bool_words(write: Write, value: str) -> None:
    path = write("pjsip.conf", f"[a]\ntype = aor\nqualify_2xx_only = {value}\n")
    assert load_config(path).errors == []
