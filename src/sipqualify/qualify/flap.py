"""Flap damping: the idea of BGP route flap damping (RFC 2439) applied to verdicts.

Theory of operation. Each change of a peer's confirmed verdict (up, degraded, down; not the
first verdict after `unknown`, not a `pending` count) adds `flap_penalty` to the peer's figure
of merit; the figure decays exponentially with `flap_half_life` (RFC 2439 §4.2). When it
reaches `flap_suppress` the peer is *flapping*: its notifications (verdict events, webhooks)
are held back, and one `flap` event says so. When it has decayed below `flap_reuse` the peer
settles: one more `flap` event, carrying the verdict of that moment, and notifications resume.

No timer per peer: the penalty is stored with the time it was last updated and decayed when it
is next read (`FlapState.penalty_at`). A settling is noticed at the peer's next result, so it
is reported at most one poll interval after the penalty crossed `flap_reuse`. The penalty is
capped at `CEILING` x `flap_suppress` (RFC 2439's ceiling), so a peer that flapped for hours is
not held back for hours after it stopped. A peer without damping, or whose penalty has decayed
to nothing, holds no state at all (`PeerVerdict.flap` is None).
"""

from __future__ import annotations

from dataclasses import dataclass

CEILING = 4  # the penalty never exceeds this many times `flap_suppress`
FORGET = 1.0  # a penalty below this (and not flapping) is dropped with its state

# the result of `FlapState.change` / `FlapState.check`
STARTED = "started"
SETTLED = "settled"


@dataclass(frozen=True, slots=True)
class FlapPolicy:
    penalty: int = 1000  # added per change of the confirmed verdict
    suppress: int = 2000  # flapping from this penalty on
    reuse: int = 750  # settled below this
    half_life_s: float = 900.0

    @property
    def ceiling(self) -> float:
        return float(CEILING * self.suppress)


class FlapState:
    """One peer's figure of merit. Three slots: allocated at the first change, dropped when
    the penalty has decayed to nothing."""

    __slots__ = ("penalty", "updated", "flapping")

    def __init__(self, now: float) -> None:
        self.penalty = 0.0
        self.updated = now
        self.flapping = False

    def penalty_at(self, policy: FlapPolicy, now: float) -> float:
        """The penalty decayed to `now` (not stored: reading changes nothing)."""
        dt = now - self.updated
        if dt <= 0.0:
            return self.penalty
        return self.penalty * float(0.5 ** (dt / policy.half_life_s))

    def _decay(self, policy: FlapPolicy, now: float) -> None:
        self.penalty = self.penalty_at(policy, now)
        self.updated = now

    def change(self, policy: FlapPolicy, now: float) -> str | None:
        """The confirmed verdict changed. STARTED when this makes the peer flapping."""
        self._decay(policy, now)
        self.penalty = min(self.penalty + policy.penalty, policy.ceiling)
        if not self.flapping and self.penalty >= policy.suppress:
            self.flapping = True
            return STARTED
        return None

    def check(self, policy: FlapPolicy, now: float) -> str | None:
        """At a result without a change: SETTLED when a flapping peer's penalty fell below reuse."""
        if self.flapping and self.penalty_at(policy, now) < policy.reuse:
            self._decay(policy, now)
            self.flapping = False
            return SETTLED
        return None

    def forgettable(self, policy: FlapPolicy, now: float) -> bool:
        return not self.flapping and self.penalty_at(policy, now) < FORGET


def flap_policy(penalty: int, suppress: int, reuse: int, half_life_s: int) -> FlapPolicy | None:
    """The damping settings of a peer; None when off (`flap_suppress` 0, the default)."""
    if not suppress:
        return None
    return FlapPolicy(penalty, suppress, reuse, float(half_life_s))
