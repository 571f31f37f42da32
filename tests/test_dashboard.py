"""The web dashboard: its credentials over HTTP, then end to end in Debian's Chromium (driven by
Playwright, never a downloaded browser): login, the peers in their states, a change of state
seen live, a peer's chart drawn from stored history, "qualify now".

Chromium or Playwright missing: the browser test is skipped, or FAILS when `CI` is set (in CI a
missing browser is a broken test bed). Screenshots go to the test's tmp directory, or to
`SIPQUALIFY_SCREENSHOTS` when set (how docs/img/ was made)."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from multidict import CIMultiDict

from sipqualify.service import Service, ServiceOptions

from .helpers import endpoint, free_port, sip_conf, wait_for

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
T = 20_000  # ms: Playwright waits (page conditions, never sleeps); selectors and expect(), since the
# page's Content-Security-Policy forbids the eval that wait_for_function needs


def _missing(what: str) -> None:
    msg = f"{what} not installed (apt-get install chromium; pip install playwright)"
    if os.environ.get("CI"):
        pytest.fail(msg, pytrace=False)
    pytest.skip(msg)


@pytest.fixture
async def fleet(tmp_path: Path) -> AsyncIterator[tuple[Service, dict[str, asyncio.BaseTransport]]]:
    """The daemon in-process with one peer in each state, polled every second."""
    ok_t, ok_port = await endpoint(200)
    flip_t, flip_port = await endpoint(200)
    slow_t, slow_port = await endpoint(200, delay=0.7)
    peers = {
        "trunk-ok": {"host": "127.0.0.1", "port": ok_port, "qualify": "yes", "qualifyfreq": 1,
                     "description": "healthy trunk"},
        "trunk-flip": {"host": "127.0.0.1", "port": flip_port, "qualify": 500, "qualifyfreq": 1},
        "trunk-slow": {"host": "127.0.0.1", "port": slow_port, "qualify": 500, "qualifyfreq": 1},
        "trunk-dead": {"host": "127.0.0.1", "port": free_port(), "qualify": 500, "qualifyfreq": 1},
        "fax-off": {"host": "127.0.0.1", "port": ok_port, "qualify": "no"},
        "phone-1001": {"host": "dynamic", "qualify": "yes", "secret": "s3cret-s3cret"},
    }
    conf = sip_conf(tmp_path / "sip.conf", free_port(), peers, "qualifygap=10")
    svc = Service(ServiceOptions(conf, "127.0.0.1", 0, str(tmp_path / "state")))
    await svc.start()
    try:
        assert svc.engine is not None
        engine = svc.engine
        await wait_for(lambda: {p.name: p.state for p in engine.peers()} == {
            "trunk-ok": "OK", "trunk-flip": "OK", "trunk-slow": "LAGGED", "trunk-dead": "UNREACHABLE",
            "fax-off": "UNMONITORED", "phone-1001": "UNKNOWN"}, timeout=20)
        yield svc, {"ok": ok_t, "flip": flip_t, "slow": slow_t}
    finally:
        await svc.close()
        for t in (ok_t, flip_t, slow_t):
            t.close()


def base(svc: Service) -> str:
    return f"http://127.0.0.1:{svc.api_addr[1]}/"


async def login(http: aiohttp.ClientSession, svc: Service, **headers: str) -> tuple[str, str]:
    """Log in with the token: (the session cookie's value, the Set-Cookie header)."""
    async with http.post(base(svc) + "login", data={"token": svc.token}, allow_redirects=False,
                         headers=headers) as r:
        assert r.status == 303 and r.headers["Location"] == "./"
        set_cookie = r.headers["Set-Cookie"]
    sid = re.match(r"sipqualify_session=([^;]+);", set_cookie)
    assert sid is not None, set_cookie
    return sid.group(1), set_cookie


async def test_nothing_but_the_login_page_without_credentials_and_csrf_on_posts(
        fleet: tuple[Service, Any]) -> None:
    svc, _ = fleet
    url = base(svc)
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http:
        # without cookie or token: the page redirects to the login page, everything else is 401
        async with http.get(url, allow_redirects=False) as r:
            assert r.status == 303 and r.headers["Location"] == "login"
        for path in ("static/app.js", "static/app.css", "static/vendor/uplot/uPlot.iife.min.js", "api/v1/overview",
                     "api/v1/peers", "api/v1/peers/trunk-ok/rtt", "api/v1/registrations", "api/v1/status", "events"):
            async with http.get(url + path, allow_redirects=False) as r:
                assert r.status == 401, path
        for path in ("api/v1/peers/trunk-ok/qualify", "logout", "api/v1/reload"):
            async with http.post(url + path, allow_redirects=False) as r:
                assert r.status == 401, path
        async with http.get(url + "login") as r:
            page = await r.text()
            assert r.status == 200 and 'name="token"' in page and "frame-ancestors 'none'" in r.headers[
                "Content-Security-Policy"]
        async with http.post(url + "login", data={"token": "not-the-token"}, allow_redirects=False) as r:
            assert r.status == 401 and "Set-Cookie" not in r.headers

        sid, set_cookie = await login(http, svc)
        assert "HttpOnly" in set_cookie and "SameSite=Strict" in set_cookie and "Path=/;" in set_cookie + ";"
        assert "Secure" not in set_cookie  # plain HTTP here; over TLS (or X-Forwarded-Proto: https) it is set
        cookie = {"Cookie": f"sipqualify_session={sid}"}
        async with http.get(url, headers=cookie) as r:
            html = await r.text()
            assert r.status == 200 and "script-src 'self'" in r.headers["Content-Security-Policy"]
        csrf = re.search(r'name="csrf-token" content="([^"]+)"', html)
        assert csrf is not None and len(csrf.group(1)) > 30
        for path in ("static/app.js", "static/vendor/uplot/uPlot.iife.min.js", "static/vendor/uplot/LICENSE"):
            async with http.get(url + path, headers=cookie) as r:
                assert r.status == 200, path
        async with http.get(url + "static/../dashboard.py", headers=cookie) as r:
            assert r.status == 404
        async with http.get(url + "api/v1/overview?limit=2&sort=name", headers=cookie) as r:
            body = await r.json()
            assert [p["name"] for p in body["peers"]] == ["fax-off", "phone-1001"] and body["matched"] == 6
            assert body["counts"]["UNREACHABLE"] == 1 and body["counts"]["LAGGED"] == 1

        # a POST with the cookie needs the session's CSRF token in its header; the Bearer API does not
        qualify = url + "api/v1/peers/trunk-ok/qualify"
        async with http.post(qualify, headers=cookie) as r:
            assert r.status == 403
        async with http.post(qualify, headers={**cookie, "X-CSRF-Token": "forged"}) as r:
            assert r.status == 403
        async with http.post(qualify, headers={**cookie, "X-CSRF-Token": csrf.group(1)}) as r:
            assert r.status == 200 and (await r.json())["result"]["answered"] is True
        async with http.post(qualify, headers={"Authorization": f"Bearer {svc.token}"}) as r:
            assert r.status == 200

        # behind a proxy's prefix the cookie is scoped to it; logging out ends the session
        _, prefixed = await login(http, svc, **{"X-Forwarded-Prefix": "/sipq"})
        assert "Path=/sipq/" in prefixed
        _, tls = await login(http, svc, **{"X-Forwarded-Proto": "https"})  # a proxy ending TLS
        assert "Secure" in tls
        async with http.post(url + "logout", headers={**cookie, "X-CSRF-Token": csrf.group(1)},
                             allow_redirects=False) as r:
            assert r.status == 303 and r.headers["Location"] == "login"
        async with http.get(url + "api/v1/status", headers=cookie) as r:
            assert r.status == 401


async def test_a_one_time_login_link_logs_in_once(fleet: tuple[Service, Any]) -> None:
    """`sipqualify demo` prints such a link: it opens one session without the token, then never again."""
    from sipqualify.api.dashboard import ONCE_TTL_S, login_link

    svc, _ = fleet
    link = login_link(base(svc), svc.token)
    assert svc.token not in link
    t, nonce, mac = link.split("once=")[1].split(".")
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http:
        async with http.get(link, allow_redirects=False) as r:
            assert r.status == 303 and r.headers["Location"] == "./" and "HttpOnly" in r.headers["Set-Cookie"]
        sid = r.cookies["sipqualify_session"].value
        async with http.get(base(svc) + "api/v1/status", headers={"Cookie": f"sipqualify_session={sid}"}) as r:
            assert r.status == 200
        stale = login_link(base(svc), svc.token, now=time.time() - ONCE_TTL_S - 5)
        for bad in (link, link.replace(mac, "0" * len(mac)), stale, link.replace(f"once={t}", "once=x"),
                    login_link(base(svc), "another-token-entirely")):
            async with http.get(bad, allow_redirects=False) as r:
                assert r.status == 401 and "Set-Cookie" not in r.headers, bad


@asynccontextmanager
async def chromium(profile: Path) -> AsyncIterator[Any]:
    """A page in a fresh headless Chromium (Debian's), with Playwright's waits set to T."""
    if not Path(CHROMIUM).exists():
        _missing("chromium")
    try:
        from playwright.async_api import async_playwright, expect
    except ImportError:
        _missing("playwright")
    async with async_playwright() as pw:
        ctx = await pw.chromium.launch_persistent_context(str(profile), executable_path=CHROMIUM, args=ARGS,
                                                          headless=True, viewport={"width": 1280, "height": 800})
        try:
            page = ctx.pages[0] if ctx.pages else await ctx.new_page()
            page.set_default_timeout(T)
            expect.set_options(timeout=T)
            yield page
        finally:
            await ctx.close()


async def test_capture_and_exchange_routes(fleet: tuple[Service, Any]) -> None:
    """POST capture watches a peer (credentials, CSRF with the cookie, 404, the bound on watched
    peers); GET exchange gives its last OPTIONS request and response as sent and received."""
    svc, _ = fleet
    url = base(svc) + "api/v1/peers/"
    auth = {"Authorization": f"Bearer {svc.token}"}
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http:
        async with http.post(url + "trunk-ok/capture") as r:
            assert r.status == 401
        async with http.get(url + "trunk-ok/exchange") as r:
            assert r.status == 401
        for method, path in (("POST", "nope/capture"), ("GET", "nope/exchange")):
            async with http.request(method, url + path, headers=auth) as r:
                assert r.status == 404 and "nope" in (await r.json())["error"]
        async with http.get(url + "trunk-ok/exchange", headers=auth) as r:  # nobody watches: nothing kept
            assert r.status == 200 and await r.json() == {"peer": "trunk-ok", "watching_until": None,
                                                          "request": None, "response": None, "rtt_ms": None}
        sid, _ = await login(http, svc)
        cookie = {"Cookie": f"sipqualify_session={sid}"}
        async with http.post(url + "trunk-ok/capture", headers=cookie) as r:
            assert r.status == 403  # the session's CSRF token is missing
        async with http.get(base(svc), headers=cookie) as r:
            csrf = re.search(r'name="csrf-token" content="([^"]+)"', await r.text())
        assert csrf is not None
        async with http.post(url + "trunk-ok/capture", headers={**cookie, "X-CSRF-Token": csrf.group(1)}) as r:
            body = await r.json()
            assert r.status == 200 and body["watching_until"] == pytest.approx(time.time() + 900, abs=5)

        async def exchange() -> Any:
            async with http.get(url + "trunk-ok/exchange", headers=auth) as r:
                assert r.status == 200
                return await r.json()

        x: Any = None
        for _ in range(200):  # the next poll (every second), answered
            x = await exchange()
            if x["response"] is not None and x["response"]["status"] == 200:
                break
            await asyncio.sleep(0.05)
        req, res = x["request"], x["response"]
        assert res is not None and res["status"] == 200, x
        assert req["bytes"].startswith("OPTIONS sip:127.0.0.1") and "\nCSeq: 102 OPTIONS\n" in req["bytes"]
        assert req["to"] == res["from"] and req["to"].startswith("127.0.0.1:") and req["transmissions"] == 1
        assert req["size"] == len(req["bytes"].replace("\n", "\r\n").encode())  # CRLFs shown as \n
        assert res["bytes"].startswith("SIP/2.0 200 OK\n") and res["size"] > 100
        assert req["time"] <= res["time"] and x["rtt_ms"] == pytest.approx((res["time"] - req["time"]) * 1000, abs=0.01)

        assert svc.engine is not None
        svc.engine.capture.max_watched = 2  # the bound (100), made small
        async with http.post(url + "trunk-slow/capture", headers=auth) as r:
            assert r.status == 200
        async with http.post(url + "trunk-dead/capture", headers=auth) as r:
            assert r.status == 429 and "2 peers are watched" in (await r.json())["error"]
        async with http.post(url + "trunk-ok/capture", headers=auth) as r:
            assert r.status == 200  # watching one already watched is extending it


async def test_silence_holds_back_webhooks_until_then(tmp_path: Path) -> None:
    """A peer silenced (a maintenance window) goes UNREACHABLE: the store has it, the webhook
    receiver does not; the other peers' transitions are delivered as before."""
    from sipqualify.config import load_config

    got: list[dict[str, Any]] = []

    async def hook(request: web.Request) -> web.Response:
        got.append(await request.json())
        return web.Response()

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    flip_t, flip_port = await endpoint(200)
    conf = sip_conf(tmp_path / "sip.conf", free_port(), {
        "flip": {"host": "127.0.0.1", "port": flip_port, "qualify": 500, "qualifyfreq": 1},
        "dead": {"host": "127.0.0.1", "port": free_port(), "qualify": 500, "qualifyfreq": 1}}, "qualifygap=10")
    cfg = load_config(conf)
    cfg.service.webhooks = [{"id": "noc", "url": f"http://127.0.0.1:{runner.addresses[0][1]}/hook"}]
    svc = Service(ServiceOptions(conf, "127.0.0.1", 0, str(tmp_path / "state"), config=cfg))
    await svc.start()
    try:
        await wait_for(lambda: {(e["peer"], e["new"]) for e in got} == {("flip", "OK"), ("dead", "UNREACHABLE")},
                       timeout=20)
        async with aiohttp.ClientSession() as http:
            auth = {"Authorization": f"Bearer {svc.token}"}
            until = time.time() + 3600
            async with http.post(base(svc) + f"api/v1/peers/flip/silence?until={until}", headers=auth) as r:
                assert r.status == 200 and (await r.json())["silenced_until"] == pytest.approx(until)
            async with http.get(base(svc) + "api/v1/peers/flip", headers=auth) as r:
                assert (await r.json())["silenced_until"] == pytest.approx(until)
            async with http.post(base(svc) + "api/v1/peers/nope/silence", headers=auth) as r:
                assert r.status == 404
            async with http.post(base(svc) + f"api/v1/peers/flip/silence?until={until + 400 * 86400}",
                                 headers=auth) as r:
                assert r.status == 400
            flip_t.close()
            hooks = svc.surfaces.webhooks
            assert hooks is not None
            await wait_for(lambda: hooks.stats["noc"]["suppressed"] == 1, timeout=20)  # the cursor went past it
            assert ("flip", "UNREACHABLE") not in {(e["peer"], e["new"]) for e in got}
            assert svc.store is not None
            assert [t.new for t in svc.store.transitions("flip")] == ["OK", "UNREACHABLE"]  # stored all the same
            async with http.post(base(svc) + "api/v1/peers/flip/silence", headers=auth) as r:
                assert (await r.json())["silenced_until"] is None  # ended
    finally:
        await svc.close()
        flip_t.close()
        await runner.cleanup()


async def test_the_dashboard_in_chromium(fleet: tuple[Service, dict[str, asyncio.BaseTransport]],
                                         tmp_path: Path) -> None:
    svc, endpoints = fleet
    shots = Path(os.environ.get("SIPQUALIFY_SCREENSHOTS") or tmp_path / "screenshots")
    shots.mkdir(parents=True, exist_ok=True)
    url = base(svc)
    async with chromium(tmp_path / "profile") as page:
        from playwright.async_api import expect

        # without the token: only the login page
        await page.goto(url)
        assert page.url == url + "login"
        assert await page.locator("#peers").count() == 0
        await page.fill("#token", "wrong-token-wrong")
        await page.click("button[type=submit]")
        await page.wait_for_selector("text=Wrong token.")
        await page.screenshot(path=str(shots / "login.png"))
        await page.fill("#token", svc.token)
        await page.click("button[type=submit]")

        # the overview: every peer in its state, counts at the top
        await page.wait_for_selector("#peers tbody tr")
        for name, state in {"trunk-ok": "OK", "trunk-flip": "OK", "trunk-slow": "LAGGED",
                            "trunk-dead": "UNREACHABLE", "fax-off": "UNMONITORED",
                            "phone-1001": "UNKNOWN"}.items():
            await page.wait_for_selector(f'#peers tr[data-peer="{name}"][data-state="{state}"]')
        assert await page.inner_text('.count[data-state="UNREACHABLE"] b') == "1"
        await page.wait_for_selector("#live.on")
        await page.wait_for_selector('tr[data-peer="trunk-ok"] .beat')  # heartbeats from the store
        await page.screenshot(path=str(shots / "overview.png"), full_page=True)

        # search and state filter are served by the server
        await page.fill("input[type=search]", "slow")
        await expect(page.locator("#peers tbody tr")).to_have_count(1)
        await page.fill("input[type=search]", "")
        await page.click('.count[data-state="UNREACHABLE"]')
        await expect(page.locator("#peers tbody tr")).to_have_count(1)
        await page.wait_for_selector('#peers tr[data-peer="trunk-dead"]')
        await page.click('.count[data-state="UNREACHABLE"]')
        await page.wait_for_selector('#peers tr[data-peer="trunk-ok"]')

        # a peer goes down: its row changes live, from the event stream, without a reload
        await page.evaluate("window.notReloaded = true")
        endpoints["flip"].close()
        await page.wait_for_selector('#peers tr[data-peer="trunk-flip"][data-state="UNREACHABLE"]')
        assert await page.evaluate("window.notReloaded === true && window.sipq.applied > 0")
        await expect(page.locator('.count[data-state="UNREACHABLE"] b')).to_have_text("2")

        # the phone: narrow screen, dark theme
        await page.emulate_media(color_scheme="dark")
        await page.set_viewport_size({"width": 390, "height": 844})
        await page.screenshot(path=str(shots / "overview-phone-dark.png"))
        await page.set_viewport_size({"width": 1280, "height": 800})
        await page.emulate_media(color_scheme="light")

        # a peer's page: the RTT chart from stored history, the LAGGED line, qualify now
        assert svc.store is not None
        await asyncio.to_thread(svc.store.flush)
        await page.focus('#peers tr[data-peer="trunk-slow"] a')  # by keyboard
        await page.keyboard.press("Enter")
        await page.wait_for_selector('#chart[data-points]:not([data-points="0"])')
        data = await page.evaluate("window.sipq.chart.data")
        assert all(v is None or v > 500 for v in data[1]) and any(v is not None for v in data[1])
        assert set(data[3]) == {500}  # the LAGGED threshold line
        assert await page.locator(".timeline span.s-LAGGED").count() >= 1
        assert "Uptime 100.00 %" in await page.inner_text("main")
        await page.focus("#qualify")
        await page.keyboard.press("Enter")
        await page.wait_for_selector(".result:has-text('answered 200')")
        assert "LAGGED (7" in await page.inner_text(".result")
        # the last exchange: watched since the page opened, the request and its answer as they went
        await page.wait_for_selector("#exchange pre:has-text('OPTIONS sip:127.0.0.1')")
        await page.wait_for_selector("#exchange[data-status='200'] pre:has-text('SIP/2.0 200 OK')")
        shown = await page.inner_text("#exchange")
        assert "CSeq: 102 OPTIONS" in shown and "\\r" not in shown and "bytes" in shown
        await page.click("#silence")  # an hour from now, by default
        await page.wait_for_selector("h1 .silenced")
        assert svc.silences is not None and svc.silences.match("trunk-slow", "default") is not None
        await page.click("#unsilence")
        await page.wait_for_selector("#unsilence[hidden]", state="attached")
        assert svc.silences.match("trunk-slow", "default") is None
        await page.screenshot(path=str(shots / "peer.png"), full_page=True)

        # the 24 h range redraws the chart; the health and registrations pages render
        await page.click(".ranges button:has-text('24 h')")
        await page.wait_for_selector(".ranges button[aria-pressed=true]:has-text('24 h')")
        await page.click("nav a[data-nav=health]")
        await page.wait_for_selector("#health dl")
        health = await page.inner_text("#health")
        assert "Transactions/s" in health and "MiB" in health  # the daemon's memory from /api/v1/status
        await page.screenshot(path=str(shots / "health.png"), full_page=True)
        await page.click("nav a[data-nav=registrations]")
        await page.wait_for_selector("#registrations td")

        # logging out leaves nothing readable
        await page.click("#logout")
        await page.wait_for_url(url + "login")
        await page.goto(url + "#/health")
        assert page.url.split("#")[0] == url + "login"
    if not os.environ.get("SIPQUALIFY_SCREENSHOTS"):
        shutil.rmtree(shots, ignore_errors=True)


@asynccontextmanager
async def prefix_proxy(upstream: str, prefix: str) -> AsyncIterator[str]:
    """A reverse proxy on loopback serving `upstream` under `prefix`/ (as nginx with
    `location /sipq/ { proxy_pass http://127.0.0.1:7060/; }`), streaming (the event stream
    passes) and sending `X-Forwarded-Prefix`. Yields its URL of the prefix."""
    hop = {"host", "content-length", "transfer-encoding", "connection", "keep-alive"}
    client = aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar(), auto_decompress=False)

    async def forward(request: web.Request) -> web.StreamResponse:
        url = upstream + request.match_info["tail"] + (f"?{request.query_string}" if request.query_string else "")
        headers = CIMultiDict((k, v) for k, v in request.headers.items() if k.lower() not in hop)
        headers["X-Forwarded-Prefix"] = prefix
        async with client.request(request.method, url, headers=headers, data=await request.read() or None,
                                  allow_redirects=False) as up:
            resp = web.StreamResponse(status=up.status, headers=CIMultiDict(
                (k, v) for k, v in up.headers.items() if k.lower() not in hop))
            await resp.prepare(request)
            async for chunk in up.content.iter_any():
                await resp.write(chunk)
            return resp

    app = web.Application()
    app.router.add_route("*", prefix + "/{tail:.*}", forward)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}{prefix}/"
    finally:
        await client.close()
        await runner.cleanup()


async def test_the_dashboard_under_a_reverse_proxy_prefix(fleet: tuple[Service, Any], tmp_path: Path) -> None:
    """Relative URLs everywhere: under /sipq/ the redirect, login, page, script, API calls and the
    event stream all stay under the prefix, and the cookie is scoped to it."""
    svc, _ = fleet
    async with prefix_proxy(base(svc), "/sipq") as url, chromium(tmp_path / "profile") as page:
        requests: list[str] = []
        page.on("request", lambda r: requests.append(r.url))
        await page.goto(url)
        assert page.url == url + "login"
        await page.fill("#token", svc.token)
        await page.click("button[type=submit]")
        await page.wait_for_selector('#peers tr[data-peer="trunk-slow"][data-state="LAGGED"]')
        await page.wait_for_selector("#live.on")  # the event stream, through the proxy
        await page.click('#peers tr[data-peer="trunk-ok"] a')
        await page.wait_for_selector('#chart[data-points]')
        cookies = await page.context.cookies()
        assert [(c["name"], c["path"], c["httpOnly"], c["sameSite"]) for c in cookies] == [
            ("sipqualify_session", "/sipq/", True, "Strict")]
    assert requests and all(r.startswith(url) for r in requests), [r for r in requests if not r.startswith(url)]


async def test_tls_certificate_days_left_on_the_peer_page_and_a_badge_when_close(tmp_path: Path) -> None:
    from .helpers import TlsResponder
    from .test_tls import Certs
    from .test_tls import peer as tls_peer

    certs = Certs(tmp_path)
    soon = await TlsResponder(certs.server_ctx("localhost", days=5)).start()
    later = await TlsResponder(certs.server_ctx("localhost", days=40)).start()
    peers = {"tls-soon": tls_peer(soon.port), "tls-later": tls_peer(later.port)}
    conf = sip_conf(tmp_path / "sip.conf", free_port(), peers,
                    f"tlsenable=yes\ntlscafile={certs.cafile}\ntlsbindaddr=127.0.0.1:0\n"
                    f"tlscertfile={certs.pem('me.pem', 'sipqualify.test')}")
    svc = Service(ServiceOptions(conf, "127.0.0.1", 0, str(tmp_path / "state")))
    await svc.start()
    try:
        async with chromium(tmp_path / "profile") as page:
            from playwright.async_api import expect

            await page.goto(base(svc) + "login")
            await page.fill("#token", svc.token)
            await page.click("button[type=submit]")
            await page.wait_for_selector('#peers tr[data-peer="tls-soon"][data-state="OK"]')
            await page.wait_for_selector('#peers tr[data-peer="tls-later"][data-state="OK"]')
            # known from the first answer on: the row refetched after the change to OK has it
            badge = page.locator('#peers tr[data-peer="tls-soon"] .cert-warn')
            await expect(badge).to_have_text("cert 4 d")
            assert re.fullmatch(r"TLS certificate: (4\.\d|5\.0) days left", await badge.get_attribute("title") or "")
            assert await page.locator('#peers tr[data-peer="tls-later"] .cert-warn').count() == 0
            await page.click('#peers tr[data-peer="tls-later"] a')
            await page.wait_for_selector("dt:has-text('TLS certificate') + dd:has-text('days left')")
            days = await page.inner_text("dt:has-text('TLS certificate') + dd")
            assert re.fullmatch(r"(39\.\d|40\.0) days left", days), days
    finally:
        await svc.close()
        soon.close()
        later.close()


def test_a_missing_browser_fails_in_ci_and_is_skipped_elsewhere(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "1")
    with pytest.raises(pytest.fail.Exception):
        _missing("chromium")
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception):
        _missing("chromium")


def test_every_static_file_is_in_the_package_data() -> None:
    """`pip install .` must carry the page, its script and the vendored libraries with their licences."""
    import fnmatch
    import tomllib

    root = Path(__file__).parent.parent
    globs = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"][
        "sipqualify.api"]
    api = root / "src" / "sipqualify" / "api"
    files = [f.relative_to(api).as_posix() for f in (api / "static").rglob("*") if f.is_file()]
    assert "static/vendor/uplot/LICENSE" in files and "static/app.js" in files
    for f in files:
        assert any(fnmatch.fnmatchcase(f, g) and f.count("/") == g.count("/") for g in globs), f
