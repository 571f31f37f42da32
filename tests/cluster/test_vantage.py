"""Vantage points (cluster/vantage.py, partition.vantage) without a coordinator, a store or a
clock: who probes a peer, and what its primary reports from what each vantage point saw."""

from __future__ import annotations

from tooz import hashring

from sipqualify.cluster.partition import PARTITIONS, owned, owners, ring_of, vantage, vantage_owners
from sipqualify.cluster.vantage import Agreed, Agreement, Held, Observation, parse_payload, payload, quorum

NAMES = [f"peer{i:04d}" for i in range(2000)]
FIVE = {f"n{i}".encode(): 1 for i in range(5)}


def test_k_distinct_probers_the_ring_owner_first_as_tooz_get_nodes_says() -> None:
    ring = hashring.HashRing(list(FIVE), partitions=PARTITIONS)
    first = dict(owners(NAMES, ring_of(FIVE)))
    for name, nodes in vantage_owners(NAMES, ring_of(FIVE), 3):
        assert len(set(nodes)) == 3
        assert set(nodes) == ring.get_nodes(name.encode(), replicas=3)
        assert nodes[0] == first[name]  # the primary is the owner with one vantage point


def test_each_peer_probed_by_k_nodes_and_fewer_members_than_k_means_all() -> None:
    shares = {m: owned(NAMES, FIVE, m, k=3) for m in FIVE}
    for n in NAMES:
        assert sum(n in s for s in shares.values()) == 3
    assert all(1000 < len(s) < 1400 for s in shares.values()), {m: len(s) for m, s in shares.items()}
    two = {b"a": 1, b"b": 1}
    got = vantage(NAMES, two, b"a", 3)
    assert set(got) == set(NAMES) and all(set(v) == {b"a", b"b"} for v in got.values())
    assert vantage(NAMES, two, b"zz", 3) == {}
    assert owned(NAMES, FIVE, b"n0", k=1) == owned(NAMES, FIVE, b"n0")


def ob(state: str, lastms: int = 0, at: float = 1.0) -> Observation:
    return Observation(state, lastms, float(lastms) if lastms > 0 else None, at)


def agreement(me: str = "a", nodes: tuple[str, ...] = ("a", "b", "c"),
              stored: Held | None = None) -> Agreement:
    ag = Agreement(me)
    assert ag.set_probers({"p": nodes}, lambda _: stored, 0.0) == []
    return ag


def test_one_vantage_point_alone_cannot_make_a_peer_unreachable() -> None:
    ag = agreement()
    for n in "abc":
        ag.observe("p", n, ob("OK", 12), 1.0)
    assert ag.agreed["p"].state == "OK"
    assert ag.observe("p", "a", ob("UNREACHABLE", -1, at=2), 2.0) is None  # the primary's own trouble
    assert ag.agreed["p"].state == "OK" and ag.agreed["p"].lastms == 12  # still reachable from b
    assert ag.held_back == 1
    ch = ag.observe("p", "c", ob("UNREACHABLE", -1, at=3), 3.0)  # two of three: a quorum
    assert ch == Agreed("p", "OK", "UNREACHABLE", -1, 12, None, "2 of 3 vantage points: a, c")
    assert ag.observe("p", "b", ob("UNREACHABLE", -1, at=4), 4.0) is None  # already agreed
    back = ag.observe("p", "b", ob("OK", 30, at=5), 5.0)  # reachable again from one: two still say gone
    assert back is None
    back = ag.observe("p", "c", ob("LAGGED", 2500, at=6), 6.0)
    assert back == Agreed("p", "UNREACHABLE", "OK", 30, -1, 30.0, None)  # b is first in ring order among those up
    assert ag.changes == 3  # UNKNOWN -> OK first


def test_only_the_primary_decides_and_reports() -> None:
    ag = agreement(me="b")
    assert not ag.primary("p") and ag.covers("p")
    for n in "abc":
        assert ag.observe("p", n, ob("UNREACHABLE", -1), 1.0) is None
    assert "p" not in ag.agreed


def test_nothing_decides_so_the_held_state_stays() -> None:
    ag = agreement(stored=Held("UNREACHABLE", -1, None, 100.0))
    assert ag.observe("p", "a", ob("UNKNOWN"), 1.0) is None
    assert ag.agreed["p"].state == "UNREACHABLE"  # one said gone, no one reaches it: as stored
    assert ag.observe("p", "b", ob("OK", 5), 1.0) == Agreed("p", "UNREACHABLE", "OK", 5, -1, 5.0, None)


def test_a_table_row_older_than_the_kept_observation_is_ignored_a_notification_is_not() -> None:
    ag = agreement()
    ag.observe("p", "b", ob("OK", 5, at=10), 10.0)
    ag.observe("p", "c", ob("OK", 5, at=10), 10.0)
    ag.observe("p", "b", ob("UNREACHABLE", -1, at=9), 11.0, ordered=False)  # a read racing the notification
    assert ag.seen["p"]["b"].state == "OK"
    ag.observe("p", "b", ob("UNREACHABLE", -1, at=9), 11.0)  # b's clock stepped back: its next change counts
    assert ag.seen["p"]["b"].state == "UNREACHABLE"


def test_a_membership_change_makes_a_new_primary_from_the_stored_state() -> None:
    ag = agreement(me="b")
    for n in "abc":
        ag.observe("p", n, ob("UNREACHABLE", -1), 1.0)
    # a died: b is the primary of p with b and c; the stored state (a's report) is UNREACHABLE: nothing new
    assert ag.set_probers({"p": ("b", "c")}, lambda _: Held("UNREACHABLE", -1, None, 1.0), 2.0) == []
    assert ag.primary("p") and set(ag.seen["p"]) == {"b", "c"}  # a's observation is forgotten
    # stored OK instead (a died before its report was stored): b reports the change once
    ag2 = agreement(me="b")
    for n in "abc":
        ag2.observe("p", n, ob("UNREACHABLE", -1), 1.0)
    got = ag2.set_probers({"p": ("b", "c")}, lambda _: Held("OK", 10, 10.0, 1.0), 2.0)
    assert got == [Agreed("p", "OK", "UNREACHABLE", -1, 10, None, "2 of 2 vantage points: b, c")]
    # the peer moved away from b: nothing of it is kept
    ag2.set_probers({}, lambda _: None, 3.0)
    assert not ag2.covers("p") and "p" not in ag2.seen and "p" not in ag2.agreed


def test_quorum_is_a_majority() -> None:
    assert [quorum(n) for n in range(1, 6)] == [1, 2, 2, 3, 3]


def test_view_and_payloads() -> None:
    ag = agreement()
    ag.observe("p", "b", ob("OK", 7, at=3.5), 3.5)
    v = ag.view("p")
    assert v == {"nodes": ["a", "b", "c"], "primary": "a", "quorum": 2, "agreed": "OK",
                 "observations": {"b": {"state": "OK", "lastms": 7, "rtt_ms": 7.0, "at": 3.5}}}
    assert ag.view("q") is None
    o = Observation("OK", 7, 7.25, 1700000000.125)
    assert parse_payload(payload("n1", "peer\u00e9", o)) == ("n1", "peer\u00e9", o)
    assert parse_payload(payload("n1", "x", Observation("UNREACHABLE", -1, None, 1.0)))[2].rtt_ms is None  # type: ignore[index]
    for junk in ("", "a\tb", "a\tb\tOK\tx\t\t1", "a\tb\tOK\t1\t\tnan-ish"):
        assert parse_payload(junk) is None
