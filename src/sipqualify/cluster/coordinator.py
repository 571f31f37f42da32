"""The blocking tooz client, in a thread of its own: join, heartbeat, watch the group.

tooz is synchronous (every call is a request to etcd or Redis that can hang until its timeout),
so nothing here runs on the event loop. Every `interval` seconds the thread heartbeats (etcd:
lease keep-alive; Redis: the member's key TTL) and reads the member list, then hands a
`Snapshot` to `report` (the asyncio side passes a function that uses
`loop.call_soon_threadsafe`). A node missing from its own group (its lease ended while it was
cut off) joins again.

The member list read at each tick is the whole truth: the ring is built from it (partition.py),
with weight 1 for every member, as `join_partitioned_group` joins. tooz's `Partitioner` is not
used: it reads the members twice when it is made (once for its ring, once for its watchers), so a
node joining between the two reads is never on its ring, and when that node leaves, its watcher
raises `UnknownNode` at every tick from then on (the member that saw it fenced itself for good).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from .partition import heartbeat_interval

if TYPE_CHECKING:  # tooz is the optional `cluster` extra
    from tooz.coordination import CoordinationDriver

log = logging.getLogger("sipqualify.cluster")

#: every member's weight on the ring (tooz's `join_partitioned_group` default)
WEIGHT = 1


@dataclass(frozen=True, slots=True)
class Snapshot:
    ok: bool  # the heartbeat and the member list went through
    sent_at: float  # monotonic time the tick's first request was sent
    members: dict[bytes, int] = field(default_factory=dict)  # member id -> weight (ok only)
    error: str = ""


def tooz_url(url: str, lease_s: int) -> str:
    """The coordinator URL with tooz options derived from the lease (the user's own query
    options win): the membership TTL is the lease, and a request gives up well before the fence."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    timeout = max(1, int(lease_s / 4))  # etcd3gw reads an integer
    if parts.scheme.startswith("etcd3"):
        defaults = {"membership_timeout": str(lease_s), "timeout": str(timeout)}
    else:  # redis: socket timeouts, seconds
        defaults = {"membership_timeout": str(lease_s), "timeout": str(timeout),
                    "socket_timeout": str(timeout), "socket_connect_timeout": str(timeout)}
    return urlunsplit(parts._replace(query=urlencode({**defaults, **query})))


class CoordinatorThread:
    """One tooz coordinator, driven by one daemon thread until `stop()`."""

    def __init__(self, url: str, group: str, node_id: str, lease_s: int,
                 report: Callable[[Snapshot], None], clock: Callable[[], float] = time.monotonic) -> None:
        self.url = tooz_url(url, lease_s)
        self.group = group.encode()
        self.me = node_id.encode()
        self.interval = heartbeat_interval(lease_s)
        self.report = report
        self.clock = clock
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sipqualify-cluster", daemon=True)
        self._coord: object | None = None
        self.failures = 0  # ticks that failed (coordinator unreachable, request timed out)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def _join(self, coord: CoordinationDriver) -> None:
        """Join the group as `join_partitioned_group` does (its weight as the member's capability)."""
        from tooz import coordination

        try:
            coord.join_group(self.group, capabilities={"weight": WEIGHT}).get()
        except coordination.MemberAlreadyExist:
            pass

    def _run(self) -> None:
        from tooz import coordination

        coord = coordination.get_coordinator(self.url, self.me)
        started = False
        joined = False
        last_error = ""
        while not self._stop.is_set():
            sent = self.clock()
            try:
                if not started:
                    coord.start(start_heart=False)
                    started = True
                if not joined:
                    try:  # created first: tooz's join_group_create sleeps a second on a missing group
                        coord.create_group(self.group).get()
                    except coordination.GroupAlreadyExist:
                        pass
                    self._join(coord)
                    joined = True
                sent = self.clock()  # the lease (etcd) or the member's key (Redis) restarts from this request
                coord.heartbeat()
                members = coord.get_members(self.group).get()
                if self.me not in members:  # our lease ended (we were cut off): join again
                    log.warning("cluster: node '%s' no longer in group '%s': joining again",
                                self.me.decode(), self.group.decode())
                    self._join(coord)
                    members = coord.get_members(self.group).get()
                snap = Snapshot(True, sent, dict.fromkeys(members, WEIGHT))
                if last_error:
                    log.warning("cluster: coordinator reachable again (%d members)", len(members))
                    last_error = ""
            except Exception as e:  # noqa: BLE001 - any failure of the coordinator: reported, retried
                self.failures += 1
                err = f"{type(e).__name__}: {e}"
                if err != last_error:
                    log.warning("cluster: coordinator unreachable: %s", err)
                last_error = err
                snap = Snapshot(False, sent, error=err)
            self.report(snap)
            self._stop.wait(max(0.0, self.interval - (self.clock() - sent)))
        if started:
            try:
                if joined:
                    coord.leave_group(self.group).get()  # peers move at once, not after the lease
            except Exception as e:  # noqa: BLE001
                log.info("cluster: leaving the group: %s", e)
            try:
                coord.stop()
            except Exception as e:  # noqa: BLE001
                log.info("cluster: stopping the coordinator: %s", e)
