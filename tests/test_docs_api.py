"""docs/api.md against the running daemon: the Peer object's fields, the Status object's keys
and every /metrics family with its type, both ways (documented means served, served means
documented). The tables are read by their first cells: the names in backticks."""

from __future__ import annotations

import asyncio
import re
import socket
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from sipqualify.compat import format_sip_show_peer
from sipqualify.service import Service, ServiceOptions
from sipqualify.views import PeerView

from .helpers import MANAGER_CONF, api, free_port, scrape, sip_conf

API_MD = Path(__file__).parent.parent / "docs" / "api.md"
_CELL = re.compile(r"(?<!\\)\|")


def doc_table(heading: str) -> list[list[str]]:
    """The rows (cells stripped) of the first table under `heading` in docs/api.md."""
    lines = API_MD.read_text().splitlines()
    i = lines.index(heading) + 1
    while not lines[i].startswith("|"):
        assert not lines[i].startswith("#"), f"no table under {heading!r}"
        i += 1
    rows: list[list[str]] = []
    for line in lines[i + 2:]:  # past the header and the |---| line
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in _CELL.split(line)[1:-1]])
    return rows


def names(cell: str) -> list[str]:
    return re.findall(r"`([^`]+)`", cell)


def documented_metrics() -> dict[str, str]:
    """Family name as prometheus-client's parser gives it (a counter without `_total`) -> type
    ("" for the standard families whose type the doc leaves open; `*` names are prefixes)."""
    out: dict[str, str] = {}
    for row in doc_table("## Prometheus `/metrics`"):
        ms = names(row[0])
        types = [t.strip() for t in row[1].split(",")] if row[1] else [""]
        assert len(types) in (1, len(ms)), row
        for m, t in zip(ms, types * len(ms) if len(types) == 1 else types, strict=True):
            if t == "counter":
                assert m.endswith("_total"), f"{m}: counters are documented with _total"
                m = m.removesuffix("_total")
            assert m not in out, f"{m} documented twice"
            out[m] = t
    return out


def test_openapi_peer_schema_matches_the_doc() -> None:
    from sipqualify.api.openapi import PEER

    documented = {n for row in doc_table("## Peer object") for n in names(row[0])}
    assert set(PEER["properties"]) == documented, sorted(set(PEER["properties"]) ^ documented)  # type: ignore[arg-type]


def test_doc_tables_parse() -> None:
    metrics = documented_metrics()
    assert metrics["sipqualify_peer_status"] == "gauge" and metrics["sipqualify_rtt_seconds"] == "histogram"
    assert "keepalive_ms" in {n for row in doc_table("## Peer object") for n in names(row[0])}


async def test_api_md_matches_the_daemon(tmp_path: Path) -> None:
    (tmp_path / "manager.conf").write_text(MANAGER_CONF.format(port=free_port(socket.SOCK_STREAM)))
    sip = sip_conf(tmp_path / "sip.conf", free_port(), {
        "trunk": {"host": "127.0.0.1", "port": free_port(), "qualify": "no", "keepalive": 30},
        "plain": {"host": "127.0.0.1", "port": free_port(), "qualify": "no"},
        "phone": {"host": "dynamic", "secret": "s3cret", "qualify": "yes"},
    }, "qualifygap=10\ntcpenable=yes")
    svc = Service(ServiceOptions(sip, "127.0.0.1", 0, str(tmp_path / "s"),
                                 manager_conf=str(tmp_path / "manager.conf")))
    await svc.start()
    try:
        assert svc.tcp is not None and svc.ami is not None  # every optional family is served
        code, body = await api(svc, "GET", "/api/v1/peers")
        assert code == 200
        peer_fields = {n for row in doc_table("## Peer object") for n in names(row[0])}
        for p in body["peers"]:
            assert set(p) == peer_fields, (p["name"], sorted(set(p) ^ peer_fields))

        code, status = await api(svc, "GET", "/api/v1/status")
        assert code == 200
        assert set(status) == {n for row in doc_table("## Status object") for n in names(row[0])}

        code, text = await asyncio.to_thread(scrape, svc)
        assert code == 200
        served = {f.name: f.type for f in text_string_to_metric_families(text)}
        documented = documented_metrics()
        prefixes = [m.removesuffix("*") for m in documented if m.endswith("*")]
        undocumented = {m for m in served if m not in documented and not any(m.startswith(p) for p in prefixes)}
        assert not undocumented, f"served but not in docs/api.md: {sorted(undocumented)}"
        missing = {m for m in documented
                   if not (any(s.startswith(m[:-1]) for s in served) if m.endswith("*") else m in served)}
        assert not missing, f"in docs/api.md but not served: {sorted(missing)}"
        wrong = {m: (t, served[m]) for m, t in documented.items() if t and m in served and served[m] != t}
        assert not wrong, f"documented type != served type: {wrong}"

        # the Peer JSON carries keepalive= (s) as ms, and `sip show peer` prints it (chan_sip)
        peers = {p["name"]: p for p in body["peers"]}
        assert (peers["trunk"]["keepalive_ms"], peers["plain"]["keepalive_ms"]) == (30_000, 0)
        shown = format_sip_show_peer(PeerView.from_json(peers["trunk"]))
        assert "\n  Keepalive    : 30000 ms\n" in shown
    finally:
        await svc.close()
