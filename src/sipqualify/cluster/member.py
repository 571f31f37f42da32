"""The asyncio side of cluster membership: which static peers this node qualifies, now.

The coordinator thread (coordinator.py) reports a `Snapshot` every heartbeat. Here, on the
event loop: the `Fence` is fed acknowledged heartbeats and armed as a loop timer, so a node
cut off from the coordinator stops probing its share at the fence even while the thread hangs
in a request; one reconcile task computes the owned set (hashing runs in a worker thread:
a million names take seconds) and hands the difference to `on_change(gained, lost)`, one
change at a time.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..model import Config, PeerConfig
from ..store.base import default_node_id
from .coordinator import CoordinatorThread, Snapshot
from .follow import FleetFollower
from .partition import Fence, moves, owned, owners, ring_of, settle_time, vantage

if TYPE_CHECKING:
    from ..store.base import BaseStore, PeerStateRecord, TransitionRecord

Json = dict[str, Any]

log = logging.getLogger("sipqualify.cluster")

OnChange = Callable[[list[str], list[str]], Awaitable[None]]
Probers = dict[str, tuple[bytes, ...]]  # static peer -> its vantage points, the primary first


def partitioned(p: PeerConfig) -> bool:
    """Static peers are shared across the nodes; a dynamic peer stays with the node that holds
    its registration (the NAT binding is open from that node's socket only)."""
    return not p.dynamic


@dataclass
class ClusterStatus:
    node_id: str
    group: str
    members: list[str]
    live: bool  # inside the fence: probing its share
    owned: int  # static peers qualified here
    failures: int  # coordinator ticks that failed
    moves: int  # ownership changes applied
    vantage_points: int = 1  # nodes probing each static peer


class Cluster:
    def __init__(self, loop: asyncio.AbstractEventLoop, clock: Callable[[], float], url: str, group: str,
                 node_id: str, lease_s: int, on_change: OnChange, vantage_points: int = 1) -> None:
        self.loop = loop
        self.clock = clock
        self.node_id = node_id
        self.group = group
        self.me = node_id.encode()
        self.fence = Fence(lease_s)
        self.on_change = on_change
        self.members: dict[bytes, int] = {}
        self.names: set[str] = set()  # static peers of the configuration
        self.owned: set[str] = set()
        self.moves = 0
        self.k = vantage_points
        self.probers: Probers = {}  # k > 1: each owned peer's vantage points, the primary first
        # told when `probers` changes, before the engine gains or loses peers (so that a gained peer's
        # first transition is already an observation)
        self.on_probers: Callable[[Probers], Awaitable[None]] | None = None
        self._thread = CoordinatorThread(url, group, node_id, lease_s, self._report_threadsafe, clock)
        self._dirty = asyncio.Event()
        self._first = asyncio.Event()
        self._timer: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._was_live = False
        self.settle_s = settle_time(lease_s)
        self._seen_at = 0.0  # when the current member list was first seen: gains wait settle_s after it
        self._settle_timer: asyncio.TimerHandle | None = None
        self.follower: FleetFollower | None = None  # the fleet's transitions, with a shared store
        self.fleet_counts: dict[tuple[str, str], int] = {}  # (node, state) -> peers, from the shared store
        self._counted_at = float("-inf")

    # ---------------------------------------------------------------- lifecycle

    async def start(self, names: Iterable[str], timeout: float) -> None:
        """Join, and wait (at most `timeout`) for the first membership, so the first load is
        already this node's share. Unreachable coordinator: start with no static peer; they come
        when the coordinator answers."""
        self.names = set(names)
        self._thread.start()
        try:
            await asyncio.wait_for(self._first.wait(), timeout)
            deadline = self.clock() + timeout
            while (wait := self._seen_at + self.settle_s - self.clock()) > 0 and self.clock() < deadline:
                await asyncio.sleep(wait)  # the others see this node before it takes anything
        except TimeoutError:
            log.warning("cluster: no membership from the coordinator within %.0f s: no static peer qualified "
                        "until it answers", timeout)
        if self.fence.live(self.clock()):
            self.owned, self.probers = await asyncio.to_thread(self._share)
            self._was_live = True
        self._task = self.loop.create_task(self._reconcile())

    async def follow(self, url: str, store: BaseStore[Any], publish: Callable[[TransitionRecord], None],
                     wanted: Callable[[], bool]) -> None:
        """Follow the fleet's transitions in the shared store for the `?fleet=1` event streams:
        `publish` gets each one, while `wanted` says some stream follows the fleet (the event hub's,
        passed in by the service: the cluster does not import the API)."""
        self.follower = FleetFollower(url, store, publish, wanted)
        await self.follower.start()

    async def close(self) -> None:
        self._closed = True
        if self.follower is not None:
            await self.follower.close()
        for t in (self._timer, self._settle_timer):
            if t is not None:
                t.cancel()
        if self._task is not None:
            self._task.cancel()
        await asyncio.to_thread(self._thread.stop)

    # ---------------------------------------------------------------- queries

    def _share(self) -> tuple[set[str], Probers]:
        """The static peers this node probes now, and (k > 1) each one's vantage points (a worker thread)."""
        if self.k <= 1:
            return owned(self.names, self.members, self.me), {}
        found = vantage(self.names, self.members, self.me, self.k)
        return set(found), found

    def keeps(self, p: PeerConfig) -> bool:
        """Does this node load `p`? Dynamic peers always; static ones when they are its share."""
        return not partitioned(p) or p.name in self.owned

    def set_names(self, names: Iterable[str]) -> None:
        """The configuration's static peers changed (reload): ownership is recomputed."""
        self.names = set(names)
        self._dirty.set()

    async def remote_peers(self, cfg: Config, store: BaseStore[Any] | None) -> list[Json]:
        """The static peers other nodes qualify, with their owner (and their state when the store is
        shared: `[store] url`); hashing and the read run in a worker thread."""
        names = [n for n, p in cfg.peers.items() if partitioned(p) and n not in self.owned]
        members = dict(self.members)
        shared = store if cfg.service.store_url is not None else None

        def work() -> list[Json]:
            return fleet_rows(names, members, shared.fleet_states() if shared is not None else {})

        return await asyncio.to_thread(work)

    async def remote_peer(self, name: str, cfg: Config, store: BaseStore[Any] | None) -> Json | None:
        """A peer another node qualifies (`GET /api/v1/peers/NAME` on a node that does not own it):
        its owner on the ring and, from a shared store, its last stored state and recent
        transitions. None when no node has it: not a static peer of the configuration here and no
        stored row."""
        p = cfg.peers.get(name)
        ringed = p is not None and partitioned(p) and name not in self.owned
        members = dict(self.members)
        shared = store if cfg.service.store_url is not None else None

        def work() -> Json | None:
            row = shared.state_of(name) if shared is not None else None
            if not ringed and (row is None or row.node == self.node_id):
                return None  # nobody's, or a row this node left behind for a peer it no longer has
            history = shared.last_transitions(name, REMOTE_HISTORY) if shared is not None else []
            found = dict(owners([name], ring_of(members))) if ringed and members else {}
            return remote_row(name, found[name].decode() if name in found else None, row, history)

        return await asyncio.to_thread(work)

    async def count_fleet(self, store: BaseStore[Any] | None, shared: bool) -> dict[tuple[str, str], int]:
        """The fleet's peers by owner and stored state (`sipqualify_fleet_peers`), from the shared
        store, read at most every FLEET_COUNTS_S (a scrape every second costs one query per 10 s);
        empty without a shared store. A failed read keeps the last counts."""
        now = self.clock()
        if store is None or not shared or now - self._counted_at < FLEET_COUNTS_S:
            return self.fleet_counts
        self._counted_at = now
        try:
            self.fleet_counts = await asyncio.to_thread(store.fleet_counts)
        except Exception as e:
            log.warning("cluster: the fleet's peer counts could not be read from the store: %s", e)
        return self.fleet_counts

    def status(self) -> ClusterStatus:
        return ClusterStatus(self.node_id, self.group, sorted(m.decode() for m in self.members),
                             self.fence.live(self.clock()), len(self.owned), self._thread.failures, self.moves,
                             self.k)

    # ---------------------------------------------------------------- membership reports

    def _report_threadsafe(self, snap: Snapshot) -> None:
        if not self._closed:
            try:
                self.loop.call_soon_threadsafe(self._report, snap)
            except RuntimeError:  # the loop is closed (shutdown without close()): nothing to tell
                pass

    def _report(self, snap: Snapshot) -> None:
        if self._closed:
            return
        if not snap.ok:
            self._arm()
            return
        if self.me in snap.members:
            self.fence.confirmed(snap.sent_at)
        else:
            self.fence.lost()
        if snap.members != self.members:
            log.info("cluster: group '%s' members: %s", self.group, ", ".join(sorted(m.decode() for m in snap.members)))
            self.members = dict(snap.members)
            self._seen_at = self.clock()
            self._dirty.set()
        self._first.set()
        self._arm()

    def _arm(self) -> None:
        """The fence as a loop timer: fires when the last acknowledged heartbeat gets too old."""
        live = self.fence.live(self.clock())
        if live != self._was_live:
            self._dirty.set()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        d = self.fence.deadline
        if live and d is not None:
            self._timer = self.loop.call_at(self.loop.time() + (d - self.clock()), self._arm)

    async def _reconcile(self) -> None:
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            live = self.fence.live(self.clock())
            if live != self._was_live:
                log.warning("cluster: node '%s' %s", self.node_id,
                            "confirmed in the group: probing its share" if live else
                            "lost the coordinator: stops probing its share before its lease ends (fenced)")
                self._was_live = live
            want, probers = await asyncio.to_thread(self._share) if live else (set(), {})
            if not self.fence.live(self.clock()):  # fenced while hashing: nothing is ours
                want, probers = set(), {}
            m = moves(self.owned, want)
            hold = self._seen_at + self.settle_s - self.clock()
            if m.gained and hold > 0:  # give now, take once the others have given: never two probers
                if self._settle_timer is not None:
                    self._settle_timer.cancel()
                self._settle_timer = self.loop.call_later(hold, self._dirty.set)
                m = moves(self.owned, self.owned - set(m.lost))
                want = self.owned - set(m.lost)
            try:
                await self._set_probers(probers, want)  # maybe other vantage points (a quorum), same peers
            except Exception:
                log.exception("cluster: applying a change of vantage points failed; trying again")
                self.loop.call_later(1.0, self._dirty.set)
                continue
            if not m.gained and not m.lost:
                continue
            log.info("cluster: %d static peers here (+%d, -%d)", len(want), len(m.gained), len(m.lost))
            try:
                await self.on_change(m.gained, m.lost)
            except Exception:  # a failed change must not stop membership: logged, tried again in 1 s
                log.exception("cluster: applying an ownership change failed; trying again")
                self.loop.call_later(1.0, self._dirty.set)
                continue  # `owned` still says what the engine has: the retry moves the same peers
            self.owned = want
            self.moves += 1

    async def _set_probers(self, probers: Probers, want: set[str]) -> None:
        if self.k <= 1:
            return
        now = {n: nodes for n, nodes in probers.items() if n in want}
        if now != self.probers:
            if self.on_probers is not None:
                await self.on_probers(now)
            self.probers = now


async def open_cluster(cfg: Config, loop: asyncio.AbstractEventLoop, clock: Callable[[], float],
                       on_change: OnChange) -> Cluster | None:
    """The cluster member `[cluster]` asks for, joined (None without `[cluster] url`)."""
    svc = cfg.service
    if not svc.cluster_url:
        return None
    try:
        import tooz  # noqa: F401
    except ImportError as e:
        from ..model import ConfigError, ConfigMessage

        raise ConfigError([ConfigMessage("error", cfg.source or "", 0,
                                         f"[cluster] needs tooz: pip install 'sipqualify[cluster]' ({e})")]) from e
    node_id = svc.node_id or default_node_id()
    if svc.cluster_vantage_points > 1 and svc.store_url is None:
        from ..model import ConfigError, ConfigMessage

        raise ConfigError([ConfigMessage("error", cfg.source or "", 0,
                                         f"[cluster] vantage_points = {svc.cluster_vantage_points} needs a shared "
                                         "PostgreSQL store ([store] url = \"postgresql://...\"): the vantage points "
                                         "exchange what they see through it")])
    c = Cluster(loop, clock, svc.cluster_url, svc.cluster_group, node_id, svc.cluster_lease_s, on_change,
                svc.cluster_vantage_points)
    await c.start((n for n, p in cfg.peers.items() if partitioned(p)), timeout=float(svc.cluster_lease_s))
    log.info("cluster: node '%s' in group '%s' on %s: %d of %d static peers here", node_id, svc.cluster_group,
             svc.cluster_url.split("?")[0], len(c.owned), len(c.names))
    return c


REMOTE_HISTORY = 20  # transitions shown with another node's peer
FLEET_COUNTS_S = 10.0  # the fleet's counts by node and state are read from the store at most this often


def remote_row(name: str, ring_owner: str | None, row: PeerStateRecord | None,
               history: list[TransitionRecord]) -> Json:
    """`GET /api/v1/peers/NAME` for a peer this node does not qualify: `owner` is the node that
    qualifies it (its ring owner, else the node that stored its state), `live: false` says the
    figures are the owner's last stored ones, not this node's."""
    from ..api.transition_json import event_json
    from ..qualify.state import peer_status_word

    out: Json = {"name": name, "owner": ring_owner or (row.node if row is not None else None), "live": False,
                 "local": False, "state": None, "peer_status": None, "lastms": None, "maxms": None, "rtt_ms": None,
                 "changed_at": None, "updated_at": None, "stored_by": None}
    if row is not None:
        out.update(state=row.state, peer_status=peer_status_word(row.state), lastms=row.lastms, maxms=row.maxms,
                   rtt_ms=row.rtt_ms, changed_at=row.changed_at, updated_at=row.updated_at, stored_by=row.node)
    out["history"] = [event_json(t) for t in history]
    return out


def fleet_rows(names: list[str], members: dict[bytes, int], states: dict[str, PeerStateRecord]) -> list[Json]:
    """The fleet view's rows of peers other nodes qualify: each with its owner on the ring (`node`)
    and, from a shared store, its last stored state (`stored_by`: the node that wrote it)."""
    found = dict(owners(names, ring_of(members))) if members else {}
    out: list[Json] = []
    for n in sorted(names):
        owner = found[n].decode() if n in found else None
        row: Json = {"name": n, "node": owner, "local": False}
        r = states.get(n)
        if r is not None:
            row.update(state=r.state, lastms=r.lastms, maxms=r.maxms, rtt_ms=r.rtt_ms, changed_at=r.changed_at,
                       updated_at=r.updated_at, stored_by=r.node)
        out.append(row)
    return out
