"""Local HTTP JSON API (aiohttp): what the CLI talks to. Documented in docs/api.md.

Bearer-token auth on everything but /healthz; binds to 127.0.0.1 by default and refuses a
non-loopback address without an explicitly configured token.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import math
import time
from datetime import datetime
from typing import TYPE_CHECKING, Any

from aiohttp import web

from ..addr import is_loopback
from ..model import ConfigError, ConfigMessage
from ..net.httplog import ServerLog
from ..qualify.capture import CaptureFull
from ..views import PeerView, stats_json
from . import dashboard
from .events import HUB_KEY, EventHub
from .keys import MODEL_KEY, REGISTRY_KEY
from .params import query_float

if TYPE_CHECKING:
    from ..model import ServiceConfig
    from ..readmodel import ReadModel
    from ..store.silences import SilenceBook

API = "/api/v1"
# Requests with a body (POST) carry at most this much: the API takes no documents, and a body
# is refused with 413 before it is read, never buffered whole.
MAX_BODY = 64 * 1024
log = logging.getLogger("sipqualify.api")


def _model(request: web.Request) -> ReadModel:
    return request.app[MODEL_KEY]


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def token_ok(header: str, token: str) -> bool:
    """`Authorization: Bearer <token>`, compared in constant time on bytes. Header bytes that are
    not UTF-8 reach us as surrogate escapes (or are not encodable at all): never the token."""
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer":
        return False
    try:
        raw = given.strip().encode("utf-8", "surrogateescape")
    except UnicodeError:
        return False
    return hmac.compare_digest(raw, token.encode())


@web.middleware
async def auth_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    if request.path == "/healthz" or request.path in dashboard.PUBLIC:
        return await handler(request)  # type: ignore[no-any-return]
    if not token_ok(request.headers.get("Authorization", ""), _model(request).token):
        # the dashboard's session cookie stands for the token; what it changes needs its CSRF token
        session = dashboard.session_of(request)
        if session is None:
            return dashboard.unauthenticated(request) or _error(401, "missing or wrong API token")
        if request.method not in ("GET", "HEAD") and not dashboard.csrf_ok(request, session):
            return _error(403, f"missing or wrong {dashboard.CSRF_HEADER} header")
    if request.body_exists:
        # No handler reads the body, so aiohttp's client_max_size never applied: refuse a large
        # one here, by its Content-Length, or while reading a chunked one (read() stops at the
        # limit). What the client still sends is discarded by aiohttp's lingering close.
        length = request.content_length
        too_large = length is not None and length > MAX_BODY
        if not too_large:
            try:
                await request.read()
            except web.HTTPRequestEntityTooLarge:
                too_large = True
        if too_large:
            resp = _error(413, f"request body larger than {MAX_BODY} bytes")
            resp.force_close()  # the rest of the body is discarded, then the connection closed
            return resp
    try:
        return await handler(request)  # type: ignore[no-any-return]
    except web.HTTPException:
        raise
    except Exception as e:  # a bug in one handler must not take the daemon down
        log.exception("API handler failed")
        return _error(500, f"internal error: {type(e).__name__}")


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Ready: peers loaded, SIP socket(s) open, and the databases taking writes (503 otherwise,
    with the cause of each storage failure under `errors`)."""
    model = _model(request)
    health = model.storage_health()
    checks = {**model.ready(),
              "store": model.store is not None and bool(health.get("store", {}).get("ok", False))}
    for db in ("bindings", "realtime"):
        if db in health:
            checks[db] = bool(health[db]["ok"])
    errors = {name: {"cause": h["cause"], "since": h["since"]} for name, h in health.items() if not h["ok"]}
    sched = model.scheduler_health()  # the liveness watchdog (qualify/watchdog.py)
    checks["scheduler"] = bool(sched["ok"])
    if not sched["ok"]:
        errors["scheduler"] = {"cause": sched["cause"], "since": sched["since"]}
    ok = all(checks.values())
    body: dict[str, Any] = {"ready": ok, "checks": checks}
    if errors:
        body["errors"] = errors
    return web.json_response(body, status=200 if ok else 503)


async def peers(request: web.Request) -> web.Response:
    model = _model(request)
    rows = [v.to_json() for v in model.views()]
    fleet = await model.fleet()
    if fleet is None:
        return web.json_response({"peers": rows})
    node, remote = fleet  # [cluster]: this node's peers, then the static peers the others qualify
    for r in rows:
        r["node"], r["local"] = node, True
    return web.json_response({"peers": rows + remote, "node": node})


async def _remote(model: ReadModel, name: str) -> dict[str, Any] | web.Response:
    """[cluster]: a peer another node qualifies, from the shared store (owner, `live: false`);
    else the answer to give: 404, or 503 while the shared store is down (not "not found")."""
    try:
        remote = await model.fleet_peer(name)
    except Exception as e:
        log.warning("fleet view of peer %r: %s", name, e)
        return _error(503, f"shared store unavailable: {e}")
    return remote if remote is not None else _error(404, f"Peer {name} not found.")


async def peer(request: web.Request) -> web.Response:
    model = _model(request)
    p = model.peer(request.match_info["name"])
    if p is None:
        remote = await _remote(model, request.match_info["name"])
        return remote if isinstance(remote, web.Response) else web.json_response(remote)
    body = model.view(p).to_json()
    if (vantage := model.vantage_view(p.name)) is not None:  # [cluster] vantage_points > 1
        body["vantage"] = vantage
    return web.json_response(body)


async def peer_stats(request: web.Request) -> web.Response:
    model = _model(request)
    name = request.match_info["name"]
    p = model.peer(name)
    if p is None:  # [cluster]: another node's peer: the windows from the shared store, no live figures
        remote = await _remote(model, name)
        if isinstance(remote, web.Response):
            return remote
        body: dict[str, Any] = {"peer": name, "owner": remote["owner"], "live": False}
        if model.store is not None and model.config.service.store_url is not None:
            body.update(await asyncio.to_thread(model.store.windows, name, time.time()))
        return web.json_response(body)
    body = stats_json(p.name, p.stats, model.view(p))
    store = model.store
    if store is not None:  # percentiles and uptime over time windows, from the history (store/windows.py)
        body.update(await asyncio.to_thread(store.windows, p.name, time.time()))
    return web.json_response(body)


async def qualify(request: web.Request) -> web.Response:
    model = _model(request)
    name = request.match_info["name"]
    wait = request.query.get("wait", "1") not in ("0", "false", "no")
    try:
        res = await model.qualify(name, wait=wait)
    except KeyError:
        if model.peer(name) is None:  # [cluster]: another node's peer is qualified there, not here
            remote = await _remote(model, name)
            if not isinstance(remote, web.Response) and remote.get("owner"):
                return web.json_response({"error": f"Peer {name} is qualified by node {remote['owner']}: ask that "
                                                   "node.", "owner": remote["owner"]}, status=409)
        return _error(404, f"Peer {name} not found or has no address.")
    except TimeoutError:
        return _error(504, "no result in time")
    p = model.peer(name)
    body: dict[str, Any] = {"peer": name, "queued": True}
    if res is not None:
        body["result"] = {
            "answered": res.answered,
            "rtt_ms": res.rtt * 1000 if res.rtt is not None else None,
            "status_code": res.status_code,
            "transmissions": res.transmissions,
        }
    if p is not None:
        body["status"] = p.status
    return web.json_response(body)


MAX_SILENCE_S = 366 * 86400


async def silence(request: web.Request) -> web.Response:
    """The dashboard's "Silence until": a silence of this peer until `until` (UNIX time), kept in
    the silences book like `POST /api/v1/silences`; without `until`, or in the past: the peer's
    own silences end."""
    model = _model(request)
    name = request.match_info["name"]
    if model.peer(name) is None:
        return _error(404, f"Peer {name} not found.")
    book = _silences(request)
    now = time.time()
    until = query_float(request, "until", None)
    if until is not None and until > now + MAX_SILENCE_S:
        raise web.HTTPBadRequest(text="until must be within a year")
    if until is not None and until > now:
        await book.add(name, None, until, "dashboard")
    else:
        for s in book.list():
            if s.peer == name:
                await book.remove(s.id)
    p = model.peer(name)
    current = book.match(name, p.cfg.group) if p is not None else None
    return web.json_response({"peer": name, "silenced_until": current.until if current is not None else None})


async def capture(request: web.Request) -> web.Response:
    """Start or extend watching the peer: its OPTIONS exchanges are kept (the last one) until then."""
    name = request.match_info["name"]
    try:
        until = _model(request).watch(name)
    except KeyError:
        return _error(404, f"Peer {name} not found.")
    except CaptureFull as e:
        return _error(429, f"{e}: try again when one is no longer watched")
    return web.json_response({"peer": name, "watching_until": until})


async def exchange(request: web.Request) -> web.Response:
    """The last OPTIONS request and response of a watched peer, as sent and received."""
    name = request.match_info["name"]
    try:
        return web.json_response(_model(request).exchange(name))
    except KeyError:
        return _error(404, f"Peer {name} not found.")


async def reload(request: web.Request) -> web.Response:
    try:
        s = await _model(request).reload()
    except ConfigError as e:
        return _error(400, str(e))
    return web.json_response(
        {"added": s.added, "removed": s.removed, "changed": s.changed, "unchanged": len(s.unchanged)}
    )


def _silences(request: web.Request) -> SilenceBook:
    book = _model(request).silences
    if book is None:
        raise web.HTTPServiceUnavailable(text='{"error": "not started"}', content_type="application/json")
    return book


async def list_silences(request: web.Request) -> web.Response:
    """The silences in force (README "Silences")."""
    return web.json_response({"silences": [s.to_json() for s in _silences(request).list()]})


async def add_silence(request: web.Request) -> web.Response:
    """{peer | group, until, comment}: a maintenance window; `until` is UNIX time or ISO 8601."""
    book = _silences(request)
    try:
        body = await request.json()
    except ValueError:
        return _error(400, "the body must be a JSON object")
    if not isinstance(body, dict):
        return _error(400, "the body must be a JSON object")
    peer, group, comment = body.get("peer"), body.get("group"), body.get("comment", "")
    if not all(v is None or isinstance(v, str) for v in (peer, group)) or not isinstance(comment, str):
        return _error(400, "peer, group and comment must be strings")
    try:
        until = parse_until(body.get("until"))
    except ValueError as e:
        return _error(400, str(e))
    if peer is not None and group is None and _model(request).peer(peer) is None:
        return _error(404, f"Peer {peer} not found.")
    if not until > time.time():
        return _error(409, "until is not in the future")
    try:  # JSON may carry lone surrogates, which SQLite (UTF-8) cannot store: U+FFFD instead
        s = await book.add(_text(peer), _text(group), until, _text(comment) or "")
    except ValueError as e:
        return _error(400, str(e))
    log.info("silence %d: %s '%s' until %.0f (%s)", s.id, "peer" if peer is not None else "group", s.peer or s.group,
             until, s.comment)
    return web.json_response(s.to_json(), status=201)


async def delete_silence(request: web.Request) -> web.Response:
    sid = request.match_info["id"]
    if not (sid.isascii() and sid.isdigit()) or not await _silences(request).remove(int(sid)):
        return _error(404, f"no silence {sid}")
    log.info("silence %s removed", sid)
    return web.json_response({"deleted": int(sid)})


def _text(v: str | None) -> str | None:
    return v.encode("utf-16", "surrogatepass").decode("utf-16", "replace") if v is not None else None


def parse_until(v: object) -> float:
    """A silence's end: UNIX time (a number), or ISO 8601 with a time zone (`2026-12-02T06:00:00Z`)."""
    if isinstance(v, bool) or not isinstance(v, int | float | str):
        raise ValueError("until must be a UNIX time or an ISO 8601 date and time with a time zone")
    if isinstance(v, str):
        try:
            dt = datetime.fromisoformat(v)
            if dt.tzinfo is None:
                raise ValueError(f"until: '{v}' has no time zone (add Z or +01:00)")
            return dt.timestamp()
        except (OverflowError, OSError):
            raise ValueError(f"until: '{v}' is out of range") from None
        except ValueError as e:
            raise ValueError(str(e) if "time zone" in str(e) else f"until: '{v}' is not an ISO 8601 date and time"
                             ) from None
    if not math.isfinite(v):
        raise ValueError("until must be a finite UNIX time")
    return float(v)


def _float(request: web.Request, key: str, default: float | None) -> float | None:
    v = request.query.get(key)
    if v is None:
        return default
    try:
        f = float(v)
    except ValueError:
        raise web.HTTPBadRequest(text=f"{key} must be a number") from None
    if f != f or f in (float("inf"), float("-inf")):
        raise web.HTTPBadRequest(text=f"{key} must be a finite number")
    return f


async def history(request: web.Request) -> web.Response:
    store = _model(request).store
    assert store is not None
    name = request.match_info["name"]
    since = query_float(request, "since", time.time() - 86400)  # default: the last 24 hours
    until = query_float(request, "until", None)
    limit_f = query_float(request, "limit", 1000.0)
    if limit_f is None or limit_f < 1 or limit_f != int(limit_f):
        raise web.HTTPBadRequest(text="limit must be a whole number >= 1")
    limit = min(int(limit_f), 100_000)
    rows = await asyncio.to_thread(store.transitions, name, since, until, limit)
    return web.json_response(
        {
            "peer": name,
            "transitions": [
                {"time": r.time, "old": r.old, "new": r.new, "lastms": r.lastms, "maxms": r.maxms, "rtt_ms": r.rtt_ms,
                 "reason": r.reason}
                for r in rows
            ],
        }
    )


async def rtt(request: web.Request) -> web.Response:
    store = _model(request).store
    assert store is not None
    name = request.match_info["name"]
    now = time.time()
    since = query_float(request, "since", now - 3600) or now - 3600
    until = query_float(request, "until", now) or now
    step = query_float(request, "step", 60.0)
    if step is None or not step > 0.001:
        raise web.HTTPBadRequest(text="step must be > 0.001 seconds")
    series = await asyncio.to_thread(store.rtt_series, name, since, until, step)
    return web.json_response({"peer": name, "since": since, "until": until, "step": step, "series": series})


async def metrics(request: web.Request) -> web.Response:
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    from .metrics import render_peer_series

    model = _model(request)
    await model.count_fleet()  # the fleet's counts, read off the loop (cached): the collector shows them
    remote: list[PeerView] = []
    if request.query.get("fleet") in ("1", "true", "yes") and model.fleet_shared:  # the others' peers too
        try:
            remote = await model.remote_views()
        except Exception as e:  # the shared store is down: this node's series, said so in the log
            log.warning("/metrics?fleet=1: other nodes' peers left out: shared store: %s", e)
    data = generate_latest(request.app[REGISTRY_KEY])  # type: ignore[arg-type]
    data += render_peer_series(model, model.config.service.metrics_peer_limit, remote).encode()
    return web.Response(body=data, headers={"Content-Type": CONTENT_TYPE_LATEST})


PROBE_MODULES = {"sip_udp": ("udp", False), "sip_tcp": ("tcp", False), "sip_udp_2xx": ("udp", True),
                 "sip_tcp_2xx": ("tcp", True)}


async def probe(request: web.Request) -> web.Response:
    """blackbox_exporter-style `/probe?target=sip:host[:port]&module=sip_udp`: one OPTIONS,
    answered with the probe's own metrics (blackbox cannot probe SIP over UDP)."""
    from ..net.ping import PingError, ping, resolve_target

    target = request.query.get("target", "")
    module = request.query.get("module", "sip_udp")
    if not target:
        return web.Response(status=400, text="target parameter is missing\n")
    if module not in PROBE_MODULES:
        return web.Response(status=400, text=f"unknown module {module!r}; known: {', '.join(PROBE_MODULES)}\n")
    transport, need_2xx = PROBE_MODULES[module]
    try:
        scrape_timeout = float(request.headers.get("X-Prometheus-Scrape-Timeout-Seconds", "5.5"))
    except ValueError:
        scrape_timeout = 5.5
    timeout = max(0.5, min(scrape_timeout - 0.5, 30.0))
    t0 = time.monotonic()
    success, status, rtt, transmissions = 0, 0, float("nan"), 0
    try:
        t = await resolve_target(target, transport)
        (p,) = await ping(t, count=1, timeout=timeout)
        transmissions = p.transmissions
        if p.answered and p.status is not None and p.rtt_ms is not None:
            status, rtt = p.status, p.rtt_ms / 1000.0
            success = 1 if (not need_2xx or 200 <= status < 300) else 0
    except (PingError, OSError):
        pass
    lines = [
        "# HELP probe_success Whether the SIP OPTIONS probe succeeded",
        "# TYPE probe_success gauge", f"probe_success {success}",
        "# HELP probe_duration_seconds How long the probe took",
        "# TYPE probe_duration_seconds gauge", f"probe_duration_seconds {time.monotonic() - t0:.6f}",
        "# HELP probe_sip_status_code Status code of the final response (0: none)",
        "# TYPE probe_sip_status_code gauge", f"probe_sip_status_code {status}",
        "# HELP probe_sip_rtt_seconds Round-trip time from the first transmission",
        "# TYPE probe_sip_rtt_seconds gauge", f"probe_sip_rtt_seconds {rtt}",
        "# HELP probe_sip_transmissions OPTIONS datagrams sent (1 + retransmissions)",
        "# TYPE probe_sip_transmissions gauge", f"probe_sip_transmissions {transmissions}",
    ]
    return web.Response(text="\n".join(lines) + "\n", content_type="text/plain", charset="utf-8")


async def openapi(request: web.Request) -> web.Response:
    from .openapi import document

    return web.json_response(document())


async def registrations(request: web.Request) -> web.Response:
    return web.json_response({"registrations": _model(request).registrations()})


async def pjsip(request: web.Request) -> web.Response:
    """The pjsip.conf objects and their contacts' statuses, for `sipqualify pjsip show ...` and
    `sipqualify get 'PJSIP_CONTACT(...)'` (which asks for its AOR only)."""
    from ..pjsip_compat import pjsip_snapshot

    model = _model(request)
    pj = model.config.pjsip
    if pj is None:
        return web.json_response({"aors": [], "endpoints": []})

    def state_of(name: str) -> tuple[str | None, float | None]:
        p = model.peer(name)
        return (p.state, p.rtt) if p is not None else (None, None)

    only = request.query.getall("aor", []) or None  # ?aor=NAME (repeatable): those AORs and their endpoints
    if "endpoint" in request.query:  # ?endpoint=NAME: its AORs (and it, with its options)
        ep = pj.endpoints.get(request.query["endpoint"])
        only = [*(only or []), *(ep.aors if ep is not None else [])]
    return web.json_response(pjsip_snapshot(pj, state_of, model.registrations(), only))


async def status(request: web.Request) -> web.Response:
    return web.json_response(_model(request).status())


def make_app(model: ReadModel, hub: EventHub) -> web.Application:
    app = web.Application(middlewares=[auth_middleware], client_max_size=MAX_BODY)
    app[MODEL_KEY] = model
    app[HUB_KEY] = hub
    from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector

    from .metrics import SipqualifyCollector

    registry = CollectorRegistry(auto_describe=False)
    registry.register(SipqualifyCollector(model, model.config.service.metrics_peer_limit))
    ProcessCollector(registry=registry)  # process_cpu_seconds_total, process_resident_memory_bytes, ...
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    app[REGISTRY_KEY] = registry
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/probe", probe)
    app.router.add_get("/openapi.json", openapi)
    from .events import events_handler

    app.router.add_get("/events", events_handler)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get(f"{API}/peers", peers)
    app.router.add_get(f"{API}/peers/{{name}}", peer)
    app.router.add_post(f"{API}/peers/{{name}}/qualify", qualify)
    app.router.add_post(f"{API}/peers/{{name}}/silence", silence)
    app.router.add_post(f"{API}/peers/{{name}}/capture", capture)
    app.router.add_get(f"{API}/peers/{{name}}/exchange", exchange)
    app.router.add_get(f"{API}/peers/{{name}}/history", history)
    app.router.add_get(f"{API}/peers/{{name}}/rtt", rtt)
    app.router.add_get(f"{API}/peers/{{name}}/stats", peer_stats)
    app.router.add_post(f"{API}/reload", reload)
    app.router.add_get(f"{API}/silences", list_silences)
    app.router.add_post(f"{API}/silences", add_silence)
    app.router.add_delete(f"{API}/silences/{{id}}", delete_silence)
    app.router.add_get(f"{API}/status", status)
    app.router.add_get(f"{API}/registrations", registrations)
    app.router.add_get(f"{API}/pjsip", pjsip)
    dashboard.add_routes(app, API)
    return app


async def start_api(model: ReadModel, hub: EventHub, host: str,
                    port: int) -> tuple[web.AppRunner, tuple[str, int]]:
    cfg: ServiceConfig = model.config.service
    if not is_loopback(host) and not cfg.api_token:
        raise ConfigError([ConfigMessage(
            "error", "api", 0,
            f"refusing to serve the API on non-loopback address {host}: configure [api] token first",
            option="listen",
        )])
    ssl_ctx = None
    if cfg.api_tls_cert:
        import ssl

        ssl_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ssl_ctx.load_cert_chain(cfg.api_tls_cert, cfg.api_tls_key or None)
    # aiohttp has no request-head timeout of its own, but its keep-alive timer is armed at
    # connect and after every answer and closes a connection still waiting for a complete
    # request head when it fires: set to the header timeout, it ends slowloris connections
    # (a handler that is running, such as an event stream, is not affected).
    runner = web.AppRunner(make_app(model, hub), access_log=None, handle_signals=False,
                           keepalive_timeout=cfg.api_header_timeout_s,
                           logger=ServerLog("sipqualify.api.server", "API", log))
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True, ssl_context=ssl_ctx)
    await site.start()
    bound = (host, port)
    server = site._server  # aiohttp exposes no public accessor for the bound port
    sockets = getattr(server, "sockets", None) or []
    if sockets:
        sockname = sockets[0].getsockname()
        bound = (str(sockname[0]), int(sockname[1]))
    return runner, bound
