"""Arbitrary text into the config readers added with pjsip.conf, realtime (extconfig.conf and
the driver files), probe shape and policies: a message with file and line, never a traceback
(Hypothesis; derandomized so a CI run is reproducible)."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hs

from sipqualify.api.http import parse_until
from sipqualify.config import check_config

BUDGET = settings(max_examples=300, deadline=None, derandomize=True, database=None,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

# words the readers know, so that generated files reach past the first unknown-section check
PJSIP_WORDS = ["[t]", "[e]", "[a](!)", "[b](a)", "type=endpoint", "type=aor", "type=auth", "type=identify",
               "type=transport", "type=contact", "type=global", "aors=a", "auth=t", "contact=sip:x@127.0.0.1",
               "qualify_frequency=", "qualify_timeout=", "max_contacts=", "remove_existing=", "match=",
               "protocol=udp", "bind=", "password=", "username=", "md5_cred=", "from_user=", "outbound_proxy=",
               "default_realm=", "outbound_auth=t", "realm=", "auth_type=",
               "#include nowhere.conf", ";", "=", "+=", "\\", "\x00", "\u00e9", "9" * 30]
SIPCONF_WORDS = ["[general]", "[p]", "type=peer", "host=", "qualify=", "qualify_header=", "qualify_method=",
                 "qualify_max_forwards=", "qualify_targets=", "qualify_auth=", "reply_up=", "reply_degraded=",
                 "down_after=", "flap_suppress=", "flap_half_life=", "jitter=", "max_rate=", "rt_refresh=",
                 "dns_server=", "qualify_headers=", "qualify_source=", "127.0.0.5:", "[::1]:",
                 "transport=", "wsenable=", "tlsenable=", "X: y\r", "::",
                 "\x00", "\u0663", "-1", "1e9", "9" * 30]


def lines(words: list[str]) -> hs.SearchStrategy[str]:
    piece = hs.one_of(hs.sampled_from(words), hs.text(max_size=12))
    line = hs.lists(piece, max_size=4).map("".join)
    return hs.lists(line, max_size=12).map("\n".join)


def read(name: str, text: str) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / name
        path.write_text(text, encoding="utf-8", errors="surrogateescape")
        for m in check_config(str(path)):
            assert m.severity in ("error", "warning") and m.message, m


@BUDGET
@given(lines(PJSIP_WORDS))
def test_pjsip_conf_never_raises(text: str) -> None:
    read("pjsip.conf", text)


@BUDGET
@given(lines(SIPCONF_WORDS))
def test_sip_conf_with_the_new_options_never_raises(text: str) -> None:
    read("sip.conf", text)


@BUDGET
@given(lines(["[settings]", "sippeers => ", "pgsql,general,sippeers", "sqlite3,", "ps_endpoints =>", ",,,",
              "[general]", "dbhost=", "dbport=", "dbfile=", "\x00"]))
def test_extconfig_next_to_sip_conf_never_raises(text: str) -> None:
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "extconfig.conf").write_text(text, encoding="utf-8", errors="surrogateescape")
        (Path(d) / "res_pgsql.conf").write_text(text, encoding="utf-8", errors="surrogateescape")
        (Path(d) / "res_config_sqlite3.conf").write_text(text, encoding="utf-8", errors="surrogateescape")
        (Path(d) / "sip.conf").write_text("[general]\n")
        for m in check_config(str(Path(d) / "sip.conf")):
            assert m.severity in ("error", "warning") and m.message, m


TOML_WORDS = ["[cluster]", "[store]", "[service]", "[[peers]]", "url = ", "group = ", "lease = ", "node_id = ",
              "sample_every = ", "1.5", "true",
              '"etcd3+http://127.0.0.1:2379"', '"redis://127.0.0.1:1"', '"postgresql://u@127.0.0.1/db"', '"x"',
              'name = "p"', 'host = "127.0.0.1"', "qualify_source = ", '"127.0.0.5:5070"', "0", "-1", "[", "=",
              "\x00", "\u00e9"]


@BUDGET
@given(lines(TOML_WORDS))
def test_toml_cluster_and_store_options_never_raise(text: str) -> None:
    read("sipqualify.toml", text)


@BUDGET
@given(hs.one_of(hs.none(), hs.booleans(), hs.integers(), hs.floats(allow_nan=True, allow_infinity=True),
                 hs.text(max_size=40), hs.lists(hs.integers(), max_size=2)))
def test_silence_until_is_a_time_or_a_value_error(value: object) -> None:
    """`POST /api/v1/silences`'s `until`, straight from a JSON body."""
    try:
        until = parse_until(value)
    except ValueError as e:
        assert str(e)
    else:
        assert isinstance(until, float) and until == until and until not in (float("inf"), float("-inf"))
