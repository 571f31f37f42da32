"""The daemon's own end-to-end scenario (tests/test_service.py: states, API, CLI, qualify now,
reload, restart from SQLite) run again with `--workers 2`: the same assertions hold when the
static peers are qualified by two worker processes, so the merged view is the same view."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import pytest

from sipqualify.qualify.events import QualifyResult
from sipqualify.service import ServiceOptions
from sipqualify.workers.pool import WorkerPool

from .. import test_service
from ..test_service import test_daemon_states_api_cli_reload_restart as _scenario


async def test_daemon_scenario_with_two_workers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[ServiceOptions] = []

    def options(*args: object, **kw: object) -> ServiceOptions:
        o = functools.partial(ServiceOptions, workers=2)(*args, **kw)  # type: ignore[arg-type]
        made.append(o)
        return o

    results: dict[int, set[str]] = {0: set(), 1: set()}  # worker -> peers it reported results of
    apply = WorkerPool._apply

    def counting(pool: WorkerPool, w: Any, snaps: Any, events: list[Any], stats: Any) -> None:
        results[w.index].update(ev[0] for ev in events if type(ev) is tuple)  # results: plain tuples
        apply(pool, w, snaps, events, stats)

    monkeypatch.setattr(test_service, "ServiceOptions", options)
    monkeypatch.setattr(WorkerPool, "_apply", counting)
    await _scenario(tmp_path, tmp_path / "state")
    assert [o.workers for o in made] == [2, 2]  # the daemon and its restart both ran with workers
    # the static UDP peers were qualified by the workers, each by the one HRW gives it
    assert results[0] | results[1] == {"ok", "nf", "slow", "dead", "new"}
    assert not results[0] & results[1]
    assert QualifyResult._fields[0] == "peer"
