"""The liveness watchdog (issue 13 item 7) in the daemon: /readyz fails with the cause while the
qualify scheduler is behind, /metrics and /api/v1/status show it; all well again once it runs."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from sipqualify.service import Service, ServiceOptions

from .helpers import api, free_port, scrape, wait_for


async def test_readyz_fails_while_the_scheduler_is_stalled(tmp_path: Path) -> None:
    conf = tmp_path / "sipqualify.toml"
    conf.write_text(f'[general]\nbind = "127.0.0.1:{free_port()}"\n[service]\nready_max_lag = 1\n'
                    f'[peers.a]\nhost = "127.0.0.1"\nport = {free_port()}\nqualify = 100\nqualifyfreq = 1\n')
    svc = Service(ServiceOptions(str(conf), "127.0.0.1", 0, str(tmp_path / "s")))
    await svc.start()
    try:
        code, body = await api(svc, "GET", "/readyz")
        assert code == 200 and body["checks"]["scheduler"] is True
        eng = svc.engine
        assert eng is not None

        def stalled(now: float, limit: int | None = None) -> bool:
            return False  # the scheduler runs nothing: timers fall behind

        eng.handle_timer = stalled  # type: ignore[method-assign]
        last: list[Any] = []

        async def poll() -> None:
            while True:
                last[:] = await api(svc, "GET", "/readyz")
                if last[0] == 503:
                    return
                await asyncio.sleep(0.1)

        await asyncio.wait_for(poll(), 15)
        body = last[1]
        assert body["ready"] is False and body["checks"]["scheduler"] is False
        assert "qualify scheduler is" in body["errors"]["scheduler"]["cause"]
        code, text = await asyncio.to_thread(scrape, svc)
        lag = [float(line.split()[-1]) for line in text.splitlines()
               if line.startswith("sipqualify_schedule_lag_seconds ")]
        assert lag and lag[0] > 1.0
        assert "sipqualify_poke_repairs_total 0.0" in text  # late is not lost: nothing re-armed
        code, status = await api(svc, "GET", "/api/v1/status")
        assert status["watchdog"]["repairs"] == 0

        del eng.handle_timer  # the scheduler runs again
        svc.core.pump()
        await wait_for(lambda: (svc.engine.get_timer() or 0) > svc.clock() - 0.5)  # type: ignore[union-attr]
        assert (await api(svc, "GET", "/readyz"))[0] == 200
    finally:
        await svc.close()
