"""Session-wide test plumbing, for tests that seem stuck; nothing else.

* `kill -USR1 <pytest pid>` writes every thread's stack and every asyncio task's stack of the
  running loop to STACKS_FILE (and to stderr, which pytest's capture may hold back).
* A test still running after TEST_TIMEOUT_S (env `SIPQUALIFY_TEST_TIMEOUT`, seconds; 0 turns
  it off) writes the same dump and fails with it in its report, instead of hanging the run
  until CI's own limit: the dump is what a hang needs to be understood. SIGALRM interrupts the
  loop's select() in the main thread, so the failure surfaces even when nothing would wake the
  loop again.
"""

from __future__ import annotations

import asyncio
import faulthandler
import io
import os
import signal
import sys
import traceback
from collections.abc import Iterator
from types import FrameType

import pytest

STACKS_FILE = os.environ.get("SIPQUALIFY_STACKS", "/tmp/sipqualify-test-stacks.txt")
TEST_TIMEOUT_S = float(os.environ.get("SIPQUALIFY_TEST_TIMEOUT", "900"))


class TestHung(Exception):
    """A test ran longer than TEST_TIMEOUT_S; the message holds every stack."""


def _stacks(frame: FrameType | None) -> str:
    out = io.StringIO()
    out.write("--- threads\n")
    for line in traceback.format_stack(frame) if frame is not None else []:
        out.write(line)
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        loop = None
    if loop is not None:
        for task in asyncio.all_tasks(loop):
            out.write(f"--- {task!r}\n")
            task.print_stack(file=out)
    return out.getvalue()


def _dump(frame: FrameType | None, why: str) -> str:
    text = f"=== {why} (pid {os.getpid()})\n" + _stacks(frame)
    try:
        with open(STACKS_FILE, "a") as f:
            f.write(text)
            f.flush()
            faulthandler.dump_traceback(f, all_threads=True)  # the other threads, from C
    except OSError:
        pass
    return text


def _on_usr1(signum: int, frame: FrameType | None) -> None:
    print(_dump(frame, "SIGUSR1"), file=sys.stderr, flush=True)


def _on_alarm(signum: int, frame: FrameType | None) -> None:
    text = _dump(frame, f"test still running after {TEST_TIMEOUT_S:.0f} s")
    raise TestHung(f"still running after {TEST_TIMEOUT_S:.0f} s; all stacks also in {STACKS_FILE}\n{text}")


if hasattr(signal, "SIGUSR1"):
    signal.signal(signal.SIGUSR1, _on_usr1)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Iterator[None]:
    armed = TEST_TIMEOUT_S > 0 and hasattr(signal, "SIGALRM")
    if armed:
        previous = signal.signal(signal.SIGALRM, _on_alarm)
        signal.setitimer(signal.ITIMER_REAL, TEST_TIMEOUT_S)
    try:
        yield
    finally:
        if armed:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
