"""PJSIP realtime: Asterisk's `ps_endpoints`, `ps_aors`, `ps_auths`, `ps_endpoint_id_ips` and
`ps_contacts` tables (extconfig.conf, read with a pjsip.conf) followed live, and registrations
written back to `ps_contacts`.

* **Rows -> objects**: a row of `ps_endpoints`, `ps_aors`, `ps_auths` or `ps_endpoint_id_ips`
  is one sorcery object, its columns the options: it goes through the very function a
  pjsip.conf section goes through (`PjsipConfReader.object`), so values mean and are checked
  exactly as in pjsip.conf (messages carry `driver:table` and the row id). The objects join
  the file's (`cfg.pjsip`, shared with the registrar); a name in both: the file's wins.
* **Objects -> peers**: every AOR's static `contact` URIs become peers as pjsip.conf contacts
  do (`config.pjsip.aor_peers`, named `<aor>@@<md5(uri)>`), and every `ps_contacts` row one
  more contact of its AOR (named by the row id, `<aor>;@<md5(uri)>`, what res_pjsip writes),
  qualified with the row's `qualify_frequency`/`qualify_timeout` (the AOR's when NULL), from
  the first endpoint listing the AOR. Rows sipqualify itself wrote (`reg_server` =
  `sipqualify`) are its own registrations, already qualified: never read back as contacts.
* **Changes**: each table is followed like sippeers (realtime/sync.py: NOTIFY trigger, or
  fingerprint + per-row hashes every `rt_refresh`). A changed row re-reads its object; only
  the AORs it touches (the AOR itself, the AORs an endpoint lists before and after, the AOR
  of a contact) have their peers recomputed, and only peers that differ go to the engine.
* **Write-back**: a registration committed for a contact of an AOR is an upsert of its
  `ps_contacts` row (id `<aor>;@<md5(uri)>`, uri, expiration_time, qualify_frequency,
  qualify_timeout, authenticate_qualify, outbound_proxy, path, user_agent, endpoint,
  reg_server, via_addr, via_port, call_id, prune_on_boot: only the columns the table has);
  its removal deletes the row. Same queue as sippeers: ordered per contact, one transaction
  per batch, retried, nothing lost or duplicated.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Final

from ..config.asterisk import AsteriskConfig, Entry, Section
from ..config.pjsip import (
    PjsipConfReader,
    _bool,
    _proxy,
    _seconds_float,
    _uint,
    aor_peers,
    contact_peer,
)
from ..model import Config, ConfigMessage, PeerConfig, PjsipAor, PjsipConfig, PjsipEndpoint
from ..qualify.pjsip_registrar import aor_of
from ..qualify.registrar import Binding
from .backends import Backend, Row
from .rows import column_text as _text
from .rows import digest as _digest
from .sync import Apply, RealtimeStore

#: family -> the pjsip.conf type its rows are
TYPE_OF: Final = {"ps_auths": "auth", "ps_endpoints": "endpoint", "ps_aors": "aor", "ps_endpoint_id_ips": "identify"}
ORDER: Final = ("ps_auths", "ps_endpoints", "ps_aors", "ps_endpoint_id_ips", "ps_contacts")
REG_SERVER: Final = "sipqualify"  # ps_contacts.reg_server of the rows sipqualify writes

Batch = tuple[str, list[Row], bool, "set[str] | None"]  # (family, rows, full, names)


def _objects(pj: PjsipConfig, t: str) -> dict[str, Any]:
    by_type: dict[str, dict[str, Any]] = {"endpoint": pj.endpoints, "aor": pj.aors, "auth": pj.auths,
                                          "identify": pj.identifies}
    return by_type[t]


class PjsipRealtime(RealtimeStore):
    """`backends`: family -> its table (those extconfig.conf maps); `cfg.pjsip` is the file's
    objects, which the realtime ones join (the registrar reads the same PjsipConfig)."""

    def __init__(self, backends: dict[str, Backend], cfg: Config, refresh_s: float) -> None:
        assert cfg.pjsip is not None
        super().__init__("pjsip realtime", refresh_s)
        self.backends = backends
        self.writer_backend = backends.get("ps_contacts")
        self.cfg = cfg
        self.pj = cfg.pjsip
        self.file = {t: set(_objects(self.pj, t)) for t in TYPE_OF.values()}  # names the file defines
        self.objs: dict[str, dict[str, Any]] = {t: {} for t in TYPE_OF.values()}  # realtime objects
        self.rows: dict[str, dict[str, Row]] = {f: {} for f in backends}
        self.digests: dict[str, dict[str, bytes]] = {f: {} for f in backends}
        self.eps_of: dict[str, set[str]] = {}  # aor -> endpoints listing it (file and realtime)
        self.contacts: dict[str, set[str]] = {}  # aor -> ps_contacts row ids
        self.by_aor: dict[str, set[str]] = {}  # aor -> realtime peers applied
        self.on_identify: Callable[[], Awaitable[None]] | None = None  # ps_endpoint_id_ips changed
        self._identify_changed = False
        self._reader = PjsipConfReader(AsteriskConfig(), "realtime")
        for ep in self.pj.endpoints.values():
            for a in ep.aors:
                self.eps_of.setdefault(a, set()).add(ep.name)

    # ------------------------------------------------------------------ rows -> objects -> peers

    def _object(self, family: str, rid: str, row: Row | None) -> None:
        """Row `rid` of `family` read again (None: deleted) into `self.pj`."""
        t = TYPE_OF[family]
        old = self.objs[t].pop(rid, None)
        obj = None
        if row is not None:
            label = self.backends[family].label
            sec = Section(rid, label, 0)
            sec.entries = [Entry(k, text, label, 0) for k, v in row.items()
                           if k != "id" and (text := _text(v)) is not None]
            self._reader.object(t, sec)
            obj = _objects(self._reader.pj, t).pop(rid, None)
            if obj is not None:
                obj.source = f"{label}:{rid}"
                self.objs[t][rid] = obj
        if rid in self.file[t]:
            return  # the file's object wins
        target = _objects(self.pj, t)
        if obj is None:
            target.pop(rid, None)
        else:
            target[rid] = obj
        if t == "endpoint":
            for a in old.aors if old is not None else ():
                self.eps_of.get(a, set()).discard(rid)
            for a in obj.aors if obj is not None else ():
                self.eps_of.setdefault(a, set()).add(rid)
            index = self.pj.endpoint_of  # the reader's AOR -> qualifying endpoint index
            if index is not None:
                for a in {*(old.aors if old is not None else ()), *(obj.aors if obj is not None else ())}:
                    names = self.eps_of.get(a)
                    if names:
                        index[a] = min(names)
                    else:
                        index.pop(a, None)
        elif t == "identify":
            self._identify_changed = True

    def _endpoint(self, aor: str) -> PjsipEndpoint | None:
        """res_pjsip's qualifying endpoint: the first, by id, listing the AOR."""
        names = self.eps_of.get(aor)
        return self.pj.endpoints.get(min(names)) if names else None

    def _contact(self, cid: str, row: Row, aor: PjsipAor, ep: PjsipEndpoint | None) -> PeerConfig | None:
        """A ps_contacts row as a contact of `aor` (None: ours, or not usable: a message)."""
        if _text(row.get("reg_server")) == REG_SERVER:
            return None
        label = self.backends["ps_contacts"].label
        try:
            uri = _text(row.get("uri"))
            if uri is None:
                raise ValueError("has no uri")
            base = dataclasses.replace(aor)
            for col, attr, read in (("qualify_frequency", "qualify_frequency", _uint),
                                    ("qualify_timeout", "qualify_timeout", _seconds_float),
                                    ("qualify_2xx_only", "qualify_2xx_only", _bool),
                                    ("outbound_proxy", "outbound_proxy", _proxy)):
                if (text := _text(row.get(col))) is not None:
                    setattr(base, attr, read(text))
            named = self.pj.endpoints.get(_text(row.get("endpoint")) or "")
            p = contact_peer(cid, base, uri, named or ep, self.pj)
        except ValueError as e:
            self._reader.cfg.messages.append(ConfigMessage("error", label, 0, f"contact '{cid}': {e}: ignored"))
            return None
        p.source = f"{label}:{cid}"
        return p

    def _peers_of(self, a: str) -> dict[str, PeerConfig]:
        aor = self.pj.aors.get(a)
        if aor is None:
            return {}
        ep = self._endpoint(a)
        out = aor_peers(self.pj, aor, ep) if a in self.objs["aor"] and a not in self.file["aor"] else {}
        rows = self.rows.get("ps_contacts", {})
        for cid in sorted(self.contacts.get(a, ())):
            if (p := self._contact(cid, rows[cid], aor, ep)) is not None:
                out[cid] = p
        return out

    def convert(self, batches: Iterable[Batch]) -> tuple[list[PeerConfig], list[str]]:
        """Rows read again -> the peers added or changed and the names removed. Only rows that
        differ from the last read are read into objects, and only the AORs they touch have
        their peers recomputed. Runs on a worker thread (`_off_loop`)."""
        touched: set[str] = set()
        for family, rows, full, names in sorted(batches, key=lambda b: ORDER.index(b[0])):
            key, known, digests = self.backends[family].key, self.rows[family], self.digests[family]
            seen: set[str] = set()
            changed: dict[str, Row | None] = {}
            for row in rows:
                rid = _text(row.get(key))
                if rid is None:
                    continue
                seen.add(rid)
                d = _digest(row)
                if digests.get(rid) != d:
                    digests[rid] = d
                    changed[rid] = row
            for rid in (set(known) - seen) if full else ((names or set()) - seen):
                digests.pop(rid, None)
                if rid in known:
                    changed[rid] = None
            for rid, new in changed.items():
                known.pop(rid, None)
                if new is not None:
                    known[rid] = new
                if family == "ps_contacts":
                    a = aor_of(rid)
                    if a is None:
                        if new is not None:
                            self._reader.cfg.messages.append(ConfigMessage(
                                "warning", self.backends[family].label, 0,
                                f"contact id '{rid}' is not <aor>;@<hash>: ignored"))
                        continue
                    if new is None:
                        self.contacts.get(a, set()).discard(rid)
                    else:
                        self.contacts.setdefault(a, set()).add(rid)
                    touched.add(a)
                    continue
                t = TYPE_OF[family]
                before = self.objs[t].get(rid)
                self._object(family, rid, new)
                if t == "aor":
                    touched.add(rid)
                elif t == "endpoint":
                    for ep in (before, self.objs[t].get(rid)):
                        touched.update(ep.aors if ep is not None else ())
        added: list[PeerConfig] = []
        removed: list[str] = []
        for a in sorted(touched):
            new_peers = self._peers_of(a)
            for name in sorted(self.by_aor.get(a, set()) - set(new_peers)):
                if self.peers.pop(name, None) is not None:
                    removed.append(name)
            for name, p in new_peers.items():
                if self.peers.get(name) != p:
                    self.peers[name] = p
                    added.append(p)
                if p.contact_uri and "@@" in name:
                    self.pj.peer_of[(a, p.contact_uri)] = name
            if new_peers:
                self.by_aor[a] = set(new_peers)
            else:
                self.by_aor.pop(a, None)
        self._log_messages(self._reader.cfg.messages)
        self._reader.cfg.messages.clear()
        return added, removed

    # ------------------------------------------------------------------ the service's side

    async def load(self) -> dict[str, PeerConfig]:
        """Every table, then the objects and peers (nothing, degraded, if the database is
        not there: the follow tasks read every table when it comes)."""
        batches: list[Batch] = []
        for family, backend in self.backends.items():
            try:
                batches.append((family, await backend.rows(), True, None))
            except Exception as e:  # noqa: BLE001 - any driver error: degraded, not dead
                self._failed(f"{backend.label} load", e)
        if len(batches) == len(self.backends):
            self._ok()
        await self._off_loop(self.convert, batches)
        self.stats["loads"] += 1
        return dict(self.peers)

    async def _rows(self, family: str, rows: list[Row], full: bool, names: set[str] | None) -> None:
        await self._apply(*await self._off_loop(self.convert, [(family, rows, full, names)]))
        if self._identify_changed:
            self._identify_changed = False
            if self.on_identify is not None:
                await self.on_identify()

    def start(self, apply: Apply) -> None:
        self.apply = apply
        self._start_tasks([self._follow(b, self._family(f)) for f, b in self.backends.items()])

    def _family(self, family: str) -> Callable[[list[Row], bool, set[str] | None], Awaitable[None]]:
        async def on_rows(rows: list[Row], full: bool, names: set[str] | None) -> None:
            await self._rows(family, rows, full, names)
        return on_rows

    async def close(self) -> None:
        await self._close_tasks()
        for b in self.backends.values():
            await b.close()

    def registered(self, peer: str, binding: Binding | None, lastms: int) -> None:
        """A registration to an AOR committed (None: the contact went): its ps_contacts row."""
        a = aor_of(peer)
        aor = self.pj.aors.get(a or "")
        if self.writer_backend is None or a is None or aor is None:
            return
        if binding is None:
            self._queue_write(peer, None)
            return
        self._queue_write(peer, contact_columns(binding, aor, self._endpoint(a)))

    def rejoin(self, cfg: Config) -> None:
        """`sip reload`: the new file's objects win; the realtime ones and their peers join."""
        assert cfg.pjsip is not None
        self.cfg, self.pj = cfg, cfg.pjsip
        self.file = {t: set(_objects(self.pj, t)) for t in TYPE_OF.values()}
        for t, objs in self.objs.items():
            target = _objects(self.pj, t)
            for name, obj in objs.items():
                target.setdefault(name, obj)
        self.eps_of = {}
        for ep in self.pj.endpoints.values():
            for a in ep.aors:
                self.eps_of.setdefault(a, set()).add(ep.name)
        if self.pj.endpoint_of is not None:  # the new file's index, with the realtime endpoints
            self.pj.endpoint_of = {a: min(names) for a, names in self.eps_of.items()}
        cfg.peers.update((n, p) for n, p in self.peers.items() if n not in cfg.peers)


def contact_columns(b: Binding, aor: PjsipAor, ep: PjsipEndpoint | None) -> dict[str, Any]:
    """The ps_contacts row of a registered contact, as res_pjsip_registrar fills the contact
    it stores (location.c `ast_sip_location_create_contact`): the AOR's qualify settings are
    copied in, the expiry is wall-clock seconds."""
    yn = {True: "yes", False: "no"}
    return {"uri": b.contact, "expiration_time": int(b.expires_at), "qualify_frequency": aor.qualify_frequency,
            "qualify_timeout": aor.qualify_timeout, "authenticate_qualify": yn[aor.authenticate_qualify],
            "outbound_proxy": aor.outbound_proxy,
            "path": b.path, "user_agent": b.useragent, "endpoint": ep.name if ep is not None else "",
            "reg_server": REG_SERVER, "via_addr": b.addr[0], "via_port": b.addr[1], "call_id": b.call_id,
            "prune_on_boot": "no"}
