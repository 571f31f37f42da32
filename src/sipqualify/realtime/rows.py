"""Rows of the realtime `sippeers` table -> PeerConfig, through the sip.conf option table.

A row is read the way chan_sip's `realtime_peer()` reads it: its columns become the options
of one peer section (NULL and empty columns are absent), built on the sip.conf `[general]`
defaults, so `qualify=yes`, `host=dynamic`, `nat=`, `transport=` mean exactly what they mean
in sip.conf. The columns Asterisk itself writes back (registration and `lastms`, with
`rtupdate=yes`) are state, not configuration: they never make a peer "changed", so our own
write-backs never re-apply a peer. Messages carry `driver:table` and the row's `id` (or 0)
in place of file and line.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from typing import Any, Final

from ..config.asterisk import AsteriskConfig, Entry, Section
from ..model import Config, ConfigMessage, PeerConfig

#: written by Asterisk (and sipqualify) on registration / qualify: never configuration
STATE_COLUMNS: Final = frozenset({"ipaddr", "regseconds", "fullcontact", "regserver", "useragent", "lastms"})
#: columns of Asterisk's sippeers schema that are not sip.conf options
NOT_OPTIONS: Final = frozenset({"id", "name", "dynamic", *STATE_COLUMNS})
#: of a host=dynamic peer, these are registration state too (chan_sip writes them on REGISTER)
DYNAMIC_STATE: Final = frozenset({"port", "defaultuser"})

Row = Mapping[str, Any]


def column_text(v: Any) -> str | None:
    """A column's value as text (bytes decoded, blanks trimmed); None for NULL or empty."""
    if v is None:
        return None
    if isinstance(v, bytes):
        v = v.decode("utf-8", "replace")
    s = str(v).strip()
    return s or None


def _dynamic(row: Row) -> bool:
    return (column_text(row.get("host")) or "").lower() == "dynamic"


def row_digest(row: Row) -> bytes:
    """What decides whether a row changed: its configuration columns, in a fixed order."""
    return digest(row, STATE_COLUMNS | (DYNAMIC_STATE if _dynamic(row) else frozenset()))


def digest(row: Row, skip: frozenset[str] = frozenset()) -> bytes:
    """A fingerprint of the row's columns but `skip` and `id`, in a fixed order."""
    h = hashlib.blake2b(digest_size=16)
    for k in sorted(row):
        if k not in skip and k != "id":
            h.update(f"{k}\0{column_text(row[k]) or ''}\1".encode("utf-8", "surrogatepass"))
    return h.digest()


class RowReader:
    """Turns rows into peers; one instance per load, so an unknown column is warned about once."""

    def __init__(self, source: str, proto: PeerConfig, cfg: Config) -> None:
        # local import: config.sipconf imports config.realtime, which this package builds on
        from ..config.sipconf import SipConfReader

        self.source = source  # "pgsql:sippeers"
        self.proto = proto
        self._reader = SipConfReader(AsteriskConfig(), source)
        self._reader.cfg.general = cfg.general

    @property
    def messages(self) -> list[ConfigMessage]:
        return self._reader.cfg.messages

    def peer(self, row: Row) -> PeerConfig | None:
        """The peer a row describes, or None (no name, not a peer: messages say why)."""
        name = column_text(row.get("name"))
        line = row.get("id") if isinstance(row.get("id"), int) else 0
        assert isinstance(line, int)
        if name is None:
            self._reader.cfg.messages.append(ConfigMessage("warning", self.source, line, "row without a name ignored"))
            return None
        sec = Section(name, self.source, line)
        if row.get("type") is None:
            sec.entries.append(Entry("type", "friend", self.source, line))  # chan_sip's realtime default
        for k, v in row.items():
            text = column_text(v)
            if text is None or k.lower() in NOT_OPTIONS:
                continue
            sec.entries.append(Entry(k, text, self.source, line))
        self._reader._peer(sec, {}, self.proto)  # into the reader's own, otherwise unused, peer dict
        return self._reader.cfg.peers.pop(name, None)

    def peers(self, rows: Iterable[Row]) -> dict[str, tuple[bytes, PeerConfig | None]]:
        """name -> (digest, peer) for every named row (peer None: not a peer, e.g. type=user)."""
        out: dict[str, tuple[bytes, PeerConfig | None]] = {}
        for row in rows:
            name = column_text(row.get("name"))
            peer = self.peer(row)  # a row without a name: a message, no peer
            if name is not None:
                out[name] = (row_digest(row), peer)
        return out
