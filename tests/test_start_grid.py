"""The first OPTIONS of each peer at start-up leave on chan_sip's stagger grid
(asterisk-differences.md item 10): offsets 0, 100, 100, 200, 200, ... ms with the default
qualifygap/qualifypeers, the first one included. sipqualify's first send used to leave 14-34 ms
late against the grid the others kept (a full garbage collection ran between the engine
reading the clock and the first send).

The daemon runs as `sipqualify run` in its own process, as users run it (in-process, the test
runner's heap hides the defect). Arrival times are the kernel's receive timestamps
(SO_TIMESTAMPNS), so the receiving side adds no scheduling noise. The defect this guards
against is systematic (the first send late on every start); a scheduler hiccup of a busy CI
machine is not: it delays one or two sends of one start, a different one the next time
(three starts under a CPU hog: the 12th send 6.5 ms late, then the 12th 40.9 ms, then the
10th and 11th 40 ms). So each send slot is judged by its best of up to three starts: a slot
late in every start fails.
"""

from __future__ import annotations

import select
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

from sipqualify.net.udp import SO_TIMESTAMPNS
from sipqualify.qualify.engine import stagger_offsets_ms

from .helpers import free_port, sip_conf

PEERS = 12
TOLERANCE_MS = 5.0


class FirstArrivals(threading.Thread):
    """One UDP socket per peer; the kernel timestamp of the first datagram each one receives."""

    def __init__(self, n: int) -> None:
        super().__init__(daemon=True)
        self.socks = []
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            s.bind(("127.0.0.1", 0))
            self.socks.append(s)
        self.first: dict[int, float] = {}
        self.done = threading.Event()

    def ports(self) -> list[int]:
        return [s.getsockname()[1] for s in self.socks]

    def run(self) -> None:
        open_socks = list(self.socks)
        deadline = time.monotonic() + 30
        while open_socks and time.monotonic() < deadline:
            ready, _, _ = select.select(open_socks, [], [], 0.5)
            for s in ready:
                _data, anc, _flags, _addr = s.recvmsg(65535, socket.CMSG_SPACE(16))
                for level, kind, raw in anc:
                    if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                        sec, nsec = struct.unpack("qq", raw[:16])
                        self.first[s.getsockname()[1]] = sec + nsec / 1e9
                open_socks.remove(s)
        self.done.set()

    def close(self) -> None:
        for s in self.socks:
            s.close()


def first_sends_ms(tmp_path: Path) -> list[float]:
    tmp_path.mkdir()
    rx = FirstArrivals(PEERS)
    rx.start()
    peers = {f"p{i:02d}": {"host": "127.0.0.1", "port": port, "qualify": "yes"} for i, port in enumerate(rx.ports())}
    conf = sip_conf(tmp_path / "sip.conf", free_port(), peers)
    proc = subprocess.Popen([sys.executable, "-m", "sipqualify.cli", "run", "-c", conf, "--state-dir",
                             str(tmp_path / "state"), "--api", f"127.0.0.1:{free_port(socket.SOCK_STREAM)}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        rx.done.wait(30)
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
        rx.close()
    assert len(rx.first) == PEERS, (rx.first, err.decode(errors="replace")[-2000:])
    t0 = min(rx.first.values())
    return sorted((t - t0) * 1000 for t in rx.first.values())


def grid_error_ms(arrivals: list[float]) -> list[float]:
    """How far each send is from the grid, the grid anchored where the sends agree best
    (the median offset), so a late first send shows as a late first send."""
    grid = stagger_offsets_ms(len(arrivals), 100, 1)
    shifts = sorted(a - g for a, g in zip(arrivals, grid, strict=True))
    anchor = shifts[len(shifts) // 2]
    return [a - g - anchor for a, g in zip(arrivals, grid, strict=True)]


def best_per_slot(errors: list[list[float]]) -> list[float]:
    """Each send slot's smallest error over the starts (a hiccup is one start's, a defect every start's)."""
    return [min(abs(e) for e in slot) for slot in zip(*errors, strict=True)]


def test_best_per_slot_keeps_a_defect_of_every_start() -> None:
    hiccups = [[0.1, 0.0, 40.0], [30.0, 0.2, 0.0], [0.0, 0.0, 0.3]]
    assert max(best_per_slot(hiccups)) <= TOLERANCE_MS
    first_late = [[20.0, 0.0, 0.1], [14.0, 0.2, 40.0], [34.0, 0.0, 0.3]]
    assert best_per_slot(first_late)[0] == 14.0


def test_first_options_leave_on_the_stagger_grid(tmp_path: Path) -> None:
    errors: list[list[float]] = []
    for attempt in range(3):
        err = grid_error_ms(first_sends_ms(tmp_path / f"run{attempt}"))
        errors.append([round(e, 1) for e in err])
        if max(best_per_slot(errors)) <= TOLERANCE_MS:
            return
    raise AssertionError(f"first OPTIONS off chan_sip's grid by more than {TOLERANCE_MS} ms (ms per send): {errors}")
