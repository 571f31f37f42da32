"""The option table (config/options.py) against docs/configuration.md, the model and both readers.

Every option is declared once; both readers read through the table, and the documentation
must say, for each, its name (and older names), default, unit, the files that read it and
what it means, with an example that works. Nothing may be documented that the table lacks,
and an option that is read may never be listed as ignored.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest

from sipqualify.config import check_config, load_config
from sipqualify.config.options import (
    NOTHING,
    OPTIONS,
    SIPCONF,
    TOML,
    Ctx,
    Option,
    current,
    index_markdown,
)
from sipqualify.config.sipconf import CHAN_SIP_KNOWN, PeerDefaults
from sipqualify.model import GeneralConfig, PeerConfig, ServiceConfig

from ..helpers import CONFIGURATION_MD as DOC
from ..helpers import doc_entries

Write = Callable[[str, str], str]


def test_every_option_is_documented_and_nothing_else() -> None:
    entries = [e for e in doc_entries() if not (e.section or "").startswith(("pjsip", "realtime"))]
    by_key = {(e.section, e.heading.split(" (")[0]): e for e in entries}
    assert len(by_key) == len(entries), "an option is documented twice in one section"
    table = {(o.section, o.name): o for o in OPTIONS}
    assert len(table) == len(OPTIONS), "an option is declared twice"
    assert sorted(set(by_key) - set(table), key=str) == [], "documented, but not in config/options.py"
    assert sorted(set(table) - set(by_key), key=str) == [], "in config/options.py, but not documented"
    for key, opt in table.items():
        e = by_key[key]
        where = f"docs/configuration.md:{e.line} ({opt.section} {opt.name})"
        assert e.heading == opt.heading, where
        assert e.default == opt.default, where
        assert e.unit == opt.unit, where
        assert e.read_from == opt.read_from, where
        assert any(n in e.example for n in opt.names), f"{where}: the example does not show the option"
        assert len(e.text) > 20, f"{where}: no paragraph saying what it does"


def test_option_index_is_the_table() -> None:
    doc = DOC.read_text()
    m = re.search(r"<!-- option-index -->\n(.*?)\n<!-- /option-index -->", doc, re.S)
    assert m is not None
    assert m.group(1) == index_markdown(), (
        "regenerate the index of docs/configuration.md:\n"
        "python -c 'from sipqualify.config.options import index_markdown as m; print(m())'")


def test_an_option_that_is_read_is_never_listed_as_ignored() -> None:
    read = {n.lower() for o in OPTIONS if SIPCONF in o.readers for n in o.names}
    assert sorted(read & CHAN_SIP_KNOWN) == []
    # the lists of options "accepted silently" in the documentation name only such options
    doc = DOC.read_text()
    paragraphs = [p for p in re.split(r"\n\s*\n", doc) if "accepted silently" in p]
    assert len(paragraphs) == 2  # [general] and peers
    for p in paragraphs:
        listed = set(re.findall(r"`([a-z0-9_-]+)`", p)) - {"foo"}
        assert listed, p
        assert sorted(listed - CHAN_SIP_KNOWN) == [], "listed as ignored, but read (or unknown)"


def _literal(default: str) -> Any:
    """A documented default that is a plain value (`60`, `no`, `"7d"`), as TOML would write it; else NOTHING."""
    m = re.fullmatch(r"`(-?\d+|true|false|yes|no|\"[^\"]*\")`", default)
    if m is None:
        return NOTHING
    v = m.group(1)
    if v in ("true", "yes", "false", "no"):
        return v in ("true", "yes")
    return v[1:-1] if v.startswith('"') else int(v)


class _Collect:
    def __init__(self) -> None:
        self.messages: list[str] = []

    def error(self, where: Any, text: str) -> None:
        self.messages.append(text)

    def warning(self, where: Any, text: str) -> None:
        self.messages.append(text)


def test_documented_defaults_are_the_model_defaults() -> None:
    """A default the page gives as a plain value is what the model starts with."""
    models = {"general": GeneralConfig(), "defaults": PeerDefaults(), "service": ServiceConfig(),
              "peer": PeerConfig(name="p")}
    checked = 0
    for opt in OPTIONS:
        value = _literal(opt.default)
        if value is NOTHING or TOML not in opt.readers or not opt.target or opt.target.startswith("local."):
            continue
        r = _Collect()
        read = opt.kind.toml(r, (opt.name,), opt.name, value, Ctx())
        assert r.messages == [] and read is not NOTHING, (opt.name, r.messages)
        where, _, attrs = opt.target.partition(".")
        model = tuple(getattr(models[where], a) for a in attrs.split(",")) if "," in attrs else current(
            models, opt.target)
        if model is None:
            continue  # decided where it is used (the AMI banner is api/ami.py's)
        assert read == model, f"{opt.section} {opt.name}: documented {opt.default}, the model has {model!r}"
        checked += 1
    assert checked >= 30


def _example(opt: Option) -> str:
    """The first `name = value` of the option's documented example."""
    e = next(e for e in doc_entries() if (e.section, e.heading) == (opt.section, opt.heading))
    m = re.search(r"`((?:" + "|".join(map(re.escape, opt.names)) + r") = [^`]+)`", e.example)
    assert m is not None, f"{opt.name}: no `name = value` in the example"
    return m.group(1)


def test_documented_sip_conf_examples_read_clean(write: Write) -> None:
    general = [_example(o) for o in OPTIONS if o.section == "general" and SIPCONF in o.readers]
    peer = [_example(o) for o in OPTIONS if o.section == "peer" and SIPCONF in o.readers]
    cfg = load_config(write("sip.conf", "[general]\n" + "\n".join(general) + "\n[p]\n" + "\n".join(peer) + "\n"))
    assert cfg.messages == []
    assert set(cfg.peers) == {"p"}


def test_documented_toml_examples_read_clean(write: Write) -> None:
    """Every TOML-only option's example; only the files they name are missing."""
    tables: dict[str, list[str]] = {}
    for o in OPTIONS:
        if o.readers == (TOML,) and o.name != "users":
            tables.setdefault(o.section, []).append(_example(o))
    text = "\n".join(tables.pop("top"))
    text += '\n[peers.p]\nhost = "dynamic"\n' + "\n".join(tables.pop("peer"))
    text += "\n[[webhooks]]\n" + "\n".join(tables.pop("webhooks"))
    text += "\n[[policies]]\n" + "\n".join(tables.pop("policies"))  # the peer's `policy` names it
    for section, lines in tables.items():
        text += f"\n[{section}]\n" + "\n".join(lines)
    msgs = check_config(write("sipqualify.toml", text + "\n"))
    assert sorted(m.option or "" for m in msgs) == ["pjsip_conf", "sip_conf", "tls_cert", "tls_key"]
    assert all(m.severity == "error" and m.message.endswith("no such file") for m in msgs)


def test_documented_toml_example_file_has_only_known_keys(write: Write) -> None:
    """The sipqualify.toml shown in the page: no unknown key, and no error but the files it names."""
    doc = DOC.read_text()
    example = doc[doc.index("## Native TOML"):]
    text = example[example.index("```toml\n") + 8:]
    text = text[:text.index("```\n")]
    msgs = check_config(write("sipqualify.toml", text))
    assert [m for m in msgs if m.severity == "warning"] == []
    assert sorted(m.option or "" for m in msgs) == ["pjsip_conf", "sip_conf", "tls_cert", "tls_key"]


# ------------------------------------------------------------------ [general] keepalive


def test_general_keepalive_is_inherited_by_peers(write: Write) -> None:
    """chan_sip: set_peer_defaults() copies [general] keepalive into every peer (peer->keepalive =
    default_keepalive); a peer's own keepalive= replaces it. It used to be ignored silently."""
    path = write("sip.conf", """[general]
keepalive=30
[inherits]
type=peer
host=10.0.0.1
[own]
type=peer
host=10.0.0.2
keepalive=yes
[off]
type=friend
host=dynamic
keepalive=no
[t](!)
keepalive=15
[from-template](t)
type=peer
host=10.0.0.3
""")
    cfg = load_config(path)
    assert {n: p.keepalive_s for n, p in cfg.peers.items()} == {
        "inherits": 30, "own": 60, "off": 0, "from-template": 15}
    assert cfg.messages == []


@pytest.mark.parametrize(("value", "seconds"), [("yes", 60), ("no", 0), ("0", 0), ("45", 45)])
def test_general_keepalive_values(write: Write, value: str, seconds: int) -> None:
    cfg = load_config(write("sip.conf", f"[general]\nkeepalive={value}\n[p]\ntype=peer\nhost=h\n"))
    assert cfg.peers["p"].keepalive_s == seconds and cfg.messages == []


def test_keepalive_junk_warns_and_is_off(write: Write) -> None:
    path = write("sip.conf", "[general]\nkeepalive=often\n[p]\ntype=peer\nhost=h\n[q]\ntype=peer\nhost=h\n"
                             "keepalive=-5\n")
    cfg = load_config(path)
    assert (cfg.peers["p"].keepalive_s, cfg.peers["q"].keepalive_s) == (0, 0)
    assert [(m.severity, m.line, m.option) for m in cfg.messages] == [
        ("warning", 2, "keepalive"), ("warning", 9, "keepalive")]
    assert "keepalive of peer 'q'" in cfg.messages[1].message


def test_toml_general_keepalive_reaches_sip_conf_and_toml_peers(write: Write) -> None:
    write("sip.conf", "[general]\nkeepalive=10\n[a]\ntype=peer\nhost=10.0.0.1\n[b]\ntype=peer\nhost=10.0.0.2\n"
                      "keepalive=no\n")
    cfg = load_config(write("s.toml", """sip_conf = "sip.conf"
[general]
keepalive = 20
[peers.c]
host = "10.0.0.3"
[peers.d]
host = "10.0.0.4"
keepalive = true
[peers.e]
host = "10.0.0.5"
keepalive = "no"
"""))
    assert {n: p.keepalive_s for n, p in cfg.peers.items()} == {"a": 20, "b": 0, "c": 20, "d": 60, "e": 0}
    assert cfg.messages == []
    bad = write("bad.toml", "[general]\nkeepalive = -1\n")
    assert [(m.severity, m.line, m.option) for m in check_config(bad)] == [("error", 2, "keepalive")]


# ------------------------------------------------------------------ one reader, one table


def test_aliases_work_in_both_readers(write: Write) -> None:
    cfg = load_config(write("sip.conf", "[general]\nbindaddr=127.0.0.1:5070\nexternaddr=198.51.100.7\n"
                                        "[p]\ntype=peer\nhost=h\nusername=alice\n"))
    assert (cfg.general.udpbindaddr, cfg.general.bindport, cfg.general.externip) == ("127.0.0.1", 5070,
                                                                                        "198.51.100.7")
    assert cfg.peers["p"].defaultuser == "alice"
    toml = load_config(write("a.toml", '[general]\nexternaddr = "198.51.100.8"\n[peers.p]\nhost = "h"\n'
                                       'username = "bob"\n'))
    assert (toml.general.externip, toml.peers["p"].defaultuser) == ("198.51.100.8", "bob")
    assert toml.messages == []


def test_externip_reads_the_same_in_both(write: Write) -> None:
    """One host:port parser: a port in externip is warned and dropped in TOML too (it was kept)."""
    cfg = load_config(write("a.toml", '[general]\nexternip = "198.51.100.7:5080"\n'))
    assert cfg.general.externip == "198.51.100.7"
    assert [(m.severity, m.option) for m in cfg.messages] == [("warning", "externip")]
    assert [(m.severity, m.line) for m in check_config(write("b.toml", '[general]\nexternip = "a b"\n'))] == [
        ("error", 2)]


def test_toml_peer_host_refuses_port_zero_like_sip_conf(write: Write) -> None:
    assert [(m.severity, m.line, m.option) for m in check_config(write("a.toml", '[peers.p]\nhost = "h:0"\n'))] == [
        ("error", 2, "host")]


def test_transport_in_general_sees_tcpenable_written_after_it(write: Write) -> None:
    cfg = load_config(write("sip.conf", "[general]\ntransport=tcp\ntcpenable=yes\n[p]\ntype=peer\nhost=h\n"))
    assert cfg.peers["p"].transport == "tcp" and cfg.messages == []
