"""Beyond chan_sip: a three-way verdict with hysteresis, beside the chan_sip state.

Theory of operation. chan_sip's state (qualify/state.py) stays exactly what Asterisk computes,
and the compat outputs keep showing it. A second, independent judgement is kept per peer:

* every result is classified by the peer's `VerdictPolicy` into an *outcome* (up / degraded /
  down) and a *reason* (`auth_required`, `timeout`, `refused`, `lagged`, `degraded:503`,
  `reply:404` ...): `classify()`;
* outcomes go through hysteresis (`down_after` consecutive down outcomes before down,
  `up_after` consecutive alive outcomes before up), while counting the verdict shows `pending`:
  `PeerVerdict.observe()`, driven by the `SIDE` / `THRESHOLD` tables below;
* after a down outcome that is still being counted, `retry_interval` asks for a quick
  re-poll (OpenSIPS PR #3890's ask): `PeerVerdict.next_poke_in()`.

Everything that decides a verdict lives in this file; the engine only feeds it results.
The default policy (`CHAN_SIP_VERDICT`: any final response is up, 1/1, no retry) gives the
verdict of the chan_sip state, and changes no timing.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..model import PeerConfig
from .flap import FlapPolicy, FlapState, flap_policy

# verdicts
UP = "up"
DEGRADED = "degraded"
DOWN = "down"
PENDING = "pending"
UNKNOWN = "unknown"
VERDICTS = (UP, DEGRADED, DOWN, PENDING, UNKNOWN)

# reasons (besides `degraded:NNN` and `reply:NNN`)
TIMEOUT = "timeout"
REFUSED = "refused"
AUTH_REQUIRED = "auth_required"
AUTH_FAILED = "auth_failed"  # our credentials were refused (qualify_auth, qualify/auth.py)
LAGGED = "lagged"
AUTH_CODES = frozenset((401, 403, 407))

# Hysteresis as data. The side of an outcome or confirmed verdict: a change of side is counted,
# a change within a side (up <-> degraded) is immediate. UNKNOWN has no side: the first results
# are counted too (`up_after` successes before the first up).
SIDE: dict[str, str | None] = {UP: "alive", DEGRADED: "alive", DOWN: "down", UNKNOWN: None}
# how many consecutive outcomes of a new side make it the verdict: the policy attribute to read
THRESHOLD: dict[str, str] = {UP: "up_after", DEGRADED: "up_after", DOWN: "down_after"}

ALL_FINAL = "200-699"


class CodeSet:
    """A set of SIP status codes: `2xx`, `200-299`, `404`, comma lists of these. Immutable."""

    __slots__ = ("text", "_ranges", "_codes")

    def __init__(self, text: str) -> None:
        ranges: list[tuple[int, int]] = []
        for raw in text.split(","):
            part = raw.strip().lower()
            if not part:
                continue
            if len(part) == 3 and part[0] in "123456" and part[1:] == "xx":
                lo = int(part[0]) * 100
                ranges.append((lo, lo + 99))
                continue
            a, sep, b = part.partition("-")
            if not (a.strip().isascii() and a.strip().isdigit()) or (sep and not (b.strip().isascii()
                                                                                  and b.strip().isdigit())):
                raise ValueError(f"'{raw.strip()}' is not a status code, a range like 200-299 or a class like 2xx")
            lo, hi = int(a), int(b) if sep else int(a)
            if not 100 <= lo <= hi <= 699:
                raise ValueError(f"'{raw.strip()}' is not within 100..699 (low to high)")
            ranges.append((lo, hi))
        if not ranges:
            raise ValueError("an empty list of status codes")
        self._ranges = tuple(sorted(ranges))
        self._codes = frozenset(c for lo, hi in ranges for c in range(lo, hi + 1))  # O(1) per result
        self.text = ",".join(f"{lo}" if lo == hi else f"{lo}-{hi}" for lo, hi in self._ranges)

    def __contains__(self, code: int) -> bool:
        return code in self._codes

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CodeSet) and other._ranges == self._ranges

    def __hash__(self) -> int:
        return hash(self._ranges)

    def __repr__(self) -> str:
        return f"CodeSet({self.text!r})"


def normalize_codes(text: str) -> str:
    """The canonical form of a code list (config readers store it; ValueError when bad)."""
    return CodeSet(text).text


@dataclass(frozen=True, slots=True)
class VerdictPolicy:
    name: str = ""  # the [[policies]] name, "" for [general]/peer keys or the default
    reply_up: CodeSet = CodeSet(ALL_FINAL)  # chan_sip: any final response is "reachable"
    reply_degraded: CodeSet | None = None  # checked first: these are up-but-degraded
    down_after: int = 1
    up_after: int = 1
    retry_interval_s: float = 0.0  # 0: off (chan_sip's re-poll times)
    flap: FlapPolicy | None = None  # flap damping (qualify/flap.py); None: off

    @property
    def is_chan_sip(self) -> bool:
        return self == CHAN_SIP_VERDICT


CHAN_SIP_VERDICT = VerdictPolicy()


Outcome = tuple[str, str]  # (UP | DEGRADED | DOWN, reason); a plain tuple: one is made per result


def classify(policy: VerdictPolicy, status: int | None, lagged: bool, refused: bool = False,
             auth_failed: bool = False) -> Outcome:
    """One result -> outcome. `status` None: no answer by the give-up time (`refused` when an
    ICMP error or a refused connection was seen for it). `auth_failed`: the peer challenged the
    request we sent with credentials (qualify/auth.py): down, whatever the reply policy says."""
    if auth_failed:
        return DOWN, AUTH_FAILED
    if status is None:
        return DOWN, REFUSED if refused else TIMEOUT
    if policy.reply_degraded is not None and status in policy.reply_degraded:
        return DEGRADED, f"degraded:{status}"
    if status in policy.reply_up:
        if lagged:
            return DEGRADED, LAGGED
        return UP, AUTH_REQUIRED if status in AUTH_CODES else ""
    return DOWN, AUTH_REQUIRED if status in AUTH_CODES else f"reply:{status}"


class PeerVerdict:
    """One peer's verdict: the confirmed verdict, the streak being counted toward a change.

    Settled verdicts are shared (a million peers, most of them up with the same policy, reason
    and status code): a verdict that counts nothing, carries no flap state and no pending
    `refused` is one immutable object per (policy, verdict, reason, status), `shared` set. Who
    changes a peer's verdict takes its own copy first (`owned`) and hands it back settled
    (`settled`): the engine (qualify/engine.py `Peer.own_verdict` / `settle_verdict`) and
    workers/wire.py. A shared object is never written to."""

    __slots__ = ("policy", "confirmed", "reason", "streak", "toward", "refused", "status", "flap", "shared")

    def __init__(self, policy: VerdictPolicy) -> None:
        self.policy = policy
        self.confirmed = UNKNOWN
        self.reason = ""
        self.streak = 0  # consecutive outcomes on the other side of `confirmed`
        self.toward = ""  # the verdict those outcomes count toward ("" when not counting)
        self.refused = False  # an ICMP error / refused connection seen for the poke in flight
        self.status: int | None = None  # last final response code, None after a give-up
        self.flap: FlapState | None = None  # flap damping's penalty, from the first change on
        self.shared = False  # one of the interned settled verdicts (`settled`): read only

    def owned(self) -> PeerVerdict:
        """This verdict if it is a peer's own, else a private copy of it, to be changed."""
        if not self.shared:
            return self
        v = PeerVerdict(self.policy)
        v.confirmed, v.reason, v.status = self.confirmed, self.reason, self.status
        return v

    def settled(self) -> PeerVerdict:
        """The shared object equal to this verdict when it is settled (nothing counted, no flap
        state, no pending `refused`), else this verdict."""
        if self.shared or self.streak or self.toward or self.refused or self.flap is not None:
            return self
        return _shared(self.policy, self.confirmed, self.reason, self.status)

    def unchanged_by(self, status: int | None, lagged: bool, auth_failed: bool) -> bool:
        """For a shared verdict (settled: nothing counted, no flap state, no pending `refused`):
        would this result leave it exactly as it is (`observe` would return None and change no
        field)? The common case, tested without taking a copy."""
        if status != self.status or self.policy.flap is not None:
            return False
        verdict, reason = classify(self.policy, status, lagged, False, auth_failed)
        return verdict == self.confirmed and reason == self.reason

    @property
    def flapping(self) -> bool:
        """Held back by flap damping: notifications of this peer are suppressed."""
        return self.flap is not None and self.flap.flapping

    def flap_penalty(self, now: float) -> float:
        f, fp = self.flap, self.policy.flap
        return f.penalty_at(fp, now) if f is not None and fp is not None else 0.0

    def damp(self, before: str, now: float) -> str | None:
        """After a result: charge a change of the confirmed verdict from `before` to the flap
        penalty (qualify/flap.py). STARTED or SETTLED when the flapping condition changed."""
        fp = self.policy.flap
        if fp is None:
            self.flap = None
            return None
        f = self.flap
        if self.confirmed != before and before != UNKNOWN and self.confirmed != UNKNOWN:
            if f is None:
                f = self.flap = FlapState(now)
            return f.change(fp, now)
        if f is None:
            return None
        what = f.check(fp, now)
        if f.forgettable(fp, now):
            self.flap = None
        return what

    @property
    def verdict(self) -> str:
        return PENDING if self.streak else self.confirmed

    @property
    def threshold(self) -> int:
        """How many outcomes `toward` needs (0 when not counting)."""
        return getattr(self.policy, THRESHOLD[self.toward]) if self.toward else 0

    def observe(self, status: int | None, lagged: bool, auth_failed: bool = False) -> str | None:
        """Record one result. When the shown verdict, its reason or the count changed: the
        verdict shown before; else None."""
        old_streak, old_reason, old_toward = self.streak, self.reason, self.toward
        old = PENDING if old_streak else self.confirmed
        verdict, self.reason = classify(self.policy, status, lagged, self.refused, auth_failed)
        self.refused = False
        self.status = status
        side = SIDE[verdict]
        if side == SIDE[self.confirmed]:
            self.confirmed = verdict
            self.streak, self.toward = 0, ""
        else:
            if self.toward and SIDE[self.toward] == side:
                self.streak += 1
            else:
                self.streak = 1
            self.toward = verdict
            if self.streak >= getattr(self.policy, THRESHOLD[verdict]):
                self.confirmed = verdict
                self.streak, self.toward = 0, ""
        shown = PENDING if self.streak else self.confirmed
        if (shown, self.streak, self.toward, self.reason) == (old, old_streak, old_toward, old_reason):
            return None
        return old

    def reset(self) -> bool:
        """The peer lost its address or its monitoring: nothing is known any more."""
        before = (self.verdict, self.reason)
        self.confirmed, self.reason, self.streak, self.toward, self.status = UNKNOWN, "", 0, "", None
        return (self.verdict, self.reason) != before

    def next_poke_in(self, chan_sip_s: float) -> float:
        """The re-poll delay: chan_sip's, or `retry_interval` when sooner while a down outcome
        is being confirmed."""
        r = self.policy.retry_interval_s
        if r and self.toward == DOWN and r < chan_sip_s:
            return r
        return chan_sip_s


# the shared settled verdicts: id(policy) -> (verdict, reason, status) -> PeerVerdict. Each holds
# its policy, so an id stays that policy's while its entry exists. Bounded: a status is 100..699
# and a reason follows from it; policies are interned by policy_for (tests make their own: at
# most MAX_SHARED_POLICIES of them get shared verdicts, the others' verdicts stay per peer).
_SHARED: dict[int, dict[tuple[str, str, int | None], PeerVerdict]] = {}
MAX_SHARED_POLICIES = 4096


def _shared(policy: VerdictPolicy, confirmed: str, reason: str, status: int | None) -> PeerVerdict:
    table = _SHARED.get(id(policy))
    if table is None:
        if len(_SHARED) >= MAX_SHARED_POLICIES:
            v = PeerVerdict(policy)
            v.confirmed, v.reason, v.status = confirmed, reason, status
            return v
        table = _SHARED[id(policy)] = {}
    key = (confirmed, reason, status)
    found = table.get(key)
    if found is not None:
        return found
    v = PeerVerdict(policy)
    v.confirmed, v.reason, v.status = confirmed, reason, status
    v.shared = True
    table[key] = v
    return v


def initial_verdict(policy: VerdictPolicy) -> PeerVerdict:
    """A new peer's verdict (unknown, nothing counted): shared."""
    return _shared(policy, UNKNOWN, "", None)


_POLICIES: dict[tuple[str, str, str, int, int, float, FlapPolicy | None], VerdictPolicy] = {}


def policy_for(name: str, reply_up: str, reply_degraded: str, down_after: int, up_after: int,
               retry_interval_s: float, flap: FlapPolicy | None = None) -> VerdictPolicy:
    """The (shared) policy object for these settings: peers with equal settings share one."""
    key = (name, reply_up, reply_degraded, down_after, up_after, retry_interval_s, flap)
    pol = _POLICIES.get(key)
    if pol is None:
        pol = VerdictPolicy(name, CodeSet(reply_up or ALL_FINAL), CodeSet(reply_degraded) if reply_degraded else None,
                            down_after, up_after, retry_interval_s, flap)
        if pol == CHAN_SIP_VERDICT:
            pol = CHAN_SIP_VERDICT
        _POLICIES[key] = pol
    return pol


def policy_of(cfg: PeerConfig) -> VerdictPolicy:
    return policy_for(cfg.policy, cfg.reply_up, cfg.reply_degraded, cfg.down_after, cfg.up_after,
                      float(cfg.retry_interval_s),
                      flap_policy(cfg.flap_penalty, cfg.flap_suppress, cfg.flap_reuse, cfg.flap_half_life_s))
