"""HTTP API against hostile clients: undecodable tokens, slowloris, huge headers, huge bodies."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from pathlib import Path

import pytest

from sipqualify.config import load_config

from .helpers import start_api


def exchange(addr: tuple[str, int], data: bytes, timeout: float = 20.0) -> bytes:
    """Send `data` (as far as the server takes it), then read until the server closes."""
    with socket.create_connection(addr, timeout=timeout) as s:
        try:
            s.sendall(data)
        except OSError:
            pass  # the server answered and closed before taking it all
        out = b""
        while True:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            out += chunk
        return out


def status_of(raw: bytes) -> int:
    assert raw.startswith(b"HTTP/1."), raw[:200]
    return int(raw.split(b" ", 2)[1])


def tracebacks(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]


ENDPOINTS = [("GET", "/readyz"), ("GET", "/metrics"), ("GET", "/events"), ("GET", "/openapi.json"),
             ("GET", "/api/v1/peers"), ("GET", "/api/v1/status"), ("POST", "/api/v1/reload"),
             ("POST", "/api/v1/peers/p/qualify")]


async def test_an_undecodable_bearer_token_is_401_on_every_endpoint(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    svc = await start_api(tmp_path)
    try:
        for token in (b"\xff\xfe\x80garbage", "é-not-the-token".encode(), b"\xc3"):
            for method, path in ENDPOINTS:
                req = (f"{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 0\r\n"
                       "Authorization: Bearer ").encode() + token + b"\r\n\r\n"
                raw = await asyncio.to_thread(exchange, svc.api_addr, req)
                assert status_of(raw) == 401, (path, token, raw[:300])
        assert tracebacks(caplog) == []
    finally:
        await svc.close()


async def test_a_connection_without_a_complete_request_head_is_closed(tmp_path: Path) -> None:
    svc = await start_api(tmp_path, api_header_timeout_s=1.0)
    try:
        def slowloris(first: bytes) -> float:
            t0 = time.monotonic()
            with socket.create_connection(svc.api_addr, timeout=30) as s:
                s.sendall(first)
                try:
                    while s.recv(4096):
                        pass
                except ConnectionResetError:
                    pass
            return time.monotonic() - t0

        # a partial head, and nothing at all: both closed by the server, not by our 30 s timeout
        for first in (b"GET /api/v1/peers HTTP/1.1\r\nHost: x\r\nX-Slow: 1", b""):
            assert await asyncio.to_thread(slowloris, first) < 25
    finally:
        await svc.close()


async def test_an_oversized_header_is_refused_without_a_traceback(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    svc = await start_api(tmp_path)
    try:
        for req in (b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n",
                    b"GET /" + b"a" * 100_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
                    b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(500))
                    + b"\r\n"):
            raw = await asyncio.to_thread(exchange, svc.api_addr, req)
            assert status_of(raw) in (400, 431), raw[:300]
        assert tracebacks(caplog) == []
    finally:
        await svc.close()


async def test_a_large_post_body_is_refused_before_it_is_read(tmp_path: Path) -> None:
    svc = await start_api(tmp_path)
    try:
        auth = f"Authorization: Bearer {svc.token}\r\n"
        body = b"x" * (10 * 1024 * 1024)
        for path in ("/api/v1/reload", "/api/v1/peers/p/qualify?wait=0"):
            head = f"POST {path} HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: {len(body)}\r\n\r\n".encode()
            raw = await asyncio.to_thread(exchange, svc.api_addr, head + body)
            assert status_of(raw) == 413, raw[:300]
            chunk = b"%x\r\n%s\r\n" % (len(body), body)
            head = f"POST {path} HTTP/1.1\r\nHost: x\r\n{auth}Transfer-Encoding: chunked\r\n\r\n".encode()
            raw = await asyncio.to_thread(exchange, svc.api_addr, head + chunk + b"0\r\n\r\n")
            assert status_of(raw) == 413, raw[:300]
        assert svc.counters.reloads == 0
        # a small body is still fine
        head = f"POST /api/v1/reload HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\nContent-Length: 2\r\n\r\n{{}}"
        assert status_of(await asyncio.to_thread(exchange, svc.api_addr, head.encode())) == 200
    finally:
        await svc.close()


def test_api_limits_are_read_from_the_config(tmp_path: Path) -> None:
    toml = tmp_path / "sipqualify.toml"
    toml.write_text('[api]\nheader_timeout = "5s"\nmax_event_subscribers = 7\n')
    cfg = load_config(str(toml))
    assert (cfg.service.api_header_timeout_s, cfg.service.api_max_event_subscribers) == (5, 7)
    toml.write_text("[api]\nheader_timeout = 0\nmax_event_subscribers = 0\n")
    with pytest.raises(Exception, match="header_timeout") as err:
        load_config(str(toml))
    assert "max_event_subscribers" in str(err.value)
