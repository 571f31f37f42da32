"""Native sipqualify.toml -> Config. The schema is documented in docs/configuration.md.

```toml
sip_conf = "/etc/asterisk/sip.conf"  # optional: [general] and peers from a sip.conf first
[general]     # sip.conf [general] keys and units (tcpenable = true), plus bind = ["0.0.0.0:5060", "[::]:5060"]
[api]         # listen = "127.0.0.1:7060", token = "...", metrics_peer_limit = 10000
[store]       # state_dir, url (PostgreSQL), sample_retention, sample_every, transition_retention ("7d", "1h30m")
[service]     # node_id, respond_options, options_unknown_user_404, match_source_address, tcp_* limits
[ami]         # manager_conf, enabled, listen, banner, peerstatus_time, [ami.users.NAME]
[cluster]     # url (etcd3+http:// or redis://), group, node_id, lease (docs/scaling.md)
[peers.NAME]  # the sip.conf peer options, plus retransmit, port_in_uri, group and rtt_histogram
```

With `sip_conf`, TOML overrides it: `[general]` keys apply before the sip.conf peers are
built (peers that inherit a value see the TOML one), and a `[peers.NAME]` that names a
sip.conf peer changes only the keys it sets. Every key is declared, with how its value is
read, in options.OPTIONS (shared with the sip.conf reader). tomllib reports no positions
for values, so `KeyLines` finds the line of a key by scanning the text.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Callable
from typing import Any

from ..model import Config, ConfigMessage, GeneralConfig, PeerConfig, ServiceConfig
from .options import _POLICY_KEYS, _PROBE_KEYS, NOTHING, SECTIONS, TOML_OPTIONS, Ctx, assign
from .pjsip import load_pjsip_conf
from .sipconf import PeerDefaults, load_sip_conf, new_peer

#: what the top level of the file may hold: its own keys (sip_conf) and the tables
TOP_KEYS = (*TOML_OPTIONS["top"], *(s if s != "peer" else "peers" for s in SECTIONS if s != "top"))
POLICY_KEYS = (*TOML_OPTIONS["policies"], *_POLICY_KEYS, *_PROBE_KEYS)
WEBHOOK_KEYS = tuple(TOML_OPTIONS["webhooks"])

Path = tuple[str, ...]


class KeyLines:
    """Line numbers of tables and keys in a TOML text (best effort; tomllib gives none)."""

    def __init__(self, text: str) -> None:
        self.lines: dict[Path, int] = {}
        arrays: dict[Path, int] = {}  # [[name]] tables seen so far: the n-th is the path (name, "n")
        table: Path = ()
        in_multiline: str | None = None
        for n, raw in enumerate(text.splitlines(), 1):
            s = raw.strip()
            if in_multiline:
                if in_multiline in s:
                    in_multiline = None
                continue
            if not s or s.startswith("#"):
                continue
            if s.startswith("["):
                inner = s.lstrip("[")
                keys, _ = _dotted_keys(inner, "]")
                if keys:
                    table = tuple(keys)
                    self.lines.setdefault(table, n)
                    if s.startswith("[["):
                        arrays[table] = arrays.get(table, -1) + 1
                        table = (*table, str(arrays[table]))
                        self.lines[table] = n
                continue
            keys, rest = _dotted_keys(s, "=")
            if not keys:
                continue
            for i in range(1, len(keys) + 1):
                self.lines.setdefault(table + tuple(keys[:i]), n)
            for q in ('"""', "'''"):
                if rest.lstrip().startswith(q) and rest.count(q) == 1:
                    in_multiline = q

    def line(self, path: Path) -> int:
        """The line of `path`, else of its nearest enclosing table, else 0."""
        for i in range(len(path), 0, -1):
            if path[:i] in self.lines:
                return self.lines[path[:i]]
        return 0


def _dotted_keys(s: str, stop: str) -> tuple[list[str], str]:
    """`a."b.c".d =` -> ["a", "b.c", "d"] and the text after `stop`; ([], "") if not a key."""
    keys: list[str] = []
    cur: list[str] = []
    i = 0
    while i < len(s):
        c = s[i]
        if c in "\"'":
            end = s.find(c, i + 1)
            if end < 0:
                return [], ""
            cur.append(s[i + 1:end])
            i = end + 1
            continue
        if c == ".":
            keys.append("".join(cur).strip())
            cur = []
        elif c == stop:
            keys.append("".join(cur).strip())
            return keys, s[i + 1:]
        else:
            cur.append(c)
        i += 1
    return [], ""


class TomlReader:
    """Reads the tables of a sipqualify.toml, option by option through options.OPTIONS."""

    def __init__(self, path: str, text: str) -> None:
        self.path = path
        self.base = os.path.dirname(os.path.abspath(path))
        self.keys = KeyLines(text)
        self.messages: list[ConfigMessage] = []

    def error(self, where: Path, text: str) -> None:
        self.messages.append(ConfigMessage("error", self.path, self.keys.line(where), text,
                                           where[-1] if where else None))

    def warning(self, where: Path, text: str) -> None:
        self.messages.append(ConfigMessage("warning", self.path, self.keys.line(where), text,
                                           where[-1] if where else None))

    def table(self, data: dict[str, Any], key: str) -> dict[str, Any]:
        v = data.get(key, {})
        if not isinstance(v, dict):
            self.error((key,), f"'{key}' must be a table ([{key}])")
            return {}
        return v

    def read(self, section: str, where: Path, table: dict[str, Any], ctx: Ctx,
             unknown: str) -> tuple[list[tuple[str, Any]], set[str]]:
        """Every key of `table` through the options of `section`: (target, value) of those read,
        in order, and the names of those refused."""
        options = TOML_OPTIONS[section]
        values: list[tuple[str, Any]] = []
        failed: set[str] = set()
        for k, v in table.items():
            w = (*where, k)
            opt = options.get(k)
            if opt is None:
                self.warning(w, f"unknown option '{k}' {unknown} ignored")
                continue
            value = opt.kind.toml(self, w, k, v, ctx)
            if value is NOTHING:
                failed.add(opt.name)
            else:
                values.append((opt.target, value))
        return values, failed

    # ---------------------------------------------------------------- sections

    def general(self, gen: dict[str, Any]) -> Callable[[GeneralConfig, PeerDefaults], None]:
        """Validate [general] now; return what applies it (to a sip.conf's general or a fresh one)."""
        values, _ = self.read("general", ("general",), gen, Ctx(base=self.base), "in [general]")

        def apply(g: GeneralConfig, d: PeerDefaults) -> None:
            objs = {"general": g, "defaults": d}
            for target, value in values:
                assign(objs, target, value)
                d.transport_named |= target == "defaults.transport"

        return apply

    def service(self, cfg: Config, section: str, table: dict[str, Any]) -> None:
        """[api], [store], [service] or [ami]: ServiceConfig values."""
        values, _ = self.read(section, (section,), table, Ctx(base=self.base), f"in [{section}]")
        objs = {"service": cfg.service}
        for target, value in values:
            assign(objs, target, value)

    def peers(self, cfg: Config, peers: dict[str, Any], defaults: PeerDefaults) -> None:
        # peer names are case-insensitive, as in chan_sip's peer table (an index: O(1) per peer,
        # a carrier's 100,000-peer file must not take minutes)
        by_lower = {k.lower(): k for k in cfg.peers}
        for name, t in peers.items():
            where: Path = ("peers", name)
            if not isinstance(t, dict):
                self.error(where, f"peer '{name}' must be a table ([peers.{name}])")
                continue
            key = by_lower.get(name.lower(), name)
            by_lower.setdefault(name.lower(), key)
            p = cfg.peers.get(key)
            merged = p is not None
            if p is None:
                p = new_peer(name, cfg.general, defaults, f"{self.path}:{self.keys.line(where)}")
            if self.peer(p, t, where, cfg.general) or merged:
                cfg.peers[key] = p

    def peer(self, p: PeerConfig, t: dict[str, Any], where: Path, g: GeneralConfig) -> bool:
        """Apply one [peers.NAME] table to `p`; False if the peer cannot be used at all."""
        local: dict[str, Any] = {}
        values, failed = self.read("peer", where, t, Ctx(general=g, peer=p.name, base=self.base), "for a peer")
        objs = {"peer": p, "local": local}
        for target, value in values:
            assign(objs, target, value)
            p.transport_named |= target == "peer.transport"
        if "policy" in local:
            p.policy = local["policy"] or ""
        host_port: int | None = None
        if "host" in local:
            p.host, host_port = local["host"]
            p.dynamic = p.host is None
        port = local.get("port")
        if port is not None or host_port is not None:
            p.port = port if port is not None else host_port
        if p.qualify_auth and not (p.secret or p.md5secret):
            self.warning((*where, "qualify_auth"), f"peer '{p.name}' has qualify_auth = true but no secret or "
                                                   "md5secret: a challenge to its OPTIONS counts as an answer")
        if not p.dynamic and not p.host:
            if "host" not in failed:
                self.error(where, f"peer '{p.name}' needs host = \"name or address\" (or host = \"dynamic\")")
            return False
        return "host" not in failed


def _syntax_line(e: tomllib.TOMLDecodeError) -> int:
    lineno = getattr(e, "lineno", None)  # Python 3.14+
    if isinstance(lineno, int):
        return lineno
    m = re.search(r"line (\d+)", str(e))
    return int(m.group(1)) if m else 0


WEBHOOK_KEYS = ("id", "url", "secret", "peers", "states", "timeout")


def _webhooks(r: TomlReader, cfg: Config, hooks: Any) -> None:
    """`[[webhooks]]` tables: id (the receiver id, unique), url (http/https), secret (HMAC key),
    peers (glob patterns), states (OK, LAGGED, UNREACHABLE, UNKNOWN), timeout (seconds)."""
    if not isinstance(hooks, list) or not all(isinstance(h, dict) for h in hooks):
        r.error(("webhooks",), "webhooks must be [[webhooks]] tables")
        return
    seen: set[str] = set()
    for i, h in enumerate(hooks):
        w: Path = ("webhooks", str(i))
        hid, url = h.get("id"), h.get("url")
        if not isinstance(hid, str) or not hid or hid in seen:
            r.error(w, "every [[webhooks]] needs a unique id = \"...\" (the receiver id)")
            continue
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            r.error(w, f"webhook '{hid}': url must be http:// or https://")
            continue
        states = h.get("states", [])
        if not isinstance(states, list) or any(str(s).upper() not in ("OK", "LAGGED", "UNREACHABLE", "UNKNOWN")
                                               for s in states):
            r.error(w, f"webhook '{hid}': states must be a list of OK, LAGGED, UNREACHABLE, UNKNOWN")
            continue
        if not isinstance(h.get("peers", []), list) or not isinstance(h.get("secret", ""), str):
            r.error(w, f"webhook '{hid}': peers must be a list of patterns, secret a string")
            continue
        timeout = h.get("timeout", 5)
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
            r.error(w, f"webhook '{hid}': timeout must be a positive number of seconds")
            continue
        for k in h:
            if k not in WEBHOOK_KEYS:
                r.warning(w, f"unknown option '{k}' in webhook '{hid}' ignored")
        seen.add(hid)
        cfg.service.webhooks.append(h)


def _policies(r: TomlReader, cfg: Config, tables: Any, peer_tables: dict[str, Any]) -> None:
    """`[[policies]]` tables: name, peers, groups and the verdict keys of peers. A peer gets the
    policy its `policy` key names, else the first that lists it in `peers`, else the first that
    lists its group; the policy's keys beat [general] and the sip.conf, the peer's own TOML keys
    beat the policy."""
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        r.error(("policies",), "policies must be [[policies]] tables")
        return
    found: dict[str, list[tuple[str, str, Any]]] = {}  # name -> [(key, target, value)]
    by_peer: dict[str, str] = {}
    by_group: dict[str, str] = {}
    for i, t in enumerate(tables):
        w: Path = ("policies", str(i))
        name = t.get("name")
        if not isinstance(name, str) or not name or name in found:
            r.error((*w, "name"), "every [[policies]] needs a unique name = \"...\"")
            continue
        lists = [t.get(k, []) for k in ("peers", "groups")]
        if not all(isinstance(v, list) and all(isinstance(x, str) for x in v) for v in lists):
            r.error((*w, "peers" if not isinstance(lists[0], list) else "groups"),
                    f"policy '{name}': peers and groups must be lists of names")
            continue
        for k in t:
            if k not in POLICY_KEYS:
                r.warning((*w, k), f"unknown option '{k}' in policy '{name}' ignored")
        values: list[tuple[str, str, Any]] = []
        for k in (*_POLICY_KEYS, *_PROBE_KEYS):
            if k in t:
                read, _ = r.read("peer", w, {k: t[k]}, Ctx(base=r.base), "")
                values += [(k, target, v) for target, v in read]
        found[name] = values
        for n in lists[0]:
            by_peer.setdefault(n.lower(), name)
        for g in lists[1]:
            by_group.setdefault(g, name)
    for key, p in cfg.peers.items():
        name = p.policy or by_peer.get(key.lower()) or by_group.get(p.group) or ""
        if name and name not in found:
            r.error(("peers", key, "policy"), f"peer '{key}': no [[policies]] named '{name}'")
            continue
        p.policy = name
        own = peer_tables.get(key, {})
        for k, target, value in found.get(name, ()):
            if k not in own:
                assign({"peer": p}, target, value)


def load_toml(path: str) -> Config:
    """Read a sipqualify.toml. Never raises for content: see `Config.messages`."""
    try:
        with open(path, "rb") as fh:
            text = fh.read().decode("utf-8")
    except OSError as e:
        return Config(messages=[ConfigMessage("error", path, 0, f"cannot read: {e.strerror}")], source=path)
    except UnicodeDecodeError as e:
        return Config(messages=[ConfigMessage("error", path, 0, f"not UTF-8 (as TOML requires): {e.reason}")],
                      source=path)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        msg = re.sub(r"\s*\(at line \d+, column \d+\)", "", str(e))
        return Config(messages=[ConfigMessage("error", path, _syntax_line(e), f"TOML syntax: {msg}")], source=path)

    r = TomlReader(path, text)
    for k in data:
        if k not in TOP_KEYS:
            r.warning((k,), f"unknown key '{k}' ignored")
    apply_general = r.general(r.table(data, "general"))
    defaults = PeerDefaults()
    cfg: Config | None = None
    top, _ = r.read("top", (), {k: v for k, v in data.items() if k in TOML_OPTIONS["top"]}, Ctx(base=r.base), "")
    sip_conf = dict(top).get("local.sip_conf")
    if sip_conf is not None:
        captured: list[PeerDefaults] = []

        def override(g: GeneralConfig, d: PeerDefaults) -> None:
            apply_general(g, d)
            captured.append(d)

        cfg = load_sip_conf(sip_conf, general_override=override)
        defaults = captured[0]
    if cfg is None:
        cfg = Config()
        apply_general(cfg.general, defaults)
    pjsip_conf = dict(top).get("local.pjsip_conf")
    if pjsip_conf is not None:
        pj = load_pjsip_conf(pjsip_conf)  # its contacts come after the sip.conf peers
        cfg.messages.extend(pj.messages)
        cfg.pjsip = pj.pjsip
        for name, peer in pj.peers.items():
            cfg.peers.setdefault(name, peer)
    cfg.source = path
    for section in ("api", "store", "service", "ami", "cluster"):
        r.service(cfg, section, r.table(data, section))
    _webhooks(r, cfg, data.get("webhooks", []))
    peer_tables = r.table(data, "peers")
    r.peers(cfg, peer_tables, defaults)
    by_lower = {k.lower(): k for k in cfg.peers}
    _policies(r, cfg, data.get("policies", []),
              {by_lower.get(k.lower(), k): t for k, t in peer_tables.items() if isinstance(t, dict)})
    _vantage(r, cfg.service)
    cfg.messages.extend(r.messages)
    return cfg


def _vantage(r: TomlReader, svc: ServiceConfig) -> None:
    """`[cluster] vantage_points` > 1 works only with a group and a shared store: said at check time
    (a warning: `run --store-url` may still bring the store; without one the daemon refuses to start)."""
    k = svc.cluster_vantage_points
    if k <= 1:
        return
    if svc.cluster_url is None:
        r.warning(("cluster", "vantage_points"), f"vantage_points = {k} without [cluster] url: one node, one prober")
    elif svc.store_url is None:
        r.warning(("cluster", "vantage_points"), f"vantage_points = {k} needs a shared PostgreSQL store: [store] url "
                                                  "(or run --store-url); without one the daemon will not start")
