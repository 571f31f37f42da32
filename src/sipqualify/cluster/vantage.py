"""Vantage points (`[cluster] vantage_points = k`, issue 15): each static peer is probed from k
nodes, and is UNREACHABLE only when a quorum of them agrees.

One node's network trouble (its uplink, a firewall in front of it, its own overload) then no
longer makes the peers it probes look dead: the other vantage points still reach them.

Who probes: the peer's k distinct nodes on the ring (partition.vantage), in ring order; the
first is the **primary**, the only node that reports the peer (transition rows, the shared
state row, log lines, AMI, webhooks, events), as with one vantage point.

What each prober does with its own engine's transitions for the peer: nothing is reported;
the new state is an **observation**, written to the shared PostgreSQL store's `observations`
table (one row per peer and node) and NOTIFY'd on `sipqualify_observations` in the same
transaction. Every node LISTENs there and keeps the observations of the peers it probes;
after (re)connecting it reads the table for them.

What the primary reports (`decide`): UNREACHABLE when at least a quorum (a majority, k // 2 + 1,
of the peer's vantage points among the live members) last observed UNREACHABLE; otherwise the
state of the first vantage point, in ring order (itself first), that reaches the peer (OK or
LAGGED, with its lastms); otherwise (nobody reaches it but too few say it is gone, e.g. the
others have not probed it yet) the state reported before stays. A change of that agreed state
is one transition, reported once, by the primary.

`Agreement` is the sans-I/O part (no clock, no socket: tests/cluster/test_vantage.py);
`Vantage` is its asyncio shell on two psycopg async connections (one LISTENs, one writes and
reads), reconnecting with a backoff like the fleet follower.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ..qualify.state import LAGGED, OK, UNKNOWN, UNREACHABLE

log = logging.getLogger("sipqualify.cluster")

CHANNEL = "sipqualify_observations"  # NOTIFY'd "<node>\t<peer>\t<state>\t<lastms>\t<rtt_ms>\t<at>"
BACKOFF_MIN_S = 0.5
BACKOFF_MAX_S = 10.0
PAGE = 5000  # peers per catch-up read
CLOSE_TIMEOUT_S = 10.0
_INT = re.compile(r"-?[0-9]{1,18}")


@dataclass(frozen=True, slots=True)
class Observation:
    """What one vantage point last saw of a peer: its state there, lastms, RTT, and when (UNIX time)."""

    state: str
    lastms: int
    rtt_ms: float | None
    at: float


@dataclass(frozen=True, slots=True)
class Agreed:
    """A change of the agreed state of a peer, to be reported by its primary."""

    peer: str
    old: str
    new: str
    lastms: int
    prev_lastms: int
    rtt_ms: float | None
    reason: str | None  # UNREACHABLE: which vantage points agreed


@dataclass(slots=True)
class Held:
    """The agreed state as the primary last reported it (or restored it from the store)."""

    state: str
    lastms: int
    rtt_ms: float | None
    changed_at: float | None  # UNIX time of the last agreed change (None: not known)


def quorum(n: int) -> int:
    """A majority of `n` vantage points."""
    return n // 2 + 1


def decide(probers: tuple[str, ...], seen: Mapping[str, Observation],
           held: Held) -> tuple[str, int, float | None, str | None]:
    """(state, lastms, rtt_ms, reason) the primary reports, from the last observations of the
    peer's vantage points (`probers`, the primary first); `held` when nothing decides."""
    down = [n for n in probers if (o := seen.get(n)) is not None and o.state == UNREACHABLE]
    if len(down) >= quorum(len(probers)):
        return UNREACHABLE, -1, None, f"{len(down)} of {len(probers)} vantage points: {', '.join(down)}"
    for n in probers:
        o = seen.get(n)
        if o is not None and o.state in (OK, LAGGED):
            return o.state, o.lastms, o.rtt_ms, None
    return held.state, held.lastms, held.rtt_ms, None


class Agreement:
    """The vantage points' observations of the peers this node probes, and, for those it is the
    primary of, the agreed state (sans-I/O)."""

    def __init__(self, me: str) -> None:
        self.me = me
        self.probers: dict[str, tuple[str, ...]] = {}  # peer -> its vantage points, the primary first
        self.seen: dict[str, dict[str, Observation]] = {}  # peer -> node -> its last observation
        self.agreed: dict[str, Held] = {}  # peers this node is the primary of
        self.changes = 0  # agreed transitions
        self.held_back = 0  # this node saw a peer UNREACHABLE that the quorum did not confirm

    def covers(self, peer: str) -> bool:
        return peer in self.probers

    def primary(self, peer: str) -> bool:
        nodes = self.probers.get(peer)
        return nodes is not None and nodes[0] == self.me

    def set_probers(self, probers: Mapping[str, tuple[str, ...]],
                    stored: Callable[[str], Held | None], now: float) -> list[Agreed]:
        """The peers this node probes and their vantage points changed (a membership change).
        A peer this node becomes the primary of starts from `stored(peer)` (the state the previous
        primary stored), then what the observations say; observations of nodes that are no longer
        vantage points of a peer are forgotten."""
        old = self.probers
        self.probers = dict(probers)
        for peer in old.keys() - self.probers.keys():
            self.seen.pop(peer, None)
            self.agreed.pop(peer, None)
        out: list[Agreed] = []
        for peer, nodes in self.probers.items():
            if old.get(peer) == nodes:
                continue
            seen = self.seen.get(peer)
            if seen is not None:
                for gone in seen.keys() - set(nodes):
                    del seen[gone]
            if nodes[0] != self.me:
                self.agreed.pop(peer, None)
                continue
            if peer not in self.agreed:
                self.agreed[peer] = stored(peer) or Held(UNKNOWN, 0, None, None)
            if (ch := self._decide(peer, now)) is not None:
                out.append(ch)
        return out

    def observe(self, peer: str, node: str, obs: Observation, now: float, ordered: bool = True) -> Agreed | None:
        """`node` saw `obs` (this node's own engine, or another vantage point through the store).
        `ordered`: it comes in the order that node made them (its own engine, its notifications,
        which arrive in commit order), and replaces what is kept whatever the clocks say; a row
        read from the table (not ordered: it may race a notification) is taken only if it is not
        older than the one kept, by that node's clock."""
        if peer not in self.probers:
            return None
        seen = self.seen.setdefault(peer, {})
        kept = seen.get(node)
        if not ordered and kept is not None and kept.at > obs.at:
            return None
        seen[node] = obs
        if self.probers[peer][0] != self.me:
            return None
        ch = self._decide(peer, now)
        if node == self.me and obs.state == UNREACHABLE and self.agreed[peer].state != UNREACHABLE:
            self.held_back += 1  # seen from here only: not reported
        return ch

    def _decide(self, peer: str, now: float) -> Agreed | None:
        held = self.agreed[peer]
        nodes = self.probers[peer]
        seen = self.seen.get(peer, {})
        state, lastms, rtt_ms, reason = decide(nodes, seen, held)
        old_state, old_lastms = held.state, held.lastms
        held.lastms, held.rtt_ms = lastms, rtt_ms
        if state == old_state:
            return None
        held.state, held.changed_at = state, now
        self.changes += 1
        return Agreed(peer, old_state, state, lastms, old_lastms, rtt_ms, reason)

    def view(self, peer: str) -> dict[str, Any] | None:
        """`vantage` of `GET /api/v1/peers/NAME`: the vantage points, the quorum, what each saw."""
        nodes = self.probers.get(peer)
        if nodes is None:
            return None
        seen = self.seen.get(peer, {})
        held = self.agreed.get(peer)
        return {"nodes": list(nodes), "primary": nodes[0], "quorum": quorum(len(nodes)),
                "agreed": held.state if held is not None else None,
                "observations": {n: {"state": o.state, "lastms": o.lastms, "rtt_ms": o.rtt_ms, "at": o.at}
                                 for n in nodes if (o := seen.get(n)) is not None}}


def payload(node: str, peer: str, o: Observation) -> str:
    rtt = "" if o.rtt_ms is None else repr(o.rtt_ms)
    return f"{node}\t{peer}\t{o.state}\t{o.lastms}\t{rtt}\t{o.at!r}"


STATES = frozenset((OK, LAGGED, UNREACHABLE, UNKNOWN))


def _finite(text: str) -> float:
    """A finite float of a payload field (ValueError for nan, inf or anything else)."""
    v = float(text)
    if not math.isfinite(v):
        raise ValueError(text)
    return v


def parse_payload(text: str) -> tuple[str, str, Observation] | None:
    """(node, peer, observation) of a notification; None for anything else (never raises).

    Strict: a known state, lastms a plain decimal integer, RTT empty or a finite non-negative
    number, the time finite; whatever another writer put on the channel is not taken in."""
    parts = text.split("\t")
    if len(parts) != 6:
        return None
    node, peer, state, lastms, rtt, at = parts
    if not node or not peer or state not in STATES or not _INT.fullmatch(lastms):
        return None
    try:
        rtt_ms = _finite(rtt) if rtt else None
        if rtt_ms is not None and rtt_ms < 0:
            return None
        return node, peer, Observation(state, int(lastms), rtt_ms, _finite(at))
    except ValueError:
        return None


class Vantage:
    """The asyncio shell: this node's observations written to the store, the others' followed.

    `report(change)` is called for each agreed change of a peer this node is the primary of.
    """

    def __init__(self, url: str, node_id: str, report: Callable[[Agreed], None],
                 read_stored: Callable[[list[str]], dict[str, Held]], wall: Callable[[], float] = time.time) -> None:
        self.url = url
        self.me = node_id
        self.report = report
        # the agreed states the store has for these peers (blocking: run in a thread); a new primary starts from them
        self.read_stored = read_stored
        self.wall = wall
        self.agreement = Agreement(node_id)
        self._pending: dict[str, Observation | None] = {}  # to write (None: this node's row to delete)
        self._reread: set[str] = set()  # peers whose observations are to be read from the table
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.connected = False
        self.failures = 0
        self.written = 0  # observations written by this node
        self.received = 0  # observations of other nodes taken in
        self.rejected = 0  # notifications on the channel that are not an observation (not taken in)

    def _reject(self, text: str) -> None:
        """A notification that is not an observation: counted; logged the first time and every 1,000th."""
        self.rejected += 1
        if self.rejected == 1 or self.rejected % 1000 == 0:
            log.warning("vantage: %d notification(s) on %s that are not an observation, not taken in "
                        "(last: %r)", self.rejected, CHANNEL, text[:120])

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._write_loop()), loop.create_task(self._listen_loop())]

    async def close(self) -> None:
        """Stop both loops; bounded (a connection closing under a cancelled read must not hold a stop)."""
        for t in self._tasks:
            t.cancel()
        if self._tasks:
            _, stuck = await asyncio.wait(self._tasks, timeout=CLOSE_TIMEOUT_S)
            if stuck:
                log.warning("vantage: %d connection task(s) still closing after %.0f s: left behind", len(stuck),
                            CLOSE_TIMEOUT_S)
        self._tasks = []

    def status(self) -> dict[str, Any]:
        a = self.agreement
        return {"connected": self.connected, "failures": self.failures, "peers": len(a.probers),
                "primary_of": len(a.agreed), "written": self.written, "received": self.received,
                "rejected": self.rejected,
                "agreed_changes": a.changes, "held_back": a.held_back}

    # ---------------------------------------------------------------- from the service

    def covers(self, peer: str) -> bool:
        return self.agreement.covers(peer)

    def primary(self, peer: str) -> bool:
        return self.agreement.primary(peer)

    def agreed(self, peer: str) -> Held | None:
        """The agreed state of a peer this node is the primary of (None: another node's to report)."""
        return self.agreement.agreed.get(peer)

    def local(self, peer: str, state: str, lastms: int, rtt_ms: float | None) -> None:
        """This node's engine saw the peer change state: an observation, written and weighed."""
        obs = Observation(state, lastms, rtt_ms, self.wall())
        self._pending[peer] = obs
        self._wake.set()
        if state == UNREACHABLE:
            log.info("vantage: peer '%s' UNREACHABLE from node '%s' (reported only on a quorum)", peer, self.me)
        self._emit(self.agreement.observe(peer, self.me, obs, self.wall()))

    async def set_probers(self, probers: Mapping[str, tuple[bytes, ...]]) -> None:
        """The cluster's vantage points changed: gained peers get a fresh UNKNOWN row of this node
        (an old row of an earlier turn must not count) and their rows are read; lost ones' row goes.
        A peer this node becomes the primary of starts from the agreed state its previous primary
        stored, read now (not from an older copy: that would report its last change again)."""
        new = {p: tuple(n.decode() for n in nodes) for p, nodes in probers.items()}
        me = self.me
        becoming = [p for p, nodes in new.items() if nodes[0] == me and p not in self.agreement.agreed]
        stored = await asyncio.to_thread(self.read_stored, becoming) if becoming else {}
        old = self.agreement.probers  # (unchanged while reading: the cluster applies one change at a time)
        now = self.wall()
        for peer in new.keys() - old.keys():
            self._pending[peer] = Observation(UNKNOWN, 0, None, now)
            self._reread.add(peer)
        for peer in old.keys() - new.keys():
            self._pending[peer] = None
            self._reread.discard(peer)
        for ch in self.agreement.set_probers(new, stored.get, now):
            self._emit(ch)
        for peer in new.keys() - old.keys():  # this node's own fresh row, weighed like the others'
            self.agreement.observe(peer, self.me, Observation(UNKNOWN, 0, None, now), now)
        self._wake.set()

    def _emit(self, ch: Agreed | None) -> None:
        if ch is None:
            return
        try:
            self.report(ch)
        except Exception:  # a report that fails must not stop the agreement
            log.exception("vantage: reporting %s -> %s of peer '%s' failed", ch.old, ch.new, ch.peer)

    # ---------------------------------------------------------------- the store

    async def _connect(self) -> Any:
        import psycopg

        from ..store.postgres import CONNECT_OPTIONS

        return await psycopg.AsyncConnection.connect(self.url, autocommit=True, **CONNECT_OPTIONS)

    async def _write_loop(self) -> None:
        """Pending observations (the newest per peer) upserted and NOTIFY'd in one transaction; rows
        asked for are read. A failure keeps them for the next connection."""
        delay = BACKOFF_MIN_S
        while True:
            try:
                conn = await self._connect()
                async with conn:
                    delay = BACKOFF_MIN_S
                    while True:
                        if not self._pending and not self._reread:
                            self._wake.clear()
                            await self._wake.wait()
                        if self._pending:
                            await self._write(conn)
                        if self._reread:
                            await self._read(conn)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # server gone, network: reconnect with backoff, nothing lost
                self.failures += 1
                log.warning("vantage: writing observations: %s; again in %.1f s",
                            str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, BACKOFF_MAX_S)

    async def _write(self, conn: Any) -> None:
        batch, self._pending = self._pending, {}
        keep = {p: o for p, o in batch.items() if o is not None}
        gone = [p for p, o in batch.items() if o is None]
        try:
            async with conn.transaction():
                if keep:
                    peers = list(keep)
                    obs = [keep[p] for p in peers]
                    await conn.execute(
                        "INSERT INTO observations (peer, node, state, lastms, rtt_ms, at) "
                        "SELECT p, %s, s, l, r, a FROM unnest(%s::text[], %s::text[], %s::bigint[], %s::float8[], "
                        "%s::float8[]) AS t(p, s, l, r, a) ON CONFLICT (peer, node) DO UPDATE SET "
                        "state = EXCLUDED.state, lastms = EXCLUDED.lastms, rtt_ms = EXCLUDED.rtt_ms, at = EXCLUDED.at",
                        (self.me, peers, [o.state for o in obs], [o.lastms for o in obs],
                         [o.rtt_ms for o in obs], [o.at for o in obs]))
                    await conn.execute("SELECT pg_notify(%s, x) FROM unnest(%s::text[]) AS x",
                                       (CHANNEL, [payload(self.me, p, keep[p]) for p in peers]))
                if gone:
                    await conn.execute("DELETE FROM observations WHERE node = %s AND peer = ANY(%s)", (self.me, gone))
        except BaseException:
            for p, o in batch.items():  # newer ones taken meanwhile win
                self._pending.setdefault(p, o)
            raise
        self.written += len(keep)

    async def _read(self, conn: Any) -> None:
        """The other vantage points' rows of the peers asked for (gained, or all after a reconnect)."""
        want, self._reread = sorted(self._reread), set()
        try:
            for i in range(0, len(want), PAGE):
                cur = await conn.execute("SELECT peer, node, state, lastms, rtt_ms, at FROM observations "
                                         "WHERE peer = ANY(%s) AND node <> %s", (want[i:i + PAGE], self.me))
                for peer, node, state, lastms, rtt_ms, at in await cur.fetchall():
                    self._take(peer, node, Observation(state, int(lastms), rtt_ms, float(at)), ordered=False)
        except BaseException:
            self._reread.update(want)
            raise

    def _take(self, peer: str, node: str, obs: Observation, ordered: bool = True) -> None:
        if node == self.me or not self.agreement.covers(peer):
            return
        self.received += 1
        self._emit(self.agreement.observe(peer, node, obs, self.wall(), ordered))

    async def _listen_loop(self) -> None:
        delay = BACKOFF_MIN_S
        while True:
            try:
                conn = await self._connect()
                async with conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    self.connected = True
                    delay = BACKOFF_MIN_S
                    self._reread.update(self.agreement.probers)  # what changed while not listening
                    self._wake.set()
                    async for n in conn.notifies():
                        got = parse_payload(n.payload)
                        if got is not None:
                            self._take(got[1], got[0], got[2])
                        else:
                            self._reject(n.payload)
            except asyncio.CancelledError:
                raise
            except Exception as e:
                self.failures += 1
                log.warning("vantage: following observations: %s; again in %.1f s",
                            str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__, delay)
            self.connected = False
            await asyncio.sleep(delay)
            delay = min(delay * 2, BACKOFF_MAX_S)
