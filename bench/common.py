"""Helpers shared by the benchmarks (run as `python bench/NAME.py`: this directory is on sys.path)."""

from __future__ import annotations

import os
import socket
from pathlib import Path


def free_port(kind: int = socket.SOCK_DGRAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """user + sys CPU of a process, from /proc/PID/stat (the anchors' method)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
