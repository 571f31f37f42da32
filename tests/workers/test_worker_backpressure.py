"""A worker does no new timer work while the main process has not read its results
(workers/worker.py BACKLOG_BYTES): its pokes wait, as in one process whose loop is behind."""

from __future__ import annotations

from typing import Any

from sipqualify.model import PeerConfig
from sipqualify.qualify.engine import QualifyEngine
from sipqualify.workers import worker as wk


class Transport:
    def __init__(self) -> None:
        self.pending = 0

    def get_write_buffer_size(self) -> int:
        return self.pending


class Writer:
    def __init__(self) -> None:
        self.transport = Transport()
        self.sent: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.sent.append(data)


async def test_pokes_wait_while_the_main_process_is_behind() -> None:
    writer = Writer()
    w = wk.Worker(writer, 0)  # type: ignore[arg-type]
    sent: list[Any] = []
    w.sockets.send_many = lambda items: sent.extend(dest for _, dest in items)  # type: ignore[method-assign]
    eng = w.engine = QualifyEngine(local_address=lambda dest: ("127.0.0.1", 5060))
    eng.load([PeerConfig(name="a", host="127.0.0.1", port=5999, qualify_ms=2000)], w.clock() - 1.0,
             addresses={"a": ("127.0.0.1", 5999)})
    writer.transport.pending = wk.BACKLOG_BYTES + 1
    w._on_timer()
    assert sent == [] and w.held == 1  # the due poke waits
    writer.transport.pending = 0
    w._on_timer()
    assert sent == [("127.0.0.1", 5999)]
    w.close()
