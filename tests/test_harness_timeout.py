"""tests/conftest.py's guard: a test whose event loop waits on something that never comes
fails after SIPQUALIFY_TEST_TIMEOUT with every asyncio task's stack in its report (and in the
stacks file), and the run goes on to the next test instead of hanging until CI's limit."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

HANGS = '''
import asyncio


async def test_hangs() -> None:
    async def waits_forever() -> None:
        await asyncio.get_running_loop().create_future()

    await asyncio.create_task(waits_forever(), name="the-stuck-one")


def test_after() -> None:
    pass
'''


def test_a_hung_test_fails_with_its_tasks_stacks_and_the_run_goes_on(tmp_path: Path) -> None:
    pkg = tmp_path / "inner"
    pkg.mkdir()
    shutil.copy(Path(__file__).with_name("conftest.py"), pkg / "conftest.py")
    (pkg / "test_hangs.py").write_text(HANGS)
    stacks = tmp_path / "stacks.txt"
    env = {**os.environ, "SIPQUALIFY_TEST_TIMEOUT": "1", "SIPQUALIFY_STACKS": str(stacks)}
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "asyncio_mode=auto",
                        str(pkg)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    out = r.stdout + r.stderr
    assert r.returncode == 1, out
    assert "1 failed, 1 passed" in out, out
    assert "TestHung" in out and "still running after 1 s" in out, out
    assert "the-stuck-one" in out and "waits_forever" in out, out
    assert "the-stuck-one" in stacks.read_text()
