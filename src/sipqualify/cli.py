"""The `sipqualify` command line. Interface contract: docs/cli.md (keep it stable).

Client commands (`peers`, `peer`, `get`, `qualify`, `reload`, `status`) talk to the running
daemon over its local HTTP API; they all take `-c FILE`, `--api HOST:PORT` and
`--state-dir DIR` and need nothing more on the same host. Exit status 0 on success,
non-zero with a one-line reason on stderr otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, NoReturn

from . import __version__
from .addr import split_hostport
from .compat import escape_controls
from .model import DEFAULT_API_HOST, DEFAULT_API_PORT, ConfigError
from .workers import DEFAULT_WORKERS

EXIT_OK = 0
EXIT_FAIL = 1
EXIT_USAGE = 2


class CliError(Exception):
    """`bare`: the message is chan_sip's own words (`Peer nope not found.`), printed without the
    `sipqualify: ` prefix; `status`: the daemon's HTTP status, when it answered."""

    def __init__(self, message: str, code: int = EXIT_FAIL, *, bare: bool = False, status: int = 0) -> None:
        super().__init__(message)
        self.code = code
        self.bare = bare
        self.status = status


def _die(message: str, code: int = EXIT_FAIL, bare: bool = False) -> NoReturn:
    # the daemon's words may quote a peer's
    print(escape_controls(message) if bare else f"sipqualify: {escape_controls(message)}", file=sys.stderr)
    raise SystemExit(code)


def _workers(text: str) -> int:
    """`run --workers N`: 1 to 256 worker processes."""
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of workers: {text!r}") from None
    if not 1 <= n <= 256:
        raise argparse.ArgumentTypeError(f"--workers must be between 1 and 256, not {n}")
    return n


def parse_hostport(text: str, default_port: int = DEFAULT_API_PORT) -> tuple[str, int]:
    """`--api HOST[:PORT]` (`:PORT` alone: the default host; port 0: any free one)."""
    try:
        host, port = split_hostport(DEFAULT_API_HOST + text if text.startswith(":") else text, allow_zero_port=True)
    except ValueError as e:
        raise CliError(f"bad address {text!r}: {e}", EXIT_USAGE) from None
    return host, default_port if port is None else port


# ---------------------------------------------------------------------- client side


class Client:
    def __init__(self, args: argparse.Namespace) -> None:
        from .store.statedir import default_state_dir

        host, port, token, state_dir = DEFAULT_API_HOST, DEFAULT_API_PORT, None, None
        self.ssl: Any = None
        if getattr(args, "config", None):
            from .config import load_config

            try:
                cfg = load_config(args.config)
            except ConfigError as e:
                raise CliError(f"bad config {args.config}: {str(e).splitlines()[0]}") from None
            host, port = cfg.service.api_host, cfg.service.api_port
            token = cfg.service.api_token
            state_dir = cfg.service.state_dir
            if cfg.service.api_tls_cert:
                import ssl

                # trust the daemon's own certificate (self-signed is fine)
                self.ssl = ssl.create_default_context(cafile=cfg.service.api_tls_cert)
                self.ssl.check_hostname = False
        if args.api:
            host, port = parse_hostport(args.api)
        self.state_dir = Path(args.state_dir or state_dir or default_state_dir())
        if token is None:
            try:
                token = (self.state_dir / "api-token").read_text().strip()
            except OSError:
                token = ""
        self.token = token
        scheme = "https" if self.ssl is not None else "http"
        self.base = f"{scheme}://{host if ':' not in host else '[' + host + ']'}:{port}"

    def call(self, method: str, path: str, timeout: float = 80.0, body: Any = None) -> Any:
        data = json.dumps(body).encode() if body is not None else (b"" if method == "POST" else None)
        req = urllib.request.Request(self.base + path, method=method, data=data)
        req.add_header("Authorization", f"Bearer {self.token}")
        if body is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=timeout, context=self.ssl) as r:
                return json.loads(r.read().decode())
        except urllib.error.HTTPError as e:
            try:
                msg = json.loads(e.read().decode()).get("error", e.reason)
            except (ValueError, AttributeError):
                msg = e.reason
            if e.code == 401:
                msg = f"{msg} (token from {self.state_dir / 'api-token'}; use --state-dir or -c)"
            raise CliError(str(msg), status=e.code) from None
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise CliError(f"cannot reach the daemon at {self.base} ({reason}): is `sipqualify run` running?") from None


def _views(client: Client) -> list[Any]:
    from .views import PeerView

    return [PeerView.from_json(d) for d in client.call("GET", "/api/v1/peers")["peers"]]


def cmd_peers(args: argparse.Namespace) -> int:
    from .compat import format_sip_show_peers

    client = Client(args)
    views = _views(client)
    if args.json:
        print(json.dumps([v.to_json() for v in views], indent=2))
    else:
        sys.stdout.write(format_sip_show_peers(views))
    return EXIT_OK


def _peer_json(client: Client, name: str) -> Any:
    from urllib.parse import quote

    try:
        return client.call("GET", f"/api/v1/peers/{quote(name, safe='')}")
    except CliError as e:
        if e.status == 404:  # `sip show peer nope`'s words
            raise CliError(f"Peer {name} not found.", bare=True) from None
        raise


def _remote(body: Any) -> bool:
    """[cluster]: the daemon answered for a peer another node qualifies (its stored state)."""
    return isinstance(body, dict) and body.get("live") is False and "owner" in body


def _peer(client: Client, name: str) -> Any:
    from .views import PeerView

    body = _peer_json(client, name)
    if _remote(body):
        raise CliError(f"Peer {name} is qualified by node {body['owner']}: ask that node")
    return PeerView.from_json(body)


def format_remote_peer(body: dict[str, Any], now: float) -> str:
    """`sipqualify peer NAME` for a peer another node of the fleet qualifies: its stored state."""
    def ms(v: Any) -> str:
        return "-" if v is None else f"{v} ms"

    upd = body.get("updated_at")
    age = f"updated {max(0.0, now - upd):.0f} s ago" if upd is not None else "no state stored yet"
    lines = [f"  * Name       : {body['name']}",
             f"  Owner        : {body.get('owner') or '?'} (stored state, {age})",
             f"  Status       : {body.get('peer_status') or 'UNKNOWN'}"
             + (f" ({ms(body.get('lastms'))})" if body.get("state") == "OK" else ""),
             f"  Qualify      : {ms(body.get('maxms'))}"]
    if body.get("rtt_ms") is not None:
        lines.append(f"  RTT          : {body['rtt_ms']:.3f} ms")
    if body.get("changed_at") is not None:
        lines.append(f"  Since        : {_local(body['changed_at'])}")
    if body.get("stored_by") and body.get("stored_by") != body.get("owner"):
        lines.append(f"  Stored by    : {body['stored_by']} (its previous owner)")
    hist = body.get("history") or []
    if hist:
        lines.append(f"  History      : last {len(hist)} transitions")
        for t in hist:
            lines.append(f"    {_local(t['time'])}  {t['old']} -> {t['new']}  ({t.get('node') or '?'})"
                         + (f"  {t['reason']}" if t.get("reason") else ""))
    return "\n".join(escape_controls(ln) for ln in lines) + "\n\n"


def cmd_peer(args: argparse.Namespace) -> int:
    import time

    from .compat import format_sip_show_peer
    from .views import PeerView, flap_line, format_stats, format_verdict

    body = _peer_json(Client(args), args.name)
    if _remote(body):
        if args.json:
            print(json.dumps(body, indent=2))
        else:
            sys.stdout.write(format_remote_peer(body, time.time()))
        return EXIT_OK
    v = PeerView.from_json(body)
    if args.json:
        out = v.to_json()
        if body.get("vantage"):  # [cluster] vantage_points > 1
            out["vantage"] = body["vantage"]
        print(json.dumps(out, indent=2))
    else:
        sys.stdout.write(format_sip_show_peer(v))
        # ours, after chan_sip's block (which it leaves byte for byte): only when there is something to say
        if v.qualify_source:
            print(f"  Qualify from : {v.qualify_source}")
        if v.transport_error:
            print(f"  Transport err: {escape_controls(v.transport_error)}")
        if v.tls_cert_days_left is not None:
            print(f"  TLS cert     : expires in {v.tls_cert_days_left:.1f} days")
        if v.flow_keepalive:
            print(f"  Flow ping    : {flow_ping(v.flow_keepalive)}")
        sys.stdout.write(dns_lines(v))
        sys.stdout.write(target_lines(v))
        if body.get("vantage"):
            sys.stdout.write(vantage_lines(body["vantage"]))
        if v.silenced and v.silenced_until is not None:
            print(f"  Silenced     : until {_local(v.silenced_until)} (silence {v.silence_id})")
        if v.flapping and not args.verdict:
            sys.stdout.write(flap_line(v))
        if args.verdict:
            from urllib.parse import quote
            s = Client(args).call("GET", f"/api/v1/peers/{quote(args.name, safe='')}/stats")
            sys.stdout.write(format_verdict(v, format_stats(s)))
    return EXIT_OK


def vantage_lines(vt: dict[str, Any]) -> str:
    """`[cluster] vantage_points`: who probes the peer, what each saw, what was agreed."""
    def seen(node: str) -> str:
        o = vt["observations"].get(node)
        if o is None:
            return f"{node} -"
        ms = f" ({o['lastms']} ms)" if o["state"] in ("OK", "LAGGED") and o["lastms"] > 0 else ""
        return f"{node} {o['state']}{ms}"

    nodes = vt["nodes"]
    primary = escape_controls(vt["primary"])
    agreed = f"agreed {vt['agreed']} (primary: this node)" if vt.get("agreed") else f"reported by its primary {primary}"
    return (f"  Vantage      : {vt['quorum']} of {len(nodes)} to agree; {agreed}\n"
            f"                 {escape_controls(', '.join(seen(n) for n in nodes))}\n")


def target_lines(v: Any) -> str:
    """qualify_targets = all: one line per DNS target, after the DNS lines."""
    if not v.targets:
        return ""
    lines = [f"  Targets      : {len(v.targets)}, the peer's state is their rollup"]
    for t in v.targets:
        why = f"  ({t['transport_error']})" if t.get("transport_error") else ""
        lines.append(f"    {t['label']:<52} {t['status']}{why}")
    return "\n".join(escape_controls(ln) for ln in lines) + "\n\n"


def flow_ping(ka: dict[str, Any]) -> str:
    """`peer X`: the RFC 5626 keep-alive of a TCP/TLS flow, e.g. "0.21 ms, 12/12 answered"."""
    rtt = f"{ka['rtt_s'] * 1000:.2f} ms" if ka.get("rtt_s") is not None else "no pong yet"
    text = f"{rtt}, {ka['pongs']}/{ka['pings']} answered"
    if ka.get("unanswered_s") is not None:
        text += f", a ping unanswered for {ka['unanswered_s']:.1f} s"
    return text


def dns_lines(v: Any) -> str:
    """After the `sip show peer` block (which stays chan_sip's): how a host name resolved, or why not."""
    if v.dns is None and v.dns_error is None:
        return ""
    lines = [f"  DNS          : {v.dns or '(unresolved)'}"]
    if v.dns_error:
        lines.append(f"  DNS error    : {v.dns_error}")
    return "\n".join(escape_controls(ln) for ln in lines) + "\n\n"


def cmd_get(args: argparse.Namespace) -> int:
    from .compat import SIPPEER_ITEMS, sippeer_item
    from .pjsip_compat import PJSIP_FUNCTIONS, function_aor, read_function

    fn, paren, data = args.name.partition("(")
    if paren and fn in PJSIP_FUNCTIONS:  # `get 'PJSIP_CONTACT(id,field)'`, `get 'PJSIP_AOR(aor,field)'`
        if not data.endswith(")") or args.item is not None:
            raise CliError(f"usage: sipqualify get '{fn}(NAME,FIELD)'", EXIT_USAGE)
        aor = urllib.parse.quote(function_aor(fn, data[:-1]), safe="")
        res, value, why = read_function(Client(args).call("GET", f"/api/v1/pjsip?aor={aor}"), fn, data[:-1])
        print(escape_controls(value))
        if res:  # Asterisk's Failure (1) / (-1): an empty result and the line Asterisk logs
            raise CliError(why, EXIT_FAIL)
        return EXIT_OK
    args.item = "ip" if args.item is None else args.item
    if args.item.lower() not in SIPPEER_ITEMS and not args.item.lower().startswith(("chanvar[", "codec[")):
        raise CliError(f"unknown item {args.item!r}; known: {', '.join(SIPPEER_ITEMS)}", EXIT_USAGE)
    print(escape_controls(sippeer_item(_peer(Client(args), args.name), args.item)))
    return EXIT_OK


def cmd_qualify(args: argparse.Namespace) -> int:
    from urllib.parse import quote

    client = Client(args)
    wait = "0" if args.no_wait else "1"
    try:
        body = client.call("POST", f"/api/v1/peers/{quote(args.name, safe='')}/qualify?wait={wait}")
    except CliError as e:
        if e.status != 404:
            raise
        try:
            _peer(client, args.name)
        except CliError as e2:
            if e2.bare:  # no such peer: `sip qualify peer nope`'s words
                raise CliError(f"Peer '{args.name}' not found", bare=True) from None
            raise
        raise  # the peer exists but has no address to qualify: the daemon's words
    res = body.get("result")
    if res is None:
        print(f"Qualifying peer '{args.name}'")
    elif res["answered"]:
        print(f"Peer '{args.name}': {res['status_code']} after {res['rtt_ms']:.3f} ms -> {body.get('status')}")
    else:
        print(f"Peer '{args.name}': no answer ({res['transmissions']} transmissions) -> {body.get('status')}")
    return EXIT_OK


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def until_time(text: str, now: float) -> float:
    """`--until`: a duration from now (`90m`, `2h`, `1d`, `30s`) or an ISO 8601 date and time
    (`2026-12-02T06:00`, local time unless it names a zone)."""
    from datetime import datetime

    t = text.strip()
    if t[:-1].isascii() and t[:-1].isdigit() and t[-1:] in _UNITS:
        return now + int(t[:-1]) * _UNITS[t[-1]]
    try:
        dt = datetime.fromisoformat(t)
    except ValueError:
        raise CliError(f"--until: '{text}' is neither a duration (90m, 2h, 1d) nor an ISO 8601 date and time") from None
    return (dt if dt.tzinfo is not None else dt.astimezone()).timestamp()


def cmd_silence(args: argparse.Namespace) -> int:
    """A maintenance window: the peer's (or group's) notifications are held back until then."""
    import time

    body = {"group" if args.group else "peer": args.name, "until": until_time(args.until, time.time()),
            "comment": args.comment}
    s = Client(args).call("POST", "/api/v1/silences", body=body)
    print(f"silence {s['id']}: {'group' if args.group else 'peer'} {args.name} until {_local(s['until'])}")
    return EXIT_OK


def cmd_silences(args: argparse.Namespace) -> int:
    rows = Client(args).call("GET", "/api/v1/silences")["silences"]
    if args.json:
        print(json.dumps(rows, indent=2))
        return EXIT_OK
    table: list[tuple[str, ...]] = [("ID", "Peer/group", "Until", "Comment")]
    for r in rows:
        who = r["peer"] if r["peer"] is not None else f"group {r['group']}"
        table.append(tuple(escape_controls(str(c)) for c in (r["id"], who, _local(r["until"]), r["comment"])))
    widths = [max(len(row[i]) for row in table) for i in range(3)]
    for row in table:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=False)) + "  " + row[3])
    return EXIT_OK


def cmd_unsilence(args: argparse.Namespace) -> int:
    Client(args).call("DELETE", f"/api/v1/silences/{args.id}")
    return EXIT_OK


def _local(t: float) -> str:
    import time

    try:
        return time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(t))
    except (OverflowError, OSError, ValueError):  # a silence "for ever" (year > 9999)
        return f"{t:.0f}"


def cmd_reload(args: argparse.Namespace) -> int:
    # like `sip reload`, nothing on success (what changed: the API's answer, the daemon's log)
    Client(args).call("POST", "/api/v1/reload")
    return EXIT_OK


def cmd_registrations(args: argparse.Namespace) -> int:
    """The bindings of registered dynamic peers, like `pjsip show contacts`."""
    regs = Client(args).call("GET", "/api/v1/registrations")["registrations"]
    if args.json:
        print(json.dumps(regs, indent=2))
        return EXIT_OK
    rows: list[tuple[str, ...]] = [("Peer", "Contact", "Address", "Transport", "Expires", "NAT", "User-Agent")]
    for r in regs:
        addr = f"[{r['address']}]:{r['port']}" if ":" in r["address"] else f"{r['address']}:{r['port']}"
        # the phone chose its Contact and User-Agent: an ESC or LF in them must not reach the terminal
        rows.append(tuple(escape_controls(str(c)) for c in (
            r["peer"], r["contact"], addr, r["transport"], f"{r['expires_in']} s", "yes" if r["nat"] else "no",
            r.get("useragent") or "")))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=False)) + "  " + row[-1])
    print(f"{len(regs)} registration{'s' if len(regs) != 1 else ''}")
    return EXIT_OK


PJSIP_SHOW = ("contacts", "contact", "aors", "aor", "endpoints", "endpoint")


def cmd_pjsip(args: argparse.Namespace) -> int:
    """`pjsip show contacts|aors|endpoints [like REGEX]`, `pjsip show contact AOR/URI|aor NAME|endpoint NAME`."""
    from . import pjsip_compat as pc

    words = args.words
    if len(words) < 2 or words[0] != "show" or words[1] not in PJSIP_SHOW:
        raise CliError("usage: sipqualify pjsip show contacts|aors|endpoints [like REGEX] | "
                       "contact AOR/URI | aor NAME | endpoint NAME", EXIT_USAGE)
    what, rest = words[1], words[2:]
    plural = what.endswith("s")
    if (plural and rest and (len(rest) != 2 or rest[0] != "like")) or (not plural and len(rest) != 1):
        raise CliError(f"usage: sipqualify pjsip show {what} " + ("[like REGEX]" if plural else "NAME"), EXIT_USAGE)
    query = f"?endpoint={urllib.parse.quote(rest[0], safe='')}" if what == "endpoint" else ""
    snap = Client(args).call("GET", f"/api/v1/pjsip{query}")
    if args.json:
        print(json.dumps(snap, indent=2))
        return EXIT_OK
    code = EXIT_OK
    if plural:
        show = {"contacts": pc.show_contacts, "aors": pc.show_aors, "endpoints": pc.show_endpoints}[what]
        try:
            text = show(snap, rest[1] if rest else None)
        except re.error as e:
            raise CliError(f"bad regular expression {rest[1]!r}: {e}", EXIT_USAGE) from None
    else:
        one = {"contact": pc.show_contact, "aor": pc.show_aor, "endpoint": pc.show_endpoint}[what]
        found = one(snap, rest[0])
        if found is None:  # pjsip_cli.c's words, on stdout as Asterisk prints them
            text, code = pc.not_found(rest[0]), EXIT_FAIL
        else:
            text = found
    sys.stdout.write("\n".join(escape_controls(line) for line in text.split("\n")))
    return code


def cmd_status(args: argparse.Namespace) -> int:
    print(json.dumps(Client(args).call("GET", "/api/v1/status"), indent=2))
    return EXIT_OK


def cmd_realtime(args: argparse.Namespace) -> int:
    """`realtime trigger-sql [TABLE]`: the PostgreSQL trigger that sends a NOTIFY per changed row."""
    from .realtime.backends import trigger_sql

    print(trigger_sql(args.table), end="")
    return EXIT_OK


def cmd_check_config(args: argparse.Namespace) -> int:
    from .config import check_config

    msgs = check_config(args.file)
    for m in msgs:
        print(m)
    errors = [m for m in msgs if m.severity == "error"]
    if errors:
        print(f"{args.file}: {len(errors)} error(s), {len(msgs) - len(errors)} warning(s)", file=sys.stderr)
        return EXIT_FAIL
    from .config import load_config

    cfg = load_config(args.file)
    q = sum(1 for p in cfg.peers.values() if p.qualify_ms)
    print(f"{args.file}: OK ({len(cfg.peers)} peers, {q} qualified, {len(msgs)} warning(s))")
    return EXIT_OK


# ---------------------------------------------------------------------- daemon side


def _setup_logging(level: str, fmt: str = "plain") -> None:
    from .logformat import setup

    setup(level, fmt)


def _event_loop_policy() -> None:
    """uvloop only on request (SIPQUALIFY_UVLOOP=1): sipqualify reads its SIP sockets itself
    (recvmsg with kernel timestamps), where uvloop measured slower than asyncio's own loop
    (docs/performance.md), and libuv cannot watch a socket that reports ICMP errors."""
    if os.environ.get("SIPQUALIFY_UVLOOP", "") in ("", "0"):
        return
    try:
        import uvloop
    except ImportError:
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def cmd_run(args: argparse.Namespace) -> int:
    from .logformat import set_format, toml_log_format
    from .service import Service, ServiceOptions

    # --log-format, else the TOML's [service] log_format (peeked so that the start-up lines
    # come out in it too; the service's own reading of the file is the one that checks it)
    _setup_logging(args.log_level, args.log_format or toml_log_format(args.config) or "plain")
    api_host = api_port = None
    if args.api:
        api_host, api_port = parse_hostport(args.api)

    async def main() -> int:
        svc = Service(ServiceOptions(args.config, api_host, api_port, args.state_dir,
                                     manager_conf=args.manager_conf, workers=args.workers, log_level=args.log_level,
                                     store_url=args.store_url))
        try:
            await svc.start()
        except ConfigError as e:
            await svc.close()
            for line in str(e).splitlines():
                print(f"sipqualify: {line}", file=sys.stderr)
            return EXIT_FAIL
        except OSError as e:
            await svc.close()
            print(f"sipqualify: cannot start: {e}", file=sys.stderr)
            return EXIT_FAIL
        if args.log_format is None:
            set_format(svc.config.service.log_format)
        await svc.run_forever()
        return EXIT_OK

    _event_loop_policy()
    return asyncio.run(main())


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    _setup_logging(args.log_level)
    _event_loop_policy()
    api = parse_hostport(args.api) if args.api else None
    return asyncio.run(run_demo(duration=args.duration, interval=args.interval, api=api,
                                state_dir=args.state_dir))


def cmd_ping(args: argparse.Namespace) -> int:
    from .net.ping import PingError, host_label, nagios, ping, resolve_target, summarize

    if args.count < 1 or args.timeout <= 0 or args.interval < 0:
        print("SIP UNKNOWN - --count must be >= 1, --timeout > 0, --interval >= 0", file=sys.stderr)
        return 3

    async def main() -> int:
        try:
            target = await resolve_target(args.uri, args.transport)
        except PingError as e:
            print(f"SIP UNKNOWN - {e}")
            return 3
        if not args.quiet:
            print(f"PING {target.uri} ({host_label(target)}) via {target.transport.upper()}")
        try:
            probes = await ping(target, count=args.count, interval=args.interval, timeout=args.timeout)
        except OSError as e:
            print(f"SIP UNKNOWN - {target.uri}: {e}")
            return 3
        for p in probes:
            if args.quiet:
                continue
            if p.answered:
                print(f"{p.status} {p.reason} from {host_label(target)}: seq={p.seq} rtt={p.rtt_ms:.3f} ms"
                      + (f" ({p.transmissions} transmissions)" if p.transmissions > 1 else ""))
            else:
                print(f"no answer from {host_label(target)}: seq={p.seq} {p.reason} "
                      f"({p.transmissions} transmissions)")
        s = summarize(probes)
        if not args.quiet:
            print(f"--- {target.uri} SIP ping statistics ---")
            print(f"{s.sent} requests sent, {s.answered} answered, {s.loss_pct:g}% loss")
            if s.avg_ms is not None:
                print(f"rtt min/avg/max = {s.min_ms:.3f}/{s.avg_ms:.3f}/{s.max_ms:.3f} ms")
        code, line = nagios(s, args.warning, args.critical, target.uri)
        print(line)
        return code

    return asyncio.run(main())


# ---------------------------------------------------------------------- parser


def _client_opts(p: argparse.ArgumentParser) -> None:
    p.add_argument("-c", "--config", metavar="FILE", help="sip.conf or sipqualify.toml the daemon runs with")
    p.add_argument("--api", metavar="HOST:PORT",
                   help=f"daemon API address (default {DEFAULT_API_HOST}:{DEFAULT_API_PORT})")
    p.add_argument("--state-dir", metavar="DIR", help="where the daemon keeps SQLite and api-token")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="sipqualify", description="Asterisk-exact SIP qualify as a service.")
    ap.add_argument("--version", action="version", version=f"sipqualify {__version__}")
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("run", help="run the daemon")
    _client_opts(p)
    p.add_argument("--manager-conf", metavar="FILE", help="Asterisk manager.conf: users and port of the AMI port")
    p.add_argument("--store-url", metavar="URL",
                   help="keep state in this PostgreSQL database (postgresql://user@host:port/db) instead of "
                        "SQLite files in the state directory; beats the TOML's [store] url")
    p.add_argument("--log-level", default="info")
    p.add_argument("--log-format", choices=("plain", "asterisk", "json"),
                   help="log lines as plain (default), asterisk (chan_sip's NOTICE[tid] chan_sip.c: ...) "
                        "or json (one object a line); default: the TOML's [service] log_format")
    p.add_argument("--workers", type=_workers, default=DEFAULT_WORKERS, metavar="N",
                   help=f"qualify static peers in N worker processes (default {DEFAULT_WORKERS}: "
                        "all in this one); README \"Workers\"")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("demo", help="built-in endpoints on loopback and a daemon watching them")
    p.add_argument("--duration", type=float, default=0, help="stop after N seconds (default: until Ctrl-C)")
    p.add_argument("--interval", type=float, default=5.0, help="seconds between peer tables")
    p.add_argument("--api", metavar="HOST:PORT", help="API address for the demo daemon")
    p.add_argument("--state-dir", metavar="DIR", help="state directory for the demo daemon")
    p.add_argument("--log-level", default="warning")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("peers", help="`sip show peers`")
    _client_opts(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_peers)

    p = sub.add_parser("peer", help="`sip show peer NAME`")
    _client_opts(p)
    p.add_argument("name")
    p.add_argument("--json", action="store_true")
    p.add_argument("--verdict", action="store_true",
                   help="also the verdict, its reason and policy, and the latency statistics")
    p.set_defaults(func=cmd_peer)

    p = sub.add_parser("get", help="SIPPEER(NAME,ITEM), or 'PJSIP_CONTACT(ID,FIELD)' / 'PJSIP_AOR(AOR,FIELD)'")
    _client_opts(p)
    p.add_argument("name", help="a peer name, or a PJSIP_CONTACT(...) / PJSIP_AOR(...) expression")
    p.add_argument("item", nargs="?", default=None, help="the SIPPEER item (default: ip)")
    p.set_defaults(func=cmd_get)

    p = sub.add_parser("qualify", help="qualify a peer now (keeps its periodic schedule)")
    _client_opts(p)
    p.add_argument("name")
    p.add_argument("--no-wait", action="store_true", help="return at once instead of waiting for the result")
    p.set_defaults(func=cmd_qualify)

    p = sub.add_parser("reload", help="re-read the configuration (`sip reload`)")
    _client_opts(p)
    p.set_defaults(func=cmd_reload)

    p = sub.add_parser("silence", help="hold a peer's (or group's) notifications back until a time")
    _client_opts(p)
    p.add_argument("name", metavar="PEER")
    p.add_argument("--until", required=True, metavar="WHEN",
                   help="a duration (90m, 2h, 1d) or an ISO 8601 date and time (local unless it names a zone)")
    p.add_argument("--comment", default="", help="why (shown by `silences`)")
    p.add_argument("--group", action="store_true", help="PEER names a group (`group` of peers)")
    p.set_defaults(func=cmd_silence)

    p = sub.add_parser("silences", help="the silences in force")
    _client_opts(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_silences)

    p = sub.add_parser("unsilence", help="remove a silence")
    _client_opts(p)
    p.add_argument("id", type=int)
    p.set_defaults(func=cmd_unsilence)

    p = sub.add_parser("registrations", help="registered dynamic peers and their bindings (`pjsip show contacts`)")
    _client_opts(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_registrations)

    p = sub.add_parser("pjsip", help="`pjsip show contacts|contact|aors|aor|endpoints|endpoint` (pjsip.conf)")
    _client_opts(p)
    p.add_argument("--json", action="store_true", help="the daemon's snapshot (GET /api/v1/pjsip)")
    p.add_argument("words", nargs="+", metavar="show WHAT [like REGEX | NAME]")
    p.set_defaults(func=cmd_pjsip)

    p = sub.add_parser("status", help="daemon and engine counters (JSON)")
    _client_opts(p)
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("check-config", help="validate a sip.conf, pjsip.conf or sipqualify.toml")
    p.add_argument("file")
    p.set_defaults(func=cmd_check_config)

    p = sub.add_parser("realtime", help="realtime helpers: `realtime trigger-sql [TABLE]`")
    p.add_argument("action", choices=["trigger-sql"])
    p.add_argument("table", nargs="?", default="sippeers")
    p.set_defaults(func=cmd_realtime)

    p = sub.add_parser("ping", help="one-shot OPTIONS probe with Nagios exit codes")
    p.add_argument("uri", help="sip:host[:port] (or just host)")
    p.add_argument("--count", "-n", type=int, default=1)
    p.add_argument("--interval", "-i", type=float, default=1.0, help="seconds between probes")
    p.add_argument("--timeout", "-t", type=float, default=5.0, help="seconds to wait for each answer")
    p.add_argument("--transport", choices=["udp", "tcp", "tls"])
    p.add_argument("-w", "--warning", type=float, metavar="MS", help="WARNING if average RTT exceeds MS")
    p.add_argument("-c", "--critical", type=float, metavar="MS", help="CRITICAL if average RTT exceeds MS")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the Nagios status line")
    p.set_defaults(func=cmd_ping)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except CliError as e:
        _die(str(e), e.code, e.bare)
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    raise SystemExit(main())
