"""Realtime peers against real databases (conftest.py): PostgreSQL and SQLite with Asterisk's
`sippeers` table. Rows with qualify set are qualified, changes are followed within
`rt_refresh`, registrations are written back (only chan_sip's rtupdate columns), and a
PostgreSQL outage loses nothing."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from sipqualify.config import check_config
from sipqualify.realtime.backends import trigger_sql
from sipqualify.service import Service, ServiceOptions

from ..helpers import Phone, api, endpoint, free_port, wait_for
from .conftest import Postgres, sqlite_db

GENERAL = "qualifygap=1\nqualifypeers=200\nrt_refresh=1\nrealm=pbx.test\nqualifyfreq=2\n"
COLS = "name, host, port, type, qualify, qualifyfreq, secret"


def write_conf(d: Path, sip_port: int, driver: str, extra: str = "", pg: Postgres | None = None) -> str:
    (d / "sip.conf").write_text(f"[general]\nudpbindaddr=127.0.0.1:{sip_port}\n{GENERAL}{extra}")
    (d / "extconfig.conf").write_text(f"[settings]\nsippeers => {driver},asterisk,sippeers\n"
                                      "ps_aors => pgsql,general,ps_aors\n")
    if pg is not None:
        (d / "res_pgsql.conf").write_text(f"[general]\ndbhost=127.0.0.1\ndbport={pg.port}\ndbname=asterisk\n"
                                          "dbuser=asterisk\ndbpass=\nrequirements=warn\n")
    (d / "res_config_sqlite3.conf").write_text("[asterisk]\ndbfile=realtime.sqlite3\n")
    return str(d / "sip.conf")


async def start(conf: str, tmp: Path) -> Service:
    svc = Service(ServiceOptions(conf, "127.0.0.1", 0, str(tmp / "state")))
    await svc.start()
    return svc


@contextlib.asynccontextmanager
async def daemon(conf: str, tmp: Path, responder: asyncio.BaseTransport | None = None) -> AsyncIterator[Service]:
    svc = await start(conf, tmp)
    try:
        yield svc
    finally:
        await svc.close()
        if responder is not None:
            responder.close()


def rows(n: int, port: int, prefix: str = "rt", qualify: str = "yes", freq: int = 2) -> list[tuple[Any, ...]]:
    return [(f"{prefix}{i}", "127.0.0.1", port, "peer", qualify, freq, None) for i in range(n)]


class Db:
    """The same few statements against either database. While the daemon runs, call them
    through `asyncio.to_thread`: a statement waiting on a row lock the daemon's write-back
    holds must not block the loop that would release it."""

    def __init__(self, pg: Postgres | None, path: Path) -> None:
        self.pg = pg
        self.lite = None if pg is not None else sqlite_db(path)

    def run(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        if self.lite is not None:
            return self.lite.execute(sql.replace("%s", "?"), args).fetchall()
        import psycopg

        assert self.pg is not None
        with psycopg.connect(host="127.0.0.1", port=self.pg.port, dbname="asterisk", user="asterisk",
                             autocommit=True) as db:
            cur = db.execute(sql, args)
            return list(cur.fetchall()) if cur.description else []

    def insert(self, values: list[tuple[Any, ...]]) -> None:
        marks = ", ".join(["%s"] * len(values[0]))
        if self.lite is not None:
            self.lite.executemany(f"INSERT INTO sippeers ({COLS}) VALUES ({marks.replace('%s', '?')})", values)
            return
        import psycopg

        assert self.pg is not None
        with psycopg.connect(host="127.0.0.1", port=self.pg.port, dbname="asterisk", user="asterisk") as db:
            db.cursor().executemany(f"INSERT INTO sippeers ({COLS}) VALUES ({marks})", values)


@pytest.fixture(params=["pgsql", "pgsql+trigger", "sqlite3"])
def setup(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, Db, Postgres | None]:
    driver = request.param.split("+")[0]
    pg = request.getfixturevalue("postgres") if driver == "pgsql" else None
    if pg is not None and request.param.endswith("trigger"):
        pg.sql(trigger_sql("sippeers"))
    return driver, Db(pg, tmp_path / "realtime.sqlite3"), pg


def peers_ok(svc: Service, names: list[str]) -> bool:
    assert svc.engine is not None
    return all((p := svc.engine.peer(n)) is not None and p.state == "OK" for n in names)


async def test_ten_thousand_rows_loaded_and_qualified_and_the_file_wins_a_name(
        setup: tuple[str, Db, Postgres | None], tmp_path: Path) -> None:
    driver, db, pg = setup
    t, port = await endpoint(200)
    db.insert(rows(10_000, port, qualify="10000", freq=300))  # one Python responder: 10,000 in ~1 s
    extra = "qualifygap=10\nqualifypeers=100\n[rt5]\ntype=peer\nhost=127.0.0.1\nport=9\nqualify=no\n"
    conf = write_conf(tmp_path, free_port(), driver, extra, pg)
    assert [m.severity for m in check_config(conf)] == []
    async with daemon(conf, tmp_path, t) as svc:
        assert svc.engine is not None and len(svc.engine) == 10_000
        assert svc.config.peers["rt5"].port == 9  # sip.conf wins, as in chan_sip
        names = [f"rt{i}" for i in range(10_000) if i != 5]
        await wait_for(lambda: peers_ok(svc, names), timeout=60)
        status, body = await api(svc, "GET", "/readyz")
        assert status == 200 and body["checks"]["realtime"] is True


async def test_insert_update_delete_followed_within_rt_refresh(
        setup: tuple[str, Db, Postgres | None], tmp_path: Path) -> None:
    driver, db, pg = setup
    t, port = await endpoint(200)
    db.insert(rows(20, port))
    async with daemon(write_conf(tmp_path, free_port(), driver, pg=pg), tmp_path, t) as svc:
        engine, rt = svc.engine, svc.realtime
        assert engine is not None and rt is not None
        await wait_for(lambda: peers_ok(svc, ["rt0", "rt1"]), timeout=20)
        before = engine.peer("rt3")
        await asyncio.to_thread(db.insert, rows(1, port, prefix="new"))
        await asyncio.to_thread(db.run, "UPDATE sippeers SET port = %s WHERE name = %s", (port + 1, "rt1"))
        await asyncio.to_thread(db.run, "DELETE FROM sippeers WHERE name = %s", ("rt2",))
        # rt_refresh=1: applied by the next pass (the bound is loose: the machine is shared)
        await wait_for(lambda: rt.stats["applied"] == 3, timeout=5)
        assert engine.peer("rt2") is None and "rt2" not in svc.config.peers
        assert svc.config.peers["rt1"].port == port + 1 and engine.peer("rt1").cfg.port == port + 1  # type: ignore[union-attr]
        await wait_for(lambda: peers_ok(svc, ["new0"]), timeout=5)  # poked at once
        assert engine.peer("rt3") is before and before is not None and before.state == "OK"  # untouched
        # our own write-backs (lastms of new0, rt1 ...) change rows but never count as changes
        seen = rt.stats["refreshes"]
        await wait_for(lambda: rt.stats["writebacks"] > 0 and rt.queued == 0 and rt.stats["refreshes"] > seen + 2,
                       timeout=15)
        assert rt.stats["applied"] == 3


async def test_registration_written_back_only_rtupdate_columns(
        setup: tuple[str, Db, Postgres | None], tmp_path: Path) -> None:
    driver, db, pg = setup
    db.insert([("1001", "dynamic", None, "friend", "yes", 60, "s3cret")])
    db.run("UPDATE sippeers SET context = 'phones', callerid = 'Desk <1001>' WHERE name = '1001'")
    svc = await start(write_conf(tmp_path, free_port(), driver, pg=pg), tmp_path)
    loop = asyncio.get_running_loop()
    tr, phone = await loop.create_datagram_endpoint(Phone, local_addr=("127.0.0.1", 0))
    try:
        sip_port = svc.sockets.local_addresses()[0][1]
        resp = await phone.register_auth(("127.0.0.1", sip_port), "1001", "s3cret")
        assert resp.status == 200
        my_port = tr.get_extra_info("sockname")[1]

        def row() -> tuple[Any, ...]:
            return tuple(db.run("SELECT ipaddr, port, defaultuser, fullcontact, useragent, regseconds, lastms, "
                                "context, callerid, host FROM sippeers WHERE name = '1001'")[0])
        await wait_for(lambda: row()[0] == "127.0.0.1" and (row()[6] or 0) > 0, timeout=10)
        ip, rport, user, contact, ua, regseconds, lastms, context, callerid, host = row()
        assert (rport, user, contact, ua) == (my_port, "1001", f"sip:1001@127.0.0.1:{my_port}", "TestPhone/1.0")
        assert abs(regseconds - (time.time() + 300)) < 10
        assert (context, callerid, host) == ("phones", "Desk <1001>", "dynamic")  # never written
    finally:
        tr.close()
        await svc.close()


async def test_postgres_outage_under_load_loses_no_write_back(postgres: Postgres, tmp_path: Path) -> None:
    t, port = await endpoint(200)
    db = Db(postgres, tmp_path / "x")
    db.insert(rows(1000, port) + [(f"ph{i}", "dynamic", None, "friend", "yes", 60, "pw") for i in range(20)])
    svc = await start(write_conf(tmp_path, free_port(), "pgsql", pg=postgres), tmp_path)
    loop = asyncio.get_running_loop()
    phones = [await loop.create_datagram_endpoint(Phone, local_addr=("127.0.0.1", 0)) for _ in range(20)]
    try:
        sip = ("127.0.0.1", svc.sockets.local_addresses()[0][1])
        await wait_for(lambda: peers_ok(svc, [f"rt{i}" for i in range(1000)]), timeout=30)
        await asyncio.to_thread(postgres.stop)
        for i, (_, ph) in enumerate(phones):  # registrations while the database is away
            assert (await ph.register_auth(sip, f"ph{i}", "pw", useragent=f"UA-{i}")).status == 200
        status, body = await api(svc, "GET", "/readyz")
        assert status == 503 and "pgsql:sippeers" in body["errors"]["realtime"]["cause"]
        assert svc.realtime is not None and svc.realtime.queued >= 20
        assert svc.engine is not None
        polls = svc.engine.stats.polls  # still qualifying while the database is away: every peer again
        await wait_for(lambda: svc.engine.stats.polls >= polls + 1000, timeout=15)  # type: ignore[union-attr]
        assert len(svc.config.peers) == 1020 and len(svc.engine) == 1020
        await asyncio.to_thread(postgres.start)
        await wait_for(lambda: svc.realtime is not None and svc.realtime.queued == 0, timeout=30)
        got = dict(db.run("SELECT name, useragent FROM sippeers WHERE name LIKE 'ph%%'"))
        assert got == {f"ph{i}": f"UA-{i}" for i in range(20)}
        status, _ = await api(svc, "GET", "/readyz")
        assert status == 200
        await wait_for(lambda: peers_ok(svc, [f"rt{i}" for i in range(1000)]), timeout=30)
    finally:
        for tr, _ in phones:
            tr.close()
        await svc.close()
        t.close()
