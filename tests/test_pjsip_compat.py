"""`pjsip show contacts|contact|aors|aor|endpoints|endpoint` against Asterisk 20.20.1's bytes
(tests/data/pjsip/cli/, copied from asterisk-pjsip-observed.md §4; layouts from location.c,
pjsip_configuration.c and pjsip_cli.c). The contact statuses and RTTs fed in are the ones the
capture shows at that moment; everything else (order, hashes, widths, rules, counts, endpoint
states) is computed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from sipqualify.config import load_config
from sipqualify.config.pjsip import contact_id
from sipqualify.pjsip_compat import (
    not_found,
    pjsip_snapshot,
    show_aor,
    show_aors,
    show_contact,
    show_contacts,
    show_endpoint,
    show_endpoints,
)

DATA = Path(__file__).parent / "data" / "pjsip"
CFG = load_config(str(DATA / "observed_pjsip.conf"))
PJ = CFG.pjsip
assert PJ is not None
OK, DOWN, NQ = "OK", "UNREACHABLE", "UNKNOWN"

# (AOR, state, RTT ms) per static contact, run 1 at T0+3 (§4.1) and T0+40 (§4.2)
T3: dict[str, tuple[str, float | None]] = {"nf-def": (OK, 1.312), "ok-def": (OK, 501.371)}
T40: dict[str, tuple[str, float | None]] = {
    "auth": (OK, 2.465), "flap": (DOWN, None), "nf-2xx": (DOWN, None), "nf-def": (OK, 1.383),
    "ok-def": (OK, 4.317), "sil-05": (DOWN, None), "sil-2": (DOWN, None), "sil-def": (DOWN, None),
    "slow-05": (DOWN, None), "slow-def": (OK, 704.989), "try-def": (DOWN, None),
    "two/sip:alive@127.0.0.1:35081": (OK, 1.017), "two/sip:dead@127.0.0.1:35082": (DOWN, None)}
REG40 = {  # registered contacts at T0+40 (ids `<aor>;@<md5(uri)>`)
    "phone1": [("phone1;@f21aeab93a6db6525cee4f0f7dcaf4cd", "sip:phone1@127.0.0.1:35090", OK, 0.000847)],
    "phone2": [("phone2;@a3300cd16d29592544ef766c5aff30a7", "sip:phone2@127.0.0.1:35092", DOWN, None),
               ("phone2;@14d92dec16ce2231edf6c0fbcd9b9ef2", "sip:phone2@127.0.0.1:35093", OK, 0.001524)],
}


def binding(cid: str, uri: str, call_id: str = "", expires_at: float = 0.0) -> dict[str, Any]:
    """One of ReadModel.registrations(), as the registrar's binding of a registered contact."""
    return {"peer": cid, "contact": uri, "address": "127.0.0.1", "port": int(uri.rpartition(":")[2]),
            "useragent": "bar-phone/1.0", "call_id": call_id, "expires_at": expires_at}


def snapshot(states: dict[str, tuple[str, float | None]], registered: Any = None,
             bindings: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    by_peer: dict[str, tuple[str | None, float | None]] = {}
    for (aor, uri), peer in PJ.peer_of.items():
        st, ms = states.get(f"{aor}/{uri}", states.get(aor, (NQ, None)))
        by_peer[peer] = (st, ms / 1000 if ms is not None else None)
    regs = {b["peer"]: b for b in bindings or []}
    for cid, uri, st, rtt in (c for cs in (registered or {}).values() for c in cs):
        by_peer[cid] = (st, rtt)
        regs.setdefault(cid, binding(cid, uri))
    return pjsip_snapshot(PJ, lambda p: by_peer.get(p, (None, None)), list(regs.values()))


def expected(name: str) -> str:
    return (DATA / "cli" / name).read_text()


def test_show_contacts_at_start_and_with_every_state() -> None:
    assert show_contacts(snapshot(T3)) == expected("contacts_t3.txt")
    assert show_contacts(snapshot(T40, REG40)) == expected("contacts_t40.txt")


def test_show_aors_hash_order_and_like() -> None:
    snap = snapshot(T40, REG40)
    assert show_aors(snap) == expected("aors_t40.txt")
    two = snapshot({"two/sip:alive@127.0.0.1:35081": (OK, 4.064), "two": (DOWN, None)})
    assert show_aors(two, "two") == expected("aors_like_two.txt")


@pytest.mark.parametrize("aor", ["ok-def", "two", "nq", "empty"])
def test_show_aor(aor: str) -> None:
    assert show_aor(snapshot(T40, REG40), aor) == expected(f"aor_{aor}.txt")


def test_show_aor_of_registered_contact() -> None:
    reg = {"phone1": [(*REG40["phone1"][0][:3], 0.002353)]}
    assert show_aor(snapshot(T40, reg), "phone1") == expected("aor_phone1.txt")


def test_show_endpoints_states_auth_and_contacts() -> None:
    assert show_endpoints(snapshot(T40, REG40)) == expected("endpoints_t40.txt")


def test_show_endpoint_reachability_part() -> None:
    full = expected("endpoint_ok-def.txt")
    assert show_endpoint(snapshot(T40), "ok-def") == full[:full.index(" ParameterName")]


def test_show_contact_and_its_deliberate_difference() -> None:
    """Byte for byte but for the qualify lines: the AOR's values, not the contact object's defaults."""
    snap = snapshot({"ok-def": (OK, 2.267), "sil-05": (DOWN, None)})
    got = show_contact(snap, "ok-def/sip:ok@127.0.0.1:35071")
    assert got == expected("contact_ok-def.txt").replace(
        "qualify_frequency    : 0", "qualify_frequency    : 5")
    got = show_contact(snap, "sil-05/sip:silent05@127.0.0.1:35078")
    assert got == expected("contact_sil-05.txt").replace(
        "qualify_frequency    : 0", "qualify_frequency    : 5").replace("3.000000", "0.500000")
    assert show_contact(snap, "nq/sip:nq@127.0.0.1:35084") == expected("contact_nq.txt")  # its AOR: 0, 3.0
    assert show_contact(snap, "sil-0/sip:silent0@127.0.0.1:35086") == expected("contact_sil-0.txt").replace(
        "qualify_frequency    : 0", "qualify_frequency    : 60").replace("3.000000", "0.000000")
    assert show_contact(snap, "nosuch/sip:x@y") is None
    assert not_found("nosuch/sip:x@y") == "Unable to find object nosuch/sip:x@y.\n\n"
    assert show_contact(snap, contact_id("ok-def", "sip:ok@127.0.0.1:35071")) is None  # ids are not keys (§4.3)


def test_show_contact_of_a_registered_contact_shows_its_binding() -> None:
    """§4.3, run 3: a registered contact's object carries the REGISTER's Call-ID, User-Agent,
    Via address and port, expiry and endpoint, and its AOR's qualify settings."""
    cid, uri = REG40["phone1"][0][:2]
    snap = snapshot({}, {"phone1": [(cid, uri, OK, 0.501268)]},
                    [binding(cid, uri, "546e2166@regc", 1796152063.4)])
    assert show_contact(snap, f"phone1/{uri}") == expected("contact_phone1.txt")


def test_show_endpoint_auth_lines_outbound_first_one_per_auth(tmp_path: Path) -> None:
    """pjsip_configuration.c cli_endpoint_print_body: the outbound auths' lines, then the inbound
    ones, one `name/username` per defined auth (an undefined one is skipped), as §4.6 shows
    `    OutAuth:  auth-out/quser` and `     InAuth:  phone1-auth/phone1`."""
    conf = tmp_path / "pjsip.conf"
    conf.write_text((DATA / "observed_pjsip.conf").read_text()
                    + "[both]\ntype=endpoint\naors=nq\nauth=phone1-auth\noutbound_auth=auth-out,nosuch,phone2-auth\n")
    pj = load_config(str(conf)).pjsip
    assert pj is not None
    text = show_endpoint(pjsip_snapshot(pj, lambda p: (None, None)), "both")
    assert text is not None
    lines = text.split("=" * 90 + "\n\n")[1].splitlines()
    assert lines[1:4] == ["    OutAuth:  auth-out/quser", "    OutAuth:  phone2-auth/phone2",
                          "     InAuth:  phone1-auth/phone1"]
    assert lines[4].startswith("        Aor:  nq ")


def test_show_endpoint_whole_with_its_options_as_captured() -> None:
    """§4.7 whole (tests/data/pjsip/cli/endpoint_ok-def.txt): with the snapshot of the endpoint
    alone (`GET /api/v1/pjsip?endpoint=`), its 138 options by name (pjsip_cli.c
    ast_sip_cli_print_sorcery_objectset), values as Asterisk 20.20.1 printed them."""
    ok = PJ.peer_of[("ok-def", "sip:ok@127.0.0.1:35071")]
    snap = pjsip_snapshot(PJ, lambda p: ("OK", 0.004317) if p == ok else (None, None), [], PJ.endpoints["ok-def"].aors)
    assert show_endpoint(snap, "ok-def") == expected("endpoint_ok-def.txt")
