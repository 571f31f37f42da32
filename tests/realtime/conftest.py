"""A real PostgreSQL (Debian's, initdb + pg_ctl in a temporary directory, on a unix socket and
a loopback port, as `nobody` when the tests run as root) and SQLite files, both with the
`sippeers` table of Asterisk's own schema (contrib/ast-db-manage, revision 4da0c5f79a9c
create_tables, with the later widening of useragent and regserver). Like every real program
of the suite, a missing PostgreSQL skips, and fails when `CI` is set.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from ..helpers import Postgres

# Asterisk's sippeers (ast-db-manage 4da0c5f79a9c_create_tables.py; useragent 255 from
# 1758e8bbf6b, regserver 100 from 1ae0609b6646); the enum columns as text for both databases
SIPPEERS = """CREATE TABLE sippeers (
    id {serial},
    name VARCHAR(40) NOT NULL UNIQUE,
    ipaddr VARCHAR(45), port INTEGER, regseconds INTEGER, defaultuser VARCHAR(40),
    fullcontact VARCHAR(80), regserver VARCHAR(100), useragent VARCHAR(255), lastms INTEGER,
    host VARCHAR(40), type VARCHAR(6), context VARCHAR(40), permit VARCHAR(95), deny VARCHAR(95),
    secret VARCHAR(40), md5secret VARCHAR(40), remotesecret VARCHAR(40), transport VARCHAR(7),
    dtmfmode VARCHAR(8), directmedia VARCHAR(6), nat VARCHAR(29), callgroup VARCHAR(40),
    pickupgroup VARCHAR(40), language VARCHAR(40), disallow VARCHAR(200), allow VARCHAR(200),
    insecure VARCHAR(40), accountcode VARCHAR(40), callerid VARCHAR(40), mailbox VARCHAR(40),
    fromdomain VARCHAR(40), fromuser VARCHAR(40), qualify VARCHAR(40), defaultip VARCHAR(45),
    outboundproxy VARCHAR(40), qualifyfreq INTEGER, fullname VARCHAR(40), "call-limit" INTEGER,
    dynamic VARCHAR(3), path VARCHAR(256), supportpath VARCHAR(3)
)"""
PG_SERIAL = "SERIAL PRIMARY KEY"
SQLITE_SERIAL = "INTEGER PRIMARY KEY AUTOINCREMENT"


@pytest.fixture
def postgres() -> Iterator[Postgres]:
    pytest.importorskip("psycopg") if not os.environ.get("CI") else __import__("psycopg")
    pg = Postgres()
    pg.sql(SIPPEERS.format(serial=PG_SERIAL))
    try:
        yield pg
    finally:
        pg.close()


def sqlite_db(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)  # statements run via to_thread
    db.execute(SIPPEERS.format(serial=SQLITE_SERIAL))
    return db
