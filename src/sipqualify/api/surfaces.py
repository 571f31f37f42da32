"""The surfaces, built from config on one read model: the HTTP API (with /metrics and the
event stream), the AMI port, webhooks. Started after the registrar, closed first."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ..addr import Addr
from .ami import AmiServer
from .ami_pjsip import register as register_pjsip
from .events import EventHub
from .http import start_api
from .webhooks import WebhookDispatcher

if TYPE_CHECKING:
    from aiohttp import web

    from ..readmodel import ReadModel


class Surfaces:
    def __init__(self, model: ReadModel) -> None:
        self.model = model
        self.events = EventHub()  # the event stream's fan-out
        self.api_addr: Addr = ("127.0.0.1", 0)
        self.ami: AmiServer | None = None
        self.webhooks: WebhookDispatcher | None = None
        self._api_runner: web.AppRunner | None = None
        model.add_record_listener(self.events.publish)
        model.add_registry_listener(self.events.publish_registry)
        model.add_tls_listener(self.events.publish_tls_expiry)
        model.add_live_listener(self.events.publish_live)
        model.add_target_listener(self.events.publish_target)

    async def start(self, host: str, port: int, manager_conf: str | None, state_dir: Path) -> None:
        svc = self.model.config.service
        self.events.max_subscribers = svc.api_max_event_subscribers
        self._api_runner, self.api_addr = await start_api(self.model, self.events, host, port)
        self.ami = AmiServer.from_config(self.model, svc, manager_conf)
        if self.ami is not None:
            register_pjsip(self.ami)  # pjsip.conf contacts: ContactStatus, PJSIPShowAors ...
            await self.ami.start()
        self.webhooks = WebhookDispatcher.from_config(self.model, svc, state_dir / "webhooks.sqlite")
        if self.webhooks is not None:
            await self.webhooks.start()

    async def close(self) -> None:
        if self.ami is not None:
            await self.ami.close()
            self.ami = None
        self.events.close()
        if self.webhooks is not None:
            await self.webhooks.close()
            self.webhooks = None
        if self._api_runner is not None:
            await self._api_runner.cleanup()
            self._api_runner = None
