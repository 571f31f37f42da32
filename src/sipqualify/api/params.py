"""Query parameters of the HTTP routes: a number that is not one is a 400 naming the parameter."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TypeVar

from aiohttp import web

N = TypeVar("N", int, float)


def _parsed(request: web.Request, key: str, parse: Callable[[str], N], what: str) -> N | None:
    v = request.query.get(key)
    if v is None:
        return None
    try:
        return parse(v)
    except ValueError:
        raise web.HTTPBadRequest(text=f"{key} must be {what}") from None


def query_float(request: web.Request, key: str, default: float | None) -> float | None:
    f = _parsed(request, key, float, "a number")
    if f is None:
        return default
    if not math.isfinite(f):
        raise web.HTTPBadRequest(text=f"{key} must be a finite number")
    return f


def query_int(request: web.Request, key: str, default: int, lo: int, hi: int) -> int:
    n = _parsed(request, key, int, "a whole number")
    if n is None:
        return default
    if not lo <= n <= hi:
        raise web.HTTPBadRequest(text=f"{key} must be between {lo} and {hi}")
    return n
