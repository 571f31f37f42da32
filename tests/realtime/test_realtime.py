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


OUTAGE_S = 30.0
WRITEBACK_LOG = """CREATE TABLE writeback_log (seq SERIAL PRIMARY KEY, name TEXT, useragent TEXT);
CREATE FUNCTION log_writeback() RETURNS trigger AS $$
BEGIN INSERT INTO writeback_log (name, useragent) VALUES (NEW.name, NEW.useragent); RETURN NULL; END
$$ LANGUAGE plpgsql;
CREATE TRIGGER log_writeback AFTER UPDATE OF useragent ON sippeers FOR EACH ROW EXECUTE FUNCTION log_writeback();
"""


async def register(ph: Phone, sip: tuple[str, int], user: str, n: int, useragent: str) -> int:
    """The n-th REGISTER of a phone (CSeq going up on its one Call-ID), answering the challenge."""
    from sipqualify.sip.digest import authorization

    first = await ph.register(sip, user, cseq=2 * n + 1, useragent=useragent)
    auth = authorization(first.headers.get_all("WWW-Authenticate")[0], user, "pw", "REGISTER",
                         f"sip:127.0.0.1:{sip[1]}")
    return (await ph.register(sip, user, cseq=2 * n + 2, auth=auth, useragent=useragent)).status


@pytest.mark.realpeer
async def test_postgres_stopped_30s_under_load_qualifying_goes_on_and_nothing_is_lost(
        postgres: Postgres, tmp_path: Path) -> None:
    """10,000 realtime peers qualified against Kamailio, 20 phones registering; PostgreSQL
    stopped (`pg_ctl stop -m fast`) for 30 s: every peer is polled and answers meanwhile, /readyz says
    degraded, the registrations queued meanwhile land once each, in order (a trigger logs every
    write-back UPDATE), and rows changed right after the restart are picked up."""
    from ..realpeers.peers import Kamailio, Lab

    lab = Lab(tmp_path)
    port = Kamailio(lab).port  # a real, fast UAS in its own process
    db = Db(postgres, tmp_path / "x")
    n, phones_n = 10_000, 20
    db.insert(rows(n, port, qualify="10000", freq=20) + [(f"ph{i}", "dynamic", None, "friend", "yes", 60, "pw")
                                        for i in range(phones_n)])
    postgres.sql(WRITEBACK_LOG)
    extra = "qualifygap=10\nqualifypeers=100\n"  # first pokes spread over 1 s
    svc = await start(write_conf(tmp_path, free_port(), "pgsql", extra, pg=postgres), tmp_path)
    loop = asyncio.get_running_loop()
    phones = [await loop.create_datagram_endpoint(Phone, local_addr=("127.0.0.1", 0)) for _ in range(phones_n)]
    try:
        rt, engine = svc.realtime, svc.engine
        assert rt is not None and engine is not None and len(engine) == n + phones_n
        sip = ("127.0.0.1", svc.sockets.local_addresses()[0][1])
        names = [f"rt{i}" for i in range(n)]
        await wait_for(lambda: peers_ok(svc, names), timeout=40)
        for i, (_, ph) in enumerate(phones):  # one registration before, three while the database is away
            assert await register(ph, sip, f"ph{i}", 0, f"UA-{i}-0") == 200
        await wait_for(lambda: rt.queued == 0, timeout=20)

        await asyncio.to_thread(postgres.stop)
        stopped = time.monotonic()
        polls = [engine.stats.polls]
        for k in (1, 2, 3):
            for i, (_, ph) in enumerate(phones):
                assert await register(ph, sip, f"ph{i}", k, f"UA-{i}-{k}") == 200
        degraded = None
        while time.monotonic() - stopped < OUTAGE_S:  # a real 30 s outage
            await asyncio.sleep(1.0)
            polls.append(engine.stats.polls)
            if degraded is None:
                status, body = await api(svc, "GET", "/readyz")
                if status == 503:
                    degraded = body["errors"]["realtime"]["cause"]
        assert degraded is not None and "pgsql:sippeers" in degraded
        # qualifyfreq=20: every peer was polled, and answered, while the database was away
        assert polls[-1] - polls[0] >= n, polls
        late = [x for x in names if (p := engine.peer(x)) is None or (p.last_qualify or 0) < stopped]
        assert late == [] and peers_ok(svc, names), late[:5]
        assert rt.queued >= 3 * phones_n and len(engine) == n + phones_n
        status, _ = await api(svc, "GET", "/readyz")
        assert status == 503

        await asyncio.to_thread(postgres.start)
        await asyncio.to_thread(db.insert, rows(5, port, prefix="after"))  # right after the restart
        await asyncio.to_thread(db.run, "DELETE FROM sippeers WHERE name = 'rt7'")
        await wait_for(lambda: rt.queued == 0, timeout=30)
        log_rows = await asyncio.to_thread(db.run, "SELECT name, useragent FROM writeback_log ORDER BY seq")
        for i in range(phones_n):  # each write-back exactly once, in the order of the registrations
            assert [ua for name, ua in log_rows if name == f"ph{i}"] == [f"UA-{i}-{k}" for k in range(4)]
        got = dict(await asyncio.to_thread(db.run, "SELECT name, useragent FROM sippeers WHERE name LIKE 'ph%%'"))
        assert got == {f"ph{i}": f"UA-{i}-3" for i in range(phones_n)}
        await wait_for(lambda: peers_ok(svc, [f"after{i}" for i in range(5)]) and engine.peer("rt7") is None,
                       timeout=15)
        status, _ = await api(svc, "GET", "/readyz")
        assert status == 200
    finally:
        for tr, _ in phones:
            tr.close()
        await svc.close()
        lab.close()
