"""res_pjsip_registrar's rules on a virtual clock (qualify/pjsip_registrar.py), sans-I/O.

Set-up as asterisk-pjsip-observed.md §1: `phone1` (max_contacts 1, remove_existing),
`phone2` (max_contacts 2), `empty` (max_contacts 3, no auth), `nomax` (max_contacts 0)."""

from __future__ import annotations

import hashlib
import logging
import random
from pathlib import Path

import pytest

from sipqualify.config.pjsip import load_pjsip_conf
from sipqualify.model import PjsipConfig
from sipqualify.qualify.pjsip_registrar import PjsipRegistrar, aor_of, registered_contact_id
from sipqualify.qualify.registrar import RegisterOutcome, RegistrarSettings
from sipqualify.sip.digest import authorization
from sipqualify.sip.message import Response, parse_message

from .helpers import PJSIP_PHONE1

CONF = PJSIP_PHONE1 + """
[ep](!)
type = endpoint
context = default
[phone2-auth]
type = auth
auth_type = userpass
username = u2
md5_cred = {md5}
[phone2]
type = aor
max_contacts = 2
minimum_expiration = 30
maximum_expiration = 300
default_expiration = 120
[phone2](ep)
aors = phone2
auth = phone2-auth
[empty]
type = aor
max_contacts = 3
remove_unavailable = yes
[empty](ep)
aors = empty
[nomax]
type = aor
[nomax](ep)
aors = nomax
auth = phone1-auth
"""
SRC = ("192.0.2.50", 5070)
REALM = "asterisk"


@pytest.fixture
def pj(tmp_path: Path) -> PjsipConfig:
    f = tmp_path / "pjsip.conf"
    f.write_text(CONF.format(md5=hashlib.md5(f"u2:{REALM}:pw2".encode()).hexdigest()))
    cfg = load_pjsip_conf(str(f))
    assert not cfg.errors, cfg.errors
    assert cfg.pjsip is not None
    return cfg.pjsip


def registrar(pj: PjsipConfig, unavailable: set[str] | None = None) -> PjsipRegistrar:
    return PjsipRegistrar(pj, lambda _: None, RegistrarSettings(realm=REALM, authfail_ban=0),
                          unavailable=lambda cid: cid in (unavailable or set()))


def request(aor: str, contacts: list[str], *, user: str | None = None, expires: int | None = None,
            auth: str = "", cseq: int = 1, src: tuple[str, int] = SRC) -> bytes:
    lines = ["REGISTER sip:pbx.test SIP/2.0", f"Via: SIP/2.0/UDP {src[0]}:{src[1]};branch=z9hG4bK{cseq}x;rport",
             "Max-Forwards: 70", f"From: <sip:{user or aor}@pbx.test>;tag=g", f"To: <sip:{aor}@pbx.test>",
             f"Call-ID: c-{aor}", f"CSeq: {cseq} REGISTER", *(f"Contact: {c}" for c in contacts),
             "User-Agent: bar-phone/1.0"]
    if expires is not None:
        lines.append(f"Expires: {expires}")
    if auth:
        lines.append(f"Authorization: {auth}")
    return ("\r\n".join(lines) + "\r\nContent-Length: 0\r\n\r\n").encode()


def send(reg: PjsipRegistrar, now: float, aor: str, contacts: list[str], *, username: str | None = None,
         password: str | None = None, **kw: object) -> RegisterOutcome:
    """A REGISTER; with `password`, first the bare one (401), then the one answering its challenge."""
    out = reg.handle(parse_message(request(aor, contacts, **kw)), SRC, now, 1e9 + now)  # type: ignore[arg-type]
    assert out is not None
    if password is None:
        return out
    assert out.response.status == 401, out.response.status
    challenge = out.response.headers.get_all("WWW-Authenticate")[0]
    auth = authorization(challenge, username or aor, password, "REGISTER", "sip:pbx.test", cnonce="c0")
    out = reg.handle(parse_message(request(aor, contacts, auth=auth, cseq=2, **kw)), SRC, now,  # type: ignore[arg-type]
                     1e9 + now)
    assert out is not None
    return out


def contacts(resp: Response) -> list[str]:
    return resp.headers.get_all("Contact")


def test_contact_ids_are_aor_semicolon_at_md5_of_the_uri() -> None:
    """§7: PJSIP_AOR(phone1,contact) = phone1;@f21aeab93a6db6525cee4f0f7dcaf4cd."""
    cid = registered_contact_id("phone1", "sip:phone1@127.0.0.1:35090")
    assert cid == "phone1;@f21aeab93a6db6525cee4f0f7dcaf4cd"
    assert aor_of(cid) == "phone1" and aor_of("ok-def@@e0152829e49ec8fffb59bb00ed1fd08e") is None


def test_challenge_then_binding_with_the_endpoint_auth(pj: PjsipConfig, caplog: pytest.LogCaptureFixture) -> None:
    reg = registrar(pj)
    out = send(reg, 10.0, "phone1", ["<sip:phone1@192.0.2.50:5070>"], password="secret1", expires=60)
    assert out.response.status == 200
    cid = registered_contact_id("phone1", "sip:phone1@192.0.2.50:5070")
    assert [c for c, _ in out.changes] == [cid]
    b = out.changes[0][1]
    assert b is not None and b.addr == SRC and b.granted == 60 and b.expires_mono == 70.0
    assert b.useragent == "bar-phone/1.0" and b.call_id == "c-phone1"
    assert contacts(out.response) == ["<sip:phone1@192.0.2.50:5070>;expires=60"]
    assert out.response.headers.get("Expires") == "60"
    assert out.response.headers.get("Date") == "Sun, 09 Sep 2001 01:46:50 GMT"  # the wall clock, 1e9 + 10
    assert out.log == "Added contact 'sip:phone1@192.0.2.50:5070' to AOR 'phone1' with expiration of 60 seconds"
    assert out.security is not None and out.security.event == "SuccessfulAuth"


def test_wrong_password_unknown_auth_user_and_foreign_aor(pj: PjsipConfig) -> None:
    reg = registrar(pj)
    assert send(reg, 1.0, "phone1", ["<sip:a@192.0.2.50>"], password="nope").response.status == 403
    assert send(reg, 1.0, "phone1", ["<sip:a@192.0.2.50>"], username="ghost", password="x").response.status == 403
    # a good digest of phone2's auth for phone1's AOR: the AOR is not that endpoint's
    out = send(reg, 1.0, "phone1", ["<sip:a@192.0.2.50>"], username="u2", password="pw2")
    assert out.response.status == 404 and not out.changes and not reg.bindings


def test_md5_cred_and_several_contacts_up_to_max_contacts(pj: PjsipConfig, caplog: pytest.LogCaptureFixture) -> None:
    reg = registrar(pj)
    a, b, c = (f"<sip:p2@192.0.2.50:{p}>" for p in (1, 2, 3))
    assert send(reg, 0.0, "phone2", [a], username="u2", password="pw2").response.status == 200
    out = send(reg, 5.0, "phone2", [b], username="u2", password="pw2")
    assert out.response.status == 200
    # every contact of the AOR, each with its own seconds left (default_expiration 120)
    assert sorted(contacts(out.response)) == sorted([f"{a};expires=115", f"{b};expires=120"])
    assert out.response.headers.get("Expires") is None  # the request had none
    with caplog.at_level(logging.WARNING, logger="sipqualify"):
        out = send(reg, 6.0, "phone2", [c], username="u2", password="pw2")
    assert out.response.status == 403 and not out.changes and len(reg.contacts_of("phone2")) == 2
    assert ("Registration attempt from endpoint 'phone2' (192.0.2.50:5070) to AOR 'phone2' will exceed max "
            "contacts of 2") in caplog.text


def test_remove_existing_replaces_the_contact_expiring_soonest(pj: PjsipConfig) -> None:
    reg = registrar(pj)
    old, new = "sip:phone1@192.0.2.50:35090", "sip:phone1@192.0.2.50:35091"
    send(reg, 0.0, "phone1", [f"<{old}>"], password="secret1", expires=60)
    out = send(reg, 25.0, "phone1", [f"<{new}>"], password="secret1", expires=60)
    assert out.response.status == 200
    assert out.changes == [(registered_contact_id("phone1", new), reg.bindings[registered_contact_id("phone1", new)]),
                           (registered_contact_id("phone1", old), None)]
    assert out.log.splitlines()[-1] == f"Removed contact '{old}' from AOR 'phone1' due to remove existing"
    assert contacts(out.response) == [f"<{new}>;expires=60"]


def test_refresh_is_the_same_contact_and_not_a_new_one(pj: PjsipConfig) -> None:
    reg = registrar(pj)
    uri = "<sip:phone1@192.0.2.50:35090>"
    send(reg, 0.0, "phone1", [uri], password="secret1", expires=60)
    out = send(reg, 15.0, "phone1", [uri], password="secret1", expires=60)
    assert out.response.status == 200 and out.log == ""  # res_pjsip logs nothing on a refresh
    (cid, b), = out.changes
    assert b is not None and b.expires_mono == 75.0 and list(reg.bindings) == [cid]


def test_remove_unavailable_makes_room_first_without_remove_existing(pj: PjsipConfig) -> None:
    dead = registered_contact_id("empty", "sip:e@192.0.2.50:1")
    reg = registrar(pj, unavailable={dead})
    for p in (1, 2, 3):  # an endpoint without auth=: no challenge
        assert send(reg, float(p), "empty", [f"<sip:e@192.0.2.50:{p}>"]).response.status == 200
    out = send(reg, 9.0, "empty", ["<sip:e@192.0.2.50:4>"])
    assert out.response.status == 200 and (dead, None) in out.changes
    assert "due to remove unavailable" in out.log
    assert send(reg, 9.5, "empty", ["<sip:e@192.0.2.50:5>"]).response.status == 403  # none unavailable now


@pytest.mark.parametrize(("asked", "granted"), [(30, 30), (299, 299), (301, 300), (100000, 300)])
def test_expiration_is_capped_at_maximum(pj: PjsipConfig, asked: int, granted: int) -> None:
    reg = registrar(pj)
    out = send(reg, 0.0, "phone2", [f"<sip:p2@192.0.2.50>;expires={asked}"], username="u2", password="pw2")
    assert out.response.status == 200 and contacts(out.response) == [f"<sip:p2@192.0.2.50>;expires={granted}"]


@pytest.mark.parametrize("asked", [1, 29])
def test_under_minimum_expiration_is_423_with_min_expires(pj: PjsipConfig, asked: int) -> None:
    reg = registrar(pj)
    out = send(reg, 0.0, "phone2", ["<sip:p2@192.0.2.50>"], expires=asked, username="u2", password="pw2")
    assert (out.response.status, out.response.reason) == (423, "Interval Too Brief")
    assert out.response.headers.get("Min-Expires") == "30" and not reg.bindings


def test_unregister_one_and_all_contacts(pj: PjsipConfig) -> None:
    reg = registrar(pj)
    a, b = "<sip:p2@192.0.2.50:1>", "<sip:p2@192.0.2.50:2>"
    send(reg, 0.0, "phone2", [a, b], username="u2", password="pw2")
    assert len(reg.contacts_of("phone2")) == 2
    out = send(reg, 1.0, "phone2", [f"{a};expires=0"], username="u2", password="pw2")
    assert out.changes == [(registered_contact_id("phone2", "sip:p2@192.0.2.50:1"), None)]
    assert out.log == "Removed contact 'sip:p2@192.0.2.50:1' from AOR 'phone2' due to request"
    assert contacts(out.response) == [f"{b};expires=119"]
    assert send(reg, 2.0, "phone2", ["*"], expires=5, username="u2", password="pw2").response.status == 400
    out = send(reg, 2.0, "phone2", ["*"], expires=0, username="u2", password="pw2")
    assert out.response.status == 200 and [x for _, x in out.changes] == [None] and not reg.bindings
    assert out.response.headers.get("Expires") == "0" and contacts(out.response) == []


def test_max_contacts_zero_refuses_registration(pj: PjsipConfig) -> None:
    reg = registrar(pj)
    out = send(reg, 0.0, "nomax", ["<sip:x@192.0.2.50>"], username="phone1", password="secret1")
    assert out.response.status == 403 and not reg.bindings


def test_query_without_contact_lists_the_bindings(pj: PjsipConfig) -> None:
    reg = registrar(pj)
    send(reg, 0.0, "phone1", ["<sip:q@192.0.2.50>"], password="secret1", expires=60)
    out = send(reg, 10.0, "phone1", [], password="secret1")
    assert out.response.status == 200 and not out.changes
    assert contacts(out.response) == ["<sip:q@192.0.2.50>;expires=50"]


@pytest.mark.parametrize("seed", range(5))
def test_malformed_contacts_and_expires_never_raise(pj: PjsipConfig, seed: int) -> None:
    """Bad input never crashes the daemon: odd Contact and Expires values from an authenticated
    phone get an answer (200, 400, 403 or 423), never an exception, and never a binding beyond
    max_contacts."""
    rng = random.Random(seed)
    pieces = ["<sip:a@192.0.2.50>", "<sip:@>", "<tel:+4930123>", "*", "<sip:a@[::1]:5060>;expires=",
              "<sip:a@192.0.2.50>;expires=-1", "<sip:a@192.0.2.50>;expires=１２０", "garbage<<", '"x" <sip:b@h>',
              "<sip:c@192.0.2.50:99999>", "<sip:d@192.0.2.50>;expires=99999999999999999999", ""]
    reg = registrar(pj)
    for n in range(40):
        contacts = rng.sample(pieces, rng.randint(1, 3))
        expires = rng.choice([None, 0, 1, 60, "x", "６０", -5])
        out = send(reg, float(n), "phone2", contacts, username="u2", password="pw2",
                   expires=expires)  # type: ignore[arg-type]
        assert out.response.status in (200, 400, 403, 423), (contacts, expires, out.response.status)
        assert len(reg.contacts_of("phone2")) <= 2
