"""chan_sip qualify state: the `lastms`/`maxms` encoding, the transition table, the strings.

Everything that decides a peer's qualify state lives in this file; the engine only feeds it
results. chan_sip keeps two integers per peer (asterisk-qualify.md §1.3):

* ``maxms``  the threshold; 0 = Unmonitored (never poked except when forced)
* ``lastms`` -1 = no answer, 0 = unknown / never measured, 1..maxms = OK, > maxms = LAGGED

Transition table (§1.4; rows: current state, columns: result). "event" means chan_sip logs
a NOTICE and publishes PeerStatus; "silent" means the value changes with neither:

    from \\ result  reply <= maxms     reply > maxms       no reply by 2*maxms
    UNKNOWN         OK, event          LAGGED, event       UNREACHABLE, event
    OK              OK, silent         LAGGED, event       UNREACHABLE, event
    LAGGED          OK, event          LAGGED, silent      UNREACHABLE, event
    UNREACHABLE     OK, event          LAGGED, SILENT (!)  UNREACHABLE, silent

The odd cell (UNREACHABLE -> LAGGED without an event) is chan_sip's: it compares
"was reachable" with "is reachable", and both are false.
"""

from __future__ import annotations

UNKNOWN = "UNKNOWN"
OK = "OK"
LAGGED = "LAGGED"
UNREACHABLE = "UNREACHABLE"
UNMONITORED = "UNMONITORED"

REPLY_OK = "reply<=maxms"
REPLY_LATE = "reply>maxms"
NO_REPLY = "no-reply"

# (from, result) -> (to, publishes_event). The table above, as data.
TRANSITIONS: dict[tuple[str, str], tuple[str, bool]] = {
    (UNKNOWN, REPLY_OK): (OK, True),
    (UNKNOWN, REPLY_LATE): (LAGGED, True),
    (UNKNOWN, NO_REPLY): (UNREACHABLE, True),
    (OK, REPLY_OK): (OK, False),
    (OK, REPLY_LATE): (LAGGED, True),
    (OK, NO_REPLY): (UNREACHABLE, True),
    (LAGGED, REPLY_OK): (OK, True),
    (LAGGED, REPLY_LATE): (LAGGED, False),
    (LAGGED, NO_REPLY): (UNREACHABLE, True),
    (UNREACHABLE, REPLY_OK): (OK, True),
    (UNREACHABLE, REPLY_LATE): (LAGGED, False),
    (UNREACHABLE, NO_REPLY): (UNREACHABLE, False),
}


def state_of(maxms: int, lastms: int) -> str:
    """peer_status() order of evaluation (chan_sip S20:20075)."""
    if maxms == 0:
        return UNMONITORED
    if lastms < 0:
        return UNREACHABLE
    if lastms > maxms:
        return LAGGED
    if lastms != 0:
        return OK
    return UNKNOWN


def status_string(maxms: int, lastms: int) -> str:
    """The one place the compat strings are produced: `OK (12 ms)`, `LAGGED (2500 ms)`..."""
    if maxms == 0:
        return "Unmonitored"
    if lastms < 0:
        return "UNREACHABLE"
    if lastms > maxms:
        return f"LAGGED ({lastms} ms)"
    if lastms != 0:
        return f"OK ({lastms} ms)"
    return "UNKNOWN"


def pingtime_ms(rtt: float) -> int:
    """chan_sip's pingtime: whole milliseconds, truncated (ast_tvdiff_ms), at least 1.

    Computed via microseconds so that a virtual-clock 0.7 s is 700, not 699.
    """
    ms = int(round(rtt * 1_000_000)) // 1000
    return ms if ms >= 1 else 1


def result_kind(maxms: int, pingtime: int | None) -> str:
    if pingtime is None:
        return NO_REPLY
    return REPLY_OK if pingtime <= maxms else REPLY_LATE


def next_poke_in(state: str, qualifyfreq_s: float, freq_notok_s: float) -> float:
    """chan_sip's re-poll rule: `qualifyfreq` after an OK answer, the short `freq_notok` after
    a LAGGED answer or a give-up (the peer is looked at again soon)."""
    return qualifyfreq_s if state == OK else freq_notok_s


def lastms_without_address(maxms: int, lastms: int) -> int:
    """A qualified peer that has lost its address (an expired or removed registration) becomes
    UNKNOWN at its next poke, silently: chan_sip's expire_register sets lastms to 0 and
    publishes nothing, so no StateChanged is made for it either."""
    return 0 if maxms else lastms


# The one state -> words table: AMI `PeerStatus:` (events and SIPpeerstatus), the event stream's
# `peer_status` and its `?status=` filter
PEER_STATUS = {OK: "Reachable", LAGGED: "Lagged", UNREACHABLE: "Unreachable", UNKNOWN: "Unknown",
               UNMONITORED: "Unmonitored"}


def peer_status_word(state: str) -> str:
    return PEER_STATUS.get(state, "Unknown")


def notice_line(peer: str, new: str, lastms: int, maxms: int, prev_lastms: int) -> str:
    """chan_sip's NOTICE line for a transition into `new`, byte for byte."""
    if new == UNREACHABLE:
        return f"Peer '{peer}' is now UNREACHABLE!  Last qualify: {prev_lastms}"
    return f"Peer '{peer}' is now {PEER_STATUS[new]}. ({lastms}ms / {maxms}ms)"


def is_online(maxms: int, lastms: int) -> bool:
    """`sip show peers` summary: LAGGED counts as online (§1.3)."""
    return state_of(maxms, lastms) in (OK, LAGGED)
