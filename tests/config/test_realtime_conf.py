"""extconfig.conf and the realtime driver files: the option table against
docs/configuration.md, and file:line messages for what cannot be used."""

from __future__ import annotations

from pathlib import Path

from sipqualify.config import check_config, load_config
from sipqualify.config.realtime import REALTIME_OPTIONS, pg_conninfo

from ..helpers import doc_entries


def test_every_realtime_option_is_documented_and_nothing_else() -> None:
    entries = {(e.section, e.heading): e for e in doc_entries() if (e.section or "").startswith("realtime:")}
    table = {(f"realtime:{o.file}", o.name): o for o in REALTIME_OPTIONS}
    assert sorted(set(entries) - set(table)) == [], "documented, but not in REALTIME_OPTIONS"
    assert sorted(set(table) - set(entries)) == [], "in REALTIME_OPTIONS, but not documented"
    for key, opt in table.items():
        e = entries[key]
        where = f"docs/configuration.md:{e.line} ({opt.file} {opt.name})"
        assert (e.default, e.unit, e.read_from) == (opt.default, opt.unit, opt.file), where
        assert opt.name in e.example and len(e.text) > 20, where


def test_mappings_and_driver_files_read_with_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "sip.conf").write_text("[general]\nqualify=yes\n")
    (tmp_path / "extconfig.conf").write_text("[settings]\nsippeers => pgsql,general\nps_aors => odbc,asterisk\n"
                                             "ps_contacts => pgsql,general,ps_contacts\nbroken => pgsql\n")
    (tmp_path / "res_pgsql.conf").write_text("[general]\ndbhost=db.test\ndbport=5433\ndbpass=x\nbogus=1\n")
    msgs = [(m.severity, m.file.rsplit("/", 1)[-1], m.line) for m in check_config(str(tmp_path / "sip.conf"))]
    assert msgs == [("warning", "extconfig.conf", 3), ("error", "extconfig.conf", 5), ("warning", "res_pgsql.conf", 5)]
    (tmp_path / "extconfig.conf").write_text("[settings]\nsippeers => pgsql,general\n"
                                             "ps_contacts => pgsql,general,ps_contacts\n")
    cfg = load_config(str(tmp_path / "sip.conf"))
    assert cfg.realtime is not None and cfg.realtime.mappings["sippeers"].table == "sippeers"
    assert cfg.realtime.mappings["ps_contacts"].table == "ps_contacts"
    assert pg_conninfo(cfg.realtime.pgsql) == {"host": "db.test", "port": "5433", "dbname": "asterisk",
                                               "user": "asterisk", "password": "x"}


def test_sqlite3_section_must_exist_with_a_dbfile(tmp_path: Path) -> None:
    (tmp_path / "sip.conf").write_text("[general]\n")
    (tmp_path / "extconfig.conf").write_text("[settings]\nsippeers => sqlite3,nothere,sippeers\n")
    (tmp_path / "res_config_sqlite3.conf").write_text("[asterisk]\nbatch=100\n")
    msgs = [(m.severity, m.file.rsplit("/", 1)[-1], m.line) for m in check_config(str(tmp_path / "sip.conf"))]
    assert msgs == [("error", "res_config_sqlite3.conf", 1), ("error", "extconfig.conf", 2)]
