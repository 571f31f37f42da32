"""Session-wide test plumbing: `kill -USR1 <pytest pid>` prints every asyncio task's stack of
the running loop (and every thread's, through faulthandler) to stderr, to see where a test that
seems stuck is waiting; nothing else."""

from __future__ import annotations

import asyncio
import faulthandler
import signal
import sys
from types import FrameType


def _dump_tasks(signum: int, frame: FrameType | None) -> None:
    faulthandler.dump_traceback(sys.stderr, all_threads=True)
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return
    for task in asyncio.all_tasks(loop):
        print(f"--- {task!r}", file=sys.stderr)
        task.print_stack(file=sys.stderr)
    sys.stderr.flush()


if hasattr(signal, "SIGUSR1"):
    signal.signal(signal.SIGUSR1, _dump_tasks)
