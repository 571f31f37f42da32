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

from .peers import LOOPBACK, Daemon, KamailioTls, Lab, free_tcp_port, peer, sip_conf

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
