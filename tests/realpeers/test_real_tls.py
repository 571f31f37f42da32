"""SIP over TLS against real peers from Debian (issue 11): Kamailio with the tls module as a
TLS trunk, SIPp over TLS (`-t l1`) and baresip registering over TLS.

Certificates are made here by trustme: a test CA, server certificates for `localhost` and
127.0.0.1 (valid, expired, or for another name), and sipqualify's own (`tlscertfile`).
"""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Any

import pytest
import trustme

from .peers import (
    BARESIP_CONFIG,
    LOOPBACK,
    Daemon,
    KamailioTls,
    Lab,
    free_port,
    free_tcp_port,
    peer,
    require_binary,
    sip_conf,
)

realpeer = pytest.mark.realpeer


class Pki:
    """A trustme CA and PEM files of certificates it issues, in `dir`."""

    def __init__(self, tmp: Path) -> None:
        self.ca = trustme.CA()
        self.dir = tmp / "pki"
        self.dir.mkdir()
        self.cafile = self.dir / "ca.pem"
        self.ca.cert_pem.write_to_path(str(self.cafile))

    def issue(self, stem: str, *names: str, expired: bool = False) -> tuple[Path, Path]:
        """(certificate chain, key) files of a certificate for `names`."""
        kw: dict[str, Any] = {}
        if expired:
            now = datetime.datetime.now(datetime.UTC)
            kw = {"not_before": now - datetime.timedelta(days=30), "not_after": now - datetime.timedelta(days=1)}
        cert = self.ca.issue_cert(*names, **kw)
        crt, key = self.dir / f"{stem}.crt", self.dir / f"{stem}.key"
        crt.write_bytes(b"".join(blob.bytes() for blob in cert.cert_chain_pems))
        cert.private_key_pem.write_to_path(str(key))
        return crt, key

    def combined(self, stem: str, *names: str) -> Path:
        """A certificate with its key in one PEM file (`tlscertfile`)."""
        path = self.dir / f"{stem}.pem"
        self.ca.issue_cert(*names).private_key_and_cert_chain_pem.write_to_path(str(path))
        return path


def tls_general(pki: Pki, **extra: object) -> dict[str, object]:
    """[general] of a daemon that speaks TLS, trusting the test CA."""
    return {"tlsenable": "yes", "tlsbindaddr": f"{LOOPBACK}:{free_tcp_port()}",
            "tlscertfile": pki.combined("sipqualify", "sipqualify.test"), "tlscafile": pki.cafile, **extra}


def trunk(port: int, host: str = "localhost") -> dict[str, object]:
    return {**peer(port, transport="tls", qualify=500, qualifyfreq=1), "host": host}


def tls_stats(d: Daemon) -> dict[str, Any]:
    r = d.cli("status")
    assert r.returncode == 0, r.stderr
    st: dict[str, Any] = json.loads(r.stdout)["tls"]
    return st


# --------------------------------------------------------------------------- Kamailio (tls module)


@realpeer
def test_kamailio_tls_trunk_ok_over_one_kept_verified_connection(lab: Lab) -> None:
    pki = Pki(lab.tmp)
    kam = KamailioTls(lab, *pki.issue("kamailio", "localhost", LOOPBACK))
    d = Daemon(lab, sip_conf({"carrier": trunk(kam.tls_port)}, tls_general(pki)))
    p = d.wait_for("carrier", lambda p: p["state"] == "OK" and p["qualifies"] >= 3, "OK after 3 qualifies")
    assert p["retransmissions"] == 0 and p["timeouts"] == 0, p
    st = tls_stats(d)
    assert st["connects"] == 1 and st["connect_errors"] == 0, st  # one connection, kept for every poke
    assert st["messages_out"] >= 3 and st["messages_in"] >= 3, st
    v = json.loads(d.cli("peer", "carrier", "--json").stdout)
    assert v["transport"] == "tls" and v["transport_error"] is None, v
    assert v["tls_cert_days_left"] is not None and v["tls_cert_days_left"] > 30, v
    log = kam.proc.log_text()
    assert "OPTIONS from 127.0.0.1:" in log and " over tls -> 200" in log, log[-2000:]  # Kamailio answered, over TLS


def unreachable_because(lab: Lab, cert_names: tuple[str, ...], expired: bool, host: str) -> dict[str, Any]:
    pki = Pki(lab.tmp)
    kam = KamailioTls(lab, *pki.issue("kamailio", *cert_names, expired=expired))
    d = Daemon(lab, sip_conf({"carrier": trunk(kam.tls_port, host)}, tls_general(pki)))
    d.wait_state("carrier", "UNREACHABLE", timeout=20)
    v: dict[str, Any] = json.loads(d.cli("peer", "carrier", "--json").stdout)
    assert tls_stats(d)["connect_errors"] >= 1
    assert " over tls -> 200" not in kam.proc.log_text()  # nothing reached Kamailio's script
    text = d.cli("peer", "carrier").stdout
    assert v["transport_error"] and v["transport_error"] in text, text
    return v


@realpeer
def test_kamailio_tls_expired_certificate_is_unreachable_with_the_reason(lab: Lab) -> None:
    v = unreachable_because(lab, ("localhost", LOOPBACK), True, "localhost")
    assert "certificate has expired" in v["transport_error"], v
    assert v["tls_cert_days_left"] is None, v


@realpeer
def test_kamailio_tls_wrong_host_name_is_unreachable_with_the_reason(lab: Lab) -> None:
    v = unreachable_because(lab, ("sip.other.example",), False, "localhost")
    assert "hostname mismatch" in v["transport_error"].lower(), v
    assert "localhost" in v["transport_error"], v


# --------------------------------------------------------------------------- baresip registering over TLS


@realpeer
def test_baresip_registers_over_tls_and_is_qualified_over_its_connection(lab: Lab) -> None:
    baresip = require_binary("baresip", "baresip-core")
    pki = Pki(lab.tmp)
    general = tls_general(pki, realm="pbx.test")
    tls_port = int(str(general["tlsbindaddr"]).rsplit(":", 1)[1])
    d = Daemon(lab, sip_conf({"1001": {"type": "friend", "host": "dynamic", "secret": "s3cret", "qualify": 500,
                                      "qualifyfreq": 1}}, general))
    cfg = lab.tmp / "baresip"
    cfg.mkdir()
    (cfg / "config").write_text(BARESIP_CONFIG.format(port=free_port(), transports="udp,tls") +
                                f"sip_cafile\t\t{pki.cafile}\n")
    (cfg / "accounts").write_text(f"<sip:1001@{LOOPBACK}:{tls_port};transport=tls>;auth_pass=s3cret;regint=60\n")
    phone = lab.spawn("baresip", [baresip, "-f", str(cfg)])
    p = d.wait_for("1001", lambda p: p["state"] == "OK" and p["qualifies"] >= 3, "registered over TLS, qualified")
    assert p["useragent"].startswith("baresip") and p["timeouts"] == 0, p
    (reg,) = json.loads(d.cli("registrations", "--json").stdout)
    assert reg["peer"] == "1001" and reg["transport"] == "tls", reg
    assert (p["addr_ip"], p["addr_port"]) == (LOOPBACK, reg["port"]), (p, reg)
    st = tls_stats(d)
    assert st["connects"] == 0 and st["accepted"] >= 1, st  # over baresip's own connection, none opened by us
    assert st["messages_out"] >= 3 + 2, st  # 401, 200 to REGISTER, then the OPTIONS
    phone.popen.kill()  # no unregistering: its connection just goes
    d.wait_state("1001", "UNREACHABLE", timeout=10)


@realpeer
def test_kamailio_answers_our_rfc5626_pings_on_the_tls_flow(lab: Lab) -> None:
    """`keepalive` on a TLS trunk: double-CRLF pings over the kept connection, Kamailio's CRLF
    pongs (its `tcp_crlf_ping`, on by default) timed and shown in `peer X` and the API."""
    pki = Pki(lab.tmp)
    kam = KamailioTls(lab, *pki.issue("kamailio", "localhost", LOOPBACK))
    d = Daemon(lab, sip_conf({"carrier": {**trunk(kam.tls_port), "qualifyfreq": 60, "keepalive": 1}},
                             tls_general(pki)))
    d.wait_state("carrier", "OK")
    v = d.wait_for("carrier", lambda p: (p["flow_keepalive"] or {}).get("pongs", 0) >= 3, "3 pongs", timeout=20)
    ka = v["flow_keepalive"]
    assert ka["pings"] >= ka["pongs"] >= 3 and ka["rtt_s"] is not None and ka["rtt_s"] > 0, ka
    st = tls_stats(d)
    assert st["connects"] == 1 and st["pongs_received"] >= 3, st  # over the one kept connection
    text = d.cli("peer", "carrier").stdout
    assert "  Flow ping    : " in text and " answered" in text, text
