"""A challenge to a pjsip.conf contact's OPTIONS answered with its endpoint's `outbound_auth`
(qualify/auth.py), on the virtual clock, against asterisk-pjsip-observed.md §2: the retry goes
out at once with the same Call-ID and From tag, CSeq + 1, a new branch and the credentials
before `Content-Length:  0`; the qualify is one from the first send (RTT of both round trips,
qualify_timeout and the 5 s grid from it). The challenging peer is sipqualify's registrar-side
DigestAuthenticator, so every authenticated request is checked by a real verifier."""

from __future__ import annotations

import hashlib
from pathlib import Path

from sipqualify.config import load_config
from sipqualify.model import Config, PeerConfig
from sipqualify.qualify.events import VerdictChanged
from sipqualify.sip.digest import parse_auth_header

from .sim import header, silent
from .test_auth import REALM, Carrier
from .test_pjsip_timeline import changes, run
from .test_pjsip_timeline import rel as sends

OBSERVED = str(Path(__file__).parents[1] / "data" / "pjsip" / "observed_pjsip.conf")
AUTH_CONTACT = "auth@@" + hashlib.md5(b"sip:auth@127.0.0.1:35083").hexdigest()


def observed_auth_contact() -> PeerConfig:
    return load_config(OBSERVED).peers[AUTH_CONTACT]


def conf(tmp_path: Path, text: str) -> Config:
    path = tmp_path / "pjsip.conf"
    path.write_text("[udp]\ntype=transport\nprotocol=udp\nbind=127.0.0.1:35060\n" + text)
    return load_config(str(path))


def test_observed_auth_contact_retries_with_outbound_auth_like_res_pjsip() -> None:
    p = observed_auth_contact()
    assert [(a.name, a.username, a.password, a.realm) for a in p.outbound_auths] == [("auth-out", "quser",
                                                                                        "qpass", "")]
    c = Carrier(user="quser", password="qpass")
    sim, first = run(p, c, 5.5)
    # §2: the retry ≤ 5 ms after the 401; every 5 s poll starts again without credentials, on the
    # grid of the first send (5000, not 5000 + 5)
    assert sends(sim, first) == [0, 5, 5000, 5005]
    one, two = sim.sent[0][2], sim.sent[1][2]
    assert (header(two, "Call-ID"), header(two, "From")) == (header(one, "Call-ID"), header(one, "From"))
    cseq = int(header(one, "CSeq").split()[0])
    assert header(two, "CSeq") == f"{cseq + 1} OPTIONS"
    assert header(two, "Via") != header(one, "Via")
    assert header(one, "From").startswith("<sip:auth@")  # From user = the endpoint's name (§2)
    # the header order of §2: ... User-Agent, Authorization, Content-Length (two spaces)
    lines = two.split(b"\r\n")
    assert lines[-5].startswith(b"User-Agent: ") and lines[-4].startswith(b"Authorization: Digest ")
    assert lines[-3] == b"Content-Length:  0"
    assert one.split(b"\r\n")[1:-4] != lines[1:-5]  # the branch changed ...
    assert [ln for ln in one.split(b"\r\n") if not ln.startswith((b"Via", b"CSeq"))] == \
        [ln for ln in lines if not ln.startswith((b"Via", b"CSeq", b"Authorization"))]  # ... nothing else
    params = parse_auth_header(header(two, "Authorization"))[1]
    assert (params["username"], params["realm"], params["uri"]) == ("quser", REALM, "sip:auth@127.0.0.1:35083")
    assert c.results == ["ok", "ok"]
    # Reachable, RTT of both round trips (§0.5: "RTT includes both round trips")
    assert changes(sim, first) == [(10, "OK")]
    assert [round(r.rtt * 1000) for r in sim.results(p.name) if r.rtt is not None] == [10, 10]
    assert sim.engine._origins == {} and sim.engine._auth == {}


def test_unanswered_authenticated_request_times_out_at_first_send_plus_qualify_timeout() -> None:
    """res_pjsip's qualify_timeout timer starts at the first transmission, not at the retry."""
    c = Carrier(user="quser", password="qpass")

    def challenge_only(req: bytes, t: float) -> list[tuple[float, bytes]]:
        return c(req, t) if b"Authorization:" not in req else silent(req, t)

    sim, first = run(observed_auth_contact(), challenge_only, 7.0)
    assert changes(sim, first) == [(3000, "UNREACHABLE")]  # not 3005
    # the retry's retransmissions are cut at the same moment; the next poll on the 5 s grid
    assert sends(sim, first) == [0, 5, 505, 1505, 5000, 5005, 5505, 6505]
    assert list(sim.engine._origins) == [sim.engine._auth.popitem()[0]]  # the running retry's only


def test_wrong_password_a_challenge_again_is_reachable_and_auth_failed(tmp_path: Path) -> None:
    cfg = conf(tmp_path, "[a]\ntype=auth\nusername=quser\npassword=nope\n"
                         "[t]\ntype=aor\ncontact=sip:t@127.0.0.1:35083\nqualify_frequency=5\n"
                         "[t]\ntype=endpoint\naors=t\noutbound_auth=a\n")
    c = Carrier(user="quser", password="qpass")
    p = next(iter(cfg.peers.values()))
    sim, first = run(p, c, 5.5)
    assert sends(sim, first) == [0, 5, 5000, 5005]  # one authenticated try per poll, no loop
    assert changes(sim, first) == [(10, "OK")]  # a final answer: Reachable, as res_pjsip
    assert [(e.new, e.reason) for _, e in sim.events if isinstance(e, VerdictChanged)] == [("down", "auth_failed")]


def test_the_section_of_the_challenge_s_realm_else_one_without_realm(tmp_path: Path) -> None:
    sections = ("[other]\ntype=auth\nusername=u-other\npassword=qpass\nrealm=elsewhere\n"
                "[wild]\ntype=auth\nusername=u-wild\npassword=qpass\n"
                f"[exact]\ntype=auth\nusername=u-exact\npassword=qpass\nrealm={REALM}\n"
                "[t]\ntype=aor\ncontact=sip:t@127.0.0.1:35083\nqualify_frequency=5\n")
    sections += ("[star]\ntype=auth\nusername=u-star\npassword=qpass\nrealm=*\n"
                 f"[upper]\ntype=auth\nusername=u-upper\npassword=qpass\nrealm={REALM.upper()}\n")
    for auths, user in (("other,wild,exact", "u-exact"), ("other,wild", "u-wild"), ("other", None),
                        ("star,wild", "u-star"), ("wild,upper", "u-upper")):
        cfg = conf(tmp_path, sections + f"[t]\ntype=endpoint\naors=t\noutbound_auth={auths}\n")
        assert cfg.warnings == []
        p = next(iter(cfg.peers.values()))
        c = Carrier(user=user or "x", password="qpass")
        sim, first = run(p, c, 1.0)
        if user is None:  # nothing answers this realm: the 401 is the answer (Reachable)
            assert sends(sim, first) == [0] and changes(sim, first) == [(5, "OK")]
        else:
            assert parse_auth_header(header(sim.sent[1][2], "Authorization"))[1]["username"] == user
            assert c.results == ["ok"]


def test_md5_cred_and_407_proxy_authorization(tmp_path: Path) -> None:
    ha1 = hashlib.md5(f"quser:{REALM}:qpass".encode()).hexdigest()
    cfg = conf(tmp_path, f"[a]\ntype=auth\nauth_type=md5\nusername=quser\nmd5_cred={ha1}\npassword=ignored\n"
                         "[t]\ntype=aor\ncontact=sip:t@127.0.0.1:35083\nqualify_frequency=5\n"
                         "[t]\ntype=endpoint\naors=t\noutbound_auth=a\n")
    p = next(iter(cfg.peers.values()))
    assert [(a.password, a.md5_cred) for a in p.outbound_auths] == [(None, ha1)]
    c = Carrier(status=407, user="quser", password="qpass")
    sim, first = run(p, c, 1.0)
    assert header(sim.sent[1][2], "Proxy-Authorization").startswith('Digest username="quser"')
    assert c.results == ["ok"] and changes(sim, first) == [(10, "OK")]


def test_no_outbound_auth_the_challenge_is_the_answer_and_undefined_is_warned(tmp_path: Path) -> None:
    cfg = conf(tmp_path, "[t]\ntype=aor\ncontact=sip:t@127.0.0.1:35083\nqualify_frequency=5\n"
                         "[t]\ntype=endpoint\naors=t\noutbound_auth=nosuch\n")
    assert [(m.line, m.message) for m in cfg.warnings] == [(12, "endpoint 't': outbound_auth 'nosuch' is not defined")]
    p = next(iter(cfg.peers.values()))
    assert p.outbound_auths == ()
    sim, first = run(p, Carrier(), 1.0)
    assert sends(sim, first) == [0] and changes(sim, first) == [(5, "OK")]
