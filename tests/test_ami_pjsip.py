"""AMI for pjsip.conf contacts (api/ami_pjsip.py) against Asterisk 20.20.1's bytes
(tests/data/pjsip/ami_*.txt, copied from asterisk-pjsip-observed.md §5.2 and §5.6)."""

from __future__ import annotations

from pathlib import Path

from sipqualify.api.ami_pjsip import aor_list, change_events
from sipqualify.config import load_config
from sipqualify.pjsip_compat import pjsip_snapshot
from sipqualify.qualify.pjsip_state import PjsipStates

DATA = Path(__file__).parent / "data" / "pjsip"
CFG = load_config(str(DATA / "observed_pjsip.conf"))
PJ = CFG.pjsip
assert PJ is not None
PEER = {aor: peer for (aor, _), peer in PJ.peer_of.items()}


def captured_groups() -> list[list[str]]:
    """§5.6: each group a list of AMI messages with CRLF line ends (the `# T0+` lines dropped)."""
    text = "".join(ln for ln in (DATA / "ami_events.txt").read_text().splitlines(True) if not ln.startswith(";"))
    groups = []
    for g in text.split("=====\n"):
        lines = [ln for ln in g.splitlines() if not ln.startswith("# T0+")]
        msgs = "\n".join(lines).strip("\n").split("\n\n")
        groups.append([m.replace("\n", "\r\n") + "\r\n\r\n" for m in msgs])
    return groups


def texts(events: list[tuple[str, str]]) -> list[str]:
    return [t for _, t in events]


def _kind(msg: str) -> int:
    return ["PeerStatus", "ContactStatus", "DeviceStateChange"].index(msg.split("\r\n")[0].split(": ")[1])


def test_contact_status_events_as_captured() -> None:
    first_unreachable, ok_up, sil05_down, flap_down = captured_groups()
    states = PjsipStates(PJ)
    ch = states.change(PEER["nf-2xx"], "UNREACHABLE", None)
    assert ch is not None and texts(change_events(ch)) == first_unreachable  # endpoints start offline
    ch = states.change(PEER["ok-def"], "OK", 0.501371)
    assert ch is not None
    # one PeerStatus, ContactStatus and DeviceStateChange per endpoint (combo, ok-def); Asterisk sent one
    # DeviceStateChange from another thread before the ContactStatus events: here always in this order
    assert texts(change_events(ch)) == sorted(ok_up, key=_kind)
    ch = states.change(PEER["sil-05"], "UNREACHABLE", None)
    assert ch is not None and texts(change_events(ch)) == sil05_down  # combo stays online (ok-def)
    assert states.change(PEER["flap"], "OK", 0.0015) is not None
    ch = states.change(PEER["flap"], "UNREACHABLE", None)
    assert ch is not None and texts(change_events(ch)) == flap_down
    assert [c for c, _ in change_events(ch)] == ["system", "system", "call"]


def test_pjsip_show_aors_as_captured() -> None:
    raw = (DATA / "ami_showaors.txt").read_text().split("<<< received:\n")[1]
    msgs = [m.replace("\n", "\r\n") + "\r\n\r\n" for m in raw.strip("\n").split("\n\n")]
    snap = pjsip_snapshot(PJ, lambda p: ("OK", 0.001))
    got = aor_list(snap, "act1").split("\r\n\r\n")
    got = [m + "\r\n\r\n" for m in got if m]
    assert got[:3] == msgs[:3]  # the ack, `auth`, `empty`
    assert got[-2:] == msgs[-2:]  # `two` (contacts in hash order, joined by commas) and the completion
    assert len(got) == 2 + 18
