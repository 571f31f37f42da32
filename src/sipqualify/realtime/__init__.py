"""Realtime peers (Asterisk's extconfig.conf): `sippeers` rows -> peers (rows.py, sync.py),
the PJSIP `ps_*` tables -> objects and contacts (pjsip.py), the databases (backends.py),
following changes and writing registrations back (sync.py)."""

from __future__ import annotations

from ..config.realtime import pg_conninfo
from ..model import Config, RealtimeConfig, RealtimeMapping
from .backends import Backend, PgBackend, SqliteBackend, key_of
from .pjsip import PjsipRealtime
from .sync import RealtimePeers, RealtimeStore, binding_columns

__all__ = ["PjsipRealtime", "RealtimePeers", "RealtimeStore", "binding_columns", "open_realtime"]


def _backend(rt: RealtimeConfig, m: RealtimeMapping) -> Backend:
    key = key_of(m.family)
    upsert = m.family == "ps_contacts"  # registrations add rows there; sippeers rows are only UPDATEd
    if m.driver == "pgsql":
        if m.family == "sippeers":
            return PgBackend(pg_conninfo(rt.pgsql), m.table)
        return PgBackend(pg_conninfo(rt.pgsql), m.table, key, upsert, frozenset())
    return SqliteBackend(rt.sqlite3[m.database], m.table, key, upsert)


def open_realtime(cfg: Config) -> RealtimeStore | None:
    """The realtime families the config follows: `sippeers` with a sip.conf, the PJSIP `ps_*`
    tables with a pjsip.conf; None when extconfig.conf maps none of them."""
    rt = cfg.realtime
    if rt is None or not rt.followed:
        return None
    if "sippeers" in rt.followed:
        return RealtimePeers(_backend(rt, rt.mappings["sippeers"]), cfg, cfg.general.rt_refresh_s)
    if cfg.pjsip is None:
        return None
    backends = {f: _backend(rt, rt.mappings[f]) for f in rt.followed}
    return PjsipRealtime(backends, cfg, cfg.general.rt_refresh_s)
