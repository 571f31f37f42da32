"""PJSIPShowEndpoints / PJSIPShowEndpoint (api/ami_pjsip.py) against Asterisk 20.20.1's bytes.

Expected bytes: tests/data/pjsip/ami_showendpoints.txt (asterisk-pjsip-observed.md §5.3, source
res/res_pjsip/pjsip_configuration.c `ami_show_endpoints` / `format_ami_endpoints`) and
ami_showendpoint_phone1.txt, ami_showendpoint_okdef.txt (§5.4, source pjsip_configuration.c
`ami_show_endpoint` / `sip_endpoint_to_ami`, config_auth.c `format_ami_auth_handler`, location.c
`format_ami_aor_handler`, pjsip_options.c `ast_sip_format_contact_ami`), copied verbatim.
"""

from __future__ import annotations

from pathlib import Path

from sipqualify.api.ami_pjsip import camel, endpoint_detail, endpoint_list
from sipqualify.config import load_config
from sipqualify.model import PjsipConfig
from sipqualify.pjsip_compat import pjsip_snapshot

DATA = Path(__file__).parent / "data" / "pjsip"
PJ = load_config(str(DATA / "observed_pjsip.conf")).pjsip
assert PJ is not None
PHONE1 = "phone1;@f21aeab93a6db6525cee4f0f7dcaf4cd"
# run 3's registration of phone1 (§5.4's ContactStatusDetail: UserAgent, RegExpire, ViaAddress, CallID)
REGISTRATION = {"peer": PHONE1, "contact": "sip:phone1@127.0.0.1:35090", "call_id": "546e2166@regc",
                "useragent": "bar-phone/1.0", "address": "127.0.0.1", "port": 35090, "expires_at": 1796152063.0}


def messages(text: str) -> list[str]:
    """Blank-line separated AMI messages, `;` comment lines dropped, each with CRLF line ends."""
    text = "".join(ln for ln in text.splitlines(True) if not ln.startswith(";"))
    return [m.replace("\n", "\r\n") + "\r\n\r\n" for m in text.strip("\n").split("\n\n")]


def split(answer: str) -> list[str]:
    return [m + "\r\n\r\n" for m in answer.split("\r\n\r\n") if m]


def test_camel_case_is_asterisk_s() -> None:
    assert [camel(n) for n in ("100rel", "t38_udptl_ec", "qualify_2xx_only", "dtls_ca_file")] == [
        "100rel", "T38UdptlEc", "Qualify2xxOnly", "DtlsCaFile"]


def test_pjsip_show_endpoints_as_captured() -> None:
    raw = (DATA / "ami_showendpoints.txt").read_text().split("<<< received:\n")[1]
    want = [m for m in messages(raw) if not m.startswith("…")]
    # run 1 at T0+40: every contact of auth, combo (ok-def), two (alive) answered; empty has none
    up = {PJ.peer_of[(a, u)] for a, u in PJ.peer_of if a in ("auth", "ok-def", "two")}
    snap = pjsip_snapshot(PJ, lambda p: ("OK", 0.001) if p in up else ("UNREACHABLE", None))
    got = split(endpoint_list(snap, PJ, "act1") or "")
    assert len(got) == 1 + 18 + 1
    assert got[:4] == want[:4]  # the ack, auth (OutboundAuths), combo (a Contacts line per AOR), empty
    assert got[-2:] == want[-2:]  # two (two contacts on one line, by id) and the completion
    assert endpoint_list(pjsip_snapshot(PjsipConfig(), lambda p: (None, None)), PjsipConfig(), None) is None


def test_pjsip_show_endpoint_of_a_registered_contact_as_captured() -> None:
    want = messages((DATA / "ami_showendpoint_phone1.txt").read_text())[1:]  # [0] is the action sent
    snap = pjsip_snapshot(PJ, lambda p: ("OK", 0.501268) if p == PHONE1 else (None, None), [REGISTRATION])
    got = split(endpoint_detail(snap, PJ, "phone1", "act1") or "")
    # the one deliberate difference: an auth's secrets are never sent (Asterisk prints the password)
    assert "Password: secret1\r\n" in want[2]
    want[2] = want[2].replace("Password: secret1\r\n", "Password: \r\n")
    assert [m.split("\r\n")[0] for m in got] == [m.split("\r\n")[0] for m in want]
    for g, w in zip(got, want, strict=True):
        assert g == w


def test_pjsip_show_endpoint_static_contacts_as_captured() -> None:
    want = messages((DATA / "ami_showendpoint_okdef.txt").read_text())
    snap = pjsip_snapshot(PJ, lambda p: ("OK", 0.027757) if p.startswith("ok-def@@") else ("UNREACHABLE", None))
    got = split(endpoint_detail(snap, PJ, "ok-def", "act1") or "")
    assert got[0].startswith("Response: Success\r\nActionID: act1\r\nEventList: start\r\n")
    assert got[1].startswith("Event: EndpointDetail\r\nActionID: act1\r\nObjectType: endpoint\r\n"
                             "ObjectName: ok-def\r\n")
    assert got[1].endswith("DeviceState: Not in use\r\nActiveChannels: 0\r\n\r\n")
    # the contact views' deliberate difference (pjsip_compat.py): a static contact shows the AOR's
    # qualify_frequency, which it is polled with, not the contact object's unused 0
    want[1] = want[1].replace("QualifyFrequency: 0\r\n", "QualifyFrequency: 5\r\n")
    assert got[2:] == want
    # Unreachable (sil-05): RoundtripUsec N/A; the AOR's 5 / 0.500 where Asterisk shows 0 / 3.000
    got = split(endpoint_detail(snap, PJ, "sil-05", None) or "")
    assert got[-2] == (
        "Event: ContactStatusDetail\r\nAOR: sil-05\r\nURI: sip:silent05@127.0.0.1:35078\r\nUserAgent: \r\n"
        "RegExpire: 0\r\nStatus: Unreachable\r\nRoundtripUsec: N/A\r\nEndpointName: sil-05\r\n"
        "ID: sil-05@@2d856176aeaa52810528768ccc9cb70e\r\nAuthenticateQualify: 0\r\nOutboundProxy: \r\nPath: \r\n"
        "QualifyFrequency: 5\r\nQualifyTimeout: 0.500\r\nQualify2xxOnly: 0\r\n\r\n")
    assert "DeviceState: Unavailable\r\n" in got[1]


def test_endpoint_with_two_aors_outbound_auth_and_configured_options(tmp_path: Path) -> None:
    """combo: AorDetail of each AOR before the ContactStatusDetail events (two formatters); the
    outbound auth's AuthDetail; options sipqualify does not use shown as configured."""
    conf = tmp_path / "pjsip.conf"
    conf.write_text((DATA / "observed_pjsip.conf").read_text()
                    + "[combo2]\ntype=endpoint\naors=ok-def,sil-05\noutbound_auth=auth-out\ncallerid=\"Desk\" <100>\n"
                      "direct_media=no\ndisallow=all\nallow=alaw,ulaw\nallow=alaw\n")
    pj = load_config(str(conf)).pjsip
    assert pj is not None
    snap = pjsip_snapshot(pj, lambda p: ("OK", 0.004317) if p.startswith("ok-def@@") else ("UNREACHABLE", None))
    got = split(endpoint_detail(snap, pj, "combo2", "x") or "")
    assert [m.split("\r\n")[0].split(": ")[1] for m in got[1:]] == [
        "EndpointDetail", "AuthDetail", "AorDetail", "AorDetail", "ContactStatusDetail", "ContactStatusDetail",
        "EndpointDetailComplete"]
    assert got[-1].endswith("ListItems: 6\r\n\r\n")
    detail = got[1]
    for line in ('Callerid: "Desk" <100>', "DirectMedia: false", "Allow: (alaw|ulaw)", "Aors: ok-def,sil-05",
                 "OutboundAuth: auth-out", "Auth: ", "Context: default", "DeviceState: Not in use"):
        assert f"\r\n{line}\r\n" in detail, line
    assert "ObjectName: auth-out\r\n" in got[2] and "Username: quser\r\n" in got[2]
    assert "Password: \r\n" in got[2] and "qpass" not in "".join(got)
    assert "EndpointName: combo2\r\n" in got[5] and "RoundtripUsec: 4317\r\n" in got[5]
    assert endpoint_detail(snap, pj, "nosuch", None) is None


def test_a_snapshot_of_the_endpoint_s_aors_gives_the_same_answer() -> None:
    """PJSIPShowEndpoint and Getvar build the snapshot of the AORs they read only (`only`)."""
    def state_of(p: str) -> tuple[str | None, float | None]:
        return ("OK", 0.004317) if p.startswith("ok-def@@") else ("UNREACHABLE", None)

    full = pjsip_snapshot(PJ, state_of, [REGISTRATION])
    for name in ("combo", "phone1", "ok-def", "empty"):
        part = pjsip_snapshot(PJ, state_of, [REGISTRATION], PJ.endpoints[name].aors)
        assert endpoint_detail(part, PJ, name, "a") == endpoint_detail(full, PJ, name, "a")
    part = pjsip_snapshot(PJ, state_of, [REGISTRATION], ["ok-def"])
    assert [a["name"] for a in part["aors"]] == ["ok-def"]
    assert [e["name"] for e in part["endpoints"]] == ["ok-def"]  # combo also lists sil-05: left out
