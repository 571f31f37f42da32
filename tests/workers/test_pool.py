"""workers/pool.py without processes: partitions by HRW, commands held while a worker is down."""

from __future__ import annotations

import pickle
from typing import Any

from sipqualify.model import GeneralConfig, PeerConfig, ServiceConfig
from sipqualify.workers.hrw import owner
from sipqualify.workers.mirror import MirrorEngine
from sipqualify.workers.pool import WorkerPool
from sipqualify.workers.wire import HEADER


class Writer:
    def __init__(self) -> None:
        self.data = b""

    def write(self, data: bytes) -> None:
        self.data += data

    def is_closing(self) -> bool:
        return False

    def messages(self) -> list[tuple[Any, ...]]:
        out, buf = [], self.data
        while buf:
            (n,) = HEADER.unpack_from(buf)
            out.append(pickle.loads(buf[HEADER.size:HEADER.size + n]))
            buf = buf[HEADER.size + n:]
        return out


def test_partition_and_commands_held_while_down() -> None:
    engine = MirrorEngine(GeneralConfig(), local_address=lambda dest: ("127.0.0.1", 5060))
    pool = WorkerPool(2, engine, None, [("127.0.0.1", 5060)], GeneralConfig(), ServiceConfig())  # type: ignore[arg-type]
    names = [f"p{i}" for i in range(20)]
    peers = [PeerConfig(name=n, host="127.0.0.1", port=5999, qualify_ms=2000) for n in names]
    peers += [PeerConfig(name="phone", dynamic=True, qualify_ms=2000),
              PeerConfig(name="tcp", host="127.0.0.1", transport="tcp", qualify_ms=2000)]
    engine.load(peers, 0.0, addresses={n: ("127.0.0.1", 5999) for n in names})  # no worker yet: nothing sent
    assert engine.remote == {n: owner(n, 2) for n in names}  # the dynamic and the TCP peer stay here
    victim = next(n for n in names if owner(n, 2) == 1)
    assert engine.qualify(victim, 1.0)  # forwarded, held: worker 1 is down
    assert engine.datagrams_to_send() == []  # never poked from the main process ...
    while engine.handle_timer(100.0):
        pass
    assert engine.datagrams_to_send() == []  # ... neither when their scheduled pokes fall due
    assert pool.state[1].pending == [("qualify", victim)]
    w = Writer()
    pool._attach(pool.state[1], 4242, w)  # type: ignore[arg-type]
    msgs = w.messages()
    assert [m[0] for m in msgs] == ["start", "load", "qualify"]
    assert [cfg.name for cfg, *_ in msgs[1][2]] == [n for n in names if owner(n, 2) == 1]
    assert msgs[1][3] == GeneralConfig().qualifygap_ms / 1000.0  # worker 1 starts one gap later
    assert msgs[2] == ("qualify", victim) and pool.state[1].pending == []
