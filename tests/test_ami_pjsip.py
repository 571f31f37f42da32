"""AMI for pjsip.conf contacts (api/ami_pjsip.py) against Asterisk 20.20.1's bytes
(tests/data/pjsip/ami_*.txt, copied from asterisk-pjsip-observed.md §5.2 and §5.6)."""

from __future__ import annotations

from pathlib import Path

from sipqualify.api.ami_pjsip import aor_list, change_events, contact_list
from sipqualify.config import load_config
from sipqualify.pjsip_compat import pjsip_snapshot
from sipqualify.qualify.pjsip_state import PjsipStates, registry_change

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


def _msgs(text: str) -> list[str]:
    return [m.replace("\n", "\r\n") + "\r\n\r\n" for m in text.strip("\n").split("\n\n")]


# §5.6: phone1 registers from 35090 (NonQualified at creation, then the first qualify), then its
# last contact unregisters (`Expires: 0`)
PHONE1_UP = """
Event: PeerStatus
Privilege: system,all
ChannelType: PJSIP
Peer: PJSIP/phone1
PeerStatus: Reachable

Event: DeviceStateChange
Privilege: call,all
Device: PJSIP/phone1
State: NOT_INUSE

Event: ContactStatus
Privilege: system,all
URI: sip:phone1@127.0.0.1:35090
ContactStatus: NonQualified
AOR: phone1
EndpointName: phone1
RoundtripUsec: 0

Event: ContactStatus
Privilege: system,all
URI: sip:phone1@127.0.0.1:35090
ContactStatus: Reachable
AOR: phone1
EndpointName: phone1
RoundtripUsec: 499
"""
PHONE1_GONE = """
Event: PeerStatus
Privilege: system,all
ChannelType: PJSIP
Peer: PJSIP/phone1
PeerStatus: Unreachable

Event: DeviceStateChange
Privilege: call,all
Device: PJSIP/phone1
State: UNAVAILABLE

Event: ContactStatus
Privilege: system,all
URI: sip:phone1@127.0.0.1:35090
ContactStatus: Removed
AOR: phone1
EndpointName: phone1
RoundtripUsec: 0
"""


def test_registered_contact_created_reachable_and_removed_events() -> None:
    """The same messages as captured; ours in the one order of every change (PeerStatus,
    ContactStatus, DeviceStateChange: README's deliberate difference)."""
    states = PjsipStates(PJ)
    cid, uri = "phone1;@f21aeab93a6db6525cee4f0f7dcaf4cd", "sip:phone1@127.0.0.1:35090"
    created = registry_change(states, cid, "Created", uri)
    assert created is not None and created.lines() == []  # no log line for the status object's creation
    assert registry_change(states, cid, "Created", uri) is None  # a refresh: nothing
    reach = states.change(cid, "OK", 0.000499)
    assert reach is not None
    got = texts(change_events(created)) + texts(change_events(reach))
    assert sorted(got) == sorted(_msgs(PHONE1_UP))
    assert [m.split("\r\n")[0] for m in got] == ["Event: ContactStatus", "Event: PeerStatus", "Event: ContactStatus",
                                                 "Event: DeviceStateChange"]
    gone = registry_change(states, cid, "Removed", "")
    assert gone is not None and sorted(texts(change_events(gone))) == sorted(_msgs(PHONE1_GONE))
    assert gone.lines() == [f"Contact phone1/{uri} has been deleted", "Endpoint phone1 is now Unreachable"]
    assert registry_change(states, cid, "Removed", "") is None and not states.knows(cid)


def test_pjsip_show_contacts_lists_registered_contacts_as_captured() -> None:
    """§5.1: registered contacts only (static ones never), by id, in the captured field order."""
    expected = _msgs((DATA / "ami_showcontacts.txt").read_text())
    regs = [("phone1;@f21aeab93a6db6525cee4f0f7dcaf4cd", "sip:phone1@127.0.0.1:35090", "a45dda61@regc",
             1796151680.2, ("OK", 0.002353)),
            ("phone2;@14d92dec16ce2231edf6c0fbcd9b9ef2", "sip:phone2@127.0.0.1:35093", "599c25a3@regc",
             1796151671.9, ("OK", 0.000879)),
            ("phone2;@a3300cd16d29592544ef766c5aff30a7", "sip:phone2@127.0.0.1:35092", "2da03524@regc",
             1796151670.0, ("UNREACHABLE", None))]
    state = {cid: st for cid, *_, st in regs}
    bindings = [{"peer": cid, "contact": uri, "address": "127.0.0.1", "port": int(uri.rpartition(":")[2]),
                 "useragent": "bar-phone/1.0", "call_id": call_id, "expires_at": exp}
                for cid, uri, call_id, exp, _ in regs]
    snap = pjsip_snapshot(PJ, lambda p: state.get(p, ("OK", 0.001)), bindings)
    got = contact_list(snap, "act1")
    assert got is not None and [m + "\r\n\r\n" for m in got.split("\r\n\r\n") if m] == expected
    assert contact_list(pjsip_snapshot(PJ, lambda p: ("OK", 0.001)), "act1") is None  # `No Contacts found`
