"""Non-INVITE client transaction (RFC 3261 §17.1.2), sans-I/O.

Theory of operation
-------------------
A transaction owns the bytes of one request and decides *when* they are (re)sent; it never
sends anything itself. The driver (the qualify engine, or `sipqualify ping`) calls:

* `start(now)`         -> the time of the next timer (or None)
* `on_timer(now)`      -> `RETRANSMIT` (send `request` again), `TIMEOUT` or `None`
* `on_response(status, now)` -> `FINAL` / `PROVISIONAL` / `RETRANSMITTED` (a final
  response arriving again while Completed, to be counted and dropped)
* `next_timer`         -> when `on_timer` wants to be called next

Two retransmission policies, chosen per peer:

``asterisk``  what chan_sip really does for qualify (asterisk-observed.md §0.1): a flat
              1000 ms interval on UDP, never doubled; an absolute stop at 64×T1 = 32 s.
              The qualify engine gives up earlier (2×maxms); a retransmission due on the
              same millisecond as the give-up is still sent (the engine orders it first).
              1xx responses do not slow or stop retransmission.
``rfc3261``   Timer E starts at T1 and doubles up to T2 (in Proceeding it is T2), Timer F =
              64×T1 ends the transaction, Timer K = T4 keeps a completed UDP transaction
              around to absorb retransmitted responses (0 on reliable transports).
``pjsip``     rfc3261 as pjproject 2.17 does it (asterisk-pjsip-observed.md §3.2): the first
              provisional response re-arms the retransmission timer at T2 counted from that
              response (`tsx_on_state_calling`), so a `100 Trying` at +3 ms gives
              retransmissions at +4.003, +8.003 ... instead of +0.5, +4.5 ...

No retransmissions on reliable transports (TCP/TLS), with either policy (§17.1.2.2).

Times are seconds on the driver's clock. Retransmission instants are computed as
``first_sent + offset`` (never by accumulating floats) so that a retransmission and a
give-up due on the same millisecond compare equal on a virtual clock.
"""

from __future__ import annotations

from dataclasses import dataclass

T1 = 0.5
T2 = 4.0
T4 = 5.0

# on_timer / on_response outcomes
RETRANSMIT = "retransmit"
TIMEOUT = "timeout"
FINAL = "final"
PROVISIONAL = "provisional"
RETRANSMITTED = "retransmitted"

# states (RFC 3261 Figure 6)
TRYING = "Trying"
PROCEEDING = "Proceeding"
COMPLETED = "Completed"
TERMINATED = "Terminated"


@dataclass(frozen=True, slots=True)
class RetransmitPolicy:
    name: str
    first_interval: float  # Timer E initial value (s)
    max_interval: float  # cap on the interval (T2); equal to first_interval = flat
    timeout: float  # Timer F
    linger: float  # Timer K on unreliable transports
    provisional_slows: bool  # RFC: in Proceeding the interval becomes T2
    provisional_rearms: bool = False  # pjproject: the first provisional re-arms Timer E at T2 from now


ASTERISK = RetransmitPolicy("asterisk", 1.0, 1.0, 64 * T1, T4, False)
RFC3261 = RetransmitPolicy("rfc3261", T1, T2, 64 * T1, T4, True)
PJSIP = RetransmitPolicy("pjsip", T1, T2, 64 * T1, T4, True, True)
POLICIES = {p.name: p for p in (ASTERISK, RFC3261, PJSIP)}


class ClientTransaction:
    """One non-INVITE client transaction. `request` is sent unchanged on every retransmission."""

    __slots__ = (
        "branch",
        "request",
        "dest",
        "reliable",
        "policy",
        "state",
        "first_sent",
        "transmissions",
        "next_timer",
        "_offset",
        "_interval",
        "status",
        "owner",
        "call_id",
        "giveup_at",
        "wake",
        "cseq",
    )

    def __init__(
        self,
        branch: str,
        request: bytes,
        dest: tuple[str, int],
        *,
        reliable: bool = False,
        policy: RetransmitPolicy = ASTERISK,
        owner: object = None,
        call_id: str = "",
        cseq: int = 102,
    ) -> None:
        self.branch = branch
        self.request = request
        self.dest = dest
        self.reliable = reliable
        self.policy = policy
        self.state = TRYING
        self.first_sent = 0.0
        self.transmissions = 0
        self.next_timer: float | None = None
        self._offset = 0.0  # offset of the next retransmission from first_sent
        self._interval = policy.first_interval
        self.status: int | None = None
        self.owner = owner  # whatever the driver wants back (the engine puts the peer here)
        self.call_id = call_id  # checked on responses: a wrong Call-ID never completes us
        self.giveup_at: float | None = None  # the driver's own deadline (qualify: 2 x maxms)
        self.wake: float | None = None  # when the driver's single timer entry for us is due
        self.cseq = cseq  # checked on responses, like call_id

    @property
    def retransmissions(self) -> int:
        return max(0, self.transmissions - 1)

    @property
    def deadline(self) -> float:
        return self.first_sent + self.policy.timeout

    def start(self, now: float) -> float | None:
        """The request has just been sent for the first time at `now`."""
        self.first_sent = now
        self.transmissions = 1
        if self.reliable:
            self.next_timer = self.deadline
        else:
            self._offset = self._interval
            self.next_timer = min(now + self._offset, self.deadline)
        return self.next_timer

    def on_timer(self, now: float) -> str | None:
        nt = self.next_timer
        if nt is None or now < nt:
            return None
        if self.state == COMPLETED:  # Timer K
            self.state = TERMINATED
            self.next_timer = None
            return None
        if self.state == TERMINATED:
            self.next_timer = None
            return None
        if now >= self.deadline:  # Timer F
            self.state = TERMINATED
            self.next_timer = None
            return TIMEOUT
        # Timer E
        self.transmissions += 1
        p = self.policy
        if self.state == PROCEEDING and p.provisional_slows:
            self._interval = p.max_interval
        else:
            self._interval = min(self._interval * 2, p.max_interval)
        self._offset += self._interval
        self.next_timer = min(self.first_sent + self._offset, self.deadline)
        return RETRANSMIT

    def on_response(self, status: int, now: float) -> str | None:
        if self.state in (COMPLETED, TERMINATED):
            return RETRANSMITTED if status >= 200 else None
        if status < 200:
            if self.state == TRYING:
                self.state = PROCEEDING
                if self.policy.provisional_slows and not self.reliable:
                    # RFC 3261 §17.1.2.2: retransmit at T2 while Proceeding
                    self._interval = self.policy.max_interval
                    if self.policy.provisional_rearms:
                        self._offset = now - self.first_sent + self._interval
                        self.next_timer = min(self.first_sent + self._offset, self.deadline)
            return PROVISIONAL
        self.status = status
        if self.reliable:
            self.state = TERMINATED
            self.next_timer = None
        else:
            self.state = COMPLETED
            self.next_timer = now + self.policy.linger
        return FINAL

    def terminate(self) -> None:
        self.state = TERMINATED
        self.next_timer = None
