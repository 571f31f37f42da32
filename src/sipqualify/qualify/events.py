"""Events the qualify engine hands to whoever drives it (small frozen dataclasses).

Times are engine time: the monotonic clock the engine is driven with, in seconds.
The service converts them to wall-clock time for storage and display.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from .state import notice_line, peer_status_word
from .targets import TargetChanged


@dataclass(frozen=True, slots=True)
class StateChanged:
    """A chan_sip state transition that Asterisk would log and publish (PeerStatus).

    `silent` transitions (UNREACHABLE -> LAGGED, which chan_sip neither logs nor
    publishes) are still reported so history is complete, with `silent=True`.
    """

    peer: str
    old: str  # UNKNOWN | OK | LAGGED | UNREACHABLE | UNMONITORED
    new: str
    lastms: int  # chan_sip encoding: -1 unreachable, 0 unknown, >0 RTT in ms
    maxms: int
    rtt: float | None  # precise RTT in seconds (None when no answer)
    time: float
    prev_lastms: int = 0  # lastms before this transition ("Last qualify: N")
    silent: bool = False
    reason: str | None = None  # UNREACHABLE because a connection failed: why ("certificate has expired")

    @property
    def peer_status(self) -> str:
        """The AMI `PeerStatus:` value for this transition."""
        return peer_status_word(self.new)

    def log_line(self) -> str:
        """chan_sip's NOTICE line for this transition, byte for byte."""
        return notice_line(self.peer, self.new, self.lastms, self.maxms, self.prev_lastms)


class QualifyResult(NamedTuple):
    """The outcome of one qualify poke (answered or given up), for history and metrics.

    A NamedTuple rather than a frozen dataclass: one is made per transaction, and a frozen
    dataclass costs several times more to construct."""

    peer: str
    time: float
    answered: bool
    rtt: float | None  # seconds from the first transmission (Asterisk's definition)
    status_code: int | None
    transmissions: int  # 1 + retransmissions sent
    forced: bool
    state: str  # state after this result


@dataclass(frozen=True, slots=True)
class TransportError:
    """An ICMP error (port/host unreachable) seen for a datagram sent to a peer, or a TCP/TLS
    connection to it that could not be opened."""

    peer: str | None
    addr: tuple[str, int]
    time: float
    reason: str


@dataclass(frozen=True, slots=True)
class VerdictChanged:
    """The peer's verdict (qualify/verdict.py: up, degraded, down, pending, unknown) or its reason
    changed. Independent of the chan_sip state and its StateChanged."""

    peer: str
    old: str
    new: str
    reason: str  # "", timeout, refused, auth_required, lagged, degraded:NNN, reply:NNN
    policy: str  # the [[policies]] name, "" when none
    time: float
    count: int  # pending: outcomes counted so far toward ...
    threshold: int  # ... this many (0 when not pending)


@dataclass(frozen=True, slots=True)
class LatencyChanged:
    """The peer's latency estimate (qualify/stats.py EST) moved by more than its `latency_delta`
    since the last such event (OpenSIPS's latency event)."""

    peer: str
    est: float  # seconds
    previous: float  # EST at the last event (or after the warm-up)
    avg: float
    dev: float
    time: float


@dataclass(frozen=True, slots=True)
class FlapChanged:
    """Flap damping (qualify/flap.py): the peer started flapping (its verdict events and webhooks
    are held back from now on) or settled (they resume; `verdict` is the one of this moment)."""

    peer: str
    flapping: bool
    penalty: float
    verdict: str
    reason: str
    policy: str
    time: float


@dataclass(frozen=True, slots=True)
class PokeOverdue:
    """The liveness watchdog (qualify/watchdog.py): a poke ran `lag` seconds after it was due,
    more than the peer's interval."""

    peer: str
    lag: float
    time: float


@dataclass(frozen=True, slots=True)
class PokeRepaired:
    """The liveness watchdog: a qualified peer had no result for `silent_for` seconds: its poke was lost (or stood at a
    wrong time) and was re-armed now."""

    peer: str
    silent_for: float
    time: float


Event = (StateChanged | QualifyResult | TransportError | VerdictChanged | LatencyChanged | TargetChanged | FlapChanged
         | PokeOverdue | PokeRepaired)
# published at once (event stream), not stored
LiveEvent = VerdictChanged | LatencyChanged | FlapChanged | PokeOverdue | PokeRepaired


@dataclass(frozen=True, slots=True)
class SecurityEvent:
    """A security event as chan_sip reports one for a REGISTER (channels/sip/security_events.c,
    `sip_report_security_event`), for the AMI `security` class: `event` is Asterisk's name
    (InvalidAccountID, FailedACL, ChallengeSent, InvalidPassword, ChallengeResponseFailed,
    SuccessfulAuth), `account` the To user (chan_sip's `p->exten`), `session_id` one id per
    dialog (chan_sip prints its dialog's address), `fields` the event's own IEs by their AMI
    names (Challenge, ReceivedHash ...). The shell adds the local address and the times."""

    event: str
    account: str
    session_id: str
    remote: tuple[str, int]
    transport: str  # udp | tcp
    fields: tuple[tuple[str, str], ...] = ()
