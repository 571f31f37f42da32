"""One log line per kind of event per interval; the next one says how many were held back."""

from __future__ import annotations

import logging

import pytest

from sipqualify.ratelog import RateLog


def test_one_line_per_key_per_interval_and_the_count_held_back(caplog: pytest.LogCaptureFixture) -> None:
    say = RateLog(logging.getLogger("t.ratelog"), every=60.0)
    with caplog.at_level(logging.WARNING, logger="t.ratelog"):
        assert say(0.0, "refused %s", "a", key="x")
        assert not any(say(t, "refused %s", "b", key="x") for t in (1.0, 30.0, 59.9))
        assert say(10.0, "other %d", 1, key="y")  # another kind is not held back by the first
        assert say(60.0, "refused %s", "c", key="x")
        assert not say(61.0, "refused %s", "d", key="x")
    assert [r.getMessage() for r in caplog.records] == [
        "refused a", "other 1", "refused c (and 3 more like it since the last such message)"]
