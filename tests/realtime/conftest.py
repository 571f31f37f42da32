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


# Asterisk's PJSIP realtime tables, the columns sipqualify reads and writes (ast-db-manage
# 43956d550a44_add_tables_for_pjsip.py, with the later revisions: ps_aors.contact 255
# (2d078ec071b7), qualify_timeout (461d7d691209), outbound_proxy/support_path (2fc7930b41b3),
# ps_contacts.uri 511 (1d3ed26d9978), outbound_proxy/path/user_agent (2fc7930b41b3),
# reg_server (81b01a191a46), via_addr/via_port/call_id (a845e4d8ade8), endpoint and
# expiration_time BIGINT (ef7efc2d3964), authenticate_qualify (3e99a951d704), prune_on_boot);
# the enum columns (yesno_values ...) as text for both databases, `id` UNIQUE NOT NULL as there
PS_TABLES = (
    """CREATE TABLE ps_endpoints (id VARCHAR(40) NOT NULL UNIQUE, transport VARCHAR(40), aors VARCHAR(200),
    auth VARCHAR(40), context VARCHAR(40), disallow VARCHAR(200), allow VARCHAR(200), direct_media VARCHAR(3),
    outbound_auth VARCHAR(40), outbound_proxy VARCHAR(40), rewrite_contact VARCHAR(3), from_domain VARCHAR(40),
    from_user VARCHAR(40), callerid VARCHAR(40), device_state_busy_at INTEGER, mwi_fromuser VARCHAR(40))""",
    """CREATE TABLE ps_auths (id VARCHAR(40) NOT NULL UNIQUE, auth_type VARCHAR(8), nonce_lifetime INTEGER,
    md5_cred VARCHAR(40), password VARCHAR(80), realm VARCHAR(40), username VARCHAR(40))""",
    """CREATE TABLE ps_aors (id VARCHAR(40) NOT NULL UNIQUE, contact VARCHAR(255), default_expiration INTEGER,
    mailboxes VARCHAR(80), max_contacts INTEGER, minimum_expiration INTEGER, remove_existing VARCHAR(3),
    qualify_frequency INTEGER, authenticate_qualify VARCHAR(3), maximum_expiration INTEGER,
    outbound_proxy VARCHAR(40), support_path VARCHAR(3), qualify_timeout FLOAT)""",
    """CREATE TABLE ps_contacts (id VARCHAR(255) NOT NULL UNIQUE, uri VARCHAR(511), expiration_time BIGINT,
    qualify_frequency INTEGER, outbound_proxy VARCHAR(40), path TEXT, user_agent VARCHAR(255),
    qualify_timeout FLOAT, reg_server VARCHAR(255), authenticate_qualify VARCHAR(3), via_addr VARCHAR(40),
    via_port INTEGER, call_id VARCHAR(255), endpoint VARCHAR(40), prune_on_boot VARCHAR(3))""",
    """CREATE TABLE ps_endpoint_id_ips (id VARCHAR(40) NOT NULL UNIQUE, endpoint VARCHAR(40), match VARCHAR(80))""",
)
PS_FAMILIES = ("ps_endpoints", "ps_auths", "ps_aors", "ps_contacts", "ps_endpoint_id_ips")
