"""PJSIP realtime against real databases (conftest.py: PostgreSQL, with and without the NOTIFY
trigger, and SQLite) with Asterisk's `ps_*` tables: AORs' static contacts and `ps_contacts`
rows qualified with PJSIP semantics, changes followed within `rt_refresh`, a REGISTER written
back to `ps_contacts` and its removal deleting the row; and converting rows never stalls the
event loop."""

from __future__ import annotations

import asyncio
import hashlib
import time
from pathlib import Path
from typing import Any

import pytest

from sipqualify.config import check_config, load_config
from sipqualify.realtime import PjsipRealtime, RealtimePeers, open_realtime
from sipqualify.realtime.backends import trigger_sql

from ..helpers import Phone, endpoint, free_port, wait_for
from .conftest import PS_FAMILIES, PS_TABLES, Postgres
from .test_realtime import Db, daemon, peers_ok, rows, start, write_conf


def md5(s: str) -> str:
    return hashlib.md5(s.encode()).hexdigest()


class PsDb(Db):
    def __init__(self, pg: Postgres | None, path: Path) -> None:
        super().__init__(pg, path)
        for t in PS_TABLES:
            self.run(t)

    def put(self, table: str, **cols: Any) -> None:
        names = ", ".join(f'"{c}"' for c in cols)
        self.run(f"INSERT INTO {table} ({names}) VALUES ({', '.join(['%s'] * len(cols))})", tuple(cols.values()))


def pjsip_conf(d: Path, driver: str, pg: Postgres | None) -> str:
    (d / "pjsip.conf").write_text(f"[udp]\ntype = transport\nprotocol = udp\nbind = 127.0.0.1:{free_port()}\n"
                                  "[global]\ntype = global\nmax_initial_qualify_time = 1\nrt_refresh = 1\n"
                                  "default_realm = pbx.test\n")
    db = "general" if driver == "pgsql" else "asterisk"
    (d / "extconfig.conf").write_text("[settings]\nsippeers => pgsql,general,sippeers\n" + "".join(
        f"{f} => {driver},{db},{f}\n" for f in PS_FAMILIES))
    if pg is not None:
        (d / "res_pgsql.conf").write_text(f"[general]\ndbhost=127.0.0.1\ndbport={pg.port}\n")
    (d / "res_config_sqlite3.conf").write_text("[asterisk]\ndbfile=realtime.sqlite3\n")
    return str(d / "pjsip.conf")


@pytest.fixture(params=["pgsql", "pgsql+trigger", "sqlite3"])
def ps(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, PsDb, Postgres | None]:
    driver = request.param.split("+")[0]
    pg = request.getfixturevalue("postgres") if driver == "pgsql" else None
    db = PsDb(pg, tmp_path / "realtime.sqlite3")
    if pg is not None and request.param.endswith("trigger"):
        pg.sql(*(trigger_sql(f) for f in PS_FAMILIES))
    return driver, db, pg


async def test_aor_contacts_and_ps_contacts_qualified_and_changes_followed(
        ps: tuple[str, PsDb, Postgres | None], tmp_path: Path) -> None:
    driver, db, pg = ps
    t, port = await endpoint(200)
    gw, phone = f"sip:gw@127.0.0.1:{port}", f"sip:3001@127.0.0.1:{port};transport=udp"
    db.put("ps_endpoints", id="trunk", aors="trunk", context="from-trunk", from_user="pbx")
    db.put("ps_aors", id="trunk", contact=gw, qualify_frequency=2, qualify_timeout=1.5)
    db.put("ps_endpoints", id="3001", aors="3001", auth="3001")
    db.put("ps_aors", id="3001", max_contacts=1, qualify_frequency=2)
    db.put("ps_auths", id="3001", auth_type="userpass", username="3001", password="pw")
    db.put("ps_contacts", id=f"3001;@{md5(phone)}", uri=phone, expiration_time=int(time.time()) + 3600,
           qualify_frequency=2, qualify_timeout=3.0, endpoint="3001", reg_server="pbx1")
    db.put("ps_aors", id="idle", contact=f"sip:idle@127.0.0.1:{port}", qualify_frequency=0)
    db.put("ps_endpoints", id="idle", aors="idle")
    db.put("ps_endpoint_id_ips", id="trunk-ip", endpoint="trunk", match="127.0.0.9")
    conf = pjsip_conf(tmp_path, driver, pg)
    assert [m for m in check_config(conf) if m.severity == "error"] == []
    async with daemon(conf, tmp_path, t) as svc:
        rt, engine = svc.realtime, svc.engine
        assert isinstance(rt, PjsipRealtime) and engine is not None
        trunk, contact = f"trunk@@{md5(gw)}", f"3001;@{md5(phone)}"
        assert set(svc.config.peers) == {trunk, contact, f"idle@@{md5(f'sip:idle@127.0.0.1:{port}')}"}
        p = svc.config.peers[trunk]  # pjsip.conf semantics: the AOR's timing, From user of the endpoint
        assert (p.semantics, p.qualify_ms, p.qualifyfreq_ms, p.fromuser, p.context) == (
            "pjsip", 1500, 2000, "pbx", "from-trunk")
        assert svc.config.pjsip is not None and svc.config.pjsip.auths["3001"].password == "pw"
        assert svc.identifier.endpoint("127.0.0.9") == "trunk"
        await wait_for(lambda: peers_ok(svc, [trunk, contact]), timeout=20)
        assert svc.config.peers[next(n for n in svc.config.peers if n.startswith("idle"))].qualify_ms == 0
        before = engine.peer(contact)
        applied = rt.stats["applied"]
        # a new AOR with its endpoint, a changed AOR, a deleted contact row
        gw2 = f"sip:gw2@127.0.0.1:{port}"
        await asyncio.to_thread(db.put, "ps_aors", id="new", contact=gw2, qualify_frequency=1)
        await asyncio.to_thread(db.put, "ps_endpoints", id="new", aors="new")
        await asyncio.to_thread(db.run, "UPDATE ps_aors SET qualify_frequency = 5 WHERE id = 'trunk'")
        await asyncio.to_thread(db.run, "DELETE FROM ps_endpoint_id_ips WHERE id = 'trunk-ip'")
        await wait_for(lambda: f"new@@{md5(gw2)}" in svc.config.peers
                       and svc.config.peers[trunk].qualifyfreq_ms == 5000, timeout=8)
        await wait_for(lambda: peers_ok(svc, [f"new@@{md5(gw2)}"]), timeout=8)
        await wait_for(lambda: svc.identifier.endpoint("127.0.0.9") is None, timeout=8)
        assert engine.peer(contact) is before and before is not None and before.state == "OK"  # untouched
        # the new contact and the changed one, nothing else (the new one twice when its AOR row was
        # read in a pass before its endpoint row: each table is followed on its own)
        assert rt.stats["applied"] - applied in (2, 3)
        await asyncio.to_thread(db.run, f"DELETE FROM ps_contacts WHERE id = '{contact}'")
        await wait_for(lambda: contact not in svc.config.peers and engine.peer(contact) is None, timeout=8)
        # deleting the endpoint leaves its AOR without a qualifying endpoint: not qualified any more
        await asyncio.to_thread(db.run, "DELETE FROM ps_endpoints WHERE id = 'trunk'")
        await wait_for(lambda: svc.config.peers[trunk].qualify_ms == 0, timeout=8)


async def test_register_written_back_to_ps_contacts_and_removed(
        ps: tuple[str, PsDb, Postgres | None], tmp_path: Path) -> None:
    driver, db, pg = ps
    db.put("ps_endpoints", id="2001", aors="2001", auth="2001-auth")
    db.put("ps_auths", id="2001-auth", auth_type="userpass", username="2001", password="s3cret")
    db.put("ps_aors", id="2001", max_contacts=2, qualify_frequency=30, qualify_timeout=2.5,
           authenticate_qualify="no", default_expiration=600)
    svc = await start(pjsip_conf(tmp_path, driver, pg), tmp_path)
    loop = asyncio.get_running_loop()
    tr, ph = await loop.create_datagram_endpoint(Phone, local_addr=("127.0.0.1", 0))
    try:
        rt = svc.realtime
        assert isinstance(rt, PjsipRealtime)
        sip = ("127.0.0.1", svc.sockets.local_addresses()[0][1])
        my_port = tr.get_extra_info("sockname")[1]
        uri = f"sip:2001@127.0.0.1:{my_port}"
        assert (await ph.register_auth(sip, "2001", "s3cret", useragent="Desk/2")).status == 200
        cid = f"2001;@{md5(uri)}"  # location.c: <aor>;@<md5(uri)>

        def row() -> list[tuple[Any, ...]]:
            return db.run("SELECT id, uri, expiration_time, qualify_frequency, qualify_timeout, user_agent, "
                          "endpoint, reg_server, via_addr, via_port, call_id, authenticate_qualify, prune_on_boot "
                          "FROM ps_contacts")
        await wait_for(lambda: len(row()) == 1, timeout=10)
        (rid, ruri, exp, freq, timeout, ua, ep, server, via, vport, callid, aq, prune), = row()
        assert (rid, ruri, freq, float(timeout), ua, ep, server, via, vport, callid, aq, prune) == (
            cid, uri, 30, 2.5, "Desk/2", "2001", "sipqualify", "127.0.0.1", my_port, "reg-1@phone", "no", "no")
        assert abs(int(exp) - (time.time() + 300)) < 10
        await wait_for(lambda: ph.options > 0, timeout=10)  # qualified as a registered contact
        assert cid not in rt.peers  # our own row is never read back as an Asterisk contact
        passes = rt.stats["refreshes"]
        await wait_for(lambda: rt.stats["refreshes"] > passes + 5, timeout=15)
        assert cid not in rt.peers and rt.queued == 0
        r = await ph.register(sip, "2001", expires=0)
        if r.status == 401:
            from sipqualify.sip.digest import authorization

            auth = authorization(r.headers.get_all("WWW-Authenticate")[0], "2001", "s3cret", "REGISTER",
                                 f"sip:127.0.0.1:{sip[1]}")
            r = await ph.register(sip, "2001", expires=0, auth=auth, cseq=3)
        assert r.status == 200
        await wait_for(lambda: row() == [] and rt.queued == 0, timeout=10)
        assert rt.stats["writebacks"] == 2  # the upsert, the delete: nothing written twice
    finally:
        tr.close()
        await svc.close()


async def _max_lag_during(work: Any) -> float:
    """The longest a 10 ms sleep overshot while `work` ran: how long the loop was blocked."""
    done = False
    worst = 0.0

    async def probe() -> None:
        nonlocal worst
        while not done:
            t0 = time.perf_counter()
            await asyncio.sleep(0.01)
            worst = max(worst, time.perf_counter() - t0 - 0.01)
    task = asyncio.get_running_loop().create_task(probe())
    await asyncio.sleep(0.05)
    try:
        await work
    finally:
        done = True
        await task
    return worst


@pytest.mark.parametrize("family", ["sippeers", "ps_aors"])
async def test_converting_20k_rows_never_blocks_the_loop(family: str, tmp_path: Path) -> None:
    """A behaviour bound, not a benchmark: on the loop, 20,000 rows took 1-3 s here; on a
    worker thread the loop keeps turning (a 10 ms timer is late by far less than 500 ms)."""
    n = 20_000
    db = (Db if family == "sippeers" else PsDb)(None, tmp_path / "realtime.sqlite3")
    assert db.lite is not None
    db.lite.execute("BEGIN")  # one transaction: 20,000 autocommits would each wait for the disk
    if family == "sippeers":
        db.insert(rows(n, 5060))
        conf = write_conf(tmp_path, free_port(), "sqlite3")
    else:
        db.lite.executemany("INSERT INTO ps_aors (id, contact, qualify_frequency) VALUES (?, ?, 60)",
                            [(f"a{i}", f"sip:a{i}@127.0.0.1:5060") for i in range(n)])
        db.lite.executemany("INSERT INTO ps_endpoints (id, aors) VALUES (?, ?)", [(f"a{i}", f"a{i}") for i in range(n)])
        conf = pjsip_conf(tmp_path, "sqlite3", None)
    db.lite.execute("COMMIT")
    rt = open_realtime(load_config(conf))
    assert isinstance(rt, RealtimePeers if family == "sippeers" else PjsipRealtime)
    try:
        t0 = time.perf_counter()
        lag = await _max_lag_during(rt.load())
        took = time.perf_counter() - t0
        assert len(rt.peers) == n
        assert lag < 0.5, f"loop blocked {lag:.3f} s while {n} rows took {took:.2f} s"
    finally:
        await rt.close()


def test_pjsip_conf_reads_the_ps_families_of_extconfig_with_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "pjsip.conf").write_text("[global]\ntype = global\nrt_refresh = 0\n")
    (tmp_path / "extconfig.conf").write_text("[settings]\nsippeers => odbc,x\nps_aors => sqlite3,nosuch,ps_aors\n"
                                             "ps_contacts => odbc,asterisk\n")
    msgs = [str(m) for m in check_config(str(tmp_path / "pjsip.conf"))]
    ext = tmp_path / "extconfig.conf"
    assert any(m.startswith(f"{tmp_path / 'pjsip.conf'}:3: error") and "rt_refresh" in m for m in msgs), msgs
    assert any(m.startswith(f"{ext}:3: error") and "'nosuch'" in m for m in msgs), msgs
    assert any(m.startswith(f"{ext}:4: warning") and "'odbc' is not supported" in m for m in msgs), msgs


async def test_reload_keeps_the_realtime_objects_and_contacts(tmp_path: Path) -> None:
    t, port = await endpoint(200)
    db = PsDb(None, tmp_path / "realtime.sqlite3")
    gw = f"sip:gw@127.0.0.1:{port}"
    db.put("ps_endpoints", id="trunk", aors="trunk", auth="trunk")
    db.put("ps_auths", id="trunk", username="trunk", password="pw")
    db.put("ps_aors", id="trunk", contact=gw, qualify_frequency=1)
    async with daemon(pjsip_conf(tmp_path, "sqlite3", None), tmp_path, t) as svc:
        name = f"trunk@@{md5(gw)}"
        await wait_for(lambda: peers_ok(svc, [name]), timeout=15)
        engine = svc.engine
        assert engine is not None
        before = engine.peer(name)
        summary = await svc.reload()  # `pjsip reload`: the file is read again, the rows are kept
        assert name in svc.config.peers and summary.removed == [] and engine.peer(name) is before
        pj = svc.config.pjsip
        assert pj is not None and pj.auths["trunk"].password == "pw" and "trunk" in pj.endpoints
        await asyncio.to_thread(db.run, "UPDATE ps_aors SET qualify_frequency = 3 WHERE id = 'trunk'")
        await wait_for(lambda: svc.config.peers[name].qualifyfreq_ms == 3000, timeout=8)
