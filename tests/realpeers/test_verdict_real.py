"""Verdicts against real peers (issue 13): Kamailio challenging OPTIONS with 407 and answering 503
by script (kamailio_auth.cfg.tmpl), sipqualify answering the challenge (qualify_auth)."""

from __future__ import annotations

import hashlib
import re

import pytest

from .peers import HERE, Daemon, Kamailio, Lab, peer, sip_conf

realpeer = pytest.mark.realpeer
AUTH_TEMPLATE = HERE / "kamailio_auth.cfg.tmpl"


@realpeer
def test_kamailio_407_answered_with_digest_and_503_degraded(lab: Lab) -> None:
    kam = Kamailio(lab, template=AUTH_TEMPLATE)
    d = Daemon(lab, sip_conf({
        # the right password: the 407 is answered, Kamailio's auth module accepts it, 200: up
        "trunk-ok": peer(kam.port, qualify="yes", qualifyfreq=2, fromuser="auth", secret="s3cret",
                         qualify_auth="yes"),
        # a wrong password: Kamailio challenges the authenticated request again: down, auth_failed
        "trunk-bad": peer(kam.port, qualify="yes", qualifyfreq=2, fromuser="wrong", secret="nope",
                          qualify_auth="yes"),
        # chan_sip exact (no qualify_auth): the 407 is the answer
        "trunk-plain": peer(kam.port, qualify="yes", qualifyfreq=2, fromuser="auth", secret="s3cret"),
        "busy": peer(kam.port, qualify="yes", qualifyfreq=2, fromuser="busy", reply_degraded=503),
    }))
    ok = d.wait_for("trunk-ok", lambda p: p["verdict"] == "up", "up")
    assert ok["state"] == "OK" and ok["reason"] == ""
    bad = d.wait_for("trunk-bad", lambda p: p["verdict"] == "down", "down")
    assert bad["reason"] == "auth_failed"
    assert bad["state"] == "OK"  # the chan_sip state: Kamailio did answer
    plain = d.wait_for("trunk-plain", lambda p: p["verdict"] == "up", "up")
    assert plain["reason"] == "auth_required" and plain["state"] == "OK"
    busy = d.wait_for("busy", lambda p: p["verdict"] == "degraded", "degraded")
    assert busy["reason"] == "degraded:503" and busy["state"] == "OK"
    log = kam.proc.log_text()
    # Kamailio's own word: challenged, then authenticated on the retry with CSeq + 1
    challenged = {int(n) for n in re.findall(r"OPTIONS from auth cseq (\d+) -> 407", log)}
    accepted = {int(n) for n in re.findall(r"OPTIONS from auth cseq (\d+) authenticated -> 200", log)}
    assert 103 in accepted and 102 in challenged, log[-3000:]
    assert not re.search(r"OPTIONS from wrong cseq \d+ authenticated", log)
    assert re.search(r"OPTIONS from wrong cseq 103 -> 407", log), log[-3000:]
    assert "OPTIONS from busy -> 503" in log


PJSIP_AUTH_CONF = """
[udp]
type = transport
protocol = udp
bind = 127.0.0.1:@SIPPORT@

[good]
type = auth
username = quser
password = s3cret

[bad]
type = auth
username = quser
password = nope

[q](!)
type = aor
qualify_frequency = 2
contact = sip:kam@127.0.0.1:@KAMPORT@

[auth](q)
[auth]
type = endpoint
aors = auth
outbound_auth = good

[wrong](q)
[wrong]
type = endpoint
aors = wrong
outbound_auth = bad
"""


@realpeer
def test_kamailio_407_answered_with_a_pjsip_endpoint_s_outbound_auth(lab: Lab) -> None:
    """pjsip.conf: Kamailio challenges the OPTIONS of AOR `auth` (From user = the endpoint's name)
    with 407; sipqualify answers with the endpoint's outbound_auth as res_pjsip does (same
    Call-ID, CSeq + 1) and Kamailio's auth module accepts it. The wrong password is challenged
    again: the contact stays Reachable (a final answer, as in Asterisk), its verdict down."""
    kam = Kamailio(lab, template=AUTH_TEMPLATE)
    d = Daemon(lab, PJSIP_AUTH_CONF.replace("@KAMPORT@", str(kam.port)), name="pjsip")
    uri = f"sip:kam@127.0.0.1:{kam.port}"
    good, bad = (f"{aor}@@{hashlib.md5(uri.encode()).hexdigest()}" for aor in ("auth", "wrong"))
    ok = d.wait_for(good, lambda p: p["verdict"] == "up" and p["qualifies"] >= 2, "up twice")
    assert ok["state"] == "OK" and ok["reason"] == "", ok
    nok = d.wait_for(bad, lambda p: p["verdict"] == "down", "down")
    assert nok["reason"] == "auth_failed" and nok["state"] == "OK", nok
    show = d.cli("pjsip", "show", "contacts")
    assert show.returncode == 0, show.stderr
    rows = [ln for ln in show.stdout.splitlines() if ln.startswith(("  Contact:  auth/", "  Contact:  wrong/"))]
    assert len(rows) == 2 and all(" Avail   " in ln for ln in rows), show.stdout
    log = kam.proc.log_text()
    challenged = {int(n) for n in re.findall(r"OPTIONS from auth cseq (\d+) -> 407", log)}
    accepted = {int(n) for n in re.findall(r"OPTIONS from auth cseq (\d+) authenticated -> 200", log)}
    assert challenged and {c + 1 for c in challenged} & accepted, log[-3000:]
    assert not re.search(r"OPTIONS from wrong cseq \d+ authenticated", log), log[-3000:]
    assert len(re.findall(r"OPTIONS from wrong cseq \d+ -> 407", log)) >= 2  # the retry challenged too
