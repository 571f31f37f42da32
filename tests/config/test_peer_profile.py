"""PeerConfig keeps only its own fields and shares the rest in an interned profile (profile.py,
issue 15): every field, the constructor, equality, repr, `dataclasses` functions, copying and
pickling must behave exactly as the plain slots dataclass it was. The reference is that very
dataclass, made from PeerConfig's own field list (so a field added later is covered too)."""

from __future__ import annotations

import copy
import dataclasses
import pickle
import sys
from typing import Any

import pytest

from sipqualify import profile
from sipqualify.model import PEER_OWN_FIELDS, OutboundAuth, PeerConfig
from sipqualify.profile import Profile, interned_count, split_location
from tests.qualify.sim import build, ok_after

FIELDS = dataclasses.fields(PeerConfig)  # type: ignore[arg-type]
# the former PeerConfig: a slots dataclass of the same fields, defaults and order
Ref: Any = dataclasses.make_dataclass("PeerConfig", [(f.name, f.type, f) for f in FIELDS], slots=True)
A = ("127.0.0.1", 5099)


def other(name: str, default: Any) -> Any:
    """A value of the field's type other than its default."""
    special: dict[str, Any] = {
        "port": 5099, "host": "127.0.0.1", "qualify_source": ("127.0.0.1", 0), "nat": ("force_rport", "comedia"),
        "outbound_auths": (OutboundAuth("a1", "alice", "pw", None, "example.org"),),
        "qualify_headers_extra": ("X-A: 1", "X-B: two"), "source": "/etc/asterisk/sip.conf:4711",
        "transport": "tcp", "qualify_method": "NOTIFY", "semantics": "pjsip", "qualify_targets": "all",
        "retransmit": "rfc3261", "reply_up": "200-299", "reply_degraded": "503",
    }
    if name in special:
        return special[name]
    if isinstance(default, bool):
        return not default
    if isinstance(default, int):
        return default + 7
    return f"v-{name}"


NONDEFAULT = {f.name: other(f.name, f.default) for f in FIELDS}


def state(c: Any) -> list[tuple[str, type, Any]]:
    return [(f.name, type(getattr(c, f.name)), getattr(c, f.name)) for f in FIELDS]


def test_every_field_non_default_reads_back_as_the_dataclass_did() -> None:
    c, r = PeerConfig(**NONDEFAULT), Ref(**NONDEFAULT)
    assert state(c) == state(r)
    assert repr(c) == repr(r)
    assert dataclasses.asdict(c) == dataclasses.asdict(r)
    assert dataclasses.astuple(c) == dataclasses.astuple(r)
    assert [f.name for f in dataclasses.fields(c)] == [f.name for f in dataclasses.fields(r)]
    assert sys.getsizeof(c) < sys.getsizeof(r) // 3  # what it is for


@pytest.mark.parametrize("f", [f.name for f in FIELDS])
def test_setting_and_replacing_each_field(f: str) -> None:
    c, r = PeerConfig(name="p"), Ref(name="p")
    setattr(c, f, NONDEFAULT[f])
    setattr(r, f, NONDEFAULT[f])
    assert state(c) == state(r) and repr(c) == repr(r)
    assert c != PeerConfig(name="p") or f == "name" and NONDEFAULT[f] == "p"
    assert c == PeerConfig(**{"name": "p", f: NONDEFAULT[f]})
    back = dataclasses.replace(c, **{f: getattr(PeerConfig(name="p"), f)})
    assert back == PeerConfig(name="p") and state(back) == state(Ref(name="p"))
    if f not in PEER_OWN_FIELDS:  # set back: the shared default profile again, nothing of its own
        assert back._p is PeerConfig(name="q")._p  # type: ignore[attr-defined]


def test_equality_types_and_sharing() -> None:
    a, b = PeerConfig(name="a", qualify_ms=2000), PeerConfig(name="b", qualify_ms=2000)
    assert a._p is b._p  # type: ignore[attr-defined]
    t = PeerConfig(name="a", qualify_ms=True)  # 1 and True: equal as before, but each keeps its type
    one = PeerConfig(name="a", qualify_ms=1)
    assert t == one and type(t.qualify_ms) is bool and type(one.qualify_ms) is int
    assert (t == one) == (Ref(name="a", qualify_ms=True) == Ref(name="a", qualify_ms=1))
    assert PeerConfig(name="a", source="f:1") != PeerConfig(name="a", source="f:2")
    assert PeerConfig(name="a") != Ref(name="a")  # another class, as two dataclasses
    with pytest.raises(TypeError):
        hash(a)
    with pytest.raises(AttributeError):
        a.bogus = 1  # type: ignore[attr-defined]


@pytest.mark.parametrize("where", ["", "demo", "f:1", "a:b:12", "x:007", "x:0", "x:", ":5", "x:-3", "x:1²",
                                   "pgsql:sippeers:99", "/etc/asterisk/sip.conf:1048576"])
def test_source_round_trips(where: str) -> None:
    c = PeerConfig(name="p", source=where)
    assert c.source == where and type(c.source) is str
    file, line = split_location(where)
    assert (f"{file}:{line}" if line >= 0 else file) == where
    c.source = "elsewhere:3"
    assert c.source == "elsewhere:3"


def test_copies_and_pickles_share_the_profile() -> None:
    c = PeerConfig(**NONDEFAULT)
    for d in (copy.copy(c), copy.deepcopy(c), pickle.loads(pickle.dumps(c)),
              pickle.loads(pickle.dumps(c, protocol=0))):
        assert d == c and state(d) == state(c) and d._p is c._p  # type: ignore[attr-defined]
    many = [dataclasses.replace(c, name=f"p{i}") for i in range(100)]
    assert len(pickle.dumps(many)) < 20 * len(pickle.dumps(c))  # the profile once, not 100 times


def test_profile_is_immutable_and_holds_its_own_strings() -> None:
    c = PeerConfig(name="p")
    p: Profile = c._p  # type: ignore[attr-defined]
    before = interned_count(PeerConfig)
    text = "".join(["v-", "context-of-a-new-profile"])
    c.context = text
    assert c.context == text and c.context is not text  # a copy, made among the profiles
    assert interned_count(PeerConfig) == before + 1
    c.context = text  # the value it has: nothing changes
    assert interned_count(PeerConfig) == before + 1 and p.values == PeerConfig(name="p")._p.values  # type: ignore[attr-defined]


def test_unhashable_value_is_kept_unshared() -> None:
    c, r = PeerConfig(name="p"), Ref(name="p")
    c.nat = ["force_rport"]  # type: ignore[assignment]
    r.nat = ["force_rport"]
    assert state(c) == state(r) and c == PeerConfig(name="p", nat=["force_rport"])  # type: ignore[arg-type]


def test_the_engine_sends_and_judges_the_same_for_every_option_set() -> None:
    """The hottest reader: a poke of a peer with every option non-default (pjsip semantics off,
    so that its probe is chan_sip's shape) is the same request with either class."""
    kw = dict(NONDEFAULT, semantics="chan_sip", contact_uri=None, qualify_targets="first", host="127.0.0.1",
              port=A[1], transport="udp", qualify_source=None, qualify_auth=False, dynamic=False, qualify_ms=2000,
              qualifyfreq_ms=5000, keepalive_s=0, outboundproxy=None)
    seen = []
    for cls in (PeerConfig, Ref):
        sim = build([cls(**kw)], {A: ok_after(0.01)})
        sim.run_until(12.0)
        seen.append([(round(t, 3), d, masked(data)) for t, d, data in sim.sent])
        seen.append([(e.time, e.answered, e.status_code, e.state) for e in sim.results(kw["name"])])
    assert seen[0] == seen[2] and seen[1] == seen[3] and len(seen[1]) >= 2


def masked(req: bytes) -> list[bytes]:
    """The request's lines, the random parts (branch, tag, Call-ID) cut off."""
    return [line.split(b";branch=")[0].split(b";tag=")[0] for line in req.split(b"\r\n")
            if not line.startswith(b"Call-ID:")]


def test_profiles_past_max_classes_read_through_properties(monkeypatch: pytest.MonkeyPatch) -> None:
    """Values that are really per peer (here a context each) stop making classes: their peers
    are of the record class and read the profile through its properties, with the same values."""
    monkeypatch.setattr(profile, "MAX_CLASSES", interned_count(PeerConfig))
    for i in range(3):
        kw = dict(NONDEFAULT, context=f"past-the-cap-{i}")
        c, r = PeerConfig(**kw), Ref(**kw)
        assert type(c) is PeerConfig and state(c) == state(r) and repr(c) == repr(r)
        assert c == PeerConfig(**kw) and pickle.loads(pickle.dumps(c)) == c
        c.qualify_ms, r.qualify_ms = 1234, 1234
        assert state(c) == state(r)
    shared = PeerConfig(name="p", qualify_ms=2000)  # an existing profile keeps its class
    assert type(shared) is not PeerConfig and isinstance(shared, PeerConfig) and shared.qualify_ms == 2000
