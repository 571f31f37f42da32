"""extconfig.conf and the realtime driver files next to the config file -> RealtimeConfig.

Asterisk's realtime (`main/config.c`, `find_engine`) maps a family to a driver in
extconfig.conf `[settings]`: `sippeers => pgsql,general,sippeers` (driver, database, table;
the table defaults to the family, a fourth word is a priority). The drivers read their own
files: res_config_pgsql reads `res_pgsql.conf [general]` (one server for every family, so the
database word is not used), res_config_sqlite3 reads `res_config_sqlite3.conf`, one section
per database word with its `dbfile`. The same config syntax reader as sip.conf
(config/asterisk.py) reads all three, so every message has its file and line.

With a sip.conf, sipqualify follows the `sippeers` family (realtime/sync.py turns its rows
into peers through the sip.conf option table); with a pjsip.conf, the PJSIP families
`ps_endpoints`, `ps_aors`, `ps_contacts`, `ps_auths` and `ps_endpoint_id_ips`
(realtime/pjsip.py turns their rows into the objects pjsip.conf sections make). Families of
other modules (voicemail, queues ...) are accepted silently.

What each option means is declared once, in REALTIME_OPTIONS (held to docs/configuration.md
by tests/config/test_realtime_conf.py).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Final

from ..model import ConfigMessage, PeerConfig, RealtimeConfig, RealtimeMapping
from .asterisk import Section, read_asterisk_config

EXTCONFIG: Final = "extconfig.conf"
RES_PGSQL: Final = "res_pgsql.conf"
RES_SQLITE3: Final = "res_config_sqlite3.conf"

DRIVERS: Final = ("pgsql", "sqlite3")  # what sipqualify can read; others are warned about
SIP_FAMILIES: Final = ("sippeers",)  # followed with a sip.conf
#: followed with a pjsip.conf (res_pjsip's sorcery realtime families, Asterisk's sorcery.conf names)
PJSIP_FAMILIES: Final = ("ps_endpoints", "ps_aors", "ps_contacts", "ps_auths", "ps_endpoint_id_ips")
FOLLOWED: Final = (*SIP_FAMILIES, *PJSIP_FAMILIES)  # families whose rows sipqualify reads


@dataclass(frozen=True, slots=True)
class RtOption:
    """One option read from a realtime file: what docs/configuration.md says about it."""

    file: str
    name: str
    default: str  # markdown
    unit: str
    meaning: str


REALTIME_OPTIONS: Final = (
    RtOption(EXTCONFIG, "sippeers", "unset (no realtime peers)", "`driver,database[,table]`",
             "where the chan_sip peers are: every row with `qualify` set is qualified"),
    RtOption(EXTCONFIG, "ps_endpoints", "unset", "`driver,database[,table]`",
             "PJSIP realtime endpoints (read with a pjsip.conf): columns are `type=endpoint` options"),
    RtOption(EXTCONFIG, "ps_aors", "unset", "`driver,database[,table]`",
             "PJSIP realtime AORs: each `contact` of an AOR with `qualify_frequency` > 0 is qualified"),
    RtOption(EXTCONFIG, "ps_contacts", "unset", "`driver,database[,table]`",
             "PJSIP contacts: each row is qualified as a contact of its AOR; registrations to "
             "sipqualify are written here"),
    RtOption(EXTCONFIG, "ps_auths", "unset", "`driver,database[,table]`",
             "PJSIP realtime auths: the digest credentials of registering endpoints"),
    RtOption(EXTCONFIG, "ps_endpoint_id_ips", "unset", "`driver,database[,table]`",
             "PJSIP realtime identifies (`type=identify`: endpoint, match)"),
    RtOption(RES_PGSQL, "dbhost", "unset (the unix socket in `dbsock`)", "host name or IP address",
             "the PostgreSQL server"),
    RtOption(RES_PGSQL, "dbport", "`5432`", "TCP port", "its port (also names the unix socket)"),
    RtOption(RES_PGSQL, "dbname", "`asterisk`", "text", "the database"),
    RtOption(RES_PGSQL, "dbuser", "`asterisk`", "text", "the role sipqualify logs in as"),
    RtOption(RES_PGSQL, "dbpass", "unset", "text", "its password"),
    RtOption(RES_PGSQL, "dbsock", "`/tmp`", "directory", "where the server's unix socket is, when no `dbhost`"),
    RtOption(RES_SQLITE3, "dbfile", "required", "path", "the SQLite database file of this section"),
)
_BY_FILE: Final = {f: {o.name for o in REALTIME_OPTIONS if o.file == f} for f in (EXTCONFIG, RES_PGSQL, RES_SQLITE3)}
# options of those files sipqualify has no use for: accepted silently
_KNOWN: Final = {RES_PGSQL: {"requirements", "dbappname", "debug", "keepalive", "order_multi_row_results_by"},
                 RES_SQLITE3: {"requirements", "batch", "debug"}}
PGSQL_DEFAULTS: Final = {"dbport": "5432", "dbname": "asterisk", "dbuser": "asterisk", "dbpass": "",
                         "dbsock": "/tmp"}


class _Reader:
    def __init__(self, messages: list[ConfigMessage]) -> None:
        self.messages = messages

    def msg(self, severity: str, file: str, line: int, text: str, option: str | None = None) -> None:
        self.messages.append(ConfigMessage(severity, file, line, text, option))

    def sections(self, path: str) -> list[Section]:
        parsed = read_asterisk_config(path)
        self.messages.extend(parsed.messages)
        return parsed.categories()

    def options(self, sec: Section, fname: str) -> dict[str, str]:
        out: dict[str, str] = {}
        for e in sec.entries:
            k = e.key.lower()
            if k in _BY_FILE[fname]:
                out[k] = e.value.strip()
            elif k not in _KNOWN.get(fname, ()):
                self.msg("warning", e.file, e.line, f"unknown option '{e.key}' ignored", e.key)
        return out

    def mappings(self, path: str) -> dict[str, RealtimeMapping]:
        out: dict[str, RealtimeMapping] = {}
        for sec in self.sections(path):
            if sec.name.lower() != "settings":
                self.msg("warning", sec.file, sec.line, f"section [{sec.name}] ignored: Asterisk reads only "
                                                        "[settings] of extconfig.conf")
                continue
            for e in sec.entries:
                family = e.key.lower()
                words = [w.strip() for w in e.value.split(",")]
                where = f"{e.file}:{e.line}"
                if len(words) < 2 or not words[0] or not words[1]:
                    self.msg("error", e.file, e.line, f"{e.key} => '{e.value}': expected driver,database[,table]",
                             e.key)
                    continue
                driver = words[0].lower()
                if driver not in DRIVERS and family in FOLLOWED:
                    self.msg("warning", e.file, e.line, f"realtime driver '{words[0]}' is not supported "
                                                        f"(only {', '.join(DRIVERS)}): {e.key} ignored", e.key)
                    continue
                table = words[2] if len(words) > 2 and words[2] else e.key
                out[family] = RealtimeMapping(family, driver, words[1], table, where)
        return out


def read_realtime(directory: str, proto: PeerConfig | None, messages: list[ConfigMessage],
                  families: tuple[str, ...] = SIP_FAMILIES) -> RealtimeConfig | None:
    """The realtime setup in `directory` (None without an extconfig.conf); messages appended.
    `families`: those the config file's kind follows (sippeers for a sip.conf, ps_* for a
    pjsip.conf): their drivers' files are read and checked."""
    ext = os.path.join(directory, EXTCONFIG)
    if not os.path.isfile(ext):
        return None
    r = _Reader(messages)
    rt = RealtimeConfig(mappings=r.mappings(ext), proto=proto)
    rt.followed = tuple(f for f in families if f in rt.mappings)
    drivers = {m.driver for f, m in rt.mappings.items() if f in families}
    if "pgsql" in drivers:
        path = os.path.join(directory, RES_PGSQL)
        first = next((m for m in rt.mappings.values() if m.driver == "pgsql" and m.family in families), None)
        assert first is not None
        if not os.path.isfile(path):
            file, _, line = first.where.rpartition(":")
            r.msg("error", file, int(line), f"{first.family} uses pgsql but there is no {path}")
        else:
            rt.pgsql = dict(PGSQL_DEFAULTS)
            for sec in r.sections(path):
                if sec.name.lower() == "general":
                    rt.pgsql.update(r.options(sec, RES_PGSQL))
    if "sqlite3" in drivers:
        path = os.path.join(directory, RES_SQLITE3)
        sections = r.sections(path) if os.path.isfile(path) else []
        for sec in sections:
            opts = r.options(sec, RES_SQLITE3)
            if "dbfile" not in opts:
                r.msg("error", sec.file, sec.line, f"[{sec.name}] has no dbfile=", "dbfile")
                continue
            dbfile = opts["dbfile"]
            rt.sqlite3[sec.name] = dbfile if os.path.isabs(dbfile) else os.path.join(directory, dbfile)
        for m in rt.mappings.values():
            if m.driver == "sqlite3" and m.family in families and m.database not in rt.sqlite3:
                file, _, line = m.where.rpartition(":")
                r.msg("error", file, int(line), f"{m.family} uses sqlite3 database '{m.database}' but {path} "
                                                f"has no [{m.database}] with a dbfile")
    return rt


def pg_conninfo(settings: dict[str, str]) -> dict[str, str]:
    """res_config_pgsql's connection: `dbhost` (else the socket directory `dbsock`), port, name, user."""
    s = {**PGSQL_DEFAULTS, **settings}
    info = {"host": s.get("dbhost") or s["dbsock"], "port": s["dbport"], "dbname": s["dbname"],
            "user": s["dbuser"]}
    if s["dbpass"]:
        info["password"] = s["dbpass"]
    return info
