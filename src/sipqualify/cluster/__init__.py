"""Many nodes: static peers shared across the members of a tooz group on etcd or Redis.

`partition.py` is the sans-I/O part (who owns which peer on tooz's consistent hash ring,
what moves on a membership change, when a node cut off from the coordinator must stop
probing); `coordinator.py` runs the blocking tooz client in a thread; `member.py` is the
asyncio shell the service holds. Design and guarantees: docs/scaling.md.
"""

from .member import Cluster, open_cluster
from .partition import Fence, Moves, heartbeat_interval, moves, owned

__all__ = ["Cluster", "Fence", "Moves", "heartbeat_interval", "moves", "open_cluster", "owned"]
