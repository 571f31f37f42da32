"""The daemon on a pjsip.conf (127.0.0.1 only): contacts qualified with the pjsip policy, shown by
`sipqualify pjsip show ...` through GET /api/v1/pjsip."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest

from sipqualify.service import Service, ServiceOptions

from .helpers import api, cli, endpoint, free_port, wait_for


async def test_daemon_qualifies_pjsip_contacts_and_cli_shows_them(tmp_path: Path,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="sipqualify")
    ok, ok_port = await endpoint(200)
    dead = free_port()  # nothing listens there
    conf = tmp_path / "pjsip.conf"
    conf.write_text(
        f"[udp]\ntype = transport\nprotocol = udp\nbind = 127.0.0.1:{free_port()}\n"
        "[global]\ntype = global\nmax_initial_qualify_time = 1\n"
        "[trunk](!)\ntype = aor\nqualify_frequency = 2\nqualify_timeout = 0.5\n"
        f"[itsp](trunk)\ncontact = sip:gw@127.0.0.1:{ok_port}\ncontact = sip:gw@127.0.0.1:{dead}\n"
        "[itsp]\ntype = endpoint\naors = itsp\n")
    svc = Service(ServiceOptions(str(conf), "127.0.0.1", 0, str(tmp_path / "s")))
    await svc.start()
    try:
        engine = svc.engine
        assert engine is not None
        names = list(svc.config.peers)
        await wait_for(lambda: sorted(engine.peer(n).state for n in names) == ["OK", "UNREACHABLE"],  # type: ignore[union-attr]
                       15)
        _, snap = await api(svc, "GET", "/api/v1/pjsip")
        assert sorted(c["status"] for a in snap["aors"] for c in a["contacts"]) == ["Reachable", "Unreachable"]
        assert snap["endpoints"][0]["online"] is True
        await wait_for(lambda: sum("is now" in r.getMessage() for r in caplog.records) == 3)
        lines = [r.getMessage() for r in caplog.records if "is now" in r.getMessage()]
        # res_pjsip's texts (asterisk-pjsip-observed.md §6), not chan_sip's
        up = re.escape(f"Contact itsp/sip:gw@127.0.0.1:{ok_port} is now Reachable.  RTT: ") + r"\d+\.\d{3} msec"
        assert len(lines) == 3 and "Endpoint itsp is now Reachable" in lines
        assert f"Contact itsp/sip:gw@127.0.0.1:{dead} is now Unreachable.  RTT: 0.000 msec" in lines
        assert any(re.fullmatch(up, ln) for ln in lines)
        code, out, err = await cli("pjsip", "show", "contacts", "--api", f"127.0.0.1:{svc.api_addr[1]}",
                                   "--state-dir", str(tmp_path / "s"))
        assert code == 0, err
        rows = [ln for ln in out.splitlines() if ln.startswith("  Contact:  itsp/")]
        assert {r.split()[1]: r.split()[3] for r in rows} == {f"itsp/sip:gw@127.0.0.1:{ok_port}": "Avail",
                                                              f"itsp/sip:gw@127.0.0.1:{dead}": "Unavail"}
        assert out.endswith("\nObjects found: 2\n")
        code, out, _ = await cli("pjsip", "show", "endpoint", "nosuch", "--api", f"127.0.0.1:{svc.api_addr[1]}",
                                 "--state-dir", str(tmp_path / "s"))
        assert (code, out) == (1, "Unable to find object nosuch.\n\n")
    finally:
        await svc.close()
        ok.close()
