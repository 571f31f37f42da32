"""Realtime peers (Asterisk's extconfig.conf `sippeers`): rows -> peers (rows.py), the
databases (backends.py), following changes and writing registrations back (sync.py)."""

from __future__ import annotations

from typing import Any

from ..config.realtime import pg_conninfo
from ..model import Config
from ..qualify.registrar import Binding
from .backends import Backend, PgBackend, SqliteBackend
from .sync import RealtimePeers

__all__ = ["RealtimePeers", "binding_columns", "open_realtime"]


def open_realtime(cfg: Config) -> RealtimePeers | None:
    """The `sippeers` family of the config's extconfig.conf, or None when there is none."""
    rt = cfg.realtime
    m = rt.mappings.get("sippeers") if rt is not None else None
    if rt is None or m is None:
        return None
    backend: Backend
    if m.driver == "pgsql":
        backend = PgBackend(pg_conninfo(rt.pgsql), m.table)
    else:
        backend = SqliteBackend(rt.sqlite3[m.database], m.table)
    return RealtimePeers(backend, cfg, cfg.general.rt_refresh_s)


def binding_columns(binding: Binding | None, lastms: int) -> dict[str, Any]:
    """chan_sip's `realtime_update_peer()` on a registration, or `destroy_association()` when
    it goes: the only columns sipqualify ever writes besides `lastms` on a state change."""
    if binding is None:
        return {"fullcontact": "", "ipaddr": "", "port": 0, "regseconds": 0, "regserver": "", "useragent": "",
                "defaultuser": "", "lastms": 0}
    user = binding.contact.partition(":")[2].partition("@")
    return {"ipaddr": binding.addr[0], "port": binding.addr[1], "regseconds": int(binding.expires_at),
            "defaultuser": user[0].lstrip("<") if user[1] else "", "fullcontact": binding.contact,
            "useragent": binding.useragent, "lastms": lastms}
