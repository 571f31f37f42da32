"""A PeerConfig's `source` line is kept in shared int32 chunks, not as an int object of its own
(profile.py `_LineChunks`, issue 15: daemon memory): every line reads back exactly as written,
from a file of thousands of peers, across chunk boundaries, through equality, copies, pickling,
`dataclasses.replace`, setting `source`, the values kept whole (small, negative, huge, none) and
records made in several threads at once."""

from __future__ import annotations

import copy
import dataclasses
import pickle
import threading
from pathlib import Path

from sipqualify import profile
from sipqualify.config import load_config
from sipqualify.model import PeerConfig


def test_lines_of_a_big_sip_conf_read_back_exactly(tmp_path: Path) -> None:
    n = 3 * profile.LINES_PER_CHUNK + 7  # several chunks, the last one part-filled
    path = tmp_path / "sip.conf"
    lines = ["[general]", "udpbindaddr=127.0.0.1:5060", ""]
    headers: dict[str, int] = {}
    for i in range(n):
        headers[f"p{i:05d}"] = len(lines) + 1
        lines += [f"[p{i:05d}]", "type=peer", "host=127.0.0.1", "qualify=yes", ""]
    path.write_text("\n".join(lines) + "\n")
    cfg = load_config(str(path))
    assert len(cfg.peers) == n
    for name, line in headers.items():
        assert cfg.peers[name].source == f"{path}:{line}"
    assert max(headers.values()) > 256  # lines past the cached small ints, kept in chunks
    assert isinstance(cfg.peers["p00100"]._lines, profile.array)


def test_line_values_round_trip() -> None:
    for where in ("sip.conf:0", "sip.conf:1", "sip.conf:256", "sip.conf:257", "sip.conf:65536",
                  f"sip.conf:{2**31 - 1}", f"sip.conf:{2**31}", f"sip.conf:{10**30}", "sip.conf", "pgsql:sippeers",
                  "a:b:300", "x:007", ""):
        p = PeerConfig(name="a", source=where)
        assert p.source == where
        q = pickle.loads(pickle.dumps(p))
        assert q == p and q.source == where
        assert copy.copy(p) == p and copy.deepcopy(p).source == where
        r = dataclasses.replace(p, host="10.0.0.1")
        assert r.source == where and r != p


def test_equality_and_setting_source() -> None:
    a = PeerConfig(name="a", source="sip.conf:1000")
    b = PeerConfig(name="a", source="sip.conf:1000")
    c = PeerConfig(name="a", source="sip.conf:1001")
    assert a == b and a != c
    before = a._lines, a._li
    a.source = "sip.conf:1001"  # a new entry; the old one is never rewritten
    assert a == c and a.source == "sip.conf:1001" and b.source == "sip.conf:1000"
    assert before[0][before[1]] == 1000
    a.source = "other.conf:5"
    assert a.source == "other.conf:5" and a != c


def test_records_made_in_threads_keep_their_own_lines() -> None:
    out: dict[int, list[PeerConfig]] = {}

    def make(t: int) -> None:
        out[t] = [PeerConfig(name=f"t{t}-{i}", source=f"f{t}.conf:{1000 + i}") for i in range(2000)]

    threads = [threading.Thread(target=make, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    for t, peers in out.items():
        assert [p.source for p in peers] == [f"f{t}.conf:{1000 + i}" for i in range(2000)]
