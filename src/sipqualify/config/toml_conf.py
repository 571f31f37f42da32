"""Native sipqualify.toml -> Config (schema in docs/configuration.md).

```toml
sip_conf = "/etc/asterisk/sip.conf"   # optional: peers and [general] from a sip.conf first
[general]   # sip.conf [general] keys and units; plus bind = ["0.0.0.0:5060", "[::]:5060"]
[api]       # listen = "127.0.0.1:7060", token = "..."
[store]     # state_dir, sample_retention, transition_retention ("7d", "12h", "30m" or seconds)
[peers.NAME]  # host, port, transport, qualify (true/false/ms), qualifyfreq (s), defaultuser,
              # fromuser, fromdomain, outboundproxy, nat, description, secret, md5secret,
              # context, retransmit ("asterisk" | "rfc3261"), port_in_uri
```
A `[peers.NAME]` table replaces a sip.conf peer of the same name wholesale (it inherits
the [general] defaults, not the sip.conf peer's options).
"""

from __future__ import annotations

import os
import re
import tomllib
from typing import Any

from ..model import (
    DEFAULT_MAXMS,
    NAT_MODES,
    RETRANSMIT_POLICIES,
    TRANSPORTS,
    Config,
    ConfigMessage,
    PeerConfig,
)
from .sip_conf import _parse_hostport, load_sip_conf

_DURATION = re.compile(r"^\s*(\d+)\s*([smhd]?)\s*$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}

GENERAL_KEYS = {"qualify", "qualifyfreq", "qualifygap", "qualifypeers", "useragent", "fromdomain", "externip",
                "context", "bind"}
PEER_KEYS = {"host", "port", "transport", "qualify", "qualifyfreq", "defaultuser", "fromuser", "fromdomain",
             "outboundproxy", "nat", "description", "secret", "md5secret", "context", "retransmit",
             "port_in_uri", "dynamic"}


class _Reader:
    def __init__(self, path: str, text: str) -> None:
        self.path = path
        self.lines = text.splitlines()
        self.messages: list[ConfigMessage] = []

    def line_of(self, table: str | None, key: str | None) -> int:
        """Best-effort line of `key` inside `[table]` (tomllib gives no positions)."""
        start = 0
        if table:
            pat = re.compile(r"^\s*\[\s*" + re.escape(table).replace(r"\.", r"\s*\.\s*\"?") + r"\"?\s*\]")
            for i, ln in enumerate(self.lines):
                if pat.match(ln):
                    start = i
                    break
        if key is None:
            return start + 1 if table else 0
        kp = re.compile(r"^\s*\"?" + re.escape(key) + r"\"?\s*=")
        for i in range(start, len(self.lines)):
            if kp.match(self.lines[i]):
                return i + 1
            if i > start and self.lines[i].lstrip().startswith("[") and table:
                break
        return start + 1 if table else 0

    def msg(self, sev: str, table: str | None, key: str | None, text: str) -> None:
        self.messages.append(ConfigMessage(sev, self.path, self.line_of(table, key), text, key))

    def error(self, table: str | None, key: str | None, text: str) -> None:
        self.msg("error", table, key, text)

    def warning(self, table: str | None, key: str | None, text: str) -> None:
        self.msg("warning", table, key, text)


def _duration(v: Any) -> int | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, int):
        return v if v >= 0 else None
    if isinstance(v, str):
        m = _DURATION.match(v)
        if m:
            return int(m.group(1)) * _UNITS[m.group(2)]
    return None


def _qualify(v: Any, default: int) -> int | None:
    if isinstance(v, bool):
        return (default or DEFAULT_MAXMS) if v else 0
    if isinstance(v, int) and v >= 0:
        return v
    if isinstance(v, str):
        low = v.strip().lower()
        if low in ("yes", "no"):
            return (default or DEFAULT_MAXMS) if low == "yes" else 0
        if low.isdigit():
            return int(low)
    return None


def load_toml(path: str) -> Config:
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except OSError as e:
        return Config(messages=[ConfigMessage("error", path, 0, f"cannot read: {e.strerror}")], source=path)
    text = raw.decode("utf-8", "replace")
    r = _Reader(path, text)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        m = re.search(r"line (\d+)", str(e))
        return Config(messages=[ConfigMessage("error", path, int(m.group(1)) if m else 0, f"TOML syntax: {e}")],
                      source=path)

    cfg = Config(source=path)
    base = os.path.dirname(path)
    sip_conf = data.get("sip_conf")
    if sip_conf is not None:
        if not isinstance(sip_conf, str):
            r.error(None, "sip_conf", "sip_conf must be a file name")
        else:
            sc = sip_conf if os.path.isabs(sip_conf) else os.path.join(base, sip_conf)
            if not os.path.exists(sc):
                r.error(None, "sip_conf", f"sip_conf {sc}: no such file")
            else:
                cfg = load_sip_conf(sc)
                cfg.source = path
    for k in data:
        if k not in ("sip_conf", "general", "api", "store", "peers", "ami"):
            r.warning(None, k, f"unknown key '{k}' ignored")

    g = cfg.general
    gen = data.get("general", {})
    if not isinstance(gen, dict):
        r.error(None, "general", "[general] must be a table")
        gen = {}
    for k, v in gen.items():
        if k == "qualify":
            q = _qualify(v, 0)
            if q is None:
                r.error("general", k, "qualify must be true, false or a number of ms")
            else:
                g.qualify_ms = q
        elif k in ("qualifyfreq", "qualifygap", "qualifypeers"):
            if isinstance(v, bool) or not isinstance(v, int) or (k != "qualifypeers" and v < 0) or (
                    k == "qualifyfreq" and v < 1):
                r.error("general", k, f"{k} must be a non-negative integer")
            elif k == "qualifyfreq":
                g.qualifyfreq_ms = v * 1000
            elif k == "qualifygap":
                g.qualifygap_ms = v
            else:
                g.qualifypeers = v
        elif k in ("useragent", "fromdomain", "externip", "context"):
            if not isinstance(v, str):
                r.error("general", k, f"{k} must be a string")
            else:
                setattr(g, k, v)
        elif k == "bind":
            binds = v if isinstance(v, list) else [v]
            parsed = []
            for b in binds:
                hp = _parse_hostport(b) if isinstance(b, str) else None
                if hp is None or not hp[0]:
                    r.error("general", k, f"bad bind address {b!r} (want \"ip:port\" or \"[v6]:port\")")
                    continue
                parsed.append((hp[0], hp[1] if hp[1] is not None else 5060))
            if parsed:
                g.udpbindaddr, g.bindport = parsed[0]
                g.extra_bindaddrs = parsed[1:]
        else:
            r.warning("general", k, f"unknown option '{k}' ignored")

    svc = cfg.service
    api = data.get("api", {})
    if isinstance(api, dict):
        for k, v in api.items():
            if k == "listen":
                hp = _parse_hostport(v) if isinstance(v, str) else None
                if hp is None or hp[1] is None:
                    r.error("api", k, "listen must be \"host:port\"")
                else:
                    svc.api_host, svc.api_port = hp[0], hp[1]
            elif k == "metrics_peer_limit":
                if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                    r.error("api", k, "metrics_peer_limit must be a non-negative integer")
                else:
                    svc.metrics_peer_limit = v
            elif k == "token":
                if not isinstance(v, str) or len(v) < 16:
                    r.error("api", k, "token must be a string of at least 16 characters")
                else:
                    svc.api_token = v
            else:
                r.warning("api", k, f"unknown option '{k}' ignored")
    ami = data.get("ami", {})
    if isinstance(ami, dict):
        for k, v in ami.items():
            if k == "manager_conf":
                if not isinstance(v, str):
                    r.error("ami", k, "manager_conf must be a file name")
                else:
                    svc.manager_conf = v if os.path.isabs(v) else os.path.join(base, v)
            elif k == "enabled":
                if not isinstance(v, bool):
                    r.error("ami", k, "enabled must be true or false")
                else:
                    svc.ami_enabled = v
            elif k == "listen":
                hp = _parse_hostport(v) if isinstance(v, str) else None
                if hp is None or hp[1] is None:
                    r.error("ami", k, "listen must be \"host:port\"")
                else:
                    svc.ami_listen = (hp[0], hp[1])
            elif k == "banner":
                svc.ami_banner = str(v)
            elif k == "peerstatus_time":
                if not isinstance(v, bool):
                    r.error("ami", k, "peerstatus_time must be true or false")
                else:
                    svc.ami_peerstatus_time = v
            elif k == "users":
                if not isinstance(v, dict) or not all(isinstance(u, dict) for u in v.values()):
                    r.error("ami", k, "[ami.users.NAME] tables expected")
                else:
                    for uname, opts in v.items():
                        if not isinstance(opts.get("secret"), str) or not opts.get("secret"):
                            r.error(f"ami.users.{uname}", "secret", "every AMI user needs a secret")
                        else:
                            svc.ami_users[uname] = opts
            else:
                r.warning("ami", k, f"unknown option '{k}' ignored")
    store = data.get("store", {})
    if isinstance(store, dict):
        for k, v in store.items():
            if k == "state_dir":
                if not isinstance(v, str):
                    r.error("store", k, "state_dir must be a path")
                else:
                    svc.state_dir = v if os.path.isabs(v) else os.path.join(base, v)
            elif k in ("sample_retention", "transition_retention"):
                d = _duration(v)
                if d is None:
                    r.error("store", k, f"{k} must be seconds or a duration like \"7d\"")
                else:
                    setattr(svc, f"{k}_s", d)
            else:
                r.warning("store", k, f"unknown option '{k}' ignored")

    peers = data.get("peers", {})
    if not isinstance(peers, dict):
        r.error(None, "peers", "[peers] must be a table of tables")
        peers = {}
    for name, t in peers.items():
        table = f"peers.{name}"
        if not isinstance(t, dict):
            r.error(table, None, f"peer '{name}' must be a table")
            continue
        p = PeerConfig(name=name, qualify_ms=g.qualify_ms, qualifyfreq_ms=g.qualifyfreq_ms, context=g.context,
                       fromdomain=g.fromdomain, source=f"{path}:{r.line_of(table, None)}")
        ok = True
        for k, v in t.items():
            if k == "host":
                if not isinstance(v, str) or not v:
                    r.error(table, k, "host must be a non-empty string")
                    ok = False
                elif v.lower() == "dynamic":
                    p.dynamic, p.host = True, None
                else:
                    hp = _parse_hostport(v)
                    if hp is None:
                        r.error(table, k, f"bad host {v!r}")
                        ok = False
                    else:
                        p.host = hp[0]
                        if hp[1] is not None:
                            p.port = hp[1]
            elif k == "dynamic":
                if v is True:
                    p.dynamic, p.host = True, None
            elif k == "port":
                if isinstance(v, bool) or not isinstance(v, int) or not 0 < v < 65536:
                    r.error(table, k, "port must be 1..65535")
                    ok = False
                else:
                    p.port = v
            elif k == "transport":
                if v not in TRANSPORTS:
                    r.error(table, k, f"transport must be one of {', '.join(TRANSPORTS)}")
                    ok = False
                else:
                    p.transport = v
            elif k == "qualify":
                q = _qualify(v, g.qualify_ms)
                if q is None:
                    r.error(table, k, "qualify must be true, false or a number of ms")
                    ok = False
                else:
                    p.qualify_ms = q
            elif k == "qualifyfreq":
                if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                    r.error(table, k, "qualifyfreq must be a positive number of seconds")
                    ok = False
                else:
                    p.qualifyfreq_ms = v * 1000
            elif k == "nat":
                modes = v if isinstance(v, list) else [s.strip() for s in str(v).split(",")]
                bad = [m for m in modes if m not in NAT_MODES]
                if bad:
                    r.error(table, k, f"unknown nat mode(s) {bad}")
                    ok = False
                else:
                    p.nat = tuple(modes)
            elif k == "retransmit":
                if v not in RETRANSMIT_POLICIES:
                    r.error(table, k, f"retransmit must be one of {', '.join(RETRANSMIT_POLICIES)}")
                    ok = False
                else:
                    p.retransmit = v
            elif k == "port_in_uri":
                if not isinstance(v, bool):
                    r.error(table, k, "port_in_uri must be true or false")
                else:
                    p.port_in_uri = v
            elif k in ("defaultuser", "fromuser", "fromdomain", "outboundproxy", "description", "secret",
                       "md5secret", "context"):
                if not isinstance(v, str):
                    r.error(table, k, f"{k} must be a string")
                    ok = False
                else:
                    setattr(p, k, v if k in ("description", "context") else (v or None))
            else:
                r.warning(table, k, f"unknown option '{k}' ignored")
        if not p.dynamic and not p.host:
            r.error(table, None, f"peer '{name}' needs host = \"...\" (or host = \"dynamic\")")
            ok = False
        if ok:
            cfg.peers[name] = p
    cfg.messages.extend(r.messages)
    return cfg
