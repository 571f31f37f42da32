"""The chan_sip state encoding and transition table (asterisk-qualify.md §1.3, §1.4)."""

from __future__ import annotations

import pytest

from sipqualify.qualify import state as st


@pytest.mark.parametrize(
    ("maxms", "lastms", "text", "state"),
    [
        (0, 0, "Unmonitored", st.UNMONITORED),
        (0, 12, "Unmonitored", st.UNMONITORED),
        (2000, -1, "UNREACHABLE", st.UNREACHABLE),
        (2000, 2500, "LAGGED (2500 ms)", st.LAGGED),
        (2000, 12, "OK (12 ms)", st.OK),
        (2000, 2000, "OK (2000 ms)", st.OK),
        (2000, 0, "UNKNOWN", st.UNKNOWN),
    ],
)
def test_peer_status_strings(maxms: int, lastms: int, text: str, state: str) -> None:
    assert st.status_string(maxms, lastms) == text
    assert st.state_of(maxms, lastms) == state


@pytest.mark.parametrize(
    ("rtt", "ms"),
    [(0.0, 1), (0.0004, 1), (0.0012, 1), (0.7, 700), (0.7006, 700), (2.0007, 2000), (0.019999, 19), (0.0199999996, 20)],
)
def test_pingtime_truncates_with_1ms_floor(rtt: float, ms: int) -> None:
    assert st.pingtime_ms(rtt) == ms


def test_table_is_complete_and_matches_was_is_rule() -> None:
    """chan_sip: statechanged = (lastms == 0) || (was_reachable != is_reachable)."""
    samples = {st.UNKNOWN: 0, st.OK: 10, st.LAGGED: 3000, st.UNREACHABLE: -1}
    for (frm, result), (to, publish) in st.TRANSITIONS.items():
        lastms = samples[frm]
        was = 0 < lastms <= 2000
        if result == st.NO_REPLY:
            expect_publish = lastms > -1  # sip_poke_noanswer only acts if lastms > -1
        else:
            is_ = result == st.REPLY_OK
            expect_publish = lastms == 0 or was != is_
        assert publish == expect_publish, (frm, result)
        assert (to == frm) <= (not publish)
    assert len(st.TRANSITIONS) == 12
    assert st.TRANSITIONS[(st.UNREACHABLE, st.REPLY_LATE)] == (st.LAGGED, False)


def test_online_counts_lagged() -> None:
    assert st.is_online(2000, 3000) and st.is_online(2000, 5)
    assert not st.is_online(2000, -1) and not st.is_online(2000, 0)
