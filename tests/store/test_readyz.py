"""/readyz reports storage faults (503 with the cause) while they last, 200 again afterwards;
a REGISTER that cannot be stored is logged with its real cause, once per failure episode."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
from typing import Any

import pytest

from sipqualify.service import Service

from ..helpers import Phone, api, start_registrar, wait_for

UNLIMITED = 1073741823


async def readyz(svc: Service) -> tuple[int, Any]:
    return await api(svc, "GET", "/readyz")


async def test_store_disk_full_and_removed_file_fail_readyz(tmp_path: Path) -> None:
    svc, _server = await start_registrar(tmp_path)
    try:
        assert (await readyz(svc))[0] == 200
        store = svc.store
        assert store is not None and store._db is not None
        pages = store._db.execute("PRAGMA page_count").fetchone()[0]
        store._db.execute(f"PRAGMA max_page_count={pages}")
        for i in range(2000):
            store.record_transition("x" * 300, 1e9 + i, "OK", "UNREACHABLE", -1, 2000, None)
        await wait_for(lambda: not store.health()["ok"])
        status, body = await readyz(svc)
        assert status == 503 and body["ready"] is False and body["checks"]["store"] is False
        assert "database or disk is full" in body["errors"]["store"]["cause"]
        store._db.execute(f"PRAGMA max_page_count={UNLIMITED}")
        await wait_for(lambda: store.health()["ok"], timeout=30)
        assert (await readyz(svc))[0] == 200

        os.remove(tmp_path / "s" / "sipqualify.sqlite")
        await wait_for(lambda: not store.health()["ok"])
        status, body = await readyz(svc)
        assert status == 503 and "removed or replaced" in body["errors"]["store"]["cause"]
    finally:
        await svc.close()


async def test_register_store_failure_is_logged_once_and_fails_readyz(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="sipqualify")
    loop = asyncio.get_running_loop()
    t, phone = await loop.create_datagram_endpoint(Phone, local_addr=("127.0.0.1", 0))
    svc, server = await start_registrar(tmp_path)
    try:
        db = svc.bindings.db
        pages = db.execute("PRAGMA page_count").fetchone()[0]
        db.execute(f"PRAGMA max_page_count={pages}")
        big = "<sip:1001@127.0.0.1:5060;x=" + "x" * 6000 + ">"
        for _ in range(3):
            assert (await phone.register_auth(server, "1001", "s3cret", contact=big)).status == 500
        errors = [r.getMessage() for r in caplog.records if "cannot store the binding" in r.getMessage()]
        assert len(errors) == 1, errors
        assert "database or disk is full" in errors[0] and "no transaction is active" not in errors[0]
        status, body = await readyz(svc)
        assert status == 503 and body["checks"]["bindings"] is False
        assert "database or disk is full" in body["errors"]["bindings"]["cause"]

        db.execute(f"PRAGMA max_page_count={UNLIMITED}")
        assert (await phone.register_auth(server, "1001", "s3cret", contact=big)).status == 200
        assert (await readyz(svc))[0] == 200

        os.remove(tmp_path / "s" / "bindings.sqlite")
        status, body = await readyz(svc)
        assert status == 503 and "removed or replaced" in body["errors"]["bindings"]["cause"]
    finally:
        await svc.close()
        t.close()
