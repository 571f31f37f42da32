"""The aiohttp application keys the API's handlers share (here, so no handler module imports
another for them)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from ..readmodel import ReadModel

MODEL_KEY: web.AppKey[ReadModel] = web.AppKey("model")
REGISTRY_KEY = web.AppKey("registry", object)
