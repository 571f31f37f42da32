"""The web dashboard: a login page, cookie sessions, the page and its static files, and the
one JSON route made for it (`/api/v1/overview`: a page of peers, filtered and sorted on the
server, with their last polls, so 100,000 peers cost the browser one page).

Credentials are the API's: the login form takes the API token and opens a session (a random
id in an `HttpOnly`, `SameSite=Strict` cookie, `Secure` over TLS). A session is worth exactly
what the token is: it reads every API route, and it ends when the token changes. Requests
authenticated by the cookie that change something (every POST) must also carry the session's
CSRF token in `X-CSRF-Token`; Bearer requests need none (a browser never adds that header by
itself). Every URL the pages use is relative, so the dashboard works under a reverse proxy's
path prefix (the cookie's Path follows `X-Forwarded-Prefix`).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import mimetypes
import re
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from .keys import MODEL_KEY
from .params import query_int

if TYPE_CHECKING:
    from ..qualify.engine import Peer

COOKIE = "sipqualify_session"
CSRF_HEADER = "X-CSRF-Token"
SESSION_IDLE_S = 12 * 3600.0  # a session unused this long is gone
MAX_SESSIONS = 1000  # beyond, the least recently used session is dropped
STATIC_DIR = Path(__file__).parent / "static"
PUBLIC = frozenset({"/login"})  # the only dashboard paths served without credentials
PAGES = frozenset({"/", "/index.html"})  # answered with a redirect to the login page, not a 401
# Content-Security-Policy: scripts and styles from the daemon only (uPlot sets styles through
# the CSSOM, which style-src does not restrict); the login page's own inline style is allowed
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
LOGIN_CSP = "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
_PREFIX = re.compile(r"^/[A-Za-z0-9._~/-]*$")
SORTS = ("state", "name", "rtt", "changed")
# worst first: what an operator looks for
SEVERITY = {"UNREACHABLE": 0, "LAGGED": 1, "UNKNOWN": 2, "OK": 3, "UNMONITORED": 4}
MAX_LIMIT = 500
MAX_BEATS = 100


ONCE_TTL_S = 3600.0  # a one-time login link is good this long, and once


def login_link(base_url: str, token: str, now: float | None = None) -> str:
    """A link that opens one dashboard session without typing the token (`sipqualify demo`
    prints one): `login?once=TIME.NONCE.MAC`, the MAC an HMAC of time and nonce keyed with the
    token. It does not contain the token, works once (the daemon remembers the nonces it has
    taken) and for an hour, and ends with the token."""
    t = int(time.time() if now is None else now)
    nonce = secrets.token_urlsafe(12)
    return f"{base_url}login?once={t}.{nonce}.{_once_mac(token, t, nonce)}"


def _once_mac(token: str, t: int, nonce: str) -> str:
    return hmac.new(token.encode(), f"login-once:{t}:{nonce}".encode(), hashlib.sha256).hexdigest()


@dataclass
class Session:
    csrf: str
    token_hash: bytes  # the token it was opened with: a new token ends the session
    last_used: float


def _hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class Sessions:
    """Sessions in memory (a restart logs everybody out), least recently used first."""

    def __init__(self, idle_s: float = SESSION_IDLE_S, max_sessions: int = MAX_SESSIONS) -> None:
        self.idle_s = idle_s
        self.max_sessions = max_sessions
        self._by_id: OrderedDict[str, Session] = OrderedDict()
        self._taken: dict[str, int] = {}  # one-time login nonces used: nonce -> their time

    def open(self, token: str, now: float) -> tuple[str, Session]:
        sid = secrets.token_urlsafe(32)
        s = self._by_id[sid] = Session(secrets.token_urlsafe(32), _hash(token), now)
        while len(self._by_id) > self.max_sessions:
            self._by_id.popitem(last=False)
        return sid, s

    def get(self, sid: str, token: str, now: float) -> Session | None:
        s = self._by_id.get(sid)
        if s is None:
            return None
        if now - s.last_used > self.idle_s or not hmac.compare_digest(s.token_hash, _hash(token)):
            del self._by_id[sid]
            return None
        s.last_used = now
        self._by_id.move_to_end(sid)
        return s

    def take_once(self, code: str, token: str, now: float) -> bool:
        """A one-time login code (see `login_link`): right, fresh and never taken before."""
        t_s, _, rest = code.partition(".")
        nonce, _, mac = rest.partition(".")
        try:
            t = int(t_s)
        except ValueError:
            return False
        if not (now - ONCE_TTL_S <= t <= now + 60) or nonce in self._taken:
            return False
        if not hmac.compare_digest(mac.encode("utf-8", "surrogateescape"), _once_mac(token, t, nonce).encode()):
            return False
        self._taken[nonce] = t
        for old, when in list(self._taken.items()):  # forget what has expired anyway
            if when < now - ONCE_TTL_S:
                del self._taken[old]
        return True

    def close(self, sid: str) -> None:
        self._by_id.pop(sid, None)

    def __len__(self) -> int:
        return len(self._by_id)


SESSIONS_KEY: web.AppKey[Sessions] = web.AppKey("sessions", Sessions)


def session_of(request: web.Request) -> Session | None:
    sid = request.cookies.get(COOKIE, "")
    if not sid:
        return None
    return request.app[SESSIONS_KEY].get(sid, request.app[MODEL_KEY].token, time.monotonic())


def csrf_ok(request: web.Request, session: Session) -> bool:
    given = request.headers.get(CSRF_HEADER, "")
    try:
        raw = given.encode("utf-8", "surrogateescape")
    except UnicodeError:
        return False
    return hmac.compare_digest(raw, session.csrf.encode())


def unauthenticated(request: web.Request) -> web.StreamResponse | None:
    """What a request without credentials gets, if not the API's 401: the pages send the
    browser to the login page (a relative URL, so a proxy's prefix is kept)."""
    if request.method in ("GET", "HEAD") and request.path in PAGES:
        return web.Response(status=303, headers={"Location": "login", "Cache-Control": "no-store"})
    return None


def _cookie_path(request: web.Request) -> str:
    prefix = request.headers.get("X-Forwarded-Prefix", "")
    if not prefix or not _PREFIX.match(prefix):
        return "/"
    return prefix.rstrip("/") + "/"


def _secure(request: web.Request) -> bool:
    return request.secure or request.headers.get("X-Forwarded-Proto", "").lower() == "https"


def _headers(csp: str) -> dict[str, str]:
    return {"Content-Security-Policy": csp, "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
            "X-Frame-Options": "DENY", "Cache-Control": "no-store"}


LOGIN_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<meta name="color-scheme" content="light dark"><title>sipqualify: log in</title>
<style>
body{font:16px system-ui,sans-serif;display:grid;place-items:center;min-height:100vh;margin:0;
background:Canvas;color:CanvasText}
form{display:grid;gap:.75rem;padding:2rem;border:1px solid GrayText;border-radius:.5rem;width:min(22rem,90vw)}
h1{font-size:1.3rem;margin:0}input,button{font:inherit;padding:.5rem}p{margin:0;color:#c0392b}
</style></head><body>
<form method="post" action="login">
<h1>sipqualify</h1>
<label for="token">API token</label>
<input id="token" name="token" type="password" autocomplete="current-password" required autofocus>
<button type="submit">Log in</button>
%s
<small>The token is in <code>STATE_DIR/api-token</code> or <code>[api] token</code>.</small>
</form></body></html>
"""


def _login_page(error: str = "", status: int = 200) -> web.Response:
    msg = f'<p role="alert">{error}</p>' if error else ""
    return web.Response(text=LOGIN_PAGE % msg, status=status, content_type="text/html", headers=_headers(LOGIN_CSP))


async def login_form(request: web.Request) -> web.StreamResponse:
    once = request.query.get("once")
    if once is None:
        return _login_page()
    token = request.app[MODEL_KEY].token
    if not request.app[SESSIONS_KEY].take_once(once, token, time.time()):
        return _login_page("This login link is used or expired: enter the token.", status=401)
    return _open_session(request, token)


async def login(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    given = form.get("token", "")
    token = request.app[MODEL_KEY].token
    if not isinstance(given, str) or not hmac.compare_digest(given.strip().encode("utf-8", "surrogateescape"),
                                                             token.encode()):
        return _login_page("Wrong token.", status=401)
    return _open_session(request, token)


def _open_session(request: web.Request, token: str) -> web.StreamResponse:
    sid, _ = request.app[SESSIONS_KEY].open(token, time.monotonic())
    resp = web.Response(status=303, headers={"Location": "./", "Cache-Control": "no-store"})
    resp.set_cookie(COOKIE, sid, path=_cookie_path(request), httponly=True, samesite="Strict",
                    secure=_secure(request))
    return resp


async def logout(request: web.Request) -> web.StreamResponse:
    request.app[SESSIONS_KEY].close(request.cookies.get(COOKIE, ""))
    resp = web.Response(status=303, headers={"Location": "login", "Cache-Control": "no-store"})
    resp.del_cookie(COOKIE, path=_cookie_path(request))
    return resp


def _static_files() -> dict[str, tuple[bytes, str]]:
    """Every file under static/ by its path, read once: nothing outside it can be named."""
    out: dict[str, tuple[bytes, str]] = {}
    for f in sorted(STATIC_DIR.rglob("*")):
        if f.is_file() and f.name != "index.html":
            ctype = mimetypes.guess_type(f.name)[0] or "text/plain"
            out[f.relative_to(STATIC_DIR).as_posix()] = (f.read_bytes(), ctype)
    return out


STATIC_KEY: web.AppKey[dict[str, tuple[bytes, str]]] = web.AppKey("static", dict)


async def index(request: web.Request) -> web.Response:
    session = session_of(request)
    html = (STATIC_DIR / "index.html").read_text()
    # a Bearer-authenticated client (no session) gets the page without a CSRF token: its
    # actions are refused, it can read
    html = html.replace("{{csrf}}", session.csrf if session is not None else "")
    return web.Response(text=html, content_type="text/html", headers=_headers(CSP))


async def static(request: web.Request) -> web.Response:
    found = request.app[STATIC_KEY].get(request.match_info["path"])
    if found is None:
        raise web.HTTPNotFound()
    body, ctype = found
    return web.Response(body=body, content_type=ctype,
                        headers={"Cache-Control": "private, no-cache", "X-Content-Type-Options": "nosniff"})


def _sort_key(sort: str) -> Any:
    if sort == "name":
        return lambda p: p.name
    if sort == "rtt":  # slowest first; no answer counts as slowest
        return lambda p: (-(p.lastms if p.lastms > 0 else 10**9 if p.lastms < 0 else -1), p.name)
    if sort == "changed":  # most recent change first
        return lambda p: (-(p.last_change or 0.0), p.name)
    return lambda p: (SEVERITY.get(p.state, 9), p.name)


async def overview(request: web.Request) -> web.Response:
    """A page of peers for the dashboard: counts per state over all peers, then the peers
    matching `q` (in the name, host or address), `state` and `group`, sorted by `sort`, from
    `offset`, at most `limit`, each with its last `beats` polls from the store."""
    model = request.app[MODEL_KEY]
    offset = query_int(request, "offset", 0, 0, 10**9)
    limit = query_int(request, "limit", 100, 1, MAX_LIMIT)
    beats = query_int(request, "beats", 30, 0, MAX_BEATS)
    sort = request.query.get("sort", "state")
    reverse = sort.startswith("-")
    if sort.lstrip("-") not in SORTS:
        raise web.HTTPBadRequest(text=f"sort must be one of {', '.join(SORTS)} (- for descending)")
    q = request.query.get("q", "").strip().lower()
    states = {s.strip().upper() for s in request.query.get("state", "").split(",") if s.strip()}
    group = request.query.get("group", "")
    counts = dict.fromkeys(SEVERITY, 0)
    groups: set[str] = set()
    matched: list[Peer] = []
    for p in model.peers():
        s = p.state
        counts[s] = counts.get(s, 0) + 1
        groups.add(p.cfg.group)
        if states and s not in states or group and p.cfg.group != group:
            continue
        if q and q not in p.name.lower() and q not in (p.cfg.host or "").lower() and (
                p.addr is None or q not in p.addr[0]):
            continue
        matched.append(p)
    matched.sort(key=_sort_key(sort.lstrip("-")), reverse=reverse)
    page = matched[offset:offset + limit]
    store = model.store
    samples = await asyncio.to_thread(store.recent_samples, [p.name for p in page], beats) \
        if store is not None and beats and page else {}
    rows = []
    for p in page:
        row = model.view(p).to_json()
        row["group"] = p.cfg.group
        row["beats"] = [{"time": s.time, "rtt_ms": s.rtt_ms, "status_code": s.status_code}
                        for s in samples.get(p.name, [])]
        rows.append(row)
    return web.json_response({"total": sum(counts.values()), "matched": len(matched), "offset": offset,
                              "limit": limit, "counts": counts, "groups": sorted(groups), "peers": rows})


def add_routes(app: web.Application, api: str) -> None:
    app[SESSIONS_KEY] = Sessions()
    app[STATIC_KEY] = _static_files()
    app.router.add_routes([web.get("/", index), web.get("/login", login_form), web.post("/login", login),
                           web.post("/logout", logout), web.get("/static/{path:.+}", static),
                           web.get(f"{api}/overview", overview)])
