"""Optional mypyc build of the hot modules (issue 15). The metadata is in pyproject.toml.

    pip install .                         # pure Python: the default, what the tests run
    SIPQUALIFY_MYPYC=1 pip install --no-build-isolation .   # MYPYC_MODULES compiled to C extensions
                                          # (mypy, wheel and gcc in the environment doing the build)
    scripts/build-mypyc.sh                # the same, in place in src/ (benchmarks); --clean undoes it

The compiled modules behave as the Python ones (the same tests pass against both:
scripts/build-mypyc.sh --test); they are chosen because the qualify hot path runs through them:
the front door, the response fast path, the engine and its per-transaction helpers, and the
shell around them (the driver, the UDP endpoint's receive loop and send).
"""

from __future__ import annotations

import os
import sys

from setuptools import Extension, setup

MYPYC_MODULES = [
    "src/sipqualify/sip/fastpath.py",
    "src/sipqualify/sip/message.py",
    "src/sipqualify/sip/options.py",
    "src/sipqualify/sip/transaction.py",
    "src/sipqualify/qualify/dispatch.py",
    "src/sipqualify/qualify/engine.py",
    "src/sipqualify/qualify/inbound.py",
    "src/sipqualify/qualify/policy.py",
    "src/sipqualify/qualify/state.py",
    "src/sipqualify/qualify/stats.py",
    "src/sipqualify/qualify/timers.py",
    "src/sipqualify/qualify/verdict.py",
    "src/sipqualify/driver.py",
    "src/sipqualify/net/udp.py",
    "src/sipqualify/resultmetrics.py",
    "src/sipqualify/store/recorder.py",
]

ext_modules = []
if os.environ.get("SIPQUALIFY_MYPYC", "") not in ("", "0"):
    from mypyc.build import mypycify  # mypy's compiler: pip install mypy (the `test` extra has it)

    ext_modules = mypycify(["--config-file", "pyproject.toml", *MYPYC_MODULES], opt_level="3")
    # per-transaction steps in C (the response fast path, the OPTIONS splice, the latency statistics;
    # their Python versions stay the reference); no fused multiply-add: the figures are Python's, bit for bit
    ext_modules.append(Extension("sipqualify.sip._speedups", ["src/sipqualify/sip/_speedups.c"],
                                 extra_compile_args=["-O2", "-Wall", "-Werror", "-ffp-contract=off"]))
    if sys.platform.startswith("linux"):  # recvmmsg/sendmmsg: the UDP hot path's batched I/O (net/udp.py)
        ext_modules.append(Extension("sipqualify.net._mmsg", ["src/sipqualify/net/_mmsg.c"],
                                     extra_compile_args=["-O2", "-Wall", "-Werror"]))

setup(ext_modules=ext_modules)
