"""Rows -> peers (realtime/rows.py) and the write-back columns, without a database: bad
values are messages with `driver:table` and the row id, never an exception."""

from __future__ import annotations

from sipqualify.config.sipconf import PeerDefaults, new_peer
from sipqualify.model import Config, GeneralConfig
from sipqualify.qualify.registrar import Binding
from sipqualify.realtime import binding_columns
from sipqualify.realtime.rows import RowReader, row_digest

RTUPDATE = {"ipaddr", "port", "regseconds", "defaultuser", "fullcontact", "regserver", "useragent", "lastms"}


def reader() -> RowReader:
    general = GeneralConfig(qualify_ms=0)
    return RowReader("pgsql:sippeers", new_peer("", general, PeerDefaults(), ""), Config(general=general))


def test_columns_are_sip_conf_options_and_bad_values_are_messages_with_the_row() -> None:
    r = reader()
    peers = r.peers([
        {"id": 7, "name": "gw", "host": "192.0.2.1", "port": 5070, "qualify": "yes", "transport": "udp",
         "lastms": 12, "ipaddr": "198.51.100.1", "dtmfmode": "rfc2833", "call-limit": 4},
        {"id": 8, "name": "bad", "host": "192.0.2.2", "qualify": "yes", "transport": "carrier-pigeon",
         "mystery": "x"},
        {"id": 9, "name": None, "host": "192.0.2.3"},
        {"id": 10, "name": "u", "type": "user"},
    ])
    gw = peers["gw"][1]
    assert gw is not None and (gw.host, gw.port, gw.qualify_ms, gw.source) == ("192.0.2.1", 5070, 2000,
                                                                              "pgsql:sippeers:7")
    assert peers["bad"][1] is not None and peers["u"][1] is None and len(peers) == 3
    where = {(m.file, m.line, m.option) for m in r.messages}
    assert ("pgsql:sippeers", 8, "transport") in where and ("pgsql:sippeers", 8, "mystery") in where
    assert ("pgsql:sippeers", 9, None) in where


def test_state_columns_never_make_a_row_changed() -> None:
    row = {"id": 1, "name": "p", "host": "dynamic", "qualify": "yes", "port": 0, "lastms": 0}
    written = {**row, "ipaddr": "10.0.0.1", "port": 5062, "regseconds": 1, "fullcontact": "sip:p@10.0.0.1",
               "useragent": "UA", "defaultuser": "p", "lastms": 33}
    assert row_digest(row) == row_digest(written)
    assert row_digest(row) != row_digest({**row, "qualify": "no"})
    static = {"id": 2, "name": "s", "host": "192.0.2.1", "port": 5060}
    assert row_digest(static) != row_digest({**static, "port": 5070})  # a static peer's port is configuration


def test_only_chan_sip_rtupdate_columns_are_written() -> None:
    b = Binding("p", "sip:alice@10.0.0.1:5062;ob", ("10.0.0.1", 5062), "udp", 1_800_000_000.0, useragent="UA")
    cols = binding_columns(b, 17)
    assert cols == {"ipaddr": "10.0.0.1", "port": 5062, "regseconds": 1_800_000_000, "defaultuser": "alice",
                    "fullcontact": "sip:alice@10.0.0.1:5062;ob", "useragent": "UA", "lastms": 17}
    assert set(binding_columns(None, 0)) <= RTUPDATE and set(cols) <= RTUPDATE


def test_write_back_statements_update_upsert_and_delete() -> None:
    from sipqualify.realtime.backends import grouped

    assert grouped('"sippeers"', [("1001", {"lastms": 5})], "?") == [
        ('UPDATE "sippeers" SET "lastms" = ? WHERE "name" = ?', [(5, "1001")])]
    out = grouped('"ps_contacts"', [("a;@1", {"uri": "sip:a@h", "via_port": 5}), ("a;@2", None),
                                    ("b;@3", {"uri": "sip:b@h", "via_port": 6})], "%s", key="id", upsert=True)
    assert out == [
        ('INSERT INTO "ps_contacts" ("id", "uri", "via_port") VALUES (%s, %s, %s) ON CONFLICT ("id") DO UPDATE '
         'SET "uri" = excluded."uri", "via_port" = excluded."via_port"',
         [("a;@1", "sip:a@h", 5), ("b;@3", "sip:b@h", 6)]),
        ('DELETE FROM "ps_contacts" WHERE "id" = %s', [("a;@2",)])]
