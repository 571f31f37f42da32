"""Our UDP sockets get the receive buffer they ask for (issue 15: a million peers' answers come
in bursts): with SO_RCVBUFFORCE where we may (root, CAP_NET_ADMIN), beyond net.core.rmem_max;
where we may not, the kernel's cap is warned about once, with the sysctl that lifts it."""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path

import pytest

from sipqualify.net import udp


def rmem_max() -> int:
    return int(Path("/proc/sys/net/core/rmem_max").read_text())


def test_the_buffer_asked_for_is_granted_beyond_rmem_max_when_privileged(caplog: pytest.LogCaptureFixture) -> None:
    want = 2 * rmem_max() + 65536  # more than the plain option may give
    udp._warned_small = False
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s, caplog.at_level(logging.WARNING, "sipqualify.net"):
        rcv, snd = udp.size_buffers(s, want)
    if os.geteuid() == 0:  # CAP_NET_ADMIN: the FORCE options (the kernel reports twice what it grants)
        assert rcv == 2 * want and snd == 2 * want
        assert caplog.records == []
    else:
        assert rcv == 2 * rmem_max()
        assert [r.getMessage() for r in caplog.records if "net.core.rmem_max" in r.getMessage()], caplog.text


def test_a_capped_buffer_is_warned_about_once(caplog: pytest.LogCaptureFixture,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """The FORCE options refused (as without CAP_NET_ADMIN): the plain option is capped by the
    kernel at rmem_max; one warning names the size and the sysctl, however many sockets."""
    monkeypatch.setattr(udp, "SO_RCVBUFFORCE", -1)  # an option number the kernel refuses (EINVAL/ENOPROTOOPT)
    monkeypatch.setattr(udp, "SO_SNDBUFFORCE", -1)
    udp._warned_small = False
    want = 2 * rmem_max() + 65536
    with caplog.at_level(logging.WARNING, "sipqualify.net"):
        for _ in range(3):
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                rcv, _ = udp.size_buffers(s, want)
                assert rcv == 2 * rmem_max()
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 1 and f"sysctl -w net.core.rmem_max={want}" in warned[0], warned
